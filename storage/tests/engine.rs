//! The store on redb over a `Disk`: it answers exactly as the store in memory does, on both
//! disks; it reopens at its last durable commit after a crash (whatever the crash did to
//! unsynced writes); views stay at their commit; a disk that fails stops the store with a
//! typed error naming the file.
//!
//! `KEEL_STORAGE_SEEDS=<n>` runs n crash seeds (default 40); `KEEL_STORAGE_SEED=<s>` one.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use keel_core::mvcc::{
    Command, CompactionRequest, DeleteRangeRequest, Error, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, Store, StoreConfig, Table,
};
use keel_storage::{Disk, Faults, FsDisk, RedbEngine, SimDisk, SimDiskConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CACHE_BYTES: usize = 4 * 1024 * 1024;

fn config() -> StoreConfig {
    StoreConfig {
        compaction_batch_revisions: 3,
        // An index checkpoint every few dozen puts: reads and reopens meet index rows both
        // in the engine and waiting in memory.
        index_checkpoint_bytes: 2048,
        ..StoreConfig::default()
    }
}

fn open<D: Disk + Send + 'static>(disk: D) -> Store {
    let engine = RedbEngine::open(disk, CACHE_BYTES).unwrap();
    Store::open(Box::new(engine), config()).unwrap()
}

/// A random command over a small key space: puts (some on leases), deletes of keys and
/// ranges, compactions, lease grants and revokes.
fn command(rng: &mut ChaCha8Rng, store: &Store) -> Command {
    let key = |rng: &mut ChaCha8Rng| Bytes::from(format!("key/{:02}", rng.gen_range(0..40)));
    match rng.gen_range(0..100) {
        0..=59 => {
            let leases = store.lease_leases().leases;
            let lease = if !leases.is_empty() && rng.gen_bool(0.2) {
                leases[rng.gen_range(0..leases.len())].id
            } else {
                0
            };
            let size = rng.gen_range(0..300);
            Command::Put(PutRequest {
                key: key(rng),
                value: Bytes::from(vec![rng.gen::<u8>(); size]),
                lease,
                ..PutRequest::default()
            })
        }
        60..=74 => Command::DeleteRange(DeleteRangeRequest {
            key: key(rng),
            range_end: if rng.gen_bool(0.3) {
                key(rng)
            } else {
                Bytes::new()
            },
            ..DeleteRangeRequest::default()
        }),
        75..=84 => {
            let current = store.current_revision();
            let floor = store.compact_revision().max(1);
            Command::Compaction(CompactionRequest {
                revision: rng.gen_range(floor..=current),
                physical: false,
            })
        }
        85..=92 => Command::LeaseGrant(LeaseGrantRequest {
            ttl: 60,
            id: rng.gen_range(1..6),
        }),
        _ => Command::LeaseRevoke(LeaseRevokeRequest {
            id: rng.gen_range(1..6),
        }),
    }
}

fn everything() -> RangeRequest {
    RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        ..RangeRequest::default()
    }
}

/// Everything a client can observe of a store, for comparing two.
fn observe(store: &Store) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {} {}",
        store.hash_kv(0),
        store.range(&everything()),
        store.lease_leases().leases,
        store.alarms(),
        store.size_bytes(),
        store.applied_index(),
    )
}

/// The same commands on the store in memory and on `disk`: the same answers throughout,
/// and the same store after closing and opening the disk's again.
fn matches_the_store_in_memory<D: Disk + Send + 'static>(disk: D, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut memory = Store::new(config());
    let mut on_disk = open(disk.share().unwrap());
    for index in 1..=400u64 {
        let command = command(&mut rng, &memory);
        let expected = memory.apply(index, 0, &command);
        let got = on_disk.apply(index, 0, &command);
        assert_eq!(got, expected, "command {index}: {command:?}");
        // Commits of every kind, so reads merge writes pending, being committed and
        // committed.
        match index % 50 {
            0 => on_disk.commit(index % 100 == 0).unwrap(),
            17 | 33 => on_disk.begin_commit().unwrap(),
            _ if index % 7 == 0 => {
                on_disk.commit_done().unwrap();
            }
            _ => {}
        }
    }
    assert_eq!(observe(&on_disk), observe(&memory));
    on_disk.commit(true).unwrap();
    drop(on_disk);
    let reopened = open(disk);
    assert_eq!(observe(&reopened), observe(&memory));
    assert_eq!(reopened.stats(), memory.stats());
}

#[test]
fn the_store_on_redb_answers_as_in_memory_on_both_disks() {
    let dir = tempfile::tempdir().unwrap();
    matches_the_store_in_memory(FsDisk::open(dir.path()).unwrap(), 7);
    let sim = SimDisk::new(SimDiskConfig::new(7, Faults::none()));
    matches_the_store_in_memory(sim, 7);
}

/// Applies commands, committing durably now and then and non-durably in between, crashes
/// the disk, and checks that the reopened store is the reference store at the last durable
/// commit's applied index.
fn crash_seed(seed: u64) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let disk = SimDisk::new(SimDiskConfig::new(seed, Faults::crashes()));
    let mut store = open(disk.clone());
    let mut reference = Store::new(config());
    let mut commands = Vec::new();
    let mut durable_index = 0;
    // A commit begun and not known to be done: a crash may keep it or not.
    let mut begun = None;
    let steps = rng.gen_range(20..300u64);
    for index in 1..=steps {
        let command = command(&mut rng, &reference);
        reference.apply(index, 0, &command);
        store.apply(index, 0, &command);
        commands.push(command);
        match rng.gen_range(0..20) {
            0 => {
                store.commit(true).map_err(|e| e.to_string())?;
                durable_index = index;
                begun = None;
            }
            1 | 2 => {
                store.commit(false).map_err(|e| e.to_string())?;
                if let Some(at) = begun.take() {
                    durable_index = at;
                }
            }
            3 | 4 => {
                store.begin_commit().map_err(|e| e.to_string())?;
                if let Some(at) = begun.replace(index) {
                    durable_index = at;
                }
            }
            5 if store.commit_done().map_err(|e| e.to_string())? => {
                if let Some(at) = begun.take() {
                    durable_index = at;
                }
            }
            _ => {}
        }
    }
    let after_crash = disk.crash();
    drop(store);
    let reopened = open(after_crash);
    if begun == Some(reopened.applied_index()) {
        durable_index = reopened.applied_index();
    }
    // The reference store as it was at the last durable commit.
    let mut expected = Store::new(config());
    for (i, command) in commands.iter().take(durable_index as usize).enumerate() {
        expected.apply(i as u64 + 1, 0, command);
    }
    if reopened.applied_index() != durable_index {
        return Err(format!(
            "reopened at applied index {}, the last durable commit was at {durable_index}",
            reopened.applied_index()
        ));
    }
    if observe(&reopened) != observe(&expected) {
        return Err(format!(
            "reopened store differs from the durable state:\n{}\n{}",
            observe(&reopened),
            observe(&expected)
        ));
    }
    Ok(())
}

#[test]
fn a_crash_leaves_the_store_at_its_last_durable_commit() {
    let seeds: Vec<u64> = match std::env::var("KEEL_STORAGE_SEED") {
        Ok(seed) => vec![seed.parse().unwrap()],
        Err(_) => {
            let count = std::env::var("KEEL_STORAGE_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(40);
            (0..count).collect()
        }
    };
    for seed in seeds {
        if let Err(problem) = crash_seed(seed) {
            panic!(
                "engine crash seed {seed}: {problem}\nrerun: KEEL_STORAGE_SEED={seed} cargo \
                 test -p keel-storage --test engine a_crash_leaves"
            );
        }
    }
}

#[test]
fn a_view_stays_at_its_commit_while_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(FsDisk::open(dir.path()).unwrap());
    let put = |value: &'static str| {
        Command::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(value.as_bytes()),
            ..PutRequest::default()
        })
    };
    store.apply(1, 0, &put("one"));
    store.commit(false).unwrap();
    let view = store.view().unwrap();
    store.apply(2, 0, &put("two"));
    store.commit(true).unwrap();
    let rows = |view: &dyn keel_core::mvcc::Read| {
        let mut values = Vec::new();
        view.scan(
            Table::Values,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
            &mut |_, value| {
                values.push(value.to_vec());
                true
            },
        )
        .unwrap();
        values.len()
    };
    assert_eq!(rows(&*view), 1, "the old view sees one version");
    assert_eq!(rows(&*store.view().unwrap()), 2);
}

#[test]
fn a_failed_sync_stops_the_store_with_an_error_naming_the_file() {
    let disk = SimDisk::new(SimDiskConfig::new(3, Faults::none()));
    let mut store = open(disk.clone());
    store
        .apply(
            1,
            0,
            &Command::Put(PutRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                ..PutRequest::default()
            }),
        )
        .result
        .unwrap();
    disk.set_faults(Faults {
        sync_error_probability: 1.0,
        ..Faults::none()
    });
    let error = store.commit(true).unwrap_err();
    assert!(
        matches!(&error, Error::Storage { reason } if reason.contains("store.redb")),
        "{error}"
    );
    assert!(store.failure().is_some());
    assert!(matches!(
        store.range(&everything()),
        Err(Error::Storage { .. })
    ));
    let applied = store.apply(2, 0, &Command::Put(PutRequest::default()));
    assert!(matches!(applied.result, Err(Error::Storage { .. })));
}
