//! One simulation run, from one seed: start the world, run clients and watchers while the
//! nemesis injects faults (the safety phase), heal everything and demand that the cluster
//! recovers and serves (the liveness phase), read back every key and every member's
//! `HashKV`, then judge the recorded history with every checker.
//!
//! Its parts: `config` (what a run is made of), `clients` (the workload), `liveness` (the
//! recovery and the reads at the end), `report` (verdicts and the trace hash).

mod clients;
mod config;
mod liveness;
mod report;

use clients::Clients;
pub use config::{Extras, RunConfig};
use liveness::{judge_liveness, recover, wait_until_serving};
use report::trace_hash;
pub use report::RunReport;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keel_net::config::Tuning;
use keel_net::proto::etcdserverpb as pb;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{check_all, CheckOptions};
use crate::client::{Endpoint, Recorder};
use crate::history::{MemberRollback, Time};
use crate::nemesis;
use crate::world::{tuning_for_seed, World, WorldConfig};

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
        mixed_members: config.mixed_members.then_some(config.seed),
        ..WorldConfig::new(config.servers, config.seed)
    })
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
