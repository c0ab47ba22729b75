//! Failover with real processes: SIGKILL the leader during a stream of writes; a new leader
//! is elected, every acknowledged write is readable, and the killed member restarts and
//! catches up (by snapshot when it is far behind).
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]

mod common;

use common::{etcdctl, etcdctl_ok, wait_for, Cluster};

/// The index of the member that reports itself leader (`etcdctl endpoint status`).
fn leader(cluster: &Cluster) -> Option<usize> {
    let output = etcdctl(&cluster.endpoints(), &["endpoint", "status", "-w", "json"]);
    let text = String::from_utf8_lossy(&output.stdout);
    // One JSON array; each entry has "Endpoint" and "Status" with header member_id and leader.
    let statuses: serde_json::Value = serde_json::from_str(&text).ok()?;
    for status in statuses.as_array()? {
        let endpoint = status["Endpoint"].as_str()?;
        let member = status["Status"]["header"]["member_id"].as_u64()?;
        let leader = status["Status"]["leader"].as_u64()?;
        if member == leader {
            return cluster
                .members
                .iter()
                .position(|m| endpoint.ends_with(&m.endpoint()));
        }
    }
    None
}

#[test]
fn killing_the_leader_loses_no_acknowledged_write_and_the_member_catches_up() {
    let mut cluster = Cluster::start_with(3, &["--snapshot-count", "50"]);
    let old_leader = wait_for("a leader", || leader(&cluster));
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old_leader).collect();
    let through = cluster.members[survivors[0]].endpoint();
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let key = format!("before{i}");
        if etcdctl(&through, &["put", &key, "v"]).status.success() {
            acknowledged.push(key);
        }
    }
    cluster.members[old_leader].kill();
    // Writes keep coming while the survivors elect a new leader; some may fail meanwhile.
    for i in 0..300 {
        let key = format!("after{i}");
        if etcdctl(&through, &["put", &key, "v"]).status.success() {
            acknowledged.push(key);
        }
    }
    let new_leader = wait_for("a new leader", || {
        leader(&cluster).filter(|&l| l != old_leader)
    });
    assert!(survivors.contains(&new_leader));
    for key in &acknowledged {
        let value = etcdctl_ok(&through, &["get", key, "--print-value-only"]);
        assert_eq!(value, "v\n", "acknowledged write {key} is lost");
    }
    // The old leader is far behind (many snapshots happened): it must catch up.
    cluster.restart(old_leader);
    let restarted = cluster.members[old_leader].endpoint();
    let last = acknowledged.last().unwrap().clone();
    wait_for("the restarted member to catch up", || {
        let output = etcdctl(
            &restarted,
            &["get", &last, "--print-value-only", "--consistency=s"],
        );
        (String::from_utf8_lossy(&output.stdout) == "v\n").then_some(())
    });
    let log = cluster.members[old_leader].log_text();
    assert!(!log.contains("panicked"), "{log}");
}
