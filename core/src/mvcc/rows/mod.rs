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
//!
//! Here: the row layout and encodings, and raw row access. Beside it: `versions.rs` (a key's
//! versions read and written), `index_checkpoint.rs`, `meta.rs` (the store's scalars, alarms
//! and lease rows, and loading them).

mod index_checkpoint;
mod meta;
mod versions;

use std::ops::Bound;

use bytes::Bytes;

use super::engine::{EngineError, Table};
use super::key_index::Entry;
use super::overlay::{scan_merged, Found, Merged, Overlay};
use super::revision::Revision;
use super::store::Store;

const TERMINATOR: [u8; 2] = [0x00, 0x01];
/// Called for each change of the log with its revision, header and key; returns false to
/// stop.
pub(crate) type LogVisit<'a> = dyn FnMut(Revision, &[u8], &[u8]) -> bool + 'a;

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
    /// The least a slice takes: a share of the rows waiting when the cycle began, so that
    /// a cycle with no rows landing ends within `INDEX_CHECKPOINT_SLICES` commits.
    min_slice_bytes: usize,
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
