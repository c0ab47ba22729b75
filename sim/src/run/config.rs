//! What a run is made of: its seed, cluster size, duration, faults and knobs, each varied
//! per seed unless a test pins it.

use std::time::Duration;

use keel_core::mvcc::WatchConfig;
use keel_storage::Faults;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::nemesis::{NemesisConfig, Schedule, Step};
use crate::watcher::WatcherConfig;
use crate::workload::{WorkloadConfig, WorkloadMix};

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
    /// Each member draws its own local knobs (`WorldConfig::mixed_members`): drawn from
    /// a stream of its own, so the seed's other draws stay what they were.
    pub mixed_members: bool,
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
        // Left out when unset, as `extras` is.
        if self.mixed_members {
            d.field("mixed_members", &self.mixed_members);
        }
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
            mixed_members: mixed_members_for_seed(seed),
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
            mixed_members: false,
            extras: Extras::default(),
        }
    }
}

/// The named scenarios' heartbeat and election timeout (their schedules assume them).
pub(super) const DEFAULT_TIMING_MS: (u64, u64) = (50, 500);

/// The random sweep's heartbeat and election timeout: short ones bring leader churn while
/// entries are uncommitted, long ones let a deposed leader go on believing it leads.
pub(super) fn timing_for_seed(seed: u64) -> (u64, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7469_6d69_6e67);
    *[(20, 200), DEFAULT_TIMING_MS, (100, 1000)]
        .choose(&mut rng)
        .unwrap_or(&DEFAULT_TIMING_MS)
}

/// Whether the random sweep's seed gives each member its own local knobs (half of them).
fn mixed_members_for_seed(seed: u64) -> bool {
    ChaCha8Rng::seed_from_u64(seed ^ 0x6d69_7865_6400).gen_bool(0.5)
}
