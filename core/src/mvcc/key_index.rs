//! One key's history: its versions and tombstones in revision order.
//!
//! Memory per key is a tracked figure, so a history is a plain `Vec` grown one slot at a
//! time while short (most keys have one or two entries once compacted), and an entry is
//! 72 bytes plus the value's bytes.

use bytes::Bytes;

use super::request::KeyValue;
use super::revision::Revision;

/// Estimated bytes one entry costs beyond its key and value bytes: the entry, its share
/// of the key map and the history log, and allocator overhead. Used for the quota; see
/// the memory figures in the bench.
pub const ENTRY_OVERHEAD_BYTES: u64 = 240;

/// One version of a key, or a tombstone (`version == 0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub rev: Revision,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Bytes,
}

impl Entry {
    pub fn tombstone(rev: Revision) -> Self {
        Entry {
            rev,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Bytes::new(),
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    pub fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            create_revision: self.create_revision,
            mod_revision: self.rev.main,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }

    /// The quota's estimate of this entry's memory.
    pub fn size_bytes(&self, key_len: usize) -> u64 {
        (key_len + self.value.len()) as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// A key's entries, strictly increasing by revision, never empty.
#[derive(Clone, Debug)]
pub(crate) struct KeyHistory {
    entries: Vec<Entry>,
}

impl KeyHistory {
    pub fn new(first: Entry) -> Self {
        KeyHistory {
            entries: vec![first],
        }
    }

    pub fn from_entries(entries: Vec<Entry>) -> Self {
        debug_assert!(!entries.is_empty());
        KeyHistory { entries }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn latest(&self) -> &Entry {
        // Never empty: `new` takes a first entry and compaction removes whole histories.
        &self.entries[self.entries.len() - 1]
    }

    /// The live version visible at `main` (the latest entry at or before it), if the key
    /// existed then. Correct for any `main` at or above the compact revision.
    pub fn live_at(&self, main: i64) -> Option<&Entry> {
        let idx = self.entries.partition_point(|e| e.rev.main <= main);
        let entry = self.entries.get(idx.checked_sub(1)?)?;
        (!entry.is_tombstone()).then_some(entry)
    }

    /// The entry written exactly at `rev`.
    pub fn entry_at(&self, rev: Revision) -> Option<&Entry> {
        let idx = self.entries.binary_search_by(|e| e.rev.cmp(&rev)).ok()?;
        self.entries.get(idx)
    }

    /// The live entry before `rev` (the `prev_kv` etcd reports for a change at `rev`).
    pub fn live_before(&self, rev: Revision) -> Option<&Entry> {
        let idx = self.entries.partition_point(|e| e.rev < rev);
        let entry = self.entries.get(idx.checked_sub(1)?)?;
        (!entry.is_tombstone()).then_some(entry)
    }

    pub fn push(&mut self, entry: Entry) {
        debug_assert!(
            entry.rev > self.latest().rev,
            "history must grow in revision order"
        );
        if self.entries.len() == self.entries.capacity() && self.entries.len() < 4 {
            self.entries.reserve_exact(1);
        }
        self.entries.push(entry);
    }

    /// Drops what compaction at `compact_rev` makes unreachable: every entry at or before
    /// it except the latest, and that one too if it is a tombstone from before
    /// `compact_rev`. A tombstone written at `compact_rev` itself stays: a watch may start
    /// at the compact revision and must see that delete (etcd lost it: etcd#18089).
    /// Returns true when nothing is left (the key can go).
    pub fn compact(&mut self, compact_rev: i64) -> bool {
        let keep_from = self.first_logical(compact_rev);
        if keep_from > 0 {
            self.entries.drain(..keep_from);
            if self.entries.capacity() > 2 * self.entries.len() {
                self.entries.shrink_to_fit();
            }
        }
        self.entries.is_empty()
    }

    /// The entries still visible after compaction at `compact_rev`, without changing
    /// anything: what a snapshot or a hash covers.
    pub fn logical_entries(&self, compact_rev: i64) -> &[Entry] {
        &self.entries[self.first_logical(compact_rev)..]
    }

    /// The index of the first entry compaction at `compact_rev` keeps (see [`Self::compact`]).
    fn first_logical(&self, compact_rev: i64) -> usize {
        let at_or_before = self.entries.partition_point(|e| e.rev.main <= compact_rev);
        let Some(latest) = at_or_before.checked_sub(1).map(|i| &self.entries[i]) else {
            return 0;
        };
        if latest.is_tombstone() && latest.rev.main < compact_rev {
            at_or_before
        } else {
            at_or_before - 1
        }
    }

    /// Whether the entry at `rev` is still visible after compaction at `compact_rev`.
    pub fn is_logical(&self, rev: Revision, compact_rev: i64) -> bool {
        self.logical_entries(compact_rev)
            .first()
            .is_some_and(|first| first.rev <= rev)
            && self.entry_at(rev).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(main: i64, create: i64, version: i64) -> Entry {
        Entry {
            rev: Revision::new(main, 0),
            create_revision: create,
            version,
            lease: 0,
            value: Bytes::from_static(b"v"),
        }
    }

    #[test]
    fn live_at_sees_the_latest_entry_and_hides_tombstones() {
        let mut h = KeyHistory::new(put(2, 2, 1));
        h.push(put(4, 2, 2));
        h.push(Entry::tombstone(Revision::new(6, 0)));
        assert!(h.live_at(1).is_none());
        assert_eq!(h.live_at(3).map(|e| e.version), Some(1));
        assert_eq!(h.live_at(5).map(|e| e.version), Some(2));
        assert!(h.live_at(6).is_none());
    }

    #[test]
    fn compaction_keeps_the_latest_live_entry_and_drops_a_final_tombstone() {
        let mut h = KeyHistory::new(put(2, 2, 1));
        h.push(put(4, 2, 2));
        h.push(put(6, 2, 3));
        assert!(!h.compact(5));
        assert_eq!(h.entries().len(), 2);
        assert_eq!(h.entries()[0].rev.main, 4);
        h.push(Entry::tombstone(Revision::new(7, 0)));
        assert!(
            !h.compact(7),
            "a delete at the compact revision stays for watches"
        );
        assert_eq!(h.entries().len(), 1);
        assert!(h.entries()[0].is_tombstone());
        assert!(h.compact(8));
    }

    #[test]
    fn logical_entries_match_what_compaction_keeps() {
        let mut h = KeyHistory::new(put(2, 2, 1));
        h.push(put(4, 2, 2));
        h.push(Entry::tombstone(Revision::new(5, 0)));
        h.push(put(8, 8, 1));
        for compact in 0..10 {
            let mut c = h.clone();
            let logical: Vec<Entry> = h.logical_entries(compact).to_vec();
            c.compact(compact);
            assert_eq!(c.entries(), &logical[..], "compact {compact}");
        }
    }
}
