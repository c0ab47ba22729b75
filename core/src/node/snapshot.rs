//! Snapshots of the node's state machine: taking one (a marker when the store lies in an
//! engine, an image otherwise), restoring a leader's, installing a leader's engine, and
//! releasing the Raft log behind what the engine holds.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::auth::AuthStore;
use crate::coverage::Path;
use crate::mvcc::{Store, StoreConfig};
use crate::raft::{Index, Role, Snapshot, SnapshotMeta};

use super::members::Members;
use super::{engine_state, proposal, Dirty, Node, NodeError};

/// A snapshot's state-machine image: members, store and auth (users, roles, permissions;
/// tokens are not part of it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Image {
    pub(super) members: Members,
    /// As bytes (one length and a copy), not a sequence of `u8` (a call per byte); bincode
    /// writes both the same way.
    pub(super) store: Bytes,
    pub(super) auth: AuthStore,
}

/// What a snapshot image restores. `store` is `None` when the store lies in an engine
/// (a leader's streamed engine, installed with [`Node::install_store`]).
#[derive(Debug)]
pub(super) struct Restored {
    pub(super) store: Option<Store>,
    pub(super) members: Members,
    pub(super) auth: AuthStore,
}

/// The image a snapshot holds; `None` for an empty snapshot (a joining node).
pub(super) fn decode_image(snapshot: &Snapshot) -> Result<Option<Image>, NodeError> {
    if snapshot.data.is_empty() {
        return Ok(None);
    }
    proposal::decode_large(&snapshot.data)
        .map(Some)
        .ok_or_else(|| NodeError::CorruptSnapshot {
            index: snapshot.meta.index,
            reason: "the image does not decode".into(),
        })
}

/// The store, members and auth a snapshot holds; an empty snapshot (a joining node) is
/// empty. An image whose store lies in an engine restores no store.
pub(super) fn restore_image(
    snapshot: &Snapshot,
    config: StoreConfig,
) -> Result<Restored, NodeError> {
    let index = snapshot.meta.index;
    let Some(image) = decode_image(snapshot)? else {
        return Ok(Restored {
            store: None,
            members: Members::default(),
            auth: AuthStore::default(),
        });
    };
    let store = if image.store.is_empty() {
        None
    } else {
        let store =
            Store::restore(&image.store, config).map_err(|e| NodeError::CorruptSnapshot {
                index,
                reason: e.to_string(),
            })?;
        Some(store)
    };
    Ok(Restored {
        store,
        members: image.members,
        auth: image.auth,
    })
}

impl Node {
    pub(super) fn restore_snapshot(&mut self, snapshot: &Snapshot) {
        let index = snapshot.meta.index;
        let restored = match self.prepared_snapshot.take() {
            Some((prepared, restored)) if prepared == index => restored,
            // Raft only hands out snapshots that came through `step`, which prepared them.
            _ => restore_image(snapshot, self.config.store)
                .unwrap_or_else(|e| panic!("node {}: snapshot {index} not prepared: {e}", self.id)),
        };
        let store = match (restored.store, self.installed_store.take()) {
            (Some(store), _) => store,
            (None, Some(store)) => {
                assert_eq!(
                    engine_state::NodeRows::of_store(&store)
                        .ok()
                        .flatten()
                        .map(|rows| rows.applied_index),
                    Some(index),
                    "node {}: the engine installed is not the one of snapshot {index}",
                    self.id
                );
                store
            }
            (None, None) => panic!(
                "node {}: snapshot {index} holds an engine and none was installed",
                self.id
            ),
        };
        self.coverage.hit(Path::LeaderSnapshotInstalled);
        self.store = store;
        self.members = restored.members;
        self.auth = restored.auth;
        self.applied_conf = snapshot.meta.conf_state.clone();
        self.applied_term = snapshot.meta.term;
        self.dirty = Dirty::all();
        // Tokens handed out in the entries the snapshot skips are unknown here; forget them
        // all so none outlives a change of password it did not see. Clients log in again.
        self.tokens.clear();
        self.applied_index = index;
        self.last_snapshot_index = index;
        self.watches.on_restore(&self.store);
        // Proposals the snapshot covers may or may not be in it: their clients must time
        // out (indeterminate), not be told they were lost.
        self.appended.retain(|&at, _| at > index);
        if self.role == Role::Leader {
            self.store
                .promote(self.lease_clock.now_ms(), self.config.lease_extend_ms());
        }
    }

    /// Hands over a leader's engine, streamed and durably written, before the `Ready`
    /// holding its snapshot is applied: that apply makes it the node's store. The caller
    /// has closed the engine it replaces.
    pub fn install_store(&mut self, store: Store) {
        self.installed_store = Some(store);
    }

    /// Takes the store out, leaving an empty one in memory: to close its engine before the
    /// engine of a leader's snapshot takes its file's place (see [`Node::install_store`]).
    pub fn take_store(&mut self) -> Store {
        std::mem::replace(&mut self.store, Store::new(self.config.store))
    }

    /// Writes what changed of the node's rows into the store's open transaction (engine-backed
    /// nodes, after every apply).
    pub(super) fn save_node_rows(&mut self) {
        if !self.engine_backed {
            return;
        }
        let dirty = std::mem::take(&mut self.dirty);
        engine_state::save(
            &mut self.store,
            (self.applied_index, self.applied_term),
            dirty.members.then_some(&self.members),
            dirty.auth.then_some(&self.auth),
            dirty.conf.then_some(&self.applied_conf),
        );
    }

    /// Releases the Raft log before `marker` (from [`marker_of`] or [`snapshot_of_view`] of a
    /// durable commit of this node's engine): the engine holds everything it covers.
    /// Returns the entries kept behind it (see [`Node::log_retain_entries`]), which the
    /// WAL keeps too, or `None` when it is not newer than the last one.
    pub fn compact_log(&mut self, marker: Snapshot) -> Option<u64> {
        let index = marker.meta.index;
        if index <= self.last_snapshot_index || index > self.applied_index {
            return None;
        }
        let retain_entries = self.log_retain_entries(index);
        self.raft.compact(marker, retain_entries);
        self.last_snapshot_index = index;
        Some(retain_entries)
    }

    /// Entries kept behind a release of the log at `index`: etcd's catch-up entries, or as
    /// many as a follower catching up still needs (a new member installing a snapshot that
    /// took a while to stream, see [`raft::Raft::catch_up_floor`]) — but at most
    /// `snapshot_count`, so a follower that never catches up costs a bounded amount of
    /// memory and then a snapshot. etcd pauses its log compaction while it sends a snapshot
    /// for the same reason.
    pub fn log_retain_entries(&self, index: Index) -> u64 {
        let catch_up_entries = self.config.snapshot_catch_up_entries;
        let needed = self
            .raft
            .catch_up_floor()
            .map_or(0, |floor| (index + 1).saturating_sub(floor));
        needed
            .min(self.config.snapshot_count.max(catch_up_entries))
            .max(catch_up_entries)
    }

    /// Takes a snapshot when `snapshot_count` entries were applied since the last one and
    /// compacts the in-memory log; the caller persists the returned snapshot and releases
    /// the WAL before it. Call after `advance`.
    pub fn maybe_snapshot(&mut self) -> Option<Snapshot> {
        if self.engine_backed {
            // The log is released behind the engine's durable commits (`compact_log`).
            return None;
        }
        let applied = self.raft.applied_index();
        if applied < self.last_snapshot_index + self.config.snapshot_count {
            return None;
        }
        let snapshot = self.snapshot_now()?;
        let retain_entries = self.log_retain_entries(snapshot.meta.index);
        self.raft.compact(snapshot.clone(), retain_entries);
        self.last_snapshot_index = snapshot.meta.index;
        Some(snapshot)
    }

    /// A snapshot of the state machine at the applied index.
    pub fn snapshot_now(&self) -> Option<Snapshot> {
        let index = self.applied_index;
        let term = self.raft.log_term(index)?;
        let image = Image {
            members: self.members.clone(),
            store: Bytes::from(self.store.snapshot()),
            auth: self.auth.clone(),
        };
        Some(Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: self.raft.conf_state().clone(),
            },
            data: Bytes::from(proposal::encode_large(&image)),
        })
    }
}
