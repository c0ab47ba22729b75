//! Everything that can go wrong in storage, with messages an operator can act on.

use std::io;

/// What an operator does when a member's data dir is damaged. Raft makes this safe: the
/// other members hold every committed entry, and the leader sends a re-added member a
/// snapshot.
pub const CORRUPTION_REMEDY: &str = "this member's data cannot be trusted and it must not \
start on it. Stop it, move its data dir aside (keep it for diagnosis), and re-add it to the \
cluster: `etcdctl member remove <id>`, then `etcdctl member add <name> --peer-urls=<urls>` and \
start it with an empty data dir, so the leader sends it a snapshot. A single-member cluster \
must instead be restored from a backup (`etcdctl snapshot restore`)";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Damaged data found while recovering: never skipped, the node must not start.
    #[error("data corruption in {file} at byte {offset_bytes}: {problem}. What to do: {remedy}", remedy = CORRUPTION_REMEDY)]
    Corrupt {
        file: String,
        offset_bytes: u64,
        problem: String,
    },

    /// Reading the data dir failed (e.g. a bad sector) while recovering.
    #[error("cannot read {file} at byte {offset_bytes}: {source}. If the disk is failing, {remedy}", remedy = CORRUPTION_REMEDY)]
    Unreadable {
        file: String,
        offset_bytes: u64,
        #[source]
        source: io::Error,
    },

    /// A sync failed. Fatal: the kernel may have dropped the unsynced writes, so a retried
    /// sync could succeed without them (PostgreSQL, 2018). The process must stop; on
    /// restart, recovery finds out what really reached the disk.
    #[error("sync of {file} failed: {source}. Writes since the last successful sync may be lost; this is fatal: stop the process (never retry the sync) and restart it so recovery reads what reached the disk")]
    SyncFailed {
        file: String,
        #[source]
        source: io::Error,
    },

    /// The disk is full. Fatal for this process: what was written is unknown.
    #[error("disk full writing {file} at byte {offset_bytes}: {source}. Free space or grow the volume, then restart the process")]
    NoSpace {
        file: String,
        offset_bytes: u64,
        #[source]
        source: io::Error,
    },

    /// Any other failed disk operation.
    #[error("{operation} {file} at byte {offset_bytes} failed: {source}; stop the process and check the disk")]
    Io {
        operation: &'static str,
        file: String,
        offset_bytes: u64,
        #[source]
        source: io::Error,
    },

    /// Refused before anything was written; the storage is unchanged and usable.
    #[error("a WAL record of {size_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    RecordTooLarge { size_bytes: u64, max_bytes: u64 },

    /// Refused before anything was written; the storage is unchanged and usable.
    #[error("a snapshot of {size_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    SnapshotTooLarge { size_bytes: u64, max_bytes: u64 },

    /// The caller broke the API's contract (e.g. a gap in appended indexes). Refused before
    /// anything was written; the storage is unchanged.
    #[error("invalid storage request: {reason}")]
    InvalidRequest { reason: String },

    #[error("invalid storage options: {reason}")]
    InvalidOptions { reason: String },

    /// An earlier write or sync failed; the storage refuses all further work.
    #[error("storage stopped after an earlier failure ({cause}); restart the process")]
    Stopped { cause: String },
}

impl StorageError {
    /// Whether the process must stop. After a fatal error the `Storage` refuses all further
    /// work ([`StorageError::Stopped`]): what reached the disk is unknown until a restart
    /// recovers it. Non-fatal errors were refused before anything was written.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            StorageError::RecordTooLarge { .. }
                | StorageError::SnapshotTooLarge { .. }
                | StorageError::InvalidRequest { .. }
                | StorageError::InvalidOptions { .. }
        )
    }

    /// An error of a write-side disk operation, typed by what the operator must do.
    pub(crate) fn write(
        operation: &'static str,
        file: String,
        offset_bytes: u64,
        source: io::Error,
    ) -> StorageError {
        if source.kind() == io::ErrorKind::StorageFull {
            StorageError::NoSpace {
                file,
                offset_bytes,
                source,
            }
        } else {
            StorageError::Io {
                operation,
                file,
                offset_bytes,
                source,
            }
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_names_file_offset_and_remedy() {
        let err = StorageError::Corrupt {
            file: "/data/0000000000000001-0000000000000001.wal".into(),
            offset_bytes: 4096,
            problem: "body checksum mismatch".into(),
        };
        let text = err.to_string();
        assert!(text.contains("/data/0000000000000001-0000000000000001.wal"));
        assert!(text.contains("at byte 4096"));
        assert!(text.contains("etcdctl member remove"));
        assert!(err.is_fatal());
    }

    #[test]
    fn disk_full_is_its_own_variant() {
        let full = io::Error::new(io::ErrorKind::StorageFull, "full");
        let err = StorageError::write("write", "f".into(), 0, full);
        assert!(matches!(err, StorageError::NoSpace { .. }));
        let other = StorageError::write("write", "f".into(), 0, io::Error::other("x"));
        assert!(matches!(other, StorageError::Io { .. }));
    }
}
