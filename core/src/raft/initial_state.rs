//! What a node starts from: its persisted state after a restart, a fresh cluster's bootstrap,
//! or nothing at all for a node that joins an existing cluster.

use bytes::Bytes;

use super::entry::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryPayload, Index, NodeId, Snapshot,
    SnapshotMeta, Term,
};
use super::error::ConfigError;
use super::state::HardState;

/// Index and term of the bootstrap snapshot that every founding member starts from. A node
/// that joins later starts empty, so the leader must send it a snapshot, which carries the
/// membership. Were the founding membership not in a snapshot, a joining node would replay
/// the log from index 1 without knowing who the voters are.
pub const BOOTSTRAP_INDEX: Index = 1;
pub const BOOTSTRAP_TERM: Term = 1;

#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The newest snapshot on disk; `meta.index == 0` when there is none.
    pub snapshot: Snapshot,
    /// The log after the snapshot, contiguous from `snapshot.meta.index + 1`.
    pub entries: Vec<Entry>,
    /// What the state machine already reflects. An in-memory state machine restored from
    /// `snapshot` has applied exactly `snapshot.meta.index`.
    pub applied_index: Index,
}

impl InitialState {
    /// A founding member of a new cluster. `state_machine_image` is the application's image
    /// of its empty state machine; every founding member must pass the same one.
    pub fn bootstrap(voters: impl IntoIterator<Item = NodeId>, state_machine_image: Bytes) -> Self {
        InitialState {
            hard_state: HardState {
                term: BOOTSTRAP_TERM,
                vote: None,
                commit_index: BOOTSTRAP_INDEX,
            },
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: BOOTSTRAP_INDEX,
                    term: BOOTSTRAP_TERM,
                    conf_state: ConfState::with_voters(voters),
                },
                data: state_machine_image,
            },
            entries: Vec::new(),
            applied_index: BOOTSTRAP_INDEX,
        }
    }

    /// A node added to a running cluster: it knows nothing until the leader sends a snapshot.
    pub fn join() -> Self {
        InitialState::default()
    }

    /// etcd's `--force-new-cluster`, for a cluster that lost its majority for good: this
    /// member, `keep`, becomes the only voter of its cluster, keeping its data. Every entry
    /// in its log counts as committed, and entries removing every other member follow them
    /// (in the current term), so the membership in force, and in any snapshot taken from
    /// now on, is this member alone. Returns the entries appended, which the caller persists
    /// with the new hard state before starting.
    pub fn force_new_cluster(&mut self, keep: NodeId) -> Result<Vec<Entry>, ConfigError> {
        let mut conf = self.snapshot.meta.conf_state.clone();
        for entry in &self.entries {
            if let EntryPayload::ConfChange(change) = &entry.payload {
                conf = super::membership::apply_to_conf(&conf, change);
            }
        }
        if !conf.voters.contains(&keep) {
            return Err(ConfigError::InconsistentInitialState {
                reason: "--force-new-cluster: this member is not a voter of its cluster",
            });
        }
        let term = self.hard_state.term.max(1);
        let others = conf.members().filter(|&id| id != keep);
        let appended: Vec<Entry> = (self.last_index() + 1..)
            .zip(others)
            .map(|(index, node_id)| Entry {
                index,
                term,
                payload: EntryPayload::ConfChange(ConfChange {
                    kind: ConfChangeKind::RemoveNode,
                    node_id,
                    context: Bytes::new(),
                }),
            })
            .collect();
        self.entries.extend(appended.iter().cloned());
        self.hard_state.term = term;
        self.hard_state.commit_index = self.last_index();
        Ok(appended)
    }

    pub fn last_index(&self) -> Index {
        self.entries
            .last()
            .map_or(self.snapshot.meta.index, |e| e.index)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let inconsistent = |reason| Err(ConfigError::InconsistentInitialState { reason });
        let snapshot_index = self.snapshot.meta.index;
        let mut expected = snapshot_index;
        let mut previous_term = self.snapshot.meta.term;
        for entry in &self.entries {
            expected += 1;
            if entry.index != expected {
                return inconsistent("log entries are not contiguous after the snapshot");
            }
            if entry.term < previous_term {
                return inconsistent("log entry terms decrease");
            }
            previous_term = entry.term;
        }
        if previous_term > self.hard_state.term {
            return inconsistent("a log entry's term is above the persisted term");
        }
        if self.hard_state.commit_index > self.last_index() {
            return inconsistent("the commit index is beyond the last log index");
        }
        if self.applied_index < snapshot_index
            || self.applied_index > self.hard_state.commit_index.max(snapshot_index)
        {
            return inconsistent(
                "the applied index must lie between the snapshot and the commit index",
            );
        }
        if snapshot_index > 0 && self.snapshot.meta.conf_state.voters.is_empty() {
            return inconsistent("the snapshot has no voters");
        }
        Ok(())
    }
}
