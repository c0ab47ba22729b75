//! What a leader knows of each voter's health, for etcd's strict reconfiguration checks:
//! a peer is up when it has answered every few heartbeats for an election timeout.

use crate::raft::NodeId;

use super::admission::VotersUp;
use super::Node;

/// Heartbeats a peer may miss before it no longer counts as up (see
/// [`Node::voter_liveness`]).
pub(super) const ACTIVE_WINDOW_HEARTBEATS: u64 = 3;

/// What a leader knows of a voter's health, for etcd's strict reconfiguration checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoterLiveness {
    /// Not heard from for an election timeout: not part of any quorum that is up.
    Down,
    /// Heard from lately, but missed heartbeats or answered for less than an election
    /// timeout: neither down nor to be counted on.
    Unsteady,
    /// Answered every few heartbeats for at least an election timeout (or this node).
    Up,
}

/// A peer heard from without a pause longer than the window since `since_tick`.
#[derive(Clone, Copy, Debug)]
pub(super) struct HeardStreak {
    since_tick: u64,
    last_tick: u64,
}

impl Node {
    /// Voter `id`'s health as this node sees it, for etcd's strict reconfiguration check.
    /// Only a leader hears from every voter (a follower hears from the leader alone), so
    /// only a leader's answer means anything. etcd asks its transport whether the peer has
    /// been connected for 5 s (up) or is not connected at all (down); keel asks whether the
    /// peer answers, which is what a quorum needs. Up is strict (a member that crashed a few
    /// heartbeats ago no longer counts) and down is strict too (a member heard within an
    /// election timeout is not down): whatever lies between counts as neither.
    pub fn voter_liveness(&self, id: NodeId) -> VoterLiveness {
        if id == self.id {
            return VoterLiveness::Up;
        }
        let election_ticks = u64::from(self.config.raft.election_ticks);
        let Some(streak) = self.peer_heard.get(&id) else {
            return VoterLiveness::Down;
        };
        let silent_ticks = self.ticks.saturating_sub(streak.last_tick);
        if silent_ticks > election_ticks {
            VoterLiveness::Down
        } else if silent_ticks <= self.heard_window_ticks()
            && self.ticks.saturating_sub(streak.since_tick) >= election_ticks
        {
            VoterLiveness::Up
        } else {
            VoterLiveness::Unsteady
        }
    }

    /// Silence longer than this many ticks ends a peer's streak: a leader's heartbeats go
    /// out every `heartbeat_ticks`, and a live follower answers each.
    pub(super) fn heard_window_ticks(&self) -> u64 {
        ACTIVE_WINDOW_HEARTBEATS * u64::from(self.config.raft.heartbeat_ticks.max(1))
    }

    pub(super) fn heard_from(&mut self, peer: NodeId) {
        // Members only: the map stays as small as the member list.
        if self.members.get(peer).is_none() {
            return;
        }
        let (now, window) = (self.ticks, self.heard_window_ticks());
        let streak = self.peer_heard.entry(peer).or_insert(HeardStreak {
            since_tick: now,
            last_tick: now,
        });
        if now.saturating_sub(streak.last_tick) > window {
            streak.since_tick = now;
        }
        streak.last_tick = now;
    }

    /// The voters' health as this node sees it: `None` unless it leads.
    pub fn voters_up(&self) -> VotersUp {
        if !self.is_leader() {
            return VotersUp(None);
        }
        let voters = self.members.iter().filter(|m| !m.is_learner);
        VotersUp(Some(
            voters.map(|m| (m.id, self.voter_liveness(m.id))).collect(),
        ))
    }
}
