//! Typed errors of the Raft core. API misuse by the embedding application is an `assert!`;
//! anything a client or a peer controls comes back as one of these.

use thiserror::Error;

use super::entry::{Index, NodeId};

/// A peer's message that was refused before it could change anything.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MessageError {
    #[error("message from node 0, which is not a valid id")]
    ZeroSender,
    #[error("message claims to come from this node ({id})")]
    FromSelf { id: NodeId },
    #[error("message addressed to node {to}, but this is node {local_id}")]
    WrongRecipient { to: NodeId, local_id: NodeId },
    #[error("malformed {kind} message: {reason}")]
    Malformed {
        kind: &'static str,
        reason: &'static str,
    },
    #[error("{kind} message holds {count} items, over the limit of {limit}")]
    TooLarge {
        kind: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("{kind} response for index {index}, beyond this leader's last index {last_index}")]
    IndexOutOfRange {
        kind: &'static str,
        index: Index,
        last_index: Index,
    },
    #[error(
        "append from node {from} conflicts with committed entry {index}: a leader is violating \
         Raft's Leader Completeness, refusing to truncate committed entries"
    )]
    ConflictsWithCommitted { from: NodeId, index: Index },
}

/// Why a proposal was not accepted. The client may retry elsewhere or later.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProposeError {
    /// This node is not the leader and cannot forward (forwarding disabled or leader unknown).
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("leadership is being transferred to node {to}; proposals are paused")]
    LeaderTransferInProgress { to: NodeId },
    #[error("too many uncommitted bytes ({uncommitted_bytes} + {proposal_bytes} > {limit_bytes})")]
    UncommittedLimit {
        uncommitted_bytes: usize,
        proposal_bytes: usize,
        limit_bytes: usize,
    },
    #[error("a membership change is already in progress (until index {pending_index} is applied)")]
    ConfChangePending { pending_index: Index },
    #[error("invalid membership change: {reason}")]
    InvalidConfChange { reason: &'static str },
    #[error("this node is not a member of the group")]
    NotMember,
    #[error("{limit} proposals already wait to be forwarded to the leader")]
    ForwardQueueFull { limit: usize },
}

/// Why a read index request was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReadIndexError {
    #[error("no leader is known; retry after an election")]
    NoLeader,
    #[error("too many read requests pending ({pending}); limit {limit}")]
    TooManyPending { pending: usize, limit: usize },
}

/// Why a leader transfer was not started.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TransferError {
    #[error("not the leader")]
    NotLeader,
    #[error("node {to} is not a voter")]
    NotVoter { to: NodeId },
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("node id must be non-zero")]
    ZeroId,
    #[error("heartbeat_ticks must be at least 1")]
    ZeroHeartbeat,
    #[error("election_ticks ({election_ticks}) must be greater than heartbeat_ticks ({heartbeat_ticks})")]
    ElectionNotAboveHeartbeat {
        election_ticks: u32,
        heartbeat_ticks: u32,
    },
    #[error("{name} must be at least 1")]
    ZeroLimit { name: &'static str },
    #[error("the initial state is inconsistent: {reason}")]
    InconsistentInitialState { reason: &'static str },
}
