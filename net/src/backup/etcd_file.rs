//! etcd's backend file: a bbolt database with etcd's buckets, what `etcdctl snapshot save`
//! writes and `etcdctl snapshot restore` reads. keel writes one from a backup of its state
//! ([`write`]) and reads one, from keel or from etcd, into versions to build a store from
//! ([`read`]). bbolt's page format is the `bbolt-rs` crate's; the buckets and their
//! encodings are etcd's (all integers big-endian):
//!
//! | bucket | key | value |
//! |---|---|---|
//! | `key` | revision: main (8) ‖ `_` ‖ sub (8), then `t` for a tombstone | `mvccpb.KeyValue` (a tombstone: the key alone) |
//! | `meta` | `consistent_index`, `term` | u64 |
//! | `meta` | `scheduledCompactRev`, `finishedCompactRev` | revision (main, sub 0) |
//! | `lease` | id (8) | `leasepb.Lease` (ID, TTL, RemainingTTL) |
//! | `auth` | `authEnabled` / `authRevision` | one byte 0 or 1 / u64 |
//! | `authUsers`, `authRoles` | name | `authpb.User`, `authpb.Role` |
//! | `members` | id in hex | JSON `{"id","peerURLs","name","clientURLs","isLearner"}` |
//! | `members_removed` | id in hex | `removed` |
//! | `cluster` | `clusterVersion` | `3.5.0` |
//! | `alarm` | `etcdserverpb.AlarmMember` | nothing |
//!
//! etcd 3.6's `--bump-revision` leaves a 17-byte `key` row with an empty value at the
//! bumped revision: it marks the revision and holds no version.

use std::collections::BTreeMap;
use std::path::Path;

use bbolt_rs::{BucketApi, BucketRwApi, DbApi, DbRwAPI, TxApi, TxRwRefApi};
use bytes::Bytes;
use keel_core::auth::{AuthStore, Permission, PermissionType, Role, User};
use keel_core::mvcc::{LeaseRecord, Revision, VersionRecord};
use keel_core::node::Backup;
use prost::Message;

use crate::proto::{authpb, etcdserverpb, mvccpb};

pub const KEY_BUCKET: &[u8] = b"key";
pub const META_BUCKET: &[u8] = b"meta";
const LEASE_BUCKET: &[u8] = b"lease";
const AUTH_BUCKET: &[u8] = b"auth";
const AUTH_USERS_BUCKET: &[u8] = b"authUsers";
const AUTH_ROLES_BUCKET: &[u8] = b"authRoles";
const MEMBERS_BUCKET: &[u8] = b"members";
const MEMBERS_REMOVED_BUCKET: &[u8] = b"members_removed";
const CLUSTER_BUCKET: &[u8] = b"cluster";
const ALARM_BUCKET: &[u8] = b"alarm";

const CONSISTENT_INDEX: &[u8] = b"consistent_index";
const TERM: &[u8] = b"term";
const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
const AUTH_ENABLED: &[u8] = b"authEnabled";
const AUTH_REVISION: &[u8] = b"authRevision";
const CLUSTER_VERSION: &[u8] = b"clusterVersion";

const REVISION_BYTES: usize = 17;
const TOMBSTONE_MARK: u8 = b't';
/// Rows written per bbolt transaction: bbolt-rs holds a transaction's pages in memory.
const ROWS_PER_TRANSACTION: usize = 10_000;
/// etcd's fill for buckets written in key order (its `seqPut`): pages nearly full.
const SEQUENTIAL_FILL_PERCENT: f64 = 0.9;

/// etcd's `leasepb.Lease` (not among the vendored API protos: it is etcd's storage format).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeasePb {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// A member as etcd's `members` bucket holds it.
#[derive(serde::Serialize, serde::Deserialize)]
struct MemberJson {
    id: u64,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(rename = "clientURLs", default, skip_serializing_if = "Vec::is_empty")]
    client_urls: Vec<String>,
    #[serde(
        rename = "isLearner",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    is_learner: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdFileError {
    #[error("{path}: not an etcd snapshot database: {reason}")]
    Bolt { path: String, reason: String },
    #[error("{path}: bucket {bucket}, key {key}: {reason}")]
    Row {
        path: String,
        bucket: &'static str,
        key: String,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Store { path: String, reason: String },
}

pub fn revision_key(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(REVISION_BYTES + 1);
    out.extend_from_slice(&main.to_be_bytes());
    out.push(b'_');
    out.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        out.push(TOMBSTONE_MARK);
    }
    out
}

/// A `key` row's revision and whether it marks a tombstone.
pub fn parse_revision_key(key: &[u8]) -> Option<(Revision, bool)> {
    let tombstone = match key.len() {
        REVISION_BYTES => false,
        n if n == REVISION_BYTES + 1 && key[REVISION_BYTES] == TOMBSTONE_MARK => true,
        _ => return None,
    };
    if key[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(key[..8].try_into().ok()?);
    let sub = i64::from_be_bytes(key[9..17].try_into().ok()?);
    Some((Revision::new(main, sub), tombstone))
}

fn bolt_error(path: &Path, e: impl std::fmt::Display) -> EtcdFileError {
    EtcdFileError::Bolt {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// One transaction's rows for one bucket.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn put_rows(
    db: &mut bbolt_rs::Bolt,
    path: &Path,
    bucket: &[u8],
    rows: &Rows,
    fill_percent: Option<f64>,
) -> Result<(), EtcdFileError> {
    db.update(|mut tx| {
        let mut b = tx.create_bucket_if_not_exists(bucket)?;
        if let Some(fill) = fill_percent {
            b.set_fill_percent(fill);
        }
        for (k, v) in rows {
            b.put(k, v)?;
        }
        Ok(())
    })
    .map_err(|e| bolt_error(path, e))
}

/// Writes `backup` as etcd's backend file at `path` (which must not exist), the store's
/// versions in revision order. Returns the file's size. Reads the whole store: call it off
/// the server loop.
pub fn write(path: &Path, backup: &Backup, cluster_version: &str) -> Result<u64, EtcdFileError> {
    let mut db = bbolt_rs::BoltOptions::builder()
        .no_sync()
        .build()
        .open(path)
        .map_err(|e| bolt_error(path, e))?;
    for bucket in [
        KEY_BUCKET,
        META_BUCKET,
        LEASE_BUCKET,
        AUTH_BUCKET,
        AUTH_USERS_BUCKET,
        AUTH_ROLES_BUCKET,
        MEMBERS_BUCKET,
        MEMBERS_REMOVED_BUCKET,
        CLUSTER_BUCKET,
        ALARM_BUCKET,
    ] {
        put_rows(&mut db, path, bucket, &Vec::new(), None)?;
    }
    write_versions(&mut db, path, backup)?;
    let store = &backup.store;
    let mut meta: Rows = vec![
        (
            CONSISTENT_INDEX.to_vec(),
            backup.applied_index.to_be_bytes().to_vec(),
        ),
        (TERM.to_vec(), backup.applied_term.to_be_bytes().to_vec()),
    ];
    if store.compact_revision() > 0 {
        let compacted = revision_key(store.compact_revision(), 0, false);
        meta.push((SCHEDULED_COMPACT.to_vec(), compacted.clone()));
        meta.push((FINISHED_COMPACT.to_vec(), compacted));
    }
    put_rows(&mut db, path, META_BUCKET, &meta, None)?;
    let leases: Rows = store
        .lease_records()
        .iter()
        .map(|l| (l.id.to_be_bytes().to_vec(), lease_row(l)))
        .collect();
    put_rows(&mut db, path, LEASE_BUCKET, &leases, None)?;
    write_auth(&mut db, path, &backup.auth)?;
    write_members(&mut db, path, backup, cluster_version)?;
    let alarms: Rows = store
        .alarms()
        .iter()
        .map(|a| {
            let member = etcdserverpb::AlarmMember {
                member_id: a.member_id,
                alarm: a.alarm as i32,
            };
            (member.encode_to_vec(), Vec::new())
        })
        .collect();
    put_rows(&mut db, path, ALARM_BUCKET, &alarms, None)?;
    let size_bytes = std::fs::metadata(path)
        .map_err(|e| bolt_error(path, e))?
        .len();
    Ok(size_bytes)
}

fn write_versions(
    db: &mut bbolt_rs::Bolt,
    path: &Path,
    backup: &Backup,
) -> Result<(), EtcdFileError> {
    let store = &backup.store;
    let mut versions = store.kept_versions_by_revision();
    for chunk in versions.chunks_mut(ROWS_PER_TRANSACTION) {
        if !store.read_values(chunk) {
            return Err(EtcdFileError::Store {
                path: path.display().to_string(),
                reason: store
                    .failure()
                    .map_or_else(|| "a value is missing".to_string(), ToString::to_string),
            });
        }
        let rows: Rows = chunk
            .iter_mut()
            .map(|v| {
                let row = version_row(&v.key, &v.record);
                // The chunk's values are written: let them go.
                v.record.value = Bytes::new();
                row
            })
            .collect();
        put_rows(db, path, KEY_BUCKET, &rows, Some(SEQUENTIAL_FILL_PERCENT))?;
    }
    Ok(())
}

/// A version as etcd's `key` bucket holds it.
pub fn version_row(key: &Bytes, record: &VersionRecord) -> (Vec<u8>, Vec<u8>) {
    let tombstone = record.is_tombstone();
    let kv = if tombstone {
        mvccpb::KeyValue {
            key: key.clone(),
            ..Default::default()
        }
    } else {
        mvccpb::KeyValue {
            key: key.clone(),
            create_revision: record.create_revision,
            mod_revision: record.main,
            version: record.version,
            value: record.value.clone(),
            lease: record.lease,
        }
    };
    (
        revision_key(record.main, record.sub, tombstone),
        kv.encode_to_vec(),
    )
}

fn lease_row(lease: &LeaseRecord) -> Vec<u8> {
    LeasePb {
        id: lease.id,
        ttl: lease.ttl_s,
        remaining_ttl: lease.remaining_ttl_s,
    }
    .encode_to_vec()
}

fn permission_type(kind: PermissionType) -> i32 {
    match kind {
        PermissionType::Read => authpb::permission::Type::Read as i32,
        PermissionType::Write => authpb::permission::Type::Write as i32,
        PermissionType::ReadWrite => authpb::permission::Type::Readwrite as i32,
    }
}

fn write_auth(db: &mut bbolt_rs::Bolt, path: &Path, auth: &AuthStore) -> Result<(), EtcdFileError> {
    let flags: Rows = vec![
        (AUTH_ENABLED.to_vec(), vec![u8::from(auth.is_enabled())]),
        (
            AUTH_REVISION.to_vec(),
            auth.revision().to_be_bytes().to_vec(),
        ),
    ];
    put_rows(db, path, AUTH_BUCKET, &flags, None)?;
    let users: Rows = auth
        .users()
        .iter()
        .map(|(name, user)| {
            let row = authpb::User {
                name: Bytes::from(name.clone().into_bytes()),
                password: Bytes::from(user.password_hash.clone().unwrap_or_default().into_bytes()),
                roles: user.roles.iter().cloned().collect(),
                options: Some(authpb::UserAddOptions {
                    no_password: user.no_password,
                }),
            };
            (name.as_bytes().to_vec(), row.encode_to_vec())
        })
        .collect();
    put_rows(db, path, AUTH_USERS_BUCKET, &users, None)?;
    let roles: Rows = auth
        .roles()
        .iter()
        .map(|(name, role)| {
            let row = authpb::Role {
                name: Bytes::from(name.clone().into_bytes()),
                key_permission: role
                    .permissions
                    .iter()
                    .map(|p| authpb::Permission {
                        perm_type: permission_type(p.kind),
                        key: Bytes::from(p.key.clone()),
                        range_end: Bytes::from(p.range_end.clone()),
                    })
                    .collect(),
            };
            (name.as_bytes().to_vec(), row.encode_to_vec())
        })
        .collect();
    put_rows(db, path, AUTH_ROLES_BUCKET, &roles, None)
}

fn write_members(
    db: &mut bbolt_rs::Bolt,
    path: &Path,
    backup: &Backup,
    cluster_version: &str,
) -> Result<(), EtcdFileError> {
    let mut members: Rows = Vec::new();
    for m in backup.members.iter() {
        let json = MemberJson {
            id: m.id,
            peer_urls: m.peer_urls.clone(),
            name: m.name.clone(),
            client_urls: m.client_urls.clone(),
            is_learner: m.is_learner,
        };
        let value = serde_json::to_vec(&json).map_err(|e| bolt_error(path, e))?;
        members.push((format!("{:x}", m.id).into_bytes(), value));
    }
    put_rows(db, path, MEMBERS_BUCKET, &members, None)?;
    let removed: Rows = backup
        .members
        .removed_ids()
        .map(|id| (format!("{id:x}").into_bytes(), b"removed".to_vec()))
        .collect();
    put_rows(db, path, MEMBERS_REMOVED_BUCKET, &removed, None)?;
    let version: Rows = vec![(
        CLUSTER_VERSION.to_vec(),
        cluster_version.as_bytes().to_vec(),
    )];
    put_rows(db, path, CLUSTER_BUCKET, &version, None)
}

/// What an etcd backend file holds, read into keel's terms.
#[derive(Debug, Default)]
pub struct EtcdSnapshot {
    /// The Raft index the file reflects (etcd's consistent index).
    pub consistent_index: u64,
    /// The newest revision: the last version's, or the compaction's or a bump's when later.
    pub current_rev: i64,
    /// The revision compaction was scheduled at; -1 when never.
    pub compact_rev: i64,
    /// Every key's versions, oldest first, as the file holds them (compaction not
    /// applied), without their values: [`with_values`] reads them a key at a time.
    pub keys: BTreeMap<Bytes, Vec<VersionRecord>>,
    pub leases: Vec<LeaseRecord>,
    pub auth: AuthStore,
}

/// Reads etcd's backend file at `path` (without the SHA-256 trailer a snapshot stream
/// adds: see `super::copy_checked`): every version's header, leases, auth. Values stay in
/// the file (a store's values can exceed memory).
pub fn read(path: &Path) -> Result<EtcdSnapshot, EtcdFileError> {
    let db = bbolt_rs::Bolt::open_ro(path).map_err(|e| bolt_error(path, e))?;
    let mut failure: Option<EtcdFileError> = None;
    let mut out = EtcdSnapshot {
        compact_rev: -1,
        ..EtcdSnapshot::default()
    };
    let location = path.display().to_string();
    db.view(|tx| {
        let result = read_buckets(&tx, &location, &mut out);
        if let Err(e) = result {
            failure = Some(e);
        }
        Ok(())
    })
    .map_err(|e| bolt_error(path, e))?;
    if let Some(e) = failure {
        return Err(e);
    }
    out.current_rev = out.current_rev.max(out.compact_rev).max(1);
    Ok(out)
}

fn row_error(
    path: &str,
    bucket: &'static str,
    key: &[u8],
    reason: impl Into<String>,
) -> EtcdFileError {
    EtcdFileError::Row {
        path: path.to_string(),
        bucket,
        key: format!("{:?}", Bytes::copy_from_slice(key)),
        reason: reason.into(),
    }
}

fn read_u64(
    path: &str,
    bucket: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<u64, EtcdFileError> {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| row_error(path, bucket, key, "not an 8-byte integer"))
}

fn read_buckets<'tx>(
    tx: &impl TxApi<'tx>,
    path: &str,
    out: &mut EtcdSnapshot,
) -> Result<(), EtcdFileError> {
    if let Some(meta) = tx.bucket(META_BUCKET) {
        if let Some(v) = meta.get(CONSISTENT_INDEX) {
            out.consistent_index = read_u64(path, "meta", CONSISTENT_INDEX, v)?;
        }
        if let Some(v) = meta.get(SCHEDULED_COMPACT) {
            let main = read_u64(path, "meta", SCHEDULED_COMPACT, v)?;
            out.compact_rev = i64::try_from(main)
                .map_err(|_| row_error(path, "meta", SCHEDULED_COMPACT, "out of range"))?;
        }
    }
    let keys = tx.bucket(KEY_BUCKET).ok_or_else(|| EtcdFileError::Bolt {
        path: path.to_string(),
        reason: "it has no `key` bucket".into(),
    })?;
    for (k, v) in keys.iter_entries() {
        read_version(path, k, v, out)?;
    }
    if let Some(leases) = tx.bucket(LEASE_BUCKET) {
        for (k, v) in leases.iter_entries() {
            let lease =
                LeasePb::decode(v).map_err(|e| row_error(path, "lease", k, e.to_string()))?;
            out.leases.push(LeaseRecord {
                id: lease.id,
                ttl_s: lease.ttl,
                remaining_ttl_s: lease.remaining_ttl,
            });
        }
    }
    out.auth = read_auth(tx, path)?;
    Ok(())
}

fn read_version(
    path: &str,
    k: &[u8],
    v: &[u8],
    out: &mut EtcdSnapshot,
) -> Result<(), EtcdFileError> {
    let (rev, tombstone) =
        parse_revision_key(k).ok_or_else(|| row_error(path, "key", k, "not a revision"))?;
    if rev.main < 1 || rev.sub < 0 {
        return Err(row_error(path, "key", k, "revision out of range"));
    }
    out.current_rev = out.current_rev.max(rev.main);
    if v.is_empty() && !tombstone {
        // A revision bump's marker (etcd 3.6): no version.
        return Ok(());
    }
    let kv = mvccpb::KeyValue::decode(v).map_err(|e| row_error(path, "key", k, e.to_string()))?;
    if kv.key.is_empty() {
        return Err(row_error(path, "key", k, "a version of the empty key"));
    }
    let record = if tombstone {
        VersionRecord {
            main: rev.main,
            sub: rev.sub,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Bytes::new(),
        }
    } else {
        if kv.mod_revision != rev.main || kv.version < 1 {
            return Err(row_error(
                path,
                "key",
                k,
                "mod revision or version disagrees with the row",
            ));
        }
        VersionRecord {
            main: rev.main,
            sub: rev.sub,
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            value: Bytes::new(),
        }
    };
    out.keys.entry(kv.key).or_default().push(record);
    Ok(())
}

/// Calls `visit` with each key of `keys` (as [`read`] gave them, histories trimmed as the
/// caller wants) in key order, its versions' values read from the file at `path`.
pub fn with_values(
    path: &Path,
    keys: BTreeMap<Bytes, Vec<VersionRecord>>,
    visit: &mut dyn FnMut(Bytes, Vec<VersionRecord>) -> Result<(), String>,
) -> Result<(), EtcdFileError> {
    let db = bbolt_rs::Bolt::open_ro(path).map_err(|e| bolt_error(path, e))?;
    let location = path.display().to_string();
    let mut keys = Some(keys);
    let mut failure: Option<EtcdFileError> = None;
    db.view(|tx| {
        let (Some(bucket), Some(keys)) = (tx.bucket(KEY_BUCKET), keys.take()) else {
            return Ok(());
        };
        for (key, mut history) in keys {
            for record in history.iter_mut().filter(|r| !r.is_tombstone()) {
                let row = revision_key(record.main, record.sub, false);
                let kv = bucket
                    .get(&row)
                    .ok_or_else(|| row_error(&location, "key", &row, "gone on a second read"))
                    .and_then(|v| {
                        mvccpb::KeyValue::decode(v)
                            .map_err(|e| row_error(&location, "key", &row, e.to_string()))
                    });
                match kv {
                    Ok(kv) => record.value = kv.value,
                    Err(e) => {
                        failure = Some(e);
                        return Ok(());
                    }
                }
            }
            if let Err(reason) = visit(key, history) {
                failure = Some(EtcdFileError::Store {
                    path: location.clone(),
                    reason,
                });
                return Ok(());
            }
        }
        Ok(())
    })
    .map_err(|e| bolt_error(path, e))?;
    failure.map_or(Ok(()), Err)
}

fn read_auth<'tx>(tx: &impl TxApi<'tx>, path: &str) -> Result<AuthStore, EtcdFileError> {
    let (mut enabled, mut revision) = (false, 1);
    if let Some(auth) = tx.bucket(AUTH_BUCKET) {
        enabled = auth.get(AUTH_ENABLED).is_some_and(|v| v == [1]);
        if let Some(v) = auth.get(AUTH_REVISION) {
            revision = read_u64(path, "auth", AUTH_REVISION, v)?;
        }
    }
    let mut users = BTreeMap::new();
    if let Some(bucket) = tx.bucket(AUTH_USERS_BUCKET) {
        for (k, v) in bucket.iter_entries() {
            let user = authpb::User::decode(v)
                .map_err(|e| row_error(path, "authUsers", k, e.to_string()))?;
            let name = String::from_utf8(user.name.to_vec())
                .map_err(|_| row_error(path, "authUsers", k, "name is not UTF-8"))?;
            let password_hash =
                if user.password.is_empty() {
                    None
                } else {
                    Some(String::from_utf8(user.password.to_vec()).map_err(|_| {
                        row_error(path, "authUsers", k, "password hash is not text")
                    })?)
                };
            users.insert(
                name,
                User {
                    password_hash,
                    roles: user.roles.into_iter().collect(),
                    no_password: user.options.is_some_and(|o| o.no_password),
                },
            );
        }
    }
    let mut roles = BTreeMap::new();
    if let Some(bucket) = tx.bucket(AUTH_ROLES_BUCKET) {
        for (k, v) in bucket.iter_entries() {
            let role = authpb::Role::decode(v)
                .map_err(|e| row_error(path, "authRoles", k, e.to_string()))?;
            let name = String::from_utf8(role.name.to_vec())
                .map_err(|_| row_error(path, "authRoles", k, "name is not UTF-8"))?;
            let mut permissions = Vec::with_capacity(role.key_permission.len());
            for p in role.key_permission {
                let kind = match authpb::permission::Type::try_from(p.perm_type) {
                    Ok(authpb::permission::Type::Read) => PermissionType::Read,
                    Ok(authpb::permission::Type::Write) => PermissionType::Write,
                    Ok(authpb::permission::Type::Readwrite) => PermissionType::ReadWrite,
                    Err(_) => {
                        return Err(row_error(path, "authRoles", k, "unknown permission type"))
                    }
                };
                permissions.push(Permission {
                    kind,
                    key: p.key.to_vec(),
                    range_end: p.range_end.to_vec(),
                });
            }
            permissions.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
            roles.insert(name, Role { permissions });
        }
    }
    Ok(AuthStore::from_parts(enabled, revision, users, roles))
}

/// bbolt's page header, then its meta page's fields (bbolt's `page` and `meta` structs).
const PAGE_HEADER_BYTES: usize = 16;
const META_PAGE_SIZE_AT: usize = PAGE_HEADER_BYTES + 8;
const META_FREELIST_AT: usize = PAGE_HEADER_BYTES + 32;
const META_HIGH_WATER_AT: usize = PAGE_HEADER_BYTES + 40;
const META_CHECKSUM_AT: usize = PAGE_HEADER_BYTES + 56;
const FREELIST_PAGE_FLAG: u16 = 0x10;
/// bbolt's meta field for "the freelist is not written to the file".
const NO_FREELIST: u64 = u64::MAX;

fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn read_le_u64(page: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&page[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// etcd writes its database without bbolt's freelist (`NoFreelistSync`), which bbolt-rs
/// cannot open. A reader needs no freelist: this gives the file at `path` (a copy made to
/// be read, never etcd's own) an empty one in a new page past the last in use, and points
/// both meta pages at it. A file that has a freelist is left alone. Returns the bytes the
/// database grew by (a page, or 0).
pub fn add_empty_freelist(path: &Path) -> Result<u64, EtcdFileError> {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
    let broken = |reason: &str| EtcdFileError::Bolt {
        path: path.display().to_string(),
        reason: reason.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| bolt_error(path, e))?;
    let mut first = vec![0u8; META_CHECKSUM_AT + 8];
    file.read_exact(&mut first)
        .map_err(|_| broken("shorter than a meta page"))?;
    let page_bytes = u32::from_le_bytes([
        first[META_PAGE_SIZE_AT],
        first[META_PAGE_SIZE_AT + 1],
        first[META_PAGE_SIZE_AT + 2],
        first[META_PAGE_SIZE_AT + 3],
    ]) as usize;
    if !(512..=1 << 20).contains(&page_bytes) || !page_bytes.is_power_of_two() {
        return Err(broken("its first meta page has no valid page size"));
    }
    let mut metas = [vec![0u8; page_bytes], vec![0u8; page_bytes]];
    for (i, meta) in metas.iter_mut().enumerate() {
        file.seek(SeekFrom::Start((i * page_bytes) as u64))
            .and_then(|_| file.read_exact(meta))
            .map_err(|_| broken("shorter than its two meta pages"))?;
    }
    if metas
        .iter()
        .all(|m| read_le_u64(m, META_FREELIST_AT) != NO_FREELIST)
    {
        return Ok(0);
    }
    let freelist_page = metas
        .iter()
        .map(|m| read_le_u64(m, META_HIGH_WATER_AT))
        .max()
        .unwrap_or(2);
    let mut page = vec![0u8; page_bytes];
    page[..8].copy_from_slice(&freelist_page.to_le_bytes());
    page[8..10].copy_from_slice(&FREELIST_PAGE_FLAG.to_le_bytes());
    let offset = freelist_page
        .checked_mul(page_bytes as u64)
        .ok_or_else(|| broken("its high-water mark is out of range"))?;
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.write_all(&page))
        .map_err(|e| bolt_error(path, e))?;
    for (i, meta) in metas.iter_mut().enumerate() {
        meta[META_FREELIST_AT..META_FREELIST_AT + 8].copy_from_slice(&freelist_page.to_le_bytes());
        meta[META_HIGH_WATER_AT..META_HIGH_WATER_AT + 8]
            .copy_from_slice(&(freelist_page + 1).to_le_bytes());
        let checksum = fnv1a_64(&meta[PAGE_HEADER_BYTES..META_CHECKSUM_AT]);
        meta[META_CHECKSUM_AT..META_CHECKSUM_AT + 8].copy_from_slice(&checksum.to_le_bytes());
        file.seek(SeekFrom::Start((i * page_bytes) as u64))
            .and_then(|_| file.write_all(meta))
            .map_err(|e| bolt_error(path, e))?;
    }
    file.sync_all().map_err(|e| bolt_error(path, e))?;
    Ok(page_bytes as u64)
}
