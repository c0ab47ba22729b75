//! `Storage`: the one type the server and the simulator use. It persists what a Raft
//! `Ready` asks for, takes the application's snapshots, and recovers it all on start.

use keel_core::raft::{Entry, HardState, Index, InitialState, Ready, Snapshot, Term};

use crate::disk::Disk;
use crate::error::{Result, StorageError};
use crate::identity::{self, Identity};
use crate::repair::Repair;
use crate::segment::SegmentName;
use crate::snapshot_file::{self, sync_dir, BROKEN_SUFFIX, TEMP_SUFFIX};
use crate::wal::{Wal, WalOptions, SPARE_SEGMENT_FILE};

pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 << 20;
/// Room for etcd's largest request (1.5 MiB) with plenty to spare.
pub const DEFAULT_MAX_RECORD_SIZE_BYTES: u64 = 16 << 20;
/// The data set must fit in memory; etcd recommends at most 8 GiB.
pub const DEFAULT_MAX_SNAPSHOT_SIZE_BYTES: u64 = 16 << 30;
/// How many snapshot files are kept: the newest, and one to fall back on if it is damaged.
pub const KEPT_SNAPSHOTS: usize = 2;

const MIN_SEGMENT_SIZE_BYTES: u64 = 4 << 10;
/// Record positions inside a segment are 32-bit: a segment plus one oversized record must
/// stay below 4 GiB.
const MAX_SEGMENT_SIZE_BYTES: u64 = 1 << 30;
const MIN_RECORD_SIZE_BYTES: u64 = 1 << 10;
/// Record bodies carry their length in 32 bits; stay well clear of the edge.
const MAX_RECORD_SIZE_BYTES: u64 = 1 << 30;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// A WAL segment is closed once the next record would take it past this size.
    pub segment_size_bytes: u64,
    /// The largest entry (encoded) the WAL accepts; larger ones get `RecordTooLarge`.
    pub max_record_size_bytes: u64,
    /// The largest snapshot data accepted and read back.
    pub max_snapshot_size_bytes: u64,
    /// Fill new segments with zeros up front, so syncs only flush data (no block
    /// allocation to journal): about twice the syncs per second on ext4 here, for a pause
    /// when a segment is opened.
    pub preallocate_segments: bool,
}

impl Default for StorageOptions {
    fn default() -> StorageOptions {
        StorageOptions {
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            max_record_size_bytes: DEFAULT_MAX_RECORD_SIZE_BYTES,
            max_snapshot_size_bytes: DEFAULT_MAX_SNAPSHOT_SIZE_BYTES,
            preallocate_segments: true,
        }
    }
}

impl StorageOptions {
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(StorageError::InvalidOptions { reason });
        if !(MIN_SEGMENT_SIZE_BYTES..=MAX_SEGMENT_SIZE_BYTES).contains(&self.segment_size_bytes) {
            return invalid(format!(
                "segment_size_bytes must be between {MIN_SEGMENT_SIZE_BYTES} and {MAX_SEGMENT_SIZE_BYTES}"
            ));
        }
        if !(MIN_RECORD_SIZE_BYTES..=MAX_RECORD_SIZE_BYTES).contains(&self.max_record_size_bytes) {
            return invalid(format!(
                "max_record_size_bytes must be between {MIN_RECORD_SIZE_BYTES} and {MAX_RECORD_SIZE_BYTES}"
            ));
        }
        if self.max_snapshot_size_bytes == 0 {
            return invalid("max_snapshot_size_bytes must be positive".into());
        }
        Ok(())
    }

    fn wal(&self) -> WalOptions {
        WalOptions {
            segment_size_bytes: self.segment_size_bytes,
            max_record_size_bytes: self.max_record_size_bytes,
            preallocate: self.preallocate_segments,
        }
    }
}

/// What [`Storage::open`] found on disk.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// Nothing was persisted yet (no snapshot, log entry or hard state): the caller
    /// bootstraps or joins a cluster. A bootstrap that a crash interrupted reads as new again.
    pub is_new: bool,
    /// The newest usable snapshot.
    pub snapshot: Option<Snapshot>,
    pub hard_state: HardState,
    /// The log after the snapshot, contiguous from `snapshot.meta.index + 1`.
    pub entries: Vec<Entry>,
    /// What recovery fixed; log each.
    pub repairs: Vec<Repair>,
    /// Who this data dir belongs to; `None` for a new one, or one written before keel kept
    /// identities (the caller then saves one with [`Storage::save_identity`]).
    pub identity: Option<Identity>,
}

impl Recovered {
    /// What `keel_core::raft::Raft::new` starts from: the state machine restored from the
    /// snapshot has applied exactly its index.
    pub fn into_initial_state(self) -> InitialState {
        let snapshot = self.snapshot.unwrap_or_default();
        let applied_index = snapshot.meta.index;
        InitialState {
            hard_state: self.hard_state,
            snapshot,
            entries: self.entries,
            applied_index,
        }
    }
}

/// Durable Raft state in one data directory: a WAL of entries and hard states, and
/// snapshot files.
///
/// Errors: a [fatal](StorageError::is_fatal) error (a failed write or sync, a full disk)
/// stops the storage for good: every later call returns [`StorageError::Stopped`], and the
/// process must exit and restart, letting recovery find out what reached the disk. Above all
/// a failed sync must never be retried ([`StorageError::SyncFailed`]).
#[derive(Debug)]
pub struct Storage<D: Disk> {
    disk: D,
    options: StorageOptions,
    wal: Wal,
    /// Snapshot files on disk, oldest first.
    snapshots: Vec<(Index, String)>,
    /// The newest snapshot's index: entries up to it may never be replaced.
    snapshot_index: Index,
    stopped: Option<String>,
}

/// The files of a data dir, by kind.
#[derive(Debug, Default)]
struct DirListing {
    segments: Vec<SegmentName>,
    /// Oldest first.
    snapshots: Vec<(Index, Term, String)>,
    temp_files: Vec<String>,
}

impl DirListing {
    fn read<D: Disk>(disk: &mut D) -> Result<DirListing> {
        let names = disk.list().map_err(|source| StorageError::Unreadable {
            file: disk.location("."),
            offset_bytes: 0,
            source,
        })?;
        let mut listing = DirListing::default();
        for name in names {
            if let Some(segment) = SegmentName::parse(&name) {
                listing.segments.push(segment);
            } else if let Some((index, term)) = snapshot_file::parse_name(&name) {
                listing.snapshots.push((index, term, name));
            } else if name.ends_with(TEMP_SUFFIX) {
                listing.temp_files.push(name);
            }
        }
        listing.snapshots.sort();
        Ok(listing)
    }
}

impl<D: Disk> Storage<D> {
    /// Opens (or creates) the data dir on `disk` and recovers it: the newest usable
    /// snapshot, the hard state, and the log after the snapshot. Every file a crash can
    /// damage is checked; damage a crash cannot explain is a [`StorageError::Corrupt`]
    /// naming the file, the byte offset and what an operator can do.
    pub fn open(mut disk: D, options: StorageOptions) -> Result<(Storage<D>, Recovered)> {
        options.validate()?;
        let mut repairs = Vec::new();
        let listing = DirListing::read(&mut disk)?;
        remove_temp_files(&mut disk, &listing.temp_files, &mut repairs)?;
        let (snapshot, snapshots) =
            load_newest_snapshot(&mut disk, &listing.snapshots, &options, &mut repairs)?;
        let had_snapshot_files = !listing.snapshots.is_empty();
        let identity = identity::read(&mut disk)?;
        let (wal, replayed) = if listing.segments.is_empty() {
            if let Some((_, _, name)) = listing.snapshots.last() {
                return Err(StorageError::Corrupt {
                    file: disk.location(name),
                    offset_bytes: 0,
                    problem: "a snapshot exists but no WAL segment does: the WAL is lost".into(),
                });
            }
            (
                Wal::create(&mut disk, options.wal(), 1)?,
                Default::default(),
            )
        } else {
            Wal::recover(&mut disk, options.wal(), listing.segments, &mut repairs)?
        };
        let mut storage = Storage {
            disk,
            options,
            wal,
            snapshots,
            snapshot_index: snapshot.as_ref().map_or(0, |s| s.meta.index),
            stopped: None,
        };
        let mut recovered = storage.combine(snapshot, replayed, repairs)?;
        recovered.is_new &= !had_snapshot_files;
        recovered.identity = identity;
        Ok((storage, recovered))
    }

    /// Joins the snapshot and the replayed WAL into one consistent starting state.
    fn combine(
        &mut self,
        snapshot: Option<Snapshot>,
        replayed: crate::wal::Replayed,
        mut repairs: Vec<Repair>,
    ) -> Result<Recovered> {
        let (snapshot_index, snapshot_term) = snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.index, s.meta.term));
        let base_index = replayed.base_index;
        if snapshot_index < base_index {
            return Err(self.wal_gap_error(snapshot_index, base_index, &repairs));
        }
        let (entries, matches) = entries_after_snapshot(
            replayed.entries,
            base_index,
            (snapshot_index, snapshot_term),
            &mut repairs,
        );
        // The WAL must continue right after what recovery returns.
        if !matches {
            self.wal
                .reset(&mut self.disk, snapshot_index, snapshot_term)?;
        }
        debug_assert_eq!(
            self.wal.last_index(),
            entries.last().map_or(snapshot_index, |e| e.index)
        );
        let is_new = snapshot.is_none() && entries.is_empty() && replayed.hard_state.is_none();
        let hard_state = raise_term(
            replayed.hard_state.unwrap_or_default(),
            entries.last().map_or(snapshot_term, |e| e.term),
            &mut repairs,
        );
        if hard_state != self.wal.hard_state() {
            self.wal.set_hard_state(&mut self.disk, hard_state)?;
            self.wal.sync(&mut self.disk)?;
        }
        Ok(Recovered {
            is_new,
            snapshot,
            hard_state,
            entries,
            repairs,
            identity: None,
        })
    }

    fn wal_gap_error(
        &self,
        snapshot_index: Index,
        base_index: Index,
        repairs: &[Repair],
    ) -> StorageError {
        let set_aside = repairs
            .iter()
            .any(|r| matches!(r, Repair::SnapshotSetAside { .. }));
        let why = if set_aside {
            " (a newer snapshot was damaged and set aside)"
        } else {
            ""
        };
        StorageError::Corrupt {
            file: self.disk.location(&self.wal_first_file()),
            offset_bytes: 0,
            problem: format!(
                "the WAL starts after index {base_index}, but the newest usable snapshot ends at \
                 index {snapshot_index}{why}: entries {}..={base_index} are missing",
                snapshot_index + 1
            ),
        }
    }

    fn wal_first_file(&self) -> String {
        self.wal.first_segment_file()
    }

    /// Records durably who this data dir belongs to (see [`Identity`]); done once, before
    /// the member first takes part in its cluster.
    pub fn save_identity(&mut self, identity: Identity) -> Result<()> {
        self.check_running()?;
        let result = identity::write(&mut self.disk, identity);
        self.note(result)
    }

    /// Persists a founding member's or a joining member's [`InitialState`] into a new data
    /// dir, durably.
    pub fn bootstrap(&mut self, initial: &InitialState) -> Result<()> {
        if self.wal.last_index() != 0 || self.snapshot_index != 0 {
            return Err(StorageError::InvalidRequest {
                reason: "bootstrap of a data dir that already holds a log".into(),
            });
        }
        if initial.snapshot.meta.index > 0 {
            self.install_snapshot(&initial.snapshot)?;
        }
        if !initial.entries.is_empty() {
            self.append(&initial.entries)?;
        }
        // A joining member starts from nothing; writing nothing keeps its data dir new.
        if initial.hard_state != HardState::default() {
            self.set_hard_state(initial.hard_state)?;
        }
        self.sync()
    }

    /// Carries out the persist step of a Raft `Ready`, in the order its contract gives:
    /// the leader's snapshot, then the entries, then the hard state, then one sync if
    /// [`Ready::must_sync`] (group commit: all of it, one sync).
    pub fn persist(&mut self, ready: &Ready) -> Result<()> {
        if let Some(snapshot) = &ready.snapshot {
            self.install_snapshot(snapshot)?;
        }
        if !ready.entries.is_empty() {
            self.append(&ready.entries)?;
        }
        if let Some(hard_state) = ready.hard_state {
            self.set_hard_state(hard_state)?;
        }
        if ready.must_sync() {
            self.sync()?;
        }
        Ok(())
    }

    /// Appends `entries` (contiguous). `entries[0].index` may be at or below the last index:
    /// then the log from that index on is replaced. Durable after the next [`Storage::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_running()?;
        self.check_append(entries)?;
        let result = self.wal.append(&mut self.disk, entries);
        self.note(result)
    }

    fn check_append(&self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let invalid = |reason: String| Err(StorageError::InvalidRequest { reason });
        if first.index <= self.snapshot_index {
            return invalid(format!(
                "entry {} would replace the log at or below the snapshot at {}",
                first.index, self.snapshot_index
            ));
        }
        if first.index > self.wal.last_index() + 1 {
            return invalid(format!(
                "entry {} leaves a gap after the last index {}",
                first.index,
                self.wal.last_index()
            ));
        }
        if let Some(pair) = entries.windows(2).find(|p| p[1].index != p[0].index + 1) {
            return invalid(format!(
                "entries are not contiguous: {} follows {}",
                pair[1].index, pair[0].index
            ));
        }
        Ok(())
    }

    /// Records the hard state (term, vote, commit index). Durable after the next sync.
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<()> {
        self.check_running()?;
        let result = self.wal.set_hard_state(&mut self.disk, hard_state);
        self.note(result)
    }

    /// Makes everything appended and recorded so far durable, with one sync (none if
    /// nothing changed). On failure ([`StorageError::SyncFailed`]) the process must stop.
    pub fn sync(&mut self) -> Result<()> {
        self.check_running()?;
        let result = self.wal.sync(&mut self.disk);
        self.note(result)
    }

    /// Saves a snapshot the leader sent (`Ready::snapshot`). The log is replaced by it: the
    /// WAL restarts after `snapshot.meta.index`, and all older segments are deleted. Durable
    /// on return.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.check_running()?;
        if snapshot.meta.index <= self.snapshot_index {
            return Err(StorageError::InvalidRequest {
                reason: format!(
                    "snapshot {} is not newer than the saved snapshot {}",
                    snapshot.meta.index, self.snapshot_index
                ),
            });
        }
        let result = self.install_snapshot_unchecked(snapshot);
        self.note(result)
    }

    fn install_snapshot_unchecked(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.write_snapshot(snapshot)?;
        self.wal
            .reset(&mut self.disk, snapshot.meta.index, snapshot.meta.term)
    }

    /// Saves the application's own snapshot (the one passed to `Raft::compact`, with the
    /// same `retain_entries`). WAL segments are then released, keeping the `retain_entries`
    /// entries before the snapshot, and everything after the older kept snapshot, so that a
    /// damaged newest snapshot can be recovered from the older one. Snapshots at or below
    /// the saved one are ignored, as `Raft::compact` ignores them.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot, retain_entries: u64) -> Result<()> {
        self.check_running()?;
        let index = snapshot.meta.index;
        if index <= self.snapshot_index {
            return Ok(());
        }
        if index > self.wal.last_index() {
            return Err(StorageError::InvalidRequest {
                reason: format!(
                    "snapshot {index} is beyond the last log index {}",
                    self.wal.last_index()
                ),
            });
        }
        let result = self.save_snapshot_unchecked(snapshot, retain_entries);
        self.note(result)
    }

    fn save_snapshot_unchecked(&mut self, snapshot: &Snapshot, retain_entries: u64) -> Result<()> {
        self.write_snapshot(snapshot)?;
        self.release_wal_for(snapshot.meta.index, retain_entries)
    }

    /// Releases the WAL before a saved snapshot at `index`, keeping `retain_entries` before
    /// it and everything after the older kept snapshot.
    fn release_wal_for(&mut self, index: Index, retain_entries: u64) -> Result<()> {
        let older = self.snapshots.iter().rev().nth(1).map_or(0, |(i, _)| *i);
        let first_kept = index.saturating_sub(retain_entries).min(older) + 1;
        self.wal.release_before(&mut self.disk, first_kept)
    }

    /// A writer of this directory's snapshot files that works apart from the storage (on
    /// another thread), so that writing and syncing a snapshot as large as the store does
    /// not hold up the log. Its result goes back through [`Storage::adopt_snapshot`].
    pub fn snapshot_writer(&self) -> Result<SnapshotWriter<D>> {
        self.check_running()?;
        let disk = self.disk.share().map_err(|e| {
            StorageError::write("open another handle on", self.disk.location("."), 0, e)
        })?;
        Ok(SnapshotWriter {
            disk,
            max_bytes: self.options.max_snapshot_size_bytes,
        })
    }

    /// Takes a snapshot a [`SnapshotWriter`] wrote (the application's own, as in
    /// [`Storage::save_snapshot`]) and releases the WAL before it. A failed write stops the
    /// storage as if it had failed here. A snapshot no newer than the saved one (the leader's
    /// arrived meanwhile) is removed instead.
    pub fn adopt_snapshot(
        &mut self,
        written: Result<WrittenSnapshot>,
        retain_entries: u64,
    ) -> Result<()> {
        self.check_running()?;
        let written = self.note(written)?;
        if written.index <= self.snapshot_index {
            let result = self.remove_stale_snapshot(&written.name);
            return self.note(result);
        }
        if written.index > self.wal.last_index() {
            return Err(StorageError::InvalidRequest {
                reason: format!(
                    "snapshot {} is beyond the last log index {}",
                    written.index,
                    self.wal.last_index()
                ),
            });
        }
        let result = self
            .register_snapshot(written.index, written.name)
            .and_then(|()| self.release_wal_for(written.index, retain_entries));
        self.note(result)
    }

    fn remove_stale_snapshot(&mut self, name: &str) -> Result<()> {
        if self.snapshots.iter().any(|(_, n)| n == name) {
            return Ok(());
        }
        self.disk
            .remove(name)
            .map_err(|e| StorageError::write("remove", self.disk.location(name), 0, e))?;
        sync_dir(&mut self.disk)
    }

    /// Writes the snapshot file, then deletes all but the newest [`KEPT_SNAPSHOTS`].
    fn write_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        let name = snapshot_file::write(
            &mut self.disk,
            snapshot,
            self.options.max_snapshot_size_bytes,
        )?;
        self.register_snapshot(snapshot.meta.index, name)
    }

    /// Counts a written snapshot file in, then deletes all but the newest [`KEPT_SNAPSHOTS`].
    fn register_snapshot(&mut self, index: Index, name: String) -> Result<()> {
        self.snapshots.retain(|(_, n)| *n != name);
        self.snapshots.push((index, name));
        self.snapshot_index = index;
        let excess = self.snapshots.len().saturating_sub(KEPT_SNAPSHOTS);
        for (_, old) in self.snapshots.drain(..excess).collect::<Vec<_>>() {
            self.disk
                .remove(&old)
                .map_err(|e| StorageError::write("remove", self.disk.location(&old), 0, e))?;
        }
        if excess > 0 {
            sync_dir(&mut self.disk)?;
        }
        Ok(())
    }

    fn check_running(&self) -> Result<()> {
        match &self.stopped {
            Some(cause) => Err(StorageError::Stopped {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Stops the storage for good after a fatal error.
    fn note<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if e.is_fatal() {
                self.stopped = Some(e.to_string());
            }
        }
        result
    }

    /// The last log index written (synced or not).
    pub fn last_index(&self) -> Index {
        self.wal.last_index()
    }

    /// The newest snapshot's index (0 if none).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// The last hard state recorded (synced or not).
    pub fn hard_state(&self) -> HardState {
        self.wal.hard_state()
    }

    /// How many WAL segment files exist.
    pub fn segment_count(&self) -> usize {
        self.wal.segment_count()
    }

    /// How many segments were opened on a spare filled ahead of time (the rest were
    /// created and zero-filled when needed).
    pub fn spare_segments_used(&self) -> u64 {
        self.wal.spare_segments_used()
    }

    /// Names of the snapshot files kept, oldest first.
    pub fn snapshot_files(&self) -> Vec<String> {
        self.snapshots.iter().map(|(_, n)| n.clone()).collect()
    }

    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Whether a fatal error stopped this storage.
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_some()
    }
}

/// The replayed entries (contiguous after `base_index`) that follow the snapshot, and
/// whether the log matches it. Entries up to the snapshot are in it. If the log's entry at
/// the snapshot's index has another term, or the log ends before it, the snapshot came from
/// a leader and replaces the whole log (a crash came before its log reset was written).
fn entries_after_snapshot(
    mut entries: Vec<Entry>,
    base_index: Index,
    (snapshot_index, snapshot_term): (Index, Term),
    repairs: &mut Vec<Repair>,
) -> (Vec<Entry>, bool) {
    let covered = usize::try_from(snapshot_index - base_index).unwrap_or(usize::MAX);
    let matches = covered == 0
        || entries
            .get(covered - 1)
            .is_some_and(|e| e.term == snapshot_term);
    if matches {
        entries.drain(..covered.min(entries.len()));
        return (entries, true);
    }
    if let Some(last) = entries.last().filter(|e| e.index > snapshot_index) {
        repairs.push(Repair::EntriesReplacedBySnapshot {
            snapshot_index,
            dropped_through_index: last.index,
        });
    }
    (Vec::new(), false)
}

/// Raises the hard state's term to `log_term` (with no vote) if a torn batch kept entries
/// or a snapshot of a newer term but lost the hard state written with them.
fn raise_term(mut hard_state: HardState, log_term: Term, repairs: &mut Vec<Repair>) -> HardState {
    if log_term > hard_state.term {
        repairs.push(Repair::TermRaised {
            from_term: hard_state.term,
            to_term: log_term,
        });
        hard_state.term = log_term;
        hard_state.vote = None;
    }
    hard_state
}

fn remove_temp_files<D: Disk>(
    disk: &mut D,
    names: &[String],
    repairs: &mut Vec<Repair>,
) -> Result<()> {
    for name in names {
        disk.remove(name)
            .map_err(|e| StorageError::write("remove", disk.location(name), 0, e))?;
        // The spare segment is always there; it is filled again, nothing was lost.
        if name != SPARE_SEGMENT_FILE {
            repairs.push(Repair::TempFileRemoved {
                file: disk.location(name),
            });
        }
    }
    if !names.is_empty() {
        sync_dir(disk)?;
    }
    Ok(())
}

type LoadedSnapshots = (Option<Snapshot>, Vec<(Index, String)>);

/// The newest snapshot that reads back intact. Damaged ones are renamed aside (kept for
/// diagnosis, never read again) and reported; older ones are not read.
fn load_newest_snapshot<D: Disk>(
    disk: &mut D,
    listed: &[(Index, Term, String)],
    options: &StorageOptions,
    repairs: &mut Vec<Repair>,
) -> Result<LoadedSnapshots> {
    let mut kept: Vec<(Index, String)> = listed.iter().map(|(i, _, n)| (*i, n.clone())).collect();
    while let Some((_, name)) = kept.last().cloned() {
        match snapshot_file::read(disk, &name, options.max_snapshot_size_bytes) {
            Ok(snapshot) => return Ok((Some(snapshot), kept)),
            Err(problem) => {
                let renamed_to = format!("{name}{BROKEN_SUFFIX}");
                disk.rename(&name, &renamed_to)
                    .map_err(|e| StorageError::write("rename", disk.location(&name), 0, e))?;
                sync_dir(disk)?;
                repairs.push(Repair::SnapshotSetAside {
                    file: disk.location(&name),
                    renamed_to: disk.location(&renamed_to),
                    offset_bytes: problem.offset_bytes,
                    problem: problem.problem,
                });
                kept.pop();
            }
        }
    }
    Ok((None, kept))
}

/// Writes snapshot files for a [`Storage`], from wherever it is moved to (see
/// [`Storage::snapshot_writer`]). It only writes: the storage counts the file in when it
/// adopts the result.
#[derive(Debug)]
pub struct SnapshotWriter<D: Disk> {
    disk: D,
    max_bytes: u64,
}

/// A snapshot file written durably by a [`SnapshotWriter`], not yet adopted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenSnapshot {
    pub index: Index,
    pub name: String,
}

impl<D: Disk> SnapshotWriter<D> {
    /// Writes `snapshot` (temp file, sync, rename, directory sync).
    pub fn write(&mut self, snapshot: &Snapshot) -> Result<WrittenSnapshot> {
        let name = snapshot_file::write(&mut self.disk, snapshot, self.max_bytes)?;
        Ok(WrittenSnapshot {
            index: snapshot.meta.index,
            name,
        })
    }
}
