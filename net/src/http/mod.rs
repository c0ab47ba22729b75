//! The client port's HTTP side, as etcd serves it next to gRPC on one port: the JSON gateway
//! (`/v3/…`, see [`crate::http::gateway`]), `/health`, `/livez`, `/readyz`, `/version` and
//! `/metrics`.
//!
//! [`ClientHttp`] is a tower layer over tonic's gRPC [`Routes`]: tonic hands it the routes
//! with every registered gRPC service, and it answers with one router that serves those
//! routes (HTTP/2 gRPC) and the HTTP routes (HTTP/1.1 or 2), told apart by path. So the
//! server's gRPC services are registered in one place and the gateway sees all of them.

use crate::server_loop::handle::Consistency;
use keel_core::node::query::{self, Header, HealthView};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keel_core::mvcc::AlarmType;
use serde::Serialize;
use tonic::service::Routes;
use tracing::warn;

use crate::metrics::Metrics;
use crate::server_loop::handle::NodeHandle;
use crate::{ETCD_VERSION, KEEL_VERSION};

pub mod authority;
pub mod gateway;

/// Prometheus' text format, as etcd's `/metrics` declares it.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// What etcd's health endpoints answer with (Go's `http.Error` and content sniffing).
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The HTTP routes of the client port, layered over the gRPC services.
#[derive(Clone, Debug)]
pub struct ClientHttp {
    node: NodeHandle,
    metrics: Arc<Metrics>,
    /// Largest JSON body the gateway reads.
    max_body_bytes: usize,
}

impl ClientHttp {
    pub fn new(node: NodeHandle, metrics: Arc<Metrics>, max_body_bytes: usize) -> ClientHttp {
        ClientHttp {
            node,
            metrics,
            max_body_bytes,
        }
    }

    /// One router for the client port: `grpc`'s services, the gateway calling them, and
    /// the endpoints; anything else is 404 (or gRPC's `Unimplemented` for a gRPC call).
    pub fn router(&self, grpc: Routes) -> axum::Router {
        // Calls to unregistered services (over the port or from the gateway) say which.
        // Counted under the gateway too: its calls are gRPC calls (see `crate::grpc::metrics`).
        let counting = self.metrics.grpc.clone();
        let grpc = Routes::from(grpc.into_axum_router().fallback(unknown_service).layer(
            axum::middleware::from_fn(move |request, next| counting.clone().count(request, next)),
        ));
        grpc.clone()
            .into_axum_router()
            .merge(gateway::router(grpc, self.max_body_bytes))
            .merge(endpoints_router(self.node.clone(), self.metrics.clone()))
            .fallback(not_found)
    }
}

/// etcd's endpoints besides the gateway: `/health`, `/version`, `/metrics`, `/livez` and
/// `/readyz` with their checks. Served on the client port and on `--listen-metrics-urls`.
pub fn endpoints_router(node: NodeHandle, metrics: Arc<Metrics>) -> axum::Router {
    let endpoints = Endpoints { node, metrics };
    let mut router = axum::Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(self::metrics));
    for probe in [Probe::Livez, Probe::Readyz] {
        router = router.route(
            probe.path(),
            get(move |s: State<Endpoints>, u: Uri| probe_all(probe, s, u)),
        );
        for &check in probe.checks() {
            let path = format!("{}/{}", probe.path(), check.name());
            router = router.route(
                &path,
                get(move |s: State<Endpoints>, u: Uri| probe_one(check, s, u)),
            );
        }
    }
    router.with_state(endpoints)
}

/// A `--listen-metrics-urls` address, with TLS for an `https://` one.
#[derive(Debug)]
pub struct MetricsListener {
    pub addr: std::net::SocketAddr,
    pub tls: Option<crate::tls::ServerTls>,
}

/// Serves [`endpoints_router`] on each `--listen-metrics-urls` address, as etcd's metrics
/// listeners do (an `https://` one with the client port's certificate and, with
/// `--client-cert-auth`, its client certificate check), until the server stops.
pub async fn serve_metrics_listeners(
    listeners: Vec<MetricsListener>,
    node: NodeHandle,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    for MetricsListener { addr, tls } in listeners {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind the metrics URL {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        let router = endpoints_router(node.clone(), metrics.clone())
            .fallback(|| async { text(StatusCode::NOT_FOUND, "404 page not found\n".to_string()) });
        tokio::spawn(async move {
            let served = match tls {
                Some(tls) => axum::serve(TlsListener::new(listener, bound, tls), router).await,
                None => axum::serve(listener, router).await,
            };
            if let Err(error) = served {
                warn!(%error, "metrics listener stopped");
            }
        });
    }
    Ok(())
}

/// A metrics listener's connections once through the TLS handshake.
struct TlsListener {
    local_addr: std::net::SocketAddr,
    incoming: crate::tls::Incoming,
}

impl TlsListener {
    fn new(
        listener: tokio::net::TcpListener,
        local_addr: std::net::SocketAddr,
        tls: crate::tls::ServerTls,
    ) -> TlsListener {
        TlsListener {
            local_addr,
            incoming: crate::tls::incoming(listener, tls),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures_util::StreamExt;
        loop {
            // The accepting task ends only with the process; then nothing comes again.
            let Some(accepted) = self.incoming.next().await else {
                std::future::pending::<()>().await;
                continue;
            };
            let Ok(stream) = accepted else { continue };
            match stream.get_ref().0.peer_addr() {
                Ok(addr) => return (stream, addr),
                Err(_) => continue, // gone already
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

impl tower::Layer<Routes> for ClientHttp {
    type Service = axum::Router;

    fn layer(&self, grpc: Routes) -> axum::Router {
        self.router(grpc)
    }
}

/// What the endpoints need.
#[derive(Clone, Debug)]
struct Endpoints {
    node: NodeHandle,
    metrics: Arc<Metrics>,
}

/// A gRPC call to no registered service gets gRPC's answer; anything else Go's 404.
async fn not_found(headers: HeaderMap, uri: Uri) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if grpc {
        unknown_service(uri).await
    } else {
        text(StatusCode::NOT_FOUND, "404 page not found\n".to_string())
    }
}

/// grpc-go's answer to a method of a service it does not serve.
async fn unknown_service(uri: Uri) -> Response {
    let service = uri.path().trim_start_matches('/');
    let service = service.split('/').next().unwrap_or(service);
    tonic::Status::unimplemented(format!("unknown service {service}"))
        .into_http::<Body>()
        .into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, TEXT_CONTENT_TYPE),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

// ---- /version and /metrics ----

/// etcd's `/version`. keel answers as the etcd version whose v3 API it implements, so that
/// clients choosing features by version work; keel's own version is the extra `keel` field
/// (Go's JSON decoding, as in etcd's clients, ignores fields it does not know).
#[derive(Serialize)]
struct Versions {
    etcdserver: &'static str,
    etcdcluster: &'static str,
    keel: &'static str,
}

async fn version() -> Response {
    let versions = Versions {
        etcdserver: ETCD_VERSION,
        etcdcluster: ETCD_VERSION,
        keel: KEEL_VERSION,
    };
    match serde_json::to_string(&versions) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn metrics(State(endpoints): State<Endpoints>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        endpoints.metrics.render(),
    )
        .into_response()
}

// ---- /health ----

/// etcd's `/health` answer.
#[derive(Serialize)]
struct Health {
    health: &'static str,
    reason: String,
}

impl Endpoints {
    async fn view(&self) -> Result<HealthView, String> {
        self.node
            .ask(Consistency::Serializable, query::Health)
            .await
            .map_err(|error| error.to_string())
    }

    /// A read through the loop, linearizable (a ReadIndex round) unless `serializable`,
    /// as etcd's health checks do with a one-key range.
    async fn read(&self, serializable: bool) -> Result<(), String> {
        let consistency = if serializable {
            Consistency::Serializable
        } else {
            Consistency::Linearizable
        };
        self.node
            .ask(consistency, Header)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    /// etcd's checks in etcd's order: alarms (less `excluded`), a leader (unless
    /// `serializable`), then a read within the request timeout.
    async fn health(&self, excluded: &[String], serializable: bool) -> Result<(), String> {
        // If the loop cannot answer, the read below would fail the same way: report it
        // as etcd reports a failed read.
        let view = self
            .view()
            .await
            .map_err(|error| format!("RANGE ERROR:{error}"))?;
        if let Some(alarm) = view
            .alarms
            .iter()
            .find(|alarm| !excluded.iter().any(|name| name == alarm_name(**alarm)))
        {
            return Err(format!("ALARM {}", alarm_name(*alarm)));
        }
        if !serializable && !view.has_leader {
            return Err("RAFT NO LEADER".to_string());
        }
        self.read(serializable)
            .await
            .map_err(|error| format!("RANGE ERROR:{error}"))
    }
}

/// etcd's `AlarmType` names, as `/health?exclude=NOSPACE` spells them.
fn alarm_name(alarm: AlarmType) -> &'static str {
    match alarm {
        AlarmType::None => "NONE",
        AlarmType::NoSpace => "NOSPACE",
        AlarmType::Corrupt => "CORRUPT",
    }
}

/// The query parameters the health endpoints take.
#[derive(Debug, Default)]
struct Query {
    exclude: Vec<String>,
    serializable: bool,
    verbose: bool,
}

impl Query {
    fn parse(uri: &Uri) -> Query {
        let mut query = Query::default();
        let pairs = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes());
        for (name, value) in pairs {
            match &*name {
                "exclude" if !value.is_empty() => query.exclude.push(value.into_owned()),
                "serializable" => query.serializable = value == "true",
                "verbose" => query.verbose = true,
                _ => {}
            }
        }
        query
    }
}

/// `GET /health[?serializable=true][&exclude=NOSPACE]`: 200 with
/// `{"health":"true","reason":""}`, or 503 with `"false"` and the reason, as etcd.
async fn health(State(endpoints): State<Endpoints>, uri: Uri) -> Response {
    let query = Query::parse(&uri);
    let verdict = endpoints.health(&query.exclude, query.serializable).await;
    endpoints.metrics.count_health_check(verdict.is_ok());
    let (status, health) = match verdict {
        Ok(()) => (
            StatusCode::OK,
            Health {
                health: "true",
                reason: String::new(),
            },
        ),
        Err(reason) => {
            warn!(%reason, "serving /health false");
            let health = Health {
                health: "false",
                reason,
            };
            (StatusCode::SERVICE_UNAVAILABLE, health)
        }
    };
    let mut body = serde_json::to_string(&health).unwrap_or_default();
    if status != StatusCode::OK {
        // Go's `http.Error` ends the body with a newline.
        body.push('\n');
    }
    text(status, body)
}

// ---- /livez and /readyz ----

#[derive(Clone, Copy, Debug)]
enum Probe {
    Livez,
    Readyz,
}

impl Probe {
    fn path(self) -> &'static str {
        match self {
            Probe::Livez => "/livez",
            Probe::Readyz => "/readyz",
        }
    }

    /// etcd's registered checks for each probe.
    fn checks(self) -> &'static [Check] {
        match self {
            Probe::Livez => &[Check::SerializableRead],
            Probe::Readyz => &[
                Check::DataCorruption,
                Check::SerializableRead,
                Check::LinearizableRead,
                Check::NonLearner,
            ],
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
    NonLearner,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
            Check::NonLearner => "non_learner",
        }
    }

    async fn run(self, endpoints: &Endpoints) -> Result<(), String> {
        match self {
            Check::DataCorruption => {
                let view = endpoints.view().await?;
                if view.alarms.contains(&AlarmType::Corrupt) {
                    return Err("alarm activated: CORRUPT".to_string());
                }
                Ok(())
            }
            Check::SerializableRead => endpoints.read(true).await,
            Check::LinearizableRead => endpoints.read(false).await,
            Check::NonLearner => {
                if endpoints.view().await?.is_learner {
                    return Err("not supported for learner".to_string());
                }
                Ok(())
            }
        }
    }
}

/// `GET /livez` or `/readyz` (`?exclude=<check>`, `?verbose`): every check of the probe.
async fn probe_all(probe: Probe, State(endpoints): State<Endpoints>, uri: Uri) -> Response {
    let query = Query::parse(&uri);
    let checks = probe
        .checks()
        .iter()
        .copied()
        .filter(|check| !query.exclude.iter().any(|name| name == check.name()));
    run_checks(checks, &endpoints, query.verbose).await
}

/// `GET /livez/<check>` or `/readyz/<check>`: that check alone.
async fn probe_one(check: Check, State(endpoints): State<Endpoints>, uri: Uri) -> Response {
    run_checks([check], &endpoints, Query::parse(&uri).verbose).await
}

/// etcd's answer: `ok` (after the per-check lines when `verbose`), or 503 with the
/// per-check lines when any check fails.
async fn run_checks(
    checks: impl IntoIterator<Item = Check>,
    endpoints: &Endpoints,
    verbose: bool,
) -> Response {
    let mut failed = false;
    let mut report = String::new();
    for check in checks {
        match check.run(endpoints).await {
            Ok(()) => report.push_str(&format!("[+]{} ok\n", check.name())),
            Err(error) => {
                failed = true;
                report.push_str(&format!("[-]{} failed: {error}\n", check.name()));
            }
        }
    }
    if failed {
        warn!(report = %report.trim_end(), "health check failed");
        report.push('\n');
        return text(StatusCode::SERVICE_UNAVAILABLE, report);
    }
    if !verbose {
        report.clear();
    }
    report.push_str("ok\n");
    text(StatusCode::OK, report)
}
