//! Clients' requests in the loop: each is held (see `keel_core::node::Needs`), proposed,
//! asked of the node at once or after a ReadIndex, and answered once the node says how it
//! went. The loop decides nothing here that the node does not tell it.

use std::collections::VecDeque;

use keel_core::node::query::{Answer, AskedBy, Query};
use keel_core::node::{Completion, NodeProposeError, Outcome};
use keel_core::raft::{ProposeError, ReadIndexError};
use keel_storage::Disk;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

use super::handle::{ApiError, Consistency, Request, Written};
use super::ServerLoop;

/// Requests held at most (see `keel_core::node::Needs`); past it, a request is refused with
/// `too many requests`.
const MAX_PARKED_REQUESTS: usize = 4096;

/// A query as asked; a linearizable one waits in `pending_reads` for its read index to be
/// applied.
pub(super) struct AskedQuery {
    pub(super) query: Box<Query>,
    pub(super) asked_by: Option<AskedBy>,
    pub(super) reply: oneshot::Sender<Result<Answer, ApiError>>,
}

impl AskedQuery {
    /// Nobody waits for its answer any more (the client timed out).
    pub(super) fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

pub(super) fn read_index_error(error: ReadIndexError) -> ApiError {
    match error {
        ReadIndexError::NoLeader => ApiError::NoLeader,
        ReadIndexError::TooManyPending { .. } => ApiError::TooManyRequests,
    }
}

pub(super) fn propose_error(error: NodeProposeError) -> ApiError {
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
        match request {
            Request::Write {
                body,
                credentials,
                reply,
            } => {
                let id = self.next_id();
                match self.node.propose_as(id, body, &credentials) {
                    Ok(()) => {
                        self.pending_writes.insert(id, reply);
                    }
                    Err(error) => {
                        self.metrics.count_failed_proposal();
                        let _ = reply.send(Err(propose_error(error)));
                    }
                }
            }
            Request::MemberChange { change, reply } => {
                let id = self.next_id();
                match self.node.propose_member_change(id, change) {
                    Ok(_) => {
                        self.pending_writes.insert(id, reply);
                    }
                    Err(error) => {
                        // Refused by etcd's checks, nothing was proposed: not a failed
                        // proposal.
                        if !matches!(error, NodeProposeError::Membership(_)) {
                            self.metrics.count_failed_proposal();
                        }
                        let _ = reply.send(Err(propose_error(error)));
                    }
                }
            }
            Request::Ask {
                query,
                asked_by,
                consistency: Consistency::Linearizable,
                reply,
            } => {
                let id = self.next_id();
                match self.node.read_index(id) {
                    Ok(()) => {
                        let read = AskedQuery {
                            query,
                            asked_by,
                            reply,
                        };
                        self.pending_reads.insert(id, read);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(read_index_error(error)));
                    }
                }
            }
            Request::Ask {
                query,
                asked_by,
                reply,
                ..
            } => self.answer(AskedQuery {
                query,
                asked_by,
                reply,
            }),
        }
    }

    /// Answers a query, if whoever asked it may.
    pub(super) fn answer(&mut self, asked: AskedQuery) {
        let answer = self.node.answer_for(asked.asked_by.as_ref(), *asked.query);
        let _ = asked.reply.send(answer.map_err(ApiError::Auth));
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
        self.node.must_hold(request.needs())
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
