//! Writing a whole engine file from rows that arrive in key order (a leader's engine,
//! streamed to a follower): straight into redb, in large transactions that are not synced
//! one by one, and one durable commit at the end. Nothing of it counts before that commit:
//! a crash leaves a file the caller removes (it is a staging file until renamed).

use keel_core::mvcc::{EngineResult, Table};
use redb::{Database, WriteTransaction};

use super::{commit_txn, definition, fail, open_database, write_overlay, OpenDatabase, Overlay};
use crate::disk::Disk;

/// Rows written since the last commit before the next one (bounds redb's dirty pages).
const COMMIT_EVERY_BYTES: u64 = 64 * 1024 * 1024;

/// A new engine file being filled (see the module docs).
pub struct BulkWriter {
    db: Database,
    txn: Option<WriteTransaction>,
    uncommitted_bytes: u64,
    location: String,
}

impl std::fmt::Debug for BulkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkWriter")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl BulkWriter {
    /// Creates the engine file `name` on `disk`, every table empty.
    pub fn create<D: Disk>(disk: D, name: &str, cache_size_bytes: usize) -> EngineResult<Self> {
        let OpenDatabase { db, location, .. } = open_database(disk, name, cache_size_bytes)?;
        write_overlay(&db, &Overlay::default(), false, &location)?;
        Ok(BulkWriter {
            db,
            txn: None,
            uncommitted_bytes: 0,
            location,
        })
    }

    /// Writes `rows` of `table`, each key after the one before.
    pub fn write(&mut self, table: Table, rows: &[(&[u8], &[u8])]) -> EngineResult<()> {
        let txn = match self.txn.take() {
            Some(txn) => txn,
            None => self
                .db
                .begin_write()
                .map_err(|e| fail(&self.location, "beginning a transaction on", e))?,
        };
        {
            let mut open = txn
                .open_table(definition(table))
                .map_err(|e| fail(&self.location, "opening a table of", e))?;
            for (key, value) in rows {
                open.insert(*key, *value)
                    .map_err(|e| fail(&self.location, "writing", e))?;
                self.uncommitted_bytes += (key.len() + value.len()) as u64;
            }
        }
        self.txn = Some(txn);
        if self.uncommitted_bytes >= COMMIT_EVERY_BYTES {
            self.commit(false)?;
        }
        Ok(())
    }

    fn commit(&mut self, durable: bool) -> EngineResult<()> {
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        commit_txn(txn, durable, &self.location)?;
        self.uncommitted_bytes = 0;
        Ok(())
    }

    /// Commits everything durably; the file is whole once this returns.
    pub fn finish(mut self) -> EngineResult<()> {
        if self.txn.is_none() {
            self.txn = Some(
                self.db
                    .begin_write()
                    .map_err(|e| fail(&self.location, "beginning a transaction on", e))?,
            );
        }
        self.commit(true)
    }
}
