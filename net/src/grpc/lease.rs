//! The Lease service: Grant and Revoke go through Raft; KeepAlive and TimeToLive are the
//! leader's to answer (only its lessor keeps time), so a follower forwards them to the
//! leader as etcd does; Leases lists the replicated lease set.

use keel_core::auth::{Access, Credentials};
use keel_core::mvcc::{self, Command};
use keel_core::rpctypes::RpcError;
use tonic::codegen::tokio_stream;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, HeaderSource};
use super::forward::{is_forwarded, mark_forwarded, pass_token, Forwarder};
use super::status;
use super::{unexpected_response, Api};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::server_loop::handle::Consistency;
use keel_core::node::query::{Headed, LeaseKeepAlive, LeaseLeases, LeaseTimeToLive};
use keel_core::node::CallerCheck;

/// Keep-alive answers waiting for a slow client, at most; the stream then waits.
const KEEP_ALIVE_QUEUE: usize = 16;

#[derive(Clone, Debug)]
pub struct LeaseService {
    api: Api,
    forwarder: Forwarder,
}

impl LeaseService {
    pub fn new(api: Api) -> LeaseService {
        let forwarder = Forwarder::new(api.handle.clone(), api.client_tls.clone());
        LeaseService { api, forwarder }
    }

    /// Renews lease `id` here if this member is the leader, else at the leader. An unknown
    /// (or just expired) lease gets TTL 0, as etcd answers.
    async fn keep_alive_once(
        &self,
        id: i64,
        forwarded: bool,
        credentials: &Credentials,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let request = mvcc::LeaseKeepAliveRequest { id };
        // etcd's `checkLeaseRenew`: write access to every key on the lease (or admin).
        let check = CallerCheck::LeaseKeys {
            lease_id: id,
            access: Access::Write,
        };
        let Headed {
            value: renewed,
            term,
            revision,
        } = self
            .api
            .ask_as(
                Consistency::Serializable,
                credentials,
                check,
                LeaseKeepAlive(request),
            )
            .await?;
        // Like etcd, the header is taken before the renewal is forwarded: its revision is
        // never later than the renewal.
        let header = self.api.header_at(term);
        let expired = pb::LeaseKeepAliveResponse {
            header: Some(header.header(revision)),
            id,
            ttl: 0,
        };
        match renewed {
            Ok(response) => Ok(convert::lease_keep_alive_response(response, &header)),
            Err(mvcc::Error::LeaseNotFound) => Ok(expired),
            Err(mvcc::Error::NotPrimary) if forwarded => Err(status(RpcError::NotLeader)),
            Err(mvcc::Error::NotPrimary) => {
                let ttl = self.forward_keep_alive(id, credentials).await?;
                Ok(pb::LeaseKeepAliveResponse { ttl, ..expired })
            }
            Err(error) => Err(status(&error)),
        }
    }

    async fn forward_keep_alive(&self, id: i64, credentials: &Credentials) -> Result<i64, Status> {
        self.forwarder
            .to_leader(move |channel| async move {
                let once = tokio_stream::once(pb::LeaseKeepAliveRequest { id });
                let mut request = Request::new(once);
                mark_forwarded(&mut request);
                pass_token(&mut request, credentials);
                let mut answers = LeaseClient::new(channel)
                    .lease_keep_alive(request)
                    .await?
                    .into_inner();
                match answers.message().await? {
                    Some(answer) => Ok(answer.ttl),
                    None => Err(Status::unavailable(
                        "the leader closed the keep-alive stream without an answer",
                    )),
                }
            })
            .await
    }

    async fn forward_time_to_live(
        &self,
        request: pb::LeaseTimeToLiveRequest,
        credentials: &Credentials,
    ) -> Result<pb::LeaseTimeToLiveResponse, Status> {
        self.forwarder
            .to_leader(move |channel| {
                let mut request = Request::new(request);
                mark_forwarded(&mut request);
                pass_token(&mut request, credentials);
                async move {
                    let answer = LeaseClient::new(channel)
                        .lease_time_to_live(request)
                        .await?;
                    Ok(answer.into_inner())
                }
            })
            .await
    }
}

impl LeaseService {
    /// A LeaseGrant as `credentials`' owner: the service's call, and the in-process client
    /// of the lock and election services (see `super::concurrency`).
    pub(crate) async fn grant_as(
        &self,
        credentials: &Credentials,
        request: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, Status> {
        let grant = convert::lease_grant_request(request);
        match self
            .api
            .propose(Command::LeaseGrant(grant), credentials)
            .await?
        {
            (mvcc::Response::LeaseGrant(response), header) => {
                Ok(convert::lease_grant_response(response, &header))
            }
            _ => Err(unexpected_response("lease grant")),
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let response = self.grant_as(&credentials, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let id = request.into_inner().id;
        let revoke = Command::LeaseRevoke(mvcc::LeaseRevokeRequest { id });
        match self.api.propose(revoke, &credentials).await? {
            (mvcc::Response::LeaseRevoke(response), header) => Ok(Response::new(
                convert::lease_revoke_response(response, &header),
            )),
            _ => Err(unexpected_response("lease revoke")),
        }
    }

    type LeaseKeepAliveStream = tonic::codegen::BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let forwarded = is_forwarded(&request);
        let credentials = self.api.credentials(&request);
        let mut requests = request.into_inner();
        let (answers, stream) = tokio::sync::mpsc::channel(KEEP_ALIVE_QUEUE);
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    next = requests.message() => next,
                    () = answers.closed() => break,
                };
                // The client closed its side, or went away.
                let Ok(Some(request)) = next else { break };
                let answer = service
                    .keep_alive_once(request.id, forwarded, &credentials)
                    .await;
                let failed = answer.is_err();
                // etcd ends the stream with the first error (the client opens a new one).
                if answers.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let credentials = self.api.credentials(&request);
        let wire = request.into_inner();
        let asked = convert::lease_time_to_live_request(wire);
        // etcd's `checkLeaseTimeToLive`: listing the keys needs read access to each of them.
        let (id, keys) = (asked.id, asked.keys);
        let check = if keys {
            CallerCheck::LeaseKeys {
                lease_id: id,
                access: Access::Read,
            }
        } else {
            CallerCheck::User
        };
        // Linearizable, so a lease granted through any member is seen (etcd waits for the
        // applied index the same way).
        let Headed {
            value: answer,
            term,
            ..
        } = self
            .api
            .ask_as(
                Consistency::Linearizable,
                &credentials,
                check,
                LeaseTimeToLive(asked),
            )
            .await?;
        let header = self.api.header_at(term);
        match answer {
            Ok(response) => Ok(Response::new(convert::lease_time_to_live_response(
                response, &header,
            ))),
            Err(mvcc::Error::NotPrimary) if forwarded => Err(status(RpcError::NotLeader)),
            Err(mvcc::Error::NotPrimary) => {
                let mut response = self.forward_time_to_live(wire, &credentials).await?;
                // As etcd: the answer is the leader's, the header this member's.
                let revision = response.header.map_or(0, |h| h.revision);
                response.header = Some(header.header(revision));
                Ok(Response::new(response))
            }
            Err(error) => Err(status(&error)),
        }
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let credentials = self.api.credentials(&request);
        // etcd's `checkLeaseLeases`: an admin, or read access to every key on any lease.
        let Headed {
            value: leases,
            term,
            ..
        } = self
            .api
            .ask_as(
                Consistency::Linearizable,
                &credentials,
                CallerCheck::EveryLeaseKey,
                LeaseLeases,
            )
            .await?;
        let header = self.api.header_at(term);
        Ok(Response::new(convert::lease_leases_response(
            leases, &header,
        )))
    }
}
