//! The Maintenance service: Status, Alarm, Hash, HashKV, Snapshot, MoveLeader, Defragment.
//! Downgrade is not offered.
//!
//! A snapshot is etcd's backend file (see `crate::backup`), streamed as etcd streams it:
//! chunks with the bytes still to come, then the SHA-256 of the file as the last message.

use crate::server_loop::handle::Consistency;
use keel_core::node::query::{
    self, Defragment, HashKv, Headed, LeaderAndTerm, NodeStatus, SnapshotView, StoreSnapshot,
    TransferLeader, TransferRefused,
};
use keel_core::rpctypes::RpcError;
use std::time::Duration;

use bytes::Bytes;
use keel_core::mvcc::{self, Command};
use keel_core::node::{backup_of_view, CallerCheck};
use tokio::time::Instant;
use tonic::codegen::tokio_stream;
use tonic::{Request, Response, Status};

use super::convert::{self, HeaderSource};
use super::status;
use super::{unexpected_response, Api};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::ETCD_VERSION;

/// Snapshot bytes per message (etcd sends 32 KiB at a time).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// How often Defragment looks whether the engine's writer is done.
const DEFRAGMENT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often MoveLeader looks whether leadership has moved.
const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Clone, Debug)]
pub struct MaintenanceService {
    api: Api,
}

impl MaintenanceService {
    /// For Hash and HashKV: an admin's hash of this member's store at `revision` (0: its
    /// current one), from its applied state.
    async fn hash_at<T>(
        &self,
        request: &Request<T>,
        revision: i64,
    ) -> Result<(mvcc::HashKvResponse, super::Header), Status> {
        self.api.refuse_on_learner()?;
        self.api
            .require_admin(&self.api.credentials(request))
            .await?;
        let Headed {
            value: hashed,
            term,
            ..
        } = self
            .api
            .handle
            .ask(Consistency::Serializable, HashKv { revision })
            .await
            .map_err(status)?;
        let hashed = hashed.map_err(|e| status(&e))?;
        Ok((hashed, self.api.header_at(term)))
    }

    pub fn new(api: Api) -> MaintenanceService {
        MaintenanceService { api }
    }

    /// Waits until `target` leads, up to the request timeout; returns the term then.
    async fn wait_for_leader(&self, target: u64) -> Result<u64, Status> {
        let deadline = Instant::now() + self.api.handle.request_timeout;
        loop {
            let (leader, term) = self
                .api
                .handle
                .ask(Consistency::Unfenced, LeaderAndTerm)
                .await
                .map_err(status)?;
            if leader == Some(target) {
                return Ok(term);
            }
            if Instant::now() + LEADER_POLL_INTERVAL >= deadline {
                return Err(status(RpcError::TimeoutLeaderTransfer));
            }
            tokio::time::sleep(LEADER_POLL_INTERVAL).await;
        }
    }
}

/// What Status reports, as etcd words it.
fn status_response(status: NodeStatus) -> pb::StatusResponse {
    let mut errors = Vec::new();
    if status.leader.is_none() {
        errors.push(RpcError::NoLeader.message().to_string());
    }
    errors.extend(status.alarms.into_iter().map(convert::alarm_text));
    pb::StatusResponse {
        header: None,
        version: ETCD_VERSION.to_string(),
        db_size: i64::try_from(status.db_size_bytes).unwrap_or(i64::MAX),
        leader: status.leader.unwrap_or(0),
        raft_index: status.commit_index,
        raft_term: status.term,
        raft_applied_index: status.applied_index,
        errors,
        db_size_in_use: i64::try_from(status.db_size_in_use_bytes).unwrap_or(i64::MAX),
        is_learner: status.is_learner,
        storage_version: String::new(),
        db_size_quota: i64::try_from(status.quota_bytes).unwrap_or(i64::MAX),
        downgrade_info: Some(pb::DowngradeInfo::default()),
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        self.api.refuse_on_learner()?;
        let credentials = self.api.credentials(&request);
        let alarm = convert::alarm_request(request.into_inner())?;
        match self
            .api
            .propose(Command::Alarm(alarm), &credentials)
            .await?
        {
            (mvcc::Response::Alarm(response), header) => {
                Ok(Response::new(convert::alarm_response(response, &header)))
            }
            _ => Err(unexpected_response("alarm")),
        }
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        // Answered even by a member fenced after a restart, as etcd answers a member cut
        // off from its cluster: status is how an operator finds out. The user check reads
        // this member's auth state as it is; a stale one shows no more than this status.
        let credentials = self.api.credentials(&request);
        let status = self
            .api
            .ask_as(
                Consistency::Unfenced,
                &credentials,
                CallerCheck::User,
                query::Status,
            )
            .await?;
        let (term, revision) = (status.term, status.revision);
        let mut status = status_response(status);
        status.header = Some(self.api.header_at(term).header(revision));
        Ok(Response::new(status))
    }

    /// Rewrites `store.redb` without its free pages, online: reads, writes and commits go on
    /// while the engine's writer copies it a slice at a time (see
    /// `keel_storage::engine::defragment`). Answers once the copy has taken the file's
    /// place; a second request while one runs joins it.
    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.api.refuse_on_learner()?;
        self.api
            .require_admin(&self.api.credentials(&request))
            .await?;
        let defragmenting = self
            .api
            .handle
            .ask(Consistency::Unfenced, Defragment)
            .await
            .map_err(status)?
            .map_err(|e| status(&e))?;
        // As etcd does, the operator's log says when a defragment ran and how it ended.
        tracing::info!("defragmenting the store's engine");
        let started = Instant::now();
        let outcome = loop {
            if let Some(outcome) = defragmenting.outcome() {
                break outcome;
            }
            tokio::time::sleep(DEFRAGMENT_POLL_INTERVAL).await;
        };
        let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &outcome {
            Ok(()) => tracing::info!(took_ms, "finished defragmenting the store's engine"),
            Err(error) => tracing::warn!(took_ms, %error, "the defragment failed"),
        }
        // etcd answers a failed defragment with its error as an unknown status.
        outcome.map_err(Status::unknown)?;
        // etcd's answer carries no header.
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    /// The hash of the whole store at the current revision (keel's HashKV at revision 0:
    /// the store is the key space; leases and members are compared by other means).
    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (hashed, header) = self.hash_at(&request, 0).await?;
        Ok(Response::new(pb::HashResponse {
            header: Some(header.header(hashed.header.revision)),
            hash: hashed.hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let revision = request.get_ref().revision;
        let (hashed, header) = self.hash_at(&request, revision).await?;
        Ok(Response::new(convert::hash_kv_response(hashed, &header)))
    }

    type SnapshotStream = tonic::codegen::BoxStream<pb::SnapshotResponse>;

    /// Streams this member's state at its applied index as etcd's backend file (see
    /// `crate::backup::etcd_file`), written off the loop from one commit of the engine,
    /// then its SHA-256, as etcd does.
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.api.refuse_on_learner()?;
        self.api
            .require_admin(&self.api.credentials(&request))
            .await?;
        let StoreSnapshot {
            view,
            config,
            term,
            revision,
        } = self
            .api
            .handle
            .ask(Consistency::Serializable, SnapshotView)
            .await
            .map_err(status)?;
        let view = view.map_err(|e| status(&e))?;
        let path = crate::backup::export_path(&self.api.backup_dir);
        let written = path.clone();
        let chunks = crate::blocking::blocking(move || {
            let backup = backup_of_view(view, config).map_err(|e| e.to_string())?;
            let version = format!(
                "{}.0",
                ETCD_VERSION
                    .rsplit_once('.')
                    .map_or(ETCD_VERSION, |(v, _)| v)
            );
            crate::backup::etcd_file::write(&written, &backup, &version).map_err(|e| {
                let _ = std::fs::remove_file(&written);
                e.to_string()
            })?;
            crate::backup::ExportChunks::open(written, SNAPSHOT_CHUNK_BYTES)
                .map_err(|e| e.to_string())
        })
        .await
        .ok_or_else(|| Status::internal("writing the snapshot failed"))?
        .map_err(|e| Status::unavailable(format!("etcdserver: cannot write the snapshot: {e}")))?;
        tracing::info!(
            path = %path.display(),
            size_bytes = chunks.total_bytes(),
            revision,
            "streaming a snapshot"
        );
        let header = self.api.header_at(term).header(revision);
        let messages = chunks.map(move |chunk| match chunk {
            Ok(chunk) => Ok(pb::SnapshotResponse {
                header: Some(header),
                remaining_bytes: chunk.remaining_bytes,
                blob: Bytes::from(chunk.blob),
                version: String::new(),
            }),
            Err(e) => Err(Status::internal(format!(
                "etcdserver: reading the snapshot: {e}"
            ))),
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.api.refuse_on_learner()?;
        self.api
            .require_admin(&self.api.credentials(&request))
            .await?;
        let target = request.into_inner().target_id;
        let started = self
            .api
            .handle
            .ask(Consistency::Serializable, TransferLeader { target })
            .await
            .map_err(status)?;
        started.map_err(|refused| match refused {
            TransferRefused::NotLeader => status(RpcError::NotLeader),
            TransferRefused::BadTransferee => status(RpcError::BadLeaderTransferee),
        })?;
        self.wait_for_leader(target).await?;
        // etcd's answer carries no header.
        Ok(Response::new(pb::MoveLeaderResponse { header: None }))
    }

    async fn downgrade(
        &self,
        request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        self.api.refuse_on_learner()?;
        self.api
            .require_admin(&self.api.credentials(&request))
            .await?;
        Err(Status::unimplemented(
            "etcdserver: keel does not support cluster downgrades",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_read_as_etcd_prints_them() {
        let alarm = mvcc::AlarmMember {
            member_id: 42,
            alarm: mvcc::AlarmType::NoSpace,
        };
        assert_eq!(convert::alarm_text(alarm), "memberID:42 alarm:NOSPACE ");
    }
}
