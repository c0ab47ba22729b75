//! Every recovery rule, on both disks: what survives a restart, what is repaired, and what
//! is reported (with the file, the offset and what to do).

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use keel_core::raft::{ConfState, Snapshot, SnapshotMeta};
use keel_storage::{Identity, Repair, StorageError, StorageOptions};

use common::*;

fn snapshot(index: u64, term: u64, data: &'static [u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state: ConfState::with_voters([1, 2, 3]),
        },
        data: Bytes::from_static(data),
    }
}

fn expect_corrupt(result: Result<impl Sized, StorageError>) -> (String, u64, String) {
    match result {
        Err(StorageError::Corrupt {
            file,
            offset_bytes,
            problem,
        }) => (file, offset_bytes, problem),
        Err(other) => panic!("expected a corruption error, got {other}"),
        Ok(_) => panic!("expected a corruption error, recovery succeeded"),
    }
}

fn a_new_data_dir_reads_as_new_until_bootstrapped<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let (_, recovered) = reopen(&mut env, &options);
    assert!(recovered.is_new);
    assert!(recovered.repairs.is_empty());
    let (mut storage, recovered) = reopen(&mut env, &options);
    assert!(recovered.is_new, "opening alone persists nothing");
    storage.bootstrap(&founding_state()).unwrap();
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert!(!recovered.is_new);
    let initial = recovered.into_initial_state();
    initial.validate().unwrap();
    let expected = founding_state();
    assert_eq!(initial.snapshot, expected.snapshot);
    assert_eq!(initial.hard_state, expected.hard_state);
    assert_eq!(initial.applied_index, 1);
    assert!(initial.entries.is_empty());
}

fn entries_and_hard_state_survive_a_restart<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let mut storage = bootstrapped(&mut env, &options);
    let written = entries(2, 50, 2, 100);
    storage.append(&written).unwrap();
    storage.set_hard_state(hard_state(2, Some(1), 40)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (storage, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.entries, written);
    assert_eq!(recovered.hard_state, hard_state(2, Some(1), 40));
    assert_eq!(storage.last_index(), 50);
    recovered.into_initial_state().validate().unwrap();
}

fn a_replaced_suffix_is_recovered_not_the_old_one<E: TestEnv>() {
    let mut env = E::new();
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.append(&entries(2, 60, 2, 200)).unwrap();
    storage.sync().unwrap();
    // A new leader overwrites from 40 (same segment), then from 5 (an older segment).
    storage.append(&entries(40, 45, 3, 200)).unwrap();
    storage.sync().unwrap();
    storage.append(&entries(5, 8, 4, 200)).unwrap();
    storage.set_hard_state(hard_state(4, None, 4)).unwrap();
    storage.sync().unwrap();
    assert!(segment_files(&mut env).len() > 2);
    drop(storage);
    let (mut storage, recovered) = reopen(&mut env, &options);
    let mut expected = entries(2, 4, 2, 200);
    expected.extend(entries(5, 8, 4, 200));
    assert_eq!(recovered.entries, expected);
    assert_eq!(storage.last_index(), 8);
    // Appending continues from the replacement.
    storage.append(&entries(9, 12, 4, 200)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    expected.extend(entries(9, 12, 4, 200));
    assert_eq!(recovered.entries, expected);
}

fn segments_rotate_and_each_carries_the_hard_state<E: TestEnv>() {
    let mut env = E::new();
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.set_hard_state(hard_state(2, Some(3), 1)).unwrap();
    let written = entries(2, 120, 2, 150);
    for batch in written.chunks(7) {
        storage.append(batch).unwrap();
        storage.sync().unwrap();
    }
    let segments = segment_files(&mut env);
    assert!(segments.len() >= 5, "{segments:?}");
    assert_eq!(storage.segment_count(), segments.len());
    // Release all but the newest segments: the hard state must survive with them.
    storage.save_snapshot(&snapshot(100, 2, b"a"), 0).unwrap();
    storage.save_snapshot(&snapshot(110, 2, b"b"), 0).unwrap();
    assert!(segment_files(&mut env).len() < segments.len());
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.hard_state, hard_state(2, Some(3), 1));
    assert_eq!(recovered.snapshot.unwrap().meta.index, 110);
    assert_eq!(recovered.entries, written[109..].to_vec());
}

/// Rollovers rename a segment filled ahead of time on another thread instead of filling
/// one while appending waits; a spare left at a restart is removed without a word.
fn rollovers_take_the_spare_segment_filled_ahead<E: TestEnv>() {
    let mut env = E::new();
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut next = 2;
    while storage.spare_segments_used() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no rollover took a spare ({} segments)",
            storage.segment_count()
        );
        storage.append(&entries(next, next + 5, 1, 150)).unwrap();
        storage.sync().unwrap();
        next += 6;
    }
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.entries.len() as u64, next - 2);
    assert!(recovered.repairs.is_empty(), "{:?}", recovered.repairs);
}

/// A spare larger than one fill step (1 MiB) is filled whole, step by step, before a
/// rollover takes it: the segment it becomes is its full size from its first record on.
fn a_spare_of_several_fill_steps_is_filled_whole<E: TestEnv>() {
    let mut env = E::new();
    let options = StorageOptions {
        segment_size_bytes: (5 << 20) / 2,
        max_record_size_bytes: 1 << 20,
        ..StorageOptions::default()
    };
    let mut storage = bootstrapped(&mut env, &options);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut next = 2;
    while storage.spare_segments_used() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "no rollover took a spare"
        );
        storage
            .append(&entries(next, next + 3, 1, 64 << 10))
            .unwrap();
        storage.sync().unwrap();
        next += 4;
    }
    let newest = segment_files(&mut env).into_iter().max().unwrap();
    let size_bytes = env.read(&newest).len() as u64;
    assert!(
        size_bytes >= options.segment_size_bytes,
        "{newest} is {size_bytes} bytes, not filled to {}",
        options.segment_size_bytes
    );
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.entries.len() as u64, next - 2);
}

fn snapshots_keep_the_newest_two_and_the_wal_behind_the_older<E: TestEnv>() {
    let mut env = E::new();
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    let written = entries(2, 200, 2, 150);
    storage.append(&written).unwrap();
    storage.sync().unwrap();
    let all_segments = segment_files(&mut env).len();
    storage
        .save_snapshot(&snapshot(100, 2, b"at 100"), 10)
        .unwrap();
    assert_eq!(
        snapshot_files(&mut env).len(),
        2,
        "the bootstrap snapshot and 100"
    );
    assert_eq!(
        segment_files(&mut env).len(),
        all_segments,
        "still needed behind index 1"
    );
    storage
        .save_snapshot(&snapshot(150, 2, b"at 150"), 10)
        .unwrap();
    let snaps = snapshot_files(&mut env);
    assert_eq!(snaps.len(), 2);
    assert_eq!(storage.snapshot_files(), snaps);
    let kept_segments = segment_files(&mut env).len();
    assert!(kept_segments < all_segments);
    // Older snapshots are ignored, as Raft::compact ignores them.
    storage
        .save_snapshot(&snapshot(120, 2, b"old"), 10)
        .unwrap();
    assert_eq!(snapshot_files(&mut env), snaps);
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.snapshot.as_ref().unwrap().data, &b"at 150"[..]);
    assert_eq!(recovered.entries, written[149..].to_vec());
    // The WAL behind the older snapshot is still there: damage the newest and recover.
    let newest = snaps.last().unwrap().clone();
    env.poke(&newest, 30, b"\xff");
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.snapshot.as_ref().unwrap().data, &b"at 100"[..]);
    assert_eq!(recovered.entries, written[99..].to_vec());
    assert!(matches!(
        &recovered.repairs[..],
        [Repair::SnapshotSetAside { file, .. }] if file.ends_with(&newest)
    ));
    assert!(env.files().contains(&format!("{newest}.broken")));
}

/// A snapshot written by a `SnapshotWriter` (on another thread, while the log goes on) is
/// the same as one saved in place once adopted; until then the WAL keeps everything.
fn a_snapshot_written_apart_and_adopted_is_saved<E: TestEnv>()
where
    E::D: Send + 'static,
{
    let mut env = E::new();
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    let written = entries(2, 200, 2, 150);
    storage.append(&written[..150]).unwrap();
    storage.sync().unwrap();
    storage
        .save_snapshot(&snapshot(100, 2, b"at 100"), 10)
        .unwrap();
    let mut writer = storage.snapshot_writer().unwrap();
    let at_150 = std::thread::spawn(move || writer.write(&snapshot(150, 2, b"at 150")))
        .join()
        .unwrap();
    // The log went on meanwhile; nothing was released for the written snapshot yet.
    storage.append(&written[150..]).unwrap();
    storage.sync().unwrap();
    let all_segments = segment_files(&mut env).len();
    assert_eq!(storage.snapshot_files().len(), 2, "bootstrap and 100");
    storage.adopt_snapshot(at_150, 10).unwrap();
    assert!(
        segment_files(&mut env).len() < all_segments,
        "released behind 100"
    );
    let snaps = snapshot_files(&mut env);
    assert_eq!(storage.snapshot_files(), snaps);
    assert_eq!(snaps.len(), 2, "100 and 150");
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.snapshot.as_ref().unwrap().data, &b"at 150"[..]);
    assert_eq!(recovered.entries, written[149..].to_vec());
}

/// A leader's snapshot that arrives while the storage's own is being written makes that one
/// stale: adopting it removes its file and changes nothing else.
fn a_snapshot_overtaken_by_the_leaders_is_removed_when_adopted<E: TestEnv>() {
    let mut env = E::new();
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.append(&entries(2, 60, 1, 150)).unwrap();
    storage.sync().unwrap();
    let mut writer = storage.snapshot_writer().unwrap();
    let own = writer.write(&snapshot(40, 1, b"own"));
    storage
        .install_snapshot(&snapshot(80, 3, b"leader's"))
        .unwrap();
    let before = snapshot_files(&mut env);
    assert_eq!(
        before.len(),
        3,
        "bootstrap, own (written, not adopted), leader's"
    );
    storage.adopt_snapshot(own, 10).unwrap();
    let after = snapshot_files(&mut env);
    assert_eq!(after, storage.snapshot_files());
    assert_eq!(after.len(), 2);
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.snapshot.as_ref().unwrap().data, &b"leader's"[..]);
}

/// A snapshot write that failed stops the storage, as a failure in place would.
fn a_failed_snapshot_write_stops_the_storage<E: TestEnv>() {
    let mut env = E::new();
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    let failed = Err(StorageError::InvalidRequest {
        reason: "injected".into(),
    });
    assert!(storage.adopt_snapshot(failed, 10).is_err());
    let failed = Err(StorageError::SyncFailed {
        file: "snap.tmp".into(),
        source: std::io::Error::other("injected"),
    });
    assert!(storage.adopt_snapshot(failed, 10).is_err());
    assert!(storage.is_stopped());
    assert!(storage.append(&entries(2, 2, 1, 10)).is_err());
}

fn a_leaders_snapshot_replaces_the_log<E: TestEnv>() {
    let mut env = E::new();
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.append(&entries(2, 60, 1, 150)).unwrap();
    storage.sync().unwrap();
    assert!(storage.segment_count() > 1);
    // The leader's snapshot is below our last index: our suffix conflicts and goes too.
    storage
        .install_snapshot(&snapshot(30, 3, b"leader's"))
        .unwrap();
    assert_eq!(storage.segment_count(), 1);
    assert_eq!(storage.last_index(), 30);
    storage.append(&entries(31, 35, 3, 150)).unwrap();
    storage.set_hard_state(hard_state(3, None, 30)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.snapshot.as_ref().unwrap().meta.index, 30);
    assert_eq!(recovered.entries, entries(31, 35, 3, 150));
    recovered.into_initial_state().validate().unwrap();
}

fn a_torn_tail_is_cut_off<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.append(&entries(2, 10, 1, 100)).unwrap();
    storage.sync().unwrap();
    storage.append(&entries(11, 11, 1, 3000)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let segment = segment_files(&mut env).pop().unwrap();
    let end = data_end(&env.read(&segment));
    // Entry 11's record lost its last sectors: the write was torn.
    let cut = (end - 1) / 512 * 512 - 512;
    env.poke(&segment, cut as u64, &vec![0u8; end - cut]);
    let (mut storage, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.entries, entries(2, 10, 1, 100));
    let [Repair::TornTailTruncated { file, offset_bytes }] = &recovered.repairs[..] else {
        panic!("expected one torn-tail repair, got {:?}", recovered.repairs);
    };
    assert!(file.ends_with(&segment));
    assert!(*offset_bytes < cut as u64);
    // The log goes on from the cut, and the repair is not needed twice.
    storage.append(&entries(11, 12, 1, 100)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert!(recovered.repairs.is_empty());
    assert_eq!(recovered.entries, entries(2, 12, 1, 100));
}

fn a_flipped_bit_in_the_middle_is_reported_with_file_offset_and_remedy<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.append(&entries(2, 20, 1, 100)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let segment = segment_files(&mut env).pop().unwrap();
    let bytes = env.read(&segment);
    env.poke(&segment, 1000, &[bytes[1000] ^ 0x10]);
    let err = open(&mut env, &options).map(|_| ()).unwrap_err();
    let message = err.to_string();
    let (file, offset, _) = expect_corrupt(Err::<(), _>(err));
    assert!(file.ends_with(&segment));
    assert!(offset <= 1000 && offset + 256 > 1000, "offset {offset}");
    assert!(message.contains(&segment) && message.contains(&format!("byte {offset}")));
    assert!(message.contains("etcdctl member remove"), "{message}");
}

fn a_flipped_bit_in_the_last_record_is_reported_not_truncated<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.append(&entries(2, 20, 1, 100)).unwrap();
    // The last record spans sectors, as a torn one would.
    storage.append(&entries(21, 21, 1, 3000)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let segment = segment_files(&mut env).pop().unwrap();
    let bytes = env.read(&segment);
    let end = data_end(&bytes);
    for at in [end - 3000, end - 600, end - 20] {
        env.poke(&segment, at as u64, &[bytes[at] ^ 1]);
        expect_corrupt(open(&mut env, &options));
        env.poke(&segment, at as u64, &[bytes[at]]);
    }
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.entries.len(), 20);
}

fn a_missing_segment_is_reported<E: TestEnv>() {
    let mut env = E::new();
    let options = small_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.append(&entries(2, 80, 1, 150)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let segments = segment_files(&mut env);
    env.remove(&segments[1]);
    let (file, _, problem) = expect_corrupt(open(&mut env, &options));
    assert!(file.ends_with(&segments[2]), "{file}");
    assert!(problem.contains("missing"), "{problem}");
}

fn lost_synced_data_is_reported_not_cut_off<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let mut storage = bootstrapped(&mut env, &options);
    for batch in entries(2, 40, 1, 100).chunks(10) {
        storage.append(batch).unwrap();
        storage.sync().unwrap();
    }
    drop(storage);
    let segment = segment_files(&mut env).pop().unwrap();
    // Two sectors in the middle read back as zeros: a write that was synced went missing.
    env.poke(&segment, 2048, &[0u8; 1024]);
    let (_, _, problem) = expect_corrupt(open(&mut env, &options));
    assert!(problem.contains("synced"), "{problem}");
}

fn a_snapshot_the_wal_cannot_follow_is_reported<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage
        .install_snapshot(&snapshot(50, 2, b"leader's"))
        .unwrap();
    storage.append(&entries(51, 60, 2, 100)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let newest = snapshot_files(&mut env).pop().unwrap();
    env.poke(&newest, 40, b"\x00\x01");
    let (_, _, problem) = expect_corrupt(open(&mut env, &options));
    assert!(problem.contains("entries 2..=50 are missing"), "{problem}");
    assert!(problem.contains("set aside"), "{problem}");
}

fn a_snapshot_without_a_wal_is_reported<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let storage = bootstrapped(&mut env, &options);
    drop(storage);
    for segment in segment_files(&mut env) {
        env.remove(&segment);
    }
    let (_, _, problem) = expect_corrupt(open(&mut env, &options));
    assert!(problem.contains("WAL"), "{problem}");
}

fn an_unfinished_snapshot_is_removed<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let storage = bootstrapped(&mut env, &options);
    drop(storage);
    let temp = "snap-0000000000000009-0000000000000001.snap.tmp";
    let mut disk = env.restart();
    keel_storage::Disk::create(&mut disk, temp).unwrap();
    keel_storage::Disk::sync_dir(&mut disk).unwrap();
    drop(disk);
    let (_, recovered) = reopen(&mut env, &options);
    assert!(matches!(
        &recovered.repairs[..],
        [Repair::TempFileRemoved { .. }]
    ));
    assert!(!env.files().contains(&temp.to_string()));
}

fn a_lost_hard_state_raises_the_term_to_the_log<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let mut storage = bootstrapped(&mut env, &options);
    storage.set_hard_state(hard_state(2, Some(2), 1)).unwrap();
    // Entries of term 5 reached the disk, the hard state written with them did not.
    storage.append(&entries(2, 4, 5, 10)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.hard_state, hard_state(5, None, 1));
    assert!(matches!(
        &recovered.repairs[..],
        [Repair::TermRaised {
            from_term: 2,
            to_term: 5
        }]
    ));
    recovered.into_initial_state().validate().unwrap();
    let (_, recovered) = reopen(&mut env, &options);
    assert!(recovered.repairs.is_empty(), "the raised term was saved");
}

fn limits_and_misuse_are_refused_without_harm<E: TestEnv>() {
    let mut env = E::new();
    let options = StorageOptions {
        max_record_size_bytes: 1024,
        ..roomy_segments()
    };
    let mut storage = bootstrapped(&mut env, &options);
    let err = storage.append(&entries(2, 3, 1, 2000)).unwrap_err();
    assert!(matches!(err, StorageError::RecordTooLarge { .. }) && !err.is_fatal());
    let misuse = [
        storage.append(&entries(3, 4, 1, 10)),
        storage.append(&entries(1, 2, 1, 10)),
        storage.append(&[entry(2, 1, 1), entry(4, 1, 1)]),
        storage.save_snapshot(&snapshot(9, 1, b""), 0),
        storage.install_snapshot(&snapshot(1, 1, b"")),
    ];
    for result in misuse {
        let err = result.unwrap_err();
        assert!(matches!(err, StorageError::InvalidRequest { .. }), "{err}");
    }
    storage.append(&entries(2, 3, 1, 10)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.entries, entries(2, 3, 1, 10));
    assert!(StorageOptions {
        segment_size_bytes: 10,
        ..StorageOptions::default()
    }
    .validate()
    .is_err());
}

fn the_identity_survives_restarts_and_damage_to_it_is_reported<E: TestEnv>() {
    let mut env = E::new();
    let options = roomy_segments();
    let (mut storage, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.identity, None, "a new data dir belongs to nobody");
    let identity = Identity {
        member_id: 0x1234,
        cluster_id: 0xabcd,
    };
    storage.save_identity(identity).unwrap();
    storage.bootstrap(&founding_state()).unwrap();
    drop(storage);
    let (mut storage, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.identity, Some(identity));
    // Saved again (a cluster id learned later): the new one replaces it whole.
    let learned = Identity {
        cluster_id: 0xef,
        ..identity
    };
    storage.save_identity(learned).unwrap();
    drop(storage);
    let (_, recovered) = reopen(&mut env, &options);
    assert_eq!(recovered.identity, Some(learned));
    assert!(
        storage_refuses_member_id_0(&mut env, &options),
        "0 is no member id"
    );
    env.poke("member.id", 14, &[0x77]);
    let (file, offset, problem) = expect_corrupt(open(&mut env, &options));
    assert!(file.ends_with("member.id"), "{file}");
    assert_eq!(offset, 28, "{problem}");
}

fn storage_refuses_member_id_0<E: TestEnv>(env: &mut E, options: &StorageOptions) -> bool {
    let (mut storage, _) = reopen(env, options);
    matches!(
        storage.save_identity(Identity {
            member_id: 0,
            cluster_id: 1
        }),
        Err(StorageError::InvalidRequest { .. })
    )
}

on_both_disks!(
    the_identity_survives_restarts_and_damage_to_it_is_reported,
    a_new_data_dir_reads_as_new_until_bootstrapped,
    entries_and_hard_state_survive_a_restart,
    a_replaced_suffix_is_recovered_not_the_old_one,
    segments_rotate_and_each_carries_the_hard_state,
    rollovers_take_the_spare_segment_filled_ahead,
    a_spare_of_several_fill_steps_is_filled_whole,
    snapshots_keep_the_newest_two_and_the_wal_behind_the_older,
    a_leaders_snapshot_replaces_the_log,
    a_snapshot_written_apart_and_adopted_is_saved,
    a_snapshot_overtaken_by_the_leaders_is_removed_when_adopted,
    a_failed_snapshot_write_stops_the_storage,
    a_torn_tail_is_cut_off,
    a_flipped_bit_in_the_middle_is_reported_with_file_offset_and_remedy,
    a_flipped_bit_in_the_last_record_is_reported_not_truncated,
    a_missing_segment_is_reported,
    lost_synced_data_is_reported_not_cut_off,
    a_snapshot_the_wal_cannot_follow_is_reported,
    a_snapshot_without_a_wal_is_reported,
    an_unfinished_snapshot_is_removed,
    a_lost_hard_state_raises_the_term_to_the_log,
    limits_and_misuse_are_refused_without_harm,
);
