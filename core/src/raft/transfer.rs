//! Leader transfer (thesis §3.10): the leader brings the target's log up to date, then tells
//! it to start an election at once with `TimeoutNow`. Proposals pause meanwhile, and the
//! transfer is abandoned after an election timeout.

use super::entry::NodeId;
use super::error::TransferError;
use super::message::MessageBody;
use super::state::Role;
use super::{LeaderTransfer, Raft};

impl Raft {
    /// Asks this leader to hand leadership to `to`.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        if !self.conf.voters.contains(&to) {
            return Err(TransferError::NotVoter { to });
        }
        if to == self.id || self.transfer.is_some_and(|t| t.to == to) {
            return Ok(());
        }
        self.transfer = Some(LeaderTransfer {
            to,
            elapsed_ticks: 0,
        });
        if !self.maybe_finish_transfer(to) {
            self.broadcast_pending = true;
        }
        Ok(())
    }

    /// Sends `TimeoutNow` if `from` is the transfer target and its log is complete.
    pub(super) fn maybe_finish_transfer(&mut self, from: NodeId) -> bool {
        let caught_up = self.transfer.is_some_and(|t| t.to == from)
            && self
                .progress
                .get(&from)
                .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(from, MessageBody::TimeoutNow);
        }
        caught_up
    }

    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role != Role::Leader && self.leader == Some(from) {
            self.start_election(true);
        }
    }

    /// Abandons a transfer that did not finish within an election timeout.
    pub(super) fn tick_transfer(&mut self) {
        if let Some(transfer) = &mut self.transfer {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= self.config.election_ticks {
                self.transfer = None;
            }
        }
    }

    /// The member leadership is being transferred to, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }
}
