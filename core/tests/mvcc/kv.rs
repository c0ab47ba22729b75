use bytes::Bytes;
use keel_core::mvcc::*;
use keel_core::rpctypes::ToRpcError;

use crate::common::*;

#[test]
fn a_fresh_store_is_at_revision_one_and_the_first_put_creates_revision_two() {
    let mut h = Harness::new();
    assert_eq!(h.rev(), 1);
    let r = h.put("a", "1");
    assert_eq!(r.header.revision, 2);
    let kv = h.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
}

#[test]
fn overwriting_keeps_create_revision_and_increments_version() {
    let mut h = Harness::new();
    h.put("a", "1");
    h.put("b", "x");
    h.put("a", "2");
    let kv = h.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 4, 2));
    assert_eq!(kv.value, b("2"));
}

#[test]
fn putting_the_same_value_still_creates_a_revision() {
    let mut h = Harness::new();
    h.put("a", "1");
    assert_eq!(h.put("a", "1").header.revision, 3);
    assert_eq!(h.get("a").unwrap().version, 2);
}

#[test]
fn version_resets_and_create_revision_moves_after_a_delete() {
    let mut h = Harness::new();
    h.put("a", "1");
    h.put("a", "2");
    h.delete("a", "");
    h.put("a", "3");
    let kv = h.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn deleting_a_missing_key_does_not_bump_the_revision() {
    let mut h = Harness::new();
    h.put("a", "1");
    let r = h.delete("zzz", "");
    assert_eq!(r.deleted, 0);
    assert_eq!(r.header.revision, 2);
    assert_eq!(h.rev(), 2);
    // Deleting an already deleted key: the same.
    h.delete("a", "");
    assert_eq!(h.delete("a", "").header.revision, 3);
}

#[test]
fn delete_range_deletes_every_key_in_one_revision_and_returns_prev_kvs_when_asked() {
    let mut h = Harness::new();
    for k in ["a", "b", "c", "d"] {
        h.put(k, k);
    }
    let r = h.delete("b", "d");
    assert_eq!(r.deleted, 2);
    assert_eq!(keys_of(&r.prev_kvs), ["b", "c"]);
    assert_eq!(r.header.revision, 6);
    let quiet = h
        .delete_req(DeleteRangeRequest {
            key: b("a"),
            range_end: Bytes::new(),
            prev_kv: false,
        })
        .unwrap();
    assert_eq!(quiet.deleted, 1);
    assert!(quiet.prev_kvs.is_empty());
}

#[test]
fn put_returns_the_previous_version_only_when_asked() {
    let mut h = Harness::new();
    let first = h
        .put_req(PutRequest {
            key: b("a"),
            value: b("1"),
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert!(first.prev_kv.is_none());
    let second = h
        .put_req(PutRequest {
            key: b("a"),
            value: b("2"),
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(second.prev_kv.unwrap().value, b("1"));
    assert!(h.put("a", "3").prev_kv.is_none());
}

#[test]
fn put_with_an_unknown_lease_is_lease_not_found_and_changes_nothing() {
    let mut h = Harness::new();
    let err = h
        .put_req(PutRequest {
            key: b("a"),
            value: b("1"),
            lease: 42,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::LeaseNotFound);
    assert_eq!(h.rev(), 1);
    assert!(h.get("a").is_none());
}

#[test]
fn ignore_value_and_ignore_lease_keep_the_current_ones() {
    let mut h = Harness::new();
    h.grant(7, 100).unwrap();
    h.put_req(PutRequest {
        key: b("a"),
        value: b("v"),
        lease: 7,
        ..Default::default()
    })
    .unwrap();
    h.put_req(PutRequest {
        key: b("a"),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    })
    .unwrap();
    let kv = h.get("a").unwrap();
    assert_eq!((kv.value.clone(), kv.lease, kv.version), (b("v"), 7, 2));
    h.put_req(PutRequest {
        key: b("a"),
        value: b("w"),
        ignore_lease: true,
        ..Default::default()
    })
    .unwrap();
    let kv = h.get("a").unwrap();
    assert_eq!((kv.value, kv.lease), (b("w"), 7));
}

#[test]
fn ignore_value_on_a_missing_key_is_key_not_found() {
    let mut h = Harness::new();
    let err = h
        .put_req(PutRequest {
            key: b("a"),
            ignore_value: true,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::KeyNotFound);
    assert_eq!(err.to_string(), "etcdserver: key not found");
    assert_eq!(h.rev(), 1);
}

#[test]
fn ignore_value_with_a_value_and_ignore_lease_with_a_lease_are_refused() {
    let mut h = Harness::new();
    h.put("a", "1");
    let err = h
        .put_req(PutRequest {
            key: b("a"),
            value: b("x"),
            ignore_value: true,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::ValueProvided);
    let err = h
        .put_req(PutRequest {
            key: b("a"),
            lease: 5,
            ignore_lease: true,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::LeaseProvided);
    assert_eq!(h.rev(), 2);
}

#[test]
fn an_empty_key_is_refused_by_put_range_and_delete() {
    let mut h = Harness::new();
    assert_eq!(
        h.put_req(PutRequest::default()).unwrap_err(),
        Error::EmptyKey
    );
    assert_eq!(
        h.delete_req(DeleteRangeRequest::default()).unwrap_err(),
        Error::EmptyKey
    );
    assert_eq!(
        h.store.range(&RangeRequest::default()).unwrap_err(),
        Error::EmptyKey
    );
    assert_eq!(h.rev(), 1);
}

fn fill(h: &mut Harness) {
    for k in ["a", "ab", "abc", "b", "c"] {
        h.put(k, k);
    }
}

#[test]
fn range_end_selects_a_half_open_range_a_prefix_or_everything_from_a_key() {
    let mut h = Harness::new();
    fill(&mut h);
    let r = h.store.range(&range("a", "b")).unwrap();
    assert_eq!(keys_of(&r.kvs), ["a", "ab", "abc"]);
    let r = h.store.range(&range("ab", "\0")).unwrap();
    assert_eq!(keys_of(&r.kvs), ["ab", "abc", "b", "c"]);
    let r = h.store.range(&range("\0", "\0")).unwrap();
    assert_eq!(r.count, 5);
    let r = h.store.range(&range("c", "a")).unwrap();
    assert!(
        r.kvs.is_empty() && r.count == 0,
        "an inverted range is empty"
    );
}

#[test]
fn limit_sets_more_and_count_is_the_total_before_the_limit() {
    let mut h = Harness::new();
    fill(&mut h);
    let mut req = range("a", "\0");
    req.limit = 2;
    let r = h.store.range(&req).unwrap();
    assert_eq!(keys_of(&r.kvs), ["a", "ab"]);
    assert!(r.more);
    assert_eq!(r.count, 5);
    req.limit = 5;
    assert!(!h.store.range(&req).unwrap().more);
}

#[test]
fn count_ignores_the_min_max_revision_filters() {
    let mut h = Harness::new();
    fill(&mut h); // revisions 2..=6
    let mut req = range("a", "\0");
    req.min_mod_revision = 4;
    req.max_create_revision = 5;
    let r = h.store.range(&req).unwrap();
    assert_eq!(keys_of(&r.kvs), ["abc", "b"]);
    assert_eq!(r.count, 5, "etcd counts before filtering");
}

#[test]
fn count_only_returns_no_kvs_and_keys_only_no_values() {
    let mut h = Harness::new();
    fill(&mut h);
    let mut req = range("a", "\0");
    req.count_only = true;
    let r = h.store.range(&req).unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 5);
    let mut req = range("a", "b");
    req.keys_only = true;
    let r = h.store.range(&req).unwrap();
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(r.kvs[2].version, 1);
}

#[test]
fn sorting_by_a_target_without_an_order_ascends() {
    let mut h = Harness::new();
    h.put("b", "1");
    h.put("a", "3");
    h.put("c", "2");
    h.put("b", "0");
    let mut req = range("a", "\0");
    req.sort_target = SortTarget::Mod;
    assert_eq!(keys_of(&h.store.range(&req).unwrap().kvs), ["a", "c", "b"]);
    req.sort_order = SortOrder::Descend;
    assert_eq!(keys_of(&h.store.range(&req).unwrap().kvs), ["b", "c", "a"]);
    req.sort_target = SortTarget::Value;
    assert_eq!(keys_of(&h.store.range(&req).unwrap().kvs), ["a", "c", "b"]);
    req.sort_target = SortTarget::Version;
    req.sort_order = SortOrder::Descend;
    assert_eq!(
        keys_of(&h.store.range(&req).unwrap().kvs),
        ["b", "a", "c"],
        "ties keep ascending key order"
    );
    req.sort_target = SortTarget::Key;
    assert_eq!(keys_of(&h.store.range(&req).unwrap().kvs), ["c", "b", "a"]);
    req.sort_target = SortTarget::Create;
    req.sort_order = SortOrder::Ascend;
    req.limit = 2;
    let r = h.store.range(&req).unwrap();
    assert_eq!(keys_of(&r.kvs), ["b", "a"], "limit applies after sorting");
    assert!(r.more);
    // Found by the model test: the implicit ascending order is a sort too, so the limit
    // must wait for it.
    req.sort_order = SortOrder::None;
    req.limit = 1;
    let r = h.store.range(&req).unwrap();
    assert_eq!(
        keys_of(&r.kvs),
        ["b"],
        "limit applies after the implicit sort"
    );
}

#[test]
fn reading_a_past_revision_sees_history_and_the_header_carries_the_current_revision() {
    let mut h = Harness::new();
    h.put("a", "1");
    h.put("a", "2");
    h.delete("a", "");
    let mut req = get("a");
    req.revision = 2;
    let r = h.store.range(&req).unwrap();
    assert_eq!(r.kvs[0].value, b("1"));
    assert_eq!(r.header.revision, 4);
    req.revision = 4;
    assert!(h.store.range(&req).unwrap().kvs.is_empty());
    req.revision = -7;
    assert!(
        h.store.range(&req).unwrap().kvs.is_empty(),
        "a negative revision means current"
    );
}

#[test]
fn reading_a_future_revision_is_future_rev() {
    let mut h = Harness::new();
    h.put("a", "1");
    let mut req = get("a");
    req.revision = 3;
    let err = h.store.range(&req).unwrap_err();
    assert_eq!(err, Error::FutureRev);
    assert_eq!(err.rpc_error().code(), GrpcCode::OutOfRange);
}

#[test]
fn reading_below_the_compact_revision_is_compacted_and_at_it_is_allowed() {
    let mut h = Harness::new();
    h.put("a", "1");
    h.put("a", "2");
    h.put("a", "3");
    h.compact(3).unwrap();
    let mut req = get("a");
    req.revision = 2;
    assert_eq!(h.store.range(&req).unwrap_err(), Error::Compacted);
    req.revision = 3;
    assert_eq!(h.store.range(&req).unwrap().kvs[0].value, b("2"));
}

#[test]
fn errors_carry_etcds_messages_and_grpc_codes() {
    let table = [
        (
            Error::EmptyKey,
            "etcdserver: key is not provided",
            "InvalidArgument",
        ),
        (
            Error::KeyNotFound,
            "etcdserver: key not found",
            "InvalidArgument",
        ),
        (
            Error::ValueProvided,
            "etcdserver: value is provided",
            "InvalidArgument",
        ),
        (
            Error::LeaseProvided,
            "etcdserver: lease is provided",
            "InvalidArgument",
        ),
        (
            Error::TooManyOps,
            "etcdserver: too many operations in txn request",
            "InvalidArgument",
        ),
        (
            Error::DuplicateKey,
            "etcdserver: duplicate key given in txn request",
            "InvalidArgument",
        ),
        (
            Error::InvalidSortOption,
            "etcdserver: invalid sort option",
            "InvalidArgument",
        ),
        (
            Error::Compacted,
            "etcdserver: mvcc: required revision has been compacted",
            "OutOfRange",
        ),
        (
            Error::FutureRev,
            "etcdserver: mvcc: required revision is a future revision",
            "OutOfRange",
        ),
        (
            Error::NoSpace,
            "etcdserver: mvcc: database space exceeded",
            "ResourceExhausted",
        ),
        (
            Error::LeaseNotFound,
            "etcdserver: requested lease not found",
            "NotFound",
        ),
        (
            Error::LeaseExists,
            "etcdserver: lease already exists",
            "FailedPrecondition",
        ),
        (
            Error::LeaseTtlTooLarge,
            "etcdserver: too large lease TTL",
            "OutOfRange",
        ),
        (
            Error::RequestTooLarge,
            "etcdserver: request is too large",
            "InvalidArgument",
        ),
    ];
    for (err, message, code) in table {
        assert_eq!(err.to_string(), message);
        assert_eq!(err.rpc_error().code().name(), code, "{message}");
    }
}

#[test]
fn a_request_over_the_size_limit_is_refused_before_proposing() {
    let h = Harness::new();
    let big = Command::Put(PutRequest {
        key: b("a"),
        value: Bytes::from(vec![7u8; DEFAULT_MAX_REQUEST_BYTES]),
        ..Default::default()
    });
    assert_eq!(h.store.check_command(&big), Err(Error::RequestTooLarge));
    let small = Command::Put(PutRequest {
        key: b("a"),
        value: Bytes::from(vec![7u8; 1024]),
        ..Default::default()
    });
    assert_eq!(h.store.check_command(&small), Ok(()));
}

#[test]
fn commands_round_trip_through_their_raft_encoding_and_garbage_is_a_typed_error() {
    let cmd = Command::Txn(TxnRequest {
        compare: vec![cmp(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b("x")),
        )],
        success: vec![put_op("a", "y"), delete_op("b", "c")],
        failure: vec![range_op("a", "")],
    });
    assert_eq!(Command::decode(&cmd.encode()).unwrap(), cmd);
    assert!(Command::decode(&[0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    assert!(Command::decode(&[]).is_err());
}

#[test]
fn applying_is_deterministic() {
    let run = || {
        let mut h = Harness::new();
        h.grant(0, 10).unwrap();
        h.put("a", "1");
        h.delete("a", "");
        h.put("b", "2");
        (h.store.snapshot(), h.store.hash_kv(0).unwrap())
    };
    assert_eq!(run(), run());
}
