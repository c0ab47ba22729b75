//! Messages between Raft peers. They are plain serde types; the transport frames them with
//! bincode. Everything a peer sends is checked by [`Message::validate`] before it is stepped.

use serde::{Deserialize, Serialize};

use super::entry::{Entry, EntryPayload, Index, NodeId, Snapshot, Term};
use super::error::MessageError;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term. Ignored for the term-less kinds (see [`MessageBody::is_termless`]).
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageBody {
    /// AppendEntries (§5.3).
    Append(Append),
    AppendResponse(AppendResponse),
    /// An AppendEntries without entries: keeps followers from campaigning, carries the commit
    /// index up to what the follower is known to hold, and confirms leadership for ReadIndex.
    Heartbeat(Heartbeat),
    HeartbeatResponse(HeartbeatResponse),
    /// RequestVote (§5.2), or a pre-vote (thesis §9.6) when `pre_vote` is set.
    RequestVote(RequestVote),
    RequestVoteResponse(RequestVoteResponse),
    /// InstallSnapshot (§7), sent whole; the transport may chunk it.
    InstallSnapshot(Snapshot),
    /// Proposals a follower forwards to its leader.
    Propose(Propose),
    /// A follower asks the leader for a read index on behalf of one of its clients (§6.4).
    ReadIndex(ReadIndexRequest),
    ReadIndexResponse(ReadIndexResponse),
    /// Leader transfer (thesis §3.10): start an election now, without waiting or pre-voting.
    TimeoutNow,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Append {
    pub prev_log_index: Index,
    pub prev_log_term: Term,
    pub entries: Vec<Entry>,
    pub commit_index: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to `match_index`.
    Accepted { match_index: Index },
    /// The follower has no entry at `rejected_index` with the term the leader sent. The hint
    /// is the follower's last entry at or below that index whose term is not above the
    /// leader's `prev_log_term`, so the leader can skip a whole term per round trip.
    Rejected {
        rejected_index: Index,
        hint_index: Index,
        hint_term: Term,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Heartbeat {
    pub commit_index: Index,
    /// The ReadIndex round this heartbeat confirms leadership for; echoed back.
    pub read_round: u64,
    /// How far this leader holds the follower's acknowledgement of its log (its match
    /// index). A follower whose log ends below it lost state it had persisted (see
    /// `lost_state`).
    pub acknowledged_index: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub read_round: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestVote {
    pub pre_vote: bool,
    pub last_log_index: Index,
    pub last_log_term: Term,
    /// Set when the election was started by a leader transfer: voters then grant even while
    /// they still hear from the current leader (thesis §3.10, §4.2.3).
    pub leader_transfer: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestVoteResponse {
    pub pre_vote: bool,
    pub granted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Propose {
    pub payloads: Vec<EntryPayload>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadIndexRequest {
    /// Chosen by the node that took the client's read; unique on that node.
    pub request_id: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadIndexResponse {
    pub request_id: u64,
    /// Reads may be served once the requesting node has applied this index.
    pub read_index: Index,
}

impl MessageBody {
    /// Forwarded requests and their answers are not part of the term protocol: they neither
    /// raise the receiver's term nor depose anyone (etcd's "local" messages).
    pub fn is_termless(&self) -> bool {
        matches!(
            self,
            MessageBody::Propose(_) | MessageBody::ReadIndex(_) | MessageBody::ReadIndexResponse(_)
        )
    }

    /// A short name for logs and metrics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MessageBody::Append(_) => "Append",
            MessageBody::AppendResponse(_) => "AppendResponse",
            MessageBody::Heartbeat(_) => "Heartbeat",
            MessageBody::HeartbeatResponse(_) => "HeartbeatResponse",
            MessageBody::RequestVote(v) if v.pre_vote => "PreVote",
            MessageBody::RequestVote(_) => "RequestVote",
            MessageBody::RequestVoteResponse(v) if v.pre_vote => "PreVoteResponse",
            MessageBody::RequestVoteResponse(_) => "RequestVoteResponse",
            MessageBody::InstallSnapshot(_) => "InstallSnapshot",
            MessageBody::Propose(_) => "Propose",
            MessageBody::ReadIndex(_) => "ReadIndex",
            MessageBody::ReadIndexResponse(_) => "ReadIndexResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}

/// No term or index from a peer may exceed this: far beyond any real log (2^62 entries), and
/// far enough below `u64::MAX` that `+ 1` on any of them cannot overflow.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

/// Bounds a peer's message must respect; anything outside is rejected before stepping.
#[derive(Clone, Copy, Debug)]
pub struct MessageLimits {
    pub max_entries_per_message: usize,
    pub max_payloads_per_proposal: usize,
}

impl Message {
    /// Checks everything about a peer's message that can be checked without the receiver's
    /// state: addressing, index arithmetic, entry continuity. Stepping a message that passed
    /// can still be refused, but cannot panic.
    pub fn validate(&self, local_id: NodeId, limits: &MessageLimits) -> Result<(), MessageError> {
        if self.from == 0 {
            return Err(MessageError::ZeroSender);
        }
        if self.from == local_id {
            return Err(MessageError::FromSelf { id: local_id });
        }
        if self.to != local_id {
            return Err(MessageError::WrongRecipient {
                to: self.to,
                local_id,
            });
        }
        self.check_bounds()?;
        match &self.body {
            MessageBody::Append(append) => self.validate_append(append, limits),
            MessageBody::AppendResponse(AppendResponse::Rejected {
                rejected_index,
                hint_index,
                ..
            }) if hint_index > rejected_index => Err(MessageError::Malformed {
                kind: "AppendResponse",
                reason: "hint_index is above rejected_index",
            }),
            MessageBody::InstallSnapshot(snapshot) => {
                if snapshot.meta.index == 0 || snapshot.meta.term == 0 {
                    return Err(MessageError::Malformed {
                        kind: "InstallSnapshot",
                        reason: "snapshot at index or term 0",
                    });
                }
                if snapshot.meta.term > self.term {
                    return Err(MessageError::Malformed {
                        kind: "InstallSnapshot",
                        reason: "snapshot term is above the sender's term",
                    });
                }
                if snapshot.meta.conf_state.voters.is_empty() {
                    return Err(MessageError::Malformed {
                        kind: "InstallSnapshot",
                        reason: "snapshot has no voters",
                    });
                }
                Ok(())
            }
            MessageBody::Propose(propose) => {
                if propose.payloads.len() > limits.max_payloads_per_proposal {
                    return Err(MessageError::TooLarge {
                        kind: "Propose",
                        count: propose.payloads.len(),
                        limit: limits.max_payloads_per_proposal,
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Every term and index in the message is at most [`MAX_TERM_OR_INDEX`].
    fn check_bounds(&self) -> Result<(), MessageError> {
        let within = |values: &[u64]| values.iter().all(|&v| v <= MAX_TERM_OR_INDEX);
        let ok = within(&[self.term])
            && match &self.body {
                MessageBody::Append(a) => {
                    let last = a.entries.last().map_or([0, 0], |e| [e.index, e.term]);
                    within(&[a.prev_log_index, a.prev_log_term, a.commit_index]) && within(&last)
                }
                MessageBody::AppendResponse(AppendResponse::Accepted { match_index }) => {
                    within(&[*match_index])
                }
                MessageBody::AppendResponse(AppendResponse::Rejected {
                    rejected_index,
                    hint_index,
                    hint_term,
                }) => within(&[*rejected_index, *hint_index, *hint_term]),
                MessageBody::Heartbeat(h) => within(&[h.commit_index, h.acknowledged_index]),
                MessageBody::RequestVote(v) => within(&[v.last_log_index, v.last_log_term]),
                MessageBody::InstallSnapshot(s) => within(&[s.meta.index, s.meta.term]),
                MessageBody::ReadIndexResponse(r) => within(&[r.read_index]),
                MessageBody::HeartbeatResponse(_)
                | MessageBody::RequestVoteResponse(_)
                | MessageBody::Propose(_)
                | MessageBody::ReadIndex(_)
                | MessageBody::TimeoutNow => true,
            };
        if ok {
            Ok(())
        } else {
            Err(MessageError::Malformed {
                kind: self.body.kind_name(),
                reason: "a term or index is beyond any real log",
            })
        }
    }

    fn validate_append(&self, append: &Append, limits: &MessageLimits) -> Result<(), MessageError> {
        if append.entries.len() > limits.max_entries_per_message {
            return Err(MessageError::TooLarge {
                kind: "Append",
                count: append.entries.len(),
                limit: limits.max_entries_per_message,
            });
        }
        if append.prev_log_term > self.term {
            return Err(MessageError::Malformed {
                kind: "Append",
                reason: "prev_log_term is above the sender's term",
            });
        }
        let mut expected_index = append.prev_log_index;
        let mut previous_term = append.prev_log_term;
        for entry in &append.entries {
            expected_index = expected_index
                .checked_add(1)
                .ok_or(MessageError::Malformed {
                    kind: "Append",
                    reason: "entry index overflows",
                })?;
            if entry.index != expected_index {
                return Err(MessageError::Malformed {
                    kind: "Append",
                    reason: "entries are not contiguous after prev_log_index",
                });
            }
            if entry.term < previous_term || entry.term > self.term || entry.term == 0 {
                return Err(MessageError::Malformed {
                    kind: "Append",
                    reason: "entry terms must be non-decreasing, non-zero and not above the sender's term",
                });
            }
            previous_term = entry.term;
        }
        Ok(())
    }
}
