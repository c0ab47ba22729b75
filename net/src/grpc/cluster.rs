//! The Cluster service: the member list, and membership changes through Raft. The node
//! makes etcd's checks (`keel_core::node::admission`) and proposes in one step; a change
//! only the leader can judge goes to the leader.

use std::future::Future;

use keel_core::auth::Credentials;
use keel_core::node::{added_member_id, AdmissionError, Member, MemberChange, Outcome};
use keel_core::rpctypes::RpcError;
use tonic::{Request, Response, Status};

use super::convert::{self, HeaderSource};
use super::forward::{is_forwarded, mark_forwarded, pass_token, Forwarder};
use super::status;
use super::{Api, Header};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::server_loop::handle::{ApiError, Consistency, Written};
use keel_core::node::query::{AppliedIndex, MemberList};

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

    /// Has the node check and make `change`; when only the leader can judge it (and the
    /// request did not come from another member already), `forward` asks the leader, and
    /// its answer goes back to the client.
    async fn change_or_forward<R, Fut>(
        &self,
        change: MemberChange,
        forwarded: bool,
        forward: impl FnOnce() -> Fut,
    ) -> Result<Changed<R>, Status>
    where
        Fut: Future<Output = Result<R, Status>>,
    {
        match self.api.handle.member_change(change).await {
            Ok(written) => {
                let (members, header) = self.changed(written)?;
                Ok(Changed::Here(members, header))
            }
            Err(ApiError::Membership(AdmissionError::NotLeader)) if !forwarded => {
                let answer = forward().await?;
                // As etcd's, the member asked answers once it applied the change itself: a
                // member added through it may ask it for the members as it starts. The
                // leader answered after applying it, so a read index covers it; the change
                // is made whether or not this member gets there in time.
                let _ = self
                    .api
                    .handle
                    .ask(Consistency::Linearizable, AppliedIndex)
                    .await;
                Ok(Changed::ByLeader(answer, self.header_here().await?))
            }
            Err(error) => Err(status(error)),
        }
    }

    /// The members after an applied change, with the header to answer with.
    fn changed(&self, written: Written) -> Result<(Vec<pb::Member>, Header), Status> {
        let header = self.api.header_at(written.raft_term);
        match written.outcome {
            Outcome::MembershipChanged { members } => Ok((convert::members(members), header)),
            Outcome::MembershipRefused(error) => Err(status(RpcError::from(error))),
            Outcome::Lost => Err(status(ApiError::LeaderChanged)),
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
        let change = MemberChange::Add {
            id,
            peer_urls: peer_urls.clone(),
            is_learner,
        };
        let forward = || self.forward_add(peer_urls.clone(), is_learner, &credentials);
        let response = match self.change_or_forward(change, forwarded, forward).await? {
            Changed::Here(members, header) => pb::MemberAddResponse {
                header: cluster_header(&header),
                member: Some(convert::member(Member {
                    id,
                    peer_urls,
                    is_learner,
                    ..Member::default()
                })),
                members,
            },
            Changed::ByLeader(response, header) => pb::MemberAddResponse { header, ..response },
        };
        Ok(Response::new(response))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let credentials = self.api.credentials(&request);
        self.api.require_admin(&credentials).await?;
        let forwarded = is_forwarded(&request);
        let id = request.into_inner().id;
        let forward = || self.forward_remove(id, &credentials);
        let change = MemberChange::Remove { id };
        let response = match self.change_or_forward(change, forwarded, forward).await? {
            Changed::Here(members, header) => pb::MemberRemoveResponse {
                header: cluster_header(&header),
                members,
            },
            Changed::ByLeader(response, header) => pb::MemberRemoveResponse { header, ..response },
        };
        Ok(Response::new(response))
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
        let written = self
            .api
            .handle
            .member_change(MemberChange::Update { id, peer_urls })
            .await
            .map_err(status)?;
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
        let consistency = if linearizable {
            Consistency::Linearizable
        } else {
            Consistency::Unfenced
        };
        let (members, term) = self
            .api
            .handle
            .ask(consistency, MemberList)
            .await
            .map_err(status)?;
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
        // Only the leader knows how far the learner's log is: a follower asks it, as etcd's.
        let forward = || self.forward_promote(id, &credentials);
        let change = MemberChange::Promote { id };
        let response = match self.change_or_forward(change, forwarded, forward).await? {
            Changed::Here(members, header) => pb::MemberPromoteResponse {
                header: cluster_header(&header),
                members,
            },
            Changed::ByLeader(response, header) => pb::MemberPromoteResponse { header, ..response },
        };
        Ok(Response::new(response))
    }
}

/// Where a membership change was made: by this member's node (the members after it, and
/// the header to answer with), or by the leader (its answer, and this member's header).
enum Changed<R> {
    Here(Vec<pb::Member>, Header),
    ByLeader(R, Option<pb::ResponseHeader>),
}

/// Peer URLs as etcd accepts them (`types.NewURLs`): http or https, an explicit host and
/// port, no path; sorted, as etcd keeps them.
pub fn peer_urls(urls: Vec<String>) -> Result<Vec<String>, Status> {
    if urls.is_empty() || !urls.iter().all(|u| is_valid_peer_url(u)) {
        return Err(status(RpcError::MemberBadUrls));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
