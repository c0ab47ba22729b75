//! Membership changes under a partition, on the real server code: a learner is added and
//! started, promoted while a voter is cut off, the cut-off voter is removed, and the
//! partition heals, all while clients write. Afterwards the remaining members agree on the
//! member list and on their data (`HashKV` at one revision), and every acknowledged write is
//! there (once more with auth turned on in the middle, etcd#14571). A failure prints
//! madsim's seed; `MADSIM_TEST_SEED=<seed>` on the test command
//! replays it, `MADSIM_TEST_NUM=<n>` runs more seeds.
#![cfg(madsim)]
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::auth_client::AuthClient;
use keel_net::proto::etcdserverpb::cluster_client::ClusterClient;
use keel_net::proto::etcdserverpb::kv_client::KvClient;
use keel_net::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_sim::nemesis::find_leader;
use keel_sim::world::{server_ip, World, WorldConfig, PEER_PORT};
use madsim::rand::Rng;
use tonic::transport::Channel;
use tonic::Status;

/// Requests wait this long before the test tries again (elections, restarts).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A step of the test that never gets an answer fails the test after this many tries.
const MAX_TRIES: usize = 200;

async fn channel(url: &str) -> Result<Channel, Status> {
    tonic::transport::Endpoint::new(url.to_string())
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))
}

/// Runs `op` against the members in turn until one answers with success.
async fn until_ok<T, F, Fut>(what: &str, urls: &[String], mut op: F) -> T
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut last = String::new();
    for attempt in 0..MAX_TRIES {
        let url = &urls[attempt % urls.len()];
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT, async { op(channel(url).await?).await }).await;
        match answer {
            Ok(Ok(value)) => return value,
            Ok(Err(status)) => last = format!("{url}: {status:?}"),
            Err(_) => last = format!("{url}: timed out"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never succeeded; last answer {last}");
}

/// As etcd's, a learner answers status and serializable ranges and refuses the rest with
/// "rpc not supported for learner" (on which etcd's clients try another member).
async fn a_learner_serves_only_status_and_serializable_reads(url: String) {
    let urls = [url];
    until_ok("the learner knows it is one", &urls, |channel| async move {
        let status = MaintenanceClient::new(channel)
            .status(pb::StatusRequest {})
            .await?
            .into_inner();
        if status.is_learner {
            Ok(())
        } else {
            Err(Status::unavailable("has not applied its own addition yet"))
        }
    })
    .await;
    let channel = channel(&urls[0]).await.unwrap();
    let mut kv = KvClient::new(channel.clone());
    let range = |serializable| pb::RangeRequest {
        key: Bytes::from_static(b"m/"),
        range_end: Bytes::from_static(b"m0"),
        serializable,
        ..Default::default()
    };
    kv.range(range(true)).await.expect("a serializable range");
    let refused = [
        kv.range(range(false)).await.map(drop),
        kv.put(pb::PutRequest {
            key: Bytes::from_static(b"learner"),
            ..Default::default()
        })
        .await
        .map(drop),
        ClusterClient::new(channel)
            .member_list(pb::MemberListRequest::default())
            .await
            .map(drop),
    ];
    for answer in refused {
        let status = answer.expect_err("refused on a learner");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "etcdserver: rpc not supported for learner"
        );
    }
}

fn peer_url(index: usize) -> String {
    format!("http://{}:{PEER_PORT}", server_ip(index))
}

/// Keeps putting `m/<writer>/<n>` through random members of `urls` until `stop`; returns the
/// keys whose put was acknowledged.
async fn writer(id: usize, urls: Arc<Mutex<Vec<String>>>, stop: Arc<Mutex<bool>>) -> Vec<String> {
    let mut acknowledged = Vec::new();
    for n in 0.. {
        if *stop.lock().unwrap() {
            break;
        }
        let url = {
            let urls = urls.lock().unwrap();
            urls[madsim::rand::thread_rng().gen_range(0..urls.len())].clone()
        };
        let key = format!("m/{id}/{n:05}");
        let put = async {
            let mut kv = KvClient::new(channel(&url).await?);
            kv.put(pb::PutRequest {
                key: Bytes::from(key.clone()),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })
            .await
        };
        if let Ok(Ok(_)) = tokio::time::timeout(REQUEST_TIMEOUT, put).await {
            acknowledged.push(key);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    acknowledged
}

/// Cuts server `index` off from every other server (clients still reach it).
fn isolate(world: &World, index: usize) {
    let net = madsim::net::NetSim::current();
    for (other, server) in world.servers.iter().enumerate() {
        if other != index {
            net.clog_link(world.servers[index].node.id(), server.node.id());
            net.clog_link(server.node.id(), world.servers[index].node.id());
        }
    }
}

#[madsim::test]
async fn add_promote_and_remove_members_under_a_partition() {
    membership_changes_under_a_partition(false).await;
}

/// etcd#14571: enabling auth while members changed made members' data diverge. Auth is
/// turned on after the learner is added and a voter cut off (the promotion and the removal then need root's
/// token, and the writers, which carry none, are refused), and off again at the end; the
/// members must still agree (`HashKV`) and hold every acknowledged write.
#[madsim::test]
async fn enabling_auth_during_membership_changes_keeps_members_identical() {
    membership_changes_under_a_partition(true).await;
}

/// `message` with root's token when there is one.
fn authorized<T>(message: T, token: &Option<String>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token.as_ref().and_then(|t| t.parse().ok()) {
        request.metadata_mut().insert("token", token);
    }
    request
}

/// Adds root, turns auth on and returns root's token.
async fn enable_auth(urls: &[String]) -> String {
    until_ok("add root", urls, |channel| async move {
        let request = pb::AuthUserAddRequest {
            name: "root".into(),
            password: "rootpw".into(),
            ..Default::default()
        };
        match AuthClient::new(channel).user_add(request).await {
            // An earlier try that timed out may have added it.
            Err(status) if !status.message().contains("already exists") => Err(status),
            _ => Ok(()),
        }
    })
    .await;
    until_ok("grant root", urls, |channel| async move {
        let request = pb::AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        };
        AuthClient::new(channel).user_grant_role(request).await
    })
    .await;
    until_ok("enable auth", urls, |channel| async move {
        AuthClient::new(channel)
            .auth_enable(pb::AuthEnableRequest {})
            .await
    })
    .await;
    until_ok("log in as root", urls, |channel| async move {
        let request = pb::AuthenticateRequest {
            name: "root".into(),
            password: "rootpw".into(),
        };
        let answer = AuthClient::new(channel).authenticate(request).await?;
        Ok(answer.into_inner().token)
    })
    .await
}

async fn membership_changes_under_a_partition(with_auth: bool) {
    let seed = madsim::runtime::Handle::current().seed();
    let mut world = World::start(WorldConfig::new(3, seed));
    let client = world.client_node("client");
    let urls: Vec<String> = world.servers.iter().map(|s| s.client_url()).collect();
    let live_urls = Arc::new(Mutex::new(urls.clone()));
    let stop = Arc::new(Mutex::new(false));
    let writers: Vec<_> = (0..3)
        .map(|id| client.spawn(writer(id, live_urls.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Add s4 as a learner, then start it.
    let add_urls = urls.clone();
    let learner_id = client
        .spawn(async move {
            until_ok("add the learner", &add_urls, |channel| async move {
                let request = pb::MemberAddRequest {
                    peer_ur_ls: vec![peer_url(3)],
                    is_learner: true,
                };
                let added = ClusterClient::new(channel).member_add(request).await?;
                Ok(added.into_inner().member.map_or(0, |m| m.id))
            })
            .await
        })
        .await
        .unwrap();
    assert_ne!(learner_id, 0, "MemberAdd answers with the new member");
    let learner = world.add_server(&[0, 1, 2, 3]);
    let learner_url = world.servers[learner].client_url();
    client
        .spawn(a_learner_serves_only_status_and_serializable_reads(
            learner_url,
        ))
        .await
        .unwrap();

    // A voter that is not the leader is cut off; the learner is promoted meanwhile (3 of
    // 4 voters remain connected, a quorum).
    let mut leader = None;
    for _ in 0..MAX_TRIES {
        leader = find_leader(&world).await;
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = leader.expect("the cluster elects a leader");
    let cut_off = (0..3).find(|&i| i != leader).unwrap();
    isolate(&world, cut_off);
    let connected: Vec<String> = (0..3)
        .filter(|&i| i != cut_off)
        .map(|i| urls[i].clone())
        .collect();
    *live_urls.lock().unwrap() = connected.clone();
    // With auth: on from here (after the leader was found: Status needs a token then).
    let auth_urls = connected.clone();
    let token = if with_auth {
        let enabled = client.spawn(async move { enable_auth(&auth_urls).await });
        Some(enabled.await.unwrap())
    } else {
        None
    };
    let promote_urls = connected.clone();
    let promote_token = token.clone();
    client
        .spawn(async move {
            // Refused ("can only promote a learner member which is in sync with leader")
            // until the learner has caught up.
            until_ok("promote the learner", &promote_urls, |channel| {
                let request =
                    authorized(pb::MemberPromoteRequest { id: learner_id }, &promote_token);
                async move { ClusterClient::new(channel).member_promote(request).await }
            })
            .await
        })
        .await
        .unwrap();

    // Still cut off, the voter is removed.
    let cut_off_id = member_id(&client, &connected, cut_off, &token).await;
    let remove_urls = connected.clone();
    let remove_token = token.clone();
    client
        .spawn(async move {
            until_ok("remove the cut-off member", &remove_urls, |channel| {
                let request = authorized(pb::MemberRemoveRequest { id: cut_off_id }, &remove_token);
                async move { ClusterClient::new(channel).member_remove(request).await }
            })
            .await
        })
        .await
        .unwrap();
    if token.is_some() {
        let disable_urls = connected.clone();
        client
            .spawn(async move {
                until_ok("disable auth", &disable_urls, |channel| {
                    let request = authorized(pb::AuthDisableRequest {}, &token);
                    async move { AuthClient::new(channel).auth_disable(request).await }
                })
                .await
            })
            .await
            .unwrap();
    }
    let mut remaining = connected.clone();
    remaining.push(world.servers[learner].client_url());
    *live_urls.lock().unwrap() = remaining.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    world.heal();
    tokio::time::sleep(Duration::from_secs(2)).await;
    *stop.lock().unwrap() = true;
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(!acknowledged.is_empty(), "the writers got writes through");

    let check_urls = remaining.clone();
    client
        .spawn(async move { check_members_agree(&check_urls, cut_off_id, &acknowledged).await })
        .await
        .unwrap();
}

/// The id of server `index`, from a member list.
async fn member_id(
    client: &madsim::runtime::NodeHandle,
    urls: &[String],
    index: usize,
    token: &Option<String>,
) -> u64 {
    let peer = peer_url(index);
    let urls = urls.to_vec();
    let token = token.clone();
    client
        .spawn(async move {
            let list = until_ok("list members", &urls, |channel| {
                let request = authorized(pb::MemberListRequest { linearizable: true }, &token);
                async move { ClusterClient::new(channel).member_list(request).await }
            })
            .await
            .into_inner();
            list.members
                .iter()
                .find(|m| m.peer_ur_ls.contains(&peer))
                .map(|m| m.id)
                .unwrap()
        })
        .await
        .unwrap()
}

/// Every member in `urls` lists the same members (without `removed`), holds every
/// acknowledged key, and has the same `HashKV` at a common revision.
async fn check_members_agree(urls: &[String], removed: u64, acknowledged: &[String]) {
    let mut lists = Vec::new();
    let mut revisions = Vec::new();
    for url in urls {
        let one = std::slice::from_ref(url);
        let list = until_ok("list members", one, |channel| async move {
            let request = pb::MemberListRequest { linearizable: true };
            ClusterClient::new(channel).member_list(request).await
        })
        .await
        .into_inner();
        let mut ids: Vec<(u64, bool)> = list.members.iter().map(|m| (m.id, m.is_learner)).collect();
        ids.sort_unstable();
        assert!(
            !ids.iter().any(|&(id, _)| id == removed),
            "{url} still lists the removed member"
        );
        assert_eq!(ids.len(), 3, "{url} lists {ids:?}");
        assert!(
            ids.iter().all(|&(_, learner)| !learner),
            "{url}: the learner was promoted"
        );
        lists.push(ids);

        let range = until_ok("read every key", one, |channel| async move {
            let request = pb::RangeRequest {
                key: Bytes::from_static(b"m/"),
                range_end: Bytes::from_static(b"m0"),
                keys_only: true,
                ..Default::default()
            };
            KvClient::new(channel).range(request).await
        })
        .await
        .into_inner();
        let keys: std::collections::BTreeSet<String> = range
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        for key in acknowledged {
            assert!(
                keys.contains(key),
                "{url} lost the acknowledged write {key}"
            );
        }
        revisions.push(range.header.map_or(0, |h| h.revision));
    }
    assert!(
        lists.windows(2).all(|w| w[0] == w[1]),
        "member lists differ: {lists:?}"
    );

    let common = revisions.iter().copied().min().unwrap();
    let mut hashes = Vec::new();
    for url in urls {
        let one = std::slice::from_ref(url);
        let hash = until_ok("hash the store", one, |channel| async move {
            let request = pb::HashKvRequest { revision: common };
            MaintenanceClient::new(channel).hash_kv(request).await
        })
        .await
        .into_inner();
        hashes.push(hash.hash);
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at revision {common} differs between members: {hashes:?}"
    );
}
