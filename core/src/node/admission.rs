//! Membership admission: etcd's checks of a member add, remove, promote or update
//! (`ValidateConfigurationChange` and the strict reconfiguration checks).
//!
//! The node checks a change and proposes it in one call ([`super::Node::propose_member_change`]),
//! and Raft takes one membership change at a time (a leader accepts none until the previous
//! one, and after an election its own first entry, is applied). So the members a change was
//! checked against are the members it applies to: when it applies, the membership rules
//! ([`admissible`]) hold again, which the node asserts. The health rules (who is started, who
//! is up in the leader's view) are the leader's judgement at the time and are not checked
//! again.
//!
//! A member update (new peer URLs) is a normal entry, not a Raft membership change, so
//! nothing orders it after other updates: it is checked when proposed and again when it
//! applies, where one that became invalid meanwhile (two updates taking the same URL at once)
//! changes nothing and is answered with the rule it breaks.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::raft::{ConfChangeKind, NodeId};
use crate::rpctypes::RpcError;

use super::members::{Member, Members};
use super::VoterLiveness;

/// etcd's default `--max-learners`.
pub const MAX_LEARNERS: usize = 1;

/// Why a membership change is refused (each is one of etcd's errors).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum AdmissionError {
    #[error("the id was removed and may never come back")]
    IdRemoved,
    #[error("the peer URLs are another member's")]
    PeerUrlExists,
    #[error("the member exists")]
    MemberExists,
    #[error("too many learners")]
    TooManyLearners,
    #[error("the started voters would not make a quorum")]
    MemberNotEnoughStarted,
    #[error("the voters up would not make a quorum")]
    Unhealthy,
    #[error("no such member")]
    MemberNotFound,
    #[error("the member is not a learner")]
    MemberNotLearner,
    #[error("the learner's log is not close enough to the leader's")]
    LearnerNotReady,
    /// Only the leader knows who is up and how far a learner is: ask it.
    #[error("only the leader can judge this change")]
    NotLeader,
}

impl From<AdmissionError> for RpcError {
    fn from(error: AdmissionError) -> RpcError {
        use AdmissionError as A;
        match error {
            A::IdRemoved => RpcError::IdRemoved,
            A::PeerUrlExists => RpcError::PeerUrlExists,
            A::MemberExists => RpcError::MemberExists,
            A::TooManyLearners => RpcError::TooManyLearners,
            A::MemberNotEnoughStarted => RpcError::MemberNotEnoughStarted,
            A::Unhealthy => RpcError::Unhealthy,
            A::MemberNotFound => RpcError::MemberNotFound,
            A::MemberNotLearner => RpcError::MemberNotLearner,
            A::LearnerNotReady => RpcError::LearnerNotReady,
            A::NotLeader => RpcError::NotLeader,
        }
    }
}

/// A membership change as a client asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    Add {
        id: NodeId,
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    Remove {
        id: NodeId,
    },
    Promote {
        id: NodeId,
    },
    /// New peer URLs (etcd's MemberUpdate).
    Update {
        id: NodeId,
        peer_urls: Vec<String>,
    },
}

impl MemberChange {
    /// The Raft membership change it makes (`None` for an update, a normal entry).
    pub fn kind(&self) -> Option<ConfChangeKind> {
        match self {
            MemberChange::Add {
                is_learner: true, ..
            } => Some(ConfChangeKind::AddLearner),
            MemberChange::Add { .. } => Some(ConfChangeKind::AddVoter),
            MemberChange::Remove { .. } => Some(ConfChangeKind::RemoveNode),
            MemberChange::Promote { .. } => Some(ConfChangeKind::PromoteLearner),
            MemberChange::Update { .. } => None,
        }
    }
}

/// What the leader knows of a learner's log, for a promotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnerProgress {
    pub learner_match: u64,
    pub leader_match: u64,
}

/// The voters' health as the leader sees it (see `Node::voter_liveness`), for etcd's
/// strict reconfiguration checks. Only a leader hears from every voter (a follower hears
/// from the leader alone), so a follower's view is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VotersUp(pub Option<BTreeMap<NodeId, VoterLiveness>>);

/// The membership rules a change must meet against the members it applies to: checked
/// before proposing, and asserted when the change applies.
pub fn admissible(
    members: &Members,
    kind: ConfChangeKind,
    member: &Member,
) -> Result<(), AdmissionError> {
    let id = member.id;
    match kind {
        ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
            if members.is_removed(id) {
                return Err(AdmissionError::IdRemoved);
            }
            // URLs first: with ids derived from URLs, a taken URL usually means a taken id
            // too, and the URL is what the operator can change.
            if members
                .iter()
                .any(|m| m.peer_urls.iter().any(|u| member.peer_urls.contains(u)))
            {
                return Err(AdmissionError::PeerUrlExists);
            }
            if members.get(id).is_some() {
                return Err(AdmissionError::MemberExists);
            }
            Ok(())
        }
        ConfChangeKind::RemoveNode => match members.get(id) {
            Some(_) => Ok(()),
            None => Err(AdmissionError::MemberNotFound),
        },
        ConfChangeKind::PromoteLearner => match members.get(id) {
            Some(m) if m.is_learner => Ok(()),
            Some(_) => Err(AdmissionError::MemberNotLearner),
            None => Err(AdmissionError::MemberNotFound),
        },
    }
}

fn is_started(member: &Member) -> bool {
    // etcd: a member is started once it published its name.
    !member.name.is_empty()
}

/// Voters, and how many of them started, leaving out `except`.
fn voters_started(members: &Members, except: Option<NodeId>) -> (usize, usize) {
    let voters = members
        .iter()
        .filter(|m| !m.is_learner && Some(m.id) != except);
    voters.fold((0, 0), |(all, started), m| {
        (all + 1, started + usize::from(is_started(m)))
    })
}

fn is_quorum(voters: usize, counted: usize) -> bool {
    counted > voters / 2
}

/// An add: the membership rules, at most [`MAX_LEARNERS`] learners, and for a voter the
/// started voters with it (not started yet) must make a quorum; a lone started member may
/// always take a second one (restoring a cluster from a backup).
pub fn check_add(members: &Members, member: &Member) -> Result<(), AdmissionError> {
    let kind = if member.is_learner {
        ConfChangeKind::AddLearner
    } else {
        ConfChangeKind::AddVoter
    };
    admissible(members, kind, member)?;
    if member.is_learner {
        if members.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
            return Err(AdmissionError::TooManyLearners);
        }
        return Ok(());
    }
    let (voters, started) = voters_started(members, None);
    let lone_member = voters == 1 && started == 1;
    if !lone_member && !is_quorum(voters + 1, started) {
        return Err(AdmissionError::MemberNotEnoughStarted);
    }
    Ok(())
}

/// etcd's health check before adding a voter (`mayAddMember` with
/// `--strict-reconfig-check`, in etcd 3.6's form): counting the new member as down until it
/// starts, the voters up in the leader's view must still be a quorum. Adding a fourth member
/// to three with one down would otherwise leave two of four up, and the cluster stalls until
/// the new member catches up (etcd 3.4 asks more: every voter connected for 5 s). A lone
/// member may always take a second one (restoring from a backup), and a learner never
/// changes the quorum.
pub fn check_add_health(
    members: &Members,
    voters_up: &VotersUp,
    is_learner: bool,
) -> Result<(), AdmissionError> {
    if is_learner {
        return Ok(());
    }
    let voters = members.iter().filter(|m| !m.is_learner).count();
    if voters == 1 {
        return Ok(());
    }
    let VotersUp(Some(liveness)) = voters_up else {
        return Err(AdmissionError::NotLeader);
    };
    let up = liveness
        .values()
        .filter(|&&l| l == VoterLiveness::Up)
        .count();
    if !is_quorum(voters + 1, up) {
        return Err(AdmissionError::Unhealthy);
    }
    Ok(())
}

/// etcd's checks of a removal (`mayRemoveMember` with `--strict-reconfig-check`): the
/// started voters left make a quorum, and so do the voters up, in the leader's view (a
/// follower answers `NotLeader` and the request goes to the leader). A voter that is down
/// may always go: it is not part of the quorum that is up.
pub fn check_remove(
    members: &Members,
    voters_up: &VotersUp,
    id: NodeId,
) -> Result<Member, AdmissionError> {
    let member = members.get(id).ok_or(AdmissionError::MemberNotFound)?;
    if member.is_learner {
        return Ok(member.clone());
    }
    let (voters, started) = voters_started(members, Some(id));
    if !is_quorum(voters, started) {
        return Err(AdmissionError::MemberNotEnoughStarted);
    }
    let VotersUp(Some(liveness)) = voters_up else {
        return Err(AdmissionError::NotLeader);
    };
    if liveness.get(&id) == Some(&VoterLiveness::Down) {
        return Ok(member.clone());
    }
    // The voters up after the removal, out of those left.
    let up_left = liveness
        .iter()
        .filter(|&(&voter, &l)| voter != id && l == VoterLiveness::Up)
        .count();
    if !is_quorum(voters, up_left) {
        return Err(AdmissionError::Unhealthy);
    }
    Ok(member.clone())
}

/// New peer URLs for a member (etcd's MemberUpdate): it exists and the URLs are no other
/// member's.
pub fn check_update(
    members: &Members,
    id: NodeId,
    peer_urls: &[String],
) -> Result<(), AdmissionError> {
    if members.get(id).is_none() {
        return Err(AdmissionError::MemberNotFound);
    }
    let taken = members
        .iter()
        .filter(|m| m.id != id)
        .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)));
    if taken {
        return Err(AdmissionError::PeerUrlExists);
    }
    Ok(())
}

/// A learner may be promoted once its log matches at least 90% of the leader's (etcd's
/// `readyPercentThreshold`) and the voters that started, with it, make a quorum. `progress`
/// is the leader's view (`None` on a follower, which answers `NotLeader`).
pub fn check_promote(
    members: &Members,
    id: NodeId,
    progress: Option<LearnerProgress>,
) -> Result<Member, AdmissionError> {
    let member = members
        .get(id)
        .ok_or(AdmissionError::MemberNotFound)?
        .clone();
    if !member.is_learner {
        return Err(AdmissionError::MemberNotLearner);
    }
    let progress = progress.ok_or(AdmissionError::NotLeader)?;
    if !is_in_sync(progress.learner_match, progress.leader_match) {
        return Err(AdmissionError::LearnerNotReady);
    }
    let (voters, started) = voters_started(members, None);
    // The learner counts as a started voter after its promotion.
    if !is_quorum(voters + 1, started + 1) {
        return Err(AdmissionError::MemberNotEnoughStarted);
    }
    Ok(member)
}

fn is_in_sync(learner_match: u64, leader_match: u64) -> bool {
    u128::from(learner_match) * 10 >= u128::from(leader_match) * 9
}

#[cfg(test)]
mod tests {
    use crate::raft::ConfChange;
    use VoterLiveness::{Down, Unsteady, Up};

    use super::*;

    fn member(id: u64, name: &str, url: &str, is_learner: bool) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![url.into()],
            client_urls: vec![],
            is_learner,
        }
    }

    fn new_member(id: u64, url: &str, is_learner: bool) -> Member {
        member(id, "", url, is_learner)
    }

    fn three() -> Members {
        Members::new([
            member(1, "a", "http://127.0.0.1:2380", false),
            member(2, "b", "http://127.0.0.1:2382", false),
            member(3, "", "http://127.0.0.1:2384", false),
        ])
    }

    fn change(kind: ConfChangeKind, node_id: u64) -> ConfChange {
        ConfChange {
            kind,
            node_id,
            context: bytes::Bytes::new(),
        }
    }

    #[test]
    fn add_refuses_taken_urls_existing_and_removed_ids_and_a_second_learner() {
        let mut members = three();
        assert_eq!(
            check_add(&members, &new_member(9, "http://127.0.0.1:2382", false)),
            Err(AdmissionError::PeerUrlExists)
        );
        let free = "http://127.0.0.1:2390";
        assert_eq!(
            check_add(&members, &new_member(2, free, false)),
            Err(AdmissionError::MemberExists)
        );
        assert_eq!(check_add(&members, &new_member(9, free, true)), Ok(()));
        members.apply_conf_change(&change(ConfChangeKind::RemoveNode, 3), None);
        assert_eq!(
            check_add(&members, &new_member(3, free, false)),
            Err(AdmissionError::IdRemoved)
        );
        members.apply_conf_change(&change(ConfChangeKind::AddLearner, 4), None);
        assert_eq!(
            check_add(&members, &new_member(9, free, true)),
            Err(AdmissionError::TooManyLearners)
        );
    }

    #[test]
    fn the_membership_rules_hold_for_every_kind_of_change() {
        let members = three();
        let two = members.get(2).cloned().unwrap();
        assert_eq!(
            admissible(&members, ConfChangeKind::RemoveNode, &two),
            Ok(())
        );
        let unknown = new_member(9, "http://127.0.0.1:2390", false);
        assert_eq!(
            admissible(&members, ConfChangeKind::RemoveNode, &unknown),
            Err(AdmissionError::MemberNotFound)
        );
        assert_eq!(
            admissible(&members, ConfChangeKind::PromoteLearner, &two),
            Err(AdmissionError::MemberNotLearner)
        );
        assert_eq!(
            admissible(&members, ConfChangeKind::AddVoter, &unknown),
            Ok(())
        );
    }

    #[test]
    fn a_voter_is_added_only_while_started_voters_keep_a_quorum() {
        let free = "http://127.0.0.1:2390";
        // Two of three started: after the add, two of four is no quorum.
        assert_eq!(
            check_add(&three(), &new_member(9, free, false)),
            Err(AdmissionError::MemberNotEnoughStarted)
        );
        let lone = Members::new([member(1, "a", "http://127.0.0.1:2380", false)]);
        assert_eq!(check_add(&lone, &new_member(9, free, false)), Ok(()));
    }

    #[test]
    fn remove_refuses_unknown_members_and_losing_the_started_quorum() {
        let members = three();
        let all_up = voters([(1, Up), (2, Up), (3, Up)]);
        assert_eq!(
            check_remove(&members, &all_up, 9),
            Err(AdmissionError::MemberNotFound)
        );
        // Removing the unstarted member leaves two started of two.
        assert_eq!(check_remove(&members, &all_up, 3).map(|m| m.id), Ok(3));
        // Removing a started one leaves one started of two.
        assert_eq!(
            check_remove(&members, &all_up, 1),
            Err(AdmissionError::MemberNotEnoughStarted)
        );
    }

    fn three_started() -> Members {
        Members::new([
            member(1, "a", "http://127.0.0.1:2380", false),
            member(2, "b", "http://127.0.0.1:2381", false),
            member(3, "c", "http://127.0.0.1:2382", false),
        ])
    }

    fn voters<const N: usize>(liveness: [(u64, VoterLiveness); N]) -> VotersUp {
        VotersUp(Some(liveness.into_iter().collect()))
    }

    #[test]
    fn a_voter_is_added_only_while_the_voters_up_stay_a_quorum_with_it_counted_down() {
        let members = three_started();
        // 3 is down: with a fourth member not yet started, two of four would be up.
        let one_down = voters([(1, Up), (2, Up), (3, Down)]);
        assert_eq!(
            check_add_health(&members, &one_down, false),
            Err(AdmissionError::Unhealthy)
        );
        // A member back a moment ago is not up yet.
        let one_back = voters([(1, Up), (2, Up), (3, Unsteady)]);
        assert_eq!(
            check_add_health(&members, &one_back, false),
            Err(AdmissionError::Unhealthy)
        );
        // All up: three of four.
        let all_up = voters([(1, Up), (2, Up), (3, Up)]);
        assert_eq!(check_add_health(&members, &all_up, false), Ok(()));
        // A learner does not change the quorum; a lone member may take a second one.
        assert_eq!(check_add_health(&members, &one_down, true), Ok(()));
        let lone = Members::new([member(1, "a", "http://127.0.0.1:2380", false)]);
        assert_eq!(check_add_health(&lone, &VotersUp(None), false), Ok(()));
        // Only the leader knows who is up.
        assert_eq!(
            check_add_health(&members, &VotersUp(None), false),
            Err(AdmissionError::NotLeader)
        );
    }

    #[test]
    fn remove_refuses_losing_the_quorum_of_voters_up_like_etcds_unhealthy_cluster() {
        let members = three_started();
        // 3 is down: removing 2, which is up, would leave one up of two.
        let one_down = voters([(1, Up), (2, Up), (3, Down)]);
        assert_eq!(
            check_remove(&members, &one_down, 2),
            Err(AdmissionError::Unhealthy)
        );
        // Removing the member that is down leaves two up of two.
        assert_eq!(check_remove(&members, &one_down, 3).map(|m| m.id), Ok(3));
        // All up: any one may go.
        let all_up = voters([(1, Up), (2, Up), (3, Up)]);
        assert_eq!(check_remove(&members, &all_up, 2).map(|m| m.id), Ok(2));
        // Only the leader knows who is up.
        assert_eq!(
            check_remove(&members, &VotersUp(None), 2),
            Err(AdmissionError::NotLeader)
        );
    }

    #[test]
    fn an_unsteady_voter_is_neither_counted_up_nor_removable_as_down() {
        let members = three_started();
        // 3 stopped answering a moment ago: removing 2 would leave one up of two.
        let just_crashed = voters([(1, Up), (2, Up), (3, Unsteady)]);
        assert_eq!(
            check_remove(&members, &just_crashed, 2),
            Err(AdmissionError::Unhealthy)
        );
        // 2 came back a moment ago, 3 is down: 2 is not down, so removing it counts.
        let back = voters([(1, Up), (2, Unsteady), (3, Down)]);
        assert_eq!(
            check_remove(&members, &back, 2),
            Err(AdmissionError::Unhealthy)
        );
        assert_eq!(check_remove(&members, &back, 3).map(|m| m.id), Ok(3));
    }

    #[test]
    fn update_refuses_unknown_members_and_urls_of_others() {
        let members = three();
        let own = vec!["http://127.0.0.1:2380".to_string()];
        assert_eq!(check_update(&members, 1, &own), Ok(()));
        assert_eq!(
            check_update(&members, 2, &own),
            Err(AdmissionError::PeerUrlExists)
        );
        assert_eq!(
            check_update(&members, 9, &own),
            Err(AdmissionError::MemberNotFound)
        );
    }

    #[test]
    fn a_learner_is_promoted_once_in_sync_and_only_by_the_leader() {
        assert!(is_in_sync(90, 100));
        assert!(!is_in_sync(89, 100));
        assert!(is_in_sync(0, 0));
        assert!(is_in_sync(u64::MAX, u64::MAX));
        let mut members = three_started();
        members.apply_conf_change(&change(ConfChangeKind::AddLearner, 4), None);
        let ready = LearnerProgress {
            learner_match: 95,
            leader_match: 100,
        };
        assert_eq!(check_promote(&members, 4, Some(ready)).map(|m| m.id), Ok(4));
        assert_eq!(
            check_promote(&members, 4, None),
            Err(AdmissionError::NotLeader)
        );
        let behind = LearnerProgress {
            learner_match: 50,
            leader_match: 100,
        };
        assert_eq!(
            check_promote(&members, 4, Some(behind)),
            Err(AdmissionError::LearnerNotReady)
        );
        assert_eq!(
            check_promote(&members, 1, Some(ready)),
            Err(AdmissionError::MemberNotLearner)
        );
    }
}
