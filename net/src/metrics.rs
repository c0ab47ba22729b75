//! Prometheus metrics with etcd's names where keel has a counterpart, so etcd dashboards
//! and alerts work unchanged. Served at `/metrics` on the client port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::node::Node;
use keel_core::raft::Role;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::peer::transport::TransportStats;

/// A histogram per peer, labelled `To` with the peer's id in hexadecimal (etcd's label).
type PeerHistograms = Family<[(&'static str, String); 1], Histogram, fn() -> Histogram>;

/// Updated by the server loop and the transport; read when `/metrics` is scraped.
#[derive(Debug)]
pub struct Metrics {
    pub leader_changes: AtomicU64,
    pub proposals_committed: AtomicU64,
    /// The Raft term as of the last batch, for response headers built off the loop
    /// (watch responses).
    raft_term: AtomicU64,
    has_leader: Gauge,
    is_leader: Gauge,
    leader_changes_seen: Counter,
    proposals_committed_total: Gauge,
    proposals_applied_total: Gauge,
    proposals_pending: Gauge,
    proposals_failed: Counter,
    slow_applies: Counter,
    quota_backend_bytes: Gauge,
    db_total_size: Gauge,
    db_total_size_in_use: Gauge,
    keys_total: Gauge,
    watch_streams: Gauge,
    /// Counters etcd names without `_total`, which the text encoder would append to a
    /// `Counter`: kept as gauges that only go up.
    health_success: Gauge,
    health_failures: Gauge,
    current_revision: Gauge,
    compact_revision: Gauge,
    fsync_seconds: Histogram,
    backend_commit_seconds: Histogram,
    peer_sent_bytes: Counter,
    peer_received_bytes: Counter,
    peer_sent_failures: Counter,
    peer_round_trip_seconds: PeerHistograms,
    transport: Arc<TransportStats>,
    /// Counted by a layer on the client port's gRPC routes.
    #[cfg(not(madsim))]
    pub grpc: Arc<crate::grpc::metrics::GrpcMetrics>,
    registry: Registry,
}

impl Metrics {
    pub fn new(transport: Arc<TransportStats>) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let has_leader = Gauge::default();
        let is_leader = Gauge::default();
        let leader_changes_seen = Counter::default();
        let proposals_committed_total = Gauge::default();
        let proposals_applied_total = Gauge::default();
        let proposals_pending = Gauge::default();
        let proposals_failed = Counter::default();
        let slow_applies = Counter::default();
        let quota_backend_bytes = Gauge::default();
        let db_total_size = Gauge::default();
        let db_total_size_in_use = Gauge::default();
        let keys_total = Gauge::default();
        let watch_streams = Gauge::default();
        let health_success = Gauge::default();
        let health_failures = Gauge::default();
        let current_revision = Gauge::default();
        let compact_revision = Gauge::default();
        // etcd's buckets: 1 ms doubling to about 4 s.
        let fsync_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let backend_commit_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let peer_sent_bytes = Counter::default();
        let peer_received_bytes = Counter::default();
        let peer_sent_failures = Counter::default();
        // etcd's buckets: 0.1 ms doubling to about 0.8 s.
        let peer_round_trip_seconds: PeerHistograms =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 14)));
        registry.register(
            "etcd_server_has_leader",
            "Whether a leader exists: 1 if yes, 0 if not",
            has_leader.clone(),
        );
        registry.register(
            "etcd_server_is_leader",
            "Whether this member is the leader: 1 if yes",
            is_leader.clone(),
        );
        registry.register(
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen",
            leader_changes_seen.clone(),
        );
        // etcd's proposal figures are gauges whose names end in `_total`.
        registry.register(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed",
            proposals_committed_total.clone(),
        );
        registry.register(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied",
            proposals_applied_total.clone(),
        );
        registry.register(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit",
            proposals_pending.clone(),
        );
        registry.register(
            "etcd_server_proposals_failed",
            "The total number of failed proposals seen",
            proposals_failed.clone(),
        );
        registry.register(
            "etcd_server_slow_apply",
            "The total number of slow applies (in keel: batches of entries applied together)",
            slow_applies.clone(),
        );
        registry.register(
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes",
            quota_backend_bytes.clone(),
        );
        registry.register(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes",
            db_total_size.clone(),
        );
        registry.register(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes",
            db_total_size_in_use.clone(),
        );
        registry.register(
            "etcd_debugging_mvcc_keys_total",
            "Total number of keys",
            keys_total.clone(),
        );
        registry.register(
            "etcd_debugging_mvcc_watch_stream_total",
            "Total number of watch streams",
            watch_streams.clone(),
        );
        registry.register(
            "etcd_server_health_success",
            "The total number of successful health checks",
            health_success.clone(),
        );
        registry.register(
            "etcd_server_health_failures",
            "The total number of failed health checks",
            health_failures.clone(),
        );
        crate::process_metrics::register(&mut registry);
        #[cfg(not(madsim))]
        let grpc = crate::grpc::metrics::GrpcMetrics::new(&mut registry);
        registry.register(
            "etcd_mvcc_current_revision",
            "The current revision of the store",
            current_revision.clone(),
        );
        registry.register(
            "etcd_mvcc_compact_revision",
            "The last compaction revision of the store",
            compact_revision.clone(),
        );
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL",
            fsync_seconds.clone(),
        );
        registry.register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend",
            backend_commit_seconds.clone(),
        );
        registry.register(
            "etcd_network_peer_sent_bytes",
            "The total number of bytes sent to peers",
            peer_sent_bytes.clone(),
        );
        registry.register(
            "etcd_network_peer_received_bytes",
            "The total number of bytes received from peers",
            peer_received_bytes.clone(),
        );
        registry.register(
            "etcd_network_peer_round_trip_time_seconds",
            "Round-Trip-Time histogram between peers (a leader's heartbeats to each follower)",
            peer_round_trip_seconds.clone(),
        );
        registry.register(
            "etcd_network_peer_sent_failures",
            "The total number of send failures to peers",
            peer_sent_failures.clone(),
        );
        Arc::new(Metrics {
            leader_changes: AtomicU64::new(0),
            proposals_committed: AtomicU64::new(0),
            raft_term: AtomicU64::new(0),
            has_leader,
            is_leader,
            leader_changes_seen,
            proposals_committed_total,
            proposals_applied_total,
            proposals_pending,
            proposals_failed,
            slow_applies,
            quota_backend_bytes,
            db_total_size,
            db_total_size_in_use,
            keys_total,
            watch_streams,
            health_success,
            health_failures,
            current_revision,
            compact_revision,
            fsync_seconds,
            backend_commit_seconds,
            peer_sent_bytes,
            peer_received_bytes,
            peer_sent_failures,
            peer_round_trip_seconds,
            transport,
            #[cfg(not(madsim))]
            grpc,
            registry,
        })
    }

    pub fn observe_fsync(&self, duration: Duration) {
        self.fsync_seconds.observe(duration.as_secs_f64());
    }

    /// A durable commit of the store's engine took `duration`.
    pub fn observe_engine_commit(&self, duration: Duration) {
        self.backend_commit_seconds.observe(duration.as_secs_f64());
    }

    /// Proposals waiting to be committed and applied (sampled by the loop after each batch).
    pub fn observe_pending_proposals(&self, pending: usize) {
        self.proposals_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// A heartbeat to `peer` was answered after `round_trip`.
    pub fn observe_peer_round_trip(&self, peer: u64, round_trip: Duration) {
        self.peer_round_trip_seconds
            .get_or_create(&[("To", format!("{peer:x}"))])
            .observe(round_trip.as_secs_f64());
    }

    /// A proposal refused or dropped before it applied.
    pub fn count_failed_proposal(&self) {
        self.proposals_failed.inc();
    }

    /// An apply that took longer than etcd's 100 ms warning.
    pub fn count_slow_apply(&self) {
        self.slow_applies.inc();
    }

    /// A `/health` answer.
    pub fn count_health_check(&self, healthy: bool) {
        let counter = if healthy {
            &self.health_success
        } else {
            &self.health_failures
        };
        counter.inc();
    }

    /// Samples the node's state (called by the loop after each batch).
    pub fn observe_node(&self, node: &Node) {
        let raft = node.raft();
        self.raft_term.store(raft.term(), Ordering::Relaxed);
        self.has_leader.set(i64::from(raft.leader().is_some()));
        self.is_leader.set(i64::from(raft.role() == Role::Leader));
        self.proposals_committed_total
            .set(clamp(raft.commit_index()));
        self.proposals_applied_total
            .set(clamp(node.applied_index()));
        // O(1) figures only: this runs after every batch.
        let store = node.store();
        let (file_bytes, in_use_bytes) = keel_core::node::query::db_sizes(store);
        self.db_total_size.set(clamp(file_bytes));
        self.db_total_size_in_use.set(clamp(in_use_bytes));
        self.quota_backend_bytes
            .set(clamp(store.config().quota_bytes));
        self.keys_total
            .set(i64::try_from(store.key_count()).unwrap_or(i64::MAX));
        self.current_revision.set(node.store().current_revision());
        self.watch_streams
            .set(i64::try_from(node.watches().stream_count()).unwrap_or(i64::MAX));
        self.compact_revision.set(node.store().compact_revision());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        sync_counter(
            &self.leader_changes_seen,
            self.leader_changes.load(Ordering::Relaxed),
        );
        sync_counter(
            &self.peer_sent_bytes,
            self.transport.sent_bytes.load(Ordering::Relaxed),
        );
        sync_counter(
            &self.peer_received_bytes,
            self.transport.received_bytes.load(Ordering::Relaxed),
        );
        sync_counter(
            &self.peer_sent_failures,
            self.transport.sent_failures.load(Ordering::Relaxed),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn raft_term(&self) -> u64 {
        self.raft_term.load(Ordering::Relaxed)
    }

    pub fn has_leader(&self) -> bool {
        self.has_leader.get() == 1
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Counters only go up: add what the source counted since the last scrape.
fn sync_counter(counter: &Counter, source: u64) {
    let seen = counter.get();
    if source > seen {
        counter.inc_by(source - seen);
    }
}
