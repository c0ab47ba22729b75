//! The write-ahead log: entries and hard-state updates appended to segment files, written in
//! batches and made durable by one sync per batch (group commit).
//!
//! Writing: records are encoded into a buffer and written when the caller syncs (or the
//! buffer passes `FLUSH_BYTES`). A segment is closed when the next record would pass the
//! segment size: it is synced whole before the next one is created, so only the last
//! segment can ever have a torn tail. Suffix replacement (a follower truncating a conflicting
//! suffix) appends the new entries; on replay the later version of an index wins.
//!
//! Replaying: segments in sequence order, each entry appended to or replacing the log in
//! memory, the last hard state kept. A segment header with `log_reset` voids the log before
//! it (a snapshot from the leader replaced it).

use keel_core::raft::{Entry, HardState, Index, Term};

use crate::codec;
use crate::disk::Disk;
use crate::error::{Result, StorageError};
use crate::record::{self, Placement, RecordKind};
use crate::repair::Repair;
use crate::segment::{self, Item, SegmentHeader, SegmentName, FORMAT_VERSION};
use crate::snapshot_file::sync_dir;

/// The buffer is written out once it holds this much, bounding memory between syncs.
const FLUSH_BYTES: usize = 1 << 20;
/// Segments are read in pieces of this size, so a read error names a nearby offset.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Slack over the nominal segment size a segment may reach: its opening records and one
/// record larger than what was left.
const SEGMENT_SLACK_BYTES: u64 = 64 << 10;
/// Zeros kept past where the disk knows a segment's zero tail starts: at least a record
/// header, so that a decode there sees the end of the records as in the whole file.
const ZERO_TAIL_KEPT_BYTES: u64 = 4096;
const _: () = assert!(ZERO_TAIL_KEPT_BYTES as usize >= crate::record::HEADER_BYTES);

/// The next segment's file, zero-filled and synced ahead of need, so that a rollover only
/// renames it (etcd's file pipeline does the same): filling 64 MiB takes 0.2-0.3 s, which
/// the server loop, appending, must not wait for. A `.tmp` file: recovery removes it.
pub(crate) const SPARE_SEGMENT_FILE: &str = "spare-segment.wal.tmp";

/// The spare segment is filled and synced this much at a time (see `fill_in_steps`).
const SPARE_FILL_STEP_BYTES: u64 = 1 << 20;

/// Where the spare segment stands.
#[derive(Debug)]
enum Spare {
    /// Being filled on a thread of its own.
    #[cfg(not(madsim))]
    Filling(std::thread::JoinHandle<std::io::Result<()>>),
    /// Filled and synced.
    Ready,
}

/// The WAL settings `Storage` passes down.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalOptions {
    pub segment_size_bytes: u64,
    pub max_record_size_bytes: u64,
    pub preallocate: bool,
}

#[derive(Debug)]
pub(crate) struct Wal {
    options: WalOptions,
    /// Live segments, oldest first; the last one is being written.
    segments: Vec<SegmentName>,
    /// Bytes of the active segment written to the disk (synced or not).
    written_bytes: u64,
    /// Bytes of the active segment known durable.
    synced_through_bytes: u64,
    /// Size of the active segment's opening records (header, hard state).
    opening_bytes: u64,
    /// Encoded records not written yet; they go at `written_bytes`.
    buffer: Vec<u8>,
    /// Whether anything was buffered or written since the last sync.
    dirty: bool,
    last_index: Index,
    last_term: Term,
    hard_state: HardState,
    /// The next segment's file, when preallocating (see [`SPARE_SEGMENT_FILE`]).
    spare: Option<Spare>,
    spare_segments_used: u64,
}

impl Drop for Wal {
    fn drop(&mut self) {
        // A filling thread outliving its WAL could race a successor's spare.
        #[cfg(not(madsim))]
        if let Some(Spare::Filling(thread)) = self.spare.take() {
            let _ = thread.join();
        }
    }
}

/// What replaying the WAL found.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// The log continues after this index.
    pub base_index: Index,
    /// Contiguous from `base_index + 1`.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

impl Wal {
    /// A WAL for an empty data dir: one segment, an empty log.
    pub fn create<D: Disk>(disk: &mut D, options: WalOptions, seq: u64) -> Result<Wal> {
        let mut wal = Wal::empty(options);
        wal.open_segment(disk, seq, 0, 0, false)?;
        Ok(wal)
    }

    fn empty(options: WalOptions) -> Wal {
        Wal {
            options,
            segments: Vec::new(),
            written_bytes: 0,
            synced_through_bytes: 0,
            opening_bytes: 0,
            buffer: Vec::new(),
            dirty: false,
            last_index: 0,
            last_term: 0,
            hard_state: HardState::default(),
            spare: None,
            spare_segments_used: 0,
        }
    }

    pub fn spare_segments_used(&self) -> u64 {
        self.spare_segments_used
    }

    pub fn last_index(&self) -> Index {
        self.last_index
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn first_segment_file(&self) -> String {
        self.segments
            .first()
            .map(SegmentName::file_name)
            .unwrap_or_default()
    }

    fn active_file(&self) -> String {
        self.segments
            .last()
            .map(SegmentName::file_name)
            .unwrap_or_default()
    }

    /// Appends entries; `entries[0]` may replace the log from its index on. The caller has
    /// checked that the entries are contiguous and start at most one past the last index.
    pub fn append<D: Disk>(&mut self, disk: &mut D, entries: &[Entry]) -> Result<()> {
        let mut sizes = Vec::with_capacity(entries.len());
        for entry in entries {
            let size_bytes = codec::encoded_size_bytes(entry).map_err(encode_error)?;
            self.check_record_size(size_bytes)?;
            sizes.push(size_bytes);
        }
        for (entry, size_bytes) in entries.iter().zip(sizes) {
            self.push_record(disk, RecordKind::Entry, size_bytes, |out| {
                codec::encode_into(out, entry)
            })?;
            self.last_index = entry.index;
            self.last_term = entry.term;
        }
        Ok(())
    }

    pub fn set_hard_state<D: Disk>(&mut self, disk: &mut D, hard_state: HardState) -> Result<()> {
        let size_bytes = codec::encoded_size_bytes(&hard_state).map_err(encode_error)?;
        self.push_record(disk, RecordKind::HardState, size_bytes, |out| {
            codec::encode_into(out, &hard_state)
        })?;
        self.hard_state = hard_state;
        Ok(())
    }

    fn check_record_size(&self, size_bytes: u64) -> Result<()> {
        let max_bytes = self.options.max_record_size_bytes;
        if size_bytes > max_bytes {
            return Err(StorageError::RecordTooLarge {
                size_bytes,
                max_bytes,
            });
        }
        Ok(())
    }

    /// Buffers one record, first moving to a new segment if it would not fit (a segment
    /// takes at least one record after its opening ones, however large).
    fn push_record<D: Disk>(
        &mut self,
        disk: &mut D,
        kind: RecordKind,
        body_bytes: u64,
        write_body: impl FnOnce(&mut Vec<u8>) -> bincode::Result<()>,
    ) -> Result<()> {
        let record_bytes = record::record_size_bytes(body_bytes as usize) as u64;
        let end_bytes = self.written_bytes + self.buffer.len() as u64;
        if end_bytes + record_bytes > self.options.segment_size_bytes
            && end_bytes > self.opening_bytes
        {
            let (seq, prev_index, prev_term) = (self.next_seq(), self.last_index, self.last_term);
            self.open_segment(disk, seq, prev_index, prev_term, false)?;
        }
        let place = self.placement();
        record::encode(&mut self.buffer, kind, place, write_body).map_err(encode_error)?;
        self.dirty = true;
        if self.buffer.len() >= FLUSH_BYTES {
            self.flush(disk)?;
        }
        Ok(())
    }

    /// Where the next record goes. Segments stay below 4 GiB (options limit the segment and
    /// record sizes to 1 GiB each), so offsets fit in 32 bits.
    fn placement(&self) -> Placement {
        Placement {
            seq: self.segments.last().map_or(0, |s| s.seq),
            position_bytes: (self.written_bytes + self.buffer.len() as u64) as u32,
            synced_through_bytes: self.synced_through_bytes as u32,
        }
    }

    fn next_seq(&self) -> u64 {
        self.segments.last().map_or(1, |s| s.seq + 1)
    }

    /// Writes the buffer to the active segment (no sync).
    fn flush<D: Disk>(&mut self, disk: &mut D) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let file = self.active_file();
        disk.write_at(&file, self.written_bytes, &self.buffer)
            .map_err(|e| {
                StorageError::write("write", disk.location(&file), self.written_bytes, e)
            })?;
        self.written_bytes += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Makes everything appended so far durable with one sync of the active segment.
    pub fn sync<D: Disk>(&mut self, disk: &mut D) -> Result<()> {
        self.flush(disk)?;
        if !self.dirty {
            return Ok(());
        }
        let file = self.active_file();
        disk.sync(&file)
            .map_err(|source| StorageError::SyncFailed {
                file: disk.location(&file),
                source,
            })?;
        self.synced_through_bytes = self.written_bytes;
        self.dirty = false;
        Ok(())
    }

    /// Closes the active segment (synced whole) and opens segment `seq`, continuing the log
    /// after (`prev_index`, `prev_term`) or, with `log_reset`, restarting it there. The new
    /// segment, its opening records and its directory entry are durable on return.
    fn open_segment<D: Disk>(
        &mut self,
        disk: &mut D,
        seq: u64,
        prev_index: Index,
        prev_term: Term,
        log_reset: bool,
    ) -> Result<()> {
        if !self.segments.is_empty() {
            self.sync(disk)?;
        }
        let name = SegmentName {
            seq,
            first_index: prev_index + 1,
        };
        let file = name.file_name();
        let create_error = |disk: &D, op: &'static str, e: std::io::Error| {
            StorageError::write(op, disk.location(&file), 0, e)
        };
        if self.take_spare() {
            disk.rename(SPARE_SEGMENT_FILE, &file)
                .map_err(|e| create_error(disk, "rename the spare segment to", e))?;
            self.spare_segments_used += 1;
        } else {
            disk.create(&file)
                .map_err(|e| create_error(disk, "create", e))?;
            if self.options.preallocate {
                disk.preallocate(&file, self.options.segment_size_bytes)
                    .map_err(|e| create_error(disk, "preallocate", e))?;
            }
        }
        self.segments.push(name);
        (self.written_bytes, self.synced_through_bytes) = (0, 0);
        self.buffer.clear();
        let header = SegmentHeader {
            format_version: FORMAT_VERSION,
            seq,
            prev_index,
            prev_term,
            log_reset,
        };
        self.encode_opening(&header)?;
        self.dirty = true;
        self.sync(disk)?;
        sync_dir(disk)?;
        self.fill_spare(disk);
        Ok(())
    }

    /// Whether a spare segment is filled and synced; takes it if so. One still filling is
    /// waited for: creating another segment beside it would need the room of three, and
    /// would take as long.
    fn take_spare(&mut self) -> bool {
        match self.spare.take() {
            Some(Spare::Ready) => true,
            #[cfg(not(madsim))]
            Some(Spare::Filling(thread)) => matches!(thread.join(), Ok(Ok(()))),
            None => false,
        }
    }

    /// Starts filling the next spare segment, if segments are preallocated and none is
    /// filling: on a thread of its own, or at once where that is not for this disk (see
    /// `Disk::works_in_background`) or in the simulator, which has no threads. A spare that fails is not used; the
    /// rollover then creates its segment itself and meets the problem there.
    fn fill_spare<D: Disk>(&mut self, disk: &D) {
        if !self.options.preallocate || self.spare.is_some() {
            return;
        }
        let Ok(mut spare_disk) = disk.share() else {
            return;
        };
        let size_bytes = self.options.segment_size_bytes;
        let mut fill = move || -> std::io::Result<()> {
            match spare_disk.remove(SPARE_SEGMENT_FILE) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            spare_disk.create(SPARE_SEGMENT_FILE)?;
            let filled = fill_in_steps(&mut spare_disk, SPARE_SEGMENT_FILE, size_bytes);
            if filled.is_err() {
                // A full disk: give the room back to the segments.
                let _ = spare_disk.remove(SPARE_SEGMENT_FILE);
            }
            filled
        };
        #[cfg(not(madsim))]
        if disk.works_in_background() {
            self.spare = std::thread::Builder::new()
                .name("keel-wal-spare".into())
                .spawn(fill)
                .ok()
                .map(Spare::Filling);
            return;
        }
        self.spare = fill().is_ok().then_some(Spare::Ready);
    }

    /// The header, then the hard state in force, so that older segments can go.
    fn encode_opening(&mut self, header: &SegmentHeader) -> Result<()> {
        let place = self.placement();
        record::encode(&mut self.buffer, RecordKind::SegmentHeader, place, |out| {
            codec::encode_into(out, header)
        })
        .map_err(encode_error)?;
        if self.hard_state != HardState::default() {
            let hard_state = self.hard_state;
            let place = self.placement();
            record::encode(&mut self.buffer, RecordKind::HardState, place, |out| {
                codec::encode_into(out, &hard_state)
            })
            .map_err(encode_error)?;
        }
        self.opening_bytes = self.buffer.len() as u64;
        Ok(())
    }

    /// Restarts the log after `index` (a snapshot from the leader replaced it): a new
    /// segment says so durably, then every older segment is deleted.
    pub fn reset<D: Disk>(&mut self, disk: &mut D, index: Index, term: Term) -> Result<()> {
        let seq = self.next_seq();
        self.open_segment(disk, seq, index, term, true)?;
        self.last_index = index;
        self.last_term = term;
        self.remove_oldest(disk, self.segments.len() - 1)
    }

    /// Deletes the segments whose entries are all below `first_kept_index`. Segment `i`
    /// holds only indexes below the first index of segment `i + 1`; the active segment
    /// always stays.
    pub fn release_before<D: Disk>(&mut self, disk: &mut D, first_kept_index: Index) -> Result<()> {
        let releasable = self
            .segments
            .windows(2)
            .take_while(|pair| pair[1].first_index <= first_kept_index)
            .count();
        self.remove_oldest(disk, releasable)
    }

    /// Removes the `count` oldest segments, oldest first, each durably before the next, so a
    /// crash never leaves a gap in the sequence.
    fn remove_oldest<D: Disk>(&mut self, disk: &mut D, count: usize) -> Result<()> {
        for _ in 0..count {
            let file = self.segments[0].file_name();
            disk.remove(&file)
                .map_err(|e| StorageError::write("remove", disk.location(&file), 0, e))?;
            self.segments.remove(0);
            sync_dir(disk)?;
        }
        Ok(())
    }

    /// Reads back the segments (in any order) and readies the last one for appending.
    /// A torn tail is cut off; any other damage is an error.
    pub fn recover<D: Disk>(
        disk: &mut D,
        options: WalOptions,
        mut names: Vec<SegmentName>,
        repairs: &mut Vec<Repair>,
    ) -> Result<(Wal, Replayed)> {
        names.sort_by_key(|n| n.seq);
        check_sequence(disk, &names)?;
        let mut replay = LogReplay::default();
        let mut wal = Wal::empty(options);
        let mut end_offset_bytes = 0;
        let mut dirty_tail = false;
        let last = names.len().saturating_sub(1);
        for (i, name) in names.iter().enumerate() {
            let is_last = i == last;
            if let Some(tail) = wal.replay_segment(disk, name, is_last, &mut replay, repairs)? {
                (end_offset_bytes, dirty_tail) = tail;
            }
        }
        wal.resume(disk, end_offset_bytes, dirty_tail, repairs)?;
        wal.last_index = replay.last_index();
        wal.last_term = replay.entries.last().map_or(replay.base_term, |e| e.term);
        wal.hard_state = replay.hard_state.unwrap_or_default();
        if wal.segments.is_empty() {
            let (index, term) = (wal.last_index, wal.last_term);
            let seq = names.first().map_or(1, |n| n.seq);
            wal.open_segment(disk, seq, index, term, false)?;
        }
        Ok((wal, replay.into_replayed()))
    }

    /// Reads one segment into `replay`. Returns where its records end and whether a torn or
    /// lost tail follows, or `None` if it was the last segment and held nothing.
    fn replay_segment<D: Disk>(
        &mut self,
        disk: &mut D,
        name: &SegmentName,
        is_last: bool,
        replay: &mut LogReplay,
        repairs: &mut Vec<Repair>,
    ) -> Result<Option<(u64, bool)>> {
        let file = name.file_name();
        let bytes = read_segment(disk, &file, self.options)?;
        let scanned = segment::scan(&bytes, name, is_last, self.options.max_record_size_bytes)
            .map_err(|e| corrupt(disk, &file, e.offset_bytes, e.problem))?;
        let Some(scan) = scanned else {
            if !is_last {
                let problem = "a WAL segment without its header before the last one".into();
                return Err(corrupt(disk, &file, 0, problem));
            }
            // Created by a rotation that a crash interrupted: it holds nothing anybody was
            // promised (the scan checked that no synced record follows).
            remove_file(disk, &file)?;
            repairs.push(Repair::EmptySegmentRemoved {
                file: disk.location(&file),
            });
            return Ok(None);
        };
        replay.segment(disk, &file, &scan.header)?;
        for (offset, item) in scan.items {
            replay.item(disk, &file, offset, item)?;
        }
        self.segments.push(name.clone());
        if scan.header.log_reset {
            // Everything before a reset is void; finish the deletion a crash cut short.
            self.remove_oldest(disk, self.segments.len() - 1)?;
        }
        Ok(Some((scan.end_offset_bytes, scan.dirty_tail)))
    }

    /// Prepares the recovered last segment for appending at `end_offset_bytes`: cuts off a
    /// torn tail (zeroing it, so no stale record can ever reappear after new ones), and
    /// syncs, so that everything recovery returns is durable, not just in the page cache.
    fn resume<D: Disk>(
        &mut self,
        disk: &mut D,
        end_offset_bytes: u64,
        dirty_tail: bool,
        repairs: &mut Vec<Repair>,
    ) -> Result<()> {
        let Some(active) = self.segments.last() else {
            return Ok(());
        };
        let file = active.file_name();
        let fail = |disk: &D, op: &'static str, e: std::io::Error| {
            StorageError::write(op, disk.location(&file), end_offset_bytes, e)
        };
        if dirty_tail {
            disk.set_size(&file, end_offset_bytes)
                .map_err(|e| fail(disk, "truncate", e))?;
            if self.options.preallocate {
                disk.preallocate(&file, self.options.segment_size_bytes)
                    .map_err(|e| fail(disk, "preallocate", e))?;
            }
            repairs.push(Repair::TornTailTruncated {
                file: disk.location(&file),
                offset_bytes: end_offset_bytes,
            });
        }
        self.written_bytes = end_offset_bytes;
        self.synced_through_bytes = end_offset_bytes;
        // The opening records are already written: the next record that does not fit may
        // move to a new segment.
        self.opening_bytes = 0;
        self.dirty = true;
        self.sync(disk)?;
        sync_dir(disk)
    }
}

/// Zero-fills `file` to `size_bytes` a step at a time, each step synced before the next is
/// written. Written whole and then synced, 64 MiB of zeros reach the disk as one burst that
/// the WAL's own syncs queue behind — on every member at once, since members roll their
/// segments over at about the same index: measured at 1M keys on one disk, 120-370 ms
/// sync stalls and the slowest puts of a run.
fn fill_in_steps<D: Disk>(disk: &mut D, file: &str, size_bytes: u64) -> std::io::Result<()> {
    let mut filled_bytes = 0;
    while filled_bytes < size_bytes {
        filled_bytes = (filled_bytes + SPARE_FILL_STEP_BYTES).min(size_bytes);
        disk.preallocate(file, filled_bytes)?;
        disk.sync(file)?;
    }
    Ok(())
}

fn encode_error(e: bincode::Error) -> StorageError {
    StorageError::InvalidRequest {
        reason: format!("value does not encode: {e}"),
    }
}

fn corrupt<D: Disk>(disk: &D, file: &str, offset_bytes: u64, problem: String) -> StorageError {
    StorageError::Corrupt {
        file: disk.location(file),
        offset_bytes,
        problem,
    }
}

fn remove_file<D: Disk>(disk: &mut D, file: &str) -> Result<()> {
    disk.remove(file)
        .map_err(|e| StorageError::write("remove", disk.location(file), 0, e))?;
    sync_dir(disk)
}

/// Segment numbers must run without gaps: a missing one is lost log.
fn check_sequence<D: Disk>(disk: &D, names: &[SegmentName]) -> Result<()> {
    for pair in names.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            return Err(corrupt(
                disk,
                &pair[1].file_name(),
                0,
                format!(
                    "WAL segment {} is missing before this one (the one before it is {})",
                    pair[0].seq + 1,
                    pair[0].file_name()
                ),
            ));
        }
    }
    Ok(())
}

fn read_segment<D: Disk>(disk: &mut D, file: &str, options: WalOptions) -> Result<Vec<u8>> {
    let unreadable =
        |disk: &D, offset_bytes: u64, source: std::io::Error| StorageError::Unreadable {
            file: disk.location(file),
            offset_bytes,
            source,
        };
    let size_bytes = disk.size_bytes(file).map_err(|e| unreadable(disk, 0, e))?;
    let limit_bytes = options
        .segment_size_bytes
        .max(crate::DEFAULT_SEGMENT_SIZE_BYTES)
        + options.max_record_size_bytes
        + SEGMENT_SLACK_BYTES;
    if size_bytes > limit_bytes {
        return Err(corrupt(
            disk,
            file,
            0,
            format!("segment is {size_bytes} bytes, more than the limit of {limit_bytes} bytes"),
        ));
    }
    // A preallocated segment is mostly zeros. Those the disk knows of are not read, and
    // those found while reading are not kept (a 64 MiB buffer of them cost a restart
    // 0.2-0.8 s of page faults), but for a little (`ZERO_TAIL_KEPT_BYTES`) past the last
    // chunk that holds anything: the scan then decodes the same records and damage as over
    // the whole file, since every complete record ends with its non-zero trailer before
    // them, a decode only starts where one ends, and a record cut short by the buffer is
    // classified by its last sector's bytes, which are zeros either way.
    let zeros_from_bytes = disk
        .zeros_from_bytes(file)
        .map_err(|e| unreadable(disk, 0, e))?
        .map_or(size_bytes, |z| z.min(size_bytes));
    let to_read = usize::try_from(zeros_from_bytes).unwrap_or(usize::MAX);
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES.min(to_read)];
    let mut offset_bytes = 0usize;
    while offset_bytes < to_read {
        let chunk = &mut chunk[..READ_CHUNK_BYTES.min(to_read - offset_bytes)];
        disk.read_at(file, offset_bytes as u64, chunk)
            .map_err(|e| unreadable(disk, offset_bytes as u64, e))?;
        // The zeros read since the last chunk with data are kept once more data follows.
        if chunk.iter().any(|&b| b != 0) {
            bytes.resize(offset_bytes, 0);
            bytes.extend_from_slice(chunk);
        }
        offset_bytes += chunk.len();
    }
    let zeros_after_bytes = size_bytes - bytes.len() as u64;
    let kept_zeros_bytes = zeros_after_bytes.min(ZERO_TAIL_KEPT_BYTES);
    bytes.resize(bytes.len() + kept_zeros_bytes as usize, 0);
    Ok(bytes)
}

/// The log as replay rebuilds it.
#[derive(Debug, Default)]
struct LogReplay {
    base_index: Index,
    base_term: Term,
    /// Whether `base_index` is a snapshot the log was reset to (nothing may go below it),
    /// rather than where the oldest surviving segment happened to start.
    base_is_reset: bool,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    segments_seen: usize,
}

impl LogReplay {
    fn last_index(&self) -> Index {
        self.base_index + self.entries.len() as Index
    }

    fn segment<D: Disk>(&mut self, disk: &D, file: &str, header: &SegmentHeader) -> Result<()> {
        let first = self.segments_seen == 0;
        self.segments_seen += 1;
        if first || header.log_reset {
            self.base_index = header.prev_index;
            self.base_term = header.prev_term;
            self.base_is_reset = header.log_reset;
            self.entries.clear();
            return Ok(());
        }
        let last_term = self.entries.last().map_or(self.base_term, |e| e.term);
        if header.prev_index != self.last_index() || header.prev_term != last_term {
            return Err(corrupt(
                disk,
                file,
                0,
                format!(
                    "segment continues the log after index {} (term {}), but the segments \
                     before it end at index {} (term {last_term})",
                    header.prev_index,
                    header.prev_term,
                    self.last_index()
                ),
            ));
        }
        Ok(())
    }

    fn item<D: Disk>(&mut self, disk: &D, file: &str, offset: u64, item: Item) -> Result<()> {
        let entry = match item {
            Item::HardState(hard_state) => {
                self.hard_state = Some(hard_state);
                return Ok(());
            }
            Item::Entry(entry) => entry,
        };
        let index = entry.index;
        if index == 0 || index > self.last_index() + 1 {
            return Err(corrupt(
                disk,
                file,
                offset,
                format!(
                    "entry {index} does not follow the log, which ends at index {} \
                     (a gap in the log)",
                    self.last_index()
                ),
            ));
        }
        if index <= self.base_index {
            if self.base_is_reset {
                return Err(corrupt(
                    disk,
                    file,
                    offset,
                    format!(
                        "entry {index} rewrites the log below the snapshot at {}",
                        self.base_index
                    ),
                ));
            }
            // Replaces entries older than this segment: their segments are gone (the
            // snapshot covers them), so the log here starts at this entry.
            self.base_index = index - 1;
            self.entries.clear();
        }
        // A follower replaced a conflicting suffix: the later version wins.
        let keep = (index - self.base_index - 1) as usize;
        self.entries.truncate(keep);
        self.entries.push(entry);
        Ok(())
    }

    fn into_replayed(self) -> Replayed {
        Replayed {
            base_index: self.base_index,
            entries: self.entries,
            hard_state: self.hard_state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs_disk::FsDisk;

    const MIB: usize = 1 << 20;

    fn options() -> WalOptions {
        WalOptions {
            segment_size_bytes: crate::DEFAULT_SEGMENT_SIZE_BYTES,
            max_record_size_bytes: 1 << 20,
            preallocate: true,
        }
    }

    /// On a disk that cannot tell where a file's zeros start, a segment is read whole but
    /// only kept through its last chunk with data, and a little past it; zeros between two
    /// chunks with data are kept.
    #[test]
    fn a_segment_is_kept_through_its_last_data_and_a_little_of_its_zero_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = FsDisk::open(dir.path()).unwrap();
        disk.create("s.wal").unwrap();
        disk.write_at("s.wal", 0, &vec![0u8; 8 * MIB]).unwrap();
        disk.write_at("s.wal", 10, b"first").unwrap();
        let second_at = 3 * MIB + 100;
        disk.write_at("s.wal", second_at as u64, b"second").unwrap();
        let bytes = read_segment(&mut disk, "s.wal", options()).unwrap();
        assert_eq!(bytes.len(), 4 * MIB + ZERO_TAIL_KEPT_BYTES as usize);
        assert_eq!(&bytes[10..15], b"first");
        assert!(bytes[15..second_at].iter().all(|&b| b == 0));
        assert_eq!(&bytes[second_at..second_at + 6], b"second");
        assert!(bytes[second_at + 6..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_segment_of_zeros_only_keeps_a_little_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = FsDisk::open(dir.path()).unwrap();
        disk.create("s.wal").unwrap();
        disk.write_at("s.wal", 0, &vec![0u8; 2 * MIB + 7]).unwrap();
        let bytes = read_segment(&mut disk, "s.wal", options()).unwrap();
        assert_eq!(bytes, vec![0u8; ZERO_TAIL_KEPT_BYTES as usize]);
    }
}
