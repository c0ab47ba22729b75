//! A member whose durable state went back. Raft's safety rests on a voter never forgetting a
//! vote or an entry it acknowledged; a data dir that was wiped, replaced by an older copy or
//! lost synced writes breaks that silently. The leader holds the evidence: its `match_index`
//! for a follower is what that follower acknowledged in this term, after persisting it.
//!
//! - The follower learns it from a heartbeat: a heartbeat carries `min(commit, match)`, so a
//!   commit index beyond the follower's log proves the log lost acknowledged entries (etcd
//!   panics at the same point: "tocommit(X) is out of range [lastIndex(Y)]"). From then on
//!   the follower ignores every message and never campaigns: it must neither vote nor
//!   acknowledge again. The application stops it and tells the operator.
//! - The leader sees it in an Append rejection whose hint lies below `match_index`. It then
//!   sends that follower one Append per heartbeat at most (the rejection would otherwise be
//!   answered at once, forever: a resend loop at network speed) and reports it once per term
//!   as a [`Notice`].

use super::entry::{Index, NodeId, Term};

/// What a follower found out about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostState {
    /// The leader that holds the acknowledgement.
    pub leader: NodeId,
    pub term: Term,
    /// The follower acknowledged its log through at least this index, in `term`.
    pub acknowledged_index: Index,
    /// Where its log ends now.
    pub last_index: Index,
}

impl std::fmt::Display for LostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the leader {:x} holds this member's acknowledgement of its log through index {} \
             in term {}, but the log ends at index {}",
            self.leader, self.acknowledged_index, self.term, self.last_index
        )
    }
}

/// Something the protocol noticed that an operator should hear of. Raft acts on it by itself;
/// the application only reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A follower's log ends below what it acknowledged to this leader (see the module docs).
    FollowerLostState {
        follower: NodeId,
        acknowledged_index: Index,
        log_end_index: Index,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::FollowerLostState {
                follower,
                acknowledged_index,
                log_end_index,
            } => write!(
                f,
                "member {follower:x} acknowledged its log through index {acknowledged_index}, \
                 but its log now ends at or below index {log_end_index}: its data dir lost \
                 state (wiped, rolled back, or lost synced writes); it will stop itself once it \
                 hears a heartbeat, and must be replaced (member remove, member add, start with \
                 an empty data dir)"
            ),
        }
    }
}
