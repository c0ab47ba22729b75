//! etcd's protobuf messages ↔ keel-core's types. Field for field, no semantics: the core
//! types mirror the protos (see `keel_core::mvcc`). Enums arrive as `i32`; an unknown value
//! is the client's error, reported as etcd reports it.

use keel_core::mvcc as core;
use keel_core::rpctypes::RpcError;
use tonic::Status;

use super::status;

use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;

fn invalid(what: &str) -> Status {
    Status::invalid_argument(format!("etcdserver: invalid {what}"))
}

// ---- Requests ----

pub fn range_request(r: pb::RangeRequest) -> Result<core::RangeRequest, Status> {
    let sort_order = match pb::range_request::SortOrder::try_from(r.sort_order) {
        Ok(pb::range_request::SortOrder::None) => core::SortOrder::None,
        Ok(pb::range_request::SortOrder::Ascend) => core::SortOrder::Ascend,
        Ok(pb::range_request::SortOrder::Descend) => core::SortOrder::Descend,
        Err(_) => return Err(status(RpcError::InvalidSortOption)),
    };
    let sort_target = match pb::range_request::SortTarget::try_from(r.sort_target) {
        Ok(pb::range_request::SortTarget::Key) => core::SortTarget::Key,
        Ok(pb::range_request::SortTarget::Version) => core::SortTarget::Version,
        Ok(pb::range_request::SortTarget::Create) => core::SortTarget::Create,
        Ok(pb::range_request::SortTarget::Mod) => core::SortTarget::Mod,
        Ok(pb::range_request::SortTarget::Value) => core::SortTarget::Value,
        Err(_) => return Err(status(RpcError::InvalidSortOption)),
    };
    Ok(core::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn put_request(r: pb::PutRequest) -> core::PutRequest {
    core::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn delete_range_request(r: pb::DeleteRangeRequest) -> core::DeleteRangeRequest {
    core::DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

pub fn txn_request(r: pb::TxnRequest) -> Result<core::TxnRequest, Status> {
    Ok(core::TxnRequest {
        compare: r
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: request_ops(r.success)?,
        failure: request_ops(r.failure)?,
    })
}

fn request_ops(ops: Vec<pb::RequestOp>) -> Result<Vec<core::RequestOp>, Status> {
    ops.into_iter().map(request_op).collect()
}

fn request_op(op: pb::RequestOp) -> Result<core::RequestOp, Status> {
    use pb::request_op::Request;
    match op.request {
        Some(Request::RequestRange(r)) => Ok(core::RequestOp::Range(range_request(r)?)),
        Some(Request::RequestPut(r)) => Ok(core::RequestOp::Put(put_request(r))),
        Some(Request::RequestDeleteRange(r)) => {
            Ok(core::RequestOp::DeleteRange(delete_range_request(r)))
        }
        Some(Request::RequestTxn(r)) => Ok(core::RequestOp::Txn(txn_request(r)?)),
        None => Err(invalid("request op")),
    }
}

fn compare(c: pb::Compare) -> Result<core::Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => core::CompareResult::Equal,
        Ok(R::Greater) => core::CompareResult::Greater,
        Ok(R::Less) => core::CompareResult::Less,
        Ok(R::NotEqual) => core::CompareResult::NotEqual,
        Err(_) => return Err(invalid("compare result")),
    };
    let target = match T::try_from(c.target) {
        Ok(T::Version) => core::CompareTarget::Version,
        Ok(T::Create) => core::CompareTarget::Create,
        Ok(T::Mod) => core::CompareTarget::Mod,
        Ok(T::Value) => core::CompareTarget::Value,
        Ok(T::Lease) => core::CompareTarget::Lease,
        Err(_) => return Err(invalid("compare target")),
    };
    let target_union = c.target_union.map(|u| match u {
        U::Version(v) => core::TargetUnion::Version(v),
        U::CreateRevision(v) => core::TargetUnion::CreateRevision(v),
        U::ModRevision(v) => core::TargetUnion::ModRevision(v),
        U::Value(v) => core::TargetUnion::Value(v),
        U::Lease(v) => core::TargetUnion::Lease(v),
    });
    Ok(core::Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
        target_union,
    })
}

pub fn compaction_request(r: pb::CompactionRequest) -> core::CompactionRequest {
    core::CompactionRequest {
        revision: r.revision,
        physical: r.physical,
    }
}

// ---- Responses ----

pub fn key_value(kv: core::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event(e: core::Event) -> mvccpb::Event {
    let r#type = match e.r#type {
        core::EventType::Put => mvccpb::event::EventType::Put,
        core::EventType::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: r#type as i32,
        kv: Some(key_value(e.kv)),
        prev_kv: e.prev_kv.map(key_value),
    }
}

/// Fills a response header: the revision from the core, the rest from the server.
pub trait HeaderSource {
    fn header(&self, revision: i64) -> pb::ResponseHeader;
}

pub fn range_response(r: core::RangeResponse, h: &impl HeaderSource) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(h.header(r.header.revision)),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_response(r: core::PutResponse, h: &impl HeaderSource) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(h.header(r.header.revision)),
        prev_kv: r.prev_kv.map(key_value),
    }
}

pub fn delete_range_response(
    r: core::DeleteRangeResponse,
    h: &impl HeaderSource,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(h.header(r.header.revision)),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// The header of a response nested in a txn: etcd fills in only the revision there.
struct RevisionOnly;

impl HeaderSource for RevisionOnly {
    fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            revision,
            ..pb::ResponseHeader::default()
        }
    }
}

pub fn txn_response(r: core::TxnResponse, h: &impl HeaderSource) -> pb::TxnResponse {
    use pb::response_op::Response;
    let nested = &RevisionOnly;
    let responses = r
        .responses
        .into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                core::ResponseOp::Range(r) => Response::ResponseRange(range_response(r, nested)),
                core::ResponseOp::Put(r) => Response::ResponsePut(put_response(r, nested)),
                core::ResponseOp::DeleteRange(r) => {
                    Response::ResponseDeleteRange(delete_range_response(r, nested))
                }
                core::ResponseOp::Txn(r) => Response::ResponseTxn(txn_response(r, nested)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(h.header(r.header.revision)),
        succeeded: r.succeeded,
        responses,
    }
}

pub fn compaction_response(
    r: core::CompactionResponse,
    h: &impl HeaderSource,
) -> pb::CompactionResponse {
    pb::CompactionResponse {
        header: Some(h.header(r.header.revision)),
    }
}

// ---- Watch ----

/// etcd ignores filter values it does not know (`FiltersFromRequest`), so does keel.
pub fn watch_create_request(r: pb::WatchCreateRequest) -> core::WatchCreateRequest {
    use pb::watch_create_request::FilterType;
    let filters = r
        .filters
        .iter()
        .filter_map(|&f| match FilterType::try_from(f) {
            Ok(FilterType::Noput) => Some(core::WatchFilterType::NoPut),
            Ok(FilterType::Nodelete) => Some(core::WatchFilterType::NoDelete),
            Err(_) => None,
        })
        .collect();
    core::WatchCreateRequest {
        key: r.key,
        range_end: r.range_end,
        start_revision: r.start_revision,
        progress_notify: r.progress_notify,
        filters,
        prev_kv: r.prev_kv,
        watch_id: r.watch_id,
        fragment: r.fragment,
    }
}

pub fn watch_response(r: core::WatchResponse, h: &impl HeaderSource) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(h.header(r.header.revision)),
        watch_id: r.watch_id,
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision,
        cancel_reason: r.cancel_reason,
        // A whole response; `super::watch::fragments` marks the pieces of a split one.
        fragment: false,
        events: r.events.into_iter().map(event).collect(),
    }
}

// ---- Lease ----

pub fn lease_grant_request(r: pb::LeaseGrantRequest) -> core::LeaseGrantRequest {
    core::LeaseGrantRequest {
        ttl: r.ttl,
        id: r.id,
    }
}

pub fn lease_grant_response(
    r: core::LeaseGrantResponse,
    h: &impl HeaderSource,
) -> pb::LeaseGrantResponse {
    pb::LeaseGrantResponse {
        header: Some(h.header(r.header.revision)),
        id: r.id,
        ttl: r.ttl,
        error: r.error,
    }
}

pub fn lease_revoke_response(
    r: core::LeaseRevokeResponse,
    h: &impl HeaderSource,
) -> pb::LeaseRevokeResponse {
    pb::LeaseRevokeResponse {
        header: Some(h.header(r.header.revision)),
    }
}

pub fn lease_keep_alive_response(
    r: core::LeaseKeepAliveResponse,
    h: &impl HeaderSource,
) -> pb::LeaseKeepAliveResponse {
    pb::LeaseKeepAliveResponse {
        header: Some(h.header(r.header.revision)),
        id: r.id,
        ttl: r.ttl,
    }
}

pub fn lease_time_to_live_request(r: pb::LeaseTimeToLiveRequest) -> core::LeaseTimeToLiveRequest {
    core::LeaseTimeToLiveRequest {
        id: r.id,
        keys: r.keys,
    }
}

pub fn lease_time_to_live_response(
    r: core::LeaseTimeToLiveResponse,
    h: &impl HeaderSource,
) -> pb::LeaseTimeToLiveResponse {
    pb::LeaseTimeToLiveResponse {
        header: Some(h.header(r.header.revision)),
        id: r.id,
        ttl: r.ttl,
        granted_ttl: r.granted_ttl,
        keys: r.keys,
    }
}

pub fn lease_leases_response(
    r: core::LeaseLeasesResponse,
    h: &impl HeaderSource,
) -> pb::LeaseLeasesResponse {
    pb::LeaseLeasesResponse {
        header: Some(h.header(r.header.revision)),
        leases: r
            .leases
            .into_iter()
            .map(|l| pb::LeaseStatus { id: l.id })
            .collect(),
    }
}

// ---- Cluster ----

pub fn member(m: keel_core::node::Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

pub fn members(members: impl IntoIterator<Item = keel_core::node::Member>) -> Vec<pb::Member> {
    members.into_iter().map(member).collect()
}

// ---- Maintenance ----

pub fn alarm_request(r: pb::AlarmRequest) -> Result<core::AlarmRequest, Status> {
    use pb::alarm_request::AlarmAction as A;
    let action = match A::try_from(r.action) {
        Ok(A::Get) => core::AlarmAction::Get,
        Ok(A::Activate) => core::AlarmAction::Activate,
        Ok(A::Deactivate) => core::AlarmAction::Deactivate,
        Err(_) => return Err(invalid("alarm action")),
    };
    let alarm = alarm_type_from(r.alarm).ok_or_else(|| invalid("alarm type"))?;
    Ok(core::AlarmRequest {
        action,
        member_id: r.member_id,
        alarm,
    })
}

fn alarm_type_from(value: i32) -> Option<core::AlarmType> {
    match pb::AlarmType::try_from(value) {
        Ok(pb::AlarmType::None) => Some(core::AlarmType::None),
        Ok(pb::AlarmType::Nospace) => Some(core::AlarmType::NoSpace),
        Ok(pb::AlarmType::Corrupt) => Some(core::AlarmType::Corrupt),
        Err(_) => None,
    }
}

fn alarm_type(alarm: core::AlarmType) -> pb::AlarmType {
    match alarm {
        core::AlarmType::None => pb::AlarmType::None,
        core::AlarmType::NoSpace => pb::AlarmType::Nospace,
        core::AlarmType::Corrupt => pb::AlarmType::Corrupt,
    }
}

pub fn alarm_member(a: core::AlarmMember) -> pb::AlarmMember {
    pb::AlarmMember {
        member_id: a.member_id,
        alarm: alarm_type(a.alarm) as i32,
    }
}

/// An alarm as etcd's `Status.errors` shows it: the protobuf text form of `AlarmMember`.
pub fn alarm_text(a: core::AlarmMember) -> String {
    format!(
        "memberID:{} alarm:{} ",
        a.member_id,
        alarm_type(a.alarm).as_str_name()
    )
}

pub fn alarm_response(r: core::AlarmResponse, h: &impl HeaderSource) -> pb::AlarmResponse {
    pb::AlarmResponse {
        header: Some(h.header(r.header.revision)),
        alarms: r.alarms.into_iter().map(alarm_member).collect(),
    }
}

pub fn hash_kv_response(r: core::HashKvResponse, h: &impl HeaderSource) -> pb::HashKvResponse {
    pb::HashKvResponse {
        header: Some(h.header(r.header.revision)),
        hash: r.hash,
        compact_revision: r.compact_revision,
        hash_revision: r.hash_revision,
    }
}
