//! keel's named fault scenarios, run as `cargo test` in madsim mode:
//!
//! `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p keel-scenarios`
//!
//! Each scenario is a fixed fault schedule (`keel_sim::nemesis::Step`s) run over a few seeds
//! on the real server code, with every checker of the simulator plus the scenario's own
//! assertions. `KEEL_SIM_SEEDS=N` runs N seeds per scenario (from `KEEL_SIM_FIRST_SEED`);
//! `KEEL_SIM_SEED=S` exactly S.

#[cfg(madsim)]
mod driver {
    use keel_sim::run::{simulate, RunConfig, RunReport};

    /// Seeds per scenario unless `KEEL_SIM_SEEDS`/`KEEL_SIM_SEED` say otherwise.
    pub const DEFAULT_SEEDS: u64 = 2;

    pub fn seeds() -> Vec<u64> {
        keel_sim::seeds::seeds(DEFAULT_SEEDS)
    }

    /// `KEEL_SIM_LOG=<filter>` (e.g. `keel_net=info`) prints the servers' logs, to see why
    /// a replayed seed fails.
    pub fn log_if_asked() {
        if let Ok(filter) = std::env::var("KEEL_SIM_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .try_init();
        }
    }

    /// Runs scenario `test` (in test file `file`) over the seeds; panics with the seed, the
    /// schedule, the verdict and the replay command if a run fails. Returns the reports for
    /// the scenario's own assertions.
    pub fn scenario(file: &str, test: &str, config: impl Fn(u64) -> RunConfig) -> Vec<RunReport> {
        scenario_over(file, test, DEFAULT_SEEDS, config)
    }

    /// The rare paths a scenario's runs took, summed (printed with `KEEL_SIM_COVERAGE=1`).
    pub fn coverage_of(reports: &[RunReport]) -> keel_core::coverage::Coverage {
        let mut coverage = keel_core::coverage::Coverage::default();
        for report in reports {
            coverage.add(&report.coverage);
        }
        keel_sim::invariants::print_coverage_if_asked(&coverage);
        coverage
    }

    /// [`scenario`] over `seed_count` seeds by default, for a scenario whose count was set
    /// by measurement (the seeds a planted bug in `sim/mutants/` needs to be caught there).
    pub fn scenario_over(
        file: &str,
        test: &str,
        seed_count: u64,
        config: impl Fn(u64) -> RunConfig,
    ) -> Vec<RunReport> {
        log_if_asked();
        keel_sim::seeds::seeds(seed_count)
            .into_iter()
            .map(|seed| {
                let report = simulate(config(seed));
                let replay = format!(
                    "KEEL_SIM_SEED={seed} RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim \
                     cargo test -p keel-scenarios --test {file} {test}"
                );
                assert!(report.passed(), "{}", report.failure_report(&replay));
                report
            })
            .collect()
    }
}

#[cfg(madsim)]
pub use driver::{coverage_of, log_if_asked, scenario, scenario_over, seeds, DEFAULT_SEEDS};
