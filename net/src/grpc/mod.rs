//! etcd's v3 gRPC services, answering through the [`NodeHandle`]. A service converts the
//! request, asks the server loop, converts the answer; errors carry etcd's gRPC codes and
//! messages (`api/v3rpc/rpctypes`), so `etcdctl` prints what it prints against etcd.

pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod convert;
pub mod election;
pub mod errors;
pub use errors::status;
pub mod forward;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
#[cfg(not(madsim))]
pub mod metrics;
pub mod watch;

use crate::server_loop::handle::Consistency;
use keel_core::node::query::{self, Ask};
use std::future::Future;
use std::sync::Arc;

use keel_core::auth::{AuthError, Credentials};
use keel_core::mvcc;
use keel_core::node::{CallerCheck, Outcome, ProposalBody};
use keel_core::rpctypes::RpcError;
use tonic::{Code, Request, Status};

use crate::peer::transport::ClusterId;
use crate::proto::etcdserverpb as pb;
use crate::server_loop::handle::{ApiError, LearnerFlag, NodeHandle, Written};

/// What every service needs: the way to the loop and the ids for response headers.
#[derive(Clone, Debug)]
pub struct Api {
    pub handle: NodeHandle,
    /// Shared with the transport: a joining member learns it after start.
    pub cluster_id: ClusterId,
    pub member_id: u64,
    /// `--initial-cluster-token`: new members' ids derive from it and their peer URLs.
    pub cluster_token: String,
    /// Where `Maintenance.Snapshot` writes the file it streams (the data dir).
    pub backup_dir: std::path::PathBuf,
    /// `--client-cert-auth`: a client certificate's common name names its user (when the
    /// request carries no token), as in etcd.
    pub client_cert_auth: bool,
    /// This member's client-side TLS, for `https://` client URLs of other members.
    pub client_tls: Option<crate::tls::ClientTls>,
    /// `--auth-token jwt,…`: tokens are signed and checked here, not kept by the node.
    pub jwt: Option<Arc<crate::jwt::JwtTokens>>,
}

/// The server's part of a response header, for one answer.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
}

impl convert::HeaderSource for Header {
    fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        }
    }
}

impl Api {
    pub fn header_at(&self, raft_term: u64) -> Header {
        Header {
            cluster_id: self.cluster_id.get(),
            member_id: self.member_id,
            raft_term,
        }
    }

    /// A header as of now: the current term and the store's current revision.
    pub async fn current_header(&self) -> Result<pb::ResponseHeader, Status> {
        use convert::HeaderSource;
        let (term, revision) = self
            .handle
            .ask(Consistency::Serializable, query::Header)
            .await
            .map_err(status)?;
        Ok(self.header_at(term).header(revision))
    }

    /// What the client of `request` presented: a token in the `token` or `authorization`
    /// metadata (a `Bearer ` prefix is dropped), and with `--client-cert-auth` the common name
    /// of its TLS certificate (verified by the handshake).
    pub fn credentials<T>(&self, request: &Request<T>) -> Credentials {
        let metadata = request.metadata();
        let token = ["token", "authorization"]
            .into_iter()
            .find_map(|key| metadata.get(key))
            .and_then(|value| value.to_str().ok())
            .map(|value| value.trim_start_matches("Bearer ").to_string());
        let common_name = if self.client_cert_auth {
            crate::tls::peer_common_name(request)
        } else {
            None
        };
        // A token that is not a valid JWT goes on as a token: the node does not know it and
        // answers etcd's invalid auth token.
        let signed = self
            .jwt
            .as_ref()
            .zip(token.as_deref())
            .and_then(|(jwt, token)| jwt.verify(token));
        let token = if signed.is_some() { None } else { token };
        Credentials {
            token,
            common_name,
            signed,
        }
    }

    /// A learner answers only status and serializable ranges, as etcd's does: anything else
    /// is refused with `etcdserver: rpc not supported for learner`, on which etcd's clients
    /// try another member. Services refused whole use [`refuse_on_learner`] instead.
    pub fn refuse_on_learner(&self) -> Result<(), Status> {
        refuse_if(self.handle.is_learner())
    }

    /// Proposes a client's store write and waits for the store's answer; auth checks it
    /// when it applies.
    pub async fn propose(
        &self,
        command: mvcc::Command,
        credentials: &Credentials,
    ) -> Result<(mvcc::Response, Header), Status> {
        let written = self
            .write_as(ProposalBody::Store(command), credentials)
            .await?;
        let header = self.header_at(written.raft_term);
        Ok((store_outcome(written.outcome)?, header))
    }

    /// Runs `check` for the caller on the loop: `Ok` when it allows the request.
    pub async fn authorize(
        &self,
        credentials: &Credentials,
        check: CallerCheck,
    ) -> Result<(), Status> {
        self.ask_as(
            Consistency::Serializable,
            credentials,
            check,
            query::Authorize,
        )
        .await
    }

    /// The caller must be an admin (etcd's `isPermitted`).
    pub async fn require_admin(&self, credentials: &Credentials) -> Result<(), Status> {
        self.authorize(credentials, CallerCheck::Admin).await
    }

    /// With auth on, the caller must name a user (etcd's `requireAuthInfo`).
    pub async fn require_user(&self, credentials: &Credentials) -> Result<(), Status> {
        self.authorize(credentials, CallerCheck::User).await
    }

    /// Proposes `body` as the caller of `credentials` and waits until it applied (once
    /// more if the token was unknown here, see `with_token_retry`).
    pub async fn write_as(
        &self,
        body: ProposalBody,
        credentials: &Credentials,
    ) -> Result<Written, Status> {
        self.with_token_retry(credentials, || {
            let body = body.clone();
            async move {
                self.handle
                    .write(body, credentials.clone())
                    .await
                    .map_err(status)
            }
        })
        .await
    }

    /// Asks the node `query` as the caller of `credentials`, who must pass `check` (once
    /// more if the token was unknown here, see `with_token_retry`).
    pub async fn ask_as<Q>(
        &self,
        consistency: Consistency,
        credentials: &Credentials,
        check: CallerCheck,
        query: Q,
    ) -> Result<Q::Answer, Status>
    where
        Q: Ask + Clone + Send,
        Q::Answer: Send,
    {
        self.with_token_retry(credentials, || {
            let (check, query) = (check.clone(), query.clone());
            let credentials = credentials.clone();
            async move {
                self.handle
                    .ask_as(consistency, credentials, check, query)
                    .await
                    .map_err(status)
            }
        })
        .await
    }

    /// Runs `op`, and once more after waiting for this member to apply everything committed
    /// if its token was unknown: a token handed out through another member works here once
    /// this one has applied the login (etcd waits for the token's index the same way).
    async fn with_token_retry<T, F, Fut>(
        &self,
        credentials: &Credentials,
        mut op: F,
    ) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        match op().await {
            Err(status) if credentials.token.is_some() && is_invalid_token(&status) => {
                let applied = self
                    .handle
                    .ask(Consistency::Linearizable, query::AppliedIndex);
                applied.await.map_err(errors::status)?;
                op().await
            }
            other => other,
        }
    }
}

/// An interceptor for the services a learner refuses whole (Lease, Cluster, Auth): see
/// [`Api::refuse_on_learner`].
pub fn refuse_on_learner(
    learner: LearnerFlag,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request| refuse_if(learner.get()).map(|()| request)
}

fn refuse_if(is_learner: bool) -> Result<(), Status> {
    if is_learner {
        return Err(status(RpcError::NotSupportedForLearner));
    }
    Ok(())
}

fn is_invalid_token(status: &Status) -> bool {
    status.code() == Code::Unauthenticated
        && status.message() == AuthError::InvalidAuthToken.to_string()
}

/// A store answer of another kind than the request's: a bug, not the client's doing.
pub fn unexpected_response(what: &str) -> Status {
    Status::internal(format!("the store answered a {what} with another response"))
}

/// The store's answer to a write, or the status a client sees instead.
pub fn store_outcome(outcome: Outcome) -> Result<mvcc::Response, Status> {
    match outcome {
        Outcome::Store(Ok(response)) => Ok(response),
        Outcome::Store(Err(error)) => Err(status(&error)),
        Outcome::Auth(Err(error)) => Err(status(&error)),
        Outcome::Auth(Ok(_)) => Err(Status::internal(
            "a store write was answered as an auth command",
        )),
        // Another leader's entry took its place: it did not happen; the client may retry.
        Outcome::Lost => Err(status(ApiError::LeaderChanged)),
        Outcome::MemberPublished
        | Outcome::MembershipChanged { .. }
        | Outcome::MembershipRefused(_) => Err(Status::internal(
            "a store write was answered as a membership change",
        )),
    }
}
