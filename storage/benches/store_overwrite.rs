//! Write amplification of the store on redb at production size: loads `KEYS` keys of 1 KiB
//! (default 1M, ≈1 GB), then overwrites `PUTS` random keys (default 100k), a durable engine
//! commit every `COMMIT_EVERY` applies (default 500, about what the server's 100 ms batch
//! holds under load). Prints puts/s, the process's CPU time and bytes written per put, and
//! the file's size. Not a criterion bench: one long run is the measurement.
//!
//! `cargo bench -p keel-storage --bench store_overwrite`
//! `KEYS=300000 PUTS=50000 COMMIT_EVERY=5000 cargo bench -p keel-storage --bench store_overwrite`

use std::time::Instant;

use bytes::Bytes;
use keel_core::mvcc::{Command, PutRequest, Store, StoreConfig};
use keel_storage::{FsDisk, RedbEngine, DEFAULT_ENGINE_CACHE_SIZE_BYTES};

const VALUE_BYTES: usize = 1024;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("/registry/pods/default/pod-{i:08}"))
}

/// Bytes this process has written (`wchar`) and its CPU seconds (user + system).
fn process_io() -> (u64, f64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let written = io
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th of them, in clock ticks of 10 ms.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0);
    (written, ticks / 100.0)
}

struct Loaded {
    store: Store,
    index: u64,
    commit_every: u64,
}

impl Loaded {
    fn put(&mut self, k: u64) {
        self.index += 1;
        let command = Command::Put(PutRequest {
            key: key(k),
            value: Bytes::from(vec![(k % 251) as u8; VALUE_BYTES]),
            ..PutRequest::default()
        });
        self.store.apply(self.index, 0, &command);
        if self.index.is_multiple_of(self.commit_every) {
            self.store.commit(true).expect("commit");
        }
    }
}

fn main() {
    let keys = setting("KEYS", 1_000_000).max(1);
    let puts = setting("PUTS", 100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = FsDisk::open(dir.path()).expect("data dir");
    let engine = RedbEngine::open(disk, DEFAULT_ENGINE_CACHE_SIZE_BYTES).expect("engine");
    let mut loaded = Loaded {
        store: Store::open(Box::new(engine), StoreConfig::default()).expect("store"),
        index: 0,
        commit_every: setting("COMMIT_EVERY", 500).max(1),
    };
    let started = Instant::now();
    for k in 0..keys {
        loaded.put(k);
    }
    loaded.store.commit(true).expect("commit");
    let load_s = started.elapsed().as_secs_f64();

    let (written_before, cpu_before) = process_io();
    let started = Instant::now();
    // xorshift64: the same key sequence every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..puts {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        loaded.put(x % keys);
    }
    loaded.store.commit(true).expect("commit");
    let secs = started.elapsed().as_secs_f64();
    let (written_after, cpu_after) = process_io();
    let (file_bytes, _) = loaded.store.size_on_disk();
    let per_put = |total: f64| total / puts.max(1) as f64;
    println!(
        "load: {keys} keys of {VALUE_BYTES} B in {load_s:.1} s; {puts} random overwrites \
         (durable commit every {}): {:.0} puts/s, {:.1} µs CPU and {:.1} KB written per put; \
         file {:.0} MB",
        loaded.commit_every,
        puts as f64 / secs,
        per_put((cpu_after - cpu_before) * 1e6),
        per_put((written_after - written_before) as f64 / 1e3),
        file_bytes as f64 / 1e6,
    );
}
