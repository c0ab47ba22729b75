//! The store: every key's history, the global revision, compaction state, leases, quota
//! and alarms. [`Store::apply`] is the only way the replicated state changes: it takes a
//! decoded [`Command`] at a Raft index and returns the response and the watch events of
//! the revision it created. Reads take `&self`.
//!
//! Determinism: every replicated decision depends only on the commands applied, never on a
//! member's flags, because members are configured one at a time (a rolling change of
//! `--quota-backend-bytes`, say) and must still hold the same data. The one [`StoreConfig`]
//! field applying reads, `min_lease_ttl_s`, is no flag and the same on every member.
//! Physical compaction progress, lease timers and the primary/follower role affect no
//! response and no hash.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use super::compaction::PhysicalCompaction;
use super::engine::Table;
use super::engine::{Defragmenting, Engine, EngineError, MemEngine, View};
use super::error::Error;
use super::garbage::GarbageLedger;
use super::lease::Lessor;
use super::quota::Usage;
use super::request::{AlarmMember, Command, Event, Response};
use super::revision::Revision;
use super::rows::DeferredIndex;
use super::validate::{check_structure, Limits};

/// etcd's default `--quota-backend-bytes` (2 GiB).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's minimum lease TTL with its default timing (1.5 election timeouts, rounded up).
pub const DEFAULT_MIN_LEASE_TTL_S: i64 = 2;
/// Revisions of history physical compaction processes after each applied entry. Small: a
/// revision costs tens of microseconds in a large store (index lookups that miss the page
/// cache, deletions the engine commits write), a `Ready` applies up to thousands of entries,
/// and puts wait for their apply (1,000 stalled a 1M-key cluster compacting 3M revisions to
/// a few puts a second, with client timeouts). At 4 per entry compaction still runs four
/// times as fast as writes come; a quiet member runs it on ticks.
pub const DEFAULT_COMPACTION_BATCH_REVISIONS: usize = 4;
/// Bytes of index rows held in memory before a checkpoint writes them to the engine (see
/// `rows.rs`): about 200k puts' rows, rebuilt from the history log in well under a second
/// when a store opens.
pub const DEFAULT_INDEX_CHECKPOINT_BYTES: usize = 16 * 1024 * 1024;
/// How long the leader waits before offering an expired lease for revocation again
/// (etcd's `expiredLeaseRetryInterval`).
pub const DEFAULT_EXPIRED_LEASE_RETRY_MS: u64 = 3000;

/// A member's settings. Only `min_lease_ttl_s` shapes what applying does (so it is a
/// constant, not a flag: see the module docs); the quota and limits are checked before
/// proposing, and the rest tune local work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Estimated store size beyond which this member refuses to propose writes and raises
    /// the NOSPACE alarm.
    pub quota_bytes: u64,
    /// Leases granted with a shorter TTL get this one.
    pub min_lease_ttl_s: i64,
    /// Physical compaction work done after each applied entry, in revisions of history.
    pub compaction_batch_revisions: usize,
    pub expired_lease_retry_ms: u64,
    /// Checked by [`Store::check_command`] before proposing.
    pub limits: Limits,
    /// Index rows held in memory until a checkpoint writes them to the engine (see
    /// `rows.rs`); local, like the compaction batch. 0: at every engine commit.
    pub index_checkpoint_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            quota_bytes: DEFAULT_QUOTA_BYTES,
            min_lease_ttl_s: DEFAULT_MIN_LEASE_TTL_S,
            compaction_batch_revisions: DEFAULT_COMPACTION_BATCH_REVISIONS,
            expired_lease_retry_ms: DEFAULT_EXPIRED_LEASE_RETRY_MS,
            limits: Limits::default(),
            index_checkpoint_bytes: DEFAULT_INDEX_CHECKPOINT_BYTES,
        }
    }
}

/// The outcome of applying one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub result: Result<Response, Error>,
    /// The store's revision after the command.
    pub revision: i64,
    /// The changes of the revision this command created, in order (empty when it
    /// changed nothing). `prev_kv` is filled as etcd's watch fills it; the watch hub strips
    /// it for watchers that did not ask.
    pub events: Vec<Event>,
}

/// Counts for monitoring and for the memory-per-key figure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Keys with any history (deleted keys stay until compaction).
    pub keys: usize,
    /// History entries held, including ones compaction has yet to drop.
    pub entries: usize,
    /// History-log entries (revisions at or after the compaction point, plus backlog).
    pub history_log_entries: usize,
    /// History-log entries physical compaction still has to process.
    pub compaction_backlog: usize,
    /// The quota's size estimate.
    pub size_bytes: u64,
    pub leases: usize,
}

/// The MVCC key-value store with leases (see the module docs). Its data lies in an
/// [`Engine`]; the scalars below and the lease table are also kept in memory and written to
/// the engine with every apply (see `rows/`). The revisions and the applied index change
/// only through methods that assert how they may move; a group one file works on
/// (`Usage`, `PhysicalCompaction`, `GarbageLedger`, `DeferredIndex`) keeps its fields private
/// to that file; the engine is shared by this file (commits) and `rows/` (row access).
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    pub(super) engine: Box<dyn Engine>,
    /// The engine's first failure: from then on every public call fails (see
    /// [`Store::failure`]).
    pub(super) failure: OnceLock<EngineError>,
    current_rev: i64,
    /// Logical compaction point; -1 before the first compaction, like etcd.
    compact_rev: i64,
    /// What the store holds, as the quota counts it (see `quota.rs`).
    pub(super) usage: Usage,
    pub(super) lessor: Lessor,
    pub(super) alarms: BTreeSet<AlarmMember>,
    applied_index: u64,
    /// Where physical compaction stands (see `compaction.rs`).
    pub(super) physical_compaction: PhysicalCompaction,
    /// The garbage accounting kept in memory (see `garbage.rs`).
    pub(super) garbage: GarbageLedger,
    /// Index rows not yet checkpointed into the engine (see `rows/`).
    pub(super) index: DeferredIndex,
    /// Whether events carry the previous version's value (`prev_kv`); reading it is a
    /// random read of the engine per write, wasted when no watcher asked for it.
    event_prev_values: bool,
}

/// The `Meta` key of the node's row `name`.
pub fn node_row_key(name: &str) -> Vec<u8> {
    format!("node.{name}").into_bytes()
}

/// A read-only engine over a view (see [`Store::open_view`]).
#[derive(Debug)]
struct ViewEngine(Arc<dyn View>);

impl super::engine::Read for ViewEngine {
    fn get(&self, table: Table, key: &[u8]) -> super::engine::EngineResult<Option<Vec<u8>>> {
        self.0.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        visit: super::engine::Visit<'_>,
    ) -> super::engine::EngineResult<()> {
        self.0.scan(table, from, to, reverse, visit)
    }
}

impl Engine for ViewEngine {
    fn put(&mut self, _: Table, _: &[u8], _: &[u8]) -> super::engine::EngineResult<()> {
        Err(EngineError("a store over a view is read-only".into()))
    }

    fn delete(&mut self, _: Table, _: &[u8]) -> super::engine::EngineResult<()> {
        Err(EngineError("a store over a view is read-only".into()))
    }

    fn commit(&mut self, _: bool) -> super::engine::EngineResult<()> {
        Err(EngineError("a store over a view is read-only".into()))
    }

    fn view(&self) -> super::engine::EngineResult<Arc<dyn View>> {
        Ok(self.0.clone())
    }
}

impl Store {
    /// An empty store in memory.
    pub fn new(config: StoreConfig) -> Self {
        Store::empty(Box::new(MemEngine::default()), config)
    }

    /// An empty store over `engine`, which must hold no store (see [`Store::open`]).
    pub(crate) fn empty(engine: Box<dyn Engine>, config: StoreConfig) -> Self {
        Store {
            config,
            engine,
            failure: OnceLock::new(),
            current_rev: 1,
            compact_rev: -1,
            usage: Usage::default(),
            lessor: Lessor::default(),
            alarms: BTreeSet::new(),
            applied_index: 0,
            physical_compaction: PhysicalCompaction::default(),
            garbage: GarbageLedger::default(),
            index: DeferredIndex::default(),
            event_prev_values: true,
        }
    }

    /// The store `engine` holds (an empty one if it holds none), as a follower.
    pub fn open(engine: Box<dyn Engine>, config: StoreConfig) -> Result<Self, Error> {
        let mut store = Store::empty(engine, config);
        store.load()?;
        Ok(store)
    }

    /// The engine's first failure, if any. Once failed, the store's state may be partly
    /// written; the node stops and, restarted, recovers from the last durable commit and
    /// the Raft log.
    pub fn failure(&self) -> Option<&EngineError> {
        self.failure.get()
    }

    /// `Err` once the engine failed.
    pub(crate) fn healthy(&self) -> Result<(), Error> {
        match self.failure.get() {
            Some(e) => Err(Error::Storage {
                reason: e.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Ends the engine's open transaction (see [`Engine::commit`]); `durable`: on disk
    /// when it returns.
    pub fn commit(&mut self, durable: bool) -> Result<(), Error> {
        self.healthy()?;
        self.advance_index_checkpoint();
        self.compaction_committed();
        if let Err(e) = self.engine.commit(durable) {
            self.failed(e);
        }
        self.healthy()
    }

    /// A store that reads `view` (a commit of another store's engine) and refuses writes:
    /// for reads off the store's thread (snapshots, long ranges). Its reads fail with
    /// [`Error::Storage`] if the view does not hold a store.
    pub fn open_view(view: Arc<dyn View>, config: StoreConfig) -> Result<Self, Error> {
        Store::open(Box::new(ViewEngine(view)), config)
    }

    /// A row the node keeps in the engine beside the store (members, auth, its applied
    /// position), written in the same transaction as the applies it goes with.
    pub fn node_row(&self, name: &str) -> Option<Vec<u8>> {
        self.row(Table::Meta, &node_row_key(name))
    }

    pub fn put_node_row(&mut self, name: &str, value: &[u8]) {
        self.put_row(Table::Meta, &node_row_key(name), value);
    }

    /// The next revision becomes current: one past the current one, always.
    pub(super) fn advance_revision(&mut self, revision: i64) {
        assert_eq!(
            revision,
            self.current_rev + 1,
            "revisions advance one at a time"
        );
        self.current_rev = revision;
    }

    /// Compaction moves to `revision`, forwards only and never past the current revision.
    pub(super) fn compact_to(&mut self, revision: i64) {
        assert!(
            self.compact_rev < revision && revision <= self.current_rev,
            "compaction to {revision} from {} at {}",
            self.compact_rev,
            self.current_rev
        );
        self.compact_rev = revision;
    }

    /// The revisions as a snapshot or the engine's rows hold them (loading, restoring).
    pub(super) fn restore_revisions(&mut self, current_rev: i64, compact_rev: i64) {
        self.current_rev = current_rev;
        self.compact_rev = compact_rev;
    }

    /// The applied index as a snapshot or the engine's rows hold it, not saved again.
    pub(super) fn restore_applied_index(&mut self, index: u64) {
        self.applied_index = index;
    }

    /// Records that the state restored into this store stands for the Raft log through
    /// `index` (an image restored at a snapshot's index).
    pub(crate) fn set_applied_index(&mut self, index: u64) {
        self.applied_index = index;
        self.save_state();
    }

    /// Gives the engine back (its open transaction as it is), to open again or close.
    pub fn into_engine(self) -> Box<dyn Engine> {
        self.engine
    }

    /// Starts a durable commit of everything applied so far without waiting for the disk
    /// (see [`Engine::begin_commit`]); [`Store::commit_done`] tells when it is durable.
    pub fn begin_commit(&mut self) -> Result<(), Error> {
        self.healthy()?;
        self.advance_index_checkpoint();
        self.compaction_committed();
        if let Err(e) = self.engine.begin_commit() {
            self.failed(e);
        }
        self.healthy()
    }

    /// Starts an online defragment of the engine's file (see [`Engine::begin_defragment`]).
    /// A defragment that cannot be done (no room for the copy) ends with an error in its
    /// outcome and leaves the store as it was; an error here is the engine's failure.
    pub fn begin_defragment(&mut self) -> Result<Defragmenting, Error> {
        self.healthy()?;
        match self.engine.begin_defragment() {
            Ok(defragmenting) => Ok(defragmenting),
            Err(e) => {
                self.failed(e);
                self.healthy().map(|()| Defragmenting::finished(Ok(())))
            }
        }
    }

    /// Whether the commit last begun is durable (and what [`Store::view`] shows).
    pub fn commit_done(&mut self) -> Result<bool, Error> {
        self.healthy()?;
        match self.engine.commit_done() {
            Ok(done) => Ok(done),
            Err(e) => {
                self.failed(e);
                self.healthy().map(|()| false)
            }
        }
    }

    /// How long the engine's last durable commit took, if known.
    pub fn last_commit_ms(&self) -> Option<u64> {
        self.engine.last_commit_ms()
    }

    /// A view of the engine's last commit (for work off the store's thread).
    pub fn view(&self) -> Result<Arc<dyn View>, Error> {
        self.healthy()?;
        self.engine.view().map_err(|e| Error::Storage {
            reason: e.to_string(),
        })
    }

    /// Bytes the engine takes on disk, and of those, in use (0 in memory).
    pub fn size_on_disk(&self) -> (u64, u64) {
        self.engine.size_on_disk()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn current_revision(&self) -> i64 {
        self.current_rev
    }

    /// Whether the events of the writes applied from now on carry `prev_kv` (true until
    /// told otherwise): the node says whether any watcher asked for it. The events of a
    /// write are not replicated state, so members may differ here.
    pub fn set_event_prev_values(&mut self, wanted: bool) {
        self.event_prev_values = wanted;
    }

    /// Whether the events of writes carry `prev_kv` (see `set_event_prev_values`).
    pub(super) fn event_prev_values(&self) -> bool {
        self.event_prev_values
    }

    /// -1 until the first compaction.
    pub fn compact_revision(&self) -> i64 {
        self.compact_rev
    }

    /// The last Raft index applied (etcd's consistent index); 0 for a new store.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms.iter().copied().collect()
    }

    /// The store's size estimate (what the quota and etcd's `db_total_size` count), O(1).
    pub fn size_bytes(&self) -> u64 {
        self.usage.size_bytes()
    }

    /// How many keys have a history (live, or deleted but not yet compacted away), O(1).
    pub fn key_count(&self) -> usize {
        usize::try_from(self.usage.key_count()).unwrap_or(usize::MAX)
    }

    /// Every figure about the store. It walks the whole engine: for tests, benchmarks and
    /// occasional reports, not for a hot path.
    pub fn stats(&self) -> StoreStats {
        let mut entries = 0;
        self.scan_rows(
            Table::Kv,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
            &mut |_, _| {
                entries += 1;
                true
            },
        );
        let mut log = 0;
        let mut backlog = 0;
        self.scan_log(Revision::new(0, 0), &mut |rev, _, _| {
            log += 1;
            if rev.main < self.compact_rev {
                backlog += 1;
            }
            true
        });
        StoreStats {
            keys: self.key_count(),
            entries,
            history_log_entries: log,
            compaction_backlog: backlog,
            size_bytes: self.usage.size_bytes(),
            leases: self.lessor.leases.len(),
        }
    }

    /// Every check etcd makes before proposing `command` (see [`super::check_command`]),
    /// with this store's limits, plus this member's quota (the caller raises the NOSPACE
    /// alarm when that refuses).
    pub fn check_command(&self, command: &Command) -> Result<(), Error> {
        self.healthy()?;
        super::validate::check_command(command, &self.config.limits)?;
        self.check_corrupt_alarm(command)?;
        self.check_quota(super::quota::cost(command))
    }

    /// Applies the command of the Raft entry at `index`. `now_ms` is the caller's
    /// monotonic clock, used only for the leader's lease timers.
    ///
    /// # Panics
    /// If `index` is not above the last applied index (the caller replayed an entry).
    pub fn apply(&mut self, index: u64, now_ms: u64, command: &Command) -> Applied {
        assert!(
            index > self.applied_index,
            "Raft index {index} applied after {}: entries must be applied once, in order",
            self.applied_index
        );
        self.applied_index = index;
        let outcome = check_structure(command)
            .and_then(|()| self.check_corrupt_alarm(command))
            .and_then(|()| self.apply_command(index, now_ms, command));
        let (result, events) = match outcome {
            Ok((response, events)) => (Ok(response), events),
            Err(e) => (Err(e), Vec::new()),
        };
        self.compaction_step(self.config.compaction_batch_revisions);
        self.save_state();
        let result = match (result, self.healthy()) {
            (_, Err(e)) => Err(e),
            (result, Ok(())) => result,
        };
        Applied {
            result,
            revision: self.current_rev,
            events,
        }
    }

    /// A Raft entry that carries no command (a leader's empty entry, a membership
    /// change): records the index and lets compaction progress.
    pub fn apply_empty(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "Raft index {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
        self.compaction_step(self.config.compaction_batch_revisions);
        self.save_state();
    }

    fn apply_command(
        &mut self,
        index: u64,
        now_ms: u64,
        command: &Command,
    ) -> Result<(Response, Vec<Event>), Error> {
        match command {
            Command::Put(put) => {
                let (r, events) = self.apply_put(put)?;
                Ok((Response::Put(r), events))
            }
            Command::DeleteRange(delete) => {
                let (r, events) = self.apply_delete_range(delete);
                Ok((Response::DeleteRange(r), events))
            }
            Command::Txn(txn) => {
                let (r, events) = self.apply_txn(txn)?;
                Ok((Response::Txn(r), events))
            }
            Command::Compaction(c) => Ok((Response::Compaction(self.apply_compaction(c)?), vec![])),
            Command::LeaseGrant(g) => {
                let r = self.apply_lease_grant(g, index, now_ms)?;
                Ok((Response::LeaseGrant(r), vec![]))
            }
            Command::LeaseRevoke(r) => {
                let (r, events) = self.apply_lease_revoke(r)?;
                Ok((Response::LeaseRevoke(r), events))
            }
            Command::LeaseCheckpoint(c) => Ok((
                Response::LeaseCheckpoint(self.apply_lease_checkpoint(c)),
                vec![],
            )),
            Command::Alarm(a) => Ok((Response::Alarm(self.apply_alarm(a)), vec![])),
        }
    }
}
