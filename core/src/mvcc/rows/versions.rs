//! A key's versions in the engine: reading the one visible at a revision, walking a key's
//! history or every key live at a revision, writing and deleting versions, and the history
//! log physical compaction walks.

use std::ops::Bound;

use bytes::Bytes;

use crate::mvcc::engine::Table;
use crate::mvcc::key_index::Entry;
use crate::mvcc::revision::Revision;
use crate::mvcc::store::Store;

use super::{
    as_ref, corrupt_row, encode_entry, entry_from, header_is_tombstone, key_prefix, kv_bounds,
    kv_key, revision_bytes, revision_from, split_kv_key, LogVisit, ENTRY_HEADER_BYTES,
    REVISION_BYTES,
};

/// Versions of one key a range reads in its forward pass before it seeks instead.
pub(super) const MAX_ROWS_SCANNED_PER_KEY: usize = 4;

/// How a forward pass of a range ended.
pub(super) enum Pass {
    Done,
    /// Stopped at the key with this escaped prefix (terminator included): it has a long
    /// history, resolve it with a seek.
    LongHistory(Vec<u8>),
}

impl Store {
    /// The version at `rev` whose `Kv` row holds `header`, its value read from `Values`;
    /// `None` (and the store failed) if either row is missing or malformed.
    pub(crate) fn decode_entry(&self, rev: Revision, header: &[u8]) -> Option<Entry> {
        let mut entry = entry_from(rev, header)?;
        self.load_value(&mut entry).then_some(entry)
    }

    /// The newest version of `key` at or before `bound` (inclusive), if any.
    pub(crate) fn version_at_or_before(&self, key: &[u8], bound: Revision) -> Option<Entry> {
        let mut entry = self.header_at_or_before(key, bound)?;
        self.load_value(&mut entry);
        Some(entry)
    }

    /// [`Store::version_at_or_before`] without the value (see [`Store::load_value`]).
    pub(super) fn header_at_or_before(&self, key: &[u8], bound: Revision) -> Option<Entry> {
        let from = key_prefix(key);
        let to = kv_key(key, bound);
        let (from, to) = (Bound::Included(&from[..]), Bound::Included(&to[..]));
        let mut found = None;
        let mut decode = |row: &[u8], header: &[u8]| {
            found = Self::decode_row(row, header).map(|(_, entry)| entry);
            if found.is_none() {
                self.failed(corrupt_row(Table::Kv, row));
            }
            false
        };
        // A key's waiting rows are all newer than its rows in the engine (a checkpoint takes
        // a key's rows oldest first), so a waiting one within the bound is the answer and
        // the engine is read only when there is none: one lookup, not a merge of two.
        match self.index.deferred.last_in(Table::Kv, from, to) {
            Some((row, Some(header))) => {
                decode(row, header);
            }
            Some((_, None)) => self.scan_rows(Table::Kv, from, to, true, &mut decode),
            None => {
                if let Err(e) = self.engine.scan(Table::Kv, from, to, true, &mut decode) {
                    self.failed(e);
                }
            }
        }
        found
    }

    /// The newest version of `key` (a tombstone included).
    pub(crate) fn latest(&self, key: &[u8]) -> Option<Entry> {
        self.version_at_or_before(key, Revision::new(i64::MAX, i64::MAX))
    }

    /// [`Store::latest`] without the value (see [`Store::load_value`]).
    pub(crate) fn latest_header(&self, key: &[u8]) -> Option<Entry> {
        self.header_at_or_before(key, Revision::new(i64::MAX, i64::MAX))
    }

    /// The live version of `key` at `main` (none if deleted then or not yet created).
    pub(crate) fn live_at(&self, key: &[u8], main: i64) -> Option<Entry> {
        self.version_at_or_before(key, Revision::new(main, i64::MAX))
            .filter(|e| !e.is_tombstone())
    }

    /// The live version just before `rev` (the `prev_kv` etcd reports for a change at it).
    pub(crate) fn live_before(&self, key: &[u8], rev: Revision) -> Option<Entry> {
        let before = if rev.sub > 0 {
            Revision::new(rev.main, rev.sub - 1)
        } else {
            Revision::new(rev.main - 1, i64::MAX)
        };
        self.version_at_or_before(key, before)
            .filter(|e| !e.is_tombstone())
    }

    /// The version written exactly at `rev`.
    pub(crate) fn version_exactly_at(&self, key: &[u8], rev: Revision) -> Option<Entry> {
        let value = self.row(Table::Kv, &kv_key(key, rev))?;
        let entry = self.decode_entry(rev, &value);
        if entry.is_none() {
            self.failed(corrupt_row(Table::Kv, &kv_key(key, rev)));
        }
        entry
    }

    /// Every key with history in `[start, end)`, in key order, with its versions; stops when
    /// `visit` says so.
    pub(crate) fn for_each_history(
        &self,
        start: &[u8],
        end: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &[Entry]) -> bool,
    ) {
        self.for_each_history_with(start, end, true, visit);
    }

    /// [`Store::for_each_history`] without the values (each read is a random one).
    pub(crate) fn for_each_history_header(
        &self,
        start: &[u8],
        end: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &[Entry]) -> bool,
    ) {
        self.for_each_history_with(start, end, false, visit);
    }

    pub(super) fn for_each_history_with(
        &self,
        start: &[u8],
        end: Bound<&[u8]>,
        with_values: bool,
        visit: &mut dyn FnMut(&Bytes, &[Entry]) -> bool,
    ) {
        let (from, to) = kv_bounds(start, end);
        let mut current: Option<(Bytes, Vec<Entry>)> = None;
        let mut stopped = false;
        self.scan_rows(
            Table::Kv,
            Bound::Included(&from),
            as_ref(&to),
            false,
            &mut |row, value| {
                let Some((key, rev)) = split_kv_key(row) else {
                    self.failed(corrupt_row(Table::Kv, row));
                    return false;
                };
                let entry = if with_values {
                    self.decode_entry(rev, value)
                } else {
                    entry_from(rev, value)
                };
                let Some(entry) = entry else {
                    self.failed(corrupt_row(Table::Kv, row));
                    return false;
                };
                match &mut current {
                    Some((k, entries)) if k.as_ref() == key.as_slice() => entries.push(entry),
                    _ => {
                        if let Some((k, entries)) = current.take() {
                            if !visit(&k, &entries) {
                                stopped = true;
                                return false;
                            }
                        }
                        current = Some((Bytes::from(key), vec![entry]));
                    }
                }
                true
            },
        );
        if let (Some((k, entries)), false) = (current, stopped) {
            visit(&k, &entries);
        }
    }

    /// For each key in `[start, end)` live at `main` (its newest version at or before it is
    /// not a tombstone), in key order, calls `visit` with that version until it says stop.
    /// The version comes without its value: a visitor that needs it calls
    /// [`Store::load_value`], so counting or listing keys never reads values.
    ///
    /// Rows are read in one forward pass while keys have short histories; a key with more
    /// than [`MAX_ROWS_SCANNED_PER_KEY`] versions is resolved with one reverse lookup and the
    /// pass resumes after it, so a long uncompacted history costs a seek, not a walk.
    pub(crate) fn for_each_live_at(
        &self,
        start: &[u8],
        end: Bound<&[u8]>,
        main: i64,
        visit: &mut dyn FnMut(&Bytes, &Entry) -> bool,
    ) {
        if end == Bound::Included(start) {
            let live = self
                .header_at_or_before(start, Revision::new(main, i64::MAX))
                .filter(|e| !e.is_tombstone());
            if let Some(entry) = live {
                visit(&Bytes::copy_from_slice(start), &entry);
            }
            return;
        }
        let (first, to) = kv_bounds(start, end);
        let mut from = Bound::Included(first);
        let mut emit = |row: &[u8], value: &[u8]| -> bool {
            match Self::decode_row(row, value) {
                Some((_, entry)) if entry.is_tombstone() => true,
                Some((key, entry)) => visit(&Bytes::from(key), &entry),
                None => {
                    self.failed(corrupt_row(Table::Kv, row));
                    false
                }
            }
        };
        loop {
            match self.scan_live_pass(as_ref(&from), as_ref(&to), main, &mut emit) {
                Pass::Done => return,
                Pass::LongHistory(prefix) => {
                    let mut through = prefix.clone();
                    through.extend_from_slice(&revision_bytes(Revision::new(main, i64::MAX)));
                    let mut newest = None;
                    self.scan_rows(
                        Table::Kv,
                        Bound::Included(&prefix),
                        Bound::Included(&through),
                        true,
                        &mut |row, value| {
                            newest = Some((row.to_vec(), value.to_vec()));
                            false
                        },
                    );
                    if let Some((row, value)) = newest {
                        if !emit(&row, &value) {
                            return;
                        }
                    }
                    let mut past = prefix;
                    past.extend_from_slice(&[0xFF; REVISION_BYTES]);
                    from = Bound::Excluded(past);
                }
            }
        }
    }

    /// One forward pass of [`Store::for_each_live_at`]: emits each key's newest row at or
    /// before `main` until `emit` says stop, or stops at a key with a long history.
    pub(super) fn scan_live_pass(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        main: i64,
        emit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Pass {
        // The current key's escaped prefix, its rows so far, and its newest row at or
        // before `main` so far.
        let mut group: Vec<u8> = Vec::new();
        let mut group_rows = 0usize;
        let mut best: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut outcome = None;
        self.scan_rows(Table::Kv, from, to, false, &mut |row, value| {
            let Some(split) = row.len().checked_sub(REVISION_BYTES) else {
                self.failed(corrupt_row(Table::Kv, row));
                outcome = Some(Pass::Done);
                return false;
            };
            let (prefix, rev) = row.split_at(split);
            if prefix != group.as_slice() {
                if let Some((r, v)) = best.take() {
                    if !emit(&r, &v) {
                        outcome = Some(Pass::Done);
                        return false;
                    }
                }
                group.clear();
                group.extend_from_slice(prefix);
                group_rows = 0;
            }
            group_rows += 1;
            if group_rows > MAX_ROWS_SCANNED_PER_KEY {
                outcome = Some(Pass::LongHistory(group.clone()));
                return false;
            }
            let row_main = rev
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(i64::MAX, |b| u64::from_be_bytes(b) as i64);
            if row_main <= main {
                best = Some((row.to_vec(), value.to_vec()));
            }
            true
        });
        if let Some(outcome) = outcome {
            return outcome;
        }
        if let Some((r, v)) = best {
            emit(&r, &v);
        }
        Pass::Done
    }

    /// Writes a version: its header in `Kv` (key order) and its value in `Values`
    /// (revision order, so values are appended).
    pub(crate) fn put_version(&mut self, key: &[u8], entry: &Entry) {
        self.defer_row(
            Table::Kv,
            &kv_key(key, entry.rev),
            Some(&encode_entry(entry)),
        );
        if !entry.is_tombstone() {
            self.put_row(Table::Values, &revision_bytes(entry.rev), &entry.value);
        }
    }

    /// Deletes the version whose `Kv` row is `row` (holding `header`), value included
    /// (compaction, at or before the index revision: see the module docs).
    pub(crate) fn delete_version(&mut self, row: &[u8], header_is_tombstone: bool) {
        self.index.deferred.remove(Table::Kv, row);
        self.delete_row(Table::Kv, row);
        if header_is_tombstone {
            return;
        }
        match split_kv_key(row) {
            Some((_, rev)) => self.delete_row(Table::Values, &revision_bytes(rev)),
            None => self.failed(corrupt_row(Table::Kv, row)),
        }
    }

    /// The user key and entry of a `Kv` row, without its value (see
    /// [`Store::load_value`]).
    pub(super) fn decode_row(row: &[u8], header: &[u8]) -> Option<(Vec<u8>, Entry)> {
        let (key, rev) = split_kv_key(row)?;
        Some((key, entry_from(rev, header)?))
    }

    /// Reads the value of `entry` (a version read for its header); a tombstone has none. A
    /// missing value row, or one of another length than the header's, fails the store (and
    /// returns false).
    pub(crate) fn load_value(&self, entry: &mut Entry) -> bool {
        if entry.is_tombstone() || entry.value.len() as u64 == entry.value_bytes {
            // Nothing to read, or read already (an empty value reads as itself).
            return true;
        }
        match self.row(Table::Values, &revision_bytes(entry.rev)) {
            Some(value) if value.len() as u64 == entry.value_bytes => {
                entry.value = Bytes::from(value);
                true
            }
            _ => {
                self.failed(corrupt_row(Table::Values, &revision_bytes(entry.rev)));
                false
            }
        }
    }

    /// Logs the change `entry` made to `key`: its header, then the key.
    pub(crate) fn log_change(&mut self, key: &[u8], entry: &Entry) {
        let mut row = encode_entry(entry);
        row.extend_from_slice(key);
        self.put_row(Table::Log, &revision_bytes(entry.rev), &row);
    }

    /// Visits the log from `from` on: (revision, header, key) in revision order.
    pub(crate) fn scan_log(&self, from: Revision, visit: &mut LogVisit<'_>) {
        let start = revision_bytes(from);
        self.scan_rows(
            Table::Log,
            Bound::Included(&start),
            Bound::Unbounded,
            false,
            &mut |row, value| {
                let header_bytes = if header_is_tombstone(value) {
                    8
                } else {
                    ENTRY_HEADER_BYTES
                };
                match (revision_from(row), value.get(..header_bytes)) {
                    (Some(rev), Some(header)) => visit(rev, header, &value[header_bytes..]),
                    _ => {
                        self.failed(corrupt_row(Table::Log, row));
                        false
                    }
                }
            },
        );
    }
}
