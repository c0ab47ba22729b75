//! Prometheus metrics with etcd's names where keel has a counterpart, so etcd dashboards
//! and alerts work unchanged. Served at `/metrics` on the client port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::node::Node;
use keel_core::raft::Role;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::transport::TransportStats;

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
    db_total_size: Gauge,
    keys_total: Gauge,
    current_revision: Gauge,
    compact_revision: Gauge,
    fsync_seconds: Histogram,
    backend_commit_seconds: Histogram,
    peer_sent_bytes: Counter,
    peer_received_bytes: Counter,
    peer_sent_failures: Counter,
    transport: Arc<TransportStats>,
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
        let db_total_size = Gauge::default();
        let keys_total = Gauge::default();
        let current_revision = Gauge::default();
        let compact_revision = Gauge::default();
        // etcd's buckets: 1 ms doubling to about 4 s.
        let fsync_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let backend_commit_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let peer_sent_bytes = Counter::default();
        let peer_received_bytes = Counter::default();
        let peer_sent_failures = Counter::default();
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
        registry.register(
            "etcd_server_proposals_committed",
            "The total number of consensus proposals committed",
            proposals_committed_total.clone(),
        );
        registry.register(
            "etcd_server_proposals_applied",
            "The total number of consensus proposals applied",
            proposals_applied_total.clone(),
        );
        registry.register(
            "etcd_mvcc_db_total_size_in_bytes",
            "Estimated size of the store in bytes",
            db_total_size.clone(),
        );
        registry.register(
            "etcd_debugging_mvcc_keys",
            "Number of keys in the store",
            keys_total.clone(),
        );
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
            db_total_size,
            keys_total,
            current_revision,
            compact_revision,
            fsync_seconds,
            backend_commit_seconds,
            peer_sent_bytes,
            peer_received_bytes,
            peer_sent_failures,
            transport,
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
        self.db_total_size.set(clamp(store.size_bytes()));
        self.keys_total
            .set(i64::try_from(store.key_count()).unwrap_or(i64::MAX));
        self.current_revision.set(node.store().current_revision());
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
