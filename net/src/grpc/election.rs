//! etcd's Election service (`v3electionpb.Election`): leaders of a named election queue by
//! the create revision of their key, as etcd's server does it with `clientv3/concurrency`'s
//! `Election` (see `super::concurrency`).

use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::concurrency::{
    by_creation_request, created_at, delete_op, get_op, is_delete, owner_key, prefix_end,
    prefix_of, put_op, range_answer, Caller, CleanUp, Recipes,
};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};

/// etcd's answers, word for word.
const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
const LEADER_MISSING: &str = "\"leader\" field must be provided";

/// Observe answers waiting for a slow client.
const OBSERVE_QUEUE: usize = 16;

#[derive(Clone, Debug)]
pub struct ElectionService {
    recipes: Recipes,
}

impl ElectionService {
    pub fn new(recipes: Recipes) -> ElectionService {
        ElectionService { recipes }
    }
}

/// Puts `value` on the leader's key while it still is the key made at `leader.rev`.
async fn proclaim(
    caller: &Caller,
    leader: &LeaderKey,
    value: &[u8],
) -> Result<pb::TxnResponse, Status> {
    let lease = caller.session_lease(leader.lease).await?;
    let txn = caller
        .txn(pb::TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![put_op(&leader.key, value, lease)],
            failure: vec![],
        })
        .await?;
    if !txn.succeeded {
        return Err(Status::unknown(NOT_LEADER));
    }
    Ok(txn)
}

/// Deletes the leader's key if it still is the key made at `leader.rev`.
async fn resign(caller: &Caller, leader: &LeaderKey) -> Result<pb::TxnResponse, Status> {
    caller
        .txn(pb::TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![delete_op(&leader.key)],
            failure: vec![],
        })
        .await
}

#[tonic::async_trait]
impl Election for ElectionService {
    /// Puts `name/<lease>` with the value (or, campaigning again through the same lease,
    /// proclaims the new value on it), then waits for every key under `name/` created before
    /// it to be deleted. A caller that goes away while waiting resigns.
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let caller = self.recipes.caller(&request);
        let request = request.into_inner();
        let lease = caller.session_lease(request.lease).await?;
        let prefix = prefix_of(&request.name);
        let key = owner_key(&prefix, lease);
        let txn = caller
            .txn(pb::TxnRequest {
                compare: vec![created_at(&key, 0)],
                success: vec![put_op(&key, &request.value, lease)],
                failure: vec![get_op(&key)],
            })
            .await?;
        let mut leader = LeaderKey {
            name: request.name.clone(),
            key: key.into(),
            rev: txn.header.as_ref().map_or(0, |h| h.revision),
            lease,
        };
        if !txn.succeeded {
            if let Some(existing) = range_answer(&txn, 0).first() {
                leader.rev = existing.create_revision;
                if existing.value != request.value {
                    if let Err(status) = proclaim(&caller, &leader, &request.value).await {
                        let _ = resign(&caller, &leader).await;
                        return Err(status);
                    }
                }
            }
        }
        let undo = {
            let (caller, leader) = (caller.clone(), leader.clone());
            CleanUp::new(async move {
                let _ = resign(&caller, &leader).await;
            })
        };
        // etcd resigns only when the caller went away; other failures leave the key.
        let waited = caller.wait_deletes(&prefix, leader.rev - 1).await;
        undo.disarm();
        waited?;
        Ok(Response::new(CampaignResponse {
            header: txn.header,
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let caller = self.recipes.caller(&request);
        let request = request.into_inner();
        let leader = request
            .leader
            .ok_or_else(|| Status::unknown(LEADER_MISSING))?;
        let txn = proclaim(&caller, &leader, &request.value).await?;
        Ok(Response::new(ProclaimResponse { header: txn.header }))
    }

    /// The key under `name/` created first, with its value.
    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let caller = self.recipes.caller(&request);
        let prefix = prefix_of(&request.into_inner().name);
        let mut first = caller.by_creation(&prefix, true, 0).await?;
        if first.kvs.is_empty() {
            return Err(Status::unknown(NO_LEADER));
        }
        Ok(Response::new(LeaderResponse {
            header: first.header,
            kv: Some(first.kvs.swap_remove(0)),
        }))
    }

    type ObserveStream = tonic::codegen::BoxStream<LeaderResponse>;

    /// The leader now, each value it proclaims, then each next leader's value as it takes
    /// over; nothing while there is none. Ends (without an error, as etcd's) if a read or a
    /// watch fails, e.g. on a compacted revision.
    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let caller = self.recipes.caller(&request);
        let prefix = prefix_of(&request.into_inner().name);
        let (answers, stream) = mpsc::channel(OBSERVE_QUEUE);
        // The task ends with the client: a watch it waits on would otherwise outlive it
        // until the leader's key next changes.
        tokio::spawn(async move {
            tokio::select! {
                _ = observe(&caller, &prefix, &answers) => {}
                () = answers.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    /// Deletes the leader's key if it still is the one made at `leader.rev`; answers the
    /// same whether it was (etcd's Resign has no not-leader error).
    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let caller = self.recipes.caller(&request);
        let leader =
            (request.into_inner().leader).ok_or_else(|| Status::unknown(LEADER_MISSING))?;
        let txn = resign(&caller, &leader).await?;
        Ok(Response::new(ResignResponse { header: txn.header }))
    }
}

type Answers = mpsc::Sender<Result<LeaderResponse, Status>>;

/// Feeds `answers` until the client goes (`Ok`) or a read or watch fails (`Err`).
async fn observe(caller: &Caller, prefix: &[u8], answers: &Answers) -> Result<(), Status> {
    loop {
        let first = caller.range(by_creation_request(prefix, true, 0)).await?;
        let from = first.header.as_ref().map_or(0, |h| h.revision);
        let (header, kv) = match first.kvs.into_iter().next() {
            Some(kv) => (first.header, kv),
            None => next_leader(caller, prefix, from).await?,
        };
        let next_revision = header.as_ref().map_or(0, |h| h.revision) + 1;
        if !send(answers, header, kv.clone()).await {
            return Ok(());
        }
        if !follow(caller, &kv.key, next_revision, answers).await? {
            return Ok(());
        }
    }
}

/// With no leader: the first key put under `prefix` from `revision` on, with a header at
/// its revision.
async fn next_leader(
    caller: &Caller,
    prefix: &[u8],
    revision: i64,
) -> Result<(Option<pb::ResponseHeader>, mvccpb::KeyValue), Status> {
    let mut watch = caller.watch(prefix, &prefix_end(prefix), revision).await?;
    loop {
        let response = watch.next_events().await?;
        let put = response
            .events
            .into_iter()
            .find(|event| !is_delete(event))
            .and_then(|event| event.kv);
        if let Some(kv) = put {
            let header = response.header.map(|header| pb::ResponseHeader {
                revision: kv.mod_revision,
                ..header
            });
            return Ok((header, kv));
        }
    }
}

/// Sends each value put on the leader's `key` from `revision` on; `Ok(true)` once the key
/// is deleted (the next leader is looked for), `Ok(false)` if the client went away.
async fn follow(
    caller: &Caller,
    key: &[u8],
    revision: i64,
    answers: &Answers,
) -> Result<bool, Status> {
    let mut watch = caller.watch(key, &[], revision).await?;
    loop {
        let response = watch.next_events().await?;
        for event in response.events {
            if is_delete(&event) {
                return Ok(true);
            }
            if let Some(kv) = event.kv {
                if !send(answers, response.header, kv).await {
                    return Ok(false);
                }
            }
        }
    }
}

/// Whether the client is still there to take it.
async fn send(answers: &Answers, header: Option<pb::ResponseHeader>, kv: mvccpb::KeyValue) -> bool {
    let answer = LeaderResponse {
        header,
        kv: Some(kv),
    };
    answers.send(Ok(answer)).await.is_ok()
}
