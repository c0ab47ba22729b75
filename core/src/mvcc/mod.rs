//! etcd's data model as a pure state machine: the MVCC key-value store (revisions, range,
//! put, delete, txn, compaction), leases, quota and alarms, the snapshot format, HashKV,
//! and the pure part of watch.
//!
//! How a server drives it:
//! - Writes: [`Store::check_command`] before proposing; once committed, the entry's
//!   payload [`Command::decode`]s and [`Store::apply`] returns an [`Applied`] (the
//!   response and the revision's events), and the events go to [`WatchHub::on_apply`].
//! - Reads: [`Store::range`] (or in chunks, [`RangeCursor`]), [`Store::read_txn`],
//!   [`Store::hash_kv`], [`Store::lease_leases`] after ReadIndex (or at once when serializable).
//! - Leases: on the leader, [`Store::promote`]; then [`Store::expired_leases`] becomes
//!   `LeaseRevoke` proposals and [`Store::lease_checkpoints`] a `LeaseCheckpoint`
//!   proposal; KeepAlive and TimeToLive are answered here by the leader.
//! - Snapshots: [`Store::snapshot`] / [`Store::restore`].
//!
//! Same inputs, same outputs: no clock (time is an argument), no randomness, no hash maps.
//!
//! Storage: the store's data lies in an [`Engine`] (redb over the data dir's disk in the
//! server, [`MemEngine`] in tests); see `rows.rs` for the layout. The store keeps in memory
//! only its scalars (revisions, size, applied index), alarms and the lease table.

mod codec;
mod compaction;
mod engine;
mod error;
mod export;
mod garbage;
mod hash;
mod history;
mod key_index;
mod lease;
pub mod overlay;
mod quota;
mod range;
mod range_stream;
mod request;
mod revision;
mod rows;
mod snapshot;
mod store;
mod txn;
mod validate;
mod watch;
mod write;

pub use engine::{
    Defragmenting, Engine, EngineError, EngineResult, MemEngine, MemView, Read, Table, View, Visit,
};
pub use error::{DecodeError, Error, GrpcCode, SnapshotError, WatchError};
pub use export::{KeptVersion, LeaseRecord};
pub use history::{CatchUp, EventFilter};
pub use key_index::ENTRY_OVERHEAD_BYTES;
pub use lease::{KeepAliveOutcome, MAX_LEASE_TTL_S};
pub use quota::LEASE_OVERHEAD_BYTES;
pub use range_stream::{ChunkLimits, RangeCursor, RangeStreamChunk, RangeStreamEnd};
pub use request::*;
pub use revision::{KeyRange, RangeEnd, Revision};
pub use snapshot::{compacted_history, StoreBuilder, VersionRecord};
pub use store::{
    node_row_key, Applied, Store, StoreConfig, StoreStats, DEFAULT_COMPACTION_BATCH_REVISIONS,
    DEFAULT_EXPIRED_LEASE_RETRY_MS, DEFAULT_INDEX_CHECKPOINT_BYTES, DEFAULT_MIN_LEASE_TTL_S,
    DEFAULT_QUOTA_BYTES,
};
pub use validate::{
    check_command, check_range, Limits, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS,
};
pub use watch::{
    StreamId, WatchConfig, WatchCreateRequest, WatchFilterType, WatchHub, WatchId, WatchResponse,
    PROGRESS_WATCH_ID,
};
