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

mod display;

pub(crate) use display::{fmt_bytes, fmt_time};

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
