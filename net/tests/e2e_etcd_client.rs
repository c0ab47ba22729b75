//! The `keel` binary (three real processes) driven by the Rust `etcd-client` crate, as an
//! application would: every KV, Watch, Lease, Cluster, Maintenance, Lock and Election call.
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Cluster;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaderKey, LockOptions, ProclaimOptions,
    PutOptions, ResignOptions, Txn, TxnOp, WatchOptions,
};

async fn connect(cluster: &Cluster) -> Client {
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    Client::connect(endpoints, None).await.unwrap()
}

/// Polls `check` every 50 ms until it holds, at most 30 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_calls_behave_as_etcds() {
    let cluster = Cluster::start(3);
    let mut client = connect(&cluster).await;
    let first = client.put("k", "v1", None).await.unwrap();
    let put_revision = first.header().unwrap().revision();
    let second = client
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(second.prev_key().unwrap().value(), b"v1");
    let now = client.get("k", None).await.unwrap();
    assert_eq!(now.kvs()[0].value(), b"v2");
    assert_eq!(now.kvs()[0].version(), 2);
    let past = client
        .get("k", Some(GetOptions::new().with_revision(put_revision)))
        .await
        .unwrap();
    assert_eq!(past.kvs()[0].value(), b"v1", "a read of the past");
    for i in 0..5 {
        client.put(format!("p/{i}"), "x", None).await.unwrap();
    }
    let prefix = client
        .get("p/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await
        .unwrap();
    assert_eq!(
        (prefix.kvs().len(), prefix.count(), prefix.more()),
        (2, 5, true)
    );
    let txn = Txn::new()
        .when([
            Compare::value("k", CompareOp::Equal, "v2"),
            Compare::version("k", CompareOp::Greater, 1),
        ])
        .and_then([TxnOp::put("k", "v3", None)])
        .or_else([TxnOp::get("k", None)]);
    assert!(client.txn(txn).await.unwrap().succeeded());
    let stale = Txn::new()
        .when([Compare::value("k", CompareOp::Equal, "v2")])
        .and_then([TxnOp::put("k", "never", None)]);
    assert!(!client.txn(stale).await.unwrap().succeeded());
    let deleted = client
        .delete("p/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(deleted.deleted(), 5);
    let revision = client
        .get("k", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.compact(revision, None).await.unwrap();
    let compacted = client
        .get("k", Some(GetOptions::new().with_revision(put_revision)))
        .await
        .unwrap_err();
    assert!(
        compacted
            .to_string()
            .contains("required revision has been compacted"),
        "{compacted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_past_revision_sees_every_event_in_order() {
    let cluster = Cluster::start(3);
    let mut client = connect(&cluster).await;
    let start = client
        .put("w/0", "a", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.put("w/1", "b", None).await.unwrap();
    client.delete("w/0", None).await.unwrap();
    let (mut watcher, mut stream) = client
        .watch(
            "w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(start)
                    .with_prev_key(),
            ),
        )
        .await
        .unwrap();
    client.put("w/2", "c", None).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 4 {
        let response = tokio::time::timeout(common::DEADLINE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for event in response.events() {
            let kv = event.kv().unwrap();
            events.push((
                event.event_type(),
                kv.key_str().unwrap().to_string(),
                kv.mod_revision(),
            ));
            if event.event_type() == EventType::Delete {
                assert_eq!(
                    event.prev_kv().unwrap().value(),
                    b"a",
                    "prev_kv of the delete"
                );
            }
        }
    }
    let kinds: Vec<(EventType, &str)> = events.iter().map(|(t, k, _)| (*t, k.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (EventType::Put, "w/0"),
            (EventType::Put, "w/1"),
            (EventType::Delete, "w/0"),
            (EventType::Put, "w/2")
        ]
    );
    assert!(
        events.windows(2).all(|w| w[0].2 < w[1].2),
        "revisions increase: {events:?}"
    );
    watcher.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_keep_keys_alive_and_their_expiry_deletes_them() {
    let cluster = Cluster::start(3);
    let mut client = connect(&cluster).await;
    let lease = client.lease_grant(60, None).await.unwrap().id();
    client
        .put("held", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let renewed = tokio::time::timeout(common::DEADLINE, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((renewed.id(), renewed.ttl()), (lease, 60));
    let ttl = client
        .lease_time_to_live(
            lease,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert_eq!(ttl.keys(), [b"held".to_vec()]);
    assert!(client
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .any(|l| l.id() == lease));
    client.lease_revoke(lease).await.unwrap();
    assert!(
        client.get("held", None).await.unwrap().kvs().is_empty(),
        "revoke deletes the key"
    );

    let short = client.lease_grant(2, None).await.unwrap().id();
    client
        .put("ephemeral", "x", Some(PutOptions::new().with_lease(short)))
        .await
        .unwrap();
    eventually("the lease to expire and delete its key", async || {
        client
            .get("ephemeral", None)
            .await
            .is_ok_and(|r| r.kvs().is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_maintenance_calls_report_the_cluster() {
    let cluster = Cluster::start(3);
    let mut client = connect(&cluster).await;
    client.put("k", "v", None).await.unwrap();
    eventually("every member to publish its client URL", async || {
        client
            .member_list()
            .await
            .is_ok_and(|l| l.members().iter().all(|m| m.client_urls().len() == 1))
    })
    .await;
    let members = client.member_list().await.unwrap();
    let mut names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["n1", "n2", "n3"], "members published their names");
    let status = client.status().await.unwrap();
    assert_ne!(status.leader(), 0);
    assert!(status.raft_index() > 0);
    let revision = client
        .get("k", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut hashes = Vec::new();
    for member in &cluster.members {
        let mut one = Client::connect([member.client_url()], None).await.unwrap();
        hashes.push(one.hash_kv(revision).await.unwrap().hash());
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "members agree at {revision}: {hashes:?}"
    );
    assert!(client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None
        )
        .await
        .unwrap()
        .alarms()
        .is_empty());
    client.defragment().await.unwrap();
    let mut snapshot = client.snapshot().await.unwrap();
    let mut received = 0;
    while let Some(chunk) = snapshot.message().await.unwrap() {
        received += chunk.blob().len();
    }
    assert!(received > 0, "a snapshot arrived");
    let leader = status.leader();
    let target = members
        .members()
        .iter()
        .map(|m| m.id())
        .find(|&id| id != leader)
        .unwrap();
    let leader_url = members
        .members()
        .iter()
        .find(|m| m.id() == leader)
        .unwrap()
        .client_urls()[0]
        .clone();
    let mut at_leader = Client::connect([leader_url], None).await.unwrap();
    at_leader.move_leader(target).await.unwrap();
    eventually("leadership to move", async || {
        client.status().await.is_ok_and(|s| s.leader() == target)
    })
    .await;
}

/// How many keys there are under `prefix`.
async fn count_under(client: &mut Client, prefix: &str) -> i64 {
    let options = GetOptions::new().with_prefix().with_count_only();
    client.get(prefix, Some(options)).await.unwrap().count()
}

/// The Lock service as etcd's: a lock without a lease gets one of 60 s from the server; a
/// second locker queues (its key appears) and gets the lock only after the first unlocks —
/// its answer's revision is past the unlock, which a locker that did not wait could not
/// show; a waiter whose client goes away leaves no key; a waiter whose lease ends while it
/// waits is told its session expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_holders_queue_and_unlock_hands_the_lock_over() {
    let cluster = Cluster::start(3);
    let mut client = connect(&cluster).await;
    let held = client.lock("l", None).await.unwrap();
    let held_key = String::from_utf8(held.key().to_vec()).unwrap();
    assert!(held_key.starts_with("l/"), "{held_key}");
    let lease = client.get(held_key.as_str(), None).await.unwrap().kvs()[0].lease();
    let granted = client.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(granted.granted_ttl(), 60, "the session lease etcd grants");

    let second_lease = client.lease_grant(60, None).await.unwrap().id();
    let mut second = connect(&cluster).await;
    let waiter = tokio::spawn(async move {
        let options = LockOptions::new().with_lease(second_lease);
        second.lock("l", Some(options)).await
    });
    eventually("the second locker to queue", async || {
        count_under(&mut client, "l/").await == 2
    })
    .await;
    let unlocked = client.unlock(held_key.as_str()).await.unwrap();
    let unlock_revision = unlocked.header().unwrap().revision();
    let taken = waiter.await.unwrap().unwrap();
    assert_eq!(taken.key(), format!("l/{second_lease:x}").as_bytes());
    assert!(
        taken.header().unwrap().revision() >= unlock_revision,
        "the lock was taken at {} before it was released at {unlock_revision}",
        taken.header().unwrap().revision()
    );

    // A waiter that goes away: its key is removed.
    let mut third = connect(&cluster).await;
    let gone = tokio::spawn(async move { third.lock("l", None).await });
    eventually("the third locker to queue", async || {
        count_under(&mut client, "l/").await == 2
    })
    .await;
    gone.abort();
    eventually("the key of a waiter that went away to go", async || {
        count_under(&mut client, "l/").await == 1
    })
    .await;

    // A waiter whose lease ends while it waits.
    let doomed_lease = client.lease_grant(60, None).await.unwrap().id();
    let mut fourth = connect(&cluster).await;
    let doomed = tokio::spawn(async move {
        let options = LockOptions::new().with_lease(doomed_lease);
        fourth.lock("l", Some(options)).await
    });
    eventually("the fourth locker to queue", async || {
        count_under(&mut client, "l/").await == 2
    })
    .await;
    client.lease_revoke(doomed_lease).await.unwrap();
    client.unlock(taken.key()).await.unwrap();
    let expired = doomed.await.unwrap().unwrap_err();
    assert!(
        expired.to_string().contains("mutex: session is expired"),
        "{expired}"
    );
    assert_eq!(count_under(&mut client, "l/").await, 0);
}

/// The Election service as etcd's: the first campaigner leads; `Observe` streams its value
/// and each value it proclaims; a second campaigner waits until the first resigns, then
/// leads and is observed; a stale leader key cannot proclaim; an election nobody leads has
/// no leader — each error in etcd's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_leaders_take_turns_and_observers_see_each_value() {
    let cluster = Cluster::start(3);
    let mut client = connect(&cluster).await;
    let no_leader = client.leader("e").await.unwrap_err();
    assert!(
        no_leader.to_string().contains("election: no leader"),
        "{no_leader}"
    );

    let first_lease = client.lease_grant(60, None).await.unwrap().id();
    let campaign = client.campaign("e", "a", first_lease).await.unwrap();
    let first = campaign.leader().unwrap().clone();
    assert_eq!((first.name(), first.lease()), (&b"e"[..], first_lease));
    assert_eq!(first.key(), format!("e/{first_lease:x}").as_bytes());
    let mut observed = client.observe("e").await.unwrap();
    let mut next_value = async || {
        let answer = observed.message().await.unwrap().unwrap();
        answer.kv().unwrap().value().to_vec()
    };
    assert_eq!(next_value().await, b"a");
    let proclaim = ProclaimOptions::new().with_leader(first.clone());
    client.proclaim("a2", Some(proclaim)).await.unwrap();
    assert_eq!(next_value().await, b"a2");

    let second_lease = client.lease_grant(60, None).await.unwrap().id();
    let mut second = connect(&cluster).await;
    let waiter = tokio::spawn(async move { second.campaign("e", "b", second_lease).await });
    eventually("the second campaigner to queue", async || {
        count_under(&mut client, "e/").await == 2
    })
    .await;
    let leader = client.leader("e").await.unwrap();
    assert_eq!(leader.kv().unwrap().value(), b"a2", "the first still leads");
    assert!(!waiter.is_finished(), "two leaders at once");

    let stale = LeaderKey::new()
        .with_name("e")
        .with_key(first.key())
        .with_rev(first.rev() - 1)
        .with_lease(first_lease);
    let refused = client
        .proclaim("x", Some(ProclaimOptions::new().with_leader(stale)))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("election: not leader"),
        "{refused}"
    );

    let resign = ResignOptions::new().with_leader(first);
    client.resign(Some(resign)).await.unwrap();
    let won = waiter.await.unwrap().unwrap();
    assert_eq!(won.leader().unwrap().lease(), second_lease);
    assert_eq!(next_value().await, b"b");
    let leader = client.leader("e").await.unwrap();
    assert_eq!(leader.kv().unwrap().value(), b"b");
}

/// `etcdctl lock` runs etcd's lock recipe in the client, on the same keys: it queues behind a
/// holder of the Lock service and runs its command once that holder unlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_queues_behind_a_holder_of_the_lock_service() {
    let cluster = Cluster::start(3);
    let mut client = connect(&cluster).await;
    let held = client.lock("shared", None).await.unwrap();
    let mut etcdctl = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.endpoints()))
        .args(["lock", "shared", "echo", "got-it"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl is installed (apt-get install etcd-client)");
    eventually("etcdctl to queue for the lock", async || {
        count_under(&mut client, "shared/").await == 2
    })
    .await;
    assert!(
        etcdctl.try_wait().unwrap().is_none(),
        "etcdctl took a held lock"
    );
    client.unlock(held.key()).await.unwrap();
    eventually("etcdctl to run its command and exit", async || {
        etcdctl.try_wait().unwrap().is_some()
    })
    .await;
    let output = etcdctl.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("got-it"));
    assert_eq!(
        count_under(&mut client, "shared/").await,
        0,
        "etcdctl unlocked"
    );
}
