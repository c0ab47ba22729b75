//! What a simulation run records, and nothing else: the client operations with their
//! invoke/complete times and outcomes, the watch streams with every response received,
//! and the cluster-wide facts the end-of-run checks need (a final read-back, `HashKV`
//! results, revisions observed per member).
//!
//! These are the checker's own plain types (not keel-core's or the gRPC layer's), so the
//! checkers stay independent of the code they judge; the simulator converts what its
//! clients see. Keys and values are `Bytes`.
//!
//! Rules for the recorder:
//! - `Time` is simulated time in nanoseconds since the run started. Only the order matters;
//!   equal times are treated as concurrent.
//! - A client operation that timed out, lost its connection, or was still pending when the
//!   run ended is [`Outcome::Indeterminate`]: it may or may not have taken effect, at any
//!   point after its invocation (also after the client gave up).
//! - [`Outcome::Failed`] is only for requests that certainly had no effect (refused by
//!   validation before being proposed). [`Outcome::Error`] is a refusal decided by the
//!   store at its linearization point (`ErrCompacted`, `ErrFutureRev`, lease errors); the
//!   checker verifies it against the model.
//! - Values written by the workload should be unique per key (as etcd's robustness tests
//!   do): the checker then pins each indeterminate write to the revision where a read or a
//!   watch saw its value. Duplicates are allowed but make the search slower.
//! - A lease that may expire must be recorded with [`History::may_expire`] (an
//!   indeterminate `LeaseRevoke` from a pseudo-client): the deletes of an expiry are then
//!   explained by the history.
//! - Run a watch of the whole keyspace from revision 1 (re-created from the revision after
//!   its last one when it breaks): its events pin the content of every revision, which keeps the
//!   linearizability search fast whatever the share of lost responses, and checks the
//!   watch path at the same time.
//! - End the run with a linearizable read of every key, recorded both as an operation and
//!   as a [`FinalRead`] (for durability), and `HashKV` at a common revision on every member.

use std::fmt;

use bytes::Bytes;

/// A client of the simulated cluster.
pub type ClientId = u64;
/// A member (node) of the simulated cluster.
pub type MemberId = u64;
/// Simulated nanoseconds since the run started.
pub type Time = u64;
/// Index of an operation in [`History::operations`].
pub type OpId = usize;
/// Index of a watch in [`History::watches`].
pub type WatchIndex = usize;

/// `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// `PutRequest` (the fields the model uses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Put {
    pub key: Bytes,
    pub value: Bytes,
    /// 0: no lease.
    pub lease: i64,
    pub prev_kv: bool,
}

/// `RangeRequest` (the fields the model uses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub key: Bytes,
    /// etcd's convention: empty = the single key, `"\0"` = every key `>= key`, else `[key, range_end)`.
    pub range_end: Bytes,
    /// `<= 0`: the current revision.
    pub revision: i64,
    /// `<= 0`: no limit.
    pub limit: i64,
    /// Served by the member without ReadIndex: may be stale, checked separately.
    pub serializable: bool,
}

/// `DeleteRangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRange {
    pub key: Bytes,
    pub range_end: Bytes,
    pub prev_kv: bool,
}

/// `Compare.CompareResult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// `Compare`'s target with the value compared against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Value(Bytes),
    Lease(i64),
}

/// `Compare`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    pub range_end: Bytes,
    pub result: CompareResult,
    pub target: CompareTarget,
}

/// `RequestOp` (nested txns are not modelled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Range(Range),
    Put(Put),
    DeleteRange(DeleteRange),
}

/// `TxnRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// No put or delete in either branch.
    pub fn is_read_only(&self) -> bool {
        self.success
            .iter()
            .chain(&self.failure)
            .all(|op| matches!(op, TxnOp::Range(_)))
    }

    /// Read-only with every range serializable: etcd serves such a txn locally.
    pub fn is_serializable(&self) -> bool {
        self.success
            .iter()
            .chain(&self.failure)
            .all(|op| matches!(op, TxnOp::Range(r) if r.serializable))
    }
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Put(Put),
    Range(Range),
    DeleteRange(DeleteRange),
    Txn(Txn),
    /// `id == 0`: the server chooses (the response says which).
    LeaseGrant {
        ttl: i64,
        id: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    Compact {
        revision: i64,
    },
}

impl Request {
    /// Reads only: a range, or a txn with ranges only.
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Range(_) => true,
            Request::Txn(txn) => txn.is_read_only(),
            _ => false,
        }
    }

    /// Served by the member without ReadIndex (may be stale).
    pub fn is_serializable(&self) -> bool {
        match self {
            Request::Range(r) => r.serializable,
            Request::Txn(txn) => txn.is_read_only() && txn.is_serializable(),
            _ => false,
        }
    }
}

/// The kvs of a range (`RangeResponse` without its header).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub count: i64,
    pub more: bool,
}

/// One `ResponseOp` of a txn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResult {
    Range(RangeResult),
    /// `prev_kv` only when the put asked for it and the key existed.
    Put {
        prev_kv: Option<KeyValue>,
    },
    DeleteRange {
        deleted: i64,
        /// Only when the delete asked for them.
        prev_kvs: Vec<KeyValue>,
    },
}

/// A successful response; `revision` is the header's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Put {
        revision: i64,
        prev_kv: Option<KeyValue>,
    },
    Range {
        revision: i64,
        result: RangeResult,
    },
    DeleteRange {
        revision: i64,
        deleted: i64,
        prev_kvs: Vec<KeyValue>,
    },
    Txn {
        revision: i64,
        succeeded: bool,
        results: Vec<TxnOpResult>,
    },
    LeaseGrant {
        revision: i64,
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        revision: i64,
    },
    Compact {
        revision: i64,
    },
}

impl Response {
    /// The header revision.
    pub fn revision(&self) -> i64 {
        match self {
            Response::Put { revision, .. }
            | Response::Range { revision, .. }
            | Response::DeleteRange { revision, .. }
            | Response::Txn { revision, .. }
            | Response::LeaseGrant { revision, .. }
            | Response::LeaseRevoke { revision }
            | Response::Compact { revision } => *revision,
        }
    }
}

/// A refusal the store decides at the operation's linearization point; the model checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoreError {
    /// "mvcc: required revision has been compacted".
    Compacted,
    /// "mvcc: required revision is a future revision".
    FutureRev,
    /// "requested lease not found".
    LeaseNotFound,
    /// "lease already exists".
    LeaseExists,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(Response),
    /// Refused by the store (checked against the model; no effect).
    Error(StoreError),
    /// Certainly had no effect (e.g. refused by validation); not checked.
    Failed(String),
    /// Timeout, connection loss, or no answer by the end of the run: may or may not have
    /// taken effect, at any time after the invocation.
    Indeterminate(String),
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: ClientId,
    /// The member the client sent it to, when known.
    pub member: Option<MemberId>,
    pub invoke: Time,
    /// When the client saw the outcome; `None` if it never did.
    pub complete: Option<Time>,
    pub request: Request,
    pub outcome: Outcome,
}

/// `WatchCreateRequest.filters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchFilters {
    pub no_put: bool,
    pub no_delete: bool,
}

/// `WatchCreateRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    /// `<= 0`: from the revision after the current one ("from now").
    pub start_revision: i64,
    pub prev_kv: bool,
    pub filters: WatchFilters,
    pub progress_notify: bool,
}

/// `mvccpb.Event.EventType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    Put,
    Delete,
}

/// `mvccpb.Event`. A delete's `kv` holds only the key and `mod_revision`, as in etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The revision of the write that produced the event.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// What one watch response carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchResponseKind {
    /// The `created` response.
    Created,
    /// A response with events (never empty).
    Events(Vec<Event>),
    /// A progress notification: everything up to the header revision was delivered.
    Progress,
    /// The watch was cancelled; `compact_revision > 0` when it was because the revision it
    /// needed was compacted.
    Canceled {
        compact_revision: i64,
        reason: String,
    },
}

/// One response received on a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchResponse {
    pub received: Time,
    pub header_revision: i64,
    pub kind: WatchResponseKind,
}

/// One watch, from creation to the end of the run (or of its stream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRecord {
    pub client: ClientId,
    /// The member that served it.
    pub member: Option<MemberId>,
    pub created: Time,
    pub request: WatchRequest,
    pub responses: Vec<WatchResponse>,
}

/// A read of every key the workload uses, after the run's recovery (for durability).
/// If it was a linearizable read, record it as an operation too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalRead {
    pub member: Option<MemberId>,
    pub time: Time,
    /// Header revision of the read.
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

/// A member's `HashKV(revision)` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberHash {
    pub member: MemberId,
    /// `hash_revision`: the revision hashed.
    pub revision: i64,
    pub compact_revision: i64,
    pub hash: u32,
}

/// A revision a member was seen at (from a response header, a status call, or its state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRevision {
    pub member: MemberId,
    pub time: Time,
    pub revision: i64,
    /// When known.
    pub compact_revision: Option<i64>,
}

/// A member restarted on a data dir an operator put back to an older copy: from `time` on,
/// it may serve an older revision than it did before (until it finds out and stops).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRollback {
    pub member: MemberId,
    pub time: Time,
}

/// Everything a run recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub operations: Vec<Operation>,
    pub watches: Vec<WatchRecord>,
    pub final_reads: Vec<FinalRead>,
    pub hashes: Vec<MemberHash>,
    pub member_revisions: Vec<MemberRevision>,
    pub member_rollbacks: Vec<MemberRollback>,
}

/// The outcome an operation has until it completes.
pub const NO_RESPONSE: &str = "no response";

/// The pseudo-client [`History::may_expire`] records lease expiries as.
pub const EXPIRY_CLIENT: ClientId = ClientId::MAX;

impl History {
    pub fn new() -> Self {
        History::default()
    }

    /// Records an invocation; the operation is indeterminate ("no response") until
    /// [`History::complete`] is called.
    pub fn invoke(
        &mut self,
        client: ClientId,
        member: Option<MemberId>,
        time: Time,
        request: Request,
    ) -> OpId {
        self.operations.push(Operation {
            client,
            member,
            invoke: time,
            complete: None,
            request,
            outcome: Outcome::Indeterminate(NO_RESPONSE.to_string()),
        });
        self.operations.len() - 1
    }

    /// Records how an invoked operation ended.
    pub fn complete(&mut self, id: OpId, time: Time, outcome: Outcome) {
        let op = &mut self.operations[id];
        assert!(op.complete.is_none(), "operation {id} completed twice");
        assert!(
            time >= op.invoke,
            "operation {id} completed before it was invoked"
        );
        op.complete = Some(time);
        op.outcome = outcome;
    }

    /// Records that a lease may expire from `time` on: the leader's revoke of an expired
    /// lease is a write no client asked for, so it is recorded as an indeterminate
    /// `LeaseRevoke` from [`EXPIRY_CLIENT`]. Call it when the lease is granted (or when its
    /// last keep-alive was sent, if the simulator tracks that).
    pub fn may_expire(&mut self, lease: i64, time: Time) -> OpId {
        let id = self.invoke(
            EXPIRY_CLIENT,
            None,
            time,
            Request::LeaseRevoke { id: lease },
        );
        self.operations[id].outcome = Outcome::Indeterminate("lease expiry".to_string());
        id
    }

    /// Records a new watch.
    pub fn open_watch(
        &mut self,
        client: ClientId,
        member: Option<MemberId>,
        time: Time,
        request: WatchRequest,
    ) -> WatchIndex {
        self.watches.push(WatchRecord {
            client,
            member,
            created: time,
            request,
            responses: Vec::new(),
        });
        self.watches.len() - 1
    }

    /// Records a response received on a watch.
    pub fn watch_response(&mut self, watch: WatchIndex, response: WatchResponse) {
        self.watches[watch].responses.push(response);
    }
}

/// A key or value for humans: printable ASCII as is, other bytes escaped, quoted.
pub(crate) fn fmt_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

/// A simulated time for humans: seconds with nanoseconds.
pub(crate) fn fmt_time(t: Time) -> String {
    format!("{}.{:09}s", t / 1_000_000_000, t % 1_000_000_000)
}

fn fmt_range(key: &[u8], range_end: &[u8]) -> String {
    match range_end {
        [] => fmt_bytes(key),
        [0] => format!("[{}, ..)", fmt_bytes(key)),
        end => format!("[{}, {})", fmt_bytes(key), fmt_bytes(end)),
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} (create {}, mod {}, ver {}",
            fmt_bytes(&self.key),
            fmt_bytes(&self.value),
            self.create_revision,
            self.mod_revision,
            self.version
        )?;
        if self.lease != 0 {
            write!(f, ", lease {}", self.lease)?;
        }
        f.write_str(")")
    }
}

fn fmt_kvs(f: &mut fmt::Formatter<'_>, kvs: &[KeyValue]) -> fmt::Result {
    f.write_str("[")?;
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{kv}")?;
    }
    f.write_str("]")
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.range_end.is_empty() {
            write!(f, "get {}", fmt_bytes(&self.key))?;
        } else {
            write!(f, "range {}", fmt_range(&self.key, &self.range_end))?;
        }
        if self.revision > 0 {
            write!(f, " at rev {}", self.revision)?;
        }
        if self.limit > 0 {
            write!(f, " limit {}", self.limit)?;
        }
        if self.serializable {
            f.write_str(" serializable")?;
        }
        Ok(())
    }
}

impl fmt::Display for Put {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "put {}={}", fmt_bytes(&self.key), fmt_bytes(&self.value))?;
        if self.lease != 0 {
            write!(f, " lease {}", self.lease)?;
        }
        if self.prev_kv {
            f.write_str(" prev_kv")?;
        }
        Ok(())
    }
}

impl fmt::Display for DeleteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "delete {}", fmt_range(&self.key, &self.range_end))?;
        if self.prev_kv {
            f.write_str(" prev_kv")?;
        }
        Ok(())
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = fmt_range(&self.key, &self.range_end);
        let op = match self.result {
            CompareResult::Equal => "==",
            CompareResult::NotEqual => "!=",
            CompareResult::Greater => ">",
            CompareResult::Less => "<",
        };
        match &self.target {
            CompareTarget::Version(v) => write!(f, "version({key}) {op} {v}"),
            CompareTarget::CreateRevision(v) => write!(f, "create({key}) {op} {v}"),
            CompareTarget::ModRevision(v) => write!(f, "mod({key}) {op} {v}"),
            CompareTarget::Value(v) => write!(f, "value({key}) {op} {}", fmt_bytes(v)),
            CompareTarget::Lease(v) => write!(f, "lease({key}) {op} {v}"),
        }
    }
}

impl fmt::Display for TxnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnOp::Range(r) => write!(f, "{r}"),
            TxnOp::Put(p) => write!(f, "{p}"),
            TxnOp::DeleteRange(d) => write!(f, "{d}"),
        }
    }
}

fn fmt_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    f.write_str("[")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str("; ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_str("]")
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Put(p) => write!(f, "{p}"),
            Request::Range(r) => write!(f, "{r}"),
            Request::DeleteRange(d) => write!(f, "{d}"),
            Request::Txn(t) => {
                f.write_str("txn if ")?;
                fmt_list(f, &t.compare)?;
                f.write_str(" then ")?;
                fmt_list(f, &t.success)?;
                f.write_str(" else ")?;
                fmt_list(f, &t.failure)
            }
            Request::LeaseGrant { ttl, id } => {
                write!(f, "lease-grant ttl {ttl}")?;
                if *id != 0 {
                    write!(f, " id {id}")?;
                }
                Ok(())
            }
            Request::LeaseRevoke { id } => write!(f, "lease-revoke {id}"),
            Request::Compact { revision } => write!(f, "compact {revision}"),
        }
    }
}

impl fmt::Display for RangeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_kvs(f, &self.kvs)?;
        if self.count != self.kvs.len() as i64 {
            write!(f, " count {}", self.count)?;
        }
        if self.more {
            f.write_str(" more")?;
        }
        Ok(())
    }
}

impl fmt::Display for TxnOpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnOpResult::Range(r) => write!(f, "{r}"),
            TxnOpResult::Put { prev_kv: None } => f.write_str("put"),
            TxnOpResult::Put { prev_kv: Some(kv) } => write!(f, "put prev {kv}"),
            TxnOpResult::DeleteRange { deleted, prev_kvs } => {
                write!(f, "deleted {deleted}")?;
                if !prev_kvs.is_empty() {
                    f.write_str(" prev ")?;
                    fmt_kvs(f, prev_kvs)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ok rev {}", self.revision())?;
        match self {
            Response::Put { prev_kv, .. } => {
                if let Some(kv) = prev_kv {
                    write!(f, " prev {kv}")?;
                }
                Ok(())
            }
            Response::Range { result, .. } => write!(f, " {result}"),
            Response::DeleteRange {
                deleted, prev_kvs, ..
            } => {
                write!(f, " deleted {deleted}")?;
                if !prev_kvs.is_empty() {
                    f.write_str(" prev ")?;
                    fmt_kvs(f, prev_kvs)?;
                }
                Ok(())
            }
            Response::Txn {
                succeeded, results, ..
            } => {
                f.write_str(if *succeeded {
                    " succeeded "
                } else {
                    " failed "
                })?;
                fmt_list(f, results)
            }
            Response::LeaseGrant { id, ttl, .. } => write!(f, " id {id} ttl {ttl}"),
            Response::LeaseRevoke { .. } | Response::Compact { .. } => Ok(()),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreError::Compacted => "mvcc: required revision has been compacted",
            StoreError::FutureRev => "mvcc: required revision is a future revision",
            StoreError::LeaseNotFound => "requested lease not found",
            StoreError::LeaseExists => "lease already exists",
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(r) => write!(f, "{r}"),
            Outcome::Error(e) => write!(f, "error: {e}"),
            Outcome::Failed(why) => write!(f, "failed (no effect): {why}"),
            Outcome::Indeterminate(why) => write!(f, "unknown: {why}"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} ", self.client)?;
        if let Some(m) = self.member {
            write!(f, "(member {m}) ")?;
        }
        match self.complete {
            Some(c) => write!(f, "[{}, {}]", fmt_time(self.invoke), fmt_time(c))?,
            None => write!(f, "[{}, -]", fmt_time(self.invoke))?,
        }
        write!(f, " {} -> {}", self.request, self.outcome)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventKind::Put => write!(f, "PUT {}", self.kv)?,
            EventKind::Delete => write!(
                f,
                "DELETE {} at rev {}",
                fmt_bytes(&self.kv.key),
                self.kv.mod_revision
            )?,
        }
        if let Some(prev) = &self.prev_kv {
            write!(f, " prev {prev}")?;
        }
        Ok(())
    }
}

impl fmt::Display for WatchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "watch {}", fmt_range(&self.key, &self.range_end))?;
        if self.start_revision > 0 {
            write!(f, " from rev {}", self.start_revision)?;
        }
        if self.prev_kv {
            f.write_str(" prev_kv")?;
        }
        if self.filters.no_put {
            f.write_str(" no_put")?;
        }
        if self.filters.no_delete {
            f.write_str(" no_delete")?;
        }
        if self.progress_notify {
            f.write_str(" progress_notify")?;
        }
        Ok(())
    }
}

impl fmt::Display for WatchResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {} rev {}: ",
            fmt_time(self.received),
            self.header_revision
        )?;
        match &self.kind {
            WatchResponseKind::Created => f.write_str("created"),
            WatchResponseKind::Events(events) => fmt_list(f, events),
            WatchResponseKind::Progress => f.write_str("progress"),
            WatchResponseKind::Canceled {
                compact_revision,
                reason,
            } => write!(
                f,
                "canceled (compact_revision {compact_revision}): {reason}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_times_print_readably() {
        assert_eq!(fmt_bytes(b"a\"b\x00"), "\"a\\\"b\\x00\"");
        assert_eq!(fmt_time(1_000_000_123), "1.000000123s");
    }

    #[test]
    fn builder_records_invoke_and_complete() {
        let mut h = History::new();
        let id = h.invoke(1, Some(2), 10, Request::Compact { revision: 1 });
        assert!(matches!(
            h.operations[id].outcome,
            Outcome::Indeterminate(_)
        ));
        h.complete(id, 20, Outcome::Error(StoreError::Compacted));
        assert_eq!(h.operations[id].complete, Some(20));
        let text = h.operations[id].to_string();
        assert!(text.contains("compact 1"), "{text}");
    }
}
