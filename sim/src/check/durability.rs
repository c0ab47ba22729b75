//! Durability: every write acknowledged to a client is still there after the run's
//! crashes and recovery, as the final read-back ([`History::final_reads`]) shows.
//!
//! Independent of the linearizability search (so it also judges a run whose history was
//! cut short). For each final read at revision `F` and each acknowledged write at
//! revision `r`:
//! - `F >= r`: the recovered store is not behind an acknowledged write;
//! - a put of `k = v` at `r`: `k`'s final version was written at `r` with value `v`, or
//!   later; or `k` is absent and some operation in the history could have deleted it
//!   afterwards (a delete or txn covering `k`, or a lease the put attached);
//! - a delete of `k` at `r` (keys known from the request or `prev_kvs`): `k` is absent, or
//!   was created after `r`.
//!
//! The final read must cover every key the workload uses.

use std::fmt;

use bytes::Bytes;

use crate::history::{
    fmt_bytes, FinalRead, History, KeyValue, OpId, Operation, Outcome, Request, Response, TxnOp,
    TxnOpResult,
};
use crate::model::in_range;

use super::Violation;

/// An acknowledged write missing from the final state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurabilityFailure {
    pub op: OpId,
    pub operation: String,
    /// Which final read, for humans.
    pub final_read: String,
    pub detail: String,
}

impl fmt::Display for DurabilityFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acknowledged write lost: op #{}: {}\n  final read: {}\n  {}",
            self.op, self.operation, self.final_read, self.detail
        )
    }
}

enum Effect {
    Put {
        key: Bytes,
        value: Bytes,
        lease: i64,
    },
    Delete {
        key: Bytes,
    },
}

/// What an acknowledged write certainly did to which keys, and its revision.
fn effects(op: &Operation) -> Option<(i64, Vec<Effect>)> {
    let Outcome::Ok(response) = &op.outcome else {
        return None;
    };
    let put = |p: &crate::history::Put| Effect::Put {
        key: p.key.clone(),
        value: p.value.clone(),
        lease: p.lease,
    };
    let deletes = |key: &Bytes, range_end: &Bytes, deleted: i64, prev: &[KeyValue]| {
        if !prev.is_empty() {
            prev.iter()
                .map(|kv| Effect::Delete {
                    key: kv.key.clone(),
                })
                .collect()
        } else if range_end.is_empty() && deleted == 1 {
            vec![Effect::Delete { key: key.clone() }]
        } else {
            Vec::new()
        }
    };
    let out = match (&op.request, response) {
        (Request::Put(p), Response::Put { .. }) => vec![put(p)],
        (
            Request::DeleteRange(d),
            Response::DeleteRange {
                deleted, prev_kvs, ..
            },
        ) if *deleted > 0 => deletes(&d.key, &d.range_end, *deleted, prev_kvs),
        (
            Request::Txn(t),
            Response::Txn {
                succeeded, results, ..
            },
        ) => {
            let ops = if *succeeded { &t.success } else { &t.failure };
            ops.iter()
                .zip(results)
                .flat_map(|(op, result)| match (op, result) {
                    (TxnOp::Put(p), _) => vec![put(p)],
                    (TxnOp::DeleteRange(d), TxnOpResult::DeleteRange { deleted, prev_kvs }) => {
                        deletes(&d.key, &d.range_end, *deleted, prev_kvs)
                    }
                    _ => Vec::new(),
                })
                .collect()
        }
        _ => return None,
    };
    (!out.is_empty()).then(|| (response.revision(), out))
}

/// Whether anything in the history could have deleted `key`, whatever its outcome: a
/// delete or txn covering it, the end of `lease`, or the end of a lease that a later put
/// attached to the key (the expiry or revoke of that lease deletes the key, and neither
/// needs to appear in the history).
fn could_delete(history: &History, key: &[u8], lease: i64) -> bool {
    let covers = |k: &Bytes, end: &Bytes| in_range(key, k, end);
    let leased_put = |p: &crate::history::Put| p.lease != 0 && p.key == key;
    lease != 0
        || history.operations.iter().any(|op| {
            if matches!(op.outcome, Outcome::Failed(_)) {
                return false;
            }
            match &op.request {
                Request::DeleteRange(d) => covers(&d.key, &d.range_end),
                Request::Put(p) => leased_put(p),
                Request::Txn(t) => t.success.iter().chain(&t.failure).any(|o| match o {
                    TxnOp::DeleteRange(d) => covers(&d.key, &d.range_end),
                    TxnOp::Put(p) => leased_put(p),
                    _ => false,
                }),
                _ => false,
            }
        })
}

fn describe_read(read: &FinalRead) -> String {
    format!(
        "member {} at revision {} ({} keys)",
        read.member
            .map_or_else(|| "?".to_string(), |m| m.to_string()),
        read.revision,
        read.kvs.len()
    )
}

/// Checks every acknowledged write against every final read.
pub fn check(history: &History) -> Result<(), Violation> {
    for read in &history.final_reads {
        for (id, op) in history.operations.iter().enumerate() {
            let Some((r, effects)) = effects(op) else {
                continue;
            };
            let lost = |detail: String| {
                Err(Violation::Durability(Box::new(DurabilityFailure {
                    op: id,
                    operation: op.to_string(),
                    final_read: describe_read(read),
                    detail,
                })))
            };
            if read.revision < r {
                return lost(format!(
                    "the final revision {} is behind the write's revision {r}",
                    read.revision
                ));
            }
            for effect in effects {
                match effect {
                    Effect::Put { key, value, lease } => {
                        match read.kvs.iter().find(|kv| kv.key == key) {
                            Some(kv) if kv.mod_revision == r && kv.value != value => {
                                return lost(format!(
                                    "{} at revision {r} has value {} instead of {}",
                                    fmt_bytes(&key),
                                    fmt_bytes(&kv.value),
                                    fmt_bytes(&value)
                                ));
                            }
                            Some(kv) if kv.mod_revision < r => {
                                return lost(format!(
                                    "{} is {kv}: older than the write at revision {r}",
                                    fmt_bytes(&key)
                                ));
                            }
                            Some(_) => {}
                            None if could_delete(history, &key, lease) => {}
                            None => {
                                return lost(format!(
                                    "{} is absent and nothing in the history deletes it",
                                    fmt_bytes(&key)
                                ));
                            }
                        }
                    }
                    Effect::Delete { key } => {
                        if let Some(kv) = read.kvs.iter().find(|kv| kv.key == key) {
                            if kv.create_revision <= r {
                                return lost(format!(
                                    "{} is {kv}: it was deleted at revision {r} and not created \
                                     again after",
                                    fmt_bytes(&key)
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
