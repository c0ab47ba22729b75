//! Clients' requests in the loop: each is held (see `keel_core::node::Needs`), proposed,
//! asked of the node at once or after a ReadIndex, and answered once the node says how it
//! went. The loop decides nothing here that the node does not tell it.

use std::collections::VecDeque;

use keel_core::node::{Completion, Handled, NodeProposeError, Outcome, RequestError};
use keel_core::raft::{ProposeError, ReadIndexError};
use keel_storage::Disk;
use tokio::time::Instant;
use tracing::info;

use super::handle::{ApiError, Reply, Request, Written};
use super::ServerLoop;

/// Requests held at most (see `keel_core::node::Needs`); past it, a request is refused with
/// `too many requests`.
const MAX_PARKED_REQUESTS: usize = 4096;

fn request_error(error: RequestError) -> ApiError {
    match error {
        RequestError::Proposal(error) => propose_error(error),
        RequestError::ReadIndex(error) => read_index_error(error),
    }
}

fn read_index_error(error: ReadIndexError) -> ApiError {
    match error {
        ReadIndexError::NoLeader => ApiError::NoLeader,
        ReadIndexError::TooManyPending { .. } => ApiError::TooManyRequests,
    }
}

fn propose_error(error: NodeProposeError) -> ApiError {
    match error {
        NodeProposeError::Store(error) => ApiError::Store(error),
        NodeProposeError::Auth(error) => ApiError::Auth(error),
        NodeProposeError::Membership(error) => ApiError::Membership(error),
        NodeProposeError::Raft(error) => match error {
            ProposeError::NotLeader { .. } | ProposeError::NotMember => ApiError::NoLeader,
            ProposeError::LeaderTransferInProgress { .. } => ApiError::LeaderChanged,
            ProposeError::UncommittedLimit { .. } | ProposeError::ForwardQueueFull { .. } => {
                ApiError::TooManyRequests
            }
            ProposeError::ConfChangePending { .. } => ApiError::MembershipChangePending,
            ProposeError::InvalidConfChange { reason } => ApiError::InvalidMembershipChange(reason),
        },
    }
}

impl<D: Disk + Send + 'static> ServerLoop<D> {
    pub(super) fn handle(&mut self, request: Request) {
        let started = Instant::now();
        self.handle_request(request);
        self.turn.requests += started.elapsed();
        self.turn.requests_handled += 1;
    }

    pub(super) fn handle_request(&mut self, request: Request) {
        if self.must_hold(&request) {
            self.park(request);
            return;
        }
        let Request { request, reply } = request;
        // Only a request answered later needs an id to be found by.
        let id = if request.answered_later() {
            self.next_id()
        } else {
            0
        };
        match (self.node.handle(id, *request), reply) {
            (Ok(Handled::Later), Reply::Written(reply)) => {
                self.pending_writes.insert(id, reply);
            }
            (Ok(Handled::Later), Reply::Answer(reply)) => {
                self.pending_reads.insert(id, reply);
            }
            (Ok(Handled::Now(answer)), Reply::Answer(reply)) => {
                let _ = reply.send(answer.map_err(ApiError::Auth));
            }
            (Ok(Handled::Now(_)), Reply::Written(reply)) => {
                debug_assert!(false, "a write answered as a question");
                let _ = reply.send(Err(ApiError::Stopped));
            }
            (Err(error), reply) => {
                // A membership change refused by etcd's checks proposed nothing, and a
                // ReadIndex round is no proposal: neither is a failed proposal.
                if matches!(&error, RequestError::Proposal(e) if !matches!(e, NodeProposeError::Membership(_)))
                {
                    self.metrics.count_failed_proposal();
                }
                reply.fail(request_error(error));
            }
        }
    }

    pub(super) fn park(&mut self, request: Request) {
        if self.parked.len() < MAX_PARKED_REQUESTS {
            self.parked.push_back(request);
        } else {
            request.fail(ApiError::TooManyRequests);
        }
    }

    /// Whether `request` waits in `parked` (see `keel_core::node::Needs`).
    pub(super) fn must_hold(&self, request: &Request) -> bool {
        self.node.must_hold(request.request.needs())
    }

    /// Serves what was held once what it waited for is there.
    pub(super) fn unpark(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let (held, ready): (VecDeque<Request>, VecDeque<Request>) =
            std::mem::take(&mut self.parked)
                .into_iter()
                .partition(|request| self.must_hold(request));
        self.parked = held;
        if ready.is_empty() {
            return;
        }
        info!(requests = ready.len(), "serving held requests");
        for request in ready {
            self.handle(request);
        }
    }

    /// Fails what is held once the node says so (no leader for an election timeout),
    /// instead of leaving it until its clients give up.
    pub(super) fn fail_parked_without_leader(&mut self) {
        if self.parked.is_empty() || !self.node.held_requests_fail() {
            return;
        }
        for request in std::mem::take(&mut self.parked) {
            request.fail(ApiError::NoLeader);
        }
    }

    pub(super) fn complete(&mut self, completion: Completion) {
        if matches!(completion.outcome, Outcome::Lost) {
            self.metrics.count_failed_proposal();
        }
        if let Some(reply) = self.pending_writes.remove(&completion.request_id) {
            let _ = reply.send(Ok(Written {
                outcome: completion.outcome,
                raft_term: self.node.raft().term(),
            }));
        }
    }
}
