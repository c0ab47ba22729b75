//! `keel`: an etcd-compatible key-value server. `keel --help` lists the flags, which are
//! etcd's.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    real::main()
}

/// Under the simulator the binary is not used: scenarios start servers themselves.
#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
mod real {
    use std::process::ExitCode;

    use anyhow::Context;
    use clap::Parser;
    use keel_net::config::{LogFormat, ServeArgs, ServerConfig};
    use keel_net::server;
    use keel_storage::FsDisk;
    use tracing::{error, info};

    #[derive(Parser, Debug)]
    #[command(
        name = "keel",
        version,
        about = "An etcd-compatible, strongly consistent key-value store",
        args_conflicts_with_subcommands = true
    )]
    struct Cli {
        #[command(subcommand)]
        command: Option<Command>,
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Command {
        /// Benchmark an etcd v3 endpoint list (keel or etcd), like etcd's `benchmark` tool.
        Bench(keel_net::bench::BenchArgs),
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        if let Some(Command::Bench(args)) = cli.command {
            return bench(args);
        }
        let config = match cli.serve.resolve() {
            Ok(config) => config,
            Err(error) => {
                eprintln!("keel: {error}");
                return ExitCode::from(2);
            }
        };
        init_logging(&config);
        let runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("keel: cannot start the runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(serve(config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                error!("{error:#}");
                eprintln!("keel: {error:#}");
                ExitCode::FAILURE
            }
        }
    }

    /// tokio's multi-threaded runtime without its LIFO slot. With the slot, a task woken by
    /// the running task runs next: when the server loop answers a batch of writes, each
    /// answered gRPC stream wakes its connection, which then runs at once and writes that one
    /// response: a syscall, a loopback packet and a client wake-up per response. Without it
    /// the connection runs after the batch's streams and writes their responses together.
    /// Measured with `keel bench put` at 8 connections / 64 clients against 3 members on a
    /// 2-core VM (six interleaved pairs): 14,900 → 17,000 puts/s, the three servers' CPU per
    /// put 83 → 73 µs. The setting needs `--cfg tokio_unstable` (`.cargo/config.toml`).
    fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        #[cfg(tokio_unstable)]
        builder.disable_lifo_slot();
        builder.enable_all().build()
    }

    fn bench(args: keel_net::bench::BenchArgs) -> ExitCode {
        let runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("keel bench: cannot start the runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
        let json = args.json;
        match runtime.block_on(keel_net::bench::run(args)) {
            Ok(summary) => {
                summary.print(json);
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("keel bench: {error:#}");
                ExitCode::FAILURE
            }
        }
    }

    fn init_logging(config: &ServerConfig) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match config.log_format {
            LogFormat::Json => builder.json().init(),
            LogFormat::Text => builder.init(),
        }
    }

    async fn serve(config: ServerConfig) -> anyhow::Result<()> {
        let disk = FsDisk::open(&config.data_dir)
            .with_context(|| format!("cannot open the data dir {}", config.data_dir.display()))?;
        let client = bind(&config.listen_client)
            .await
            .context("cannot listen for clients")?;
        let peer = bind(&config.listen_peer)
            .await
            .context("cannot listen for peers")?;
        let running = server::start(&config, disk, client, peer).await?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot watch for SIGTERM")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("interrupted; stopping"),
            _ = terminate.recv() => info!("terminated; stopping"),
        }
        running.stop().await
    }

    /// Binds the first listen address (more than one listener arrives with TLS).
    async fn bind(addrs: &[std::net::SocketAddr]) -> anyhow::Result<tokio::net::TcpListener> {
        let addr = addrs.first().context("no listen address")?;
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind {addr}"))
    }
}
