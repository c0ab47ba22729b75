//! A client's request, as the node takes it: one typed entry, [`Node::handle`]. A write or
//! a membership change is proposed and answered from `apply` (its [`super::Completion`]); a
//! question is answered at once, or — when it must be linearizable — from `apply` once a
//! ReadIndex round confirmed this member's state is current ([`super::ApplyOutput::answers`]).
//! The server keeps only who waits for which request id.

use thiserror::Error;

use crate::auth::{AuthError, Credentials};
use crate::raft::ReadIndexError;

use super::admission::MemberChange;
use super::hold::Needs;
use super::query::{Answer, AskedBy, Query};
use super::{Node, NodeProposeError, ProposalBody};

/// When a question is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// At once, also on a member fenced after a restart: for what Raft knows (leader,
    /// term) and this member's own status, which etcd answers from a member cut off from
    /// its cluster too (`etcdctl endpoint status`).
    Unfenced,
    /// From this member's applied state, once it serves from it (held while it is fenced
    /// after a restart, see `Node::serves_local_reads`).
    Serializable,
    /// After a ReadIndex round confirms this member's state is current.
    Linearizable,
}

/// A client's request (see the module's doc).
#[derive(Clone, Debug)]
pub enum ClientRequest {
    /// A write to the store or the auth store, or a member's attributes, by `credentials`.
    Write {
        body: ProposalBody,
        credentials: Credentials,
    },
    /// A membership change, checked by etcd's rules before it is proposed.
    MemberChange(MemberChange),
    /// A question, answered only if whoever asks may (when `asked_by` says who).
    Ask {
        query: Query,
        asked_by: Option<AskedBy>,
        consistency: Consistency,
    },
}

impl ClientRequest {
    /// Whether its answer comes out of `apply`, under an id (see [`Node::handle`]); a
    /// question answered at once needs none.
    pub fn answered_later(&self) -> bool {
        !matches!(
            self,
            ClientRequest::Ask {
                consistency: Consistency::Serializable | Consistency::Unfenced,
                ..
            }
        )
    }

    /// What the node must have before it takes the request (see `Node::must_hold`).
    pub fn needs(&self) -> Needs {
        match self {
            ClientRequest::Write { .. }
            | ClientRequest::MemberChange(_)
            | ClientRequest::Ask {
                consistency: Consistency::Linearizable,
                ..
            } => Needs::Leader,
            ClientRequest::Ask {
                consistency: Consistency::Serializable,
                ..
            } => Needs::LocalState,
            ClientRequest::Ask {
                consistency: Consistency::Unfenced,
                ..
            } => Needs::Nothing,
        }
    }
}

/// How the node took a request.
#[derive(Debug)]
// Returned and matched at once, never stored: boxing the answer would allocate per question.
#[allow(clippy::large_enum_variant)]
pub enum Handled {
    /// Its answer comes out of `apply` under the request's id.
    Later,
    /// The answer to a question asked for at once.
    Now(Result<Answer, AuthError>),
}

/// Why the node did not take a request.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RequestError {
    /// A write or membership change refused before it reached the log.
    #[error(transparent)]
    Proposal(#[from] NodeProposeError),
    /// A linearizable question whose ReadIndex round could not start.
    #[error(transparent)]
    ReadIndex(#[from] ReadIndexError),
}

/// A linearizable question waiting for its read index to be applied.
#[derive(Clone, Debug)]
pub(super) struct AskedQuery {
    pub(super) query: Query,
    pub(super) asked_by: Option<AskedBy>,
}

impl Node {
    /// Takes a client's request, `request_id` naming it in what comes out of `apply`.
    pub fn handle(
        &mut self,
        request_id: u64,
        request: ClientRequest,
    ) -> Result<Handled, RequestError> {
        match request {
            ClientRequest::Write { body, credentials } => {
                self.propose_as(request_id, body, &credentials)?;
                Ok(Handled::Later)
            }
            ClientRequest::MemberChange(change) => {
                self.propose_member_change(request_id, change)?;
                Ok(Handled::Later)
            }
            ClientRequest::Ask {
                query,
                asked_by,
                consistency: Consistency::Linearizable,
            } => {
                self.read_index(request_id)?;
                self.asked_queries
                    .insert(request_id, AskedQuery { query, asked_by });
                Ok(Handled::Later)
            }
            ClientRequest::Ask {
                query, asked_by, ..
            } => Ok(Handled::Now(self.answer_for(asked_by.as_ref(), query))),
        }
    }

    /// Forgets a linearizable question nobody waits for any more (its client gave up); its
    /// read index, if it comes, answers nothing.
    pub fn forget_question(&mut self, request_id: u64) {
        self.asked_queries.remove(&request_id);
    }
}
