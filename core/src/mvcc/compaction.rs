//! Compaction. Logically it completes at once: the compact revision moves, reads and
//! watches below it get `ErrCompacted`, and the size estimate drops by what became
//! unreachable (known exactly from the garbage rows, see `rows.rs`). Physically, history
//! is dropped in bounded steps ([`Store::compaction_step`]) that walk the history log from
//! its oldest end, so a large compaction never stalls applying. Nothing observable depends
//! on how far the physical steps got.

use std::collections::BTreeSet;
use std::ops::Bound;

use super::engine::Table;
use super::error::Error;
use super::request::{CompactionRequest, CompactionResponse, ResponseHeader};
use super::revision::Revision;
use super::rows::{corrupt_row, header_is_tombstone, key_prefix, kv_key, revision_bytes};
use super::store::Store;

/// Where physical compaction stands. Local to this member, not persisted: after a restart
/// the first step looks again.
#[derive(Debug, Default)]
pub(super) struct PhysicalCompaction {
    /// The compact revision physical compaction last finished at.
    compacted_through: Option<i64>,
    /// The history log's first row physical compaction has not processed (every row before
    /// it is deleted).
    cursor: Revision,
    /// Deletions made since the engine's last commit began: a defragment queued now would
    /// copy the rows they delete.
    uncommitted: bool,
}

impl Store {
    pub(crate) fn apply_compaction(
        &mut self,
        request: &CompactionRequest,
    ) -> Result<CompactionResponse, Error> {
        if request.revision <= self.compact_revision() {
            return Err(Error::Compacted);
        }
        if request.revision > self.current_revision() {
            return Err(Error::FutureRev);
        }
        self.compact_to(request.revision);
        // Bounded: a row per 1,024 revisions and at most 1,024 more (see `garbage.rs`).
        let freed = self.drain_garbage(request.revision);
        debug_assert!(
            freed <= self.usage.size_bytes(),
            "freed more than the store holds"
        );
        self.usage.free_bytes(freed);
        Ok(CompactionResponse {
            header: ResponseHeader::at(self.current_revision()),
        })
    }

    /// Whether physical compaction is behind the compact revision (a quiet server moves it
    /// on with [`Store::compaction_step`] and engine commits, which move the index revision
    /// it may be waiting for).
    pub fn compaction_behind(&self) -> bool {
        self.failure().is_none()
            && self.compact_revision() > 0
            && self.physical_compaction.compacted_through != Some(self.compact_revision())
    }

    /// Whether the history below the compact revision has left the engine: dropped, and
    /// the engine's next commit begun with the deletions (`Compact` with `physical` waits
    /// for it, so that a defragment after it copies none of that history).
    pub fn compacted_physically(&self) -> bool {
        !self.compaction_behind() && !self.physical_compaction.uncommitted
    }

    /// The engine's commit has taken the writes so far (see [`Store::compacted_physically`]).
    pub(super) fn compaction_committed(&mut self) {
        self.physical_compaction.uncommitted = false;
    }

    /// Drops unreachable history for up to `max_revisions` entries of the history log.
    /// Returns true while work remains. [`Store::apply`] calls it after every entry; a
    /// server may call it more when idle.
    pub fn compaction_step(&mut self, max_revisions: usize) -> bool {
        // Nothing to do until the compact revision moves past what was last processed.
        let target = self.physical_compact_rev();
        if self.failure().is_some() || self.physical_compaction.compacted_through == Some(target) {
            return false;
        }
        let max_revisions = max_revisions.max(1);
        // Entries at the compact revision stay: a watch may start there.
        let mut batch = Vec::new();
        let mut more = false;
        // From where the last step stopped: the log rows before it are deleted, and a scan
        // from the start would walk past every deletion not yet committed, each step.
        self.scan_log(self.physical_compaction.cursor, &mut |rev, _, key| {
            if rev.main >= target {
                return false;
            }
            if batch.len() == max_revisions {
                more = true;
                return false;
            }
            batch.push((rev, key.to_vec()));
            true
        });
        if let Some((last, _)) = batch.last() {
            self.physical_compaction.cursor = Revision::new(last.main, last.sub + 1);
        }
        if !more {
            more = self.drop_stale_garbage(target, max_revisions);
        }
        let mut keys = BTreeSet::new();
        self.physical_compaction.uncommitted |= !batch.is_empty();
        for (rev, key) in batch {
            self.delete_row(Table::Log, &revision_bytes(rev));
            keys.insert(key);
        }
        for key in keys {
            self.compact_key(&key, target);
        }
        if !more {
            self.physical_compaction.compacted_through = Some(target);
        }
        more
    }

    /// Deletes the versions of `key` that compaction at the compact revision makes
    /// unreachable (see `key_index::logical_entries`); a key left with none is gone.
    fn compact_key(&mut self, key: &[u8], target: i64) {
        let from = key_prefix(key);
        let through = kv_key(key, Revision::new(target, i64::MAX));
        // (row, is a tombstone) of every version at or before the compact revision.
        let mut rows: Vec<(Vec<u8>, bool)> = Vec::new();
        self.scan_rows(
            Table::Kv,
            Bound::Included(&from),
            Bound::Included(&through),
            false,
            &mut |row, value| {
                rows.push((row.to_vec(), header_is_tombstone(value)));
                true
            },
        );
        let Some((last_row, last_is_tombstone)) = rows.last().cloned() else {
            return;
        };
        let last_main = super::rows::split_kv_key(&last_row).map(|(_, rev)| rev.main);
        let Some(last_main) = last_main else {
            self.failed(corrupt_row(Table::Kv, &last_row));
            return;
        };
        let drop_last = last_is_tombstone && last_main < target;
        let keep = usize::from(!drop_last);
        let dropped = rows.len() - keep;
        for (row, tombstone) in rows.into_iter().take(dropped) {
            self.delete_version(&row, tombstone);
        }
        if drop_last && !self.has_version_after(key, &through) {
            self.usage.drop_key();
        }
    }

    /// The revision physical compaction works up to: the compact revision, or the index
    /// revision while that is behind it. Compacting physically at an earlier revision
    /// drops less, never something still reachable.
    fn physical_compact_rev(&self) -> i64 {
        self.compact_revision().min(self.index.rev())
    }

    /// Whether `key` has a version after the row key `after`.
    fn has_version_after(&self, key: &[u8], after: &[u8]) -> bool {
        let mut end = key_prefix(key);
        end.extend_from_slice(&[0xFF; 16]);
        let mut found = false;
        self.scan_rows(
            Table::Kv,
            Bound::Excluded(after),
            Bound::Included(&end),
            false,
            &mut |_, _| {
                found = true;
                false
            },
        );
        found
    }
}
