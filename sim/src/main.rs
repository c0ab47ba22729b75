//! `keel-sim replay --seed N [--trace]`: re-runs one simulation seed bit for bit and prints
//! its fault schedule, what the clients did, and the checkers' verdict. Built in madsim mode:
//!
//! `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo run -p keel-sim --release -- replay --seed 7`

#[cfg(not(madsim))]
fn main() {
    eprintln!(
        "keel-sim runs in madsim mode: RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim \
         cargo run -p keel-sim --release -- replay --seed N"
    );
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    use clap::Parser;
    use keel_sim::run::{run, RunConfig};

    #[derive(Parser)]
    #[command(name = "keel-sim", about = "keel's deterministic simulator")]
    enum Cli {
        /// Re-run one seed exactly.
        Replay {
            #[arg(long)]
            seed: u64,
            /// Print every operation, and the servers' debug logs (messages, elections,
            /// state changes).
            #[arg(long)]
            trace: bool,
        },
    }

    let Cli::Replay { seed, trace } = Cli::parse();
    if trace {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "keel_net=trace,keel_sim=debug",
            ))
            .try_init();
    }
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let report = runtime.block_on(run(RunConfig::from_seed(seed)));
    println!("seed {seed}: {:?}", report.config);
    for fault in &report.faults {
        println!("at {:?}: {}", fault.at, fault.what);
    }
    if trace {
        for (i, op) in report.history.operations.iter().enumerate() {
            println!("op {i}: {op:?}");
        }
    }
    println!(
        "{} operations, {} watches, trace hash {:x}",
        report.history.operations.len(),
        report.history.watches.len(),
        report.trace_hash
    );
    if report.passed() {
        println!("passed");
        std::process::ExitCode::SUCCESS
    } else {
        println!(
            "{}",
            report.failure_message("random_faults_keep_keel_safe_and_live")
        );
        std::process::ExitCode::FAILURE
    }
}
