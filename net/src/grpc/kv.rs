//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use keel_core::auth::{Access, Credentials};
use keel_core::mvcc::{self, ChunkLimits, Command, RangeCursor, RangeStreamChunk};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::{self, HeaderSource};
use super::status;
use super::{Api, Header};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::server_loop::handle::Consistency;
use keel_core::node::query::{
    Ask, Headed, NextRangeChunk, PhysicallyCompacted, Range, RangeStreamStart, ReadTxn,
    StartRangeStream,
};
use keel_core::node::CallerCheck;

/// How often a `physical` compaction asks whether this member's engine caught up.
const PHYSICAL_COMPACTION_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Clone, Debug)]
pub struct KvService {
    api: Api,
}

impl KvService {
    pub fn new(api: Api) -> KvService {
        KvService { api }
    }

    /// Waits until this member has dropped the history below `revision` from its engine,
    /// not only from what reads see: an operator's defragment after it then frees the
    /// space (etcd's `physical` compaction). A quiet member moves it on every tick; under
    /// writes it moves with each applied entry.
    async fn wait_physically_compacted(&self, revision: i64) -> Result<(), Status> {
        let query = PhysicallyCompacted { revision };
        while !self
            .api
            .handle
            .ask(Consistency::Unfenced, query.clone())
            .await
            .map_err(status)?
        {
            tokio::time::sleep(PHYSICAL_COMPACTION_POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// Proposes a store write as the caller and waits for its answer.
    async fn write(
        &self,
        command: Command,
        credentials: &Credentials,
    ) -> Result<(mvcc::Response, Header), Status> {
        self.api.propose(command, credentials).await
    }

    /// Runs a read against the store (linearizable unless `serializable`), with the header,
    /// once `check` allows the caller: checked and read in one step on the loop, so no auth
    /// change falls between them.
    async fn read<T, Q>(
        &self,
        serializable: bool,
        credentials: &Credentials,
        check: CallerCheck,
        query: Q,
    ) -> Result<(T, Header), Status>
    where
        Q: Ask<Answer = Headed<Result<T, mvcc::Error>>> + Clone + Send,
        T: Send,
    {
        let consistency = if serializable {
            Consistency::Serializable
        } else {
            Consistency::Linearizable
        };
        let Headed { value, term, .. } = self
            .api
            .ask_as(consistency, credentials, check, query)
            .await?;
        let value = value.map_err(|e| status(&e))?;
        Ok((value, self.api.header_at(term)))
    }
}

/// Chunks of a RangeStream read ahead of a slow client.
const RANGE_STREAM_CHUNKS_QUEUED: usize = 2;

type ChunkOutbox = mpsc::Sender<Result<pb::RangeStreamResponse, Status>>;

/// A chunk as sent: the header, `more` and `count` on the last one only.
fn stream_chunk(
    kvs: Vec<mvcc::KeyValue>,
    end: Option<mvcc::RangeStreamEnd>,
    header: &Header,
) -> pb::RangeStreamResponse {
    pb::RangeStreamResponse {
        range_response: Some(pb::RangeResponse {
            header: end.map(|end| header.header(end.header_revision)),
            kvs: kvs.into_iter().map(convert::key_value).collect(),
            more: end.is_some_and(|end| end.more),
            count: end.map_or(0, |end| end.count),
        }),
    }
}

/// A sorted request's answer, read whole as a unary Range, sent in chunks of the usual size.
async fn send_whole(
    outbox: &ChunkOutbox,
    response: mvcc::RangeResponse,
    header: &Header,
) -> Result<(), Status> {
    let end = mvcc::RangeStreamEnd {
        header_revision: response.header.revision,
        more: response.more,
        count: response.count,
    };
    let mut kvs = response.kvs.into_iter().peekable();
    loop {
        let chunk: Vec<_> = kvs.by_ref().take(ChunkLimits::default().max_kvs).collect();
        let last = kvs.peek().is_none();
        let message = stream_chunk(chunk, last.then_some(end), header);
        if outbox.send(Ok(message)).await.is_err() || last {
            return Ok(());
        }
    }
}

impl KvService {
    /// A Range's caller, request and permission check, once it passes etcd's checks (a
    /// learner serves serializable ranges only, as in etcd).
    fn range_request(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<(Credentials, mvcc::RangeRequest, CallerCheck), Status> {
        let credentials = self.api.credentials(&request);
        let (request, check) = self.checked_range(request.into_inner())?;
        Ok((credentials, request, check))
    }

    fn checked_range(
        &self,
        request: pb::RangeRequest,
    ) -> Result<(mvcc::RangeRequest, CallerCheck), Status> {
        let request = convert::range_request(request)?;
        mvcc::check_range(&request).map_err(|e| status(&e))?;
        if !request.serializable {
            self.api.refuse_on_learner()?;
        }
        let check = read_check(&request.key, &request.range_end);
        Ok((request, check))
    }

    /// A Range as `credentials`' owner: the service's call, and the in-process client of
    /// the lock and election services (see `super::concurrency`).
    pub(crate) async fn range_as(
        &self,
        credentials: &Credentials,
        request: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, Status> {
        let (request, check) = self.checked_range(request)?;
        let (response, header) = self
            .read(request.serializable, credentials, check, Range(request))
            .await?;
        Ok(convert::range_response(response, &header))
    }

    /// A DeleteRange as `credentials`' owner.
    pub(crate) async fn delete_range_as(
        &self,
        credentials: &Credentials,
        request: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, Status> {
        self.api.refuse_on_learner()?;
        let command = Command::DeleteRange(convert::delete_range_request(request));
        match self.write(command, credentials).await? {
            (mvcc::Response::DeleteRange(response), header) => {
                Ok(convert::delete_range_response(response, &header))
            }
            _ => Err(unexpected("delete")),
        }
    }

    /// A Txn as `credentials`' owner.
    pub(crate) async fn txn_as(
        &self,
        credentials: &Credentials,
        request: pb::TxnRequest,
    ) -> Result<pb::TxnResponse, Status> {
        self.api.refuse_on_learner()?;
        let txn = convert::txn_request(request)?;
        if txn.is_read_only() {
            // Like etcd: a txn that only reads is served as a (linearizable) read, checked on
            // every key it reads, compares included.
            let check = CallerCheck::ReadTxn(txn.clone());
            // Checked against this server's limits (ops per txn, request size) on the loop.
            let (response, header) = self.read(false, credentials, check, ReadTxn(txn)).await?;
            return Ok(convert::txn_response(response, &header));
        }
        match self.write(Command::Txn(txn), credentials).await? {
            (mvcc::Response::Txn(response), header) => Ok(convert::txn_response(response, &header)),
            _ => Err(unexpected("txn")),
        }
    }

    /// Sends `chunk` and reads the ones after it until the last, or until the client goes.
    async fn send_chunks(
        &self,
        outbox: &ChunkOutbox,
        mut cursor: RangeCursor,
        mut chunk: RangeStreamChunk,
        credentials: &Credentials,
        check: CallerCheck,
        header: &Header,
    ) -> Result<(), Status> {
        loop {
            let last = chunk.end.is_some();
            if last || !chunk.kvs.is_empty() {
                let message = stream_chunk(chunk.kvs, chunk.end, header);
                if outbox.send(Ok(message)).await.is_err() || last {
                    return Ok(());
                }
            }
            // The pinned revision needs no new read index: a serializable read of it is
            // the same on every member that has applied it.
            let ((next_cursor, next_chunk), _) = self
                .read(true, credentials, check.clone(), NextRangeChunk(cursor))
                .await?;
            (cursor, chunk) = (next_cursor, next_chunk);
        }
    }
}

/// Read access to `[key, range_end)`.
fn read_check(key: &[u8], range_end: &[u8]) -> CallerCheck {
    CallerCheck::Keys {
        access: Access::Read,
        key: key.to_vec(),
        range_end: range_end.to_vec(),
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
        let credentials = self.api.credentials(&request);
        let response = self.range_as(&credentials, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    type RangeStreamStream = tonic::codegen::BoxStream<pb::RangeStreamResponse>;

    /// A Range sent in chunks from the revision the first chunk pins (see
    /// `keel_core::mvcc::RangeCursor`): each chunk is one bounded read on the loop, checked
    /// against the caller's permissions again, and at most two chunks wait for a slow
    /// client, so a stream holds a few MiB whatever the range.
    async fn range_stream(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        let (credentials, request, check) = self.range_request(request)?;
        let serializable = request.serializable;
        let (start, header) = self
            .read(
                serializable,
                &credentials,
                check.clone(),
                StartRangeStream(request),
            )
            .await?;
        let (outbox, inbox) = mpsc::channel(RANGE_STREAM_CHUNKS_QUEUED);
        let service = self.clone();
        tokio::spawn(async move {
            let sent = match start {
                RangeStreamStart::Whole(response) => send_whole(&outbox, response, &header).await,
                RangeStreamStart::Chunked(cursor, chunk) => {
                    service
                        .send_chunks(&outbox, *cursor, chunk, &credentials, check, &header)
                        .await
                }
            };
            if let Err(status) = sent {
                let _ = outbox.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(inbox))))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.api.refuse_on_learner()?;
        let credentials = self.api.credentials(&request);
        let command = Command::Put(convert::put_request(request.into_inner()));
        match self.write(command, &credentials).await? {
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
        let credentials = self.api.credentials(&request);
        let response = self
            .delete_range_as(&credentials, request.into_inner())
            .await?;
        Ok(Response::new(response))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let credentials = self.api.credentials(&request);
        let response = self.txn_as(&credentials, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        self.api.refuse_on_learner()?;
        let credentials = self.api.credentials(&request);
        let request = request.into_inner();
        let physical = request.physical;
        let revision = request.revision;
        let command = Command::Compaction(convert::compaction_request(request));
        let (mvcc::Response::Compaction(response), header) =
            self.write(command, &credentials).await?
        else {
            return Err(unexpected("compaction"));
        };
        if physical {
            self.wait_physically_compacted(revision).await?;
        }
        Ok(Response::new(convert::compaction_response(
            response, &header,
        )))
    }
}
