//! gRPC server metrics with go-grpc-prometheus' names and labels, as etcd exports them
//! (`grpc_server_started_total`, `grpc_server_handled_total{grpc_code}`,
//! `grpc_server_msg_{received,sent}_total`, `grpc_server_handling_seconds`), and etcd's
//! client traffic counters (`etcd_network_client_grpc_{received,sent}_bytes_total`): the
//! etcd-mixin's dashboards and alerts read them.
//!
//! A layer on the client port's gRPC routes, so calls through the JSON gateway count too (as
//! in etcd, whose gateway is a gRPC client of its own server). Messages are counted from the
//! gRPC framing of the bodies (each message is a 5-byte header and its payload), and the
//! status from the response's `grpc-status` (in its headers for an error answered at once,
//! else in its trailers; a call whose client went away first counts as `Canceled`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http_body::Frame;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `grpc_method`, `grpc_service`, `grpc_type`: sorted by name, as Go's client library writes
/// them.
type MethodLabels = [(&'static str, &'static str); 3];
/// `grpc_code` and the same.
type HandledLabels = [(&'static str, &'static str); 4];

/// etcd's gRPC methods (of `rpc.proto`, `v3lock.proto`, `v3election.proto`), sorted by path,
/// with their kind: the calls counted (grpc-go counts only the methods it serves).
const METHODS: [(&str, &str); 49] = [
    ("/etcdserverpb.Auth/AuthDisable", "unary"),
    ("/etcdserverpb.Auth/AuthEnable", "unary"),
    ("/etcdserverpb.Auth/AuthStatus", "unary"),
    ("/etcdserverpb.Auth/Authenticate", "unary"),
    ("/etcdserverpb.Auth/RoleAdd", "unary"),
    ("/etcdserverpb.Auth/RoleDelete", "unary"),
    ("/etcdserverpb.Auth/RoleGet", "unary"),
    ("/etcdserverpb.Auth/RoleGrantPermission", "unary"),
    ("/etcdserverpb.Auth/RoleList", "unary"),
    ("/etcdserverpb.Auth/RoleRevokePermission", "unary"),
    ("/etcdserverpb.Auth/UserAdd", "unary"),
    ("/etcdserverpb.Auth/UserChangePassword", "unary"),
    ("/etcdserverpb.Auth/UserDelete", "unary"),
    ("/etcdserverpb.Auth/UserGet", "unary"),
    ("/etcdserverpb.Auth/UserGrantRole", "unary"),
    ("/etcdserverpb.Auth/UserList", "unary"),
    ("/etcdserverpb.Auth/UserRevokeRole", "unary"),
    ("/etcdserverpb.Cluster/MemberAdd", "unary"),
    ("/etcdserverpb.Cluster/MemberList", "unary"),
    ("/etcdserverpb.Cluster/MemberPromote", "unary"),
    ("/etcdserverpb.Cluster/MemberRemove", "unary"),
    ("/etcdserverpb.Cluster/MemberUpdate", "unary"),
    ("/etcdserverpb.KV/Compact", "unary"),
    ("/etcdserverpb.KV/DeleteRange", "unary"),
    ("/etcdserverpb.KV/Put", "unary"),
    ("/etcdserverpb.KV/Range", "unary"),
    ("/etcdserverpb.KV/RangeStream", "server_stream"),
    ("/etcdserverpb.KV/Txn", "unary"),
    ("/etcdserverpb.Lease/LeaseGrant", "unary"),
    ("/etcdserverpb.Lease/LeaseKeepAlive", "bidi_stream"),
    ("/etcdserverpb.Lease/LeaseLeases", "unary"),
    ("/etcdserverpb.Lease/LeaseRevoke", "unary"),
    ("/etcdserverpb.Lease/LeaseTimeToLive", "unary"),
    ("/etcdserverpb.Maintenance/Alarm", "unary"),
    ("/etcdserverpb.Maintenance/Defragment", "unary"),
    ("/etcdserverpb.Maintenance/Downgrade", "unary"),
    ("/etcdserverpb.Maintenance/Hash", "unary"),
    ("/etcdserverpb.Maintenance/HashKV", "unary"),
    ("/etcdserverpb.Maintenance/MoveLeader", "unary"),
    ("/etcdserverpb.Maintenance/Snapshot", "server_stream"),
    ("/etcdserverpb.Maintenance/Status", "unary"),
    ("/etcdserverpb.Watch/Watch", "bidi_stream"),
    ("/v3electionpb.Election/Campaign", "unary"),
    ("/v3electionpb.Election/Leader", "unary"),
    ("/v3electionpb.Election/Observe", "server_stream"),
    ("/v3electionpb.Election/Proclaim", "unary"),
    ("/v3electionpb.Election/Resign", "unary"),
    ("/v3lockpb.Lock/Lock", "unary"),
    ("/v3lockpb.Lock/Unlock", "unary"),
];

/// gRPC's codes as grpc-go names them (`codes.Code.String()`), by number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// One method's series, made when the server starts (as go-grpc-prometheus initializes
/// every method and code), so a call only finds its method and adds to atomics.
#[derive(Debug)]
struct MethodMetrics {
    started: Counter,
    received: Counter,
    sent: Counter,
    handling_seconds: Histogram,
    /// By gRPC code number.
    handled: [Counter; CODE_NAMES.len()],
}

/// Every method's series and the byte counters, shared by every call.
#[derive(Debug)]
pub struct GrpcMetrics {
    /// In the order of [`METHODS`].
    methods: Vec<MethodMetrics>,
    received_bytes: Counter,
    sent_bytes: Counter,
}

impl GrpcMetrics {
    pub fn new(registry: &mut Registry) -> Arc<GrpcMetrics> {
        let started = Family::<MethodLabels, Counter>::default();
        let received = Family::<MethodLabels, Counter>::default();
        let sent = Family::<MethodLabels, Counter>::default();
        let handled = Family::<HandledLabels, Counter>::default();
        // go-grpc-prometheus' buckets reach 10 s; these go from 5 ms to about 10 s.
        let handling_seconds: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 12)));
        let methods = METHODS
            .iter()
            .filter_map(|(path, _)| method_labels(path))
            .map(|labels| {
                let [method, service, kind] = labels;
                MethodMetrics {
                    started: started.get_or_create(&labels).clone(),
                    received: received.get_or_create(&labels).clone(),
                    sent: sent.get_or_create(&labels).clone(),
                    handling_seconds: handling_seconds.get_or_create(&labels).clone(),
                    handled: std::array::from_fn(|code| {
                        let labels = [("grpc_code", CODE_NAMES[code]), method, service, kind];
                        handled.get_or_create(&labels).clone()
                    }),
                }
            })
            .collect();
        let metrics = GrpcMetrics {
            methods,
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
        };
        let families: [(&str, &str, &Family<MethodLabels, Counter>); 3] = [
            (
                "grpc_server_started",
                "Total number of RPCs started on the server",
                &started,
            ),
            (
                "grpc_server_msg_received",
                "Total number of RPC stream messages received on the server",
                &received,
            ),
            (
                "grpc_server_msg_sent",
                "Total number of gRPC stream messages sent by the server",
                &sent,
            ),
        ];
        for (name, help, family) in families {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            handled,
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level \
             handled by the server",
            handling_seconds,
        );
        registry.register(
            "etcd_network_client_grpc_received_bytes",
            "The total number of bytes received from grpc clients",
            metrics.received_bytes.clone(),
        );
        registry.register(
            "etcd_network_client_grpc_sent_bytes",
            "The total number of bytes sent to grpc clients",
            metrics.sent_bytes.clone(),
        );
        Arc::new(metrics)
    }

    /// Counts a call through `next` (an axum middleware: `axum::middleware::from_fn`).
    pub async fn count(
        self: Arc<GrpcMetrics>,
        request: Request,
        next: axum::middleware::Next,
    ) -> Response {
        let path = request.uri().path();
        let Ok(method) = METHODS.binary_search_by(|(known, _)| (*known).cmp(path)) else {
            return next.run(request).await;
        };
        let Some(series) = self.methods.get(method) else {
            return next.run(request).await;
        };
        series.started.inc();
        let call = Call {
            metrics: self.clone(),
            method,
            started: Instant::now(),
        };
        let request = request.map(|body| {
            Body::new(Counted {
                body,
                frames: FrameCounter::default(),
                counter: Direction::Received(call.clone()),
            })
        });
        // A client that goes away before the answer drops this future: counted `Canceled`.
        let waiting = Unanswered(Some(call.clone()));
        let response = next.run(request).await;
        waiting.answered();
        if let Some(code) = grpc_status(response.headers()) {
            call.handled(code);
            return response;
        }
        response.map(|body| {
            Body::new(Counted {
                body,
                frames: FrameCounter::default(),
                counter: Direction::Sent(Some(call)),
            })
        })
    }
}

/// The labels of a gRPC call to `path` (`/package.Service/Method`), if it is one of etcd's.
fn method_labels(path: &'static str) -> Option<MethodLabels> {
    let index = METHODS
        .binary_search_by(|(known, _)| (*known).cmp(path))
        .ok()?;
    let (_, kind) = METHODS[index];
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    Some([
        ("grpc_method", method),
        ("grpc_service", service),
        ("grpc_type", kind),
    ])
}

/// The gRPC code number of a response's `grpc-status` (`Unknown` if it is not one).
fn grpc_status(headers: &axum::http::HeaderMap) -> Option<usize> {
    let code: usize = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(if code < CODE_NAMES.len() {
        code
    } else {
        UNKNOWN
    })
}

const UNKNOWN: usize = 2;
const CANCELED: usize = 1;

/// One call being counted.
#[derive(Clone, Debug)]
struct Call {
    metrics: Arc<GrpcMetrics>,
    /// Its place in [`METHODS`].
    method: usize,
    started: Instant,
}

impl Call {
    fn series(&self) -> Option<&MethodMetrics> {
        self.metrics.methods.get(self.method)
    }

    fn handled(&self, code: usize) {
        if let Some(series) = self.series() {
            if let Some(handled) = series.handled.get(code) {
                handled.inc();
            }
            series
                .handling_seconds
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

/// A call whose handler has not answered yet.
#[derive(Debug)]
struct Unanswered(Option<Call>);

impl Unanswered {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            call.handled(CANCELED);
        }
    }
}

#[derive(Debug)]
enum Direction {
    Received(Call),
    /// The call, until its status is counted.
    Sent(Option<Call>),
}

/// Counts whole gRPC messages in a body: a 5-byte header (compression flag, big-endian
/// length) then the payload, split across data frames in any way.
#[derive(Debug, Default)]
struct FrameCounter {
    header: [u8; 5],
    header_filled: usize,
    payload_left: u64,
}

impl FrameCounter {
    /// The messages whose header `data` completes.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut messages = 0;
        while !data.is_empty() {
            if self.payload_left > 0 {
                let skipped = data
                    .len()
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= skipped as u64;
                data = &data[skipped..];
                continue;
            }
            let taken = data.len().min(self.header.len() - self.header_filled);
            self.header[self.header_filled..self.header_filled + taken]
                .copy_from_slice(&data[..taken]);
            self.header_filled += taken;
            data = &data[taken..];
            if self.header_filled == self.header.len() {
                let [_, a, b, c, d] = self.header;
                self.payload_left = u64::from(u32::from_be_bytes([a, b, c, d]));
                self.header_filled = 0;
                messages += 1;
            }
        }
        messages
    }
}

/// A body whose messages and bytes are counted as they pass.
#[derive(Debug)]
struct Counted {
    body: Body,
    frames: FrameCounter,
    counter: Direction,
}

impl Counted {
    fn count_data(&mut self, data: &Bytes) {
        let messages = self.frames.feed(data);
        let (call, bytes) = match &self.counter {
            Direction::Received(call) => (call, &call.metrics.received_bytes),
            Direction::Sent(Some(call)) => (call, &call.metrics.sent_bytes),
            Direction::Sent(None) => return,
        };
        bytes.inc_by(data.len() as u64);
        let Some(series) = call.series() else { return };
        if messages > 0 {
            let counter = match self.counter {
                Direction::Received(_) => &series.received,
                Direction::Sent(_) => &series.sent,
            };
            counter.inc_by(messages);
        }
    }

    fn finish(&mut self, code: usize) {
        if let Direction::Sent(call) = &mut self.counter {
            if let Some(call) = call.take() {
                call.handled(code);
            }
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    self.count_data(&data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers).unwrap_or(UNKNOWN);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(UNKNOWN),
            Poll::Ready(None) => self.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Counted {
    /// A response body dropped before its trailers: the client went away.
    fn drop(&mut self) {
        self.finish(CANCELED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_however_the_frames_split_them() {
        let mut body = Vec::new();
        for payload in [&b"abc"[..], b"", b"0123456789"] {
            body.push(0);
            body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            body.extend_from_slice(payload);
        }
        for split in 1..body.len() {
            let mut counter = FrameCounter::default();
            let counted: u64 = body.chunks(split).map(|chunk| counter.feed(chunk)).sum();
            assert_eq!(counted, 3, "in chunks of {split}");
        }
    }

    #[test]
    fn a_method_path_gives_go_grpc_prometheus_labels() {
        assert_eq!(
            method_labels("/etcdserverpb.KV/Range"),
            Some([
                ("grpc_method", "Range"),
                ("grpc_service", "etcdserverpb.KV"),
                ("grpc_type", "unary"),
            ])
        );
        assert_eq!(
            method_labels("/etcdserverpb.Watch/Watch").map(|l| l[2].1),
            Some("bidi_stream")
        );
        assert_eq!(method_labels("/health"), None);
        assert_eq!(method_labels("/etcdserverpb.KV/Madeup"), None);
    }

    #[test]
    fn the_method_table_is_sorted_for_its_binary_search() {
        assert!(METHODS.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }
}
