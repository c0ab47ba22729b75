//! Shared test helpers: short builders for hand-made histories, and a generator of random
//! concurrent histories that are linearizable by construction (the model plays a perfect
//! server; operations take effect at random points inside random time windows).
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use keel_sim::history::*;
use keel_sim::KvModel;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64) -> KeyValue {
    KeyValue {
        key: b(key),
        value: b(value),
        create_revision: create,
        mod_revision: modr,
        version,
        lease: 0,
    }
}

pub fn put(key: &str, value: &str) -> Request {
    Request::Put(Put {
        key: b(key),
        value: b(value),
        ..Put::default()
    })
}

pub fn get(key: &str) -> Request {
    Request::Range(Range {
        key: b(key),
        ..Range::default()
    })
}

pub fn get_at(key: &str, revision: i64) -> Request {
    Request::Range(Range {
        key: b(key),
        revision,
        ..Range::default()
    })
}

pub fn get_serializable(key: &str) -> Request {
    Request::Range(Range {
        key: b(key),
        serializable: true,
        ..Range::default()
    })
}

pub fn delete(key: &str) -> Request {
    Request::DeleteRange(DeleteRange {
        key: b(key),
        ..DeleteRange::default()
    })
}

/// `if mod(key) == expected_mod then put key=value else get key`.
pub fn cas(key: &str, expected_mod: i64, value: &str) -> Request {
    Request::Txn(Txn {
        compare: vec![Compare {
            key: b(key),
            range_end: Bytes::new(),
            result: CompareResult::Equal,
            target: CompareTarget::ModRevision(expected_mod),
        }],
        success: vec![TxnOp::Put(Put {
            key: b(key),
            value: b(value),
            ..Put::default()
        })],
        failure: vec![TxnOp::Range(Range {
            key: b(key),
            ..Range::default()
        })],
    })
}

pub fn ok_put(revision: i64) -> Outcome {
    Outcome::Ok(Response::Put {
        revision,
        prev_kv: None,
    })
}

pub fn ok_get(revision: i64, kvs: Vec<KeyValue>) -> Outcome {
    let count = kvs.len() as i64;
    Outcome::Ok(Response::Range {
        revision,
        result: RangeResult {
            kvs,
            count,
            more: false,
        },
    })
}

pub fn ok_delete(revision: i64, deleted: i64) -> Outcome {
    Outcome::Ok(Response::DeleteRange {
        revision,
        deleted,
        prev_kvs: Vec::new(),
    })
}

pub fn ok_cas_won(revision: i64) -> Outcome {
    Outcome::Ok(Response::Txn {
        revision,
        succeeded: true,
        results: vec![TxnOpResult::Put { prev_kv: None }],
    })
}

pub fn ok_cas_lost(revision: i64, current: Vec<KeyValue>) -> Outcome {
    let count = current.len() as i64;
    Outcome::Ok(Response::Txn {
        revision,
        succeeded: false,
        results: vec![TxnOpResult::Range(RangeResult {
            kvs: current,
            count,
            more: false,
        })],
    })
}

pub fn unknown() -> Outcome {
    Outcome::Indeterminate("timeout".to_string())
}

pub fn op(
    client: ClientId,
    invoke: Time,
    complete: Time,
    request: Request,
    outcome: Outcome,
) -> Operation {
    let complete = Some(complete);
    Operation {
        client,
        member: None,
        invoke,
        complete,
        request,
        outcome,
    }
}

pub fn history(ops: Vec<Operation>) -> History {
    History {
        operations: ops,
        ..History::default()
    }
}

// ---------------------------------------------------------------------------------------
// Random histories.

#[derive(Clone, Debug)]
pub struct GenConfig {
    pub clients: u64,
    pub ops: usize,
    pub keys: usize,
    /// Chance an operation's outcome is lost (timeout).
    pub p_indeterminate: f64,
    /// Chance a lost operation took effect anyway.
    pub p_indeterminate_applied: f64,
    pub leases: bool,
    pub compaction: bool,
    pub serializable: bool,
    /// Whole-keyspace watches opened at random revisions, fed from the truth.
    pub watches: usize,
    /// End with a linearizable read of every key, recorded as the final read-back too.
    pub final_read: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            clients: 5,
            ops: 200,
            keys: 6,
            p_indeterminate: 0.05,
            p_indeterminate_applied: 0.5,
            leases: true,
            compaction: true,
            serializable: true,
            watches: 2,
            final_read: true,
        }
    }
}

/// A generated history, its truth, and each revision's linearization time.
pub struct Generated {
    pub history: History,
    pub truth: KvModel,
    pub revision_time: BTreeMap<i64, Time>,
    /// For each op: its linearization time, if it took effect.
    pub lin_time: Vec<Option<Time>>,
    /// Set by a test that moved one read's revision.
    pub shifted: Option<usize>,
}

enum Ev {
    Invoke(u64),
    Linearize(usize),
    Complete(usize),
}

struct ClientState {
    seq: u64,
    last_rev: i64,
    leases: Vec<i64>,
    last_mod: BTreeMap<Bytes, i64>,
}

pub fn generate(seed: u64, cfg: &GenConfig) -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = KvModel::new();
    let mut history = History::new();
    let mut lin_time: Vec<Option<Time>> = Vec::new();
    let mut revision_time = BTreeMap::new();
    let mut queue: BinaryHeap<Reverse<(Time, u64, usize, usize)>> = BinaryHeap::new();
    let mut events: Vec<Ev> = Vec::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<_>, events: &mut Vec<Ev>, t: Time, ev: Ev| {
        seq += 1;
        events.push(ev);
        queue.push(Reverse((t, seq, events.len() - 1, 0)));
    };
    let mut clients: Vec<ClientState> = (0..cfg.clients)
        .map(|_| ClientState {
            seq: 0,
            last_rev: 1,
            leases: Vec::new(),
            last_mod: BTreeMap::new(),
        })
        .collect();
    for c in 0..cfg.clients {
        let t = rng.gen_range(0..1_000);
        push(&mut queue, &mut events, t, Ev::Invoke(c));
    }
    let mut invoked = 0usize;
    // Per op: does it take effect, and is its outcome lost?
    let mut lost: Vec<bool> = Vec::new();
    while let Some(Reverse((t, _, e, _))) = queue.pop() {
        match events[e] {
            Ev::Invoke(c) => {
                if invoked >= cfg.ops {
                    continue;
                }
                invoked += 1;
                let request = random_request(&mut rng, cfg, c, &mut clients[c as usize]);
                let id = history.invoke(c, None, t, request.clone());
                let is_lost = rng.gen_bool(cfg.p_indeterminate);
                lost.push(is_lost);
                lin_time.push(None);
                let lin = t + rng.gen_range(1..5_000);
                let ret = lin + rng.gen_range(1..5_000);
                if !is_lost || rng.gen_bool(cfg.p_indeterminate_applied) {
                    // A lost op may take effect long after the client gave up.
                    let lin = if is_lost {
                        t + rng.gen_range(1..20_000)
                    } else {
                        lin
                    };
                    push(&mut queue, &mut events, lin, Ev::Linearize(id));
                }
                if is_lost {
                    let timeout = t + 10_000;
                    history.complete(id, timeout, Outcome::Indeterminate("timeout".into()));
                    push(
                        &mut queue,
                        &mut events,
                        timeout + rng.gen_range(1..3_000),
                        Ev::Invoke(c),
                    );
                } else {
                    push(&mut queue, &mut events, ret, Ev::Complete(id));
                }
            }
            Ev::Linearize(id) => {
                lin_time[id] = Some(t);
                let op = &history.operations[id];
                let c = op.client as usize;
                let request = op.request.clone();
                let outcome = if request.is_serializable() {
                    // A stale member: the state at a recent revision.
                    let Request::Range(r) = &request else {
                        unreachable!("generator makes serializable ranges only")
                    };
                    let h = (model.revision() - rng.gen_range(0..4)).max(1);
                    let rev = if r.revision > 0 { r.revision.min(h) } else { h };
                    let result = model.range(&r.key, &r.range_end, rev, r.limit);
                    Outcome::Ok(Response::Range {
                        revision: h,
                        result,
                    })
                } else {
                    let before = model.revision();
                    let outcome = match model.apply(&request) {
                        Ok(r) => Outcome::Ok(r),
                        Err(e) => Outcome::Error(e),
                    };
                    if model.revision() != before {
                        revision_time.insert(model.revision(), t);
                    }
                    outcome
                };
                if let Outcome::Ok(r) = &outcome {
                    let st = &mut clients[c];
                    st.last_rev = st.last_rev.max(r.revision());
                    if let Response::LeaseGrant { id, .. } = r {
                        st.leases.push(*id);
                    }
                    if let Request::LeaseRevoke { id } = &request {
                        st.leases.retain(|l| l != id);
                    }
                    if let Response::Range { result, .. } = r {
                        for kv in &result.kvs {
                            st.last_mod.insert(kv.key.clone(), kv.mod_revision);
                        }
                    }
                }
                if !lost[id] {
                    history.operations[id].outcome = outcome;
                }
            }
            Ev::Complete(id) => {
                let outcome = history.operations[id].outcome.clone();
                history.operations[id].outcome = Outcome::Indeterminate(NO_RESPONSE.into());
                history.complete(id, t, outcome);
                let c = history.operations[id].client;
                push(
                    &mut queue,
                    &mut events,
                    t + rng.gen_range(0..3_000),
                    Ev::Invoke(c),
                );
            }
        }
    }
    if cfg.final_read {
        let end = history
            .operations
            .iter()
            .filter_map(|o| o.complete)
            .chain(revision_time.values().copied())
            .max()
            .unwrap_or(0)
            + 1_000;
        let all = Range {
            key: b("k"),
            range_end: b("l"),
            ..Range::default()
        };
        let result = model.range(&all.key, &all.range_end, model.revision(), 0);
        let id = history.invoke(99, Some(1), end, Request::Range(all));
        history.complete(
            id,
            end + 10,
            Outcome::Ok(Response::Range {
                revision: model.revision(),
                result: result.clone(),
            }),
        );
        lin_time.push(Some(end + 5));
        history.final_reads.push(FinalRead {
            member: Some(1),
            time: end + 10,
            revision: model.revision(),
            kvs: result.kvs,
        });
    }
    let mut g = Generated {
        history,
        truth: model,
        revision_time,
        lin_time,
        shifted: None,
    };
    for w in 0..cfg.watches {
        add_truth_watch(&mut g, &mut rng, w as u64);
    }
    g
}

fn random_request(rng: &mut ChaCha8Rng, cfg: &GenConfig, c: u64, st: &mut ClientState) -> Request {
    st.seq += 1;
    let key = format!("k{}", rng.gen_range(0..cfg.keys));
    let value = format!("v{c}-{}", st.seq);
    let roll = rng.gen_range(0..100);
    match roll {
        0..=34 => put(&key, &value),
        35..=54 => get(&key),
        55..=59 => Request::Range(Range {
            key: b("k"),
            range_end: b("l"),
            limit: if rng.gen_bool(0.3) { 2 } else { 0 },
            ..Range::default()
        }),
        60..=66 => delete(&key),
        67..=78 => {
            let expected = st.last_mod.get(key.as_bytes()).copied().unwrap_or(0);
            cas(&key, expected, &value)
        }
        79..=83 if cfg.serializable => get_serializable(&key),
        84..=86 => get_at(&key, (st.last_rev - rng.gen_range(0..6)).max(1)),
        87..=90 if cfg.leases => Request::LeaseGrant {
            ttl: 10,
            id: (c as i64 + 1) * 1_000_000 + st.seq as i64,
        },
        91..=94 if cfg.leases && !st.leases.is_empty() => Request::Put(Put {
            key: b(&key),
            value: b(&value),
            lease: st.leases[rng.gen_range(0..st.leases.len())],
            prev_kv: rng.gen_bool(0.5),
        }),
        95..=96 if cfg.leases && !st.leases.is_empty() => Request::LeaseRevoke {
            id: st.leases[rng.gen_range(0..st.leases.len())],
        },
        97..=98 if cfg.compaction => Request::Compact {
            revision: (st.last_rev - rng.gen_range(2..8)).max(1),
        },
        _ => get(&key),
    }
}

/// A whole-keyspace watch fed from the truth: opened at a random revision, receiving each
/// revision's events soon after it was linearized, with progress notifications.
pub fn add_truth_watch(g: &mut Generated, rng: &mut ChaCha8Rng, client: u64) {
    let last = g.truth.revision();
    let start = rng.gen_range(1..=last.max(1));
    add_truth_watch_from(g, rng, client, start);
}

/// [`add_truth_watch`] from a given revision.
pub fn add_truth_watch_from(g: &mut Generated, rng: &mut ChaCha8Rng, client: u64, start: i64) {
    let last = g.truth.revision();
    let created = g.revision_time.get(&start).copied().unwrap_or(0);
    let w = g.history.open_watch(
        100 + client,
        None,
        created,
        WatchRequest {
            key: b("k"),
            range_end: b("l"),
            start_revision: start,
            prev_kv: true,
            ..WatchRequest::default()
        },
    );
    g.history.watch_response(
        w,
        WatchResponse {
            received: created,
            header_revision: start.max(1),
            kind: WatchResponseKind::Created,
        },
    );
    let mut t = created;
    for rev in start..=last {
        let events = g.truth.events(rev).to_vec();
        t = t.max(g.revision_time.get(&rev).copied().unwrap_or(t)) + 1;
        if !events.is_empty() {
            g.history.watch_response(
                w,
                WatchResponse {
                    received: t,
                    header_revision: rev,
                    kind: WatchResponseKind::Events(events),
                },
            );
        } else if rng.gen_bool(0.1) {
            g.history.watch_response(
                w,
                WatchResponse {
                    received: t,
                    header_revision: rev,
                    kind: WatchResponseKind::Progress,
                },
            );
        }
    }
}
