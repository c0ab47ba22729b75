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

/// etcd's streaming methods; every other method is unary.
const STREAMING: [(&str, &str); 5] = [
    ("/etcdserverpb.Watch/Watch", "bidi_stream"),
    ("/etcdserverpb.Lease/LeaseKeepAlive", "bidi_stream"),
    ("/etcdserverpb.Maintenance/Snapshot", "server_stream"),
    ("/etcdserverpb.KV/RangeStream", "server_stream"),
    ("/v3electionpb.Election/Observe", "server_stream"),
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

/// The families, shared by every call.
#[derive(Debug)]
pub struct GrpcMetrics {
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    received: Family<MethodLabels, Counter>,
    sent: Family<MethodLabels, Counter>,
    handling_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    received_bytes: Counter,
    sent_bytes: Counter,
}

impl GrpcMetrics {
    pub fn new(registry: &mut Registry) -> Arc<GrpcMetrics> {
        let metrics = GrpcMetrics {
            started: Family::default(),
            handled: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            // go-grpc-prometheus' buckets reach 10 s; these go from 5 ms to about 10 s.
            handling_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            }),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
        };
        let families: [(&str, &str, &Family<MethodLabels, Counter>); 3] = [
            (
                "grpc_server_started",
                "Total number of RPCs started on the server",
                &metrics.started,
            ),
            (
                "grpc_server_msg_received",
                "Total number of RPC stream messages received on the server",
                &metrics.received,
            ),
            (
                "grpc_server_msg_sent",
                "Total number of gRPC stream messages sent by the server",
                &metrics.sent,
            ),
        ];
        for (name, help, family) in families {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            metrics.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level \
             handled by the server",
            metrics.handling_seconds.clone(),
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
        let Some(labels) = method_labels(request.uri().path()) else {
            return next.run(request).await;
        };
        self.started.get_or_create(&labels).inc();
        let call = Call {
            metrics: self.clone(),
            labels,
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

/// The labels of a gRPC call to `path` (`/package.Service/Method`), if it names one.
fn method_labels(path: &str) -> Option<MethodLabels> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let kind = STREAMING
        .iter()
        .find(|(streaming, _)| *streaming == path)
        .map_or("unary", |(_, kind)| *kind);
    Some([
        ("grpc_method", intern(method)),
        ("grpc_service", intern(service)),
        ("grpc_type", kind),
    ])
}

/// Label values live as long as the server: each distinct service or method name is leaked
/// once, up to `KNOWN_NAMES_LIMIT` of them.
fn intern(name: &str) -> &'static str {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let Ok(mut names) = NAMES.lock() else {
        return "unknown";
    };
    if let Some(known) = names.get(name) {
        return known;
    }
    if names.len() >= KNOWN_NAMES_LIMIT {
        return "unknown";
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Distinct service and method names kept as labels; past it, `unknown` (a client cannot
/// grow the server's memory without bound by calling made-up methods).
const KNOWN_NAMES_LIMIT: usize = 256;

fn grpc_status(headers: &axum::http::HeaderMap) -> Option<&'static str> {
    let code: usize = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(CODE_NAMES.get(code).copied().unwrap_or("Unknown"))
}

/// One call being counted.
#[derive(Clone, Debug)]
struct Call {
    metrics: Arc<GrpcMetrics>,
    labels: MethodLabels,
    started: Instant,
}

impl Call {
    fn handled(&self, code: &'static str) {
        let [method, service, kind] = self.labels;
        let labels = [("grpc_code", code), method, service, kind];
        self.metrics.handled.get_or_create(&labels).inc();
        self.metrics
            .handling_seconds
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
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
            call.handled("Canceled");
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
        let (call, bytes, counts) = match &self.counter {
            Direction::Received(call) => {
                (call, &call.metrics.received_bytes, &call.metrics.received)
            }
            Direction::Sent(Some(call)) => (call, &call.metrics.sent_bytes, &call.metrics.sent),
            Direction::Sent(None) => return,
        };
        bytes.inc_by(data.len() as u64);
        if messages > 0 {
            counts.get_or_create(&call.labels).inc_by(messages);
        }
    }

    fn finish(&mut self, code: &'static str) {
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
                    let code = grpc_status(trailers).unwrap_or("Unknown");
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("Unknown"),
            Poll::Ready(None) => self.finish("Unknown"),
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
        self.finish("Canceled");
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
    }
}
