//! The simulated world: keel servers on madsim nodes, each running the very code of the
//! `keel` binary (`keel_net::server::start`) on a `SimDisk` the world keeps, so a disk
//! outlives its node's crash as a real one outlives a process.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use keel_core::mvcc::WatchConfig;
use keel_net::clock::ClockSkew;
use keel_net::config::{ServeArgs, ServerConfig, Tuning};
use keel_storage::{Faults, SimDisk, SimDiskConfig, StorageOptions};
use madsim::runtime::{Handle, NodeHandle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;
/// madsim's own latency for a message, restored after a slow spell.
pub const NORMAL_LATENCY: std::ops::Range<Duration> =
    Duration::from_millis(1)..Duration::from_millis(10);

/// How a world is built.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    pub servers: usize,
    pub seed: u64,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_count: u64,
    /// Log entries kept after a snapshot (`--experimental-snapshot-catchup-entries`): a
    /// follower further behind is sent the snapshot.
    pub snapshot_catchup_entries: u64,
    pub faults: Faults,
    /// `--experimental-initial-corrupt-check`.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time` (off when `None`).
    pub corrupt_check: Option<Duration>,
    /// `--backend-batch-interval`: how often the store's engine commits durably.
    pub backend_batch_interval: Duration,
    /// `--index-checkpoint-bytes`: chosen by the seed, so that index rows reach the engine at
    /// every commit in some runs and wait across many in others.
    pub index_checkpoint_bytes: u64,
    /// The core's internal limits, drawn from the seed (see [`tuning_for_seed`]).
    pub tuning: Tuning,
    /// WAL segment size: small ones make segments roll over and get released often.
    pub segment_size_bytes: u64,
    /// When set, each member draws its own local knobs from this seed and its index (see
    /// [`MemberKnobs`]) instead of sharing the cluster's: operators set flags per member.
    pub mixed_members: Option<u64>,
}

/// A member's own flags and limits that must never change what it applies: members that
/// differ in them must hold the same data (a member's `--quota-backend-bytes` once did,
/// sim/mutants/28; the quota is not drawn here, since one that fills stops writes: the
/// operators' lowered-quota fault covers it). Drawn per member in mixed worlds
/// ([`WorldConfig::mixed_members`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MemberKnobs {
    pub index_checkpoint_bytes: u64,
    pub compaction_batch_revisions: usize,
    pub backend_batch_interval: Duration,
    pub engine_cache_size_bytes: usize,
}

impl MemberKnobs {
    /// Member `index`'s draw in a world mixed with `mix_seed`.
    pub fn draw(mix_seed: u64, index: usize) -> MemberKnobs {
        let salt = 0x6b6e_6f62_7300 ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9);
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed ^ salt);
        let default = Tuning::default();
        MemberKnobs {
            index_checkpoint_bytes: *[0, 4 * 1024, 256 * 1024].choose(&mut rng).unwrap_or(&0),
            compaction_batch_revisions: *[1, 64, default.compaction_batch_revisions]
                .choose(&mut rng)
                .unwrap_or(&1),
            backend_batch_interval: *[
                Duration::from_millis(10),
                Duration::from_millis(100),
                Duration::from_secs(2),
            ]
            .choose(&mut rng)
            .unwrap_or(&Duration::from_millis(100)),
            engine_cache_size_bytes: *[1024 * 1024, keel_storage::DEFAULT_ENGINE_CACHE_SIZE_BYTES]
                .choose(&mut rng)
                .unwrap_or(&keel_storage::DEFAULT_ENGINE_CACHE_SIZE_BYTES),
        }
    }
}

impl WorldConfig {
    pub fn new(servers: usize, seed: u64) -> WorldConfig {
        WorldConfig {
            servers,
            seed,
            heartbeat_ms: 50,
            election_ms: 500,
            snapshot_count: 1_000,
            snapshot_catchup_entries: 500,
            faults: Faults::none(),
            initial_corrupt_check: false,
            corrupt_check: None,
            backend_batch_interval: Duration::from_millis(100),
            index_checkpoint_bytes: [0, 4 * 1024, 256 * 1024][(seed % 3) as usize],
            tuning: tuning_for_seed(seed),
            segment_size_bytes: segment_size_for_seed(seed),
            mixed_members: None,
        }
    }

    /// Member `index`'s own knobs: the cluster's, or its own draw in a mixed world.
    pub fn member_knobs(&self, index: usize) -> MemberKnobs {
        match self.mixed_members {
            Some(mix_seed) => MemberKnobs::draw(mix_seed, index),
            None => MemberKnobs {
                index_checkpoint_bytes: self.index_checkpoint_bytes,
                compaction_batch_revisions: self.tuning.compaction_batch_revisions,
                backend_batch_interval: self.backend_batch_interval,
                engine_cache_size_bytes: keel_storage::DEFAULT_ENGINE_CACHE_SIZE_BYTES,
            },
        }
    }
}

/// One of each limit's extreme or default values per seed, each drawn on its own: a new
/// leader's entries sent one per Append (so a follower can acknowledge an earlier term's
/// entries before the leader's own: Raft's Figure 8), one Append in flight, one committed
/// entry per Ready (applying lags committing), watch catch-up cut after one event or one
/// revision, compaction one revision at a time.
pub fn tuning_for_seed(seed: u64) -> Tuning {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7475_6e69_6e67);
    let default = Tuning::default();
    let mut pick = |choices: &[usize]| *choices.choose(&mut rng).unwrap_or(&1);
    Tuning {
        max_append_bytes: pick(&[1, 2 * 1024, default.max_append_bytes]),
        max_inflight_appends: pick(&[1, 4, default.max_inflight_appends]),
        max_committed_bytes_per_ready: pick(&[1, 8 * 1024, default.max_committed_bytes_per_ready]),
        watch: WatchConfig {
            max_pending_events_per_stream: pick(&[
                1,
                16,
                default.watch.max_pending_events_per_stream,
            ]),
            max_catch_up_revisions: pick(&[1, 8, default.watch.max_catch_up_revisions]),
            max_watchers_per_sync: pick(&[1, default.watch.max_watchers_per_sync]),
        },
        compaction_batch_revisions: pick(&[1, 64, default.compaction_batch_revisions]),
    }
}

fn segment_size_for_seed(seed: u64) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0073_6567_6d65_6e74);
    *[16 * 1024, 64 * 1024, 1024 * 1024]
        .choose(&mut rng)
        .unwrap_or(&(1024 * 1024))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerIndex(pub usize);

/// One server machine: its madsim node and what the harness knows of it.
#[derive(Clone)]
pub struct Server {
    pub name: String,
    pub ip: IpAddr,
    pub node: NodeHandle,
    /// The flags it was first started with (its founding identity).
    pub config: ServerConfig,
    /// The flags its next start uses: an operator may change them (a new peer URL, joining
    /// as `existing` after a replacement).
    pub flags: Arc<Mutex<ServerConfig>>,
    /// What the server process last did (see [`ServerState`]).
    pub state: Arc<Mutex<ServerState>>,
    /// The machine's clock: the nemesis makes it run fast or slow, or leap. It belongs to
    /// the machine, so it stays skewed across a restart of the server.
    pub clock: ClockSkew,
}

/// Where a server's process stands, as the harness saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ServerState {
    /// Starting (or restarting) and not serving yet.
    #[default]
    Starting,
    /// Serving as this member id.
    Serving { member_id: u64 },
    /// Refused to start (a damaged disk, a data dir that lost its state), with why.
    Refused(String),
    /// Stopped by itself after it served: removed from the cluster, a fatal error, its data
    /// dir found to have gone back in time.
    Stopped(String),
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

impl Server {
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, CLIENT_PORT)
    }

    pub fn client_url(&self) -> String {
        format!("http://{}", self.client_addr())
    }
}

use crate::crash_probe::{Damaged, Disks, ServerInspector};

pub struct World {
    pub config: WorldConfig,
    pub servers: Vec<Server>,
    /// A machine for the harness's own requests (finding the leader, final checks).
    pub control: NodeHandle,
    /// Servers crashed and not restarted yet.
    pub crashed: std::collections::BTreeSet<usize>,
    /// Servers whose disk was damaged on purpose: they may refuse to start.
    pub damaged: Damaged,
    /// Raft's invariants, checked across every server of the world.
    pub invariants: Arc<crate::invariants::RaftInvariants>,
    disks: Disks,
    /// Empty disks made for each server after its first (see [`World::empty_disk`]).
    disks_made: BTreeMap<usize, u64>,
    /// What operators' faults broke (see `crate::operator`).
    pub operator_log: crate::operator::OperatorLog,
    handle: Handle,
    next_client_ip: u8,
    /// The client machines made, to stop at the end ([`World::shut_down`]).
    client_nodes: Vec<madsim::task::NodeId>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.config.seed)
            .field("servers", &self.servers.len())
            .finish()
    }
}

pub fn server_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        0,
        0,
        u8::try_from(index + 1).expect("at most 254 servers"),
    ))
}

/// Server `index` of a world's first members (`--initial-cluster-state new`).
fn server_config(config: &WorldConfig, index: usize) -> ServerConfig {
    let members: Vec<usize> = (0..config.servers).collect();
    member_config(config, index, &members, "new")
}

/// Server `index` whose `--initial-cluster` lists `members` (indexes), in `state` (`new`,
/// or `existing` for one added to a running cluster).
fn member_config(
    config: &WorldConfig,
    index: usize,
    members: &[usize],
    state: &str,
) -> ServerConfig {
    with_peer_ports(config, index, members, state, |_| PEER_PORT)
}

/// As [`member_config`], with each member's peer URL on `peer_port(member)`.
fn with_peer_ports(
    config: &WorldConfig,
    index: usize,
    members: &[usize],
    state: &str,
    peer_port: impl Fn(usize) -> u16,
) -> ServerConfig {
    let url = |i: usize, port: u16| format!("http://{}:{port}", server_ip(i));
    let initial_cluster = members
        .iter()
        .map(|&i| format!("s{}={}", i + 1, url(i, peer_port(i))))
        .collect::<Vec<_>>()
        .join(",");
    let knobs = config.member_knobs(index);
    let corrupt_check_ms = config.corrupt_check.map_or(0, |d| d.as_millis());
    let args = [
        "keel".to_string(),
        format!(
            "--experimental-initial-corrupt-check={}",
            config.initial_corrupt_check
        ),
        format!("--experimental-corrupt-check-time={corrupt_check_ms}ms"),
        format!(
            "--backend-batch-interval={}ms",
            knobs.backend_batch_interval.as_millis()
        ),
        format!("--index-checkpoint-bytes={}", knobs.index_checkpoint_bytes),
        format!(
            "--engine-cache-size-bytes={}",
            knobs.engine_cache_size_bytes
        ),
        format!("--name=s{}", index + 1),
        format!("--data-dir=s{}.keel", index + 1),
        format!("--listen-client-urls={}", url(index, CLIENT_PORT)),
        format!("--advertise-client-urls={}", url(index, CLIENT_PORT)),
        format!("--listen-peer-urls={}", url(index, peer_port(index))),
        format!(
            "--initial-advertise-peer-urls={}",
            url(index, peer_port(index))
        ),
        format!("--initial-cluster={initial_cluster}"),
        format!("--initial-cluster-state={state}"),
        format!("--heartbeat-interval={}", config.heartbeat_ms),
        format!("--election-timeout={}", config.election_ms),
        format!("--snapshot-count={}", config.snapshot_count),
        format!(
            "--experimental-snapshot-catchup-entries={}",
            config.snapshot_catchup_entries
        ),
    ];
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut server = Cli::try_parse_from(args)
        .expect("the world's flags parse")
        .serve
        .resolve()
        .expect("the world's flags are consistent");
    // Small segments: the simulated disk holds them in memory.
    server.storage = StorageOptions {
        segment_size_bytes: config.segment_size_bytes,
        ..StorageOptions::default()
    };
    server.tuning = Tuning {
        compaction_batch_revisions: knobs.compaction_batch_revisions,
        ..config.tuning.clone()
    };
    server
}

/// The port of peer URL `url` (`PEER_PORT` if it names none).
pub fn peer_port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(PEER_PORT)
}

/// A new machine with a fresh disk that runs server `index` at once.
fn spawn_server(
    handle: &Handle,
    config: &WorldConfig,
    (disks, invariants, damaged): (&Disks, &Arc<crate::invariants::RaftInvariants>, &Damaged),
    index: usize,
    server_config: ServerConfig,
) -> Server {
    let disk_seed = config.seed.wrapping_mul(31).wrapping_add(index as u64);
    let disk = SimDisk::new(SimDiskConfig::new(disk_seed, config.faults));
    disks.lock().expect("disks").insert(index, disk);
    let ip = server_ip(index);
    let init_disks = disks.clone();
    let flags = Arc::new(Mutex::new(server_config.clone()));
    let state = Arc::new(Mutex::new(ServerState::Starting));
    let (init_flags, init_state) = (flags.clone(), state.clone());
    let inspector = Arc::new(ServerInspector {
        invariants: invariants.clone(),
        disks: disks.clone(),
        damaged: damaged.clone(),
        server: index,
        flags: flags.clone(),
    });
    let clock = ClockSkew::default();
    let init_clock = clock.clone();
    let node = handle
        .create_node()
        .name(format!("s{}", index + 1))
        .ip(ip)
        .init(move || {
            let config = init_flags.lock().expect("flags").clone();
            run_server(
                config,
                init_disks.clone(),
                index,
                init_state.clone(),
                keel_net::server_loop::Hooks {
                    inspector: Some(inspector.clone()),
                    clock: init_clock.clone(),
                },
            )
        })
        .build();
    Server {
        name: format!("s{}", index + 1),
        ip,
        node,
        config: server_config,
        flags,
        state,
        clock,
    }
}

impl World {
    /// Starts a new server on a new machine to join the running cluster, as an operator
    /// does after `MemberAdd`: `--initial-cluster` lists `members` (indexes, the new one
    /// included) and `--initial-cluster-state existing`. Returns its index.
    pub fn add_server(&mut self, members: &[usize]) -> usize {
        let index = self.servers.len();
        assert!(
            members.contains(&index),
            "the new server is one of the members"
        );
        let server_config = member_config(&self.config, index, members, "existing");
        let server = spawn_server(
            &self.handle,
            &self.config,
            (&self.disks, &self.invariants, &self.damaged),
            index,
            server_config,
        );
        self.servers.push(server);
        index
    }

    /// Creates the servers (they start at once) with fresh disks.
    pub fn start(config: WorldConfig) -> World {
        let handle = Handle::current();
        let disks: Disks = Arc::new(Mutex::new(BTreeMap::new()));
        let invariants = Arc::new(crate::invariants::RaftInvariants::default());
        let damaged = Damaged::default();
        let mut servers = Vec::new();
        for index in 0..config.servers {
            let server_config = server_config(&config, index);
            servers.push(spawn_server(
                &handle,
                &config,
                (&disks, &invariants, &damaged),
                index,
                server_config,
            ));
        }
        let control = handle
            .create_node()
            .name("control")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)))
            .build();
        World {
            config,
            servers,
            control,
            crashed: std::collections::BTreeSet::new(),
            damaged,
            invariants,
            disks,
            disks_made: BTreeMap::new(),
            operator_log: Default::default(),
            handle,
            next_client_ip: 1,
            client_nodes: Vec::new(),
        }
    }

    /// Stops every server and client machine, dropping their tasks. At the end of a run:
    /// a task blocked on a channel that its own future holds the other end of is freed
    /// by nothing else, and each run's disks and buffers would stay in the process.
    pub fn shut_down(&mut self) {
        let clients = std::mem::take(&mut self.client_nodes);
        let servers = self.servers.iter().map(|s| s.node.id());
        for node in servers.chain(clients).collect::<Vec<_>>() {
            self.handle.kill(node);
        }
    }

    /// A new machine for clients, on its own address.
    pub fn client_node(&mut self, name: &str) -> NodeHandle {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 1, self.next_client_ip));
        self.next_client_ip = self.next_client_ip.wrapping_add(1).max(1);
        let node = self.handle.create_node().name(name).ip(ip).build();
        self.client_nodes.push(node.id());
        node
    }

    /// Both directions of every link between a client machine and `servers`.
    pub fn client_links_to(
        &self,
        servers: &[madsim::task::NodeId],
    ) -> Vec<(madsim::task::NodeId, madsim::task::NodeId)> {
        let clients = self.client_nodes.iter();
        clients
            .flat_map(|&c| servers.iter().flat_map(move |&s| [(c, s), (s, c)]))
            .collect()
    }

    /// Power loss: the process dies and the disk keeps only what was synced (or torn, as
    /// the fault settings say).
    pub fn crash(&mut self, index: usize) {
        self.crashed.insert(index);
        *self.servers[index].state.lock().expect("state") = ServerState::Stopped("crashed".into());
        self.handle.kill(self.servers[index].node.id());
        let mut disks = self.disks.lock().expect("disks");
        if let Some(disk) = disks.get(&index) {
            let survivor = disk.crash();
            disks.insert(index, survivor);
        }
    }

    /// Boots a crashed server again from its disk.
    pub fn restart(&mut self, index: usize) {
        self.crashed.remove(&index);
        *self.servers[index].state.lock().expect("state") = ServerState::Starting;
        self.handle.restart(self.servers[index].node.id());
    }

    /// Ends every fault: network healed, paused nodes resumed, crashed ones restarted,
    /// disks healthy, clocks at the right rate again.
    pub fn heal(&mut self) {
        let net = madsim::net::NetSim::current();
        let ids: Vec<madsim::task::NodeId> = self.servers.iter().map(|s| s.node.id()).collect();
        net.update_config(|c| {
            c.packet_loss_rate = 0.0;
            c.send_latency = NORMAL_LATENCY;
        });
        for &a in &ids {
            net.unclog_node(a);
            self.handle.resume(a);
            for &b in &ids {
                net.unclog_link(a, b);
            }
        }
        for index in 0..self.servers.len() {
            self.set_disk_faults(index, self.config.faults);
            self.servers[index].clock.set_rate_ppm(0);
        }
        let crashed: Vec<usize> = self.crashed.iter().copied().collect();
        for index in crashed {
            self.restart(index);
        }
    }

    pub fn disk(&self, index: usize) -> Option<SimDisk> {
        self.disks.lock().expect("disks").get(&index).cloned()
    }

    /// Puts `disk` in place of a server's disk (the server is down: crashed or stopped).
    pub fn replace_disk(&mut self, index: usize, disk: SimDisk) {
        self.disks.lock().expect("disks").insert(index, disk);
    }

    /// A new, empty disk for a server (its data dir wiped, or a new machine's disk).
    pub fn empty_disk(&mut self, index: usize) -> SimDisk {
        let disks = self.disks_made.entry(index).or_insert(0);
        *disks += 1;
        let seed = self
            .config
            .seed
            .wrapping_mul(31)
            .wrapping_add(index as u64)
            .wrapping_add(disks.wrapping_mul(0x9e37_79b9));
        SimDisk::new(SimDiskConfig::new(seed, self.config.faults))
    }

    /// What server `index`'s process last did.
    pub fn state(&self, index: usize) -> ServerState {
        self.servers[index].state.lock().expect("state").clone()
    }

    /// The member id server `index` serves as, if it serves (it changes when an operator
    /// replaces the member).
    pub fn member_id(&self, index: usize) -> Option<u64> {
        match self.state(index) {
            ServerState::Serving { member_id } => Some(member_id),
            _ => None,
        }
    }

    /// The flags server `index` will start with next time.
    pub fn flags(&self, index: usize) -> ServerConfig {
        self.servers[index].flags.lock().expect("flags").clone()
    }

    pub fn set_flags(&mut self, index: usize, flags: ServerConfig) {
        *self.servers[index].flags.lock().expect("flags") = flags;
    }

    /// The port server `index` listens for peers on, as its flags say.
    pub fn peer_port(&self, index: usize) -> u16 {
        let flags = self.flags(index);
        flags
            .advertise_peer_urls
            .first()
            .map_or(PEER_PORT, |url| peer_port_of(url))
    }

    /// Flags for server `index` in `state`, with its peer URL on `own_port` and every other
    /// member's `--initial-cluster` entry where that member listens now.
    fn current_flags(&self, index: usize, state: &str, own_port: u16) -> ServerConfig {
        let ports: Vec<u16> = (0..self.servers.len()).map(|i| self.peer_port(i)).collect();
        let members: Vec<usize> = (0..self.servers.len()).collect();
        let port = |i: usize| if i == index { own_port } else { ports[i] };
        with_peer_ports(&self.config, index, &members, state, port)
    }

    /// The flags of a member of this world that joins the running cluster as `existing`,
    /// with its peer URL on `peer_port` (the others keep theirs).
    pub fn joining_flags(&self, index: usize, peer_port: u16) -> ServerConfig {
        self.current_flags(index, "existing", peer_port)
    }

    /// The flags of server `index` moved to `peer_port` (after a `member update`), as an
    /// operator edits them: its own entry of `--initial-cluster` names the new URL too
    /// (once data exists the list is not read, but a start on an empty data dir checks it).
    pub fn moved_flags(&self, index: usize, peer_port: u16) -> ServerConfig {
        self.current_flags(index, "new", peer_port)
    }

    /// After server `moved` moved, every other server's `--initial-cluster` names its new
    /// URL, as an operator keeps the flags files in step with the member list: a member
    /// restarted on an empty data dir then asks the members where they are (the check that
    /// refuses a wiped member needs one of them to answer).
    pub fn relist_moved_member(&mut self, moved: usize) {
        for index in (0..self.servers.len()).filter(|&i| i != moved) {
            let flags = self.flags(index);
            let state = match flags.cluster_state {
                keel_net::config::ClusterState::New => "new",
                keel_net::config::ClusterState::Existing => "existing",
            };
            let relisted = self.current_flags(index, state, self.peer_port(index));
            self.set_flags(index, relisted);
        }
    }

    pub fn set_disk_faults(&self, index: usize, faults: Faults) {
        if let Some(disk) = self.disks.lock().expect("disks").get(&index) {
            disk.set_faults(faults);
        }
    }
}

/// What a server node runs: the keel server on its disk, until it stops. A fatal storage
/// error ends the server as it ends the real process (the node then idles until restarted).
async fn run_server(
    config: ServerConfig,
    disks: Disks,
    index: usize,
    state: Arc<Mutex<ServerState>>,
    hooks: keel_net::server_loop::Hooks,
) {
    let set = |new: ServerState| *state.lock().expect("state") = new;
    set(ServerState::Starting);
    let Some(disk) = disks.lock().expect("disks").get(&index).cloned() else {
        return;
    };
    let (Some(client), Some(peer)) = (
        config.listen_client.first().map(|u| u.addr),
        config.listen_peer.first().map(|u| u.addr),
    ) else {
        return;
    };
    let client = match tokio::net::TcpListener::bind(client).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot listen for clients");
            return;
        }
    };
    let peer = match tokio::net::TcpListener::bind(peer).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot listen for peers");
            return;
        }
    };
    let (clients, peers) = (
        vec![keel_net::server::Listener::plain(client)],
        vec![keel_net::server::Listener::plain(peer)],
    );
    match keel_net::server::start_hooked(&config, disk, clients, peers, hooks).await {
        Ok(running) => {
            set(ServerState::Serving {
                member_id: running.member_id,
            });
            let why = match running.wait().await {
                Ok(stopped) => format!("{stopped:?}"),
                Err(error) => {
                    tracing::error!(server = config.name, "server stopped: {error:#}");
                    format!("{error:#}")
                }
            };
            set(ServerState::Stopped(why));
        }
        Err(error) => {
            tracing::error!(server = config.name, "server failed to start: {error:#}");
            set(ServerState::Refused(format!("{error:#}")));
        }
    }
    // A stopped server's machine stays up but silent, like a crashed process.
    std::future::pending::<()>().await
}

/// How long a client waits for any one request before calling it indeterminate.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
