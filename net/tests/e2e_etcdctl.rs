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

#[test]
fn a_three_member_cluster_serves_through_every_member() {
    let cluster = Cluster::start(3);
    for (i, member) in cluster.members.iter().enumerate() {
        etcdctl_ok(&member.endpoint(), &["put", &format!("via{i}"), "x"]);
    }
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
