//! Writes: the [`Writer`] that puts and deletes at one new revision (a whole txn or a lease
//! revoke shares one), and the Put and DeleteRange commands built on it.

use std::collections::btree_map::Entry as MapEntry;

use bytes::Bytes;

use super::error::Error;
use super::key_index::{Entry, KeyHistory};
use super::request::{
    DeleteRangeRequest, DeleteRangeResponse, Event, EventType, KeyValue, PutRequest, PutResponse,
    ResponseHeader,
};
use super::revision::{KeyRange, Revision};
use super::store::Store;

/// Changes at revision `main`, numbered by `sub`. Dropped without changes, it leaves the
/// store untouched; [`Writer::finish`] makes the revision current.
pub(crate) struct Writer<'a> {
    pub store: &'a mut Store,
    main: i64,
    sub: i64,
    events: Vec<Event>,
}

impl<'a> Writer<'a> {
    pub fn begin(store: &'a mut Store) -> Self {
        let main = store.current_rev + 1;
        Writer {
            store,
            main,
            sub: 0,
            events: Vec::new(),
        }
    }

    pub fn changed(&self) -> bool {
        self.sub > 0
    }

    /// The revision reads inside the write see: the new one once something changed.
    pub fn view_rev(&self) -> i64 {
        if self.changed() {
            self.main
        } else {
            self.main - 1
        }
    }

    /// The key's latest live version, including this writer's changes.
    pub fn latest_live(&self, key: &Bytes) -> Option<KeyValue> {
        let history = self.store.keys.get(key.as_ref())?;
        let latest = history.latest();
        (!latest.is_tombstone()).then(|| latest.to_kv(key))
    }

    fn next_rev(&mut self) -> Revision {
        let rev = Revision::new(self.main, self.sub);
        self.sub += 1;
        rev
    }

    /// Puts `value` with `lease`; returns the key's previous live version.
    pub fn put(&mut self, key: &Bytes, value: Bytes, lease: i64) -> Option<KeyValue> {
        let rev = self.next_rev();
        let main = self.main;
        let store = &mut *self.store;
        // One search of the key map for a key that exists (the common case), two for a new
        // one. The map's own copy of the key goes into the log and lease sets, so they never
        // pin a request buffer the key may be a slice of.
        let mut overwritten_tombstone_bytes = None;
        let (key, prev, prev_at_start, kv, entry_bytes) = match store.keys.entry(key.clone()) {
            MapEntry::Occupied(mut occupied) => {
                let key = occupied.key().clone();
                let history = occupied.get_mut();
                let latest = history.latest();
                if latest.is_tombstone() && latest.rev.main == main {
                    overwritten_tombstone_bytes = Some(latest.size_bytes(key.len()));
                }
                let prev = Some(latest).filter(|e| !e.is_tombstone()).cloned();
                let (create_revision, version) = match &prev {
                    Some(p) => (p.create_revision, p.version + 1),
                    None => (main, 1),
                };
                // etcd's watch reports the state before the revision, except for a creation.
                let prev_at_start = if version > 1 {
                    history
                        .live_before(Revision::new(main, 0))
                        .map(|e| e.to_kv(&key))
                } else {
                    None
                };
                let entry = Entry {
                    rev,
                    create_revision,
                    version,
                    lease,
                    value,
                };
                let entry_bytes = entry.size_bytes(key.len());
                let kv = entry.to_kv(&key);
                history.push(entry);
                (key, prev, prev_at_start, kv, entry_bytes)
            }
            MapEntry::Vacant(vacant) => {
                let key = vacant.into_key();
                let entry = Entry {
                    rev,
                    create_revision: main,
                    version: 1,
                    lease,
                    value,
                };
                let entry_bytes = entry.size_bytes(key.len());
                // Own the key's bytes so the map never pins a larger request buffer.
                let owned = Bytes::copy_from_slice(&key);
                let kv = entry.to_kv(&owned);
                store.keys.insert(owned.clone(), KeyHistory::new(entry));
                (owned, None, None, kv, entry_bytes)
            }
        };
        store.size_bytes += entry_bytes;
        if let Some(p) = &prev {
            store.garbage.add(main, p.size_bytes(key.len()));
            store.lessor.detach(p.lease, &key);
        }
        if let Some(bytes) = overwritten_tombstone_bytes {
            // Deleted earlier in this txn: its tombstone is not the revision's last word.
            store.garbage.move_earlier(main + 1, main, bytes);
        }
        store.lessor.attach(lease, &key);
        store.history_log.push_back((rev, key.clone()));
        self.events.push(Event {
            r#type: EventType::Put,
            kv,
            prev_kv: prev_at_start,
        });
        prev.map(|p| p.to_kv(&key))
    }

    /// Deletes the key if it is live; returns the version deleted.
    pub fn delete(&mut self, key: &Bytes) -> Option<KeyValue> {
        let history = self.store.keys.get(key.as_ref())?;
        if history.latest().is_tombstone() {
            return None;
        }
        let prev = history.latest().clone();
        let prev_at_start = history
            .live_before(Revision::new(self.main, 0))
            .map(|e| e.to_kv(key));
        let rev = self.next_rev();
        let main = self.main;
        let store = &mut *self.store;
        let tombstone = Entry::tombstone(rev);
        let tombstone_bytes = tombstone.size_bytes(key.len());
        if let Some(history) = store.keys.get_mut(key.as_ref()) {
            history.push(tombstone);
        }
        store.size_bytes += tombstone_bytes;
        // The replaced version is garbage once compaction reaches this revision; the
        // tombstone only once it passes it (see `KeyHistory::compact`).
        store.garbage.add(main, prev.size_bytes(key.len()));
        store.garbage.add(main + 1, tombstone_bytes);
        store.lessor.detach(prev.lease, key);
        store.history_log.push_back((rev, key.clone()));
        self.events.push(Event {
            r#type: EventType::Delete,
            kv: KeyValue {
                key: key.clone(),
                mod_revision: main,
                ..KeyValue::default()
            },
            prev_kv: prev_at_start,
        });
        Some(prev.to_kv(key))
    }

    /// Deletes every live key in `range`, in key order; returns the versions deleted.
    pub fn delete_range(&mut self, range: &KeyRange) -> Vec<KeyValue> {
        let Some(bounds) = range.bounds() else {
            return Vec::new();
        };
        let live: Vec<Bytes> = self
            .store
            .keys
            .range::<[u8], _>(bounds)
            .filter(|(_, h)| !h.latest().is_tombstone())
            .map(|(k, _)| k.clone())
            .collect();
        live.iter().filter_map(|key| self.delete(key)).collect()
    }

    /// Makes the revision current if anything changed; returns it and its events.
    pub fn finish(self) -> (i64, Vec<Event>) {
        if self.changed() {
            self.store.current_rev = self.main;
        }
        (self.store.current_rev, self.events)
    }
}

impl Store {
    /// Whether `key` exists at the current revision (not deleted).
    pub(crate) fn is_live(&self, key: &[u8]) -> bool {
        self.keys
            .get(key)
            .and_then(|h| h.live_at(self.current_rev))
            .is_some()
    }

    pub(crate) fn apply_put(
        &mut self,
        put: &PutRequest,
    ) -> Result<(PutResponse, Vec<Event>), Error> {
        self.check_quota(super::quota::put_cost(put))?;
        if put.lease != 0 && !self.lessor.contains(put.lease) {
            return Err(Error::LeaseNotFound);
        }
        if (put.ignore_value || put.ignore_lease) && !self.is_live(&put.key) {
            return Err(Error::KeyNotFound);
        }
        let mut writer = Writer::begin(self);
        let prev_kv = writer.put_request(put);
        let (revision, events) = writer.finish();
        let response = PutResponse {
            header: ResponseHeader::at(revision),
            prev_kv: if put.prev_kv { prev_kv } else { None },
        };
        Ok((response, events))
    }

    pub(crate) fn apply_delete_range(
        &mut self,
        delete: &DeleteRangeRequest,
    ) -> (DeleteRangeResponse, Vec<Event>) {
        let mut writer = Writer::begin(self);
        let response = writer.delete_request(delete);
        let (revision, events) = writer.finish();
        (
            DeleteRangeResponse {
                header: ResponseHeader::at(revision),
                ..response
            },
            events,
        )
    }
}

impl Writer<'_> {
    /// A put as etcd applies it: `ignore_value`/`ignore_lease` take the current value or
    /// lease (the caller checked the key exists). Returns the previous live version.
    pub fn put_request(&mut self, put: &PutRequest) -> Option<KeyValue> {
        let current = if put.ignore_value || put.ignore_lease {
            self.latest_live(&put.key)
        } else {
            None
        };
        let value = match (&current, put.ignore_value) {
            (Some(kv), true) => kv.value.clone(),
            _ => put.value.clone(),
        };
        let lease = match (&current, put.ignore_lease) {
            (Some(kv), true) => kv.lease,
            _ => put.lease,
        };
        self.put(&put.key, value, lease)
    }

    /// A DeleteRange; the header is the caller's to set.
    pub fn delete_request(&mut self, delete: &DeleteRangeRequest) -> DeleteRangeResponse {
        let range = KeyRange::new(&delete.key, &delete.range_end);
        let deleted = self.delete_range(&range);
        DeleteRangeResponse {
            header: ResponseHeader::at(self.view_rev()),
            deleted: deleted.len() as i64,
            prev_kvs: if delete.prev_kv { deleted } else { Vec::new() },
        }
    }
}
