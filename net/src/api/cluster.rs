//! The Cluster service: the member list, and membership changes through Raft with etcd's
//! checks before proposing (`ValidateConfigurationChange` and the strict reconfiguration
//! checks: a change must not leave fewer started voters than a quorum).

use std::collections::BTreeMap;

use keel_core::auth::Credentials;
use keel_core::node::{
    added_member_id, Member, Members, Node, Outcome, ProposalBody, VoterLiveness,
};
use keel_core::raft::ConfChangeKind;
use tonic::{Request, Response, Status};

use super::convert::{self, HeaderSource};
use super::errors::EtcdError;
use super::forward::{is_forwarded, mark_forwarded, pass_token, Forwarder};
use super::{api_status, Api, Header};
use crate::handle::{ApiError, Written};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::cluster_server::Cluster;

/// etcd's default `--max-learners`.
const MAX_LEARNERS: usize = 1;

#[derive(Clone, Debug)]
pub struct ClusterService {
    api: Api,
    forwarder: Forwarder,
}

impl ClusterService {
    pub fn new(api: Api) -> ClusterService {
        let forwarder = Forwarder::new(api.handle.clone(), api.client_tls.clone());
        ClusterService { api, forwarder }
    }

    /// Runs a check against the members on the loop.
    async fn check<T: Send + 'static>(
        &self,
        check: impl FnOnce(&Node) -> Result<T, EtcdError> + Send + 'static,
    ) -> Result<T, Status> {
        let checked = self
            .api
            .handle
            .call(move |node| check(node))
            .await
            .map_err(api_status)?;
        checked.map_err(EtcdError::status)
    }

    /// The members after an applied change, with the header to answer with.
    fn changed(&self, written: Written) -> Result<(Vec<pb::Member>, Header), Status> {
        let header = self.api.header_at(written.raft_term);
        match written.outcome {
            Outcome::MembershipChanged { members } => Ok((convert::members(members), header)),
            Outcome::Lost => Err(api_status(ApiError::LeaderChanged)),
            other => Err(Status::internal(format!(
                "a membership change was answered with {other:?}"
            ))),
        }
    }

    /// This member's header for an answer the leader gave (the client asked this member).
    async fn header_here(&self) -> Result<Option<pb::ResponseHeader>, Status> {
        let term = self.api.current_header().await?.raft_term;
        Ok(cluster_header(&self.api.header_at(term)))
    }

    async fn forward_remove(
        &self,
        id: u64,
        credentials: &Credentials,
    ) -> Result<pb::MemberRemoveResponse, Status> {
        self.forwarder
            .to_leader(move |channel| async move {
                let mut request = Request::new(pb::MemberRemoveRequest { id });
                mark_forwarded(&mut request);
                pass_token(&mut request, credentials);
                let answer = ClusterClient::new(channel).member_remove(request).await?;
                Ok(answer.into_inner())
            })
            .await
    }

    async fn forward_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
        credentials: &Credentials,
    ) -> Result<pb::MemberAddResponse, Status> {
        self.forwarder
            .to_leader(move |channel| {
                let mut request = Request::new(pb::MemberAddRequest {
                    peer_ur_ls: peer_urls.clone(),
                    is_learner,
                });
                mark_forwarded(&mut request);
                pass_token(&mut request, credentials);
                async move {
                    let answer = ClusterClient::new(channel).member_add(request).await?;
                    Ok(answer.into_inner())
                }
            })
            .await
    }

    async fn forward_promote(
        &self,
        id: u64,
        credentials: &Credentials,
    ) -> Result<pb::MemberPromoteResponse, Status> {
        self.forwarder
            .to_leader(move |channel| async move {
                let mut request = Request::new(pb::MemberPromoteRequest { id });
                mark_forwarded(&mut request);
                pass_token(&mut request, credentials);
                let answer = ClusterClient::new(channel).member_promote(request).await?;
                Ok(answer.into_inner())
            })
            .await
    }
}

/// etcd leaves the revision out of Cluster headers.
fn cluster_header(header: &Header) -> Option<pb::ResponseHeader> {
    Some(header.header(0))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let credentials = self.api.credentials(&request);
        self.api.require_admin(&credentials).await?;
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let peer_urls = peer_urls(request.peer_ur_ls)?;
        // A new id every time, as etcd's (which hash the time in): the same URLs may come
        // back after a removal. The new member learns it from the cluster when it starts.
        let id = added_member_id(&peer_urls, &self.api.cluster_token, crate::random::u64());
        let is_learner = request.is_learner;
        let urls = peer_urls.clone();
        let checked = self
            .api
            .handle
            .call(move |node| {
                check_add(node.members(), id, &urls, is_learner).and_then(|()| {
                    check_add_health(node.members(), &VotersUp::of(node), is_learner)
                })
            })
            .await
            .map_err(api_status)?;
        match checked {
            Ok(()) => {}
            // Only the leader knows which voters are up: ask it.
            Err(EtcdError::NotLeader) if !forwarded => {
                let mut response = self
                    .forward_add(peer_urls, is_learner, &credentials)
                    .await?;
                response.header = self.header_here().await?;
                return Ok(Response::new(response));
            }
            Err(error) => return Err(error.status()),
        }
        let member = Member {
            id,
            peer_urls,
            is_learner,
            ..Member::default()
        };
        let kind = if is_learner {
            ConfChangeKind::AddLearner
        } else {
            ConfChangeKind::AddVoter
        };
        let written = self
            .api
            .handle
            .conf_change(kind, member.clone())
            .await
            .map_err(api_status)?;
        let (members, header) = self.changed(written)?;
        Ok(Response::new(pb::MemberAddResponse {
            header: cluster_header(&header),
            member: Some(convert::member(member)),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let credentials = self.api.credentials(&request);
        self.api.require_admin(&credentials).await?;
        let forwarded = is_forwarded(&request);
        let id = request.into_inner().id;
        let checked = self
            .api
            .handle
            .call(move |node| check_remove(node.members(), &VotersUp::of(node), id))
            .await
            .map_err(api_status)?;
        let member = match checked {
            Ok(member) => member,
            // Only the leader knows which voters are up: ask it.
            Err(EtcdError::NotLeader) if !forwarded => {
                let mut response = self.forward_remove(id, &credentials).await?;
                response.header = self.header_here().await?;
                return Ok(Response::new(response));
            }
            Err(error) => return Err(error.status()),
        };
        let written = self
            .api
            .handle
            .conf_change(ConfChangeKind::RemoveNode, member)
            .await
            .map_err(api_status)?;
        let (members, header) = self.changed(written)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: cluster_header(&header),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let credentials = self.api.credentials(&request);
        self.api.require_admin(&credentials).await?;
        let request = request.into_inner();
        let id = request.id;
        let peer_urls = peer_urls(request.peer_ur_ls)?;
        let urls = peer_urls.clone();
        self.check(move |node| check_update(node.members(), id, &urls))
            .await?;
        let written = self
            .api
            .handle
            .write(ProposalBody::UpdatePeerUrls { id, peer_urls }, credentials)
            .await
            .map_err(api_status)?;
        let (members, header) = self.changed(written)?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: cluster_header(&header),
            members,
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let credentials = self.api.credentials(&request);
        self.api.require_user(&credentials).await?;
        // As etcd: served from this member's state unless the client asks otherwise, even
        // when it has no leader (a member restarted alone lists every member, client URLs
        // included: clients such as Patroni find the others through it).
        let linearizable = request.into_inner().linearizable;
        let list = |node: &mut Node| {
            let members: Vec<Member> = node.members().iter().cloned().collect();
            (members, node.raft().term())
        };
        let (members, term) = if linearizable {
            self.api.handle.read(true, list).await
        } else {
            self.api.handle.call_unfenced(list).await
        }
        .map_err(api_status)?;
        Ok(Response::new(pb::MemberListResponse {
            header: cluster_header(&self.api.header_at(term)),
            members: convert::members(members),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let credentials = self.api.credentials(&request);
        self.api.require_admin(&credentials).await?;
        let forwarded = is_forwarded(&request);
        let id = request.into_inner().id;
        let checked = self
            .api
            .handle
            .call(move |node| check_promote(node, id))
            .await
            .map_err(api_status)?;
        let member = match checked {
            Ok(member) => member,
            // Only the leader knows how far the learner's log is: ask it, as etcd does.
            Err(EtcdError::NotLeader) if !forwarded => {
                let mut response = self.forward_promote(id, &credentials).await?;
                response.header = self.header_here().await?;
                return Ok(Response::new(response));
            }
            Err(error) => return Err(error.status()),
        };
        let written = self
            .api
            .handle
            .conf_change(ConfChangeKind::PromoteLearner, member)
            .await
            .map_err(api_status)?;
        let (members, header) = self.changed(written)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: cluster_header(&header),
            members,
        }))
    }
}

/// Peer URLs as etcd accepts them (`types.NewURLs`): http or https, an explicit host and
/// port, no path; sorted, as etcd keeps them.
pub fn peer_urls(urls: Vec<String>) -> Result<Vec<String>, Status> {
    if urls.is_empty() || !urls.iter().all(|u| is_valid_peer_url(u)) {
        return Err(EtcdError::MemberBadUrls.status());
    }
    let mut urls = urls;
    urls.sort();
    Ok(urls)
}

fn is_valid_peer_url(raw: &str) -> bool {
    let Ok(url) = url::Url::parse(raw) else {
        return false;
    };
    let authority = raw.split_once("://").map_or("", |(_, rest)| {
        rest.split(['/', '?', '#']).next().unwrap_or("")
    });
    let explicit_port = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && explicit_port
        && matches!(url.path(), "" | "/")
        && url.query().is_none()
}

fn is_started(member: &Member) -> bool {
    // etcd: a member is started once it published its name.
    !member.name.is_empty()
}

/// Voters, and how many of them started, leaving out `except`.
fn voters_started(members: &Members, except: Option<u64>) -> (usize, usize) {
    let voters = members
        .iter()
        .filter(|m| !m.is_learner && Some(m.id) != except);
    voters.fold((0, 0), |(all, started), m| {
        (all + 1, started + usize::from(is_started(m)))
    })
}

fn has_quorum_started(voters: usize, started: usize) -> bool {
    started > voters / 2
}

pub fn check_add(
    members: &Members,
    id: u64,
    peer_urls: &[String],
    is_learner: bool,
) -> Result<(), EtcdError> {
    if members.is_removed(id) {
        return Err(EtcdError::IdRemoved);
    }
    // URLs first: with ids derived from URLs, a taken URL usually means a taken id too,
    // and the URL is what the operator can change.
    if members
        .iter()
        .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
    {
        return Err(EtcdError::PeerUrlExists);
    }
    if members.get(id).is_some() {
        return Err(EtcdError::MemberExists);
    }
    if is_learner {
        if members.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
            return Err(EtcdError::TooManyLearners);
        }
        return Ok(());
    }
    let (voters, started) = voters_started(members, None);
    // etcd lets a lone started member take a second one (restoring a cluster from backup).
    let lone_member = voters == 1 && started == 1;
    if !lone_member && !has_quorum_started(voters + 1, started) {
        return Err(EtcdError::MemberNotEnoughStarted);
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
) -> Result<(), EtcdError> {
    if is_learner {
        return Ok(());
    }
    let voters = members.iter().filter(|m| !m.is_learner).count();
    if voters == 1 {
        return Ok(());
    }
    let VotersUp(Some(liveness)) = voters_up else {
        return Err(EtcdError::NotLeader);
    };
    let up = liveness
        .values()
        .filter(|&&l| l == VoterLiveness::Up)
        .count();
    if !has_quorum_started(voters + 1, up) {
        return Err(EtcdError::Unhealthy);
    }
    Ok(())
}

/// The voters' health as the leader sees it (see `Node::voter_liveness`), for etcd's
/// strict reconfiguration check. Only a leader hears from every voter (a follower hears
/// from the leader alone), so a follower's view is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VotersUp(Option<BTreeMap<u64, VoterLiveness>>);

impl VotersUp {
    pub fn of(node: &Node) -> VotersUp {
        if !node.is_leader() {
            return VotersUp(None);
        }
        let voters = node.members().iter().filter(|m| !m.is_learner);
        VotersUp(Some(
            voters.map(|m| (m.id, node.voter_liveness(m.id))).collect(),
        ))
    }
}

/// etcd's checks of a removal (`mayRemoveMember` with `--strict-reconfig-check`): the
/// started voters left make a quorum, and so do the voters up, in the leader's view (a
/// follower answers `NotLeader` and the request goes to the leader). A voter that is down
/// may always go: it is not part of the quorum that is up.
pub fn check_remove(members: &Members, voters_up: &VotersUp, id: u64) -> Result<Member, EtcdError> {
    let member = members.get(id).ok_or(EtcdError::MemberNotFound)?;
    if member.is_learner {
        return Ok(member.clone());
    }
    let (voters, started) = voters_started(members, Some(id));
    if !has_quorum_started(voters, started) {
        return Err(EtcdError::MemberNotEnoughStarted);
    }
    let VotersUp(Some(liveness)) = voters_up else {
        return Err(EtcdError::NotLeader);
    };
    if liveness.get(&id) == Some(&VoterLiveness::Down) {
        return Ok(member.clone());
    }
    // The voters up after the removal, out of those left.
    let up_left = liveness
        .iter()
        .filter(|&(&voter, &l)| voter != id && l == VoterLiveness::Up)
        .count();
    if !has_quorum_started(voters, up_left) {
        return Err(EtcdError::Unhealthy);
    }
    Ok(member.clone())
}

pub fn check_update(members: &Members, id: u64, peer_urls: &[String]) -> Result<(), EtcdError> {
    if members.get(id).is_none() {
        return Err(EtcdError::MemberNotFound);
    }
    let taken = members
        .iter()
        .filter(|m| m.id != id)
        .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)));
    if taken {
        return Err(EtcdError::PeerUrlExists);
    }
    Ok(())
}

/// A learner may be promoted once its log matches at least 90% of the leader's (etcd's
/// `readyPercentThreshold`) and the voters that started, with it, make a quorum.
pub fn check_promote(node: &Node, id: u64) -> Result<Member, EtcdError> {
    let member = node
        .members()
        .get(id)
        .ok_or(EtcdError::MemberNotFound)?
        .clone();
    if !member.is_learner {
        return Err(EtcdError::MemberNotLearner);
    }
    if !node.is_leader() {
        return Err(EtcdError::NotLeader);
    }
    let status = node.raft().status();
    let learner_match = status
        .progress
        .get(&id)
        .map(|p| p.match_index)
        .ok_or(EtcdError::MemberNotFound)?;
    let leader_match = status
        .progress
        .get(&node.id())
        .map_or(status.last_index, |p| p.match_index);
    if !is_in_sync(learner_match, leader_match) {
        return Err(EtcdError::LearnerNotReady);
    }
    let (voters, started) = voters_started(node.members(), None);
    // The learner counts as a started voter after its promotion.
    if !has_quorum_started(voters + 1, started + 1) {
        return Err(EtcdError::MemberNotEnoughStarted);
    }
    Ok(member)
}

fn is_in_sync(learner_match: u64, leader_match: u64) -> bool {
    u128::from(learner_match) * 10 >= u128::from(leader_match) * 9
}

#[cfg(test)]
mod tests {
    use keel_core::raft::ConfChange;
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

    fn three() -> Members {
        Members::new([
            member(1, "a", "http://127.0.0.1:2380", false),
            member(2, "b", "http://127.0.0.1:2382", false),
            member(3, "", "http://127.0.0.1:2384", false),
        ])
    }

    #[test]
    fn peer_urls_must_be_http_with_host_and_port() {
        for good in ["http://127.0.0.1:2380", "https://node-1.example:2380/"] {
            assert!(is_valid_peer_url(good), "{good}");
        }
        for bad in [
            "127.0.0.1:2380",
            "http://127.0.0.1",
            "ftp://127.0.0.1:2380",
            "http://127.0.0.1:2380/path",
            "http://:2380",
            "not a url",
        ] {
            assert!(!is_valid_peer_url(bad), "{bad}");
        }
        let sorted = peer_urls(vec!["http://b:1".into(), "http://a:1".into()]).unwrap();
        assert_eq!(
            sorted,
            vec!["http://a:1".to_string(), "http://b:1".to_string()]
        );
        assert_eq!(
            peer_urls(vec![]).unwrap_err().message(),
            "etcdserver: given member URLs are invalid"
        );
    }

    #[test]
    fn add_refuses_taken_urls_existing_and_removed_ids_and_a_second_learner() {
        let mut members = three();
        let taken = vec!["http://127.0.0.1:2382".to_string()];
        assert_eq!(
            check_add(&members, 9, &taken, false),
            Err(EtcdError::PeerUrlExists)
        );
        let free = vec!["http://127.0.0.1:2390".to_string()];
        assert_eq!(
            check_add(&members, 2, &free, false),
            Err(EtcdError::MemberExists)
        );
        assert_eq!(check_add(&members, 9, &free, true), Ok(()));
        let remove = ConfChange {
            kind: ConfChangeKind::RemoveNode,
            node_id: 3,
            context: bytes::Bytes::new(),
        };
        members.apply_conf_change(&remove, None);
        assert_eq!(
            check_add(&members, 3, &free, false),
            Err(EtcdError::IdRemoved)
        );
        let add_learner = ConfChange {
            kind: ConfChangeKind::AddLearner,
            node_id: 4,
            context: bytes::Bytes::new(),
        };
        members.apply_conf_change(&add_learner, None);
        assert_eq!(
            check_add(&members, 9, &free, true),
            Err(EtcdError::TooManyLearners)
        );
    }

    #[test]
    fn a_voter_is_added_only_while_started_voters_keep_a_quorum() {
        let free = vec!["http://127.0.0.1:2390".to_string()];
        // Two of three started: after the add, two of four is no quorum.
        assert_eq!(
            check_add(&three(), 9, &free, false),
            Err(EtcdError::MemberNotEnoughStarted)
        );
        let lone = Members::new([member(1, "a", "http://127.0.0.1:2380", false)]);
        assert_eq!(check_add(&lone, 9, &free, false), Ok(()));
    }

    #[test]
    fn remove_refuses_unknown_members_and_losing_the_started_quorum() {
        let members = three();
        let all_up = voters([(1, Up), (2, Up), (3, Up)]);
        assert_eq!(
            check_remove(&members, &all_up, 9),
            Err(EtcdError::MemberNotFound)
        );
        // Removing the unstarted member leaves two started of two.
        assert_eq!(check_remove(&members, &all_up, 3).map(|m| m.id), Ok(3));
        // Removing a started one leaves one started of two.
        assert_eq!(
            check_remove(&members, &all_up, 1),
            Err(EtcdError::MemberNotEnoughStarted)
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
            Err(EtcdError::Unhealthy)
        );
        // A member back a moment ago is not up yet.
        let one_back = voters([(1, Up), (2, Up), (3, Unsteady)]);
        assert_eq!(
            check_add_health(&members, &one_back, false),
            Err(EtcdError::Unhealthy)
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
            Err(EtcdError::NotLeader)
        );
    }

    #[test]
    fn remove_refuses_losing_the_quorum_of_voters_up_like_etcds_unhealthy_cluster() {
        let members = three_started();
        // 3 is down: removing 2, which is up, would leave one up of two.
        let one_down = voters([(1, Up), (2, Up), (3, Down)]);
        assert_eq!(
            check_remove(&members, &one_down, 2),
            Err(EtcdError::Unhealthy)
        );
        // Removing the member that is down leaves two up of two.
        assert_eq!(check_remove(&members, &one_down, 3).map(|m| m.id), Ok(3));
        // All up: any one may go.
        let all_up = voters([(1, Up), (2, Up), (3, Up)]);
        assert_eq!(check_remove(&members, &all_up, 2).map(|m| m.id), Ok(2));
        // Only the leader knows who is up.
        assert_eq!(
            check_remove(&members, &VotersUp(None), 2),
            Err(EtcdError::NotLeader)
        );
    }

    #[test]
    fn an_unsteady_voter_is_neither_counted_up_nor_removable_as_down() {
        let members = three_started();
        // 3 stopped answering a moment ago: removing 2 would leave one up of two.
        let just_crashed = voters([(1, Up), (2, Up), (3, Unsteady)]);
        assert_eq!(
            check_remove(&members, &just_crashed, 2),
            Err(EtcdError::Unhealthy)
        );
        // 2 came back a moment ago, 3 is down: 2 is not down, so removing it counts.
        let back = voters([(1, Up), (2, Unsteady), (3, Down)]);
        assert_eq!(check_remove(&members, &back, 2), Err(EtcdError::Unhealthy));
        assert_eq!(check_remove(&members, &back, 3).map(|m| m.id), Ok(3));
    }

    #[test]
    fn update_refuses_unknown_members_and_urls_of_others() {
        let members = three();
        let own = vec!["http://127.0.0.1:2380".to_string()];
        assert_eq!(check_update(&members, 1, &own), Ok(()));
        assert_eq!(
            check_update(&members, 2, &own),
            Err(EtcdError::PeerUrlExists)
        );
        assert_eq!(
            check_update(&members, 9, &own),
            Err(EtcdError::MemberNotFound)
        );
    }

    #[test]
    fn a_learner_is_in_sync_at_ninety_percent_of_the_leaders_log() {
        assert!(is_in_sync(90, 100));
        assert!(!is_in_sync(89, 100));
        assert!(is_in_sync(0, 0));
        assert!(is_in_sync(u64::MAX, u64::MAX));
    }
}
