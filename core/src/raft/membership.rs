//! Membership changes (thesis §4): one server at a time, learners, promotion. A change takes
//! effect on each node when it applies the entry; a leader accepts no new change until the
//! previous one (and, after an election, its own first entry) is applied.

use super::entry::{ConfChange, ConfChangeKind, ConfState, Index, NodeId};
use super::error::ProposeError;
use super::progress::Progress;
use super::state::Role;
use super::{Raft, RemovalHandoff};

/// Refuses a change that makes no sense against the membership in force.
pub(super) fn validate(conf: &ConfState, change: &ConfChange) -> Result<(), ProposeError> {
    let invalid = |reason| Err(ProposeError::InvalidConfChange { reason });
    let id = change.node_id;
    if id == 0 {
        return invalid("node id 0 is not valid");
    }
    match change.kind {
        ConfChangeKind::AddVoter if conf.voters.contains(&id) => invalid("already a voter"),
        ConfChangeKind::AddLearner if conf.voters.contains(&id) => {
            invalid("a voter cannot be demoted to a learner")
        }
        ConfChangeKind::AddLearner if conf.learners.contains(&id) => invalid("already a learner"),
        ConfChangeKind::PromoteLearner if !conf.learners.contains(&id) => invalid("not a learner"),
        ConfChangeKind::RemoveNode if !conf.contains(id) => invalid("not a member"),
        ConfChangeKind::RemoveNode if conf.voters.len() == 1 && conf.voters.contains(&id) => {
            invalid("cannot remove the last voter")
        }
        _ => Ok(()),
    }
}

/// The membership after `change`. A change that is invalid against `conf` (it was valid
/// where it was proposed, but every node must apply the same log the same way) is a no-op.
pub fn apply_to_conf(conf: &ConfState, change: &ConfChange) -> ConfState {
    let mut next = conf.clone();
    if validate(conf, change).is_err() {
        return next;
    }
    let id = change.node_id;
    match change.kind {
        ConfChangeKind::AddVoter => {
            next.learners.remove(&id);
            next.voters.insert(id);
        }
        ConfChangeKind::AddLearner => {
            next.learners.insert(id);
        }
        ConfChangeKind::PromoteLearner => {
            next.learners.remove(&id);
            next.voters.insert(id);
        }
        ConfChangeKind::RemoveNode => {
            next.voters.remove(&id);
            next.learners.remove(&id);
        }
    }
    next
}

impl Raft {
    pub(super) fn apply_conf_change(&mut self, change: &ConfChange) {
        self.conf = apply_to_conf(&self.conf, change);
        if self.role != Role::Leader {
            return;
        }
        self.sync_progress_with_conf();
        if !self.conf.contains(self.id) {
            // A leader that removed itself must not simply step down (§4.2.2): if the
            // remaining voters never hear that the removal is committed, they still count
            // it and, with two voters left as one, can never elect anyone. It keeps leading
            // (taking no proposals) until a quorum of them confirmed it; see
            // `broadcast_heartbeat` and `maybe_finish_removal_handoff`.
            self.removal_handoff = Some(RemovalHandoff {
                commit_index: self.log.commit_index(),
                confirm_round: None,
            });
            self.broadcast_pending = true;
            return;
        }
        if self
            .transfer
            .is_some_and(|t| !self.conf.voters.contains(&t.to))
        {
            self.transfer = None;
        }
        // Fewer voters may mean a smaller quorum has already been reached.
        if self.maybe_commit() {
            self.broadcast_pending = true;
        }
    }

    /// Called on heartbeat answers: steps down once a quorum of the remaining voters has
    /// answered a heartbeat that told them the removal is committed.
    pub(super) fn maybe_finish_removal_handoff(&mut self) {
        let Some(RemovalHandoff {
            confirm_round: Some(round),
            ..
        }) = self.removal_handoff
        else {
            return;
        };
        let confirmed = self
            .conf
            .voters
            .iter()
            .filter(|&&id| self.reads.acked_round(id) >= round)
            .count();
        if confirmed >= self.conf.quorum() {
            self.become_follower(self.term, None);
        }
    }

    /// The round to confirm a removal hand-off with, once every remaining voter holds the
    /// removal (so the heartbeat carries a commit index covering it).
    pub(super) fn removal_handoff_round(&mut self) {
        let Some(handoff) = self.removal_handoff else {
            return;
        };
        if handoff.confirm_round.is_some() {
            return;
        }
        // Heartbeats carry min(match, commit): once both cover the target, they tell it.
        let all_hold_it = self.log.commit_index() >= handoff.commit_index
            && self.conf.voters.iter().all(|id| {
                self.progress
                    .get(id)
                    .is_some_and(|p| p.match_index >= handoff.commit_index)
            });
        if all_hold_it {
            self.reads.force_new_round();
            self.removal_handoff = Some(RemovalHandoff {
                confirm_round: Some(self.reads.last_round_sent() + 1),
                ..handoff
            });
        }
    }

    /// Gives new members a progress (probing from the end of the log) and drops removed ones.
    fn sync_progress_with_conf(&mut self) {
        let next_index: Index = self.log.last_index() + 1;
        let max_inflight = self.config.max_inflight_appends;
        self.progress.retain(|id, _| self.conf.contains(*id));
        let members: Vec<NodeId> = self.conf.members().collect();
        for id in members {
            let is_learner = self.conf.learners.contains(&id);
            let progress = self
                .progress
                .entry(id)
                .or_insert_with(|| Progress::new(next_index, max_inflight, is_learner));
            progress.is_learner = is_learner;
        }
        self.broadcast_pending = true;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn change(kind: ConfChangeKind, node_id: NodeId) -> ConfChange {
        ConfChange {
            kind,
            node_id,
            context: Bytes::new(),
        }
    }

    #[test]
    fn learner_is_promoted_to_voter() {
        let conf = ConfState::with_voters([1, 2, 3]);
        let conf = apply_to_conf(&conf, &change(ConfChangeKind::AddLearner, 4));
        assert!(conf.learners.contains(&4));
        assert_eq!(conf.quorum(), 2, "learners do not count toward the quorum");
        let conf = apply_to_conf(&conf, &change(ConfChangeKind::PromoteLearner, 4));
        assert!(conf.voters.contains(&4) && conf.learners.is_empty());
        assert_eq!(conf.quorum(), 3);
    }

    #[test]
    fn invalid_changes_are_refused_and_apply_as_no_ops() {
        let conf = ConfState::with_voters([1]);
        for bad in [
            change(ConfChangeKind::AddVoter, 1),
            change(ConfChangeKind::AddLearner, 1),
            change(ConfChangeKind::PromoteLearner, 2),
            change(ConfChangeKind::RemoveNode, 2),
            change(ConfChangeKind::RemoveNode, 1),
            change(ConfChangeKind::AddVoter, 0),
        ] {
            assert!(validate(&conf, &bad).is_err(), "{bad:?} should be refused");
            assert_eq!(apply_to_conf(&conf, &bad), conf);
        }
    }
}
