//! The store's own rows besides its keys: its scalars (revisions, sizes, applied index),
//! its alarms and its lease rows; and loading them all when a store opens.

use std::ops::Bound;

use crate::codec::Codec;
use crate::mvcc::engine::{EngineError, Table};
use crate::mvcc::error::Error;
use crate::mvcc::lease::Lease;
use crate::mvcc::quota::Usage;
use crate::mvcc::request::AlarmMember;
use crate::mvcc::store::Store;

use super::{corrupt_row, i64_at, lease_key, u64_key};

/// The `alarms` row: fixed-width integers (bincode 1's default, which wrote it first).
pub(super) const ALARMS: Codec = Codec::fixed(u64::MAX);

pub(super) const META_STORE: &[u8] = b"store";

pub(super) const META_ALARMS: &[u8] = b"alarms";

/// 4: garbage buckets (a store of format 3 gets them when it opens).
pub(super) const STATE_FORMAT: u32 = 4;

/// The format before garbage buckets.
pub(super) const STATE_FORMAT_NO_BUCKETS: u32 = 3;

pub(super) const STATE_BYTES: usize = 4 + 6 * 8;

pub(super) const LEASE_BYTES: usize = 16;

impl Store {
    /// Whether the engine holds a store (its state row), restored or written by applies.
    pub(crate) fn holds_a_store(&self) -> bool {
        self.row(Table::Meta, META_STORE).is_some()
    }

    /// Writes the scalars into the open transaction (after every apply).
    pub(crate) fn save_state(&mut self) {
        self.close_garbage_buckets();
        let mut row = Vec::with_capacity(STATE_BYTES);
        row.extend_from_slice(&STATE_FORMAT.to_be_bytes());
        row.extend_from_slice(&self.applied_index().to_be_bytes());
        row.extend_from_slice(&self.current_revision().to_be_bytes());
        row.extend_from_slice(&self.compact_revision().to_be_bytes());
        row.extend_from_slice(&self.usage.size_bytes().to_be_bytes());
        row.extend_from_slice(&self.usage.key_count().to_be_bytes());
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

    pub(super) fn load_state(&mut self, row: &[u8]) -> Result<(), Error> {
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
        self.restore_applied_index(word(0) as u64);
        self.restore_revisions(word(1), word(2));
        self.usage = Usage::restored(word(3) as u64, word(4) as u64);
        self.index.rev = word(5);
        if self.current_revision() < 1
            || self.compact_revision() < -1
            || self.compact_revision() > self.current_revision()
            || self.index.rev > self.current_revision()
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
