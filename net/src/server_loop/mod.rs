//! The server loop: one task drives a `keel_core::node::Node`. Ticks, peers' messages and
//! clients' requests come in; each `Ready` goes out in the order its contract sets — send
//! what may go early, persist (one sync for everything gathered: group commit), send what had
//! to wait, apply, answer clients, advance. No consensus decision is made here.
//!
//! Its rooms: `handle` (how services reach the loop), `requests` (clients' requests held,
//! proposed, asked and answered), `engine` (the store engine's commits and installs),
//! `watch_streams`, `turn_times` (what the loop measures of itself).

mod engine;
pub mod handle;
mod requests;
mod turn_times;
mod watch_streams;

use turn_times::{RoundTrips, TurnTimes};

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keel_core::mvcc::{StreamId, WatchResponse};
use keel_core::node::query::Answer;
use keel_core::node::{snapshot_of_view, ApplyOutput, Node};
use keel_core::raft::{Message, MessageBody, Ready, Role};
use keel_storage::{Disk, Storage, StorageError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::clock::{ClockSkew, LocalClock};
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;
use crate::peer::query::MembersView;
use crate::peer::transport::{PeerReport, Transport};
use crate::server_loop::handle::{ApiError, LearnerFlag, Request, Written};

/// Requests handled per wake-up before the `Ready` is processed: bounds latency under load
/// while letting many requests share one sync.
const MAX_REQUESTS_PER_BATCH: usize = 4096;
/// Time spent on clients' requests per wake-up, at most (give or take one request; see
/// `drain_inputs`). The simulator's clock does not move while code runs, so there only the
/// count above bounds a batch.
const REQUESTS_TIME_PER_TURN: Duration = Duration::from_millis(10);
/// etcd warns about an fdatasync slower than this.
const SLOW_FSYNC: Duration = Duration::from_secs(1);
/// etcd warns about (and counts in `etcd_server_slow_apply_total`) a request whose apply
/// takes longer than this; keel times the batch of entries a `Ready` applies together.
const SLOW_APPLY: Duration = Duration::from_millis(100);

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
    /// Who waits for each linearizable question the node answers once its read index applies.
    pending_reads: BTreeMap<u64, oneshot::Sender<Result<Answer, ApiError>>>,
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
        let node = &mut self.node;
        self.pending_reads.retain(|&id, reply| {
            let abandoned = reply.is_closed();
            if abandoned {
                node.forget_question(id);
            }
            !abandoned
        });
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
            self.persist(&ready)?;
            for message in std::mem::take(&mut ready.persisted_messages) {
                self.send(message);
            }
            let committed = ready.committed_entries.len() as u64;
            let output = self.apply(&mut ready, committed);
            self.deliver(output);
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

    /// Persists what `ready` holds (one sync for all of it when it must sync).
    fn persist(&mut self, ready: &Ready) -> Result<(), LoopError> {
        let started = Instant::now();
        let synced = ready.must_sync();
        self.storage
            .persist(ready)
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
        Ok(())
    }

    /// Applies the `committed` entries `ready` holds, timing it.
    fn apply(&mut self, ready: &mut Ready, committed: u64) -> ApplyOutput {
        let now_ms = self.now_ms();
        let applying = Instant::now();
        let output = self.node.apply(ready, now_ms);
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
        output
    }

    /// Hands what an apply produced to whoever waits for it.
    fn deliver(&mut self, output: ApplyOutput) {
        for completion in output.completions {
            self.complete(completion);
        }
        for (id, answer) in output.answers {
            if let Some(reply) = self.pending_reads.remove(&id) {
                let _ = reply.send(answer.map_err(ApiError::Auth));
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

/// What woke the server loop for a turn.
enum Woke {
    Tick,
    Peer(Message),
    PeerReport(PeerReport),
    WatchOpen(WatchOpen),
    Request(Request),
}
