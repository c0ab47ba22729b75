use bytes::Bytes;
use keel_core::mvcc::*;

use crate::common::*;

fn version_eq(key: &str, v: i64) -> Compare {
    cmp(
        key,
        CompareTarget::Version,
        CompareResult::Equal,
        TargetUnion::Version(v),
    )
}

#[test]
fn a_txn_is_one_revision_with_its_changes_in_order() {
    let mut h = Harness::new();
    h.put("x", "0");
    let applied = h.apply(Command::Txn(TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "1"), put_op("b", "2"), delete_op("x", "")],
        failure: vec![],
    }));
    assert_eq!(applied.revision, 3);
    let kinds: Vec<(EventType, String, i64)> = applied
        .events
        .iter()
        .map(|e| {
            (
                e.r#type,
                String::from_utf8_lossy(&e.kv.key).into_owned(),
                e.kv.mod_revision,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (EventType::Put, "a".into(), 3),
            (EventType::Put, "b".into(), 3),
            (EventType::Delete, "x".into(), 3)
        ]
    );
    assert_eq!(
        h.get("a").unwrap().mod_revision,
        h.get("b").unwrap().mod_revision
    );
}

#[test]
fn the_failure_branch_runs_when_a_compare_fails() {
    let mut h = Harness::new();
    h.put("a", "1");
    let r = h
        .txn(TxnRequest {
            compare: vec![version_eq("a", 5)],
            success: vec![put_op("s", "1")],
            failure: vec![put_op("f", "1"), range_op("a", "")],
        })
        .unwrap();
    assert!(!r.succeeded);
    assert!(h.get("s").is_none() && h.get("f").is_some());
    let ResponseOp::Range(range) = &r.responses[1] else {
        panic!()
    };
    assert_eq!(range.kvs[0].value, b("1"));
}

#[test]
fn a_compare_on_a_missing_key_compares_against_zero_except_value_which_fails() {
    let mut h = Harness::new();
    let create_zero = cmp(
        "nope",
        CompareTarget::Create,
        CompareResult::Equal,
        TargetUnion::CreateRevision(0),
    );
    let r = h
        .txn(TxnRequest {
            compare: vec![create_zero],
            ..Default::default()
        })
        .unwrap();
    assert!(r.succeeded, "a missing key has create_revision 0");
    let empty_value = cmp(
        "nope",
        CompareTarget::Value,
        CompareResult::Equal,
        TargetUnion::Value(Bytes::new()),
    );
    let r = h
        .txn(TxnRequest {
            compare: vec![empty_value],
            ..Default::default()
        })
        .unwrap();
    assert!(
        !r.succeeded,
        "a value compare on a missing key always fails"
    );
}

#[test]
fn a_target_union_that_does_not_match_the_target_compares_against_zero() {
    let mut h = Harness::new();
    h.put("a", "1");
    let c = cmp(
        "a",
        CompareTarget::Version,
        CompareResult::Greater,
        TargetUnion::ModRevision(100),
    );
    assert!(
        h.txn(TxnRequest {
            compare: vec![c],
            ..Default::default()
        })
        .unwrap()
        .succeeded
    );
}

#[test]
fn a_compare_over_a_range_must_hold_for_every_key() {
    let mut h = Harness::new();
    h.put("a1", "1");
    h.put("a2", "1");
    h.put("a2", "2");
    let mut c = version_eq("a", 1);
    c.range_end = b("b");
    assert!(
        !h.txn(TxnRequest {
            compare: vec![c.clone()],
            ..Default::default()
        })
        .unwrap()
        .succeeded
    );
    c.result = CompareResult::Greater;
    c.target_union = Some(TargetUnion::Version(0));
    assert!(
        h.txn(TxnRequest {
            compare: vec![c],
            ..Default::default()
        })
        .unwrap()
        .succeeded
    );
}

#[test]
fn lease_and_mod_compares_work() {
    let mut h = Harness::new();
    h.grant(9, 60).unwrap();
    h.put_req(PutRequest {
        key: b("a"),
        value: b("1"),
        lease: 9,
        ..Default::default()
    })
    .unwrap();
    let rev = h.rev();
    let c1 = cmp(
        "a",
        CompareTarget::Lease,
        CompareResult::Equal,
        TargetUnion::Lease(9),
    );
    let c2 = cmp(
        "a",
        CompareTarget::Mod,
        CompareResult::Equal,
        TargetUnion::ModRevision(rev),
    );
    let c3 = cmp(
        "a",
        CompareTarget::Value,
        CompareResult::Less,
        TargetUnion::Value(b("2")),
    );
    let c4 = cmp(
        "a",
        CompareTarget::Create,
        CompareResult::NotEqual,
        TargetUnion::CreateRevision(1),
    );
    assert!(
        h.txn(TxnRequest {
            compare: vec![c1, c2, c3, c4],
            ..Default::default()
        })
        .unwrap()
        .succeeded
    );
}

#[test]
fn reads_inside_a_txn_see_its_earlier_writes() {
    let mut h = Harness::new();
    h.put("a", "old");
    let r = h
        .txn(TxnRequest {
            success: vec![range_op("a", ""), put_op("a", "new"), range_op("a", "")],
            ..Default::default()
        })
        .unwrap();
    let ResponseOp::Range(before) = &r.responses[0] else {
        panic!()
    };
    let ResponseOp::Range(after) = &r.responses[2] else {
        panic!()
    };
    assert_eq!(before.kvs[0].value, b("old"));
    assert_eq!(before.header.revision, 2);
    assert_eq!(after.kvs[0].value, b("new"));
    assert_eq!(after.header.revision, 3);
    assert_eq!(r.header.revision, 3);
}

#[test]
fn nested_txn_compares_see_the_state_before_the_outer_txn() {
    let mut h = Harness::new();
    let nested = TxnRequest {
        compare: vec![version_eq("a", 0)],
        success: vec![put_op("b", "saw-no-a")],
        failure: vec![put_op("b", "saw-a")],
    };
    let r = h
        .txn(TxnRequest {
            success: vec![put_op("a", "1"), RequestOp::Txn(nested)],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(h.get("b").unwrap().value, b("saw-no-a"));
    let ResponseOp::Txn(inner) = &r.responses[1] else {
        panic!()
    };
    assert!(inner.succeeded);
    assert_eq!(h.rev(), 2, "the nested writes share the outer revision");
}

#[test]
fn a_key_written_twice_in_one_txn_is_a_duplicate_key() {
    let mut h = Harness::new();
    let twice = TxnRequest {
        success: vec![put_op("a", "1"), put_op("a", "2")],
        ..Default::default()
    };
    assert_eq!(h.txn(twice).unwrap_err(), Error::DuplicateKey);
    let put_in_delete = TxnRequest {
        success: vec![delete_op("a", "c"), put_op("b", "1")],
        ..Default::default()
    };
    assert_eq!(h.txn(put_in_delete).unwrap_err(), Error::DuplicateKey);
    let nested_clash = TxnRequest {
        success: vec![
            put_op("a", "1"),
            RequestOp::Txn(TxnRequest {
                success: vec![put_op("a", "2")],
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert_eq!(h.txn(nested_clash).unwrap_err(), Error::DuplicateKey);
    assert_eq!(h.rev(), 1);
}

#[test]
fn a_nested_txn_may_put_the_same_key_in_success_and_failure() {
    let mut h = Harness::new();
    let both = TxnRequest {
        success: vec![RequestOp::Txn(TxnRequest {
            success: vec![put_op("a", "s")],
            failure: vec![put_op("a", "f")],
            ..Default::default()
        })],
        ..Default::default()
    };
    assert!(h.txn(both).is_ok());
    // Different branches of the top-level txn are checked separately too.
    let branches = TxnRequest {
        success: vec![put_op("a", "1")],
        failure: vec![put_op("a", "2")],
        ..Default::default()
    };
    assert!(h.txn(branches).is_ok());
}

#[test]
fn a_from_key_delete_and_a_put_of_a_key_in_it_may_share_a_txn_as_in_etcd() {
    // etcd's interval check treats range_end "\0" literally, so this is not a duplicate.
    let mut h = Harness::new();
    h.put("b", "old");
    let r = h
        .txn(TxnRequest {
            success: vec![delete_op("a", "\0"), put_op("b", "new")],
            ..Default::default()
        })
        .unwrap();
    assert!(r.succeeded);
    let kv = h.get("b").unwrap();
    assert_eq!((kv.value, kv.version, kv.create_revision), (b("new"), 1, 3));
    // But an ignore_value put after such a delete finds no key (etcd panics here).
    h.put("c", "x");
    let ignore = RequestOp::Put(PutRequest {
        key: b("c"),
        ignore_value: true,
        ..Default::default()
    });
    let err = h
        .txn(TxnRequest {
            success: vec![delete_op("a", "\0"), ignore],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::KeyNotFound);
    assert!(h.get("c").is_some());
}

#[test]
fn too_many_operations_are_refused_before_proposing() {
    let h = Harness::new();
    let ops: Vec<RequestOp> = (0..129).map(|i| put_op(&format!("k{i}"), "v")).collect();
    let txn = Command::Txn(TxnRequest {
        success: ops.clone(),
        ..Default::default()
    });
    assert_eq!(h.store.check_command(&txn), Err(Error::TooManyOps));
    let ok = Command::Txn(TxnRequest {
        success: ops[..128].to_vec(),
        ..Default::default()
    });
    assert_eq!(h.store.check_command(&ok), Ok(()));
    // A nested txn counts against what its parent leaves (etcd's rule).
    let mut outer = ops[..127].to_vec();
    outer.push(RequestOp::Txn(TxnRequest {
        success: vec![put_op("n1", "v"), put_op("n2", "v")],
        ..Default::default()
    }));
    let nested = Command::Txn(TxnRequest {
        success: outer,
        ..Default::default()
    });
    assert_eq!(h.store.check_command(&nested), Err(Error::TooManyOps));
}

#[test]
fn a_txn_that_fails_a_check_changes_nothing() {
    let mut h = Harness::new();
    h.put("a", "1");
    let mut past = range("a", "");
    past.revision = 99;
    let bad_range = TxnRequest {
        success: vec![put_op("b", "1"), RequestOp::Range(past)],
        ..Default::default()
    };
    assert_eq!(h.txn(bad_range).unwrap_err(), Error::FutureRev);
    let bad_lease = TxnRequest {
        success: vec![
            put_op("b", "1"),
            RequestOp::Put(PutRequest {
                key: b("c"),
                lease: 77,
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert_eq!(h.txn(bad_lease).unwrap_err(), Error::LeaseNotFound);
    assert_eq!(h.rev(), 2);
    assert!(h.get("b").is_none());
}

#[test]
fn an_empty_compare_key_or_an_empty_op_key_is_refused() {
    let mut h = Harness::new();
    let c = cmp(
        "",
        CompareTarget::Version,
        CompareResult::Equal,
        TargetUnion::Version(0),
    );
    assert_eq!(
        h.txn(TxnRequest {
            compare: vec![c],
            ..Default::default()
        })
        .unwrap_err(),
        Error::EmptyKey
    );
    assert_eq!(
        h.txn(TxnRequest {
            success: vec![range_op("", "")],
            ..Default::default()
        })
        .unwrap_err(),
        Error::EmptyKey
    );
}

#[test]
fn a_txn_without_changes_does_not_bump_the_revision() {
    let mut h = Harness::new();
    h.put("a", "1");
    let r = h
        .txn(TxnRequest {
            success: vec![delete_op("missing", ""), range_op("a", "")],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.header.revision, 2);
    assert_eq!(h.rev(), 2);
}

#[test]
fn a_read_only_txn_is_served_without_raft() {
    let mut h = Harness::new();
    h.put("a", "1");
    let txn = TxnRequest {
        compare: vec![version_eq("a", 1)],
        success: vec![
            range_op("a", ""),
            RequestOp::Txn(TxnRequest {
                success: vec![range_op("a", "")],
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    assert!(txn.is_read_only());
    let r = h.store.read_txn(&txn).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.responses.len(), 2);
    assert_eq!(r.header.revision, 2);
}
