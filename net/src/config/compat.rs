//! etcd flags that deployments pass (kubeadm's manifests, etcd operators, unit files) beyond
//! the core ones: those keel implements — the watch progress interval, gRPC stream and
//! keepalive limits, a metrics listener — and those that have no meaning in keel, which are
//! accepted so that such deployments start unchanged, each with a one-line notice in the log
//! (see the README's flag section). A value keel cannot honour is refused, as etcd refuses one.

use std::time::Duration;

use clap::Args;

use super::{go_duration, invalid, socket_addrs, ConfigError, ListenUrl};

#[derive(Clone, Debug, Default, Args)]
pub struct CompatArgs {
    /// Path to etcd's YAML configuration file (keys are the flags' names; TLS under
    /// client-transport-security and peer-transport-security). As in etcd, it replaces the
    /// command line and the environment.
    #[arg(long, env = "KEEL_CONFIG_FILE")]
    pub config_file: Option<std::path::PathBuf>,

    /// List of additional URLs to listen on that serve /metrics, /health, /livez and /readyz
    /// (http:// only).
    #[arg(long, env = "KEEL_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,

    /// Duration of periodic watch progress notifications (to watches created with
    /// progress_notify).
    #[arg(
        long,
        env = "KEEL_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m"
    )]
    pub experimental_watch_progress_notify_interval: String,

    /// Maximum concurrent streams that each client connection can open (0: no limit).
    #[arg(long, env = "KEEL_MAX_CONCURRENT_STREAMS", default_value_t = 0)]
    pub max_concurrent_streams: u32,

    /// Minimum interval a client should wait before pinging the server (accepted; keel does
    /// not refuse clients that ping more often).
    #[arg(long, env = "KEEL_GRPC_KEEPALIVE_MIN_TIME", default_value = "5s")]
    pub grpc_keepalive_min_time: String,

    /// Frequency duration of the server-to-client ping to check if a connection is alive (0
    /// disables).
    #[arg(long, env = "KEEL_GRPC_KEEPALIVE_INTERVAL", default_value = "2h")]
    pub grpc_keepalive_interval: String,

    /// Additional duration of wait before closing a non-responsive connection.
    #[arg(long, env = "KEEL_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s")]
    pub grpc_keepalive_timeout: String,

    /// Logger: only 'zap' (etcd 3.5's, and keel's own) is accepted.
    #[arg(long, env = "KEEL_LOGGER", default_value = "zap")]
    pub logger: String,

    /// Where logs go: 'default', 'stderr' or 'stdout' (keel logs to stderr).
    #[arg(long, env = "KEEL_LOG_OUTPUTS", default_value = "default")]
    pub log_outputs: String,

    /// Accepted without effect: keel serves no Go pprof endpoints.
    #[arg(
        long,
        env = "KEEL_ENABLE_PPROF",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub enable_pprof: bool,

    /// Accepted without effect: keel serves its whole metric set ('extensive' included).
    #[arg(long, env = "KEEL_METRICS", default_value = "basic")]
    pub metrics: String,

    /// Reject reconfiguration requests that would cause quorum loss: keel always does.
    #[arg(
        long,
        env = "KEEL_STRICT_RECONFIG_CHECK",
        num_args = 0..=1,
        default_value = "true",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub strict_reconfig_check: bool,

    /// The v2 API: keel serves v3 only, so only false is accepted.
    #[arg(
        long,
        env = "KEEL_ENABLE_V2",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub enable_v2: bool,

    /// Accepted without effect: keel keeps the snapshot files its recovery needs (two).
    #[arg(long, env = "KEEL_MAX_SNAPSHOTS", default_value_t = 5)]
    pub max_snapshots: u32,

    /// Accepted without effect: keel keeps the WAL files its recovery needs.
    #[arg(long, env = "KEEL_MAX_WALS", default_value_t = 5)]
    pub max_wals: u32,

    /// Accepted without effect: keel's engine is not bbolt.
    #[arg(
        long,
        alias = "experimental-backend-bbolt-freelist-type",
        env = "KEEL_BACKEND_BBOLT_FREELIST_TYPE",
        default_value = "map"
    )]
    pub backend_bbolt_freelist_type: String,

    /// Distributed tracing: not built into keel, so only false is accepted.
    #[arg(
        long,
        env = "KEEL_EXPERIMENTAL_ENABLE_DISTRIBUTED_TRACING",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub experimental_enable_distributed_tracing: bool,
}

/// The gRPC server's connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcLimits {
    pub max_concurrent_streams: Option<u32>,
    /// Server pings on an idle connection this often (`None`: never).
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> GrpcLimits {
        GrpcLimits {
            max_concurrent_streams: None,
            keepalive_interval: Some(Duration::from_secs(2 * 3600)),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// What the compat flags resolve to.
#[derive(Clone, Debug, PartialEq)]
pub struct Compat {
    pub listen_metrics: Vec<ListenUrl>,
    pub watch_progress_notify_interval: Duration,
    pub grpc: GrpcLimits,
    /// One line per flag accepted without effect, for the log at start.
    pub notices: Vec<String>,
}

impl CompatArgs {
    pub fn resolve(&self) -> Result<Compat, ConfigError> {
        let listen_metrics = if self.listen_metrics_urls.trim().is_empty() {
            Vec::new()
        } else {
            socket_addrs("listen-metrics-urls", &self.listen_metrics_urls)?
        };
        let watch_progress_notify_interval = match go_duration(
            "experimental-watch-progress-notify-interval",
            &self.experimental_watch_progress_notify_interval,
        )? {
            Duration::ZERO => {
                return Err(invalid(
                    "experimental-watch-progress-notify-interval",
                    "must be above 0",
                ))
            }
            interval => interval,
        };
        let keepalive_interval =
            go_duration("grpc-keepalive-interval", &self.grpc_keepalive_interval)?;
        let grpc = GrpcLimits {
            max_concurrent_streams: (self.max_concurrent_streams > 0)
                .then_some(self.max_concurrent_streams),
            keepalive_interval: (!keepalive_interval.is_zero()).then_some(keepalive_interval),
            // 0 is "no timeout of our own" in etcd: gRPC's 20 s then applies.
            keepalive_timeout: match go_duration(
                "grpc-keepalive-timeout",
                &self.grpc_keepalive_timeout,
            )? {
                Duration::ZERO => GrpcLimits::default().keepalive_timeout,
                timeout => timeout,
            },
        };
        Ok(Compat {
            listen_metrics,
            watch_progress_notify_interval,
            grpc,
            notices: self.notices()?,
        })
    }

    /// Refuses what keel cannot honour; notes what it accepts without effect.
    fn notices(&self) -> Result<Vec<String>, ConfigError> {
        if self.logger != "zap" {
            return Err(invalid(
                "logger",
                format!("{:?}: only 'zap' is supported", self.logger),
            ));
        }
        if !matches!(self.log_outputs.as_str(), "default" | "stderr" | "stdout") {
            return Err(invalid(
                "log-outputs",
                format!(
                    "{:?}: keel logs to stderr ('default', 'stderr' or 'stdout')",
                    self.log_outputs
                ),
            ));
        }
        if self.enable_v2 {
            return Err(invalid("enable-v2", "keel serves the v3 API only"));
        }
        if self.experimental_enable_distributed_tracing {
            return Err(invalid(
                "experimental-enable-distributed-tracing",
                "keel has no distributed tracing",
            ));
        }
        go_duration("grpc-keepalive-min-time", &self.grpc_keepalive_min_time)?;
        if !matches!(self.metrics.as_str(), "basic" | "extensive") {
            return Err(invalid(
                "metrics",
                format!("{:?}: one of basic, extensive", self.metrics),
            ));
        }
        let mut notices = Vec::new();
        let mut note =
            |flag: &str, why: &str| notices.push(format!("--{flag} has no effect: {why}"));
        if self.log_outputs == "stdout" {
            note("log-outputs=stdout", "keel logs to stderr");
        }
        if self.enable_pprof {
            note("enable-pprof", "keel serves no Go pprof endpoints");
        }
        if self.metrics == "extensive" {
            note("metrics", "keel serves the extensive set whatever the flag");
        }
        if !self.strict_reconfig_check {
            note(
                "strict-reconfig-check=false",
                "keel always refuses a membership change that would lose quorum",
            );
        }
        if self.max_snapshots != 5 || self.max_wals != 5 {
            note(
                "max-snapshots/--max-wals",
                "keel keeps the files its recovery needs",
            );
        }
        if self.backend_bbolt_freelist_type != "map" {
            note("backend-bbolt-freelist-type", "keel's engine is not bbolt");
        }
        if self.grpc_keepalive_min_time != "5s" {
            note(
                "grpc-keepalive-min-time",
                "keel does not refuse clients that ping more often",
            );
        }
        Ok(notices)
    }
}
