//! What a run reports: its verdicts, its history's size, and the trace hash that proves
//! two runs of a seed the same.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use crate::check::{Report, Violation};
use crate::history::History;
use crate::nemesis::FaultRecord;

use super::config::RunConfig;

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

pub(super) fn trace_hash(history: &History, faults: &[FaultRecord]) -> u64 {
    let mut hasher = DefaultHasher::new();
    format!("{history:?}").hash(&mut hasher);
    format!("{faults:?}").hash(&mut hasher);
    hasher.finish()
}
