//! How the gRPC services talk to the server loop: a cloneable [`NodeHandle`] that sends
//! requests over a channel and awaits their answers. Nothing here decides anything.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::auth::{AuthError, Credentials};
use keel_core::node::query::{Answer, Ask, AskedBy};
pub use keel_core::node::Consistency;
use keel_core::node::{AdmissionError, MemberChange, Outcome, ProposalBody};
use keel_core::node::{CallerCheck, ClientRequest};
use keel_core::rpctypes::{write_message, RpcError, ToRpcError};
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the loop, at most; beyond it callers wait (backpressure).
pub const REQUEST_QUEUE: usize = 64 * 1024;

/// Failures a client sees that are not the store's own errors (those are in [`Outcome`]).
/// Each is an entry of etcd's errors (`keel_core::rpctypes`) and displays its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    Timeout,
    NoLeader,
    LeaderChanged,
    Stopped,
    TooManyRequests,
    /// A request etcd would refuse before proposing.
    Store(keel_core::mvcc::Error),
    /// Raft accepts one membership change at a time.
    MembershipChangePending,
    /// Raft refused the change against the membership in force (why).
    InvalidMembershipChange(&'static str),
    /// A membership change refused by etcd's checks.
    Membership(AdmissionError),
    /// Refused by auth before proposing (an unknown token).
    Auth(AuthError),
}

impl ToRpcError for ApiError {
    fn rpc_error(&self) -> RpcError {
        match self {
            ApiError::Timeout => RpcError::Timeout,
            ApiError::NoLeader => RpcError::NoLeader,
            ApiError::LeaderChanged => RpcError::LeaderChanged,
            ApiError::Stopped => RpcError::Stopped,
            ApiError::TooManyRequests => RpcError::TooManyRequests,
            ApiError::Store(error) => error.rpc_error(),
            ApiError::MembershipChangePending => RpcError::MembershipChangePending,
            ApiError::InvalidMembershipChange(_) => RpcError::InvalidMembershipChange,
            ApiError::Membership(error) => RpcError::from(*error),
            ApiError::Auth(error) => error.rpc_error(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Store(error) => error.fmt(f),
            ApiError::InvalidMembershipChange(reason) => {
                write_message(f, self.rpc_error(), Some(reason))
            }
            _ => f.write_str(self.rpc_error().message()),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<keel_core::mvcc::Error> for ApiError {
    fn from(error: keel_core::mvcc::Error) -> ApiError {
        ApiError::Store(error)
    }
}

impl From<AdmissionError> for ApiError {
    fn from(error: AdmissionError) -> ApiError {
        ApiError::Membership(error)
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        ApiError::Auth(error)
    }
}

/// The answer to a write, with the term to put in the response header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub outcome: Outcome,
    pub raft_term: u64,
}

/// A client's request on its way to the loop, and who waits for its answer.
#[derive(Debug)]
pub struct Request {
    /// Boxed: requests carry ranges and txns, the channel many small ones.
    pub request: Box<ClientRequest>,
    pub reply: Reply,
}

/// Where a request's answer goes.
#[derive(Debug)]
pub enum Reply {
    /// A write's or membership change's, once applied.
    Written(oneshot::Sender<Result<Written, ApiError>>),
    /// A question's.
    Answer(oneshot::Sender<Result<Answer, ApiError>>),
}

impl Reply {
    /// Answers with `error` instead.
    pub fn fail(self, error: ApiError) {
        match self {
            Reply::Written(reply) => {
                let _ = reply.send(Err(error));
            }
            Reply::Answer(reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

impl Request {
    /// Answers the request with `error` instead of carrying it out.
    pub fn fail(self, error: ApiError) {
        self.reply.fail(error);
    }
}

#[derive(Clone, Debug)]
pub struct NodeHandle {
    requests: mpsc::Sender<Request>,
    /// How long a client request may wait (etcd: 5 s plus two election timeouts).
    pub request_timeout: Duration,
    learner: LearnerFlag,
}

/// Whether this member is a learner, as of the membership the loop last applied. Every
/// client request reads it (a learner refuses most of them, as etcd's does), so it is an
/// atomic the loop sets rather than a question sent to the loop.
#[derive(Clone, Debug, Default)]
pub struct LearnerFlag(Arc<AtomicBool>);

impl LearnerFlag {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, is_learner: bool) {
        self.0.store(is_learner, Ordering::Relaxed);
    }
}

impl NodeHandle {
    pub fn new(requests: mpsc::Sender<Request>, request_timeout: Duration) -> NodeHandle {
        NodeHandle {
            requests,
            request_timeout,
            learner: LearnerFlag::default(),
        }
    }

    /// The flag the loop keeps up to date.
    pub fn learner_flag(&self) -> LearnerFlag {
        self.learner.clone()
    }

    pub fn is_learner(&self) -> bool {
        self.learner.get()
    }

    async fn send(&self, request: ClientRequest, reply: Reply) -> Result<(), ApiError> {
        let request = Request {
            request: Box::new(request),
            reply,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| ApiError::Stopped)
    }

    async fn wait<T>(&self, reply: oneshot::Receiver<T>) -> Result<T, ApiError> {
        match tokio::time::timeout(self.request_timeout, reply).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(ApiError::Stopped),
            Err(_) => Err(ApiError::Timeout),
        }
    }

    /// Proposes a client's write and waits until it is applied (or lost, or timed out).
    pub async fn write(
        &self,
        body: ProposalBody,
        credentials: Credentials,
    ) -> Result<Written, ApiError> {
        let (reply, answer) = oneshot::channel();
        let request = ClientRequest::Write { body, credentials };
        self.send(request, Reply::Written(reply)).await?;
        self.wait(answer).await?
    }

    /// Has the node check and propose a membership change, and waits until it is applied.
    pub async fn member_change(&self, change: MemberChange) -> Result<Written, ApiError> {
        let (reply, answer) = oneshot::channel();
        let request = ClientRequest::MemberChange(change);
        self.send(request, Reply::Written(reply)).await?;
        self.wait(answer).await?
    }

    /// Asks the node `query`, answered as `consistency` says.
    pub async fn ask<Q: Ask>(
        &self,
        consistency: Consistency,
        query: Q,
    ) -> Result<Q::Answer, ApiError> {
        self.send_ask(consistency, None, query).await
    }

    /// Asks the node `query` for the caller of `credentials`, who must pass `check`.
    pub async fn ask_as<Q: Ask>(
        &self,
        consistency: Consistency,
        credentials: Credentials,
        check: CallerCheck,
        query: Q,
    ) -> Result<Q::Answer, ApiError> {
        let asked_by = AskedBy { credentials, check };
        self.send_ask(consistency, Some(asked_by), query).await
    }

    async fn send_ask<Q: Ask>(
        &self,
        consistency: Consistency,
        asked_by: Option<AskedBy>,
        query: Q,
    ) -> Result<Q::Answer, ApiError> {
        let (reply, answer) = oneshot::channel();
        let request = ClientRequest::Ask {
            query: query.into_query(),
            asked_by,
            consistency,
        };
        self.send(request, Reply::Answer(reply)).await?;
        let answer = self.wait(answer).await??;
        // `Node::answer` answers each query in kind: another answer is a bug of keel's.
        let taken = Q::take(answer);
        debug_assert!(taken.is_some(), "a query answered with another's answer");
        taken.ok_or(ApiError::Stopped)
    }
}
