//! How the store's state lies in the engine's tables (see [`super::engine::Table`]), and
//! the store's reads and writes of it. Every read or write the engine refuses is recorded
//! (the first one wins) and the store's public calls then fail (see `Store::failure`):
//! nothing computed from a failed read reaches a client.
//!
//! Encodings (all integers big-endian, so byte order is numeric order):
//! - `Kv`: `escaped(key) ‖ 0x00 0x01 ‖ main ‖ sub` → the version's header, `version ‖
//!   create_revision ‖ lease ‖ value length` (a tombstone: version 0 alone): a write needs
//!   the previous version's header, not its value. A key is escaped by writing
//!   each 0x00 as 0x00 0xFF; the 0x00 0x01 terminator sorts before any longer key, so rows
//!   order by key, then revision.
//! - `Values`: `main ‖ sub` → the value of a version that is not a tombstone.
//! - `Log`: `main ‖ sub` → the version's header ‖ key.
//! - `Garbage`: `main` → bytes (u64); `GarbageBuckets`: `main / 1024` → bytes (see
//!   `garbage.rs`).
//! - `Leases`: `id` → `ttl ‖ remaining ttl`; `LeaseKeys`: `id ‖ key` → nothing.
//! - `Meta`: `store` → format version (u32), applied index, current revision, compact
//!   revision, size estimate, key count, index revision; `alarms` → bincode of the alarms.
//!
//! Index checkpoints. A put's `Kv` row would rewrite a random leaf of the key-ordered tree
//! in every engine commit; instead `Kv` rows wait in memory (`Store::deferred`, merged into
//! every read). Once they hold `StoreConfig::index_checkpoint_bytes` (or compaction waits
//! for them), a checkpoint sweeps them into the engine in key order, a slice with each
//! engine commit (at least [`INDEX_CHECKPOINT_SLICES`]), so each leaf is written once for
//! many puts and the writes are spread. Once a sweep ends, the engine holds every `Kv` row
//! through the revision it began at: the index revision, saved in the same commit. A put's
//! `Values` and `Log` rows are written at once and the `Log` row carries the header, so the
//! waiting rows are exactly what the log after the index revision says: opening a store
//! rebuilds them from there (rows a sweep wrote already are written again, harmlessly).
//! Physical compaction only touches revisions at or before the index revision (see
//! `compaction.rs`), whose rows are all in the engine and are never rebuilt.

use std::ops::Bound;

use bytes::Bytes;

use crate::codec::Codec;

use super::engine::{EngineError, Table};
use super::error::Error;
use super::key_index::Entry;
use super::lease::Lease;
use super::overlay::{scan_merged, Found, Merged, Overlay, Pending};
use super::request::AlarmMember;
use super::revision::Revision;
use super::store::Store;

/// The `alarms` row: fixed-width integers (bincode 1's default, which wrote it first).
const ALARMS: Codec = Codec::fixed(u64::MAX);

const META_STORE: &[u8] = b"store";
const META_ALARMS: &[u8] = b"alarms";
/// 4: garbage buckets (a store of format 3 gets them when it opens).
const STATE_FORMAT: u32 = 4;
/// The format before garbage buckets.
const STATE_FORMAT_NO_BUCKETS: u32 = 3;
const STATE_BYTES: usize = 4 + 6 * 8;
const LEASE_BYTES: usize = 16;

const TERMINATOR: [u8; 2] = [0x00, 0x01];
/// Engine commits an index checkpoint is spread over (at least).
const INDEX_CHECKPOINT_SLICES: usize = 64;
/// Versions of one key a range reads in its forward pass before it seeks instead.
const MAX_ROWS_SCANNED_PER_KEY: usize = 4;

/// Called for each change of the log with its revision, header and key; returns false to
/// stop.
pub(crate) type LogVisit<'a> = dyn FnMut(Revision, &[u8], &[u8]) -> bool + 'a;

/// How a forward pass of a range ended.
enum Pass {
    Done,
    /// Stopped at the key with this escaped prefix (terminator included): it has a long
    /// history, resolve it with a seek.
    LongHistory(Vec<u8>),
}
const REVISION_BYTES: usize = 16;
const ENTRY_HEADER_BYTES: usize = 32;

/// The `Kv` key prefix shared by every version of `key`.
pub(crate) fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + REVISION_BYTES);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&TERMINATOR);
    out
}

pub(crate) fn revision_bytes(rev: Revision) -> [u8; REVISION_BYTES] {
    let mut out = [0u8; REVISION_BYTES];
    out[..8].copy_from_slice(&(rev.main as u64).to_be_bytes());
    out[8..].copy_from_slice(&(rev.sub as u64).to_be_bytes());
    out
}

pub(crate) fn revision_from(bytes: &[u8]) -> Option<Revision> {
    if bytes.len() != REVISION_BYTES {
        return None;
    }
    let mut main = [0u8; 8];
    let mut sub = [0u8; 8];
    main.copy_from_slice(&bytes[..8]);
    sub.copy_from_slice(&bytes[8..]);
    Some(Revision::new(
        u64::from_be_bytes(main) as i64,
        u64::from_be_bytes(sub) as i64,
    ))
}

pub(crate) fn kv_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&revision_bytes(rev));
    out
}

/// The user key and revision of a `Kv` row key.
pub(crate) fn split_kv_key(row: &[u8]) -> Option<(Vec<u8>, Revision)> {
    let split = row.len().checked_sub(REVISION_BYTES)?;
    let (escaped, rev) = row.split_at(split);
    let escaped = escaped.strip_suffix(&TERMINATOR)?;
    let mut key = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&b) = bytes.next() {
        key.push(b);
        if b == 0 && bytes.next() != Some(&0xFF) {
            return None;
        }
    }
    Some((key, revision_from(rev)?))
}

/// The `Kv` row of a version: its header; the value lives in `Values` (see
/// [`Store::put_version`]).
pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    if entry.is_tombstone() {
        return 0i64.to_be_bytes().to_vec();
    }
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES);
    out.extend_from_slice(&entry.version.to_be_bytes());
    out.extend_from_slice(&entry.create_revision.to_be_bytes());
    out.extend_from_slice(&entry.lease.to_be_bytes());
    out.extend_from_slice(&entry.value_bytes.to_be_bytes());
    out
}

fn i64_at(bytes: &[u8], at: usize) -> Option<i64> {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes.get(at..at + 8)?);
    Some(i64::from_be_bytes(word))
}

/// A version from its `Kv` row (`header`), its value not read yet (see
/// [`Store::load_value`]).
fn entry_from(rev: Revision, header: &[u8]) -> Option<Entry> {
    let version = i64_at(header, 0)?;
    if version == 0 {
        return (header.len() == 8).then(|| Entry::tombstone(rev));
    }
    if header.len() != ENTRY_HEADER_BYTES {
        return None;
    }
    Some(Entry {
        rev,
        version,
        create_revision: i64_at(header, 8)?,
        lease: i64_at(header, 16)?,
        value: Bytes::new(),
        value_bytes: u64::try_from(i64_at(header, 24)?).ok()?,
    })
}

pub(crate) fn header_is_tombstone(header: &[u8]) -> bool {
    header.get(..8) == Some(&[0u8; 8][..])
}

pub(crate) fn u64_key(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub(crate) fn lease_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&(id as u64).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// `Kv` bounds covering every version of the keys in `[start, end)` (`end`: `None` for
/// no upper bound; `Some(start)` with `single` for exactly one key).
pub(crate) fn kv_bounds(start: &[u8], end: Bound<&[u8]>) -> (Vec<u8>, Bound<Vec<u8>>) {
    let from = key_prefix(start);
    let to = match end {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Excluded(end) => Bound::Excluded(key_prefix(end)),
        Bound::Included(end) => {
            let mut last = key_prefix(end);
            last.extend_from_slice(&[0xFF; REVISION_BYTES]);
            Bound::Included(last)
        }
    };
    (from, to)
}

fn as_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(b) => Bound::Included(b),
        Bound::Excluded(b) => Bound::Excluded(b),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Index rows waiting for an index checkpoint; reads merge them over the engine.
#[derive(Debug)]
pub(super) struct DeferredIndex {
    deferred: Overlay,
    /// The revision through which the engine's `Kv` rows are complete (the current revision
    /// at the last index checkpoint).
    rev: i64,
    /// The index checkpoint under way, if any.
    cycle: Option<IndexCycle>,
}

impl Default for DeferredIndex {
    fn default() -> DeferredIndex {
        DeferredIndex {
            deferred: Overlay::default(),
            rev: 1,
            cycle: None,
        }
    }
}

impl DeferredIndex {
    /// The revision through which the engine's `Kv` rows are complete.
    pub(super) fn rev(&self) -> i64 {
        self.rev
    }
}

/// An index checkpoint under way: every engine commit takes the next slice of the waiting
/// index rows, in key order, so the engine's writes are spread instead of one burst.
#[derive(Clone, Debug)]
struct IndexCycle {
    /// The row key the next slice starts at.
    next: Vec<u8>,
    /// The revision the cycle began at: once it has swept every key, the engine holds
    /// every index row through it.
    rev: i64,
}

impl Store {
    /// Records the engine's first failure; later public calls fail with it.
    pub(crate) fn failed(&self, error: EngineError) {
        let _ = self.failure.set(error);
    }

    pub(crate) fn row(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        match self.index.deferred.find(table, key) {
            Found::Written(value) => return Some(value.to_vec()),
            Found::Deleted => return None,
            Found::NotHere => {}
        }
        match self.engine.get(table, key) {
            Ok(value) => value,
            Err(e) => {
                self.failed(e);
                None
            }
        }
    }

    pub(crate) fn put_row(&mut self, table: Table, key: &[u8], value: &[u8]) {
        if let Err(e) = self.engine.put(table, key, value) {
            self.failed(e);
        }
    }

    pub(crate) fn delete_row(&mut self, table: Table, key: &[u8]) {
        if let Err(e) = self.engine.delete(table, key) {
            self.failed(e);
        }
    }

    /// A write that waits for the next index checkpoint (see the module docs).
    pub(crate) fn defer_row(&mut self, table: Table, key: &[u8], value: Option<&[u8]>) {
        self.index
            .deferred
            .write(table, key, value.map(<[u8]>::to_vec));
    }

    /// Visits rows in `[from, to)` order (or reverse) until `visit` says stop.
    pub(crate) fn scan_rows(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) {
        let merged = Merged::new(Some(&self.index.deferred), None, table, from, to, reverse);
        if let Err(e) = scan_merged(&*self.engine, merged, table, from, to, visit) {
            self.failed(e);
        }
    }

    /// Writes the deferred rows into the engine's open transaction with the index revision
    /// they bring it to (see the module docs).
    pub(crate) fn checkpoint_index(&mut self) {
        for (table, rows) in self.index.deferred.take() {
            self.write_rows(table, rows);
        }
        self.index.rev = self.current_rev;
        self.index.cycle = None;
        self.save_state();
    }

    /// Writes rows taken from the waiting ones into the engine's open transaction.
    fn write_rows(&mut self, table: Table, rows: impl IntoIterator<Item = (Vec<u8>, Pending)>) {
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
        if self.config.index_checkpoint_bytes == 0 {
            self.checkpoint_index();
            return;
        }
        if self.index.deferred.is_empty() {
            // Every index row is in the engine already.
            self.index.cycle = None;
            if self.index.rev < self.current_rev {
                self.index.rev = self.current_rev;
                self.save_state();
            }
            return;
        }
        let cycle = match self.index.cycle.take() {
            Some(cycle) => cycle,
            // Due when the rows fill their memory, or when compaction waits for them.
            None if self.index.deferred.bytes >= self.config.index_checkpoint_bytes
                || self.compact_rev > self.index.rev =>
            {
                IndexCycle {
                    next: Vec::new(),
                    rev: self.current_rev,
                }
            }
            None => return,
        };
        // A share of all the waiting rows, so that a sweep outruns the rows landing ahead
        // of it however fast they come.
        let slice_bytes = (self.index.deferred.bytes / INDEX_CHECKPOINT_SLICES).max(1);
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
    fn rebuild_deferred_index(&mut self) {
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
    fn header_at_or_before(&self, key: &[u8], bound: Revision) -> Option<Entry> {
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

    fn for_each_history_with(
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
    fn scan_live_pass(
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
    fn decode_row(row: &[u8], header: &[u8]) -> Option<(Vec<u8>, Entry)> {
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

impl Store {
    /// Writes the scalars into the open transaction (after every apply).
    pub(crate) fn save_state(&mut self) {
        self.close_garbage_buckets();
        let mut row = Vec::with_capacity(STATE_BYTES);
        row.extend_from_slice(&STATE_FORMAT.to_be_bytes());
        row.extend_from_slice(&self.applied_index.to_be_bytes());
        row.extend_from_slice(&self.current_rev.to_be_bytes());
        row.extend_from_slice(&self.compact_rev.to_be_bytes());
        row.extend_from_slice(&self.size_bytes.to_be_bytes());
        row.extend_from_slice(&self.key_count.to_be_bytes());
        row.extend_from_slice(&self.index.rev.to_be_bytes());
        self.put_row(Table::Meta, META_STORE, &row);
    }

    pub(crate) fn save_alarms(&mut self) {
        let alarms: Vec<AlarmMember> = self.alarms.iter().copied().collect();
        match ALARMS.encode(&alarms) {
            Ok(row) => self.put_row(Table::Meta, META_ALARMS, &row),
            Err(e) => self.failed(EngineError(format!("encoding the alarms: {e}"))),
        }
    }

    pub(crate) fn save_lease(&mut self, id: i64, lease: &Lease) {
        let mut row = [0u8; LEASE_BYTES];
        row[..8].copy_from_slice(&lease.ttl_s.to_be_bytes());
        row[8..].copy_from_slice(&lease.remaining_ttl_s.to_be_bytes());
        self.put_row(Table::Leases, &u64_key(id as u64), &row);
    }

    pub(crate) fn delete_lease_row(&mut self, id: i64) {
        self.delete_row(Table::Leases, &u64_key(id as u64));
    }

    pub(crate) fn attach_row(&mut self, id: i64, key: &[u8]) {
        self.put_row(Table::LeaseKeys, &lease_key(id, key), &[]);
    }

    pub(crate) fn detach_row(&mut self, id: i64, key: &[u8]) {
        self.delete_row(Table::LeaseKeys, &lease_key(id, key));
    }

    /// The keys attached to lease `id`, in key order, until `visit` says stop.
    pub(crate) fn scan_lease_keys(&self, id: i64, visit: &mut dyn FnMut(&[u8]) -> bool) {
        let from = u64_key(id as u64);
        let to = (id as u64).checked_add(1).map(u64_key);
        let to_bound = match &to {
            Some(to) => Bound::Excluded(&to[..]),
            None => Bound::Unbounded,
        };
        self.scan_rows(
            Table::LeaseKeys,
            Bound::Included(&from),
            to_bound,
            false,
            &mut |row, _| visit(&row[8..]),
        );
    }

    /// Every key attached to any lease, until `visit` says stop.
    pub(crate) fn scan_all_lease_keys(&self, visit: &mut dyn FnMut(&[u8]) -> bool) {
        self.scan_rows(
            Table::LeaseKeys,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
            &mut |row, _| match row.get(8..) {
                Some(key) => visit(key),
                None => {
                    self.failed(corrupt_row(Table::LeaseKeys, row));
                    false
                }
            },
        );
    }

    /// Reads the scalars, alarms and lease table from the engine (nothing there: a new
    /// store).
    pub(crate) fn load(&mut self) -> Result<(), Error> {
        if let Some(row) = self.row(Table::Meta, META_STORE) {
            self.load_state(&row)?;
        }
        self.load_open_garbage_buckets();
        if let Some(row) = self.row(Table::Meta, META_ALARMS) {
            let alarms: Vec<AlarmMember> = ALARMS.decode(&row).map_err(|e| Error::Storage {
                reason: format!("the alarms row does not decode: {e}"),
            })?;
            self.alarms = alarms.into_iter().collect();
        }
        let mut leases = Vec::new();
        self.scan_rows(
            Table::Leases,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
            &mut |row, value| {
                let id = row.try_into().ok().map(|b| u64::from_be_bytes(b) as i64);
                match (id, i64_at(value, 0), i64_at(value, 8)) {
                    (Some(id), Some(ttl_s), Some(remaining_ttl_s)) => {
                        leases.push((
                            id,
                            Lease {
                                ttl_s,
                                remaining_ttl_s,
                            },
                        ));
                        true
                    }
                    _ => {
                        self.failed(corrupt_row(Table::Leases, row));
                        false
                    }
                }
            },
        );
        for (id, lease) in leases {
            self.lessor.insert_restored(id, lease);
        }
        self.rebuild_deferred_index();
        self.healthy()
    }

    fn load_state(&mut self, row: &[u8]) -> Result<(), Error> {
        let corrupt = |what: &str| Error::Storage {
            reason: format!("the store's state row {what}"),
        };
        if row.len() != STATE_BYTES {
            return Err(corrupt("has the wrong length"));
        }
        let format = u32::from_be_bytes([row[0], row[1], row[2], row[3]]);
        if format != STATE_FORMAT && format != STATE_FORMAT_NO_BUCKETS {
            return Err(corrupt(&format!(
                "has format {format}, this keel reads {STATE_FORMAT_NO_BUCKETS} and {STATE_FORMAT}"
            )));
        }
        let word = |i: usize| i64_at(row, 4 + 8 * i).unwrap_or_default();
        self.applied_index = word(0) as u64;
        self.current_rev = word(1);
        self.compact_rev = word(2);
        self.size_bytes = word(3) as u64;
        self.key_count = word(4) as u64;
        self.index.rev = word(5);
        if self.current_rev < 1
            || self.compact_rev < -1
            || self.compact_rev > self.current_rev
            || self.index.rev > self.current_rev
        {
            return Err(corrupt("holds revisions out of order"));
        }
        if format == STATE_FORMAT_NO_BUCKETS {
            // Written in the open transaction with the new format, so the next commit
            // holds both or neither.
            self.build_garbage_buckets();
            self.save_state();
            self.healthy()?;
        }
        Ok(())
    }
}

pub(crate) fn corrupt_row(table: Table, row: &[u8]) -> EngineError {
    EngineError(format!(
        "a {} row does not decode (key {:?})",
        table.name(),
        Bytes::copy_from_slice(row)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_keys_order_by_key_then_revision_and_round_trip() {
        let keys: [&[u8]; 5] = [b"", b"a", b"a\0", b"a\0\x01", b"a\x01"];
        let mut encoded = Vec::new();
        for key in keys {
            for main in [1i64, 2, 300] {
                encoded.push(kv_key(key, Revision::new(main, 0)));
                encoded.push(kv_key(key, Revision::new(main, 7)));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted, "(key, revision) order is byte order");
        for key in keys {
            let rev = Revision::new(9, 3);
            assert_eq!(split_kv_key(&kv_key(key, rev)), Some((key.to_vec(), rev)));
        }
        assert_eq!(split_kv_key(b"a\0\x02xxxxxxxxxxxxxxxx"), None);
    }

    #[test]
    fn entries_round_trip() {
        let entry = Entry::new(Revision::new(5, 1), 3, 2, 77, Bytes::from_static(b"val"));
        let header = encode_entry(&entry);
        assert!(!header_is_tombstone(&header));
        let read = entry_from(entry.rev, &header).expect("a header");
        assert_eq!(read.value_bytes, 3, "the value's length is in the header");
        assert_eq!(
            Entry {
                value: entry.value.clone(),
                ..read
            },
            entry
        );
        let tombstone = Entry::tombstone(Revision::new(6, 0));
        let header = encode_entry(&tombstone);
        assert!(header_is_tombstone(&header));
        assert_eq!(entry_from(tombstone.rev, &header), Some(tombstone));
        assert_eq!(entry_from(Revision::new(1, 0), b"short"), None);
    }
}
