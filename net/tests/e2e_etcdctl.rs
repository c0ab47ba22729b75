//! The `keel` binary driven by Debian's `etcdctl` (3.4), with output compared to what
//! etcd prints.
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]

mod common;

use common::{etcdctl, etcdctl_ok, Cluster};

#[test]
fn put_get_delete_prefix_and_txn_print_what_etcd_prints() {
    let cluster = Cluster::start(1);
    let e = cluster.endpoints();
    assert_eq!(etcdctl_ok(&e, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(etcdctl_ok(&e, &["get", "foo"]), "foo\nbar\n");
    etcdctl_ok(&e, &["put", "foo/a", "1"]);
    etcdctl_ok(&e, &["put", "foo/b", "2"]);
    assert_eq!(
        etcdctl_ok(&e, &["get", "foo/", "--prefix"]),
        "foo/a\n1\nfoo/b\n2\n"
    );
    assert_eq!(
        etcdctl_ok(&e, &["get", "foo/", "--prefix", "--keys-only"]),
        "foo/a\n\nfoo/b\n\n"
    );
    assert_eq!(
        etcdctl_ok(&e, &["put", "foo", "baz", "--prev-kv"]),
        "OK\nfoo\nbar\n"
    );
    assert_eq!(etcdctl_ok(&e, &["del", "foo/", "--prefix"]), "2\n");
    assert_eq!(etcdctl_ok(&e, &["del", "nothing"]), "0\n");
    let txn = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'value(\"foo\") = \"baz\"\\n\\nput foo qux\\n\\nput foo nope\\n\\n' | ETCDCTL_API=3 etcdctl --endpoints={e} txn"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&txn.stdout), "SUCCESS\n\nOK\n");
    assert_eq!(
        etcdctl_ok(&e, &["get", "foo", "--print-value-only"]),
        "qux\n"
    );
}

#[test]
fn errors_read_as_etcds() {
    let cluster = Cluster::start(1);
    let e = cluster.endpoints();
    etcdctl_ok(&e, &["put", "k", "1"]);
    etcdctl_ok(&e, &["put", "k", "2"]);
    etcdctl_ok(&e, &["compact", "3"]);
    let output = etcdctl(&e, &["get", "k", "--rev=2"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Error: etcdserver: mvcc: required revision has been compacted"),
        "{stderr}"
    );
    let output = etcdctl(&e, &["put", "k", "3", "--lease=1234"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("etcdserver: requested lease not found"),
        "{stderr}"
    );
}

#[test]
fn data_survives_a_restart_and_sigterm_exits_zero() {
    let mut cluster = Cluster::start(1);
    let e = cluster.endpoints();
    for i in 0..20 {
        etcdctl_ok(&e, &["put", &format!("key{i}"), &format!("value{i}")]);
    }
    let status = cluster.members[0].terminate().unwrap();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    cluster.restart(0);
    cluster.wait_ready();
    assert_eq!(
        etcdctl_ok(&e, &["get", "key19", "--print-value-only"]),
        "value19\n"
    );
    let keys = etcdctl_ok(&e, &["get", "key", "--prefix", "--keys-only"]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 20);
}

/// A log written to a file or journald is read by people and log pipelines, not a terminal:
/// no colour codes in it.
#[test]
fn logs_written_to_a_file_carry_no_terminal_colour_codes() {
    let mut cluster = Cluster::start(1);
    etcdctl_ok(&cluster.endpoints(), &["put", "k", "v"]);
    cluster.members[0].terminate();
    let log = cluster.members[0].log_text();
    assert!(log.contains("INFO"), "the server logged: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in the log file: {log:?}"
    );
}

#[test]
fn version_names_the_build_and_the_etcd_api_served() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let api = keel_net::ETCD_VERSION.rsplit_once('.').unwrap().0;
    for line in [
        format!("keel {}", keel_net::KEEL_VERSION),
        "Git SHA: ".to_string(),
        "Build date: ".to_string(),
        "Rust version: rustc ".to_string(),
        format!(
            "OS/Arch: {}/{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
        format!("etcd API version: {api}"),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "no {line:?} in {text}"
        );
    }
}

#[test]
fn json_logs_carry_etcds_keys_on_every_line() {
    let mut cluster = Cluster::start_with(1, &["--log-format", "json"]);
    etcdctl_ok(&cluster.endpoints(), &["put", "k", "v"]);
    cluster.members[0].terminate();
    let log = cluster.members[0].log_text();
    assert!(log.lines().count() > 2, "the server logged: {log}");
    for line in log.lines() {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["level", "ts", "caller", "msg"] {
            assert!(parsed.get(key).is_some(), "no {key:?} in {line}");
        }
    }
    assert!(log.contains(r#""msg":"serving""#), "{log}");
    let line_of = |log: &str, msg: &str| -> serde_json::Value {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["msg"] == msg)
            .unwrap_or_else(|| panic!("no {msg:?} line in {log}"))
    };
    let start = line_of(&log, "starting keel");
    let member = &cluster.members[0];
    assert_eq!(start["name"], member.name.as_str());
    assert_eq!(start["listen_client_urls"], member.client_url().as_str());
    assert_eq!(start["advertise_peer_urls"], member.peer_url().as_str());
    assert_eq!(start["client_tls"], false);
    assert_eq!(start["version"], keel_net::KEEL_VERSION);
    // A restart says what recovery found.
    cluster.restart(0);
    cluster.wait_ready();
    cluster.members[0].terminate();
    let log = cluster.members[0].log_text();
    let recovered = line_of(&log, "recovered the data dir");
    for key in [
        "snapshot_index",
        "wal_entries",
        "replaying_entries",
        "last_index",
        "commit_index",
        "took_ms",
    ] {
        assert!(recovered[key].is_u64(), "{key} in {recovered}");
    }
    assert!(
        recovered["revision"].as_u64() >= Some(2),
        "the put: {recovered}"
    );
    assert!(
        recovered["applied_index"].as_u64() >= Some(1),
        "{recovered}"
    );
}

#[test]
fn bad_flags_exit_2_with_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("never.keel");
    let cases: &[&[&str]] = &[
        &["--initial-cluster", "other=http://127.0.0.1:2380"],
        &["--election-timeout", "100"],
        &["--no-such-flag"],
        &["--listen-client-urls", "http://example.com:2379"],
    ];
    for args in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?} says why");
        assert!(!data_dir.exists(), "{args:?} wrote the data dir");
    }
}

/// Also: the leader's `/metrics` carries a round-trip histogram per follower, labelled `To`
/// with the follower's id, as etcd's `etcd_network_peer_round_trip_time_seconds` (the
/// etcd-mixin's peer latency panel reads it).
#[test]
fn a_three_member_cluster_serves_through_every_member() {
    let cluster = Cluster::start(3);
    for (i, member) in cluster.members.iter().enumerate() {
        etcdctl_ok(&member.endpoint(), &["put", &format!("via{i}"), "x"]);
    }
    let round_trips = common::wait_for("round trips to both followers", || {
        cluster.members.iter().find_map(|member| {
            let output = std::process::Command::new("curl")
                .args(["-s", &format!("{}/metrics", member.client_url())])
                .output()
                .ok()?;
            let metrics = String::from_utf8_lossy(&output.stdout).into_owned();
            let followers: std::collections::BTreeSet<&str> = metrics
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("etcd_network_peer_round_trip_time_seconds_count{To=\"")
                })
                .filter_map(|l| l.split('"').next())
                .collect();
            (followers.len() == 2).then_some(followers.len())
        })
    });
    assert_eq!(round_trips, 2);
    for member in &cluster.members {
        let keys = etcdctl_ok(
            &member.endpoint(),
            &["get", "via", "--prefix", "--keys-only"],
        );
        assert_eq!(
            keys, "via0\n\nvia1\n\nvia2\n\n",
            "linearizable read on {}",
            member.name
        );
    }
}

/// Starts `etcdctl` with `args` in the background and collects its output as it comes.
fn spawn_etcdctl(
    endpoints: &str,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    use std::io::Read;
    let mut child = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    (child, output)
}

#[test]
fn watch_prints_events_from_a_past_revision() {
    let cluster = Cluster::start(1);
    let e = cluster.endpoints();
    etcdctl_ok(&e, &["put", "w", "1"]);
    etcdctl_ok(&e, &["put", "w", "2"]);
    let (mut child, output) = spawn_etcdctl(&e, &["watch", "w", "--rev=1", "--prev-kv"]);
    etcdctl_ok(&e, &["del", "w"]);
    // With --prev-kv etcdctl prints the previous pair first; a delete then shows the key
    // with an empty value.
    let expected = "PUT\nw\n1\nPUT\nw\n1\nw\n2\nDELETE\nw\n2\nw\n\n";
    let seen = common::wait_for("watch output", || {
        let text = output.lock().unwrap().clone();
        (text.len() >= expected.len()).then_some(text)
    });
    let _ = child.kill();
    assert_eq!(seen, expected);
}

#[test]
fn lease_member_endpoint_and_snapshot_commands_print_what_etcd_prints() {
    let cluster = Cluster::start(3);
    let e = cluster.endpoints();
    let granted = etcdctl_ok(&e, &["lease", "grant", "60"]);
    // "lease 694d5765fc71500b granted with TTL(60s)"
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(granted, format!("lease {id} granted with TTL(60s)\n"));
    etcdctl_ok(&e, &["put", "leased", "x", &format!("--lease={id}")]);
    assert_eq!(
        etcdctl_ok(&e, &["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    let ttl = etcdctl_ok(&e, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
        "{ttl}"
    );
    assert!(ttl.ends_with("attached keys([leased])\n"), "{ttl}");
    assert_eq!(
        etcdctl_ok(&e, &["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(etcdctl_ok(&e, &["get", "leased"]), "");

    let members = etcdctl_ok(&e, &["member", "list"]);
    assert_eq!(members.lines().count(), 3);
    for member in &cluster.members {
        let line = members
            .lines()
            .find(|l| l.contains(&format!(", {}, ", member.name)))
            .unwrap();
        assert!(line.contains(", started, "), "{line}");
        assert!(
            line.contains(&member.peer_url())
                && line.ends_with(&format!("{}, false", member.client_url())),
            "{line}"
        );
    }
    let status = etcdctl_ok(&e, &["endpoint", "status"]);
    assert_eq!(status.lines().count(), 3);
    assert_eq!(
        status
            .lines()
            .filter(|l| l.contains(", true, false, "))
            .count(),
        1,
        "one leader: {status}"
    );
    let health = etcdctl(&e, &["endpoint", "health"]);
    let health = String::from_utf8_lossy(&health.stderr).to_string()
        + &String::from_utf8_lossy(&health.stdout);
    assert_eq!(
        health
            .matches("is healthy: successfully committed proposal")
            .count(),
        3,
        "{health}"
    );
    let file = cluster.path().join("backup.db");
    let saved = etcdctl_ok(
        &cluster.members[0].endpoint(),
        &["snapshot", "save", &file.to_string_lossy()],
    );
    assert!(
        saved.contains(&format!("Snapshot saved at {}", file.display())),
        "{saved}"
    );
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
}

#[test]
fn curl_reaches_the_json_gateway_and_health() {
    let cluster = Cluster::start(1);
    let url = cluster.members[0].client_url();
    let curl = |path: &str, body: Option<&str>| -> String {
        let mut command = std::process::Command::new("curl");
        command.args(["-s", &format!("{url}{path}")]);
        if let Some(body) = body {
            command.args(["-X", "POST", "-d", body]);
        }
        String::from_utf8_lossy(&command.output().unwrap().stdout).into_owned()
    };
    let put = curl("/v3/kv/put", Some(r#"{"key": "Zm9v", "value": "YmFy"}"#));
    assert!(put.contains(r#""revision":"2""#), "{put}");
    let range = curl("/v3/kv/range", Some(r#"{"key": "Zm9v"}"#));
    assert!(
        range.contains(r#""key":"Zm9v""#) && range.contains(r#""value":"YmFy""#),
        "{range}"
    );
    assert_eq!(curl("/health", None), r#"{"health":"true","reason":""}"#);
    let bad = curl("/v3/kv/put", Some(r#"{"key": "!!"}"#));
    assert!(bad.contains(r#""code":3"#), "{bad}");
    assert!(curl("/metrics", None).contains("etcd_server_has_leader 1"));
}

/// `--config-file` takes etcd's YAML configuration file (its sample's keys, TLS nested under
/// `*-transport-security`) and, as etcd, ignores the command line then; a key no flag has,
/// or a value a flag refuses, stops the start with exit code 2 and one line naming it.
#[test]
fn an_etcd_configuration_file_starts_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (common::free_port(), common::free_port());
    let data_dir = dir.path().join("from-file.keel");
    let config = format!(
        "name: 'from-file'\n\
         data-dir: {}\n\
         wal-dir:\n\
         snapshot-count: 10000\n\
         listen-client-urls: http://127.0.0.1:{client}\n\
         advertise-client-urls: http://127.0.0.1:{client}\n\
         listen-peer-urls: http://127.0.0.1:{peer}\n\
         initial-advertise-peer-urls: http://127.0.0.1:{peer}\n\
         initial-cluster: from-file=http://127.0.0.1:{peer}\n\
         initial-cluster-state: 'new'\n\
         proxy: 'off'\n\
         client-transport-security:\n  client-cert-auth: false\n",
        data_dir.display()
    );
    let file = dir.path().join("etcd.conf.yml");
    std::fs::write(&file, config).unwrap();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--config-file")
        .arg(&file)
        .args(["--name", "ignored-as-etcd-does"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = format!("127.0.0.1:{client}");
    common::wait_for("the member to serve", || {
        etcdctl(&endpoint, &["put", "k", "v"])
            .status
            .success()
            .then_some(())
    });
    let members = etcdctl_ok(&endpoint, &["member", "list"]);
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(members.contains(", from-file, "), "{members}");
    assert!(
        data_dir.join("member.id").exists(),
        "the data dir named in the file"
    );

    std::fs::write(&file, "name: x\nno-such-key: 1\n").unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--config-file")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--no-such-key"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
