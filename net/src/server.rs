//! Starting a server: open (or bootstrap) the data dir, start the node, the peer transport,
//! the server loop and the client services. The same code runs in the `keel` binary (on
//! `FsDisk`) and in the simulator (on `SimDisk`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use keel_core::mvcc::{Limits, Store, StoreConfig, DEFAULT_QUOTA_BYTES};
use keel_core::node::{MemberAttributes, Node, NodeConfig};
use keel_storage::{Disk, RedbEngine, Storage, STORE_FILE};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::grpc::auth::AuthService;
use crate::grpc::cluster::ClusterService;
use crate::grpc::concurrency::Recipes;
use crate::grpc::election::ElectionService;
use crate::grpc::lease::LeaseService;
use crate::grpc::lock::LockService;
use crate::grpc::maintenance::MaintenanceService;
use crate::grpc::watch::{keep_watchers_moving, WatchService};
use crate::grpc::{kv::KvService, Api};
use crate::metrics::Metrics;
use crate::peer::query::{AnswerDesk, MembersView};
use crate::peer::snapshot_stream::{self, DiskInbox};
use crate::peer::transport::{self, Transport, TransportStats};
use crate::proto::etcdserverpb::auth_server::AuthServer;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::server_loop::handle::{NodeHandle, REQUEST_QUEUE};
use crate::server_loop::{Hooks, LoopError, LoopInputs, LoopSettings, ServerLoop, WatchOpen};
use crate::tls::{ClientTls, ServerTls, TlsSettings, CLIENT_ALPN, GRPC_ALPN, PEER_ALPN};

/// gRPC adds framing to a request; etcd allows this much on top of `--max-request-bytes`.
const GRPC_OVERHEAD_BYTES: u64 = 512 * 1024;
/// Largest peer message accepted (a snapshot of a full store, plus room).
const MAX_PEER_MESSAGE_BYTES: usize = 16 * 1024 * 1024 * 1024;

/// A running server: how to reach it and how to stop it.
#[derive(Debug)]
pub struct RunningServer {
    pub handle: NodeHandle,
    pub metrics: Arc<Metrics>,
    /// Opens watch streams on the loop (for the Watch service).
    pub watch_opens: mpsc::Sender<WatchOpen>,
    /// Who this member is (from its data dir, or decided when it was bootstrapped or joined).
    pub member_id: u64,
    shutdown: watch::Sender<bool>,
    server_loop: tokio::task::JoinHandle<Result<(), LoopError>>,
}

/// Why a server stopped without failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to (`stop`, a signal).
    Shutdown,
    /// This member was removed from the cluster; it must not run again on its data dir.
    Removed,
}

impl RunningServer {
    /// Stops taking requests, lets the loop finish what is in hand, and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<Stopped> {
        let _ = self.shutdown.send(true);
        self.ended().await
    }

    /// Waits until the loop ends (a fatal error, removal, or `stop`).
    pub async fn wait(mut self) -> anyhow::Result<Stopped> {
        self.ended().await
    }

    /// The loop's end, without giving up the server (for `select!` next to signals).
    pub async fn ended(&mut self) -> anyhow::Result<Stopped> {
        match (&mut self.server_loop).await {
            Ok(Ok(())) => Ok(Stopped::Shutdown),
            Ok(Err(LoopError::Removed)) => Ok(Stopped::Removed),
            Ok(Err(error)) => Err(error.into()),
            Err(error) => bail!("the server loop panicked: {error}"),
        }
    }
}

pub fn node_config(config: &ServerConfig, member_id: u64) -> NodeConfig {
    let mut node = NodeConfig::new(member_id);
    node.raft.election_ticks = config.election_ticks;
    node.raft.heartbeat_ticks = 1;
    node.raft.seed = member_id ^ crate::random::u64();
    node.raft.max_append_bytes = config.tuning.max_append_bytes;
    node.raft.max_inflight_appends = config.tuning.max_inflight_appends;
    node.raft.max_committed_bytes_per_ready = config.tuning.max_committed_bytes_per_ready;
    node.watch = config.tuning.watch;
    node.snapshot_count = config.snapshot_count;
    node.snapshot_catch_up_entries = config.snapshot_catchup_entries;
    node.tick_ms = u64::try_from(config.heartbeat_interval.as_millis()).unwrap_or(100);
    node.auth_token_ttl_ms = u64::try_from(config.auth.token_ttl.as_millis()).unwrap_or(u64::MAX);
    node.auto_compaction = config.auto_compaction;
    node.attributes = Some(MemberAttributes {
        id: member_id,
        name: config.name.clone(),
        client_urls: config.advertise_client_urls.clone(),
    });
    node.store = StoreConfig {
        quota_bytes: if config.quota_bytes == 0 {
            DEFAULT_QUOTA_BYTES
        } else {
            config.quota_bytes
        },
        limits: Limits {
            max_request_bytes: usize::try_from(config.max_request_bytes).unwrap_or(usize::MAX),
            max_txn_ops: config.max_txn_ops,
        },
        index_checkpoint_bytes: config.index_checkpoint_bytes,
        compaction_batch_revisions: config.tuning.compaction_batch_revisions,
        ..StoreConfig::default()
    };
    node
}

/// Opens `disk` and what it holds, bootstrapping a new cluster or joining one when empty
/// (see `crate::bootstrap`).
async fn open_node<D: Disk + Send + 'static>(
    config: &ServerConfig,
    disk: D,
    peer_tls: Option<&ClientTls>,
) -> anyhow::Result<Opened<D>> {
    let opening = std::time::Instant::now();
    let (mut storage, recovered) = open_storage(config, disk)?;
    let (is_new, wal_entries) = (recovered.is_new, recovered.entries.len());
    let store = node_config(config, config.member_id).store;
    let start =
        crate::bootstrap::open_member(config, &mut storage, recovered, store, peer_tls).await?;
    let peers = start.peers.clone();
    let (node, cluster_id) = open_engine_node(config, &mut storage, start)?;
    if !is_new {
        // The engine holds everything through the applied index: the committed entries
        // after it are applied again from the WAL once the loop runs.
        let replaying_entries = node
            .raft()
            .commit_index()
            .saturating_sub(node.applied_index());
        info!(
            snapshot_index = storage.snapshot_index(),
            wal_entries,
            replaying_entries,
            last_index = node.raft().last_index(),
            commit_index = node.raft().commit_index(),
            applied_index = node.applied_index(),
            revision = node.store().current_revision(),
            took_ms = u64::try_from(opening.elapsed().as_millis()).unwrap_or(u64::MAX),
            "recovered the data dir"
        );
    }
    Ok(Opened {
        node,
        storage,
        cluster_id,
        peers,
    })
}

/// Where a restart would find an existing member's data dir (see [`recover_existing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The last index of the Raft log recovered.
    pub last_index: u64,
    /// The store's applied index once opened (the engine's durable commit).
    pub applied_index: u64,
    /// The snapshot marker the log starts after.
    pub snapshot_index: u64,
}

/// Opens an existing member's data dir exactly as a restart does, without serving: the
/// simulator opens a crash image of a running member's disk with it ("had it crashed now,
/// would it start?"). `None` for a data dir that holds no member yet.
pub fn recover_existing<D: Disk + Send + 'static>(
    config: &ServerConfig,
    disk: D,
) -> anyhow::Result<Option<Recovery>> {
    let (mut storage, recovered) = open_storage(config, disk)?;
    if recovered.is_new {
        return Ok(None);
    }
    let start = crate::bootstrap::open_existing(config, &mut storage, recovered)?;
    let (node, _) = open_engine_node(config, &mut storage, start)?;
    Ok(Some(Recovery {
        last_index: node.raft().last_index(),
        applied_index: node.applied_index(),
        snapshot_index: storage.snapshot_index(),
    }))
}

fn open_storage<D: Disk>(
    config: &ServerConfig,
    disk: D,
) -> anyhow::Result<(Storage<D>, keel_storage::Recovered)> {
    let (storage, recovered) = Storage::open(disk, config.storage.clone())
        .with_context(|| format!("cannot open the data dir {}", config.data_dir.display()))?;
    for repair in &recovered.repairs {
        warn!(%repair, "repaired the data dir");
    }
    Ok((storage, recovered))
}

/// Opens the store's engine beside `storage` and the node over both; returns the node and
/// the cluster id as the data dir knows it (0 while unknown).
fn open_engine_node<D: Disk + Send + 'static>(
    config: &ServerConfig,
    storage: &mut Storage<D>,
    start: crate::bootstrap::Start,
) -> anyhow::Result<(Node, u64)> {
    let mut identity = start.identity;
    let node_config = node_config(config, identity.member_id);
    let mut engine_disk = storage
        .disk()
        .share()
        .context("cannot open the data dir again")?;
    snapshot_stream::remove_received_engines(&mut engine_disk)
        .context("cannot remove the partly received snapshots in the data dir")?;
    let location = engine_disk.location(STORE_FILE);
    let engine = RedbEngine::open(engine_disk, config.engine_cache_size_bytes)
        .with_context(|| format!("cannot open the store's engine {location}"))?;
    let store = Store::open(Box::new(engine), node_config.store)
        .with_context(|| format!("cannot open the store in {location}"))?;
    let (node, rebased) = Node::open(node_config, start.initial, store, &location)
        .context("cannot start the node")?;
    if let Some(marker) = rebased {
        warn!(
            index = marker.meta.index,
            "the store's engine is ahead of the Raft log (a leader's snapshot was being \
             installed): the log restarts from the engine"
        );
        storage
            .install_snapshot(&marker)
            .context("cannot reset the Raft log to the store's engine")?;
    }
    match (identity.cluster_id, node.cluster_id()) {
        (0, 0) => {}
        (0, known) => {
            identity.cluster_id = known;
            storage
                .save_identity(identity)
                .context("cannot record the cluster id in the data dir")?;
        }
        (kept, known) if known != 0 && kept != known => bail!(
            "the data dir {} says this member belongs to cluster {kept:x}, but its data is \
             cluster {known:x}'s: {}",
            config.data_dir.display(),
            keel_storage::CORRUPTION_REMEDY
        ),
        _ => {}
    }
    Ok((node, identity.cluster_id))
}

/// What opening a data dir gives the server.
struct Opened<D: Disk> {
    node: Node,
    storage: Storage<D>,
    /// The cluster's id as the data dir knows it (0 while unknown).
    cluster_id: u64,
    /// Whom to dial until the node knows the members (see `bootstrap::Start::peers`).
    peers: Vec<keel_core::node::Member>,
}

/// Starts a server on `disk` with the given listeners.
pub async fn start<D: Disk + Send + 'static>(
    config: &ServerConfig,
    disk: D,
    clients: Vec<Listener>,
    peers: Vec<Listener>,
) -> anyhow::Result<RunningServer> {
    start_hooked(config, disk, clients, peers, Hooks::default()).await
}

/// A bound socket to serve on, and whether it speaks TLS (an `https://` listen URL).
#[derive(Debug)]
pub struct Listener {
    pub socket: TcpListener,
    pub https: bool,
}

impl Listener {
    pub fn plain(socket: TcpListener) -> Listener {
        Listener {
            socket,
            https: false,
        }
    }
}

/// `start`, with the simulator's hooks: an inspector that sees the node after every batch,
/// a handle that skews the server's clock.
pub async fn start_hooked<D: Disk + Send + 'static>(
    config: &ServerConfig,
    disk: D,
    clients: Vec<Listener>,
    peers: Vec<Listener>,
    hooks: Hooks,
) -> anyhow::Result<RunningServer> {
    let tls = Tls::load(config)?;
    // The peer port answers from the start: members bootstrapping together ask each other
    // whether they ran before (see `crate::bootstrap`), and must not wait for each other.
    // It takes Raft messages once this member knows who it is.
    let (local_id, local_id_rx) = watch::channel(0);
    let cluster_id = transport::ClusterId::new(0);
    let stats = Arc::new(TransportStats::default());
    let (request_tx, requests) = mpsc::channel(REQUEST_QUEUE);
    let election = config.heartbeat_interval * config.election_ticks;
    let handle = NodeHandle::new(request_tx, Duration::from_secs(5) + 2 * election);
    let members_view = MembersView::default();
    let hints = transport::DialHints::default();
    let (peer_tx, peer_inbox) = mpsc::channel(transport::PEER_QUEUE_MESSAGES);
    let peer_port = transport::PeerPort {
        local_id: local_id_rx,
        cluster_id: cluster_id.clone(),
        max_message_bytes: MAX_PEER_MESSAGE_BYTES,
        inbox: peer_tx,
        stats: stats.clone(),
        desk: AnswerDesk {
            members: members_view.clone(),
            node: handle.clone(),
        },
        snapshots: Arc::new(DiskInbox::new(
            disk.share().context("cannot open the data dir again")?,
            config.engine_cache_size_bytes,
        )),
        hints: hints.clone(),
    };
    for listener in peers {
        let tls = tls.peer_server.clone().filter(|_| listener.https);
        tokio::spawn(peer_port.clone().serve(listener.socket, tls));
    }
    let Opened {
        node,
        storage,
        cluster_id: kept_cluster_id,
        peers: first_peers,
    } = open_node(config, disk, tls.peer_client.as_ref()).await?;
    let member_id = node.id();
    // A joining member that does not know it yet learns it from the first peer that dials.
    cluster_id.learn(match node.cluster_id() {
        0 => kept_cluster_id,
        known => known,
    });
    members_view.set(node.members());
    let _ = local_id.send(member_id);
    let metrics = Metrics::new(stats.clone());
    let (report_tx, peer_reports) = mpsc::unbounded_channel();
    let mut transport = Transport::new(
        member_id,
        cluster_id.clone(),
        report_tx,
        stats,
        transport::Dialing {
            tls: tls.peer_client.clone(),
            own_peer_urls: config.advertise_peer_urls.clone(),
            hints,
        },
    );
    transport.set_peers(&known_peers(&node, &first_peers));

    let (watch_tx, watch_opens) = mpsc::channel::<WatchOpen>(1024);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let settings = loop_settings(config, hooks, &handle, &members_view);
    // Random, not from the wall clock, which may have gone back since the last run.
    let first_request_id = crate::random::u64() >> 2;
    let server_loop = ServerLoop::new(
        node,
        storage,
        transport,
        settings,
        metrics.clone(),
        first_request_id,
    )?;
    let inputs = LoopInputs {
        requests,
        watch_opens,
        peer_inbox,
        peer_reports,
        shutdown: shutdown_rx,
    };
    let server_loop = tokio::spawn(server_loop.run(inputs));

    let api = api(config, &handle, &cluster_id, member_id, tls.client_client);
    let max_message_bytes =
        usize::try_from(config.max_request_bytes + GRPC_OVERHEAD_BYTES).unwrap_or(usize::MAX);
    serve_metrics(config, &handle, &metrics).await?;
    tokio::spawn(keep_watchers_moving(
        handle.clone(),
        config.compat.watch_progress_notify_interval,
    ));
    let router = client_router(&api, &metrics, &watch_tx, max_message_bytes, config);
    let checker = crate::corruption::Checker {
        node: handle.clone(),
        members: members_view.clone(),
        member_id,
        cluster_id: cluster_id.clone(),
        peer_tls: tls.peer_client.clone(),
    };
    start_corruption_checks(checker, config).await?;
    serve_client_listeners(router, clients, tls.client_server);
    info!(
        name = config.name,
        id = format!("{member_id:x}"),
        cluster = format!("{:x}", cluster_id.get()),
        "serving"
    );
    Ok(RunningServer {
        handle,
        metrics,
        watch_opens: watch_tx,
        member_id,
        shutdown,
        server_loop,
    })
}

/// A member's TLS ends, loaded (so a bad certificate file stops start-up).
struct Tls {
    client_server: Option<ServerTls>,
    /// For requests forwarded to other members' client URLs.
    client_client: Option<ClientTls>,
    peer_server: Option<ServerTls>,
    peer_client: Option<ClientTls>,
}

impl Tls {
    fn load(config: &ServerConfig) -> anyhow::Result<Tls> {
        let server = |settings: &Option<TlsSettings>, alpn, what| {
            settings
                .clone()
                .map(|s| ServerTls::new(s, alpn, what))
                .transpose()
                .with_context(|| format!("cannot set up TLS for the {what}"))
        };
        let client = |settings: &Option<TlsSettings>, alpn, what| {
            settings
                .clone()
                .map(|s| ClientTls::new(s, alpn, what))
                .transpose()
                .with_context(|| format!("cannot set up TLS for the {what}"))
        };
        Ok(Tls {
            client_server: server(&config.client_tls, CLIENT_ALPN, "client listener")?,
            client_client: client(&config.client_tls, GRPC_ALPN, "client connections")?,
            peer_server: server(&config.peer_tls, PEER_ALPN, "peer listener")?,
            peer_client: client(&config.peer_tls, PEER_ALPN, "peer connections")?,
        })
    }
}

/// Whom the transport dials first: the members the node knows, or (a member that does not
/// know them yet) the peers it was started with.
fn known_peers(node: &Node, first_peers: &[keel_core::node::Member]) -> Vec<(u64, Vec<String>)> {
    let known = |m: &keel_core::node::Member| (m.id, m.peer_urls.clone());
    if node.members().is_empty() {
        first_peers.iter().map(known).collect()
    } else {
        node.members().iter().map(known).collect()
    }
}

fn loop_settings(
    config: &ServerConfig,
    hooks: Hooks,
    handle: &NodeHandle,
    members_view: &MembersView,
) -> LoopSettings {
    LoopSettings {
        tick: config.heartbeat_interval,
        name: config.name.clone(),
        advertise_peer_urls: config.advertise_peer_urls.clone(),
        snapshot_count: config.snapshot_count,
        backend_batch_interval: config.backend_batch_interval,
        backend_batch_limit: config.backend_batch_limit,
        engine_cache_size_bytes: config.engine_cache_size_bytes,
        hooks,
        learner: handle.learner_flag(),
        members_view: members_view.clone(),
    }
}

/// What every client service shares.
fn api(
    config: &ServerConfig,
    handle: &NodeHandle,
    cluster_id: &transport::ClusterId,
    member_id: u64,
    client_tls: Option<ClientTls>,
) -> Api {
    Api {
        handle: handle.clone(),
        cluster_id: cluster_id.clone(),
        member_id,
        cluster_token: config.cluster_token.clone(),
        backup_dir: config.data_dir.clone(),
        client_cert_auth: config
            .client_tls
            .as_ref()
            .is_some_and(|t| t.client_cert_auth),
        client_tls,
        jwt: config.auth.jwt.clone(),
    }
}

/// etcd's gRPC services on the client port.
fn client_router(
    api: &Api,
    metrics: &Arc<Metrics>,
    watch_tx: &mpsc::Sender<WatchOpen>,
    max_message_bytes: usize,
    config: &ServerConfig,
) -> ClientRouter {
    let handle = &api.handle;
    // One of each: the Lock and Election services call the same KV and Lease services.
    let kv_service = KvService::new(api.clone());
    let lease_service = LeaseService::new(api.clone());
    let kv = KvServer::new(kv_service.clone())
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(usize::MAX);
    let watch_service = WatchService::new(
        api.clone(),
        watch_tx.clone(),
        metrics.clone(),
        max_message_bytes,
    );
    let watch = WatchServer::new(watch_service.clone())
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(usize::MAX);
    let refuse_on_learner = crate::grpc::refuse_on_learner(handle.learner_flag());
    let lease = LeaseServer::with_interceptor(lease_service.clone(), refuse_on_learner.clone());
    let cluster = ClusterServer::with_interceptor(
        ClusterService::new(api.clone()),
        refuse_on_learner.clone(),
    );
    let maintenance = MaintenanceServer::new(MaintenanceService::new(api.clone()))
        .max_encoding_message_size(usize::MAX);
    let auth = AuthServer::with_interceptor(
        AuthService::new(api.clone(), config.auth.bcrypt_cost),
        refuse_on_learner.clone(),
    );
    let recipes = Recipes {
        api: api.clone(),
        kv: kv_service,
        lease: lease_service,
        watch: watch_service.clone(),
    };
    let lock =
        LockServer::with_interceptor(LockService::new(recipes.clone()), refuse_on_learner.clone());
    let election =
        ElectionServer::with_interceptor(ElectionService::new(recipes), refuse_on_learner);
    client_server(handle, metrics, max_message_bytes, config.compat.grpc)
        .add_service(kv)
        .add_service(watch)
        .add_service(lease)
        .add_service(cluster)
        .add_service(maintenance)
        .add_service(auth)
        .add_service(lock)
        .add_service(election)
}

/// The `--listen-metrics-urls` listeners (the simulator has none).
#[cfg(not(madsim))]
async fn serve_metrics(
    config: &ServerConfig,
    handle: &NodeHandle,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<()> {
    let tls = config
        .metrics_tls
        .clone()
        .map(|s| ServerTls::new(s, crate::tls::METRICS_ALPN, "metrics listener"))
        .transpose()
        .context("cannot set up TLS for the metrics listener")?;
    let listeners = config
        .compat
        .listen_metrics
        .iter()
        .map(|url| crate::http::MetricsListener {
            addr: url.addr,
            tls: tls.clone().filter(|_| url.https),
        })
        .collect();
    crate::http::serve_metrics_listeners(listeners, handle.clone(), metrics.clone()).await
}

#[cfg(madsim)]
async fn serve_metrics(_: &ServerConfig, _: &NodeHandle, _: &Arc<Metrics>) -> anyhow::Result<()> {
    Ok(())
}

/// The data corruption checks: at start when asked, then every `--experimental-corrupt-check-time`.
async fn start_corruption_checks(
    checker: crate::corruption::Checker,
    config: &ServerConfig,
) -> anyhow::Result<()> {
    if config.corruption.initial {
        checker.initial_check().await?;
    }
    tokio::spawn(checker.run_periodic(config.corruption));
    Ok(())
}

/// The client port's gRPC server. In real mode its [`ClientHttp`](crate::http::ClientHttp)
/// layer adds the JSON gateway and etcd's HTTP endpoints on the same port (so HTTP/1.1 is
/// accepted next to HTTP/2); simulated tonic serves gRPC only.
#[cfg(not(madsim))]
fn client_server(
    handle: &NodeHandle,
    metrics: &Arc<Metrics>,
    max_message_bytes: usize,
    limits: crate::config::compat::GrpcLimits,
) -> tonic::transport::Server<ClientLayers> {
    // A JSON body holds the message in base64 (4/3 of its size) plus names and quotes.
    let max_body_bytes = max_message_bytes.saturating_mul(2);
    let http = crate::http::ClientHttp::new(handle.clone(), metrics.clone(), max_body_bytes);
    tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(limits.keepalive_interval)
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(http)
}

#[cfg(not(madsim))]
type ClientLayers =
    tower::layer::util::Stack<crate::http::ClientHttp, tower::layer::util::Identity>;

#[cfg(not(madsim))]
type ClientRouter = tonic::transport::server::Router<ClientLayers>;
#[cfg(madsim)]
type ClientRouter = tonic::transport::server::Router;

#[cfg(madsim)]
fn client_server(
    _: &NodeHandle,
    _: &Arc<Metrics>,
    _: usize,
    _: crate::config::compat::GrpcLimits,
) -> tonic::transport::Server {
    tonic::transport::Server::builder()
}

/// Serves every client listener (`https://` ones with TLS), each with its own task.
#[cfg(not(madsim))]
fn serve_client_listeners(
    router: tonic::transport::server::Router<ClientLayers>,
    listeners: Vec<Listener>,
    tls: Option<ServerTls>,
) {
    for listener in listeners {
        let client_tls = tls.clone().filter(|_| listener.https);
        let router = router.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_clients(router, listener.socket, client_tls).await {
                warn!(%error, "client listener stopped");
            }
        });
    }
}

/// The simulator's members have one client address (and simulated tonic's router cannot be
/// cloned for more).
#[cfg(madsim)]
fn serve_client_listeners(
    router: tonic::transport::server::Router,
    listeners: Vec<Listener>,
    tls: Option<ServerTls>,
) {
    let Some(listener) = listeners.into_iter().next() else {
        return;
    };
    tokio::spawn(async move {
        if let Err(error) = serve_clients(router, listener.socket, tls).await {
            warn!(%error, "client listener stopped");
        }
    });
}

/// Serves gRPC on the client listener. One of the few places where the simulator differs:
/// madsim's tonic serves on an address of its simulated network rather than a TCP incoming.
#[cfg(not(madsim))]
async fn serve_clients(
    router: tonic::transport::server::Router<ClientLayers>,
    listener: TcpListener,
    tls: Option<ServerTls>,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;

    use crate::http::authority::AuthorityFix;
    if let Some(tls) = tls {
        let incoming = crate::tls::incoming(listener, tls).map(|c| c.map(AuthorityFix::new));
        return Ok(router.serve_with_incoming(incoming).await?);
    }
    // Without TCP_NODELAY a small response waits for the client's delayed ACK (40 ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|c| c.map(AuthorityFix::new));
    Ok(router.serve_with_incoming(incoming).await?)
}

/// The simulator runs no TLS (its members are configured without).
#[cfg(madsim)]
async fn serve_clients(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    _tls: Option<ServerTls>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(router.serve(addr).await?)
}
