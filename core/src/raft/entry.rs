//! Log entries and the configuration changes they can carry.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A member of the Raft group. Zero is never a valid id (etcd's convention, kept so that ids
/// round-trip through etcd's protobuf fields where 0 means "none").
pub type NodeId = u64;
/// A Raft term (§5.1). Terms only grow.
pub type Term = u64;
/// A position in the replicated log, starting at 1. Index 0 is the empty log.
pub type Index = u64;

/// One record of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub payload: EntryPayload,
}

/// What an entry asks the state machine to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader: committing it commits all earlier entries (§5.4.2) and
    /// tells the leader its commit index is current, which ReadIndex needs (§6.4).
    Empty,
    /// Opaque bytes for the application's state machine.
    Normal(Bytes),
    /// A membership change; takes effect on every node when it is applied.
    ConfChange(ConfChange),
}

/// Fixed cost charged per entry on top of its payload, so that limits expressed in bytes also
/// bound the number of tiny entries.
pub const ENTRY_OVERHEAD_BYTES: usize = 24;

impl Entry {
    /// Approximate size for flow control and limits: payload bytes plus a fixed overhead.
    pub fn size_bytes(&self) -> usize {
        ENTRY_OVERHEAD_BYTES + self.payload.size_bytes()
    }
}

impl EntryPayload {
    pub fn size_bytes(&self) -> usize {
        match self {
            EntryPayload::Empty => 0,
            EntryPayload::Normal(data) => data.len(),
            EntryPayload::ConfChange(change) => 16 + change.context.len(),
        }
    }
}

/// A single-server membership change (thesis §4.1). Only one may be in flight at a time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfChange {
    pub kind: ConfChangeKind,
    pub node_id: NodeId,
    /// Opaque to Raft: the application records here what it needs to reach the member
    /// (etcd keeps the member's name and peer URLs).
    pub context: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConfChangeKind {
    /// Add a voting member.
    AddVoter,
    /// Add a member that receives the log but neither votes nor counts toward a quorum.
    AddLearner,
    /// Promote a learner to a voter.
    PromoteLearner,
    /// Remove a voter or a learner.
    RemoveNode,
}

/// The membership of the group: who votes and who only learns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfState {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> ConfState {
        ConfState {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first, each in ascending id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// What a snapshot stands in for: every entry up to `index` (whose term was `term`), and the
/// membership in force at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub conf_state: ConfState,
}

/// A state machine image plus its metadata. `data` is opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}
