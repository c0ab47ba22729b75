//! The nemesis: one task that injects faults one at a time — so they are ordered and logged —
//! holds each for a while, then heals it. Which kinds it may use is decided per seed (swarm
//! testing): some seeds are calm, some brutal.

use std::collections::BTreeSet;
use std::time::Duration;

use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_storage::Faults;
use madsim::net::NetSim;
use rand::Rng;

use crate::world::{World, NORMAL_LATENCY};

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
        let kinds = ALL_FAULTS
            .into_iter()
            .chain(OPERATOR_FAULTS)
            .filter(|_| rng.gen_bool(0.5))
            .collect();
        NemesisConfig {
            kinds,
            max_hold: Duration::from_secs(rng.gen_range(1..6)),
        }
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

/// The server `target` names now (`None`: it asked for the leader and there is none).
/// One Maintenance call from the control node to `url`, within `timeout`: whether it was
/// answered OK.
async fn maintenance_call<F, Fut, T>(world: &World, url: String, timeout: Duration, call: F) -> bool
where
    F: FnOnce(MaintenanceClient<tonic::transport::Channel>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, tonic::Status>> + Send,
    T: Send + 'static,
{
    world
        .control
        .spawn(async move {
            let answered = async { call(MaintenanceClient::connect(url).await.ok()?).await.ok() };
            tokio::time::timeout(timeout, answered)
                .await
                .ok()
                .flatten()
                .is_some()
        })
        .await
        .unwrap_or(false)
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

async fn inject_partition(servers: &Servers, rng: &mut impl Rng, hold: Duration) -> String {
    let n = servers.ids.len();
    let net = &servers.net;
    let ids = &servers.ids;
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, rng);
    let split = rng.gen_range(1..n);
    let (a, b) = order.split_at(split);
    cut_between(net, ids, a, b, hold).await;
    let names = |g: &[usize]| {
        g.iter()
            .map(|&i| servers.name(i))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!("partition [{}] | [{}] for {hold:?}", names(a), names(b))
}

async fn inject_crash_successor_of_isolated_leader(
    world: &mut World,
    servers: &Servers,
    rng: &mut impl Rng,
    hold: Duration,
    clients_on_old_leader: bool,
) -> String {
    let n = servers.ids.len();
    let net = &servers.net;
    let ids = &servers.ids;
    let Some(old) = resolve(world, Target::Leader, rng).await else {
        return "crash successor: no leader".into();
    };
    let mut links: Vec<(madsim::task::NodeId, madsim::task::NodeId)> = (0..n)
        .filter(|&i| i != old)
        .flat_map(|i| [(ids[old], ids[i]), (ids[i], ids[old])])
        .collect();
    if clients_on_old_leader {
        let others: Vec<_> = (0..n).filter(|&i| i != old).map(|i| ids[i]).collect();
        links.extend(world.client_links_to(&others));
    }
    for &(from, to) in &links {
        net.clog_link(from, to);
    }
    let successor = successor_committing(world, old, hold).await;
    if let Some(s) = successor {
        world.crash(s);
    }
    // What the crashed successor had sent the old leader is lost with it: the simulated
    // network delivers a clogged link's data once it opens, and the successor's first
    // Append would repair the stale log before it could stand for election. Its links to
    // the old leader open only once it is back, when that data is of a term long past.
    let successor_link = |&(from, to): &(madsim::task::NodeId, madsim::task::NodeId)| {
        successor
            .is_some_and(|s| (from, to) == (ids[old], ids[s]) || (from, to) == (ids[s], ids[old]))
    };
    let (held, opened): (Vec<_>, Vec<_>) = links.iter().partition(|l| successor_link(l));
    for &(from, to) in opened {
        net.unclog_link(from, to);
    }
    tokio::time::sleep(hold).await;
    let what = match successor {
        Some(s) => {
            world.restart(s);
            format!("crashed successor {}", servers.name(s))
        }
        None => "no successor committed".to_string(),
    };
    for &(from, to) in held {
        net.unclog_link(from, to);
    }
    let clients = if clients_on_old_leader {
        " (clients reaching only it)"
    } else {
        ""
    };
    format!(
        "isolate leader {}{clients} until a successor commits: {what}",
        servers.name(old)
    )
}

async fn inject_isolate_leader(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let net = &servers.net;
    let ids = &servers.ids;
    let target = if target == Target::Any {
        Target::Leader
    } else {
        target
    };
    let Some(leader) = resolve(world, target, rng).await else {
        return "isolate leader: none".into();
    };
    for (i, &id) in ids.iter().enumerate() {
        if i != leader {
            net.clog_link(ids[leader], id);
            net.clog_link(id, ids[leader]);
        }
    }
    tokio::time::sleep(hold).await;
    for (i, &id) in ids.iter().enumerate() {
        if i != leader {
            net.unclog_link(ids[leader], id);
            net.unclog_link(id, ids[leader]);
        }
    }
    format!("isolate leader {} for {hold:?}", servers.name(leader))
}

async fn inject_one_way_loss(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let n = servers.ids.len();
    let net = &servers.net;
    let ids = &servers.ids;
    let Some(from) = resolve(world, target, rng).await else {
        return "one-way loss: no such server".into();
    };
    let to = (from + rng.gen_range(1..n)) % n;
    net.clog_link(ids[from], ids[to]);
    tokio::time::sleep(hold).await;
    net.unclog_link(ids[from], ids[to]);
    format!(
        "one-way loss {} -> {} for {hold:?}",
        servers.name(from),
        servers.name(to)
    )
}

async fn inject_swizzle_clog(servers: &Servers, rng: &mut impl Rng, hold: Duration) -> String {
    let n = servers.ids.len();
    let net = &servers.net;
    let ids = &servers.ids;
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, rng);
    let step = hold / (2 * n as u32).max(1);
    for &i in &order {
        net.clog_node(ids[i]);
        tokio::time::sleep(step).await;
    }
    for &i in order.iter().rev() {
        net.unclog_node(ids[i]);
        tokio::time::sleep(step).await;
    }
    let names: Vec<String> = order.iter().map(|&i| servers.name(i)).collect();
    format!("swizzle-clog {} over {hold:?}", names.join(" "))
}

async fn inject_packet_loss(servers: &Servers, rng: &mut impl Rng, hold: Duration) -> String {
    let net = &servers.net;
    let rate = [0.01, 0.05, 0.2][rng.gen_range(0..3)];
    net.update_config(|c| c.packet_loss_rate = rate);
    tokio::time::sleep(hold).await;
    net.update_config(|c| c.packet_loss_rate = 0.0);
    format!("packet loss {rate} for {hold:?}")
}

async fn inject_crash(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "crash: no such server".into();
    };
    crash_for(world, &[i], hold).await;
    format!("crash {} for {hold:?}", servers.name(i))
}

async fn inject_crash_leader(
    world: &mut World,
    servers: &Servers,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(leader) = resolve(world, Target::Leader, rng).await else {
        return "crash leader: none".into();
    };
    crash_for(world, &[leader], hold).await;
    format!("crash leader {} for {hold:?}", servers.name(leader))
}

async fn inject_crash_all(world: &mut World, servers: &Servers, hold: Duration) -> String {
    let n = servers.ids.len();
    let all: Vec<usize> = (0..n).collect();
    crash_for(world, &all, hold).await;
    format!("crash all for {hold:?}")
}

async fn inject_pause(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let ids = &servers.ids;
    let Some(i) = resolve(world, target, rng).await else {
        return "pause: no such server".into();
    };
    let handle = madsim::runtime::Handle::current();
    handle.pause(ids[i]);
    tokio::time::sleep(hold).await;
    handle.resume(ids[i]);
    format!("pause {} for {hold:?}", servers.name(i))
}

async fn inject_transfer_leader(
    world: &mut World,
    servers: &Servers,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let (Some(leader), Some(to)) = (
        resolve(world, Target::Leader, rng).await,
        resolve(world, Target::Follower, rng).await,
    ) else {
        return "transfer leader: no leader".into();
    };
    let (url, member) = (
        world.servers[leader].client_url(),
        world
            .member_id(to)
            .unwrap_or(world.servers[to].config.member_id),
    );
    let request = pb::MoveLeaderRequest { target_id: member };
    let moved = maintenance_call(
        world,
        url,
        Duration::from_secs(5),
        move |mut client| async move { client.move_leader(request).await },
    )
    .await;
    tokio::time::sleep(hold).await;
    format!(
        "transfer leader {} -> {} ({})",
        servers.name(leader),
        servers.name(to),
        if moved { "done" } else { "failed" }
    )
}

async fn inject_defragment(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "defragment: no such server".into();
    };
    let url = world.servers[i].client_url();
    let done = maintenance_call(
        world,
        url,
        Duration::from_secs(10),
        |mut client| async move { client.defragment(pb::DefragmentRequest {}).await },
    )
    .await;
    tokio::time::sleep(hold).await;
    let outcome = if done { "done" } else { "failed" };
    format!("defragment {} ({outcome})", servers.name(i))
}

async fn inject_corrupt_disk(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = damage_target(world, target, rng).await else {
        return "corrupt disk: no such server".into();
    };
    world.crash(i);
    expect_durable_log_recovered(world, i);
    let flipped = flip_a_wal_bit(world, i, rng);
    tokio::time::sleep(hold).await;
    world.damaged.insert(i);
    world.restart(i);
    format!(
        "bit flip in {}'s WAL ({flipped}), then reboot",
        servers.name(i)
    )
}

async fn inject_bridge(servers: &Servers, rng: &mut impl Rng, hold: Duration) -> String {
    let n = servers.ids.len();
    let net = &servers.net;
    let ids = &servers.ids;
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, rng);
    let (bridge, rest) = order.split_at(1);
    let (a, b) = rest.split_at(rest.len() / 2);
    cut_between(net, ids, a, b, hold).await;
    let names = |g: &[usize]| {
        g.iter()
            .map(|&i| servers.name(i))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "bridge [{}] - {} - [{}] for {hold:?}",
        names(a),
        servers.name(bridge[0]),
        names(b)
    )
}

async fn inject_slow_network(servers: &Servers, hold: Duration) -> String {
    let net = &servers.net;
    net.update_config(|c| {
        c.send_latency = Duration::from_millis(10)..Duration::from_millis(150);
    });
    tokio::time::sleep(hold).await;
    net.update_config(|c| c.send_latency = NORMAL_LATENCY);
    format!("slow network for {hold:?}")
}

async fn inject_clock_drift(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "clock drift: no such server".into();
    };
    let rate_ppm = rng.gen_range(-200_000..=200_000);
    world.servers[i].clock.set_rate_ppm(rate_ppm);
    tokio::time::sleep(hold).await;
    world.servers[i].clock.set_rate_ppm(0);
    format!(
        "clock of {} runs {rate_ppm:+} ppm for {hold:?}",
        servers.name(i)
    )
}

async fn inject_clock_leap(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let target = if target == Target::Any && rng.gen_bool(0.5) {
        Target::Leader
    } else {
        target
    };
    let Some(i) = resolve(world, target, rng).await else {
        return "clock leap: no such server".into();
    };
    let leap = Duration::from_millis(rng.gen_range(1_000..60_000));
    world.servers[i].clock.leap(leap);
    tokio::time::sleep(hold).await;
    format!("clock of {} leaps {leap:?}", servers.name(i))
}

async fn inject_read_errors(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = damage_target(world, target, rng).await else {
        return "read errors: no such server".into();
    };
    world.crash(i);
    world.damaged.insert(i);
    world.set_disk_faults(
        i,
        Faults {
            read_error_probability: 0.05,
            ..world.config.faults
        },
    );
    world.restart(i);
    tokio::time::sleep(hold).await;
    // New reads succeed again; the sectors that failed stay bad.
    world.set_disk_faults(i, world.config.faults);
    format!("read errors on {} for {hold:?}", servers.name(i))
}

async fn inject_disk_full(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "disk full: no such server".into();
    };
    let used = world.disk(i).map_or(0, |d| d.used_bytes());
    let room = rng.gen_range(0..2 * 1024 * 1024);
    world.set_disk_faults(
        i,
        Faults {
            quota_bytes: Some(used + room),
            ..world.config.faults
        },
    );
    tokio::time::sleep(hold).await;
    // A server that hit the quota has stopped; reboot it with room again.
    world.crash(i);
    world.set_disk_faults(i, world.config.faults);
    world.restart(i);
    format!(
        "disk of {} full after {room} more bytes for {hold:?}, then reboot",
        servers.name(i)
    )
}

async fn inject_wipe_data_dir(world: &mut World, target: Target, rng: &mut impl Rng) -> String {
    // A wiped member lost its state: a damage fault, kept to one member like the others.
    let Some(i) = damage_target(world, target, rng).await else {
        return "wipe data dir: no such server".into();
    };
    let log = world.operator_log.clone();
    crate::operator::wipe_data_dir(world, i, &log).await
}

async fn inject_rollback_data_dir(
    world: &mut World,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let target = if target == Target::Any {
        Target::Follower
    } else {
        target
    };
    let Some(i) = resolve(world, target, rng).await else {
        return "roll back data dir: no such server".into();
    };
    if let Some(&damaged) = world.damaged.all().first() {
        // A rolled-back member lost state it acknowledged, as a damaged one did: two would
        // leave no intact majority. And a damaged disk may rightly keep its own member
        // from starting, whatever the copy holds.
        return format!(
            "roll back {}'s data dir: skipped, {}'s disk is damaged",
            world.servers[i].name, world.servers[damaged].name
        );
    }
    let log = world.operator_log.clone();
    crate::operator::rollback_data_dir(world, i, hold, &log).await
}

async fn inject_move_member(world: &mut World, target: Target, rng: &mut impl Rng) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "move member: no such server".into();
    };
    if world.damaged.contains(i) {
        // A move keeps the data dir, which may rightly keep it from starting.
        return format!(
            "move member: skipped, {}'s disk is damaged",
            world.servers[i].name
        );
    }
    let log = world.operator_log.clone();
    crate::operator::move_member(world, i, &log).await
}

async fn inject_remove_and_add_again(
    world: &mut World,
    target: Target,
    rng: &mut impl Rng,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "remove and add again: no such server".into();
    };
    let log = world.operator_log.clone();
    crate::operator::remove_and_add_again(world, i, &log).await
}

async fn inject_diverge(
    world: &mut World,
    kind: FaultKind,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = damage_target(world, target, rng).await else {
        return "diverge: no such server".into();
    };
    let check = if kind == FaultKind::DivergeCaughtAtStart {
        crate::operator::DivergenceCheck::AtStart
    } else {
        crate::operator::DivergenceCheck::Periodic { within: hold }
    };
    let log = world.operator_log.clone();
    crate::operator::diverge(world, i, check, &log).await
}

async fn inject_power_loss_at_sync(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "power loss: no such server".into();
    };
    let after_syncs = rng.gen_range(0..4);
    let outcome = lose_power_at_sync(world, i, after_syncs, hold).await;
    tokio::time::sleep(hold).await;
    world.restart(i);
    format!(
        "power loss at {}'s fsync after {after_syncs} more ({outcome}), then reboot",
        servers.name(i)
    )
}

async fn inject_sync_errors(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "fsync errors: no such server".into();
    };
    world.set_disk_faults(
        i,
        Faults {
            sync_error_probability: 0.5,
            ..world.config.faults
        },
    );
    tokio::time::sleep(hold).await;
    // A node whose fsync failed has stopped; reboot it on a disk that works again.
    world.crash(i);
    world.set_disk_faults(i, world.config.faults);
    world.restart(i);
    format!(
        "fsync errors on {} for {hold:?}, then reboot",
        servers.name(i)
    )
}

/// Arms the power loss at server `server`'s fsync after `after_syncs` more and waits up to
/// `within` for it; the server is down afterwards either way (crashed from outside if no
/// such sync came).
async fn lose_power_at_sync(
    world: &mut World,
    server: usize,
    after_syncs: u64,
    within: Duration,
) -> &'static str {
    let Some(disk) = world.disk(server) else {
        return "no disk";
    };
    let before = disk.stats().power_losses_at_sync;
    disk.lose_power_at_sync(Some(after_syncs));
    let deadline = tokio::time::Instant::now() + within;
    let fired = loop {
        if disk.stats().power_losses_at_sync > before {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    disk.lose_power_at_sync(None);
    world.crash(server);
    if fired {
        "during an fsync"
    } else {
        "no fsync came: crashed"
    }
}

/// Waits up to `within` for a leader other than server `old` to commit an entry of its own
/// term, in a term after any seen so far; its server index.
async fn successor_committing(world: &World, old: usize, within: Duration) -> Option<usize> {
    let old_id = world.servers[old].config.member_id;
    let seen_term = world.invariants.committing_leader().map_or(0, |(_, t)| t);
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Some((id, term)) = world.invariants.committing_leader() {
            if term > seen_term && id != old_id {
                return world.servers.iter().position(|s| s.config.member_id == id);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// The server a damage fault strikes: the one already damaged if there is one, so that a
/// majority of disks always stays intact (what durability may assume).
async fn damage_target(world: &World, target: Target, rng: &mut impl Rng) -> Option<usize> {
    match world.damaged.all().first().copied() {
        Some(damaged) => Some(damaged),
        None => resolve(world, target, rng).await,
    }
}

/// Tells the invariants how far the crashed server's WAL reaches before it is damaged: what
/// recovery finds on an undamaged copy of its disk.
fn expect_durable_log_recovered(world: &World, server: usize) {
    let Some(disk) = world.disk(server) else {
        return;
    };
    let options = keel_storage::StorageOptions {
        segment_size_bytes: world.config.segment_size_bytes,
        ..keel_storage::StorageOptions::default()
    };
    let Ok((_, recovered)) = keel_storage::Storage::open(disk.copy_as_crashed(), options) else {
        return;
    };
    let Some(identity) = recovered.identity else {
        return;
    };
    let snapshot_index = recovered.snapshot.as_ref().map_or(0, |s| s.meta.index);
    let last_index = recovered.entries.last().map_or(snapshot_index, |e| e.index);
    world
        .invariants
        .expect_recovery(identity.member_id, last_index);
}

/// Flips one bit in synced WAL data that a crash cannot have torn: inside a record that a
/// later complete record follows, in the newest segment (where corruption could be taken
/// for a torn tail) or the largest one; says where.
fn flip_a_wal_bit(world: &World, server: usize, rng: &mut impl Rng) -> String {
    use keel_storage::Disk;
    let Some(mut disk) = world.disk(server) else {
        return "no disk".into();
    };
    let Ok(names) = disk.list() else {
        return "unlistable disk".into();
    };
    let segments: Vec<(usize, String)> = names
        .iter()
        .filter(|n| n.ends_with(".wal"))
        .filter_map(|n| disk.contents(n).map(|c| (used_bytes(&c), n.clone())))
        .collect();
    let newest = segments.iter().max_by(|a, b| a.1.cmp(&b.1));
    let largest = segments.iter().max();
    let chosen = if rng.gen_bool(0.5) { newest } else { largest };
    let Some((used, name)) = chosen.filter(|(used, _)| *used > 64).cloned() else {
        return "no WAL data".into();
    };
    let starts = disk
        .contents(&name)
        .map(|c| keel_storage::record_starts(&c))
        .unwrap_or_default();
    let offset = if starts.len() >= 2 {
        // Half the time one of the last few records: written in the segment's last sync,
        // no later record proves they were synced, so only their checksum tells corruption
        // from a torn write.
        let last = starts.len() - 2;
        let first = if rng.gen_bool(0.5) {
            last.saturating_sub(8)
        } else {
            0
        };
        let record = rng.gen_range(first..=last);
        rng.gen_range(starts[record]..starts[record + 1]) as u64
    } else {
        rng.gen_range(0..used / 2) as u64
    };
    let bit = rng.gen_range(0..8u8);
    match disk.flip_bit(&name, offset, bit) {
        Ok(()) => format!("{name} byte {offset} bit {bit}"),
        Err(error) => format!("flip failed: {error}"),
    }
}

/// Bytes up to the last non-zero one (segments are preallocated with zeros).
fn used_bytes(contents: &[u8]) -> usize {
    contents.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
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

/// No message passes between a server of `a` and one of `b` for `hold`.
async fn cut_between(
    net: &NetSim,
    ids: &[madsim::task::NodeId],
    a: &[usize],
    b: &[usize],
    hold: Duration,
) {
    let pairs = || {
        a.iter()
            .flat_map(|&x| b.iter().map(move |&y| (ids[x], ids[y])))
    };
    for (x, y) in pairs() {
        net.clog_link(x, y);
        net.clog_link(y, x);
    }
    tokio::time::sleep(hold).await;
    for (x, y) in pairs() {
        net.unclog_link(x, y);
        net.unclog_link(y, x);
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
