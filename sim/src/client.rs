//! A simulated client: sends etcd requests over the simulated network with keel's gRPC
//! client types and records every operation in the history — invoked, then completed with
//! its outcome, or left indeterminate if it timed out or its connection failed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::kv_client::KvClient;
use keel_net::proto::etcdserverpb::lease_client::LeaseClient;
use keel_net::proto::mvccpb;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::history::{
    ClientId, Compare, CompareResult, CompareTarget, DeleteRange, History, KeyValue, MemberId,
    OpId, Outcome, Put, Range, RangeResult, Request, Response, StoreError, Time, Txn, TxnOp,
    TxnOpResult,
};

/// The history every client and watcher of a run writes to, with the run's clock.
#[derive(Clone, Debug)]
pub struct Recorder {
    history: Arc<Mutex<History>>,
    start: tokio::time::Instant,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            history: Arc::default(),
            start: tokio::time::Instant::now(),
        }
    }

    /// Simulated nanoseconds since the run started.
    pub fn now(&self) -> Time {
        self.time_at(tokio::time::Instant::now())
    }

    /// The history's time of `instant` (0 if before the run started).
    pub fn time_at(&self, instant: tokio::time::Instant) -> Time {
        let since = instant.saturating_duration_since(self.start);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut History) -> T) -> T {
        f(&mut self
            .history
            .lock()
            .expect("the history lock is never poisoned"))
    }

    pub fn invoke(&self, client: ClientId, member: Option<MemberId>, request: Request) -> OpId {
        let time = self.now();
        self.with(|h| h.invoke(client, member, time, request))
    }

    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let time = self.now();
        self.with(|h| h.complete(id, time, outcome));
    }

    pub fn take(&self) -> History {
        self.with(std::mem::take)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// One server as clients see it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub member: MemberId,
    pub url: String,
}

/// A client with a connection per server, reconnecting after failures.
#[derive(Debug)]
pub struct SimClient {
    pub id: ClientId,
    endpoints: Vec<Endpoint>,
    channels: BTreeMap<usize, Channel>,
    recorder: Recorder,
    timeout: Duration,
}

impl SimClient {
    pub fn new(
        id: ClientId,
        endpoints: Vec<Endpoint>,
        recorder: Recorder,
        timeout: Duration,
    ) -> SimClient {
        SimClient {
            id,
            endpoints,
            channels: BTreeMap::new(),
            recorder,
            timeout,
        }
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    async fn channel(&mut self, server: usize) -> Result<Channel, Status> {
        if let Some(channel) = self.channels.get(&server) {
            return Ok(channel.clone());
        }
        let url = self.endpoints[server].url.clone();
        let endpoint = tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let channel = tokio::time::timeout(self.timeout, endpoint.connect())
            .await
            .map_err(|_| Status::unavailable("connect timed out"))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
        self.channels.insert(server, channel.clone());
        Ok(channel)
    }

    /// Sends `request` to `server`, recording it; returns the outcome it recorded.
    pub async fn execute(&mut self, server: usize, request: Request) -> Outcome {
        let member = self.endpoints[server].member;
        let id = self.recorder.invoke(self.id, Some(member), request.clone());
        let sent = tokio::time::timeout(self.timeout, self.send(server, &request)).await;
        let outcome = match sent {
            Ok(Ok(response)) => Outcome::Ok(response),
            Ok(Err(status)) => {
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Internal
                ) {
                    // The connection may be stale; dial again next time.
                    self.channels.remove(&server);
                }
                outcome_of(&status)
            }
            Err(_) => {
                self.channels.remove(&server);
                Outcome::Indeterminate("timed out".into())
            }
        };
        self.recorder.complete(id, outcome.clone());
        outcome
    }

    async fn send(&mut self, server: usize, request: &Request) -> Result<Response, Status> {
        let channel = self.channel(server).await?;
        match request {
            Request::LeaseGrant { ttl, id } => {
                let granted = LeaseClient::new(channel)
                    .lease_grant(pb::LeaseGrantRequest { ttl: *ttl, id: *id })
                    .await?
                    .into_inner();
                Ok(Response::LeaseGrant {
                    revision: revision(&granted.header),
                    id: granted.id,
                    ttl: granted.ttl,
                })
            }
            Request::LeaseRevoke { id } => {
                let revoked = LeaseClient::new(channel)
                    .lease_revoke(pb::LeaseRevokeRequest { id: *id })
                    .await?
                    .into_inner();
                Ok(Response::LeaseRevoke {
                    revision: revision(&revoked.header),
                })
            }
            _ => send_kv(KvClient::new(channel), request).await,
        }
    }
}

async fn send_kv(mut kv: KvClient<Channel>, request: &Request) -> Result<Response, Status> {
    match request {
        Request::Put(put) => {
            let r = kv.put(put_request(put)).await?.into_inner();
            Ok(Response::Put {
                revision: revision(&r.header),
                prev_kv: r.prev_kv.map(key_value),
            })
        }
        Request::Range(range) => {
            let r = kv.range(range_request(range)).await?.into_inner();
            Ok(Response::Range {
                revision: revision(&r.header),
                result: range_result(r),
            })
        }
        Request::DeleteRange(delete) => {
            let r = kv.delete_range(delete_request(delete)).await?.into_inner();
            Ok(Response::DeleteRange {
                revision: revision(&r.header),
                deleted: r.deleted,
                prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
            })
        }
        Request::Txn(txn) => {
            let r = kv.txn(txn_request(txn)).await?.into_inner();
            Ok(Response::Txn {
                revision: revision(&r.header),
                succeeded: r.succeeded,
                results: r.responses.into_iter().filter_map(txn_op_result).collect(),
            })
        }
        Request::Compact { revision: target } => {
            let r = kv
                .compact(pb::CompactionRequest {
                    revision: *target,
                    physical: false,
                })
                .await?
                .into_inner();
            Ok(Response::Compact {
                revision: revision(&r.header),
            })
        }
        Request::LeaseGrant { .. } | Request::LeaseRevoke { .. } => {
            Err(Status::internal("lease requests go to the lease service"))
        }
    }
}

/// How a gRPC error reads in the history: a store refusal the model checks, a refusal
/// before proposing (no effect), or indeterminate.
pub fn outcome_of(status: &Status) -> Outcome {
    let message = status.message();
    match status.code() {
        Code::OutOfRange if message.contains("compacted") => Outcome::Error(StoreError::Compacted),
        Code::OutOfRange if message.contains("future revision") => {
            Outcome::Error(StoreError::FutureRev)
        }
        Code::NotFound if message.contains("lease not found") => {
            Outcome::Error(StoreError::LeaseNotFound)
        }
        Code::FailedPrecondition if message.contains("lease already exists") => {
            Outcome::Error(StoreError::LeaseExists)
        }
        // Refused by validation or by a limit before anything was proposed.
        Code::InvalidArgument | Code::ResourceExhausted => Outcome::Failed(message.to_string()),
        // No leader, leader changed, timed out, connection lost: it may have happened.
        _ => Outcome::Indeterminate(format!("{:?}: {message}", status.code())),
    }
}

fn revision(header: &Option<pb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

pub fn key_value(kv: mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn range_result(r: pb::RangeResponse) -> RangeResult {
    RangeResult {
        kvs: r.kvs.into_iter().map(key_value).collect(),
        count: r.count,
        more: r.more,
    }
}

fn put_request(put: &Put) -> pb::PutRequest {
    pb::PutRequest {
        key: put.key.clone(),
        value: put.value.clone(),
        lease: put.lease,
        prev_kv: put.prev_kv,
        ..Default::default()
    }
}

fn range_request(range: &Range) -> pb::RangeRequest {
    pb::RangeRequest {
        key: range.key.clone(),
        range_end: range.range_end.clone(),
        revision: range.revision,
        limit: range.limit,
        serializable: range.serializable,
        ..Default::default()
    }
}

fn delete_request(delete: &DeleteRange) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key: delete.key.clone(),
        range_end: delete.range_end.clone(),
        prev_kv: delete.prev_kv,
    }
}

fn txn_request(txn: &Txn) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: txn.compare.iter().map(compare).collect(),
        success: txn.success.iter().map(request_op).collect(),
        failure: txn.failure.iter().map(request_op).collect(),
    }
}

fn compare(c: &Compare) -> pb::Compare {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match c.result {
        CompareResult::Equal => R::Equal,
        CompareResult::NotEqual => R::NotEqual,
        CompareResult::Greater => R::Greater,
        CompareResult::Less => R::Less,
    };
    let (target, union) = match &c.target {
        CompareTarget::Version(v) => (T::Version, U::Version(*v)),
        CompareTarget::CreateRevision(v) => (T::Create, U::CreateRevision(*v)),
        CompareTarget::ModRevision(v) => (T::Mod, U::ModRevision(*v)),
        CompareTarget::Value(v) => (T::Value, U::Value(v.clone())),
        CompareTarget::Lease(v) => (T::Lease, U::Lease(*v)),
    };
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        target_union: Some(union),
    }
}

fn request_op(op: &TxnOp) -> pb::RequestOp {
    use pb::request_op::Request as R;
    let request = match op {
        TxnOp::Range(range) => R::RequestRange(range_request(range)),
        TxnOp::Put(put) => R::RequestPut(put_request(put)),
        TxnOp::DeleteRange(delete) => R::RequestDeleteRange(delete_request(delete)),
    };
    pb::RequestOp {
        request: Some(request),
    }
}

fn txn_op_result(op: pb::ResponseOp) -> Option<TxnOpResult> {
    use pb::response_op::Response as R;
    match op.response? {
        R::ResponseRange(r) => Some(TxnOpResult::Range(range_result(r))),
        R::ResponsePut(r) => Some(TxnOpResult::Put {
            prev_kv: r.prev_kv.map(key_value),
        }),
        R::ResponseDeleteRange(r) => Some(TxnOpResult::DeleteRange {
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
        }),
        R::ResponseTxn(_) => None,
    }
}

/// etcd #14571: turns authentication on and off, again and again, while clients write
/// (their requests carry no token, so they are refused while it is on), until `until`; it
/// ends with authentication off. Returns how many times it was turned on, or why setting
/// up a root user or turning authentication off failed.
pub async fn toggle_auth(
    endpoints: Vec<Endpoint>,
    until: tokio::time::Instant,
    mut rng: impl rand::Rng,
) -> Result<usize, String> {
    for op in [AuthOp::RoleAdd, AuthOp::UserAdd, AuthOp::GrantRoot] {
        auth_until_ok(&endpoints, op).await?;
    }
    let mut enabled = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..600))).await;
        if tokio::time::Instant::now() >= until {
            break;
        }
        let url = &endpoints[rng.gen_range(0..endpoints.len())].url;
        if auth_op(url, AuthOp::Enable).await.is_ok() {
            enabled += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..600))).await;
        auth_until_ok(&endpoints, AuthOp::Disable).await?;
    }
    auth_until_ok(&endpoints, AuthOp::Disable).await?;
    Ok(enabled)
}

#[derive(Clone, Copy, Debug)]
enum AuthOp {
    RoleAdd,
    UserAdd,
    GrantRoot,
    Enable,
    /// Authenticates as root, then turns authentication off with the token.
    Disable,
}

/// The user (and role) [`toggle_auth`] creates; its password is its name.
const AUTH_ROOT: &str = "root";

/// `op` on any member in turn until it succeeds or says it needs doing no more.
async fn auth_until_ok(endpoints: &[Endpoint], op: AuthOp) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..100 {
        match auth_op(&endpoints[attempt % endpoints.len()].url, op).await {
            Ok(()) => return Ok(()),
            Err(e) if e.contains("already exist") || e.contains("not enabled") => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{op:?} never succeeded: {last}"))
}

async fn auth_op(url: &str, op: AuthOp) -> Result<(), String> {
    use keel_net::proto::etcdserverpb::auth_client::AuthClient;
    let attempt = async {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .connect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut auth = AuthClient::new(channel);
        let root = || AUTH_ROOT.to_string();
        match op {
            AuthOp::RoleAdd => {
                auth.role_add(pb::AuthRoleAddRequest { name: root() })
                    .await?;
            }
            AuthOp::UserAdd => {
                auth.user_add(pb::AuthUserAddRequest {
                    name: root(),
                    password: root(),
                    ..Default::default()
                })
                .await?;
            }
            AuthOp::GrantRoot => {
                auth.user_grant_role(pb::AuthUserGrantRoleRequest {
                    user: root(),
                    role: root(),
                })
                .await?;
            }
            AuthOp::Enable => {
                auth.auth_enable(pb::AuthEnableRequest {}).await?;
            }
            AuthOp::Disable => {
                let token = auth
                    .authenticate(pb::AuthenticateRequest {
                        name: root(),
                        password: root(),
                    })
                    .await?
                    .into_inner()
                    .token;
                let mut request = tonic::Request::new(pb::AuthDisableRequest {});
                let value = token
                    .parse()
                    .map_err(|_| Status::internal("a token that is no header value"))?;
                request.metadata_mut().insert("token", value);
                auth.auth_disable(request).await?;
            }
        }
        Ok::<(), Status>(())
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err("timed out".to_string()),
    }
}

/// The lock key [`hold_locks`] takes, the key its holders write fenced (a txn that checks
/// the lock is still theirs), and the key they write unfenced (a plain put).
pub const LOCK_KEY: &str = "klock";
pub const FENCED_KEY: &str = "kfenced";
pub const UNFENCED_KEY: &str = "kunfenced";

/// Jepsen's etcd 3.4.3 analysis: a lock held through a lease is not safe by itself: a
/// holder that stalls (a GC pause, a stopped process) past its lease's TTL loses the lock
/// without knowing, another takes it, and the first one, resuming, still acts as the
/// holder. Fencing with the lock key's revision makes that safe: a write guarded by
/// `create_revision(lock) == my revision` fails once the lock is someone else's.
///
/// A holder takes the lock (a txn creating the key with a 2 s lease if absent), sometimes
/// stalls for 3 to 4 s without keep-alives, then writes [`FENCED_KEY`] fenced and
/// [`UNFENCED_KEY`] plain, and releases the lock (fenced). Every request is recorded, so
/// the linearizability checker verifies each fence as the store evaluated it.
pub async fn hold_locks(
    id: ClientId,
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<std::sync::atomic::AtomicBool>,
    mut rng: impl rand::Rng,
) {
    use std::sync::atomic::Ordering;
    let mut client = SimClient::new(
        id,
        endpoints.clone(),
        recorder.clone(),
        Duration::from_secs(5),
    );
    let lock = bytes::Bytes::from_static(LOCK_KEY.as_bytes());
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..200))).await;
        let server = rng.gen_range(0..endpoints.len());
        let Outcome::Ok(Response::LeaseGrant { id: lease, .. }) = client
            .execute(server, Request::LeaseGrant { ttl: 2, id: 0 })
            .await
        else {
            continue;
        };
        let time = recorder.now();
        recorder.with(|h| h.may_expire(lease, time));
        let value = |what: &str| bytes::Bytes::from(format!("{what}{id}-{round}"));
        let acquire = Request::Txn(Txn {
            compare: vec![Compare {
                key: lock.clone(),
                range_end: bytes::Bytes::new(),
                result: CompareResult::Equal,
                target: CompareTarget::CreateRevision(0),
            }],
            success: vec![TxnOp::Put(Put {
                key: lock.clone(),
                value: value("holder"),
                lease,
                prev_kv: false,
            })],
            failure: vec![],
        });
        let Outcome::Ok(Response::Txn {
            revision: held_at,
            succeeded: true,
            ..
        }) = client.execute(server, acquire).await
        else {
            continue;
        };
        if rng.gen_bool(0.4) {
            // Stalls past the lease's TTL, not knowing it.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(3000..4000))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(10..300))).await;
        }
        let fence = || Compare {
            key: lock.clone(),
            range_end: bytes::Bytes::new(),
            result: CompareResult::Equal,
            target: CompareTarget::CreateRevision(held_at),
        };
        let server = rng.gen_range(0..endpoints.len());
        let fenced = Request::Txn(Txn {
            compare: vec![fence()],
            success: vec![TxnOp::Put(Put {
                key: bytes::Bytes::from_static(FENCED_KEY.as_bytes()),
                value: value("fenced"),
                lease: 0,
                prev_kv: false,
            })],
            failure: vec![],
        });
        client.execute(server, fenced).await;
        let unfenced = Request::Put(Put {
            key: bytes::Bytes::from_static(UNFENCED_KEY.as_bytes()),
            value: value("unfenced"),
            lease: 0,
            prev_kv: false,
        });
        client.execute(server, unfenced).await;
        let release = Request::Txn(Txn {
            compare: vec![fence()],
            success: vec![TxnOp::DeleteRange(DeleteRange {
                key: lock.clone(),
                range_end: bytes::Bytes::new(),
                prev_kv: false,
            })],
            failure: vec![],
        });
        client.execute(server, release).await;
    }
}
