//! The command line: etcd's flags, with the same names, defaults and meaning, each also
//! settable from an environment variable `KEEL_<FLAG>` (etcd reads `ETCD_<FLAG>`). Everything
//! is checked here, before anything touches the data dir. The security flags are in
//! `config/security.rs`, how etcd spells flag values (URLs, durations, `--initial-cluster`)
//! in `config/parse.rs`.

pub mod compat;
#[cfg(not(madsim))]
pub mod file;
mod parse;
mod security;

use parse::{
    auto_compaction, go_duration, log_level, positive, socket_addrs, sorted, timing, urls,
};
pub use parse::{parse_initial_cluster, ListenUrl};
pub use security::{AuthSettings, SecurityArgs};

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use keel_core::node::{member_id, Member};
use keel_core::raft::NodeId;
use thiserror::Error;

use crate::tls::TlsSettings;

pub const DEFAULT_NAME: &str = "default";
pub const DEFAULT_CLIENT_URL: &str = "http://127.0.0.1:2379";
pub const DEFAULT_PEER_URL: &str = "http://127.0.0.1:2380";
pub const DEFAULT_CLUSTER_TOKEN: &str = "keel-cluster";
/// etcd's `--max-request-bytes` default: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1536 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompactionMode {
    Periodic,
    Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// `keel` (serve) flags. Field docs are the `--help` text.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Human-readable name for this member.
    #[arg(long, env = "KEEL_NAME", default_value = DEFAULT_NAME)]
    pub name: String,

    /// Path to the data directory [default: <name>.keel].
    #[arg(long, env = "KEEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// List of URLs to listen on for client traffic (comma-separated; every one is bound)
    /// [default: http://127.0.0.1:2379].
    #[arg(long, env = "KEEL_LISTEN_CLIENT_URLS")]
    pub listen_client_urls: Option<String>,

    /// List of this member's client URLs to advertise to the rest of the cluster; required
    /// when --listen-client-urls is set [default: http://127.0.0.1:2379].
    #[arg(long, env = "KEEL_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,

    /// List of URLs to listen on for peer traffic.
    #[arg(long, env = "KEEL_LISTEN_PEER_URLS", default_value = DEFAULT_PEER_URL)]
    pub listen_peer_urls: String,

    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, env = "KEEL_INITIAL_ADVERTISE_PEER_URLS", default_value = DEFAULT_PEER_URL)]
    pub initial_advertise_peer_urls: String,

    /// Initial cluster configuration for bootstrapping: name=peer-url,... [default:
    /// <name>=<initial-advertise-peer-urls>].
    #[arg(long, env = "KEEL_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Initial cluster state: 'new' to bootstrap, 'existing' to join a running cluster.
    #[arg(
        long,
        env = "KEEL_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    pub initial_cluster_state: ClusterState,

    /// Initial cluster token, distinguishing clusters bootstrapped with the same URLs.
    #[arg(long, env = "KEEL_INITIAL_CLUSTER_TOKEN", default_value = DEFAULT_CLUSTER_TOKEN)]
    pub initial_cluster_token: String,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "KEEL_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "KEEL_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "KEEL_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Entries kept in the log after a snapshot, so a follower slightly behind catches up
    /// from the log; one further behind is sent the snapshot.
    #[arg(
        long,
        env = "KEEL_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = 5_000
    )]
    pub experimental_snapshot_catchup_entries: u64,

    /// Raise alarms when the store exceeds this size (0 means the default, 2 GiB).
    #[arg(long, env = "KEEL_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,

    /// The longest time applied writes wait before the store's engine commits them durably
    /// (etcd's backend commit interval). The Raft log is the source of truth in between.
    #[arg(long, env = "KEEL_BACKEND_BATCH_INTERVAL", default_value = "100ms")]
    pub backend_batch_interval: String,

    /// The most applied entries before the store's engine commits durably.
    #[arg(long, env = "KEEL_BACKEND_BATCH_LIMIT", default_value_t = 10_000)]
    pub backend_batch_limit: u64,

    /// Memory the store's engine caches its pages in, in bytes: the server's memory stays
    /// near it whatever the data size (keel's; etcd maps its whole file instead).
    #[arg(
        long,
        env = "KEEL_ENGINE_CACHE_SIZE_BYTES",
        default_value_t = keel_storage::DEFAULT_ENGINE_CACHE_SIZE_BYTES as u64
    )]
    pub engine_cache_size_bytes: u64,

    /// Memory the store's key index rows wait in before a checkpoint writes them to the
    /// engine together, in bytes: larger means fewer engine writes per put and a longer
    /// rebuild from the history log when the server starts (0: at every engine commit).
    #[arg(
        long,
        env = "KEEL_INDEX_CHECKPOINT_BYTES",
        default_value_t = keel_core::mvcc::DEFAULT_INDEX_CHECKPOINT_BYTES as u64
    )]
    pub index_checkpoint_bytes: u64,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "KEEL_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: u64,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "KEEL_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u64,

    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    #[arg(
        long,
        env = "KEEL_AUTO_COMPACTION_MODE",
        value_enum,
        default_value = "periodic"
    )]
    pub auto_compaction_mode: CompactionMode,

    /// Auto compaction retention: a duration for 'periodic' (hours if no unit is given, e.g.
    /// '5m', '1h'), a revision count for 'revision'. 0 disables auto compaction.
    #[arg(long, env = "KEEL_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,

    /// Log level: debug, info, warn, error.
    #[arg(long, env = "KEEL_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "KEEL_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Force to create a new one-member cluster from this member's data: every other member
    /// is removed (for a cluster that lost its majority for good; see the README). Restart
    /// without it afterwards.
    #[arg(
        long,
        env = "KEEL_FORCE_NEW_CLUSTER",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub force_new_cluster: bool,

    /// Compare this member's data with its peers' before serving clients; stop if it
    /// differs.
    #[arg(
        long,
        env = "KEEL_EXPERIMENTAL_INITIAL_CORRUPT_CHECK",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub experimental_initial_corrupt_check: bool,

    /// How often the leader compares every member's data at its current revision (0s:
    /// never); a member that differs gets a CORRUPT alarm.
    #[arg(
        long,
        env = "KEEL_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s"
    )]
    pub experimental_corrupt_check_time: String,

    /// Have the leader compare every member's data at the latest compaction's revision.
    #[arg(
        long,
        env = "KEEL_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub experimental_compact_hash_check_enabled: bool,

    /// How often the compaction hash check runs.
    #[arg(
        long,
        env = "KEEL_EXPERIMENTAL_COMPACT_HASH_CHECK_TIME",
        default_value = "1m"
    )]
    pub experimental_compact_hash_check_time: String,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub compat: compat::CompatArgs,
}

/// What went wrong with the flags, in one line for the operator.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--{flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        reason: reason.into(),
    }
}

pub use keel_core::node::AutoCompaction;

/// The checked configuration of a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub name: String,
    pub member_id: NodeId,
    pub data_dir: PathBuf,
    /// Every `--listen-client-urls` URL: each one is bound.
    pub listen_client: Vec<ListenUrl>,
    pub advertise_client_urls: Vec<String>,
    /// Every `--listen-peer-urls` URL.
    pub listen_peer: Vec<ListenUrl>,
    pub advertise_peer_urls: Vec<String>,
    /// The founding members (from `--initial-cluster`), this one included.
    pub initial_members: Vec<Member>,
    /// What is wrong with `--initial-cluster` for starting on a new data dir, if anything
    /// (see [`ServerConfig::check_bootstrap_flags`]).
    pub bootstrap_problem: Option<ConfigError>,
    pub cluster_state: ClusterState,
    /// `--force-new-cluster` (see `crate::bootstrap`).
    pub force_new_cluster: bool,
    pub cluster_token: String,
    pub heartbeat_interval: Duration,
    pub election_ticks: u32,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    pub quota_bytes: u64,
    /// When the store's engine commits durably: after this long or this many entries.
    pub backend_batch_interval: Duration,
    pub backend_batch_limit: u64,
    pub engine_cache_size_bytes: usize,
    pub index_checkpoint_bytes: usize,
    pub max_request_bytes: u64,
    pub max_txn_ops: usize,
    pub auto_compaction: AutoCompaction,
    pub log_level: String,
    pub log_format: LogFormat,
    /// etcd's corruption checks (see `crate::corruption`).
    pub corruption: crate::corruption::CorruptionChecks,
    /// TLS on the client port (`https://` listen URLs), and for connections made to other
    /// members' client URLs.
    pub client_tls: Option<TlsSettings>,
    /// For `https://` metrics URLs: the client port's certificate and checks.
    pub metrics_tls: Option<TlsSettings>,
    /// TLS on the peer port (`https://` peer URLs), and for dialling peers.
    pub peer_tls: Option<TlsSettings>,
    pub auth: AuthSettings,
    /// WAL and snapshot settings; not flags (the simulator uses small segments).
    pub storage: keel_storage::StorageOptions,
    /// Internal limits; not flags (the simulator varies them per seed).
    pub tuning: Tuning,
    /// etcd's deployment flags beyond the core ones (see [`compat`]).
    pub compat: compat::Compat,
}

/// Limits of the core that are not flags. keel's defaults suit production; the simulator
/// draws them per seed, so the paths they gate run too: one entry per Append, one Append in
/// flight, one committed entry per Ready, a watch catch-up cut after a few events.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    pub max_append_bytes: usize,
    pub max_inflight_appends: usize,
    pub max_committed_bytes_per_ready: usize,
    pub watch: keel_core::mvcc::WatchConfig,
    pub compaction_batch_revisions: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        let node = keel_core::node::NodeConfig::new(1);
        Tuning {
            max_append_bytes: node.raft.max_append_bytes,
            max_inflight_appends: node.raft.max_inflight_appends,
            max_committed_bytes_per_ready: node.raft.max_committed_bytes_per_ready,
            watch: node.watch,
            compaction_batch_revisions: node.store.compaction_batch_revisions,
        }
    }
}

impl ServeArgs {
    /// Checks every flag and derives the member ids, writing nothing.
    pub fn resolve(&self) -> Result<ServerConfig, ConfigError> {
        if self.name.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.keel", self.name)));
        let (listen_client_urls, advertise_client_urls_flag) = self.client_urls()?;
        let listen_client = socket_addrs("listen-client-urls", &listen_client_urls)?;
        let advertise_client_urls = urls("advertise-client-urls", &advertise_client_urls_flag)?;
        let listen_peer = socket_addrs("listen-peer-urls", &self.listen_peer_urls)?;
        let advertise_peer_urls = urls(
            "initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )?;
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, advertise_peer_urls.join(",")));
        let initial_members = parse_initial_cluster(&initial_cluster, &self.initial_cluster_token)?;
        // Only a new data dir needs `--initial-cluster` to name this member: once data
        // exists, it holds the member's identity and the flag is ignored (as in etcd).
        let bootstrap_problem =
            initial_cluster_problem(&initial_members, &self.name, &advertise_peer_urls).err();
        let member_id = member_id(&advertise_peer_urls, &self.initial_cluster_token);
        let (heartbeat_interval, election_ticks) =
            timing(self.heartbeat_interval, self.election_timeout)?;
        Ok(ServerConfig {
            name: self.name.clone(),
            member_id,
            data_dir,
            listen_client,
            advertise_client_urls,
            listen_peer,
            advertise_peer_urls,
            initial_members,
            bootstrap_problem,
            cluster_state: self.initial_cluster_state,
            force_new_cluster: self.force_new_cluster,
            cluster_token: self.initial_cluster_token.clone(),
            heartbeat_interval,
            election_ticks,
            snapshot_count: positive("snapshot-count", self.snapshot_count)?,
            snapshot_catchup_entries: self.experimental_snapshot_catchup_entries,
            quota_bytes: self.quota_backend_bytes,
            backend_batch_interval: match go_duration(
                "backend-batch-interval",
                &self.backend_batch_interval,
            )? {
                Duration::ZERO => return Err(invalid("backend-batch-interval", "must be above 0")),
                interval => interval,
            },
            backend_batch_limit: positive("backend-batch-limit", self.backend_batch_limit)?,
            engine_cache_size_bytes: usize::try_from(positive(
                "engine-cache-size-bytes",
                self.engine_cache_size_bytes,
            )?)
            .map_err(|_| invalid("engine-cache-size-bytes", "too large"))?,
            index_checkpoint_bytes: usize::try_from(self.index_checkpoint_bytes)
                .map_err(|_| invalid("index-checkpoint-bytes", "too large"))?,
            max_request_bytes: positive("max-request-bytes", self.max_request_bytes)?,
            max_txn_ops: usize::try_from(positive("max-txn-ops", self.max_txn_ops)?)
                .map_err(|_| invalid("max-txn-ops", "too large"))?,
            auto_compaction: auto_compaction(
                self.auto_compaction_mode,
                &self.auto_compaction_retention,
            )?,
            log_level: log_level(&self.log_level)?,
            log_format: self.log_format,
            corruption: self.corruption_checks()?,
            client_tls: self
                .security
                .client_tls(&listen_client_urls, &advertise_client_urls_flag)?,
            peer_tls: self
                .security
                .peer_tls(&self.listen_peer_urls, &self.initial_advertise_peer_urls)?,
            metrics_tls: self
                .security
                .metrics_tls(&self.compat.listen_metrics_urls)?,
            auth: self.security.auth()?,
            storage: keel_storage::StorageOptions::default(),
            tuning: Tuning::default(),
            compat: self.compat.resolve()?,
        })
    }
}

impl ServeArgs {
    fn corruption_checks(&self) -> Result<crate::corruption::CorruptionChecks, ConfigError> {
        let periodic = go_duration(
            "experimental-corrupt-check-time",
            &self.experimental_corrupt_check_time,
        )?;
        let compact_hash = go_duration(
            "experimental-compact-hash-check-time",
            &self.experimental_compact_hash_check_time,
        )?;
        if self.experimental_compact_hash_check_enabled && compact_hash.is_zero() {
            return Err(invalid(
                "experimental-compact-hash-check-time",
                "must be positive when the check is enabled",
            ));
        }
        Ok(crate::corruption::CorruptionChecks {
            initial: self.experimental_initial_corrupt_check,
            periodic: (!periodic.is_zero()).then_some(periodic),
            compact_hash: self
                .experimental_compact_hash_check_enabled
                .then_some(compact_hash),
        })
    }

    /// The client URL flags with their defaults. As etcd: a member that listens on chosen
    /// addresses must say which URLs its clients reach it at.
    fn client_urls(&self) -> Result<(String, String), ConfigError> {
        match (&self.listen_client_urls, &self.advertise_client_urls) {
            (Some(_), None) => Err(invalid(
                "advertise-client-urls",
                "is required when --listen-client-urls is set explicitly: a member that listens \
                 on specific addresses must advertise URLs its clients can reach",
            )),
            (listen, advertise) => Ok((
                listen
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CLIENT_URL.to_string()),
                advertise
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CLIENT_URL.to_string()),
            )),
        }
    }
}

impl ServerConfig {
    /// `--initial-cluster` must name this member with its advertised peer URLs when the data
    /// dir is new (bootstrapping or joining); on an existing one the flag is not used.
    pub fn check_bootstrap_flags(&self) -> Result<(), ConfigError> {
        match &self.bootstrap_problem {
            Some(problem) => Err(problem.clone()),
            None => Ok(()),
        }
    }
}

/// Whether `--initial-cluster` names this member with its advertised peer URLs.
fn initial_cluster_problem(
    members: &[Member],
    name: &str,
    advertise_peer_urls: &[String],
) -> Result<(), ConfigError> {
    let own = members.iter().find(|m| m.name == name).ok_or_else(|| {
        invalid(
            "initial-cluster",
            format!("does not name this member ({name:?})"),
        )
    })?;
    if sorted(&own.peer_urls) != sorted(advertise_peer_urls) {
        return Err(invalid(
            "initial-cluster",
            format!(
                "lists {:?} for {name:?}, but --initial-advertise-peer-urls is {:?}",
                own.peer_urls, advertise_peer_urls
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn resolve(args: &[&str]) -> Result<ServerConfig, ConfigError> {
        let mut argv = vec!["keel"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .serve
            .resolve()
    }

    #[test]
    fn no_flags_give_a_single_local_member_like_etcd() {
        let config = resolve(&[]).unwrap();
        assert_eq!(config.name, "default");
        assert_eq!(config.data_dir, PathBuf::from("default.keel"));
        let plain = |addr: &str| ListenUrl {
            addr: addr.parse().unwrap(),
            https: false,
        };
        assert_eq!(config.listen_client, vec![plain("127.0.0.1:2379")]);
        assert_eq!(config.listen_peer, vec![plain("127.0.0.1:2380")]);
        assert_eq!(config.initial_members.len(), 1);
        assert_eq!(config.election_ticks, 10);
        assert_eq!(config.snapshot_catchup_entries, 5_000, "etcd's default");
    }

    #[test]
    fn snapshot_catchup_entries_reach_the_node() {
        let config = resolve(&["--experimental-snapshot-catchup-entries", "20"]).unwrap();
        assert_eq!(config.snapshot_catchup_entries, 20);
        assert_eq!(
            crate::server::node_config(&config, config.member_id).snapshot_catch_up_entries,
            20
        );
    }

    #[test]
    fn a_three_member_cluster_gives_every_member_the_same_ids() {
        let cluster = "a=http://127.0.0.1:2380,b=http://127.0.0.1:2382,c=http://127.0.0.1:2384";
        let a = resolve(&["--name", "a", "--initial-cluster", cluster]).unwrap();
        let b = resolve(&[
            "--name",
            "b",
            "--initial-cluster",
            cluster,
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2382",
        ])
        .unwrap();
        assert_eq!(a.initial_members, b.initial_members);
        assert_ne!(a.member_id, b.member_id);
    }

    #[test]
    fn inconsistent_flags_are_refused_with_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (
                &[
                    "--name",
                    "x",
                    "--initial-cluster",
                    "a=http://127.0.0.1:2380",
                ],
                "initial-cluster",
            ),
            (
                &["--initial-cluster", "default=http://127.0.0.1:9999"],
                "initial-cluster",
            ),
            (
                &[
                    "--listen-client-urls",
                    "http://example.com:2379",
                    "--advertise-client-urls",
                    "http://example.com:2379",
                ],
                "listen-client-urls",
            ),
            (
                &["--listen-peer-urls", "ftp://127.0.0.1:2380"],
                "listen-peer-urls",
            ),
            (&["--election-timeout", "200"], "election-timeout"),
            (&["--snapshot-count", "0"], "snapshot-count"),
            (
                &["--auto-compaction-retention", "soon"],
                "auto-compaction-retention",
            ),
            (&["--log-level", "loud"], "log-level"),
            (
                &["--listen-client-urls", "http://127.0.0.1:12379"],
                "advertise-client-urls",
            ),
        ];
        for (args, flag) in cases {
            let error = resolve(args)
                .and_then(|config| config.check_bootstrap_flags().map(|()| config))
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(&format!("--{flag}:")),
                "{args:?}: {error}"
            );
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }

    /// The flags of kubeadm's etcd static pod manifest (v1.30) start keel unchanged.
    #[test]
    fn kubeadms_etcd_flags_are_accepted() {
        let config = resolve(&[
            "--advertise-client-urls=https://10.0.0.5:2379",
            "--cert-file=/etc/kubernetes/pki/etcd/server.crt",
            "--client-cert-auth=true",
            "--data-dir=/var/lib/etcd",
            "--experimental-initial-corrupt-check=true",
            "--experimental-watch-progress-notify-interval=5s",
            "--initial-advertise-peer-urls=https://10.0.0.5:2380",
            "--initial-cluster=cp1=https://10.0.0.5:2380",
            "--key-file=/etc/kubernetes/pki/etcd/server.key",
            "--listen-client-urls=https://127.0.0.1:2379,https://10.0.0.5:2379",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            "--listen-peer-urls=https://10.0.0.5:2380",
            "--name=cp1",
            "--peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt",
            "--peer-client-cert-auth=true",
            "--peer-key-file=/etc/kubernetes/pki/etcd/peer.key",
            "--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            "--snapshot-count=10000",
            "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
        ])
        .unwrap();
        assert_eq!(
            config.compat.watch_progress_notify_interval,
            Duration::from_secs(5)
        );
        assert_eq!(
            config.compat.listen_metrics,
            vec![ListenUrl {
                addr: "127.0.0.1:2381".parse().unwrap(),
                https: false
            }]
        );
        assert!(
            config.compat.notices.is_empty(),
            "{:?}",
            config.compat.notices
        );
        assert_eq!(config.metrics_tls, None, "http:// metrics URLs are plain");
    }

    /// An `https://` metrics URL takes the client port's certificate and checks (etcd's
    /// `ClientTLSInfo`), and needs one as the client port does.
    #[test]
    fn an_https_metrics_url_takes_the_client_ports_tls() {
        let flags = [
            "--listen-metrics-urls=https://127.0.0.1:2381",
            "--cert-file=/etc/keel/server.crt",
            "--key-file=/etc/keel/server.key",
            "--trusted-ca-file=/etc/keel/ca.crt",
            "--client-cert-auth",
        ];
        let config = resolve(&flags).unwrap();
        let tls = config.metrics_tls.expect("TLS for the metrics URL");
        assert!(tls.client_cert_auth);
        assert_eq!(tls.trusted_ca_file, Some(PathBuf::from("/etc/keel/ca.crt")));
        assert_eq!(config.client_tls, None, "the client URLs are http://");
        let error = resolve(&flags[..1]).unwrap_err().to_string();
        assert!(
            error.starts_with("--listen-metrics-urls") && error.contains("--cert-file"),
            "{error}"
        );
    }

    /// etcd reads booleans with Go's `strconv.ParseBool` (`1`, `t`, `TRUE`…) and its
    /// configuration file as YAML 1.1 (`yes`, `on`…): both forms are accepted.
    #[test]
    fn booleans_take_gos_and_yaml_1_1_forms() {
        let yaml = "client-cert-auth: yes\nforce-new-cluster: off\nexperimental-initial-corrupt-check: on\n";
        let mut flags = crate::config::file::flags_from_yaml(yaml).unwrap();
        flags.extend(["--experimental-compact-hash-check-enabled=T".to_string()]);
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut argv = vec!["keel"];
        argv.extend_from_slice(&args);
        let cli = Cli::try_parse_from(argv).unwrap();
        assert!(cli.serve.security.client_cert_auth);
        assert!(!cli.serve.force_new_cluster);
        assert!(cli.serve.experimental_initial_corrupt_check);
        assert!(cli.serve.experimental_compact_hash_check_enabled);
        assert!(Cli::try_parse_from(["keel", "--force-new-cluster=maybe"]).is_err());
    }

    #[test]
    fn flags_without_meaning_here_are_noted_and_impossible_values_refused() {
        let config = resolve(&[
            "--enable-pprof",
            "--metrics=extensive",
            "--strict-reconfig-check=false",
            "--enable-v2=false",
            "--logger=zap",
            "--log-outputs=stdout",
            "--max-concurrent-streams=100",
            "--grpc-keepalive-interval=0",
            "--grpc-keepalive-timeout=0",
            "--experimental-backend-bbolt-freelist-type=array",
        ])
        .unwrap();
        assert_eq!(
            config.compat.grpc.keepalive_timeout,
            Duration::from_secs(20),
            "0 is gRPC's default, not a timeout at once"
        );
        assert_eq!(
            config.compat.notices.len(),
            5,
            "{:?}",
            config.compat.notices
        );
        assert_eq!(config.compat.grpc.max_concurrent_streams, Some(100));
        assert_eq!(config.compat.grpc.keepalive_interval, None);
        for refused in [
            "--enable-v2=true",
            "--logger=capnslog",
            "--log-outputs=/var/log/etcd.log",
            "--listen-metrics-urls=https://127.0.0.1:2381",
            "--experimental-watch-progress-notify-interval=0",
            "--metrics=full",
        ] {
            let error = resolve(&[refused]).unwrap_err();
            let flag = refused.trim_start_matches("--").split('=').next().unwrap();
            assert!(
                error.to_string().starts_with(&format!("--{flag}")),
                "{error}"
            );
        }
        let mut argv = vec!["keel", "--no-such-flag"];
        argv.truncate(2);
        assert!(
            Cli::try_parse_from(argv).is_err(),
            "an unknown flag is an error"
        );
    }

    #[test]
    fn corruption_check_flags_take_etcds_forms() {
        let config = resolve(&[
            "--experimental-initial-corrupt-check=true",
            "--experimental-corrupt-check-time",
            "2m",
            "--experimental-compact-hash-check-enabled",
        ])
        .unwrap();
        assert!(config.corruption.initial);
        assert_eq!(config.corruption.periodic, Some(Duration::from_secs(120)));
        assert_eq!(
            config.corruption.compact_hash,
            Some(Duration::from_secs(60))
        );
        let off = resolve(&["--experimental-initial-corrupt-check=false"]).unwrap();
        assert_eq!(off.corruption, Default::default());
        assert!(resolve(&["--experimental-corrupt-check-time", "soon"]).is_err());
    }

    #[test]
    fn auto_compaction_retention_reads_hours_durations_and_revisions() {
        assert_eq!(
            auto_compaction(CompactionMode::Periodic, "1").unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(3600))
        );
        assert_eq!(
            auto_compaction(CompactionMode::Periodic, "5m").unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(300))
        );
        assert_eq!(
            auto_compaction(CompactionMode::Revision, "1000").unwrap(),
            AutoCompaction::Revision(1000)
        );
        assert_eq!(
            auto_compaction(CompactionMode::Revision, "0").unwrap(),
            AutoCompaction::Off
        );
    }
}
