//! Typed errors of the MVCC store. Every error a client can cause is an entry of etcd's
//! errors ([`crate::rpctypes`]): it displays etcd's exact status message, and the gRPC layer
//! answers it with etcd's code. A request that fails changes nothing in the store
//! (the one exception, like etcd, is the NOSPACE alarm a rejected write may raise).

use std::fmt;

use thiserror::Error;

pub use crate::rpctypes::GrpcCode;
use crate::rpctypes::{write_message, RpcError, ToRpcError};

/// A request the store refused. Each displays its entry of etcd's errors
/// ([`crate::rpctypes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty `RequestOp`.
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    TooManyOps,
    DuplicateKey,
    /// For the gRPC layer: a sort order or target outside the proto enum.
    InvalidSortOption,
    Compacted,
    FutureRev,
    NoSpace,
    /// A CORRUPT alarm is active: a member's data differs from the others'. Every write is
    /// refused until an operator has replaced that member and disarmed the alarm.
    Corrupt,
    LeaseNotFound,
    LeaseExists,
    LeaseTtlTooLarge,
    RequestTooLarge,
    /// Lease timing (KeepAlive, TimeToLive, expiry) lives on the leader only; the server
    /// forwards the request to the leader, like etcd's `lease.ErrNotPrimary`.
    NotPrimary,
    /// The storage engine refused a read or write; this member stops serving (see
    /// `Store::failure`).
    Storage {
        reason: String,
    },
}

impl ToRpcError for Error {
    fn rpc_error(&self) -> RpcError {
        match self {
            Error::EmptyKey => RpcError::EmptyKey,
            Error::KeyNotFound => RpcError::KeyNotFound,
            Error::ValueProvided => RpcError::ValueProvided,
            Error::LeaseProvided => RpcError::LeaseProvided,
            Error::TooManyOps => RpcError::TooManyOps,
            Error::DuplicateKey => RpcError::DuplicateKey,
            Error::InvalidSortOption => RpcError::InvalidSortOption,
            Error::Compacted => RpcError::Compacted,
            Error::FutureRev => RpcError::FutureRev,
            Error::NoSpace => RpcError::NoSpace,
            Error::Corrupt => RpcError::Corrupt,
            Error::LeaseNotFound => RpcError::LeaseNotFound,
            Error::LeaseExists => RpcError::LeaseExists,
            Error::LeaseTtlTooLarge => RpcError::LeaseTtlTooLarge,
            Error::RequestTooLarge => RpcError::RequestTooLarge,
            Error::NotPrimary => RpcError::NotPrimary,
            Error::Storage { .. } => RpcError::StorageFailed,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let detail = match self {
            Error::Storage { reason } => Some(reason.as_str()),
            _ => None,
        };
        write_message(f, self.rpc_error(), detail)
    }
}

impl std::error::Error for Error {}

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
