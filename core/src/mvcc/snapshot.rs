//! The store's whole replicated state as bytes, and back.
//!
//! Layout: `b"KEELMVCC"`, format version (u32 LE), body length (u64 LE), CRC-32C of the
//! body (u32 LE), then the body: bincode (varint) of [`Body`] — applied index, current and
//! compact revision, every key in key order with its visible history, the lease table and
//! the alarms. Restoring checks the header, the length and the checksum, decodes with a
//! size limit, then validates the structure (ordering, revisions, versions, lease
//! attachments), so corrupt bytes give a [`SnapshotError`], never a panic or a store that
//! breaks its invariants. Lease timers and compaction backlog are not part of it: a
//! restored store is a follower with fully compacted history.

use std::ops::Bound;

use bytes::Bytes;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::codec::Codec;

use super::engine::{Engine, MemEngine, Table};
use super::error::SnapshotError;
use super::key_index::{logical_entries, Entry};
use super::lease::Lease;
use super::quota::LEASE_OVERHEAD_BYTES;
use super::request::{AlarmMember, AlarmType};
use super::revision::Revision;
use super::store::{Store, StoreConfig};

const MAGIC: &[u8; 8] = b"KEELMVCC";
const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 4;

#[derive(Serialize, Deserialize)]
struct Body {
    applied_index: u64,
    current_rev: i64,
    compact_rev: i64,
    keys: Vec<SnapKey>,
    leases: Vec<SnapLease>,
    alarms: Vec<AlarmMember>,
}

#[derive(Serialize, Deserialize)]
struct SnapKey {
    key: Bytes,
    entries: Vec<VersionRecord>,
}

/// One version of a key as a snapshot carries it: a tombstone has version 0, no create
/// revision, lease or value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub main: i64,
    pub sub: i64,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Bytes,
}

impl VersionRecord {
    pub fn is_tombstone(&self) -> bool {
        self.version == 0
    }
}

/// What [`Store::snapshot`] writes: [`Body`]'s encoding, serialized straight from the store
/// rather than from a copy of it (a copy of every key's history is as large as the store).
#[derive(Serialize)]
struct BodyRef<'a> {
    applied_index: u64,
    current_rev: i64,
    compact_rev: i64,
    keys: KeysRef<'a>,
    leases: Vec<SnapLease>,
    alarms: Vec<AlarmMember>,
}

/// Encoded as `Vec<SnapKey>`: the keys with a version compaction keeps. Two passes over
/// the store: the count first, as the encoding needs it up front.
struct KeysRef<'a> {
    store: &'a Store,
}

impl Serialize for KeysRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let compact_rev = self.store.compact_revision();
        let mut len = 0usize;
        self.store
            .for_each_history_header(b"", Bound::Unbounded, &mut |_, entries| {
                len += usize::from(!logical_entries(entries, compact_rev).is_empty());
                true
            });
        let mut seq = serializer.serialize_seq(Some(len))?;
        let mut failed = None;
        self.store
            .for_each_history(b"", Bound::Unbounded, &mut |key, entries| {
                let entries = logical_entries(entries, compact_rev);
                if entries.is_empty() {
                    return true;
                }
                match seq.serialize_element(&KeyRef { key, entries }) {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            });
        if let Some(e) = failed {
            return Err(e);
        }
        seq.end()
    }
}

/// Encoded as `SnapKey`.
struct KeyRef<'a> {
    key: &'a Bytes,
    entries: &'a [Entry],
}

impl Serialize for KeyRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut key = serializer.serialize_struct("SnapKey", 2)?;
        key.serialize_field("key", self.key)?;
        key.serialize_field("entries", &EntriesRef(self.entries))?;
        key.end()
    }
}

/// Encoded as `Vec<VersionRecord>`.
struct EntriesRef<'a>(&'a [Entry]);

impl Serialize for EntriesRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for entry in self.0 {
            seq.serialize_element(&EntryRef(entry))?;
        }
        seq.end()
    }
}

/// Encoded as `VersionRecord`.
struct EntryRef<'a>(&'a Entry);

impl Serialize for EntryRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut entry = serializer.serialize_struct("VersionRecord", 6)?;
        entry.serialize_field("main", &e.rev.main)?;
        entry.serialize_field("sub", &e.rev.sub)?;
        entry.serialize_field("create_revision", &e.create_revision)?;
        entry.serialize_field("version", &e.version)?;
        entry.serialize_field("lease", &e.lease)?;
        entry.serialize_field("value", &e.value)?;
        entry.end()
    }
}

#[derive(Serialize, Deserialize)]
struct SnapLease {
    id: i64,
    ttl_s: i64,
    remaining_ttl_s: i64,
}

/// Varint integers: a snapshot holds many small ones.
const SNAPSHOTS: Codec = Codec::varint(u64::MAX);

fn invalid(reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid {
        reason: reason.into(),
    }
}

impl Store {
    /// The replicated state as bytes (see the module docs for the format).
    pub fn snapshot(&self) -> Vec<u8> {
        let body = BodyRef {
            applied_index: self.applied_index(),
            current_rev: self.current_revision(),
            compact_rev: self.compact_revision(),
            keys: KeysRef { store: self },
            leases: self
                .lessor
                .leases
                .iter()
                .map(|(&id, l)| SnapLease {
                    id,
                    ttl_s: l.ttl_s,
                    remaining_ttl_s: l.remaining_ttl_s,
                })
                .collect(),
            alarms: self.alarms.iter().copied().collect(),
        };
        // Sized first and written once, header included: a snapshot is as large as the
        // store, and growing (then copying) a buffer that size stalls the apply loop.
        let body_bytes = match SNAPSHOTS.size_bytes(&body) {
            Ok(size) => size,
            Err(e) => panic!("sizing an mvcc snapshot failed: {e}"),
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + usize::try_from(body_bytes).unwrap_or(0));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&body_bytes.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // the checksum, once the body is there
        if let Err(e) = SNAPSHOTS.encode_into(&mut out, &body) {
            panic!("encoding an mvcc snapshot failed: {e}");
        }
        debug_assert_eq!(out.len() as u64, HEADER_BYTES as u64 + body_bytes);
        let checksum = crc32c::crc32c(&out[HEADER_BYTES..]);
        out[HEADER_BYTES - 4..HEADER_BYTES].copy_from_slice(&checksum.to_le_bytes());
        out
    }

    /// A store holding exactly the snapshot's state, as a follower (call
    /// [`Store::promote`] on the leader).
    pub fn restore(bytes: &[u8], config: StoreConfig) -> Result<Store, SnapshotError> {
        Store::restore_into(bytes, Box::new(MemEngine::default()), config)
    }

    /// The same, written into `engine`, which must hold no store.
    pub fn restore_into(
        bytes: &[u8],
        engine: Box<dyn Engine>,
        config: StoreConfig,
    ) -> Result<Store, SnapshotError> {
        let body = decode(bytes)?;
        build(body, Store::empty(engine, config))
    }

    /// The engine emptied of every row, to restore into again: what a restore that a crash
    /// interrupted left behind (see `Node::open`). Row by row, so only for small stores.
    pub(crate) fn emptied(self) -> Result<Store, super::EngineError> {
        let config = *self.config();
        let mut engine = self.into_engine();
        for table in Table::ALL {
            for key in super::engine::keys_of(&*engine, table, false)? {
                engine.delete(table, &key)?;
            }
        }
        Ok(Store::empty(engine, config))
    }
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn decode(bytes: &[u8]) -> Result<Body, SnapshotError> {
    if bytes.len() < HEADER_BYTES {
        return Err(SnapshotError::TooShort {
            len_bytes: bytes.len(),
            header_bytes: HEADER_BYTES,
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u32::from_le_bytes(read_array(bytes, 8));
    if version != FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion {
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let expected_bytes = u64::from_le_bytes(read_array(bytes, 12));
    let stored = u32::from_le_bytes(read_array(bytes, 20));
    let body = &bytes[HEADER_BYTES..];
    if body.len() as u64 != expected_bytes {
        return Err(SnapshotError::LengthMismatch {
            found_bytes: body.len() as u64,
            expected_bytes,
        });
    }
    let computed = crc32c::crc32c(body);
    if computed != stored {
        return Err(SnapshotError::ChecksumMismatch { stored, computed });
    }
    SNAPSHOTS.decode(body).map_err(|e| SnapshotError::Decode {
        reason: e.to_string(),
    })
}

fn build(body: Body, store: Store) -> Result<Store, SnapshotError> {
    let mut builder = StoreBuilder::on(store, body.current_rev, body.compact_rev)?;
    for l in &body.leases {
        builder.lease(l.id, l.ttl_s, l.remaining_ttl_s)?;
    }
    for snap in body.keys {
        builder.key(snap.key, &snap.entries)?;
    }
    builder.alarms(&body.alarms)?;
    builder.store.restore_applied_index(body.applied_index);
    builder.finish()
}

/// A store written from versions read elsewhere — a snapshot, or a backup in etcd's format:
/// leases first, then every key with its history in key order. Each key's history is
/// checked as a snapshot's is, so a damaged or hand-made source gives a [`SnapshotError`],
/// never a store that breaks its invariants.
pub struct StoreBuilder {
    store: Store,
    current_rev: i64,
    compact_rev: i64,
    previous_key: Option<Bytes>,
    keys_written: u64,
    bytes_since_commit: u64,
}

/// A builder commits its engine after about this many bytes, so no one transaction holds
/// a whole store.
const BUILDER_COMMIT_BYTES: u64 = 64 * 1024 * 1024;

impl std::fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("current_rev", &self.current_rev)
            .field("compact_rev", &self.compact_rev)
            .field("keys_written", &self.keys_written)
            .finish_non_exhaustive()
    }
}

impl StoreBuilder {
    /// A store at `current_rev`, compacted at `compact_rev`, written into `engine`, which
    /// must hold no store.
    pub fn new(
        engine: Box<dyn Engine>,
        config: StoreConfig,
        current_rev: i64,
        compact_rev: i64,
    ) -> Result<StoreBuilder, SnapshotError> {
        StoreBuilder::on(Store::empty(engine, config), current_rev, compact_rev)
    }

    fn on(
        mut store: Store,
        current_rev: i64,
        compact_rev: i64,
    ) -> Result<StoreBuilder, SnapshotError> {
        if current_rev < 1 || compact_rev < -1 || compact_rev > current_rev {
            return Err(invalid(format!(
                "revisions out of order: compact {compact_rev} current {current_rev}"
            )));
        }
        if store.holds_a_store() {
            return Err(invalid("the engine restored into already holds a store"));
        }
        store.restore_revisions(current_rev, compact_rev);
        Ok(StoreBuilder {
            store,
            current_rev,
            compact_rev,
            previous_key: None,
            keys_written: 0,
            bytes_since_commit: 0,
        })
    }

    /// A lease granted for `ttl_s`, with `remaining_ttl_s` checkpointed (0: none). Leases
    /// come before the keys attached to them.
    pub fn lease(
        &mut self,
        id: i64,
        ttl_s: i64,
        remaining_ttl_s: i64,
    ) -> Result<(), SnapshotError> {
        if id == 0 || ttl_s <= 0 || remaining_ttl_s < 0 || self.store.lessor.contains(id) {
            return Err(invalid(format!("lease {id} is malformed or repeated")));
        }
        if self.previous_key.is_some() {
            return Err(invalid(format!("lease {id} comes after keys")));
        }
        let lease = Lease {
            ttl_s,
            remaining_ttl_s,
        };
        self.store.save_lease(id, &lease);
        self.store.lessor.insert_restored(id, lease);
        self.store.usage.add_bytes(LEASE_OVERHEAD_BYTES);
        Ok(())
    }

    /// One key's history, oldest first; keys come in strictly ascending order.
    pub fn key(&mut self, key: Bytes, history: &[VersionRecord]) -> Result<(), SnapshotError> {
        if key.is_empty() || self.previous_key.as_ref().is_some_and(|p| p >= &key) {
            return Err(invalid("keys empty or not strictly ascending"));
        }
        let entries = validate_history(&key, history, self.current_rev, self.compact_rev)?;
        account_history(&mut self.store, &key, &entries)?;
        self.keys_written += 1;
        self.bytes_since_commit += entries.iter().map(|e| e.size_bytes(key.len())).sum::<u64>();
        self.previous_key = Some(key);
        if self.bytes_since_commit >= BUILDER_COMMIT_BYTES {
            self.bytes_since_commit = 0;
            self.store
                .commit(false)
                .map_err(|e| invalid(e.to_string()))?;
        }
        Ok(())
    }

    pub fn alarms(&mut self, alarms: &[AlarmMember]) -> Result<(), SnapshotError> {
        restore_alarms(&mut self.store, alarms)
    }

    /// Keys written so far.
    pub fn keys_written(&self) -> u64 {
        self.keys_written
    }

    /// The store, its engine committed (not durably: the caller decides when).
    pub fn finish(mut self) -> Result<Store, SnapshotError> {
        // Versions at or before the compact revision have no log row to rebuild their
        // index rows from: they go to the engine now.
        self.store.checkpoint_index();
        self.store
            .commit(false)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(self.store)
    }
}

/// The part of a key's history (oldest first) compaction at `compact_rev` keeps: what a
/// source compacted but not yet cleaned up (as etcd's file can be) still holds is dropped.
pub fn compacted_history(history: &[VersionRecord], compact_rev: i64) -> &[VersionRecord] {
    let at_or_before = history.partition_point(|e| e.main <= compact_rev);
    let Some(latest) = at_or_before.checked_sub(1).map(|i| &history[i]) else {
        return history;
    };
    if latest.is_tombstone() && latest.main < compact_rev {
        &history[at_or_before..]
    } else {
        &history[at_or_before - 1..]
    }
}

fn restore_alarms(store: &mut Store, alarms: &[AlarmMember]) -> Result<(), SnapshotError> {
    for alarm in alarms {
        if alarm.alarm == AlarmType::None || !store.alarms.insert(*alarm) {
            return Err(invalid("alarm of type NONE or repeated"));
        }
    }
    store.save_alarms();
    Ok(())
}

/// Checks one key's history: revisions strictly increasing and within bounds, a version
/// chain that restarts after each tombstone, nothing hidden by compaction.
fn validate_history(
    key: &Bytes,
    history: &[VersionRecord],
    current_rev: i64,
    compact_rev: i64,
) -> Result<Vec<Entry>, SnapshotError> {
    let bad = |what: &str| invalid(format!("key {key:?}: {what}"));
    let mut entries: Vec<Entry> = Vec::with_capacity(history.len());
    for (i, s) in history.iter().enumerate() {
        let rev = Revision::new(s.main, s.sub);
        if s.main < 1 || s.main > current_rev || s.sub < 0 {
            return Err(bad("revision out of range"));
        }
        let prev = entries.last();
        if prev.is_some_and(|p| p.rev >= rev) {
            return Err(bad("revisions not increasing"));
        }
        if s.version == 0 {
            if s.create_revision != 0
                || s.lease != 0
                || !s.value.is_empty()
                || prev.is_some_and(Entry::is_tombstone)
                || (prev.is_none() && s.main != compact_rev)
            {
                return Err(bad("malformed tombstone"));
            }
        } else {
            let expected = match prev {
                Some(p) if !p.is_tombstone() => Some((p.version + 1, p.create_revision)),
                Some(_) => Some((1, s.main)),
                None if s.main > compact_rev => Some((1, s.main)),
                None => None,
            };
            let chain_ok = match expected {
                Some((version, create)) => s.version == version && s.create_revision == create,
                None => s.version >= 1 && s.create_revision >= 1 && s.create_revision <= s.main,
            };
            if !chain_ok {
                return Err(bad("version chain broken"));
            }
        }
        if i > 0 && s.main <= compact_rev {
            return Err(bad("history hidden by compaction"));
        }
        entries.push(Entry::new(
            rev,
            s.create_revision,
            s.version,
            s.lease,
            s.value.clone(),
        ));
    }
    if entries.is_empty() || (entries[0].rev.main < compact_rev && entries[0].is_tombstone()) {
        return Err(bad("empty history or compacted tombstone"));
    }
    Ok(entries)
}

/// Writes one key's versions with their size, garbage, history log and lease rows.
fn account_history(store: &mut Store, key: &Bytes, entries: &[Entry]) -> Result<(), SnapshotError> {
    if let Some(latest) = entries.last().filter(|e| !e.is_tombstone() && e.lease != 0) {
        if !store.lessor.contains(latest.lease) {
            return Err(invalid(format!(
                "key {key:?} attached to missing lease {}",
                latest.lease
            )));
        }
        store.attach(latest.lease, key);
    }
    store.usage.add_key();
    for (i, entry) in entries.iter().enumerate() {
        let bytes = entry.size_bytes(key.len());
        store.usage.add_bytes(bytes);
        store.put_version(key, entry);
        if entry.rev.main >= store.compact_revision() {
            store.log_change(key, entry);
        }
        let next = entries.get(i + 1);
        if entry.is_tombstone() {
            // Unreachable once compaction passes it, or reaches it when a put of the same
            // revision (a txn's delete, then put) follows (see `key_index::first_logical`).
            let overwritten_at_once = next.is_some_and(|n| n.rev.main == entry.rev.main);
            let at = if overwritten_at_once {
                entry.rev.main
            } else {
                entry.rev.main + 1
            };
            store.add_garbage(at, bytes);
        } else if let Some(next) = next {
            store.add_garbage(next.rev.main, bytes);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(main: i64, create_revision: i64, version: i64, lease: i64) -> VersionRecord {
        VersionRecord {
            main,
            sub: 0,
            create_revision,
            version,
            lease,
            value: if version == 0 {
                Bytes::new()
            } else {
                Bytes::from_static(b"v")
            },
        }
    }

    fn body(keys: Vec<SnapKey>) -> Body {
        Body {
            applied_index: 9,
            current_rev: 10,
            compact_rev: 3,
            keys,
            leases: vec![SnapLease {
                id: 7,
                ttl_s: 10,
                remaining_ttl_s: 0,
            }],
            alarms: vec![],
        }
    }

    fn key(name: &'static str, entries: Vec<VersionRecord>) -> SnapKey {
        SnapKey {
            key: Bytes::from_static(name.as_bytes()),
            entries,
        }
    }

    fn restore_body(body: Body) -> Result<Store, SnapshotError> {
        build(body, Store::new(StoreConfig::default()))
    }

    #[test]
    fn a_well_formed_body_restores() {
        let ok = body(vec![
            key(
                "a",
                vec![
                    entry(2, 1, 3, 7),
                    entry(5, 1, 4, 0),
                    entry(6, 0, 0, 0),
                    entry(8, 8, 1, 7),
                ],
            ),
            key("b", vec![entry(4, 4, 1, 0)]),
        ]);
        let store = restore_body(ok).unwrap();
        assert_eq!(store.current_revision(), 10);
    }

    #[test]
    fn structural_damage_behind_a_valid_checksum_is_refused() {
        let cases: Vec<(&str, Body)> = vec![
            (
                "unsorted keys",
                body(vec![
                    key("b", vec![entry(4, 4, 1, 0)]),
                    key("a", vec![entry(5, 5, 1, 0)]),
                ]),
            ),
            ("empty key", body(vec![key("", vec![entry(4, 4, 1, 0)])])),
            ("empty history", body(vec![key("a", vec![])])),
            (
                "revision beyond current",
                body(vec![key("a", vec![entry(11, 11, 1, 0)])]),
            ),
            (
                "revisions not increasing",
                body(vec![key("a", vec![entry(5, 5, 1, 0), entry(5, 5, 2, 0)])]),
            ),
            (
                "version chain broken",
                body(vec![key("a", vec![entry(5, 5, 1, 0), entry(6, 5, 3, 0)])]),
            ),
            (
                "creation not at version 1",
                body(vec![key("a", vec![entry(5, 5, 2, 0)])]),
            ),
            (
                "tombstone first",
                body(vec![key("a", vec![entry(5, 0, 0, 0)])]),
            ),
            (
                "two entries hidden by compaction",
                body(vec![key("a", vec![entry(2, 2, 1, 0), entry(3, 2, 2, 0)])]),
            ),
            (
                "missing lease",
                body(vec![key("a", vec![entry(5, 5, 1, 99)])]),
            ),
        ];
        for (what, b) in cases {
            assert!(
                matches!(restore_body(b), Err(SnapshotError::Invalid { .. })),
                "{what}"
            );
        }
        let mut bad_revs = body(vec![]);
        bad_revs.compact_rev = 11;
        assert!(matches!(
            restore_body(bad_revs),
            Err(SnapshotError::Invalid { .. })
        ));
        let mut zero_lease = body(vec![]);
        zero_lease.leases[0].id = 0;
        assert!(matches!(
            restore_body(zero_lease),
            Err(SnapshotError::Invalid { .. })
        ));
    }
}
