//! The watch workloads: `--watchers` streams watch the whole key space while puts run.
//! `watch` counts delivered events as requests; `watch-latency` measures from a put's
//! acknowledgement to its event's arrival at one watcher.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::progress::Progress;
use super::{key, status_kind, wait_until, BenchArgs, Recorder, Schedule, Workload};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::watch_client::WatchClient;

type Task = tokio::task::JoinHandle<anyhow::Result<()>>;
/// When each put was acknowledged, by the revision it created (watch-latency only).
type Acked = Arc<Mutex<BTreeMap<i64, Instant>>>;

pub(crate) async fn spawn(
    args: &Arc<BenchArgs>,
    channels: &[Channel],
    schedule: &Arc<Schedule>,
    recorder: &Arc<Mutex<Recorder>>,
    progress: &Progress,
) -> anyhow::Result<Vec<Task>> {
    let acked: Acked = Arc::default();
    let watchers = if args.workload == Workload::WatchLatency {
        1
    } else {
        args.watchers.max(1)
    };
    let mut streams = Vec::new();
    for i in 0..watchers {
        streams.push(open_watch(channels[i % channels.len()].clone()).await?);
    }
    let mut tasks: Vec<Task> = Vec::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let measuring = i == 0;
        let (recorder, progress, acked, args) = (
            recorder.clone(),
            progress.clone(),
            acked.clone(),
            args.clone(),
        );
        tasks.push(tokio::spawn(async move {
            consume(stream, &args, measuring, &recorder, &progress, &acked).await
        }));
    }
    let mut writers = Vec::new();
    for client in 0..args.clients.max(1) {
        let kv = KvClient::new(channels[client % channels.len()].clone());
        let (args, schedule, acked) = (args.clone(), schedule.clone(), acked.clone());
        writers.push(tokio::spawn(write(
            kv,
            args,
            schedule,
            acked,
            client as u64,
        )));
    }
    // Writers first, then watchers drain what is left.
    let mut ordered = writers;
    ordered.extend(tasks);
    Ok(ordered)
}

type WatchStream = (
    mpsc::Sender<pb::WatchRequest>,
    tonic::Streaming<pb::WatchResponse>,
);

async fn open_watch(channel: Channel) -> anyhow::Result<WatchStream> {
    let (tx, rx) = mpsc::channel(4);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                ..Default::default()
            },
        )),
    };
    tx.send(create).await?;
    let mut responses = WatchClient::new(channel)
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // The first response confirms the watch exists.
    responses.message().await?;
    Ok((tx, responses))
}

async fn consume(
    (_keep_open, mut responses): WatchStream,
    args: &BenchArgs,
    measuring: bool,
    recorder: &Mutex<Recorder>,
    progress: &Progress,
    acked: &Acked,
) -> anyhow::Result<()> {
    let expected = args.total;
    let mut seen = 0u64;
    while seen < expected {
        let next =
            tokio::time::timeout(std::time::Duration::from_secs(10), responses.message()).await;
        let Ok(Ok(Some(response))) = next else { break };
        for event in &response.events {
            seen += 1;
            let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            let latency = if args.workload == Workload::WatchLatency {
                acked
                    .lock()
                    .ok()
                    .and_then(|a| a.get(&revision).copied())
                    .map(|t| t.elapsed())
            } else {
                Some(std::time::Duration::ZERO)
            };
            if measuring {
                if let (Some(latency), Ok(mut recorder)) = (latency, recorder.lock()) {
                    recorder.record(latency, Ok(()));
                }
                progress.inc();
            }
        }
    }
    Ok(())
}

async fn write(
    mut kv: KvClient<Channel>,
    args: Arc<BenchArgs>,
    schedule: Arc<Schedule>,
    acked: Acked,
    salt: u64,
) -> anyhow::Result<()> {
    let value = Bytes::from(vec![b'v'; args.val_size]);
    while let Some((i, due)) = schedule.take() {
        wait_until(due).await;
        let request = pb::PutRequest {
            key: key(&args, i, salt),
            value: value.clone(),
            ..Default::default()
        };
        match kv.put(request).await {
            Ok(response) => {
                let revision = response.into_inner().header.map_or(0, |h| h.revision);
                if args.workload == Workload::WatchLatency {
                    if let Ok(mut acked) = acked.lock() {
                        acked.insert(revision, Instant::now());
                    }
                }
            }
            Err(status) => tracing::debug!(error = status_kind(&status), "put failed"),
        }
    }
    Ok(())
}
