//! Proves the `--cfg madsim` build mode: two simulated nodes exchange a datagram over madsim's
//! network, and the same seed gives the same simulated arrival time twice.
#![cfg(madsim)]

use std::net::SocketAddr;
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::runtime::{Handle, Runtime};

const SERVER_ADDR: &str = "10.0.0.1:7000";
const CLIENT_ADDR: &str = "10.0.0.2:0";
const TAG: u64 = 7;

/// Runs one exchange under `seed` and returns the simulated time the reply arrived.
fn ping_pong(seed: u64) -> Duration {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async {
        let handle = Handle::current();
        let server_addr: SocketAddr = SERVER_ADDR.parse().expect("constant address");
        let server = handle
            .create_node()
            .name("server")
            .ip(server_addr.ip())
            .build();
        let client = handle
            .create_node()
            .name("client")
            .ip("10.0.0.2".parse().expect("constant address"))
            .build();

        server.spawn(async move {
            let endpoint = Endpoint::bind(server_addr).await.expect("bind server");
            let (request, from) = recv(&endpoint).await;
            let mut reply = request;
            reply.extend_from_slice(b" pong");
            endpoint
                .send_to(from, TAG, &reply)
                .await
                .expect("send reply");
        });

        let exchange = client.spawn(async move {
            let start = madsim::time::Instant::now();
            let endpoint = Endpoint::bind(CLIENT_ADDR).await.expect("bind client");
            // The server task may not have bound yet; resend until it answers.
            loop {
                endpoint
                    .send_to(server_addr, TAG, b"ping")
                    .await
                    .expect("send ping");
                let answer =
                    madsim::time::timeout(Duration::from_millis(100), recv(&endpoint)).await;
                if let Ok((reply, from)) = answer {
                    assert_eq!(from, server_addr);
                    assert_eq!(reply, b"ping pong");
                    return start.elapsed();
                }
            }
        });
        exchange.await.expect("client task")
    })
}

async fn recv(endpoint: &Endpoint) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 64];
    let (len, from) = endpoint.recv_from(TAG, &mut buf).await.expect("recv");
    buf.truncate(len);
    (buf, from)
}

#[test]
fn two_nodes_exchange_a_message() {
    let elapsed = ping_pong(1);
    assert!(elapsed > Duration::ZERO, "the network adds latency");
}

#[test]
fn same_seed_same_schedule() {
    for seed in [1, 2, 3] {
        assert_eq!(
            ping_pong(seed),
            ping_pong(seed),
            "seed {seed} is not deterministic"
        );
    }
}
