//! An online defragment: the engine's file rewritten without its free pages while reads and
//! commits go on (etcd's stops the world, etcd#9222).
//!
//! The engine's writer (its commit thread) copies the tables into a new file in key order, a
//! slice at a time, between commits. Every commit is written to the old file as always and,
//! for the rows the copy has already passed, to the new one too (without a sync), so once the
//! last slice is copied the two files hold the same rows. Then the copy is committed durably
//! and takes the old file's place by renames, each followed by a sync of the directory:
//!
//! 1. `<name>.defrag` → `<name>.next`: the copy is whole;
//! 2. `<name>` → `<name>.old.<n>` (the first free n): views of the old file go on reading it
//!    under that name, and it is removed once the last of them is gone;
//! 3. `<name>.next` → `<name>`.
//!
//! Opening the engine ([`recover`]) finishes or undoes what a crash interrupted: a `.next`
//! takes the place of `<name>` (it holds every commit the old file holds, since no commit
//! reached the old file alone after step 1); `.defrag` and `.old.<n>` are removed. A failure
//! before step 1 (no room for the copy, say) abandons the copy and leaves the engine as it
//! was; a failed rename is the engine's failure, as a failed commit is.

use std::io;
use std::ops::Bound;
use std::sync::Arc;

use keel_core::mvcc::{Defragmenting, EngineResult, Table};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::backend::EngineFile;
use super::{commit_txn, definition, fail, write_rows, Overlay};
use crate::disk::Disk;

/// Bytes of rows copied per slice: the slice holds redb's write lock, so a commit waits for
/// at most one.
pub(super) const SLICE_BYTES: u64 = 8 * 1024 * 1024;

/// The copy under construction.
pub(super) const COPY_SUFFIX: &str = ".defrag";
/// The copy, whole, about to take the file's place.
pub(super) const NEXT_SUFFIX: &str = ".next";
/// The file the copy replaced, while views of it remain (`<name>.old.1`, `.old.2`, … when
/// the views of an earlier one are still reading it).
pub(super) const OLD_SUFFIX: &str = ".old.";

/// Finishes or undoes a defragment of `name` a crash interrupted (see the module docs).
pub(super) fn recover<D: Disk>(disk: &mut D, name: &str) -> io::Result<()> {
    let files = disk.list()?;
    let mut changed = false;
    let next = format!("{name}{NEXT_SUFFIX}");
    if files.contains(&next) {
        disk.rename(&next, name)?;
        changed = true;
    }
    let (copy, old) = (
        format!("{name}{COPY_SUFFIX}"),
        format!("{name}{OLD_SUFFIX}"),
    );
    for file in files.iter().filter(|f| **f == copy || f.starts_with(&old)) {
        disk.remove(file)?;
        changed = true;
    }
    if changed {
        disk.sync_dir()?;
    }
    Ok(())
}

/// A new file being filled from the engine's (see the module docs).
pub(super) struct Defragment {
    db: Database,
    file: Arc<dyn EngineFile>,
    size_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// The table being copied (an index into `Table::ALL`; past the end once all are).
    table: usize,
    /// The last key of that table copied so far.
    last_key: Option<Vec<u8>>,
    pub(super) outcome: Defragmenting,
    location: String,
}

impl Defragment {
    /// Creates the copy next to `file` (called `name`), empty.
    pub(super) fn begin(
        file: &dyn EngineFile,
        name: &str,
        cache_size_bytes: usize,
        outcome: Defragmenting,
    ) -> EngineResult<Defragment> {
        let copy_name = format!("{name}{COPY_SUFFIX}");
        let open = file.create_sibling(&copy_name, cache_size_bytes)?;
        Ok(Defragment {
            db: open.db,
            file: open.file,
            size_bytes: open.size_bytes,
            table: 0,
            last_key: None,
            outcome,
            location: open.location,
        })
    }

    /// Whether the copy holds the row `key` of `table` already: a commit writes it there too.
    fn passed(&self, table: Table, key: &[u8]) -> bool {
        let index = table as usize;
        index < self.table
            || (index == self.table && self.last_key.as_deref().is_some_and(|last| key <= last))
    }

    /// Writes the rows of `overlay` the copy has passed (see the module docs).
    pub(super) fn write_passed(&self, overlay: &Overlay) -> EngineResult<()> {
        write_rows(&self.db, overlay, false, &self.location, &|table, key| {
            self.passed(table, key)
        })
    }

    /// Whether every table has been copied.
    pub(super) fn copied_all(&self) -> bool {
        self.table >= Table::ALL.len()
    }

    /// Copies the next `limit_bytes` of rows from `from` (the engine's file, as last
    /// committed).
    pub(super) fn copy_slice(&mut self, from: &Database, limit_bytes: u64) -> EngineResult<()> {
        let read = from
            .begin_read()
            .map_err(|e| fail(&self.location, "reading the engine for", e))?;
        let txn = self
            .db
            .begin_write()
            .map_err(|e| fail(&self.location, "beginning a transaction on", e))?;
        let mut copied_bytes = 0u64;
        while !self.copied_all() && copied_bytes < limit_bytes {
            let table = Table::ALL[self.table];
            let source = read
                .open_table(definition(table))
                .map_err(|e| fail(&self.location, "reading the engine for", e))?;
            let mut target = txn
                .open_table(definition(table))
                .map_err(|e| fail(&self.location, "opening a table of", e))?;
            let from_key = match &self.last_key {
                Some(last) => Bound::Excluded(last.as_slice()),
                None => Bound::Unbounded,
            };
            let rows = source
                .range((from_key, Bound::<&[u8]>::Unbounded))
                .map_err(|e| fail(&self.location, "reading the engine for", e))?;
            let mut last = None;
            let mut ended = true;
            for row in rows {
                let (key, value) =
                    row.map_err(|e| fail(&self.location, "reading the engine for", e))?;
                target
                    .insert(key.value(), value.value())
                    .map_err(|e| fail(&self.location, "writing", e))?;
                copied_bytes += (key.value().len() + value.value().len()) as u64;
                if copied_bytes >= limit_bytes {
                    last = Some(key.value().to_vec());
                    ended = false;
                    break;
                }
            }
            if ended {
                self.table += 1;
                self.last_key = None;
            } else {
                self.last_key = last;
            }
        }
        commit_txn(txn, false, &self.location)
    }

    /// Makes the copy durable and puts it in place of `file` (called `name`): steps 1–3 of
    /// the module docs. Returns the copy's database, handle and size. An error before the
    /// first rename leaves the engine as it was (`Ok(Err)`); after it, it is the engine's.
    pub(super) fn take_place_of(
        self,
        file: &dyn EngineFile,
        name: &str,
    ) -> EngineResult<Result<Replacement, (Defragment, String)>> {
        let durable = self
            .db
            .begin_write()
            .map_err(|e| fail(&self.location, "beginning a transaction on", e))
            .and_then(|txn| commit_txn(txn, true, &self.location));
        if let Err(e) = durable {
            return Ok(Err((self, e.0)));
        }
        let next = format!("{name}{NEXT_SUFFIX}");
        if let Err(e) = self.file.rename(&next) {
            let why = format!("renaming {} to {next}: {e}", self.location);
            return Ok(Err((self, why)));
        }
        let renamed = |what: &str, e: io::Error| {
            let error = fail(name, what, e);
            self.outcome.finish(Err(error.0.clone()));
            error
        };
        file.rename_aside(&format!("{name}{OLD_SUFFIX}"))
            .map_err(|e| renamed("setting aside the defragmented", e))?;
        file.remove_when_closed();
        self.file
            .rename(name)
            .map_err(|e| renamed("putting the defragmented copy in place of", e))?;
        Ok(Ok(Replacement {
            db: self.db,
            file: self.file.clone(),
            size_bytes: self.size_bytes.clone(),
            outcome: self.outcome.clone(),
        }))
    }

    /// Gives up: the copy is removed and the outcome says why.
    pub(super) fn abandon(self, why: &str) {
        self.outcome.finish(Err(format!(
            "defragment of {} abandoned: {why}",
            self.location
        )));
        self.file.remove_when_closed();
    }
}

/// The copy, in place of the engine's file.
pub(super) struct Replacement {
    pub db: Database,
    pub file: Arc<dyn EngineFile>,
    pub size_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// To be finished once the engine can see the copy.
    pub outcome: Defragmenting,
}
