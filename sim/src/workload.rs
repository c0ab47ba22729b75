//! What simulated clients ask for: etcd's KV, txn and lease requests over a small key space
//! (so operations conflict), with values unique per client and request (so the checker can
//! tell every write apart, as etcd's robustness tests do). Pure: randomness is passed in.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::Rng;

use crate::history::{
    ClientId, Compare, CompareResult, CompareTarget, DeleteRange, Outcome, Put, Range, Request,
    Response, Txn, TxnOp, TxnOpResult,
};

/// Keys live under this prefix: `k0`, `k1`, …
pub const KEY_PREFIX: &str = "k";

#[derive(Clone, Copy, Debug)]
pub struct WorkloadConfig {
    pub keys: usize,
    /// Leases are granted with a TTL drawn from this many seconds and up.
    pub min_lease_ttl_s: i64,
    pub compactions: bool,
    pub leases: bool,
    /// Reads at a recent past revision (off: read at the head instead; the draws are the
    /// same either way).
    pub past_reads: bool,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            keys: 8,
            min_lease_ttl_s: 2,
            compactions: true,
            leases: true,
            past_reads: true,
        }
    }
}

/// Extra request kinds for the named scenarios, as percentages of all requests (the rest
/// is the usual mix). All zero (the default) draws exactly what the usual mix draws.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadMix {
    /// A txn that puts (and maybe deletes) several keys at once: one revision, many events.
    pub multi_key_txns: u32,
    /// A txn that reads at a recent past revision (maybe compacted by now) and writes:
    /// all or nothing.
    pub past_revision_txns: u32,
    /// A compaction close behind the current revision.
    pub compactions: u32,
}

/// One client's request generator, learning from the answers it gets.
#[derive(Debug)]
pub struct Workload {
    config: WorkloadConfig,
    mix: WorkloadMix,
    client: ClientId,
    counter: u64,
    /// The last mod revision this client saw per key (0: absent), for compare-and-swap.
    last_mod: BTreeMap<Bytes, i64>,
    leases: Vec<i64>,
    last_revision: i64,
}

pub fn key(i: usize) -> Bytes {
    Bytes::from(format!("{KEY_PREFIX}{i}"))
}

/// `range_end` covering every workload key.
pub fn prefix_end() -> Bytes {
    Bytes::from_static(b"l")
}

impl Workload {
    pub fn new(client: ClientId, config: WorkloadConfig) -> Workload {
        Workload::with_mix(client, config, WorkloadMix::default())
    }

    /// A generator that mixes in `mix`'s extra requests.
    pub fn with_mix(client: ClientId, config: WorkloadConfig, mix: WorkloadMix) -> Workload {
        Workload {
            config,
            mix,
            client,
            counter: 0,
            last_mod: BTreeMap::new(),
            leases: Vec::new(),
            last_revision: 0,
        }
    }

    fn value(&mut self) -> Bytes {
        self.counter += 1;
        Bytes::from(format!("c{}-{}", self.client, self.counter))
    }

    fn any_key(&self, rng: &mut impl Rng) -> Bytes {
        key(rng.gen_range(0..self.config.keys.max(1)))
    }

    /// The next request to send.
    pub fn next(&mut self, rng: &mut impl Rng) -> Request {
        if self.mix != WorkloadMix::default() {
            if let Some(request) = self.extra(rng) {
                return request;
            }
        }
        let key = self.any_key(rng);
        match rng.gen_range(0..100) {
            0..=29 => Request::Put(Put {
                key,
                value: self.value(),
                lease: 0,
                prev_kv: rng.gen_bool(0.3),
            }),
            30..=49 => Request::Range(single(key, false)),
            50..=54 => Request::Range(single(key, true)),
            55..=59 => Request::Range(Range {
                key: Bytes::from(KEY_PREFIX),
                range_end: prefix_end(),
                ..Range::default()
            }),
            60..=62 => {
                let back = rng.gen_range(0..20);
                let revision = if self.config.past_reads {
                    (self.last_revision - back).max(1)
                } else {
                    0
                };
                Request::Range(Range {
                    revision,
                    ..single(key, false)
                })
            }
            63..=69 => Request::DeleteRange(DeleteRange {
                key,
                range_end: Bytes::new(),
                prev_kv: rng.gen_bool(0.3),
            }),
            70..=84 => self.compare_and_swap(key),
            85..=88 => Request::Txn(Txn {
                compare: vec![],
                success: vec![
                    TxnOp::Range(single(key, false)),
                    TxnOp::Range(single(self.any_key(rng), false)),
                ],
                failure: vec![],
            }),
            89..=91 if self.config.leases => Request::LeaseGrant {
                ttl: self.config.min_lease_ttl_s + rng.gen_range(0..4),
                id: 0,
            },
            92..=95 if self.config.leases && !self.leases.is_empty() => Request::Put(Put {
                key,
                value: self.value(),
                lease: self.leases[rng.gen_range(0..self.leases.len())],
                prev_kv: false,
            }),
            96..=97 if self.config.leases && !self.leases.is_empty() => {
                let id = self.leases.swap_remove(rng.gen_range(0..self.leases.len()));
                Request::LeaseRevoke { id }
            }
            98 if self.config.compactions && self.last_revision > 30 => Request::Compact {
                revision: self.last_revision - 20,
            },
            _ => Request::Range(single(key, false)),
        }
    }

    /// One of `mix`'s extra requests, or `None` for the usual mix.
    fn extra(&mut self, rng: &mut impl Rng) -> Option<Request> {
        let roll = rng.gen_range(0..100u32);
        let mix = self.mix;
        if roll < mix.multi_key_txns {
            let keys = self.config.keys.max(1);
            let first = rng.gen_range(0..keys);
            let count = rng.gen_range(2..=keys.clamp(2, 6));
            let mut success = Vec::new();
            for i in 0..count {
                let key = key((first + i) % keys);
                if i > 0 && rng.gen_bool(0.2) {
                    success.push(TxnOp::DeleteRange(DeleteRange {
                        key,
                        range_end: Bytes::new(),
                        prev_kv: false,
                    }));
                } else {
                    success.push(TxnOp::Put(Put {
                        key,
                        value: self.value(),
                        lease: 0,
                        prev_kv: false,
                    }));
                }
            }
            return Some(Request::Txn(Txn {
                compare: vec![],
                success,
                failure: vec![],
            }));
        }
        let roll = roll - mix.multi_key_txns;
        if roll < mix.past_revision_txns && self.last_revision > 1 {
            let revision = (self.last_revision - rng.gen_range(0..6)).max(1);
            let read = self.any_key(rng);
            let write = self.any_key(rng);
            return Some(Request::Txn(Txn {
                compare: vec![],
                success: vec![
                    TxnOp::Range(Range {
                        revision,
                        ..single(read, false)
                    }),
                    TxnOp::Put(Put {
                        key: write,
                        value: self.value(),
                        lease: 0,
                        prev_kv: false,
                    }),
                    TxnOp::Range(Range {
                        key: Bytes::from(KEY_PREFIX),
                        range_end: prefix_end(),
                        revision,
                        ..Range::default()
                    }),
                ],
                failure: vec![],
            }));
        }
        let roll = roll.saturating_sub(mix.past_revision_txns);
        if roll < mix.compactions && self.last_revision > 3 {
            return Some(Request::Compact {
                revision: self.last_revision - rng.gen_range(0..3),
            });
        }
        None
    }

    /// A compare-and-swap on the key's mod revision as this client last saw it.
    fn compare_and_swap(&mut self, key: Bytes) -> Request {
        let expected = self.last_mod.get(&key).copied().unwrap_or(0);
        Request::Txn(Txn {
            compare: vec![Compare {
                key: key.clone(),
                range_end: Bytes::new(),
                result: CompareResult::Equal,
                target: CompareTarget::ModRevision(expected),
            }],
            success: vec![TxnOp::Put(Put {
                key: key.clone(),
                value: self.value(),
                lease: 0,
                prev_kv: false,
            })],
            failure: vec![TxnOp::Range(single(key, false))],
        })
    }

    /// Learns mod revisions, leases and the current revision from an answer.
    pub fn observe(&mut self, request: &Request, outcome: &Outcome) {
        let Outcome::Ok(response) = outcome else {
            return;
        };
        self.last_revision = self.last_revision.max(response.revision());
        match (request, response) {
            (Request::Put(put), Response::Put { revision, .. }) => {
                self.last_mod.insert(put.key.clone(), *revision);
            }
            (Request::Range(_), Response::Range { result, .. }) => {
                for kv in &result.kvs {
                    self.last_mod.insert(kv.key.clone(), kv.mod_revision);
                }
            }
            (Request::DeleteRange(delete), Response::DeleteRange { .. }) => {
                self.last_mod.insert(delete.key.clone(), 0);
            }
            (
                Request::Txn(txn),
                Response::Txn {
                    revision,
                    succeeded,
                    results,
                },
            ) => {
                self.observe_txn(txn, *revision, *succeeded, results);
            }
            (Request::LeaseGrant { .. }, Response::LeaseGrant { id, .. }) => self.leases.push(*id),
            _ => {}
        }
    }

    fn observe_txn(&mut self, txn: &Txn, revision: i64, succeeded: bool, results: &[TxnOpResult]) {
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            if let TxnOp::Put(put) = op {
                self.last_mod.insert(put.key.clone(), revision);
            }
        }
        for result in results {
            if let TxnOpResult::Range(range) = result {
                for kv in &range.kvs {
                    self.last_mod.insert(kv.key.clone(), kv.mod_revision);
                }
            }
        }
    }
}

fn single(key: Bytes, serializable: bool) -> Range {
    Range {
        key,
        serializable,
        ..Range::default()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn every_write_carries_a_value_no_other_write_has() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut values = std::collections::BTreeSet::new();
        for client in 0..3 {
            let mut workload = Workload::new(client, WorkloadConfig::default());
            for _ in 0..2000 {
                let request = workload.next(&mut rng);
                let mut puts = Vec::new();
                match &request {
                    Request::Put(put) => puts.push(put.value.clone()),
                    Request::Txn(txn) => {
                        for op in txn.success.iter().chain(&txn.failure) {
                            if let TxnOp::Put(put) = op {
                                puts.push(put.value.clone());
                            }
                        }
                    }
                    _ => {}
                }
                for value in puts {
                    assert!(values.insert(value), "a value repeated");
                }
            }
        }
        assert!(values.len() > 1000);
    }
}
