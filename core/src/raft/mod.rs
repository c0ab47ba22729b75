//! A complete Raft as a plain struct, without IO: calls feed it (`tick`, `step`, `propose`,
//! `read_index`, `transfer_leader`, `campaign`), [`Raft::ready`] drains it and
//! [`Raft::advance`] acknowledges that the `Ready` was carried out (see [`ready`] for the
//! contract). Time is the number of `tick` calls; randomness is a seeded ChaCha8.
//!
//! One module per concern: `election` (§5.2, §9.6 PreVote, CheckQuorum), `replication`
//! (§5.3, §5.4, flow control, snapshots), `read_index` (§6.4), `membership` (§4, single-server
//! changes and learners), `transfer` (§3.10).

mod config;
mod election;
mod entry;
mod error;
/// The test cluster: only in keel-core's own tests (the `testkit` feature).
#[cfg(any(test, feature = "testkit"))]
pub mod harness;
mod initial_state;
mod log;
mod lost_state;
mod membership;
mod message;
mod progress;
mod quorum;
mod read_index;
mod ready;
mod replication;
mod state;
mod status;
mod transfer;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use config::Config;
pub use entry::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryPayload, Index, NodeId, Snapshot,
    SnapshotMeta, Term, ENTRY_OVERHEAD_BYTES,
};
pub use error::{ConfigError, MessageError, ProposeError, ReadIndexError, TransferError};
pub use initial_state::{InitialState, BOOTSTRAP_INDEX, BOOTSTRAP_TERM};
pub use lost_state::{LostState, Notice};
pub use membership::apply_to_conf;
pub use message::{
    Append, AppendResponse, Heartbeat, HeartbeatResponse, Message, MessageBody, MessageLimits,
    Propose, ReadIndexRequest, ReadIndexResponse, RequestVote, RequestVoteResponse,
    MAX_TERM_OR_INDEX,
};
pub use progress::ReplicationState;
pub use ready::{ReadState, Ready};
pub use state::{HardState, Role, SoftState};
pub use status::{ProgressStatus, Status};

use crate::coverage::{Coverage, Path};
use log::RaftLog;
use progress::Progress;
use read_index::ReadIndexQueue;

/// Where a proposal went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proposed {
    /// Appended to this leader's log at `index` in `term`. If a different entry is later
    /// applied at `index`, the proposal was lost (a new leader overwrote it).
    Appended { index: Index, term: Term },
    /// Forwarded to the leader; the caller learns the outcome when its entry is applied.
    Forwarded { to: NodeId },
}

/// A leader transfer in progress (thesis §3.10).
#[derive(Clone, Copy, Debug)]
struct LeaderTransfer {
    to: NodeId,
    /// A transfer not finished within an election timeout is abandoned. Its own clock: the
    /// leader's election clock drives CheckQuorum and must not be reset by transfers.
    elapsed_ticks: u32,
}

/// A leader that removed itself hands over before stepping down (see `membership`).
#[derive(Clone, Copy, Debug)]
struct RemovalHandoff {
    /// The commit index when the removal was applied: the remaining voters must learn it.
    commit_index: Index,
    /// The heartbeat round sent once every remaining voter held the removal; a quorum of
    /// answers to it proves they know it is committed.
    confirm_round: Option<u64>,
}

/// One Raft node's whole protocol state.
#[derive(Debug)]
pub struct Raft {
    id: NodeId,
    config: Config,
    rng: ChaCha8Rng,

    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    conf: ConfState,

    /// Leader only: every member's replication progress, this node included.
    progress: BTreeMap<NodeId, Progress>,
    /// Candidate and pre-candidate only: the answers so far.
    votes: BTreeMap<NodeId, bool>,

    election_elapsed_ticks: u32,
    heartbeat_elapsed_ticks: u32,
    randomized_election_ticks: u32,

    /// A leader may not propose a membership change until this index is applied.
    pending_conf_index: Index,
    /// Bytes of entries this leader appended that are not committed yet.
    uncommitted_bytes: usize,
    transfer: Option<LeaderTransfer>,
    removal_handoff: Option<RemovalHandoff>,
    reads: ReadIndexQueue,
    /// Follower only: proposals waiting to be forwarded to the leader in one message.
    forward_buffer: Vec<EntryPayload>,
    /// Follower only: reads forwarded to the leader, by request id, with the leader asked
    /// and the tick they were sent. Only answers to these are accepted, from that leader.
    forwarded_reads: BTreeMap<u64, (NodeId, u64)>,
    /// Ticks since start; ages forwarded reads.
    ticks: u64,

    /// Leader only: new entries or a new commit index must be sent to followers.
    broadcast_pending: bool,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    /// What the previous `Ready` reported, to report only changes.
    reported_hard_state: HardState,
    reported_soft_state: SoftState,
    ready_outstanding: bool,
    /// Membership changes in the outstanding `Ready`'s committed entries, applied on `advance`.
    ready_conf_changes: Vec<ConfChange>,
    /// The leader this node saw in each recent term; a second one in the same term would
    /// break Election Safety (§5.2).
    leader_seen: Option<(Term, NodeId)>,
    /// Rare paths taken (see `crate::coverage`).
    coverage: Coverage,
    /// Reused for quorum arithmetic.
    scratch: Vec<Index>,
    /// Set once this follower learned that its log lost entries it had acknowledged (see
    /// `lost_state`); from then on it takes part in nothing.
    lost_state: Option<LostState>,
    /// Leader only: followers already reported as having lost state in this term.
    lost_state_reported: BTreeSet<NodeId>,
    /// What an operator should hear of, until the application takes it.
    notices: Vec<Notice>,
}

impl Raft {
    /// Starts a node from `initial` (a restart, a bootstrap or a join).
    pub fn new(config: Config, initial: InitialState) -> Result<Raft, ConfigError> {
        config.validate()?;
        initial.validate()?;
        let InitialState {
            hard_state,
            snapshot,
            entries,
            applied_index,
        } = initial;
        let conf = snapshot.meta.conf_state.clone();
        let commit_index = hard_state.commit_index.max(snapshot.meta.index);
        let log = RaftLog::restore(snapshot, entries, commit_index, applied_index);
        let mut raft = Raft {
            id: config.id,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            conf,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_ticks: 0,
            pending_conf_index: 0,
            uncommitted_bytes: 0,
            transfer: None,
            removal_handoff: None,
            reads: ReadIndexQueue::default(),
            forward_buffer: Vec::new(),
            forwarded_reads: BTreeMap::new(),
            ticks: 0,
            broadcast_pending: false,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            reported_hard_state: HardState {
                term: hard_state.term,
                vote: hard_state.vote,
                commit_index,
            },
            reported_soft_state: SoftState {
                leader: None,
                role: Role::Follower,
            },
            ready_outstanding: false,
            ready_conf_changes: Vec::new(),
            leader_seen: None,
            coverage: Coverage::default(),
            scratch: Vec::new(),
            lost_state: None,
            lost_state_reported: BTreeSet::new(),
            notices: Vec::new(),
        };
        // Membership changes already applied (between the snapshot and `applied_index`) are
        // part of the configuration in force.
        let applied_changes: Vec<ConfChange> = raft
            .log
            .range(raft.log.compacted_index(), applied_index)
            .filter_map(|e| match &e.payload {
                EntryPayload::ConfChange(change) => Some(change.clone()),
                _ => None,
            })
            .collect();
        for change in &applied_changes {
            raft.conf = membership::apply_to_conf(&raft.conf, change);
        }
        raft.reset_randomized_election_timeout();
        if raft.conf.voters.len() == 1 && raft.conf.voters.contains(&raft.id) {
            // A lone voter has nobody to wait for: it campaigns on its first tick, so a
            // single-node server serves right after it starts.
            raft.election_elapsed_ticks = raft.randomized_election_ticks.saturating_sub(1);
        }
        Ok(raft)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn commit_index(&self) -> Index {
        self.log.commit_index()
    }

    /// How often this node took each rare path (see `crate::coverage`).
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    pub fn applied_index(&self) -> Index {
        self.log.applied_index()
    }

    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// The entry at `index`, if still in memory. For inspection and tests.
    pub fn log_entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The term at `index`, if known (the compaction point's term included).
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// The first index still in memory.
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit_index: self.log.commit_index(),
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    /// Whether this node may start an election. Voters may. So may a node that is in no
    /// role of the configuration at all, a removed voter (thesis §4.2.2): until the
    /// remaining voters learn that its removal is committed it may be the only node able to
    /// get it committed (say it led, removed itself and restarted). It does not count its
    /// own vote, and PreVote with leader leases keeps it from disturbing a healthy cluster.
    /// Learners, and nodes that know no configuration yet, never campaign.
    fn may_campaign(&self) -> bool {
        if self.conf.voters.contains(&self.id) {
            return true;
        }
        !self.conf.learners.contains(&self.id) && !self.conf.voters.is_empty()
    }

    /// Set once this node learned that its durable state went back: it must not vote,
    /// acknowledge or serve any more, and the application should stop it (see `lost_state`).
    pub fn lost_state(&self) -> Option<LostState> {
        self.lost_state
    }

    /// What the protocol noticed since the last call, for the operator's log.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        if self.lost_state.is_some() {
            return;
        }
        self.ticks += 1;
        self.expire_forwarded_reads();
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
    }

    /// Feeds a message from a peer. A message that fails validation, or that would violate a
    /// Raft safety property if accepted, is refused with an error and changes nothing.
    pub fn step(&mut self, message: Message) -> Result<(), MessageError> {
        message.validate(self.id, &self.config.message_limits)?;
        if self.lost_state.is_some() {
            // Neither a vote nor an acknowledgement may come from a lost state.
            return Ok(());
        }
        if !message.body.is_termless() && !self.step_term(&message) {
            return Ok(());
        }
        let Message {
            from, term, body, ..
        } = message;
        match body {
            MessageBody::RequestVote(request) => {
                self.handle_request_vote(from, term, request);
                Ok(())
            }
            MessageBody::RequestVoteResponse(response) => {
                self.handle_vote_response(from, response);
                Ok(())
            }
            MessageBody::Append(append) => self.handle_append(from, append),
            MessageBody::Heartbeat(heartbeat) => self.handle_heartbeat(from, heartbeat),
            MessageBody::InstallSnapshot(snapshot) => self.handle_snapshot(from, snapshot),
            MessageBody::AppendResponse(response) => self.handle_append_response(from, response),
            MessageBody::HeartbeatResponse(response) => {
                self.handle_heartbeat_response(from, response);
                Ok(())
            }
            MessageBody::Propose(propose) => {
                self.handle_forwarded_proposals(propose.payloads);
                Ok(())
            }
            MessageBody::ReadIndex(request) => {
                self.handle_forwarded_read(from, request.request_id);
                Ok(())
            }
            MessageBody::ReadIndexResponse(response) => {
                // Only an answer to a read this node forwarded, from the leader it asked:
                // a stray or replayed answer could otherwise serve a stale read.
                if self.forwarded_reads.get(&response.request_id).map(|r| r.0) == Some(from) {
                    self.forwarded_reads.remove(&response.request_id);
                    self.read_states.push(ReadState {
                        request_id: response.request_id,
                        read_index: response.read_index,
                    });
                }
                Ok(())
            }
            MessageBody::TimeoutNow => {
                self.handle_timeout_now(from);
                Ok(())
            }
        }
    }

    /// Proposes application data. On the leader it is appended; on a follower it is
    /// forwarded to the leader (unless forwarding is disabled).
    pub fn propose(&mut self, data: Bytes) -> Result<Proposed, ProposeError> {
        self.propose_payload(EntryPayload::Normal(data))
    }

    /// Proposes a membership change; only one may be pending at a time.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Proposed, ProposeError> {
        self.propose_payload(EntryPayload::ConfChange(change))
    }

    fn propose_payload(&mut self, payload: EntryPayload) -> Result<Proposed, ProposeError> {
        if self.lost_state.is_some() {
            return Err(ProposeError::NotLeader { leader_hint: None });
        }
        if self.role == Role::Leader {
            return self.append_proposal(payload);
        }
        match self.leader {
            Some(leader) if self.config.forward_proposals && self.role == Role::Follower => {
                let limit = self.max_forward_buffer();
                if self.forward_buffer.len() >= limit {
                    return Err(ProposeError::ForwardQueueFull { limit });
                }
                self.forward_buffer.push(payload);
                Ok(Proposed::Forwarded { to: leader })
            }
            leader_hint => Err(ProposeError::NotLeader { leader_hint }),
        }
    }

    /// Proposals a follower holds between two `Ready`s, at most: a few messages' worth.
    fn max_forward_buffer(&self) -> usize {
        self.config.message_limits.max_payloads_per_proposal * 4
    }

    /// Requests a read index for a linearizable read; the answer comes back as a
    /// [`ReadState`] with the same `request_id` in a later `Ready`. If leadership changes
    /// before it is confirmed, no answer comes: the caller times out and retries.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ReadIndexError> {
        if self.lost_state.is_some() {
            return Err(ReadIndexError::NoLeader);
        }
        let pending = self.reads.len() + self.forwarded_reads.len();
        if pending >= self.config.max_pending_reads {
            return Err(ReadIndexError::TooManyPending {
                pending,
                limit: self.config.max_pending_reads,
            });
        }
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.leader_read_index(request_id, read_index::ReadOrigin::Local);
                Ok(())
            }
            (Role::Follower, Some(leader)) => {
                self.forwarded_reads
                    .insert(request_id, (leader, self.ticks));
                self.send(
                    leader,
                    MessageBody::ReadIndex(ReadIndexRequest { request_id }),
                );
                Ok(())
            }
            _ => Err(ReadIndexError::NoLeader),
        }
    }

    /// Starts an election now (with a pre-vote if configured), as if the election timeout
    /// had elapsed.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && self.lost_state.is_none() {
            self.start_election(false);
        }
    }

    /// Tells the leader that a message to `to` could not be delivered, so it stops
    /// pipelining to it and probes instead.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if let Some(progress) = self.progress.get_mut(&to) {
            if progress.state == ReplicationState::Replicate {
                progress.become_probe();
            }
        }
    }

    /// Tells the leader that sending a snapshot to `to` failed (the transport knows: the
    /// stream broke or the peer refused it), so it probes again from what `to` is known to
    /// hold instead of waiting `snapshot_retry_ticks`. Success needs no report: the
    /// follower's answer arrives by itself.
    pub fn report_snapshot_failed(&mut self, to: NodeId) {
        if let Some(progress) = self.progress.get_mut(&to) {
            if matches!(progress.state, ReplicationState::Snapshot { .. }) {
                progress.become_snapshot(0);
                progress.become_probe();
            }
        }
    }

    /// Tells the leader that a snapshot to `to` is still on its way (the transport streams
    /// a large one for longer than `snapshot_retry_ticks`): the wait for its answer starts
    /// over instead of ending in a probe and a second snapshot, which would never finish
    /// either.
    pub fn report_snapshot_progress(&mut self, to: NodeId) {
        if let Some(progress) = self.progress.get_mut(&to) {
            if matches!(progress.state, ReplicationState::Snapshot { .. }) {
                progress.snapshot_elapsed_ticks = 0;
            }
        }
    }

    /// Leader only: the first log index a live follower still needs from this log — the
    /// entry after a snapshot on its way to it (once installed, it catches up from there),
    /// or after the match of a follower heard from lately whose next entries the log still
    /// holds. Compacting past it costs that follower a (further) whole snapshot: under a
    /// steady write load, a snapshot that takes longer to stream than the log takes to be
    /// released would never let a new member catch up. `None`: no follower is catching up.
    pub fn catch_up_floor(&self) -> Option<Index> {
        if self.role != Role::Leader {
            return None;
        }
        let last_index = self.log.last_index();
        let first_index = self.log.first_index();
        self.progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .filter_map(|(_, progress)| match progress.state {
                ReplicationState::Snapshot { pending_index } => Some(pending_index + 1),
                _ if progress.recent_active
                    && progress.match_index < last_index
                    && progress.match_index + 1 >= first_index =>
                {
                    Some(progress.match_index + 1)
                }
                _ => None,
            })
            .min()
    }

    /// The application took a snapshot of its state machine through `snapshot.meta.index`
    /// (at most the applied index). The log before it is dropped, except the last
    /// `retain_entries` entries, which spare a slightly lagging follower a whole snapshot.
    pub fn compact(&mut self, snapshot: Snapshot, retain_entries: u64) {
        self.log.compact(snapshot, retain_entries);
    }

    /// Whether `ready` would return anything.
    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.reported_soft_state
            || self.hard_state() != self.reported_hard_state
            || self.log.has_unstable()
            || self.log.has_committed_to_apply()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || !self.forward_buffer.is_empty()
            || self.broadcast_pending
            || (self.role == Role::Leader && self.reads.round_needed())
    }

    /// Everything to do now, or `None` if there is nothing. See [`ready`] for the order in
    /// which the application must carry it out before calling [`Raft::advance`].
    pub fn ready(&mut self) -> Option<Ready> {
        assert!(
            !self.ready_outstanding,
            "ready() called again before advance() of the previous Ready"
        );
        self.flush();
        if !self.has_ready() {
            return None;
        }
        let soft_state = self.soft_state();
        let hard_state = self.hard_state();
        let snapshot = self.log.take_pending_snapshot();
        let entries = self.log.take_unstable();
        let committed_entries = if self.log.has_committed_to_apply() {
            self.log
                .committed_to_apply(self.config.max_committed_bytes_per_ready)
        } else {
            Vec::new()
        };
        if committed_entries
            .last()
            .is_some_and(|e| e.index < self.log.commit_index())
        {
            self.coverage.hit(Path::ApplyBehindCommit);
        }
        self.ready_conf_changes.clear();
        for entry in &committed_entries {
            if let EntryPayload::ConfChange(change) = &entry.payload {
                self.ready_conf_changes.push(change.clone());
            }
        }
        let term_or_vote_changed = hard_state.term != self.reported_hard_state.term
            || hard_state.vote != self.reported_hard_state.vote;
        let (messages, persisted_messages) = if term_or_vote_changed {
            // Every message carries the new term, which is not on disk yet. Sent early and
            // followed by a crash, it would let this node win the same term again with
            // different entries (a lone voter needs no vote round trip to get there).
            let mut after_persist = std::mem::take(&mut self.messages);
            after_persist.append(&mut self.persisted_messages);
            (Vec::new(), after_persist)
        } else {
            (
                std::mem::take(&mut self.messages),
                std::mem::take(&mut self.persisted_messages),
            )
        };
        let ready = Ready {
            soft_state: (soft_state != self.reported_soft_state).then_some(soft_state),
            hard_state: (hard_state != self.reported_hard_state).then_some(hard_state),
            must_sync: term_or_vote_changed || snapshot.is_some() || !entries.is_empty(),
            persisted_through: entries.last().map(|e| (e.index, e.term)),
            snapshot_index: snapshot.as_ref().map(|s| s.meta.index),
            applied_through: committed_entries.last().map(|e| e.index),
            snapshot,
            entries,
            committed_entries,
            messages,
            persisted_messages,
            read_states: std::mem::take(&mut self.read_states),
        };
        self.reported_hard_state = hard_state;
        self.reported_soft_state = soft_state;
        self.ready_outstanding = true;
        Some(ready)
    }

    /// The application carried out `ready` as its contract says.
    pub fn advance(&mut self, ready: &Ready) {
        assert!(
            self.ready_outstanding,
            "advance() without an outstanding Ready"
        );
        self.ready_outstanding = false;
        if let Some(index) = ready.snapshot_index {
            self.log.snapshot_persisted(index);
            if index > self.log.applied_index() {
                self.log.applied_to(index);
            }
        }
        if let Some((index, term)) = ready.persisted_through {
            self.log.persisted_to(index, term);
            if self.role == Role::Leader {
                self.leader_persisted();
            }
        }
        if let Some(index) = ready.applied_through {
            self.log.applied_to(index);
            let changes = std::mem::take(&mut self.ready_conf_changes);
            for change in &changes {
                self.apply_conf_change(change);
            }
        }
        self.check_invariants_debug();
    }

    /// Queues a message in the right output: one that promises persisted state goes out
    /// only after the persist (see [`ready`]).
    fn send(&mut self, to: NodeId, body: MessageBody) {
        let needs_persist = match &body {
            MessageBody::AppendResponse(_)
            | MessageBody::HeartbeatResponse(_)
            | MessageBody::RequestVoteResponse(_) => true,
            MessageBody::RequestVote(request) => !request.pre_vote,
            MessageBody::Append(_)
            | MessageBody::Heartbeat(_)
            | MessageBody::InstallSnapshot(_)
            | MessageBody::Propose(_)
            | MessageBody::ReadIndex(_)
            | MessageBody::ReadIndexResponse(_)
            | MessageBody::TimeoutNow => false,
        };
        self.send_with_term(to, self.term, body, needs_persist);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody, needs_persist: bool) {
        let message = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if needs_persist {
            self.persisted_messages.push(message);
        } else {
            self.messages.push(message);
        }
    }

    /// Turns what accumulated since the last `Ready` into messages: one Append per follower
    /// for all new entries, one heartbeat round for all new reads, one forwarded batch.
    fn flush(&mut self) {
        if !self.forward_buffer.is_empty() {
            let mut payloads = std::mem::take(&mut self.forward_buffer);
            // If leadership changed since the proposals were taken, they are dropped and
            // their callers time out, as if the message had been lost.
            if let (Role::Follower, Some(leader)) = (self.role, self.leader) {
                // In batches the leader accepts (it refuses larger ones whole).
                let batch = self.config.message_limits.max_payloads_per_proposal;
                while !payloads.is_empty() {
                    let rest = payloads.split_off(batch.min(payloads.len()));
                    let chunk = std::mem::replace(&mut payloads, rest);
                    self.send(leader, MessageBody::Propose(Propose { payloads: chunk }));
                }
            }
        }
        if self.role == Role::Leader {
            if self.broadcast_pending {
                self.broadcast_pending = false;
                self.broadcast_append();
            }
            if self.reads.round_needed() {
                self.broadcast_heartbeat();
            }
        }
    }

    /// Forgets forwarded reads unanswered for two election timeouts: the request or its
    /// answer was lost, and the client has given up.
    fn expire_forwarded_reads(&mut self) {
        let max_age = 2 * u64::from(self.config.election_ticks);
        let now = self.ticks;
        self.forwarded_reads
            .retain(|_, (_, sent_at)| now.saturating_sub(*sent_at) < max_age);
    }

    /// Remembers the leader of `term`, asserting Election Safety from this node's view.
    fn set_leader(&mut self, leader: Option<NodeId>) {
        if leader != self.leader {
            // Reads forwarded to the previous leader will not be answered by the next.
            self.forwarded_reads.clear();
        }
        if let Some(id) = leader {
            if let Some((term, seen)) = self.leader_seen {
                debug_assert!(
                    term != self.term || seen == id,
                    "two leaders in term {term}: {seen} and {id}"
                );
            }
            self.leader_seen = Some((self.term, id));
        }
        self.leader = leader;
    }

    /// Invariants that hold between any two calls (debug builds only).
    fn check_invariants_debug(&self) {
        debug_assert!(self.log.applied_index() <= self.log.commit_index());
        debug_assert!(self.log.commit_index() <= self.log.last_index());
        debug_assert!(self.log.persisted_index() <= self.log.last_index());
        debug_assert!(self.log.last_term() <= self.term);
        debug_assert!(self.role != Role::Leader || self.leader == Some(self.id));
    }
}
