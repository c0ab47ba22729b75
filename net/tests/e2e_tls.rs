//! Mutual TLS with real processes: a three-member cluster with certificates from a test CA on
//! the client and the peer ports (`--client-cert-auth`, `--peer-client-cert-auth`), driven by
//! `etcdctl --cacert --cert --key`, the `etcd-client` crate and curl. A client without a
//! certificate, or with one from another CA, is refused at the handshake; so is a peer.
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::pki::{Ca, Pair};
use common::{etcdctl, wait_for, Cluster, Spec};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// The test PKI: the cluster's CA and its certificates, and a stranger CA.
struct Pki {
    ca: Ca,
    server: Pair,
    root: Pair,
    alice: Pair,
    stranger: Pair,
}

impl Pki {
    fn new(dir: &std::path::Path) -> Pki {
        let ca = Ca::new(dir, "cluster");
        let server = ca.issue("keel-member");
        let root = ca.issue("root");
        let alice = ca.issue("alice");
        let stranger = Ca::new(dir, "stranger").issue("root");
        Pki {
            ca,
            server,
            root,
            alice,
            stranger,
        }
    }

    /// Flags for TLS with client and peer certificate authentication.
    fn member_flags(&self, peer: &Pair) -> Vec<String> {
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        vec![
            format!("--cert-file={}", path(&self.server.cert_file)),
            format!("--key-file={}", path(&self.server.key_file)),
            format!("--trusted-ca-file={}", path(&self.ca.cert_file)),
            "--client-cert-auth".into(),
            format!("--peer-cert-file={}", path(&peer.cert_file)),
            format!("--peer-key-file={}", path(&peer.key_file)),
            format!("--peer-trusted-ca-file={}", path(&self.ca.cert_file)),
            "--peer-client-cert-auth".into(),
            "--bcrypt-cost=4".into(),
        ]
    }

    /// `etcdctl` flags presenting `pair` (or no certificate).
    fn etcdctl_flags(&self, pair: Option<&Pair>) -> Vec<String> {
        let mut flags = vec![format!("--cacert={}", self.ca.cert_file.display())];
        if let Some(pair) = pair {
            flags.push(format!("--cert={}", pair.cert_file.display()));
            flags.push(format!("--key={}", pair.key_file.display()));
        }
        flags
    }
}

fn start(pki: &Pki, dir: tempfile::TempDir) -> Cluster {
    let mut spec = Spec::new(3);
    spec.client_scheme = "https";
    spec.peer_scheme = "https";
    spec.extra_flags = pki.member_flags(&pki.server);
    spec.etcdctl_flags = pki.etcdctl_flags(Some(&pki.root));
    Cluster::start_spec(spec, dir)
}

fn ctl(cluster: &Cluster, flags: &[String], args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    etcdctl(&cluster.endpoints(), &all)
}

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn tls_options(pki: &Pki, pair: Option<&Pair>) -> ConnectOptions {
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(pki.ca.cert_pem()));
    if let Some(pair) = pair {
        tls = tls.identity(Identity::from_pem(pair.cert_pem(), pair.key_pem()));
    }
    ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(std::time::Duration::from_secs(3))
        .with_timeout(std::time::Duration::from_secs(5))
}

#[test]
fn etcdctl_needs_a_certificate_from_the_clusters_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cluster = start(&pki, dir);
    let trusted = pki.etcdctl_flags(Some(&pki.root));
    ok(&ctl(&cluster, &trusted, &["put", "greeting", "hello"]));
    let got = ok(&ctl(
        &cluster,
        &trusted,
        &["get", "greeting", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "hello");

    let no_cert = pki.etcdctl_flags(None);
    let refused = ctl(&cluster, &no_cert, &["get", "greeting"]);
    assert!(
        !refused.status.success(),
        "a client without a certificate was served"
    );
    let stranger = pki.etcdctl_flags(Some(&pki.stranger));
    let refused = ctl(&cluster, &stranger, &["get", "greeting"]);
    assert!(
        !refused.status.success(),
        "a certificate from another CA was accepted"
    );
    // Refused at the handshake: the members say so.
    wait_for("a member to log a refused handshake", || {
        cluster
            .members
            .iter()
            .any(|m| {
                m.log_text()
                    .contains("refused a client: TLS handshake failed")
            })
            .then_some(())
    });

    // The JSON gateway and /metrics are behind the same TLS.
    let url = format!("{}/metrics", cluster.members[0].client_url());
    let curl = |extra: &[String]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(&pki.ca.cert_file)
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let with_cert = curl(&[
        "--cert".into(),
        pki.root.cert_file.display().to_string(),
        "--key".into(),
        pki.root.key_file.display().to_string(),
    ]);
    assert!(with_cert.status.success(), "{with_cert:?}");
    assert!(String::from_utf8_lossy(&with_cert.stdout).contains("etcd_server_has_leader"));
    assert!(
        !curl(&[]).status.success(),
        "/metrics without a certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_client_crate_connects_with_a_certificate_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cluster = start(&pki, dir);
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    let mut client = Client::connect(endpoints.clone(), Some(tls_options(&pki, Some(&pki.alice))))
        .await
        .unwrap();
    client.put("k", "v", None).await.unwrap();
    let got = client.get("k", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");
    // A lease kept alive through every member: followers forward to the leader over TLS.
    let lease = client.lease_grant(30, None).await.unwrap().id();
    for endpoint in &endpoints {
        let mut one = Client::connect([endpoint], Some(tls_options(&pki, Some(&pki.alice))))
            .await
            .unwrap();
        let (mut keeper, mut answers) = one.lease_keep_alive(lease).await.unwrap();
        keeper.keep_alive().await.unwrap();
        let answer = answers.message().await.unwrap().unwrap();
        assert!(
            answer.ttl() > 0,
            "keep-alive through {endpoint}: {answer:?}"
        );
        let ttl = one.lease_time_to_live(lease, None).await.unwrap();
        assert!(ttl.ttl() > 0);
    }

    let without = Client::connect(endpoints.clone(), Some(tls_options(&pki, None))).await;
    let refused = match without {
        Err(_) => true,
        Ok(mut client) => client.get("k", None).await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");
}

#[test]
fn a_peer_with_a_certificate_from_another_ca_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut cluster = start(&pki, dir);
    let flags = pki.etcdctl_flags(Some(&pki.root));
    let mut spec = Spec::new(1);
    spec.client_scheme = "https";
    spec.peer_scheme = "https";
    let mut intruder = common::new_member(cluster.path(), "n4", &spec);
    // Until the members have been up for an election timeout in the leader's view, an add
    // is refused as etcd's is ("unhealthy cluster").
    let add = [
        "member".to_string(),
        "add".into(),
        "n4".into(),
        format!("--peer-urls={}", intruder.peer_url()),
    ];
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    wait_for("member add to be taken", || {
        ctl(&cluster, &flags, &add).status.success().then_some(())
    });
    let initial_cluster = format!("{},n4={}", cluster.initial_cluster, intruder.peer_url());
    let stranger_ca = Ca::new(cluster.path(), "peer-stranger");
    let wrong = stranger_ca.issue("keel-member");
    let mut intruder_flags = pki.member_flags(&wrong);
    // It trusts the cluster's CA, so only its own certificate is wrong.
    intruder_flags.retain(|f| !f.starts_with("--peer-trusted-ca-file"));
    intruder_flags.push(format!(
        "--peer-trusted-ca-file={}",
        pki.ca.cert_file.display()
    ));
    common::spawn(&mut intruder, &initial_cluster, "existing", &intruder_flags);
    // Every connection it makes or takes fails the handshake: the members log it, and it
    // never receives the cluster's data.
    wait_for("the members to refuse the intruder", || {
        cluster
            .members
            .iter()
            .any(|m| {
                m.log_text()
                    .contains("refused a peer connection: TLS handshake failed")
            })
            .then_some(())
    });
    let endpoint = intruder.endpoint();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["get", "readiness-probe"]);
    assert!(
        !etcdctl(&endpoint, &args).status.success(),
        "the intruder serves reads"
    );
    // The cluster goes on with three of four members.
    ok(&ctl(&cluster, &flags, &["put", "still", "working"]));
    cluster.members.push(intruder);
    cluster.members[3].kill();
}

#[test]
fn a_client_certificates_common_name_is_its_user_when_auth_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cluster = start(&pki, dir);
    let root = pki.etcdctl_flags(Some(&pki.root));
    let alice = pki.etcdctl_flags(Some(&pki.alice));
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice", "--new-user-password=alicepw"],
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "app/",
            "--prefix",
        ],
        &["user", "grant-role", "alice", "reader"],
        &["put", "app/config", "v1"],
        &["auth", "enable"],
    ] {
        ok(&ctl(&cluster, &root, args));
    }
    // No --user: the certificate names the user.
    let got = ok(&ctl(
        &cluster,
        &alice,
        &["get", "app/config", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "v1");
    let denied = ctl(&cluster, &alice, &["put", "app/config", "v2"]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("etcdserver: permission denied"),
        "{denied:?}"
    );
    ok(&ctl(&cluster, &root, &["put", "app/config", "v3"]));
}

/// A TLS handshake naming the server by IP address in SNI, as Node's grpc-js does, and
/// what the member logged of it.
fn log_after_an_ip_address_sni(pki: &Pki, log_level: &str) -> String {
    let mut spec = Spec::new(1);
    spec.client_scheme = "https";
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    spec.extra_flags = vec![
        format!("--cert-file={}", path(&pki.server.cert_file)),
        format!("--key-file={}", path(&pki.server.key_file)),
        format!("--log-level={log_level}"),
    ];
    spec.etcdctl_flags = pki.etcdctl_flags(None);
    let mut cluster = Cluster::start_spec(spec, tempfile::tempdir().unwrap());
    let handshake = Command::new("openssl")
        .args(["s_client", "-connect", &cluster.members[0].endpoint()])
        .args(["-servername", "127.0.0.1", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    assert!(
        String::from_utf8_lossy(&handshake.stderr).contains("CONNECTION ESTABLISHED"),
        "{handshake:?}"
    );
    cluster.members[0].terminate();
    cluster.members[0].log_text()
}

#[test]
fn a_client_sending_an_ip_address_as_server_name_is_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let log = log_after_an_ip_address_sni(&pki, "info");
    assert!(!log.contains("Illegal SNI"), "{log}");
    // It is there at debug: the handshake above does reach the quirk.
    let log = log_after_an_ip_address_sni(&pki, "debug");
    assert!(log.contains("Illegal SNI"), "{log}");
}

/// `--client-crl-file`: a client whose certificate the CA revoked is refused at the
/// handshake; the list is read again when it changes, as certificates are. A member with a
/// `--peer-crl-file` that revokes nobody serves as usual.
#[test]
fn a_revoked_client_certificate_is_refused_until_a_new_list_lifts_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let client_crl = dir.path().join("clients.crl");
    pki.ca.write_crl(&client_crl, 1, &[&pki.alice]);
    let peer_crl = dir.path().join("peers.crl");
    pki.ca.write_crl(&peer_crl, 1, &[]);
    let mut spec = Spec::new(1);
    spec.client_scheme = "https";
    spec.peer_scheme = "https";
    spec.extra_flags = pki.member_flags(&pki.server);
    spec.extra_flags.extend([
        format!("--client-crl-file={}", client_crl.display()),
        format!("--peer-crl-file={}", peer_crl.display()),
    ]);
    spec.etcdctl_flags = pki.etcdctl_flags(Some(&pki.root));
    let cluster = Cluster::start_spec(spec, dir);
    let root = pki.etcdctl_flags(Some(&pki.root));
    let alice = pki.etcdctl_flags(Some(&pki.alice));
    ok(&ctl(&cluster, &root, &["put", "greeting", "hello"]));
    let refused = ctl(&cluster, &alice, &["get", "greeting", "--dial-timeout=2s"]);
    assert!(
        !refused.status.success(),
        "a revoked certificate was served: {refused:?}"
    );
    pki.ca.write_crl(&client_crl, 2, &[]);
    wait_for("the member to read the new revocation list", || {
        ctl(&cluster, &alice, &["get", "greeting", "--print-value-only"])
            .status
            .success()
            .then_some(())
    });
}

/// etcd's `--listen-metrics-urls` with `https://`: served with the client port's certificate
/// and, with `--client-cert-auth`, only to clients with a certificate from its CA; an
/// `http://` one next to it stays plain.
#[test]
fn an_https_metrics_url_serves_with_the_client_ports_certificate_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (https_port, http_port) = (common::free_port(), common::free_port());
    let mut spec = Spec::new(1);
    spec.client_scheme = "https";
    spec.peer_scheme = "https";
    spec.extra_flags = pki.member_flags(&pki.server);
    spec.extra_flags.push(format!(
        "--listen-metrics-urls=https://127.0.0.1:{https_port},http://127.0.0.1:{http_port}"
    ));
    spec.etcdctl_flags = pki.etcdctl_flags(Some(&pki.root));
    let cluster = Cluster::start_spec(spec, dir);
    ok(&ctl(
        &cluster,
        &pki.etcdctl_flags(Some(&pki.root)),
        &["put", "a", "1"],
    ));
    let curl = |url: &str, extra: &[String]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(&pki.ca.cert_file)
            .args(extra)
            .arg(url)
            .output()
            .unwrap()
    };
    let root = [
        "--cert".to_string(),
        pki.root.cert_file.display().to_string(),
        "--key".to_string(),
        pki.root.key_file.display().to_string(),
    ];
    let secure = format!("https://127.0.0.1:{https_port}");
    let metrics = curl(&format!("{secure}/metrics"), &root);
    assert!(metrics.status.success(), "{metrics:?}");
    assert!(String::from_utf8_lossy(&metrics.stdout).contains("etcd_server_has_leader 1"));
    let health = curl(&format!("{secure}/health"), &root);
    assert_eq!(
        String::from_utf8_lossy(&health.stdout),
        r#"{"health":"true","reason":""}"#
    );
    assert!(
        !curl(&format!("{secure}/metrics"), &[]).status.success(),
        "https metrics without a client certificate"
    );
    assert!(
        !curl(&format!("http://127.0.0.1:{https_port}/metrics"), &[])
            .status
            .success(),
        "plain HTTP on the https metrics URL"
    );
    let plain = curl(&format!("http://127.0.0.1:{http_port}/metrics"), &[]);
    assert!(String::from_utf8_lossy(&plain.stdout).contains("etcd_server_has_leader 1"));
    drop(cluster);
}
