//! `Ready`: everything the core wants done, and the order it must be done in.
//!
//! The contract, for each `Ready` returned by `Raft::ready`:
//!
//! 1. Send `messages` right away. They depend on nothing unpersisted: a leader's appends may
//!    travel while it syncs the same entries to its own disk (thesis §10.2.1). When the term
//!    or vote changed, every message waits in `persisted_messages` instead, since each one
//!    carries the new term.
//! 2. Persist `snapshot` (if any), then `entries`, then `hard_state`, and sync if
//!    [`Ready::must_sync`] (new entries, a new term or a new vote). `entries[0]` may be at or
//!    below the last index persisted before: everything from that index on is replaced. A
//!    commit index alone is written but not synced: a crash may lose it, and a restarted
//!    node learns it again from the leader (the state machine must then not serve from
//!    before its crash; `keel_core::node::Node` fences itself until it has caught up).
//! 3. Send `persisted_messages`. They are votes and acknowledgements that promise the
//!    persisted state; sending one before the sync completes can elect two leaders or lose a
//!    committed entry after a crash.
//! 4. Restore the state machine from `snapshot` (if any), then apply `committed_entries` in
//!    order.
//! 5. Serve each of `read_states` once the applied index has reached its `read_index`.
//! 6. Call `Raft::advance(&ready)`.
//!
//! Only one `Ready` is outstanding at a time. Steps, ticks, proposals and reads may be fed in
//! between `ready` and `advance`; their effects appear in the next `Ready`.

use super::entry::{Entry, Index, Snapshot, Term};
use super::message::Message;
use super::state::{HardState, SoftState};

/// A linearizable read may be served once the state machine has applied `read_index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub read_index: Index,
}

#[derive(Debug, Default)]
pub struct Ready {
    /// Changed leader or role since the previous `Ready`.
    pub soft_state: Option<SoftState>,
    /// Changed term, vote or commit index since the previous `Ready`.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: persist it, then restore the state machine.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to the log on disk.
    pub entries: Vec<Entry>,
    /// May be sent before persisting.
    pub messages: Vec<Message>,
    /// Must be sent only after persisting.
    pub persisted_messages: Vec<Message>,
    /// Entries to apply to the state machine, in order.
    pub committed_entries: Vec<Entry>,
    /// Linearizable reads that are ready to be served.
    pub read_states: Vec<ReadState>,
    pub(crate) must_sync: bool,
    pub(crate) persisted_through: Option<(Index, Term)>,
    pub(crate) snapshot_index: Option<Index>,
    pub(crate) applied_through: Option<Index>,
}

impl Ready {
    /// Whether the persisted state must be synced (fsync) before `persisted_messages` are
    /// sent. A commit index change alone needs no sync: applying entries does not wait for a
    /// sync of the commit index that covers them (an fsync on the path of every write).
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }

    /// Whether anything needs to be persisted at all.
    pub fn has_persist_work(&self) -> bool {
        self.snapshot.is_some() || !self.entries.is_empty() || self.hard_state.is_some()
    }
}
