//! keel under systemd: the unit in `deploy/systemd` passes `systemd-analyze verify`, and a
//! member tells systemd it is ready (`READY=1` on `NOTIFY_SOCKET`) only once it serves.

#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{etcdctl, initial_cluster_of, new_member, spawn, spawn_with_env, Spec, DEADLINE};

/// Binds a notification socket in `dir`, as systemd does for a `Type=notify` unit.
fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("a notification socket");
    (socket, path)
}

/// The next notification, or `None` if none came within `wait`.
fn next_notification(socket: &UnixDatagram, wait: Duration) -> Option<String> {
    socket.set_read_timeout(Some(wait)).expect("a read timeout");
    let mut buf = [0u8; 256];
    let received = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..received]).into_owned())
}

#[test]
fn a_member_tells_systemd_it_is_ready_only_once_its_cluster_serves() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let spec = Spec::new(3);
    let mut members: Vec<_> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| new_member(dir.path(), name, &spec))
        .collect();
    let initial_cluster = initial_cluster_of(&members);
    let (socket, path) = notify_socket(dir.path());
    let env = [("NOTIFY_SOCKET", path.as_os_str())];
    spawn_with_env(&mut members[0], &initial_cluster, "new", &[], &env);
    // Alone, the member has no quorum: it must not say it is ready.
    assert_eq!(
        next_notification(&socket, Duration::from_secs(2)),
        None,
        "ready without a quorum"
    );
    spawn(&mut members[1], &initial_cluster, "new", &[]);
    let ready = next_notification(&socket, DEADLINE).expect("a notification once it serves");
    assert_eq!(ready, "READY=1");
    // Ready means serving: a linearizable write and read succeed at once, no retry.
    let endpoint = members[0].endpoint();
    let put = etcdctl(&endpoint, &["put", "k", "v"]);
    assert!(put.status.success(), "{put:?}");
    let get = etcdctl(&endpoint, &["get", "k", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "v\n");
    // Once only.
    assert_eq!(next_notification(&socket, Duration::from_millis(300)), None);
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/keel.service"),
    )
    .expect("deploy/systemd/keel.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/keel\n"));
    // Verified against the keel just built (verify checks that ExecStart is executable).
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("keel.service");
    let unit = unit.replace("/usr/local/bin/keel", env!("CARGO_BIN_EXE_keel"));
    std::fs::write(&file, unit).expect("the unit copied");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("systemd-analyze (Debian: apt-get install systemd)");
    // It exits 0 over settings it ignores: anything it says is a problem.
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {:?} {said}",
        output.status
    );
}
