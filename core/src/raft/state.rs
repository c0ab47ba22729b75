//! The state a node must persist (`HardState`) and the state it only reports (`SoftState`).

use serde::{Deserialize, Serialize};

use super::entry::{Index, NodeId, Term};

/// Must be on disk before any message that depends on it is sent (Figure 2, "persistent
/// state"). `commit_index` is persisted too, so that a restart re-applies no further than
/// what was known committed, and never less.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit_index: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Follower,
    /// Running a pre-vote (thesis §9.6): asking whether an election could be won, without
    /// raising its term.
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile facts the application may want to react to (logs, metrics, routing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<NodeId>,
    pub role: Role,
}
