//! A leader's view of one member's log: how far it matches, what to send next, and how much
//! may be in flight (etcd-io/raft's Progress, tracker/progress.go, re-thought).

use std::collections::VecDeque;

use super::entry::Index;

/// How the leader is currently replicating to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// The leader does not know where the member's log matches: one Append at a time, each
    /// answered (or a heartbeat passes) before the next.
    Probe,
    /// The member's log is known to match: Appends are pipelined, up to the inflight limit.
    Replicate,
    /// The member needs entries that were compacted away; a snapshot at `pending_index` was
    /// sent and nothing else is until it is acknowledged or times out.
    Snapshot { pending_index: Index },
}

/// What a rejected Append means for replication to its member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// An answer to an older Append: nothing changes.
    Stale,
    /// Send again from the new `next_index`.
    Retry,
    /// The member's log ends below what it acknowledged: it lost state (see `lost_state`).
    BelowAcknowledged,
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: Index,
    pub(crate) next_index: Index,
    pub(crate) state: ReplicationState,
    /// In Probe: an Append was sent and is not answered yet.
    pub(crate) probe_sent: bool,
    /// In Snapshot: ticks since the snapshot was sent.
    pub(crate) snapshot_elapsed_ticks: u32,
    pub(crate) inflights: Inflights,
    /// Heard from since the last CheckQuorum round.
    pub(crate) recent_active: bool,
    /// An Append was acknowledged since the last heartbeat was sent: the pipeline flows.
    pub(crate) acked_since_heartbeat: bool,
    pub(crate) is_learner: bool,
}

impl Progress {
    pub(crate) fn new(next_index: Index, max_inflight: usize, is_learner: bool) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            snapshot_elapsed_ticks: 0,
            inflights: Inflights::new(max_inflight),
            recent_active: false,
            acked_since_heartbeat: false,
            is_learner,
        }
    }

    /// Whether the leader must hold back Appends to this member for now.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => self.inflights.is_full(),
            ReplicationState::Snapshot { .. } => true,
        }
    }

    fn reset_state(&mut self, state: ReplicationState) {
        self.state = state;
        self.probe_sent = false;
        self.snapshot_elapsed_ticks = 0;
        self.inflights.clear();
    }

    pub(crate) fn become_probe(&mut self) {
        let next_index = match self.state {
            // The snapshot may have arrived even if its answer did not.
            ReplicationState::Snapshot { pending_index } => {
                (self.match_index + 1).max(pending_index + 1)
            }
            _ => self.match_index + 1,
        };
        self.reset_state(ReplicationState::Probe);
        self.next_index = next_index;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ReplicationState::Replicate);
        self.next_index = self.match_index + 1;
    }

    pub(crate) fn become_snapshot(&mut self, pending_index: Index) {
        self.reset_state(ReplicationState::Snapshot { pending_index });
    }

    /// An Append was sent covering entries through `last_index`.
    pub(crate) fn sent_entries(&mut self, last_index: Option<Index>) {
        match self.state {
            ReplicationState::Replicate => {
                if let Some(last_index) = last_index {
                    self.next_index = last_index + 1;
                    self.inflights.add(last_index);
                }
            }
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Snapshot { .. } => {
                debug_assert!(false, "sent entries to a member waiting for a snapshot")
            }
        }
    }

    /// The member acknowledged a match through `index`. Returns false for stale answers.
    pub(crate) fn update_match(&mut self, index: Index) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            self.probe_sent = false;
            self.acked_since_heartbeat = true;
        }
        self.next_index = self.next_index.max(index + 1);
        advanced
    }

    /// The member rejected an Append whose previous entry was `rejected_index`; its log
    /// agrees with the leader's at most up to `hint_index`, and `probe_from` is where the
    /// leader's log and that hint may agree.
    pub(crate) fn rejected(
        &mut self,
        rejected_index: Index,
        probe_from: Index,
        hint_index: Index,
    ) -> Rejection {
        match self.state {
            ReplicationState::Replicate => {
                if rejected_index <= self.match_index {
                    return Rejection::Stale;
                }
                self.become_probe();
                Rejection::Retry
            }
            _ => {
                if self.next_index.checked_sub(1) != Some(rejected_index) {
                    return Rejection::Stale;
                }
                if hint_index < self.match_index {
                    // Probing lower would be pointless (entries up to `match_index` were
                    // acknowledged) and probing again at once is a loop at network speed:
                    // wait for the next heartbeat's answer.
                    self.probe_sent = true;
                    return Rejection::BelowAcknowledged;
                }
                self.next_index = probe_from.min(rejected_index).max(self.match_index + 1);
                self.probe_sent = false;
                Rejection::Retry
            }
        }
    }
}

/// The last index of each unacknowledged Append, oldest first, bounded.
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    last_indexes: VecDeque<Index>,
    capacity: usize,
}

impl Inflights {
    pub(crate) fn new(capacity: usize) -> Inflights {
        assert!(capacity > 0, "inflight capacity must be positive");
        Inflights {
            last_indexes: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    pub(crate) fn add(&mut self, last_index: Index) {
        debug_assert!(!self.is_full(), "inflight window overflow");
        debug_assert!(
            self.last_indexes
                .back()
                .is_none_or(|&back| back < last_index),
            "inflight appends must cover increasing indexes"
        );
        self.last_indexes.push_back(last_index);
    }

    /// Frees every Append acknowledged by a match through `index`.
    pub(crate) fn free_to(&mut self, index: Index) {
        while self
            .last_indexes
            .front()
            .is_some_and(|&front| front <= index)
        {
            self.last_indexes.pop_front();
        }
    }

    /// A heartbeat answer proves the member is alive although the window is full: let one
    /// more Append through, in case an earlier one was lost.
    pub(crate) fn free_first_one(&mut self) {
        self.last_indexes.pop_front();
    }

    pub(crate) fn clear(&mut self) {
        self.last_indexes.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.last_indexes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_free_by_acknowledged_index() {
        let mut inflights = Inflights::new(3);
        inflights.add(5);
        inflights.add(9);
        inflights.add(12);
        assert!(inflights.is_full());
        inflights.free_to(9);
        assert_eq!(inflights.len(), 1);
        inflights.free_first_one();
        assert_eq!(inflights.len(), 0);
    }

    #[test]
    fn replicate_ignores_stale_rejection_at_or_below_match() {
        let mut progress = Progress::new(11, 4, false);
        progress.update_match(10);
        progress.become_replicate();
        assert_eq!(progress.rejected(9, 5, 9), Rejection::Stale);
        assert_eq!(progress.state, ReplicationState::Replicate);
        assert_eq!(progress.rejected(12, 11, 12), Rejection::Retry);
        assert_eq!(progress.state, ReplicationState::Probe);
        assert_eq!(progress.next_index, 11);
    }

    #[test]
    fn probe_rejection_uses_hint_but_never_goes_below_match() {
        let mut progress = Progress::new(20, 4, false);
        progress.update_match(3);
        progress.next_index = 20;
        assert_eq!(
            progress.rejected(10, 5, 5),
            Rejection::Stale,
            "rejection of an older probe is stale"
        );
        assert_eq!(progress.rejected(19, 8, 8), Rejection::Retry);
        assert_eq!(progress.next_index, 8);
        progress.next_index = 5;
        assert_eq!(progress.rejected(4, 1, 3), Rejection::Retry);
        assert_eq!(progress.next_index, 4, "next never drops to or below match");
    }

    #[test]
    fn a_probe_rejected_below_the_match_waits_for_a_heartbeat() {
        let mut progress = Progress::new(11, 4, false);
        progress.update_match(10);
        assert_eq!(progress.rejected(10, 2, 1), Rejection::BelowAcknowledged);
        assert!(
            progress.is_paused(),
            "no resend until a heartbeat is answered"
        );
        assert_eq!(progress.next_index, 11);
    }

    #[test]
    fn snapshot_to_probe_skips_past_the_snapshot() {
        let mut progress = Progress::new(5, 4, false);
        progress.become_snapshot(100);
        assert!(progress.is_paused());
        progress.become_probe();
        assert_eq!(progress.next_index, 101);
    }
}
