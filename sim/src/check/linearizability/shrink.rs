//! Shrinking a failing history to a minimal contradiction (see the parent module's docs).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::history::{History, KeyValue, Range, Request, Time, TxnOp};
use crate::model::in_range;

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
    Keep,
    /// Outcome unknown: may or may not have taken effect (see [`Item::weakened`]).
    Unknown,
    /// Deadline dropped (see [`Item::relaxed`]).
    Relax,
    Drop,
}

pub(super) struct Kept {
    pub(super) fates: Vec<Fate>,
}

impl Kept {
    pub(super) fn items(&self, all: &[Item]) -> Vec<Item> {
        all.iter()
            .zip(&self.fates)
            .filter_map(|(item, fate)| match fate {
                Fate::Keep => Some(item.clone()),
                Fate::Unknown => item.weakened(),
                Fate::Relax => item.relaxed(),
                Fate::Drop => None,
            })
            .collect()
    }

    pub(super) fn dropped(&self) -> usize {
        self.fates.iter().filter(|f| **f == Fate::Drop).count()
    }

    /// Lines for the items kept as they were, and for the other writes the kept items
    /// refer to (their value or revision appears in a kept response); and the number of
    /// writes kept but not listed.
    pub(super) fn describe(&self, history: &History, all: &[Item]) -> (Vec<String>, usize) {
        let mut values: BTreeSet<(Bytes, Bytes)> = BTreeSet::new();
        let mut revisions: BTreeSet<i64> = BTreeSet::new();
        let mut reads: Vec<(Range, i64, BTreeMap<Bytes, i64>)> = Vec::new();
        let listed = |item: &Item, fate: Fate| match fate {
            Fate::Keep => item.determinate(),
            Fate::Relax => matches!(item.class, Class::Pure(_)),
            Fate::Unknown | Fate::Drop => false,
        };
        for (item, fate) in all.iter().zip(&self.fates) {
            if !listed(item, *fate) {
                continue;
            }
            let kvs: Vec<&KeyValue> = match &item.body {
                Body::Request {
                    expect: Expect::Ok(r),
                    ..
                } => kvs_in_response(r),
                Body::ReadAt { result, .. } => result.kvs.iter().collect(),
                _ => Vec::new(),
            };
            for kv in &kvs {
                values.insert((kv.key.clone(), kv.value.clone()));
                revisions.insert(kv.mod_revision);
            }
            if let Class::Pure(Some(h)) = item.class {
                revisions.insert(h);
            }
            // A read: the writes it should have seen are evidence too.
            let range = match &item.body {
                Body::Request {
                    request: Request::Range(r),
                    ..
                }
                | Body::ReadAt { range: r, .. } => Some(r),
                _ => None,
            };
            if let (Some(r), Class::Pure(Some(h))) = (range, item.class) {
                let at = if r.revision > 0 { r.revision } else { h };
                let seen: BTreeMap<Bytes, i64> = kvs
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.mod_revision))
                    .collect();
                reads.push((r.clone(), at, seen));
            }
        }
        // Writes of a key a listed read covers, after the version it showed and no later
        // than the revision it read at.
        let should_have_seen = |item: &Item| {
            let (
                Some(request),
                Class::Write {
                    claims: Some(w), ..
                },
            ) = (item.request(), item.class)
            else {
                return false;
            };
            written(request).iter().any(|(key, _)| {
                reads.iter().any(|(r, at, seen)| {
                    in_range(key, &r.key, &r.range_end)
                        && w <= *at
                        && w > seen.get(key).copied().unwrap_or(0)
                })
            })
        };
        let mut shown: Vec<(Time, String)> = Vec::new();
        let mut hidden = 0;
        for (item, fate) in all.iter().zip(&self.fates) {
            let (show, note) = match fate {
                Fate::Drop => continue,
                Fate::Keep if item.determinate() => (true, ""),
                Fate::Relax if matches!(item.class, Class::Pure(_)) => {
                    (true, "   [timing not needed]")
                }
                Fate::Relax => {
                    let claims = match item.class {
                        Class::Write { claims, .. } => claims,
                        _ => None,
                    };
                    (
                        claims.is_some_and(|r| revisions.contains(&r)) || should_have_seen(item),
                        "   [timing not needed]",
                    )
                }
                Fate::Keep | Fate::Unknown => {
                    let referenced = item
                        .request()
                        .is_some_and(|r| written(r).iter().any(|kv| values.contains(kv)));
                    let note = if item.determinate() {
                        "   [outcome not needed]"
                    } else {
                        ""
                    };
                    (referenced, note)
                }
            };
            if show {
                let mut line = describe_source(history, item.source);
                line.push_str(note);
                shown.push((item.invoke, line));
            } else if item.request().is_some_and(|r| !r.is_read_only()) {
                hidden += 1;
            }
        }
        shown.sort();
        (shown.into_iter().map(|(_, l)| l).collect(), hidden)
    }
}

/// (key, value) pairs a request may put.
pub(super) fn written(request: &Request) -> Vec<(Bytes, Bytes)> {
    match request {
        Request::Put(p) => vec![(p.key.clone(), p.value.clone())],
        Request::Txn(t) => t
            .success
            .iter()
            .chain(&t.failure)
            .filter_map(|op| match op {
                TxnOp::Put(p) => Some((p.key.clone(), p.value.clone())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn describe_source(history: &History, source: Source) -> String {
    match source {
        Source::Operation(id) | Source::SerializableRead(id) => match history.operations.get(id) {
            Some(op) => format!("op #{id}: {op}"),
            None => format!("op #{id}"),
        },
        Source::WatchResponse { watch, response } => {
            match history
                .watches
                .get(watch)
                .and_then(|w| w.responses.get(response).map(|r| (w, r)))
            {
                Some((w, r)) => format!("watch #{watch} ({}) response #{response} {r}", w.request),
                None => format!("watch #{watch} response #{response}"),
            }
        }
    }
}

pub(super) fn shrink_items(
    all: &[Item],
    constraints: &[WatchConstraint],
    options: &Options,
    budget: u64,
    anchored: &BTreeSet<Source>,
) -> (Kept, Vec<WatchConstraint>) {
    let mut checks = 0usize;
    // Bounded effort: a few seconds at most, whatever the history.
    let total_budget = options
        .shrink_step_budget
        .saturating_mul(20)
        .max(budget.saturating_mul(5));
    let mut total_steps = 0u64;
    let mut fails = |fates: &[Fate], constraints: &[WatchConstraint], checks: &mut usize| -> bool {
        *checks = checks.saturating_add(1);
        if total_steps > total_budget {
            *checks = usize::MAX;
            return false;
        }
        let kept = Kept {
            fates: fates.to_vec(),
        };
        let (failed, steps) = match search(&kept.items(all), constraints, budget) {
            Outcome2::Failed(f) => (true, f.steps),
            Outcome2::Linearizable(l) => (false, l.steps),
            Outcome2::Inconclusive(steps) => (false, steps),
        };
        total_steps += steps;
        failed
    };
    let mut fates = vec![Fate::Keep; all.len()];

    // 1. The shortest time prefix that still fails: items invoked after T are dropped, and
    //    items that completed after T lose their outcome. (A linearization of the history
    //    cut at T is one of this prefix, so failing prefixes grow with T: binary search.)
    let mut times: Vec<Time> = all.iter().filter_map(|i| i.ret).collect();
    times.sort_unstable();
    times.dedup();
    let prefix = |t: Time| -> Vec<Fate> {
        all.iter()
            .map(|item| {
                if item.invoke > t {
                    Fate::Drop
                } else if item.ret.is_some_and(|r| r > t) {
                    if item.weakened().is_some() {
                        Fate::Unknown
                    } else {
                        Fate::Drop
                    }
                } else {
                    Fate::Keep
                }
            })
            .collect()
    };
    // Anchored items stay whole: the prefix must reach past them.
    let anchor_end = all
        .iter()
        .filter(|i| anchored.contains(&i.source))
        .filter_map(|i| i.ret)
        .max()
        .unwrap_or(0);
    let (mut lo, mut hi) = (times.partition_point(|&t| t < anchor_end), times.len());
    while lo < hi && checks < options.max_shrink_checks {
        let mid = (lo + hi) / 2;
        if fails(
            &prefix(times[mid]),
            &cut_all(constraints, times[mid]),
            &mut checks,
        ) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    // Watch responses received after T only speak about revisions made after it: cut them
    // with the operations.
    let mut constraints = constraints.to_vec();
    if hi < times.len() {
        fates = prefix(times[hi]);
        constraints = cut_all(&constraints, times[hi]);
    }

    // 2. Drop items that never change the state, then 3. drop the deadline of the rest,
    //    in shrinking chunks (delta debugging), keeping each step that still fails.
    for pass in [Fate::Drop, Fate::Relax] {
        let mut ids: Vec<usize> = (0..all.len())
            .filter(|&i| {
                fates[i] == Fate::Keep
                    && all[i].determinate()
                    && !anchored.contains(&all[i].source)
                    && match pass {
                        Fate::Drop => matches!(all[i].class, Class::Pure(_)),
                        _ => all[i].relaxed().is_some(),
                    }
            })
            .collect();
        let mut chunk = ids.len().div_ceil(2).max(1);
        while !ids.is_empty() && checks < options.max_shrink_checks {
            let mut start = 0;
            let mut progressed = false;
            while start < ids.len() && checks < options.max_shrink_checks {
                let end = (start + chunk).min(ids.len());
                let mut trial = fates.clone();
                for &i in &ids[start..end] {
                    trial[i] = pass;
                }
                if fails(&trial, &constraints, &mut checks) {
                    fates = trial;
                    ids.drain(start..end);
                    progressed = true;
                } else {
                    start = end;
                }
            }
            if chunk == 1 && !progressed {
                break;
            }
            if !progressed {
                chunk = chunk.div_ceil(2);
            } else {
                chunk = chunk.min(ids.len().div_ceil(2)).max(1);
            }
        }
    }
    (Kept { fates }, constraints)
}
