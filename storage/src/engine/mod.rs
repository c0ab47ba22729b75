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

use std::fmt;
use std::mem;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use keel_core::mvcc::{Engine, EngineError, EngineResult, Read, Table, View, Visit};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

pub use backend::DiskBackend;
pub use bulk::BulkWriter;
use keel_core::mvcc::overlay::{empty_range, scan_merged, Found, Merged, Overlay};

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

/// Writes `overlay` into redb in one transaction and returns a read of the result.
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
        let mut rows = txn
            .open_table(definition(table))
            .map_err(|e| fail(location, "opening a table of", e))?;
        for (key, pending) in overlay.table(table) {
            match pending {
                Some(value) => rows.insert(key.as_slice(), value.as_slice()).map(drop),
                None => rows.remove(key.as_slice()).map(drop),
            }
            .map_err(|e| fail(location, "writing", e))?;
        }
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

/// A frozen overlay on its way into redb, durably.
struct Flush {
    overlay: Arc<Overlay>,
}

/// What a flush gives back: a read of redb with it, and how long it took.
type Flushed = EngineResult<(ReadTransaction, u64)>;

/// Runs durable commits: on a thread of its own, or (in the simulator) at once.
struct Flusher {
    #[cfg(not(madsim))]
    requests: Option<std::sync::mpsc::Sender<Flush>>,
    #[cfg(not(madsim))]
    results: std::sync::mpsc::Receiver<Flushed>,
    #[cfg(not(madsim))]
    thread: Option<std::thread::JoinHandle<()>>,
    #[cfg(madsim)]
    done: Option<Flushed>,
    db: Arc<Database>,
    location: String,
}

fn flush(db: &Database, request: &Flush, location: &str) -> Flushed {
    let started = Instant::now();
    let read = write_overlay(db, &request.overlay, true, location)?;
    Ok((read, started.elapsed().as_millis() as u64))
}

impl Flusher {
    fn new(db: Arc<Database>, location: String) -> Flusher {
        #[cfg(not(madsim))]
        {
            let (requests, inbox) = std::sync::mpsc::channel::<Flush>();
            let (outbox, results) = std::sync::mpsc::channel();
            let (thread_db, thread_location) = (db.clone(), location.clone());
            let thread = std::thread::Builder::new()
                .name("keel-engine-commit".into())
                .spawn(move || {
                    for request in inbox {
                        let result = flush(&thread_db, &request, &thread_location);
                        if outbox.send(result).is_err() {
                            return;
                        }
                    }
                })
                .ok();
            Flusher {
                requests: Some(requests),
                results,
                thread,
                db,
                location,
            }
        }
        #[cfg(madsim)]
        Flusher {
            done: None,
            db,
            location,
        }
    }

    fn start(&mut self, request: Flush) -> EngineResult<()> {
        #[cfg(not(madsim))]
        {
            let sent = match (&self.requests, &self.thread) {
                (Some(requests), Some(_)) => requests.send(request).is_ok(),
                _ => false,
            };
            if !sent {
                return Err(fail(&self.location, "committing to", "no commit thread"));
            }
            Ok(())
        }
        #[cfg(madsim)]
        {
            self.done = Some(flush(&self.db, &request, &self.location));
            Ok(())
        }
    }

    /// The flush started last, once done; waits for it if `wait`.
    fn result(&mut self, wait: bool) -> Option<Flushed> {
        #[cfg(not(madsim))]
        {
            use std::sync::mpsc::TryRecvError;
            if wait {
                return Some(self.results.recv().unwrap_or_else(|_| {
                    Err(fail(
                        &self.location,
                        "committing to",
                        "the commit thread ended",
                    ))
                }));
            }
            match self.results.try_recv() {
                Ok(result) => Some(result),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err(fail(
                    &self.location,
                    "committing to",
                    "the commit thread ended",
                ))),
            }
        }
        #[cfg(madsim)]
        {
            let _ = wait;
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
    /// Writes since the last commit began.
    active: Overlay,
    /// Writes of the commit under way.
    frozen: Option<Arc<Overlay>>,
    /// Whether redb's last commit was durable.
    durable: bool,
    failure: Option<EngineError>,
    last_commit_ms: Option<u64>,
    size_bytes: Arc<AtomicU64>,
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
    /// `cache_size_bytes`. A file a crash left behind opens at its last durable commit.
    pub fn open<D: Disk + Send + 'static>(
        disk: D,
        cache_size_bytes: usize,
    ) -> EngineResult<RedbEngine> {
        RedbEngine::open_file(disk, STORE_FILE, cache_size_bytes)
    }

    /// The same for the engine file `name` (a leader's engine being received).
    pub fn open_file<D: Disk + Send + 'static>(
        disk: D,
        name: &str,
        cache_size_bytes: usize,
    ) -> EngineResult<RedbEngine> {
        let location = disk.location(name);
        let backend = DiskBackend::open(disk, name).map_err(|e| fail(&location, "creating", e))?;
        let size_bytes = backend.size_bytes.clone();
        let db = Database::builder()
            .set_cache_size(cache_size_bytes)
            .create_with_backend(backend)
            .map_err(|e| fail(&location, "opening", e))?;
        // Every table exists from the first commit on, so an empty store has empty tables.
        let base = write_overlay(&db, &Overlay::default(), true, &location)?;
        let db = Arc::new(db);
        Ok(RedbEngine {
            flusher: Flusher::new(db, location.clone()),
            base: Arc::new(RedbView::new(base, &location)?),
            active: Overlay::default(),
            frozen: None,
            durable: true,
            failure: None,
            last_commit_ms: None,
            size_bytes,
            location,
        })
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
        if self.frozen.is_none() {
            return Ok(true);
        }
        let Some(result) = self.flusher.result(wait) else {
            return Ok(false);
        };
        match result {
            Ok((read, took_ms)) => {
                self.base = Arc::new(RedbView::new(read, &self.location)?);
                self.frozen = None;
                self.durable = true;
                self.last_commit_ms = Some(took_ms);
                Ok(true)
            }
            Err(e) => {
                self.failure = Some(e.clone());
                Err(e)
            }
        }
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
        let overlay = mem::take(&mut self.active);
        let started = Instant::now();
        let result = write_overlay(&self.flusher.db, &overlay, durable, &self.location);
        match result {
            Ok(read) => {
                self.base = Arc::new(RedbView::new(read, &self.location)?);
                self.durable = durable;
                if durable {
                    self.last_commit_ms = Some(started.elapsed().as_millis() as u64);
                }
                Ok(())
            }
            Err(e) => {
                self.failure = Some(e.clone());
                Err(e)
            }
        }
    }

    fn begin_commit(&mut self) -> EngineResult<()> {
        self.settle(true)?;
        if self.active.is_empty() && self.durable {
            return Ok(());
        }
        let overlay = Arc::new(mem::take(&mut self.active));
        self.frozen = Some(overlay.clone());
        if let Err(e) = self.flusher.start(Flush { overlay }) {
            self.failure = Some(e.clone());
            return Err(e);
        }
        Ok(())
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
        let size = self.size_bytes.load(Ordering::Relaxed);
        (size, size)
    }
}

/// A read of one commit of a [`RedbEngine`], usable from any thread. Its tables are opened
/// once (a lookup in redb's table tree each).
pub struct RedbView {
    tables: Vec<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    location: String,
}

impl RedbView {
    fn new(txn: ReadTransaction, location: &str) -> EngineResult<RedbView> {
        let tables = Table::ALL
            .iter()
            .map(|&table| txn.open_table(definition(table)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(location, "opening the tables of", e))?;
        Ok(RedbView {
            tables,
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
