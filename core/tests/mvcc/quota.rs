use keel_core::mvcc::*;
use keel_core::rpctypes::ToRpcError;

use crate::common::*;

fn small_quota() -> Harness {
    Harness::with_config(StoreConfig {
        quota_bytes: 2_000,
        ..StoreConfig::default()
    })
}

fn no_space(h: &Harness) -> bool {
    h.store
        .alarms()
        .iter()
        .any(|a| a.alarm == AlarmType::NoSpace)
}

fn put_ten_bytes(h: &mut Harness, key: &str) -> Result<PutResponse, Error> {
    h.put_req(PutRequest {
        key: b(key),
        value: b("0123456789"),
        ..Default::default()
    })
}

fn raise_no_space(h: &mut Harness, member_id: u64) {
    h.apply(Command::Alarm(AlarmRequest {
        action: AlarmAction::Activate,
        member_id,
        alarm: AlarmType::NoSpace,
    }));
    assert!(no_space(h));
}

/// The quota is a member's own flag, so applying never looks at it: the writes in the log
/// apply on every member alike. What it refuses is proposing a write that does not fit.
#[test]
fn the_quota_refuses_proposals_and_never_changes_what_applying_does() {
    let mut h = small_quota();
    let mut i = 0;
    while !h.store.over_quota() {
        put_ten_bytes(&mut h, &format!("k{i}")).expect("applying ignores the quota");
        i += 1;
        assert!(i < 1_000, "the estimate grows with every put");
    }
    put_ten_bytes(&mut h, "one more").expect("still applied beyond the quota");
    assert!(
        !no_space(&h),
        "only a proposal through the log raises the alarm"
    );
    let put = Command::Put(PutRequest {
        key: b("a"),
        ..Default::default()
    });
    assert_eq!(h.store.check_command(&put), Err(Error::NoSpace));
    let grant = Command::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 1 });
    assert_eq!(h.store.check_command(&grant), Err(Error::NoSpace));
    let delete = Command::DeleteRange(DeleteRangeRequest {
        key: b("k0"),
        ..Default::default()
    });
    assert_eq!(h.store.check_command(&delete), Ok(()), "adds no data");
}

#[test]
fn while_nospace_is_raised_writes_that_add_data_are_refused_when_applied() {
    let mut h = Harness::new();
    h.put("a", "1");
    raise_no_space(&mut h, 2);
    let rev = h.rev();
    assert_eq!(put_ten_bytes(&mut h, "b").unwrap_err(), Error::NoSpace);
    assert_eq!(h.grant(1, 10).unwrap_err(), Error::NoSpace);
    let txn_with_put_in_failure = TxnRequest {
        failure: vec![put_op("z", "1")],
        ..Default::default()
    };
    assert_eq!(h.txn(txn_with_put_in_failure).unwrap_err(), Error::NoSpace);
    assert_eq!(h.rev(), rev, "refused writes change nothing");
}

#[test]
fn under_nospace_deletes_compaction_revokes_and_reads_still_work_and_disarm_reopens() {
    let mut h = small_quota();
    h.grant(1, 10).unwrap();
    for i in 0..20 {
        put_ten_bytes(&mut h, &format!("k{i:02}")).unwrap();
    }
    raise_no_space(&mut h, 2);
    assert!(h.delete("k00", "k05").deleted > 0);
    h.compact(h.rev()).unwrap();
    h.revoke(1).unwrap();
    assert!(h.store.range(&range("k", "l")).is_ok());
    let read_only = TxnRequest {
        success: vec![range_op("k00", "")],
        ..Default::default()
    };
    assert!(h.txn(read_only).is_ok());
    assert_eq!(put_ten_bytes(&mut h, "n").unwrap_err(), Error::NoSpace);
    let applied = h.apply(Command::Alarm(AlarmRequest {
        action: AlarmAction::Deactivate,
        member_id: 2,
        alarm: AlarmType::NoSpace,
    }));
    let Ok(Response::Alarm(r)) = applied.result else {
        panic!()
    };
    assert_eq!(r.alarms.len(), 1);
    assert!(!no_space(&h));
    h.put("n", "fits again");
}

#[test]
fn alarms_can_be_listed_activated_and_deactivated() {
    let mut h = Harness::new();
    let activate = AlarmRequest {
        action: AlarmAction::Activate,
        member_id: 3,
        alarm: AlarmType::Corrupt,
    };
    h.apply(Command::Alarm(activate));
    let Ok(Response::Alarm(list)) = h.apply(Command::Alarm(AlarmRequest::default())).result else {
        panic!()
    };
    assert_eq!(
        list.alarms,
        [AlarmMember {
            member_id: 3,
            alarm: AlarmType::Corrupt
        }]
    );
}

/// etcd's corrupt applier: while a CORRUPT alarm is active every write fails with
/// "etcdserver: corrupt cluster" (DataLoss) and changes nothing; reads go on; the operator
/// disarms it once the member whose data differed is replaced.
#[test]
fn a_corrupt_alarm_refuses_every_write_until_disarmed() {
    let mut h = Harness::new();
    h.put("a", "1");
    h.grant(1, 10).unwrap();
    let corrupt = AlarmRequest {
        action: AlarmAction::Activate,
        member_id: 3,
        alarm: AlarmType::Corrupt,
    };
    h.apply(Command::Alarm(corrupt.clone()));
    assert!(h.store.corrupt_alarm_active());
    let rev = h.rev();
    let put = PutRequest {
        key: b("a"),
        value: b("2"),
        ..Default::default()
    };
    assert_eq!(h.put_req(put.clone()).unwrap_err(), Error::Corrupt);
    assert_eq!(
        h.delete_req(DeleteRangeRequest {
            key: b("a"),
            ..Default::default()
        })
        .unwrap_err(),
        Error::Corrupt
    );
    let txn = TxnRequest {
        success: vec![delete_op("a", "")],
        ..Default::default()
    };
    assert_eq!(h.txn(txn).unwrap_err(), Error::Corrupt);
    assert_eq!(h.compact(rev).unwrap_err(), Error::Corrupt);
    assert_eq!(h.grant(2, 10).unwrap_err(), Error::Corrupt);
    assert_eq!(h.revoke(1).unwrap_err(), Error::Corrupt);
    assert_eq!(
        h.store.check_command(&Command::Put(put)),
        Err(Error::Corrupt),
        "refused before proposing too"
    );
    assert_eq!(Error::Corrupt.rpc_error().code(), GrpcCode::DataLoss);
    assert_eq!(Error::Corrupt.to_string(), "etcdserver: corrupt cluster");
    assert_eq!(h.rev(), rev, "refused writes change nothing");
    assert_eq!(h.get("a").map(|kv| kv.value), Some(b("1")));
    h.apply(Command::Alarm(AlarmRequest {
        action: AlarmAction::Deactivate,
        ..corrupt
    }));
    h.put("a", "writes again");
}
