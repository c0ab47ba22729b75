//! `keel-sim replay --seed N [--trace] [--operators]`: re-runs one simulation seed bit for bit and prints
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
            /// The seed of the sweep with the operators' faults
            /// (`random_faults_with_operators_keep_keel_safe_and_live`).
            #[arg(long)]
            operators: bool,
        },
    }

    let Cli::Replay {
        seed,
        trace,
        operators,
    } = Cli::parse();
    if trace {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "keel_net=trace,keel_sim=debug",
            ))
            .try_init();
    }
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let wall = std::time::Instant::now();
    let (report, simulated) = runtime.block_on(async {
        let start = madsim::time::Instant::now();
        let config = if operators {
            RunConfig::from_seed_with_operators(seed)
        } else {
            RunConfig::from_seed(seed)
        };
        let report = run(config).await;
        (report, start.elapsed())
    });
    let wall = wall.elapsed();
    println!("seed {seed}: {:?}", report.config);
    for fault in &report.faults {
        println!("at {:?}: {}", fault.at, fault.what);
    }
    if trace {
        for (i, op) in report.history.operations.iter().enumerate() {
            println!("op {i}: {op:?}");
        }
        for (i, watch) in report.history.watches.iter().enumerate() {
            println!("watch {i}: {watch:?}");
        }
    }
    println!(
        "{} operations, {} watches, trace hash {:x}",
        report.history.operations.len(),
        report.history.watches.len(),
        report.trace_hash
    );
    println!(
        "simulated {simulated:?} in {wall:?} of wall time ({:.0}x real time)",
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9)
    );
    if report.passed() {
        println!("passed");
        std::process::ExitCode::SUCCESS
    } else {
        let test = if operators {
            "random_faults_with_operators_keep_keel_safe_and_live"
        } else {
            "random_faults_keep_keel_safe_and_live"
        };
        println!("{}", report.failure_message(test));
        std::process::ExitCode::FAILURE
    }
}
