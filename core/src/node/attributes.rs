//! A member announces its name and client URLs to the cluster through the log, as etcd's
//! `publish` does: as soon as a leader is known, and again every [`PUBLISH_RETRY_TICKS`]
//! until the applied membership shows them (a proposal is lost when leadership moves).

use super::{Node, ProposalBody, NO_CLIENT};

/// How often, in ticks, a member proposes its attributes again until they are applied.
pub const PUBLISH_RETRY_TICKS: u64 = 20;

impl Node {
    /// Proposes this member's attributes (`NodeConfig::attributes`), unless the applied
    /// membership shows them already or no leader is known to commit them.
    pub(super) fn publish_attributes(&mut self) {
        let Some(attributes) = &self.config.attributes else {
            return;
        };
        if self.members.shows(attributes) || self.raft.leader().is_none() {
            return;
        }
        let body = ProposalBody::PublishMember(attributes.clone());
        // Refused only while leadership moves: proposed again by the next leader's arrival
        // or the next retry.
        let _ = self.propose(NO_CLIENT, body);
    }

    /// On a tick: the retry.
    pub(super) fn republish_attributes(&mut self) {
        if self.ticks % PUBLISH_RETRY_TICKS == 1 {
            self.publish_attributes();
        }
    }

    /// On news of the leader: announce at once when there is a new one.
    pub(super) fn publish_to_new_leader(&mut self, leader: Option<super::NodeId>) {
        if leader == self.known_leader {
            return;
        }
        self.known_leader = leader;
        if leader.is_some() {
            self.publish_attributes();
        }
    }
}
