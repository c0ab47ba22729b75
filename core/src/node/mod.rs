//! A keel node: a Raft group whose committed entries apply to the MVCC store, the members
//! registry and the watch hub. Still pure: time comes in as `now_ms`, everything goes out as
//! values. The server loop (keel-net) and the simulator drive it the same way:
//!
//! ```text
//! node.tick(now_ms) / node.step(message) / node.propose(..) / node.read_index(..)
//! while let Some(mut ready) = node.ready() {
//!     send ready.messages; persist ready.{snapshot, entries, hard_state} (sync if must_sync);
//!     send ready.persisted_messages;
//!     let applied = node.apply(&mut ready, now_ms);   // answers clients, serves reads
//!     node.advance(&ready);
//!     if let Some(snapshot) = node.maybe_snapshot() { persist it; release the WAL before it }
//! }
//! ```
//!
//! One file per concern: `apply` (committed entries), `snapshot` (taking, restoring and
//! installing them), `query` (questions put to the node), `caller_check` (who may ask),
//! `admission` and `membership` (membership changes), `liveness` (which voters are up),
//! `leases`, `auto_compaction`, `attributes` (announcing a member), `hold` and
//! `start_fence` (what waits, and why), `engine_state` (the node's rows in the store's
//! engine).

pub mod admission;
mod apply;
mod attributes;
mod auto_compaction;
mod caller_check;
mod client_request;
mod engine_state;
mod hold;
pub mod lease_clock;
mod leases;
mod liveness;
pub mod members;
mod membership;
pub mod proposal;
pub mod query;
mod snapshot;
mod start_fence;

use std::collections::BTreeMap;

use bytes::Bytes;

use thiserror::Error;

use crate::coverage::{Coverage, Path};
use lease_clock::LeaseClock;
use start_fence::{StartFence, START_FENCE_READ_ID};

use crate::auth::{
    AuthCommand, AuthError, AuthInfo, AuthResponse, AuthStore, Caller, Credentials, Tokens,
};
use crate::mvcc::{self, Command, Response, Store, StoreConfig, WatchConfig, WatchHub};
use crate::raft::{
    self, Index, InitialState, Message, MessageError, NodeId, ProposeError, Proposed, Raft,
    ReadIndexError, Ready, Role, Snapshot, Term,
};

pub use admission::{AdmissionError, MemberChange, VotersUp};
pub use auto_compaction::AutoCompaction;
use auto_compaction::AutoCompactor;
pub use caller_check::CallerCheck;
use client_request::AskedQuery;
pub use client_request::{ClientRequest, Consistency, Handled, RequestError};
pub use engine_state::{
    backup_of_view, found_cluster_on, image_of_view, marker_of, snapshot_of_view, Backup,
};
pub use hold::Needs;
use liveness::HeardStreak;
pub use liveness::VoterLiveness;
pub use members::{added_member_id, cluster_id, member_id, Member, MemberAttributes, Members};
pub use proposal::{ConfChangeContext, Proposal, ProposalBody, NO_CLIENT};
use snapshot::{decode_image, restore_image, Image, Restored};

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub raft: raft::Config,
    pub store: StoreConfig,
    pub watch: WatchConfig,
    /// Take a snapshot, and release the log before it, every this many applied entries
    /// (etcd's `--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept before a snapshot so a follower slightly behind gets entries rather
    /// than a whole snapshot (etcd's `SnapshotCatchUpEntries`).
    pub snapshot_catch_up_entries: u64,
    /// Milliseconds per tick: the heartbeat interval.
    pub tick_ms: u64,
    /// Expired leases proposed for revocation per tick, at most (etcd rate-limits too).
    pub max_lease_revokes_per_tick: usize,
    /// How often the leader checkpoints remaining lease TTLs, in ticks (0: never).
    pub lease_checkpoint_interval_ticks: u64,
    pub max_lease_checkpoints_per_tick: usize,
    /// How long an auth token lives without use (etcd's `--auth-token-ttl`).
    pub auth_token_ttl_ms: u64,
    /// History the leader compacts away on its own (etcd's `--auto-compaction-*`).
    pub auto_compaction: AutoCompaction,
    /// This member's name and client URLs, announced to the cluster through the log (see
    /// `attributes.rs`); `None` announces nothing.
    pub attributes: Option<MemberAttributes>,
}

impl NodeConfig {
    pub fn new(id: NodeId) -> NodeConfig {
        NodeConfig {
            raft: raft::Config::new(id),
            store: StoreConfig::default(),
            watch: WatchConfig::default(),
            snapshot_count: 100_000,
            snapshot_catch_up_entries: 5_000,
            tick_ms: 100,
            max_lease_revokes_per_tick: 1_000,
            lease_checkpoint_interval_ticks: 3_000,
            max_lease_checkpoints_per_tick: 1_000,
            auth_token_ttl_ms: 300_000,
            auto_compaction: AutoCompaction::Off,
            attributes: None,
        }
    }

    /// How long a new leader extends every lease: one election timeout, so leases do not
    /// expire en masse because the old leader's keep-alives could not reach anyone.
    fn lease_extend_ms(&self) -> u64 {
        u64::from(self.raft.election_ticks) * self.tick_ms
    }

    /// How far the lease clock may move between two readings: two ticks, so a loop a bit
    /// late keeps time and a clock that leaps does not (see [`LeaseClock`]).
    fn max_clock_step_ms(&self) -> u64 {
        self.tick_ms.saturating_mul(2).max(1)
    }
}

/// The node's rows changed since the engine last got them.
#[derive(Clone, Copy, Debug, Default)]
struct Dirty {
    members: bool,
    auth: bool,
    conf: bool,
}

impl Dirty {
    fn all() -> Dirty {
        Dirty {
            members: true,
            auth: true,
            conf: true,
        }
    }
}

/// Ticks between sweeps of expired auth tokens.
const TOKEN_SWEEP_TICKS: u64 = 10;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] raft::ConfigError),
    #[error("the snapshot's state-machine image at index {index} is damaged: {reason}")]
    CorruptSnapshot { index: Index, reason: String },
    /// The engine's node rows (members, auth, applied position) are damaged or missing.
    #[error("the store's engine is damaged: {reason}")]
    CorruptEngine { reason: String },
    /// The engine holds an older state than the Raft log's snapshot: the entries between
    /// were released and are gone (the engine file was replaced by an older copy).
    #[error(
        "the store in {location} is at Raft index {engine_index}, behind the log's snapshot at \
         {snapshot_index}: the entries between are gone. Remove the member's data dir and add \
         it again (member remove, member add, start with --initial-cluster-state=existing)"
    )]
    StoreBehind {
        engine_index: Index,
        snapshot_index: Index,
        location: String,
    },
    #[error("the store's engine failed: {0}")]
    Store(#[from] mvcc::Error),
}

/// Why a proposal was refused before it reached the log.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NodeProposeError {
    /// The request itself is invalid (etcd's error, with its gRPC code).
    #[error(transparent)]
    Store(#[from] mvcc::Error),
    #[error(transparent)]
    Raft(#[from] ProposeError),
    /// The client's credentials are not valid (an unknown or expired token).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A membership change refused by etcd's checks (see [`admission`]).
    #[error(transparent)]
    Membership(#[from] AdmissionError),
}

/// The outcome of a client's proposal, once applied (or known lost).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Store(Result<Response, mvcc::Error>),
    /// The answer to an auth command, or why a store write was refused by auth.
    Auth(Result<AuthResponse, AuthError>),
    MemberPublished,
    MembershipChanged {
        members: Vec<Member>,
    },
    /// A membership change that broke etcd's rules when it applied (see [`admission`]).
    MembershipRefused(AdmissionError),
    /// Another leader's entry took the proposal's place: it will never apply. The client
    /// may retry (etcd reports this as a timeout or `ErrProposalDropped`).
    Lost,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub request_id: u64,
    pub outcome: Outcome,
}

/// What one `apply` produced for the server to act on.
#[derive(Debug, Default)]
pub struct ApplyOutput {
    /// Answers to this node's clients.
    pub completions: Vec<Completion>,
    /// Read indexes asked with [`Node::read_index`] that may be served now, against
    /// [`Node::store`].
    pub reads: Vec<u64>,
    /// Answers to linearizable questions (see [`Node::handle`]), by request id.
    pub answers: Vec<(u64, Result<query::Answer, AuthError>)>,
    /// Whether the membership changed (the transport may need new peers).
    pub membership_changed: bool,
    /// Entries whose payload did not decode (applied as no-ops on every member alike).
    pub undecodable_entries: usize,
}

pub struct Node {
    id: NodeId,
    config: NodeConfig,
    raft: Raft,
    store: Store,
    watches: WatchHub,
    members: Members,
    auth: AuthStore,
    /// Simple auth tokens handed out here (not replicated, not in snapshots).
    tokens: Tokens,
    /// This leader's local proposals by index, to notice one being overwritten.
    appended: BTreeMap<Index, (Term, u64)>,
    /// Read requests with a known read index, waiting for the apply to reach it.
    waiting_reads: BTreeMap<(Index, u64), ()>,
    /// Linearizable questions by request id, answered once their read index is applied.
    asked_queries: BTreeMap<u64, AskedQuery>,
    /// Last entry applied to the store (or restored from a snapshot).
    applied_index: Index,
    last_snapshot_index: Index,
    /// A leader's snapshot checked when it arrived, kept decoded for the apply.
    prepared_snapshot: Option<(Index, Restored)>,
    role: Role,
    lease_clock: LeaseClock,
    ticks: u64,
    /// Snapshots from a leader this process restored (observability and tests).
    /// Rare paths taken at this layer (see `crate::coverage`).
    coverage: Coverage,
    /// The tick at which this node last became leader.
    leader_since_tick: u64,
    /// Set after a restart until this node has applied as far as before it (see
    /// `start_fence`); while set, the node must not serve reads from its own state.
    start_fence: Option<StartFence>,
    /// The store lies in an engine that holds the node's rows too (see `engine_state`):
    /// snapshots are markers, a leader's snapshot comes as an engine to install.
    engine_backed: bool,
    /// The membership as of the applied index (Raft's own catches up at `advance`).
    applied_conf: raft::ConfState,
    applied_term: Term,
    /// Which of the node's rows the next save writes (see `save_node_rows`).
    dirty: Dirty,
    /// A leader's engine, installed before the snapshot it holds is applied.
    installed_store: Option<Store>,
    /// The tick at which this node last proposed the NOSPACE alarm.
    no_space_alarm_asked_tick: Option<u64>,
    /// When each peer has been heard from without a pause since, and when last (see
    /// [`Node::voter_liveness`]).
    peer_heard: BTreeMap<NodeId, HeardStreak>,
    auto_compactor: AutoCompactor,
    /// The leader as of the last `Ready` (see `publish_to_new_leader`).
    known_leader: Option<NodeId>,
    /// Ticks since a leader was last known (see `hold`).
    leaderless_ticks: u64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("applied_index", &self.applied_index)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// The image every founding member starts from: the founding members, an empty store.
    pub fn bootstrap_image(members: &[Member], store: StoreConfig) -> Bytes {
        let image = Image {
            members: Members::new(members.iter().cloned()),
            store: Bytes::from(Store::new(store).snapshot()),
            auth: AuthStore::default(),
        };
        Bytes::from(proposal::encode_large(&image))
    }

    /// Starts from `initial` (see [`InitialState`]) with the store in memory: it is restored
    /// from the snapshot's image and the entries after it are applied as they come out of
    /// `ready`; snapshots are whole images ([`Node::maybe_snapshot`]).
    pub fn new(config: NodeConfig, initial: InitialState) -> Result<Node, NodeError> {
        let restored = restore_image(&initial.snapshot, config.store)?;
        let store = restored.store.unwrap_or_else(|| Store::new(config.store));
        Node::build(
            config,
            initial,
            store,
            restored.members,
            restored.auth,
            false,
        )
    }

    /// Starts from `initial` (the Raft log from the WAL) and `store`, the store's engine as
    /// it was last durably committed, which holds the node's state too (see `engine_state`).
    /// A new engine is filled from the snapshot's image (the bootstrap image; nothing for a
    /// joining member). Returns the node and, when the engine was ahead of the log (see
    /// `engine_state::reconcile`), the marker the caller must persist with
    /// `Storage::install_snapshot` before the node's first `Ready`. `location` names the
    /// engine's file in errors.
    pub fn open(
        config: NodeConfig,
        mut initial: InitialState,
        mut store: Store,
        location: &str,
    ) -> Result<(Node, Option<Snapshot>), NodeError> {
        if let Some(e) = store.failure() {
            return Err(NodeError::Store(mvcc::Error::Storage {
                reason: e.to_string(),
            }));
        }
        let (members, auth, rebased) = match engine_state::NodeRows::of_store(&store)? {
            Some(rows) => {
                if store.applied_index() != rows.applied_index {
                    return Err(NodeError::CorruptEngine {
                        reason: format!(
                            "{location}: the store is at index {}, the node's rows at {}",
                            store.applied_index(),
                            rows.applied_index
                        ),
                    });
                }
                let rebased = engine_state::reconcile(&mut initial, &rows, location)?;
                (rows.members, rows.auth, rebased)
            }
            None => {
                if store.applied_index() > 0 {
                    return Err(NodeError::CorruptEngine {
                        reason: format!("{location} holds a store but not the node's rows"),
                    });
                }
                if store.holds_a_store() {
                    // At index 0 and without the node's rows: the rows of a restore below
                    // that a crash cut short before the first durable commit (the restore
                    // commits as it goes, not durably, but such a commit may reach the
                    // disk). Thrown away, and the image restored again.
                    store = store.emptied().map_err(|e| {
                        NodeError::Store(mvcc::Error::Storage {
                            reason: format!("emptying {location}: {e}"),
                        })
                    })?;
                }
                let snapshot_index = initial.snapshot.meta.index;
                match decode_image(&initial.snapshot)? {
                    Some(image) if !image.store.is_empty() => {
                        store =
                            Store::restore_into(&image.store, store.into_engine(), config.store)
                                .map_err(|e| NodeError::CorruptSnapshot {
                                    index: snapshot_index,
                                    reason: e.to_string(),
                                })?;
                        store.set_applied_index(snapshot_index);
                        (image.members, image.auth, None)
                    }
                    _ if snapshot_index > 0 => {
                        return Err(NodeError::StoreBehind {
                            engine_index: 0,
                            snapshot_index,
                            location: location.to_string(),
                        })
                    }
                    _ => (Members::default(), AuthStore::default(), None),
                }
            }
        };
        let node = Node::build(config, initial, store, members, auth, true)?;
        Ok((node, rebased))
    }

    fn build(
        config: NodeConfig,
        initial: InitialState,
        store: Store,
        members: Members,
        auth: AuthStore,
        engine_backed: bool,
    ) -> Result<Node, NodeError> {
        let snapshot_index = initial.snapshot.meta.index;
        let applied_index = initial.applied_index.max(snapshot_index);
        let applied_term = if applied_index == snapshot_index {
            initial.snapshot.meta.term
        } else {
            initial
                .entries
                .iter()
                .find(|e| e.index == applied_index)
                .map_or(0, |e| e.term)
        };
        let start_fence = if initial.last_index() == 0 {
            Some(StartFence::joining())
        } else {
            StartFence::at_start(
                initial.last_index(),
                initial.hard_state.commit_index.max(snapshot_index),
            )
        };
        let raft = Raft::new(config.raft.clone(), initial)?;
        let watches = WatchHub::new(config.watch, &store);
        let applied_conf = raft.conf_state().clone();
        let mut node = Node {
            id: config.raft.id,
            raft,
            store,
            watches,
            members,
            auth,
            tokens: Tokens::new(config.auth_token_ttl_ms),
            appended: BTreeMap::new(),
            waiting_reads: BTreeMap::new(),
            asked_queries: BTreeMap::new(),
            applied_index,
            last_snapshot_index: snapshot_index,
            prepared_snapshot: None,
            coverage: Coverage::default(),
            leader_since_tick: 0,
            start_fence,
            no_space_alarm_asked_tick: None,
            peer_heard: BTreeMap::new(),
            auto_compactor: AutoCompactor::new(config.auto_compaction),
            known_leader: None,
            leaderless_ticks: 0,
            role: Role::Follower,
            lease_clock: LeaseClock::new(config.max_clock_step_ms()),
            ticks: 0,
            engine_backed,
            applied_conf,
            applied_term,
            dirty: Dirty::all(),
            installed_store: None,
            config,
        };
        if engine_backed && applied_index > 0 {
            node.save_node_rows();
        }
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// For tests that drive Raft directly (campaigns).
    #[cfg(any(test, feature = "testkit"))]
    pub fn raft_mut(&mut self) -> &mut Raft {
        &mut self.raft
    }

    /// The transport could not deliver to `peer`: the leader slows down to probing it.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.raft.report_unreachable(peer);
    }

    /// A snapshot to `peer` could not be sent whole: the leader sends another later.
    pub fn report_snapshot_failed(&mut self, peer: NodeId) {
        self.raft.report_snapshot_failed(peer);
    }

    /// A snapshot to `peer` is still streaming: the leader does not give up on it.
    pub fn report_snapshot_progress(&mut self, peer: NodeId) {
        self.raft.report_snapshot_progress(peer);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Commits the store's engine (see [`Store::commit`]); the server calls it between
    /// `Ready`s, so a commit holds whole applies and the node's rows that go with them.
    pub fn commit_store(&mut self, durable: bool) -> Result<(), mvcc::Error> {
        self.store.commit(durable)
    }

    /// Starts a durable commit of the store's engine without waiting for the disk (see
    /// [`Store::begin_commit`]); [`Node::store_commit_done`] tells when it is durable.
    pub fn begin_store_commit(&mut self) -> Result<(), mvcc::Error> {
        self.store.begin_commit()
    }

    pub fn store_commit_done(&mut self) -> Result<bool, mvcc::Error> {
        self.store.commit_done()
    }

    /// Moves physical compaction on by up to `revisions` when nothing is applied (it moves
    /// with applies otherwise). Returns whether it is still behind.
    pub fn step_store_compaction(&mut self, revisions: usize) -> bool {
        self.store.checkpoint_index_for_compaction();
        self.store.compaction_step(revisions);
        self.store.compaction_behind()
    }

    /// Starts an online defragment of the store's engine (see [`Store::begin_defragment`]).
    pub fn begin_store_defragment(&mut self) -> Result<mvcc::Defragmenting, mvcc::Error> {
        self.store.begin_defragment()
    }

    pub fn watches(&self) -> &WatchHub {
        &self.watches
    }

    /// For tests that drive the watch hub directly.
    #[cfg(any(test, feature = "testkit"))]
    pub fn watches_mut(&mut self) -> &mut WatchHub {
        &mut self.watches
    }

    /// A client's watch stream (its watches are created and cancelled by queries).
    pub fn open_watch_stream(&mut self) -> mvcc::StreamId {
        self.watches.open_stream()
    }

    /// Ends a watch stream and every watch on it.
    pub fn close_watch_stream(&mut self, stream: mvcc::StreamId) {
        self.watches.close_stream(stream);
    }

    /// The next response for a watch stream, if one is ready.
    pub fn poll_watch_stream(&mut self, stream: mvcc::StreamId) -> Option<mvcc::WatchResponse> {
        self.watches.poll(stream)
    }

    /// Lets watchers that are catching up read the next part of the store's history (call
    /// now and then: after creating a watch from the past, and on a timer, since a watcher
    /// may need several rounds and idle stores produce no applies that would drive it).
    /// Returns how many watchers are still catching up.
    pub fn sync_watches(&mut self) -> usize {
        self.watches.sync(&self.store)
    }

    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Users, roles and permissions, as applied here.
    pub fn auth(&self) -> &AuthStore {
        &self.auth
    }

    /// Who `credentials` name (see [`AuthStore::resolve`]); using a token starts its TTL
    /// again.
    pub fn resolve(&mut self, credentials: &Credentials) -> Result<Option<AuthInfo>, AuthError> {
        self.auth
            .resolve(credentials, &mut self.tokens, self.lease_clock.now_ms())
    }

    /// 0 until known (a joining node learns it from the leader's snapshot).
    pub fn cluster_id(&self) -> u64 {
        self.members.cluster_id()
    }

    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// Whether this node may serve from its own state (serializable reads, watches,
    /// hashes): false after a restart until it has applied at least as far as before it,
    /// which takes a leader (see `start_fence`). Linearizable reads and writes are safe
    /// regardless: their read index or entry lies past anything applied before the restart.
    pub fn serves_local_reads(&self) -> bool {
        self.start_fence.is_none()
    }

    /// Set once this node learned that its durable state went back (its data dir was
    /// wiped or rolled back): it takes part in nothing any more and must be stopped and
    /// replaced (see `raft::lost_state`).
    pub fn lost_state(&self) -> Option<raft::LostState> {
        self.raft.lost_state()
    }

    /// What the protocol noticed since the last call, for the operator's log.
    pub fn take_notices(&mut self) -> Vec<raft::Notice> {
        self.raft.take_notices()
    }

    /// How many snapshots sent by a leader this node restored since it started.
    pub fn leader_snapshots_restored(&self) -> u64 {
        self.coverage.count(Path::LeaderSnapshotInstalled)
    }

    /// How often this node took each rare path, its Raft core's and watches' included (see
    /// `crate::coverage`).
    pub fn coverage(&self) -> Coverage {
        let mut coverage = self.coverage.clone();
        coverage.add(self.raft.coverage());
        coverage.add(self.watches.coverage());
        coverage
    }

    pub fn is_leader(&self) -> bool {
        self.raft.role() == Role::Leader
    }

    /// One tick of logical time at `now_ms` (monotonic milliseconds; leases follow it at
    /// most two ticks per reading, see [`LeaseClock`]).
    pub fn tick(&mut self, now_ms: u64) {
        self.lease_clock.observe(now_ms);
        self.ticks += 1;
        self.raft.tick();
        self.ask_start_fence_read();
        if self.ticks.is_multiple_of(TOKEN_SWEEP_TICKS) {
            self.tokens.expire(self.lease_clock.now_ms());
        }
        if self.is_leader() {
            self.propose_lease_expiries();
            self.propose_lease_checkpoints();
            self.propose_auto_compaction(now_ms);
        }
        if self.store.over_quota() {
            self.raise_no_space_alarm();
        }
        self.republish_attributes();
        self.count_leaderless_ticks();
    }

    /// The leader compacts history older than `--auto-compaction-retention`, through the
    /// log like a client's compaction. Its clock is the tick's, not the lease clock.
    fn propose_auto_compaction(&mut self, now_ms: u64) {
        let revision = self.store.current_revision();
        if let Some(compaction) = self.auto_compactor.on_tick(now_ms, revision) {
            // Refused only if leadership is moving; the next leader compacts in its turn.
            let _ = self.propose(NO_CLIENT, ProposalBody::Store(compaction));
        }
    }

    /// While fenced, asks for a read index (again every election timeout, as a leader change
    /// may drop it); applying up to it lifts the fence.
    fn ask_start_fence_read(&mut self) {
        let retry_ticks = u64::from(self.config.raft.election_ticks);
        let Some(fence) = &mut self.start_fence else {
            return;
        };
        if self.raft.leader().is_some() && fence.should_ask(self.ticks, retry_ticks) {
            // Refused without a leader or with too many reads pending: asked again later.
            let _ = self.raft.read_index(START_FENCE_READ_ID);
        }
    }

    /// Lifts the fence once the applied index reaches the log's end at start-up.
    fn check_start_fence(&mut self) {
        if self
            .start_fence
            .is_some_and(|fence| fence.is_passed_at(self.applied_index))
        {
            self.start_fence = None;
        }
    }

    /// Feeds a peer's message. A snapshot whose image does not decode is refused here, so
    /// a damaged or hostile snapshot can never reach the state machine.
    pub fn step(&mut self, message: Message) -> Result<(), MessageError> {
        if let raft::MessageBody::InstallSnapshot(snapshot) = &message.body {
            if snapshot.meta.index > self.applied_index {
                let restored = restore_image(snapshot, self.config.store).map_err(|_| {
                    MessageError::Malformed {
                        kind: "InstallSnapshot",
                        reason: "the state-machine image does not decode",
                    }
                })?;
                self.prepared_snapshot = Some((snapshot.meta.index, restored));
            }
        }
        let from = message.from;
        self.raft.step(message)?;
        self.heard_from(from);
        // A fenced node asks as soon as it knows a leader, not only on its next tick.
        self.ask_start_fence_read();
        Ok(())
    }

    /// Proposes a write on behalf of this node's client `request_id` (unique on this node;
    /// [`NO_CLIENT`] if nobody waits). The outcome comes back as a [`Completion`].
    /// The server's own proposals (lease expiry, compaction, member attributes): auth never
    /// refuses them. Clients' go through [`Node::propose_as`].
    pub fn propose(&mut self, request_id: u64, body: ProposalBody) -> Result<(), NodeProposeError> {
        self.propose_from(request_id, Caller::Server, body)
    }

    /// Proposes a client's write; `credentials` are resolved now (refused if the token is
    /// unknown) and the entry is checked against the caller's permissions when it applies.
    pub fn propose_as(
        &mut self,
        request_id: u64,
        body: ProposalBody,
        credentials: &Credentials,
    ) -> Result<(), NodeProposeError> {
        // A login carries no credentials: its password was checked by the proposer.
        let info = match &body {
            ProposalBody::Auth(AuthCommand::Authenticate { .. }) => None,
            _ => self.resolve(credentials)?,
        };
        self.propose_from(request_id, Caller::Client(info), body)
    }

    fn propose_from(
        &mut self,
        request_id: u64,
        caller: Caller,
        body: ProposalBody,
    ) -> Result<(), NodeProposeError> {
        if let ProposalBody::Store(command) = &body {
            if let Err(error) = self.store.check_command(command) {
                if error == mvcc::Error::NoSpace {
                    self.raise_no_space_alarm();
                }
                return Err(error.into());
            }
        }
        let proposal = Proposal {
            proposer: self.id,
            request_id,
            caller,
            body,
        };
        let proposed = self.raft.propose(Bytes::from(proposal.encode()))?;
        self.note_appended(proposed, request_id);
        Ok(())
    }

    /// A write did not fit this member's quota, or the writes applied have filled it: raise
    /// the NOSPACE alarm through the log, under this member's id, as etcd's quota does, so
    /// every member refuses writes that add data until an operator disarms it (after freeing
    /// space). Once per tick at most while it is not applied yet.
    fn raise_no_space_alarm(&mut self) {
        if self.store.no_space_alarm_active() || self.no_space_alarm_asked_tick == Some(self.ticks)
        {
            return;
        }
        self.no_space_alarm_asked_tick = Some(self.ticks);
        let alarm = Command::Alarm(mvcc::AlarmRequest {
            action: mvcc::AlarmAction::Activate,
            member_id: self.id,
            alarm: mvcc::AlarmType::NoSpace,
        });
        // Refused only without a leader; the next refused write asks again.
        let _ = self.propose(NO_CLIENT, ProposalBody::Store(alarm));
    }

    fn note_appended(&mut self, proposed: Proposed, request_id: u64) {
        if let (Proposed::Appended { index, term }, true) = (proposed, request_id != NO_CLIENT) {
            self.appended.insert(index, (term, request_id));
        }
    }

    /// Starts a linearizable read for `request_id`; it appears in [`ApplyOutput::reads`]
    /// once it may be served.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ReadIndexError> {
        self.raft.read_index(request_id)
    }

    pub fn ready(&mut self) -> Option<Ready> {
        let ready = self.raft.ready()?;
        if let Some(soft) = ready.soft_state {
            self.on_role_change(soft.role);
            self.publish_to_new_leader(soft.leader);
        }
        Some(ready)
    }

    fn on_role_change(&mut self, role: Role) {
        let was_leader = self.role == Role::Leader;
        self.role = role;
        match (was_leader, role == Role::Leader) {
            (false, true) => {
                self.leader_since_tick = self.ticks;
                self.store
                    .promote(self.lease_clock.now_ms(), self.config.lease_extend_ms());
            }
            (true, false) => {
                self.store.demote();
                // Entries this node appended may still commit under the next leader; if
                // not, a different entry at their index reveals it. Either way apply says.
            }
            _ => {}
        }
    }

    pub fn advance(&mut self, ready: &Ready) {
        self.raft.advance(ready);
    }
}
