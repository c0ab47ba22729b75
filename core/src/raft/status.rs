//! A read-only view of a node for logs, metrics, tests and the simulator's checkers.

use std::collections::BTreeMap;

use super::entry::{ConfState, Index, NodeId, Term};
use super::progress::ReplicationState;
use super::state::Role;
use super::Raft;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressStatus {
    pub match_index: Index,
    pub next_index: Index,
    pub state: ReplicationState,
    pub inflight_appends: usize,
    pub is_learner: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub first_index: Index,
    pub last_index: Index,
    pub persisted_index: Index,
    pub commit_index: Index,
    pub applied_index: Index,
    pub snapshot_index: Index,
    pub conf_state: ConfState,
    /// Leader only.
    pub progress: BTreeMap<NodeId, ProgressStatus>,
    pub transfer_target: Option<NodeId>,
    pub pending_reads: usize,
}

impl Raft {
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            term: self.term,
            vote: self.vote,
            role: self.role,
            leader: self.leader,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            persisted_index: self.log.persisted_index(),
            commit_index: self.log.commit_index(),
            applied_index: self.log.applied_index(),
            snapshot_index: self.log.snapshot().meta.index,
            conf_state: self.conf.clone(),
            progress: self
                .progress
                .iter()
                .map(|(&id, p)| {
                    (
                        id,
                        ProgressStatus {
                            match_index: p.match_index,
                            next_index: p.next_index,
                            state: p.state,
                            inflight_appends: p.inflights.len(),
                            is_learner: p.is_learner,
                        },
                    )
                })
                .collect(),
            transfer_target: self.transfer.map(|t| t.to),
            pending_reads: self.reads.len(),
        }
    }
}
