//! The `Disk` trait: every byte keel stores goes through it, so the simulator can do to the
//! disk what real disks do (lose unsynced writes, tear them, fail a sync, rot a bit).
//!
//! A `Disk` is one flat directory of named files. Operations are synchronous: the server calls
//! them from a blocking thread, the simulator calls them directly.
//!
//! Durability contract, the same one POSIX file systems give:
//! - a write is durable only after a `sync` of its file completes;
//! - a file's existence under a name (after `create`, `rename`, `remove`) is durable only
//!   after `sync_dir` completes;
//! - a failed `sync` may have dropped the unsynced writes for good (the next `sync` may well
//!   succeed without them), so the caller must treat it as fatal and never retry.

use std::io;

/// A directory of files. Names are plain file names (no path separators).
pub trait Disk: Send + 'static {
    /// Names of all files in the directory, sorted.
    fn list(&mut self) -> io::Result<Vec<String>>;

    /// Creates an empty file; fails with `AlreadyExists` if `name` exists.
    fn create(&mut self, name: &str) -> io::Result<()>;

    /// The file's size in bytes.
    fn size_bytes(&mut self, name: &str) -> io::Result<u64>;

    /// Fills `buf` from `offset_bytes`; fails with `UnexpectedEof` if the file is shorter.
    fn read_at(&mut self, name: &str, offset_bytes: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes all of `data` at `offset_bytes`, extending the file (with zeros in any gap) if
    /// needed. An append is a write at the file's size.
    fn write_at(&mut self, name: &str, offset_bytes: u64, data: &[u8]) -> io::Result<()>;

    /// Truncates or extends (with zeros) the file to `size_bytes`.
    fn set_size(&mut self, name: &str, size_bytes: u64) -> io::Result<()>;

    /// Extends the file to `size_bytes` with zeros that are really allocated, so later
    /// writes inside it need no metadata update at `sync` time. The default just extends.
    fn preallocate(&mut self, name: &str, size_bytes: u64) -> io::Result<()> {
        self.set_size(name, size_bytes)
    }

    /// An offset from which `name` is known to hold only zeros up to its end (reading there
    /// still works and returns zeros), or `None` when that is not known. A hint that lets a
    /// reader of a preallocated file skip reading its zero tail; the default knows nothing.
    fn zeros_from_bytes(&mut self, name: &str) -> io::Result<Option<u64>> {
        let _ = name;
        Ok(None)
    }

    /// Makes the file's data and size durable (`fdatasync`).
    fn sync(&mut self, name: &str) -> io::Result<()>;

    /// Atomically replaces `to` (if it exists) with `from`.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;

    /// Removes the file.
    fn remove(&mut self, name: &str) -> io::Result<()>;

    /// Makes creations, renames and removals so far durable (`fsync` of the directory).
    fn sync_dir(&mut self) -> io::Result<()>;

    /// Where `name` lives, for messages an operator reads (a full path for real files).
    fn location(&self, name: &str) -> String;

    /// Whether work on this disk may run on threads of its own (the WAL's spare segment).
    /// Not on the simulated disk: its faults are drawn from one seeded stream in call order,
    /// which another thread would make differ from run to run.
    fn works_in_background(&self) -> bool {
        true
    }

    /// Another handle on the same directory, for work on other files from another thread
    /// (a snapshot file is written while the WAL goes on; see `SnapshotWriter`).
    fn share(&self) -> io::Result<Self>
    where
        Self: Sized;
}

/// Rejects names that would escape the directory or be hidden special entries.
pub(crate) fn check_name(name: &str) -> io::Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0');
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file name {name:?}"),
        ));
    }
    Ok(())
}
