//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use keel_core::mvcc::{self, Command};
use tonic::{Request, Response, Status};

use super::convert;
use super::{api_status, store_status, Api, Header};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::kv_server::Kv;

#[derive(Clone, Debug)]
pub struct KvService {
    api: Api,
}

impl KvService {
    pub fn new(api: Api) -> KvService {
        KvService { api }
    }

    /// Proposes a store write and waits for its answer.
    async fn write(&self, command: Command) -> Result<(mvcc::Response, Header), Status> {
        self.api.propose(command).await
    }

    /// Runs a read against the store (linearizable unless `serializable`), with the header.
    async fn read<T: Send + 'static>(
        &self,
        serializable: bool,
        read: impl FnOnce(&mvcc::Store) -> Result<T, mvcc::Error> + Send + 'static,
    ) -> Result<(T, Header), Status> {
        let api = self.api.clone();
        let (result, term) = self
            .api
            .handle
            .read(!serializable, move |node| {
                (read(node.store()), node.raft().term())
            })
            .await
            .map_err(api_status)?;
        let value = result.map_err(|e| store_status(&e))?;
        Ok((value, api.header_at(term)))
    }
}

fn unexpected(what: &str) -> Status {
    super::unexpected_response(what)
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let request = convert::range_request(request.into_inner())?;
        mvcc::check_range(&request).map_err(|e| store_status(&e))?;
        let serializable = request.serializable;
        let (response, header) = self
            .read(serializable, move |store| store.range(&request))
            .await?;
        Ok(Response::new(convert::range_response(response, &header)))
    }

    type RangeStreamStream = tonic::codegen::BoxStream<pb::RangeStreamResponse>;

    async fn range_stream(
        &self,
        _request: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented(
            "RangeStream is not implemented; use Range with a limit",
        ))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let command = Command::Put(convert::put_request(request.into_inner()));
        match self.write(command).await? {
            (mvcc::Response::Put(response), header) => {
                Ok(Response::new(convert::put_response(response, &header)))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let command = Command::DeleteRange(convert::delete_range_request(request.into_inner()));
        match self.write(command).await? {
            (mvcc::Response::DeleteRange(response), header) => Ok(Response::new(
                convert::delete_range_response(response, &header),
            )),
            _ => Err(unexpected("delete")),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let txn = convert::txn_request(request.into_inner())?;
        if txn.is_read_only() {
            // Like etcd: a txn that only reads is served as a (linearizable) read.
            let (response, header) = self
                .read(false, move |store| {
                    // Checked against this server's limits (ops per txn, request size).
                    mvcc::check_command(&Command::Txn(txn.clone()), &store.config().limits)?;
                    store.read_txn(&txn)
                })
                .await?;
            return Ok(Response::new(convert::txn_response(response, &header)));
        }
        match self.write(Command::Txn(txn)).await? {
            (mvcc::Response::Txn(response), header) => {
                Ok(Response::new(convert::txn_response(response, &header)))
            }
            _ => Err(unexpected("txn")),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let command = Command::Compaction(convert::compaction_request(request.into_inner()));
        match self.write(command).await? {
            (mvcc::Response::Compaction(response), header) => Ok(Response::new(
                convert::compaction_response(response, &header),
            )),
            _ => Err(unexpected("compaction")),
        }
    }
}
