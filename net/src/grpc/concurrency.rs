//! What the Lock and Election services share: etcd runs both on an in-process client of its
//! own KV, Lease and Watch services, acting as the caller (so auth applies to the caller), with
//! the recipes of its `clientv3/concurrency` package. Here [`Caller`] is that client and the
//! functions below are the recipes' steps, written down once.
//!
//! Errors reach clients as etcd's do: these services return plain errors, which gRPC turns
//! into `Unknown` with the error's text (`etcdserver: requested lease not found`, `election:
//! no leader`…); only a cancellation keeps its own code.

use keel_core::auth::Credentials;
use tonic::{Code, Request, Status};

use super::kv::KvService;
use super::lease::LeaseService;
use super::watch::WatchService;
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;

/// The TTL of a lease the services grant when a request names none (etcd's session default).
pub const SESSION_TTL_SECONDS: i64 = 60;

/// The in-process client the Lock and Election services act through, as one caller.
#[derive(Clone, Debug)]
pub struct Recipes {
    pub api: super::Api,
    pub kv: KvService,
    pub lease: LeaseService,
    pub watch: WatchService,
}

impl Recipes {
    /// The client as the sender of `request` (its token, or its certificate's name).
    pub fn caller<T>(&self, request: &Request<T>) -> Caller {
        Caller {
            recipes: self.clone(),
            credentials: self.api.credentials(request),
        }
    }
}

/// [`Recipes`] acting as one caller.
#[derive(Clone, Debug)]
pub struct Caller {
    recipes: Recipes,
    credentials: Credentials,
}

impl Caller {
    /// `lease`, or a new lease of [`SESSION_TTL_SECONDS`] when it is 0 (an etcd session
    /// made without a lease). A lease that does not exist is not looked for: the first put
    /// under it fails with etcd's `requested lease not found`.
    pub async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = pb::LeaseGrantRequest {
            ttl: SESSION_TTL_SECONDS,
            id: 0,
        };
        let granted = self
            .recipes
            .lease
            .grant_as(&self.credentials, grant)
            .await
            .map_err(as_plain_error)?;
        Ok(granted.id)
    }

    pub async fn txn(&self, txn: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        (self.recipes.kv.txn_as(&self.credentials, txn).await).map_err(as_plain_error)
    }

    /// A linearizable read, as etcd's client makes by default.
    pub async fn range(&self, range: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        (self.recipes.kv.range_as(&self.credentials, range).await).map_err(as_plain_error)
    }

    pub async fn delete(&self, key: Vec<u8>) -> Result<pb::DeleteRangeResponse, Status> {
        let delete = pb::DeleteRangeRequest {
            key: key.into(),
            ..pb::DeleteRangeRequest::default()
        };
        (self
            .recipes
            .kv
            .delete_range_as(&self.credentials, delete)
            .await)
            .map_err(as_plain_error)
    }

    /// Watches `[key, range_end)` from `start_revision`.
    pub async fn watch(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
    ) -> Result<super::watch::InProcessWatch, Status> {
        let create = pb::WatchCreateRequest {
            key: key.to_vec().into(),
            range_end: range_end.to_vec().into(),
            start_revision,
            ..pb::WatchCreateRequest::default()
        };
        (self.recipes.watch.watch_as(&self.credentials, create).await).map_err(as_plain_error)
    }

    /// The key under `prefix` created first (`oldest`) or last, among those created at or
    /// before `max_create_revision` (0: any).
    pub async fn by_creation(
        &self,
        prefix: &[u8],
        oldest: bool,
        max_create_revision: i64,
    ) -> Result<pb::RangeResponse, Status> {
        self.range(by_creation_request(prefix, oldest, max_create_revision))
            .await
    }

    /// Waits until no key under `prefix` was created at or before `max_create_revision`:
    /// each time for the newest such key to be deleted (etcd's `waitDeletes`: every waiter
    /// watches only the one just ahead of it, so a release wakes one waiter, not all).
    pub async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_create_revision: i64,
    ) -> Result<(), Status> {
        loop {
            let newest = self.by_creation(prefix, false, max_create_revision).await?;
            let Some(ahead) = newest.kvs.first() else {
                return Ok(());
            };
            let from = newest.header.as_ref().map_or(0, |h| h.revision);
            self.wait_delete(&ahead.key, from).await?;
        }
    }

    /// Waits for a delete of `key` at or after `revision`.
    async fn wait_delete(&self, key: &[u8], revision: i64) -> Result<(), Status> {
        let mut watch = self.watch(key, &[], revision).await?;
        loop {
            let response = watch.next_events().await?;
            if response.events.iter().any(is_delete) {
                return Ok(());
            }
        }
    }
}

/// A range of the keys under `prefix` sorted by creation, the first one only.
pub fn by_creation_request(
    prefix: &[u8],
    oldest: bool,
    max_create_revision: i64,
) -> pb::RangeRequest {
    let order = if oldest {
        pb::range_request::SortOrder::Ascend
    } else {
        pb::range_request::SortOrder::Descend
    };
    pb::RangeRequest {
        key: prefix.to_vec().into(),
        range_end: prefix_end(prefix).into(),
        limit: 1,
        sort_order: order as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        max_create_revision,
        ..pb::RangeRequest::default()
    }
}

/// The end of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// `prefix` with its last byte below 0xff raised by one, or `\0` (to the end of the key
/// space) when every byte is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The key a session's lease owns under `prefix`: the lease id in lowercase hexadecimal, as
/// Go's `%x` prints an int64 (a minus sign before a negative one).
pub fn owner_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let id = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut key = prefix.to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

/// `name` + `/`: the prefix a lock's or an election's keys live under.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// A compare that holds when `key`'s create revision is `revision` (0: the key is absent).
pub fn created_at(key: &[u8], revision: i64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Create as i32,
        key: key.to_vec().into(),
        target_union: Some(pb::compare::TargetUnion::CreateRevision(revision)),
        ..pb::Compare::default()
    }
}

pub fn put_op(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            lease,
            ..pb::PutRequest::default()
        })),
    }
}

pub fn range_op(range: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(range)),
    }
}

/// A read of the one key `key`.
pub fn get_request(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec().into(),
        ..pb::RangeRequest::default()
    }
}

pub fn get_op(key: &[u8]) -> pb::RequestOp {
    range_op(get_request(key))
}

pub fn delete_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.to_vec().into(),
                ..pb::DeleteRangeRequest::default()
            },
        )),
    }
}

/// The key-values of the `index`th answer of a txn, if it was a range.
pub fn range_answer(txn: &pb::TxnResponse, index: usize) -> &[mvccpb::KeyValue] {
    match txn.responses.get(index).and_then(|op| op.response.as_ref()) {
        Some(pb::response_op::Response::ResponseRange(range)) => &range.kvs,
        _ => &[],
    }
}

pub fn is_delete(event: &mvccpb::Event) -> bool {
    event.r#type == mvccpb::event::EventType::Delete as i32
}

/// An error as etcd's lock and election services return it: a plain error, which gRPC
/// sends as `Unknown` with its text; a cancellation or a deadline keeps its code.
pub fn as_plain_error(status: Status) -> Status {
    match status.code() {
        Code::Cancelled | Code::DeadlineExceeded | Code::Unknown => status,
        _ => Status::unknown(status.message()),
    }
}

/// Runs a clean-up call (a delete, a resign) when dropped unless disarmed: etcd's recipes
/// undo a waiter's key when the wait fails or the caller goes away, and a gRPC handler whose
/// client went away is dropped mid-wait, so the undo must not depend on the handler going on.
pub struct CleanUp {
    undo: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl CleanUp {
    pub fn new(undo: impl std::future::Future<Output = ()> + Send + 'static) -> CleanUp {
        CleanUp {
            undo: Some(Box::pin(undo)),
        }
    }

    /// The clean-up is not needed any more.
    pub fn disarm(mut self) {
        self.undo = None;
    }

    /// Cleans up now and waits for it. The clean-up runs as a task of its own, so that it
    /// goes on if the caller is dropped while waiting for it.
    pub async fn run(mut self) {
        if let Some(undo) = self.undo.take() {
            let _ = tokio::spawn(undo).await;
        }
    }
}

impl Drop for CleanUp {
    fn drop(&mut self) {
        if let Some(undo) = self.undo.take() {
            tokio::spawn(undo);
        }
    }
}

impl std::fmt::Debug for CleanUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanUp")
            .field("armed", &self.undo.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_keys_print_the_lease_as_gos_percent_x() {
        assert_eq!(owner_key(b"lock/", 0x694d), b"lock/694d");
        assert_eq!(owner_key(b"lock/", -0x10), b"lock/-10");
    }

    #[test]
    fn a_prefix_ends_after_its_last_raisable_byte() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
