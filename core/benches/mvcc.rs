//! MVCC store benchmarks on 100,000 keys with 256-byte values: put, point get, a prefix
//! range of 100 keys, a txn compare-and-swap, a snapshot image of the whole store and its
//! restore; and the store's memory per key, both its own size accounting and the heap
//! growth measured by a counting allocator.
//!
//! `cargo bench -p keel-core --bench mvcc`

use std::alloc::System;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keel_core::mvcc::{
    Command, CompactionRequest, Compare, CompareResult, CompareTarget, PutRequest, RangeRequest,
    RequestOp, Response, Store, StoreConfig, TargetUnion, TxnRequest,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const KEYS: u64 = 100_000;
const VALUE_BYTES: usize = 256;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key/{i:08}"))
}

/// A value of its own allocation, as a decoded Raft entry would carry.
fn value(i: u64) -> Bytes {
    let mut v = vec![b'v'; VALUE_BYTES];
    v[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(v)
}

/// Deterministic key picks (xorshift), no OS randomness.
struct Picker(u64);

impl Picker {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % KEYS
    }
}

struct Loaded {
    store: Store,
    index: u64,
}

impl Loaded {
    fn apply(&mut self, command: &Command) -> Response {
        self.index += 1;
        match self.store.apply(self.index, 0, command).result {
            Ok(r) => r,
            Err(e) => panic!("bench command failed: {e}"),
        }
    }

    /// Compacts to the present now and then, so history does not grow without bound.
    fn maybe_compact(&mut self) {
        if self.index.is_multiple_of(10_000) {
            let revision = self.store.current_revision();
            self.apply(&Command::Compaction(CompactionRequest {
                revision,
                physical: false,
            }));
        }
    }
}

fn load() -> Loaded {
    let mut loaded = Loaded {
        store: Store::new(StoreConfig::default()),
        index: 0,
    };
    for i in 0..KEYS {
        loaded.apply(&Command::Put(PutRequest {
            key: key(i),
            value: value(i),
            ..Default::default()
        }));
    }
    loaded
}

fn report_memory() {
    let region = Region::new(GLOBAL);
    let mut loaded = load();
    let revision = loaded.store.current_revision();
    loaded.apply(&Command::Compaction(CompactionRequest {
        revision,
        physical: false,
    }));
    while loaded.store.compaction_step(10_000) {}
    let stats = region.change();
    let heap_bytes = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
        + stats.bytes_reallocated as i64;
    let store_stats = loaded.store.stats();
    let payload_bytes = (key(0).len() + VALUE_BYTES) as i64;
    println!(
        "memory: {KEYS} keys, {payload_bytes} payload bytes each; measured heap {:.1} bytes/key \
         ({:.1} overhead beyond payload, {:.2} live allocations/key); store accounting {:.1} bytes/key; \
         history-log entries {}",
        heap_bytes as f64 / KEYS as f64,
        (heap_bytes - payload_bytes * KEYS as i64) as f64 / KEYS as f64,
        (stats.allocations as f64 - stats.deallocations as f64) / KEYS as f64,
        store_stats.size_bytes as f64 / KEYS as f64,
        store_stats.history_log_entries,
    );
    // Without compaction the history log keeps one entry per revision.
    let region = Region::new(GLOBAL);
    let loaded = load();
    let stats = region.change();
    let heap_bytes = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
        + stats.bytes_reallocated as i64;
    println!(
        "memory before any compaction: measured heap {:.1} bytes/key; store accounting {:.1} bytes/key",
        heap_bytes as f64 / KEYS as f64,
        loaded.store.stats().size_bytes as f64 / KEYS as f64,
    );
}

fn benches(c: &mut Criterion) {
    report_memory();
    let mut loaded = load();
    let mut group = c.benchmark_group("mvcc_100k_keys_256b");
    group.throughput(Throughput::Elements(1));

    let mut pick = Picker(0x9E37_79B9_7F4A_7C15);
    group.bench_function("put", |b| {
        b.iter(|| {
            let i = pick.next();
            let command = Command::Put(PutRequest {
                key: key(i),
                value: value(i),
                ..Default::default()
            });
            black_box(loaded.apply(&command));
            loaded.maybe_compact();
        })
    });

    group.bench_function("point_get", |b| {
        b.iter(|| {
            let request = RangeRequest {
                key: key(pick.next()),
                ..Default::default()
            };
            black_box(loaded.store.range(&request).map(|r| r.kvs.len()))
        })
    });

    group.bench_function("prefix_range_100", |b| {
        b.iter(|| {
            let block = pick.next() / 100;
            let request = RangeRequest {
                key: Bytes::from(format!("key/{block:06}")),
                range_end: Bytes::from(format!("key/{block:06}\x7f")),
                ..Default::default()
            };
            let response = loaded.store.range(&request);
            debug_assert_eq!(response.as_ref().map(|r| r.kvs.len()).ok(), Some(100));
            black_box(response.map(|r| r.count))
        })
    });

    group.bench_function("txn_cas", |b| {
        b.iter(|| {
            let i = pick.next();
            let k = key(i);
            let current = loaded
                .store
                .range(&RangeRequest {
                    key: k.clone(),
                    ..Default::default()
                })
                .ok()
                .and_then(|r| r.kvs.into_iter().next())
                .map_or(0, |kv| kv.mod_revision);
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod,
                    key: k.clone(),
                    range_end: Bytes::new(),
                    target_union: Some(TargetUnion::ModRevision(current)),
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: k,
                    value: value(i),
                    ..Default::default()
                })],
                failure: vec![],
            };
            let response = loaded.apply(&Command::Txn(txn));
            debug_assert!(matches!(&response, Response::Txn(t) if t.succeeded));
            black_box(response);
            loaded.maybe_compact();
        })
    });
    group.finish();

    // The whole store as a snapshot image: what a member builds on its apply loop every
    // `--snapshot-count` entries, and restores from at start-up.
    let mut group = c.benchmark_group("mvcc_100k_keys_256b_snapshot");
    group.sample_size(10);
    group.throughput(Throughput::Elements(KEYS));
    group.bench_function("snapshot", |b| {
        b.iter(|| black_box(loaded.store.snapshot().len()))
    });
    let image = loaded.store.snapshot();
    group.bench_function("restore", |b| {
        b.iter(|| {
            black_box(Store::restore(&image, StoreConfig::default()).map(|s| s.current_revision()))
        })
    });
    group.finish();
}

criterion_group! {
    name = mvcc;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(mvcc);
