//! Commit throughput of the Raft core alone: three nodes in memory, no disk, no network.
//! Each iteration proposes a batch of 64-byte entries to the leader and drives the cluster
//! until every node has applied them. Reported as entries per second.
//!
//! `cargo bench -p keel-core --bench raft_commit`

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keel_core::raft::{Config, InitialState, Message, NodeId, Raft, Role, Snapshot, SnapshotMeta};

const ENTRY_BYTES: usize = 64;
/// Compact the logs every this many applied entries, as a server would after a snapshot.
const COMPACT_EVERY_ENTRIES: u64 = 100_000;

struct BenchCluster {
    nodes: Vec<Raft>,
    queue: VecDeque<Message>,
    applied: Vec<u64>,
}

impl BenchCluster {
    fn new() -> BenchCluster {
        let voters = [1, 2, 3];
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut config = Config::new(id);
                config.max_uncommitted_bytes = usize::MAX / 2;
                Raft::new(config, InitialState::bootstrap(voters, Bytes::new())).expect("valid")
            })
            .collect();
        let mut cluster = BenchCluster {
            nodes,
            queue: VecDeque::new(),
            applied: vec![0; 3],
        };
        cluster.nodes[0].campaign();
        cluster.run();
        assert_eq!(cluster.nodes[0].role(), Role::Leader);
        cluster
    }

    fn index_of(id: NodeId) -> usize {
        (id - 1) as usize
    }

    /// Carries out every Ready and delivers every message until nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(mut ready) = self.nodes[i].ready() {
                    moved = true;
                    self.queue.extend(ready.messages.drain(..));
                    self.queue.extend(ready.persisted_messages.drain(..));
                    self.applied[i] += ready.committed_entries.len() as u64;
                    self.nodes[i].advance(&ready);
                }
            }
            while let Some(message) = self.queue.pop_front() {
                moved = true;
                let to = Self::index_of(message.to);
                self.nodes[to].step(message).expect("valid message");
            }
            if !moved {
                return;
            }
        }
    }

    fn compact_if_due(&mut self) {
        for raft in &mut self.nodes {
            let applied = raft.applied_index();
            if applied - raft.first_index() < COMPACT_EVERY_ENTRIES {
                continue;
            }
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    index: applied,
                    term: raft.log_term(applied).expect("applied entry in the log"),
                    conf_state: raft.conf_state().clone(),
                },
                data: Bytes::new(),
            };
            raft.compact(snapshot, 0);
        }
    }
}

fn commit_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_commit_3_nodes_64_byte_entries");
    group.measurement_time(Duration::from_secs(5));
    let payload = Bytes::from(vec![7u8; ENTRY_BYTES]);
    for batch in [1usize, 64, 1024] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            let mut cluster = BenchCluster::new();
            // Criterion times each round; the core and its bench read no clock themselves.
            b.iter(|| {
                for _ in 0..batch {
                    cluster.nodes[0]
                        .propose(payload.clone())
                        .expect("leader accepts");
                }
                cluster.run();
                cluster.compact_if_due();
                let expected = cluster.applied[0];
                assert!(
                    cluster.applied.iter().all(|&a| a == expected),
                    "all nodes applied"
                );
            });
        });
    }
    group.finish();
}

criterion_group!(benches, commit_throughput);
criterion_main!(benches);
