//! A client that holds a lease the way a lock holder does: grant, attach a key, keep it
//! alive once a second through whatever member answers. If the key vanishes while
//! keep-alives were being acknowledged within the TTL, the lease expired prematurely (the
//! failure etcd issue 15247 describes: a stuck leader revoking every lease).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::lease_client::LeaseClient;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

use crate::client::{Endpoint, Recorder, SimClient};
use crate::history::{Outcome, Put, Range, Request, Response};
use crate::world::CLIENT_TIMEOUT;

pub const HELD_KEY: &str = "kheld";
pub const TTL_S: i64 = 10;

/// Holds a lease until `stop`; the verdict is written to `verdict`.
pub async fn hold(
    id: u64,
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    verdict: Arc<Mutex<Option<Result<(), String>>>>,
) {
    let set = |v: Result<(), String>| {
        if let Ok(mut slot) = verdict.lock() {
            *slot = Some(v);
        }
    };
    let mut client = SimClient::new(id, endpoints.clone(), recorder.clone(), CLIENT_TIMEOUT);
    let Some(lease) = grant(&mut client).await else {
        return set(Err("could not grant the held lease".into()));
    };
    let put = Request::Put(Put {
        key: Bytes::from_static(HELD_KEY.as_bytes()),
        value: Bytes::from(format!("held-{id}")),
        lease,
        prev_kv: false,
    });
    if !matches!(client.execute(0, put).await, Outcome::Ok(_)) {
        // The put may still land; without it the check means nothing.
        let time = recorder.now();
        recorder.with(|h| h.may_expire(lease, time));
        return set(Ok(()));
    }
    let mut last_acked = tokio::time::Instant::now();
    let mut server = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        server = (server + 1) % endpoints.len();
        if keep_alive(&endpoints[server].url, lease).await {
            last_acked = tokio::time::Instant::now();
        }
        if last_acked.elapsed() > Duration::from_secs(TTL_S as u64) {
            // Keep-alives could not get through for a whole TTL: expiry is now legitimate.
            let time = recorder.now();
            recorder.with(|h| h.may_expire(lease, time));
            return set(Ok(()));
        }
    }
    let read = Request::Range(Range {
        key: Bytes::from_static(HELD_KEY.as_bytes()),
        ..Range::default()
    });
    let verdict = match client.execute(0, read).await {
        Outcome::Ok(Response::Range { result, .. }) if result.kvs.is_empty() => Err(format!(
            "the held key vanished although a keep-alive was acknowledged {:?} ago (TTL {TTL_S} s)",
            last_acked.elapsed()
        )),
        _ => Ok(()),
    };
    // Keep-alives stop here, so the lease will expire (while the watchers still listen).
    let time = recorder.now();
    recorder.with(|h| h.may_expire(lease, time));
    set(verdict);
}

async fn grant(client: &mut SimClient) -> Option<i64> {
    for attempt in 0..20 {
        let request = Request::LeaseGrant { ttl: TTL_S, id: 0 };
        if let Outcome::Ok(Response::LeaseGrant { id, .. }) = client
            .execute(attempt % client.endpoints().len(), request)
            .await
        {
            return Some(id);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// One keep-alive round trip; true if the lease was renewed.
async fn keep_alive(url: &str, lease: i64) -> bool {
    let attempt = async {
        let mut client = LeaseClient::connect(url.to_string()).await.ok()?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(pb::LeaseKeepAliveRequest { id: lease })
            .await
            .ok()?;
        let mut responses = client
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .ok()?
            .into_inner();
        let response = responses.message().await.ok()??;
        Some(response.ttl > 0)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
