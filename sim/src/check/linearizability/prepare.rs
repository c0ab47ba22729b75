//! Preparation: revision claims, observed key versions, sanity bounds — and the real-time
//! order check that fails fast before any search.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::history::{EventKind, KeyValue, Request, Response, Time, TxnOp, TxnOpResult};

use super::*;

pub(super) struct Prepared<'a> {
    pub(super) items: &'a [Item],
    pub(super) constraints: &'a [WatchConstraint],
    /// Revision → the item that certainly produced it.
    pub(super) reserved: BTreeMap<i64, usize>,
    pub(super) max_observed: i64,
    /// Revision → (key, its version written at that revision; `None` = deleted), as
    /// responses show them.
    pub(super) hints: BTreeMap<i64, Vec<(Bytes, Option<KeyValue>, Source)>>,
    /// Per item: the revision it must make if it takes effect (weakened writes, and
    /// indeterminate writes whose value a response shows).
    pub(super) pins: Vec<Option<i64>>,
    /// Key → the versions responses show for it, by revision.
    pub(super) key_hints: BTreeMap<Bytes, Vec<(i64, Option<KeyValue>)>>,
    /// Key → revisions at which an acknowledged write certainly put it.
    pub(super) known_puts: BTreeMap<Bytes, Vec<i64>>,
    /// Lease → indeterminate writes that attach it.
    pub(super) indet_lease_refs: BTreeMap<i64, Vec<usize>>,
    /// Per item: its class among interchangeable indeterminate writes (same request but
    /// for values no response shows), if it has one.
    pub(super) classes: Vec<Option<usize>>,
    /// Unclaimed revisions up to each revision (index = revision).
    pub(super) gaps_upto: Vec<i64>,
    pub(super) lease_refs: BTreeMap<i64, Vec<usize>>,
    pub(super) compact_refs: Vec<usize>,
}

/// Every key version a response shows.
pub(super) fn kvs_in_response(response: &Response) -> Vec<&KeyValue> {
    let mut out = Vec::new();
    match response {
        Response::Put { prev_kv, .. } => out.extend(prev_kv),
        Response::Range { result, .. } => out.extend(&result.kvs),
        Response::DeleteRange { prev_kvs, .. } => out.extend(prev_kvs),
        Response::Txn { results, .. } => {
            for r in results {
                match r {
                    TxnOpResult::Range(result) => out.extend(&result.kvs),
                    TxnOpResult::Put { prev_kv } => out.extend(prev_kv),
                    TxnOpResult::DeleteRange { prev_kvs, .. } => out.extend(prev_kvs),
                }
            }
        }
        Response::LeaseGrant { .. } | Response::LeaseRevoke { .. } | Response::Compact { .. } => {}
    }
    out
}

pub(super) fn leases_of(request: &Request) -> Vec<i64> {
    match request {
        Request::Put(p) if p.lease != 0 => vec![p.lease],
        Request::Txn(t) => t
            .success
            .iter()
            .chain(&t.failure)
            .filter_map(|op| match op {
                TxnOp::Put(p) if p.lease != 0 => Some(p.lease),
                _ => None,
            })
            .collect(),
        Request::LeaseGrant { id, .. } | Request::LeaseRevoke { id } if *id != 0 => vec![*id],
        _ => Vec::new(),
    }
}

pub(super) fn depends_on_compaction(request: &Request) -> bool {
    match request {
        Request::Range(r) => r.revision > 0,
        Request::Txn(t) => t
            .success
            .iter()
            .chain(&t.failure)
            .any(|op| matches!(op, TxnOp::Range(r) if r.revision > 0)),
        Request::Compact { .. } => true,
        _ => false,
    }
}

pub(super) fn prepare<'a>(
    items: &'a [Item],
    constraints: &'a [WatchConstraint],
) -> Result<Prepared<'a>, Box<LinearizabilityFailure>> {
    let fail = |reason: String, involved: Vec<Source>| {
        Box::new(LinearizabilityFailure {
            reason,
            placed: 0,
            total: items.len(),
            revision: 1,
            involved,
            sub_history: Vec::new(),
            writes_not_listed: 0,
            dropped: 0,
            steps: 0,
            note: None,
            fails_without_observations: false,
        })
    };
    let mut reserved: BTreeMap<i64, usize> = BTreeMap::new();
    let mut max_observed = 1i64;
    let mut max_source = None;
    let mut may_write = 0i64;
    let mut hints: BTreeMap<(i64, Bytes), (Option<KeyValue>, Source)> = BTreeMap::new();
    let mut lease_refs: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut compact_refs = Vec::new();
    let mut observe = |rev: i64, source: Source, max: &mut i64| {
        if rev > *max {
            *max = rev;
            max_source = Some(source);
        }
    };
    let mut hint = |key: &Bytes,
                    rev: i64,
                    kv: Option<KeyValue>,
                    source: Source|
     -> Result<(), Box<LinearizabilityFailure>> {
        match hints.get(&(rev, key.clone())) {
            Some((other, other_source)) if *other != kv => Err(fail(
                format!(
                    "{} and {} disagree about key {} at revision {rev}: {} vs {}",
                    other_source,
                    source,
                    crate::history::fmt_bytes(key),
                    describe_version(other.as_ref()),
                    describe_version(kv.as_ref()),
                ),
                vec![*other_source, source],
            )),
            Some(_) => Ok(()),
            None => {
                hints.insert((rev, key.clone()), (kv, source));
                Ok(())
            }
        }
    };
    for (i, item) in items.iter().enumerate() {
        let reported = match item.class {
            Class::Pure(Some(h)) => Some(h),
            Class::Write { hi, claims, .. } => Some(claims.unwrap_or(hi)),
            Class::Pure(None) | Class::IndetKv | Class::IndetOther => None,
        };
        match (reported, item.class) {
            (Some(h), _) => {
                if h < 1 {
                    return Err(fail(
                        format!(
                            "{} reports revision {h}, below the first revision 1",
                            item.source
                        ),
                        vec![item.source],
                    ));
                }
                observe(h, item.source, &mut max_observed);
            }
            (None, Class::IndetKv | Class::IndetOther) => may_write += 1,
            (None, _) => {}
        }
        if let Class::Write { claims, lo, hi } = item.class {
            if lo != hi || claims.is_some() {
                may_write += 1;
            }
            if let Some(h) = claims {
                if h < 2 {
                    return Err(fail(
                        format!(
                            "{} wrote but reports revision {h}; the first write makes revision 2",
                            item.source
                        ),
                        vec![item.source],
                    ));
                }
                if let Some(&other) = reserved.get(&h) {
                    return Err(fail(
                        format!(
                            "{} and {} both report writing revision {h}",
                            items[other].source, item.source
                        ),
                        vec![items[other].source, item.source],
                    ));
                }
                reserved.insert(h, i);
            }
        }
        match &item.body {
            Body::Request {
                expect: Expect::Ok(response),
                ..
            } => {
                for kv in kvs_in_response(response) {
                    hint(&kv.key, kv.mod_revision, Some(kv.clone()), item.source)?;
                    observe(kv.mod_revision, item.source, &mut max_observed);
                }
            }
            Body::ReadAt { result, .. } => {
                for kv in &result.kvs {
                    hint(&kv.key, kv.mod_revision, Some(kv.clone()), item.source)?;
                    observe(kv.mod_revision, item.source, &mut max_observed);
                }
            }
            _ => {}
        }
        if let (Some(request), true) = (item.request(), item.determinate()) {
            for lease in leases_of(request) {
                lease_refs.entry(lease).or_default().push(i);
            }
            if depends_on_compaction(request) {
                compact_refs.push(i);
            }
        }
    }
    // Watch events pin the content of the revisions they show.
    for c in constraints {
        for (rev, events) in &c.by_rev {
            for (kind, kv) in events {
                let version = (*kind == EventKind::Put).then(|| kv.clone());
                let source = c.sources.get(rev).copied().unwrap_or(Source::Operation(0));
                hint(&kv.key, *rev, version, source)?;
                observe(*rev, source, &mut max_observed);
            }
        }
        for (_, prev, source) in &c.prev_kvs {
            hint(&prev.key, prev.mod_revision, Some(prev.clone()), *source)?;
            observe(prev.mod_revision, *source, &mut max_observed);
        }
        if let Some(&source) = c.sources.values().next() {
            observe(c.last, source, &mut max_observed);
        }
    }
    let max_possible = 1 + may_write;
    if max_observed > max_possible {
        let source = max_source.unwrap_or(Source::Operation(0));
        return Err(fail(
            format!(
                "{source} shows revision {max_observed}, but the history has only {may_write} \
                 operations that could have written (the store could reach at most revision \
                 {max_possible})"
            ),
            vec![source],
        ));
    }
    revision_order(items)?;
    // An indeterminate write that is the only one to put some key/value is pinned to the
    // revision where a response shows that version (etcd's "patched history").
    let mut shown: BTreeMap<(Bytes, Bytes), BTreeSet<i64>> = BTreeMap::new();
    for ((rev, key), (kv, _)) in &hints {
        if let Some(kv) = kv {
            shown
                .entry((key.clone(), kv.value.clone()))
                .or_default()
                .insert(*rev);
        }
    }
    let mut writers: BTreeMap<(Bytes, Bytes), usize> = BTreeMap::new();
    for item in items {
        if let Some(request) = item.request() {
            for kv in written(request) {
                *writers.entry(kv).or_default() += 1;
            }
        }
    }
    let pins: Vec<Option<i64>> = items
        .iter()
        .map(|item| {
            if item.pin.is_some() || item.class != Class::IndetKv {
                return item.pin;
            }
            let request = item.request()?;
            written(request).into_iter().find_map(|kv| {
                let revs = shown.get(&kv)?;
                (writers.get(&kv) == Some(&1) && revs.len() == 1)
                    .then(|| revs.first().copied())
                    .flatten()
            })
        })
        .collect();
    let mut by_rev: BTreeMap<i64, Vec<(Bytes, Option<KeyValue>, Source)>> = BTreeMap::new();
    let mut key_hints: BTreeMap<Bytes, Vec<(i64, Option<KeyValue>)>> = BTreeMap::new();
    for ((rev, key), (kv, source)) in hints {
        key_hints
            .entry(key.clone())
            .or_default()
            .push((rev, kv.clone()));
        by_rev.entry(rev).or_default().push((key, kv, source));
    }
    let mut known_puts: BTreeMap<Bytes, Vec<i64>> = BTreeMap::new();
    let mut indet_lease_refs: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if let (
            Class::Write {
                claims: Some(r), ..
            },
            Body::Request { request, expect },
        ) = (item.class, &item.body)
        {
            for key in certain_puts(request, expect) {
                known_puts.entry(key).or_default().push(r);
            }
        }
        if let (Class::IndetKv, Some(request)) = (item.class, item.request()) {
            for lease in leases_of(request) {
                indet_lease_refs.entry(lease).or_default().push(i);
            }
        }
    }
    for revs in known_puts.values_mut() {
        revs.sort_unstable();
    }
    // Unobserved writes that differ only in their values are interchangeable: swapping
    // two of them changes nothing a response shows. (Unless a txn compares values.)
    let compares_values = items.iter().any(|item| {
        matches!(item.request(), Some(Request::Txn(t))
            if t.compare.iter().any(|c| matches!(c.target, crate::history::CompareTarget::Value(_))))
    });
    let mut class_ids: BTreeMap<String, usize> = BTreeMap::new();
    let classes = items
        .iter()
        .zip(&pins)
        .map(|(item, pin)| {
            let request = item.request()?;
            if item.class != Class::IndetKv || pin.is_some() || compares_values {
                return None;
            }
            // Only writes whose values no response shows.
            if written(request).iter().any(|kv| shown.contains_key(kv)) {
                return None;
            }
            let shape = format!("{:?}", without_values(request));
            let next = class_ids.len();
            Some(*class_ids.entry(shape).or_insert(next))
        })
        .collect();
    let mut gaps_upto = vec![0i64; max_observed as usize + 2];
    for r in 1..gaps_upto.len() {
        let gap = r >= 2 && !reserved.contains_key(&(r as i64));
        gaps_upto[r] = gaps_upto[r - 1] + i64::from(gap);
    }
    Ok(Prepared {
        items,
        constraints,
        reserved,
        max_observed,
        hints: by_rev,
        pins,
        key_hints,
        known_puts,
        indet_lease_refs,
        classes,
        gaps_upto,
        lease_refs,
        compact_refs,
    })
}

/// The request with the values it puts left out.
pub(super) fn without_values(request: &Request) -> Request {
    let blank = |op: &TxnOp| match op {
        TxnOp::Put(p) => TxnOp::Put(crate::history::Put {
            value: Bytes::new(),
            prev_kv: false,
            ..p.clone()
        }),
        other => other.clone(),
    };
    match request {
        Request::Put(p) => Request::Put(crate::history::Put {
            value: Bytes::new(),
            prev_kv: false,
            ..p.clone()
        }),
        Request::Txn(t) => Request::Txn(crate::history::Txn {
            compare: t.compare.clone(),
            success: t.success.iter().map(blank).collect(),
            failure: t.failure.iter().map(blank).collect(),
        }),
        other => other.clone(),
    }
}

/// Keys an acknowledged write certainly put (its request and response say which branch).
pub(super) fn certain_puts(request: &Request, expect: &Expect) -> Vec<Bytes> {
    match (request, expect) {
        (Request::Put(p), _) => vec![p.key.clone()],
        (Request::Txn(t), Expect::Ok(Response::Txn { succeeded, .. })) => {
            let ops = if *succeeded { &t.success } else { &t.failure };
            ops.iter()
                .filter_map(|op| match op {
                    TxnOp::Put(p) => Some(p.key.clone()),
                    _ => None,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Where an item sits in revision order, if its response says: a write that made revision
/// `r` comes right before the state `r`; an item at state `h` after it.
pub(super) fn order_key(item: &Item) -> Option<(i64, u8)> {
    match item.class {
        Class::Pure(Some(h)) => Some((h, 1)),
        Class::Write {
            claims: Some(r), ..
        } => Some((r, 0)),
        Class::Write {
            lo,
            hi,
            claims: None,
        } if lo == hi => Some((hi, 1)),
        _ => None,
    }
}

/// Real time must agree with revision order: if A completed before B was invoked, B cannot
/// sit before A. A quick, complete check of the most common violations (stale reads, lost
/// writes), with a plain explanation.
pub(super) fn revision_order(items: &[Item]) -> Result<(), Box<LinearizabilityFailure>> {
    let mut by_ret: Vec<(Time, (i64, u8), usize)> = Vec::new();
    let mut by_invoke: Vec<(Time, (i64, u8), usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let (Some(ret), Some(key)) = (item.ret, order_key(item)) {
            by_ret.push((ret, key, i));
            by_invoke.push((item.invoke, key, i));
        }
    }
    by_ret.sort_unstable();
    by_invoke.sort_unstable();
    let mut next = 0;
    let mut latest: Option<((i64, u8), usize)> = None;
    for &(invoke, key, b) in &by_invoke {
        while next < by_ret.len() && by_ret[next].0 < invoke {
            let (_, k, a) = by_ret[next];
            if latest.is_none_or(|(best, _)| k > best) {
                latest = Some((k, a));
            }
            next += 1;
        }
        let Some((akey, a)) = latest.filter(|&(k, _)| k > key) else {
            continue;
        };
        let (ia, ib) = (&items[a], &items[b]);
        let what_a = if akey.1 == 0 {
            format!("made revision {}", akey.0)
        } else {
            format!("saw revision {}", akey.0)
        };
        let what_b = if key.1 == 0 {
            format!("made revision {}", key.0)
        } else {
            format!("saw revision {}", key.0)
        };
        let verdict = if key.1 == 1 {
            "a stale read: it misses what the earlier operation made or saw"
        } else {
            "a write that the store ordered before what an earlier operation had seen"
        };
        return Err(Box::new(LinearizabilityFailure {
            reason: format!(
                "{} {} and completed at {}, before {} was invoked at {}; yet {} {}: {verdict}",
                ia.source,
                what_a,
                crate::history::fmt_time(ia.ret.unwrap_or(0)),
                ib.source,
                crate::history::fmt_time(invoke),
                ib.source,
                what_b,
            ),
            placed: 0,
            total: items.len(),
            revision: 1,
            involved: vec![ia.source, ib.source],
            sub_history: Vec::new(),
            writes_not_listed: 0,
            dropped: 0,
            steps: 0,
            note: None,
            fails_without_observations: false,
        }));
    }
    Ok(())
}

pub(super) fn describe_version(v: Option<&KeyValue>) -> String {
    match v {
        Some(kv) => kv.to_string(),
        None => "deleted".to_string(),
    }
}
