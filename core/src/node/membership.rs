//! A client's membership change: checked against etcd's rules (see `admission`) with what
//! only the leader knows (who is up, how far a learner is), then proposed as a Raft
//! membership change; checked again when it applies.

use bytes::Bytes;

use crate::raft::{ConfChange, ConfChangeKind, NodeId};

use super::admission::{AdmissionError, MemberChange};
use super::members::Member;
use super::proposal::{ConfChangeContext, ProposalBody};
use super::{admission, Node, NodeProposeError};

impl Node {
    /// Checks a client's membership change and proposes it, in one call: only a leader
    /// proposes one (a follower answers `NotLeader`, and the server asks the leader), and
    /// Raft takes one at a time, so the members it was checked against are the members it
    /// applies to (see [`admission`]). Returns the member record it carries. An update of
    /// peer URLs is a normal entry, checked again when it applies.
    pub fn propose_member_change(
        &mut self,
        request_id: u64,
        change: MemberChange,
    ) -> Result<Member, NodeProposeError> {
        let member = self.admit(&change)?;
        match (change.kind(), change) {
            (None, MemberChange::Update { id, peer_urls }) => {
                self.propose(request_id, ProposalBody::UpdatePeerUrls { id, peer_urls })?;
            }
            (Some(kind), _) if self.is_leader() => {
                self.propose_conf_change(request_id, kind, member.clone())?;
            }
            _ => return Err(AdmissionError::NotLeader.into()),
        }
        Ok(member)
    }

    /// etcd's checks of `change` against the members in force and the leader's view.
    pub(super) fn admit(&self, change: &MemberChange) -> Result<Member, AdmissionError> {
        match *change {
            MemberChange::Add {
                id,
                ref peer_urls,
                is_learner,
            } => {
                let member = Member {
                    id,
                    peer_urls: peer_urls.clone(),
                    is_learner,
                    ..Member::default()
                };
                admission::check_add(&self.members, &member)?;
                admission::check_add_health(&self.members, &self.voters_up(), is_learner)?;
                Ok(member)
            }
            MemberChange::Remove { id } => {
                admission::check_remove(&self.members, &self.voters_up(), id)
            }
            MemberChange::Promote { id } => {
                admission::check_promote(&self.members, id, self.learner_progress(id)?)
            }
            MemberChange::Update { id, ref peer_urls } => {
                admission::check_update(&self.members, id, peer_urls)?;
                Ok(self.members.get(id).cloned().unwrap_or_default())
            }
        }
    }

    /// How far a learner's log is next to the leader's (`None` unless this node leads).
    pub(super) fn learner_progress(
        &self,
        id: NodeId,
    ) -> Result<Option<admission::LearnerProgress>, AdmissionError> {
        if !self.is_leader() {
            return Ok(None);
        }
        let status = self.raft.status();
        let learner_match = status
            .progress
            .get(&id)
            .map(|p| p.match_index)
            .ok_or(AdmissionError::MemberNotFound)?;
        let leader_match = status
            .progress
            .get(&self.id)
            .map_or(status.last_index, |p| p.match_index);
        Ok(Some(admission::LearnerProgress {
            learner_match,
            leader_match,
        }))
    }

    /// Proposes a membership change for `member` (adding it as a voter or learner,
    /// promoting or removing it) without etcd's checks: [`Node::propose_member_change`]
    /// is the client's way.
    pub fn propose_conf_change(
        &mut self,
        request_id: u64,
        kind: ConfChangeKind,
        member: Member,
    ) -> Result<(), NodeProposeError> {
        let node_id = member.id;
        let context = ConfChangeContext {
            proposer: self.id,
            request_id,
            member,
        };
        let change = ConfChange {
            kind,
            node_id,
            context: Bytes::from(context.encode()),
        };
        let proposed = self.raft.propose_conf_change(change)?;
        self.note_appended(proposed, request_id);
        Ok(())
    }
}
