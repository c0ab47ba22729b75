//! Simulated watchers: open etcd watch streams on the workload's keys, record every response,
//! and when a stream breaks (a crash, a partition) resume from the revision after the last
//! one seen, on another member — as a Kubernetes informer does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::kv_client::KvClient;
use keel_net::proto::etcdserverpb::watch_client::WatchClient;
use keel_net::proto::mvccpb;
use rand::Rng;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::client::{key_value, Endpoint, Recorder};
use crate::history::{
    ClientId, Event, EventKind, WatchFilters, WatchIndex, WatchRequest, WatchResponse,
    WatchResponseKind,
};
use crate::workload::{prefix_end, KEY_PREFIX};

/// A stream that delivers nothing for this long is considered broken and resumed.
const SILENCE: Duration = Duration::from_secs(10);

/// Where a watcher's first watch starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchStart {
    /// From revision 1 or from now (0), half and half, as the seed says; a broken stream
    /// resumes from the revision after its last event.
    #[default]
    Random,
    /// `start_revision = 0` ("from now") for every stream, never resumed.
    FromNow,
    /// This many revisions after the current one (a watch on a future revision).
    Ahead(i64),
}

/// How the run's watchers behave; the default is the random mix every seed runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatcherConfig {
    pub start: WatchStart,
    /// Every watcher watches on this server (index), never another.
    pub server: Option<usize>,
    /// Besides the random ones, a progress request this often on every stream.
    pub progress_every: Option<Duration>,
    /// Watcher 0 reads its stream this slowly: a pause after every response.
    pub slow_reader: Option<Duration>,
    /// Each stream is closed after this long and a new one opened (churn).
    pub lifetime: Option<Duration>,
    /// Watches created at once on each stream (> 1: a burst of creates), each from a
    /// different start revision.
    pub burst: usize,
}

/// Watches until `stop`, reopening on failure from the last seen revision.
pub async fn watch_loop(
    id: ClientId,
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    mut rng: impl Rng,
) {
    watch_loop_with(
        id,
        endpoints,
        recorder,
        stop,
        0,
        WatcherConfig::default(),
        &mut rng,
    )
    .await;
}

/// [`watch_loop`] as `config` says; `index` is the watcher's number in the run.
pub async fn watch_loop_with(
    id: ClientId,
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    index: usize,
    config: WatcherConfig,
    mut rng: impl Rng,
) {
    let mut next_revision: i64 = if rng.gen_bool(0.5) { 1 } else { 0 };
    let prev_kv = rng.gen_bool(0.5);
    let filters = WatchFilters {
        no_put: rng.gen_bool(0.1),
        no_delete: rng.gen_bool(0.1),
    };
    let progress_notify = rng.gen_bool(0.3);
    let mut ahead: Option<i64> = None;
    match config.start {
        WatchStart::Random => {}
        WatchStart::FromNow => next_revision = 0,
        WatchStart::Ahead(n) => ahead = Some(n),
    }
    let options = StreamOptions {
        slow: config.slow_reader.filter(|_| index == 0),
        lifetime: config.lifetime,
        progress_every: config.progress_every,
        burst: config.burst.max(1),
    };
    while !stop.load(Ordering::Relaxed) {
        let mut server = rng.gen_range(0..endpoints.len());
        if let Some(pinned) = config.server {
            server = pinned % endpoints.len();
        }
        if let Some(n) = ahead {
            match current_revision(&endpoints[server].url).await {
                Some(current) => next_revision = current + n,
                None => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let request = WatchRequest {
            key: Bytes::from(KEY_PREFIX),
            range_end: prefix_end(),
            start_revision: next_revision,
            prev_kv,
            filters,
            progress_notify,
        };
        let last = watch_once(
            id,
            &endpoints[server],
            &request,
            &recorder,
            &stop,
            &options,
            &mut rng,
        )
        .await;
        // (A watch `Ahead` starts ahead of the current revision every time.)
        if let Some(last) = last {
            next_revision = last + 1;
        }
        if config.start == WatchStart::FromNow {
            next_revision = 0;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..500))).await;
    }
}

/// The revision a linearizable read on `url` answers at.
async fn current_revision(url: &str) -> Option<i64> {
    let read = async {
        let mut kv = KvClient::connect(url.to_string()).await.ok()?;
        let request = pb::RangeRequest {
            key: Bytes::from(KEY_PREFIX),
            range_end: prefix_end(),
            count_only: true,
            ..Default::default()
        };
        let response = kv.range(request).await.ok()?.into_inner();
        response.header.map(|h| h.revision)
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()
        .flatten()
}

/// How one stream is read.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// A pause after every response (a slow reader).
    pub slow: Option<Duration>,
    /// Close the stream after this long.
    pub lifetime: Option<Duration>,
    /// Ask for progress this often.
    pub progress_every: Option<Duration>,
    /// Watches created on the stream at once: the first from the request's start
    /// revision, each next one from one revision later (or all from now).
    pub burst: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            slow: None,
            lifetime: None,
            progress_every: None,
            burst: 1,
        }
    }
}

/// One watch stream until it breaks, `stop`, or its lifetime ends; returns the last event
/// revision seen by its first watch.
pub async fn watch_once(
    id: ClientId,
    endpoint: &Endpoint,
    request: &WatchRequest,
    recorder: &Recorder,
    stop: &AtomicBool,
    options: &StreamOptions,
    rng: &mut impl Rng,
) -> Option<i64> {
    let started = tokio::time::Instant::now();
    let target = tonic::transport::Endpoint::from_shared(endpoint.url.clone()).ok()?;
    let channel: Channel = tokio::time::timeout(Duration::from_secs(2), target.connect())
        .await
        .ok()?
        .ok()?;
    let (tx, rx) = tokio::sync::mpsc::channel(3 + options.burst.max(1));
    let requests: Vec<WatchRequest> = (0..options.burst.max(1))
        .map(|i| WatchRequest {
            start_revision: if request.start_revision > 0 {
                request.start_revision + i as i64
            } else {
                request.start_revision
            },
            ..request.clone()
        })
        .collect();
    for r in &requests {
        tx.send(create_request(r)).await.ok()?;
    }
    let opened = tokio::time::timeout(
        Duration::from_secs(2),
        WatchClient::new(channel).watch(ReceiverStream::new(rx)),
    )
    .await;
    let mut stream = opened.ok()?.ok()?.into_inner();
    let time = recorder.now();
    let watches: Vec<WatchIndex> = requests
        .iter()
        .map(|r| recorder.with(|h| h.open_watch(id, Some(endpoint.member), time, r.clone())))
        .collect();
    // The k-th `created` response names the k-th watch's id.
    let mut ids: BTreeMap<i64, usize> = BTreeMap::new();
    let mut done = vec![false; watches.len()];
    let ticker = options.progress_every.map(|every| {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if tx.send(progress_request()).await.is_err() {
                    break;
                }
            }
        })
    });
    let mut last_revision = None;
    while !stop.load(Ordering::Relaxed) && done.iter().any(|d| !d) {
        // Now and then ask for a progress notification, to exercise Bookmarkable.
        if rng.gen_bool(0.05) {
            let _ = tx.try_send(progress_request());
        }
        let mut wait = SILENCE;
        if let Some(lifetime) = options.lifetime {
            match lifetime.checked_sub(started.elapsed()) {
                Some(left) if !left.is_zero() => wait = wait.min(left),
                _ => break,
            }
        }
        let next = tokio::time::timeout(wait, stream.message()).await;
        let Ok(Ok(Some(response))) = next else {
            break;
        };
        let recorded = convert(&response, recorder.now());
        let targets: Vec<usize> = if response.created {
            let k = ids.len();
            if k < watches.len() && !response.canceled {
                ids.insert(response.watch_id, k);
            } else if k < watches.len() {
                // Refused at once: the k-th watch has no id.
                ids.insert(i64::MIN + k as i64, k);
            }
            vec![k]
        } else if watches.len() == 1 {
            vec![0]
        } else if response.watch_id == PROGRESS_WATCH_ID {
            // For every watch of the stream that is still open.
            (0..watches.len()).filter(|&k| !done[k]).collect()
        } else {
            ids.get(&response.watch_id).copied().into_iter().collect()
        };
        // A create refused at once is `created` and `canceled` in one response: recorded
        // as both, so the checkers see the cancel.
        let mut kinds = vec![recorded];
        if response.created && response.canceled {
            kinds.push(WatchResponse {
                kind: WatchResponseKind::Canceled {
                    compact_revision: response.compact_revision,
                    reason: response.cancel_reason.clone(),
                },
                ..kinds[0].clone()
            });
        }
        for recorded in kinds {
            let canceled = matches!(recorded.kind, WatchResponseKind::Canceled { .. });
            for &k in targets.iter().filter(|&&k| k < watches.len()) {
                if k == 0 {
                    if let WatchResponseKind::Events(events) = &recorded.kind {
                        last_revision = events.last().map(Event::revision).or(last_revision);
                    }
                }
                recorder.with(|h| h.watch_response(watches[k], recorded.clone()));
                if canceled {
                    done[k] = true;
                }
            }
        }
        if let Some(pause) = options.slow {
            tokio::time::sleep(pause).await;
        }
    }
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    last_revision
}

/// The watch id etcd gives a progress response meant for every watch of a stream.
const PROGRESS_WATCH_ID: i64 = -1;

fn create_request(request: &WatchRequest) -> pb::WatchRequest {
    let mut filters = Vec::new();
    if request.filters.no_put {
        filters.push(pb::watch_create_request::FilterType::Noput as i32);
    }
    if request.filters.no_delete {
        filters.push(pb::watch_create_request::FilterType::Nodelete as i32);
    }
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: request.key.clone(),
                range_end: request.range_end.clone(),
                start_revision: request.start_revision,
                progress_notify: request.progress_notify,
                filters,
                prev_kv: request.prev_kv,
                ..Default::default()
            },
        )),
    }
}

fn progress_request() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    }
}

fn convert(response: &pb::WatchResponse, received: u64) -> WatchResponse {
    let header_revision = response.header.as_ref().map_or(0, |h| h.revision);
    let kind = if response.created {
        WatchResponseKind::Created
    } else if response.canceled {
        WatchResponseKind::Canceled {
            compact_revision: response.compact_revision,
            reason: response.cancel_reason.clone(),
        }
    } else if response.events.is_empty() {
        WatchResponseKind::Progress
    } else {
        WatchResponseKind::Events(response.events.iter().map(event).collect())
    };
    WatchResponse {
        received,
        header_revision,
        kind,
    }
}

fn event(e: &mvccpb::Event) -> Event {
    let kind = if e.r#type == mvccpb::event::EventType::Delete as i32 {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    Event {
        kind,
        kv: e.kv.clone().map(key_value).unwrap_or_default(),
        prev_kv: e.prev_kv.clone().map(key_value),
    }
}

/// etcd #18089 / #19179, on purpose and over and over: put a key, delete it (revision D),
/// compact at exactly D, then watch from D - 1 (compacted: must be cancelled with the
/// compact revision, or deliver the truth), from D (must start with the delete at D) and
/// from D + 1, each for a moment, on any member. The checkers judge every watch.
pub async fn compaction_watches(
    id: ClientId,
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    mut rng: impl Rng,
) {
    use crate::client::SimClient;
    use crate::history::{DeleteRange, Outcome, Put, Request, Response};

    let mut client = SimClient::new(
        id,
        endpoints.clone(),
        recorder.clone(),
        crate::world::CLIENT_TIMEOUT,
    );
    let key = Bytes::from(format!("{KEY_PREFIX}compacted"));
    let options = StreamOptions {
        lifetime: Some(Duration::from_millis(400)),
        ..StreamOptions::default()
    };
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..300))).await;
        let server = rng.gen_range(0..endpoints.len());
        let put = Request::Put(Put {
            key: key.clone(),
            value: Bytes::from(format!("cw{id}-{round}")),
            lease: 0,
            prev_kv: false,
        });
        if !matches!(client.execute(server, put).await, Outcome::Ok(_)) {
            continue;
        }
        let delete = Request::DeleteRange(DeleteRange {
            key: key.clone(),
            range_end: Bytes::new(),
            prev_kv: rng.gen_bool(0.5),
        });
        let Outcome::Ok(Response::DeleteRange {
            revision, deleted, ..
        }) = client.execute(server, delete).await
        else {
            continue;
        };
        if deleted != 1 {
            continue;
        }
        let compact = Request::Compact { revision };
        let server = rng.gen_range(0..endpoints.len());
        if !matches!(client.execute(server, compact).await, Outcome::Ok(_)) {
            continue;
        }
        for start in [revision - 1, revision, revision, revision + 1] {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let request = WatchRequest {
                key: Bytes::from(KEY_PREFIX),
                range_end: prefix_end(),
                start_revision: start.max(1),
                prev_kv: rng.gen_bool(0.5),
                filters: WatchFilters::default(),
                progress_notify: false,
            };
            let server = rng.gen_range(0..endpoints.len());
            watch_once(
                id,
                &endpoints[server],
                &request,
                &recorder,
                &stop,
                &options,
                &mut rng,
            )
            .await;
        }
    }
}
