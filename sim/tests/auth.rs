//! Auth under the simulator: users, roles and permissions are replicated, kept in snapshots
//! and the WAL, and enforced the same on every member after crashes and restarts.
#![cfg(madsim)]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use keel_net::proto::authpb;
use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::auth_client::AuthClient;
use keel_net::proto::etcdserverpb::kv_client::KvClient;
use keel_sim::world::{World, WorldConfig};
use tonic::{Code, Request, Status};

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("token", token.parse().unwrap());
    }
    request
}

async fn auth(url: &str) -> Result<AuthClient<tonic::transport::Channel>, Status> {
    AuthClient::connect(url.to_string())
        .await
        .map_err(|e| Status::unavailable(e.to_string()))
}

async fn kv(url: &str) -> Result<KvClient<tonic::transport::Channel>, Status> {
    KvClient::connect(url.to_string())
        .await
        .map_err(|e| Status::unavailable(e.to_string()))
}

async fn login(url: &str, name: &str, password: &str) -> Result<String, Status> {
    let request = pb::AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    };
    let answer = auth(url).await?.authenticate(request).await?;
    Ok(answer.into_inner().token)
}

async fn put(url: &str, token: Option<&str>, key: &str, value: &str) -> Result<(), Status> {
    let request = pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    };
    kv(url).await?.put(with_token(request, token)).await?;
    Ok(())
}

async fn get(url: &str, token: Option<&str>, key: &str) -> Result<Option<Vec<u8>>, Status> {
    let request = pb::RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    };
    let answer = kv(url).await?.range(with_token(request, token)).await?;
    Ok(answer.into_inner().kvs.first().map(|kv| kv.value.to_vec()))
}

/// Whether `status` is a verdict of the server (rather than no leader, or no connection).
fn is_answer(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
    )
}

/// Retries `op` through elections and restarts until the server gives an answer.
async fn answer<T, F, Fut>(what: &str, mut op: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    for _ in 0..300 {
        match tokio::time::timeout(Duration::from_secs(3), op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(status)) if is_answer(&status) => return Err(status),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{what} never got an answer");
}

/// A setup step: done, or done already by an earlier try whose answer was lost.
async fn setup<F, Fut, T>(what: &str, op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    match answer(what, op).await {
        Ok(_) => {}
        Err(status) if status.message().contains("already exists") => {}
        Err(status) => panic!("{what}: {status:?}"),
    }
}

/// root; alice reads `app/`; auth on.
async fn set_up_users(url: &str) {
    let user = |name: &'static str, password: &'static str| pb::AuthUserAddRequest {
        name: name.into(),
        password: password.into(),
        ..Default::default()
    };
    setup("add root", || async {
        auth(url).await?.user_add(user("root", "rootpw")).await
    })
    .await;
    setup("add alice", || async {
        auth(url).await?.user_add(user("alice", "alicepw")).await
    })
    .await;
    let role = || pb::AuthRoleAddRequest {
        name: "reader".into(),
    };
    setup("add role", || async {
        auth(url).await?.role_add(role()).await
    })
    .await;
    let permission = || pb::AuthRoleGrantPermissionRequest {
        name: "reader".into(),
        perm: Some(authpb::Permission {
            perm_type: authpb::permission::Type::Read as i32,
            key: b"app/".to_vec().into(),
            range_end: b"app0".to_vec().into(),
        }),
    };
    setup("grant permission", || async {
        auth(url).await?.role_grant_permission(permission()).await
    })
    .await;
    for (name, role) in [("root", "root"), ("alice", "reader")] {
        let grant = || pb::AuthUserGrantRoleRequest {
            user: name.into(),
            role: role.into(),
        };
        setup("grant role", || async {
            auth(url).await?.user_grant_role(grant()).await
        })
        .await;
    }
    setup("enable", || async {
        auth(url).await?.auth_enable(pb::AuthEnableRequest {}).await
    })
    .await;
}

/// alice may read `app/` and nothing else, and write nothing, through `url`.
async fn check_alice(url: &str) {
    let token = answer("alice logs in", || login(url, "alice", "alicepw"))
        .await
        .unwrap();
    let token = Some(token.as_str());
    let value = answer("alice reads app/", || get(url, token, "app/config")).await;
    assert_eq!(value.unwrap().as_deref(), Some(&b"v1"[..]), "through {url}");
    let denied = answer("alice writes", || put(url, token, "app/config", "x")).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    let denied = answer("alice reads k0", || get(url, token, "k0")).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    let anonymous = answer("anonymous read", || get(url, None, "app/config")).await;
    assert_eq!(
        anonymous.unwrap_err().message(),
        "etcdserver: user name is empty"
    );
}

#[madsim::test]
async fn auth_state_survives_snapshots_crashes_and_restarts() {
    let mut config = WorldConfig::new(3, 7);
    config.snapshot_count = 20;
    let mut world = World::start(config);
    let urls: Vec<String> = world.servers.iter().map(|s| s.client_url()).collect();
    let client = world.client_node("client");
    let first = urls[0].clone();
    client
        .spawn(async move {
            set_up_users(&first).await;
            let root = answer("root logs in", || login(&first, "root", "rootpw"))
                .await
                .unwrap();
            let root = Some(root.as_str());
            answer("put app/config", || put(&first, root, "app/config", "v1"))
                .await
                .unwrap();
            // Enough writes for every member to take snapshots holding the auth store.
            for i in 0..50 {
                let key = format!("k{i}");
                answer("put", || put(&first, root, &key, "v"))
                    .await
                    .unwrap();
            }
        })
        .await
        .unwrap();

    // A crash of one member, then of all of them.
    world.crash(1);
    world.restart(1);
    for index in 0..3 {
        world.crash(index);
    }
    world.heal();
    let all = urls.clone();
    client
        .spawn(async move {
            for url in &all {
                check_alice(url).await;
            }
            let root = answer("root logs in", || login(&all[0], "root", "rootpw"))
                .await
                .unwrap();
            let list = answer("user list", || async {
                let request = with_token(pb::AuthUserListRequest {}, Some(&root));
                Ok(auth(&all[2]).await?.user_list(request).await?.into_inner())
            })
            .await
            .unwrap();
            assert_eq!(list.users, ["alice", "root"]);
        })
        .await
        .unwrap();
}

/// A token handed out by one member, used on another that has not applied the login yet:
/// the request is refused there once (the token is unknown), waits until that member has
/// applied everything committed, and then succeeds — etcd waits for a token's index the same
/// way. Member `behind` hears nothing from its peers while alice logs in through the leader;
/// the retry's wait ends once it hears them again.
#[madsim::test]
async fn a_token_from_another_member_works_once_this_one_has_applied_the_login() {
    let mut world = World::start(WorldConfig::new(3, 11));
    let urls: Vec<String> = world.servers.iter().map(|s| s.client_url()).collect();
    let client = world.client_node("client");
    // Asked before auth is on (a status request then needs a token).
    let mut leader = None;
    for _ in 0..100 {
        leader = keel_sim::nemesis::find_leader(&world).await;
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = leader.expect("the cluster elects a leader");
    let first = urls[leader].clone();
    client
        .spawn(async move { set_up_users(&first).await })
        .await
        .unwrap();
    let behind = (leader + 1) % urls.len();
    let net = madsim::net::NetSim::current();
    let ids: Vec<_> = world.servers.iter().map(|s| s.node.id()).collect();
    for (peer, &id) in ids.iter().enumerate() {
        if peer != behind {
            net.clog_link(ids[behind], id);
            net.clog_link(id, ids[behind]);
        }
    }
    let via = urls[leader].clone();
    let token = client
        .spawn(async move {
            answer("alice logs in", || login(&via, "alice", "alicepw"))
                .await
                .unwrap()
        })
        .await
        .unwrap();
    let at = urls[behind].clone();
    // Serializable: answered from this member's state at once, where a linearizable read
    // would wait for the leader's commit index first (and find the login applied by then).
    let read = client.spawn(async move {
        let request = pb::RangeRequest {
            key: b"app/config".to_vec().into(),
            serializable: true,
            ..Default::default()
        };
        kv(&at)
            .await?
            .range(with_token(request, Some(&token)))
            .await
    });
    // Well within an election timeout (500 ms): the first try has been refused by now, and
    // the retry waits for the leader.
    tokio::time::sleep(Duration::from_millis(50)).await;
    world.heal();
    let read = read.await.unwrap();
    assert!(
        read.is_ok(),
        "alice's token from the leader, used on member {behind} once it caught up: {read:?}"
    );
}
