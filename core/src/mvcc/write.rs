//! Writes: the [`Writer`] that puts and deletes at one new revision (a whole txn or a lease
//! revoke shares one), and the Put and DeleteRange commands built on it.

use bytes::Bytes;

use super::error::Error;
use super::key_index::Entry;
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
        let main = store.current_revision() + 1;
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
        let latest = self.store.latest(key)?;
        (!latest.is_tombstone()).then(|| latest.to_kv(key))
    }

    fn next_rev(&mut self) -> Revision {
        let rev = Revision::new(self.main, self.sub);
        self.sub += 1;
        rev
    }

    /// The key's live version before this revision, as etcd's watch reports it: `latest`
    /// itself when written earlier, else a lookup.
    fn live_at_start(&self, key: &Bytes, latest: &Entry) -> Option<KeyValue> {
        if latest.rev.main < self.main {
            let mut latest = latest.clone();
            if latest.is_tombstone() || !self.store.load_value(&mut latest) {
                return None;
            }
            return Some(latest.to_kv(key));
        }
        self.store
            .live_before(key, Revision::new(self.main, 0))
            .map(|e| e.to_kv(key))
    }

    /// Puts `value` with `lease`; returns the key's previous live version, its value read
    /// only if `prev_value` (a client's `prev_kv`): the write itself needs only its header.
    pub fn put(
        &mut self,
        key: &Bytes,
        value: Bytes,
        lease: i64,
        prev_value: bool,
    ) -> Option<KeyValue> {
        let latest = self.store.latest_header(key);
        let rev = self.next_rev();
        let main = self.main;
        let prev = latest.as_ref().filter(|e| !e.is_tombstone());
        let (create_revision, version) = match prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (main, 1),
        };
        // etcd's watch reports the state before the revision, except for a creation.
        let prev_at_start = match &latest {
            Some(latest) if version > 1 && self.store.event_prev_values() => {
                self.live_at_start(key, latest)
            }
            _ => None,
        };
        let entry = Entry::new(rev, create_revision, version, lease, value);
        let store = &mut *self.store;
        store.put_version(key, &entry);
        store.usage.add_bytes(entry.size_bytes(key.len()));
        match &latest {
            None => store.usage.add_key(),
            Some(t) if t.is_tombstone() && t.rev.main == main => {
                // Deleted earlier in this txn: its tombstone is not the revision's last word.
                store.move_garbage(main + 1, main, t.size_bytes(key.len()));
            }
            Some(_) => {}
        }
        if let Some(p) = prev {
            store.add_garbage(main, p.size_bytes(key.len()));
            if p.lease != lease {
                store.detach(p.lease, key);
            }
        }
        if prev.is_none_or(|p| p.lease != lease) {
            store.attach(lease, key);
        }
        store.log_change(key, &entry);
        self.events.push(Event {
            r#type: EventType::Put,
            kv: entry.to_kv(key),
            prev_kv: prev_at_start,
        });
        let mut prev = prev.cloned()?;
        if prev_value {
            self.store.load_value(&mut prev);
        }
        Some(prev.to_kv(key))
    }

    /// Deletes the key if it is live; returns the version deleted.
    pub fn delete(&mut self, key: &Bytes) -> Option<KeyValue> {
        let latest = self.store.latest(key)?;
        self.delete_latest(key, latest)
    }

    /// Deletes the key whose latest version is `latest`, if that is live.
    fn delete_latest(&mut self, key: &Bytes, latest: Entry) -> Option<KeyValue> {
        if latest.is_tombstone() {
            return None;
        }
        let prev_at_start = self.live_at_start(key, &latest);
        let rev = self.next_rev();
        let main = self.main;
        let store = &mut *self.store;
        let tombstone = Entry::tombstone(rev);
        let tombstone_bytes = tombstone.size_bytes(key.len());
        store.put_version(key, &tombstone);
        store.usage.add_bytes(tombstone_bytes);
        // The replaced version is garbage once compaction reaches this revision; the
        // tombstone only once it passes it (see `key_index::logical_entries`).
        store.add_garbage(main, latest.size_bytes(key.len()));
        store.add_garbage(main + 1, tombstone_bytes);
        store.detach(latest.lease, key);
        store.log_change(key, &tombstone);
        self.events.push(Event {
            r#type: EventType::Delete,
            kv: KeyValue {
                key: key.clone(),
                mod_revision: main,
                ..KeyValue::default()
            },
            prev_kv: prev_at_start,
        });
        Some(latest.to_kv(key))
    }

    /// Deletes every live key in `range`, in key order; returns the versions deleted.
    pub fn delete_range(&mut self, range: &KeyRange) -> Vec<KeyValue> {
        let mut live = Vec::new();
        let store = &*self.store;
        store.for_each_live(range, i64::MAX, |key, entry| {
            let mut entry = entry.clone();
            store.load_value(&mut entry);
            live.push((key.clone(), entry));
            true
        });
        live.into_iter()
            .filter_map(|(key, latest)| self.delete_latest(&key, latest))
            .collect()
    }

    /// Makes the revision current if anything changed; returns it and its events.
    pub fn finish(self) -> (i64, Vec<Event>) {
        if self.changed() {
            self.store.advance_revision(self.main);
        }
        (self.store.current_revision(), self.events)
    }
}

impl Store {
    /// Whether `key` exists at the current revision (not deleted).
    pub(crate) fn is_live(&self, key: &[u8]) -> bool {
        self.live_at(key, self.current_revision()).is_some()
    }

    pub(crate) fn apply_put(
        &mut self,
        put: &PutRequest,
    ) -> Result<(PutResponse, Vec<Event>), Error> {
        self.check_no_space_alarm(super::quota::put_cost(put))?;
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
        self.put(&put.key, value, lease, put.prev_kv)
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
