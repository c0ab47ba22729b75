//! One file of a [`Disk`] as redb's storage backend.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::StorageBackend;

use crate::disk::Disk;

/// One file of a [`Disk`] as redb's storage. The disk is behind a mutex: redb may call from
/// several threads (a view read while the store writes).
pub struct DiskBackend<D: Disk> {
    disk: Mutex<D>,
    name: String,
    /// The file's size as last set or seen, for the engine's size without IO (`Engine::size_on_disk`).
    pub(super) size_bytes: Arc<AtomicU64>,
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
            disk: Mutex::new(disk),
            name: name.to_string(),
            size_bytes,
        })
    }

    fn with_disk<T>(&self, op: impl FnOnce(&mut D, &str) -> io::Result<T>) -> io::Result<T> {
        let mut disk = self
            .disk
            .lock()
            .map_err(|_| io::Error::other("the disk's lock is poisoned"))?;
        op(&mut disk, &self.name)
    }
}

impl<D: Disk> fmt::Debug for DiskBackend<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskBackend")
            .field("name", &self.name)
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
