//! keel-storage: the durable half of a keel node. A write-ahead log of Raft entries and hard
//! states, and snapshot files, all behind the [`Disk`] trait so that the simulator can do to
//! the disk what real disks do.
//!
//! - [`Storage`] is the API: [`Storage::open`] recovers a data dir, [`Storage::persist`]
//!   carries out a Raft `Ready`'s persist step, [`Storage::save_snapshot`] takes the
//!   application's snapshots and releases WAL segments.
//! - [`FsDisk`] is real files with real `fdatasync`; [`SimDisk`] is memory with seeded faults.
//!
//! On-disk format and recovery rules: see `record`, `segment`, `snapshot_file` and the README.

mod codec;
mod disk;
mod engine;
mod error;
mod fs_disk;
mod identity;
mod record;
mod repair;
mod segment;
mod sim_disk;
mod snapshot_file;
mod storage;
mod wal;

pub use disk::Disk;
pub use engine::{
    BulkWriter, DiskBackend, RedbEngine, RedbView, DEFAULT_ENGINE_CACHE_SIZE_BYTES, STORE_FILE,
};
pub use error::{Result, StorageError, CORRUPTION_REMEDY};
pub use fs_disk::FsDisk;
pub use identity::Identity;
pub use record::record_starts;
pub use repair::Repair;
pub use sim_disk::{
    Faults, SimDisk, SimDiskConfig, SimDiskStats, SyncObserver, SyncPoint,
    DEFAULT_SECTOR_SIZE_BYTES,
};
pub use storage::{
    Recovered, SnapshotWriter, Storage, StorageOptions, WrittenSnapshot,
    DEFAULT_MAX_RECORD_SIZE_BYTES, DEFAULT_MAX_SNAPSHOT_SIZE_BYTES, DEFAULT_SEGMENT_SIZE_BYTES,
    KEPT_SNAPSHOTS,
};
