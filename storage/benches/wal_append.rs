//! WAL appends with group commit on a real disk (`FsDisk` in a temp dir): 256-byte entries,
//! 1, 8 or 64 entries per sync. Criterion's throughput is entries/s; syncs/s is that over
//! the batch size. A summary afterwards prints both, the fdatasync calls per batch, and a
//! bare 4 KiB write+fdatasync on the same disk for comparison. Also: recovery of 100k
//! entries.
//!
//! `cargo bench -p keel-storage --bench wal_append`

use std::hint::black_box;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keel_core::raft::{Entry, EntryPayload, HardState};
use keel_storage::{Disk, FsDisk, Storage, StorageOptions};

const ENTRY_PAYLOAD_BYTES: usize = 256;
const BATCHES: [u64; 3] = [1, 8, 64];
const RECOVERY_ENTRIES: u64 = 100_000;

/// An `FsDisk` that counts the syncs it is asked for.
#[derive(Debug)]
struct CountingDisk {
    inner: FsDisk,
    syncs: u64,
}

impl Disk for CountingDisk {
    fn share(&self) -> io::Result<CountingDisk> {
        Ok(CountingDisk {
            inner: self.inner.share()?,
            syncs: 0,
        })
    }
    fn list(&mut self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn create(&mut self, name: &str) -> io::Result<()> {
        self.inner.create(name)
    }
    fn size_bytes(&mut self, name: &str) -> io::Result<u64> {
        self.inner.size_bytes(name)
    }
    fn read_at(&mut self, name: &str, offset_bytes: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(name, offset_bytes, buf)
    }
    fn write_at(&mut self, name: &str, offset_bytes: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(name, offset_bytes, data)
    }
    fn set_size(&mut self, name: &str, size_bytes: u64) -> io::Result<()> {
        self.inner.set_size(name, size_bytes)
    }
    fn preallocate(&mut self, name: &str, size_bytes: u64) -> io::Result<()> {
        self.inner.preallocate(name, size_bytes)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.syncs += 1;
        self.inner.sync(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn sync_dir(&mut self) -> io::Result<()> {
        self.inner.sync_dir()
    }
    fn location(&self, name: &str) -> String {
        self.inner.location(name)
    }
}

/// A fresh storage in a temp dir under the target dir (a real disk, not tmpfs).
fn fresh_storage() -> (tempfile::TempDir, Storage<CountingDisk>) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let disk = CountingDisk {
        inner: FsDisk::open(dir.path()).expect("data dir"),
        syncs: 0,
    };
    let (storage, _) = Storage::open(disk, StorageOptions::default()).expect("open");
    (dir, storage)
}

/// Appends the next `batch` entries and syncs once: what the server does per `Ready`.
struct Appender {
    payload: Bytes,
    next_index: u64,
}

impl Appender {
    fn new() -> Appender {
        Appender {
            payload: Bytes::from(vec![0x5a; ENTRY_PAYLOAD_BYTES]),
            next_index: 1,
        }
    }

    fn commit_batch<D: Disk>(&mut self, storage: &mut Storage<D>, batch: u64) {
        let entries: Vec<Entry> = (self.next_index..self.next_index + batch)
            .map(|index| Entry {
                index,
                term: 1,
                payload: EntryPayload::Normal(self.payload.clone()),
            })
            .collect();
        self.next_index += batch;
        storage.append(&entries).expect("append");
        storage
            .set_hard_state(HardState {
                term: 1,
                vote: Some(1),
                commit_index: self.next_index - 1,
            })
            .expect("hard state");
        storage.sync().expect("sync");
    }
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append_256B");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(6));
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(
            BenchmarkId::new("entries_per_sync", batch),
            &batch,
            |b, &batch| {
                let (_dir, mut storage) = fresh_storage();
                let mut appender = Appender::new();
                b.iter(|| appender.commit_batch(&mut storage, batch));
            },
        );
    }
    group.finish();
    summary();
}

/// One fixed-length run per batch size, printed as entries/s, syncs/s and fsyncs per batch,
/// next to a bare 4 KiB write + fdatasync on the same disk.
fn summary() {
    let fsync_p50 = bare_fdatasync_p50();
    println!(
        "\nbare 4 KiB pwrite+fdatasync on this disk: p50 {:.3} ms",
        ms(fsync_p50)
    );
    for batch in BATCHES {
        let (_dir, mut storage) = fresh_storage();
        let mut appender = Appender::new();
        let batches = 3000 / batch.min(8) as u32;
        let mut latencies = Vec::with_capacity(batches as usize);
        let syncs_before = storage.disk().syncs;
        let started = Instant::now();
        for _ in 0..batches {
            let t = Instant::now();
            appender.commit_batch(&mut storage, batch);
            latencies.push(t.elapsed());
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        let p50 = latencies[latencies.len() / 2];
        let fsyncs = storage.disk().syncs - syncs_before;
        println!(
            "batch {batch:>2}: {:>9.0} entries/s {:>7.0} syncs/s, fdatasync per batch {:.2}, \
             batch p50 {:.3} ms = {:.2}x a bare fdatasync",
            f64::from(batches) * batch as f64 / elapsed,
            f64::from(batches) / elapsed,
            fsyncs as f64 / f64::from(batches),
            ms(p50),
            p50.as_secs_f64() / fsync_p50.as_secs_f64(),
        );
    }
}

fn bare_fdatasync_p50() -> Duration {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let file = std::fs::File::create(dir.path().join("probe")).expect("probe file");
    file.set_len(64 << 20).expect("size");
    file.write_all_at(&vec![0u8; 64 << 20], 0)
        .expect("zero fill");
    file.sync_all().expect("sync");
    let block = vec![7u8; 4096];
    let mut latencies: Vec<Duration> = (0..2000u64)
        .map(|i| {
            let t = Instant::now();
            file.write_all_at(&block, i * 4096).expect("write");
            file.sync_data().expect("fdatasync");
            t.elapsed()
        })
        .collect();
    latencies.sort();
    latencies[latencies.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn recovery(c: &mut Criterion) {
    let (dir, mut storage) = fresh_storage();
    let mut appender = Appender::new();
    for _ in 0..RECOVERY_ENTRIES / 64 {
        appender.commit_batch(&mut storage, 64);
    }
    let segments = storage.segment_count();
    drop(storage);
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECOVERY_ENTRIES / 64 * 64));
    group.bench_function("open_100k_entries_256B", |b| {
        b.iter(|| {
            let disk = FsDisk::open(dir.path()).expect("data dir");
            let (storage, recovered) =
                Storage::open(disk, StorageOptions::default()).expect("recover");
            black_box((storage, recovered.entries.len()))
        });
    });
    group.finish();
    println!(
        "recovery data set: {} entries in {segments} segment(s)",
        appender.next_index - 1
    );
}

criterion_group!(benches, group_commit, recovery);
criterion_main!(benches);
