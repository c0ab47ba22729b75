//! `HashKV`: a CRC-32C over every version visible at a revision, so members (and the
//! simulator) can compare stores. It covers what is logically there — history after the
//! compaction point and each live key's version at it — so physical compaction progress
//! never changes it. Not bit-compatible with etcd's hash (etcd hashes its bbolt layout).

use std::ops::Bound;

use super::error::Error;
use super::key_index::logical_entries;
use super::request::{HashKvResponse, ResponseHeader};
use super::store::Store;

impl Store {
    /// The hash of the store at `revision` (0 = current), with the compact revision.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, Error> {
        self.healthy()?;
        let rev = self.read_revision(revision, self.current_revision())?;
        let mut crc = 0u32;
        self.for_each_history(b"", Bound::Unbounded, &mut |key, entries| {
            for entry in logical_entries(entries, self.compact_revision()) {
                if entry.rev.main > rev {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &(key.len() as u64).to_le_bytes());
                crc = crc32c::crc32c_append(crc, key);
                for field in [
                    entry.rev.main,
                    entry.rev.sub,
                    entry.create_revision,
                    entry.version,
                    entry.lease,
                    entry.value.len() as i64,
                ] {
                    crc = crc32c::crc32c_append(crc, &field.to_le_bytes());
                }
                crc = crc32c::crc32c_append(crc, &entry.value);
            }
            true
        });
        self.healthy()?;
        Ok(HashKvResponse {
            header: ResponseHeader::at(self.current_revision()),
            hash: crc,
            compact_revision: self.compact_revision(),
            hash_revision: rev,
        })
    }
}
