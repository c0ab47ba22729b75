//! The JSON gateway and HTTP endpoints of a real single-member server, started in process
//! on loopback and driven over HTTP/1.1, next to gRPC on the same port.

#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use keel_net::config::ServeArgs;
use keel_net::proto::etcdserverpb as pb;
use keel_net::server::{self, RunningServer};
use keel_storage::FsDisk;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

struct Server {
    addr: SocketAddr,
    running: Option<RunningServer>,
    _data: tempfile::TempDir,
}

impl Server {
    /// A fresh single-member cluster, once it answers `/health`.
    async fn start() -> Server {
        let server = Server::launch(|_| Vec::new()).await;
        poll("a healthy server", || async {
            let (status, _) = server.get("/health").await;
            (status == StatusCode::OK).then_some(())
        })
        .await;
        server
    }

    /// A member named `default` whose `extra_args(peer_url)` are added to the flags.
    async fn launch(extra_args: impl FnOnce(&str) -> Vec<String>) -> Server {
        let data = tempfile::tempdir().unwrap();
        let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = client.local_addr().unwrap();
        let client_url = format!("http://{addr}");
        let peer_url = format!("http://{}", peer.local_addr().unwrap());
        let data_dir = data.path().display().to_string();
        let mut args: Vec<String> = [
            "keel",
            "--data-dir",
            &data_dir,
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ]
        .map(String::from)
        .into();
        args.extend(extra_args(&peer_url));
        let config = Cli::try_parse_from(args).unwrap().serve.resolve().unwrap();
        let disk = FsDisk::open(data.path()).unwrap();
        let running = server::start(
            &config,
            disk,
            vec![server::Listener::plain(client)],
            vec![server::Listener::plain(peer)],
        )
        .await
        .unwrap();
        Server {
            addr,
            running: Some(running),
            _data: data,
        }
    }

    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    }

    async fn text(&self, request: Request<Full<Bytes>>) -> (StatusCode, String) {
        let response = self.send(request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Full::default()).unwrap();
        self.text(request).await
    }

    /// POSTs `body` as etcd's docs do (`curl -X POST -d …`).
    async fn post(&self, path: &str, body: &str) -> (StatusCode, String) {
        self.text(post_request(path, body)).await
    }

    /// POSTs JSON and parses the JSON answer.
    async fn call(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, text) = self.post(path, &body.to_string()).await;
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        (status, value)
    }

    /// POSTs JSON that must succeed.
    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        answer
    }
}

fn post_request(path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn b64(text: &str) -> String {
    BASE64.encode(text)
}

/// Polls `check` until it gives `Some`, or fails the test after `DEADLINE`.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_int64_string(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.parse::<u64>().is_ok())
}

#[tokio::test]
async fn put_range_delete_round_trip_with_base64_and_etcds_header() {
    let server = Server::start().await;
    let put = server
        .ok(
            "/v3/kv/put",
            json!({"key": b64("foo"), "value": b64("bar")}),
        )
        .await;
    // etcd's gateway: the header only, every 64-bit number as a string.
    assert_eq!(put.as_object().unwrap().len(), 1, "{put}");
    let header = &put["header"];
    for field in ["cluster_id", "member_id", "revision", "raft_term"] {
        assert!(is_int64_string(&header[field]), "{field} in {put}");
    }
    let revision: i64 = header["revision"].as_str().unwrap().parse().unwrap();

    let range = server.ok("/v3/kv/range", json!({"key": b64("foo")})).await;
    assert_eq!(range["count"], "1");
    let rev = revision.to_string();
    assert_eq!(
        range["kvs"],
        json!([{"key": "Zm9v", "create_revision": rev, "mod_revision": rev, "version": "1", "value": "YmFy"}])
    );

    server
        .ok("/v3/kv/put", json!({"key": b64("foo2"), "value": b64("x")}))
        .await;
    let prefix = server
        .ok(
            "/v3/kv/range",
            json!({"key": b64("foo"), "range_end": b64("fop"), "keys_only": true}),
        )
        .await;
    let keys: Vec<&Value> = prefix["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| &kv["key"])
        .collect();
    assert_eq!(keys, [&json!(b64("foo")), &json!(b64("foo2"))]);

    let deleted = server
        .ok(
            "/v3/kv/deleterange",
            json!({"key": b64("foo2"), "prev_kv": true}),
        )
        .await;
    assert_eq!(deleted["deleted"], "1");
    assert_eq!(deleted["prev_kvs"][0]["value"], b64("x"));
    // An empty answer omits `kvs` and `count`, as etcd's does.
    let gone = server.ok("/v3/kv/range", json!({"key": b64("foo2")})).await;
    assert_eq!(
        gone.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["header"]
    );
    server.stop().await;
}

#[tokio::test]
async fn txn_compares_and_branches_in_etcds_json() {
    let server = Server::start().await;
    server
        .ok(
            "/v3/kv/put",
            json!({"key": b64("foo"), "value": b64("bar")}),
        )
        .await;
    // etcd's docs spell fields in camelCase here; protobuf's JSON accepts both.
    let txn = json!({
        "compare": [{"target": "VALUE", "result": "EQUAL", "key": b64("foo"), "value": b64("bar")}],
        "success": [{"requestPut": {"key": b64("foo"), "value": b64("baz")}}],
        "failure": [{"request_range": {"key": b64("foo")}}],
    });
    let answer = server.ok("/v3/kv/txn", txn.clone()).await;
    assert_eq!(answer["succeeded"], true);
    // As etcd 3.4.23 answers: a response inside a txn has only the revision in its header.
    assert_eq!(
        answer["responses"][0]["response_put"]["header"],
        json!({"revision": answer["header"]["revision"]}),
        "{answer}"
    );

    let answer = server.ok("/v3/kv/txn", txn).await;
    assert!(
        answer.get("succeeded").is_none(),
        "false is omitted: {answer}"
    );
    let kv = &answer["responses"][0]["response_range"]["kvs"][0];
    assert_eq!(kv["value"], b64("baz"));
    assert_eq!(kv["version"], "2");
    server.stop().await;
}

#[tokio::test]
async fn compaction_then_a_compacted_read_gets_grpc_gateways_out_of_range_error() {
    let server = Server::start().await;
    for value in ["1", "2", "3"] {
        server
            .ok("/v3/kv/put", json!({"key": b64("k"), "value": b64(value)}))
            .await;
    }
    let put = server
        .ok("/v3/kv/put", json!({"key": b64("k"), "value": b64("4")}))
        .await;
    let revision = put["header"]["revision"].as_str().unwrap().to_string();
    server
        .ok(
            "/v3/kv/compaction",
            json!({"revision": revision, "physical": true}),
        )
        .await;
    let (status, body) = server
        .post("/v3/kv/range", r#"{"key": "aw==", "revision": "2"}"#)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = "etcdserver: mvcc: required revision has been compacted";
    assert_eq!(
        body,
        format!(r#"{{"error":"{message}","message":"{message}","code":11}}"#)
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_json_or_base64_is_a_400_with_a_json_error_and_changes_nothing() {
    let server = Server::start().await;
    for body in [
        r#"{"key": "Zm9v", "value": "YmFy""#,
        r#"{"key": "Zm9v", "value": "not base64!"}"#,
        r#"{"key": 12}"#,
        "key=foo",
    ] {
        let (status, answer) = server.post("/v3/kv/put", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["code"], 3, "{body}: {answer}");
        assert!(!answer["message"].as_str().unwrap().is_empty());
        assert_eq!(answer["error"], answer["message"]);
    }
    let range = server.ok("/v3/kv/range", json!({"key": b64("foo")})).await;
    assert!(range.get("kvs").is_none(), "{range}");

    // The store's own refusals come as gRPC clients see them.
    let (status, answer) = server.call("/v3/kv/put", json!({"value": b64("v")})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer,
        json!({"error": "etcdserver: key is not provided", "code": 3, "message": "etcdserver: key is not provided"})
    );
    let (status, answer) = server
        .call("/v3/kv/range", json!({"key": b64("foo"), "revision": "99"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["code"], 11);
    server.stop().await;
}

#[tokio::test]
async fn grpc_and_http_share_the_client_port() {
    let server = Server::start().await;
    let mut kv = pb::kv_client::KvClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    kv.put(pb::PutRequest {
        key: Bytes::from_static(b"shared"),
        value: Bytes::from_static(b"port"),
        ..Default::default()
    })
    .await
    .unwrap();
    let range = server
        .ok("/v3/kv/range", json!({"key": b64("shared")}))
        .await;
    assert_eq!(range["kvs"][0]["value"], b64("port"));
    let (status, body) = server.get("/no/such/path").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "404 page not found\n")
    );
    server.stop().await;
}

#[tokio::test]
async fn health_livez_readyz_version_and_metrics_answer_as_etcds() {
    let server = Server::start().await;
    assert_eq!(
        server.get("/health").await,
        (
            StatusCode::OK,
            r#"{"health":"true","reason":""}"#.to_string()
        )
    );
    assert_eq!(
        server.get("/health?serializable=true").await.0,
        StatusCode::OK
    );
    for path in [
        "/livez",
        "/readyz",
        "/readyz/linearizable_read",
        "/livez/serializable_read",
    ] {
        assert_eq!(
            server.get(path).await,
            (StatusCode::OK, "ok\n".to_string()),
            "{path}"
        );
    }
    let (_, verbose) = server.get("/readyz?verbose&exclude=non_learner").await;
    assert_eq!(
        verbose,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n"
    );

    let (status, version) = server.get("/version").await;
    assert_eq!(status, StatusCode::OK);
    let version: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["etcdserver"], keel_net::ETCD_VERSION);
    assert_eq!(version["etcdcluster"], keel_net::ETCD_VERSION);
    assert_eq!(version["keel"], keel_net::KEEL_VERSION);

    let response = server
        .send(Request::get("/metrics").body(Full::default()).unwrap())
        .await;
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let metrics = response.into_body().collect().await.unwrap().to_bytes();
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.lines().any(|l| l == "etcd_server_has_leader 1"),
        "{metrics}"
    );
    server.stop().await;
}

/// Every metric the etcd-mixin's alerts and dashboards read (etcd's `contrib/mixin`), under
/// etcd's names and types, after calls through the gateway (counted as gRPC calls, as etcd's
/// gateway's are) and a `/health`.
#[tokio::test]
async fn metrics_carry_the_names_the_etcd_mixin_reads() {
    let server = Server::start().await;
    server
        .ok("/v3/kv/put", json!({"key": b64("m"), "value": b64("v")}))
        .await;
    let (status, _) = server
        .call("/v3/kv/range", json!({"key": b64("m"), "revision": "99"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a future revision");
    server.get("/health").await;
    let (_, metrics) = server.get("/metrics").await;
    let names: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    // And `etcd_network_peer_round_trip_time_seconds_bucket`, which a single member has no
    // series of (see `a_three_member_cluster_serves_through_every_member`).
    let mixin = [
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "etcd_server_has_leader",
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_applied_total",
        "etcd_server_proposals_pending",
        "etcd_server_proposals_failed_total",
        "etcd_server_quota_backend_bytes",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "etcd_disk_backend_commit_duration_seconds_bucket",
        "etcd_network_peer_sent_bytes_total",
        "etcd_network_peer_received_bytes_total",
        "etcd_network_peer_sent_failures_total",
        "etcd_network_client_grpc_sent_bytes_total",
        "etcd_network_client_grpc_received_bytes_total",
        "process_resident_memory_bytes",
    ];
    let missing: Vec<_> = mixin.iter().filter(|name| !names.contains(*name)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in\n{metrics}");
    for also in [
        "etcd_debugging_mvcc_keys_total",
        "etcd_server_slow_apply_total",
        "etcd_server_health_success",
        "etcd_server_health_failures",
        "grpc_server_msg_received_total",
        "grpc_server_msg_sent_total",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_virtual_memory_bytes",
    ] {
        assert!(names.contains(also), "missing {also} in\n{metrics}");
    }
    // go-grpc-prometheus' labels, sorted as Go writes them; errors by their code's name.
    let put_ok = "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",\
                  grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1";
    assert!(metrics.lines().any(|l| l == put_ok), "{metrics}");
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "grpc_server_handled_total{grpc_code=\"OutOfRange\",grpc_method=\"Range\""
        )),
        "{metrics}"
    );
    let sent = "grpc_server_msg_sent_total{grpc_method=\"Put\",\
                grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1";
    assert!(metrics.lines().any(|l| l == sent), "{metrics}");
    let health_successes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_server_health_success "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(health_successes >= 1, "{metrics}");
    server.stop().await;
}

/// `--listen-metrics-urls` serves `/metrics` and `/health` on a port of their own, as etcd's
/// metrics listener does (kubeadm points its probes there).
#[tokio::test]
async fn a_metrics_url_serves_metrics_and_health_on_its_own_port() {
    let metrics_port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{metrics_port}");
    let server = Server::launch(|_| vec!["--listen-metrics-urls".to_string(), url]).await;
    let metrics_only = Server {
        addr: metrics_port,
        running: None,
        _data: tempfile::tempdir().unwrap(),
    };
    let health = poll("/health on the metrics URL", || async {
        let (status, body) = metrics_only.get("/health").await;
        (status == StatusCode::OK).then_some(body)
    })
    .await;
    assert_eq!(health, r#"{"health":"true","reason":""}"#);
    let (status, metrics) = metrics_only.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("etcd_server_has_leader 1"), "{metrics}");
    let (status, _) = metrics_only.post("/v3/kv/range", "{}").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no gateway on the metrics URL"
    );
    server.stop().await;
}

/// `--experimental-watch-progress-notify-interval` (kubeadm sets 5 s) paces the progress
/// notifications of watches created with `progress_notify`: with the default of 10 minutes
/// none would come within the test's deadline.
#[tokio::test]
async fn watch_progress_notifications_follow_the_interval_flag() {
    let server = Server::launch(|_| {
        ["--experimental-watch-progress-notify-interval", "300ms"]
            .map(String::from)
            .into()
    })
    .await;
    poll("a healthy server", || async {
        (server.get("/health").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let watch = post_request(
        "/v3/watch",
        r#"{"create_request": {"key":"Zm9v", "progress_notify": true}}"#,
    );
    let mut body = server.send(watch).await.into_body();
    let mut pending = Vec::new();
    let created = next_line(&mut body, &mut pending).await;
    assert_eq!(created["result"]["created"], true, "{created}");
    let progress = next_line(&mut body, &mut pending).await;
    assert!(progress["result"].get("events").is_none(), "{progress}");
    assert!(
        progress["result"]["header"]["revision"].is_string(),
        "{progress}"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_is_false_with_503_when_the_member_cannot_serve() {
    let server = Server::start().await;
    let handle = server.running.as_ref().unwrap().handle.clone();
    server.stop().await;
    // The loop is gone: the read etcd's check makes fails, and /health says so. The HTTP
    // side still runs, so ask it through a router of its own.
    let metrics = keel_net::metrics::Metrics::new(Default::default());
    let router = keel_net::http::ClientHttp::new(handle, metrics, 1 << 20)
        .router(tonic::service::Routes::default());
    let request = axum::http::Request::get("/health")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let health: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["health"], "false");
    assert!(
        health["reason"]
            .as_str()
            .unwrap()
            .starts_with("RANGE ERROR:etcdserver: "),
        "{health}"
    );
}

#[tokio::test]
async fn health_says_raft_no_leader_while_a_member_has_no_quorum() {
    // One member of three, the other two never answering: no leader, ever.
    let silent_peers = [
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ];
    let others: Vec<String> = silent_peers
        .iter()
        .zip(["b", "c"])
        .map(|(l, name)| format!("{name}=http://{}", l.local_addr().unwrap()))
        .collect();
    let server = Server::launch(|peer_url| {
        let cluster = format!("default={peer_url},{}", others.join(","));
        vec!["--initial-cluster".to_string(), cluster]
    })
    .await;
    assert_eq!(
        server.get("/health").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n".to_string()
        )
    );
    // Serializable checks look at this member alone, as etcd's do.
    assert_eq!(
        server.get("/health?serializable=true").await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.get("/livez").await,
        (StatusCode::OK, "ok\n".to_string())
    );
    let (status, report) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(report.contains("[+]serializable_read ok\n"), "{report}");
    assert!(
        report.contains("[-]linearizable_read failed: etcdserver: "),
        "{report}"
    );
    server.stop().await;
}

/// Reads the response body up to the next complete line, waiting at most `DEADLINE`.
async fn next_line(body: &mut Incoming, pending: &mut Vec<u8>) -> Value {
    let started = Instant::now();
    loop {
        if let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            return serde_json::from_slice(&line).unwrap();
        }
        let left = DEADLINE.saturating_sub(started.elapsed());
        let frame = tokio::time::timeout(left, body.frame())
            .await
            .expect("a line before the deadline")
            .expect("the stream stays open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            pending.extend_from_slice(&data);
        }
    }
}

#[tokio::test]
async fn a_watch_stream_receives_an_event_as_a_json_line() {
    let server = Server::start().await;
    let watch = post_request("/v3/watch", r#"{"create_request": {"key":"Zm9v"} }"#);
    let mut body = server.send(watch).await.into_body();
    let mut pending = Vec::new();
    let created = next_line(&mut body, &mut pending).await;
    assert_eq!(created["result"]["created"], true, "{created}");
    server
        .ok(
            "/v3/kv/put",
            json!({"key": b64("foo"), "value": b64("bar")}),
        )
        .await;
    let event = next_line(&mut body, &mut pending).await;
    let kv = &event["result"]["events"][0]["kv"];
    assert_eq!(
        (&kv["key"], &kv["value"]),
        (&json!("Zm9v"), &json!("YmFy")),
        "{event}"
    );
    assert!(
        event["result"]["events"][0].get("type").is_none(),
        "PUT is omitted"
    );
    server.stop().await;
}

#[tokio::test]
async fn lease_cluster_and_maintenance_routes_reach_their_services() {
    let server = Server::start().await;
    let grant = server.ok("/v3/lease/grant", json!({"TTL": "60"})).await;
    assert_eq!(grant["TTL"], "60");
    let id = grant["ID"].clone();
    let leases = server.ok("/v3/kv/lease/leases", json!({})).await;
    assert_eq!(leases["leases"], json!([{"ID": id}]));
    // `grantedTTL` is the proto's own field name.
    let ttl = server.ok("/v3/lease/timetolive", json!({"ID": id})).await;
    assert_eq!(ttl["grantedTTL"], "60", "{ttl}");
    server.ok("/v3/lease/revoke", json!({"ID": id})).await;

    let members = server.ok("/v3/cluster/member/list", json!({})).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");
    let status = server.ok("/v3/maintenance/status", json!({})).await;
    assert_eq!(status["version"], keel_net::ETCD_VERSION);
    // etcd answers these two with no header at all.
    let defragmented = server.ok("/v3/maintenance/defragment", json!({})).await;
    assert_eq!(defragmented, json!({}));
    let moved = server
        .ok(
            "/v3/maintenance/transfer-leadership",
            json!({"targetID": status["leader"]}),
        )
        .await;
    assert_eq!(moved, json!({}));
    server.stop().await;
}

/// etcd's lock and election routes: a lock's key under its name, an election's leader and
/// its observed value as a `{"result":…}` line, and etcd's error for an election without a
/// leader (gRPC `Unknown`, HTTP 500).
#[tokio::test]
async fn lock_and_election_routes_reach_their_services() {
    let server = Server::start().await;
    let locked = server
        .ok("/v3/lock/lock", json!({"name": b64("gate")}))
        .await;
    let key = BASE64.decode(locked["key"].as_str().unwrap()).unwrap();
    assert!(key.starts_with(b"gate/"), "{locked}");
    // A second locker queues; its client going away ends its call as `Canceled` in
    // grpc_server_handled_total, as go-grpc-prometheus counts it.
    let waiter = tokio::spawn({
        let request = post_request("/v3/lock/lock", &json!({"name": b64("gate")}).to_string());
        let addr = server.addr;
        async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await
        }
    });
    let keys = json!({"key": b64("gate/"), "range_end": b64("gate0"), "count_only": true});
    poll("the second locker to queue", || async {
        (server.ok("/v3/kv/range", keys.clone()).await["count"] == "2").then_some(())
    })
    .await;
    waiter.abort();
    let canceled = "grpc_server_handled_total{grpc_code=\"Canceled\",grpc_method=\"Lock\"";
    poll("the abandoned Lock to count as Canceled", || async {
        let (_, metrics) = server.get("/metrics").await;
        metrics.contains(canceled).then_some(())
    })
    .await;
    server
        .ok("/v3/lock/unlock", json!({"key": locked["key"]}))
        .await;

    let (status, refused) = server
        .call("/v3/election/leader", json!({"name": b64("vote")}))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{refused}");
    assert_eq!(refused["message"], "election: no leader");
    // etcd's older /v3beta spelling reaches the same service.
    let campaign = server
        .ok(
            "/v3beta/election/campaign",
            json!({"name": b64("vote"), "value": b64("me")}),
        )
        .await;
    assert_eq!(campaign["leader"]["name"], b64("vote"), "{campaign}");
    let leader = server
        .ok("/v3/election/leader", json!({"name": b64("vote")}))
        .await;
    assert_eq!(leader["kv"]["value"], b64("me"), "{leader}");

    let observe = post_request(
        "/v3/election/observe",
        &json!({"name": b64("vote")}).to_string(),
    );
    let mut observed = server.send(observe).await.into_body();
    let mut pending = Vec::new();
    let first = next_line(&mut observed, &mut pending).await;
    assert_eq!(first["result"]["kv"]["value"], b64("me"), "{first}");
    // An observer that goes away leaves no watch behind, though the leader stays.
    let streams = || async {
        let (_, metrics) = server.get("/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watch_stream_total "))
            .and_then(|n| n.parse::<u64>().ok())
    };
    assert_eq!(streams().await, Some(1), "the observer's watch");
    drop(observed);
    poll("the observer's watch to close", || async {
        (streams().await == Some(0)).then_some(())
    })
    .await;
    server
        .ok("/v3/election/resign", json!({"leader": campaign["leader"]}))
        .await;
    server.stop().await;
}

/// A CORRUPT alarm (raised by the corruption checks) shows in `/health`, in `/readyz`'s
/// `data_corruption` check and in `alarm list`, and refuses every write with etcd's
/// "etcdserver: corrupt cluster" until disarmed.
#[tokio::test]
async fn a_corrupt_alarm_shows_in_health_and_readyz_and_refuses_writes() {
    let server = Server::start().await;
    let member = server.ok("/v3/maintenance/status", json!({})).await["header"]["member_id"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .ok(
            "/v3/maintenance/alarm",
            json!({"action": "ACTIVATE", "memberID": member, "alarm": "CORRUPT"}),
        )
        .await;
    let (status, health) = server.get("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        health,
        "{\"health\":\"false\",\"reason\":\"ALARM CORRUPT\"}\n"
    );
    let (status, ready) = server.get("/readyz?verbose").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.contains("[-]data_corruption failed: alarm activated: CORRUPT"),
        "{ready}"
    );
    let (status, refused) = server
        .call("/v3/kv/put", json!({"key": b64("k"), "value": b64("v")}))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{refused}");
    assert_eq!(refused["message"], "etcdserver: corrupt cluster");
    assert_eq!(refused["code"], 15, "DataLoss");
    let listed = server.ok("/v3/maintenance/alarm", json!({})).await;
    assert_eq!(listed["alarms"][0]["alarm"], "CORRUPT");
    server
        .ok(
            "/v3/maintenance/alarm",
            json!({"action": "DEACTIVATE", "memberID": member, "alarm": "CORRUPT"}),
        )
        .await;
    server
        .ok("/v3/kv/put", json!({"key": b64("k"), "value": b64("v")}))
        .await;
    assert_eq!(server.get("/health").await.0, StatusCode::OK);
    server.stop().await;
}
