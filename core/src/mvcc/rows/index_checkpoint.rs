//! Index checkpoints: index rows wait in memory (`DeferredIndex`) and reach the engine in
//! slices, one per engine commit, so a checkpoint never writes them in one burst.

use crate::mvcc::engine::Table;
use crate::mvcc::overlay::Pending;
use crate::mvcc::revision::Revision;
use crate::mvcc::store::Store;

use super::{kv_key, IndexCycle};

/// Engine commits an index checkpoint is spread over (at least).
pub(super) const INDEX_CHECKPOINT_SLICES: usize = 64;

impl Store {
    /// Writes the deferred rows into the engine's open transaction with the index revision
    /// they bring it to (see the module docs).
    pub(crate) fn checkpoint_index(&mut self) {
        for (table, rows) in self.index.deferred.take() {
            self.write_rows(table, rows);
        }
        self.index.rev = self.current_revision();
        self.index.cycle = None;
        self.save_state();
    }

    /// On a quiet member: writes every waiting index row at once when physical compaction
    /// waits for them. Slices spread a checkpoint among writes; with none coming, they only
    /// kept compaction (and a `physical` compaction's answer) waiting 64 commits.
    pub fn checkpoint_index_for_compaction(&mut self) {
        if self.config().index_checkpoint_bytes > 0 && self.compact_revision() > self.index.rev {
            self.checkpoint_index();
        }
    }

    /// Writes rows taken from the waiting ones into the engine's open transaction.
    pub(super) fn write_rows(
        &mut self,
        table: Table,
        rows: impl IntoIterator<Item = (Vec<u8>, Pending)>,
    ) {
        for (key, value) in rows {
            match value {
                Some(value) => self.put_row(table, &key, &value),
                None => self.delete_row(table, &key),
            }
        }
    }

    /// Called before every engine commit: begins an index checkpoint when one is due,
    /// writes the next slice of the one under way, and ends it once it swept every key.
    pub(crate) fn advance_index_checkpoint(&mut self) {
        if self.config().index_checkpoint_bytes == 0 {
            self.checkpoint_index();
            return;
        }
        if self.index.deferred.is_empty() {
            // Every index row is in the engine already.
            self.index.cycle = None;
            if self.index.rev < self.current_revision() {
                self.index.rev = self.current_revision();
                self.save_state();
            }
            return;
        }
        let cycle = match self.index.cycle.take() {
            Some(cycle) => cycle,
            // Due when the rows fill their memory, or when compaction waits for them.
            None if self.index.deferred.bytes >= self.config().index_checkpoint_bytes
                || self.compact_revision() > self.index.rev =>
            {
                IndexCycle {
                    next: Vec::new(),
                    rev: self.current_revision(),
                    min_slice_bytes: (self.index.deferred.bytes / INDEX_CHECKPOINT_SLICES).max(1),
                }
            }
            None => return,
        };
        // A share of all the waiting rows, so that a sweep outruns the rows landing ahead
        // of it however fast they come; and never less than the cycle's first share: a
        // share of what is left alone shrinks with every slice, and a quiet member's sweep
        // (which physical compaction waits for) took hundreds of commits to end.
        let slice_bytes =
            (self.index.deferred.bytes / INDEX_CHECKPOINT_SLICES).max(cycle.min_slice_bytes);
        let (rows, next) = self
            .index
            .deferred
            .take_from(Table::Kv, &cycle.next, slice_bytes);
        self.write_rows(Table::Kv, rows);
        match next {
            Some(next) => self.index.cycle = Some(IndexCycle { next, ..cycle }),
            None => {
                // Every row written through the cycle's revision was before the sweep.
                debug_assert!(cycle.rev >= self.index.rev, "the index revision moves back");
                self.index.rev = cycle.rev;
                self.save_state();
            }
        }
    }

    /// Defers again the `Kv` rows of the versions logged after the index revision (on
    /// open: the engine's index holds everything through it).
    pub(super) fn rebuild_deferred_index(&mut self) {
        let mut rows = Vec::new();
        self.scan_log(
            Revision::new(self.index.rev + 1, 0),
            &mut |rev, header, key| {
                rows.push((kv_key(key, rev), header.to_vec()));
                true
            },
        );
        for (row, header) in rows {
            self.defer_row(Table::Kv, &row, Some(&header));
        }
    }
}
