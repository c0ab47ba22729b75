//! The MVCC store on redb over a real disk (`FsDisk` in a temp dir), loaded with 100k keys
//! of 1 KiB: puts (a durable engine commit begun every 1000 applies, running on the engine's
//! commit thread as in the server), point gets and 100-key prefix ranges. A summary prints
//! the load rate, the file size and a reopen's time.
//!
//! `cargo bench -p keel-storage --bench store_engine`

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keel_core::mvcc::{Command, PutRequest, RangeRequest, Store, StoreConfig};
use keel_storage::{FsDisk, RedbEngine, DEFAULT_ENGINE_CACHE_SIZE_BYTES};

const KEYS: u64 = 100_000;
const VALUE_BYTES: usize = 1024;
const COMMIT_EVERY: u64 = 1000;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("/registry/pods/default/pod-{i:08}"))
}

struct Loaded {
    store: Store,
    index: u64,
}

impl Loaded {
    fn put(&mut self, i: u64) {
        self.index += 1;
        let command = Command::Put(PutRequest {
            key: key(i % KEYS),
            value: Bytes::from(vec![(i % 251) as u8; VALUE_BYTES]),
            ..PutRequest::default()
        });
        black_box(self.store.apply(self.index, 0, &command));
        if self.index.is_multiple_of(COMMIT_EVERY) {
            self.store.commit(true).expect("commit");
        }
    }
}

fn open(dir: &std::path::Path) -> Store {
    let disk = FsDisk::open(dir).expect("data dir");
    let engine = RedbEngine::open(disk, DEFAULT_ENGINE_CACHE_SIZE_BYTES).expect("engine");
    Store::open(Box::new(engine), StoreConfig::default()).expect("store")
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut loaded = Loaded {
        store: open(dir.path()),
        index: 0,
    };
    let started = Instant::now();
    for i in 0..KEYS {
        loaded.put(i);
    }
    loaded.store.commit(true).expect("commit");
    let load_s = started.elapsed().as_secs_f64();
    let mut group = c.benchmark_group("store_on_redb_100k_keys_1k");
    group.throughput(Throughput::Elements(1));
    let mut next = KEYS;
    group.bench_function("put", |b| {
        b.iter(|| {
            loaded.put(next);
            next += 1;
        })
    });
    let mut probe = 0u64;
    group.bench_function("point_get", |b| {
        b.iter(|| {
            probe = (probe + 7919) % KEYS;
            let request = RangeRequest {
                key: key(probe),
                ..RangeRequest::default()
            };
            black_box(loaded.store.range(&request).expect("range"))
        })
    });
    group.bench_function("prefix_range_100", |b| {
        b.iter(|| {
            probe = (probe + 7919) % (KEYS - 100);
            let request = RangeRequest {
                key: key(probe),
                range_end: key(probe + 100),
                ..RangeRequest::default()
            };
            black_box(loaded.store.range(&request).expect("range"))
        })
    });
    group.finish();
    let (file_bytes, in_use_bytes) = loaded.store.size_on_disk();
    loaded.store.commit(true).expect("commit");
    drop(loaded);
    let started = Instant::now();
    let reopened = open(dir.path());
    let reopen_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "load: {KEYS} puts of {VALUE_BYTES} B in {load_s:.2} s ({:.0}/s); file {:.1} MB, in use \
         {:.1} MB; reopen {reopen_ms:.1} ms at revision {}",
        KEYS as f64 / load_s,
        file_bytes as f64 / 1e6,
        in_use_bytes as f64 / 1e6,
        reopened.current_revision(),
    );
}

criterion_group! {
    name = store_engine;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = benches
}
criterion_main!(store_engine);
