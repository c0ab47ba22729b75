//! Typed errors of the MVCC store. Every error a client can cause displays etcd's exact
//! gRPC status message, and [`Error::grpc_code`] names the status code etcd uses, so the
//! gRPC layer maps them one to one. A request that fails changes nothing in the store
//! (the one exception, like etcd, is the NOSPACE alarm a rejected write may raise).

use thiserror::Error;

/// gRPC status codes used by etcd's KV, Lease and Watch errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument,
    OutOfRange,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    /// Auth errors (`keel_core::auth`) use these three as well.
    PermissionDenied,
    Unauthenticated,
    /// The CORRUPT alarm.
    DataLoss,
    /// The storage engine failed: this member stops and a client should try another.
    Unavailable,
    Unknown,
}

impl GrpcCode {
    /// The code's canonical name, as in `google.golang.org/grpc/codes`.
    pub fn name(self) -> &'static str {
        match self {
            GrpcCode::InvalidArgument => "InvalidArgument",
            GrpcCode::OutOfRange => "OutOfRange",
            GrpcCode::NotFound => "NotFound",
            GrpcCode::FailedPrecondition => "FailedPrecondition",
            GrpcCode::ResourceExhausted => "ResourceExhausted",
            GrpcCode::PermissionDenied => "PermissionDenied",
            GrpcCode::Unauthenticated => "Unauthenticated",
            GrpcCode::DataLoss => "DataLoss",
            GrpcCode::Unavailable => "Unavailable",
            GrpcCode::Unknown => "Unknown",
        }
    }
}

/// A request the store refused. Display strings are etcd's
/// (`api/v3rpc/rpctypes/error.go`), byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Error {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty `RequestOp`.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// For the gRPC layer: a sort order or target outside the proto enum.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is active: a member's data differs from the others'. Every write is
    /// refused until an operator has replaced that member and disarmed the alarm.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// Lease timing (KeepAlive, TimeToLive, expiry) lives on the leader only; the server
    /// forwards the request to the leader, like etcd's `lease.ErrNotPrimary`.
    #[error("not a primary lessor")]
    NotPrimary,
    /// The storage engine refused a read or write; this member stops serving (see
    /// `Store::failure`).
    #[error("etcdserver: storage engine failed: {reason}")]
    Storage { reason: String },
}

impl Error {
    /// The gRPC status code etcd answers this error with.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            Error::EmptyKey
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::TooManyOps
            | Error::DuplicateKey
            | Error::InvalidSortOption
            | Error::RequestTooLarge => GrpcCode::InvalidArgument,
            Error::Compacted | Error::FutureRev | Error::LeaseTtlTooLarge => GrpcCode::OutOfRange,
            Error::NoSpace => GrpcCode::ResourceExhausted,
            Error::Corrupt => GrpcCode::DataLoss,
            Error::LeaseNotFound => GrpcCode::NotFound,
            Error::LeaseExists | Error::NotPrimary => GrpcCode::FailedPrecondition,
            Error::Storage { .. } => GrpcCode::Unavailable,
        }
    }
}

/// Why a snapshot could not be restored. Restoring never panics on bad bytes.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotError {
    #[error("mvcc snapshot is {len_bytes} bytes, shorter than its {header_bytes}-byte header")]
    TooShort {
        len_bytes: usize,
        header_bytes: usize,
    },
    #[error("not an mvcc snapshot (bad magic)")]
    BadMagic,
    #[error("mvcc snapshot format version {found} is not supported (expected {expected})")]
    UnsupportedVersion { found: u32, expected: u32 },
    #[error("mvcc snapshot body is {found_bytes} bytes, header says {expected_bytes}")]
    LengthMismatch {
        found_bytes: u64,
        expected_bytes: u64,
    },
    #[error("mvcc snapshot checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("mvcc snapshot body does not decode: {reason}")]
    Decode { reason: String },
    #[error("mvcc snapshot is inconsistent: {reason}")]
    Invalid { reason: String },
}

/// A Raft entry payload that is not a valid encoded [`super::Command`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("mvcc command does not decode: {reason}")]
pub struct DecodeError {
    pub reason: String,
}

/// Why a watch could not be created (sent to the client as `cancel_reason`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WatchError {
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    #[error("mvcc: watch stream does not exist")]
    NoSuchStream,
}
