//! The store's state read out one version at a time, for writing it in another format
//! (etcd's backend file, keyed by revision). The reverse, a store written from versions
//! read elsewhere, is [`super::StoreBuilder`].

use std::ops::Bound;

use bytes::Bytes;

use super::engine::Table;
use super::key_index::logical_entries;
use super::revision::Revision;
use super::rows::{corrupt_row, revision_bytes, revision_from};
use super::snapshot::VersionRecord;
use super::store::Store;

/// A lease as a backup holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: i64,
    pub ttl_s: i64,
    /// Checkpointed remaining TTL; 0 when none was.
    pub remaining_ttl_s: i64,
}

/// A version compaction keeps, its value read by [`Store::read_values`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptVersion {
    pub key: Bytes,
    pub record: VersionRecord,
    pub value_bytes: u64,
}

impl KeptVersion {
    pub fn revision(&self) -> Revision {
        Revision::new(self.record.main, self.record.sub)
    }
}

impl Store {
    /// Every version compaction keeps, in revision order (the order of etcd's backend),
    /// without values: a store's values can exceed memory, so read them a slice at a time
    /// with [`Store::read_values`]. Reads the key-ordered index once.
    pub fn kept_versions_by_revision(&self) -> Vec<KeptVersion> {
        let compact_rev = self.compact_revision();
        let mut out = Vec::new();
        self.for_each_history_header(b"", Bound::Unbounded, &mut |key, entries| {
            out.extend(
                logical_entries(entries, compact_rev)
                    .iter()
                    .map(|e| KeptVersion {
                        key: key.clone(),
                        record: VersionRecord {
                            main: e.rev.main,
                            sub: e.rev.sub,
                            create_revision: e.create_revision,
                            version: e.version,
                            lease: e.lease,
                            value: Bytes::new(),
                        },
                        value_bytes: e.value_bytes,
                    }),
            );
            true
        });
        out.sort_unstable_by_key(KeptVersion::revision);
        out
    }

    /// Fills in the values of `versions` (in revision order) with one scan of the values
    /// table, which is in revision order too. False when a value is missing or of another
    /// length than its header says (then [`Store::failure`] says which).
    pub fn read_values(&self, versions: &mut [KeptVersion]) -> bool {
        let (Some(first), Some(last)) = (versions.first(), versions.last()) else {
            return true;
        };
        let from = revision_bytes(first.revision());
        let to = revision_bytes(last.revision());
        let mut next = 0;
        let mut ok = true;
        self.scan_rows(
            Table::Values,
            Bound::Included(&from),
            Bound::Included(&to),
            false,
            &mut |row, value| {
                let Some(rev) = revision_from(row) else {
                    self.failed(corrupt_row(Table::Values, row));
                    ok = false;
                    return false;
                };
                while next < versions.len() && versions[next].revision() < rev {
                    if !versions[next].record.is_tombstone() && versions[next].value_bytes > 0 {
                        // A version whose value should have come before this row.
                        break;
                    }
                    next += 1;
                }
                match versions.get_mut(next) {
                    Some(v) if v.revision() == rev => {
                        if v.value_bytes != value.len() as u64 {
                            self.failed(corrupt_row(Table::Values, row));
                            ok = false;
                            return false;
                        }
                        v.record.value = Bytes::copy_from_slice(value);
                        next += 1;
                        true
                    }
                    Some(v) if v.revision() < rev => {
                        self.failed(corrupt_row(Table::Values, &revision_bytes(v.revision())));
                        ok = false;
                        false
                    }
                    // A value compaction has dropped but not yet removed.
                    _ => true,
                }
            },
        );
        let missing = versions[next.min(versions.len())..]
            .iter()
            .find(|v| !v.record.is_tombstone() && v.value_bytes > 0 && v.record.value.is_empty());
        if let (true, Some(v)) = (ok, missing) {
            self.failed(corrupt_row(Table::Values, &revision_bytes(v.revision())));
            ok = false;
        }
        ok
    }

    /// Every lease, by id.
    pub fn lease_records(&self) -> Vec<LeaseRecord> {
        self.lessor
            .leases
            .iter()
            .map(|(&id, lease)| LeaseRecord {
                id,
                ttl_s: lease.ttl_s,
                remaining_ttl_s: lease.remaining_ttl_s,
            })
            .collect()
    }
}
