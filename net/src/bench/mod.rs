//! `keel bench`: load any etcd v3 endpoint list (keel or etcd) the way etcd's `benchmark`
//! tool does, and report throughput and latency percentiles.
//!
//! Closed loop by default (each client sends its next request when the previous answers).
//! With `--rate`, open loop: request `i` is due at `start + i / rate`, and its latency is
//! measured from when it was due, so a stalled server shows up in the percentiles instead of
//! silently slowing the load (no coordinated omission).

mod progress;
mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::tls::{ClientTls, Identity, TlsOptions, TlsSettings, GRPC_ALPN};

use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Put random (or sequential) keys.
    Put,
    /// Range single keys.
    Range,
    /// Read every key with one RangeStream per request (bounded server memory whatever
    /// the size; `--clients` streams at once).
    RangeStream,
    /// A txn with no compares and one put (etcd's txn-put).
    TxnPut,
    /// Txns that read or compare-and-swap a key (read/write ratio `--rw-ratio`).
    TxnMixed,
    /// Watchers on the key space receive the events of puts; throughput of delivered events.
    Watch,
    /// Latency from a put's acknowledgement to its event reaching a watcher.
    WatchLatency,
    /// Lease keep-alive round trips.
    LeaseKeepalive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub workload: Workload,
    /// Comma-separated gRPC endpoints (host:port).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// gRPC connections, shared round-robin by the clients.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests to send in all (ignored with --duration).
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Run for this long instead of a request count (e.g. 10s, 1m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Requests per second over all clients (open loop); 0 means as fast as answered.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Keys are drawn from this many (1: always the same key).
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use keys in order instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Read consistency for range workloads.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Send everything to the leader (found with a status request).
    #[arg(long)]
    pub target_leader: bool,
    /// Fraction of txn-mixed requests that only read.
    #[arg(long, default_value_t = 0.5)]
    pub rw_ratio: f64,
    /// Watch streams for the watch workloads.
    #[arg(long, default_value_t = 10)]
    pub watchers: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Verify the servers' certificates with this CA bundle (for https:// endpoints).
    #[arg(long)]
    pub cacert: Option<std::path::PathBuf>,
    /// Present this client certificate (servers with --client-cert-auth ask for one).
    #[arg(long, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's key.
    #[arg(long, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Print each request slower than this many milliseconds to stderr, with the wall-clock
    /// time it finished, to line latency spikes up with the servers' logs.
    #[arg(long)]
    pub slow_ms: Option<u64>,
}

impl BenchArgs {
    /// Client TLS when the endpoints are `https://` or TLS files are given.
    fn tls(&self) -> anyhow::Result<Option<ClientTls>> {
        let wanted =
            self.endpoints.contains("https://") || self.cacert.is_some() || self.cert.is_some();
        if !wanted {
            return Ok(None);
        }
        let identity = match (&self.cert, &self.key) {
            (Some(cert_file), Some(key_file)) => Identity::Files {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            },
            _ => Identity::Anonymous,
        };
        let settings = TlsSettings {
            identity,
            trusted_ca_file: self.cacert.clone(),
            client_cert_auth: false,
            crl_file: None,
            options: TlsOptions::default(),
        };
        Ok(Some(ClientTls::new(
            settings,
            GRPC_ALPN,
            "bench connections",
        )?))
    }
}

/// `host:port` as a URL: `https://` when TLS is on.
fn endpoint_url(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        return endpoint.to_string();
    }
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{endpoint}")
}

/// Latencies in microseconds and failures by kind.
#[derive(Debug)]
pub(crate) struct Recorder {
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    slow: Option<Duration>,
}

impl Recorder {
    fn new(slow: Option<Duration>) -> Recorder {
        Recorder {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("constant histogram bounds are valid"),
            errors: BTreeMap::new(),
            slow,
        }
    }

    pub(crate) fn record(&mut self, latency: Duration, outcome: Result<(), String>) {
        if self.slow.is_some_and(|slow| latency >= slow) {
            eprintln!(
                "slow request: finished {} after {} ms ({})",
                humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                latency.as_millis(),
                if outcome.is_ok() { "ok" } else { "error" },
            );
        }
        match outcome {
            Ok(()) => {
                let us = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                self.latency_us.saturating_record(us);
            }
            Err(kind) => *self.errors.entry(kind).or_insert(0) += 1,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub workload: String,
    pub requests: u64,
    pub errors: u64,
    pub duration_secs: f64,
    pub throughput_per_sec: f64,
    pub latency_ms: Percentiles,
    pub errors_by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The work to hand out: a count or a deadline, and (open loop) when each request is due.
#[derive(Debug)]
pub(crate) struct Schedule {
    next: AtomicU64,
    total: Option<u64>,
    until: Option<Instant>,
    start: Instant,
    interval: Option<Duration>,
}

impl Schedule {
    /// The next request's number and when it is due; `None` when the run is over.
    pub(crate) fn take(&self) -> Option<(u64, Instant)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|total| i >= total) {
            return None;
        }
        let due = match self.interval {
            Some(interval) => self.start + interval.mul_f64(i as f64),
            None => Instant::now(),
        };
        if self.until.is_some_and(|until| due >= until) {
            return None;
        }
        Some((i, due))
    }
}

pub(crate) fn key(args: &BenchArgs, i: u64, salt: u64) -> Bytes {
    let n = if args.sequential_keys {
        i % args.key_space_size.max(1)
    } else {
        // A cheap deterministic scramble; keys need not be cryptographically random.
        (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt) % args.key_space_size.max(1)
    };
    let mut key = format!("{n:0width$}", width = args.key_size).into_bytes();
    key.truncate(args.key_size.max(1));
    Bytes::from(key)
}

pub(crate) fn status_kind(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

async fn channels(args: &BenchArgs) -> anyhow::Result<Vec<Channel>> {
    let mut endpoints: Vec<String> = args
        .endpoints
        .split(',')
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let tls = args.tls()?;
    if args.target_leader {
        endpoints = vec![find_leader(&endpoints, tls.as_ref()).await?];
    }
    let mut channels = Vec::new();
    for i in 0..args.conns.max(1) {
        let endpoint = &endpoints[i % endpoints.len()];
        let uri = endpoint_url(endpoint, tls.is_some());
        let channel = crate::tls::grpc_channel(&uri, tls.as_ref()).map_err(anyhow::Error::msg)?;
        channels.push(channel);
    }
    Ok(channels)
}

/// The endpoint whose status says it is the leader.
async fn find_leader(endpoints: &[String], tls: Option<&ClientTls>) -> anyhow::Result<String> {
    for endpoint in endpoints {
        let uri = endpoint_url(endpoint, tls.is_some());
        let Ok(channel) = crate::tls::grpc_channel(&uri, tls) else {
            continue;
        };
        let mut client = MaintenanceClient::new(channel);
        if let Ok(status) = client.status(pb::StatusRequest {}).await {
            let status = status.into_inner();
            let member = status.header.map_or(0, |h| h.member_id);
            if member != 0 && member == status.leader {
                return Ok(endpoint.clone());
            }
        }
    }
    anyhow::bail!("no endpoint reports being the leader")
}

/// Runs the benchmark and prints its summary.
pub async fn run(args: BenchArgs) -> anyhow::Result<Summary> {
    let channels = channels(&args).await?;
    let args = Arc::new(args);
    let schedule = Arc::new(Schedule {
        next: AtomicU64::new(0),
        total: args.duration.is_none().then_some(args.total),
        until: args.duration.map(|d| Instant::now() + d),
        start: Instant::now(),
        interval: (args.rate > 0)
            .then(|| Duration::from_secs(1) / u32::try_from(args.rate).unwrap_or(u32::MAX)),
    });
    let recorder = Arc::new(Mutex::new(Recorder::new(
        args.slow_ms.map(Duration::from_millis),
    )));
    let progress = progress::Progress::new(args.duration.is_none().then_some(args.total));
    let started = Instant::now();
    let mut tasks = Vec::new();
    if matches!(args.workload, Workload::Watch | Workload::WatchLatency) {
        tasks.extend(watch::spawn(&args, &channels, &schedule, &recorder, &progress).await?);
    } else {
        for client in 0..args.clients.max(1) {
            let channel = channels[client % channels.len()].clone();
            let worker = Worker {
                args: args.clone(),
                schedule: schedule.clone(),
                recorder: recorder.clone(),
                progress: progress.clone(),
                salt: client as u64,
            };
            tasks.push(tokio::spawn(worker.run(channel)));
        }
    }
    for task in tasks {
        task.await??;
    }
    progress.finish();
    let elapsed = started.elapsed();
    let recorder = recorder
        .lock()
        .map_err(|_| anyhow::anyhow!("a client panicked"))?;
    Ok(summarize(&args, &recorder, elapsed))
}

fn summarize(args: &BenchArgs, recorder: &Recorder, elapsed: Duration) -> Summary {
    let h = &recorder.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    let requests = h.len();
    Summary {
        workload: format!("{:?}", args.workload),
        requests,
        errors: recorder.errors.values().sum(),
        duration_secs: elapsed.as_secs_f64(),
        throughput_per_sec: requests as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: Percentiles {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        },
        errors_by_kind: recorder.errors.clone(),
    }
}

impl Summary {
    pub fn print(&self, json: bool) {
        if json {
            match serde_json::to_string_pretty(self) {
                Ok(text) => println!("{text}"),
                Err(error) => eprintln!("keel bench: cannot encode the summary: {error}"),
            }
            return;
        }
        let l = &self.latency_ms;
        println!("Summary ({}):", self.workload);
        println!("  Total:        {:.4} secs", self.duration_secs);
        println!(
            "  Requests:     {} ok, {} failed",
            self.requests, self.errors
        );
        println!("  Requests/sec: {:.1}", self.throughput_per_sec);
        println!(
            "  Latency (ms): min {:.3}  mean {:.3}  max {:.3}",
            l.min, l.mean, l.max
        );
        println!(
            "                p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}",
            l.p50, l.p90, l.p99, l.p999
        );
        for (kind, count) in &self.errors_by_kind {
            println!("  Error x{count}: {kind}");
        }
    }
}

/// Waits for `due` unless it has come: a closed loop's requests are due at once, and a
/// tokio timer rounds its deadline up to the next millisecond, which would add up to 1 ms
/// to every request.
async fn wait_until(due: Instant) {
    if due > Instant::now() {
        tokio::time::sleep_until(due).await;
    }
}

/// One closed- or open-loop client of the request/response workloads.
struct Worker {
    args: Arc<BenchArgs>,
    schedule: Arc<Schedule>,
    recorder: Arc<Mutex<Recorder>>,
    progress: progress::Progress,
    salt: u64,
}

impl Worker {
    async fn run(self, channel: Channel) -> anyhow::Result<()> {
        let mut kv = KvClient::new(channel.clone());
        let mut lease = LeaseClient::new(channel);
        let value = Bytes::from(vec![b'v'; self.args.val_size]);
        let lease_id = if self.args.workload == Workload::LeaseKeepalive {
            let granted = lease
                .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
                .await?;
            granted.into_inner().id
        } else {
            0
        };
        let mut keepalive = None;
        while let Some((i, due)) = self.schedule.take() {
            wait_until(due).await;
            let key = key(&self.args, i, self.salt);
            let outcome = match self.args.workload {
                Workload::Put => self.put(&mut kv, key, value.clone()).await,
                Workload::Range => self.range(&mut kv, key).await,
                Workload::RangeStream => self.range_stream(&mut kv).await,
                Workload::TxnPut => self.txn_put(&mut kv, key, value.clone()).await,
                Workload::TxnMixed => self.txn_mixed(&mut kv, key, value.clone(), i).await,
                Workload::LeaseKeepalive => keep_alive(&mut lease, &mut keepalive, lease_id).await,
                Workload::Watch | Workload::WatchLatency => Ok(()),
            };
            self.recorder
                .lock()
                .map_err(|_| anyhow::anyhow!("a client panicked"))?
                .record(due.elapsed(), outcome);
            self.progress.inc();
        }
        Ok(())
    }

    async fn put(
        &self,
        kv: &mut KvClient<Channel>,
        key: Bytes,
        value: Bytes,
    ) -> Result<(), String> {
        let request = pb::PutRequest {
            key,
            value,
            ..Default::default()
        };
        kv.put(request).await.map(drop).map_err(|s| status_kind(&s))
    }

    async fn range(&self, kv: &mut KvClient<Channel>, key: Bytes) -> Result<(), String> {
        let request = pb::RangeRequest {
            key,
            serializable: self.args.consistency == Consistency::S,
            ..Default::default()
        };
        kv.range(request)
            .await
            .map(drop)
            .map_err(|s| status_kind(&s))
    }

    /// Reads the whole key space as a stream, a chunk at a time.
    async fn range_stream(&self, kv: &mut KvClient<Channel>) -> Result<(), String> {
        let request = pb::RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            serializable: self.args.consistency == Consistency::S,
            ..Default::default()
        };
        let mut stream = kv
            .range_stream(request)
            .await
            .map_err(|s| status_kind(&s))?
            .into_inner();
        while stream
            .message()
            .await
            .map_err(|s| status_kind(&s))?
            .is_some()
        {}
        Ok(())
    }

    async fn txn_put(
        &self,
        kv: &mut KvClient<Channel>,
        key: Bytes,
        value: Bytes,
    ) -> Result<(), String> {
        let put = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key,
                value,
                ..Default::default()
            })),
        };
        let request = pb::TxnRequest {
            success: vec![put],
            ..Default::default()
        };
        kv.txn(request).await.map(drop).map_err(|s| status_kind(&s))
    }

    /// A read, or a compare-and-swap on the key's version (etcd's txn-mixed shape).
    async fn txn_mixed(
        &self,
        kv: &mut KvClient<Channel>,
        key: Bytes,
        value: Bytes,
        i: u64,
    ) -> Result<(), String> {
        let reads = (self.args.rw_ratio.clamp(0.0, 1.0) * 1000.0) as u64;
        if (i.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) % 1000 < reads {
            return self.range(kv, key).await;
        }
        let compare = pb::Compare {
            result: pb::compare::CompareResult::Greater as i32,
            target: pb::compare::CompareTarget::Version as i32,
            key: key.clone(),
            target_union: Some(pb::compare::TargetUnion::Version(-1)),
            ..Default::default()
        };
        let put = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key,
                value,
                ..Default::default()
            })),
        };
        let request = pb::TxnRequest {
            compare: vec![compare],
            success: vec![put],
            failure: vec![],
        };
        kv.txn(request).await.map(drop).map_err(|s| status_kind(&s))
    }
}

type KeepAliveStream = (
    tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>,
    tonic::Streaming<pb::LeaseKeepAliveResponse>,
);

/// One keep-alive round trip on a stream opened on first use.
async fn keep_alive(
    lease: &mut LeaseClient<Channel>,
    stream: &mut Option<KeepAliveStream>,
    id: i64,
) -> Result<(), String> {
    if stream.is_none() {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let requests = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
        let responses = lease
            .lease_keep_alive(requests)
            .await
            .map_err(|s| status_kind(&s))?
            .into_inner();
        *stream = Some((tx, responses));
    }
    let Some((tx, responses)) = stream.as_mut() else {
        return Err("no keep-alive stream".into());
    };
    tx.send(pb::LeaseKeepAliveRequest { id })
        .await
        .map_err(|_| "keep-alive stream closed".to_string())?;
    match responses.message().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("keep-alive stream ended".into()),
        Err(status) => Err(status_kind(&status)),
    }
}
