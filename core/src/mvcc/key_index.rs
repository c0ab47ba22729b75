//! One version of a key (an [`Entry`]), and which of a key's versions compaction keeps.

use bytes::Bytes;

use super::request::KeyValue;
use super::revision::Revision;

/// Estimated bytes one entry costs beyond its key and value bytes (its rows' keys and
/// headers in the engine, the history log's row). Used for the quota, so it is part of the
/// replicated state: changing it changes every member's decisions.
pub const ENTRY_OVERHEAD_BYTES: u64 = 240;

/// One version of a key, or a tombstone (`version == 0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub rev: Revision,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    /// The value, once read: a version read for its header alone (see `Store::load_value`)
    /// carries an empty one.
    pub value: Bytes,
    /// The value's length, known from the header whether the value was read or not.
    pub value_bytes: u64,
}

impl Entry {
    pub fn new(
        rev: Revision,
        create_revision: i64,
        version: i64,
        lease: i64,
        value: Bytes,
    ) -> Self {
        Entry {
            rev,
            create_revision,
            version,
            lease,
            value_bytes: value.len() as u64,
            value,
        }
    }

    pub fn tombstone(rev: Revision) -> Self {
        Entry::new(rev, 0, 0, 0, Bytes::new())
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
        key_len as u64 + self.value_bytes + ENTRY_OVERHEAD_BYTES
    }
}

/// The entries of one key's history (strictly increasing by revision) that compaction
/// at `compact_rev` keeps: every entry after it, and the latest at or before it unless that
/// one is a tombstone from before `compact_rev`. A tombstone written at `compact_rev` itself
/// stays: a watch may start at the compact revision and must see that delete (etcd lost
/// it: etcd#18089).
pub(crate) fn logical_entries(entries: &[Entry], compact_rev: i64) -> &[Entry] {
    &entries[first_logical(entries, compact_rev)..]
}

/// The index of the first entry compaction at `compact_rev` keeps.
pub(crate) fn first_logical(entries: &[Entry], compact_rev: i64) -> usize {
    let at_or_before = entries.partition_point(|e| e.rev.main <= compact_rev);
    let Some(latest) = at_or_before.checked_sub(1).map(|i| &entries[i]) else {
        return 0;
    };
    if latest.is_tombstone() && latest.rev.main < compact_rev {
        at_or_before
    } else {
        at_or_before - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(main: i64, create: i64, version: i64) -> Entry {
        Entry::new(
            Revision::new(main, 0),
            create,
            version,
            0,
            Bytes::from_static(b"v"),
        )
    }

    fn mains(entries: &[Entry]) -> Vec<i64> {
        entries.iter().map(|e| e.rev.main).collect()
    }

    #[test]
    fn compaction_keeps_the_latest_live_entry_and_drops_a_final_tombstone() {
        let history = [put(2, 2, 1), put(4, 2, 2), put(6, 2, 3)];
        assert_eq!(mains(logical_entries(&history, 5)), [4, 6]);
        let history = [
            put(4, 2, 2),
            put(6, 2, 3),
            Entry::tombstone(Revision::new(7, 0)),
        ];
        assert_eq!(
            mains(logical_entries(&history, 7)),
            [7],
            "a delete at the compact revision stays for watches"
        );
        assert!(logical_entries(&history, 8).is_empty());
    }

    #[test]
    fn nothing_before_the_first_entry_is_dropped() {
        let history = [
            put(4, 4, 1),
            Entry::tombstone(Revision::new(5, 0)),
            put(8, 8, 1),
        ];
        assert_eq!(mains(logical_entries(&history, 3)), [4, 5, 8]);
        assert_eq!(mains(logical_entries(&history, 4)), [4, 5, 8]);
        assert_eq!(mains(logical_entries(&history, 5)), [5, 8]);
        assert_eq!(mains(logical_entries(&history, 6)), [8]);
        assert_eq!(mains(logical_entries(&history, 9)), [8]);
    }
}
