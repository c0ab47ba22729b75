//! Backups in etcd's format with real processes, Debian's `etcdctl` and `etcd` (3.4): a
//! keel snapshot restored into a new keel cluster and into etcd, an etcd snapshot restored
//! into keel, a damaged file refused, and a restore that bumps the revision. Each compares
//! what clients see: every key with its revisions and version, leases with their keys,
//! users and roles, the compacted revision, and the revision writes go on from.
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{etcdctl, etcdctl_ok, free_port, spawn, wait_for, Cluster, Member, Spec};

const ROOT: &str = "root:rootpw";

/// One test at a time: each starts several servers.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .output()
        .expect("keel runs")
}

fn keel_ok(args: &[&str]) -> String {
    let output = keel(args);
    assert!(
        output.status.success(),
        "keel {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Debian's `etcdctl` without an endpoint (for `snapshot status` / `restore`).
fn etcdctl_offline(args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("etcdctl is installed (apt-get install etcd-client)")
}

/// A real etcd (Debian's etcd-server), killed when dropped.
struct Etcd {
    child: Child,
    endpoint: String,
}

impl Etcd {
    /// Starts etcd on `data_dir` as the single member `name` on `peer_port`.
    fn start(dir: &Path, data_dir: &Path, name: &str, peer_port: u16) -> Etcd {
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join(format!("etcd-{name}.log"))).unwrap();
        let child = Command::new("etcd")
            .args(["--name", name, "--data-dir"])
            .arg(data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd is installed (apt-get install etcd-server)");
        let endpoint = client.trim_start_matches("http://").to_string();
        wait_for("etcd to serve", || {
            etcdctl(&endpoint, &["--user", ROOT, "get", "probe"])
                .status
                .success()
                .then_some(())
                .or_else(|| {
                    etcdctl(&endpoint, &["get", "probe"])
                        .status
                        .success()
                        .then_some(())
                })
        });
        Etcd { child, endpoint }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// History, a compaction, a lease with a key, users and roles, then auth on: what a backup
/// must carry. Returns the revision it compacted at.
fn write_state(endpoint: &str) -> i64 {
    for (key, value) in [("a", "1"), ("a", "2"), ("b", "gone"), ("c", "3")] {
        etcdctl_ok(endpoint, &["put", key, value]);
    }
    etcdctl_ok(endpoint, &["del", "b"]);
    let lease = etcdctl_ok(endpoint, &["lease", "grant", "600"]);
    let lease = lease.split_whitespace().nth(1).unwrap().to_string();
    etcdctl_ok(
        endpoint,
        &["put", "leased", "v", &format!("--lease={lease}")],
    );
    let compacted = revision_of(endpoint, &[]);
    etcdctl_ok(endpoint, &["compact", &compacted.to_string()]);
    etcdctl_ok(endpoint, &["put", "a", "3"]);
    etcdctl_ok(endpoint, &["put", "/app/one", "1"]);
    for args in [
        &["role", "add", "root"][..],
        &["user", "add", ROOT],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "/app/",
            "/app0",
        ],
        &["user", "add", "alice:alicepw"],
        &["user", "grant-role", "alice", "reader"],
        &["auth", "enable"],
    ] {
        etcdctl_ok(endpoint, args);
    }
    compacted
}

fn revision_of(endpoint: &str, auth: &[&str]) -> i64 {
    let mut args = auth.to_vec();
    args.extend(["get", "probe", "-w", "json"]);
    let json: serde_json::Value = serde_json::from_str(&etcdctl_ok(endpoint, &args)).unwrap();
    json["header"]["revision"].as_i64().unwrap()
}

/// Every key as clients see it (the header's ids differ between clusters).
fn keys_of(endpoint: &str) -> serde_json::Value {
    let out = etcdctl_ok(
        endpoint,
        &["--user", ROOT, "get", "", "--prefix", "-w", "json"],
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    serde_json::json!({
        "revision": json["header"]["revision"],
        "kvs": json["kvs"],
    })
}

/// Leases with their TTL and keys, users and roles with their grants, the role list.
fn metadata_of(endpoint: &str) -> Vec<String> {
    let root = ["--user", ROOT];
    let mut out = Vec::new();
    for lease in etcdctl_ok(endpoint, &[&root[..], &["lease", "list"]].concat())
        .lines()
        .skip(1)
    {
        let ttl = etcdctl_ok(
            endpoint,
            &[
                &root[..],
                &["lease", "timetolive", lease, "--keys", "-w", "json"],
            ]
            .concat(),
        );
        let ttl: serde_json::Value = serde_json::from_str(&ttl).unwrap();
        out.push(format!(
            "lease {lease} ttl {} keys {}",
            ttl["granted-ttl"], ttl["keys"]
        ));
    }
    out.push(etcdctl_ok(
        endpoint,
        &[&root[..], &["role", "list"]].concat(),
    ));
    for user in etcdctl_ok(endpoint, &[&root[..], &["user", "list"]].concat()).lines() {
        out.push(etcdctl_ok(
            endpoint,
            &[&root[..], &["user", "get", user]].concat(),
        ));
    }
    // `role get root` differs between etcd 3.4 (no permissions) and 3.5, which keel
    // answers as (everything): root's role holds no grants in either's backup.
    let roles = etcdctl_ok(endpoint, &[&root[..], &["role", "list"]].concat());
    for role in roles.lines().filter(|&r| r != "root") {
        out.push(etcdctl_ok(
            endpoint,
            &[&root[..], &["role", "get", role]].concat(),
        ));
    }
    out
}

/// What a client sees of a backup's content and its compaction.
fn assert_same_content(from: &str, to: &str, compacted: i64) {
    assert_eq!(keys_of(from), keys_of(to));
    assert_eq!(metadata_of(from), metadata_of(to));
    let old = etcdctl(
        to,
        &[
            "--user",
            ROOT,
            "get",
            "a",
            &format!("--rev={}", compacted - 1),
        ],
    );
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"),
        "{old:?}"
    );
    assert_eq!(
        etcdctl_ok(
            to,
            &[
                "--user",
                "alice:alicepw",
                "get",
                "/app/one",
                "--print-value-only"
            ]
        ),
        "1\n"
    );
}

fn snapshot_save(endpoint: &str, file: &Path) {
    etcdctl_ok(
        endpoint,
        &["--user", ROOT, "snapshot", "save", &file.to_string_lossy()],
    );
}

/// `keel snapshot restore` of `file` for every member of a new cluster in `dir`.
fn restore_cluster(file: &Path, dir: &Path, size: usize, extra: &[&str]) -> Cluster {
    let spec = Spec::new(size);
    let mut members: Vec<Member> = (1..=size)
        .map(|i| common::new_member(dir, &format!("r{i}"), &spec))
        .collect();
    let initial_cluster = common::initial_cluster_of(&members);
    for member in &members {
        let data_dir = member.data_dir.to_string_lossy().into_owned();
        let peer_url = member.peer_url();
        let mut args = vec![
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            &data_dir,
            "--name",
            &member.name,
            "--initial-cluster",
            &initial_cluster,
            "--initial-cluster-token",
            "restored",
            "--initial-advertise-peer-urls",
            &peer_url,
        ];
        args.extend(extra);
        keel_ok(&args);
    }
    for member in &mut members {
        spawn(member, &initial_cluster, "new", &[]);
    }
    let cluster = Cluster {
        dir: tempfile::tempdir().unwrap(),
        members,
        initial_cluster,
        extra_flags: Vec::new(),
        etcdctl_flags: vec!["--user".into(), ROOT.into()],
    };
    cluster.wait_ready();
    cluster
}

/// A one-member keel cluster holding [`write_state`]'s state, its endpoint, the revision it
/// compacted at, and a backup of it saved with `etcdctl snapshot save`.
fn backed_up_keel() -> (Cluster, String, i64, PathBuf) {
    let source = Cluster::start(1);
    let from = source.members[0].endpoint();
    let compacted = write_state(&from);
    let file = source.path().join("backup.db");
    snapshot_save(&from, &file);
    (source, from, compacted, file)
}

#[test]
fn a_keel_snapshot_rebuilds_a_three_member_cluster() {
    let _one = one_at_a_time();
    let (source, from, compacted, file) = backed_up_keel();
    // The file is etcd's: etcdctl reads it, and keel reports the same status.
    let etcd_status =
        etcdctl_offline(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]);
    assert!(etcd_status.status.success(), "{etcd_status:?}");
    let keel_status = keel_ok(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]);
    assert_eq!(
        String::from_utf8_lossy(&etcd_status.stdout).trim(),
        keel_status.trim()
    );

    let restored = restore_cluster(&file, source.path(), 3, &[]);
    for member in &restored.members {
        assert_same_content(&from, &member.endpoint(), compacted);
    }
    // The revision goes on from the old cluster's, and the history hashes the same.
    let before = revision_of(&from, &["--user", ROOT]);
    let hash_of = |endpoint: &str| {
        let out = etcdctl_ok(
            endpoint,
            &[
                "--user",
                ROOT,
                "endpoint",
                "hashkv",
                &format!("--rev={before}"),
                "-w",
                "json",
            ],
        );
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        json[0]["HashKV"]["hash"].clone()
    };
    let source_hash = hash_of(&from);
    assert!(source_hash.is_number(), "{source_hash}");
    for member in &restored.members {
        assert_eq!(
            hash_of(&member.endpoint()),
            source_hash,
            "HashKV at {before}"
        );
    }
    let endpoints = restored.endpoints();
    etcdctl_ok(&endpoints, &["--user", ROOT, "put", "after", "restore"]);
    assert_eq!(revision_of(&endpoints, &["--user", ROOT]), before + 1);
    let list = etcdctl_ok(&endpoints, &["--user", ROOT, "member", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
}

#[test]
fn an_etcd_snapshot_restores_into_keel() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path(), &dir.path().join("etcd"), "e1", free_port());
    let compacted = write_state(&etcd.endpoint);
    // A short lease: it must expire in keel as in etcd.
    let short = etcdctl_ok(&etcd.endpoint, &["--user", ROOT, "lease", "grant", "3"]);
    let short = short.split_whitespace().nth(1).unwrap().to_string();
    etcdctl_ok(
        &etcd.endpoint,
        &[
            "--user",
            ROOT,
            "put",
            "expires",
            "v",
            &format!("--lease={short}"),
        ],
    );
    let file = dir.path().join("etcd-backup.db");
    snapshot_save(&etcd.endpoint, &file);
    let status = etcdctl_offline(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]);
    assert_eq!(
        String::from_utf8_lossy(&status.stdout).trim(),
        keel_ok(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]).trim()
    );
    let before = revision_of(&etcd.endpoint, &["--user", ROOT]);
    etcdctl_ok(&etcd.endpoint, &["--user", ROOT, "lease", "revoke", &short]);

    let restored = restore_cluster(&file, dir.path(), 1, &[]);
    let to = restored.members[0].endpoint();
    // The short lease came along with its key, and expires (in etcd it was revoked).
    wait_for("the short lease's key to expire", || {
        let got = etcdctl_ok(
            &to,
            &["--user", ROOT, "get", "expires", "--print-value-only"],
        );
        got.trim().is_empty().then_some(())
    });
    assert_same_content(&etcd.endpoint, &to, compacted);
    etcdctl_ok(&to, &["--user", ROOT, "put", "after", "restore"]);
    // The lease's expiry deleted a key (one revision), then the put.
    assert_eq!(revision_of(&to, &["--user", ROOT]), before + 2);
}

#[test]
fn a_keel_snapshot_restores_into_etcd() {
    let _one = one_at_a_time();
    let (source, from, compacted, file) = backed_up_keel();
    let data_dir = source.path().join("etcd-restored");
    let peer_port = free_port();
    let peer = format!("http://127.0.0.1:{peer_port}");
    let restore = etcdctl_offline(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--name",
        "e1",
        "--initial-cluster",
        &format!("e1={peer}"),
        "--initial-advertise-peer-urls",
        &peer,
    ]);
    assert!(restore.status.success(), "{restore:?}");
    let etcd = Etcd::start(source.path(), &data_dir, "e1", peer_port);
    assert_same_content(&from, &etcd.endpoint, compacted);
    let before = revision_of(&from, &["--user", ROOT]);
    etcdctl_ok(&etcd.endpoint, &["--user", ROOT, "put", "after", "restore"]);
    assert_eq!(revision_of(&etcd.endpoint, &["--user", ROOT]), before + 1);
}

fn corrupt_copy(file: &Path, at: u64) -> PathBuf {
    let damaged = file.with_extension("damaged");
    let mut bytes = std::fs::read(file).unwrap();
    bytes[usize::try_from(at).unwrap()] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    damaged
}

#[test]
fn a_damaged_snapshot_is_refused_and_a_bumped_one_compacts_the_old_revisions() {
    let _one = one_at_a_time();
    let (source, from, _, file) = backed_up_keel();
    let damaged = corrupt_copy(&file, 5000);
    let data_dir = source.path().join("refused.keel");
    let refused = keel(&[
        "snapshot",
        "restore",
        damaged.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("is damaged: expected sha256"), "{stderr}");
    assert!(!data_dir.exists(), "a refused restore leaves no data dir");

    let before = revision_of(&from, &["--user", ROOT]);
    let restored = restore_cluster(
        &file,
        source.path(),
        1,
        &["--bump-revision", "1000", "--mark-compacted"],
    );
    let to = restored.members[0].endpoint();
    let old = etcdctl(
        &to,
        &["--user", ROOT, "get", "a", &format!("--rev={before}")],
    );
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"),
        "{old:?}"
    );
    etcdctl_ok(&to, &["--user", ROOT, "put", "after", "restore"]);
    assert_eq!(revision_of(&to, &["--user", ROOT]), before + 1001);
    assert_eq!(
        etcdctl_ok(&to, &["--user", ROOT, "get", "a", "--print-value-only"]),
        "3\n"
    );
}
