//! ReadIndex (thesis §6.4): a leader answers a linearizable read with its commit index once a
//! quorum has confirmed, after the read arrived, that it is still the leader.
//!
//! Confirmation is batched in rounds. Every read waits for the first heartbeat round sent
//! after it arrived; one round of heartbeats confirms every read waiting for it or an earlier
//! round, so one round trip serves any number of reads. Round numbers only grow, so an
//! answer to an old round can never confirm a newer read.

use std::collections::{BTreeMap, VecDeque};

use super::entry::{Index, NodeId};

/// Who asked: a client of this node, or a follower on behalf of its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadOrigin {
    Local,
    Follower(NodeId),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub(crate) request_id: u64,
    pub(crate) origin: ReadOrigin,
    pub(crate) read_index: Index,
    /// The heartbeat round whose quorum confirms this read.
    pub(crate) round: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ReadIndexQueue {
    /// Waiting for confirmation, in arrival (hence round) order.
    confirming: VecDeque<PendingRead>,
    /// Arrived before this leader committed an entry of its term: its commit index may lag
    /// the previous leader's, so no read index can be given yet.
    awaiting_term_commit: Vec<(u64, ReadOrigin)>,
    /// The highest round sent in a heartbeat.
    last_round_sent: u64,
    /// Reads arrived that need a round above `last_round_sent`.
    round_needed: bool,
    /// Highest round each member answered, this leadership.
    acked_rounds: BTreeMap<NodeId, u64>,
}

impl ReadIndexQueue {
    pub(crate) fn len(&self) -> usize {
        self.confirming.len() + self.awaiting_term_commit.len()
    }

    /// Forgets everything pending; called when leadership ends or begins. Round numbers are
    /// kept so they keep growing.
    pub(crate) fn reset(&mut self) {
        self.confirming.clear();
        self.awaiting_term_commit.clear();
        self.acked_rounds.clear();
        self.round_needed = false;
    }

    pub(crate) fn await_term_commit(&mut self, request_id: u64, origin: ReadOrigin) {
        self.awaiting_term_commit.push((request_id, origin));
    }

    pub(crate) fn take_awaiting_term_commit(&mut self) -> Vec<(u64, ReadOrigin)> {
        std::mem::take(&mut self.awaiting_term_commit)
    }

    /// Queues a read that will be confirmed by the next round sent.
    pub(crate) fn push(&mut self, request_id: u64, origin: ReadOrigin, read_index: Index) {
        self.confirming.push_back(PendingRead {
            request_id,
            origin,
            read_index,
            round: self.last_round_sent + 1,
        });
        self.round_needed = true;
    }

    /// Makes the next heartbeat start a new round even without reads waiting.
    pub(crate) fn force_new_round(&mut self) {
        self.round_needed = true;
    }

    pub(crate) fn round_needed(&self) -> bool {
        self.round_needed
    }

    pub(crate) fn has_confirming(&self) -> bool {
        !self.confirming.is_empty()
    }

    /// The round to put in the next heartbeat: a new one if reads are waiting for it, else
    /// the last one again (which re-confirms reads whose round's answers were lost).
    pub(crate) fn next_heartbeat_round(&mut self) -> u64 {
        if self.round_needed {
            self.last_round_sent += 1;
            self.round_needed = false;
        }
        self.last_round_sent
    }

    pub(crate) fn last_round_sent(&self) -> u64 {
        self.last_round_sent
    }

    pub(crate) fn ack(&mut self, from: NodeId, round: u64) {
        let acked = self.acked_rounds.entry(from).or_insert(0);
        *acked = (*acked).max(round.min(self.last_round_sent));
    }

    pub(crate) fn acked_round(&self, id: NodeId) -> u64 {
        self.acked_rounds.get(&id).copied().unwrap_or(0)
    }

    /// Removes and returns the reads confirmed by a quorum having answered `quorum_round`.
    pub(crate) fn release_confirmed(&mut self, quorum_round: u64, released: &mut Vec<PendingRead>) {
        while self
            .confirming
            .front()
            .is_some_and(|read| read.round <= quorum_round)
        {
            if let Some(read) = self.confirming.pop_front() {
                released.push(read);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_needs_a_round_sent_after_it_arrived() {
        let mut queue = ReadIndexQueue::default();
        let first_round = queue.next_heartbeat_round();
        queue.push(1, ReadOrigin::Local, 10);
        let mut released = Vec::new();
        queue.release_confirmed(first_round, &mut released);
        assert!(
            released.is_empty(),
            "a round sent before the read cannot confirm it"
        );
        let round = queue.next_heartbeat_round();
        assert_eq!(round, first_round + 1);
        queue.push(2, ReadOrigin::Follower(3), 11);
        queue.release_confirmed(round, &mut released);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].request_id, 1);
        let next = queue.next_heartbeat_round();
        queue.release_confirmed(next, &mut released);
        assert_eq!(released.len(), 2);
    }

    #[test]
    fn acks_are_capped_at_the_last_round_sent() {
        let mut queue = ReadIndexQueue::default();
        queue.push(1, ReadOrigin::Local, 1);
        let round = queue.next_heartbeat_round();
        queue.ack(2, round + 100);
        assert_eq!(
            queue.acked_round(2),
            round,
            "a peer cannot ack a round never sent"
        );
    }
}

mod leader {
    use super::super::entry::NodeId;
    use super::super::message::{MessageBody, ReadIndexResponse};
    use super::super::quorum;
    use super::super::ready::ReadState;
    use super::super::state::Role;
    use super::super::Raft;
    use super::ReadOrigin;

    impl Raft {
        /// A read arrives at the leader, from its own client or forwarded by a follower.
        pub(in crate::raft) fn leader_read_index(&mut self, request_id: u64, origin: ReadOrigin) {
            if !self.committed_in_current_term() {
                self.reads.await_term_commit(request_id, origin);
                return;
            }
            let read_index = self.log.commit_index();
            if self.conf.voters.len() == 1 && self.conf.voters.contains(&self.id) {
                // A lone voter is its own quorum.
                self.answer_read(request_id, origin, read_index);
                return;
            }
            self.reads.push(request_id, origin, read_index);
        }

        pub(in crate::raft) fn handle_forwarded_read(&mut self, from: NodeId, request_id: u64) {
            // Anyone but the leader drops it, as if lost; the follower's client times out.
            if self.role == Role::Leader && self.reads.len() < self.config.max_pending_reads {
                self.leader_read_index(request_id, ReadOrigin::Follower(from));
            }
        }

        fn committed_in_current_term(&self) -> bool {
            self.log.term(self.log.commit_index()) == Some(self.term)
        }

        /// Called when the leader's commit index moves.
        pub(in crate::raft) fn on_leader_commit_advanced(&mut self) {
            if self.committed_in_current_term() {
                for (request_id, origin) in self.reads.take_awaiting_term_commit() {
                    self.leader_read_index(request_id, origin);
                }
            }
        }

        /// Releases every read whose round a quorum of voters has answered.
        pub(in crate::raft) fn release_confirmed_reads(&mut self) {
            if !self.reads.has_confirming() {
                return;
            }
            let self_round = self.reads.last_round_sent();
            let reads = &self.reads;
            let quorum_round = quorum::majority_value(&self.conf.voters, &mut self.scratch, |id| {
                if id == self.id {
                    self_round
                } else {
                    reads.acked_round(id)
                }
            });
            let mut released = Vec::new();
            self.reads.release_confirmed(quorum_round, &mut released);
            for read in released {
                self.answer_read(read.request_id, read.origin, read.read_index);
            }
        }

        fn answer_read(&mut self, request_id: u64, origin: ReadOrigin, read_index: u64) {
            match origin {
                ReadOrigin::Local => self.read_states.push(ReadState {
                    request_id,
                    read_index,
                }),
                ReadOrigin::Follower(to) => self.send(
                    to,
                    MessageBody::ReadIndexResponse(ReadIndexResponse {
                        request_id,
                        read_index,
                    }),
                ),
            }
        }
    }
}
