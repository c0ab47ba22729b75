//! Backups in etcd's format: `Maintenance.Snapshot` streams etcd's backend file (see
//! [`etcd_file`]), and `keel snapshot status` / `keel snapshot restore` read one, taken from
//! keel or from etcd, as `etcdutl` does. A snapshot stream ends with the SHA-256 of the file;
//! a saved snapshot is the file then those 32 bytes, and a restore checks them.

pub mod etcd_file;
pub mod restore;

use std::io::{Read, Write};
use std::path::Path;

use bbolt_rs::{BucketApi, DbApi, TxApi};
use sha2::{Digest, Sha256};

pub use etcd_file::EtcdFileError;

/// A file written by a snapshot stream is whole sectors of database, then its SHA-256.
const SECTOR_BYTES: u64 = 512;
const SHA256_BYTES: u64 = 32;

/// Whether a saved snapshot of `size_bytes` ends with the stream's SHA-256 (etcd's test).
pub fn has_checksum(size_bytes: u64) -> bool {
    size_bytes % SECTOR_BYTES == SHA256_BYTES
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot missing hash but --skip-hash-check=false ({path} is not a whole number of sectors plus a SHA-256)")]
    MissingChecksum { path: String },
    #[error("{path} is damaged: expected sha256 {expected}, got {computed} (use --skip-hash-check only for a database file copied from a data dir)")]
    ChecksumMismatch {
        path: String,
        expected: String,
        computed: String,
    },
    #[error(transparent)]
    File(#[from] EtcdFileError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies the database part of the saved snapshot `from` to `to`, checking its SHA-256
/// trailer on the way (unless `skip_hash_check`, for a database file without one).
pub fn copy_checked(from: &Path, to: &Path, skip_hash_check: bool) -> Result<(), BackupError> {
    let size_bytes = std::fs::metadata(from).map_err(io_error(from))?.len();
    let checksummed = has_checksum(size_bytes);
    if !checksummed && !skip_hash_check {
        return Err(BackupError::MissingChecksum {
            path: from.display().to_string(),
        });
    }
    let db_bytes = if checksummed {
        size_bytes - SHA256_BYTES
    } else {
        size_bytes
    };
    let mut input = std::fs::File::open(from).map_err(io_error(from))?;
    let mut output = std::fs::File::create(to).map_err(io_error(to))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut left = db_bytes;
    while left > 0 {
        let want = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
        input
            .read_exact(&mut buffer[..want])
            .map_err(io_error(from))?;
        hasher.update(&buffer[..want]);
        output.write_all(&buffer[..want]).map_err(io_error(to))?;
        left -= want as u64;
    }
    output.sync_all().map_err(io_error(to))?;
    if checksummed && !skip_hash_check {
        let mut trailer = [0u8; 32];
        input.read_exact(&mut trailer).map_err(io_error(from))?;
        let computed = hasher.finalize();
        if computed.as_slice() != trailer {
            return Err(BackupError::ChecksumMismatch {
                path: from.display().to_string(),
                expected: hex(&trailer),
                computed: hex(&computed),
            });
        }
    }
    Ok(())
}

/// What `snapshot status` reports, as etcd computes it: a CRC-32C over every bucket's name
/// and rows in order, the last revision of the `key` bucket, the number of rows in all
/// buckets, the database's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotStatus {
    pub hash: u32,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// The status of the saved snapshot or database file at `path`. keel's files are read as
/// they are; etcd's own have no freelist, and are read from a copy given one (see
/// `etcd_file::add_empty_freelist`).
pub fn status(path: &Path) -> Result<SnapshotStatus, BackupError> {
    if let Ok(status) = status_of_db(path) {
        return Ok(status);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let copy = tempfile::NamedTempFile::new_in(dir)
        .or_else(|_| tempfile::NamedTempFile::new())
        .map_err(io_error(path))?;
    copy_checked(path, copy.path(), true)?;
    let added_bytes = etcd_file::add_empty_freelist(copy.path())?;
    let mut status = status_of_db(copy.path())?;
    status.total_size -= added_bytes.min(status.total_size);
    Ok(status)
}

fn status_of_db(path: &Path) -> Result<SnapshotStatus, BackupError> {
    let bolt_error = |e: bbolt_rs::Error| {
        BackupError::File(EtcdFileError::Bolt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let db = bbolt_rs::Bolt::open_ro(path).map_err(bolt_error)?;
    let mut status = SnapshotStatus {
        hash: 0,
        revision: 0,
        total_key: 0,
        total_size: 0,
    };
    db.view(|tx| {
        status.total_size = tx.size();
        let mut hash = 0u32;
        for (name, bucket) in tx.iter_buckets() {
            hash = crc32c::crc32c_append(hash, name);
            let is_key_bucket = name == etcd_file::KEY_BUCKET;
            for (k, v) in bucket.iter_entries() {
                hash = crc32c::crc32c_append(hash, k);
                hash = crc32c::crc32c_append(hash, v);
                status.total_key += 1;
                if is_key_bucket {
                    if let Some((rev, _)) = etcd_file::parse_revision_key(k) {
                        status.revision = rev.main;
                    }
                }
            }
        }
        status.hash = hash;
        Ok(())
    })
    .map_err(bolt_error)?;
    Ok(status)
}

/// A byte count as etcdctl prints it (go-humanize's SI form: `20 kB`, `1.1 GB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let exponent = ((bytes as f64).ln() / 1000f64.ln()).floor() as usize;
    let exponent = exponent.min(UNITS.len() - 1);
    let value = (bytes as f64 / 1000f64.powi(exponent as i32) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exponent])
    } else {
        format!("{value:.0} {}", UNITS[exponent])
    }
}

/// `status` as `etcdctl snapshot status -w table` prints it.
pub fn status_table(status: &SnapshotStatus) -> String {
    let cells = [
        format!("{:x}", status.hash),
        status.revision.to_string(),
        status.total_key.to_string(),
        human_bytes(status.total_size),
    ];
    let headers = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
    let widths: Vec<usize> = headers
        .iter()
        .zip(&cells)
        .map(|(h, c)| h.len().max(c.len()))
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let header: String = headers
        .iter()
        .zip(&widths)
        .map(|(h, w)| format!("| {h:^w$} "))
        .collect::<String>()
        + "|\n";
    let row: String = cells
        .iter()
        .zip(&widths)
        .map(|(c, w)| format!("| {c:>w$} "))
        .collect::<String>()
        + "|\n";
    format!("{rule}{header}{rule}{row}{rule}")
}

/// Files a snapshot stream writes before it sends them: `backup-<n>.db.tmp` in the data dir.
const EXPORT_PREFIX: &str = "backup-";
const EXPORT_SUFFIX: &str = ".db.tmp";

/// A new name for a file a snapshot stream writes in `dir`.
pub fn export_path(dir: &Path) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("{EXPORT_PREFIX}{n}{EXPORT_SUFFIX}"))
}

/// Removes the files of snapshot streams a crash interrupted.
pub fn remove_stale_exports(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(EXPORT_PREFIX) && name.ends_with(EXPORT_SUFFIX) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A written backup file read out in chunks, then its SHA-256, as etcd streams a snapshot;
/// the file is removed once the stream ends or is dropped.
#[derive(Debug)]
pub struct ExportChunks {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    total_bytes: u64,
    sent_bytes: u64,
    hasher: Sha256,
    chunk_bytes: usize,
}

impl ExportChunks {
    pub fn open(path: std::path::PathBuf, chunk_bytes: usize) -> Result<ExportChunks, BackupError> {
        let file = std::fs::File::open(&path).map_err(io_error(&path))?;
        let total_bytes = file.metadata().map_err(io_error(&path))?.len();
        Ok(ExportChunks {
            path,
            file: Some(file),
            total_bytes,
            sent_bytes: 0,
            hasher: Sha256::new(),
            chunk_bytes,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
}

/// One message of the stream: bytes and how many are still to come after them.
#[derive(Debug)]
pub struct ExportChunk {
    pub blob: Vec<u8>,
    pub remaining_bytes: u64,
}

impl Iterator for ExportChunks {
    type Item = Result<ExportChunk, BackupError>;

    fn next(&mut self) -> Option<Self::Item> {
        let file = self.file.as_mut()?;
        if self.sent_bytes == self.total_bytes {
            // The data is out: the checksum is the last message.
            self.file = None;
            let hasher = std::mem::replace(&mut self.hasher, Sha256::new());
            return Some(Ok(ExportChunk {
                blob: hasher.finalize().to_vec(),
                remaining_bytes: 0,
            }));
        }
        let want =
            usize::try_from((self.total_bytes - self.sent_bytes).min(self.chunk_bytes as u64))
                .unwrap_or(self.chunk_bytes);
        let mut blob = vec![0u8; want];
        if let Err(e) = file.read_exact(&mut blob) {
            self.file = None;
            return Some(Err(io_error(&self.path)(e)));
        }
        self.hasher.update(&blob);
        self.sent_bytes += want as u64;
        Some(Ok(ExportChunk {
            blob,
            remaining_bytes: self.total_bytes - self.sent_bytes,
        }))
    }
}

impl Drop for ExportChunks {
    fn drop(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_export_streams_in_chunks_then_its_sha256_and_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = export_path(dir.path());
        let data: Vec<u8> = (0..100u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&path, &data).unwrap();
        let chunks: Vec<ExportChunk> = ExportChunks::open(path.clone(), 150)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let remaining: Vec<u64> = chunks.iter().map(|c| c.remaining_bytes).collect();
        assert_eq!(remaining, vec![250, 100, 0, 0]);
        let (checksum, body) = chunks.split_last().unwrap();
        let body: Vec<u8> = body.iter().flat_map(|c| c.blob.clone()).collect();
        assert_eq!(body, data);
        assert_eq!(checksum.blob, Sha256::digest(&data).to_vec());
        assert!(!path.exists(), "the file goes once the stream ends");
    }

    #[test]
    fn a_saved_snapshot_is_checked_against_its_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let db = vec![7u8; 1024];
        let saved = dir.path().join("saved.db");
        let copy = dir.path().join("copy.db");
        std::fs::write(&saved, [db.clone(), Sha256::digest(&db).to_vec()].concat()).unwrap();
        copy_checked(&saved, &copy, false).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), db);
        let mut damaged = std::fs::read(&saved).unwrap();
        damaged[100] ^= 1;
        std::fs::write(&saved, &damaged).unwrap();
        assert!(matches!(
            copy_checked(&saved, &copy, false),
            Err(BackupError::ChecksumMismatch { .. })
        ));
        copy_checked(&saved, &copy, true).unwrap();
        std::fs::write(&saved, &db).unwrap();
        assert!(matches!(
            copy_checked(&saved, &copy, false),
            Err(BackupError::MissingChecksum { .. })
        ));
    }

    #[test]
    fn sizes_print_as_etcdctl_prints_them() {
        assert_eq!(human_bytes(7), "7 B");
        assert_eq!(human_bytes(24_576), "25 kB");
        assert_eq!(human_bytes(1_500), "1.5 kB");
        assert_eq!(human_bytes(1_073_741_824), "1.1 GB");
    }
}
