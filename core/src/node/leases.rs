//! Lease timing, which lives on the leader only: expiries and TTL checkpoints go through
//! the log so every member deletes the same keys at the same revision; keep-alives and
//! TTL questions are answered from the leader's lease clock.

use crate::coverage::Path;
use crate::mvcc::{
    self, Command, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
};

use super::proposal::{ProposalBody, NO_CLIENT};
use super::Node;

impl Node {
    /// Only the leader decides that a lease expired, and says so through the log, so every
    /// member deletes the same keys at the same revision.
    pub(super) fn propose_lease_expiries(&mut self) {
        let expired = self.store.expired_leases(
            self.lease_clock.now_ms(),
            self.config.max_lease_revokes_per_tick,
        );
        let recent_ticks = 4 * u64::from(self.config.raft.election_ticks);
        for id in expired {
            if self.ticks.saturating_sub(self.leader_since_tick) < recent_ticks {
                self.coverage.hit(Path::LeaseExpiredAfterLeaderChange);
            }
            let revoke = Command::LeaseRevoke(LeaseRevokeRequest { id });
            // Refused only if leadership is moving; the lease is offered again later.
            let _ = self.propose(NO_CLIENT, ProposalBody::Store(revoke));
        }
    }

    pub(super) fn propose_lease_checkpoints(&mut self) {
        let interval = self.config.lease_checkpoint_interval_ticks;
        if interval == 0 || !self.ticks.is_multiple_of(interval) {
            return;
        }
        let checkpoints = self.store.lease_checkpoints(
            self.lease_clock.now_ms(),
            self.config.max_lease_checkpoints_per_tick,
        );
        if let Some(request) = checkpoints {
            let _ = self.propose(
                NO_CLIENT,
                ProposalBody::Store(Command::LeaseCheckpoint(request)),
            );
        }
    }

    /// Renews a lease; leader only ([`mvcc::Error::NotPrimary`] elsewhere, for the server to
    /// forward). May propose a checkpoint of the remaining TTL.
    pub fn lease_keep_alive(
        &mut self,
        request: &LeaseKeepAliveRequest,
    ) -> Result<mvcc::LeaseKeepAliveResponse, mvcc::Error> {
        let outcome = self
            .store
            .lease_keep_alive(request, self.lease_clock.now_ms())?;
        if let Some(request) = outcome.checkpoint.clone() {
            let _ = self.propose(
                NO_CLIENT,
                ProposalBody::Store(Command::LeaseCheckpoint(request)),
            );
        }
        Ok(outcome.response)
    }

    /// Leader only, like keep-alive.
    pub fn lease_time_to_live(
        &self,
        request: &LeaseTimeToLiveRequest,
    ) -> Result<mvcc::LeaseTimeToLiveResponse, mvcc::Error> {
        self.store
            .lease_time_to_live(request, self.lease_clock.now_ms())
    }
}
