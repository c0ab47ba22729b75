//! `keel`: an etcd-compatible key-value server. `keel --help` lists the flags, which are
//! etcd's.

/// The server allocates many short-lived buffers (requests, engine pages, log entries) on
/// several threads; mimalloc serves them faster than glibc's malloc (see the README's
/// benchmarks).
#[cfg(not(madsim))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    real::main()
}

/// Transparent huge pages off for this process. Memory mimalloc hands back to the system
/// would come back as 2 MiB pages the kernel zeroes whole on the first touch: 3 members
/// under put 8/64 spent 22% of their CPU in `clear_page` and p99 rose from 10 to 40 ms. The
/// `no_thp` build feature only stops mimalloc asking for them; with the kernel's
/// `transparent_hugepage=always` (RHEL's default) the process has to opt out itself.
#[cfg(all(not(madsim), target_os = "linux"))]
fn disable_transparent_huge_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        // Not fatal: the server runs, with the latency above on such kernels.
        eprintln!("keel: could not disable transparent huge pages: {e}");
    }
}

#[cfg(all(not(madsim), not(target_os = "linux")))]
fn disable_transparent_huge_pages() {}

/// Under the simulator the binary is not used: scenarios start servers themselves.
#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
mod real {
    use std::process::ExitCode;

    use anyhow::Context;
    use clap::{CommandFactory, FromArgMatches, Parser};
    use keel_net::config::{ListenUrl, LogFormat, ServeArgs, ServerConfig};
    use keel_net::server;
    use keel_storage::FsDisk;
    use tracing::{error, info};

    /// `keel --version`: as `etcd --version`, plus the etcd API keel serves.
    const LONG_VERSION: &str = concat!(
        env!("CARGO_PKG_VERSION"),
        "\nGit SHA: ",
        env!("KEEL_BUILD_COMMIT"),
        "\nBuild date: ",
        env!("KEEL_BUILD_DATE"),
        "\nRust version: ",
        env!("KEEL_BUILD_RUSTC"),
        "\nOS/Arch: ",
        env!("KEEL_BUILD_TARGET"),
        "\netcd API version: 3.5",
    );

    #[derive(Parser, Debug)]
    #[command(
        name = "keel",
        version,
        long_version = LONG_VERSION,
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
        /// Inspect or restore a saved snapshot (etcd's format, from keel or etcd), like
        /// `etcdutl snapshot`.
        Snapshot {
            #[command(subcommand)]
            command: SnapshotCommand,
        },
    }

    #[derive(clap::Subcommand, Debug)]
    enum SnapshotCommand {
        /// Create a new member's data dir from a saved snapshot.
        Restore(keel_net::backup::restore::RestoreArgs),
        /// Print a saved snapshot's hash, revision, total keys and size.
        Status {
            /// The saved snapshot.
            file: std::path::PathBuf,
            /// Output format.
            #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
            write_out: StatusFormat,
        },
    }

    #[derive(clap::ValueEnum, Clone, Copy, Debug)]
    enum StatusFormat {
        Simple,
        Table,
        Json,
    }

    pub fn main() -> ExitCode {
        let (command, etcd_env) = with_etcd_env(Cli::command());
        let mut cli = match Cli::from_arg_matches(&command.get_matches()) {
            Ok(cli) => cli,
            Err(error) => error.exit(),
        };
        let from_file = cli.serve.compat.config_file.is_some();
        if let Some(file) = cli.serve.compat.config_file.clone() {
            cli.serve = match serve_args_from_file(&file) {
                Ok(serve) => serve,
                Err(error) => {
                    eprintln!("keel: {error}");
                    return ExitCode::from(2);
                }
            };
        }
        match cli.command {
            Some(Command::Bench(args)) => return bench(args),
            Some(Command::Snapshot { command }) => return snapshot(command),
            None => {}
        }
        let config = match cli.serve.resolve() {
            Ok(config) => config,
            Err(error) => {
                eprintln!("keel: {error}");
                return ExitCode::from(2);
            }
        };
        if is_new_data_dir(&config.data_dir) {
            if let Err(error) = config.check_bootstrap_flags() {
                eprintln!("keel: {error}");
                return ExitCode::from(2);
            }
        }
        init_logging(&config);
        if from_file {
            info!("flags and environment variables ignored: the configuration file sets them");
        } else {
            for name in etcd_env {
                info!(name, "recognized and used an etcd environment variable");
            }
        }
        let runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("keel: cannot start the runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(serve(config)) {
            Ok(Ended::Stopped | Ended::Removed) => ExitCode::SUCCESS,
            Err(error) => {
                error!("{error:#}");
                eprintln!("keel: {error:#}");
                ExitCode::FAILURE
            }
        }
    }

    /// The server's flags as etcd's YAML configuration file `file` sets them, and nothing
    /// else: as etcd, neither the command line nor the environment counts then.
    fn serve_args_from_file(file: &std::path::Path) -> anyhow::Result<ServeArgs> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--config-file: cannot read {}", file.display()))?;
        let flags = keel_net::config::file::flags_from_yaml(&text)?;
        let command = Cli::command().mut_args(|arg| arg.env(clap::builder::Resettable::Reset));
        let argv = std::iter::once("keel".to_string()).chain(flags);
        let matches = command
            .try_get_matches_from(argv)
            .map_err(|e| {
                let first_line = e.to_string().lines().next().unwrap_or_default().to_string();
                let reason = first_line.trim_start_matches("error: ").to_string();
                anyhow::anyhow!("--config-file {}: {reason}", file.display())
            })
            .and_then(|matches| Ok(Cli::from_arg_matches(&matches)?))?;
        Ok(matches.serve)
    }

    /// Each flag reads `KEEL_<FLAG>`, and etcd's `ETCD_<FLAG>` when that is not set, so an
    /// etcd unit file or pod spec works unchanged (`KEEL_` wins when both are set). Returns
    /// the etcd variables that will be read.
    fn with_etcd_env(mut command: clap::Command) -> (clap::Command, Vec<String>) {
        let fallbacks: Vec<(clap::Id, String)> = command
            .get_arguments()
            .filter_map(|arg| {
                let keel = arg.get_env()?.to_str()?;
                let etcd = format!("ETCD_{}", keel.strip_prefix("KEEL_")?);
                let use_etcd =
                    std::env::var_os(keel).is_none() && std::env::var_os(&etcd).is_some();
                use_etcd.then(|| (arg.get_id().clone(), etcd))
            })
            .collect();
        let mut used = Vec::new();
        for (id, etcd) in fallbacks {
            // clap takes names for the life of the program; these few bytes are that.
            let name: &'static str = Box::leak(etcd.clone().into_boxed_str());
            command = command.mut_arg(id, |arg| arg.env(name));
            used.push(etcd);
        }
        (command, used)
    }

    /// tokio's multi-threaded runtime without its LIFO slot. With the slot, a task woken by
    /// the running task runs next: when the server loop answers a batch of writes, each
    /// answered gRPC stream wakes its connection, which then runs at once and writes that one
    /// response: a syscall, a loopback packet and a client wake-up per response. Without it
    /// the connection runs after the batch's streams and writes their responses together.
    /// Measured with `keel bench put` at 8 connections / 64 clients against 3 members on a
    /// 2-core VM (six interleaved pairs): 14,900 → 17,000 puts/s, the three servers' CPU per
    /// put 83 → 73 µs. The setting needs `--cfg tokio_unstable` (`.cargo/config.toml`).
    fn snapshot(command: SnapshotCommand) -> ExitCode {
        match command {
            SnapshotCommand::Status { file, write_out } => match keel_net::backup::status(&file) {
                Ok(status) => {
                    match write_out {
                        StatusFormat::Simple => println!(
                            "{:x}, {}, {}, {}",
                            status.hash,
                            status.revision,
                            status.total_key,
                            keel_net::backup::human_bytes(status.total_size)
                        ),
                        StatusFormat::Table => {
                            print!("{}", keel_net::backup::status_table(&status));
                        }
                        StatusFormat::Json => match serde_json::to_string(&status) {
                            Ok(json) => println!("{json}"),
                            Err(error) => {
                                eprintln!("keel: {error}");
                                return ExitCode::FAILURE;
                            }
                        },
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("keel: {error}");
                    ExitCode::FAILURE
                }
            },
            SnapshotCommand::Restore(args) => match keel_net::backup::restore::restore(&args) {
                Ok(restored) => {
                    println!(
                        "restored snapshot {} into {}: {} keys with history, {} leases, revision {}{}, member \
                         {:x} of cluster {:x}",
                        args.file.display(),
                        restored.data_dir.display(),
                        restored.keys,
                        restored.leases,
                        restored.revision,
                        if restored.compact_revision > 0 {
                            format!(" (compacted at {})", restored.compact_revision)
                        } else {
                            String::new()
                        },
                        restored.member_id,
                        restored.cluster_id
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("keel: {error:#}");
                    ExitCode::FAILURE
                }
            },
        }
    }

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

    /// `--log-level`, with clients' harmless quirks shown only at `debug`: rustls warns of
    /// every client that sends an IP address as TLS server name (Node's grpc-js does), and
    /// its SNI parser warns of nothing else.
    fn log_filter(level: &str) -> String {
        match level {
            "debug" => level.to_string(),
            _ => format!("{level},rustls::msgs::handshake=error"),
        }
    }

    fn init_logging(config: &ServerConfig) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter(&config.log_level)));
        // Colours only for a person at a terminal: a file, a pipe or journald gets plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        match config.log_format {
            // etcd's keys (`level`, `ts`, `caller`, `msg`), for pipelines built for etcd.
            LogFormat::Json => builder.event_format(keel_net::log_format::EtcdJson).init(),
            LogFormat::Text => builder.init(),
        }
    }

    /// How the server ended, for the exit code.
    enum Ended {
        Stopped,
        /// Removed from the cluster: exit 0, as etcd does, so a supervisor that restarts on
        /// failure leaves it stopped.
        Removed,
    }

    /// `http://` or `https://` URLs of listen addresses, comma-separated, for the log.
    fn listen_urls(listeners: &[ListenUrl]) -> String {
        let urls: Vec<String> = listeners
            .iter()
            .map(|l| format!("{}://{}", if l.https { "https" } else { "http" }, l.addr))
            .collect();
        urls.join(",")
    }

    /// The first line an operator reads: which keel, which member, where, and how reached.
    fn log_start(config: &ServerConfig) {
        info!(
            version = keel_net::KEEL_VERSION,
            git_sha = env!("KEEL_BUILD_COMMIT"),
            etcd_api = keel_net::ETCD_VERSION,
            name = config.name,
            data_dir = %config.data_dir.display(),
            listen_client_urls = listen_urls(&config.listen_client),
            advertise_client_urls = config.advertise_client_urls.join(","),
            listen_peer_urls = listen_urls(&config.listen_peer),
            advertise_peer_urls = config.advertise_peer_urls.join(","),
            listen_metrics_urls = listen_urls(&config.compat.listen_metrics),
            client_tls = config.client_tls.is_some(),
            peer_tls = config.peer_tls.is_some(),
            "starting keel"
        );
        for notice in &config.compat.notices {
            info!("{notice}");
        }
    }

    async fn serve(config: ServerConfig) -> anyhow::Result<Ended> {
        log_start(&config);
        refuse_an_etcd_data_dir(&config.data_dir)?;
        if config.data_dir.is_dir() {
            let removed = keel_net::backup::remove_stale_exports(&config.data_dir)
                .context("cannot remove the files of interrupted snapshot streams")?;
            if removed > 0 {
                info!(removed, "removed the files of interrupted snapshot streams");
            }
        }
        let disk = FsDisk::open(&config.data_dir)
            .with_context(|| format!("cannot open the data dir {}", config.data_dir.display()))?;
        let clients = bind_all(&config.listen_client)
            .await
            .context("cannot listen for clients")?;
        let peers = bind_all(&config.listen_peer)
            .await
            .context("cannot listen for peers")?;
        let mut running = server::start(&config, disk, clients, peers).await?;
        tokio::spawn(keel_net::systemd::notify_ready_once_serving(
            running.handle.clone(),
            running.member_id,
            config.name.clone(),
        ));
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot watch for SIGTERM")?;
        // The server may end by itself: a failed fsync, a full disk, a data dir found to
        // have gone back in time, removal from the cluster. The process then exits too.
        let stopped = tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                info!("interrupted; stopping");
                running.stop().await?
            }
            _ = terminate.recv() => {
                info!("terminated; stopping");
                running.stop().await?
            }
            ended = running.ended() => ended?,
        };
        Ok(match stopped {
            server::Stopped::Shutdown => Ended::Stopped,
            server::Stopped::Removed => Ended::Removed,
        })
    }

    /// Whether `data_dir` holds nothing yet (then the bootstrap flags must be consistent).
    fn is_new_data_dir(data_dir: &std::path::Path) -> bool {
        std::fs::read_dir(data_dir).map_or(true, |mut entries| entries.next().is_none())
    }

    /// etcd's data dir is not keel's: starting on it would bootstrap a new, empty cluster
    /// next to the data the operator meant to keep.
    fn refuse_an_etcd_data_dir(data_dir: &std::path::Path) -> anyhow::Result<()> {
        let etcd_files = [data_dir.join("member/wal"), data_dir.join("member/snap/db")];
        if let Some(found) = etcd_files.iter().find(|path| path.exists()) {
            anyhow::bail!(
                "{} holds an etcd data dir ({} exists), which keel cannot read. To move its \
                 data to keel, take a snapshot of the etcd cluster (`etcdctl snapshot save`) \
                 restore it with `keel snapshot restore`, or copy the keys over with `etcdctl \
                 make-mirror`, or start keel on another data dir (see the README's operations \
                 section)",
                data_dir.display(),
                found.display()
            );
        }
        Ok(())
    }

    /// Binds every listen URL (kubeadm passes two client URLs, loopback and the node's).
    async fn bind_all(urls: &[ListenUrl]) -> anyhow::Result<Vec<server::Listener>> {
        let mut listeners = Vec::new();
        for url in urls {
            let socket = tokio::net::TcpListener::bind(url.addr)
                .await
                .with_context(|| format!("cannot bind {}", url.addr))?;
            listeners.push(server::Listener {
                socket,
                https: url.https,
            });
        }
        Ok(listeners)
    }
}
