//! etcd's Lock service (`v3lockpb.Lock`): a named mutex whose holders queue by the create
//! revision of their key, as etcd's server does it with `clientv3/concurrency`'s `Mutex`
//! (see `super::concurrency`).

use tonic::{Request, Response, Status};

use super::concurrency::{
    by_creation_request, created_at, get_op, get_request, owner_key, prefix_of, put_op,
    range_answer, range_op, CleanUp, Recipes,
};
use crate::proto::etcdserverpb as pb;
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

/// etcd's answer when the holder's key went (its lease expired) while it waited.
const SESSION_EXPIRED: &str = "mutex: session is expired";

#[derive(Clone, Debug)]
pub struct LockService {
    recipes: Recipes,
}

impl LockService {
    pub fn new(recipes: Recipes) -> LockService {
        LockService { recipes }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    /// Puts `name/<lease>` unless the lease holds it already, then waits for every key under
    /// `name/` created before it to be deleted. The key is deleted again if the wait fails
    /// or the caller goes away.
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let caller = self.recipes.caller(&request);
        let request = request.into_inner();
        let lease = caller.session_lease(request.lease).await?;
        let prefix = prefix_of(&request.name);
        let key = owner_key(&prefix, lease);
        let holder = range_op(by_creation_request(&prefix, true, 0));
        let txn = caller
            .txn(pb::TxnRequest {
                compare: vec![created_at(&key, 0)],
                success: vec![put_op(&key, b"", lease), holder.clone()],
                failure: vec![get_op(&key), holder],
            })
            .await?;
        let my_revision = if txn.succeeded {
            txn.header.as_ref().map_or(0, |h| h.revision)
        } else {
            // Locked again through the same lease: the key it already has.
            range_answer(&txn, 0)
                .first()
                .map_or(0, |kv| kv.create_revision)
        };
        let holder_revision = range_answer(&txn, 1).first().map(|kv| kv.create_revision);
        if holder_revision.is_none_or(|revision| revision == my_revision) {
            return Ok(Response::new(LockResponse {
                header: txn.header,
                key: key.into(),
            }));
        }
        let undo = {
            let (caller, key) = (caller.clone(), key.clone());
            CleanUp::new(async move {
                let _ = caller.delete(key).await;
            })
        };
        if let Err(status) = caller.wait_deletes(&prefix, my_revision - 1).await {
            undo.run().await;
            return Err(status);
        }
        let mine = match caller.range(get_request(&key)).await {
            Ok(mine) => mine,
            Err(status) => {
                undo.run().await;
                return Err(status);
            }
        };
        undo.disarm();
        if mine.kvs.is_empty() {
            return Err(Status::unknown(SESSION_EXPIRED));
        }
        Ok(Response::new(LockResponse {
            header: mine.header,
            key: key.into(),
        }))
    }

    /// Deletes the key `Lock` answered with (any key: etcd checks nothing more).
    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let caller = self.recipes.caller(&request);
        let deleted = caller.delete(request.into_inner().key.to_vec()).await?;
        Ok(Response::new(UnlockResponse {
            header: deleted.header,
        }))
    }
}
