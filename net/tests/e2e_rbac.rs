//! etcd's role-based access control with real processes, set up and exercised with etcdctl as
//! an operator would: users and roles, permissions on prefixes, `auth enable`, then each user
//! does exactly what its roles allow, in plain requests, in Txn and in Watch. Also through the
//! `etcd-client` crate (tokens from one member used on another).
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;

use common::{etcdctl, Cluster};

/// A three-member cluster with root, alice (read `app/`), bob (write `jobs/`, read-write
/// `shared/`) and carol (no role), auth enabled.
fn cluster_with_users() -> Cluster {
    let cluster = Cluster::start_with(3, &["--bcrypt-cost=4"]);
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice", "--new-user-password=alicepw"],
        &["user", "add", "bob", "--new-user-password=bobpw"],
        &["user", "add", "carol", "--new-user-password=carolpw"],
        &["role", "add", "app-reader"],
        &[
            "role",
            "grant-permission",
            "app-reader",
            "read",
            "app/",
            "--prefix",
        ],
        &["role", "add", "jobs-writer"],
        &[
            "role",
            "grant-permission",
            "jobs-writer",
            "write",
            "jobs/",
            "--prefix",
        ],
        &[
            "role",
            "grant-permission",
            "jobs-writer",
            "readwrite",
            "shared/",
            "--prefix",
        ],
        &["user", "grant-role", "alice", "app-reader"],
        &["user", "grant-role", "bob", "jobs-writer"],
        &["put", "app/config", "v1"],
        &["put", "jobs/1", "queued"],
        &["put", "secret", "s3cr3t"],
    ] {
        ok(&ctl(&cluster, None, args));
    }
    let enabled = ok(&ctl(&cluster, None, &["auth", "enable"]));
    assert_eq!(enabled.trim(), "Authentication Enabled");
    cluster
}

fn ctl(cluster: &Cluster, user: Option<&str>, args: &[&str]) -> Output {
    let user_flag = user.map(|u| format!("--user={u}"));
    let mut all: Vec<&str> = user_flag.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    etcdctl(&cluster.endpoints(), &all)
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// etcdctl failed with `message` (etcd's error text).
fn refused(output: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains(message),
        "expected {message:?}, got status {:?}, stdout {:?}, stderr {stderr:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
}

const DENIED: &str = "etcdserver: permission denied";

#[test]
fn each_user_does_exactly_what_its_roles_allow() {
    let cluster = cluster_with_users();
    let root = Some("root:rootpw");
    let alice = Some("alice:alicepw");
    let bob = Some("bob:bobpw");
    let carol = Some("carol:carolpw");

    // No credentials, a wrong password, an unknown user.
    refused(
        &ctl(&cluster, None, &["get", "app/config"]),
        "etcdserver: user name is empty",
    );
    refused(
        &ctl(&cluster, Some("alice:wrong"), &["get", "app/config"]),
        "etcdserver: authentication failed, invalid user ID or password",
    );
    refused(
        &ctl(&cluster, Some("mallory:x"), &["get", "app/config"]),
        "etcdserver: authentication failed, invalid user ID or password",
    );

    // alice: read-only on app/.
    let got = ok(&ctl(
        &cluster,
        alice,
        &["get", "app/", "--prefix", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "v1");
    refused(&ctl(&cluster, alice, &["put", "app/config", "v2"]), DENIED);
    refused(&ctl(&cluster, alice, &["del", "app/config"]), DENIED);
    refused(&ctl(&cluster, alice, &["get", "secret"]), DENIED);
    refused(&ctl(&cluster, alice, &["get", "", "--prefix"]), DENIED);

    // bob: write-only on jobs/, read-write on shared/.
    ok(&ctl(&cluster, bob, &["put", "jobs/2", "queued"]));
    ok(&ctl(&cluster, bob, &["del", "jobs/1"]));
    refused(&ctl(&cluster, bob, &["get", "jobs/2"]), DENIED);
    refused(&ctl(&cluster, bob, &["del", "jobs/2", "--prev-kv"]), DENIED);
    ok(&ctl(&cluster, bob, &["put", "shared/x", "1"]));
    let got = ok(&ctl(
        &cluster,
        bob,
        &["get", "shared/x", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "1");
    refused(&ctl(&cluster, bob, &["put", "app/config", "bob"]), DENIED);

    // carol: nothing.
    refused(&ctl(&cluster, carol, &["get", "app/config"]), DENIED);
    refused(&ctl(&cluster, carol, &["put", "x", "y"]), DENIED);

    // Nothing a refused request tried to write was written; root sees everything.
    let all = ok(&ctl(&cluster, root, &["get", "", "--prefix"]));
    assert_eq!(
        all.lines().collect::<Vec<_>>(),
        [
            "app/config",
            "v1",
            "jobs/2",
            "queued",
            "secret",
            "s3cr3t",
            "shared/x",
            "1"
        ]
    );

    // Only root manages auth.
    refused(&ctl(&cluster, alice, &["user", "list"]), DENIED);
    refused(&ctl(&cluster, bob, &["role", "add", "mine"]), DENIED);
    let users = ok(&ctl(&cluster, root, &["user", "list"]));
    assert_eq!(
        users.lines().collect::<Vec<_>>(),
        ["alice", "bob", "carol", "root"]
    );
    // A user may look at themselves.
    let me = ok(&ctl(&cluster, alice, &["user", "get", "alice"]));
    assert!(me.contains("app-reader"), "{me}");
}

#[test]
fn a_txn_is_checked_on_every_key_it_touches() {
    let cluster = cluster_with_users();
    let txn = |input: &str| ctl_with_input(&cluster, Some("bob:bobpw"), &["txn"], input);
    // Compare on shared/ (readable), writes to jobs/ and shared/: allowed.
    let allowed =
        txn("ver(\"shared/x\") = \"0\"\n\nput jobs/3 a\nput shared/y b\n\nput jobs/4 c\n\n");
    assert_eq!(ok(&allowed).lines().next(), Some("SUCCESS"));
    // A compare on jobs/ (bob may not read it): refused, nothing written.
    refused(
        &txn("value(\"jobs/3\") = \"a\"\n\nput shared/z c\n\n\n"),
        DENIED,
    );
    // A branch that would read app/ (even if not taken): refused.
    refused(&txn("\nput jobs/5 e\n\nget app/config\n\n"), DENIED);
    let root = Some("root:rootpw");
    let shared = ok(&ctl(
        &cluster,
        root,
        &["get", "shared/", "--prefix", "--keys-only"],
    ));
    assert_eq!(shared.split_whitespace().collect::<Vec<_>>(), ["shared/y"]);
    let jobs = ok(&ctl(
        &cluster,
        root,
        &["get", "jobs/", "--prefix", "--keys-only"],
    ));
    assert_eq!(
        jobs.split_whitespace().collect::<Vec<_>>(),
        ["jobs/1", "jobs/3"]
    );
}

#[test]
fn a_watch_on_a_range_the_user_may_not_read_is_refused() {
    let cluster = cluster_with_users();
    let watch = ctl(&cluster, Some("alice:alicepw"), &["watch", "secret"]);
    assert!(
        !watch.status.success(),
        "the watch was not refused: {watch:?}"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&watch.stdout),
        String::from_utf8_lossy(&watch.stderr)
    );
    assert!(said.contains("permission denied"), "{said}");
    let prefix = ctl(&cluster, Some("alice:alicepw"), &["watch", "", "--prefix"]);
    assert!(!prefix.status.success());
}

#[test]
fn auth_management_errors_are_etcds() {
    let cluster = Cluster::start_with(1, &["--bcrypt-cost=4"]);
    refused(
        &ctl(&cluster, None, &["auth", "enable"]),
        "etcdserver: root user does not exist",
    );
    ok(&ctl(
        &cluster,
        None,
        &["user", "add", "root", "--new-user-password=pw"],
    ));
    refused(
        &ctl(
            &cluster,
            None,
            &["user", "add", "root", "--new-user-password=pw"],
        ),
        "etcdserver: user name already exists",
    );
    refused(
        &ctl(&cluster, None, &["user", "grant-role", "root", "nope"]),
        "etcdserver: role name not found",
    );
    refused(
        &ctl(&cluster, None, &["user", "get", "nobody"]),
        "etcdserver: user name not found",
    );
    // etcdctl answers "root user does not have root role" by adding the role and granting it.
    ok(&ctl(&cluster, None, &["auth", "enable"]));
    let root = Some("root:pw");
    let roles = ok(&ctl(&cluster, root, &["user", "get", "root"]));
    assert!(roles.contains("root"), "{roles}");
    refused(
        &ctl(&cluster, root, &["user", "delete", "root"]),
        "etcdserver: invalid auth management",
    );
    // etcdctl 3.4 has no `auth status`: ask the JSON gateway, with a token from it.
    let url = cluster.members[0].client_url();
    let login = curl(
        &format!("{url}/v3/auth/authenticate"),
        r#"{"name":"root","password":"pw"}"#,
        None,
    );
    let token = login
        .split('"')
        .skip_while(|s| *s != "token")
        .nth(2)
        .unwrap()
        .to_string();
    let status = curl(&format!("{url}/v3/auth/status"), "{}", Some(&token));
    assert!(status.contains(r#""enabled":true"#), "{status}");
    assert!(status.contains(r#""authRevision""#), "{status}");
    ok(&ctl_with_input(
        &cluster,
        root,
        &["user", "passwd", "root", "--interactive=false"],
        "pw2\n",
    ));
    refused(
        &ctl(&cluster, root, &["get", "x"]),
        "etcdserver: authentication failed, invalid user ID or password",
    );
    ok(&ctl(&cluster, Some("root:pw2"), &["auth", "disable"]));
    // With auth off, anyone may do anything again.
    ok(&ctl(&cluster, None, &["put", "open", "again"]));
}

/// etcdctl with `input` on its standard input.
fn ctl_with_input(cluster: &Cluster, user: Option<&str>, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut command = std::process::Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.endpoints()))
        .arg("--command-timeout=5s")
        .args(user.map(|u| format!("--user={u}")))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// POSTs `body` to `url` (with a token in `Authorization`); the answer's body.
fn curl(url: &str, body: &str, token: Option<&str>) -> String {
    let mut command = std::process::Command::new("curl");
    command.args(["-sS", "--max-time", "5", "-X", "POST", "-d", body]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: {token}")]);
    }
    let output = command.arg(url).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_client_crate_logs_in_and_is_held_to_its_permissions() {
    use etcd_client::{Client, ConnectOptions, EventType, WatchOptions};
    let cluster = cluster_with_users();
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    // Log in through the first member, then talk to the last: the token is known there.
    let login = Client::connect(&endpoints[..1], None).await.unwrap();
    let token = login
        .auth_client()
        .authenticate("bob".into(), "bobpw".into())
        .await
        .unwrap()
        .token()
        .to_string();
    assert!(token.contains('.'), "a simple token: {token}");
    let options = ConnectOptions::new().with_user("bob", "bobpw");
    let mut bob = Client::connect(&endpoints[2..], Some(options))
        .await
        .unwrap();
    bob.put("shared/w", "1", None).await.unwrap();
    let denied = bob.put("app/config", "x", None).await.unwrap_err();
    assert!(denied.to_string().contains(DENIED), "{denied}");
    // A watch bob may make sees events; one he may not is refused (created and canceled
    // at once, with no watch id).
    let (watcher, mut events) = bob
        .watch("shared/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watcher.watch_id() >= 0);
    bob.put("shared/w", "2", None).await.unwrap();
    let event = events.message().await.unwrap().unwrap();
    assert_eq!(event.events()[0].event_type(), EventType::Put);
    let (refused, _) = bob
        .watch("app/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(refused.watch_id(), -1, "a watch on app/ was not refused");
}

/// The token in a gateway login's answer.
fn token_of(login: &str) -> String {
    let answer: serde_json::Value = serde_json::from_str(login).unwrap();
    answer["token"].as_str().unwrap().to_string()
}

/// An ES256 key pair for JWT tokens, as PEM files in `dir`: (private, public).
fn jwt_keys(dir: &std::path::Path) -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let private = dir.join("jwt.key");
    let public = dir.join("jwt.pub");
    std::fs::write(&private, pair.serialize_pem()).unwrap();
    std::fs::write(&public, pair.public_key_pem()).unwrap();
    (private.display().to_string(), public.display().to_string())
}

/// `--auth-token jwt,…`: a login answers a signed token naming its user and the auth
/// revision; every member takes it at once; a forged one is refused; after an auth change
/// the old token is refused as etcd refuses it, and etcdctl, which logs in again, goes on.
#[test]
fn jwt_tokens_are_signed_taken_by_every_member_and_outdated_by_auth_changes() {
    use base64::Engine;
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = jwt_keys(keys.path());
    let jwt =
        format!("--auth-token=jwt,pub-key={public},priv-key={private},sign-method=ES256,ttl=10m");
    let cluster = Cluster::start_with(3, &["--bcrypt-cost=4", &jwt]);
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["put", "k", "v"],
        &["auth", "enable"],
    ] {
        ok(&ctl(&cluster, None, args));
    }
    let url = |i: usize| cluster.members[i].client_url();
    let token = token_of(&curl(
        &format!("{}/v3/auth/authenticate", url(0)),
        r#"{"name":"root","password":"rootpw"}"#,
        None,
    ));
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token}");
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(claims["username"], "root", "{claims}");
    assert!(claims["revision"].as_u64().unwrap() > 0, "{claims}");
    assert!(claims["exp"].as_u64().is_some(), "{claims}");

    let range = |i: usize, token: &str| {
        curl(
            &format!("{}/v3/kv/range", url(i)),
            r#"{"key":"aw=="}"#,
            Some(token),
        )
    };
    for member in 0..3 {
        let answer = range(member, &token);
        assert!(answer.contains(r#""kvs""#), "member {member}: {answer}");
    }
    let mut forged: Vec<char> = token.chars().collect();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let answer = range(1, &forged);
    assert!(answer.contains("invalid auth token"), "{answer}");

    ok(&ctl(
        &cluster,
        Some("root:rootpw"),
        &["user", "add", "alice", "--new-user-password=a"],
    ));
    let answer = range(2, &token);
    assert!(answer.contains("revision of auth store is old"), "{answer}");
    let got = ok(&ctl(
        &cluster,
        Some("root:rootpw"),
        &["get", "k", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "v");
}

/// A member given only the public key checks tokens but cannot hand one out: a login there
/// fails with etcd's message.
#[test]
fn a_member_with_the_jwt_public_key_only_refuses_logins() {
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = jwt_keys(keys.path());
    let jwt = format!("--auth-token=jwt,pub-key={public},sign-method=ES256");
    let cluster = Cluster::start_with(1, &["--bcrypt-cost=4", &jwt]);
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        ok(&ctl(&cluster, None, args));
    }
    refused(
        &ctl(&cluster, Some("root:rootpw"), &["get", "k"]),
        "auth: token signing attempted with verify-only key",
    );
}
