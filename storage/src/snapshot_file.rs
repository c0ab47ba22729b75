//! Snapshot files: written whole to a temp file, synced, renamed into place, directory
//! synced; so a snapshot file either exists complete or not at all.
//!
//! Named `snap-<index>-<term>.snap` (16 hex digits each). Layout:
//!
//! ```text
//! offset  size  field
//!  0       8    magic "KEELSNAP"
//!  8       4    format version (u32, little endian)
//! 12       4    meta length m (u32)
//! 16       8    data length d (u64)
//! 24       m    SnapshotMeta (bincode)
//! 24+m     d    data: the state machine image, opaque here
//! end-8    4    CRC32C of every byte before it
//! end-4    4    "KSNE"
//! ```

use bytes::Bytes;

use keel_core::raft::{Index, Snapshot, SnapshotMeta, Term};

use crate::codec;
use crate::disk::Disk;
use crate::error::{Result, StorageError};

const MAGIC: [u8; 8] = *b"KEELSNAP";
const END_MAGIC: [u8; 4] = *b"KSNE";
const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: u64 = 24;
const TRAILER_BYTES: u64 = 8;
/// Snapshots are read and written in pieces of this size.
const CHUNK_BYTES: usize = 1 << 20;
/// A `SnapshotMeta` is a few ids and numbers; anything bigger is damage.
const MAX_META_BYTES: u64 = 1 << 20;
const PREFIX: &str = "snap-";
const SUFFIX: &str = ".snap";
/// Temp files a crash left behind end with this; recovery removes them.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";
/// Snapshots recovery found damaged are renamed with this suffix and never read again.
pub(crate) const BROKEN_SUFFIX: &str = ".broken";

pub(crate) fn file_name(index: Index, term: Term) -> String {
    format!("{PREFIX}{index:016x}-{term:016x}{SUFFIX}")
}

/// The index a snapshot file's name carries, if `name` is one.
pub(crate) fn parse_name(name: &str) -> Option<(Index, Term)> {
    let stem = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    if index.len() != 16 || term.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(index, 16).ok()?,
        u64::from_str_radix(term, 16).ok()?,
    ))
}

/// Writes `snapshot` durably; returns its file name. Nothing is visible under that name
/// until the file is complete and synced.
pub(crate) fn write<D: Disk>(disk: &mut D, snapshot: &Snapshot, max_bytes: u64) -> Result<String> {
    let size_bytes = snapshot.data.len() as u64;
    if size_bytes > max_bytes {
        return Err(StorageError::SnapshotTooLarge {
            size_bytes,
            max_bytes,
        });
    }
    let name = file_name(snapshot.meta.index, snapshot.meta.term);
    let temp = format!("{name}{TEMP_SUFFIX}");
    let location = disk.location(&temp);
    let io = |operation: &'static str, offset: u64, e: std::io::Error| {
        StorageError::write(operation, location.clone(), offset, e)
    };
    match disk.create(&temp) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            disk.remove(&temp).map_err(|e| io("remove", 0, e))?;
            disk.create(&temp).map_err(|e| io("create", 0, e))?;
        }
        other => other.map_err(|e| io("create", 0, e))?,
    }
    let mut crc = 0u32;
    let mut offset = 0u64;
    let head = encode_head(&snapshot.meta, size_bytes)?;
    for piece in std::iter::once(&head[..]).chain(snapshot.data.chunks(CHUNK_BYTES)) {
        crc = crc32c::crc32c_append(crc, piece);
        disk.write_at(&temp, offset, piece)
            .map_err(|e| io("write", offset, e))?;
        offset += piece.len() as u64;
    }
    let mut trailer = crc.to_le_bytes().to_vec();
    trailer.extend_from_slice(&END_MAGIC);
    disk.write_at(&temp, offset, &trailer)
        .map_err(|e| io("write", offset, e))?;
    disk.sync(&temp)
        .map_err(|source| StorageError::SyncFailed {
            file: disk.location(&temp),
            source,
        })?;
    disk.rename(&temp, &name).map_err(|e| io("rename", 0, e))?;
    sync_dir(disk)?;
    Ok(name)
}

pub(crate) fn sync_dir<D: Disk>(disk: &mut D) -> Result<()> {
    disk.sync_dir().map_err(|source| StorageError::SyncFailed {
        file: disk.location("."),
        source,
    })
}

fn encode_head(meta: &SnapshotMeta, data_bytes: u64) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(64);
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&[0u8; 4]);
    head.extend_from_slice(&data_bytes.to_le_bytes());
    codec::encode_into(&mut head, meta).map_err(|e| StorageError::InvalidRequest {
        reason: format!("snapshot metadata does not encode: {e}"),
    })?;
    let meta_bytes = (head.len() as u64 - HEADER_BYTES) as u32;
    head[12..16].copy_from_slice(&meta_bytes.to_le_bytes());
    Ok(head)
}

/// Why a snapshot file cannot be used.
#[derive(Debug)]
pub(crate) struct SnapshotProblem {
    pub offset_bytes: u64,
    pub problem: String,
}

/// Reads and verifies a whole snapshot file.
pub(crate) fn read<D: Disk>(
    disk: &mut D,
    name: &str,
    max_bytes: u64,
) -> std::result::Result<Snapshot, SnapshotProblem> {
    let size_bytes = disk
        .size_bytes(name)
        .map_err(|e| snapshot_problem(0, &format!("cannot stat: {e}")))?;
    let limit_bytes = max_bytes + MAX_META_BYTES + HEADER_BYTES + TRAILER_BYTES;
    if size_bytes > limit_bytes {
        return Err(snapshot_problem(
            0,
            &format!("{size_bytes} bytes is beyond the snapshot limit of {limit_bytes} bytes"),
        ));
    }
    if size_bytes < HEADER_BYTES + TRAILER_BYTES {
        return Err(snapshot_problem(0, "too short to be a snapshot"));
    }
    let bytes = read_all(disk, name, size_bytes)?;
    verify_checksum(&bytes)?;
    decode(Bytes::from(bytes), max_bytes)
}

fn read_all<D: Disk>(
    disk: &mut D,
    name: &str,
    size_bytes: u64,
) -> std::result::Result<Vec<u8>, SnapshotProblem> {
    let len = usize::try_from(size_bytes)
        .map_err(|_| snapshot_problem(0, "larger than this machine's address space"))?;
    let mut bytes = vec![0u8; len];
    for (i, chunk) in bytes.chunks_mut(CHUNK_BYTES).enumerate() {
        let offset = (i * CHUNK_BYTES) as u64;
        disk.read_at(name, offset, chunk)
            .map_err(|e| snapshot_problem(offset, &format!("read failed: {e}")))?;
    }
    Ok(bytes)
}

fn verify_checksum(bytes: &[u8]) -> std::result::Result<(), SnapshotProblem> {
    let body_end = bytes.len() - TRAILER_BYTES as usize;
    let trailer = &bytes[body_end..];
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32c::crc32c(&bytes[..body_end]);
    if trailer[4..] != END_MAGIC || stored != computed {
        return Err(snapshot_problem(
            body_end as u64,
            &format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
        ));
    }
    Ok(())
}

fn decode(bytes: Bytes, max_bytes: u64) -> std::result::Result<Snapshot, SnapshotProblem> {
    if bytes[..8] != MAGIC {
        return Err(snapshot_problem(0, "not a keel snapshot (bad magic)"));
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Err(snapshot_problem(
            8,
            &format!("snapshot format version {version} is not supported"),
        ));
    }
    let meta_bytes = u64::from(u32_at(12));
    let mut data_len = [0u8; 8];
    data_len.copy_from_slice(&bytes[16..24]);
    let data_bytes = u64::from_le_bytes(data_len);
    let expected = HEADER_BYTES
        .saturating_add(meta_bytes)
        .saturating_add(data_bytes)
        .saturating_add(TRAILER_BYTES);
    if meta_bytes > MAX_META_BYTES || data_bytes > max_bytes || expected != bytes.len() as u64 {
        return Err(snapshot_problem(
            12,
            "section lengths do not add up to the file size",
        ));
    }
    let meta_end = (HEADER_BYTES + meta_bytes) as usize;
    let meta: SnapshotMeta = codec::decode(&bytes[HEADER_BYTES as usize..meta_end])
        .map_err(|e| snapshot_problem(HEADER_BYTES, &format!("undecodable metadata: {e}")))?;
    let data = bytes.slice(meta_end..bytes.len() - TRAILER_BYTES as usize);
    Ok(Snapshot { meta, data })
}

fn snapshot_problem(offset_bytes: u64, problem: &str) -> SnapshotProblem {
    SnapshotProblem {
        offset_bytes,
        problem: problem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use keel_core::raft::ConfState;

    use super::*;
    use crate::sim_disk::{Faults, SimDisk, SimDiskConfig};

    fn snapshot(index: Index, data_bytes: usize) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term: 2,
                conf_state: ConfState::with_voters([1, 2, 3]),
            },
            data: (0..data_bytes).map(|i| (i % 13) as u8).collect(),
        }
    }

    #[test]
    fn snapshots_round_trip_and_leave_no_temp_file() {
        let mut disk = SimDisk::new(SimDiskConfig::new(1, Faults::none()));
        for data_bytes in [0, 1, CHUNK_BYTES + 7] {
            let snap = snapshot(9, data_bytes);
            let name = write(&mut disk, &snap, 1 << 30).unwrap();
            assert_eq!(parse_name(&name), Some((9, 2)));
            assert_eq!(read(&mut disk, &name, 1 << 30).unwrap(), snap);
            assert_eq!(disk.list().unwrap(), vec![name]);
        }
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let mut disk = SimDisk::new(SimDiskConfig::new(1, Faults::none()));
        let name = write(&mut disk, &snapshot(4, 100), 1 << 30).unwrap();
        let size = disk.size_bytes(&name).unwrap();
        for offset in 0..size {
            disk.flip_bit(&name, offset, (offset % 8) as u8).unwrap();
            assert!(read(&mut disk, &name, 1 << 30).is_err(), "flip at {offset}");
            disk.flip_bit(&name, offset, (offset % 8) as u8).unwrap();
        }
        assert!(read(&mut disk, &name, 1 << 30).is_ok());
    }

    #[test]
    fn limits_are_enforced_both_ways() {
        let mut disk = SimDisk::new(SimDiskConfig::new(1, Faults::none()));
        let err = write(&mut disk, &snapshot(4, 100), 99).unwrap_err();
        assert!(matches!(err, StorageError::SnapshotTooLarge { .. }));
        let name = write(&mut disk, &snapshot(4, 100), 100).unwrap();
        assert!(read(&mut disk, &name, 99).is_err());
    }

    #[test]
    fn names_parse() {
        assert_eq!(parse_name(&file_name(10, 3)), Some((10, 3)));
        assert_eq!(parse_name("snap-1-2.snap"), None);
        assert_eq!(
            parse_name(&format!("{}{TEMP_SUFFIX}", file_name(1, 1))),
            None
        );
    }
}
