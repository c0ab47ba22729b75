//! The Watch service. Each gRPC stream is one watch stream of the node's `WatchHub`: a
//! reader task turns the client's requests into hub calls on the loop, a sender task moves
//! the hub's responses (which the loop puts in the stream's outbox) to the client, filling
//! in the header and splitting large responses into fragments when the watch asked for it.
//! When the client goes away both tasks end, the outbox closes and the loop drops the
//! stream's watchers.

use crate::server_loop::handle::Consistency;
use keel_core::node::query::{Ask, CancelWatch, CreateWatch, FlushWatches, RequestProgress};
use keel_core::node::CallerCheck;
use std::sync::Arc;
use std::time::Duration;

use keel_core::auth::{Access, AuthError, Credentials};
use keel_core::mvcc::{StreamId, WatchResponse, PROGRESS_WATCH_ID};
use keel_core::rpctypes::{RpcError, ToRpcError};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::status;
use super::Api;
use crate::metrics::Metrics;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::mvccpb;
use crate::server_loop::handle::{ApiError, NodeHandle};
use crate::server_loop::WatchOpen;

/// Converted responses waiting for the gRPC stream, per stream. Beyond it the loop keeps
/// them in the hub (which bounds them in turn).
const SEND_QUEUE: usize = 64;
/// The protobuf field number of `WatchResponse.events`, for sizing fragments.
const EVENTS_FIELD: u32 = 11;
/// How often watchers catching up from history are given their next part (etcd's
/// `syncWatchersLoop` runs every 100 ms).
pub const WATCH_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How often watchers created with `progress_notify` hear of progress when idle (etcd's
/// default `--experimental-watch-progress-notify-interval`).
pub const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// clientv3's `InvalidWatchID`: the id of a watch refused before it existed.
const INVALID_WATCH_ID: i64 = -1;
/// etcd's answer to a create with a negative start revision.
const COMPACTED_REASON: &str = RpcError::Compacted.message();

#[derive(Clone, Debug)]
pub struct WatchService {
    api: Api,
    opens: mpsc::Sender<WatchOpen>,
    metrics: Arc<Metrics>,
    /// Responses larger than this are split when the watch asked for fragments (etcd uses
    /// its max request bytes plus the gRPC overhead).
    max_response_bytes: usize,
}

impl WatchService {
    pub fn new(
        api: Api,
        opens: mpsc::Sender<WatchOpen>,
        metrics: Arc<Metrics>,
        max_response_bytes: usize,
    ) -> WatchService {
        WatchService {
            api,
            opens,
            metrics,
            max_response_bytes,
        }
    }

    async fn open_stream(&self) -> Result<(StreamId, mpsc::Receiver<WatchResponse>), Status> {
        let (reply, answer) = oneshot::channel();
        let stopped = || status(ApiError::Stopped);
        self.opens
            .send(WatchOpen { reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
}

impl WatchService {
    /// A watch made in-process as `credentials`' owner, checked as a client's would be: the
    /// lock and election services wait on keys with it (see `super::concurrency`). Dropping
    /// it closes its stream on the loop.
    pub(crate) async fn watch_as(
        &self,
        credentials: &Credentials,
        create: pb::WatchCreateRequest,
    ) -> Result<InProcessWatch, Status> {
        self.api.refuse_on_learner()?;
        let (stream, outbox) = self.open_stream().await?;
        let (responses, mut refusals) = mpsc::channel(1);
        let reader = RequestReader {
            api: self.api.clone(),
            credentials: credentials.clone(),
            stream,
            responses,
        };
        reader.create(create).await?;
        // A refusal (no permission) is sent before `create` returns.
        if let Ok(Ok(refusal)) = refusals.try_recv() {
            return Err(Status::unknown(refusal.cancel_reason));
        }
        Ok(InProcessWatch {
            api: self.api.clone(),
            metrics: self.metrics.clone(),
            outbox,
        })
    }
}

/// See [`WatchService::watch_as`].
#[derive(Debug)]
pub struct InProcessWatch {
    api: Api,
    metrics: Arc<Metrics>,
    outbox: mpsc::Receiver<WatchResponse>,
}

impl InProcessWatch {
    /// The next response that carries events, as a client would receive it; an error once
    /// the watch is canceled (a compacted start revision) or the server stops.
    pub async fn next_events(&mut self) -> Result<pb::WatchResponse, Status> {
        loop {
            let Some(response) = self.outbox.recv().await else {
                return Err(Status::unknown("lost watcher waiting for delete"));
            };
            if response.canceled {
                let reason = if response.compact_revision > 0 {
                    COMPACTED_REASON.to_string()
                } else {
                    response.cancel_reason
                };
                return Err(Status::unknown(reason));
            }
            if !response.events.is_empty() {
                let header = self.api.header_at(self.metrics.raft_term());
                return Ok(convert::watch_response(response, &header));
            }
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = tonic::codegen::BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.api.refuse_on_learner()?;
        // Permissions are checked when each watch is created, with the stream's credentials.
        let credentials = self.api.credentials(&request);
        let (stream, outbox) = self.open_stream().await?;
        let (responses, to_client) = mpsc::channel(SEND_QUEUE);
        let reader = RequestReader {
            api: self.api.clone(),
            credentials,
            stream,
            responses: responses.clone(),
        };
        tokio::spawn(reader.run(request.into_inner()));
        let sender = ResponseSender {
            api: self.api.clone(),
            metrics: self.metrics.clone(),
            max_response_bytes: self.max_response_bytes,
            outbox,
            responses,
        };
        tokio::spawn(sender.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(to_client))))
    }
}

type Responses = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// Turns the client's requests into calls on the hub.
struct RequestReader {
    api: Api,
    credentials: Credentials,
    stream: StreamId,
    responses: Responses,
}

impl RequestReader {
    async fn run(self, mut requests: Streaming<pb::WatchRequest>) {
        loop {
            let next = tokio::select! {
                biased;
                next = requests.message() => next,
                () = self.responses.closed() => return,
            };
            // The client closed its side (its watches go on, as in etcd), or went away.
            let Ok(Some(request)) = next else { return };
            if let Err(status) = self.handle(request).await {
                let _ = self.responses.send(Err(status)).await;
                return;
            }
        }
    }

    async fn handle(&self, request: pb::WatchRequest) -> Result<(), Status> {
        use pb::watch_request::RequestUnion;
        let stream = self.stream;
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                let watch_id = cancel.watch_id;
                self.ask(CancelWatch { stream, watch_id }).await
            }
            Some(RequestUnion::ProgressRequest(_)) => self.ask(RequestProgress { stream }).await,
            // etcd ignores a request with nothing in it.
            None => Ok(()),
        }
    }

    async fn create(&self, create: pb::WatchCreateRequest) -> Result<(), Status> {
        if create.start_revision < 0 {
            return self.refuse_negative_start().await;
        }
        // etcd checks the key as sent, with the empty key meaning the smallest one.
        let key = if create.key.is_empty() {
            vec![0]
        } else {
            create.key.to_vec()
        };
        let check = CallerCheck::Keys {
            access: Access::Read,
            key,
            range_end: create.range_end.to_vec(),
        };
        let create = CreateWatch {
            stream: self.stream,
            request: convert::watch_create_request(create),
        };
        let created = self
            .api
            .handle
            .ask_as(
                Consistency::Serializable,
                self.credentials.clone(),
                check,
                create,
            )
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(ApiError::Auth(error)) => self.refuse(&error).await,
            Err(error) => Err(status(error)),
        }
    }

    /// etcd's answer to a watch the caller may not make: created and canceled at once,
    /// with the gRPC error as the reason.
    async fn refuse(&self, error: &AuthError) -> Result<(), Status> {
        let reason = match error {
            AuthError::InvalidAuthToken | AuthError::AuthOldRevision | AuthError::UserEmpty => {
                error.clone()
            }
            _ => AuthError::PermissionDenied,
        };
        let header = self.api.current_header().await?;
        let refusal = pb::WatchResponse {
            header: Some(header),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: format!(
                "rpc error: code = {} desc = {reason}",
                reason.rpc_error().code().name()
            ),
            ..pb::WatchResponse::default()
        };
        let _ = self.responses.send(Ok(refusal)).await;
        Ok(())
    }

    async fn refuse_negative_start(&self) -> Result<(), Status> {
        let header = self.api.current_header().await?;
        let refusal = pb::WatchResponse {
            header: Some(header),
            watch_id: PROGRESS_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: COMPACTED_REASON.to_string(),
            ..pb::WatchResponse::default()
        };
        let _ = self.responses.send(Ok(refusal)).await;
        Ok(())
    }

    /// A command on this stream's watches, once this member serves from its state.
    async fn ask<Q: Ask<Answer = ()>>(&self, command: Q) -> Result<(), Status> {
        self.api
            .handle
            .ask(Consistency::Serializable, command)
            .await
            .map_err(status)
    }
}

/// Creates a watch the caller may make, on the loop.
/// Moves the hub's responses to the client.
struct ResponseSender {
    api: Api,
    metrics: Arc<Metrics>,
    max_response_bytes: usize,
    outbox: mpsc::Receiver<WatchResponse>,
    responses: Responses,
}

impl ResponseSender {
    async fn run(mut self) {
        loop {
            let next = tokio::select! {
                biased;
                next = self.outbox.recv() => next,
                () = self.responses.closed() => return,
            };
            // The loop closed the outbox: the server is stopping.
            let Some(response) = next else { return };
            for piece in self.prepare(response) {
                if self.responses.send(Ok(piece)).await.is_err() {
                    return;
                }
            }
        }
    }

    fn prepare(&self, response: WatchResponse) -> Vec<pb::WatchResponse> {
        let split = response.fragment && response.events.len() > 1;
        // The loop updates the term after every batch, before it fills outboxes.
        let header = self.api.header_at(self.metrics.raft_term());
        let response = convert::watch_response(response, &header);
        if split {
            fragments(response, self.max_response_bytes)
        } else {
            vec![response]
        }
    }
}

/// Splits `response` into pieces smaller than `max_bytes` (a single event larger than that
/// travels alone), all but the last marked `fragment`, as etcd's `sendFragments` does.
pub fn fragments(mut response: pb::WatchResponse, max_bytes: usize) -> Vec<pb::WatchResponse> {
    if response.events.len() < 2 || response.encoded_len() < max_bytes {
        return vec![response];
    }
    let events = std::mem::take(&mut response.events);
    let template = pb::WatchResponse {
        fragment: true,
        ..response
    };
    let base_bytes = template.encoded_len();
    let mut pieces = Vec::new();
    let mut piece: Vec<mvccpb::Event> = Vec::new();
    let mut piece_bytes = base_bytes;
    for event in events {
        let event_bytes = prost::encoding::message::encoded_len(EVENTS_FIELD, &event);
        if !piece.is_empty() && piece_bytes + event_bytes >= max_bytes {
            pieces.push(pb::WatchResponse {
                events: std::mem::take(&mut piece),
                ..template.clone()
            });
            piece_bytes = base_bytes;
        }
        piece_bytes += event_bytes;
        piece.push(event);
    }
    pieces.push(pb::WatchResponse {
        events: piece,
        fragment: false,
        ..template
    });
    pieces
}

/// Keeps watchers moving when nothing is applied: gives those catching up from history
/// their next part every [`WATCH_SYNC_INTERVAL`], and sends progress notifications every
/// `progress_interval` (`--experimental-watch-progress-notify-interval`, by default
/// [`PROGRESS_NOTIFY_INTERVAL`]). Ends when the server stops.
pub async fn keep_watchers_moving(handle: NodeHandle, progress_interval: Duration) {
    let mut sync = tokio::time::interval(WATCH_SYNC_INTERVAL);
    sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_progress = tokio::time::Instant::now() + progress_interval;
    loop {
        sync.tick().await;
        let progress_due = tokio::time::Instant::now() >= next_progress;
        if progress_due {
            next_progress += progress_interval;
        }
        let called = handle
            .ask(Consistency::Serializable, FlushWatches { progress_due })
            .await;
        if called == Err(ApiError::Stopped) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, value_bytes: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(mvccpb::KeyValue {
                key: key.as_bytes().to_vec().into(),
                value: vec![b'v'; value_bytes].into(),
                ..mvccpb::KeyValue::default()
            }),
            prev_kv: None,
        }
    }

    fn response(events: Vec<mvccpb::Event>) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                revision: 42,
                ..pb::ResponseHeader::default()
            }),
            watch_id: 7,
            events,
            ..pb::WatchResponse::default()
        }
    }

    #[test]
    fn a_small_response_is_not_split() {
        let small = response(vec![event("a", 10), event("b", 10)]);
        assert_eq!(fragments(small.clone(), 1024), vec![small]);
    }

    #[test]
    fn a_large_response_is_split_under_the_limit_and_keeps_every_event_in_order() {
        let events: Vec<_> = (0..20).map(|i| event(&format!("k{i:02}"), 100)).collect();
        let large = response(events.clone());
        let max_bytes = 500;
        let pieces = fragments(large, max_bytes);
        assert!(pieces.len() > 1);
        let (last, rest) = pieces.split_last().unwrap();
        assert!(rest.iter().all(|p| p.fragment));
        assert!(!last.fragment);
        for piece in &pieces {
            assert!(piece.encoded_len() < max_bytes, "{}", piece.encoded_len());
            assert_eq!(piece.watch_id, 7);
            assert_eq!(piece.header.unwrap().revision, 42);
        }
        let joined: Vec<_> = pieces.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events);
    }

    #[test]
    fn an_event_larger_than_the_limit_travels_alone() {
        let events = vec![event("a", 10), event("huge", 2000), event("b", 10)];
        let pieces = fragments(response(events), 500);
        let sizes: Vec<usize> = pieces.iter().map(|p| p.events.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }

    #[test]
    fn a_negative_start_is_refused_with_etcds_reason() {
        assert_eq!(
            COMPACTED_REASON,
            keel_core::mvcc::Error::Compacted.to_string()
        );
    }
}
