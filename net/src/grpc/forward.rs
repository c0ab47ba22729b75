//! Requests only the leader can answer (lease renewals and TTLs, learner promotion), sent on
//! to the leader's advertised client URL over gRPC, as etcd forwards them to its leader.
//! A forwarded request is marked, and a member that gets a marked request it cannot answer
//! says `etcdserver: not leader` rather than forwarding it again, so nothing loops.

use crate::server_loop::handle::Consistency;
use keel_core::node::query::{LeaderClientUrls, LeaderUrls};
use keel_core::rpctypes::RpcError;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use keel_core::auth::Credentials;

use super::errors::{rpc_error_of, status};
use crate::server_loop::handle::NodeHandle;
use crate::tls::ClientTls;

/// The metadata key that marks a request one member forwarded to another.
pub const FORWARDED_METADATA: &str = "keel-forwarded";
/// How long to wait between looking for a leader (or retrying one that just changed).
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Whether `request` was forwarded by another member.
pub fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_METADATA)
}

pub fn mark_forwarded<T>(request: &mut Request<T>) {
    request
        .metadata_mut()
        .insert(FORWARDED_METADATA, MetadataValue::from_static("1"));
}

/// Sends the client's token along, so the leader checks the same user's permissions (tokens
/// are handed out through the log: every member knows them).
pub fn pass_token<T>(request: &mut Request<T>, credentials: &Credentials) {
    let value = credentials
        .token
        .as_ref()
        .and_then(|token| MetadataValue::try_from(token.as_str()).ok());
    if let Some(value) = value {
        request.metadata_mut().insert("token", value);
    }
}

/// Finds the leader and keeps one (lazily connected) channel per client URL.
#[derive(Clone, Debug)]
pub struct Forwarder {
    handle: NodeHandle,
    /// For `https://` client URLs: this member's client-side TLS.
    tls: Option<ClientTls>,
    channels: Arc<Mutex<BTreeMap<String, Channel>>>,
}

impl Forwarder {
    pub fn new(handle: NodeHandle, tls: Option<ClientTls>) -> Forwarder {
        Forwarder {
            handle,
            tls,
            channels: Arc::default(),
        }
    }

    /// The leader, once there is one whose client URLs are known; `etcdserver: no leader`
    /// at `deadline` (etcd waits for an election the same way).
    pub async fn leader(&self, deadline: Instant) -> Result<LeaderUrls, Status> {
        loop {
            let leader = self
                .handle
                .ask(Consistency::Unfenced, LeaderClientUrls)
                .await
                .map_err(status)?;
            if let Some(leader) = leader {
                return Ok(leader);
            }
            if Instant::now() + RETRY_INTERVAL >= deadline {
                return Err(status(RpcError::NoLeader));
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    fn channel(&self, url: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = crate::tls::grpc_channel(url, self.tls.as_ref()).map_err(|e| {
            Status::unavailable(format!("the leader's client URL {url:?} is unusable: {e}"))
        })?;
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// Runs `call` against the leader, trying its client URLs in turn, and again while the
    /// leader is unknown, unreachable or just changed, until the request timeout.
    pub async fn to_leader<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.handle.request_timeout;
        loop {
            let leader = self.leader(deadline).await?;
            for url in &leader.client_urls {
                let channel = self.channel(url)?;
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, call(channel)).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(status)) if is_retryable(&status) => {}
                    Ok(Err(status)) => return Err(status),
                    Err(_) => return Err(status(RpcError::Timeout)),
                }
            }
            if Instant::now() + RETRY_INTERVAL >= deadline {
                return Err(status(RpcError::Timeout));
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }
}

/// The leader could not be reached, or is no longer the leader: ask again. An
/// `Unavailable` that is the leader's answer ("unhealthy cluster": the change would lose the
/// quorum) goes back to the client as it is.
fn is_retryable(status: &Status) -> bool {
    let error = rpc_error_of(status);
    (status.code() == Code::Unavailable && error != Some(RpcError::Unhealthy))
        || error == Some(RpcError::NotLeader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_request_is_recognised() {
        let mut request = Request::new(());
        assert!(!is_forwarded(&request));
        mark_forwarded(&mut request);
        assert!(is_forwarded(&request));
    }

    #[test]
    fn only_unreachable_or_moved_leaders_are_retried() {
        assert!(is_retryable(&Status::unavailable("transport error")));
        assert!(is_retryable(&status(RpcError::NotLeader)));
        assert!(!is_retryable(&status(RpcError::LearnerNotReady)));
        assert!(!is_retryable(&status(RpcError::Unhealthy)));
        assert!(!is_retryable(&Status::not_found(
            "etcdserver: requested lease not found"
        )));
    }
}
