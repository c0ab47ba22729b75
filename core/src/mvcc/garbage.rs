//! Garbage accounting: how many bytes of history become unreachable when compaction
//! reaches a revision, so that a compaction lowers the size estimate (quota state, replicated)
//! exactly and at once, while physical deletion goes on in bounded steps.
//!
//! The bytes are counted at two grains: `Garbage` rows by revision (`main` → bytes) and
//! buckets of [`GARBAGE_BUCKET_REVISIONS`] revisions. A compaction to revision C sums the
//! buckets before C's bucket and the revision rows of C's bucket up to C: it reads a row
//! per bucket and at most a bucket's revisions, not a row per revision compacted (a
//! compaction of 3M revisions summed and deleted 3M rows in one apply: 1.8 s with every
//! member's apply loop stopped). The revision rows of whole buckets stay behind, never read
//! again (garbage is only ever added at or after the current revision, so after the compact
//! revision); [`Store::drop_stale_garbage`] deletes them with physical compaction.
//!
//! Buckets the current revision has left are `GarbageBuckets` rows (`main / N` → bytes).
//! The others, those writes still add to, are summed in memory
//! (`GarbageLedger::open_buckets`) and become rows once the current revision leaves them:
//! a write updates its revision's row only, and opening a store sums at most a bucket's
//! revision rows to rebuild them.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::engine::Table;
use super::rows::{corrupt_row, u64_key};
use super::store::Store;

/// Revisions per bucket. Part of the data format: a store's buckets were summed with it.
pub(crate) const GARBAGE_BUCKET_REVISIONS: u64 = 1024;

fn bucket_of(main: i64) -> u64 {
    main as u64 / GARBAGE_BUCKET_REVISIONS
}

/// The garbage accounting kept in memory. Local to this member, rebuilt when a store opens.
#[derive(Debug, Default)]
pub(super) struct GarbageLedger {
    /// The first `Garbage` row physical compaction has not looked at.
    cursor: u64,
    /// Garbage of the buckets the current revision has not left yet, by bucket: kept here,
    /// not in `GarbageBuckets` rows, so a write does not rewrite its bucket's row.
    open_buckets: BTreeMap<u64, u64>,
}

impl Store {
    /// `bytes` become unreachable once compaction reaches `main`.
    pub(crate) fn add_garbage(&mut self, main: i64, bytes: u64) {
        self.add_to_counter(Table::Garbage, &u64_key(main as u64), bytes);
        let bucket = bucket_of(main);
        if self.bucket_is_open(bucket) {
            let sum = self.garbage.open_buckets.entry(bucket).or_default();
            *sum = sum.saturating_add(bytes);
        } else {
            self.add_to_counter(Table::GarbageBuckets, &u64_key(bucket), bytes);
        }
    }

    /// `bytes` recorded at `from` are garbage at `to` (earlier) instead: a tombstone
    /// overwritten in its own revision (a txn's delete, then put) is unreachable once
    /// compaction reaches that revision.
    pub(crate) fn move_garbage(&mut self, from: i64, to: i64, bytes: u64) {
        self.take_from_counter(Table::Garbage, &u64_key(from as u64), bytes);
        self.take_from_bucket(bucket_of(from), bytes);
        self.add_garbage(to, bytes);
    }

    /// Removes and sums everything that is garbage once compaction reaches `compact_rev`
    /// (see the module docs).
    pub(crate) fn drain_garbage(&mut self, compact_rev: i64) -> u64 {
        let bucket = bucket_of(compact_rev);
        // Every bucket before the compact revision's has been left: they are rows.
        let whole = self.take_rows(Table::GarbageBuckets, Bound::Unbounded, &u64_key(bucket));
        let first = u64_key(bucket * GARBAGE_BUCKET_REVISIONS);
        let partial = self.take_rows(
            Table::Garbage,
            Bound::Included(&first),
            &u64_key(compact_rev as u64 + 1),
        );
        self.take_from_bucket(bucket, partial);
        whole.saturating_add(partial)
    }

    /// Writes the buckets the current revision has left as rows (with every apply's state).
    pub(crate) fn close_garbage_buckets(&mut self) {
        let current = bucket_of(self.current_revision());
        while let Some(entry) = self.garbage.open_buckets.first_entry() {
            if *entry.key() >= current {
                break;
            }
            let (bucket, bytes) = entry.remove_entry();
            self.add_to_counter(Table::GarbageBuckets, &u64_key(bucket), bytes);
        }
    }

    /// Sums the revision rows of the buckets not left yet (on opening a store).
    pub(crate) fn load_open_garbage_buckets(&mut self) {
        let first = u64_key(bucket_of(self.current_revision()) * GARBAGE_BUCKET_REVISIONS);
        self.garbage.open_buckets = self.sum_garbage_by_bucket(Bound::Included(&first));
    }

    fn bucket_is_open(&self, bucket: u64) -> bool {
        bucket >= bucket_of(self.current_revision())
    }

    fn take_from_bucket(&mut self, bucket: u64, bytes: u64) {
        if !self.bucket_is_open(bucket) {
            self.take_from_counter(Table::GarbageBuckets, &u64_key(bucket), bytes);
            return;
        }
        if let Some(sum) = self.garbage.open_buckets.get_mut(&bucket) {
            *sum = sum.saturating_sub(bytes);
            if *sum == 0 {
                self.garbage.open_buckets.remove(&bucket);
            }
        }
    }

    /// Deletes up to `max_rows` revision rows at or before `through` (all left behind by
    /// [`Store::drain_garbage`]), from where the last call stopped; returns true while
    /// more remain.
    pub(crate) fn drop_stale_garbage(&mut self, through: i64, max_rows: usize) -> bool {
        // Before the first compaction the compact revision is -1: nothing is stale.
        let Ok(through) = u64::try_from(through) else {
            return false;
        };
        let from = u64_key(self.garbage.cursor);
        let to = u64_key(through);
        let mut rows = Vec::new();
        let mut more = false;
        self.scan_rows(
            Table::Garbage,
            Bound::Included(&from),
            Bound::Included(&to),
            false,
            &mut |row, _| {
                if rows.len() == max_rows {
                    more = true;
                    return false;
                }
                rows.push(row.to_vec());
                true
            },
        );
        for row in &rows {
            self.delete_row(Table::Garbage, row);
        }
        if let Some(last) = rows
            .last()
            .and_then(|row| <[u8; 8]>::try_from(&row[..]).ok())
        {
            self.garbage.cursor = u64::from_be_bytes(last).saturating_add(1);
        }
        more
    }

    /// Writes the rows of the buckets the current revision has left: a store written before
    /// buckets existed (state format 3) has revision rows only, all after its compact
    /// revision.
    pub(crate) fn build_garbage_buckets(&mut self) {
        let closed = self.sum_garbage_by_bucket(Bound::Unbounded);
        let current = bucket_of(self.current_revision());
        for (bucket, bytes) in closed.range(..current) {
            self.put_row(
                Table::GarbageBuckets,
                &u64_key(*bucket),
                &bytes.to_be_bytes(),
            );
        }
    }

    /// The revision rows from `from` on, summed by bucket.
    fn sum_garbage_by_bucket(&self, from: Bound<&[u8]>) -> BTreeMap<u64, u64> {
        let mut buckets = BTreeMap::new();
        self.scan_rows(
            Table::Garbage,
            from,
            Bound::Unbounded,
            false,
            &mut |row, value| match (<[u8; 8]>::try_from(row), counter_value(value)) {
                (Ok(main), Some(bytes)) => {
                    let bucket = u64::from_be_bytes(main) / GARBAGE_BUCKET_REVISIONS;
                    let sum: &mut u64 = buckets.entry(bucket).or_default();
                    *sum = sum.saturating_add(bytes);
                    true
                }
                _ => {
                    self.failed(corrupt_row(Table::Garbage, row));
                    false
                }
            },
        );
        buckets
    }

    fn counter(&self, table: Table, key: &[u8]) -> u64 {
        self.row(table, key)
            .and_then(|value| counter_value(&value))
            .unwrap_or(0)
    }

    fn add_to_counter(&mut self, table: Table, key: &[u8], bytes: u64) {
        let total = self.counter(table, key).saturating_add(bytes);
        self.put_row(table, key, &total.to_be_bytes());
    }

    fn take_from_counter(&mut self, table: Table, key: &[u8], bytes: u64) {
        let left = self.counter(table, key).saturating_sub(bytes);
        if left == 0 {
            self.delete_row(table, key);
        } else {
            self.put_row(table, key, &left.to_be_bytes());
        }
    }

    /// Deletes the rows from `from` to before `to` and returns the sum of their counts.
    fn take_rows(&mut self, table: Table, from: Bound<&[u8]>, to: &[u8]) -> u64 {
        let mut sum = 0u64;
        let mut rows = Vec::new();
        self.scan_rows(
            table,
            from,
            Bound::Excluded(to),
            false,
            &mut |row, value| match counter_value(value) {
                Some(bytes) => {
                    sum = sum.saturating_add(bytes);
                    rows.push(row.to_vec());
                    true
                }
                None => {
                    self.failed(corrupt_row(table, row));
                    false
                }
            },
        );
        for row in rows {
            self.delete_row(table, &row);
        }
        sum
    }
}

fn counter_value(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_be_bytes)
}
