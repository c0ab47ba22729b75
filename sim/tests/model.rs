//! The etcd KV model: its rules one by one, and a differential test against keel-core's
//! MVCC store (two independent implementations of etcd's semantics must agree).

mod common;

use bytes::Bytes;
use common::*;
use keel_core::mvcc as core;
use keel_sim::history::*;
use keel_sim::KvModel;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn apply(m: &mut KvModel, r: Request) -> Result<Response, StoreError> {
    m.apply(&r)
}

#[test]
fn empty_store_starts_at_revision_one() {
    let mut m = KvModel::new();
    assert_eq!(m.revision(), 1);
    assert_eq!(m.compact_revision(), -1);
    assert_eq!(
        apply(&mut m, get("a")),
        Ok(Response::Range {
            revision: 1,
            result: RangeResult::default()
        })
    );
}

#[test]
fn put_bumps_revision_and_version_resets_after_delete() {
    let mut m = KvModel::new();
    assert_eq!(apply(&mut m, put("a", "1")).map(|r| r.revision()), Ok(2));
    assert_eq!(apply(&mut m, put("a", "2")).map(|r| r.revision()), Ok(3));
    assert_eq!(m.get(b"a", 3), Some(kv("a", "2", 2, 3, 2)));
    assert_eq!(
        apply(&mut m, delete("a")),
        Ok(Response::DeleteRange {
            revision: 4,
            deleted: 1,
            prev_kvs: vec![]
        })
    );
    // A delete of nothing does not bump the revision.
    assert_eq!(
        apply(&mut m, delete("a")),
        Ok(Response::DeleteRange {
            revision: 4,
            deleted: 0,
            prev_kvs: vec![]
        })
    );
    apply(&mut m, put("a", "3")).expect("put");
    assert_eq!(m.get(b"a", 5), Some(kv("a", "3", 5, 5, 1)));
    // History stays readable.
    assert_eq!(m.get(b"a", 2), Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(m.get(b"a", 4), None);
}

#[test]
fn reads_check_future_before_compacted() {
    let mut m = KvModel::new();
    apply(&mut m, put("a", "1")).expect("put");
    apply(&mut m, put("a", "2")).expect("put");
    assert_eq!(apply(&mut m, get_at("a", 4)), Err(StoreError::FutureRev));
    apply(&mut m, Request::Compact { revision: 3 }).expect("compact");
    assert_eq!(apply(&mut m, get_at("a", 2)), Err(StoreError::Compacted));
    assert_eq!(
        apply(&mut m, get_at("a", 3)).map(|r| r.revision()),
        Ok(3),
        "the compact revision itself is readable"
    );
    assert_eq!(
        apply(&mut m, Request::Compact { revision: 3 }),
        Err(StoreError::Compacted)
    );
    assert_eq!(
        apply(&mut m, Request::Compact { revision: 9 }),
        Err(StoreError::FutureRev)
    );
}

#[test]
fn txn_is_one_revision_and_reads_its_own_writes() {
    let mut m = KvModel::new();
    apply(&mut m, put("a", "1")).expect("put");
    let txn = Request::Txn(Txn {
        compare: vec![Compare {
            key: b("a"),
            range_end: Bytes::new(),
            result: CompareResult::Equal,
            target: CompareTarget::Value(b("1")),
        }],
        success: vec![
            TxnOp::Put(Put {
                key: b("b"),
                value: b("x"),
                prev_kv: true,
                ..Put::default()
            }),
            TxnOp::DeleteRange(DeleteRange {
                key: b("a"),
                range_end: Bytes::new(),
                prev_kv: true,
            }),
            TxnOp::Range(Range {
                key: b("a"),
                range_end: b("c"),
                ..Range::default()
            }),
        ],
        failure: vec![],
    });
    let r = apply(&mut m, txn).expect("txn");
    assert_eq!(
        r,
        Response::Txn {
            revision: 3,
            succeeded: true,
            results: vec![
                TxnOpResult::Put { prev_kv: None },
                TxnOpResult::DeleteRange {
                    deleted: 1,
                    prev_kvs: vec![kv("a", "1", 2, 2, 1)]
                },
                TxnOpResult::Range(RangeResult {
                    kvs: vec![kv("b", "x", 3, 3, 1)],
                    count: 1,
                    more: false
                }),
            ],
        }
    );
    let events = m.events(3);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[1].kind, EventKind::Delete);
    assert_eq!(events[1].prev_kv, Some(kv("a", "1", 2, 2, 1)));
}

#[test]
fn compare_on_missing_key() {
    let mut m = KvModel::new();
    let cmp = |target| {
        Request::Txn(Txn {
            compare: vec![Compare {
                key: b("nope"),
                range_end: Bytes::new(),
                result: CompareResult::Equal,
                target,
            }],
            success: vec![],
            failure: vec![],
        })
    };
    let succeeded = |r: Result<Response, StoreError>| match r {
        Ok(Response::Txn { succeeded, .. }) => succeeded,
        other => panic!("{other:?}"),
    };
    // Zero version / mod revision: equal to 0.
    assert!(succeeded(apply(&mut m, cmp(CompareTarget::Version(0)))));
    assert!(succeeded(apply(&mut m, cmp(CompareTarget::ModRevision(0)))));
    // A value compare on a missing key is false, even against the empty value.
    assert!(!succeeded(apply(
        &mut m,
        cmp(CompareTarget::Value(Bytes::new()))
    )));
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision() {
    let mut m = KvModel::new();
    assert_eq!(
        apply(&mut m, Request::LeaseGrant { ttl: 10, id: 7 }),
        Ok(Response::LeaseGrant {
            revision: 1,
            id: 7,
            ttl: 10
        })
    );
    assert_eq!(
        apply(&mut m, Request::LeaseGrant { ttl: 10, id: 7 }),
        Err(StoreError::LeaseExists)
    );
    for key in ["a", "b"] {
        apply(
            &mut m,
            Request::Put(Put {
                key: b(key),
                value: b("v"),
                lease: 7,
                prev_kv: false,
            }),
        )
        .expect("put");
    }
    apply(&mut m, put("c", "v")).expect("put");
    assert_eq!(
        apply(&mut m, Request::LeaseRevoke { id: 7 }),
        Ok(Response::LeaseRevoke { revision: 5 })
    );
    assert_eq!(m.events(5).len(), 2);
    assert_eq!(m.get(b"a", 5), None);
    assert!(m.get(b"c", 5).is_some());
    assert_eq!(
        apply(&mut m, Request::LeaseRevoke { id: 7 }),
        Err(StoreError::LeaseNotFound)
    );
    assert_eq!(
        apply(
            &mut m,
            Request::Put(Put {
                key: b("a"),
                value: b("v"),
                lease: 7,
                prev_kv: false
            })
        ),
        Err(StoreError::LeaseNotFound)
    );
}

#[test]
fn range_limit_counts_before_limit() {
    let mut m = KvModel::new();
    for k in ["a", "b", "c"] {
        apply(&mut m, put(k, "v")).expect("put");
    }
    let r = m.range(b"a", b"\0", 4, 2);
    assert_eq!(r.kvs.len(), 2);
    assert_eq!(r.count, 3);
    assert!(r.more);
}

#[test]
fn step_returns_the_possible_states() {
    let m = KvModel::new();
    assert_eq!(m.step(&put("a", "1"), &ok_put(2)).len(), 1);
    assert!(m.step(&put("a", "1"), &ok_put(3)).is_empty());
    assert_eq!(m.step(&put("a", "1"), &unknown()).len(), 2);
    assert_eq!(m.step(&get("a"), &unknown()).len(), 1);
    assert_eq!(
        m.step(&get_at("a", 5), &Outcome::Error(StoreError::FutureRev))
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------
// Differential test against keel-core's store.

fn to_core_put(p: &Put) -> core::PutRequest {
    core::PutRequest {
        key: p.key.clone(),
        value: p.value.clone(),
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: false,
        ignore_lease: false,
    }
}

fn to_core_range(r: &Range) -> core::RangeRequest {
    core::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        ..core::RangeRequest::default()
    }
}

fn to_core_op(op: &TxnOp) -> core::RequestOp {
    match op {
        TxnOp::Range(r) => core::RequestOp::Range(to_core_range(r)),
        TxnOp::Put(p) => core::RequestOp::Put(to_core_put(p)),
        TxnOp::DeleteRange(d) => core::RequestOp::DeleteRange(core::DeleteRangeRequest {
            key: d.key.clone(),
            range_end: d.range_end.clone(),
            prev_kv: d.prev_kv,
        }),
    }
}

fn to_core_txn(t: &Txn) -> core::TxnRequest {
    core::TxnRequest {
        compare: t
            .compare
            .iter()
            .map(|c| {
                let (target, union) = match &c.target {
                    CompareTarget::Version(v) => {
                        (core::CompareTarget::Version, core::TargetUnion::Version(*v))
                    }
                    CompareTarget::CreateRevision(v) => (
                        core::CompareTarget::Create,
                        core::TargetUnion::CreateRevision(*v),
                    ),
                    CompareTarget::ModRevision(v) => {
                        (core::CompareTarget::Mod, core::TargetUnion::ModRevision(*v))
                    }
                    CompareTarget::Value(v) => (
                        core::CompareTarget::Value,
                        core::TargetUnion::Value(v.clone()),
                    ),
                    CompareTarget::Lease(v) => {
                        (core::CompareTarget::Lease, core::TargetUnion::Lease(*v))
                    }
                };
                core::Compare {
                    result: match c.result {
                        CompareResult::Equal => core::CompareResult::Equal,
                        CompareResult::NotEqual => core::CompareResult::NotEqual,
                        CompareResult::Greater => core::CompareResult::Greater,
                        CompareResult::Less => core::CompareResult::Less,
                    },
                    target,
                    key: c.key.clone(),
                    range_end: c.range_end.clone(),
                    target_union: Some(union),
                }
            })
            .collect(),
        success: t.success.iter().map(to_core_op).collect(),
        failure: t.failure.iter().map(to_core_op).collect(),
    }
}

fn from_core_kv(kv: &core::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key.clone(),
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn from_core_range(r: &core::RangeResponse) -> RangeResult {
    RangeResult {
        kvs: r.kvs.iter().map(from_core_kv).collect(),
        count: r.count,
        more: r.more,
    }
}

fn from_core_op(r: &core::ResponseOp) -> TxnOpResult {
    match r {
        core::ResponseOp::Range(r) => TxnOpResult::Range(from_core_range(r)),
        core::ResponseOp::Put(p) => TxnOpResult::Put {
            prev_kv: p.prev_kv.as_ref().map(from_core_kv),
        },
        core::ResponseOp::DeleteRange(d) => TxnOpResult::DeleteRange {
            deleted: d.deleted,
            prev_kvs: d.prev_kvs.iter().map(from_core_kv).collect(),
        },
        core::ResponseOp::Txn(_) => panic!("nested txn"),
    }
}

fn from_core_error(e: core::Error) -> StoreError {
    match e {
        core::Error::Compacted => StoreError::Compacted,
        core::Error::FutureRev => StoreError::FutureRev,
        core::Error::LeaseNotFound => StoreError::LeaseNotFound,
        core::Error::LeaseExists => StoreError::LeaseExists,
        other => panic!("unexpected store error {other:?}"),
    }
}

fn from_core_event(e: &core::Event) -> Event {
    Event {
        kind: match e.r#type {
            core::EventType::Put => EventKind::Put,
            core::EventType::Delete => EventKind::Delete,
        },
        kv: from_core_kv(&e.kv),
        prev_kv: e.prev_kv.as_ref().map(from_core_kv),
    }
}

/// Applies one request to keel-core's store: the response and the revision's events.
fn core_apply(
    store: &mut core::Store,
    index: &mut u64,
    request: &Request,
) -> (Result<Response, StoreError>, Vec<Event>) {
    let command = match request {
        Request::Range(r) => {
            let result = store
                .range(&to_core_range(r))
                .map(|resp| Response::Range {
                    revision: resp.header.revision,
                    result: from_core_range(&resp),
                })
                .map_err(from_core_error);
            return (result, Vec::new());
        }
        Request::Txn(t) if t.is_read_only() => {
            let result = store
                .read_txn(&to_core_txn(t))
                .map(|resp| Response::Txn {
                    revision: resp.header.revision,
                    succeeded: resp.succeeded,
                    results: resp.responses.iter().map(from_core_op).collect(),
                })
                .map_err(from_core_error);
            return (result, Vec::new());
        }
        Request::Put(p) => core::Command::Put(to_core_put(p)),
        Request::DeleteRange(d) => core::Command::DeleteRange(core::DeleteRangeRequest {
            key: d.key.clone(),
            range_end: d.range_end.clone(),
            prev_kv: d.prev_kv,
        }),
        Request::Txn(t) => core::Command::Txn(to_core_txn(t)),
        Request::LeaseGrant { ttl, id } => {
            core::Command::LeaseGrant(core::LeaseGrantRequest { ttl: *ttl, id: *id })
        }
        Request::LeaseRevoke { id } => {
            core::Command::LeaseRevoke(core::LeaseRevokeRequest { id: *id })
        }
        Request::Compact { revision } => core::Command::Compaction(core::CompactionRequest {
            revision: *revision,
            physical: false,
        }),
    };
    *index += 1;
    let applied = store.apply(*index, 0, &command);
    let result = applied
        .result
        .map(|r| match r {
            core::Response::Put(p) => Response::Put {
                revision: p.header.revision,
                prev_kv: p.prev_kv.as_ref().map(from_core_kv),
            },
            core::Response::DeleteRange(d) => Response::DeleteRange {
                revision: d.header.revision,
                deleted: d.deleted,
                prev_kvs: d.prev_kvs.iter().map(from_core_kv).collect(),
            },
            core::Response::Txn(t) => Response::Txn {
                revision: t.header.revision,
                succeeded: t.succeeded,
                results: t.responses.iter().map(from_core_op).collect(),
            },
            core::Response::Compaction(c) => Response::Compact {
                revision: c.header.revision,
            },
            core::Response::LeaseGrant(g) => Response::LeaseGrant {
                revision: g.header.revision,
                id: g.id,
                ttl: g.ttl,
            },
            core::Response::LeaseRevoke(r) => Response::LeaseRevoke {
                revision: r.header.revision,
            },
            other => panic!("unexpected response {other:?}"),
        })
        .map_err(from_core_error);
    (result, applied.events.iter().map(from_core_event).collect())
}

fn random_txn_op(rng: &mut ChaCha8Rng, leases: &[i64]) -> TxnOp {
    let key = format!("k{}", rng.gen_range(0..5));
    match rng.gen_range(0..3) {
        0 => TxnOp::Range(Range {
            key: b(&key),
            range_end: if rng.gen_bool(0.3) {
                b("l")
            } else {
                Bytes::new()
            },
            revision: if rng.gen_bool(0.2) {
                rng.gen_range(1..30)
            } else {
                0
            },
            limit: rng.gen_range(0..3),
            serializable: false,
        }),
        1 => TxnOp::Put(Put {
            key: b(&key),
            value: b(&format!("v{}", rng.gen_range(0..1000))),
            lease: if rng.gen_bool(0.2) && !leases.is_empty() {
                leases[rng.gen_range(0..leases.len())]
            } else {
                0
            },
            prev_kv: rng.gen_bool(0.5),
        }),
        _ => TxnOp::DeleteRange(DeleteRange {
            key: b(&key),
            range_end: if rng.gen_bool(0.3) {
                b("k4")
            } else {
                Bytes::new()
            },
            prev_kv: rng.gen_bool(0.5),
        }),
    }
}

fn random_request(rng: &mut ChaCha8Rng, leases: &[i64], rev: i64) -> Request {
    let key = format!("k{}", rng.gen_range(0..5));
    match rng.gen_range(0..10) {
        0..=2 => match random_txn_op(rng, leases) {
            TxnOp::Range(r) => Request::Range(r),
            TxnOp::Put(p) => Request::Put(p),
            TxnOp::DeleteRange(d) => Request::DeleteRange(d),
        },
        3..=5 => {
            let targets = [
                CompareTarget::Version(rng.gen_range(0..3)),
                CompareTarget::ModRevision(rng.gen_range(0..rev + 1)),
                CompareTarget::CreateRevision(rng.gen_range(0..rev + 1)),
                CompareTarget::Value(b(&format!("v{}", rng.gen_range(0..1000)))),
                CompareTarget::Lease(0),
            ];
            let results = [
                CompareResult::Equal,
                CompareResult::NotEqual,
                CompareResult::Greater,
                CompareResult::Less,
            ];
            // One op per key and branch: etcd refuses duplicate keys in a txn.
            let branch = |rng: &mut ChaCha8Rng| {
                let mut ops: Vec<TxnOp> = Vec::new();
                for _ in 0..rng.gen_range(0..3) {
                    let op = random_txn_op(rng, leases);
                    let writes = |o: &TxnOp| !matches!(o, TxnOp::Range(_));
                    if writes(&op) && ops.iter().any(writes) {
                        continue;
                    }
                    ops.push(op);
                }
                ops
            };
            Request::Txn(Txn {
                compare: (0..rng.gen_range(0..3))
                    .map(|_| Compare {
                        key: b(&key),
                        range_end: if rng.gen_bool(0.2) {
                            b("l")
                        } else {
                            Bytes::new()
                        },
                        result: results[rng.gen_range(0..4)],
                        target: targets[rng.gen_range(0..5)].clone(),
                    })
                    .collect(),
                success: branch(rng),
                failure: branch(rng),
            })
        }
        6 => Request::LeaseGrant {
            ttl: 10,
            id: rng.gen_range(1..6),
        },
        7 => Request::LeaseRevoke {
            id: rng.gen_range(1..6),
        },
        8 => Request::Compact {
            revision: rng.gen_range(0..rev + 3),
        },
        _ => Request::Range(Range {
            key: b(&key),
            revision: rng.gen_range(0..rev + 3),
            ..Range::default()
        }),
    }
}

#[test]
fn model_agrees_with_keel_core_store() {
    for seed in 0..200u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut model = KvModel::new();
        let mut store = core::Store::new(core::StoreConfig::default());
        let mut index = 0u64;
        for step in 0..150 {
            let leases: Vec<i64> = model.leases().collect();
            let request = random_request(&mut rng, &leases, model.revision());
            let before = model.revision();
            let ours = model.apply(&request);
            let (theirs, events) = core_apply(&mut store, &mut index, &request);
            assert_eq!(
                ours, theirs,
                "seed {seed} step {step}: {request}\n model: {ours:?}\n core:  {theirs:?}"
            );
            if model.revision() != before {
                assert_eq!(
                    model.events(model.revision()),
                    events.as_slice(),
                    "seed {seed} step {step}: events of {request}"
                );
            }
            assert_eq!(model.revision(), store.current_revision(), "seed {seed}");
        }
    }
}
