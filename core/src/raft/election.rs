//! Leader election (§5.2) with PreVote (thesis §9.6) and CheckQuorum (thesis §6.2).

use rand::Rng;

use super::entry::{EntryPayload, NodeId, Term};
use super::message::{HeartbeatResponse, Message, MessageBody, RequestVote, RequestVoteResponse};
use super::progress::Progress;
use super::quorum::{self, VoteResult};
use super::state::Role;
use super::{Raft, RemovalHandoff};
use crate::coverage::Path;

impl Raft {
    /// Applies the term rules every message obeys (Figure 2, "all servers"). Returns false
    /// when the message must go no further.
    pub(super) fn step_term(&mut self, message: &Message) -> bool {
        if message.term > self.term {
            if let MessageBody::RequestVote(request) = &message.body {
                if !request.leader_transfer && self.in_leader_lease() {
                    // Heard from a live leader within the minimum election timeout: a
                    // disruptive candidate must not depose it (thesis §4.2.3).
                    return false;
                }
            }
            match &message.body {
                // A pre-vote raises nobody's term: that is its whole point.
                MessageBody::RequestVote(request) if request.pre_vote => {}
                MessageBody::RequestVoteResponse(response)
                    if response.pre_vote && response.granted => {}
                MessageBody::Append(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::InstallSnapshot(_) => {
                    self.become_follower(message.term, Some(message.from));
                }
                _ => self.become_follower(message.term, None),
            }
            return true;
        }
        if message.term < self.term {
            match &message.body {
                // A stale leader (say, back from a partition) would otherwise never learn
                // of the new term, since PreVote and CheckQuorum stop us from raising ours.
                MessageBody::Append(_) | MessageBody::Heartbeat(_) => {
                    self.send(
                        message.from,
                        MessageBody::HeartbeatResponse(HeartbeatResponse { read_round: 0 }),
                    );
                }
                MessageBody::RequestVote(request) if request.pre_vote => {
                    self.send(
                        message.from,
                        MessageBody::RequestVoteResponse(RequestVoteResponse {
                            pre_vote: true,
                            granted: false,
                        }),
                    );
                }
                _ => {}
            }
            return false;
        }
        true
    }

    /// With CheckQuorum, a follower that heard from its leader within the election timeout
    /// trusts that leader to be alive.
    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed_ticks < self.config.election_ticks
    }

    pub(super) fn handle_request_vote(&mut self, from: NodeId, term: Term, request: RequestVote) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (request.pre_vote && term > self.term);
        let up_to_date = self
            .log
            .is_up_to_date(request.last_log_index, request.last_log_term);
        if !up_to_date {
            self.coverage.hit(Path::VoteRefusedLogBehind);
            if request.last_log_index > self.log.last_index() {
                self.coverage.hit(Path::VoteRefusedLongerLogOfOlderTerm);
            }
        }
        let granted = can_vote && up_to_date;
        // A grant carries the candidate's term, so a granted pre-vote does not look like a
        // newer term to it; a rejection carries ours, so it learns it is behind.
        let response_term = if granted { term } else { self.term };
        if granted && !request.pre_vote {
            self.election_elapsed_ticks = 0;
            self.vote = Some(from);
        }
        let body = MessageBody::RequestVoteResponse(RequestVoteResponse {
            pre_vote: request.pre_vote,
            granted,
        });
        self.send_with_term(from, response_term, body, true);
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, response: RequestVoteResponse) {
        let expected = match self.role {
            Role::PreCandidate => true,
            Role::Candidate => false,
            Role::Follower | Role::Leader => return,
        };
        if response.pre_vote != expected {
            return;
        }
        self.votes.entry(from).or_insert(response.granted);
        self.poll_votes();
    }

    fn poll_votes(&mut self) {
        let result = quorum::tally(
            &self.conf.voters,
            self.votes.iter().map(|(&id, &v)| (id, v)),
        );
        match (result, self.role) {
            (VoteResult::Won, Role::PreCandidate) => self.start_real_election(false),
            (VoteResult::Won, Role::Candidate) => self.become_leader(),
            (VoteResult::Lost, _) => self.become_follower(self.term, None),
            _ => {}
        }
    }

    pub(super) fn tick_election(&mut self) {
        self.election_elapsed_ticks = self.election_elapsed_ticks.saturating_add(1);
        if self.may_campaign() && self.election_elapsed_ticks >= self.randomized_election_ticks {
            self.election_elapsed_ticks = 0;
            self.start_election(false);
        }
    }

    /// The leader's clock: heartbeats, CheckQuorum, transfer timeout, snapshot retries.
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        self.tick_snapshot_retries();
        self.tick_transfer();
        if self.election_elapsed_ticks >= self.config.election_ticks {
            self.election_elapsed_ticks = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Counts the voters heard from since the last check (this node included) and starts a
    /// new check period.
    fn quorum_recently_active(&mut self) -> bool {
        let mut active = 0usize;
        for (&id, progress) in self.progress.iter_mut() {
            if id == self.id {
                progress.recent_active = true;
            }
            if progress.recent_active && self.conf.voters.contains(&id) {
                active += 1;
            }
            if id != self.id {
                progress.recent_active = false;
            }
        }
        active >= self.conf.quorum()
    }

    /// Whether committed entries not applied yet hold a membership change: the membership
    /// in force is then stale, and campaigning on it could elect a leader by the wrong
    /// majority.
    fn has_unapplied_conf_change(&self) -> bool {
        self.log
            .range(self.log.applied_index(), self.log.commit_index())
            .any(|e| matches!(e.payload, EntryPayload::ConfChange(_)))
    }

    /// Starts an election: a pre-vote first unless disabled or forced by a leader transfer.
    pub(super) fn start_election(&mut self, leader_transfer: bool) {
        if !self.may_campaign() || self.has_unapplied_conf_change() {
            return;
        }
        if self.config.pre_vote && !leader_transfer {
            self.become_pre_candidate();
            self.request_votes(true, false);
        } else {
            self.start_real_election(leader_transfer);
        }
    }

    fn start_real_election(&mut self, leader_transfer: bool) {
        self.become_candidate();
        self.request_votes(false, leader_transfer);
    }

    fn request_votes(&mut self, pre_vote: bool, leader_transfer: bool) {
        let term = if pre_vote { self.term + 1 } else { self.term };
        self.votes.insert(self.id, true);
        if quorum::tally(
            &self.conf.voters,
            self.votes.iter().map(|(&id, &v)| (id, v)),
        ) == VoteResult::Won
        {
            // A single voter wins at once.
            self.poll_votes();
            return;
        }
        let request = RequestVote {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            leader_transfer,
        };
        let voters: Vec<NodeId> = self
            .conf
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in voters {
            self.send_with_term(id, term, MessageBody::RequestVote(request), !pre_vote);
        }
    }

    pub(super) fn reset_randomized_election_timeout(&mut self) {
        let base = self.config.election_ticks;
        self.randomized_election_ticks = self.rng.gen_range(base..2 * base);
    }

    fn reset_timers(&mut self) {
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.reset_randomized_election_timeout();
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        debug_assert!(
            term >= self.term,
            "term went back from {} to {term}",
            self.term
        );
        if term != self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            if self.reads.len() > 0 {
                self.coverage.hit(Path::ReadsPendingAtStepDown);
            }
            self.reads.reset();
        }
        self.role = Role::Follower;
        self.set_leader(leader);
        self.reset_timers();
        self.leave_leadership();
    }

    fn become_pre_candidate(&mut self) {
        // Term and vote stay as they are: only a won pre-vote leads to a real election.
        self.role = Role::PreCandidate;
        self.set_leader(None);
        self.leave_leadership();
        self.votes.clear();
        self.reset_timers();
    }

    fn become_candidate(&mut self) {
        self.term += 1;
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.set_leader(None);
        self.leave_leadership();
        self.votes.clear();
        self.reset_timers();
    }

    fn become_leader(&mut self) {
        debug_assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.set_leader(Some(self.id));
        self.votes.clear();
        self.reset_timers();
        self.reads.reset();
        self.uncommitted_bytes = 0;
        self.lost_state_reported.clear();
        let next_index = self.log.last_index() + 1;
        let max_inflight = self.config.max_inflight_appends;
        let members: Vec<(NodeId, bool)> = self
            .conf
            .members()
            .map(|id| (id, self.conf.learners.contains(&id)))
            .collect();
        for (id, is_learner) in members {
            let mut progress = Progress::new(next_index, max_inflight, is_learner);
            if id == self.id {
                progress.match_index = self.log.persisted_index();
                progress.recent_active = true;
                progress.become_replicate();
            }
            self.progress.insert(id, progress);
        }
        // Until the entry below is applied, the membership in force may be stale: no change
        // may be proposed (the fix for single-server changes across leader changes).
        self.pending_conf_index = self.log.last_index() + 1;
        let first_index = self.append_leader_entry(EntryPayload::Empty);
        if !self.conf.contains(self.id) {
            // A removed voter won (see `may_campaign`): it leads only until the remaining
            // voters know everything up to its first entry is committed, then hands over.
            self.removal_handoff = Some(RemovalHandoff {
                commit_index: first_index,
                confirm_round: None,
            });
        }
    }

    /// Leader-only state is dropped when leadership ends or an election begins.
    fn leave_leadership(&mut self) {
        self.progress.clear();
        self.transfer = None;
        self.removal_handoff = None;
        self.broadcast_pending = false;
        self.uncommitted_bytes = 0;
    }
}
