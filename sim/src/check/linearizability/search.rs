//! The search: depth-first over which operation takes effect next, with the memo of
//! (operations placed, model state) and the budget.

use std::collections::{BTreeSet, HashSet};

use bytes::Bytes;

use crate::history::{EventKind, KeyValue, Request, StoreError, Time};
use crate::model::{in_range, same_response, splitmix, KvModel, Undo};

use super::*;

pub(super) enum Outcome2 {
    Linearizable(Linearization),
    Failed(Box<LinearizabilityFailure>),
    Inconclusive(u64),
}

pub(super) fn search(items: &[Item], constraints: &[WatchConstraint], budget: u64) -> Outcome2 {
    let prepared = match prepare(items, constraints) {
        Ok(p) => p,
        Err(f) => return Outcome2::Failed(f),
    };
    Search::new(&prepared, budget).run()
}

pub(super) struct Stuck {
    pub(super) placed: usize,
    pub(super) revision: i64,
    pub(super) reason: String,
    pub(super) involved: Vec<Source>,
}

pub(super) struct Frame {
    pub(super) candidates: Vec<usize>,
    pub(super) next: usize,
    pub(super) forced: bool,
    pub(super) applied: Option<(usize, Undo)>,
}

pub(super) struct Search<'p> {
    pub(super) p: &'p Prepared<'p>,
    pub(super) model: KvModel,
    pub(super) done: Vec<bool>,
    pub(super) set_hash: u64,
    /// Determinate items not yet linearized, by completion time.
    pub(super) pending: BTreeSet<(Time, usize)>,
    /// Determinate items with a revision, not yet linearized, by the last revision at which
    /// they can take effect.
    pub(super) required: BTreeSet<(i64, usize)>,
    /// Revision → determinate items that can take effect at it.
    pub(super) buckets: Vec<Vec<usize>>,
    /// Determinate items without a revision (store errors), by invocation.
    pub(super) free: BTreeSet<(Time, usize)>,
    pub(super) indet_kv: BTreeSet<(Time, usize)>,
    /// Weakened writes by the revision they would make.
    pub(super) pinned: BTreeSet<(i64, usize)>,
    pub(super) indet_other: BTreeSet<(Time, usize)>,
    pub(super) memo: HashSet<(u64, u64)>,
    pub(super) placed: usize,
    pub(super) steps: u64,
    pub(super) budget: u64,
    pub(super) deepest: Option<Stuck>,
}

pub(super) fn item_hash(i: usize) -> u64 {
    splitmix(splitmix(i as u64 ^ 0x5eed_1234))
}

impl<'p> Search<'p> {
    pub(super) fn new(p: &'p Prepared<'p>, budget: u64) -> Self {
        let mut s = Search {
            p,
            model: KvModel::new(),
            done: vec![false; p.items.len()],
            set_hash: 0,
            pending: BTreeSet::new(),
            required: BTreeSet::new(),
            buckets: vec![Vec::new(); p.max_observed as usize + 2],
            free: BTreeSet::new(),
            indet_kv: BTreeSet::new(),
            pinned: BTreeSet::new(),
            indet_other: BTreeSet::new(),
            memo: HashSet::new(),
            placed: 0,
            steps: 0,
            budget,
            deepest: None,
        };
        for (i, item) in p.items.iter().enumerate() {
            match item.class {
                Class::Pure(Some(h)) => s.buckets[h as usize].push(i),
                Class::Write { lo, hi, .. } => {
                    for rev in lo.max(0)..=hi {
                        s.buckets[rev as usize].push(i);
                    }
                }
                Class::Pure(None) | Class::IndetKv | Class::IndetOther => {}
            }
            s.set_membership(i, true);
        }
        s
    }

    /// Adds an item to (or removes it from) the sets of items still to place.
    pub(super) fn set_membership(&mut self, i: usize, present: bool) {
        let p = self.p;
        let item = &p.items[i];
        let toggle = |set: &mut BTreeSet<(Time, usize)>, key: Time| {
            if present {
                set.insert((key, i));
            } else {
                set.remove(&(key, i));
            }
        };
        match (item.ret, item.class) {
            (Some(ret), class) => {
                toggle(&mut self.pending, ret);
                match class {
                    Class::Pure(None) => toggle(&mut self.free, item.invoke),
                    Class::Pure(Some(h)) | Class::Write { hi: h, .. } => {
                        if present {
                            self.required.insert((h, i));
                        } else {
                            self.required.remove(&(h, i));
                        }
                    }
                    Class::IndetKv | Class::IndetOther => {}
                }
            }
            (None, Class::IndetKv) => match p.pins[i] {
                Some(pin) if present => {
                    self.pinned.insert((pin, i));
                }
                Some(pin) => {
                    self.pinned.remove(&(pin, i));
                }
                None => toggle(&mut self.indet_kv, item.invoke),
            },
            (None, _) => toggle(&mut self.indet_other, item.invoke),
        }
    }

    pub(super) fn mark(&mut self, i: usize, done: bool) {
        self.done[i] = done;
        self.set_hash ^= item_hash(i);
        if self.p.items[i].determinate() {
            if done {
                self.placed += 1;
            } else {
                self.placed -= 1;
            }
        }
        self.set_membership(i, !done);
    }

    pub(super) fn bound(&self) -> Option<Time> {
        self.pending.first().map(|&(t, _)| t)
    }

    pub(super) fn is_gap(&self, rev: i64) -> bool {
        rev <= self.p.max_observed && !self.p.reserved.contains_key(&rev)
    }

    pub(super) fn run(mut self) -> Outcome2 {
        let mut stack: Vec<Frame> = Vec::new();
        match self.frame() {
            None => return self.success(&stack),
            Some(f) => stack.push(f),
        }
        loop {
            let Some(top) = stack.last_mut() else {
                return self.failure();
            };
            if let Some((i, undo)) = top.applied.take() {
                self.mark(i, false);
                self.model.undo(undo);
            }
            if top.next == top.candidates.len() {
                self.note_stuck();
                stack.pop();
                continue;
            }
            let i = top.candidates[top.next];
            top.next += 1;
            let forced = top.forced;
            self.steps += 1;
            if self.steps > self.budget {
                return Outcome2::Inconclusive(self.steps);
            }
            if let Some(undo) = self.try_place(i, forced) {
                if let Some(top) = stack.last_mut() {
                    top.applied = Some((i, undo));
                }
                match self.frame() {
                    None => return self.success(&stack),
                    Some(f) => stack.push(f),
                }
            }
        }
    }

    /// The candidates at the current node; `None` when every determinate item is placed.
    pub(super) fn frame(&mut self) -> Option<Frame> {
        let bound = self.bound()?;
        let rev = self.model.revision();
        let empty = Frame {
            candidates: Vec::new(),
            next: 0,
            forced: false,
            applied: None,
        };
        if self.required.first().is_some_and(|&(h, _)| h < rev) {
            return Some(empty);
        }
        let p = self.p;
        let bucket: Vec<usize> = self
            .buckets
            .get(rev as usize)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .copied()
            .filter(|&i| !self.done[i] && p.items[i].invoke <= bound)
            .collect();
        // A pure item answered correctly now is placed without branching.
        let pure: Vec<usize> = bucket
            .iter()
            .copied()
            .filter(|&i| matches!(p.items[i].class, Class::Pure(_)))
            .chain(self.free.range(..=(bound, usize::MAX)).map(|&(_, i)| i))
            .collect();
        let forced = pure.into_iter().find(|&i| self.pure_matches(i));
        if let Some(i) = forced {
            return Some(Frame {
                candidates: vec![i],
                next: 0,
                forced: true,
                applied: None,
            });
        }
        let first_due = self.pending.first().map(|&(_, i)| i);
        let mut candidates: Vec<usize> = bucket
            .into_iter()
            .filter(|&i| match p.items[i].class {
                // An acknowledged compaction waits until it must happen: nothing but
                // compaction-dependent answers can tell when it did.
                Class::Write { hi, .. }
                    if matches!(p.items[i].request(), Some(Request::Compact { .. })) =>
                {
                    hi == rev || first_due == Some(i) || self.compaction_needed(bound)
                }
                Class::Write { .. } => true,
                _ => false,
            })
            .collect();
        let gap = self.is_gap(rev + 1);
        if gap {
            candidates.extend(
                self.pinned
                    .range((rev + 1, 0)..=(rev + 1, usize::MAX))
                    .map(|&(_, i)| i)
                    .filter(|&i| p.items[i].invoke <= bound),
            );
            let Some(must_put) = self.must_put(rev + 1) else {
                return Some(empty);
            };
            let mut seen_classes = BTreeSet::new();
            let mut free: Vec<(usize, usize)> = Vec::new();
            for &(_, i) in self.indet_kv.range(..=(bound, usize::MAX)) {
                // The earliest-invoked write of each interchangeable class stands for all.
                if let Some(class) = p.classes[i] {
                    if !seen_classes.insert(class) {
                        continue;
                    }
                }
                if !must_put.is_empty() {
                    let puts: BTreeSet<Bytes> = p.items[i]
                        .request()
                        .map(|r| written(r).into_iter().map(|(k, _)| k).collect())
                        .unwrap_or_default();
                    if !must_put.iter().all(|k| puts.contains(k)) {
                        continue;
                    }
                }
                free.push((usize::MAX - self.demand(i), i));
            }
            free.sort();
            candidates.extend(free.into_iter().map(|(_, i)| i));
        }
        for &(_, i) in self.indet_other.range(..=(bound, usize::MAX)) {
            if self.relevant(i, bound, gap) {
                candidates.push(i);
            }
        }
        Some(Frame {
            candidates,
            ..empty
        })
    }

    /// Whether an indeterminate compaction or lease operation could matter now: only right
    /// before an operation whose answer needs its effect (delaying an effect nobody
    /// depends on is always allowed), or, for lease operations, at a gap.
    pub(super) fn relevant(&self, i: usize, bound: Time, gap: bool) -> bool {
        let waiting = |list: &[usize]| {
            list.iter()
                .any(|&j| !self.done[j] && self.p.items[j].invoke <= bound)
        };
        match self.p.items[i].request() {
            Some(Request::Compact { .. }) => self.compaction_needed(bound),
            // At a gap, a revoke that deletes keys may make the revision.
            Some(Request::LeaseRevoke { id }) => {
                (gap && self.model.lease_in_use(*id)) || self.lease_needed(*id, bound, false)
            }
            // At a gap, an indeterminate put with this lease may need it.
            Some(Request::LeaseGrant { id, .. }) => {
                (gap && self.p.indet_lease_refs.get(id).is_some_and(|l| waiting(l)))
                    || self.lease_needed(*id, bound, true)
            }
            _ => false,
        }
    }

    /// A pending operation needs a compaction first: another compaction (their order
    /// decides which one fails), or an answer `ErrCompacted`.
    pub(super) fn compaction_needed(&self, bound: Time) -> bool {
        self.p.compact_refs.iter().any(|&j| {
            let item = &self.p.items[j];
            !self.done[j]
                && item.invoke <= bound
                && matches!(
                    &item.body,
                    Body::Request {
                        request: Request::Compact { .. },
                        ..
                    } | Body::Request {
                        expect: Expect::Err(StoreError::Compacted),
                        ..
                    }
                )
        })
    }

    /// A pending operation's answer needs lease `id` to exist (`exists`) or to be gone.
    pub(super) fn lease_needed(&self, id: i64, bound: Time, exists: bool) -> bool {
        let Some(refs) = self.p.lease_refs.get(&id) else {
            return false;
        };
        refs.iter().any(|&j| {
            let item = &self.p.items[j];
            if self.done[j] || item.invoke > bound {
                return false;
            }
            let Body::Request { request, expect } = &item.body else {
                return false;
            };
            let grant = matches!(request, Request::LeaseGrant { .. });
            match expect {
                Expect::Ok(_) => exists != grant,
                Expect::Err(StoreError::LeaseExists) => exists,
                Expect::Err(StoreError::LeaseNotFound) => !exists,
                _ => false,
            }
        })
    }

    /// A pure item's answer matches the current state (which it leaves unchanged).
    pub(super) fn pure_matches(&mut self, i: usize) -> bool {
        let p = self.p;
        let item = &p.items[i];
        match &item.body {
            Body::Request { request, expect } => {
                let mut undo = Undo::default();
                let result = self.model.apply_logged(request, &mut undo);
                let changed = undo.changed();
                self.model.undo(undo);
                !changed
                    && match (expect, &result) {
                        (Expect::Ok(want), Ok(got)) => same_response(got, want),
                        (Expect::Err(want), Err(got)) => want == got,
                        _ => false,
                    }
            }
            Body::ReadAt { range, result } => {
                let rev = if range.revision > 0 {
                    range.revision
                } else {
                    self.model.revision()
                };
                rev <= self.model.revision()
                    && self
                        .model
                        .range(&range.key, &range.range_end, rev, range.limit)
                        == *result
            }
            Body::RevisionReached => true,
        }
    }

    pub(super) fn try_place(&mut self, i: usize, forced: bool) -> Option<Undo> {
        let p = self.p;
        let item = &p.items[i];
        let undo = if forced {
            Undo::default()
        } else {
            match &item.body {
                Body::Request { request, expect } => {
                    let before = self.model.revision();
                    let mut undo = Undo::default();
                    let result = self.model.apply_logged(request, &mut undo);
                    let ok = match (expect, &result) {
                        (Expect::Ok(want), Ok(got)) => same_response(got, want),
                        (Expect::Err(want), Err(got)) => want == got,
                        (Expect::Unknown, Ok(_)) => undo.changed(),
                        _ => false,
                    };
                    let ok = ok && (self.model.revision() == before || self.revision_allowed(i));
                    if !ok {
                        self.model.undo(undo);
                        return None;
                    }
                    undo
                }
                Body::ReadAt { .. } | Body::RevisionReached => {
                    if !self.pure_matches(i) {
                        return None;
                    }
                    Undo::default()
                }
            }
        };
        self.mark(i, true);
        if !self.memo.insert((self.set_hash, self.model.fingerprint())) {
            self.mark(i, false);
            self.model.undo(undo);
            return None;
        }
        Some(undo)
    }

    /// The write just applied by item `i` produced the current revision: is that allowed?
    pub(super) fn revision_allowed(&self, i: usize) -> bool {
        let rev = self.model.revision();
        if rev > self.p.max_observed {
            return false;
        }
        if self.p.reserved.get(&rev).is_some_and(|&j| j != i) {
            return false;
        }
        if let Some(hints) = self.p.hints.get(&rev) {
            for (key, want, _) in hints {
                if self.model.written_at(key, rev).as_ref() != Some(want) {
                    return false;
                }
            }
        }
        if !self.versions_fit(rev) {
            return false;
        }
        for c in self.p.constraints {
            if c.first <= rev && rev <= c.last {
                let produced: Vec<(EventKind, KeyValue)> = self
                    .model
                    .events(rev)
                    .iter()
                    .filter(|e| {
                        in_range(&e.kv.key, &c.key, &c.range_end)
                            && !(e.kind == EventKind::Put && c.filters.no_put)
                            && !(e.kind == EventKind::Delete && c.filters.no_delete)
                    })
                    .map(|e| (e.kind, e.kv.clone()))
                    .collect();
                let want = c.by_rev.get(&rev).map_or(&[][..], Vec::as_slice);
                if produced != want {
                    return false;
                }
            }
        }
        true
    }

    /// The next version a response shows for `key` after revision `rev`, if it belongs to
    /// an incarnation of the key that already existed at `rev`.
    pub(super) fn next_shown(&self, key: &[u8], rev: i64) -> Option<(i64, &KeyValue)> {
        self.next_put_shown(key, rev)
            .filter(|(_, kv)| kv.create_revision <= rev)
    }

    /// The next version of `key` a response shows after revision `rev`, if it is a put.
    pub(super) fn next_put_shown(&self, key: &[u8], rev: i64) -> Option<(i64, &KeyValue)> {
        let shown = self.p.key_hints.get(key)?;
        let next = shown.partition_point(|(r, _)| *r <= rev);
        match shown.get(next) {
            Some((m, Some(kv))) => Some((*m, kv)),
            _ => None,
        }
    }

    /// Puts of `key` certain in `(rev, m]` given that a response shows its version written
    /// at `m`: the acknowledged ones before `m`, and the one at `m`.
    pub(super) fn certain_puts_until(&self, key: &[u8], rev: i64, m: i64) -> i64 {
        self.known_puts_between(key, rev, m - 1) + 1
    }

    /// Acknowledged puts of `key` in revisions `(after, until]`.
    pub(super) fn known_puts_between(&self, key: &[u8], after: i64, until: i64) -> i64 {
        self.p.known_puts.get(key).map_or(0, |revs| {
            (revs.partition_point(|r| *r <= until) - revs.partition_point(|r| *r <= after)) as i64
        })
    }

    /// Version accounting against what responses show later: if key k is later shown at
    /// (create c, version n) with c at or before this revision, then k lives on from here
    /// in the same incarnation (so it cannot be deleted now, and a put now keeps create c),
    /// and a put now plus the acknowledged puts until then cannot exceed version n.
    pub(super) fn versions_fit(&self, rev: i64) -> bool {
        for e in self.model.events(rev) {
            let Some((m, shown)) = self.next_shown(&e.kv.key, rev) else {
                continue;
            };
            match e.kind {
                EventKind::Delete => return false,
                EventKind::Put => {
                    if e.kv.create_revision != shown.create_revision
                        || e.kv.version + self.certain_puts_until(&e.kv.key, rev, m) > shown.version
                    {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// The keys the write at gap revision `g` must put, or `None` if some key needs more
    /// puts before its next shown version than there are unclaimed revisions left (each
    /// revision puts a key at most once, as etcd refuses duplicate keys in a txn).
    pub(super) fn must_put(&self, g: i64) -> Option<Vec<Bytes>> {
        let rev = g - 1;
        let mut out = Vec::new();
        for key in self.p.key_hints.keys() {
            let Some((m, shown)) = self.next_put_shown(key, rev) else {
                continue;
            };
            if m == g {
                continue;
            }
            if shown.create_revision == g {
                out.push(key.clone());
                continue;
            }
            if shown.create_revision > g {
                continue;
            }
            let now = self
                .model
                .get(key, rev)
                .filter(|kv| kv.create_revision == shown.create_revision)
                .map_or(0, |kv| kv.version);
            let need = shown.version - now - self.certain_puts_until(key, rev, m);
            let gaps = &self.p.gaps_upto;
            let upto = |r: i64| gaps.get(r as usize).or(gaps.last()).copied().unwrap_or(0);
            let avail = upto(m - 1) - upto(rev);
            if need > avail {
                return None;
            }
            if need > 0 && need == avail {
                out.push(key.clone());
            }
        }
        Some(out)
    }

    /// How many of the keys an indeterminate write puts still need puts before their next
    /// shown version (a heuristic order for the writes tried at a gap).
    pub(super) fn demand(&self, i: usize) -> usize {
        let rev = self.model.revision();
        let Some(request) = self.p.items[i].request() else {
            return 0;
        };
        written(request)
            .iter()
            .filter(|(key, _)| {
                let Some((m, shown)) = self.next_shown(key, rev + 1) else {
                    return false;
                };
                let now = self
                    .model
                    .get(key, rev)
                    .filter(|kv| kv.create_revision == shown.create_revision)
                    .map_or(0, |kv| kv.version);
                now + self.certain_puts_until(key, rev, m) < shown.version
            })
            .count()
    }

    pub(super) fn success(self, stack: &[Frame]) -> Outcome2 {
        let order = stack
            .iter()
            .filter_map(|f| f.applied.as_ref().map(|(i, _)| self.p.items[*i].source))
            .collect();
        Outcome2::Linearizable(Linearization {
            truth: self.model,
            order,
            steps: self.steps,
        })
    }

    pub(super) fn failure(self) -> Outcome2 {
        let stuck = self.deepest.unwrap_or(Stuck {
            placed: 0,
            revision: 1,
            reason: "no operation can be placed first".to_string(),
            involved: Vec::new(),
        });
        Outcome2::Failed(Box::new(LinearizabilityFailure {
            reason: stuck.reason,
            placed: stuck.placed,
            total: self.p.items.len(),
            revision: stuck.revision,
            involved: stuck.involved,
            sub_history: Vec::new(),
            writes_not_listed: 0,
            dropped: 0,
            steps: self.steps,
            note: None,
            fails_without_observations: false,
        }))
    }
}
