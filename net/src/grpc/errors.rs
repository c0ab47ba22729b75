//! etcd's gRPC errors that are the server's rather than the store's (those are
//! `keel_core::mvcc::Error`): codes and messages byte for byte as in etcd's
//! `api/v3rpc/rpctypes/error.go`, so `etcdctl` prints what it prints against etcd.

use tonic::{Code, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdError {
    NotLeader,
    NoLeader,
    Timeout,
    TimeoutLeaderTransfer,
    BadLeaderTransferee,
    MemberExists,
    PeerUrlExists,
    MemberNotEnoughStarted,
    /// A member removal would leave fewer voters up than a quorum.
    Unhealthy,
    MemberBadUrls,
    MemberNotFound,
    MemberNotLearner,
    LearnerNotReady,
    TooManyLearners,
    /// A removed member's id may never come back (Raft must not see it again); added
    /// members get fresh random ids, so only a collision could ask for one.
    IdRemoved,
    /// A learner serves only serializable ranges and status (etcd 3.4 and later).
    NotSupportedForLearner,
}

impl From<keel_core::node::AdmissionError> for EtcdError {
    fn from(error: keel_core::node::AdmissionError) -> EtcdError {
        use keel_core::node::AdmissionError as A;
        match error {
            A::IdRemoved => EtcdError::IdRemoved,
            A::PeerUrlExists => EtcdError::PeerUrlExists,
            A::MemberExists => EtcdError::MemberExists,
            A::TooManyLearners => EtcdError::TooManyLearners,
            A::MemberNotEnoughStarted => EtcdError::MemberNotEnoughStarted,
            A::Unhealthy => EtcdError::Unhealthy,
            A::MemberNotFound => EtcdError::MemberNotFound,
            A::MemberNotLearner => EtcdError::MemberNotLearner,
            A::LearnerNotReady => EtcdError::LearnerNotReady,
            A::NotLeader => EtcdError::NotLeader,
        }
    }
}

impl EtcdError {
    pub fn code(self) -> Code {
        use EtcdError::*;
        match self {
            NoLeader | Timeout | NotSupportedForLearner | Unhealthy => Code::Unavailable,
            MemberBadUrls => Code::InvalidArgument,
            MemberNotFound => Code::NotFound,
            TimeoutLeaderTransfer => Code::Unknown,
            NotLeader
            | BadLeaderTransferee
            | MemberExists
            | PeerUrlExists
            | MemberNotEnoughStarted
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | IdRemoved => Code::FailedPrecondition,
        }
    }

    pub fn message(self) -> &'static str {
        use EtcdError::*;
        match self {
            NotLeader => "etcdserver: not leader",
            NoLeader => "etcdserver: no leader",
            Timeout => "etcdserver: request timed out",
            TimeoutLeaderTransfer => "etcdserver: request timed out, leader transfer took too long",
            BadLeaderTransferee => "etcdserver: bad leader transferee",
            MemberExists => "etcdserver: member ID already exist",
            PeerUrlExists => "etcdserver: Peer URLs already exists",
            MemberNotEnoughStarted => {
                "etcdserver: re-configuration failed due to not enough started members"
            }
            Unhealthy => "etcdserver: unhealthy cluster",
            MemberBadUrls => "etcdserver: given member URLs are invalid",
            MemberNotFound => "etcdserver: member not found",
            MemberNotLearner => "etcdserver: can only promote a learner member",
            LearnerNotReady => {
                "etcdserver: can only promote a learner member which is in sync with leader"
            }
            TooManyLearners => "etcdserver: too many learner members in cluster",
            IdRemoved => "etcdserver: ID removed",
            NotSupportedForLearner => "etcdserver: rpc not supported for learner",
        }
    }

    pub fn status(self) -> Status {
        Status::new(self.code(), self.message())
    }

    /// The error a status from another member carries, if it is one of these.
    pub fn from_status(status: &Status) -> Option<EtcdError> {
        use EtcdError::*;
        [
            NotLeader,
            NoLeader,
            Timeout,
            TimeoutLeaderTransfer,
            BadLeaderTransferee,
            MemberExists,
            PeerUrlExists,
            MemberNotEnoughStarted,
            Unhealthy,
            MemberBadUrls,
            MemberNotFound,
            MemberNotLearner,
            LearnerNotReady,
            TooManyLearners,
            IdRemoved,
            NotSupportedForLearner,
        ]
        .into_iter()
        .find(|e| e.code() == status.code() && e.message() == status.message())
    }
}

impl From<EtcdError> for Status {
    fn from(error: EtcdError) -> Status {
        error.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_are_etcds() {
        let cases = [
            (
                EtcdError::NotLeader,
                Code::FailedPrecondition,
                "etcdserver: not leader",
            ),
            (
                EtcdError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                EtcdError::NotSupportedForLearner,
                Code::Unavailable,
                "etcdserver: rpc not supported for learner",
            ),
            (
                EtcdError::PeerUrlExists,
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            (
                EtcdError::MemberNotFound,
                Code::NotFound,
                "etcdserver: member not found",
            ),
            (
                EtcdError::MemberNotLearner,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            (
                EtcdError::LearnerNotReady,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            (
                EtcdError::MemberBadUrls,
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid",
            ),
        ];
        for (error, code, message) in cases {
            let status = error.status();
            assert_eq!(status.code(), code, "{error:?}");
            assert_eq!(status.message(), message, "{error:?}");
            assert_eq!(EtcdError::from_status(&status), Some(error));
        }
    }
}
