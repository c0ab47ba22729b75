//! One simulation run, from one seed: start the world, run clients and watchers while the
//! nemesis injects faults (the safety phase), heal everything and demand that the cluster
//! recovers and serves (the liveness phase), read back every key and every member's
//! `HashKV`, then judge the recorded history with every checker.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_core::mvcc::WatchConfig;
use keel_net::config::Tuning;
use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::kv_client::KvClient;
use keel_net::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_storage::Faults;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{check_all, CheckOptions, Report, Violation};
use crate::client::{key_value, Endpoint, Recorder, SimClient};
use crate::history::{
    ClientId, FinalRead, History, MemberHash, MemberId, MemberRevision, MemberRollback, Outcome,
    Request, Response, Time,
};
use crate::nemesis::{self, FaultRecord, NemesisConfig, Schedule, Step};
use crate::watcher::{watch_loop_with, WatcherConfig};
use crate::workload::{prefix_end, Workload, WorkloadConfig, WorkloadMix, KEY_PREFIX};
use crate::world::{tuning_for_seed, World, WorldConfig, CLIENT_TIMEOUT};

#[derive(Clone)]
pub struct RunConfig {
    pub seed: u64,
    pub servers: usize,
    pub clients: usize,
    pub watchers: usize,
    /// How long faults are injected.
    pub safety: Duration,
    /// After healing, how long the cluster has to serve again.
    pub recovery: Duration,
    pub schedule: Schedule,
    pub workload: WorkloadConfig,
    /// What a crash does to unsynced writes (lost, torn).
    pub disk_faults: Faults,
    /// `--snapshot-count` of every server.
    pub snapshot_count: u64,
    /// Run a client that keeps a lease alive and checks it never expires early.
    pub lease_holder: bool,
    /// `--heartbeat-interval` and `--election-timeout`, in milliseconds.
    pub timing_ms: (u64, u64),
    /// The named scenarios' extra knobs; the default changes nothing (and draws nothing
    /// from the seed, so the random sweep's runs stay what they were).
    pub extras: Extras,
}

/// Knobs the random mix never turns (see [`RunConfig::extras`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extras {
    /// How the watchers watch (start revision, one server, progress requests, a slow
    /// reader, churn, bursts of creates).
    pub watch: WatcherConfig,
    /// Extra request kinds in every client's mix.
    pub mix: WorkloadMix,
    /// Ask every member its revision and compact revision this often (`HashKV` at the
    /// current revision), for the check that neither ever goes down.
    pub member_probe: Option<Duration>,
    /// A client that deletes a key, compacts at exactly that revision and opens watches
    /// from the revision before, at and after it (etcd #18089 / #19179), over and over.
    pub compaction_watches: bool,
    /// Turn authentication on and off again and again during the safety phase (etcd
    /// #14571); clients carry no token, so their requests are refused while it is on.
    pub auth_toggling: bool,
    /// Clients that take a lease-based lock, sometimes stall past the lease's TTL while
    /// holding it, then write fenced and unfenced (Jepsen's etcd 3.4.3 analysis).
    pub lock_holders: usize,
    /// Log entries kept after a snapshot (default: half of `snapshot_count`): small, and a
    /// member only a little behind is sent the leader's snapshot.
    pub snapshot_catchup_entries: Option<u64>,
    /// `--experimental-initial-corrupt-check` on every server.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time` of every server.
    pub corrupt_check: Option<Duration>,
    /// The watch hub's limits instead of the seed's draw (see
    /// [`crate::world::tuning_for_seed`]): a scenario aimed at catch-up reads cut short.
    pub watch_limits: Option<WatchConfig>,
    /// The swarm's mix has the operators' faults too ([`RunConfig::from_seed_with_operators`];
    /// `keel-sim replay --operators` runs it again).
    pub operator_swarm: bool,
}

impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RunConfig");
        d.field("seed", &self.seed)
            .field("servers", &self.servers)
            .field("clients", &self.clients)
            .field("watchers", &self.watchers)
            .field("safety", &self.safety)
            .field("recovery", &self.recovery)
            .field("schedule", &self.schedule)
            .field("workload", &self.workload)
            .field("disk_faults", &self.disk_faults)
            .field("snapshot_count", &self.snapshot_count)
            .field("lease_holder", &self.lease_holder)
            .field("timing_ms", &self.timing_ms);
        // Left out when unused, so the random mix's plans print as they always did.
        if self.extras != Extras::default() {
            d.field("extras", &self.extras);
        }
        d.finish()
    }
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
            schedule: Schedule::Random(NemesisConfig::swarm(&mut rng)),
            workload: WorkloadConfig::default(),
            disk_faults: if rng.gen_bool(0.5) {
                Faults::crashes()
            } else {
                Faults::none()
            },
            snapshot_count: [100, 1000][rng.gen_range(0..2)],
            lease_holder: rng.gen_bool(0.3),
            timing_ms: timing_for_seed(seed),
            extras: Extras::default(),
        }
    }

    /// [`RunConfig::from_seed`] with the operators' faults in the swarm's mix too (see
    /// `NemesisConfig::swarm_with_operators`); the rest of the run is the same seed's.
    pub fn from_seed_with_operators(seed: u64) -> RunConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6f70_6572_6174_6f72);
        let plain = RunConfig::from_seed(seed);
        RunConfig {
            schedule: Schedule::Random(NemesisConfig::swarm_with_operators(&mut rng)),
            extras: Extras {
                operator_swarm: true,
                ..plain.extras.clone()
            },
            ..plain
        }
    }

    /// A named scenario's run: a fixed schedule on `servers` servers.
    pub fn scripted(seed: u64, servers: usize, steps: Vec<Step>) -> RunConfig {
        let safety =
            steps.iter().map(|s| s.after + s.hold).sum::<Duration>() + Duration::from_secs(1);
        RunConfig {
            seed,
            servers,
            clients: 3,
            watchers: 2,
            safety,
            recovery: Duration::from_secs(30),
            schedule: Schedule::Script(steps),
            workload: WorkloadConfig::default(),
            disk_faults: Faults::crashes(),
            snapshot_count: 1000,
            lease_holder: false,
            timing_ms: DEFAULT_TIMING_MS,
            extras: Extras::default(),
        }
    }
}

/// The named scenarios' heartbeat and election timeout (their schedules assume them).
const DEFAULT_TIMING_MS: (u64, u64) = (50, 500);

/// The random sweep's heartbeat and election timeout: short ones bring leader churn while
/// entries are uncommitted, long ones let a deposed leader go on believing it leads.
fn timing_for_seed(seed: u64) -> (u64, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7469_6d69_6e67);
    *[(20, 200), DEFAULT_TIMING_MS, (100, 1000)]
        .choose(&mut rng)
        .unwrap_or(&DEFAULT_TIMING_MS)
}

/// Log entries kept after a snapshot when a run does not say: half of what a snapshot
/// covers, or ten (a follower a little behind gets the snapshot).
fn catch_up_entries_for_seed(seed: u64, snapshot_count: u64) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0063_6174_6368_7570);
    if rng.gen_bool(0.5) {
        10
    } else {
        snapshot_count / 2
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
    /// Raft invariants broken on the servers' own state (see `invariants`).
    pub raft_violations: Vec<String>,
    /// What operators' faults broke that must hold (see `crate::operator`).
    pub operator_violations: Vec<String>,
    /// Snapshots sent by a leader that members restored (at least this many).
    pub leader_snapshots_restored: u64,
    /// The rare paths the members took (see `keel_core::coverage`).
    pub coverage: keel_core::coverage::Coverage,
    /// Crash images the probes opened (see `crate::crash_probe`).
    pub crash_probes: crate::invariants::CrashProbes,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// The leader (server index) and its term before the faults and after recovery.
    pub leader_before: Option<(usize, u64)>,
    pub leader_after: Option<(usize, u64)>,
    /// The lease holder's verdict, when it ran.
    pub lease_holder: Option<Result<(), String>>,
    /// A hash of everything recorded: equal for equal seeds.
    pub trace_hash: u64,
    /// How often authentication was turned on, when the run toggled it.
    pub auth_enabled: Option<usize>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.liveness.is_ok()
            && self.check.is_ok()
            && self.raft_violations.is_empty()
            && self.operator_violations.is_empty()
            && self.lease_holder.as_ref().is_none_or(Result::is_ok)
    }

    /// What a failing run of the random sweep prints (see `failure_report`).
    pub fn failure_message(&self, test: &str) -> String {
        let seed = self.config.seed;
        let operators = if self.config.extras.operator_swarm {
            " --operators"
        } else {
            ""
        };
        self.failure_report(&format!(
            "RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo run -p keel-sim --release -- replay --seed {seed}{operators}\n\
             or:     KEEL_SIM_SEED={seed} RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo test -p keel-sim --test simulation {test}"
        ))
    }

    /// What a failing run prints: the seed, the fault schedule, the checkers' verdicts, and
    /// `replay`, the command that re-runs it bit for bit.
    pub fn failure_report(&self, replay: &str) -> String {
        let mut out = format!("simulation failed, seed {}\n", self.config.seed);
        out.push_str(&format!(
            "  {} servers, {} clients, {} watchers, schedule {:?}\n",
            self.config.servers, self.config.clients, self.config.watchers, self.config.schedule
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
        for violation in &self.raft_violations {
            out.push_str(&format!("raft: {violation}\n"));
        }
        for violation in &self.operator_violations {
            out.push_str(&format!("operator fault: {violation}\n"));
        }
        if let Some(Err(why)) = &self.lease_holder {
            out.push_str(&format!("lease: {why}\n"));
        }
        out.push_str(&format!("replay: {replay}\n"));
        out
    }
}

/// Runs one simulation to its end on a thread of its own, in a madsim runtime seeded with
/// `config.seed`. A fresh thread matters: madsim seeds std's `HashMap` order once per
/// thread, so a second run on the same thread would iterate maps (in tonic, hyper, madsim)
/// differently than a replay of its seed does, and would not replay.
pub fn simulate(config: RunConfig) -> RunReport {
    let seed = config.seed;
    let run = std::thread::Builder::new()
        .name(format!("sim-seed-{seed}"))
        .spawn(move || {
            let runtime =
                madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            runtime.block_on(run(config))
        })
        .expect("a thread for the run");
    match run.join() {
        Ok(report) => report,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The seed's draw of the core's limits, with a scenario's overrides.
fn tuning_of(config: &RunConfig) -> Tuning {
    let mut tuning = tuning_for_seed(config.seed);
    if let Some(watch) = config.extras.watch_limits {
        tuning.watch = watch;
    }
    tuning
}

/// Runs one simulation (inside a madsim runtime seeded with `config.seed`).
pub async fn run(config: RunConfig) -> RunReport {
    let started = tokio::time::Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut world = start_world(&config);
    let endpoints: Vec<Endpoint> = world
        .servers
        .iter()
        .map(|s| Endpoint {
            member: s.config.member_id,
            url: s.client_url(),
        })
        .collect();
    let recorder = Recorder::new();
    let liveness = wait_until_serving(&world, &endpoints, config.recovery).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = Clients::spawn(&mut world, &config, &endpoints, &recorder, &stop, &mut rng);
    let leader_before = nemesis::leader_and_term(&world).await;
    let mut faults = Vec::new();
    let safety_end = tokio::time::Instant::now() + config.safety;
    nemesis::run(
        &mut world,
        &config.schedule,
        &mut rng,
        safety_end,
        &mut faults,
    )
    .await;
    world.heal();
    let recovered = recover(&world, &endpoints, &recorder, &config, liveness).await;
    stop.store(true, Ordering::Relaxed);
    let verdicts = clients.join().await;
    let liveness = judge_liveness(
        &world, &endpoints, &recorder, &config, &recovered, &verdicts,
    )
    .await;
    let leader_after = recovered.leader_after;
    for (member, instant) in world.operator_log.rollbacks() {
        let time = recorder.time_at(instant);
        recorder.with(|h| h.member_rollbacks.push(MemberRollback { member, time }));
    }
    let history = recorder.take();
    let check = check_all(&history, &CheckOptions::default());
    let trace_hash = trace_hash(&history, &faults);
    let raft_violations = world.invariants.violations();
    let operator_violations = world.operator_log.violations();
    world.shut_down();
    RunReport {
        history,
        faults,
        liveness,
        check,
        raft_violations,
        operator_violations,
        leader_snapshots_restored: world.invariants.leader_snapshots_restored(),
        coverage: world.invariants.coverage(),
        crash_probes: world.invariants.crash_probes(),
        simulated: started.elapsed(),
        leader_before,
        leader_after,
        lease_holder: verdicts.lease_holder.filter(|_| config.lease_holder),
        trace_hash,
        auth_enabled: verdicts.auth.and_then(Result::ok),
        config,
    }
}

/// Where a run stood once its faults were healed.
struct Recovered {
    liveness: Result<(), String>,
    /// The members whose disks were not damaged on purpose.
    healthy: Vec<Endpoint>,
    /// From then on, every request must succeed.
    serving_since: Time,
    leader_after: Option<(usize, u64)>,
}

/// After the faults: waits for the healthy members to serve, then lets the clients go on
/// for a while with everything healed and serving.
async fn recover(
    world: &World,
    endpoints: &[Endpoint],
    recorder: &Recorder,
    config: &RunConfig,
    mut liveness: Result<(), String>,
) -> Recovered {
    // A server whose disk was damaged on purpose may rightly refuse to start; the rest
    // must serve, and must agree with it if it does serve.
    let healthy: Vec<Endpoint> = endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| !world.damaged.contains(*i))
        .map(|(_, e)| e.clone())
        .collect();
    if liveness.is_ok() {
        liveness = wait_until_serving(world, &healthy, config.recovery).await;
    }
    // Liveness: with everything healed and serving, clients keep going a while and every
    // request they start from now on must succeed.
    let serving_since = recorder.now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader_after = nemesis::leader_and_term(world).await;
    Recovered {
        liveness,
        healthy,
        serving_since,
        leader_after,
    }
}

/// Liveness, judged once the clients stopped: what they started after recovery succeeded,
/// the healthy members agree with the history and damaged ones that serve agree too, and
/// auth toggling (when the run has it) ended well.
async fn judge_liveness(
    world: &World,
    endpoints: &[Endpoint],
    recorder: &Recorder,
    config: &RunConfig,
    recovered: &Recovered,
    verdicts: &Verdicts,
) -> Result<(), String> {
    let mut liveness = recovered.liveness.clone();
    if liveness.is_ok() {
        let (healthy, since) = (&recovered.healthy, recovered.serving_since);
        liveness = served_after_recovery(world, healthy, recorder, since, config).await;
    }
    // Asked even after a failure: a run's requests are the same whatever it finds.
    let damaged_serving = damaged_members_agree(world, endpoints, recorder).await;
    if let (Ok(()), Err(why)) = (&liveness, damaged_serving) {
        liveness = Err(why);
    }
    if let (Ok(()), Err(why)) = (&liveness, verdicts.auth_toggling_ended(config)) {
        liveness = Err(why);
    }
    liveness
}

/// The servers of a run, as its configuration and seed set them.
fn start_world(config: &RunConfig) -> World {
    World::start(WorldConfig {
        faults: config.disk_faults,
        snapshot_count: config.snapshot_count,
        // Half of what a snapshot covers stays in the log, or only ten entries: a follower
        // further behind (a partition, a crash) is sent the snapshot, so runs exercise both
        // ways of catching up.
        snapshot_catchup_entries: config
            .extras
            .snapshot_catchup_entries
            .unwrap_or_else(|| catch_up_entries_for_seed(config.seed, config.snapshot_count)),
        initial_corrupt_check: config.extras.initial_corrupt_check,
        corrupt_check: config.extras.corrupt_check,
        heartbeat_ms: config.timing_ms.0,
        election_ms: config.timing_ms.1,
        tuning: tuning_of(config),
        ..WorldConfig::new(config.servers, config.seed)
    })
}

/// After recovery: every request started since `serving_since` succeeded, and reads from
/// every healthy member agree with the history.
async fn served_after_recovery(
    world: &World,
    healthy: &[Endpoint],
    recorder: &Recorder,
    serving_since: Time,
    config: &RunConfig,
) -> Result<(), String> {
    let healthy_members: Vec<MemberId> = healthy.iter().map(|e| e.member).collect();
    requests_after_recovery_succeeded(recorder, serving_since, &healthy_members)?;
    final_reads(world, healthy, recorder, config.recovery).await
}

/// What the clients of a run send while the nemesis works, each on a node of its own.
struct Clients {
    tasks: Vec<madsim::task::JoinHandle<()>>,
    lease_verdict: Arc<std::sync::Mutex<Option<Result<(), String>>>>,
    auth_verdict: Arc<std::sync::Mutex<Option<Result<usize, String>>>>,
}

/// What the clients that judge their own part found.
struct Verdicts {
    lease_holder: Option<Result<(), String>>,
    auth: Option<Result<usize, String>>,
}

impl Verdicts {
    /// Auth toggling, when the run has it, must have ended and ended well.
    fn auth_toggling_ended(&self, config: &RunConfig) -> Result<(), String> {
        if !config.extras.auth_toggling {
            return Ok(());
        }
        match &self.auth {
            Some(Ok(_)) => Ok(()),
            Some(Err(why)) => Err(format!("auth toggling: {why}")),
            None => Err("auth toggling never ended".to_string()),
        }
    }
}

impl Clients {
    /// Starts every client the configuration asks for; the workload's and watchers' seeds
    /// come from `rng`, in that order.
    fn spawn(
        world: &mut World,
        config: &RunConfig,
        endpoints: &[Endpoint],
        recorder: &Recorder,
        stop: &Arc<AtomicBool>,
        rng: &mut ChaCha8Rng,
    ) -> Clients {
        let mut clients = Clients {
            tasks: Vec::new(),
            lease_verdict: Arc::new(std::sync::Mutex::new(None)),
            auth_verdict: Arc::new(std::sync::Mutex::new(None)),
        };
        clients.spawn_workload(world, config, endpoints, recorder, stop, rng);
        clients.spawn_extras(world, config, endpoints, recorder, stop);
        clients
    }

    /// The workload's clients and the watchers.
    fn spawn_workload(
        &mut self,
        world: &mut World,
        config: &RunConfig,
        endpoints: &[Endpoint],
        recorder: &Recorder,
        stop: &Arc<AtomicBool>,
        rng: &mut ChaCha8Rng,
    ) {
        for client in 0..config.clients as ClientId {
            let node = world.client_node(&format!("client{client}"));
            let task = client_loop(
                client,
                endpoints.to_vec(),
                recorder.clone(),
                stop.clone(),
                config.workload,
                config.extras.mix,
                ChaCha8Rng::seed_from_u64(rng.gen()),
            );
            self.tasks.push(node.spawn(task));
        }
        for watcher in 0..config.watchers as ClientId {
            let node = world.client_node(&format!("watcher{watcher}"));
            let task = watch_loop_with(
                1000 + watcher,
                endpoints.to_vec(),
                recorder.clone(),
                stop.clone(),
                watcher as usize,
                config.extras.watch,
                ChaCha8Rng::seed_from_u64(rng.gen()),
            );
            self.tasks.push(node.spawn(task));
        }
    }

    /// The clients a scenario adds: a lease holder, a member probe, compaction watches,
    /// lock holders, an auth toggler.
    fn spawn_extras(
        &mut self,
        world: &mut World,
        config: &RunConfig,
        endpoints: &[Endpoint],
        recorder: &Recorder,
        stop: &Arc<AtomicBool>,
    ) {
        let extras = &config.extras;
        if config.lease_holder {
            let node = world.client_node("lease-holder");
            let task = crate::lease_holder::hold(
                2000,
                endpoints.to_vec(),
                recorder.clone(),
                stop.clone(),
                self.lease_verdict.clone(),
            );
            self.tasks.push(node.spawn(task));
        }
        if let Some(every) = extras.member_probe {
            let node = world.client_node("member-probe");
            let task = probe_members(endpoints.to_vec(), recorder.clone(), stop.clone(), every);
            self.tasks.push(node.spawn(task));
        }
        if extras.compaction_watches {
            let node = world.client_node("compaction-watcher");
            let task = crate::watcher::compaction_watches(
                3000,
                endpoints.to_vec(),
                recorder.clone(),
                stop.clone(),
                ChaCha8Rng::seed_from_u64(config.seed ^ 0x18089),
            );
            self.tasks.push(node.spawn(task));
        }
        for holder in 0..extras.lock_holders as ClientId {
            let node = world.client_node(&format!("lock-holder{holder}"));
            let task = crate::client::hold_locks(
                4000 + holder,
                endpoints.to_vec(),
                recorder.clone(),
                stop.clone(),
                ChaCha8Rng::seed_from_u64(config.seed ^ (0x3430 + holder)),
            );
            self.tasks.push(node.spawn(task));
        }
        if extras.auth_toggling {
            let node = world.client_node("auth-toggler");
            let until =
                tokio::time::Instant::now() + config.safety.saturating_sub(Duration::from_secs(1));
            let endpoints = endpoints.to_vec();
            let verdict = self.auth_verdict.clone();
            let rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x14571);
            self.tasks.push(node.spawn(async move {
                let result = crate::client::toggle_auth(endpoints, until, rng).await;
                if let Ok(mut slot) = verdict.lock() {
                    *slot = Some(result);
                }
            }));
        }
    }

    /// Waits for every client to stop and takes the verdicts.
    async fn join(self) -> Verdicts {
        for task in self.tasks {
            let _ = task.await;
        }
        Verdicts {
            lease_holder: self.lease_verdict.lock().ok().and_then(|v| v.clone()),
            auth: self.auth_verdict.lock().ok().and_then(|v| v.clone()),
        }
    }
}

async fn client_loop(
    id: ClientId,
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    workload: WorkloadConfig,
    mix: WorkloadMix,
    mut rng: ChaCha8Rng,
) {
    let mut client = SimClient::new(id, endpoints, recorder.clone(), CLIENT_TIMEOUT);
    let mut workload = Workload::with_mix(id, workload, mix);
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

/// Asks every member, one after another, for its revision and compact revision (`HashKV`
/// at its current revision answers both) until `stop`; records what each says.
async fn probe_members(
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    every: Duration,
) {
    while !stop.load(Ordering::Relaxed) {
        for endpoint in &endpoints {
            let url = endpoint.url.clone();
            let attempt = async {
                let mut client = MaintenanceClient::connect(url).await.ok()?;
                client
                    .hash_kv(pb::HashKvRequest { revision: 0 })
                    .await
                    .ok()
                    .map(|r| r.into_inner())
            };
            let Ok(Some(hash)) = tokio::time::timeout(Duration::from_secs(1), attempt).await else {
                continue;
            };
            let time = recorder.now();
            // The id that answered: a member replaced by an operator is a new member, whose
            // revision starts over.
            let member = hash
                .header
                .as_ref()
                .map_or(endpoint.member, |h| h.member_id);
            recorder.with(|h| {
                h.member_revisions.push(MemberRevision {
                    member,
                    time,
                    revision: hash.header.as_ref().map_or(0, |h| h.revision),
                    compact_revision: Some(hash.compact_revision),
                })
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// Every request invoked once the healed cluster served again got a definite answer from
/// a healthy member (a member with a damaged disk may rightly refuse to start).
fn requests_after_recovery_succeeded(
    recorder: &Recorder,
    since: crate::history::Time,
    healthy_members: &[MemberId],
) -> Result<(), String> {
    recorder.with(|history| {
        let failed: Vec<String> = history
            .operations
            .iter()
            .enumerate()
            .filter(|(_, op)| op.invoke >= since && op.client != crate::history::EXPIRY_CLIENT)
            .filter(|(_, op)| op.member.is_none_or(|m| healthy_members.contains(&m)))
            .filter(|(_, op)| matches!(op.outcome, Outcome::Indeterminate(_)))
            .map(|(i, op)| format!("op #{i} {:?}: {:?}", op.request, op.outcome))
            .take(5)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "requests failed after recovery: {}",
                failed.join("; ")
            ))
        }
    })
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

/// A damaged member that did start must hold the same data as the others (its `HashKV`
/// at the final revision joins the cross-member check); one that refused is fine.
async fn damaged_members_agree(
    world: &World,
    endpoints: &[Endpoint],
    recorder: &Recorder,
) -> Result<(), String> {
    let Some(target) = recorder.with(|h| h.final_reads.first().map(|r| r.revision)) else {
        return Ok(());
    };
    for index in world.damaged.all() {
        let endpoint = endpoints[index].clone();
        let url = endpoint.url.clone();
        let answer = world
            .control
            .spawn(async move {
                for _ in 0..50 {
                    if let Ok(hash) = hash_kv(&url, target).await {
                        return Some(hash);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None
            })
            .await
            .ok()
            .flatten();
        if let Some(hash) = answer {
            recorder.with(|h| {
                h.hashes.push(MemberHash {
                    member: endpoint.member,
                    revision: hash.hash_revision,
                    compact_revision: hash.compact_revision,
                    hash: hash.hash,
                })
            });
        }
    }
    Ok(())
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
