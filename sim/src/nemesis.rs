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
    /// Every server crashes at once and comes back.
    CrashAll,
    /// A server's process stops (a long GC pause) and resumes.
    Pause,
    /// A server's fsyncs fail: it must stop; it is restarted with a healthy disk.
    SyncErrors,
}

pub const ALL_FAULTS: [FaultKind; 10] = [
    FaultKind::Partition,
    FaultKind::IsolateLeader,
    FaultKind::OneWayLoss,
    FaultKind::SwizzleClog,
    FaultKind::PacketLoss,
    FaultKind::Crash,
    FaultKind::CrashLeader,
    FaultKind::CrashAll,
    FaultKind::Pause,
    FaultKind::SyncErrors,
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

    pub fn calm() -> NemesisConfig {
        NemesisConfig {
            kinds: BTreeSet::new(),
            max_hold: Duration::from_secs(1),
        }
    }
}

/// One line of the fault log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    pub at: Duration,
    pub what: String,
}

/// Injects faults until `until` (simulated time since `start`), logging each.
pub async fn run(
    world: &mut World,
    config: &NemesisConfig,
    rng: &mut impl Rng,
    until: tokio::time::Instant,
    log: &mut Vec<FaultRecord>,
) {
    let start = tokio::time::Instant::now();
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
        let what = inject(world, kind, rng, hold).await;
        log.push(FaultRecord {
            at: start.elapsed(),
            what,
        });
    }
}

/// Injects one fault, holds it for `hold`, heals it; returns its description.
async fn inject(world: &mut World, kind: FaultKind, rng: &mut impl Rng, hold: Duration) -> String {
    let n = world.servers.len();
    let net = NetSim::current();
    let ids: Vec<madsim::task::NodeId> = world.servers.iter().map(|s| s.node.id()).collect();
    let names: Vec<String> = world.servers.iter().map(|s| s.name.clone()).collect();
    let name = |i: usize| names[i].clone();
    match kind {
        FaultKind::Partition => {
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, rng);
            let split = rng.gen_range(1..n);
            let (a, b) = order.split_at(split);
            for &x in a {
                for &y in b {
                    net.clog_link(ids[x], ids[y]);
                    net.clog_link(ids[y], ids[x]);
                }
            }
            tokio::time::sleep(hold).await;
            for &x in a {
                for &y in b {
                    net.unclog_link(ids[x], ids[y]);
                    net.unclog_link(ids[y], ids[x]);
                }
            }
            let names = |g: &[usize]| g.iter().map(|&i| name(i)).collect::<Vec<_>>().join(" ");
            format!("partition [{}] | [{}] for {hold:?}", names(a), names(b))
        }
        FaultKind::IsolateLeader => {
            let Some(leader) = find_leader(world).await else {
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
            format!("isolate leader {} for {hold:?}", name(leader))
        }
        FaultKind::OneWayLoss => {
            let from = rng.gen_range(0..n);
            let to = (from + rng.gen_range(1..n)) % n;
            net.clog_link(ids[from], ids[to]);
            tokio::time::sleep(hold).await;
            net.unclog_link(ids[from], ids[to]);
            format!("one-way loss {} -> {} for {hold:?}", name(from), name(to))
        }
        FaultKind::SwizzleClog => {
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
            let names: Vec<String> = order.iter().map(|&i| name(i)).collect();
            format!("swizzle-clog {} over {hold:?}", names.join(" "))
        }
        FaultKind::PacketLoss => {
            let rate = [0.01, 0.05, 0.2][rng.gen_range(0..3)];
            net.update_config(|c| c.packet_loss_rate = rate);
            tokio::time::sleep(hold).await;
            net.update_config(|c| c.packet_loss_rate = 0.0);
            format!("packet loss {rate} for {hold:?}")
        }
        FaultKind::Crash => {
            let i = rng.gen_range(0..n);
            crash_for(world, &[i], hold).await;
            format!("crash {} for {hold:?}", name(i))
        }
        FaultKind::CrashLeader => {
            let Some(leader) = find_leader(world).await else {
                return "crash leader: none".into();
            };
            crash_for(world, &[leader], hold).await;
            format!("crash leader {} for {hold:?}", name(leader))
        }
        FaultKind::CrashAll => {
            let all: Vec<usize> = (0..n).collect();
            crash_for(world, &all, hold).await;
            format!("crash all for {hold:?}")
        }
        FaultKind::Pause => {
            let i = rng.gen_range(0..n);
            let handle = madsim::runtime::Handle::current();
            handle.pause(ids[i]);
            tokio::time::sleep(hold).await;
            handle.resume(ids[i]);
            format!("pause {} for {hold:?}", name(i))
        }
        FaultKind::SyncErrors => {
            let i = rng.gen_range(0..n);
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
            format!("fsync errors on {} for {hold:?}, then reboot", name(i))
        }
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

/// The server that says it leads, asked over the simulated network from the control node.
pub async fn find_leader(world: &World) -> Option<usize> {
    let urls: Vec<String> = world.servers.iter().map(|s| s.client_url()).collect();
    world
        .control
        .spawn(async move {
            for (i, url) in urls.into_iter().enumerate() {
                let status = async {
                    let mut client = MaintenanceClient::connect(url).await.ok()?;
                    client
                        .status(pb::StatusRequest {})
                        .await
                        .ok()
                        .map(|r| r.into_inner())
                };
                let Ok(Some(status)) =
                    tokio::time::timeout(Duration::from_millis(500), status).await
                else {
                    continue;
                };
                if status.header.is_some_and(|h| h.member_id == status.leader) {
                    return Some(i);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
}
