//! The store's engine on disk: redb (crash-safe copy-on-write B-trees) in one file of the
//! data dir, reached through the [`Disk`] trait, so the simulator's disk faults reach it as
//! they reach the WAL.
//!
//! [`RedbEngine`] implements `keel_core::mvcc::Engine`: one write transaction is always open;
//! the store reads and writes through it (reads see its own writes) and
//! [`Engine::commit`] ends it. A durable commit is on disk when it returns (redb's two-phase
//! commit with quick repair: reopening after a crash needs no walk of the whole file); a
//! non-durable one is visible to views only, and is lost by a crash unless a durable commit
//! follows. What a crash keeps is therefore exactly the last durable commit: the server
//! replays the Raft log after the applied index written in it.
//!
//! Errors: the first error latches (see `Store::failure`); redb itself is of no further use
//! after a failed commit, so the node stops and recovers on restart.

use std::fmt;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keel_core::mvcc::{Engine, EngineError, EngineResult, Read, Table, View, Visit};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition, WriteTransaction,
};

use crate::disk::Disk;

/// The engine's file in the data dir.
pub const STORE_FILE: &str = "store.redb";

/// The engine's page cache unless configured (`--engine-cache-size-bytes`).
pub const DEFAULT_ENGINE_CACHE_SIZE_BYTES: usize = 256 * 1024 * 1024;

/// One file of a [`Disk`] as redb's storage. The disk is behind a mutex: redb may call from
/// several threads (a view read while the store writes).
pub struct DiskBackend<D: Disk> {
    disk: Mutex<D>,
    name: String,
    /// The file's size as last set or seen, for [`Engine::size_on_disk`] without IO.
    size_bytes: Arc<AtomicU64>,
}

impl<D: Disk> DiskBackend<D> {
    /// The file `name` on `disk`, created (durably) if missing.
    pub fn open(mut disk: D, name: &str) -> io::Result<Self> {
        if !disk.list()?.iter().any(|n| n == name) {
            disk.create(name)?;
            disk.sync_dir()?;
        }
        let size_bytes = Arc::new(AtomicU64::new(disk.size_bytes(name)?));
        Ok(DiskBackend {
            disk: Mutex::new(disk),
            name: name.to_string(),
            size_bytes,
        })
    }

    fn with_disk<T>(&self, op: impl FnOnce(&mut D, &str) -> io::Result<T>) -> io::Result<T> {
        let mut disk = self
            .disk
            .lock()
            .map_err(|_| io::Error::other("the disk's lock is poisoned"))?;
        op(&mut disk, &self.name)
    }
}

impl<D: Disk> fmt::Debug for DiskBackend<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskBackend")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<D: Disk + Send + 'static> StorageBackend for DiskBackend<D> {
    fn len(&self) -> Result<u64, redb::BackendError> {
        let len = self.with_disk(|disk, name| disk.size_bytes(name))?;
        self.size_bytes.store(len, Ordering::Relaxed);
        Ok(len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), redb::BackendError> {
        Ok(self.with_disk(|disk, name| disk.read_at(name, offset, out))?)
    }

    fn set_len(&self, len: u64) -> Result<(), redb::BackendError> {
        self.with_disk(|disk, name| disk.set_size(name, len))?;
        self.size_bytes.store(len, Ordering::Relaxed);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), redb::BackendError> {
        Ok(self.with_disk(|disk, name| disk.sync(name))?)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), redb::BackendError> {
        self.with_disk(|disk, name| disk.write_at(name, offset, data))?;
        self.size_bytes
            .fetch_max(offset + data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

type RowTable = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn definition(table: Table) -> RowTable {
    TableDefinition::new(table.name())
}

/// Every table of a write transaction, open, in [`Table::ALL`] order: opening a table
/// looks it up in redb's table tree and closing it writes its root back, too dear per row.
struct OpenTables<'txn>(Vec<redb::Table<'txn, &'static [u8], &'static [u8]>>);

impl<'txn> OpenTables<'txn> {
    fn get(&self, table: Table) -> &redb::Table<'txn, &'static [u8], &'static [u8]> {
        &self.0[table as usize]
    }

    fn get_mut(&mut self, table: Table) -> &mut redb::Table<'txn, &'static [u8], &'static [u8]> {
        &mut self.0[table as usize]
    }
}

self_cell::self_cell!(
    /// A write transaction with its tables open.
    struct OpenTxn {
        owner: WriteTransaction,
        #[not_covariant]
        dependent: OpenTables,
    }
);

/// The engine of one data dir (see the module docs).
pub struct RedbEngine {
    db: Database,
    /// The file's size (see [`DiskBackend`]).
    size_bytes: Arc<AtomicU64>,
    /// Always open, except after a failure.
    txn: Option<OpenTxn>,
    /// Where the file is, for messages.
    location: String,
}

impl fmt::Debug for RedbEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbEngine")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// An engine error naming the file.
fn fail(location: &str, what: &str, error: impl fmt::Display) -> EngineError {
    EngineError(format!("{what} {location}: {error}"))
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
        let mut engine = RedbEngine {
            db,
            size_bytes,
            txn: None,
            location,
        };
        // The first transaction creates every table, so an empty store has empty tables.
        engine.begin()?;
        engine.commit(true)?;
        Ok(engine)
    }

    fn begin(&mut self) -> EngineResult<()> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| fail(&self.location, "beginning a transaction on", e))?;
        debug_assert!(Table::ALL.iter().enumerate().all(|(i, t)| *t as usize == i));
        let open = OpenTxn::try_new(txn, |txn| {
            let tables = Table::ALL
                .iter()
                .map(|&table| txn.open_table(definition(table)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, redb::TableError>(OpenTables(tables))
        })
        .map_err(|e| fail(&self.location, "opening the tables of", e))?;
        self.txn = Some(open);
        Ok(())
    }

    fn open_txn(&self) -> EngineResult<&OpenTxn> {
        self.txn.as_ref().ok_or_else(|| self.closed())
    }

    fn closed(&self) -> EngineError {
        EngineError(format!("{} is closed after a failure", self.location))
    }
}

/// Rows in `[from, to)` of an open table, in order or reversed.
fn scan_table<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    from: Bound<&[u8]>,
    to: Bound<&[u8]>,
    reverse: bool,
    visit: Visit<'_>,
    location: &str,
) -> EngineResult<()> {
    if empty_range(from, to) {
        return Ok(());
    }
    let range = table
        .range((from, to))
        .map_err(|e| fail(location, "reading", e))?;
    let mut step = |row: Result<_, redb::StorageError>| -> EngineResult<bool> {
        let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
            row.map_err(|e| fail(location, "reading", e))?;
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

/// Whether `[from, to)` holds no key at all (inverted, or one excluded point).
fn empty_range(from: Bound<&[u8]>, to: Bound<&[u8]>) -> bool {
    match (from, to) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a >= b
        }
        _ => false,
    }
}

impl Read for RedbEngine {
    fn get(&self, table: Table, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        self.open_txn()?.with_dependent(|_, tables| {
            let value = tables
                .get(table)
                .get(key)
                .map_err(|e| fail(&self.location, "reading", e))?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> EngineResult<()> {
        self.open_txn()?.with_dependent(|_, tables| {
            scan_table(tables.get(table), from, to, reverse, visit, &self.location)
        })
    }
}

impl Engine for RedbEngine {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> EngineResult<()> {
        let location = &self.location;
        let txn = self
            .txn
            .as_mut()
            .ok_or_else(|| EngineError(format!("{location} is closed")))?;
        txn.with_dependent_mut(|_, tables| {
            tables
                .get_mut(table)
                .insert(key, value)
                .map_err(|e| fail(location, "writing", e))?;
            Ok(())
        })
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> EngineResult<()> {
        let location = &self.location;
        let txn = self
            .txn
            .as_mut()
            .ok_or_else(|| EngineError(format!("{location} is closed")))?;
        txn.with_dependent_mut(|_, tables| {
            tables
                .get_mut(table)
                .remove(key)
                .map_err(|e| fail(location, "writing", e))?;
            Ok(())
        })
    }

    fn commit(&mut self, durable: bool) -> EngineResult<()> {
        let Some(open) = self.txn.take() else {
            return Err(self.closed());
        };
        let mut txn = open.into_owner();
        let durability = if durable {
            txn.set_quick_repair(true);
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability)
            .map_err(|e| fail(&self.location, "committing to", e))?;
        txn.commit()
            .map_err(|e| fail(&self.location, "committing to", e))?;
        self.begin()
    }

    fn view(&self) -> EngineResult<Arc<dyn View>> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| fail(&self.location, "beginning a read of", e))?;
        Ok(Arc::new(RedbView {
            txn,
            location: self.location.clone(),
        }))
    }

    /// The file's size; what of it is in use is not known without walking every tree,
    /// so it is reported as the whole file.
    fn size_on_disk(&self) -> (u64, u64) {
        let size = self.size_bytes.load(Ordering::Relaxed);
        (size, size)
    }
}

/// A read of one commit of a [`RedbEngine`], usable from any thread.
pub struct RedbView {
    txn: ReadTransaction,
    location: String,
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
        let table = self
            .txn
            .open_table(definition(table))
            .map_err(|e| fail(&self.location, "opening a table of", e))?;
        let value = table
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
        let table = self
            .txn
            .open_table(definition(table))
            .map_err(|e| fail(&self.location, "opening a table of", e))?;
        scan_table(&table, from, to, reverse, visit, &self.location)
    }
}

impl View for RedbView {}
