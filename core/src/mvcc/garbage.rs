//! Garbage accounting: how many bytes of history become unreachable when compaction
//! reaches a revision, so that a compaction lowers the size estimate (quota state, replicated)
//! exactly and at once, while physical deletion goes on in bounded steps.
//!
//! Two tables hold the same bytes at two grains: `Garbage` by revision (`main` → bytes) and
//! `GarbageBuckets` by [`GARBAGE_BUCKET_REVISIONS`] revisions (`main / N` → bytes). A
//! compaction to revision C sums the bucket rows before C's bucket and the revision rows
//! of C's bucket up to C: it reads a row per bucket and at most a bucket's revisions, not a
//! row per revision compacted (a compaction of 3M revisions summed and deleted 3M rows
//! in one apply: 1.2–1.7 s with every member's apply loop stopped). The revision rows of
//! whole buckets stay behind, never read again (garbage is only ever added after the
//! current revision, so after the compact revision); [`Store::drop_stale_garbage`] deletes
//! them with physical compaction.

use std::ops::Bound;

use super::engine::Table;
use super::rows::{corrupt_row, u64_key};
use super::store::Store;

/// Revisions per bucket. Part of the data format: a store's buckets were summed with it.
pub(crate) const GARBAGE_BUCKET_REVISIONS: u64 = 1024;

fn bucket_key(main: i64) -> [u8; 8] {
    u64_key(main as u64 / GARBAGE_BUCKET_REVISIONS)
}

impl Store {
    /// `bytes` become unreachable once compaction reaches `main`.
    pub(crate) fn add_garbage(&mut self, main: i64, bytes: u64) {
        self.add_to_counter(Table::Garbage, &u64_key(main as u64), bytes);
        self.add_to_counter(Table::GarbageBuckets, &bucket_key(main), bytes);
    }

    /// `bytes` recorded at `from` are garbage at `to` (earlier) instead: a tombstone
    /// overwritten in its own revision (a txn's delete, then put) is unreachable once
    /// compaction reaches that revision.
    pub(crate) fn move_garbage(&mut self, from: i64, to: i64, bytes: u64) {
        self.take_from_counter(Table::Garbage, &u64_key(from as u64), bytes);
        self.take_from_counter(Table::GarbageBuckets, &bucket_key(from), bytes);
        self.add_garbage(to, bytes);
    }

    /// Removes and sums everything that is garbage once compaction reaches `compact_rev`
    /// (see the module docs).
    pub(crate) fn drain_garbage(&mut self, compact_rev: i64) -> u64 {
        let bucket = bucket_key(compact_rev);
        let whole = self.take_rows(Table::GarbageBuckets, Bound::Unbounded, &bucket);
        let first = u64_key(u64::from_be_bytes(bucket) * GARBAGE_BUCKET_REVISIONS);
        let partial = self.take_rows(
            Table::Garbage,
            Bound::Included(&first),
            &u64_key(compact_rev as u64 + 1),
        );
        self.take_from_counter(Table::GarbageBuckets, &bucket, partial);
        whole.saturating_add(partial)
    }

    /// Deletes up to `max_rows` revision rows at or before `through` (all left behind by
    /// [`Store::drain_garbage`]), from where the last call stopped; returns true while
    /// more remain.
    pub(crate) fn drop_stale_garbage(&mut self, through: i64, max_rows: usize) -> bool {
        // Before the first compaction the compact revision is -1: nothing is stale.
        let Ok(through) = u64::try_from(through) else {
            return false;
        };
        let from = u64_key(self.garbage_cursor);
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
            self.garbage_cursor = u64::from_be_bytes(last).saturating_add(1);
        }
        more
    }

    /// Sums the revision rows into bucket rows: a store written before buckets existed
    /// (state format 3) has revision rows only, all after its compact revision.
    pub(crate) fn build_garbage_buckets(&mut self) {
        let mut buckets: Vec<([u8; 8], u64)> = Vec::new();
        self.scan_rows(
            Table::Garbage,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
            &mut |row, value| match (<[u8; 8]>::try_from(row), counter_value(value)) {
                (Ok(main), Some(bytes)) => {
                    let bucket = bucket_key(u64::from_be_bytes(main) as i64);
                    match buckets.last_mut() {
                        Some((last, sum)) if *last == bucket => *sum = sum.saturating_add(bytes),
                        _ => buckets.push((bucket, bytes)),
                    }
                    true
                }
                _ => {
                    self.failed(corrupt_row(Table::Garbage, row));
                    false
                }
            },
        );
        for (bucket, bytes) in buckets {
            self.put_row(Table::GarbageBuckets, &bucket, &bytes.to_be_bytes());
        }
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
