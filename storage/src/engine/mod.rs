//! The store's engine on disk: redb (crash-safe copy-on-write B-trees) in one file of the
//! data dir, reached through the [`Disk`] trait, so the simulator's disk faults reach it as
//! they reach the WAL.
//!
//! [`RedbEngine`] implements `keel_core::mvcc::Engine`. Writes go into an overlay in memory
//! and reads merge it over redb's last commit, so applying never waits for the disk. A
//! commit freezes the overlay and writes it into redb in one transaction; a durable one
//! (redb's two-phase commit with quick repair, so that reopening after a crash needs no walk
//! of the whole file) runs on a thread of its own when begun with
//! [`Engine::begin_commit`], while a new overlay takes the writes that follow. What a crash
//! keeps is exactly the last durable commit: the server replays the Raft log after the
//! applied index written in it. (In the simulator, which has no threads, the commit runs at
//! once.)
//!
//! Errors: the first error latches (see `Store::failure`); redb itself is of no further use
//! after a failed commit, so the node stops and recovers on restart.

mod backend;
mod bulk;
mod defragment;

use std::fmt;
use std::mem;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use keel_core::mvcc::{Defragmenting, Engine, EngineError, EngineResult, Read, Table, View, Visit};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

pub use backend::DiskBackend;
use backend::EngineFile;
pub use bulk::BulkWriter;
use defragment::Defragment;
use keel_core::mvcc::overlay::{empty_range, scan_merged, Found, Merged, Overlay, Pending};

use crate::disk::Disk;

/// The engine's file in the data dir.
pub const STORE_FILE: &str = "store.redb";

/// The engine's page cache unless configured (`--engine-cache-size-bytes`).
pub const DEFAULT_ENGINE_CACHE_SIZE_BYTES: usize = 256 * 1024 * 1024;

type RowTable = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn definition(table: Table) -> RowTable {
    TableDefinition::new(table.name())
}

/// An engine error naming the file.
fn fail(location: &str, what: &str, error: impl fmt::Display) -> EngineError {
    EngineError(format!("{what} {location}: {error}"))
}

/// Writes `rows` of `table` (a value, or `None` for a deletion) in `txn`.
fn write_table<'a>(
    txn: &WriteTransaction,
    table: Table,
    rows: impl Iterator<Item = (&'a Vec<u8>, &'a Pending)>,
    location: &str,
) -> EngineResult<()> {
    let mut open = txn
        .open_table(definition(table))
        .map_err(|e| fail(location, "opening a table of", e))?;
    for (key, pending) in rows {
        match pending {
            Some(value) => open.insert(key.as_slice(), value.as_slice()).map(drop),
            None => open.remove(key.as_slice()).map(drop),
        }
        .map_err(|e| fail(location, "writing", e))?;
    }
    Ok(())
}

/// Writes the rows of `overlay` that `keep` accepts into redb in one transaction (none if
/// it accepts none).
fn write_rows(
    db: &Database,
    overlay: &Overlay,
    durable: bool,
    location: &str,
    keep: &dyn Fn(Table, &[u8]) -> bool,
) -> EngineResult<()> {
    let kept = |table| {
        overlay
            .table(table)
            .iter()
            .filter(move |(key, _)| keep(table, key))
    };
    if Table::ALL.iter().all(|&table| kept(table).next().is_none()) {
        return Ok(());
    }
    let txn = db
        .begin_write()
        .map_err(|e| fail(location, "beginning a transaction on", e))?;
    for table in Table::ALL {
        write_table(&txn, table, kept(table), location)?;
    }
    commit_txn(txn, durable, location)
}

/// Writes `overlay` into redb in one transaction (every table opened, so that a new file has
/// them all) and returns a read of the result.
fn write_overlay(
    db: &Database,
    overlay: &Overlay,
    durable: bool,
    location: &str,
) -> EngineResult<ReadTransaction> {
    let txn = db
        .begin_write()
        .map_err(|e| fail(location, "beginning a transaction on", e))?;
    for table in Table::ALL {
        write_table(&txn, table, overlay.table(table).iter(), location)?;
    }
    commit_txn(txn, durable, location)?;
    db.begin_read()
        .map_err(|e| fail(location, "beginning a read of", e))
}

/// Commits `txn`; a durable commit is synced, with redb's quick repair so that opening the
/// file after a crash needs no walk of the whole file.
fn commit_txn(mut txn: WriteTransaction, durable: bool, location: &str) -> EngineResult<()> {
    let durability = if durable {
        txn.set_quick_repair(true);
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(durability)
        .map_err(|e| fail(location, "committing to", e))?;
    txn.commit().map_err(|e| fail(location, "committing to", e))
}

/// An engine file opened by redb, with its handle and size.
pub(crate) struct OpenDatabase {
    db: Database,
    file: Arc<dyn EngineFile>,
    size_bytes: Arc<AtomicU64>,
    location: String,
}

/// Opens (creating) the engine file `name` on `disk` with redb's page cache of
/// `cache_size_bytes`.
fn open_database<D: Disk + Send + 'static>(
    disk: D,
    name: &str,
    cache_size_bytes: usize,
) -> EngineResult<OpenDatabase> {
    let location = disk.location(name);
    let backend = DiskBackend::open(disk, name).map_err(|e| fail(&location, "creating", e))?;
    let (file, size_bytes) = (backend.engine_file(), backend.size_bytes.clone());
    let db = Database::builder()
        .set_cache_size(cache_size_bytes)
        .create_with_backend(backend)
        .map_err(|e| fail(&location, "opening", e))?;
    Ok(OpenDatabase {
        db,
        file,
        size_bytes,
        location,
    })
}

/// What the engine's writer is asked to do.
enum Job {
    /// Write a frozen overlay into redb (durably, or not).
    Commit {
        overlay: Arc<Overlay>,
        durable: bool,
    },
    /// Begin a defragment that copies `slice_bytes` at a time (see `defragment.rs`).
    Defragment {
        outcome: Defragmenting,
        slice_bytes: u64,
    },
}

/// What a commit gives back: a view of redb with it, how long it took, and its number.
type Flushed = EngineResult<(RedbView, u64, u64)>;

/// What the engine and its writer share.
struct Shared {
    /// The size of the engine's file, which a defragment replaces.
    size_bytes: Mutex<Arc<AtomicU64>>,
    /// A view of the defragmented file as it took the old one's place, with the number of
    /// commits before: an idle engine takes it in, so that the old file can close.
    switched: Mutex<Option<(u64, RedbView)>>,
}

impl Shared {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
            .lock()
            .map(|size| size.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

/// The engine file's one writer: commits, and the defragment between them.
struct Committer {
    db: Arc<Database>,
    file: Arc<dyn EngineFile>,
    /// The file's name in the data dir.
    name: String,
    defragment: Option<Defragment>,
    /// Bytes the running defragment copies per slice.
    slice_bytes: u64,
    /// A failure outside a commit (a defragment's renames): the next commit reports it.
    failure: Option<EngineError>,
    shared: Arc<Shared>,
    cache_size_bytes: usize,
    /// Commits so far.
    commits: u64,
    location: String,
}

impl Committer {
    fn commit(&mut self, overlay: &Overlay, durable: bool) -> Flushed {
        if let Some(e) = &self.failure {
            return Err(e.clone());
        }
        self.commits += 1;
        let started = Instant::now();
        let read = write_overlay(&self.db, overlay, durable, &self.location)?;
        let view = RedbView::new(read, self.db.clone(), &self.location)?;
        if let Some(defragment) = &self.defragment {
            if let Err(e) = defragment.write_passed(overlay) {
                self.abandon_defragment(&e.0);
            } else if defragment.copied_all() {
                // The engine takes in the copy's view after this commit's (see `settle`).
                self.finish_defragment()?;
            }
        }
        Ok((view, started.elapsed().as_millis() as u64, self.commits))
    }

    fn begin_defragment(&mut self, outcome: Defragmenting, slice_bytes: u64) {
        self.slice_bytes = slice_bytes.max(1);
        if self.defragment.is_some() {
            // The engine joins a running one instead of asking again.
            outcome.finish(Err("another defragment is under way".into()));
            return;
        }
        match Defragment::begin(
            &*self.file,
            &self.name,
            self.cache_size_bytes,
            outcome.clone(),
        ) {
            Ok(defragment) => self.defragment = Some(defragment),
            Err(e) => outcome.finish(Err(format!("defragment: {e}"))),
        }
    }

    /// Copies the defragment's next slice, and puts the copy in place once it is whole.
    fn defragment_step(&mut self) -> EngineResult<()> {
        let Some(defragment) = &mut self.defragment else {
            return Ok(());
        };
        if let Err(e) = defragment.copy_slice(&self.db, self.slice_bytes) {
            self.abandon_defragment(&e.0);
            return Ok(());
        }
        if defragment.copied_all() {
            self.finish_defragment()?;
        }
        Ok(())
    }

    /// Puts the whole copy in place of the file, or abandons it (see `defragment.rs`).
    fn finish_defragment(&mut self) -> EngineResult<()> {
        let Some(defragment) = self.defragment.take() else {
            return Ok(());
        };
        match defragment.take_place_of(&*self.file, &self.name)? {
            Ok(replacement) => {
                self.db = Arc::new(replacement.db);
                self.file = replacement.file;
                if let Ok(mut size) = self.shared.size_bytes.lock() {
                    *size = replacement.size_bytes;
                }
                let read = self
                    .db
                    .begin_read()
                    .map_err(|e| fail(&self.location, "beginning a read of", e))?;
                let view = RedbView::new(read, self.db.clone(), &self.location)?;
                if let Ok(mut switched) = self.shared.switched.lock() {
                    *switched = Some((self.commits, view));
                }
                // Last: whoever waits for it may look for the view at once.
                replacement.outcome.finish(Ok(()));
                Ok(())
            }
            Err((defragment, why)) => {
                defragment.abandon(&why);
                Ok(())
            }
        }
    }

    fn abandon_defragment(&mut self, why: &str) {
        if let Some(defragment) = self.defragment.take() {
            defragment.abandon(why);
        }
    }

    /// Runs a defragment to its end at once (the simulator's engine, which has no thread).
    #[cfg(madsim)]
    fn defragment_now(&mut self) -> EngineResult<()> {
        while self.defragment.is_some() {
            self.defragment_step()?;
        }
        Ok(())
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.abandon_defragment("the engine closed");
    }
}

/// Runs the [`Committer`]: on a thread of its own, or (in the simulator) at once.
struct Flusher {
    #[cfg(not(madsim))]
    requests: Option<std::sync::mpsc::Sender<Job>>,
    #[cfg(not(madsim))]
    results: std::sync::mpsc::Receiver<Flushed>,
    #[cfg(not(madsim))]
    thread: Option<std::thread::JoinHandle<()>>,
    #[cfg(madsim)]
    committer: Committer,
    #[cfg(madsim)]
    done: Option<Flushed>,
    /// Asks that still answer "not done" (see [`Flusher::result`]).
    #[cfg(madsim)]
    asks_before_done: u32,
    #[cfg(not(madsim))]
    location: String,
}

/// In the simulator a commit is written at once but reported done only at this ask, so
/// that, as on a real disk, the store moves on while a commit is in flight and whatever
/// reads the durable view must not take the newer in-memory state for it.
#[cfg(madsim)]
const SIMULATED_COMMIT_ASKS: u32 = 2;

/// The commit thread: commits as they come, and between them, while a defragment runs,
/// its slices.
#[cfg(not(madsim))]
fn run_committer(
    mut committer: Committer,
    inbox: std::sync::mpsc::Receiver<Job>,
    outbox: std::sync::mpsc::Sender<Flushed>,
) {
    use std::sync::mpsc::TryRecvError;
    loop {
        let job = if committer.defragment.is_some() {
            match inbox.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        } else {
            match inbox.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        };
        match job {
            Some(Job::Commit { overlay, durable }) => {
                if outbox.send(committer.commit(&overlay, durable)).is_err() {
                    return;
                }
            }
            Some(Job::Defragment {
                outcome,
                slice_bytes,
            }) => committer.begin_defragment(outcome, slice_bytes),
            None => {
                if let Err(e) = committer.defragment_step() {
                    // The engine's failure: the next commit reports it.
                    committer.failure = Some(e);
                }
            }
        }
    }
}

impl Flusher {
    fn new(committer: Committer) -> Flusher {
        #[cfg(not(madsim))]
        {
            let location = committer.location.clone();
            let (requests, inbox) = std::sync::mpsc::channel::<Job>();
            let (outbox, results) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("keel-engine-commit".into())
                .spawn(move || run_committer(committer, inbox, outbox))
                .ok();
            Flusher {
                requests: Some(requests),
                results,
                thread,
                location,
            }
        }
        #[cfg(madsim)]
        Flusher {
            committer,
            done: None,
            asks_before_done: 0,
        }
    }

    fn start(&mut self, job: Job) -> EngineResult<()> {
        #[cfg(not(madsim))]
        {
            let sent = match (&self.requests, &self.thread) {
                (Some(requests), Some(_)) => requests.send(job).is_ok(),
                _ => false,
            };
            if !sent {
                return Err(fail(&self.location, "committing to", "no commit thread"));
            }
            Ok(())
        }
        #[cfg(madsim)]
        {
            match job {
                Job::Commit { overlay, durable } => {
                    self.done = Some(self.committer.commit(&overlay, durable));
                    self.asks_before_done = SIMULATED_COMMIT_ASKS - 1;
                }
                Job::Defragment {
                    outcome,
                    slice_bytes,
                } => {
                    self.committer.begin_defragment(outcome, slice_bytes);
                    self.committer.defragment_now()?;
                }
            }
            Ok(())
        }
    }

    /// The commit started last, once done; waits for it if `wait`.
    fn result(&mut self, wait: bool) -> Option<Flushed> {
        #[cfg(not(madsim))]
        {
            use std::sync::mpsc::TryRecvError;
            let ended = || {
                Err(fail(
                    &self.location,
                    "committing to",
                    "the commit thread ended",
                ))
            };
            if wait {
                return Some(self.results.recv().unwrap_or_else(|_| ended()));
            }
            match self.results.try_recv() {
                Ok(result) => Some(result),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(ended()),
            }
        }
        #[cfg(madsim)]
        {
            if !wait && self.asks_before_done > 0 {
                self.asks_before_done -= 1;
                return None;
            }
            self.done.take()
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // The file must be closed when the engine is gone (a leader's engine may take its
        // place): the thread lets go of the database when it ends.
        #[cfg(not(madsim))]
        {
            self.requests = None;
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The engine of one data dir (see the module docs).
pub struct RedbEngine {
    flusher: Flusher,
    /// A read of redb's last commit.
    base: Arc<RedbView>,
    /// The writer's commits through `base`.
    base_commits: u64,
    /// Writes since the last commit began.
    active: Overlay,
    /// Writes of the commit under way.
    frozen: Option<Arc<Overlay>>,
    /// Whether a commit is under way (`frozen`, or a synchronous one), and if so whether
    /// it is durable.
    committing: Option<bool>,
    /// Whether redb's last commit was durable.
    durable: bool,
    failure: Option<EngineError>,
    last_commit_ms: Option<u64>,
    /// The defragment last begun.
    defragmenting: Option<Defragmenting>,
    /// Bytes a defragment copies between commits.
    defragment_slice_bytes: u64,
    shared: Arc<Shared>,
    location: String,
}

impl fmt::Debug for RedbEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbEngine")
            .field("location", &self.location)
            .field("pending_bytes", &self.active.bytes)
            .field("committing", &self.frozen.is_some())
            .finish_non_exhaustive()
    }
}

impl RedbEngine {
    /// Opens the engine's file on `disk` (creating it), with a page cache of
    /// `cache_size_bytes`. A file a crash left behind opens at its last durable commit (and a
    /// defragment a crash interrupted is finished or undone first).
    pub fn open<D: Disk + Send + 'static>(
        disk: D,
        cache_size_bytes: usize,
    ) -> EngineResult<RedbEngine> {
        RedbEngine::open_file(disk, STORE_FILE, cache_size_bytes)
    }

    /// The same for the engine file `name` (a leader's engine being received).
    pub fn open_file<D: Disk + Send + 'static>(
        mut disk: D,
        name: &str,
        cache_size_bytes: usize,
    ) -> EngineResult<RedbEngine> {
        defragment::recover(&mut disk, name)
            .map_err(|e| fail(&disk.location(name), "recovering a defragment of", e))?;
        let open = open_database(disk, name, cache_size_bytes)?;
        let location = open.location;
        // Every table exists from the first commit on, so an empty store has empty tables.
        let base = write_overlay(&open.db, &Overlay::default(), true, &location)?;
        let db = Arc::new(open.db);
        let base = RedbView::new(base, db.clone(), &location)?;
        let shared = Arc::new(Shared {
            size_bytes: Mutex::new(open.size_bytes),
            switched: Mutex::new(None),
        });
        let committer = Committer {
            db,
            file: open.file,
            name: name.to_string(),
            defragment: None,
            slice_bytes: defragment::SLICE_BYTES,
            failure: None,
            shared: shared.clone(),
            cache_size_bytes,
            commits: 0,
            location: location.clone(),
        };
        Ok(RedbEngine {
            flusher: Flusher::new(committer),
            base: Arc::new(base),
            base_commits: 0,
            active: Overlay::default(),
            frozen: None,
            committing: None,
            durable: true,
            failure: None,
            last_commit_ms: None,
            defragmenting: None,
            defragment_slice_bytes: defragment::SLICE_BYTES,
            shared,
            location,
        })
    }

    /// Sets how many bytes of rows a defragment copies at a time, between commits (8 MiB
    /// unless set; tests make it small so that commits meet a copy half done).
    pub fn set_defragment_slice_bytes(&mut self, slice_bytes: u64) {
        self.defragment_slice_bytes = slice_bytes;
    }

    fn check(&self) -> EngineResult<()> {
        match &self.failure {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Takes in the result of the commit under way (waiting for it if `wait`). Returns
    /// whether none is under way any more.
    fn settle(&mut self, wait: bool) -> EngineResult<bool> {
        self.check()?;
        let Some(durable) = self.committing else {
            self.take_switched_view();
            return Ok(true);
        };
        let Some(result) = self.flusher.result(wait) else {
            return Ok(false);
        };
        self.committing = None;
        self.frozen = None;
        match result {
            Ok((view, took_ms, commits)) => {
                self.replace_base(view);
                self.base_commits = commits;
                self.durable = durable;
                if durable {
                    self.last_commit_ms = Some(took_ms);
                }
                self.take_switched_view();
                Ok(true)
            }
            Err(e) => {
                self.failure = Some(e.clone());
                Err(e)
            }
        }
    }

    /// With no commit under way, reads go to a defragmented file once it took the old
    /// one's place: its view holds what the base holds, unless a commit came after it.
    fn take_switched_view(&mut self) {
        let switched = match self.shared.switched.lock() {
            Ok(mut switched) => switched.take(),
            Err(_) => None,
        };
        if let Some((commits, view)) = switched {
            if commits >= self.base_commits {
                self.replace_base(view);
                self.base_commits = commits;
            }
        }
    }

    /// Reads go to `view` from now on. A base of another database (the file a defragment
    /// replaced) is let go of on a thread of its own: its last view closes the database,
    /// which writes redb's allocator state and syncs, and removes the file, gigabytes to
    /// unlink. On the caller's thread that held a loaded server loop for 750 ms.
    fn replace_base(&mut self, view: RedbView) {
        let old = std::mem::replace(&mut self.base, Arc::new(view));
        if Arc::ptr_eq(&old.db, &self.base.db) {
            return;
        }
        #[cfg(not(madsim))]
        {
            // If no thread can be had, the caller lets go of it after all.
            let _ = std::thread::Builder::new()
                .name("keel-engine-close".into())
                .spawn(move || drop(old));
        }
        #[cfg(madsim)]
        drop(old);
    }

    /// Hands `overlay` to the writer.
    fn start_commit(&mut self, overlay: Arc<Overlay>, durable: bool) -> EngineResult<()> {
        if let Err(e) = self.flusher.start(Job::Commit { overlay, durable }) {
            self.failure = Some(e.clone());
            return Err(e);
        }
        self.committing = Some(durable);
        Ok(())
    }
}

impl Read for RedbEngine {
    fn get(&self, table: Table, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        self.check()?;
        for overlay in [Some(&self.active), self.frozen.as_deref()]
            .into_iter()
            .flatten()
        {
            match overlay.find(table, key) {
                Found::Written(value) => return Ok(Some(value.to_vec())),
                Found::Deleted => return Ok(None),
                Found::NotHere => {}
            }
        }
        self.base.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> EngineResult<()> {
        self.check()?;
        let merged = Merged::new(
            Some(&self.active),
            self.frozen.as_deref(),
            table,
            from,
            to,
            reverse,
        );
        scan_merged(&*self.base, merged, table, from, to, visit)
    }
}

impl Engine for RedbEngine {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> EngineResult<()> {
        self.check()?;
        self.active.write(table, key, Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> EngineResult<()> {
        self.check()?;
        self.active.write(table, key, None);
        Ok(())
    }

    fn commit(&mut self, durable: bool) -> EngineResult<()> {
        self.settle(true)?;
        if self.active.is_empty() && (self.durable || !durable) {
            return Ok(());
        }
        let overlay = Arc::new(mem::take(&mut self.active));
        self.start_commit(overlay, durable)?;
        self.settle(true).map(drop)
    }

    fn begin_commit(&mut self) -> EngineResult<()> {
        self.settle(true)?;
        if self.active.is_empty() && self.durable {
            return Ok(());
        }
        let overlay = Arc::new(mem::take(&mut self.active));
        self.frozen = Some(overlay.clone());
        self.start_commit(overlay, true)
    }

    fn commit_done(&mut self) -> EngineResult<bool> {
        self.settle(false)
    }

    fn last_commit_ms(&self) -> Option<u64> {
        self.last_commit_ms
    }

    fn view(&self) -> EngineResult<Arc<dyn View>> {
        self.check()?;
        Ok(self.base.clone())
    }

    /// The file's size; what of it is in use is not known without walking every tree,
    /// so it is reported as the whole file.
    fn size_on_disk(&self) -> (u64, u64) {
        let size = self.shared.size_bytes();
        (size, size)
    }

    /// See `defragment.rs`. A defragment under way is joined.
    fn begin_defragment(&mut self) -> EngineResult<Defragmenting> {
        self.check()?;
        if let Some(running) = &self.defragmenting {
            if running.outcome().is_none() {
                return Ok(running.clone());
            }
        }
        let outcome = Defragmenting::pending();
        self.defragmenting = Some(outcome.clone());
        let job = Job::Defragment {
            outcome: outcome.clone(),
            slice_bytes: self.defragment_slice_bytes,
        };
        if let Err(e) = self.flusher.start(job) {
            self.failure = Some(e.clone());
            return Err(e);
        }
        Ok(outcome)
    }
}

/// A read of one commit of a [`RedbEngine`], usable from any thread. Its tables are opened
/// once (a lookup in redb's table tree each).
pub struct RedbView {
    tables: Vec<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    /// Kept open while the view lives (after the tables: dropped after them), so a file a
    /// defragment replaced closes when its last view goes.
    db: Arc<Database>,
    location: String,
}

impl RedbView {
    fn new(txn: ReadTransaction, db: Arc<Database>, location: &str) -> EngineResult<RedbView> {
        let tables = Table::ALL
            .iter()
            .map(|&table| txn.open_table(definition(table)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(location, "opening the tables of", e))?;
        Ok(RedbView {
            tables,
            db,
            location: location.to_string(),
        })
    }

    fn table(&self, table: Table) -> &redb::ReadOnlyTable<&'static [u8], &'static [u8]> {
        &self.tables[table as usize]
    }
}

impl fmt::Debug for RedbView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbView")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Read for RedbView {
    fn get(&self, table: Table, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        let value = self
            .table(table)
            .get(key)
            .map_err(|e| fail(&self.location, "reading", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> EngineResult<()> {
        if empty_range(from, to) {
            return Ok(());
        }
        let range = self
            .table(table)
            .range((from, to))
            .map_err(|e| fail(&self.location, "reading", e))?;
        let mut step = |row: Result<_, redb::StorageError>| -> EngineResult<bool> {
            let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
                row.map_err(|e| fail(&self.location, "reading", e))?;
            Ok(visit(k.value(), v.value()))
        };
        if reverse {
            for row in range.rev() {
                if !step(row)? {
                    break;
                }
            }
        } else {
            for row in range {
                if !step(row)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl View for RedbView {}
