//! etcd's v3 gRPC services, answering through the [`NodeHandle`]. A service converts the
//! request, asks the server loop, converts the answer; errors carry etcd's gRPC codes and
//! messages (`api/v3rpc/rpctypes`), so `etcdctl` prints what it prints against etcd.

pub mod cluster;
pub mod convert;
pub mod errors;
pub mod forward;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use keel_core::mvcc::{self, GrpcCode};
use keel_core::node::{Outcome, ProposalBody};
use tonic::{Code, Status};

use crate::handle::{ApiError, NodeHandle};
use crate::proto::etcdserverpb as pb;
use crate::transport::ClusterId;

/// What every service needs: the way to the loop and the ids for response headers.
#[derive(Clone, Debug)]
pub struct Api {
    pub handle: NodeHandle,
    /// Shared with the transport: a joining member learns it after start.
    pub cluster_id: ClusterId,
    pub member_id: u64,
    /// `--initial-cluster-token`: new members' ids derive from it and their peer URLs.
    pub cluster_token: String,
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
            .call(|node| (node.raft().term(), node.store().current_revision()))
            .await
            .map_err(api_status)?;
        Ok(self.header_at(term).header(revision))
    }

    /// Proposes a store write and waits for the store's answer.
    pub async fn propose(
        &self,
        command: mvcc::Command,
    ) -> Result<(mvcc::Response, Header), Status> {
        let written = self
            .handle
            .write(ProposalBody::Store(command))
            .await
            .map_err(api_status)?;
        let header = self.header_at(written.raft_term);
        Ok((store_outcome(written.outcome)?, header))
    }
}

/// A store answer of another kind than the request's: a bug, not the client's doing.
pub fn unexpected_response(what: &str) -> Status {
    Status::internal(format!("the store answered a {what} with another response"))
}

pub fn store_status(error: &mvcc::Error) -> Status {
    let code = match error.grpc_code() {
        GrpcCode::InvalidArgument => Code::InvalidArgument,
        GrpcCode::OutOfRange => Code::OutOfRange,
        GrpcCode::NotFound => Code::NotFound,
        GrpcCode::FailedPrecondition => Code::FailedPrecondition,
        GrpcCode::ResourceExhausted => Code::ResourceExhausted,
    };
    Status::new(code, error.to_string())
}

pub fn api_status(error: ApiError) -> Status {
    match &error {
        ApiError::Store(e) => store_status(e),
        ApiError::Timeout | ApiError::NoLeader | ApiError::LeaderChanged | ApiError::Stopped => {
            Status::unavailable(error.to_string())
        }
        ApiError::TooManyRequests => Status::resource_exhausted(error.to_string()),
        ApiError::InvalidConfChange(message) => Status::failed_precondition(message.clone()),
    }
}

/// The store's answer to a write, or the status a client sees instead.
pub fn store_outcome(outcome: Outcome) -> Result<mvcc::Response, Status> {
    match outcome {
        Outcome::Store(Ok(response)) => Ok(response),
        Outcome::Store(Err(error)) => Err(store_status(&error)),
        // Another leader's entry took its place: it did not happen; the client may retry.
        Outcome::Lost => Err(api_status(ApiError::LeaderChanged)),
        Outcome::MemberPublished | Outcome::MembershipChanged { .. } => Err(Status::internal(
            "a store write was answered as a membership change",
        )),
    }
}
