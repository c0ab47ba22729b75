//! Requests a member holds back rather than refuses: while it is fenced after a restart
//! (see `start_fence`), what reads its own state waits until it has caught up; while no
//! leader is known, what needs one waits out one election timeout. Held, a client sees an
//! election or a catch-up as a slower answer instead of `etcdserver: no leader` (etcd does
//! not serve clients at all before it knows a leader). The server keeps the held requests;
//! the node decides when each may go and when all must fail.

use super::Node;

/// What a request needs before the node can carry it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: answered at once (what Raft knows, this member's own status).
    Nothing,
    /// This member's applied state, current as of before its restart (a serializable read).
    LocalState,
    /// A leader (a write, a membership change, a linearizable read).
    Leader,
}

impl Node {
    /// Whether a request that needs `needs` must wait.
    pub fn must_hold(&self, needs: Needs) -> bool {
        match needs {
            Needs::Nothing => false,
            Needs::LocalState => !self.serves_local_reads(),
            Needs::Leader => {
                self.raft.leader().is_none() && self.leaderless_ticks < self.election_ticks()
            }
        }
    }

    /// Whether what is held must fail now, with `no leader`: there has been none for an
    /// election timeout. A fenced member cannot catch up without one either.
    pub fn held_requests_fail(&self) -> bool {
        self.raft.leader().is_none() && self.leaderless_ticks >= self.election_ticks()
    }

    /// On a tick: how long this member has known no leader.
    pub(super) fn count_leaderless_ticks(&mut self) {
        self.leaderless_ticks = match self.raft.leader() {
            Some(_) => 0,
            None => self.leaderless_ticks.saturating_add(1),
        };
    }

    fn election_ticks(&self) -> u64 {
        u64::from(self.config.raft.election_ticks)
    }
}
