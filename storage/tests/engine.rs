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
    if reopened.applied_index() != durable_index {
        return Err(format!(
            "reopened at applied index {}, the last durable commit was at {durable_index}",
            reopened.applied_index()
        ));
    }
    matches_the_first(&reopened, &commands, durable_index)
}

/// The seeds of a crash test: `KEEL_STORAGE_SEED`, or the first `KEEL_STORAGE_SEEDS` (40).
fn crash_seeds() -> Vec<u64> {
    match std::env::var("KEEL_STORAGE_SEED") {
        Ok(seed) => vec![seed.parse().unwrap()],
        Err(_) => {
            let count = std::env::var("KEEL_STORAGE_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(40);
            (0..count).collect()
        }
    }
}

/// Whether `reopened` is the store in memory after the first `kept` of `commands`.
fn matches_the_first(reopened: &Store, commands: &[Command], kept: u64) -> Result<(), String> {
    let mut expected = Store::new(config());
    for (i, command) in commands.iter().take(kept as usize).enumerate() {
        expected.apply(i as u64 + 1, 0, command);
    }
    if observe(reopened) != observe(&expected) {
        return Err(format!(
            "reopened store differs from the state at {kept}:\n{}\n{}",
            observe(reopened),
            observe(&expected)
        ));
    }
    Ok(())
}

#[test]
fn a_crash_leaves_the_store_at_its_last_durable_commit() {
    for seed in crash_seeds() {
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

/// A store whose engine defragments `slice_bytes` at a time.
fn open_defragmenting<D: Disk + Send + 'static>(disk: D, slice_bytes: u64) -> Store {
    let mut engine = RedbEngine::open(disk, CACHE_BYTES).unwrap();
    engine.set_defragment_slice_bytes(slice_bytes);
    Store::open(Box::new(engine), config()).unwrap()
}

fn put(key: String, size: usize) -> Command {
    Command::Put(PutRequest {
        key: Bytes::from(key),
        value: Bytes::from(vec![7u8; size]),
        ..PutRequest::default()
    })
}

/// Rows of a table as a view shows them.
fn count_rows(view: &dyn keel_core::mvcc::Read, table: Table) -> usize {
    let mut rows = 0;
    view.scan(
        table,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
        false,
        &mut |_, _| {
            rows += 1;
            true
        },
    )
    .unwrap();
    rows
}

/// Engine files other than `store.redb` (a defragment's copies) left in the data dir.
fn leftovers<D: Disk>(disk: &mut D) -> Vec<String> {
    disk.list()
        .unwrap()
        .into_iter()
        .filter(|name| name.starts_with("store.redb") && name != "store.redb")
        .collect()
}

/// Grows the file with 2 KiB values, deletes them and compacts them away, then defragments
/// while random commands and commits go on: the file shrinks, every answer stays the
/// store's in memory, a view taken before reads on after the switch, and the store reopens
/// the same.
fn defragment_under_writes<D: Disk + Send + 'static>(mut disk: D, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut memory = Store::new(config());
    let mut on_disk = open_defragmenting(disk.share().unwrap(), 4096);
    let mut index = 0u64;
    let mut apply = |command: &Command, memory: &mut Store, on_disk: &mut Store| {
        index += 1;
        let expected = memory.apply(index, 0, command);
        assert_eq!(on_disk.apply(index, 0, command), expected, "{command:?}");
        if index.is_multiple_of(40) {
            on_disk.commit(true).unwrap();
        }
    };
    for i in 0..800 {
        apply(&put(format!("big/{i:04}"), 2048), &mut memory, &mut on_disk);
    }
    let delete = Command::DeleteRange(DeleteRangeRequest {
        key: Bytes::from_static(b"big/"),
        range_end: Bytes::from_static(b"big0"),
        ..DeleteRangeRequest::default()
    });
    apply(&delete, &mut memory, &mut on_disk);
    let compact = Command::Compaction(CompactionRequest {
        revision: memory.current_revision(),
        physical: false,
    });
    apply(&compact, &mut memory, &mut on_disk);
    // Compaction goes in batches between applies, and deletes only behind the index
    // checkpoints that engine commits advance.
    let mut rounds = 0;
    let big_values = |store: &Store| {
        let mut big = 0;
        let view = store.view().unwrap();
        let (all, none) = (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
        view.scan(Table::Values, all, none, false, &mut |_, value| {
            big += usize::from(value.len() == 2048);
            true
        })
        .unwrap();
        big
    };
    while big_values(&on_disk) > 0 {
        rounds += 1;
        assert!(rounds < 5000, "compaction never freed the big values");
        let command = command(&mut rng, &memory);
        apply(&command, &mut memory, &mut on_disk);
        if rounds % 10 == 0 {
            on_disk.begin_commit().unwrap();
            on_disk.commit_done().unwrap();
        }
    }
    on_disk.commit(true).unwrap();
    let (size_before, _) = on_disk.size_on_disk();
    let view = on_disk.view().unwrap();
    let values_before = count_rows(&*view, Table::Values);

    let defragmenting = on_disk.begin_defragment().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let (mut after_done, mut round) = (0, 0);
    while after_done < 50 {
        round += 1;
        assert!(
            std::time::Instant::now() < deadline,
            "the defragment never ended"
        );
        let command = command(&mut rng, &memory);
        apply(&command, &mut memory, &mut on_disk);
        match round % 9 {
            0 => on_disk.begin_commit().unwrap(),
            4 => {
                on_disk.commit_done().unwrap();
            }
            _ => {}
        }
        if defragmenting.outcome().is_some() {
            after_done += 1;
        }
    }
    assert_eq!(defragmenting.outcome(), Some(Ok(())));
    on_disk.commit(true).unwrap();
    let (size_after, _) = on_disk.size_on_disk();
    assert!(
        size_after * 2 < size_before,
        "the file went from {size_before} to {size_after} bytes"
    );
    assert_eq!(observe(&on_disk), observe(&memory));
    assert_eq!(
        count_rows(&*view, Table::Values),
        values_before,
        "a view of the replaced file reads on"
    );
    assert_eq!(leftovers(&mut disk), vec!["store.redb.old.1".to_string()]);
    drop(view);
    // The replaced file goes with its last view (the engine lets go of its own on a thread).
    wait_for_no_leftovers(&mut disk);
    drop(on_disk);
    let reopened = open(disk);
    assert_eq!(observe(&reopened), observe(&memory));
}

#[test]
fn a_defragment_shrinks_the_file_while_commits_and_views_go_on_on_both_disks() {
    let dir = tempfile::tempdir().unwrap();
    defragment_under_writes(FsDisk::open(dir.path()).unwrap(), 11);
    let sim = SimDisk::new(SimDiskConfig::new(11, Faults::none()));
    defragment_under_writes(sim, 11);
}

/// A crash at any point of a defragment under writes: the store reopens whole, at a commit,
/// with no copy left behind. The copy is made durable with everything the file held, so a
/// crash after the switch may keep a commit that was not asked to be durable.
fn defragment_crash_seed(seed: u64) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let disk = SimDisk::new(SimDiskConfig::new(seed, Faults::crashes()));
    let mut store = open_defragmenting(disk.clone(), rng.gen_range(256..8192));
    let mut reference = Store::new(config());
    let mut commands = Vec::new();
    let mut durable_index = 0;
    // Commits a crash may keep: begun and not known to be done, or not durable (a
    // defragment's copy makes what it copied durable).
    let mut may_keep = Vec::new();
    let steps = rng.gen_range(100..500u64);
    let defragment_at = rng.gen_range(1..steps);
    // Half the runs crash the moment the copy has taken the file's place.
    let crash_when_done = rng
        .gen_bool(0.5)
        .then(|| rng.gen_range(defragment_at..=steps));
    let mut defragmenting: Option<keel_core::mvcc::Defragmenting> = None;
    for index in 1..=steps {
        let command = command(&mut rng, &reference);
        reference.apply(index, 0, &command);
        store.apply(index, 0, &command);
        commands.push(command);
        if index == defragment_at {
            defragmenting = Some(store.begin_defragment().map_err(|e| e.to_string())?);
        }
        match rng.gen_range(0..10) {
            0 => {
                store.commit(true).map_err(|e| e.to_string())?;
                durable_index = index;
                may_keep.clear();
            }
            1 => {
                store.commit(false).map_err(|e| e.to_string())?;
                may_keep.push(index);
            }
            2 | 3 => {
                store.begin_commit().map_err(|e| e.to_string())?;
                may_keep.push(index);
            }
            _ => {}
        }
        if let (Some(at), Some(defragmenting)) = (crash_when_done, &defragmenting) {
            if index >= at {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while defragmenting.outcome().is_none() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "seed {seed}: never ended"
                    );
                    std::thread::yield_now();
                }
                break;
            }
        }
    }
    let mut after_crash = disk.crash();
    drop(store);
    let reopened = open(after_crash.share().map_err(|e| e.to_string())?);
    let kept = reopened.applied_index();
    if kept != durable_index && !may_keep.contains(&kept) {
        return Err(format!(
            "reopened at applied index {kept}: the last durable commit was at {durable_index}, \
             others it may keep {may_keep:?} (defragment: {:?})",
            defragmenting.map(|d| d.outcome())
        ));
    }
    matches_the_first(&reopened, &commands, kept)?;
    let left = leftovers(&mut after_crash);
    if !left.is_empty() {
        return Err(format!("files left behind: {left:?}"));
    }
    Ok(())
}

#[test]
fn a_crash_during_a_defragment_leaves_a_whole_store() {
    for seed in crash_seeds() {
        if let Err(problem) = defragment_crash_seed(seed) {
            panic!(
                "defragment crash seed {seed}: {problem}\nrerun: KEEL_STORAGE_SEED={seed} cargo \
                 test -p keel-storage --test engine a_crash_during_a_defragment"
            );
        }
    }
}

/// Every state a crash can leave between the renames that put a copy in place (see
/// `engine/defragment.rs`): opening finishes or undoes it.
#[test]
fn opening_finishes_or_undoes_a_defragment_a_crash_interrupted() {
    // Two files with different stores: `old` (one key) and `copy` (two keys).
    let make = |keys: u64| {
        let disk = SimDisk::new(SimDiskConfig::new(5, Faults::none()));
        let mut store = open(disk.clone());
        for index in 1..=keys {
            store.apply(index, 0, &put(format!("k{index}"), 10));
        }
        store.commit(true).unwrap();
        drop(store);
        let mut disk = disk.crash();
        let mut bytes = vec![0; disk.size_bytes("store.redb").unwrap() as usize];
        disk.read_at("store.redb", 0, &mut bytes).unwrap();
        bytes
    };
    let (old, copy) = (make(1), make(2));
    // (files with their contents, the applied index the store opens at)
    type Case<'a> = (&'a [(&'a str, &'a Vec<u8>)], u64);
    let cases: [Case; 4] = [
        // The copy is being made.
        (&[("store.redb", &old), ("store.redb.defrag", &copy)], 1),
        // Step 1 done: the copy is whole.
        (&[("store.redb", &old), ("store.redb.next", &copy)], 2),
        // Step 2 done.
        (&[("store.redb.old.1", &old), ("store.redb.next", &copy)], 2),
        // Step 3 done, the old file not yet removed (and one of an earlier defragment).
        (
            &[
                ("store.redb.old.1", &old),
                ("store.redb.old.2", &old),
                ("store.redb", &copy),
            ],
            2,
        ),
    ];
    for (files, applied) in cases {
        let mut disk = SimDisk::new(SimDiskConfig::new(6, Faults::none()));
        for (name, bytes) in files {
            disk.create(name).unwrap();
            disk.write_at(name, 0, bytes).unwrap();
            disk.sync(name).unwrap();
        }
        disk.sync_dir().unwrap();
        let reopened = open(disk.share().unwrap());
        assert_eq!(reopened.applied_index(), applied, "{files:?}");
        drop(reopened);
        assert!(leftovers(&mut disk).is_empty(), "{files:?}");
    }
}

/// A defragment of an engine nothing writes to: it ends, and the engine then reads the new
/// file, so the old one closes and goes without any commit.
#[test]
fn an_idle_engine_lets_go_of_the_file_a_defragment_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = FsDisk::open(dir.path()).unwrap();
    let mut store = filled_for_defragment(disk.share().unwrap());
    let before = observe(&store);
    defragment_idle(&mut store);
    store.commit_done().unwrap();
    // The engine lets go of the old file on a thread of its own (closing it takes time).
    wait_for_no_leftovers(&mut disk);
    assert_eq!(observe(&store), before);
}

/// The file a defragment replaced is closed and removed off the thread that takes the new
/// file in (the server loop): closing a redb file syncs it, and unlinking gigabytes takes
/// time; on that thread it held a loaded 3-member cluster's puts for 750 ms.
#[test]
fn the_replaced_file_is_closed_off_the_thread_that_takes_the_copy_in() {
    let dir = tempfile::tempdir().unwrap();
    let removers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut disk = RecordsRemovers {
        disk: FsDisk::open(dir.path()).unwrap(),
        removers: removers.clone(),
    };
    let mut store = filled_for_defragment(disk.share().unwrap());
    defragment_idle(&mut store);
    // This thread takes the copy in, and lets go of the engine's last view of the old file.
    store.commit_done().unwrap();
    wait_for_no_leftovers(&mut disk);
    let removers = removers.lock().unwrap().clone();
    let old: Vec<_> = removers
        .iter()
        .filter(|(name, _)| name.starts_with("store.redb.old."))
        .collect();
    assert_eq!(old.len(), 1, "{removers:?}");
    assert_ne!(old[0].1, std::thread::current().id(), "{removers:?}");
}

/// An `FsDisk` that records which thread removed each file.
#[derive(Debug)]
struct RecordsRemovers {
    disk: FsDisk,
    removers: std::sync::Arc<std::sync::Mutex<Vec<(String, std::thread::ThreadId)>>>,
}

impl Disk for RecordsRemovers {
    fn list(&mut self) -> std::io::Result<Vec<String>> {
        self.disk.list()
    }
    fn create(&mut self, name: &str) -> std::io::Result<()> {
        self.disk.create(name)
    }
    fn size_bytes(&mut self, name: &str) -> std::io::Result<u64> {
        self.disk.size_bytes(name)
    }
    fn read_at(&mut self, name: &str, offset_bytes: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.disk.read_at(name, offset_bytes, buf)
    }
    fn write_at(&mut self, name: &str, offset_bytes: u64, data: &[u8]) -> std::io::Result<()> {
        self.disk.write_at(name, offset_bytes, data)
    }
    fn set_size(&mut self, name: &str, size_bytes: u64) -> std::io::Result<()> {
        self.disk.set_size(name, size_bytes)
    }
    fn sync(&mut self, name: &str) -> std::io::Result<()> {
        self.disk.sync(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> std::io::Result<()> {
        self.disk.rename(from, to)
    }
    fn remove(&mut self, name: &str) -> std::io::Result<()> {
        let remover = std::thread::current().id();
        self.removers
            .lock()
            .unwrap()
            .push((name.to_string(), remover));
        self.disk.remove(name)
    }
    fn sync_dir(&mut self) -> std::io::Result<()> {
        self.disk.sync_dir()
    }
    fn location(&self, name: &str) -> String {
        self.disk.location(name)
    }
    fn share(&self) -> std::io::Result<Self> {
        Ok(RecordsRemovers {
            disk: self.disk.share()?,
            removers: self.removers.clone(),
        })
    }
}

/// A store of 200 values of 1,000 bytes, committed durably, that defragments 4 KiB a slice.
fn filled_for_defragment<D: Disk + Send + 'static>(disk: D) -> Store {
    let mut store = open_defragmenting(disk, 4096);
    for index in 1..=200 {
        store.apply(index, 0, &put(format!("k{index:03}"), 1000));
    }
    store.commit(true).unwrap();
    store
}

/// Defragments `store`, which nothing writes to meanwhile, and waits until it ended well.
fn defragment_idle(store: &mut Store) {
    let defragmenting = store.begin_defragment().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while defragmenting.outcome().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the defragment never ended"
        );
        std::thread::yield_now();
    }
    assert_eq!(defragmenting.outcome(), Some(Ok(())));
}

/// Waits until no defragment's copy or replaced file is left in the data dir.
fn wait_for_no_leftovers<D: Disk>(disk: &mut D) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !leftovers(disk).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the replaced file stays: {:?}",
            leftovers(disk)
        );
        std::thread::yield_now();
    }
}
