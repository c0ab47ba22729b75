//! A member's identity, kept in its data dir: its member id and its cluster's id. Once a data
//! dir holds it, the member is that member, whatever its flags say: `--initial-cluster` and
//! the peer URLs no longer decide the id (a `member update` moves a member to new URLs
//! without changing who it is, and a member added again on the same URLs gets a new id).
//!
//! The file `member.id`, written once, to a temp file that is synced and renamed into place:
//!
//! ```text
//! offset  size  field
//!  0       8    magic "KEELMBID"
//!  8       4    format version (u32, little endian)
//! 12       8    member id (u64)
//! 20       8    cluster id (u64; 0 while unknown)
//! 28       4    CRC32C of every byte before it
//! ```

use crate::disk::Disk;
use crate::error::{Result, StorageError};
use crate::snapshot_file::{sync_dir, TEMP_SUFFIX};

pub(crate) const FILE_NAME: &str = "member.id";
const MAGIC: [u8; 8] = *b"KEELMBID";
const FORMAT_VERSION: u32 = 1;
const SIZE_BYTES: usize = 32;

/// Who a data dir belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    /// 0 when the member did not know it yet (a data dir from before identities were kept).
    pub cluster_id: u64,
}

fn encode(identity: Identity) -> [u8; SIZE_BYTES] {
    let mut bytes = [0u8; SIZE_BYTES];
    bytes[..8].copy_from_slice(&MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[12..20].copy_from_slice(&identity.member_id.to_le_bytes());
    bytes[20..28].copy_from_slice(&identity.cluster_id.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Reads the identity, `None` if the data dir has none. A file that is there but damaged is
/// corruption: the member cannot know who it is.
pub(crate) fn read<D: Disk>(disk: &mut D) -> Result<Option<Identity>> {
    let names = disk.list().map_err(|source| StorageError::Unreadable {
        file: disk.location("."),
        offset_bytes: 0,
        source,
    })?;
    if !names.iter().any(|n| n == FILE_NAME) {
        return Ok(None);
    }
    let file = disk.location(FILE_NAME);
    let corrupt = |offset_bytes: u64, problem: String| StorageError::Corrupt {
        file: file.clone(),
        offset_bytes,
        problem,
    };
    let size_bytes = disk
        .size_bytes(FILE_NAME)
        .map_err(|source| StorageError::Unreadable {
            file: file.clone(),
            offset_bytes: 0,
            source,
        })?;
    if size_bytes != SIZE_BYTES as u64 {
        return Err(corrupt(
            0,
            format!("{size_bytes} bytes, a member identity has {SIZE_BYTES}"),
        ));
    }
    let mut bytes = [0u8; SIZE_BYTES];
    disk.read_at(FILE_NAME, 0, &mut bytes)
        .map_err(|source| StorageError::Unreadable {
            file: file.clone(),
            offset_bytes: 0,
            source,
        })?;
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let stored_crc = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    let computed_crc = crc32c::crc32c(&bytes[..28]);
    if stored_crc != computed_crc {
        return Err(corrupt(
            28,
            format!("checksum mismatch (stored {stored_crc:#010x}, computed {computed_crc:#010x})"),
        ));
    }
    if bytes[..8] != MAGIC {
        return Err(corrupt(0, "not a keel member identity (bad magic)".into()));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(
            8,
            format!("identity format version {version} is not supported"),
        ));
    }
    let identity = Identity {
        member_id: u64_at(12),
        cluster_id: u64_at(20),
    };
    if identity.member_id == 0 {
        return Err(corrupt(12, "member id 0".into()));
    }
    Ok(Some(identity))
}

/// Writes the identity durably: complete under its name, or not there at all.
pub(crate) fn write<D: Disk>(disk: &mut D, identity: Identity) -> Result<()> {
    if identity.member_id == 0 {
        return Err(StorageError::InvalidRequest {
            reason: "a member id is never 0".into(),
        });
    }
    let temp = format!("{FILE_NAME}{TEMP_SUFFIX}");
    let location = disk.location(&temp);
    let io = |operation: &'static str, e: std::io::Error| {
        StorageError::write(operation, location.clone(), 0, e)
    };
    match disk.create(&temp) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            disk.remove(&temp).map_err(|e| io("remove", e))?;
            disk.create(&temp).map_err(|e| io("create", e))?;
        }
        other => other.map_err(|e| io("create", e))?,
    }
    disk.write_at(&temp, 0, &encode(identity))
        .map_err(|e| io("write", e))?;
    disk.sync(&temp)
        .map_err(|source| StorageError::SyncFailed {
            file: location.clone(),
            source,
        })?;
    disk.rename(&temp, FILE_NAME).map_err(|e| io("rename", e))?;
    sync_dir(disk)
}
