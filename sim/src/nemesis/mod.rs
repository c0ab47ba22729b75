//! The nemesis: one task that injects faults one at a time — so they are ordered and logged —
//! holds each for a while, then heals it. Which kinds it may use is decided per seed (swarm
//! testing): some seeds are calm, some brutal.
//!
//! The faults, one file per family: `network`, `process` (crashes, pauses, clocks), `disk`,
//! `operator_faults` (what operators do to a running cluster).

mod disk;
mod network;
mod operator_faults;
mod process;

use disk::{
    inject_corrupt_disk, inject_disk_full, inject_power_loss_at_sync, inject_read_errors,
    inject_sync_errors,
};
use network::{
    inject_bridge, inject_crash_successor_of_isolated_leader, inject_isolate_leader,
    inject_one_way_loss, inject_packet_loss, inject_partition, inject_slow_network,
    inject_swizzle_clog,
};
use operator_faults::{
    inject_defragment, inject_diverge, inject_lower_quota, inject_move_member,
    inject_remove_and_add_again, inject_rollback_data_dir, inject_transfer_leader,
    inject_wipe_data_dir,
};
use process::{
    inject_clock_drift, inject_clock_leap, inject_crash, inject_crash_all, inject_crash_leader,
    inject_pause,
};

use std::collections::BTreeSet;
use std::time::Duration;

use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use madsim::net::NetSim;
use rand::Rng;

use crate::world::World;

/// The kinds of faults a run may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Servers split in two groups that cannot talk.
    Partition,
    /// The leader cut off from everyone.
    IsolateLeader,
    /// One server's messages to another are lost; the other way works.
    OneWayLoss,
    /// FoundationDB's swizzle-clog: clog servers one by one, unclog in reverse order.
    SwizzleClog,
    /// Every message has a chance to be lost, on every link.
    PacketLoss,
    /// A server crashes (losing unsynced writes) and comes back.
    Crash,
    /// The leader crashes and comes back.
    CrashLeader,
    /// The leader is cut off while clients write to it; the moment a successor commits its
    /// first entry, the successor crashes and the old leader is let back: the old leader's
    /// log, perhaps longer but of an older term, meets the survivor's shorter, newer one
    /// (§5.4.1 must elect only the newer), and a follower holding a stale suffix meets a
    /// leader probing it (§5.3).
    CrashSuccessorOfIsolatedLeader,
    /// As `CrashSuccessorOfIsolatedLeader`, and while the old leader is cut off the clients
    /// reach only it: each client's write lengthens its stale suffix, while the successor
    /// commits its own first entry with no client write behind it. The newer log is then
    /// as short, and the stale one as long, as they get: a vote that compared lengths before
    /// terms (§5.4.1) would elect the stale log and lose the committed entry. Kept out of
    /// the swarm's mix (a scenario aims it), so the swarm's seeds stay what they were.
    CrashSuccessorOfIsolatedLeaderWithClientsOnIt,
    /// Every server crashes at once and comes back.
    CrashAll,
    /// A server's process stops (a long GC pause) and resumes.
    Pause,
    /// A server's fsyncs fail: it must stop; it is restarted with a healthy disk.
    SyncErrors,
    /// A server loses power in the middle of its next fsync (the WAL's or the engine's):
    /// the writes that sync was to make durable survive, tear or vanish, and it reboots.
    /// The crash point a crash from outside never hits: a Ready's writes made, not durable.
    PowerLossAtSync,
    /// The leader is asked to hand leadership to a follower (etcd's MoveLeader).
    TransferLeader,
    /// An operator defragments a server (`etcdctl defrag`) under load: online, it must
    /// change nothing a client or a checker sees (etcd #14685). In the simulator the copy
    /// is made at once, so a crash that follows meets a copy just put in place.
    Defragment,
    /// A bit flips in a crashed server's WAL: on restart it must refuse to start, or start
    /// with correct data. Such a member needs an operator, so damage strikes one server per
    /// run (see [`damage_target`]) and the checks after healing leave it out.
    CorruptDisk,
    /// Two groups that cannot talk to each other, and one server that talks to both.
    Bridge,
    /// Every message takes 10 to 150 ms instead of 1 to 10.
    SlowNetwork,
    /// A server's clock runs up to 20% fast or slow (its timers fire that much sooner or
    /// later, its lease time moves that much faster or slower).
    ClockDrift,
    /// A server's monotonic clock leaps 1 to 60 s ahead (a suspended virtual machine): no
    /// lease may expire early for it.
    ClockLeap,
    /// A crashed server restarts on a disk that develops unreadable sectors (latent sector
    /// errors, which stay until rewritten): it must refuse to start or start with correct
    /// data, never mistake an unreadable record for a torn tail. Damage, like `CorruptDisk`.
    ReadErrors,
    /// A server's disk fills up: its writes fail with "no space" and it must stop; it is
    /// restarted with room again.
    DiskFull,
    /// An operator wipes a server's data dir and restarts it with its usual flags: it must
    /// refuse to start (or stop once it learns it lost state); the operator then replaces
    /// it (see `crate::operator`).
    WipeDataDir,
    /// A follower's data dir is put back to a copy taken while the same leader led: it
    /// must stop at the first heartbeat if it lost entries it acknowledged, and is replaced.
    RollbackDataDir,
    /// `member update` moves a server to a new peer URL and it restarts there: same member.
    MoveMember,
    /// `member remove` of a running server (it must stop), then `member add` on its URL and
    /// a fresh start: a new member.
    RemoveAndAddAgain,
    /// One server's `--quota-backend-bytes` lowered to just above what it holds and the
    /// server restarted (a flag rolled out one member at a time); the writes that go on fill
    /// it. It must raise NOSPACE for every member and apply the log as the others do; then
    /// the quota is raised again, the server restarted and the alarm disarmed.
    LowerQuota,
    /// A server's data silently differs from the others' (one overwritten write changed,
    /// checksums intact): `--experimental-initial-corrupt-check` must keep it from
    /// starting; it is then replaced.
    DivergeCaughtAtStart,
    /// The same, caught by the leader's periodic check: a CORRUPT alarm must name it and
    /// stop every write until it is replaced and the alarm disarmed.
    DivergeCaughtByLeader,
}

/// The operators' faults (see `crate::operator`); scripted scenarios use them.
pub const OPERATOR_FAULTS: [FaultKind; 4] = [
    FaultKind::WipeDataDir,
    FaultKind::RollbackDataDir,
    FaultKind::MoveMember,
    FaultKind::RemoveAndAddAgain,
];

/// The swarm's kinds: all but the operators' faults (which `swarm_with_operators` adds).
pub const ALL_FAULTS: [FaultKind; 21] = [
    FaultKind::Partition,
    FaultKind::IsolateLeader,
    FaultKind::CrashSuccessorOfIsolatedLeader,
    FaultKind::TransferLeader,
    FaultKind::Defragment,
    FaultKind::OneWayLoss,
    FaultKind::SwizzleClog,
    FaultKind::PacketLoss,
    FaultKind::Crash,
    FaultKind::CrashLeader,
    FaultKind::CrashAll,
    FaultKind::Pause,
    FaultKind::SyncErrors,
    FaultKind::PowerLossAtSync,
    FaultKind::Bridge,
    FaultKind::SlowNetwork,
    FaultKind::ClockDrift,
    FaultKind::ClockLeap,
    FaultKind::ReadErrors,
    FaultKind::CorruptDisk,
    FaultKind::DiskFull,
];

/// The fault mix of one run.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    pub kinds: BTreeSet<FaultKind>,
    /// Time between faults and how long each is held.
    pub max_hold: Duration,
}

impl NemesisConfig {
    /// Swarm testing: each kind is on with probability one half; a calm seed has none.
    pub fn swarm(rng: &mut impl Rng) -> NemesisConfig {
        let kinds = ALL_FAULTS
            .into_iter()
            .filter(|_| rng.gen_bool(0.5))
            .collect();
        NemesisConfig {
            kinds,
            max_hold: Duration::from_secs(rng.gen_range(1..6)),
        }
    }

    /// Swarm testing with the operators' faults as well (wiped and rolled-back data dirs,
    /// moved and re-added members), each on with probability one half like the others.
    pub fn swarm_with_operators(rng: &mut impl Rng) -> NemesisConfig {
        let mut kinds: BTreeSet<FaultKind> = ALL_FAULTS
            .into_iter()
            .chain(OPERATOR_FAULTS)
            .filter(|_| rng.gen_bool(0.5))
            .collect();
        let max_hold = Duration::from_secs(rng.gen_range(1..6));
        // Drawn after the others, which stay what each seed drew before it existed.
        if rng.gen_bool(0.5) {
            kinds.insert(FaultKind::LowerQuota);
        }
        NemesisConfig { kinds, max_hold }
    }

    pub fn calm() -> NemesisConfig {
        NemesisConfig {
            kinds: BTreeSet::new(),
            max_hold: Duration::from_secs(1),
        }
    }
}

/// Whom a scripted fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Chosen at random (from the run's seed).
    Any,
    /// The server that leads when the fault starts.
    Leader,
    /// A server that does not lead when the fault starts.
    Follower,
    Server(usize),
}

/// One step of a scripted schedule: wait `after`, inject `fault` on `target`, hold it for
/// `hold`, heal it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub after: Duration,
    pub fault: FaultKind,
    pub target: Target,
    pub hold: Duration,
}

impl Step {
    pub fn new(after_ms: u64, fault: FaultKind, target: Target, hold_ms: u64) -> Step {
        Step {
            after: Duration::from_millis(after_ms),
            fault,
            target,
            hold: Duration::from_millis(hold_ms),
        }
    }
}

/// What the nemesis does during the safety phase.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Faults drawn at random from a mix (swarm testing).
    Random(NemesisConfig),
    /// A fixed sequence (the named scenarios).
    Script(Vec<Step>),
}

/// One line of the fault log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// When the fault began (simulated time since the nemesis started).
    pub at: Duration,
    pub what: String,
}

/// Runs `schedule` until `until` (a script runs to its end, however long), logging each
/// fault with its simulated time since the nemesis started.
pub async fn run(
    world: &mut World,
    schedule: &Schedule,
    rng: &mut impl Rng,
    until: tokio::time::Instant,
    log: &mut Vec<FaultRecord>,
) {
    let start = tokio::time::Instant::now();
    match schedule {
        Schedule::Random(config) => run_random(world, config, rng, until, start, log).await,
        Schedule::Script(steps) => {
            for step in steps {
                tokio::time::sleep(step.after).await;
                let at = start.elapsed();
                let what = inject(world, step.fault, step.target, rng, step.hold).await;
                log.push(FaultRecord { at, what });
            }
        }
    }
}

async fn run_random(
    world: &mut World,
    config: &NemesisConfig,
    rng: &mut impl Rng,
    until: tokio::time::Instant,
    start: tokio::time::Instant,
    log: &mut Vec<FaultRecord>,
) {
    let kinds: Vec<FaultKind> = config.kinds.iter().copied().collect();
    let hold_ms = u64::try_from(config.max_hold.as_millis())
        .unwrap_or(1000)
        .max(200);
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..hold_ms))).await;
        if kinds.is_empty() || tokio::time::Instant::now() >= until {
            continue;
        }
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let hold = Duration::from_millis(rng.gen_range(100..hold_ms));
        let at = start.elapsed();
        let what = inject(world, kind, Target::Any, rng, hold).await;
        log.push(FaultRecord { at, what });
    }
}

async fn resolve(world: &World, target: Target, rng: &mut impl Rng) -> Option<usize> {
    let n = world.servers.len();
    match target {
        Target::Any => Some(rng.gen_range(0..n)),
        Target::Server(i) => Some(i % n),
        Target::Leader => find_leader(world).await,
        Target::Follower => {
            let leader = find_leader(world).await;
            let followers: Vec<usize> = (0..n).filter(|&i| Some(i) != leader).collect();
            Some(followers[rng.gen_range(0..followers.len())])
        }
    }
}

/// Injects one fault, holds it for `hold`, heals it; returns its description.
async fn inject(
    world: &mut World,
    kind: FaultKind,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let servers = Servers::of(world);
    match kind {
        FaultKind::Partition => inject_partition(&servers, rng, hold).await,
        FaultKind::CrashSuccessorOfIsolatedLeader => {
            inject_crash_successor_of_isolated_leader(world, &servers, rng, hold, false).await
        }
        FaultKind::CrashSuccessorOfIsolatedLeaderWithClientsOnIt => {
            inject_crash_successor_of_isolated_leader(world, &servers, rng, hold, true).await
        }
        FaultKind::IsolateLeader => inject_isolate_leader(world, &servers, target, rng, hold).await,
        FaultKind::OneWayLoss => inject_one_way_loss(world, &servers, target, rng, hold).await,
        FaultKind::SwizzleClog => inject_swizzle_clog(&servers, rng, hold).await,
        FaultKind::PacketLoss => inject_packet_loss(&servers, rng, hold).await,
        FaultKind::Crash => inject_crash(world, &servers, target, rng, hold).await,
        FaultKind::CrashLeader => inject_crash_leader(world, &servers, rng, hold).await,
        FaultKind::CrashAll => inject_crash_all(world, &servers, hold).await,
        FaultKind::Pause => inject_pause(world, &servers, target, rng, hold).await,
        FaultKind::TransferLeader => inject_transfer_leader(world, &servers, rng, hold).await,
        FaultKind::Defragment => inject_defragment(world, &servers, target, rng, hold).await,
        FaultKind::CorruptDisk => inject_corrupt_disk(world, &servers, target, rng, hold).await,
        FaultKind::Bridge => inject_bridge(&servers, rng, hold).await,
        FaultKind::SlowNetwork => inject_slow_network(&servers, hold).await,
        FaultKind::ClockDrift => inject_clock_drift(world, &servers, target, rng, hold).await,
        FaultKind::ClockLeap => inject_clock_leap(world, &servers, target, rng, hold).await,
        FaultKind::ReadErrors => inject_read_errors(world, &servers, target, rng, hold).await,
        FaultKind::DiskFull => inject_disk_full(world, &servers, target, rng, hold).await,
        FaultKind::WipeDataDir => inject_wipe_data_dir(world, target, rng).await,
        FaultKind::RollbackDataDir => inject_rollback_data_dir(world, target, rng, hold).await,
        FaultKind::MoveMember => inject_move_member(world, target, rng).await,
        FaultKind::RemoveAndAddAgain => inject_remove_and_add_again(world, target, rng).await,
        FaultKind::LowerQuota => inject_lower_quota(world, target, rng, hold).await,
        FaultKind::DivergeCaughtAtStart | FaultKind::DivergeCaughtByLeader => {
            inject_diverge(world, kind, target, rng, hold).await
        }
        FaultKind::PowerLossAtSync => {
            inject_power_loss_at_sync(world, &servers, target, rng, hold).await
        }
        FaultKind::SyncErrors => inject_sync_errors(world, &servers, target, rng, hold).await,
    }
}

/// What every fault's injection reads about the servers: their simulated nodes, names, and
/// the network between them.
struct Servers {
    net: std::sync::Arc<NetSim>,
    ids: Vec<madsim::task::NodeId>,
    names: Vec<String>,
}

impl Servers {
    fn of(world: &World) -> Servers {
        Servers {
            net: NetSim::current(),
            ids: world.servers.iter().map(|s| s.node.id()).collect(),
            names: world.servers.iter().map(|s| s.name.clone()).collect(),
        }
    }

    fn name(&self, i: usize) -> String {
        self.names[i].clone()
    }
}

/// The server a damage fault strikes: the one already damaged if there is one, so that a
/// majority of disks always stays intact (what durability may assume).
async fn damage_target(world: &World, target: Target, rng: &mut impl Rng) -> Option<usize> {
    match world.damaged.all().first().copied() {
        Some(damaged) => Some(damaged),
        None => resolve(world, target, rng).await,
    }
}

async fn crash_for(world: &mut World, servers: &[usize], hold: Duration) {
    for &i in servers {
        world.crash(i);
    }
    tokio::time::sleep(hold).await;
    for &i in servers {
        world.restart(i);
    }
}

fn shuffle(items: &mut [usize], rng: &mut impl Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.gen_range(0..=i));
    }
}

/// The server that says it leads, with its term, asked from the control node.
pub async fn leader_and_term(world: &World) -> Option<(usize, u64)> {
    let urls: Vec<String> = world.servers.iter().map(|s| s.client_url()).collect();
    world
        .control
        .spawn(async move {
            for (i, url) in urls.into_iter().enumerate() {
                let Some(status) = status_of(url).await else {
                    continue;
                };
                if status.header.is_some_and(|h| h.member_id == status.leader) {
                    return Some((i, status.raft_term));
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
}

/// Server `index`'s Raft term, as it answers a status request (`None` if it does not).
pub async fn member_term(world: &World, index: usize) -> Option<u64> {
    let url = world.servers[index].client_url();
    let status = world.control.spawn(status_of(url)).await.ok().flatten();
    status.map(|s| s.raft_term)
}

/// The status `url`'s member answers within 500 ms, asked from the node this runs on.
async fn status_of(url: String) -> Option<pb::StatusResponse> {
    let status = async {
        let mut client = MaintenanceClient::connect(url).await.ok()?;
        let status = client.status(pb::StatusRequest {}).await.ok()?;
        Some(status.into_inner())
    };
    tokio::time::timeout(Duration::from_millis(500), status)
        .await
        .ok()
        .flatten()
}

/// The server that says it leads, asked over the simulated network from the control node.
pub async fn find_leader(world: &World) -> Option<usize> {
    leader_and_term(world).await.map(|(leader, _)| leader)
}
