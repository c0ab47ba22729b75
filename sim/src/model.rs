//! A sequential specification of etcd's KV store with revisions: what one request does to
//! the state and what it answers, written independently of keel-core so the checker does
//! not share its bugs.
//!
//! The state is the global revision (starting at 1 on an empty store), the compact
//! revision (starting at -1, as etcd's), every key's full history of versions, and the set
//! of leases. Keeping the whole history lets the model answer reads at past revisions and
//! lets a finished linearization serve as the ground truth ("replay") for watch and
//! serializable-read checks.
//!
//! etcd's rules, as implemented here:
//! - Every put, and every delete that removes a key, happens at `revision + 1`; a txn or a
//!   lease revoke is one revision however many keys it writes; a delete of nothing, a txn
//!   that writes nothing, a compaction and a lease grant do not change the revision.
//! - A put's version is the previous live version + 1, or 1 after a delete or for a new
//!   key (the create revision then resets to the put's revision).
//! - Reads: `revision > current` is `ErrFutureRev` (checked first); `revision <
//!   compact_revision` is `ErrCompacted`. The header always carries the current revision.
//! - Compaction: `revision <= compact_revision` is `ErrCompacted`, `revision > current`
//!   is `ErrFutureRev`. etcd's reply carries the revision at reply time, so a recorded
//!   compaction header only bounds from above the revision it applied at.
//! - Txn compares follow etcd's `applyCompare`: over a range, every live key must satisfy
//!   the compare; with no live key, a value compare is false and the others compare
//!   against a zero key. A put with a missing lease fails the whole txn with
//!   `LeaseNotFound` (checked before ranges at compacted/future revisions). Ranges inside a
//!   txn see the txn's earlier writes.
//! - Lease revoke deletes every key whose live version is attached to the lease, in key
//!   order, as one revision; a revoke of a missing lease is `LeaseNotFound`, a grant of an
//!   existing id is `LeaseExists`. Lease expiry is not modelled (see [`crate::history`]).
//! - Watch events: each put or delete makes one event, in request order; `prev_kv` of an
//!   event is the key's live version at `revision - 1`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;

use crate::history::{
    Compare, CompareResult, CompareTarget, Event, EventKind, KeyValue, Outcome, Put, RangeResult,
    Request, Response, StoreError, Txn, TxnOp, TxnOpResult,
};

/// One version of a key; `version == 0` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    mod_revision: i64,
    create_revision: i64,
    version: i64,
    value: Bytes,
    lease: i64,
}

impl Version {
    fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// The state of an etcd KV store, with its full history.
#[derive(Clone, Debug)]
pub struct KvModel {
    revision: i64,
    compact_revision: i64,
    keys: BTreeMap<Bytes, Vec<Version>>,
    leases: BTreeSet<i64>,
    /// The events of revision `r` at index `r - 2`.
    events: Vec<Vec<Event>>,
    /// XOR of the hashes of every version and lease: with the revisions, a fingerprint of
    /// the state for the linearizability search's memo.
    content_hash: u64,
}

impl Default for KvModel {
    fn default() -> Self {
        KvModel::new()
    }
}

/// What [`KvModel::apply_logged`] changed, so the search can take it back.
#[derive(Debug, Default)]
pub(crate) struct Undo {
    revision: i64,
    compact_revision: i64,
    content_hash: u64,
    pushed: Vec<Bytes>,
    leases_added: Vec<i64>,
    leases_removed: Vec<i64>,
    events_pushed: bool,
    changed: bool,
}

impl Undo {
    /// The request changed the state (revision, keys, leases or compact revision).
    pub(crate) fn changed(&self) -> bool {
        self.changed
    }
}

/// A write in progress at `revision`.
struct Write {
    revision: i64,
    events: Vec<Event>,
}

impl KvModel {
    /// An empty store: revision 1, compact revision -1, no keys, no leases.
    pub fn new() -> Self {
        KvModel {
            revision: 1,
            compact_revision: -1,
            keys: BTreeMap::new(),
            leases: BTreeSet::new(),
            events: Vec::new(),
            content_hash: 0,
        }
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    pub fn leases(&self) -> impl Iterator<Item = i64> + '_ {
        self.leases.iter().copied()
    }

    /// Whether a live key is attached to the lease.
    pub fn lease_in_use(&self, id: i64) -> bool {
        self.keys
            .values()
            .any(|h| latest_live(h).is_some_and(|v| v.lease == id))
    }

    /// The key's live version at `revision` (no compaction check: the model keeps all).
    pub fn get(&self, key: &[u8], revision: i64) -> Option<KeyValue> {
        let (key, history) = self.keys.get_key_value(key)?;
        live_at(history, revision).map(|v| v.to_kv(key))
    }

    /// The keys live in the range at `revision`, as etcd's Range answers (sorted by key,
    /// `count` before `limit`), without the compaction check.
    pub fn range(&self, key: &[u8], range_end: &[u8], revision: i64, limit: i64) -> RangeResult {
        let mut kvs = Vec::new();
        let mut count = 0i64;
        if let Some(bounds) = key_bounds(key, range_end) {
            for (k, history) in self.keys.range::<[u8], _>(bounds) {
                if let Some(v) = live_at(history, revision) {
                    count += 1;
                    if limit <= 0 || (kvs.len() as i64) < limit {
                        kvs.push(v.to_kv(k));
                    }
                }
            }
        }
        RangeResult {
            more: limit > 0 && count > limit,
            kvs,
            count,
        }
    }

    /// The events of one revision, in request order (empty for revision 1 and beyond the
    /// current revision).
    pub fn events(&self, revision: i64) -> &[Event] {
        usize::try_from(revision - 2)
            .ok()
            .and_then(|i| self.events.get(i))
            .map_or(&[], Vec::as_slice)
    }

    /// The version of `key` written at exactly `mod_revision`: `Some(Some(kv))` for a put,
    /// `Some(None)` for a delete, `None` if the key was not written at that revision.
    pub fn written_at(&self, key: &[u8], mod_revision: i64) -> Option<Option<KeyValue>> {
        let (key, history) = self.keys.get_key_value(key)?;
        let end = history.partition_point(|v| v.mod_revision <= mod_revision);
        let v = history[..end].last()?;
        if v.mod_revision != mod_revision {
            return None;
        }
        Some((!v.is_tombstone()).then(|| v.to_kv(key)))
    }

    /// Keys that have ever been written, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> + '_ {
        self.keys.keys()
    }

    /// A hash of the whole state, for memoization (collisions are possible but need
    /// two different states to agree on 64 bits).
    pub fn fingerprint(&self) -> u64 {
        let mut h = Hasher::new();
        h.u64(self.content_hash);
        h.u64(self.revision as u64);
        h.u64(self.compact_revision as u64);
        h.finish()
    }

    /// Applies a request as etcd would, answering with its response or error. A lease
    /// grant with id 0 takes the smallest unused positive id.
    pub fn apply(&mut self, request: &Request) -> Result<Response, StoreError> {
        let mut undo = Undo::default();
        self.apply_logged(request, &mut undo)
    }

    /// The states an operation with this outcome can lead to from this one: none if the
    /// outcome is impossible here; two for an indeterminate operation that changes the
    /// state (it happened or not); the same state for a failed one.
    pub fn step(&self, request: &Request, outcome: &Outcome) -> Vec<KvModel> {
        let request = resolve(request, outcome);
        let mut next = self.clone();
        let mut undo = Undo::default();
        let result = next.apply_logged(&request, &mut undo);
        match outcome {
            Outcome::Ok(expected) => match result {
                Ok(r) if same_response(&r, expected) => vec![next],
                _ => Vec::new(),
            },
            Outcome::Error(expected) => match result {
                Err(e) if e == *expected => vec![next],
                _ => Vec::new(),
            },
            Outcome::Failed(_) => vec![self.clone()],
            Outcome::Indeterminate(_) => {
                if result.is_ok() && undo.changed() {
                    vec![self.clone(), next]
                } else {
                    vec![self.clone()]
                }
            }
        }
    }

    /// [`KvModel::apply`], recording what changed in `undo` (which must be fresh).
    pub(crate) fn apply_logged(
        &mut self,
        request: &Request,
        undo: &mut Undo,
    ) -> Result<Response, StoreError> {
        undo.revision = self.revision;
        undo.compact_revision = self.compact_revision;
        undo.content_hash = self.content_hash;
        match request {
            Request::Range(r) => {
                let rev = self.read_revision(r.revision)?;
                Ok(Response::Range {
                    revision: self.revision,
                    result: self.range(&r.key, &r.range_end, rev, r.limit),
                })
            }
            Request::Put(p) => {
                if p.lease != 0 && !self.leases.contains(&p.lease) {
                    return Err(StoreError::LeaseNotFound);
                }
                let mut w = self.begin();
                let prev = self.put(&mut w, p, undo);
                self.finish(w, undo);
                Ok(Response::Put {
                    revision: self.revision,
                    prev_kv: if p.prev_kv { prev } else { None },
                })
            }
            Request::DeleteRange(d) => {
                let mut w = self.begin();
                let deleted = self.delete_range(&mut w, &d.key, &d.range_end, undo);
                self.finish(w, undo);
                Ok(Response::DeleteRange {
                    revision: self.revision,
                    deleted: deleted.len() as i64,
                    prev_kvs: if d.prev_kv { deleted } else { Vec::new() },
                })
            }
            Request::Txn(txn) => self.apply_txn(txn, undo),
            Request::LeaseGrant { ttl, id } => {
                let id = if *id == 0 {
                    (1..).find(|i| !self.leases.contains(i)).unwrap_or(1)
                } else {
                    *id
                };
                if self.leases.contains(&id) {
                    return Err(StoreError::LeaseExists);
                }
                self.leases.insert(id);
                self.content_hash ^= hash_lease(id);
                undo.leases_added.push(id);
                undo.changed = true;
                Ok(Response::LeaseGrant {
                    revision: self.revision,
                    id,
                    ttl: *ttl,
                })
            }
            Request::LeaseRevoke { id } => {
                if !self.leases.contains(id) {
                    return Err(StoreError::LeaseNotFound);
                }
                let attached: Vec<Bytes> = self
                    .keys
                    .iter()
                    .filter(|(_, h)| latest_live(h).is_some_and(|v| v.lease == *id))
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut w = self.begin();
                for key in &attached {
                    self.delete_key(&mut w, key, undo);
                }
                self.finish(w, undo);
                self.leases.remove(id);
                self.content_hash ^= hash_lease(*id);
                undo.leases_removed.push(*id);
                undo.changed = true;
                Ok(Response::LeaseRevoke {
                    revision: self.revision,
                })
            }
            Request::Compact { revision } => {
                if *revision <= self.compact_revision {
                    return Err(StoreError::Compacted);
                }
                if *revision > self.revision {
                    return Err(StoreError::FutureRev);
                }
                self.compact_revision = *revision;
                undo.changed = true;
                Ok(Response::Compact {
                    revision: self.revision,
                })
            }
        }
    }

    /// Takes back one [`KvModel::apply_logged`] (the most recent not yet undone).
    pub(crate) fn undo(&mut self, undo: Undo) {
        if !undo.changed {
            return;
        }
        for key in undo.pushed.iter().rev() {
            if let Some(history) = self.keys.get_mut(key) {
                history.pop();
                if history.is_empty() {
                    self.keys.remove(key);
                }
            }
        }
        for id in &undo.leases_added {
            self.leases.remove(id);
        }
        for id in &undo.leases_removed {
            self.leases.insert(*id);
        }
        if undo.events_pushed {
            self.events.pop();
        }
        self.revision = undo.revision;
        self.compact_revision = undo.compact_revision;
        self.content_hash = undo.content_hash;
    }

    fn read_revision(&self, requested: i64) -> Result<i64, StoreError> {
        if requested > self.revision {
            return Err(StoreError::FutureRev);
        }
        let rev = if requested <= 0 {
            self.revision
        } else {
            requested
        };
        if rev < self.compact_revision {
            return Err(StoreError::Compacted);
        }
        Ok(rev)
    }

    fn apply_txn(&mut self, txn: &Txn, undo: &mut Undo) -> Result<Response, StoreError> {
        let succeeded = txn.compare.iter().all(|c| self.compare_holds(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            if let TxnOp::Put(p) = op {
                if p.lease != 0 && !self.leases.contains(&p.lease) {
                    return Err(StoreError::LeaseNotFound);
                }
            }
        }
        for op in ops {
            if let TxnOp::Range(r) = op {
                if r.revision > 0 {
                    self.read_revision(r.revision)?;
                }
            }
        }
        let mut w = self.begin();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let result = match op {
                TxnOp::Range(r) => {
                    let view = if w.events.is_empty() {
                        self.revision
                    } else {
                        w.revision
                    };
                    let rev = if r.revision > 0 { r.revision } else { view };
                    TxnOpResult::Range(self.range(&r.key, &r.range_end, rev, r.limit))
                }
                TxnOp::Put(p) => {
                    let prev = self.put(&mut w, p, undo);
                    TxnOpResult::Put {
                        prev_kv: if p.prev_kv { prev } else { None },
                    }
                }
                TxnOp::DeleteRange(d) => {
                    let deleted = self.delete_range(&mut w, &d.key, &d.range_end, undo);
                    TxnOpResult::DeleteRange {
                        deleted: deleted.len() as i64,
                        prev_kvs: if d.prev_kv { deleted } else { Vec::new() },
                    }
                }
            };
            results.push(result);
        }
        self.finish(w, undo);
        Ok(Response::Txn {
            revision: self.revision,
            succeeded,
            results,
        })
    }

    fn compare_holds(&self, compare: &Compare) -> bool {
        self.compare_at(compare, i64::MAX)
    }

    /// Whether a txn compare holds on the state at `revision`.
    pub fn compare_at(&self, compare: &Compare, revision: i64) -> bool {
        let mut any = false;
        if let Some(bounds) = key_bounds(&compare.key, &compare.range_end) {
            for (_, history) in self.keys.range::<[u8], _>(bounds) {
                if let Some(v) = live_at(history, revision) {
                    any = true;
                    if !compare_version(compare, Some(v)) {
                        return false;
                    }
                }
            }
        }
        if !any {
            return !matches!(compare.target, CompareTarget::Value(_))
                && compare_version(compare, None);
        }
        true
    }

    fn begin(&self) -> Write {
        Write {
            revision: self.revision + 1,
            events: Vec::new(),
        }
    }

    fn finish(&mut self, w: Write, undo: &mut Undo) {
        if !w.events.is_empty() {
            self.revision = w.revision;
            self.events.push(w.events);
            undo.events_pushed = true;
            undo.changed = true;
        }
    }

    fn push_version(&mut self, key: &Bytes, version: Version, undo: &mut Undo) {
        self.content_hash ^= hash_version(key, &version);
        self.keys.entry(key.clone()).or_default().push(version);
        undo.pushed.push(key.clone());
    }

    /// Returns the key's live version before the put.
    fn put(&mut self, w: &mut Write, put: &Put, undo: &mut Undo) -> Option<KeyValue> {
        let history = self.keys.get(&put.key);
        let prev = history.and_then(|h| latest_live(h)).cloned();
        let prev_event = history
            .and_then(|h| live_at(h, w.revision - 1))
            .map(|v| v.to_kv(&put.key));
        let version = Version {
            mod_revision: w.revision,
            create_revision: prev.as_ref().map_or(w.revision, |p| p.create_revision),
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: put.value.clone(),
            lease: put.lease,
        };
        w.events.push(Event {
            kind: EventKind::Put,
            kv: version.to_kv(&put.key),
            prev_kv: prev_event,
        });
        self.push_version(&put.key, version, undo);
        prev.map(|p| p.to_kv(&put.key))
    }

    fn delete_range(
        &mut self,
        w: &mut Write,
        key: &[u8],
        range_end: &[u8],
        undo: &mut Undo,
    ) -> Vec<KeyValue> {
        let Some(bounds) = key_bounds(key, range_end) else {
            return Vec::new();
        };
        let live: Vec<Bytes> = self
            .keys
            .range::<[u8], _>(bounds)
            .filter(|(_, h)| latest_live(h).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        live.iter()
            .filter_map(|k| self.delete_key(w, k, undo))
            .collect()
    }

    fn delete_key(&mut self, w: &mut Write, key: &Bytes, undo: &mut Undo) -> Option<KeyValue> {
        let history = self.keys.get(key)?;
        let prev = latest_live(history)?.to_kv(key);
        let prev_event = live_at(history, w.revision - 1).map(|v| v.to_kv(key));
        w.events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.clone(),
                mod_revision: w.revision,
                ..KeyValue::default()
            },
            prev_kv: prev_event,
        });
        let tombstone = Version {
            mod_revision: w.revision,
            create_revision: 0,
            version: 0,
            value: Bytes::new(),
            lease: 0,
        };
        self.push_version(key, tombstone, undo);
        Some(prev)
    }
}

/// The request as the model should apply it given its outcome: a lease grant that let the
/// server choose the id takes the id the response reports.
pub(crate) fn resolve(request: &Request, outcome: &Outcome) -> Request {
    match (request, outcome) {
        (Request::LeaseGrant { ttl, id: 0 }, Outcome::Ok(Response::LeaseGrant { id, .. })) => {
            Request::LeaseGrant { ttl: *ttl, id: *id }
        }
        _ => request.clone(),
    }
}

/// Whether the model's response is the recorded one (a lease grant's TTL may be adjusted
/// by the server and is not compared; a compaction's header is the revision when the
/// server replied, so it may be later than the one the compaction applied at).
pub(crate) fn same_response(model: &Response, recorded: &Response) -> bool {
    match (model, recorded) {
        (Response::Compact { revision: applied }, Response::Compact { revision: replied }) => {
            applied <= replied
        }
        (
            Response::LeaseGrant {
                revision: a, id: x, ..
            },
            Response::LeaseGrant {
                revision: b, id: y, ..
            },
        ) => a == b && x == y,
        _ => model == recorded,
    }
}

fn live_at(history: &[Version], revision: i64) -> Option<&Version> {
    let end = history.partition_point(|v| v.mod_revision <= revision);
    history[..end].last().filter(|v| !v.is_tombstone())
}

fn latest_live(history: &[Version]) -> Option<&Version> {
    history.last().filter(|v| !v.is_tombstone())
}

/// Bounds for `BTreeMap::range` over byte-string keys.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Bounds for `BTreeMap::range` from etcd's key/range_end convention, `None` when the
/// range is empty.
pub(crate) fn key_bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> Option<KeyBounds<'a>> {
    match range_end {
        [] => Some((Bound::Included(key), Bound::Included(key))),
        [0] => Some((Bound::Included(key), Bound::Unbounded)),
        end if end <= key => None,
        end => Some((Bound::Included(key), Bound::Excluded(end))),
    }
}

/// Whether `key` is in etcd's key/range_end range.
pub(crate) fn in_range(key: &[u8], start: &[u8], range_end: &[u8]) -> bool {
    match range_end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

fn compare_version(compare: &Compare, v: Option<&Version>) -> bool {
    use std::cmp::Ordering;
    let ordering: Ordering = match &compare.target {
        CompareTarget::Value(theirs) => {
            let ours: &[u8] = v.map_or(&[], |v| &v.value);
            ours.cmp(theirs.as_ref())
        }
        CompareTarget::Version(n) => v.map_or(0, |v| v.version).cmp(n),
        CompareTarget::CreateRevision(n) => v.map_or(0, |v| v.create_revision).cmp(n),
        CompareTarget::ModRevision(n) => v.map_or(0, |v| v.mod_revision).cmp(n),
        CompareTarget::Lease(n) => v.map_or(0, |v| v.lease).cmp(n),
    };
    match compare.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

/// FNV-1a with a splitmix finish: deterministic across runs, good enough for fingerprints.
pub(crate) struct Hasher(u64);

impl Hasher {
    pub(crate) fn new() -> Self {
        Hasher(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.u64(bytes.len() as u64);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.0 = splitmix(self.0 ^ v);
    }

    pub(crate) fn finish(&self) -> u64 {
        splitmix(self.0)
    }
}

pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash_version(key: &[u8], v: &Version) -> u64 {
    let mut h = Hasher::new();
    h.bytes(key);
    h.bytes(&v.value);
    h.u64(v.mod_revision as u64);
    h.u64(v.create_revision as u64);
    h.u64(v.version as u64);
    h.u64(v.lease as u64);
    h.finish()
}

fn hash_lease(id: i64) -> u64 {
    splitmix(splitmix(id as u64) ^ 0x1ea5e)
}
