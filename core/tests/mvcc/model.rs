//! Random operation sequences against a deliberately naive reference model: the full key
//! map of every revision in a `Vec`, transactions run on a cloned map, history read by
//! indexing the `Vec`. Every response, every revision's events, watch catch-up from any
//! revision and the lease list are compared, across snapshot/restore and compaction.

use std::collections::BTreeMap;

use bytes::Bytes;
use keel_core::mvcc::*;
use proptest::prelude::*;

const KEYS: [&str; 5] = ["a", "b", "ba", "c", "d"];
const VALUES: [&str; 4] = ["", "x", "y", "zz"];

type State = BTreeMap<Bytes, KeyValue>;

#[derive(Clone, Debug)]
struct Change {
    kind: EventType,
    key: Bytes,
    kv: Option<KeyValue>,
}

struct Model {
    /// `states[r]` is the whole store at revision `r` (index 0 unused).
    states: Vec<State>,
    /// `changes[r]`: the changes of revision `r`, in order.
    changes: Vec<Vec<Change>>,
    compact: i64,
    leases: BTreeMap<i64, i64>,
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

impl Model {
    fn new() -> Self {
        Model {
            states: vec![State::new(), State::new()],
            changes: vec![vec![], vec![]],
            compact: -1,
            leases: BTreeMap::new(),
        }
    }

    fn rev(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn current(&self) -> &State {
        &self.states[self.states.len() - 1]
    }

    fn read_rev(&self, requested: i64, view: i64) -> Result<i64, Error> {
        if requested > view {
            return Err(Error::FutureRev);
        }
        let rev = if requested <= 0 { view } else { requested };
        if rev < self.compact {
            return Err(Error::Compacted);
        }
        Ok(rev)
    }

    fn range_in(state: &State, r: &RangeRequest, header: i64) -> RangeResponse {
        let mut kvs: Vec<KeyValue> = state
            .values()
            .filter(|kv| in_range(&kv.key, &r.key, &r.range_end))
            .cloned()
            .collect();
        let count = kvs.len() as i64;
        if r.count_only {
            kvs.clear();
        }
        kvs.retain(|kv| {
            (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
        });
        let key_fn = |kv: &KeyValue| -> (i64, Bytes) {
            match r.sort_target {
                SortTarget::Key => (0, kv.key.clone()),
                SortTarget::Version => (kv.version, Bytes::new()),
                SortTarget::Create => (kv.create_revision, Bytes::new()),
                SortTarget::Mod => (kv.mod_revision, Bytes::new()),
                SortTarget::Value => (0, kv.value.clone()),
            }
        };
        let order = match (r.sort_order, r.sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (o, _) => o,
        };
        match order {
            SortOrder::Ascend => kvs.sort_by_key(key_fn),
            SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(key_fn(kv))),
            SortOrder::None => {}
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() as i64 > r.limit {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value = Bytes::new());
        }
        RangeResponse {
            header: ResponseHeader::at(header),
            kvs,
            more,
            count,
        }
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, Error> {
        if r.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let rev = self.read_rev(r.revision, self.rev())?;
        Ok(Self::range_in(&self.states[rev as usize], r, self.rev()))
    }

    /// Applies a command; returns the result and the changes of the new revision.
    fn apply(
        &mut self,
        cmd: &Command,
        lease_id_from_store: Option<i64>,
    ) -> Result<Response, Error> {
        check_command(
            cmd,
            &Limits {
                max_request_bytes: usize::MAX,
                max_txn_ops: usize::MAX,
            },
        )?;
        match cmd {
            Command::Put(p) => {
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                    return Err(Error::LeaseNotFound);
                }
                if (p.ignore_value || p.ignore_lease) && !self.current().contains_key(&p.key) {
                    return Err(Error::KeyNotFound);
                }
                let mut tx = Tx::new(self);
                let prev = tx.put(p);
                let rev = self.commit(tx);
                Ok(Response::Put(PutResponse {
                    header: ResponseHeader::at(rev),
                    prev_kv: prev.filter(|_| p.prev_kv),
                }))
            }
            Command::DeleteRange(d) => {
                let mut tx = Tx::new(self);
                let mut resp = tx.delete(d);
                let rev = self.commit(tx);
                resp.header = ResponseHeader::at(rev);
                Ok(Response::DeleteRange(resp))
            }
            Command::Txn(t) => self.txn(t),
            Command::Compaction(c) => {
                if c.revision <= self.compact {
                    return Err(Error::Compacted);
                }
                if c.revision > self.rev() {
                    return Err(Error::FutureRev);
                }
                self.compact = c.revision;
                Ok(Response::Compaction(CompactionResponse {
                    header: ResponseHeader::at(self.rev()),
                }))
            }
            Command::LeaseGrant(g) => {
                let id = if g.id == 0 {
                    lease_id_from_store.unwrap_or(0)
                } else {
                    g.id
                };
                if g.ttl > MAX_LEASE_TTL_S {
                    return Err(Error::LeaseTtlTooLarge);
                }
                if self.leases.contains_key(&id) {
                    return Err(Error::LeaseExists);
                }
                let ttl = g.ttl.max(DEFAULT_MIN_LEASE_TTL_S);
                self.leases.insert(id, ttl);
                Ok(Response::LeaseGrant(LeaseGrantResponse {
                    header: ResponseHeader::at(self.rev()),
                    id,
                    ttl,
                    error: String::new(),
                }))
            }
            Command::LeaseRevoke(r) => {
                if self.leases.remove(&r.id).is_none() {
                    return Err(Error::LeaseNotFound);
                }
                let doomed: Vec<Bytes> = self
                    .current()
                    .values()
                    .filter(|kv| kv.lease == r.id)
                    .map(|kv| kv.key.clone())
                    .collect();
                let mut tx = Tx::new(self);
                for key in doomed {
                    tx.delete(&DeleteRangeRequest {
                        key,
                        ..Default::default()
                    });
                }
                let rev = self.commit(tx);
                Ok(Response::LeaseRevoke(LeaseRevokeResponse {
                    header: ResponseHeader::at(rev),
                }))
            }
            Command::LeaseCheckpoint(_) | Command::Alarm(_) => unreachable!("not generated"),
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = self
            .current()
            .values()
            .filter(|kv| in_range(&kv.key, &c.key, &c.range_end))
            .collect();
        let zero = KeyValue::default();
        if kvs.is_empty() && c.target == CompareTarget::Value {
            return false;
        }
        let check = |kv: &KeyValue| {
            let ord = match (c.target, &c.target_union) {
                (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.cmp(v),
                (CompareTarget::Value, _) => kv.value.cmp(&Bytes::new()),
                (CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
                (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => {
                    kv.create_revision.cmp(v)
                }
                (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
                (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
                (CompareTarget::Version, _) => kv.version.cmp(&0),
                (CompareTarget::Create, _) => kv.create_revision.cmp(&0),
                (CompareTarget::Mod, _) => kv.mod_revision.cmp(&0),
                (CompareTarget::Lease, _) => kv.lease.cmp(&0),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        };
        if kvs.is_empty() {
            return check(&zero);
        }
        kvs.into_iter().all(check)
    }

    /// Flattens the executed path: the ops in execution order with each nested txn's
    /// decision, evaluated before anything runs.
    fn plan<'t>(&self, t: &'t TxnRequest) -> (bool, Vec<Planned<'t>>) {
        let ok = t.compare.iter().all(|c| self.compare(c));
        let ops = if ok { &t.success } else { &t.failure };
        let planned = ops
            .iter()
            .map(|op| match op {
                RequestOp::Txn(n) => {
                    let (ok, inner) = self.plan(n);
                    Planned::Txn(ok, inner)
                }
                other => Planned::Op(other),
            })
            .collect();
        (ok, planned)
    }

    fn txn(&mut self, t: &TxnRequest) -> Result<Response, Error> {
        let (ok, plan) = self.plan(t);
        let mut flat = Vec::new();
        flatten(&plan, &mut flat);
        let mut deleted: Vec<(Bytes, Bytes)> = Vec::new();
        for op in &flat {
            match op {
                RequestOp::Put(p) => {
                    if p.ignore_value || p.ignore_lease {
                        let gone = deleted.iter().any(|(k, e)| in_range(&p.key, k, e));
                        if !self.current().contains_key(&p.key) || gone {
                            return Err(Error::KeyNotFound);
                        }
                    }
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(Error::LeaseNotFound);
                    }
                }
                RequestOp::DeleteRange(d) => deleted.push((d.key.clone(), d.range_end.clone())),
                _ => {}
            }
        }
        for op in &flat {
            if let RequestOp::Range(r) = op {
                if r.revision > 0 {
                    self.read_rev(r.revision, self.rev())?;
                }
            }
        }
        let mut tx = Tx::new(self);
        let responses = tx.run(&plan);
        let rev = self.commit(tx);
        Ok(Response::Txn(TxnResponse {
            header: ResponseHeader::at(rev),
            succeeded: ok,
            responses,
        }))
    }

    fn commit(&mut self, tx: Tx) -> i64 {
        if !tx.changes.is_empty() {
            self.states.push(tx.state);
            self.changes.push(tx.changes);
        }
        self.rev()
    }

    /// What a watcher of everything from `from` receives, with prev_kv.
    fn events_since(&self, from: i64) -> Vec<Event> {
        let mut out = Vec::new();
        for rev in from.max(1)..=self.rev() {
            let changes = &self.changes[rev as usize];
            for (i, c) in changes.iter().enumerate() {
                // At the compact revision only each key's last change survives, a delete
                // included (etcd#18089: a watch from there must see it).
                if rev == self.compact {
                    let last_for_key = !changes[i + 1..].iter().any(|later| later.key == c.key);
                    if !last_for_key {
                        continue;
                    }
                }
                let kv = c.kv.clone().unwrap_or_else(|| KeyValue {
                    key: c.key.clone(),
                    mod_revision: rev,
                    ..Default::default()
                });
                let creation = kv.version == 1;
                let prev_kv = if creation || rev - 1 < self.compact {
                    None
                } else {
                    self.states[rev as usize - 1].get(&c.key).cloned()
                };
                out.push(Event {
                    r#type: c.kind,
                    kv,
                    prev_kv,
                });
            }
        }
        out
    }
}

enum Planned<'t> {
    Op(&'t RequestOp),
    Txn(bool, Vec<Planned<'t>>),
}

fn flatten<'t>(plan: &[Planned<'t>], out: &mut Vec<&'t RequestOp>) {
    for p in plan {
        match p {
            Planned::Op(op) => out.push(op),
            Planned::Txn(_, inner) => flatten(inner, out),
        }
    }
}

/// A write in progress on a copy of the current state.
struct Tx {
    state: State,
    base_rev: i64,
    changes: Vec<Change>,
}

impl Tx {
    fn new(m: &Model) -> Self {
        Tx {
            state: m.current().clone(),
            base_rev: m.rev(),
            changes: Vec::new(),
        }
    }

    fn view(&self) -> i64 {
        self.base_rev + i64::from(!self.changes.is_empty())
    }

    fn put(&mut self, p: &PutRequest) -> Option<KeyValue> {
        let prev = self.state.get(&p.key).cloned();
        let main = self.base_rev + 1;
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(main, |kv| kv.create_revision),
            mod_revision: main,
            version: prev.as_ref().map_or(1, |kv| kv.version + 1),
            value: if p.ignore_value {
                prev.as_ref().map(|kv| kv.value.clone()).unwrap_or_default()
            } else {
                p.value.clone()
            },
            lease: if p.ignore_lease {
                prev.as_ref().map_or(0, |kv| kv.lease)
            } else {
                p.lease
            },
        };
        self.state.insert(p.key.clone(), kv.clone());
        self.changes.push(Change {
            kind: EventType::Put,
            key: p.key.clone(),
            kv: Some(kv),
        });
        prev
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<KeyValue> = self
            .state
            .values()
            .filter(|kv| in_range(&kv.key, &d.key, &d.range_end))
            .cloned()
            .collect();
        for kv in &doomed {
            self.state.remove(&kv.key);
            self.changes.push(Change {
                kind: EventType::Delete,
                key: kv.key.clone(),
                kv: None,
            });
        }
        DeleteRangeResponse {
            header: ResponseHeader::at(self.view()),
            deleted: doomed.len() as i64,
            prev_kvs: if d.prev_kv { doomed } else { vec![] },
        }
    }

    fn run(&mut self, plan: &[Planned<'_>]) -> Vec<ResponseOp> {
        plan.iter()
            .map(|p| match p {
                Planned::Op(RequestOp::Range(r)) => {
                    let view = self.view();
                    let state = if r.revision > 0 && r.revision <= self.base_rev {
                        None
                    } else {
                        Some(&self.state)
                    };
                    ResponseOp::Range(match state {
                        Some(s) => Model::range_in(s, r, view),
                        None => panic!("historical reads inside txns are served by the harness"),
                    })
                }
                Planned::Op(RequestOp::Put(p)) => {
                    let prev = self.put(p);
                    ResponseOp::Put(PutResponse {
                        header: ResponseHeader::at(self.view()),
                        prev_kv: prev.filter(|_| p.prev_kv),
                    })
                }
                Planned::Op(RequestOp::DeleteRange(d)) => ResponseOp::DeleteRange(self.delete(d)),
                Planned::Op(RequestOp::Txn(_)) => unreachable!("nested txns are planned"),
                Planned::Txn(ok, inner) => {
                    let responses = self.run(inner);
                    ResponseOp::Txn(TxnResponse {
                        header: ResponseHeader::at(self.view()),
                        succeeded: *ok,
                        responses,
                    })
                }
            })
            .collect()
    }
}

// ---- generators ----

fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![20 => proptest::sample::select(&KEYS[..]).prop_map(|k| Bytes::from_static(k.as_bytes())), 1 => Just(Bytes::new())]
}

fn range_end() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => Just(Bytes::new()),
        1 => Just(Bytes::from_static(b"\0")),
        2 => proptest::sample::select(&KEYS[..]).prop_map(|k| Bytes::from_static(k.as_bytes())),
    ]
}

fn value() -> impl Strategy<Value = Bytes> {
    proptest::sample::select(&VALUES[..]).prop_map(|v| Bytes::from_static(v.as_bytes()))
}

fn lease() -> impl Strategy<Value = i64> {
    prop_oneof![6 => Just(0i64), 2 => 1i64..=3, 1 => Just(99i64)]
}

fn put() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        value(),
        lease(),
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutRequest {
                key,
                value: if ignore_value { Bytes::new() } else { value },
                lease: if ignore_lease { 0 } else { lease },
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    let order = prop_oneof![
        Just(SortOrder::None),
        Just(SortOrder::Ascend),
        Just(SortOrder::Descend)
    ];
    let target = prop_oneof![
        Just(SortTarget::Key),
        Just(SortTarget::Version),
        Just(SortTarget::Create),
        Just(SortTarget::Mod),
        Just(SortTarget::Value)
    ];
    let revs = (
        prop_oneof![3 => Just(0i64), 1 => 0i64..6],
        prop_oneof![3 => Just(0i64), 1 => 0i64..6],
    );
    (
        key(),
        range_end(),
        prop_oneof![3 => Just(0i64), 1 => -1i64..4],
        order,
        target,
        any::<bool>(),
        prop::bool::weighted(0.1),
        revs,
    )
        .prop_map(
            |(
                key,
                range_end,
                limit,
                sort_order,
                sort_target,
                keys_only,
                count_only,
                (min_mod, max_create),
            )| RangeRequest {
                key,
                range_end,
                limit,
                sort_order,
                sort_target,
                keys_only,
                count_only,
                min_mod_revision: min_mod,
                max_create_revision: max_create * 3,
                ..Default::default()
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    let result = prop_oneof![
        Just(CompareResult::Equal),
        Just(CompareResult::NotEqual),
        Just(CompareResult::Greater),
        Just(CompareResult::Less)
    ];
    let union = prop_oneof![
        (0i64..4).prop_map(TargetUnion::Version),
        (0i64..12).prop_map(TargetUnion::CreateRevision),
        (0i64..12).prop_map(TargetUnion::ModRevision),
        value().prop_map(TargetUnion::Value),
        (0i64..3).prop_map(TargetUnion::Lease),
    ];
    let target = prop_oneof![
        Just(CompareTarget::Version),
        Just(CompareTarget::Create),
        Just(CompareTarget::Mod),
        Just(CompareTarget::Value),
        Just(CompareTarget::Lease)
    ];
    (
        result,
        target,
        key(),
        prop_oneof![3 => Just(Bytes::new()), 1 => range_end()],
        proptest::option::weighted(0.9, union),
    )
        .prop_map(|(result, target, key, range_end, target_union)| Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        })
}

fn flat_op() -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        put().prop_map(RequestOp::Put),
        delete().prop_map(RequestOp::DeleteRange),
        range_req().prop_map(RequestOp::Range)
    ]
}

fn txn() -> impl Strategy<Value = TxnRequest> {
    let nested = (
        proptest::collection::vec(compare(), 0..2),
        proptest::collection::vec(flat_op(), 0..3),
        proptest::collection::vec(flat_op(), 0..3),
    )
        .prop_map(|(compare, success, failure)| {
            RequestOp::Txn(TxnRequest {
                compare,
                success,
                failure,
            })
        });
    let op = prop_oneof![6 => flat_op(), 1 => nested];
    (
        proptest::collection::vec(compare(), 0..3),
        proptest::collection::vec(op.clone(), 0..4),
        proptest::collection::vec(op, 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

#[derive(Clone, Debug)]
enum Op {
    Write(Command),
    Read(RangeRequest),
    CompactBack(i64),
    Step(usize),
    SnapshotRestore,
    /// Closes the store and opens it again from its engine.
    Reopen,
    WatchFrom(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => put().prop_map(|p| Op::Write(Command::Put(p))),
        3 => delete().prop_map(|d| Op::Write(Command::DeleteRange(d))),
        5 => txn().prop_map(|t| Op::Write(Command::Txn(t))),
        5 => range_req().prop_map(Op::Read),
        1 => (0i64..6).prop_map(Op::CompactBack),
        1 => (1usize..5).prop_map(Op::Step),
        2 => (1i64..=3, 1i64..20).prop_map(|(id, ttl)| Op::Write(Command::LeaseGrant(LeaseGrantRequest { id, ttl }))),
        1 => (1i64..=3).prop_map(|id| Op::Write(Command::LeaseRevoke(LeaseRevokeRequest { id }))),
        1 => Just(Op::SnapshotRestore),
        1 => Just(Op::Reopen),
        2 => (0i64..8).prop_map(Op::WatchFrom),
    ]
}

/// Txn range ops that read an old revision are resolved against the model's history.
fn resolve_historical_reads(model: &Model, cmd: &Command) -> bool {
    fn has_old(ops: &[RequestOp], base: i64) -> bool {
        ops.iter().any(|op| match op {
            RequestOp::Range(r) => r.revision > 0 && r.revision <= base,
            RequestOp::Txn(t) => has_old(&t.success, base) || has_old(&t.failure, base),
            _ => false,
        })
    }
    matches!(cmd, Command::Txn(t) if has_old(&t.success, model.rev()) || has_old(&t.failure, model.rev()))
}

fn everything() -> EventFilter {
    EventFilter {
        range: KeyRange::new(&Bytes::from_static(b"\0"), &Bytes::from_static(b"\0")),
        no_put: false,
        no_delete: false,
        prev_kv: true,
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let config = StoreConfig {
        compaction_batch_revisions: 2,
        // An index checkpoint every few writes, so reopening meets both checkpointed and
        // rebuilt index rows.
        index_checkpoint_bytes: 256,
        ..StoreConfig::default()
    };
    let mut store = Store::new(config);
    let mut model = Model::new();
    let mut index = 0u64;
    for op in ops {
        match op {
            Op::Write(cmd) => {
                if resolve_historical_reads(&model, &cmd) {
                    continue; // ranges at old revisions are compared by Op::Read
                }
                index += 1;
                let applied = store.apply(index, 0, &cmd);
                store
                    .commit(false)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let store_lease_id = match &applied.result {
                    Ok(Response::LeaseGrant(g)) => Some(g.id),
                    _ => None,
                };
                let before = model.rev();
                let expected = model.apply(&cmd, store_lease_id);
                prop_assert_eq!(&applied.result, &expected, "command {:?}", cmd);
                prop_assert_eq!(applied.revision, model.rev());
                let expected_events = if model.rev() > before {
                    model.events_since(model.rev())
                } else {
                    vec![]
                };
                if model.compact < model.rev() {
                    prop_assert_eq!(&applied.events, &expected_events);
                }
            }
            Op::Read(mut r) => {
                r.revision = if r.revision == 0 {
                    0
                } else {
                    model.rev() - r.revision
                };
                prop_assert_eq!(store.range(&r), model.range(&r), "range {:?}", r);
            }
            Op::CompactBack(back) => {
                let cmd = Command::Compaction(CompactionRequest {
                    revision: model.rev() - back,
                    physical: false,
                });
                index += 1;
                let applied = store.apply(index, 0, &cmd);
                store
                    .commit(false)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(applied.result, model.apply(&cmd, None));
            }
            Op::Step(n) => {
                store.compaction_step(n);
            }
            Op::SnapshotRestore => {
                let hash = store.hash_kv(0);
                let restored = Store::restore(&store.snapshot(), config)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(restored.hash_kv(0), hash);
                prop_assert_eq!(restored.stats().size_bytes, store.stats().size_bytes);
                store = restored;
            }
            Op::Reopen => {
                let before = (
                    store.hash_kv(0),
                    store.stats(),
                    store.alarms(),
                    store.applied_index(),
                    store.compact_revision(),
                );
                store = Store::open(store.into_engine(), config)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let after = (
                    store.hash_kv(0),
                    store.stats(),
                    store.alarms(),
                    store.applied_index(),
                    store.compact_revision(),
                );
                prop_assert_eq!(after, before);
            }
            Op::WatchFrom(back) => {
                let from = model.rev() - back;
                let got = store.events_since(from, &everything(), usize::MAX, usize::MAX);
                if from < model.compact {
                    prop_assert_eq!(got, Err(Error::Compacted));
                } else {
                    let events = got.map(|c| c.events);
                    prop_assert_eq!(events, Ok(model.events_since(from)), "watch from {}", from);
                }
            }
        }
        let ids: Vec<i64> = store.lease_leases().leases.iter().map(|l| l.id).collect();
        prop_assert_eq!(ids, model.leases.keys().copied().collect::<Vec<_>>());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_store_matches_a_naive_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
