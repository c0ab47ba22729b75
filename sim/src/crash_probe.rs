//! "Had it crashed now, would it start?" Right after a member releases its Raft log behind
//! the store's engine — the moment its data dir holds the least log behind the engine's
//! durable state — a copy of its disk as a power loss would leave it is opened exactly as a
//! restart opens it (`keel_net::server::recover_existing`). It must start and hold the log
//! through the released point. A second copy loses its newest snapshot marker too (a damaged
//! file set aside): the older marker and the WAL after it must still be enough, which is why
//! the WAL is kept behind the older marker. Every probe is a crash at a chosen point that
//! costs the run nothing: the member itself goes on.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use keel_core::node::Node;
use keel_net::config::ServerConfig;
use keel_net::server_loop::Inspector;
use keel_storage::{Faults, SimDisk, SyncPoint};

use crate::invariants::RaftInvariants;

/// Servers whose disk was damaged on purpose (shared by the world and the probes): they may
/// refuse to start, so they are not probed.
#[derive(Clone, Debug, Default)]
pub struct Damaged(Arc<Mutex<BTreeSet<usize>>>);

impl Damaged {
    pub fn insert(&self, server: usize) {
        self.lock().insert(server);
    }

    pub fn contains(&self, server: usize) -> bool {
        self.lock().contains(&server)
    }

    pub fn all(&self) -> Vec<usize> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The world's disks by server index.
pub type Disks = Arc<Mutex<std::collections::BTreeMap<usize, SimDisk>>>;

/// One server's inspector: the run's Raft invariants, plus crash probes of its disk.
#[derive(Debug)]
pub struct ServerInspector {
    pub invariants: Arc<RaftInvariants>,
    pub disks: Disks,
    pub damaged: Damaged,
    pub server: usize,
    /// The flags its process runs with (what a restart would use).
    pub flags: Arc<Mutex<ServerConfig>>,
}

impl Inspector for ServerInspector {
    fn started(&self, node: &Node) {
        self.invariants.started(node);
        self.probe_every_sync(node.id());
    }

    fn observe(&self, node: &Node) {
        self.invariants.observe(node);
    }

    fn log_released(&self, node: &Node, index: u64) {
        if self.damaged.contains(self.server) {
            return;
        }
        let Some(disk) = self.disk() else {
            return;
        };
        let Ok(config) = self.flags.lock().map(|f| f.clone()) else {
            return;
        };
        let id = node.id();
        self.invariants.probed(|p| p.after_release += 1);
        let crashed = crash_image(&disk);
        if let Err(why) = starts_through(&config, crashed, index) {
            self.invariants.report(format!(
                "member {id:x} released its log behind the engine at {index}; a crash then \
                 would leave a data dir that {why}"
            ));
        }
        let crashed = crash_image(&disk);
        let Some(marker) = set_aside_newest_snapshot(&crashed) else {
            return;
        };
        if let Err(why) = starts_through(&config, crashed, index) {
            self.invariants.report(format!(
                "member {id:x} released its log behind the engine at {index}; a crash then, \
                 with its newest snapshot marker {marker} unreadable, would leave a data dir \
                 that {why} (the WAL must reach back to the older marker)"
            ));
        }
    }
}

impl ServerInspector {
    /// From now on, each WAL sync of this process's disk is also a power loss: its crash
    /// image (the writes being synced kept, torn or lost) must hold a log Raft starts from.
    fn probe_every_sync(&self, id: u64) {
        let Some(disk) = self.disk() else {
            return;
        };
        let Ok(config) = self.flags.lock().map(|f| f.clone()) else {
            return;
        };
        let (invariants, damaged, server) =
            (self.invariants.clone(), self.damaged.clone(), self.server);
        let one_in = sync_probe_one_in();
        if one_in == 0 {
            return;
        }
        let syncs = std::sync::atomic::AtomicU64::new(0);
        disk.observe_syncs(Some(Arc::new(move |sync: &SyncPoint<'_>| {
            let file = sync.file();
            // The WAL's syncs: where keel orders its own writes (the engine's are redb's
            // to order, and the release probe covers how the two meet).
            if !file.ends_with(".wal") || damaged.contains(server) {
                return;
            }
            let nth = syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !nth.is_multiple_of(one_in) {
                return;
            }
            invariants.probed(|p| p.at_sync += 1);
            if let Err(error) = log_recovers(&config, sync.crash_image()) {
                invariants.report(format!(
                    "member {id:x}: power lost in the middle of a sync of {file} would leave \
                     a Raft log that cannot start: {error}"
                ));
            }
        })));
    }

    fn disk(&self) -> Option<SimDisk> {
        self.disks
            .lock()
            .ok()
            .and_then(|d| d.get(&self.server).cloned())
    }
}

/// Every how many WAL syncs of a process one is probed: `KEEL_SIM_SYNC_PROBE_ONE_IN` (0
/// turns the probes off; default 1, every sync).
fn sync_probe_one_in() -> u64 {
    std::env::var("KEEL_SIM_SYNC_PROBE_ONE_IN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The log a restart recovers from `disk` is one Raft can start from (the engine is left
/// out: opening it at every sync would cost more than the run, and the release probe covers
/// how the two meet).
fn log_recovers(config: &ServerConfig, disk: SimDisk) -> Result<(), String> {
    let (_, recovered) =
        keel_storage::Storage::open(disk, config.storage.clone()).map_err(|e| e.to_string())?;
    if recovered.is_new {
        return Ok(());
    }
    recovered
        .into_initial_state()
        .validate()
        .map_err(|e| e.to_string())
}

/// The disk as a power loss now would leave it, on a machine of its own whose disk makes
/// no more faults (recovery's own writes must not fail for a full disk).
fn crash_image(disk: &SimDisk) -> SimDisk {
    let copy = disk.copy_as_crashed();
    copy.set_faults(Faults::none());
    copy
}

fn starts_through(config: &ServerConfig, disk: SimDisk, index: u64) -> Result<(), String> {
    match keel_net::server::recover_existing(config, disk) {
        Err(error) => Err(format!("cannot start: {error:#}")),
        Ok(None) => Err("holds no member".into()),
        Ok(Some(recovery)) if recovery.last_index < index || recovery.applied_index < index => {
            Err(format!(
                "starts with its log through {} and its store at {}",
                recovery.last_index, recovery.applied_index
            ))
        }
        Ok(Some(_)) => Ok(()),
    }
}

/// Flips a bit in the middle of the newest of two or more snapshot markers (with one only,
/// there is nothing to fall back on); names it.
fn set_aside_newest_snapshot(disk: &SimDisk) -> Option<String> {
    use keel_storage::Disk;
    let mut names: Vec<String> = disk
        .clone()
        .list()
        .ok()?
        .into_iter()
        .filter(|n| n.starts_with("snap-") && n.ends_with(".snap"))
        .collect();
    if names.len() < 2 {
        return None;
    }
    // "snap-<index>-<term>.snap" in fixed-width hex: the names sort by index.
    names.sort();
    let newest = names.pop()?;
    let length = disk.contents(&newest)?.len() as u64;
    disk.flip_bit(&newest, length / 2, 0).ok()?;
    Some(newest)
}
