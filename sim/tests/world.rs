//! The real server stack under the simulator: three keel servers on madsim nodes serve a
//! client's writes and linearizable reads, and survive a crash of one.
#![cfg(madsim)]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use keel_net::proto::etcdserverpb::kv_client::KvClient;
use keel_net::proto::etcdserverpb::{PutRequest, RangeRequest};
use keel_sim::world::{World, WorldConfig};

async fn put(url: &str, key: &str, value: &str) -> Result<(), tonic::Status> {
    let mut client = KvClient::connect(url.to_string())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    client
        .put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

async fn get(url: &str, key: &str) -> Result<Option<Vec<u8>>, tonic::Status> {
    let mut client = KvClient::connect(url.to_string())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let response = client
        .range(RangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(response.kvs.first().map(|kv| kv.value.to_vec()))
}

/// Retries `op` until it succeeds (servers elect a leader after start and after crashes).
async fn eventually<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_secs(2), op()).await {
            Ok(Ok(value)) => return value,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{what} never succeeded");
}

#[madsim::test]
async fn three_servers_serve_a_client_and_survive_a_crash() {
    let mut world = World::start(WorldConfig::new(3, 1));
    let urls: Vec<String> = world.servers.iter().map(|s| s.client_url()).collect();
    let client = world.client_node("client");
    let first = urls[0].clone();
    let all = urls.clone();
    client
        .spawn(async move {
            eventually("first put", || put(&first, "k", "v1")).await;
            for url in &all {
                let value = eventually("read", || get(url, "k")).await;
                assert_eq!(
                    value.as_deref(),
                    Some(&b"v1"[..]),
                    "linearizable read at {url}"
                );
            }
        })
        .await
        .unwrap();
    world.crash(0);
    let second = urls[1].clone();
    let third = urls[2].clone();
    client
        .spawn(async move {
            eventually("put after crash", || put(&second, "k", "v2")).await;
            let value = eventually("read after crash", || get(&third, "k")).await;
            assert_eq!(value.as_deref(), Some(&b"v2"[..]));
        })
        .await
        .unwrap();
    world.restart(0);
    let first = urls[0].clone();
    client
        .spawn(async move {
            let value = eventually("read on the restarted server", || get(&first, "k")).await;
            assert_eq!(value.as_deref(), Some(&b"v2"[..]));
        })
        .await
        .unwrap();
}
