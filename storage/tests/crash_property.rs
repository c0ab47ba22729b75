//! The crash property, over many seeds on `SimDisk`: random appends (with suffix
//! replacement), hard states, syncs and snapshots; crashes at random points, losing, keeping
//! or tearing unsynced writes; recovery; and a check against a model of what was written.
//!
//! What must hold after every recovery:
//! - everything a completed sync covered is recovered exactly, and nothing is invented: the
//!   recovered log and hard state equal the model's state at the last completed sync plus
//!   some prefix of what was written after it;
//! - with only crash faults, recovery always succeeds (a torn tail is repaired);
//! - with bit rot, bad sectors or misdirected writes, recovery either returns such a state
//!   or reports corruption (`Corrupt` / `Unreadable`): never wrong data.
//!
//! `KEEL_STORAGE_SEEDS=<n>` runs n seeds (default 250); `KEEL_STORAGE_SEED=<s>` runs one.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use keel_core::raft::{
    ConfState, Entry, EntryPayload, HardState, Index, Snapshot, SnapshotMeta, Term,
};
use keel_storage::{
    Disk, Faults, Recovered, SimDisk, SimDiskConfig, Storage, StorageError, StorageOptions,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DEFAULT_SEEDS: u64 = 250;
const STEPS_PER_SEED: usize = 160;

#[test]
fn crash_recovery_holds_over_many_seeds() {
    let seeds: Vec<u64> = match std::env::var("KEEL_STORAGE_SEED") {
        Ok(seed) => vec![seed.parse().expect("KEEL_STORAGE_SEED must be a number")],
        Err(_) => {
            let count = std::env::var("KEEL_STORAGE_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(DEFAULT_SEEDS);
            (0..count).collect()
        }
    };
    let mut outcomes = Outcomes::default();
    for seed in seeds {
        match run_seed(seed) {
            Ok(outcome) => outcomes.add(&outcome),
            Err(failure) => panic!(
                "storage crash property failed for seed {seed} ({}): {failure}\n\
                 rerun just this seed: KEEL_STORAGE_SEED={seed} cargo test -p keel-storage \
                 --test crash_property",
                Profile::of(seed).name
            ),
        }
    }
    println!("{outcomes:?}");
    assert!(outcomes.recoveries > 0);
}

#[test]
fn same_seed_same_run() {
    for seed in [3, 4, 6, 7] {
        assert_eq!(
            run_seed(seed),
            run_seed(seed),
            "seed {seed} is not deterministic"
        );
    }
}

/// What happened in one seed's run.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    recoveries: u64,
    repairs: u64,
    reported_corruption: bool,
    last_index: Index,
    disk: String,
}

#[derive(Debug, Default)]
struct Outcomes {
    seeds: u64,
    recoveries: u64,
    repairs: u64,
    reported_corruption: u64,
}

impl Outcomes {
    fn add(&mut self, outcome: &Outcome) {
        self.seeds += 1;
        self.recoveries += outcome.recoveries;
        self.repairs += outcome.repairs;
        self.reported_corruption += u64::from(outcome.reported_corruption);
    }
}

/// The faults one seed runs with.
struct Profile {
    name: &'static str,
    faults: Faults,
    /// Whether damage a crash cannot explain is injected (so reporting it is right).
    corrupts: bool,
}

impl Profile {
    /// Faults after which a restarted process may succeed: a failed sync, a full disk.
    fn transient_faults(&self) -> bool {
        self.faults.sync_error_probability > 0.0 || self.faults.quota_bytes.is_some()
    }

    fn of(seed: u64) -> Profile {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_fa17);
        let crash = Faults {
            unsynced_write_survives_probability: [0.0, 0.3, 0.7, 1.0][rng.gen_range(0..4)],
            unsynced_write_tears_probability: [0.0, 0.3][rng.gen_range(0..2)],
            ..Faults::none()
        };
        let (name, faults, corrupts) = match seed % 8 {
            0..=2 => ("crashes", crash, false),
            3 => (
                "crashes + failing syncs",
                Faults {
                    sync_error_probability: 0.02,
                    ..crash
                },
                false,
            ),
            4 => (
                "crashes + bit rot",
                Faults {
                    bit_rot_probability: 0.01,
                    ..crash
                },
                true,
            ),
            5 => (
                "crashes + bad sectors",
                Faults {
                    read_error_probability: 0.002,
                    ..crash
                },
                true,
            ),
            6 => (
                "crashes + misdirected writes",
                Faults {
                    misdirected_write_probability: 0.01,
                    ..crash
                },
                true,
            ),
            _ => (
                "crashes + full disk",
                Faults {
                    quota_bytes: Some(rng.gen_range(24u64..200) << 10),
                    ..crash
                },
                false,
            ),
        };
        Profile {
            name,
            faults,
            corrupts,
        }
    }
}

/// The log as the model knows it: contiguous entries after `base`.
#[derive(Clone, Debug, Default, PartialEq)]
struct LogModel {
    base: Index,
    base_term: Term,
    entries: Vec<Entry>,
}

impl LogModel {
    fn last_index(&self) -> Index {
        self.base + self.entries.len() as Index
    }

    fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base {
            return Some(self.base_term);
        }
        let offset = index.checked_sub(self.base + 1)?;
        self.entries.get(offset as usize).map(|e| e.term)
    }

    fn after(&self, index: Index) -> Vec<Entry> {
        self.entries[(index - self.base) as usize..].to_vec()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Entry(Entry),
    HardState(HardState),
    /// A leader's snapshot replaced the log.
    Reset(Index, Term),
}

#[derive(Clone, Debug, Default)]
struct State {
    log: LogModel,
    hard_state: HardState,
}

impl State {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Entry(entry) => {
                let keep = (entry.index - self.log.base - 1) as usize;
                self.log.entries.truncate(keep);
                self.log.entries.push(entry.clone());
            }
            Op::HardState(hard_state) => self.hard_state = *hard_state,
            Op::Reset(index, term) => {
                self.log = LogModel {
                    base: *index,
                    base_term: *term,
                    entries: Vec::new(),
                };
            }
        }
    }

    /// What recovery must return for this state, given the snapshot it recovered, or `None`
    /// if the WAL could not follow that snapshot.
    fn expected(&self, snapshot: &SnapshotMeta) -> Option<(Vec<Entry>, HardState)> {
        let entries = if snapshot.index < self.log.base {
            return None;
        } else if self.log.term_at(snapshot.index) == Some(snapshot.term) {
            self.log.after(snapshot.index)
        } else {
            // The snapshot came from a leader and replaces this log.
            Vec::new()
        };
        let log_term = entries.last().map_or(snapshot.term, |e| e.term);
        let mut hard_state = self.hard_state;
        if log_term > hard_state.term {
            hard_state.term = log_term;
            hard_state.vote = None;
        }
        Some((entries, hard_state))
    }
}

/// What was written, and what of it is known durable.
struct Model {
    /// The state as of the last completed sync.
    durable: State,
    /// Written since then, in order; any prefix may have survived a crash.
    pending: Vec<Op>,
    current: State,
    /// Every snapshot that may be on disk.
    snapshots: Vec<Snapshot>,
    /// The newest snapshot known saved.
    newest_saved: Index,
    commit: Index,
    term: Term,
}

impl Model {
    fn push(&mut self, op: Op) {
        self.current.apply(&op);
        self.pending.push(op);
    }

    fn synced(&mut self) {
        self.durable = self.current.clone();
        self.pending.clear();
    }

    /// Checks what recovery returned against every state a crash could have left, and
    /// continues from the one it matched.
    fn check(&mut self, recovered: &Recovered, corrupts: bool) -> Result<(), String> {
        let snapshot = recovered
            .snapshot
            .as_ref()
            .ok_or("no snapshot recovered, though the bootstrap saved one")?;
        if !self.snapshots.contains(snapshot) {
            return Err(format!(
                "recovered snapshot {:?} was never saved",
                snapshot.meta
            ));
        }
        if !corrupts && snapshot.meta.index < self.newest_saved {
            return Err(format!(
                "recovered snapshot {} but {} was saved",
                snapshot.meta.index, self.newest_saved
            ));
        }
        let mut state = self.durable.clone();
        for k in 0..=self.pending.len() {
            let matched = state
                .expected(&snapshot.meta)
                .is_some_and(|(entries, hard_state)| {
                    entries == recovered.entries && hard_state == recovered.hard_state
                });
            if matched {
                self.restart_from(state, snapshot, recovered);
                return Ok(());
            }
            if let Some(op) = self.pending.get(k) {
                state.apply(op);
            }
        }
        Err(format!(
            "recovered state matches nothing written since the last sync: snapshot {:?}, \
             hard state {:?}, entries {:?}; last synced state: hard state {:?}, log after {} \
             up to {}; {} operations since",
            snapshot.meta,
            recovered.hard_state,
            summarize(&recovered.entries),
            self.durable.hard_state,
            self.durable.log.base,
            self.durable.log.last_index(),
            self.pending.len()
        ))
    }

    /// Continues from `state`, the one recovery matched. Its entries before the snapshot
    /// stay known: a later recovery may fall back to an older snapshot.
    fn restart_from(&mut self, state: State, snapshot: &Snapshot, recovered: &Recovered) {
        let meta = &snapshot.meta;
        let log = if state.log.term_at(meta.index) == Some(meta.term) {
            state.log
        } else {
            LogModel {
                base: meta.index,
                base_term: meta.term,
                entries: recovered.entries.clone(),
            }
        };
        self.durable = State {
            log,
            hard_state: recovered.hard_state,
        };
        self.current = self.durable.clone();
        self.pending.clear();
        self.newest_saved = snapshot.meta.index;
        self.snapshots
            .retain(|s| s.meta.index <= snapshot.meta.index);
        let last_index = self.current.log.last_index();
        self.commit = recovered
            .hard_state
            .commit_index
            .max(snapshot.meta.index)
            .min(last_index);
        self.term = self.term.max(recovered.hard_state.term);
    }
}

fn summarize(entries: &[Entry]) -> String {
    match (entries.first(), entries.last()) {
        (Some(first), Some(last)) => format!(
            "{}..={} ({} entries, terms {}..={})",
            first.index,
            last.index,
            entries.len(),
            first.term,
            last.term
        ),
        _ => "none".into(),
    }
}

struct Run {
    rng: ChaCha8Rng,
    profile: Profile,
    options: StorageOptions,
    disk: SimDisk,
    model: Model,
    recoveries: u64,
    repairs: u64,
}

fn run_seed(seed: u64) -> Result<Outcome, String> {
    let profile = Profile::of(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let options = StorageOptions {
        segment_size_bytes: [4096, 8192, 64 << 10][rng.gen_range(0..3)],
        max_record_size_bytes: 64 << 10,
        preallocate_segments: rng.gen_bool(0.5),
        ..StorageOptions::default()
    };
    let disk = SimDisk::new(SimDiskConfig {
        seed: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        sector_size_bytes: [512, 4096][rng.gen_range(0..2)],
        faults: Faults::none(),
    });
    let founding = common::founding_state();
    let model = Model {
        durable: State::default(),
        pending: Vec::new(),
        current: State::default(),
        snapshots: vec![founding.snapshot.clone()],
        newest_saved: 1,
        commit: 1,
        term: 1,
    };
    let mut run = Run {
        rng,
        profile,
        options,
        disk,
        model,
        recoveries: 0,
        repairs: 0,
    };
    let (mut storage, _) = Storage::open(run.disk.clone(), run.options.clone())
        .map_err(|e| format!("opening a new data dir: {e}"))?;
    storage
        .bootstrap(&founding)
        .map_err(|e| format!("bootstrap: {e}"))?;
    run.model.push(Op::Reset(1, 1));
    run.model.push(Op::HardState(founding.hard_state));
    run.model.synced();
    run.disk.set_faults(run.profile.faults);
    let mut live = Some(storage);
    let mut reported_corruption = false;
    let mut steps = 0;
    while let Some(mut storage) = live.take() {
        if steps == STEPS_PER_SEED {
            drop(storage);
            reported_corruption = run.crash_and_recover()?.is_none();
            break;
        }
        steps += 1;
        let crash = match run.step(&mut storage) {
            Ok(crash) => crash,
            Err(e) if e.is_fatal() => true,
            Err(e) => return Err(format!("a refused request in a valid workload: {e}")),
        };
        if !crash {
            live = Some(storage);
            continue;
        }
        drop(storage);
        live = run.crash_and_recover()?;
        reported_corruption = live.is_none();
    }
    Ok(Outcome {
        recoveries: run.recoveries,
        repairs: run.repairs,
        reported_corruption,
        last_index: run.model.current.log.last_index(),
        disk: format!("{:?}", run.disk.stats()),
    })
}

impl Run {
    /// One random operation; `Ok(true)` asks for a crash.
    fn step(&mut self, storage: &mut Storage<SimDisk>) -> Result<bool, StorageError> {
        match self.rng.gen_range(0..100) {
            0..=39 => self.append(storage)?,
            40..=54 => self.set_hard_state(storage)?,
            55..=81 => {
                storage.sync()?;
                self.model.synced();
            }
            82..=88 => self.save_snapshot(storage)?,
            89..=91 => self.install_snapshot(storage)?,
            _ => return Ok(true),
        }
        Ok(false)
    }

    fn append(&mut self, storage: &mut Storage<SimDisk>) -> Result<(), StorageError> {
        let log = &self.model.current.log;
        let last = log.last_index();
        let floor = self
            .model
            .commit
            .max(storage.snapshot_index())
            .max(log.base)
            + 1;
        let start = if last >= floor && self.rng.gen_bool(0.15) {
            // A new leader overwrites an uncommitted suffix.
            self.model.term += 1;
            self.rng.gen_range(floor..=last)
        } else {
            last + 1
        };
        let count = self.rng.gen_range(1..=8);
        let entries: Vec<Entry> = (start..start + count)
            .map(|index| self.entry(index))
            .collect();
        for entry in &entries {
            self.model.push(Op::Entry(entry.clone()));
        }
        storage.append(&entries)
    }

    fn entry(&mut self, index: Index) -> Entry {
        let payload_bytes = if self.rng.gen_bool(0.05) {
            self.rng.gen_range(1000..6000)
        } else {
            self.rng.gen_range(0..300)
        };
        let mut payload = vec![0u8; payload_bytes];
        self.rng.fill(&mut payload[..]);
        Entry {
            index,
            term: self.model.term,
            payload: EntryPayload::Normal(Bytes::from(payload)),
        }
    }

    fn set_hard_state(&mut self, storage: &mut Storage<SimDisk>) -> Result<(), StorageError> {
        let last = self.model.current.log.last_index();
        self.model.commit = self.rng.gen_range(self.model.commit.min(last)..=last);
        let hard_state = HardState {
            term: self.model.term,
            vote: [None, Some(1), Some(2)][self.rng.gen_range(0..3)],
            commit_index: self.model.commit,
        };
        self.model.push(Op::HardState(hard_state));
        storage.set_hard_state(hard_state)
    }

    fn snapshot(&mut self, index: Index, term: Term) -> Snapshot {
        let mut data = vec![0u8; self.rng.gen_range(0..3000)];
        self.rng.fill(&mut data[..]);
        Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: ConfState::with_voters([1, 2, 3]),
            },
            data: Bytes::from(data),
        }
    }

    fn save_snapshot(&mut self, storage: &mut Storage<SimDisk>) -> Result<(), StorageError> {
        let log = &self.model.current.log;
        let low = storage.snapshot_index().max(log.base) + 1;
        if self.model.commit < low {
            return Ok(());
        }
        let index = self.rng.gen_range(low..=self.model.commit);
        let Some(term) = log.term_at(index) else {
            return Ok(());
        };
        let snapshot = self.snapshot(index, term);
        let retain_entries = self.rng.gen_range(0..30);
        // If saving fails half-way, the file may or may not be there.
        self.model.snapshots.push(snapshot.clone());
        storage.save_snapshot(&snapshot, retain_entries)?;
        self.model.newest_saved = index;
        Ok(())
    }

    fn install_snapshot(&mut self, storage: &mut Storage<SimDisk>) -> Result<(), StorageError> {
        let last = self.model.current.log.last_index();
        let index = self.rng.gen_range(self.model.commit + 1..=last + 10);
        self.model.term += 1;
        let snapshot = self.snapshot(index, self.model.term);
        self.model.snapshots.push(snapshot.clone());
        self.model.push(Op::Reset(index, self.model.term));
        self.model.commit = index;
        storage.install_snapshot(&snapshot)?;
        // Installing syncs the WAL and resets it durably.
        self.model.synced();
        self.model.newest_saved = index;
        Ok(())
    }

    /// Flips a bit near the end of the newest segment's data, where telling a torn write
    /// from damage to synced data matters most (uniform bit rot rarely lands there).
    fn rot_the_wal_tail(&mut self) {
        let mut disk = self.disk.clone();
        let Some(newest) = keel_storage::Disk::list(&mut disk)
            .unwrap_or_default()
            .into_iter()
            .rfind(|name| name.ends_with(".wal"))
        else {
            return;
        };
        let bytes = self.disk.contents(&newest).unwrap_or_default();
        let end = common::data_end(&bytes) as u64;
        if end > 0 {
            let offset = self.rng.gen_range(end.saturating_sub(4096)..end);
            let bit = self.rng.gen_range(0..8);
            self.disk.flip_bit(&newest, offset, bit).unwrap_or(());
        }
    }

    /// Crashes the machine and restarts storage on it. `Ok(None)`: recovery reported
    /// corruption, which the profile made possible.
    fn crash_and_recover(&mut self) -> Result<Option<Storage<SimDisk>>, String> {
        for attempt in 0..8 {
            self.disk = self.disk.crash();
            if self.profile.faults.bit_rot_probability > 0.0 && self.rng.gen_bool(0.3) {
                self.rot_the_wal_tail();
            }
            if attempt >= 4 {
                // The operator freed space; the failing disk calmed down.
                self.disk.set_faults(Faults {
                    sync_error_probability: 0.0,
                    quota_bytes: None,
                    ..self.profile.faults
                });
            }
            self.check_zero_tail_hint_changes_nothing()?;
            match Storage::open(self.disk.clone(), self.options.clone()) {
                Ok((storage, recovered)) => {
                    self.recoveries += 1;
                    self.repairs += recovered.repairs.len() as u64;
                    recovered
                        .clone()
                        .into_initial_state()
                        .validate()
                        .map_err(|e| format!("recovered an invalid initial state: {e}"))?;
                    self.model.check(&recovered, self.profile.corrupts)?;
                    return Ok(Some(storage));
                }
                Err(StorageError::Corrupt { .. } | StorageError::Unreadable { .. })
                    if self.profile.corrupts =>
                {
                    return Ok(None);
                }
                Err(StorageError::SyncFailed { .. } | StorageError::NoSpace { .. })
                    if self.profile.transient_faults() =>
                {
                    continue
                }
                Err(e) => return Err(format!("recovery failed: {e}")),
            }
        }
        Err("recovery kept failing on a disk whose faults were turned off".into())
    }

    /// Recovery reads only the part of a segment the disk does not know to be zeros
    /// (`Disk::zeros_from_bytes`); on two fault-free copies of the crashed disk, it must
    /// find exactly what it finds reading every byte.
    fn check_zero_tail_hint_changes_nothing(&self) -> Result<(), String> {
        let open = |disk: SimDisk, hinted: bool| {
            disk.set_faults(Faults::none());
            let outcome = if hinted {
                Storage::open(disk, self.options.clone()).map(|(_, recovered)| recovered)
            } else {
                Storage::open(WithoutZeroHint(disk), self.options.clone())
                    .map(|(_, recovered)| recovered)
            };
            format!("{outcome:?}")
        };
        let hinted = open(self.disk.copy_as_crashed(), true);
        let read_whole = open(self.disk.copy_as_crashed(), false);
        if hinted != read_whole {
            return Err(format!(
                "recovery differs with the zero-tail hint: {hinted}\nreading every byte: {read_whole}"
            ));
        }
        Ok(())
    }
}

/// A `SimDisk` that does not say where its files' zero tails start.
#[derive(Debug)]
struct WithoutZeroHint(SimDisk);

impl Disk for WithoutZeroHint {
    fn list(&mut self) -> std::io::Result<Vec<String>> {
        self.0.list()
    }
    fn create(&mut self, name: &str) -> std::io::Result<()> {
        self.0.create(name)
    }
    fn size_bytes(&mut self, name: &str) -> std::io::Result<u64> {
        self.0.size_bytes(name)
    }
    fn read_at(&mut self, name: &str, offset_bytes: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_at(name, offset_bytes, buf)
    }
    fn write_at(&mut self, name: &str, offset_bytes: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write_at(name, offset_bytes, data)
    }
    fn set_size(&mut self, name: &str, size_bytes: u64) -> std::io::Result<()> {
        self.0.set_size(name, size_bytes)
    }
    fn preallocate(&mut self, name: &str, size_bytes: u64) -> std::io::Result<()> {
        self.0.preallocate(name, size_bytes)
    }
    fn sync(&mut self, name: &str) -> std::io::Result<()> {
        self.0.sync(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> std::io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&mut self, name: &str) -> std::io::Result<()> {
        self.0.remove(name)
    }
    fn sync_dir(&mut self) -> std::io::Result<()> {
        self.0.sync_dir()
    }
    fn location(&self, name: &str) -> String {
        self.0.location(name)
    }
    fn works_in_background(&self) -> bool {
        self.0.works_in_background()
    }
    fn share(&self) -> std::io::Result<Self> {
        self.0.share().map(WithoutZeroHint)
    }
}
