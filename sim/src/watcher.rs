//! Simulated watchers: open etcd watch streams on the workload's keys, record every response,
//! and when a stream breaks (a crash, a partition) resume from the revision after the last
//! one seen, on another member — as a Kubernetes informer does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::watch_client::WatchClient;
use keel_net::proto::mvccpb;
use rand::Rng;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::client::{key_value, Endpoint, Recorder};
use crate::history::{
    ClientId, Event, EventKind, WatchFilters, WatchRequest, WatchResponse, WatchResponseKind,
};
use crate::workload::{prefix_end, KEY_PREFIX};

/// A stream that delivers nothing for this long is considered broken and resumed.
const SILENCE: Duration = Duration::from_secs(10);

/// Watches until `stop`, reopening on failure from the last seen revision.
pub async fn watch_loop(
    id: ClientId,
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    mut rng: impl Rng,
) {
    let mut next_revision: i64 = if rng.gen_bool(0.5) { 1 } else { 0 };
    let prev_kv = rng.gen_bool(0.5);
    let filters = WatchFilters {
        no_put: rng.gen_bool(0.1),
        no_delete: rng.gen_bool(0.1),
    };
    let progress_notify = rng.gen_bool(0.3);
    while !stop.load(Ordering::Relaxed) {
        let server = rng.gen_range(0..endpoints.len());
        let request = WatchRequest {
            key: Bytes::from(KEY_PREFIX),
            range_end: prefix_end(),
            start_revision: next_revision,
            prev_kv,
            filters,
            progress_notify,
        };
        let last = watch_once(id, &endpoints[server], &request, &recorder, &stop, &mut rng).await;
        if let Some(last) = last {
            next_revision = last + 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..500))).await;
    }
}

/// One watch stream until it breaks or `stop`; returns the last event revision seen.
async fn watch_once(
    id: ClientId,
    endpoint: &Endpoint,
    request: &WatchRequest,
    recorder: &Recorder,
    stop: &AtomicBool,
    rng: &mut impl Rng,
) -> Option<i64> {
    let target = tonic::transport::Endpoint::from_shared(endpoint.url.clone()).ok()?;
    let channel: Channel = tokio::time::timeout(Duration::from_secs(2), target.connect())
        .await
        .ok()?
        .ok()?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(create_request(request)).await.ok()?;
    let opened = tokio::time::timeout(
        Duration::from_secs(2),
        WatchClient::new(channel).watch(ReceiverStream::new(rx)),
    )
    .await;
    let mut stream = opened.ok()?.ok()?.into_inner();
    let time = recorder.now();
    let watch = recorder.with(|h| h.open_watch(id, Some(endpoint.member), time, request.clone()));
    let mut last_revision = None;
    while !stop.load(Ordering::Relaxed) {
        // Now and then ask for a progress notification, to exercise Bookmarkable.
        if rng.gen_bool(0.05) {
            let _ = tx.try_send(progress_request());
        }
        let next = tokio::time::timeout(SILENCE, stream.message()).await;
        let Ok(Ok(Some(response))) = next else {
            break;
        };
        let recorded = convert(&response, recorder.now());
        if let WatchResponseKind::Events(events) = &recorded.kind {
            last_revision = events.last().map(Event::revision).or(last_revision);
        }
        let canceled = matches!(recorded.kind, WatchResponseKind::Canceled { .. });
        recorder.with(|h| h.watch_response(watch, recorded));
        if canceled {
            break;
        }
    }
    last_revision
}

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
