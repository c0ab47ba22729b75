//! `SimDisk`: an in-memory `Disk` with seeded faults, after TigerBeetle's storage fault model.
//!
//! A `SimDisk` is a handle to a simulated machine's disk. Clones share it, and it outlives
//! the simulated process: the harness calls [`SimDisk::crash`], drops the process's storage
//! and reopens storage on the handle `crash` returned. Handles from before a crash fail every
//! call, which catches a dead process that keeps writing.
//!
//! What each file keeps: its durable image (what the platter holds as of the last sync), its
//! current image (what reads see, page cache included) and the writes in between, in order.
//! The directory is modelled the same way: creations, renames and removals are durable only
//! after `sync_dir`.
//!
//! Faults, each with its own probability in [`Faults`]:
//! - crash: each write not covered by a sync survives whole, survives torn (a prefix of it, in
//!   sector-sized pieces), or is lost; directory changes not covered by `sync_dir` survive as
//!   a prefix, in order (journaling file systems commit metadata in order);
//! - `sync` fails with EIO and, like Linux, forgets the writes it could not make durable: a
//!   second `sync` would succeed without them (PostgreSQL's "fsyncgate", 2018);
//! - latent sector error: a read touching a bad sector fails until the sector is rewritten;
//! - bit rot: a stored bit flips;
//! - misdirected write: a write lands a few sectors away from where it was aimed;
//! - out of space: a write that would grow the files past a quota fails.
//!
//! Same seed, same calls: same results, bit for bit. Every random choice comes from one
//! `ChaCha8Rng`, and all maps are `BTreeMap`s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::disk::{check_name, Disk};

/// The smallest sector real disks have; torn writes break at multiples of it.
pub const DEFAULT_SECTOR_SIZE_BYTES: u64 = 512;

/// How often each fault strikes. All probabilities are in [0, 1]; zero turns a fault off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// At a crash, the chance that a write not covered by a sync survives whole.
    pub unsynced_write_survives_probability: f64,
    /// At a crash, the chance that such a write survives torn: a prefix of its sector pieces.
    /// Otherwise it is lost.
    pub unsynced_write_tears_probability: f64,
    /// Per `sync` or `sync_dir`: the call fails with EIO and drops unsynced changes.
    pub sync_error_probability: f64,
    /// Per read: a sector in the range goes bad (and stays bad until rewritten).
    pub read_error_probability: f64,
    /// Per write: one bit somewhere in the durable data flips.
    pub bit_rot_probability: f64,
    /// Per write: the data lands a few sectors away from its offset.
    pub misdirected_write_probability: f64,
    /// Writes that would grow the total size of all files beyond this fail.
    pub quota_bytes: Option<u64>,
}

impl Faults {
    /// A perfect disk: a crash loses exactly the unsynced changes.
    pub const fn none() -> Faults {
        Faults {
            unsynced_write_survives_probability: 0.0,
            unsynced_write_tears_probability: 0.0,
            sync_error_probability: 0.0,
            read_error_probability: 0.0,
            bit_rot_probability: 0.0,
            misdirected_write_probability: 0.0,
            quota_bytes: None,
        }
    }

    /// Crashes keep, tear or lose unsynced writes at random; nothing else goes wrong. Every
    /// outcome is one a correct program must recover from without error.
    pub const fn crashes() -> Faults {
        Faults {
            unsynced_write_survives_probability: 0.4,
            unsynced_write_tears_probability: 0.3,
            ..Faults::none()
        }
    }
}

/// Counts of what the disk did, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    pub writes: u64,
    pub written_bytes: u64,
    pub syncs: u64,
    pub dir_syncs: u64,
    pub crashes: u64,
    pub torn_writes: u64,
    pub lost_writes: u64,
    pub sync_errors: u64,
    pub read_errors: u64,
    pub bit_flips: u64,
    pub misdirected_writes: u64,
    pub out_of_space_errors: u64,
    /// Power lost in the middle of an fsync (see [`SimDisk::lose_power_at_sync`]).
    pub power_losses_at_sync: u64,
}

#[derive(Clone, Debug)]
pub struct SimDiskConfig {
    pub seed: u64,
    pub sector_size_bytes: u64,
    pub faults: Faults,
}

impl SimDiskConfig {
    pub fn new(seed: u64, faults: Faults) -> SimDiskConfig {
        SimDiskConfig {
            seed,
            sector_size_bytes: DEFAULT_SECTOR_SIZE_BYTES,
            faults,
        }
    }
}

/// A handle to a simulated machine's disk. Cheap to clone; clones share the disk.
#[derive(Clone, Debug)]
pub struct SimDisk {
    machine: Arc<Mutex<Machine>>,
    /// The process this handle belongs to; see [`SimDisk::crash`].
    generation: u64,
}

impl SimDisk {
    pub fn new(config: SimDiskConfig) -> SimDisk {
        let machine = Machine {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            sector_size_bytes: config.sector_size_bytes.max(1),
            faults: config.faults,
            generation: 0,
            next_inode: 1,
            inodes: BTreeMap::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            pending_dir_ops: Vec::new(),
            stats: SimDiskStats::default(),
            power_loss_after_syncs: None,
            sync_observer: SyncObserverSlot::default(),
        };
        SimDisk {
            machine: Arc::new(Mutex::new(machine)),
            generation: 0,
        }
    }

    /// The machine loses power: unsynced changes survive, tear or vanish as [`Faults`] say.
    /// Returns the handle for the next process; this one and its clones stop working.
    pub fn crash(&self) -> SimDisk {
        let mut machine = self.lock();
        machine.crash();
        SimDisk {
            machine: Arc::clone(&self.machine),
            generation: machine.generation,
        }
    }

    /// A copy of this disk as a crash would leave it, on a machine of its own: what a virtual
    /// machine snapshot or a disk backup holds. The original goes on unchanged. Restoring it
    /// later puts the member back in time (the simulator's rolled-back data dir).
    pub fn copy_as_crashed(&self) -> SimDisk {
        let copy = self.lock().clone();
        let faults = copy.faults;
        crashed_copy(copy, faults)
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults
    }

    /// Changes the fault probabilities from now on (e.g. off for a liveness phase).
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// The machine loses power in the middle of a `sync` or `sync_dir`, the one after
    /// `after_syncs` more have succeeded (`None` disarms): the writes it was to make durable
    /// survive, tear or vanish as [`Faults`] say (as at a crash), the call fails, and the
    /// process's handles stop working. A crash at exactly the point where a Ready's writes
    /// are made but not yet durable, which a crash from outside the process (between its
    /// await points) never hits.
    pub fn lose_power_at_sync(&self, after_syncs: Option<u64>) {
        self.lock().power_loss_after_syncs = after_syncs;
    }

    /// Before each `sync` of a file with unsynced writes, `observer` is shown the
    /// [`SyncPoint`]: the file's name, and on demand a copy of the disk as a power loss at
    /// that instant would leave it: those writes survive, tear at sector boundaries or
    /// vanish (with [`Faults::crashes`]' odds, whatever this disk's faults), on a machine of
    /// its own that makes no faults. The original goes on unchanged, its random draws
    /// included. A crash at every sync, for the price of opening a copy (the simulator's
    /// crash probes). `None` stops it.
    pub fn observe_syncs(&self, observer: Option<SyncObserver>) {
        self.lock().sync_observer = SyncObserverSlot(observer);
    }

    /// The observer [`SimDisk::observe_syncs`] set, if a sync of `name` is one to show it:
    /// this handle is current and `name` has unsynced writes.
    fn observer_of_sync(&self, name: &str) -> Option<SyncObserver> {
        let machine = self.lock();
        let observer = machine.sync_observer.0.clone()?;
        if machine.generation != self.generation {
            return None;
        }
        let inode = machine.names.get(name)?;
        if machine
            .inodes
            .get(inode)
            .is_none_or(|i| i.pending.is_empty())
        {
            return None;
        }
        Some(observer)
    }

    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats
    }

    /// The bytes all files take now (what an out-of-space quota counts).
    pub fn used_bytes(&self) -> u64 {
        self.lock().total_size_bytes()
    }

    /// Flips `bit` (0..8) of the byte at `offset_bytes`, on the platter and in the cache.
    pub fn flip_bit(&self, name: &str, offset_bytes: u64, bit: u8) -> io::Result<()> {
        let mut machine = self.lock();
        let inode = machine.inode_number(name)?;
        machine.flip_bit(inode, offset_bytes, bit % 8)
    }

    /// Makes the sector holding `offset_bytes` unreadable until it is rewritten.
    pub fn add_latent_sector_error(&self, name: &str, offset_bytes: u64) -> io::Result<()> {
        let mut machine = self.lock();
        let sector = offset_bytes / machine.sector_size_bytes;
        let inode = machine.inode_number(name)?;
        machine.inode_mut(inode)?.bad_sectors.insert(sector);
        Ok(())
    }

    /// The bytes a read would see now, or `None` if there is no such file.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let machine = self.lock();
        let inode = machine.names.get(name)?;
        machine.inodes.get(inode).map(|i| i.current.to_vec())
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // A panic elsewhere cannot leave the machine half-updated in a way that matters more
        // than the panic itself; keep going so the panic is what gets reported.
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The machine, if this handle still belongs to the running process.
    fn live(&self) -> io::Result<MutexGuard<'_, Machine>> {
        let machine = self.lock();
        if machine.generation != self.generation {
            return Err(io::Error::other(
                "stale SimDisk handle: its process crashed; use the handle crash() returned",
            ));
        }
        Ok(machine)
    }
}

impl Disk for SimDisk {
    fn share(&self) -> io::Result<SimDisk> {
        Ok(self.clone())
    }

    fn works_in_background(&self) -> bool {
        false
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.live()?.names.keys().cloned().collect())
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        check_name(name)?;
        self.live()?.create(name)
    }

    fn size_bytes(&mut self, name: &str) -> io::Result<u64> {
        let machine = self.live()?;
        let inode = machine.inode_number(name)?;
        Ok(machine.inode(inode)?.current.size_bytes)
    }

    fn read_at(&mut self, name: &str, offset_bytes: u64, buf: &mut [u8]) -> io::Result<()> {
        self.live()?.read_at(name, offset_bytes, buf)
    }

    /// Where the bytes ever written end, unless a bad sector lies past it (reading that
    /// must keep failing as it would).
    fn zeros_from_bytes(&mut self, name: &str) -> io::Result<Option<u64>> {
        let machine = self.live()?;
        let inode = machine.inode(machine.inode_number(name)?)?;
        let zeros_from = (inode.current.data.len() as u64).min(inode.current.size_bytes);
        let first_sector_after = zeros_from / machine.sector_size_bytes;
        let bad_sector_after = inode.bad_sectors.range(first_sector_after..).next();
        Ok(bad_sector_after.is_none().then_some(zeros_from))
    }

    fn write_at(&mut self, name: &str, offset_bytes: u64, data: &[u8]) -> io::Result<()> {
        self.live()?.write_at(name, offset_bytes, data)
    }

    fn set_size(&mut self, name: &str, size_bytes: u64) -> io::Result<()> {
        self.live()?.set_size(name, size_bytes)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        // Outside the lock: the observer opens the copy, which locks only the copy.
        if let Some(observer) = self.observer_of_sync(name) {
            observer(&SyncPoint { disk: self, name });
        }
        self.live()?.sync(name)
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        check_name(to)?;
        self.live()?.rename(from, to)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.live()?.remove(name)
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        self.live()?.sync_dir()
    }

    fn location(&self, name: &str) -> String {
        format!("simdisk:{name}")
    }
}

/// `copy` (a clone of a machine) as a crash with `faults` leaves it, on a machine of its
/// own: unobserved and with no power loss armed (its own recovery must not trigger either),
/// keeping `faults` from then on.
fn crashed_copy(mut copy: Machine, faults: Faults) -> SimDisk {
    copy.sync_observer = SyncObserverSlot::default();
    copy.power_loss_after_syncs = None;
    copy.faults = faults;
    copy.crash();
    let generation = copy.generation;
    SimDisk {
        machine: Arc::new(Mutex::new(copy)),
        generation,
    }
}

/// File contents: `data` up to the last byte ever written, zeros from there to `size_bytes`.
/// Keeping the zero tail implicit makes preallocated segments cost nothing. The bytes are
/// shared until written (copy on write), so that a copy of the whole machine (a crash
/// image, a rolled-back data dir) costs only the files it then changes.
#[derive(Clone, Debug, Default)]
struct Image {
    data: Arc<Vec<u8>>,
    size_bytes: u64,
}

impl Image {
    fn write(&mut self, offset_bytes: u64, bytes: &[u8]) {
        let start = to_usize(offset_bytes);
        let end = start + bytes.len();
        let data = Arc::make_mut(&mut self.data);
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(bytes);
        self.size_bytes = self.size_bytes.max(end as u64);
    }

    fn set_size(&mut self, size_bytes: u64) {
        let size = to_usize(size_bytes);
        if size < self.data.len() {
            Arc::make_mut(&mut self.data).truncate(size);
        }
        self.size_bytes = size_bytes;
    }

    fn read(&self, offset_bytes: u64, buf: &mut [u8]) {
        let start = to_usize(offset_bytes).min(self.data.len());
        let copied = (self.data.len() - start).min(buf.len());
        buf[..copied].copy_from_slice(&self.data[start..start + copied]);
        buf[copied..].fill(0);
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; to_usize(self.size_bytes)];
        self.read(0, &mut bytes);
        bytes
    }

    fn apply(&mut self, op: &FileOp) {
        match op {
            FileOp::Write { offset_bytes, data } => self.write(*offset_bytes, data),
            FileOp::SetSize { size_bytes } => self.set_size(*size_bytes),
        }
    }
}

/// Offsets in a simulated file always fit in memory, or the simulation could not hold them.
fn to_usize(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

#[derive(Clone, Debug)]
enum FileOp {
    Write { offset_bytes: u64, data: Vec<u8> },
    SetSize { size_bytes: u64 },
}

#[derive(Clone, Debug, Default)]
struct Inode {
    durable: Image,
    current: Image,
    /// Changes since the last sync, in order: what a crash may lose.
    pending: Vec<FileOp>,
    bad_sectors: BTreeSet<u64>,
}

#[derive(Clone, Debug)]
enum DirOp {
    Create { name: String, inode: u64 },
    Rename { from: String, to: String },
    Remove { name: String },
}

/// What happens to one unsynced write when the machine crashes or a sync fails.
enum Fate {
    Survives,
    /// Only the first `pieces` sector pieces reach the platter.
    Torn {
        pieces: usize,
    },
    Lost,
}

#[derive(Clone, Debug)]
struct Machine {
    rng: ChaCha8Rng,
    sector_size_bytes: u64,
    faults: Faults,
    generation: u64,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    /// The directory as the running process sees it.
    names: BTreeMap<String, u64>,
    /// The directory as of the last `sync_dir`.
    durable_names: BTreeMap<String, u64>,
    pending_dir_ops: Vec<DirOp>,
    stats: SimDiskStats,
    /// After this many more `sync` or `sync_dir` calls succeed, the next loses power
    /// instead (see [`SimDisk::lose_power_at_sync`]).
    power_loss_after_syncs: Option<u64>,
    /// Shown a crash image at every sync (see [`SimDisk::observe_syncs`]).
    sync_observer: SyncObserverSlot,
}

/// Shown each sync about to be made (see [`SimDisk::observe_syncs`]).
pub type SyncObserver = Arc<dyn Fn(&SyncPoint<'_>) + Send + Sync>;

/// A sync about to be made, as a [`SyncObserver`] sees it.
#[derive(Debug)]
pub struct SyncPoint<'a> {
    disk: &'a SimDisk,
    name: &'a str,
}

impl SyncPoint<'_> {
    /// The file being synced.
    pub fn file(&self) -> &str {
        self.name
    }

    /// A copy of the disk as a power loss in the middle of this sync would leave it, on a
    /// machine of its own that makes no faults. Copying draws nothing from the original's
    /// randomness (the copy's machine clones it), so an observer that asks for an image
    /// and one that does not leave the same run.
    pub fn crash_image(&self) -> SimDisk {
        let copy = self.disk.lock().clone();
        let image = crashed_copy(copy, Faults::crashes());
        image.set_faults(Faults::none());
        image
    }
}

#[derive(Clone, Default)]
struct SyncObserverSlot(Option<SyncObserver>);

impl fmt::Debug for SyncObserverSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "observed"
        } else {
            "unobserved"
        })
    }
}

impl Machine {
    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.rng.gen_bool(probability.min(1.0))
    }

    fn inode_number(&self, name: &str) -> io::Result<u64> {
        self.names.get(name).copied().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no file named {name:?}"))
        })
    }

    fn inode(&self, inode: u64) -> io::Result<&Inode> {
        self.inodes
            .get(&inode)
            .ok_or_else(|| io::Error::other("simulated directory points at a missing inode"))
    }

    fn inode_mut(&mut self, inode: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&inode)
            .ok_or_else(|| io::Error::other("simulated directory points at a missing inode"))
    }

    fn total_size_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.current.size_bytes).sum()
    }

    /// Fails with "no space" if growing `inode` to `new_size_bytes` would pass the quota.
    fn check_quota(&mut self, inode: u64, new_size_bytes: u64) -> io::Result<()> {
        let Some(quota_bytes) = self.faults.quota_bytes else {
            return Ok(());
        };
        let old_size_bytes = self.inode(inode)?.current.size_bytes;
        let total_bytes = self.total_size_bytes() - old_size_bytes + new_size_bytes;
        if new_size_bytes > old_size_bytes && total_bytes > quota_bytes {
            self.stats.out_of_space_errors += 1;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("simulated disk full: quota {quota_bytes} bytes"),
            ));
        }
        Ok(())
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        if self.names.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name:?} exists"),
            ));
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(inode, Inode::default());
        self.names.insert(name.to_string(), inode);
        self.pending_dir_ops.push(DirOp::Create {
            name: name.to_string(),
            inode,
        });
        Ok(())
    }

    fn read_at(&mut self, name: &str, offset_bytes: u64, buf: &mut [u8]) -> io::Result<()> {
        let inode = self.inode_number(name)?;
        let end_bytes = offset_bytes.saturating_add(buf.len() as u64);
        if end_bytes > self.inode(inode)?.current.size_bytes {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {name:?} past its end"),
            ));
        }
        if !buf.is_empty() {
            self.maybe_grow_bad_sector(inode, offset_bytes, end_bytes)?;
            let first = offset_bytes / self.sector_size_bytes;
            let last = (end_bytes - 1) / self.sector_size_bytes;
            if self
                .inode(inode)?
                .bad_sectors
                .range(first..=last)
                .next()
                .is_some()
            {
                self.stats.read_errors += 1;
                return Err(io::Error::other(format!(
                    "simulated EIO: latent sector error reading {name:?} at byte {offset_bytes}"
                )));
            }
        }
        self.inode(inode)?.current.read(offset_bytes, buf);
        Ok(())
    }

    fn maybe_grow_bad_sector(&mut self, inode: u64, start: u64, end: u64) -> io::Result<()> {
        if self.chance(self.faults.read_error_probability) {
            let offset_bytes = self.rng.gen_range(start..end);
            let sector = offset_bytes / self.sector_size_bytes;
            self.inode_mut(inode)?.bad_sectors.insert(sector);
        }
        Ok(())
    }

    fn write_at(&mut self, name: &str, offset_bytes: u64, data: &[u8]) -> io::Result<()> {
        let inode = self.inode_number(name)?;
        let landing_bytes = self.landing_offset(offset_bytes);
        let end_bytes = landing_bytes + data.len() as u64;
        let new_size_bytes = self.inode(inode)?.current.size_bytes.max(end_bytes);
        self.check_quota(inode, new_size_bytes)?;
        self.stats.writes += 1;
        self.stats.written_bytes += data.len() as u64;
        let sector_size_bytes = self.sector_size_bytes;
        let file = self.inode_mut(inode)?;
        // A drive remaps a bad sector when it is rewritten whole.
        let first_whole = landing_bytes.div_ceil(sector_size_bytes);
        let end_whole = end_bytes / sector_size_bytes;
        if first_whole < end_whole {
            let healed: Vec<u64> = file
                .bad_sectors
                .range(first_whole..end_whole)
                .copied()
                .collect();
            for sector in healed {
                file.bad_sectors.remove(&sector);
            }
        }
        file.current.write(landing_bytes, data);
        file.pending.push(FileOp::Write {
            offset_bytes: landing_bytes,
            data: data.to_vec(),
        });
        self.maybe_rot_a_bit()
    }

    /// Where a write really lands: usually where it was aimed, rarely a few sectors off.
    fn landing_offset(&mut self, offset_bytes: u64) -> u64 {
        if !self.chance(self.faults.misdirected_write_probability) {
            return offset_bytes;
        }
        self.stats.misdirected_writes += 1;
        let shift_bytes = self.rng.gen_range(1..=4u64) * self.sector_size_bytes;
        if self.rng.gen_bool(0.5) && offset_bytes >= shift_bytes {
            offset_bytes - shift_bytes
        } else {
            offset_bytes + shift_bytes
        }
    }

    fn maybe_rot_a_bit(&mut self) -> io::Result<()> {
        if !self.chance(self.faults.bit_rot_probability) {
            return Ok(());
        }
        let candidates: Vec<(u64, usize)> = self
            .inodes
            .iter()
            .filter(|(_, file)| !file.durable.data.is_empty())
            .map(|(number, file)| (*number, file.durable.data.len()))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let (inode, len) = candidates[self.rng.gen_range(0..candidates.len())];
        let offset_bytes = self.rng.gen_range(0..len) as u64;
        let bit = self.rng.gen_range(0..8u8);
        self.flip_bit(inode, offset_bytes, bit)
    }

    /// Flips a bit on the platter, and in the cache unless a pending write hides it.
    fn flip_bit(&mut self, inode: u64, offset_bytes: u64, bit: u8) -> io::Result<()> {
        let file = self.inode_mut(inode)?;
        let at = to_usize(offset_bytes);
        let hidden = file.pending.iter().any(|op| match op {
            FileOp::Write {
                offset_bytes: start,
                data,
            } => (*start..*start + data.len() as u64).contains(&offset_bytes),
            FileOp::SetSize { size_bytes } => offset_bytes >= *size_bytes,
        });
        let mut flipped = false;
        if let Some(byte) = Arc::make_mut(&mut file.durable.data).get_mut(at) {
            *byte ^= 1 << bit;
            flipped = true;
        }
        if !hidden {
            if let Some(byte) = Arc::make_mut(&mut file.current.data).get_mut(at) {
                *byte ^= 1 << bit;
                flipped = true;
            }
        }
        if flipped {
            self.stats.bit_flips += 1;
        }
        Ok(())
    }

    fn set_size(&mut self, name: &str, size_bytes: u64) -> io::Result<()> {
        let inode = self.inode_number(name)?;
        self.check_quota(inode, size_bytes)?;
        let file = self.inode_mut(inode)?;
        file.current.set_size(size_bytes);
        file.pending.push(FileOp::SetSize { size_bytes });
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let inode = self.inode_number(name)?;
        self.stats.syncs += 1;
        self.lose_power_if_armed()?;
        if self.chance(self.faults.sync_error_probability) {
            self.stats.sync_errors += 1;
            self.settle_pending(inode)?;
            return Err(io::Error::other(format!(
                "simulated EIO: sync of {name:?} failed; unsynced writes were dropped"
            )));
        }
        let file = self.inode_mut(inode)?;
        for op in std::mem::take(&mut file.pending) {
            file.durable.apply(&op);
        }
        Ok(())
    }

    /// The unsynced writes of `inode` meet their fate (crash or failed sync): the platter
    /// gets what survived, and the cache is dropped, so reads see the platter.
    fn settle_pending(&mut self, inode: u64) -> io::Result<()> {
        let pending = std::mem::take(&mut self.inode_mut(inode)?.pending);
        for op in pending {
            match self.fate_of(&op) {
                Fate::Survives => self.inode_mut(inode)?.durable.apply(&op),
                Fate::Torn { pieces } => self.apply_torn(inode, &op, pieces)?,
                Fate::Lost => self.stats.lost_writes += 1,
            }
        }
        let file = self.inode_mut(inode)?;
        file.current = file.durable.clone();
        Ok(())
    }

    fn fate_of(&mut self, op: &FileOp) -> Fate {
        let survives = self.faults.unsynced_write_survives_probability;
        let tears = self.faults.unsynced_write_tears_probability;
        let roll: f64 = if survives + tears > 0.0 {
            self.rng.gen()
        } else {
            1.0
        };
        match op {
            _ if roll < survives => Fate::Survives,
            FileOp::Write { offset_bytes, data } if roll < survives + tears => {
                let count = self.pieces(*offset_bytes, data.len()).len();
                Fate::Torn {
                    pieces: self.rng.gen_range(0..count.max(1)),
                }
            }
            FileOp::SetSize { .. } if roll < survives + tears => Fate::Survives,
            _ => Fate::Lost,
        }
    }

    /// Splits a write at the sector boundaries it crosses: the units that can tear apart.
    fn pieces(&self, offset_bytes: u64, len: usize) -> Vec<(u64, usize)> {
        let mut pieces = Vec::new();
        let end_bytes = offset_bytes + len as u64;
        let mut start = offset_bytes;
        while start < end_bytes {
            let boundary = (start / self.sector_size_bytes + 1) * self.sector_size_bytes;
            let end = boundary.min(end_bytes);
            pieces.push((start, to_usize(end - start)));
            start = end;
        }
        pieces
    }

    fn apply_torn(&mut self, inode: u64, op: &FileOp, kept_pieces: usize) -> io::Result<()> {
        let FileOp::Write { offset_bytes, data } = op else {
            return Ok(());
        };
        self.stats.torn_writes += 1;
        let pieces = self.pieces(*offset_bytes, data.len());
        let file = self.inode_mut(inode)?;
        for (start, len) in pieces.into_iter().take(kept_pieces) {
            let from = to_usize(start - offset_bytes);
            file.durable.write(start, &data[from..from + len]);
        }
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let inode = self.inode_number(from)?;
        self.names.remove(from);
        self.names.insert(to.to_string(), inode);
        self.pending_dir_ops.push(DirOp::Rename {
            from: from.to_string(),
            to: to.to_string(),
        });
        self.drop_unreferenced();
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.inode_number(name)?;
        self.names.remove(name);
        self.pending_dir_ops.push(DirOp::Remove {
            name: name.to_string(),
        });
        self.drop_unreferenced();
        Ok(())
    }

    /// See [`SimDisk::lose_power_at_sync`].
    fn lose_power_if_armed(&mut self) -> io::Result<()> {
        match self.power_loss_after_syncs {
            None => return Ok(()),
            Some(0) => self.power_loss_after_syncs = None,
            Some(n) => {
                self.power_loss_after_syncs = Some(n - 1);
                return Ok(());
            }
        }
        self.stats.power_losses_at_sync += 1;
        self.crash();
        Err(io::Error::other("simulated power loss during fsync"))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        self.stats.dir_syncs += 1;
        self.lose_power_if_armed()?;
        if self.chance(self.faults.sync_error_probability) {
            self.stats.sync_errors += 1;
            self.settle_dir();
            return Err(io::Error::other(
                "simulated EIO: directory sync failed; unsynced directory changes were dropped",
            ));
        }
        self.durable_names = self.names.clone();
        self.pending_dir_ops.clear();
        self.drop_unreferenced();
        Ok(())
    }

    /// Unsynced directory changes meet their fate: a prefix of them, in order, survives.
    fn settle_dir(&mut self) {
        let survives = self.faults.unsynced_write_survives_probability
            + self.faults.unsynced_write_tears_probability;
        for op in std::mem::take(&mut self.pending_dir_ops) {
            if !self.chance(survives) {
                break;
            }
            match op {
                DirOp::Create { name, inode } => {
                    self.durable_names.insert(name, inode);
                }
                DirOp::Rename { from, to } => {
                    if let Some(inode) = self.durable_names.remove(&from) {
                        self.durable_names.insert(to, inode);
                    }
                }
                DirOp::Remove { name } => {
                    self.durable_names.remove(&name);
                }
            }
        }
        self.names = self.durable_names.clone();
        self.drop_unreferenced();
    }

    /// Frees inodes no name (durable or current) points at any more.
    fn drop_unreferenced(&mut self) {
        let live: BTreeSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .chain(self.pending_dir_ops.iter().filter_map(|op| match op {
                DirOp::Create { inode, .. } => Some(inode),
                _ => None,
            }))
            .copied()
            .collect();
        self.inodes.retain(|number, _| live.contains(number));
    }

    fn crash(&mut self) {
        self.stats.crashes += 1;
        self.generation += 1;
        self.settle_dir();
        let inodes: Vec<u64> = self.inodes.keys().copied().collect();
        for inode in inodes {
            // Inodes exist for every number just listed; nothing to report if one vanished.
            let _ = self.settle_pending(inode);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(seed: u64, faults: Faults) -> SimDisk {
        SimDisk::new(SimDiskConfig::new(seed, faults))
    }

    fn read_all(disk: &mut SimDisk, name: &str) -> Vec<u8> {
        let size = disk.size_bytes(name).unwrap();
        let mut buf = vec![0u8; size as usize];
        disk.read_at(name, 0, &mut buf).unwrap();
        buf
    }

    #[test]
    fn reads_see_writes_and_sparse_zeros() {
        let mut d = disk(1, Faults::none());
        d.create("f").unwrap();
        d.write_at("f", 3, b"abc").unwrap();
        d.set_size("f", 10).unwrap();
        assert_eq!(read_all(&mut d, "f"), b"\0\0\0abc\0\0\0\0");
        d.set_size("f", 4).unwrap();
        d.set_size("f", 6).unwrap();
        assert_eq!(read_all(&mut d, "f"), b"\0\0\0a\0\0");
        let err = d.read_at("f", 5, &mut [0u8; 2]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn power_lost_during_a_sync_fails_it_and_settles_its_writes_as_a_crash() {
        let mut d = disk(1, Faults::none());
        d.create("f").unwrap();
        d.write_at("f", 0, b"synced").unwrap();
        d.sync("f").unwrap();
        d.sync_dir().unwrap();
        d.lose_power_at_sync(Some(1));
        d.sync("f").unwrap();
        d.write_at("f", 6, b" lost").unwrap();
        assert!(d.sync("f").is_err(), "the second sync must fail");
        assert!(d.write_at("f", 0, b"x").is_err(), "the process is gone");
        assert_eq!(d.stats().power_losses_at_sync, 1);
        let mut survivor = d.crash();
        assert_eq!(read_all(&mut survivor, "f"), b"synced");
        survivor.write_at("f", 6, b" again").unwrap();
        survivor.sync("f").unwrap();
        assert_eq!(read_all(&mut survivor, "f"), b"synced again");
    }

    #[test]
    fn a_copy_holds_what_a_crash_would_and_the_original_goes_on() {
        let mut d = disk(1, Faults::none());
        d.create("f").unwrap();
        d.write_at("f", 0, b"synced").unwrap();
        d.sync("f").unwrap();
        d.sync_dir().unwrap();
        d.write_at("f", 6, b" not yet").unwrap();
        let mut copy = d.copy_as_crashed();
        d.write_at("f", 14, b"!").unwrap();
        copy.write_at("f", 6, b" copy").unwrap();
        assert_eq!(read_all(&mut copy, "f"), b"synced copy");
        assert_eq!(read_all(&mut d, "f"), b"synced not yet!");
    }

    #[test]
    fn a_crash_without_faults_keeps_exactly_what_was_synced() {
        let mut d = disk(1, Faults::none());
        d.create("f").unwrap();
        d.write_at("f", 0, b"synced").unwrap();
        d.sync("f").unwrap();
        d.sync_dir().unwrap();
        d.write_at("f", 6, b" lost").unwrap();
        d.create("g").unwrap();
        let mut d2 = d.crash();
        assert_eq!(read_all(&mut d2, "f"), b"synced");
        assert_eq!(d2.list().unwrap(), vec!["f".to_string()]);
        assert!(
            d.list().is_err(),
            "the dead process's handle must stop working"
        );
    }

    #[test]
    fn an_unsynced_directory_entry_can_vanish_with_its_synced_data() {
        let mut d = disk(1, Faults::none());
        d.create("f").unwrap();
        d.write_at("f", 0, b"data").unwrap();
        d.sync("f").unwrap();
        let mut d2 = d.crash();
        assert!(d2.list().unwrap().is_empty());
    }

    #[test]
    fn torn_writes_keep_a_sector_prefix() {
        let faults = Faults {
            unsynced_write_tears_probability: 1.0,
            ..Faults::none()
        };
        for seed in 0..20 {
            let mut d = disk(seed, faults);
            d.create("f").unwrap();
            d.sync_dir().unwrap();
            d.write_at("f", 100, &[7u8; 2000]).unwrap();
            let mut d2 = d.crash();
            let bytes = read_all(&mut d2, "f");
            // What survives ends at a sector boundary (or is nothing) and is all new data.
            assert!(
                bytes.is_empty() || bytes.len().is_multiple_of(512),
                "{}",
                bytes.len()
            );
            assert!(bytes.iter().skip(100).all(|&b| b == 7));
        }
    }

    #[test]
    fn failed_sync_drops_the_writes_for_good() {
        let faults = Faults {
            sync_error_probability: 1.0,
            ..Faults::none()
        };
        let mut d = disk(1, faults);
        d.create("f").unwrap();
        d.write_at("f", 0, b"gone").unwrap();
        assert!(d.sync("f").is_err());
        d.set_faults(Faults::none());
        d.sync("f").unwrap();
        assert_eq!(d.size_bytes("f").unwrap(), 0);
    }

    #[test]
    fn a_sync_observer_sees_each_sync_as_a_power_loss_would_leave_it() {
        let mut d = disk(7, Faults::none());
        d.create("f").unwrap();
        d.sync_dir().unwrap();
        d.write_at("f", 0, &[1u8; 512]).unwrap();
        d.sync("f").unwrap();
        let images = Arc::new(Mutex::new(Vec::new()));
        let seen = images.clone();
        d.observe_syncs(Some(Arc::new(move |sync: &SyncPoint<'_>| {
            assert_eq!(sync.file(), "f");
            seen.lock().unwrap().push(sync.crash_image());
        })));
        let draws_before = d.lock().rng.clone();
        // Many sectors, so that the image's copy draws a fate for each.
        d.write_at("f", 512, &[2u8; 4096]).unwrap();
        d.sync("f").unwrap();
        d.sync("f").unwrap(); // nothing unsynced: no image
        let taken = std::mem::take(&mut *images.lock().unwrap());
        assert_eq!(taken.len(), 1);
        let mut image = taken[0].clone();
        let image_bytes = read_all(&mut image, "f");
        assert_eq!(&image_bytes[..512], &[1u8; 512], "what was synced is kept");
        assert!(image_bytes[512..].iter().all(|&b| b == 2 || b == 0));
        // The original made its sync and drew nothing for the copy.
        assert_eq!(read_all(&mut d, "f").len(), 512 + 4096);
        assert_eq!(d.lock().rng, draws_before);
        // The image is a machine of its own, unobserved: its syncs show nothing.
        image.write_at("f", 0, b"x").unwrap();
        image.sync("f").unwrap();
        assert!(images.lock().unwrap().is_empty());
    }

    #[test]
    fn the_zero_tail_is_known_unless_a_bad_sector_lies_in_it() {
        let mut d = disk(3, Faults::none());
        d.create("f").unwrap();
        d.write_at("f", 0, &[1u8; 100]).unwrap();
        d.preallocate("f", 4096).unwrap();
        assert_eq!(d.zeros_from_bytes("f").unwrap(), Some(100));
        let mut tail = [9u8; 200];
        d.read_at("f", 50, &mut tail).unwrap();
        assert!(tail[..50].iter().all(|&b| b == 1) && tail[50..].iter().all(|&b| b == 0));
        d.add_latent_sector_error("f", 2048).unwrap();
        assert_eq!(
            d.zeros_from_bytes("f").unwrap(),
            None,
            "reading the tail must fail"
        );
    }

    #[test]
    fn latent_sector_errors_fail_reads_until_rewritten() {
        let mut d = disk(1, Faults::none());
        d.create("f").unwrap();
        d.write_at("f", 0, &[1u8; 2048]).unwrap();
        d.add_latent_sector_error("f", 600).unwrap();
        assert!(d.read_at("f", 0, &mut [0u8; 100]).is_ok());
        assert!(d.read_at("f", 500, &mut [0u8; 100]).is_err());
        d.write_at("f", 512, &[2u8; 512]).unwrap();
        assert!(d.read_at("f", 500, &mut [0u8; 100]).is_ok());
    }

    #[test]
    fn bit_flips_and_quota() {
        let mut d = disk(
            1,
            Faults {
                quota_bytes: Some(100),
                ..Faults::none()
            },
        );
        d.create("f").unwrap();
        d.write_at("f", 0, &[0u8; 64]).unwrap();
        d.sync("f").unwrap();
        d.flip_bit("f", 10, 3).unwrap();
        assert_eq!(read_all(&mut d, "f")[10], 8);
        let err = d.write_at("f", 64, &[0u8; 64]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(d.size_bytes("f").unwrap(), 64);
    }

    #[test]
    fn same_seed_same_outcome() {
        let run = |seed| {
            let faults = Faults {
                misdirected_write_probability: 0.2,
                bit_rot_probability: 0.2,
                ..Faults::crashes()
            };
            let mut d = disk(seed, faults);
            d.create("f").unwrap();
            d.sync_dir().unwrap();
            for i in 0..50u64 {
                d.write_at("f", i * 300, &[i as u8 + 1; 300]).unwrap();
                if i % 7 == 0 {
                    d.sync("f").unwrap();
                }
            }
            let d2 = d.crash();
            (d2.contents("f"), d2.stats())
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5).0, run(6).0);
    }
}
