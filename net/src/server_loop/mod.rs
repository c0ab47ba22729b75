//! The server loop: one task drives a `keel_core::node::Node`. Ticks, peers' messages and
//! clients' requests come in; each `Ready` goes out in the order its contract sets — send
//! what may go early, persist (one sync for everything gathered: group commit), send what had
//! to wait, apply, answer clients, advance. No consensus decision is made here.

pub mod handle;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keel_core::mvcc::{Store, StreamId, WatchResponse};
use keel_core::node::query::{Answer, AskedBy, Query};
use keel_core::node::{snapshot_of_view, Completion, Node, NodeProposeError, Outcome};
use keel_core::raft::{Message, MessageBody, ProposeError, ReadIndexError, Role};
use keel_storage::{Disk, RedbEngine, Storage, StorageError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::clock::{ClockSkew, LocalClock};
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;
use crate::peer::query::MembersView;
use crate::peer::snapshot_stream;
use crate::peer::transport::{PeerReport, Transport};
use crate::server_loop::handle::{ApiError, Consistency, LearnerFlag, Request, Written};

/// Responses a watch stream may hold unsent; past it, the hub keeps them (and moves slow
/// watchers to catch up from history) until the stream's reader drains.
const WATCH_OUTBOX: usize = 256;
/// Requests handled per wake-up before the `Ready` is processed: bounds latency under load
/// while letting many requests share one sync.
const MAX_REQUESTS_PER_BATCH: usize = 4096;
/// Time spent on clients' requests per wake-up, at most (give or take one request; see
/// `drain_inputs`). The simulator's clock does not move while code runs, so there only the
/// count above bounds a batch.
const REQUESTS_TIME_PER_TURN: Duration = Duration::from_millis(10);
/// Requests held while the node is fenced after a restart; past it, reads are refused
/// (`too many requests`) and calls dropped.
const MAX_PARKED_REQUESTS: usize = 4096;
/// Revisions of physical compaction a quiet member runs per tick (see `maybe_commit_engine`):
/// tens of milliseconds of work in a 1 GB store, well inside a heartbeat.
const IDLE_COMPACTION_REVISIONS_PER_TICK: usize = 2_000;
/// etcd warns about an fdatasync slower than this.
const SLOW_FSYNC: Duration = Duration::from_secs(1);
/// etcd warns about (and counts in `etcd_server_slow_apply_total`) a request whose apply
/// takes longer than this; keel times the batch of entries a `Ready` applies together.
const SLOW_APPLY: Duration = Duration::from_millis(100);
/// A turn of the loop longer than this delays every request and heartbeat behind it: it is
/// logged with where its time went.
const SLOW_TURN: Duration = Duration::from_millis(100);

/// Everything the loop needs besides the node and its storage.
pub struct LoopSettings {
    pub tick: Duration,
    /// This member's name, for the recovery procedure the loop logs.
    pub name: String,
    /// For the recovery procedure the loop logs when this member must be replaced.
    pub advertise_peer_urls: Vec<String>,
    /// The Raft log is released behind the engine every this many applied entries (etcd's
    /// `--snapshot-count`).
    pub snapshot_count: u64,
    /// When the store's engine commits durably (see `ServerConfig::backend_batch_interval`).
    pub backend_batch_interval: Duration,
    pub backend_batch_limit: u64,
    pub engine_cache_size_bytes: usize,
    pub hooks: Hooks,
    /// Kept up to date after every batch (see `NodeHandle::is_learner`).
    pub learner: LearnerFlag,
    /// The members as applied here, for the peer port's answers; kept up to date on every
    /// tick and membership change.
    pub members_view: MembersView,
}

/// What the simulator attaches to a server; the binary attaches nothing.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Sees the node after every batch; the simulator checks Raft's invariants with it.
    pub inspector: Option<Arc<dyn Inspector>>,
    /// Skews this server's clock.
    pub clock: ClockSkew,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("inspected", &self.inspector.is_some())
            .field("clock", &self.clock)
            .finish()
    }
}

/// A read-only look at the node after each batch of work. The simulator implements it to
/// check Raft's safety properties across all servers of a run; the binary has none.
pub trait Inspector: Send + Sync {
    /// Once per process, when the loop starts: the node as recovery left it.
    fn started(&self, _node: &Node) {}
    /// After every batch of work.
    fn observe(&self, node: &Node);
    /// Right after the Raft log was released behind the store's engine at `index` (the
    /// moment a crash would find the least log behind the engine's durable state).
    fn log_released(&self, _node: &Node, _index: u64) {}
}

/// What the loop listens to.
#[derive(Debug)]
pub struct LoopInputs {
    pub requests: mpsc::Receiver<Request>,
    pub watch_opens: mpsc::Receiver<WatchOpen>,
    pub peer_inbox: mpsc::Receiver<Message>,
    pub peer_reports: mpsc::UnboundedReceiver<PeerReport>,
    pub shutdown: watch::Receiver<bool>,
}

/// A new watch stream: the loop answers with its id and the receiving end of its outbox.
#[derive(Debug)]
pub struct WatchOpen {
    pub reply: oneshot::Sender<(StreamId, mpsc::Receiver<WatchResponse>)>,
}

/// Why the loop stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("storage failed, the node must stop: {0}")]
    Storage(#[from] StorageError),
    /// The store's engine failed (its file is named): the node stops; restarted, it
    /// recovers from the engine's last durable commit and the Raft log.
    #[error("the store's engine failed, the node must stop: {0}")]
    Engine(String),
    /// This member's data dir lost state it had acknowledged (see
    /// `keel_core::raft::LostState`): it must never vote or serve from it again.
    #[error("this member's data dir went back in time and it must not run on it: {0}")]
    StateLost(String),
    /// This member was removed from the cluster (etcd: "the member has been permanently
    /// removed from the cluster"): it stops, as etcd's does.
    #[error("the member has been permanently removed from the cluster")]
    Removed,
}

pub struct ServerLoop<D: Disk> {
    node: Node,
    storage: Storage<D>,
    transport: Transport,
    settings: LoopSettings,
    metrics: Arc<Metrics>,
    pending_writes: BTreeMap<u64, oneshot::Sender<Result<Written, ApiError>>>,
    pending_reads: BTreeMap<u64, AskedQuery>,
    watch_outboxes: BTreeMap<StreamId, mpsc::Sender<WatchResponse>>,
    /// Serializable reads and calls that came while the node did not serve from its own
    /// state (after a restart, until it caught up: `Node::serves_local_reads`), in order.
    parked: VecDeque<Request>,
    /// Request ids must not repeat across restarts (a late answer to an old id must not
    /// match a new one): they start from the time of start-up.
    next_request_id: u64,
    clock: LocalClock,
    /// The data dir, for the engine's files (a leader's engine replacing this one's).
    engine_disk: D,
    /// Entries applied since the engine's last durable commit, and when that was.
    applied_since_commit: u64,
    /// Where the current turn of the loop spent its time, for the slow-turn warning.
    turn: TurnTimes,
    /// Heartbeats waiting for their answer, for `etcd_network_peer_round_trip_time_seconds`.
    heartbeat_round_trips: RoundTrips,
    last_engine_commit: Instant,
    /// A durable engine commit runs off the loop.
    engine_commit_in_flight: bool,
    /// The leader last logged and counted in the metrics (see `on_soft_state`).
    leader: Option<u64>,
    /// The alarms last logged (see `log_alarm_changes`).
    alarms_logged: Vec<keel_core::mvcc::AlarmMember>,
    /// A peer refused this member's connection because it was removed from the cluster.
    removed_by: Option<u64>,
    /// A commit index was written and not synced yet (see `sync_idle_commit`).
    commit_unsynced: bool,
    /// Ticks it has stayed so.
    commit_unsynced_ticks: u32,
}

impl std::fmt::Debug for LoopSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopSettings")
            .field("tick", &self.tick)
            .field("name", &self.name)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl<D: Disk> std::fmt::Debug for ServerLoop<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerLoop")
            .field("node", &self.node)
            .field("pending_writes", &self.pending_writes.len())
            .field("pending_reads", &self.pending_reads.len())
            .finish_non_exhaustive()
    }
}

impl<D: Disk + Send + 'static> ServerLoop<D> {
    pub fn new(
        node: Node,
        storage: Storage<D>,
        transport: Transport,
        settings: LoopSettings,
        metrics: Arc<Metrics>,
        first_request_id: u64,
    ) -> Result<ServerLoop<D>, LoopError> {
        let clock = LocalClock::new(settings.hooks.clock.clone());
        let engine_disk = storage.disk().share().map_err(|e| {
            LoopError::Engine(format!(
                "cannot open {} again: {e}",
                storage.disk().location(".")
            ))
        })?;
        Ok(ServerLoop {
            node,
            storage,
            transport,
            settings,
            metrics,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            watch_outboxes: BTreeMap::new(),
            parked: VecDeque::new(),
            next_request_id: first_request_id.max(1),
            clock,
            engine_disk,
            applied_since_commit: 0,
            turn: TurnTimes::default(),
            heartbeat_round_trips: RoundTrips::default(),
            last_engine_commit: Instant::now(),
            engine_commit_in_flight: false,
            leader: None,
            alarms_logged: Vec::new(),
            removed_by: None,
            commit_unsynced: false,
            commit_unsynced_ticks: 0,
        })
    }

    fn note_learner(&self) {
        let is_learner = self
            .node
            .raft()
            .conf_state()
            .learners
            .contains(&self.node.id());
        self.settings.learner.set(is_learner);
    }

    fn now_ms(&mut self) -> u64 {
        self.clock.now_ms()
    }

    /// Runs until shutdown or a fatal storage error.
    pub async fn run(mut self, mut inputs: LoopInputs) -> Result<(), LoopError> {
        // Ticks come `tick` apart on this server's clock (in real time, further apart on a
        // slow clock); a late tick is not made up for.
        let ticker = tokio::time::sleep(self.clock.real_duration(self.settings.tick));
        tokio::pin!(ticker);
        if let Some(inspector) = &self.settings.hooks.inspector {
            inspector.started(&self.node);
        }
        // What the log holds as committed is applied before any request is handled: a read
        // served from the snapshot alone would show a state older than before the restart.
        self.process_ready()?;
        self.note_learner();
        loop {
            // `biased`: the branch order is fixed, never drawn at random, so a simulated run
            // replays bit for bit. Fairness comes from draining every input below, whichever
            // one woke the loop.
            let woke = tokio::select! {
                biased;
                _ = inputs.shutdown.changed() => break,
                () = &mut ticker => Woke::Tick,
                Some(message) = inputs.peer_inbox.recv() => Woke::Peer(message),
                Some(report) = inputs.peer_reports.recv() => Woke::PeerReport(report),
                Some(open) = inputs.watch_opens.recv() => Woke::WatchOpen(open),
                request = inputs.requests.recv() => match request {
                    Some(request) => Woke::Request(request),
                    None => break,
                },
            };
            let turn_started = Instant::now();
            self.turn = TurnTimes::default();
            match woke {
                Woke::Tick => {
                    self.on_tick();
                    self.sync_idle_commit()?;
                    self.maybe_commit_engine(true)?;
                    let period = self.clock.real_duration(self.settings.tick);
                    ticker.as_mut().reset(Instant::now() + period);
                }
                Woke::Peer(message) => self.step(message),
                Woke::PeerReport(report) => self.on_peer_report(report),
                Woke::WatchOpen(open) => self.open_watch_stream(open),
                Woke::Request(request) => self.handle(request),
            }
            self.drain_inputs(&mut inputs);
            self.process_ready()?;
            self.maybe_commit_engine(false)?;
            self.check_still_a_member()?;
            self.unpark();
            self.flush_watches();
            self.turn.warn_if_slow(turn_started.elapsed());
        }
        // A commit index learned alone is written but not synced; syncing it now lets a
        // clean restart serve at once instead of waiting to catch up with the leader.
        if let Err(error) = self.storage.sync() {
            warn!(%error, "cannot sync at shutdown");
        }
        // What was applied is kept, so a clean restart replays nothing.
        if let Err(error) = self.commit_engine() {
            warn!(%error, "cannot commit the store's engine at shutdown");
        }
        info!("server loop stopped");
        Ok(())
    }

    /// Takes what else is already waiting, peers first (they unblock everyone), then a
    /// bounded batch of clients' requests: all of it shares the next sync.
    fn drain_inputs(&mut self, inputs: &mut LoopInputs) {
        while let Ok(message) = inputs.peer_inbox.try_recv() {
            self.step(message);
        }
        while let Ok(report) = inputs.peer_reports.try_recv() {
            self.on_peer_report(report);
        }
        while let Ok(open) = inputs.watch_opens.try_recv() {
            self.open_watch_stream(open);
        }
        for _ in 0..MAX_REQUESTS_PER_BATCH {
            // Reads are served here and some cost far more than a proposal (a RangeStream's
            // chunk, a large Range): past the budget the rest wait for the next turn, so
            // appends, heartbeats and syncs are never held up behind a crowd of them.
            if self.turn.requests >= REQUESTS_TIME_PER_TURN {
                break;
            }
            match inputs.requests.try_recv() {
                Ok(request) => self.handle(request),
                Err(_) => break,
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    /// A commit index learned alone is written but not synced (no fsync on the path of a
    /// write, see `keel_core::raft::ready`); when it stays so for a whole tick — the end of a
    /// burst, an idle cluster — it is synced, so that what was applied here (member
    /// attributes included) is what a restart after a crash applies at once, without a
    /// leader.
    fn sync_idle_commit(&mut self) -> Result<(), LoopError> {
        if !self.commit_unsynced {
            self.commit_unsynced_ticks = 0;
            return Ok(());
        }
        self.commit_unsynced_ticks += 1;
        if self.commit_unsynced_ticks < 2 {
            return Ok(());
        }
        self.commit_unsynced = false;
        self.commit_unsynced_ticks = 0;
        self.storage
            .sync()
            .inspect_err(|e| error!(%e, "sync failed"))?;
        Ok(())
    }

    /// Stops the loop when this member must not go on: its data dir lost state, or it was
    /// removed from the cluster (once it no longer leads: a leader that removed itself hands
    /// over first, see `keel_core::raft::membership`).
    fn check_still_a_member(&mut self) -> Result<(), LoopError> {
        for notice in self.node.take_notices() {
            warn!(%notice, "replication");
        }
        if let Some(lost) = self.node.lost_state() {
            let procedure = crate::bootstrap::recovery_procedure(
                &self.settings.name,
                &self.settings.advertise_peer_urls,
            );
            error!(
                "this member's data dir lost state it had acknowledged: {lost}. It was wiped,                  replaced by an older copy, or its disk lost synced writes, and it will neither                  vote nor serve from it; {procedure}"
            );
            return Err(LoopError::StateLost(lost.to_string()));
        }
        let removed = self.removed_by.is_some() || self.node.members().is_removed(self.node.id());
        if removed && !self.node.is_leader() {
            error!(
                told_by = self.removed_by.map(|id| format!("{id:x}")),
                "the member has been permanently removed from the cluster; the data dir used by                  this member must be removed"
            );
            return Err(LoopError::Removed);
        }
        Ok(())
    }

    fn on_tick(&mut self) {
        let now_ms = self.now_ms();
        self.node.tick(now_ms);
        self.settings.members_view.set(self.node.members());
        // Answers nobody waits for any more (the client timed out) are forgotten.
        self.pending_writes.retain(|_, reply| !reply.is_closed());
        self.pending_reads.retain(|_, read| !read.abandoned());
        self.fail_parked_without_leader();
        self.log_alarm_changes();
    }

    /// One line per alarm raised or disarmed (NOSPACE, CORRUPT), looked at once a tick.
    fn log_alarm_changes(&mut self) {
        let alarms = self.node.store().alarms();
        if alarms == self.alarms_logged {
            return;
        }
        for raised in alarms.iter().filter(|a| !self.alarms_logged.contains(a)) {
            warn!(
                member = format!("{:x}", raised.member_id),
                alarm = ?raised.alarm,
                "alarm raised"
            );
        }
        for disarmed in self.alarms_logged.iter().filter(|a| !alarms.contains(a)) {
            info!(
                member = format!("{:x}", disarmed.member_id),
                alarm = ?disarmed.alarm,
                "alarm disarmed"
            );
        }
        self.alarms_logged = alarms;
    }

    fn step(&mut self, message: Message) {
        let from = message.from;
        if matches!(message.body, MessageBody::HeartbeatResponse(_)) {
            if let Some(round_trip) = self.heartbeat_round_trips.answered(from, Instant::now()) {
                self.metrics.observe_peer_round_trip(from, round_trip);
            }
        }
        if let Err(error) = self.node.step(message) {
            warn!(from, %error, "refused a peer's message");
        }
    }

    fn on_peer_report(&mut self, report: PeerReport) {
        match report {
            PeerReport::Unreachable(id) => self.node.report_unreachable(id),
            PeerReport::SnapshotFailed(id) => self.node.report_snapshot_failed(id),
            PeerReport::SnapshotProgress(id) => self.node.report_snapshot_progress(id),
            PeerReport::RemovedBy(id) => self.removed_by = Some(id),
        }
    }

    fn handle(&mut self, request: Request) {
        let started = Instant::now();
        self.handle_request(request);
        self.turn.requests += started.elapsed();
        self.turn.requests_handled += 1;
    }

    fn handle_request(&mut self, request: Request) {
        if self.must_hold(&request) {
            self.park(request);
            return;
        }
        match request {
            Request::Write {
                body,
                credentials,
                reply,
            } => {
                let id = self.next_id();
                match self.node.propose_as(id, body, &credentials) {
                    Ok(()) => {
                        self.pending_writes.insert(id, reply);
                    }
                    Err(error) => {
                        self.metrics.count_failed_proposal();
                        let _ = reply.send(Err(propose_error(error)));
                    }
                }
            }
            Request::MemberChange { change, reply } => {
                let id = self.next_id();
                match self.node.propose_member_change(id, change) {
                    Ok(_) => {
                        self.pending_writes.insert(id, reply);
                    }
                    Err(error) => {
                        // Refused by etcd's checks, nothing was proposed: not a failed
                        // proposal.
                        if !matches!(error, NodeProposeError::Membership(_)) {
                            self.metrics.count_failed_proposal();
                        }
                        let _ = reply.send(Err(propose_error(error)));
                    }
                }
            }
            Request::Ask {
                query,
                asked_by,
                consistency: Consistency::Linearizable,
                reply,
            } => {
                let id = self.next_id();
                match self.node.read_index(id) {
                    Ok(()) => {
                        let read = AskedQuery {
                            query,
                            asked_by,
                            reply,
                        };
                        self.pending_reads.insert(id, read);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(read_index_error(error)));
                    }
                }
            }
            Request::Ask {
                query,
                asked_by,
                reply,
                ..
            } => self.answer(AskedQuery {
                query,
                asked_by,
                reply,
            }),
        }
    }

    /// Answers a query, if whoever asked it may.
    fn answer(&mut self, asked: AskedQuery) {
        let answer = self.node.answer_for(asked.asked_by.as_ref(), *asked.query);
        let _ = asked.reply.send(answer.map_err(ApiError::Auth));
    }

    fn park(&mut self, request: Request) {
        if self.parked.len() < MAX_PARKED_REQUESTS {
            self.parked.push_back(request);
        } else {
            request.fail(ApiError::TooManyRequests);
        }
    }

    /// Whether `request` waits in `parked` (see `keel_core::node::Needs`).
    fn must_hold(&self, request: &Request) -> bool {
        self.node.must_hold(request.needs())
    }

    /// Serves what was held once what it waited for is there.
    fn unpark(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let (held, ready): (VecDeque<Request>, VecDeque<Request>) =
            std::mem::take(&mut self.parked)
                .into_iter()
                .partition(|request| self.must_hold(request));
        self.parked = held;
        if ready.is_empty() {
            return;
        }
        info!(requests = ready.len(), "serving held requests");
        for request in ready {
            self.handle(request);
        }
    }

    /// Fails what is held once the node says so (no leader for an election timeout),
    /// instead of leaving it until its clients give up.
    fn fail_parked_without_leader(&mut self) {
        if self.parked.is_empty() || !self.node.held_requests_fail() {
            return;
        }
        for request in std::mem::take(&mut self.parked) {
            request.fail(ApiError::NoLeader);
        }
    }

    fn open_watch_stream(&mut self, open: WatchOpen) {
        let stream = self.node.open_watch_stream();
        let (outbox, inbox) = mpsc::channel(WATCH_OUTBOX);
        self.watch_outboxes.insert(stream, outbox);
        if open.reply.send((stream, inbox)).is_err() {
            self.close_watch_stream(stream);
        }
    }

    fn close_watch_stream(&mut self, stream: StreamId) {
        self.watch_outboxes.remove(&stream);
        self.node.close_watch_stream(stream);
    }

    /// Moves watch responses from the hub to each stream's outbox while it has room.
    fn flush_watches(&mut self) {
        let mut closed = Vec::new();
        for (&stream, outbox) in &self.watch_outboxes {
            if outbox.is_closed() {
                closed.push(stream);
                continue;
            }
            while outbox.capacity() > 0 {
                let Some(response) = self.node.poll_watch_stream(stream) else {
                    break;
                };
                if outbox.try_send(response).is_err() {
                    break;
                }
            }
        }
        for stream in closed {
            self.close_watch_stream(stream);
        }
    }

    /// Carries out every pending `Ready` (see `keel_core::raft::ready` for the order).
    fn process_ready(&mut self) -> Result<(), LoopError> {
        while let Some(mut ready) = self.node.ready() {
            if let Some(soft) = ready.soft_state {
                self.on_soft_state(soft.leader, soft.role);
            }
            for message in std::mem::take(&mut ready.messages) {
                self.send(message);
            }
            if let Some(snapshot) = &ready.snapshot {
                info!(
                    index = snapshot.meta.index,
                    "installing the leader's snapshot"
                );
                self.install_engine(snapshot.meta.index)?;
            }
            let started = Instant::now();
            let synced = ready.must_sync();
            self.storage
                .persist(&ready)
                .inspect_err(|e| error!(%e, "persist failed"))?;
            self.turn.persist += started.elapsed();
            self.commit_unsynced = !synced && (self.commit_unsynced || ready.hard_state.is_some());
            if synced {
                let took = started.elapsed();
                self.metrics.observe_fsync(took);
                if took > SLOW_FSYNC {
                    warn!(took_ms = took.as_millis() as u64, "slow fdatasync");
                }
            }
            for message in std::mem::take(&mut ready.persisted_messages) {
                self.send(message);
            }
            let committed = ready.committed_entries.len() as u64;
            let now_ms = self.now_ms();
            let applying = Instant::now();
            let output = self.node.apply(&mut ready, now_ms);
            let applied_in = applying.elapsed();
            self.turn.apply += applied_in;
            if applied_in > SLOW_APPLY {
                self.metrics.count_slow_apply();
                warn!(
                    took_ms = u64::try_from(applied_in.as_millis()).unwrap_or(u64::MAX),
                    entries = committed,
                    "applying committed entries took too long"
                );
            }
            self.turn.applied_entries += committed;
            self.metrics
                .proposals_committed
                .fetch_add(committed, Ordering::Relaxed);
            for completion in output.completions {
                self.complete(completion);
            }
            for id in output.reads {
                if let Some(read) = self.pending_reads.remove(&id) {
                    self.answer(read);
                }
            }
            if output.membership_changed {
                self.update_peers();
                self.settings.members_view.set(self.node.members());
            }
            if output.undecodable_entries > 0 {
                error!(
                    count = output.undecodable_entries,
                    "applied entries that do not decode as no-ops"
                );
            }
            self.node.advance(&ready);
            self.applied_since_commit += committed;
            self.check_engine()?;
        }
        // After every batch: a leader's snapshot changes the membership without a
        // membership change being applied.
        self.note_learner();
        self.metrics.observe_node(&self.node);
        self.metrics
            .observe_pending_proposals(self.pending_writes.len());
        if let Some(inspector) = &self.settings.hooks.inspector {
            inspector.observe(&self.node);
        }
        Ok(())
    }

    /// Sends a message; a snapshot goes with the store's engine as its last commit holds
    /// it (see `crate::peer::snapshot_stream`): Raft's own snapshot is only a marker, so the
    /// message takes the engine commit's metadata, at or after the marker.
    fn send(&mut self, mut message: Message) {
        if matches!(message.body, MessageBody::Heartbeat(_)) {
            self.heartbeat_round_trips.sent(message.to, Instant::now());
        }
        if !matches!(message.body, MessageBody::InstallSnapshot(_)) {
            self.transport.send(message);
            return;
        }
        let prepared = self
            .node
            .store()
            .view()
            .map_err(|e| e.to_string())
            .and_then(|view| {
                snapshot_of_view(&*view)
                    .map(|snapshot| (view, snapshot))
                    .map_err(|e| e.to_string())
            });
        match prepared {
            Ok((view, snapshot)) => {
                info!(
                    peer = message.to,
                    index = snapshot.meta.index,
                    "sending a snapshot of the store's engine"
                );
                message.body = MessageBody::InstallSnapshot(snapshot);
                self.transport.send_snapshot(message, view);
            }
            Err(error) => {
                warn!(%error, peer = message.to, "cannot send a snapshot");
                self.node.report_snapshot_failed(message.to);
            }
        }
    }

    /// Puts the leader's engine received for the snapshot at `index` in place of this
    /// node's (before the snapshot is persisted to the log: a crash in between leaves the
    /// engine ahead of the log, which the next start rebases, see `Node::open`).
    fn install_engine(&mut self, index: u64) -> Result<(), LoopError> {
        let engine_error = |what: &str, e: &dyn std::fmt::Display| {
            error!(%e, index, "{what}");
            LoopError::Engine(format!("{what}: {e}"))
        };
        drop(self.node.take_store());
        snapshot_stream::replace_engine(&mut self.engine_disk, index)
            .map_err(|e| engine_error("cannot put the leader's engine in place", &e))?;
        let disk = self
            .engine_disk
            .share()
            .map_err(|e| engine_error("cannot open the data dir again", &e))?;
        let engine = RedbEngine::open(disk, self.settings.engine_cache_size_bytes)
            .map_err(|e| engine_error("cannot open the leader's engine", &e))?;
        let store = Store::open(Box::new(engine), *self.node.store().config())
            .map_err(|e| engine_error("cannot open the leader's store", &e))?;
        self.node.install_store(store);
        self.engine_commit_in_flight = false;
        self.applied_since_commit = 0;
        self.last_engine_commit = Instant::now();
        Ok(())
    }

    /// Stops the loop once the store's engine failed.
    fn check_engine(&self) -> Result<(), LoopError> {
        match self.node.store().failure() {
            Some(e) => {
                error!(%e, "the store's engine failed");
                Err(LoopError::Engine(e.to_string()))
            }
            None => Ok(()),
        }
    }

    /// Begins a durable commit of the engine once `--backend-batch-limit` entries, or
    /// (checked on ticks, so that a lone write after a quiet spell does not pay a commit of
    /// its own) `--backend-batch-interval`, have gone by since the last one began. The
    /// commit runs off the loop (see `keel_storage::RedbEngine`); once it is done, the Raft
    /// log may be released behind it.
    fn maybe_commit_engine(&mut self, on_tick: bool) -> Result<(), LoopError> {
        // Asked every time: an idle engine also takes in a defragmented file's view here.
        let done = engine_result(self.node.store_commit_done())?;
        if self.engine_commit_in_flight && done {
            self.engine_commit_in_flight = false;
            self.after_engine_commit()?;
        }
        // Physical compaction moves with applies; on a quiet member, ticks move it, each with
        // an engine commit (which also moves the index checkpoint it may wait for).
        if on_tick && self.applied_since_commit == 0 && self.node.store().compaction_behind() {
            self.node
                .step_store_compaction(IDLE_COMPACTION_REVISIONS_PER_TICK);
            self.applied_since_commit = 1;
        }
        let due = self.applied_since_commit >= self.settings.backend_batch_limit
            || (on_tick
                && self.applied_since_commit > 0
                && self.last_engine_commit.elapsed() >= self.settings.backend_batch_interval);
        // A commit still under way (a large index checkpoint, a slow disk) is not waited
        // for: the writes wait in memory and the next commit takes them all.
        if due && !self.engine_commit_in_flight {
            let beginning = Instant::now();
            let result = self.node.begin_store_commit();
            self.turn.begin_engine_commit += beginning.elapsed();
            engine_result(result)?;
            self.engine_commit_in_flight = true;
            self.applied_since_commit = 0;
            self.last_engine_commit = Instant::now();
        }
        Ok(())
    }

    /// Commits the engine durably and waits (at shutdown).
    fn commit_engine(&mut self) -> Result<(), LoopError> {
        let result = self.node.commit_store(true);
        engine_result(result)?;
        self.engine_commit_in_flight = false;
        self.applied_since_commit = 0;
        self.after_engine_commit()
    }

    /// After a durable commit: releases the Raft log behind it every `--snapshot-count`
    /// entries, since the engine holds everything the released entries did.
    fn after_engine_commit(&mut self) -> Result<(), LoopError> {
        let started = Instant::now();
        let result = self.release_log_behind_engine();
        self.turn.after_engine_commit += started.elapsed();
        result
    }

    fn release_log_behind_engine(&mut self) -> Result<(), LoopError> {
        if let Some(ms) = self.node.store().last_commit_ms() {
            self.metrics
                .observe_engine_commit(Duration::from_millis(ms));
        }
        let view = engine_result(self.node.store().view())?;
        let marker = snapshot_of_view(&*view).map_err(|e| LoopError::Engine(e.to_string()))?;
        let index = marker.meta.index;
        if index < self.storage.snapshot_index() + self.settings.snapshot_count {
            return Ok(());
        }
        if let Some(retain_entries) = self.node.compact_log(marker.clone()) {
            self.storage
                .save_snapshot(&marker, retain_entries)
                .inspect_err(|e| error!(%e, "saving a snapshot marker failed"))?;
            info!(index, "released the Raft log behind the store's engine");
            if let Some(inspector) = &self.settings.hooks.inspector {
                inspector.log_released(&self.node, index);
            }
        }
        Ok(())
    }

    fn complete(&mut self, completion: Completion) {
        if matches!(completion.outcome, Outcome::Lost) {
            self.metrics.count_failed_proposal();
        }
        if let Some(reply) = self.pending_writes.remove(&completion.request_id) {
            let _ = reply.send(Ok(Written {
                outcome: completion.outcome,
                raft_term: self.node.raft().term(),
            }));
        }
    }

    fn on_soft_state(&mut self, leader: Option<u64>, role: Role) {
        if leader != self.leader {
            match leader {
                Some(id) => info!(
                    leader = format!("{id:x}"),
                    ?role,
                    term = self.node.raft().term(),
                    "leader elected"
                ),
                None => info!(term = self.node.raft().term(), "no leader"),
            }
            self.leader = leader;
            if leader.is_some() {
                self.metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
        }
        if role != Role::Leader {
            // Reads waiting on this node's leadership will not be answered: fail them now.
            debug!(?role, "role changed");
        }
    }

    /// Points the transport at the members as the node now knows them.
    fn update_peers(&mut self) {
        let voters = self.node.raft().conf_state().voters.len();
        let learners = self.node.raft().conf_state().learners.len();
        info!(
            voters,
            learners,
            members = self.node.members().len(),
            "membership changed"
        );
        let peers: Vec<(u64, Vec<String>)> = self
            .node
            .members()
            .iter()
            .map(|m| (m.id, m.peer_urls.clone()))
            .collect();
        if !peers.is_empty() {
            self.transport.set_peers(&peers);
        }
    }
}

/// When the oldest unanswered heartbeat to each peer was sent: a leader's heartbeat round
/// trip is its peer round trip time (etcd measures it with a prober of its own).
#[derive(Debug, Default)]
struct RoundTrips {
    sent: BTreeMap<u64, Instant>,
}

impl RoundTrips {
    /// Heartbeats to a peer that answers none are not timed past this: a lost heartbeat
    /// would otherwise make the next answer look as slow as the gap.
    const STALE: Duration = Duration::from_secs(5);

    fn sent(&mut self, peer: u64, now: Instant) {
        let since = self.sent.entry(peer).or_insert(now);
        if now.duration_since(*since) > Self::STALE {
            *since = now;
        }
    }

    fn answered(&mut self, peer: u64, now: Instant) -> Option<Duration> {
        let since = self.sent.remove(&peer)?;
        let round_trip = now.duration_since(since);
        (round_trip <= Self::STALE).then_some(round_trip)
    }
}

/// What woke the server loop for a turn.
enum Woke {
    Tick,
    Peer(Message),
    PeerReport(PeerReport),
    WatchOpen(WatchOpen),
    Request(Request),
}

/// Where one turn of the server loop spent its time.
#[derive(Debug, Default)]
struct TurnTimes {
    /// Writing (and syncing) Raft's log and hard state.
    persist: Duration,
    /// Applying committed entries to the store.
    apply: Duration,
    applied_entries: u64,
    /// Handing a batch of writes to the engine's commit thread.
    begin_engine_commit: Duration,
    /// Taking a finished commit's view and releasing the Raft log behind it.
    after_engine_commit: Duration,
    /// Clients' requests: proposing writes, serving reads (a RangeStream's chunks among
    /// them), watches.
    requests: Duration,
    requests_handled: u64,
}

impl TurnTimes {
    fn warn_if_slow(&self, took: Duration) {
        if took < SLOW_TURN {
            return;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        warn!(
            took_ms = ms(took),
            persist_ms = ms(self.persist),
            apply_ms = ms(self.apply),
            applied_entries = self.applied_entries,
            begin_engine_commit_ms = ms(self.begin_engine_commit),
            after_engine_commit_ms = ms(self.after_engine_commit),
            requests_ms = ms(self.requests),
            requests = self.requests_handled,
            "a turn of the server loop took too long"
        );
    }
}

/// A query as asked; a linearizable one waits in `pending_reads` for its read index to be
/// applied.
struct AskedQuery {
    query: Box<Query>,
    asked_by: Option<AskedBy>,
    reply: oneshot::Sender<Result<Answer, ApiError>>,
}

impl AskedQuery {
    /// Nobody waits for its answer any more (the client timed out).
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

fn read_index_error(error: ReadIndexError) -> ApiError {
    match error {
        ReadIndexError::NoLeader => ApiError::NoLeader,
        ReadIndexError::TooManyPending { .. } => ApiError::TooManyRequests,
    }
}

/// The loop's error for a failure of the store's engine.
fn engine_result<T>(result: Result<T, keel_core::mvcc::Error>) -> Result<T, LoopError> {
    result.map_err(|e| {
        error!(%e, "the store's engine failed");
        LoopError::Engine(e.to_string())
    })
}

fn propose_error(error: NodeProposeError) -> ApiError {
    match error {
        NodeProposeError::Store(error) => ApiError::Store(error),
        NodeProposeError::Auth(error) => ApiError::Auth(error),
        NodeProposeError::Membership(error) => ApiError::Membership(error),
        NodeProposeError::Raft(error) => match error {
            ProposeError::NotLeader { .. } | ProposeError::NotMember => ApiError::NoLeader,
            ProposeError::LeaderTransferInProgress { .. } => ApiError::LeaderChanged,
            ProposeError::UncommittedLimit { .. } | ProposeError::ForwardQueueFull { .. } => {
                ApiError::TooManyRequests
            }
            ProposeError::ConfChangePending { .. } => ApiError::MembershipChangePending,
            ProposeError::InvalidConfChange { reason } => ApiError::InvalidMembershipChange(reason),
        },
    }
}
