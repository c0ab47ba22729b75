//! Faults only a simulated disk can inject on demand, and a real Raft node driven through
//! storage across restarts.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use keel_core::raft::{Config, Raft, Snapshot};
use keel_storage::{Disk, Faults, SimDisk, SimDiskConfig, Storage, StorageError, StorageOptions};

use common::*;

fn sim_env(faults: Faults) -> SimEnv {
    SimEnv {
        disk: SimDisk::new(SimDiskConfig::new(11, faults)),
    }
}

#[test]
fn a_failed_sync_stops_the_storage_and_loses_only_unsynced_writes() {
    let mut env = sim_env(Faults::none());
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.append(&entries(2, 5, 1, 10)).unwrap();
    storage.sync().unwrap();
    env.disk.set_faults(Faults {
        sync_error_probability: 1.0,
        ..Faults::none()
    });
    storage.append(&entries(6, 9, 1, 10)).unwrap();
    let err = storage.sync().unwrap_err();
    assert!(matches!(err, StorageError::SyncFailed { .. }), "{err}");
    assert!(err.is_fatal() && storage.is_stopped());
    assert!(err.to_string().contains("never retry"), "{err}");
    // No retry, no more writes: the storage refuses everything from now on.
    assert!(matches!(storage.sync(), Err(StorageError::Stopped { .. })));
    assert!(matches!(
        storage.append(&entries(6, 6, 1, 10)),
        Err(StorageError::Stopped { .. })
    ));
    env.disk.set_faults(Faults::none());
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.entries, entries(2, 5, 1, 10));
}

#[test]
fn a_full_disk_stops_the_storage() {
    let mut env = sim_env(Faults::none());
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    env.disk.set_faults(Faults {
        quota_bytes: Some(64 << 10),
        ..Faults::none()
    });
    let mut result = Ok(());
    for batch in entries(2, 2000, 1, 200).chunks(10) {
        result = storage.append(batch).and_then(|()| storage.sync());
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    assert!(matches!(err, StorageError::NoSpace { .. }), "{err}");
    assert!(storage.is_stopped());
    drop(storage);
    env.disk.set_faults(Faults::none());
    reopen(&mut env, &options);
}

#[test]
fn a_bad_sector_is_reported_with_file_and_offset() {
    let mut env = sim_env(Faults::none());
    let options = roomy_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.append(&entries(2, 20, 1, 100)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let segment = segment_files(&mut env).pop().unwrap();
    env.disk.add_latent_sector_error(&segment, 700).unwrap();
    match open(&mut env, &options) {
        Err(StorageError::Unreadable { file, .. }) => assert!(file.ends_with(&segment)),
        Err(other) => panic!("expected an unreadable error, got {other}"),
        Ok(_) => panic!("a bad sector went unnoticed"),
    }
}

#[test]
fn a_crash_loses_exactly_the_unsynced_writes() {
    let mut env = sim_env(Faults::none());
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.append(&entries(2, 40, 1, 150)).unwrap();
    storage.set_hard_state(hard_state(1, None, 30)).unwrap();
    storage.sync().unwrap();
    storage.append(&entries(41, 80, 1, 150)).unwrap();
    storage.set_hard_state(hard_state(1, None, 70)).unwrap();
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    // Rotations synced some of the second batch; never less than the first.
    let last = recovered.entries.last().unwrap().index;
    assert!((40..=80).contains(&last), "{last}");
    assert_eq!(recovered.entries, entries(2, last, 1, 150));
    assert!(recovered.hard_state.commit_index >= 30);
}

#[test]
fn a_machine_crash_during_rotation_keeps_every_segment_it_needs() {
    for seed in 0..50 {
        let mut env = SimEnv {
            disk: SimDisk::new(SimDiskConfig::new(seed, Faults::crashes())),
        };
        let options = small_segments();
        let mut storage = bootstrapped(&mut env, &options);
        let written = entries(2, 100, 1, 150);
        for batch in written.chunks(9) {
            storage.append(batch).unwrap();
            storage.sync().unwrap();
        }
        drop(storage);
        let (_, recovered) = reopen(&mut env, &options);
        assert_eq!(recovered.entries, written, "seed {seed}");
    }
}

/// The state machine of this test: how many entries it applied.
fn image(applied: u64) -> Bytes {
    Bytes::from(applied.to_le_bytes().to_vec())
}

fn drive<D: Disk>(raft: &mut Raft, storage: &mut Storage<D>, applied: &mut u64) {
    while let Some(ready) = raft.ready() {
        storage.persist(&ready).unwrap();
        if let Some(snapshot) = &ready.snapshot {
            *applied = snapshot.meta.index;
        }
        if let Some(last) = ready.committed_entries.last() {
            *applied = last.index;
        }
        raft.advance(&ready);
    }
}

fn a_raft_node_restarts_from_what_storage_recovered<E: TestEnv>() {
    let mut env = E::new();
    let options = small_segments();
    let (mut storage, recovered) = reopen(&mut env, &options);
    assert!(recovered.is_new);
    let initial = keel_core::raft::InitialState::bootstrap([1], image(1));
    storage.bootstrap(&initial).unwrap();
    let mut raft = Raft::new(Config::new(1), initial).unwrap();
    let mut applied = 1;
    raft.campaign();
    drive(&mut raft, &mut storage, &mut applied);
    for round in 0..30u64 {
        for i in 0..7u64 {
            raft.propose(Bytes::from(vec![(round * 7 + i) as u8; 120]))
                .unwrap();
        }
        drive(&mut raft, &mut storage, &mut applied);
        if round % 10 == 9 {
            let meta = keel_core::raft::SnapshotMeta {
                index: applied,
                term: raft.log_term(applied).unwrap(),
                conf_state: raft.conf_state().clone(),
            };
            let snapshot = Snapshot {
                meta,
                data: image(applied),
            };
            raft.compact(snapshot.clone(), 5);
            storage.save_snapshot(&snapshot, 5).unwrap();
        }
    }
    let (last_index, commit_index, term) = (raft.last_index(), raft.commit_index(), raft.term());
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    let restarted = Raft::new(Config::new(1), recovered.into_initial_state()).unwrap();
    assert_eq!(restarted.last_index(), last_index);
    assert_eq!(restarted.commit_index(), commit_index);
    assert_eq!(restarted.term(), term);
}

on_both_disks!(a_raft_node_restarts_from_what_storage_recovered);

#[test]
fn options_are_validated() {
    let too_small = StorageOptions {
        segment_size_bytes: 100,
        ..StorageOptions::default()
    };
    let disk = SimDisk::new(SimDiskConfig::new(1, Faults::none()));
    let err = Storage::open(disk, too_small).unwrap_err();
    assert!(matches!(err, StorageError::InvalidOptions { .. }));
}
