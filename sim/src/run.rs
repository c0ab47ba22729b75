//! One simulation run, from one seed: start the world, run clients and watchers while the
//! nemesis injects faults (the safety phase), heal everything and demand that the cluster
//! recovers and serves (the liveness phase), read back every key and every member's
//! `HashKV`, then judge the recorded history with every checker.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::kv_client::KvClient;
use keel_net::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_storage::Faults;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{check_all, CheckOptions, Report, Violation};
use crate::client::{key_value, Endpoint, Recorder, SimClient};
use crate::history::{
    ClientId, FinalRead, History, MemberHash, MemberRevision, Outcome, Request, Response,
};
use crate::nemesis::{self, FaultRecord, NemesisConfig};
use crate::watcher::watch_loop;
use crate::workload::{prefix_end, Workload, WorkloadConfig, KEY_PREFIX};
use crate::world::{World, WorldConfig, CLIENT_TIMEOUT};

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    pub servers: usize,
    pub clients: usize,
    pub watchers: usize,
    /// How long faults are injected.
    pub safety: Duration,
    /// After healing, how long the cluster has to serve again.
    pub recovery: Duration,
    pub nemesis: NemesisConfig,
    pub workload: WorkloadConfig,
    /// What a crash does to unsynced writes (lost, torn).
    pub disk_faults: Faults,
}

impl RunConfig {
    /// Everything decided by the seed (swarm testing: the fault mix too).
    pub fn from_seed(seed: u64) -> RunConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_656c_7369_6d00);
        RunConfig {
            seed,
            servers: if rng.gen_bool(0.7) { 3 } else { 5 },
            clients: rng.gen_range(2..6),
            watchers: rng.gen_range(0..3),
            safety: Duration::from_secs(rng.gen_range(5..15)),
            recovery: Duration::from_secs(30),
            nemesis: NemesisConfig::swarm(&mut rng),
            workload: WorkloadConfig::default(),
            disk_faults: if rng.gen_bool(0.5) {
                Faults::crashes()
            } else {
                Faults::none()
            },
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunReport {
    pub config: RunConfig,
    pub history: History,
    pub faults: Vec<FaultRecord>,
    /// Ok, or why the cluster did not recover in time.
    pub liveness: Result<(), String>,
    pub check: Result<Report, Violation>,
    /// A hash of everything recorded: equal for equal seeds.
    pub trace_hash: u64,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.liveness.is_ok() && self.check.is_ok()
    }

    /// What a failing run prints: the seed, the fault schedule, the checker's verdict, and
    /// the command that replays it.
    pub fn failure_message(&self, test: &str) -> String {
        let mut out = format!("simulation failed, seed {}\n", self.config.seed);
        out.push_str(&format!(
            "  {} servers, {} clients, {} watchers, faults {:?}\n",
            self.config.servers,
            self.config.clients,
            self.config.watchers,
            self.config.nemesis.kinds
        ));
        for fault in &self.faults {
            out.push_str(&format!("  at {:?}: {}\n", fault.at, fault.what));
        }
        if let Err(why) = &self.liveness {
            out.push_str(&format!("liveness: {why}\n"));
        }
        if let Err(violation) = &self.check {
            out.push_str(&format!("{violation}\n"));
        }
        out.push_str(&format!(
            "replay: RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo run -p keel-sim --release -- replay --seed {}\n\
             or:     KEEL_SIM_SEED={} RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo test -p keel-sim --test simulation {test}\n",
            self.config.seed, self.config.seed
        ));
        out
    }
}

/// Runs one simulation (inside a madsim runtime seeded with `config.seed`).
pub async fn run(config: RunConfig) -> RunReport {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut world = World::start(WorldConfig {
        faults: config.disk_faults,
        ..WorldConfig::new(config.servers, config.seed)
    });
    let endpoints: Vec<Endpoint> = world
        .servers
        .iter()
        .map(|s| Endpoint {
            member: s.config.member_id,
            url: s.client_url(),
        })
        .collect();
    let recorder = Recorder::new();
    let mut liveness = wait_until_serving(&world, &endpoints, config.recovery).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..config.clients as ClientId {
        let node = world.client_node(&format!("client{client}"));
        let task = client_loop(
            client,
            endpoints.clone(),
            recorder.clone(),
            stop.clone(),
            config.workload,
            ChaCha8Rng::seed_from_u64(rng.gen()),
        );
        tasks.push(node.spawn(task));
    }
    for watcher in 0..config.watchers as ClientId {
        let node = world.client_node(&format!("watcher{watcher}"));
        let task = watch_loop(
            1000 + watcher,
            endpoints.clone(),
            recorder.clone(),
            stop.clone(),
            ChaCha8Rng::seed_from_u64(rng.gen()),
        );
        tasks.push(node.spawn(task));
    }
    let mut faults = Vec::new();
    let safety_end = tokio::time::Instant::now() + config.safety;
    nemesis::run(
        &mut world,
        &config.nemesis,
        &mut rng,
        safety_end,
        &mut faults,
    )
    .await;
    world.heal();
    if liveness.is_ok() {
        liveness = wait_until_serving(&world, &endpoints, config.recovery).await;
    }
    // Liveness: with everything healed, clients keep going a while and must succeed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    if liveness.is_ok() {
        liveness = final_reads(&world, &endpoints, &recorder, config.recovery).await;
    }
    let history = recorder.take();
    let check = check_all(&history, &CheckOptions::default());
    let trace_hash = trace_hash(&history, &faults);
    RunReport {
        config,
        history,
        faults,
        liveness,
        check,
        trace_hash,
    }
}

async fn client_loop(
    id: ClientId,
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    workload: WorkloadConfig,
    mut rng: ChaCha8Rng,
) {
    let mut client = SimClient::new(id, endpoints, recorder.clone(), CLIENT_TIMEOUT);
    let mut workload = Workload::new(id, workload);
    while !stop.load(Ordering::Relaxed) {
        let request = workload.next(&mut rng);
        let server = rng.gen_range(0..client.endpoints().len());
        let outcome = client.execute(server, request.clone()).await;
        if let (Request::LeaseGrant { .. }, Outcome::Ok(Response::LeaseGrant { id, .. })) =
            (&request, &outcome)
        {
            // The lease may expire: its expiry is a revoke nobody sees complete.
            let time = recorder.now();
            recorder.with(|h| h.may_expire(*id, time));
        }
        workload.observe(&request, &outcome);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
    }
}

/// Waits until every server answers a linearizable read, or `within` passes.
async fn wait_until_serving(
    world: &World,
    endpoints: &[Endpoint],
    within: Duration,
) -> Result<(), String> {
    let endpoints = endpoints.to_vec();
    let probe = world.control.spawn(async move {
        let deadline = tokio::time::Instant::now() + within;
        for endpoint in &endpoints {
            loop {
                if range(&endpoint.url, false).await.is_ok() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "{} did not serve a linearizable read within {within:?}",
                        endpoint.url
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    });
    probe
        .await
        .unwrap_or_else(|e| Err(format!("probe task failed: {e}")))
}

async fn range(url: &str, serializable: bool) -> Result<pb::RangeResponse, String> {
    let attempt = async {
        let mut kv = KvClient::connect(url.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let request = pb::RangeRequest {
            key: Bytes::from(KEY_PREFIX),
            range_end: prefix_end(),
            serializable,
            ..Default::default()
        };
        kv.range(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Every member converges: they serve the same revision, and their `HashKV` there agree.
/// Records the read-back and the hashes for the durability and cross-member checks.
async fn final_reads(
    world: &World,
    endpoints: &[Endpoint],
    recorder: &Recorder,
    within: Duration,
) -> Result<(), String> {
    let endpoints = endpoints.to_vec();
    let recorder = recorder.clone();
    let task = world.control.spawn(async move {
        let deadline = tokio::time::Instant::now() + within;
        // A linearizable read gives the revision everyone must reach.
        let target = loop {
            if let Ok(read) = range(&endpoints[0].url, false).await {
                let revision = read.header.as_ref().map_or(0, |h| h.revision);
                recorder.with(|h| {
                    h.final_reads.push(FinalRead {
                        member: Some(endpoints[0].member),
                        time: recorder.now(),
                        revision,
                        kvs: read.kvs.into_iter().map(key_value).collect(),
                    })
                });
                break revision;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("no final linearizable read".to_string());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for endpoint in &endpoints {
            let hash = loop {
                match hash_kv(&endpoint.url, target).await {
                    Ok(hash) => break hash,
                    Err(why) if tokio::time::Instant::now() >= deadline => {
                        return Err(format!(
                            "{} never reached revision {target}: {why}",
                            endpoint.url
                        ));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            recorder.with(|h| {
                h.hashes.push(MemberHash {
                    member: endpoint.member,
                    revision: hash.hash_revision,
                    compact_revision: hash.compact_revision,
                    hash: hash.hash,
                });
                h.member_revisions.push(MemberRevision {
                    member: endpoint.member,
                    time: recorder.now(),
                    revision: hash.header.as_ref().map_or(0, |h| h.revision),
                    compact_revision: Some(hash.compact_revision),
                });
            });
        }
        Ok(())
    });
    task.await
        .unwrap_or_else(|e| Err(format!("final read task failed: {e}")))
}

/// `HashKV(revision)` once the member has applied it.
async fn hash_kv(url: &str, revision: i64) -> Result<pb::HashKvResponse, String> {
    let attempt = async {
        let mut client = MaintenanceClient::connect(url.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let status = client
            .status(pb::StatusRequest {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let current = status.header.as_ref().map_or(0, |h| h.revision);
        if current < revision {
            return Err(format!("at revision {current}"));
        }
        client
            .hash_kv(pb::HashKvRequest { revision })
            .await
            .map(|r| r.into_inner())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

fn trace_hash(history: &History, faults: &[FaultRecord]) -> u64 {
    let mut hasher = DefaultHasher::new();
    format!("{history:?}").hash(&mut hasher);
    format!("{faults:?}").hash(&mut hasher);
    hasher.finish()
}
