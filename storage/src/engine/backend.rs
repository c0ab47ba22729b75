//! One file of a [`Disk`] as redb's storage backend.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

use keel_core::mvcc::EngineResult;

use super::{fail, open_database, OpenDatabase};
use crate::disk::Disk;

/// One file of a [`Disk`] as redb's storage. The file is behind a mutex: redb may call from
/// several threads (a view read while the store writes), and a defragment renames it while
/// views of it may still be reading (see [`EngineFile`]).
pub struct DiskBackend<D: Disk> {
    file: Arc<Mutex<NamedFile<D>>>,
    /// The file's size as last set or seen, for the engine's size without IO (`Engine::size_on_disk`).
    pub(super) size_bytes: Arc<AtomicU64>,
}

/// The disk and the name the file has now.
struct NamedFile<D: Disk> {
    disk: D,
    name: String,
    /// Removed once redb lets go of it (a file a defragmented copy replaced).
    remove_when_closed: bool,
}

impl<D: Disk> Drop for NamedFile<D> {
    fn drop(&mut self) {
        if self.remove_when_closed {
            // A leftover is removed at the next start anyway (see `defragment::recover`).
            let _ = self.disk.remove(&self.name);
        }
    }
}

fn lock<D: Disk>(file: &Mutex<NamedFile<D>>) -> io::Result<MutexGuard<'_, NamedFile<D>>> {
    file.lock()
        .map_err(|_| io::Error::other("the disk's lock is poisoned"))
}

impl<D: Disk> DiskBackend<D> {
    /// The file `name` on `disk`, created (durably) if missing.
    pub fn open(mut disk: D, name: &str) -> io::Result<Self> {
        if !disk.list()?.iter().any(|n| n == name) {
            disk.create(name)?;
            disk.sync_dir()?;
        }
        let size_bytes = Arc::new(AtomicU64::new(disk.size_bytes(name)?));
        Ok(DiskBackend {
            file: Arc::new(Mutex::new(NamedFile {
                disk,
                name: name.to_string(),
                remove_when_closed: false,
            })),
            size_bytes,
        })
    }

    /// A handle on the file that outlives redb's hold on it (see [`EngineFile`]).
    pub(super) fn engine_file(&self) -> Arc<dyn EngineFile> {
        self.file.clone()
    }

    fn with_disk<T>(&self, op: impl FnOnce(&mut D, &str) -> io::Result<T>) -> io::Result<T> {
        let mut file = lock(&self.file)?;
        let file = &mut *file;
        op(&mut file.disk, &file.name)
    }
}

/// The engine's file apart from redb: what an online defragment does to it. Renaming goes
/// through the same lock as redb's reads, so a view of the file reads it under its new name.
pub(super) trait EngineFile: Send + Sync {
    /// Renames the file to `to` (replacing any file of that name) and syncs the directory.
    fn rename(&self, to: &str) -> io::Result<()>;

    /// Renames the file to the first free name `{prefix}{n}` (n = 1, 2, …) and syncs the
    /// directory: a name no other file of this kind is left under, so that removing it by
    /// name later removes this file only.
    fn rename_aside(&self, prefix: &str) -> io::Result<()>;

    /// Marks the file for removal once redb has let go of it.
    fn remove_when_closed(&self);

    /// Creates the engine file `name` in the same directory (empty: a file of that name is
    /// removed first).
    fn create_sibling(&self, name: &str, cache_size_bytes: usize) -> EngineResult<OpenDatabase>;
}

impl<D: Disk + Send + 'static> EngineFile for Mutex<NamedFile<D>> {
    fn rename(&self, to: &str) -> io::Result<()> {
        let mut file = lock(self)?;
        let from = file.name.clone();
        file.disk.rename(&from, to)?;
        file.disk.sync_dir()?;
        file.name = to.to_string();
        Ok(())
    }

    fn rename_aside(&self, prefix: &str) -> io::Result<()> {
        let mut file = lock(self)?;
        let taken = file.disk.list()?;
        let Some(to) = (1..=taken.len() + 1)
            .map(|n| format!("{prefix}{n}"))
            .find(|name| !taken.contains(name))
        else {
            return Err(io::Error::other("no free name"));
        };
        let from = file.name.clone();
        file.disk.rename(&from, &to)?;
        file.disk.sync_dir()?;
        file.name = to;
        Ok(())
    }

    fn remove_when_closed(&self) {
        if let Ok(mut file) = lock(self) {
            file.remove_when_closed = true;
        }
    }

    fn create_sibling(&self, name: &str, cache_size_bytes: usize) -> EngineResult<OpenDatabase> {
        let (disk, location) = {
            let file = lock(self).map_err(|e| fail(name, "creating", e))?;
            (file.disk.share(), file.disk.location(name))
        };
        let mut disk = disk.map_err(|e| fail(&location, "creating", e))?;
        let exists = disk
            .list()
            .map_err(|e| fail(&location, "creating", e))?
            .iter()
            .any(|f| f == name);
        if exists {
            disk.remove(name)
                .map_err(|e| fail(&location, "removing a leftover", e))?;
        }
        open_database(disk, name, cache_size_bytes)
    }
}

impl<D: Disk> fmt::Debug for DiskBackend<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = lock(&self.file).map(|f| f.name.clone()).unwrap_or_default();
        f.debug_struct("DiskBackend")
            .field("name", &name)
            .finish_non_exhaustive()
    }
}

impl<D: Disk + Send + 'static> StorageBackend for DiskBackend<D> {
    fn len(&self) -> Result<u64, redb::BackendError> {
        let len = self.with_disk(|disk, name| disk.size_bytes(name))?;
        self.size_bytes.store(len, Ordering::Relaxed);
        Ok(len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), redb::BackendError> {
        Ok(self.with_disk(|disk, name| disk.read_at(name, offset, out))?)
    }

    fn set_len(&self, len: u64) -> Result<(), redb::BackendError> {
        self.with_disk(|disk, name| disk.set_size(name, len))?;
        self.size_bytes.store(len, Ordering::Relaxed);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), redb::BackendError> {
        Ok(self.with_disk(|disk, name| disk.sync(name))?)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), redb::BackendError> {
        self.with_disk(|disk, name| disk.write_at(name, offset, data))?;
        self.size_bytes
            .fetch_max(offset + data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
