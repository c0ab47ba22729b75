//! The store's state read out one version at a time, for writing it in another format
//! (etcd's backend file, keyed by revision). The reverse, a store written from versions
//! read elsewhere, is [`super::StoreBuilder`].

use std::ops::Bound;

use bytes::Bytes;

use super::key_index::logical_entries;
use super::revision::Revision;
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

impl Store {
    /// Every version compaction keeps, as (revision, key), in revision order: the order of
    /// etcd's backend. Values are not held (a store's values can exceed memory): read each
    /// with [`Store::version_record`].
    pub fn kept_versions_by_revision(&self) -> Vec<(Revision, Bytes)> {
        let compact_rev = self.compact_rev;
        let mut out = Vec::new();
        self.for_each_history(b"", Bound::Unbounded, &mut |key, entries| {
            out.extend(
                logical_entries(entries, compact_rev)
                    .iter()
                    .map(|e| (e.rev, key.clone())),
            );
            true
        });
        out.sort_unstable_by_key(|(rev, _)| *rev);
        out
    }

    /// The version of `key` written at exactly `rev`, value included.
    pub fn version_record(&self, key: &[u8], rev: Revision) -> Option<VersionRecord> {
        let mut entry = self.version_exactly_at(key, rev)?;
        if !self.load_value(&mut entry) {
            return None;
        }
        Some(VersionRecord {
            main: entry.rev.main,
            sub: entry.rev.sub,
            create_revision: entry.create_revision,
            version: entry.version,
            lease: entry.lease,
            value: entry.value,
        })
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
