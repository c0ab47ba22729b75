//! The errors a client sees, in one table: each with the gRPC code and the message etcd
//! answers it with (`api/v3rpc/rpctypes/error.go`), byte for byte, so that `etcdctl` and
//! etcd's client libraries print and branch on keel's errors as on etcd's. A few entries
//! are keel's own (marked so); they follow etcd's style.
//!
//! Every error type a client can meet (the store's [`crate::mvcc::Error`], the auth
//! store's [`crate::auth::AuthError`], membership refusals, the server's own) maps into
//! this table once, through [`ToRpcError`], and displays the table's message. The gRPC
//! layer turns an entry into a status in one place.

use std::fmt;

/// gRPC status codes etcd answers errors with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrpcCode {
    InvalidArgument,
    OutOfRange,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    PermissionDenied,
    Unauthenticated,
    /// The CORRUPT alarm.
    DataLoss,
    Unavailable,
    /// What etcd answers for an error it has no gRPC error for.
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

/// Declares [`RpcError`] from its table: each entry once, with its code and message.
macro_rules! rpc_errors {
    ($($(#[$doc:meta])* $name:ident => $code:ident, $message:literal;)*) => {
        /// One of the errors a client sees (see the module's doc).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum RpcError {
            $($(#[$doc])* $name,)*
        }

        impl RpcError {
            /// Every entry of the table, in its order.
            pub const ALL: &'static [RpcError] = &[$(RpcError::$name,)*];

            /// The gRPC code a client sees.
            pub const fn code(self) -> GrpcCode {
                match self {
                    $(RpcError::$name => GrpcCode::$code,)*
                }
            }

            /// The status message a client sees (before any detail, see [`ToRpcError`]).
            pub const fn message(self) -> &'static str {
                match self {
                    $(RpcError::$name => $message,)*
                }
            }
        }
    };
}

rpc_errors! {
    // ---- The store's (mvcc), etcd's ----
    EmptyKey => InvalidArgument, "etcdserver: key is not provided";
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty `RequestOp`.
    KeyNotFound => InvalidArgument, "etcdserver: key not found";
    ValueProvided => InvalidArgument, "etcdserver: value is provided";
    LeaseProvided => InvalidArgument, "etcdserver: lease is provided";
    TooManyOps => InvalidArgument, "etcdserver: too many operations in txn request";
    DuplicateKey => InvalidArgument, "etcdserver: duplicate key given in txn request";
    InvalidSortOption => InvalidArgument, "etcdserver: invalid sort option";
    RequestTooLarge => InvalidArgument, "etcdserver: request is too large";
    Compacted => OutOfRange, "etcdserver: mvcc: required revision has been compacted";
    FutureRev => OutOfRange, "etcdserver: mvcc: required revision is a future revision";
    LeaseTtlTooLarge => OutOfRange, "etcdserver: too large lease TTL";
    NoSpace => ResourceExhausted, "etcdserver: mvcc: database space exceeded";
    Corrupt => DataLoss, "etcdserver: corrupt cluster";
    LeaseNotFound => NotFound, "etcdserver: requested lease not found";
    LeaseExists => FailedPrecondition, "etcdserver: lease already exists";
    /// etcd's `lease.ErrNotPrimary`: lease timing lives on the leader only.
    NotPrimary => FailedPrecondition, "not a primary lessor";
    /// keel's own: the storage engine refused a read or write (its reason follows).
    StorageFailed => Unavailable, "etcdserver: storage engine failed";

    // ---- The auth store's, etcd's ----
    RootUserNotExist => FailedPrecondition, "etcdserver: root user does not exist";
    RootRoleNotExist => FailedPrecondition, "etcdserver: root user does not have root role";
    UserAlreadyExist => FailedPrecondition, "etcdserver: user name already exists";
    UserEmpty => InvalidArgument, "etcdserver: user name is empty";
    UserNotFound => FailedPrecondition, "etcdserver: user name not found";
    RoleAlreadyExist => FailedPrecondition, "etcdserver: role name already exists";
    RoleNotFound => FailedPrecondition, "etcdserver: role name not found";
    RoleEmpty => InvalidArgument, "etcdserver: role name is empty";
    AuthFailed => InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password";
    /// etcd has no gRPC error for it: its clients see the auth store's message, as Unknown.
    NoPasswordUser => Unknown,
        "auth: authentication failed, password was given for no password user";
    PermissionNotGiven => InvalidArgument, "etcdserver: permission not given";
    PermissionDenied => PermissionDenied, "etcdserver: permission denied";
    RoleNotGranted => FailedPrecondition, "etcdserver: role is not granted to the user";
    PermissionNotGranted => FailedPrecondition,
        "etcdserver: permission is not granted to the role";
    AuthNotEnabled => FailedPrecondition, "etcdserver: authentication is not enabled";
    InvalidAuthToken => Unauthenticated, "etcdserver: invalid auth token";
    InvalidAuthMgmt => InvalidArgument, "etcdserver: invalid auth management";
    AuthOldRevision => InvalidArgument, "etcdserver: revision of auth store is old";

    // ---- The server's, etcd's ----
    NotLeader => FailedPrecondition, "etcdserver: not leader";
    NoLeader => Unavailable, "etcdserver: no leader";
    LeaderChanged => Unavailable, "etcdserver: leader changed";
    Stopped => Unavailable, "etcdserver: server stopped";
    Timeout => Unavailable, "etcdserver: request timed out";
    TooManyRequests => ResourceExhausted, "etcdserver: too many requests";
    /// etcd has no gRPC error for it either: Unknown, with etcdserver's message.
    TimeoutLeaderTransfer => Unknown,
        "etcdserver: request timed out, leader transfer took too long";
    BadLeaderTransferee => FailedPrecondition, "etcdserver: bad leader transferee";
    /// A learner serves only serializable ranges and status (etcd 3.4 and later).
    NotSupportedForLearner => Unavailable, "etcdserver: rpc not supported for learner";

    // ---- Membership, etcd's ----
    MemberExists => FailedPrecondition, "etcdserver: member ID already exist";
    PeerUrlExists => FailedPrecondition, "etcdserver: Peer URLs already exists";
    MemberNotEnoughStarted => FailedPrecondition,
        "etcdserver: re-configuration failed due to not enough started members";
    /// A member removal would leave fewer voters up than a quorum.
    Unhealthy => Unavailable, "etcdserver: unhealthy cluster";
    MemberBadUrls => InvalidArgument, "etcdserver: given member URLs are invalid";
    MemberNotFound => NotFound, "etcdserver: member not found";
    MemberNotLearner => FailedPrecondition, "etcdserver: can only promote a learner member";
    LearnerNotReady => FailedPrecondition,
        "etcdserver: can only promote a learner member which is in sync with leader";
    TooManyLearners => FailedPrecondition, "etcdserver: too many learner members in cluster";
    /// A removed member's id may never come back (Raft must not see it again).
    IdRemoved => FailedPrecondition, "etcdserver: ID removed";
    /// keel's own: the previous membership change is not applied yet (etcd's Raft drops
    /// such a change silently and the client waits for its deadline).
    MembershipChangePending => FailedPrecondition,
        "etcdserver: the previous membership change is not applied yet";
    /// keel's own: Raft refused the change against the membership in force (its reason
    /// follows).
    InvalidMembershipChange => FailedPrecondition, "etcdserver: invalid membership change";
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for RpcError {}

/// An error a client sees as an entry of the table. Its `Display` is the status message:
/// the entry's message, followed for a few of keel's own by `": "` and a detail.
pub trait ToRpcError: fmt::Display {
    fn rpc_error(&self) -> RpcError;
}

impl ToRpcError for RpcError {
    fn rpc_error(&self) -> RpcError {
        *self
    }
}

impl<T: ToRpcError + ?Sized> ToRpcError for &T {
    fn rpc_error(&self) -> RpcError {
        (**self).rpc_error()
    }
}

/// Writes an entry's message and, when there is one, its detail.
pub fn write_message(
    f: &mut fmt::Formatter<'_>,
    error: RpcError,
    detail: Option<&str>,
) -> fmt::Result {
    f.write_str(error.message())?;
    match detail {
        Some(detail) => write!(f, ": {detail}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn each_entry_has_its_own_code_and_message() {
        let pairs: BTreeSet<_> = RpcError::ALL
            .iter()
            .map(|e| (e.code().name(), e.message()))
            .collect();
        assert_eq!(pairs.len(), RpcError::ALL.len(), "two entries look alike");
    }

    #[test]
    fn codes_and_messages_are_etcds() {
        // Checked against etcd 3.4's `rpctypes`; the compat tests run etcdctl on the rest.
        let cases = [
            (
                RpcError::NotLeader,
                GrpcCode::FailedPrecondition,
                "etcdserver: not leader",
            ),
            (
                RpcError::NoLeader,
                GrpcCode::Unavailable,
                "etcdserver: no leader",
            ),
            (
                RpcError::NotSupportedForLearner,
                GrpcCode::Unavailable,
                "etcdserver: rpc not supported for learner",
            ),
            (
                RpcError::PeerUrlExists,
                GrpcCode::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            (
                RpcError::MemberNotFound,
                GrpcCode::NotFound,
                "etcdserver: member not found",
            ),
            (
                RpcError::LearnerNotReady,
                GrpcCode::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            (
                RpcError::MemberBadUrls,
                GrpcCode::InvalidArgument,
                "etcdserver: given member URLs are invalid",
            ),
            (
                RpcError::Compacted,
                GrpcCode::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                RpcError::InvalidAuthToken,
                GrpcCode::Unauthenticated,
                "etcdserver: invalid auth token",
            ),
            (
                RpcError::Corrupt,
                GrpcCode::DataLoss,
                "etcdserver: corrupt cluster",
            ),
        ];
        for (error, code, message) in cases {
            assert_eq!(
                (error.code(), error.message()),
                (code, message),
                "{error:?}"
            );
        }
    }
}
