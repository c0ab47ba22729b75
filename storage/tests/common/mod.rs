//! Shared test scaffolding: the same scenario runs on `SimDisk` and on `FsDisk`.

#![allow(dead_code)]

use bytes::Bytes;
use keel_core::raft::{Entry, EntryPayload, HardState, Index, InitialState, Term};
use keel_storage::{
    Disk, Faults, FsDisk, Recovered, SimDisk, SimDiskConfig, Storage, StorageError, StorageOptions,
};

/// A data dir a test can restart a process on and edit behind the storage's back.
pub trait TestEnv {
    type D: Disk;
    fn new() -> Self;
    /// A disk for a newly started process. On `SimDisk` the machine crashes first (unsynced
    /// writes are lost), the strictest restart there is.
    fn restart(&mut self) -> Self::D;
    fn files(&mut self) -> Vec<String>;
    fn read(&mut self, name: &str) -> Vec<u8>;
    /// Writes bytes in place, durably, bypassing the storage.
    fn poke(&mut self, name: &str, offset: u64, bytes: &[u8]);
    fn remove(&mut self, name: &str);
}

pub struct SimEnv {
    pub disk: SimDisk,
}

impl TestEnv for SimEnv {
    type D = SimDisk;

    fn new() -> SimEnv {
        SimEnv {
            disk: SimDisk::new(SimDiskConfig::new(7, Faults::none())),
        }
    }

    fn restart(&mut self) -> SimDisk {
        self.disk = self.disk.crash();
        self.disk.clone()
    }

    fn files(&mut self) -> Vec<String> {
        self.disk.clone().list().unwrap()
    }

    fn read(&mut self, name: &str) -> Vec<u8> {
        self.disk.contents(name).unwrap()
    }

    fn poke(&mut self, name: &str, offset: u64, bytes: &[u8]) {
        let mut disk = self.disk.clone();
        disk.write_at(name, offset, bytes).unwrap();
        disk.sync(name).unwrap();
    }

    fn remove(&mut self, name: &str) {
        let mut disk = self.disk.clone();
        disk.remove(name).unwrap();
        disk.sync_dir().unwrap();
    }
}

pub struct FsEnv {
    pub dir: tempfile::TempDir,
}

impl FsEnv {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("data").join(name)
    }
}

impl TestEnv for FsEnv {
    type D = FsDisk;

    fn new() -> FsEnv {
        FsEnv {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn restart(&mut self) -> FsDisk {
        FsDisk::open(self.dir.path().join("data")).unwrap()
    }

    fn files(&mut self) -> Vec<String> {
        self.restart().list().unwrap()
    }

    fn read(&mut self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn poke(&mut self, name: &str, offset: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path(name))
            .unwrap();
        file.write_all_at(bytes, offset).unwrap();
        file.sync_all().unwrap();
    }

    fn remove(&mut self, name: &str) {
        std::fs::remove_file(self.path(name)).unwrap();
    }
}

/// Segments big enough for every test that wants one, small enough to zero-fill quickly.
pub fn roomy_segments() -> StorageOptions {
    StorageOptions {
        segment_size_bytes: 1 << 20,
        ..StorageOptions::default()
    }
}

/// Small segments, so a few dozen entries span several of them.
pub fn small_segments() -> StorageOptions {
    StorageOptions {
        segment_size_bytes: 4096,
        max_record_size_bytes: 64 << 10,
        ..StorageOptions::default()
    }
}

pub fn open<E: TestEnv>(
    env: &mut E,
    options: &StorageOptions,
) -> Result<(Storage<E::D>, Recovered), StorageError> {
    Storage::open(env.restart(), options.clone())
}

/// Opens and expects success.
pub fn reopen<E: TestEnv>(env: &mut E, options: &StorageOptions) -> (Storage<E::D>, Recovered) {
    match open(env, options) {
        Ok(opened) => opened,
        Err(e) => panic!("recovery failed: {e}"),
    }
}

pub fn entry(index: Index, term: Term, payload_bytes: usize) -> Entry {
    let payload: Vec<u8> = (0..payload_bytes)
        .map(|i| (index as usize * 31 + i) as u8 | 1)
        .collect();
    Entry {
        index,
        term,
        payload: EntryPayload::Normal(Bytes::from(payload)),
    }
}

pub fn entries(from: Index, to: Index, term: Term, payload_bytes: usize) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term, payload_bytes)).collect()
}

/// A founding member of a three-node cluster (snapshot at index 1, term 1).
pub fn founding_state() -> InitialState {
    InitialState::bootstrap([1, 2, 3], Bytes::from_static(b"empty state machine"))
}

pub fn bootstrapped<E: TestEnv>(env: &mut E, options: &StorageOptions) -> Storage<E::D> {
    let (mut storage, recovered) = reopen(env, options);
    assert!(recovered.is_new);
    storage.bootstrap(&founding_state()).unwrap();
    storage
}

pub fn hard_state(term: Term, vote: Option<u64>, commit_index: Index) -> HardState {
    HardState {
        term,
        vote,
        commit_index,
    }
}

pub fn segment_files<E: TestEnv>(env: &mut E) -> Vec<String> {
    env.files()
        .into_iter()
        .filter(|f| f.ends_with(".wal"))
        .collect()
}

pub fn snapshot_files<E: TestEnv>(env: &mut E) -> Vec<String> {
    env.files()
        .into_iter()
        .filter(|f| f.ends_with(".snap"))
        .collect()
}

/// Where the data of a (zero-filled) segment ends.
pub fn data_end(bytes: &[u8]) -> usize {
    let zeros = [0u8; 4096];
    let mut end = bytes.len();
    while end > 0 && bytes[end.saturating_sub(4096)..end] == zeros[..end.min(4096)] {
        end = end.saturating_sub(4096);
    }
    bytes[..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p + 1)
}

/// Runs each named generic test on both disks.
#[macro_export]
macro_rules! on_both_disks {
    ($($name:ident),* $(,)?) => {
        mod sim_disk {
            $( #[test] fn $name() { super::$name::<$crate::common::SimEnv>() } )*
        }
        mod fs_disk {
            $( #[test] fn $name() { super::$name::<$crate::common::FsEnv>() } )*
        }
    };
}
