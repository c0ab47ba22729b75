//! The node's own state in the store's engine, beside the store: the members, auth, the
//! membership in force and the applied position (index and term). The node writes them in
//! the same engine transaction as the applies they go with (see `Node::apply`), so any
//! commit of the engine — the last durable one after a crash, a view a leader streams to a
//! follower — is one consistent state machine at one Raft index. That is what lets the Raft
//! log be released behind the engine's durable commit (a snapshot is then only a marker:
//! [`marker_of`]) and a follower be sent the engine itself ([`snapshot_of_view`]).

use std::sync::Arc;

use bytes::Bytes;

use super::proposal::{decode_large, encode_large};
use super::{Image, Member, Members, NodeError};
use crate::auth::AuthStore;
use crate::mvcc::{node_row_key, Read, Store, StoreConfig, Table, View};
use crate::raft::{ConfState, Index, InitialState, Snapshot, SnapshotMeta, Term};

const APPLIED: &str = "applied";
const MEMBERS: &str = "members";
const AUTH: &str = "auth";
const CONF: &str = "conf";

/// The node's rows, as one commit of the engine holds them.
#[derive(Clone, Debug)]
pub(crate) struct NodeRows {
    pub applied_index: Index,
    pub applied_term: Term,
    pub members: Members,
    pub auth: AuthStore,
    pub conf: ConfState,
}

fn corrupt(reason: String) -> NodeError {
    NodeError::CorruptEngine { reason }
}

fn decode_row<T: for<'de> serde::Deserialize<'de>>(
    name: &str,
    row: Option<Vec<u8>>,
) -> Result<T, NodeError> {
    let row = row.ok_or_else(|| corrupt(format!("the node's {name} row is missing")))?;
    decode_large(&row).ok_or_else(|| corrupt(format!("the node's {name} row does not decode")))
}

impl NodeRows {
    /// The rows `get` reads (`None`: the engine holds no applied state yet).
    fn load(mut get: impl FnMut(&str) -> Option<Vec<u8>>) -> Result<Option<NodeRows>, NodeError> {
        let Some(applied) = get(APPLIED) else {
            return Ok(None);
        };
        let (applied_index, applied_term): (Index, Term) = decode_row(APPLIED, Some(applied))?;
        Ok(Some(NodeRows {
            applied_index,
            applied_term,
            members: decode_row(MEMBERS, get(MEMBERS))?,
            auth: decode_row(AUTH, get(AUTH))?,
            conf: decode_row(CONF, get(CONF))?,
        }))
    }

    pub fn of_store(store: &Store) -> Result<Option<NodeRows>, NodeError> {
        NodeRows::load(|name| store.node_row(name))
    }

    pub fn of_view(view: &dyn Read) -> Result<Option<NodeRows>, NodeError> {
        let mut failure = None;
        let rows = NodeRows::load(|name| match view.get(Table::Meta, &node_row_key(name)) {
            Ok(row) => row,
            Err(e) => {
                failure = Some(e);
                None
            }
        });
        match failure {
            Some(e) => Err(corrupt(e.to_string())),
            None => rows,
        }
    }

    /// The marker that stands for this state in the Raft log (see [`marker_of`]).
    pub fn marker(&self) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: self.applied_index,
                term: self.applied_term,
                conf_state: self.conf.clone(),
            },
            data: engine_image(&self.members, &self.auth),
        }
    }
}

/// An image whose store lies in the engine (its `store` bytes are empty).
pub(crate) fn engine_image(members: &Members, auth: &AuthStore) -> Bytes {
    Bytes::from(encode_large(&Image {
        members: members.clone(),
        store: Bytes::new(),
        auth: auth.clone(),
    }))
}

/// Writes what changed into the store's open transaction.
pub(crate) fn save(
    store: &mut Store,
    applied: (Index, Term),
    members: Option<&Members>,
    auth: Option<&AuthStore>,
    conf: Option<&ConfState>,
) {
    store.put_node_row(APPLIED, &encode_large(&applied));
    if let Some(members) = members {
        store.put_node_row(MEMBERS, &encode_large(members));
    }
    if let Some(auth) = auth {
        store.put_node_row(AUTH, &encode_large(auth));
    }
    if let Some(conf) = conf {
        store.put_node_row(CONF, &encode_large(conf));
    }
}

/// The snapshot that stands for the state in `view` (a commit of a node's engine): its
/// metadata (applied index and term, membership) and an image of members and auth whose
/// store is the engine itself. A leader sends it with the view's rows; a node passes it to
/// `Raft::compact` once the view's commit is durable.
pub fn snapshot_of_view(view: &dyn Read) -> Result<Snapshot, NodeError> {
    NodeRows::of_view(view)?
        .map(|rows| rows.marker())
        .ok_or_else(|| corrupt("the engine holds no applied state".into()))
}

/// The whole state machine in `view` as one image (members, the store's bytes, auth), as
/// in-memory snapshots hold it: what `Maintenance.Snapshot` streams. It reads the whole
/// store: call it off the server loop.
pub fn image_of_view(view: Arc<dyn View>, config: StoreConfig) -> Result<Snapshot, NodeError> {
    let rows = NodeRows::of_view(&*view)?
        .ok_or_else(|| corrupt("the engine holds no applied state".into()))?;
    let store = Store::open_view(view, config)?;
    let image = Image {
        members: rows.members.clone(),
        store: Bytes::from(store.snapshot()),
        auth: rows.auth.clone(),
    };
    if let Some(e) = store.failure() {
        return Err(corrupt(e.to_string()));
    }
    Ok(Snapshot {
        meta: rows.marker().meta,
        data: Bytes::from(encode_large(&image)),
    })
}

/// A member's whole state as a backup takes it: the store, the members, auth, and the Raft
/// position they reflect.
#[derive(Debug)]
pub struct Backup {
    pub store: Store,
    pub members: Members,
    pub auth: AuthStore,
    pub applied_index: Index,
    pub applied_term: Term,
}

/// The state in `view` (a commit of a node's engine) to be written out as a backup. It
/// reads nothing yet; writing the backup reads the whole store: do it off the server loop.
pub fn backup_of_view(view: Arc<dyn View>, config: StoreConfig) -> Result<Backup, NodeError> {
    let rows = NodeRows::of_view(&*view)?
        .ok_or_else(|| corrupt("the engine holds no applied state".into()))?;
    let store = Store::open_view(view, config)?;
    Ok(Backup {
        store,
        members: rows.members,
        auth: rows.auth,
        applied_index: rows.applied_index,
        applied_term: rows.applied_term,
    })
}

/// A store restored from a backup, made the engine of a founding member of a new cluster of
/// `members` (`keel snapshot restore`): the node's rows at the bootstrap index, written into
/// the store's open transaction. Returns the Raft state to bootstrap the member's log with,
/// the same on every member restored from the same backup with the same members.
pub fn found_cluster_on(store: &mut Store, members: &[Member], auth: &AuthStore) -> InitialState {
    let members = Members::new(members.iter().cloned());
    let initial =
        InitialState::bootstrap(members.iter().map(|m| m.id), engine_image(&members, auth));
    let meta = &initial.snapshot.meta;
    save(
        store,
        (meta.index, meta.term),
        Some(&members),
        Some(auth),
        Some(&meta.conf_state),
    );
    store.set_applied_index(meta.index);
    initial
}

/// The same, for a store's engine as it is now.
pub fn marker_of(store: &Store) -> Result<Snapshot, NodeError> {
    NodeRows::of_store(store)?
        .map(|rows| rows.marker())
        .ok_or_else(|| corrupt("the engine holds no applied state".into()))
}

/// Joins the engine's state with the Raft log recovered from the WAL. The engine is at
/// `rows.applied_index`; the log must not need entries before it that it no longer has.
///
/// - The engine behind the log's snapshot: the entries between are gone, the member cannot
///   start ([`NodeError::StoreBehind`]).
/// - The engine ahead of the log, or on another branch of it (a leader's snapshot was
///   installed and the node crashed before the log was reset to it): the log is replaced by
///   the engine's marker, and `Some(marker)` is returned for the caller to persist
///   (`Storage::install_snapshot`) before anything else.
/// - Otherwise the entries up to the engine's index count as applied.
pub(crate) fn reconcile(
    initial: &mut InitialState,
    rows: &NodeRows,
    location: &str,
) -> Result<Option<Snapshot>, NodeError> {
    let engine_index = rows.applied_index;
    let snapshot_index = initial.snapshot.meta.index;
    if engine_index < snapshot_index {
        return Err(NodeError::StoreBehind {
            engine_index,
            snapshot_index,
            location: location.to_string(),
        });
    }
    let log_term = if engine_index == snapshot_index {
        Some(initial.snapshot.meta.term)
    } else {
        initial
            .entries
            .iter()
            .find(|e| e.index == engine_index)
            .map(|e| e.term)
    };
    if log_term != Some(rows.applied_term) {
        let marker = rows.marker();
        initial.snapshot = marker.clone();
        initial.entries.clear();
        if rows.applied_term > initial.hard_state.term {
            initial.hard_state.term = rows.applied_term;
            initial.hard_state.vote = None;
        }
        initial.hard_state.commit_index = engine_index;
        initial.applied_index = engine_index;
        return Ok(Some(marker));
    }
    initial.hard_state.commit_index = initial.hard_state.commit_index.max(engine_index);
    initial.applied_index = engine_index;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, EntryPayload, HardState};

    fn rows(applied_index: Index, applied_term: Term) -> NodeRows {
        NodeRows {
            applied_index,
            applied_term,
            members: Members::default(),
            auth: AuthStore::default(),
            conf: ConfState::with_voters([1, 2, 3]),
        }
    }

    /// A log with a snapshot at 10 (term 2) and entries 11..=20, terms 2 then 3 from 16.
    fn initial() -> InitialState {
        InitialState {
            hard_state: HardState {
                term: 3,
                vote: Some(1),
                commit_index: 14,
            },
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 10,
                    term: 2,
                    conf_state: ConfState::with_voters([1, 2, 3]),
                },
                data: Bytes::new(),
            },
            entries: (11..=20)
                .map(|index| Entry {
                    index,
                    term: if index < 16 { 2 } else { 3 },
                    payload: EntryPayload::Empty,
                })
                .collect(),
            applied_index: 10,
        }
    }

    #[test]
    fn an_engine_within_the_log_marks_its_entries_applied() {
        let mut log = initial();
        assert_eq!(reconcile(&mut log, &rows(17, 3), "f").unwrap(), None);
        assert_eq!(log.applied_index, 17);
        assert_eq!(
            log.hard_state.commit_index, 17,
            "applied entries are committed"
        );
        assert_eq!(log.entries.len(), 10);
        let mut log = initial();
        assert_eq!(reconcile(&mut log, &rows(10, 2), "f").unwrap(), None);
        assert_eq!((log.applied_index, log.hard_state.commit_index), (10, 14));
    }

    #[test]
    fn an_engine_behind_the_logs_snapshot_cannot_start() {
        let error = reconcile(&mut initial(), &rows(9, 2), "/data/store.redb").unwrap_err();
        assert!(
            matches!(
                &error,
                NodeError::StoreBehind {
                    engine_index: 9,
                    snapshot_index: 10,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("/data/store.redb"));
    }

    #[test]
    fn an_engine_ahead_of_the_log_or_on_another_branch_replaces_it() {
        for (index, term) in [(25, 4), (17, 4)] {
            let mut log = initial();
            let marker = reconcile(&mut log, &rows(index, term), "f")
                .unwrap()
                .expect("the log is replaced");
            assert_eq!((marker.meta.index, marker.meta.term), (index, term));
            assert_eq!(log.snapshot, marker);
            assert!(log.entries.is_empty());
            assert_eq!(log.applied_index, index);
            assert_eq!(log.hard_state.commit_index, index);
            assert_eq!((log.hard_state.term, log.hard_state.vote), (4, None));
            log.validate().unwrap();
        }
    }
}
