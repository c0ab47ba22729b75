//! Linearizability of a KV history against [`KvModel`]: a Wing–Gong/Lowe depth-first search
//! with Porcupine's memo of (set of linearized operations, model state), made fast by what
//! etcd's responses reveal.
//!
//! # What is searched
//! - Determinate operations (an `Ok` response or a store error) must take effect between
//!   their invocation and their completion, in an order the model accepts with exactly the
//!   recorded answers.
//! - Indeterminate writes may take effect at any point after their invocation, or never.
//!   Indeterminate reads, and failed operations, are dropped.
//! - Serializable reads are not linearizable: [`check_with_observations`] adds each one as
//!   an observation ("revision `h` existed before it completed, and the range had exactly
//!   this content at the read revision"), and likewise each watch response ("revision `h`
//!   existed before it was received", "the events of every revision the watch covers are
//!   these"). [`check`] leaves them out.
//!
//! # Why it is fast
//! Every `Ok` response carries the header revision. A put, a delete that removed keys, or a
//! txn that wrote must be the write that produced its header revision; reads, and writes
//! that changed nothing, happened while the store was at their header revision. So:
//! - operations are bucketed by the revision at which they can take effect, and only the
//!   current bucket is tried;
//! - a revision claimed by an acknowledged write cannot be produced by anything else, and
//!   no revision beyond the highest one observed is ever produced: indeterminate writes
//!   are tried only at unclaimed, observed revisions ("gaps");
//! - a key version that some response shows (key, mod revision, value, version, ...) pins
//!   the write of that revision: a write whose result contradicts it is rejected at once;
//! - an operation that never changes the state and is answered correctly now is linearized
//!   at once without branching (moving such an operation earlier is always allowed);
//! - indeterminate compactions and lease grants/revokes are tried only when a pending
//!   operation depends on them (delaying an effect nobody observes is always allowed).
//!
//! # Why partitioning by key is not used
//! P-compositionality (checking each key alone) is sound only for models whose state is a
//! product of independent per-key states. etcd's revision is global: every response's
//! header revision, every version's mod/create revision, and every range over several keys
//! depend on writes to other keys, so splitting by key would accept histories that are not
//! linearizable (or, if revisions were ignored, check far less). The revision bucketing
//! above gives the same effect safely: at any point only a handful of operations can be
//! placed.
//!
//! # When it fails
//! The report names the operation that could not be placed at the furthest point the
//! search reached and why (or, faster, the pair of operations whose real-time order
//! contradicts their revisions, or two responses that disagree about one key version).
//! Then it shrinks to a minimal failing sub-history, keeping each step only if the result
//! still fails: the shortest failing time prefix (operations still running at its end get
//! an unknown outcome); then as many reads as possible dropped; then as many writes as
//! possible relaxed to "took effect at its revision, at any time after its invocation".
//! Every step only removes constraints, so the operations listed (with everything else
//! relaxed) are a real contradiction.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use bytes::Bytes;

use crate::history::{
    EventKind, History, KeyValue, OpId, Outcome, Range, RangeResult, Request, Response, StoreError,
    Time, TxnOp, TxnOpResult, WatchFilters, WatchIndex, WatchResponseKind,
};
use crate::model::{in_range, resolve, same_response, splitmix, KvModel, Undo};

use super::Violation;

/// Limits of the search.
#[derive(Clone, Debug)]
pub struct Options {
    /// Operations tried before the search gives up ([`Violation::Inconclusive`]).
    pub max_steps: u64,
    /// Shrink a failing history to a minimal failing sub-history.
    pub shrink: bool,
    /// Searches run while shrinking.
    pub max_shrink_checks: usize,
    /// Step budget of each search while shrinking (one that runs out counts as passing).
    pub shrink_step_budget: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_steps: 20_000_000,
            shrink: true,
            max_shrink_checks: 400,
            shrink_step_budget: 200_000,
        }
    }
}

/// Where an item of the search came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// An operation of [`History::operations`].
    Operation(OpId),
    /// A serializable read (an operation), used as an observation.
    SerializableRead(OpId),
    /// A watch response, used as an observation that its header revision existed.
    WatchResponse { watch: WatchIndex, response: usize },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Operation(id) => write!(f, "op #{id}"),
            Source::SerializableRead(id) => write!(f, "serializable read op #{id}"),
            Source::WatchResponse { watch, response } => {
                write!(f, "watch #{watch} response #{response}")
            }
        }
    }
}

/// A successful linearization.
#[derive(Clone, Debug)]
pub struct Linearization {
    /// The store after every linearized operation, with its whole history: the ground
    /// truth for watch, serializable-read and durability checks.
    pub truth: KvModel,
    /// The items in linearization order (indeterminate writes that never took effect and
    /// dropped operations are absent).
    pub order: Vec<Source>,
    /// Operations tried by the search.
    pub steps: u64,
}

/// Why a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearizabilityFailure {
    /// What could not be placed, and why.
    pub reason: String,
    /// Items linearized at the furthest point, of `total`.
    pub placed: usize,
    pub total: usize,
    /// The store's revision at the furthest point.
    pub revision: i64,
    /// The items the reason names.
    pub involved: Vec<Source>,
    /// The minimal failing sub-history, one line per item, in invocation order.
    pub sub_history: Vec<String>,
    /// Writes the sub-history keeps without listing them: with their timing or outcome
    /// relaxed, they are only needed to produce the revisions in between.
    pub writes_not_listed: usize,
    /// Items of the full history left out of the sub-history.
    pub dropped: usize,
    /// Steps the search took to fail.
    pub steps: u64,
    /// What else is known (e.g. whether the operations alone are linearizable).
    pub note: Option<String>,
    /// The sub-history's operations fail even without the observations.
    pub(crate) fails_without_observations: bool,
}

impl fmt::Display for LinearizabilityFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not linearizable: {}", self.reason)?;
        if let Some(note) = &self.note {
            write!(f, "\n  ({note})")?;
        }
        if self.steps > 0 {
            write!(
                f,
                "\n  furthest point: {} of {} items placed, store at revision {}",
                self.placed, self.total, self.revision
            )?;
        }
        if !self.sub_history.is_empty() {
            write!(
                f,
                "\n  minimal failing sub-history ({} listed; {} other writes kept, not listed: \
                 only their effects are needed; {} items dropped):",
                self.sub_history.len(),
                self.writes_not_listed,
                self.dropped
            )?;
            for line in &self.sub_history {
                write!(f, "\n    {line}")?;
            }
        }
        Ok(())
    }
}

/// Checks the linearizable operations of `history` (serializable reads and watches left
/// out); on failure, shrinks to a minimal failing sub-history.
pub fn check(history: &History, options: &Options) -> Result<Linearization, Violation> {
    let items = items(history, None)?;
    run(history, items, Vec::new(), options, options.shrink)
}

/// Like [`check`], with serializable reads and watch responses as observations the
/// linearization must agree with. Watch events pin what each revision wrote, so this
/// search, and the shrinking of its failures, stay fast whatever the share of lost
/// responses. When this fails and [`check`] passes, the observations are at fault (the
/// serializable-read and watch checks say which).
pub fn check_with_observations(
    history: &History,
    options: &Options,
) -> Result<Linearization, Violation> {
    let items = items(history, Some(Time::MAX))?;
    let constraints = watch_constraints(history);
    run(history, items, constraints, options, options.shrink)
}

/// For operations that are linearizable on their own but not together with the
/// observations: the earliest time T at which the observations made by then (serializable
/// reads completed, watch responses received) stop agreeing with every linearization, a
/// linearization that agrees with all observations made before T, and the (shrunk) failure
/// at T. Adding observations only removes linearizations, so this is a binary search.
pub fn first_disagreement(
    history: &History,
    options: &Options,
) -> Result<(Time, Linearization, Box<LinearizabilityFailure>), Violation> {
    let constraints = watch_constraints(history);
    let mut times: Vec<Time> = history
        .operations
        .iter()
        .filter(|op| op.request.is_serializable() && matches!(op.outcome, Outcome::Ok(_)))
        .filter_map(|op| op.complete)
        .chain(
            history
                .watches
                .iter()
                .flat_map(|w| w.responses.iter().map(|r| r.received)),
        )
        .collect();
    times.sort_unstable();
    times.dedup();
    let at = |t: Option<Time>| -> Result<Outcome2, Violation> {
        let items = items(history, t)?;
        let cs = t.map_or_else(Vec::new, |t| cut_all(&constraints, t));
        Ok(search(&items, &cs, options.max_steps))
    };
    let inconclusive = |steps| Violation::Inconclusive {
        checker: "linearizability (observations)",
        steps,
    };
    let (mut lo, mut hi) = (0usize, times.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        match at(Some(times[mid]))? {
            Outcome2::Linearizable(_) => lo = mid + 1,
            Outcome2::Failed(_) => hi = mid,
            Outcome2::Inconclusive(steps) => return Err(inconclusive(steps)),
        }
    }
    let Some(&t) = times.get(hi) else {
        return Err(Violation::InvalidHistory {
            reason: "the observations agree with the operations after all".to_string(),
        });
    };
    let before = if hi == 0 { None } else { Some(times[hi - 1]) };
    let truth = match at(before)? {
        Outcome2::Linearizable(l) => l,
        Outcome2::Failed(f) => return Err(Violation::Linearizability(f)),
        Outcome2::Inconclusive(steps) => return Err(inconclusive(steps)),
    };
    let failure = match run(
        history,
        items(history, Some(t))?,
        cut_all(&constraints, t),
        options,
        options.shrink,
    ) {
        Err(Violation::Linearizability(f)) => f,
        Err(other) => return Err(other),
        Ok(_) => {
            return Err(Violation::InvalidHistory {
                reason: "the observations agree with the operations after all".to_string(),
            })
        }
    };
    Ok((t, truth, failure))
}

fn run(
    history: &History,
    items: Vec<Item>,
    constraints: Vec<WatchConstraint>,
    options: &Options,
    shrink: bool,
) -> Result<Linearization, Violation> {
    match search(&items, &constraints, options.max_steps) {
        Outcome2::Linearizable(l) => Ok(l),
        Outcome2::Inconclusive(steps) => Err(Violation::Inconclusive {
            checker: "linearizability",
            steps,
        }),
        Outcome2::Failed(failure) => {
            let total = items.len();
            let mut failure = *failure;
            failure.total = total;
            if shrink {
                // A variant that fails like the original should not need many more steps;
                // one that searches much longer is treated as passing.
                let budget = options
                    .shrink_step_budget
                    .min(failure.steps.saturating_mul(8).saturating_add(10_000))
                    .max(failure.steps.saturating_mul(2).saturating_add(10_000));
                // A failure found before the search names only the items involved: keep
                // them, and the explanation. A search failure is explained again on the
                // sub-history shown.
                let anchored: BTreeSet<Source> = if failure.steps == 0 {
                    failure.involved.iter().copied().collect()
                } else {
                    BTreeSet::new()
                };
                let (kept, kept_constraints) =
                    shrink_items(&items, &constraints, options, budget, &anchored);
                if anchored.is_empty() {
                    let small_items = kept.items(&items);
                    if let Outcome2::Failed(small) = search(&small_items, &kept_constraints, budget)
                    {
                        failure.reason = small.reason;
                        failure.involved = small.involved;
                        failure.placed = small.placed;
                        failure.revision = small.revision;
                        failure.total = small_items.len();
                    }
                }
                // The sub-history weakens the operations: if its operations alone fail, so
                // do the history's.
                if !constraints.is_empty()
                    || items
                        .iter()
                        .any(|i| !matches!(i.source, Source::Operation(_)))
                {
                    let ops_only: Vec<Item> = kept
                        .items(&items)
                        .into_iter()
                        .filter(|i| matches!(i.source, Source::Operation(_)))
                        .collect();
                    failure.fails_without_observations =
                        matches!(search(&ops_only, &[], budget), Outcome2::Failed(_));
                }
                let (lines, unknown) = kept.describe(history, &items);
                failure.dropped = kept.dropped();
                failure.sub_history = lines;
                failure.writes_not_listed = unknown;
            } else {
                failure.sub_history = failure
                    .involved
                    .iter()
                    .map(|s| describe_source(history, *s))
                    .collect();
            }
            Err(Violation::Linearizability(Box::new(failure)))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Items: what the search places.

#[derive(Clone, Debug)]
struct Item {
    source: Source,
    invoke: Time,
    /// `None`: indeterminate (no deadline, may never take effect).
    ret: Option<Time>,
    body: Body,
    class: Class,
    /// An indeterminate write weakened from an acknowledged one: if it took effect, it
    /// made this revision.
    pin: Option<i64>,
}

#[derive(Clone, Debug)]
enum Body {
    Request {
        request: Request,
        expect: Expect,
    },
    /// A serializable read: at the read revision the range had exactly `result`.
    ReadAt {
        range: Range,
        result: RangeResult,
    },
    /// The bucket revision existed by `ret`.
    RevisionReached,
}

#[derive(Clone, Debug)]
enum Expect {
    Ok(Response),
    Err(StoreError),
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Never changes the state; takes effect at this revision (`None`: at any).
    Pure(Option<i64>),
    /// Determinate and may change the state: takes effect while the store is at `lo` or
    /// `hi`; `claims` is the revision it produced, if it certainly wrote.
    Write {
        lo: i64,
        hi: i64,
        claims: Option<i64>,
    },
    /// Indeterminate put/delete/txn: useful only where it produces a revision.
    IndetKv,
    /// Indeterminate compaction or lease grant/revoke.
    IndetOther,
}

impl Item {
    fn determinate(&self) -> bool {
        self.ret.is_some()
    }

    fn request(&self) -> Option<&Request> {
        match &self.body {
            Body::Request { request, .. } => Some(request),
            _ => None,
        }
    }

    /// The item with its deadline dropped: it still happened, at the revision its response
    /// says, but at any time after its invocation. `None` for items without a revision.
    fn relaxed(&self) -> Option<Item> {
        match self.class {
            Class::Write { .. } | Class::Pure(Some(_)) if self.ret.is_some() => Some(Item {
                ret: Some(Time::MAX),
                ..self.clone()
            }),
            _ => None,
        }
    }

    /// The item weakened to "outcome unknown" (a write) or `None` (dropped: a read).
    fn weakened(&self) -> Option<Item> {
        let Body::Request { request, .. } = &self.body else {
            return None;
        };
        let (class, pin) = match self.class {
            Class::Pure(_) => return None,
            Class::IndetKv | Class::IndetOther => return Some(self.clone()),
            Class::Write { claims, .. } => (indeterminate_class(request)?, claims),
        };
        Some(Item {
            source: self.source,
            invoke: self.invoke,
            ret: None,
            body: Body::Request {
                request: request.clone(),
                expect: Expect::Unknown,
            },
            pin: if class == Class::IndetKv { pin } else { None },
            class,
        })
    }
}

fn indeterminate_class(request: &Request) -> Option<Class> {
    match request {
        Request::Range(_) => None,
        Request::Txn(t) if t.is_read_only() => None,
        Request::Put(_) | Request::DeleteRange(_) | Request::Txn(_) => Some(Class::IndetKv),
        Request::LeaseGrant { id: 0, .. } => None,
        Request::LeaseGrant { .. } | Request::LeaseRevoke { .. } | Request::Compact { .. } => {
            Some(Class::IndetOther)
        }
    }
}

fn invalid(id: OpId, why: &str) -> Violation {
    Violation::InvalidHistory {
        reason: format!("operation #{id}: {why}"),
    }
}

/// The search's items: the operations, and with `observe_until`, the observations
/// (serializable reads, watch responses) made by then.
fn items(history: &History, observe_until: Option<Time>) -> Result<Vec<Item>, Violation> {
    let observations = observe_until.is_some();
    let until = observe_until.unwrap_or(0);
    let mut items = Vec::new();
    for (id, op) in history.operations.iter().enumerate() {
        if let (Some(c), true) = (
            op.complete,
            matches!(op.outcome, Outcome::Ok(_) | Outcome::Error(_)),
        ) {
            if c < op.invoke {
                return Err(invalid(id, "completed before it was invoked"));
            }
        }
        if op.request.is_serializable() {
            if let (
                true,
                Request::Range(range),
                Outcome::Ok(Response::Range { revision, result }),
            ) = (observations, &op.request, &op.outcome)
            {
                let ret = op
                    .complete
                    .ok_or_else(|| invalid(id, "ok without completion"))?;
                if ret > until {
                    continue;
                }
                items.push(Item {
                    source: Source::SerializableRead(id),
                    invoke: 0,
                    ret: Some(ret),
                    body: Body::ReadAt {
                        range: range.clone(),
                        result: result.clone(),
                    },
                    class: Class::Pure(Some(*revision)),
                    pin: None,
                });
            }
            continue;
        }
        let source = Source::Operation(id);
        match &op.outcome {
            Outcome::Failed(_) => {}
            Outcome::Indeterminate(_) => {
                if let Some(class) = indeterminate_class(&op.request) {
                    items.push(Item {
                        source,
                        invoke: op.invoke,
                        ret: None,
                        body: Body::Request {
                            request: op.request.clone(),
                            expect: Expect::Unknown,
                        },
                        class,
                        pin: None,
                    });
                }
            }
            Outcome::Error(e) => {
                let ret = op
                    .complete
                    .ok_or_else(|| invalid(id, "error without completion"))?;
                items.push(Item {
                    source,
                    invoke: op.invoke,
                    ret: Some(ret),
                    body: Body::Request {
                        request: op.request.clone(),
                        expect: Expect::Err(*e),
                    },
                    class: Class::Pure(None),
                    pin: None,
                });
            }
            Outcome::Ok(response) => {
                let ret = op
                    .complete
                    .ok_or_else(|| invalid(id, "ok without completion"))?;
                let class = classify(&op.request, response)
                    .ok_or_else(|| invalid(id, "response does not fit the request"))?;
                items.push(Item {
                    source,
                    invoke: op.invoke,
                    ret: Some(ret),
                    body: Body::Request {
                        request: resolve(&op.request, &op.outcome),
                        expect: Expect::Ok(response.clone()),
                    },
                    class,
                    pin: None,
                });
            }
        }
    }
    if observations {
        // Each watch response: its header revision existed when it was received. One item
        // per revision, with the earliest time.
        let mut reached: BTreeMap<i64, (Time, Source)> = BTreeMap::new();
        for (w, watch) in history.watches.iter().enumerate() {
            for (r, resp) in watch.responses.iter().enumerate() {
                if resp.received > until {
                    continue;
                }
                let mut revs = vec![resp.header_revision];
                if let WatchResponseKind::Events(events) = &resp.kind {
                    revs.extend(events.iter().map(|e| e.revision()));
                }
                for rev in revs.into_iter().filter(|&rev| rev >= 1) {
                    let source = Source::WatchResponse {
                        watch: w,
                        response: r,
                    };
                    let e = reached.entry(rev).or_insert((resp.received, source));
                    if resp.received < e.0 {
                        *e = (resp.received, source);
                    }
                }
            }
        }
        for (rev, (time, source)) in reached {
            items.push(Item {
                source,
                invoke: 0,
                ret: Some(time),
                body: Body::RevisionReached,
                class: Class::Pure(Some(rev)),
                pin: None,
            });
        }
    }
    Ok(items)
}

/// Where an acknowledged operation can take effect, from its response.
fn classify(request: &Request, response: &Response) -> Option<Class> {
    let h = response.revision();
    let write = |lo: i64, hi: i64, claims: Option<i64>| Some(Class::Write { lo, hi, claims });
    match (request, response) {
        (Request::Range(_), Response::Range { .. }) => Some(Class::Pure(Some(h))),
        (Request::Put(_), Response::Put { .. }) => write(h - 1, h - 1, Some(h)),
        (Request::DeleteRange(_), Response::DeleteRange { deleted, .. }) => {
            if *deleted > 0 {
                write(h - 1, h - 1, Some(h))
            } else {
                Some(Class::Pure(Some(h)))
            }
        }
        (
            Request::Txn(txn),
            Response::Txn {
                succeeded, results, ..
            },
        ) => {
            let ops = if *succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            let wrote = ops.iter().enumerate().any(|(i, op)| match op {
                TxnOp::Put(_) => true,
                TxnOp::DeleteRange(_) => matches!(
                    results.get(i),
                    Some(TxnOpResult::DeleteRange { deleted, .. }) if *deleted > 0
                ),
                TxnOp::Range(_) => false,
            });
            if wrote {
                write(h - 1, h - 1, Some(h))
            } else {
                Some(Class::Pure(Some(h)))
            }
        }
        (Request::LeaseGrant { .. }, Response::LeaseGrant { .. }) => write(h, h, None),
        // etcd answers a compaction with the revision at reply time, which may be later
        // than the one it applied at (at least the revision it compacts).
        (Request::Compact { revision }, Response::Compact { .. }) => {
            write((*revision).clamp(1, h), h, None)
        }
        (Request::LeaseRevoke { .. }, Response::LeaseRevoke { .. }) => write(h - 1, h, None),
        _ => None,
    }
}

/// What a watch says about the revisions it covers: between `first` and `last`, the
/// events of each revision in its range are exactly these.
#[derive(Clone, Debug)]
struct WatchConstraint {
    key: Bytes,
    range_end: Bytes,
    filters: WatchFilters,
    first: i64,
    last: i64,
    by_rev: BTreeMap<i64, Vec<(EventKind, KeyValue)>>,
    /// Revision → the response that carried its events.
    sources: BTreeMap<i64, Source>,
    /// The `prev_kv`s the events carried: (event revision, prev_kv, response).
    prev_kvs: Vec<(i64, KeyValue, Source)>,
    /// Per response, in stream order: when it was received, and the last revision the
    /// watch was complete up to after it.
    marks: Vec<(Time, i64)>,
}

impl WatchConstraint {
    /// What the watch had said by time `t` (responses received later are left out).
    fn cut(&self, t: Time) -> Option<WatchConstraint> {
        let last = self
            .marks
            .iter()
            .filter(|(received, _)| *received <= t)
            .map(|(_, last)| *last)
            .max()?;
        if last < self.first {
            return None;
        }
        Some(WatchConstraint {
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            filters: self.filters,
            first: self.first,
            last,
            by_rev: self
                .by_rev
                .range(..=last)
                .map(|(r, e)| (*r, e.clone()))
                .collect(),
            sources: self.sources.range(..=last).map(|(r, s)| (*r, *s)).collect(),
            prev_kvs: self
                .prev_kvs
                .iter()
                .filter(|(rev, _, _)| *rev <= last)
                .cloned()
                .collect(),
            marks: self
                .marks
                .iter()
                .filter(|(received, _)| *received <= t)
                .copied()
                .collect(),
        })
    }
}

fn cut_all(constraints: &[WatchConstraint], t: Time) -> Vec<WatchConstraint> {
    constraints.iter().filter_map(|c| c.cut(t)).collect()
}

fn watch_constraints(history: &History) -> Vec<WatchConstraint> {
    let mut out = Vec::new();
    for (w, watch) in history.watches.iter().enumerate() {
        let Some((first, last)) = super::watch::covered_revisions(watch) else {
            continue;
        };
        let mut by_rev: BTreeMap<i64, Vec<(EventKind, KeyValue)>> = BTreeMap::new();
        let mut sources = BTreeMap::new();
        let mut prev_kvs = Vec::new();
        let mut marks = Vec::new();
        let mut complete_up_to = 0;
        for (r, resp) in watch.responses.iter().enumerate() {
            let source = Source::WatchResponse {
                watch: w,
                response: r,
            };
            match &resp.kind {
                WatchResponseKind::Events(events) => {
                    for e in events {
                        if let Some(prev) = &e.prev_kv {
                            prev_kvs.push((e.revision(), prev.clone(), source));
                        }
                        by_rev
                            .entry(e.revision())
                            .or_default()
                            .push((e.kind, e.kv.clone()));
                        sources.entry(e.revision()).or_insert(source);
                        complete_up_to = complete_up_to.max(e.revision());
                    }
                }
                WatchResponseKind::Progress => {
                    complete_up_to = complete_up_to.max(resp.header_revision);
                }
                WatchResponseKind::Created | WatchResponseKind::Canceled { .. } => {}
            }
            marks.push((resp.received, complete_up_to));
        }
        out.push(WatchConstraint {
            key: watch.request.key.clone(),
            range_end: watch.request.range_end.clone(),
            filters: watch.request.filters,
            first,
            last,
            by_rev,
            sources,
            prev_kvs,
            marks,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// Preparation: revision claims, observed key versions, sanity bounds.

struct Prepared<'a> {
    items: &'a [Item],
    constraints: &'a [WatchConstraint],
    /// Revision → the item that certainly produced it.
    reserved: BTreeMap<i64, usize>,
    max_observed: i64,
    /// Revision → (key, its version written at that revision; `None` = deleted), as
    /// responses show them.
    hints: BTreeMap<i64, Vec<(Bytes, Option<KeyValue>, Source)>>,
    /// Per item: the revision it must make if it takes effect (weakened writes, and
    /// indeterminate writes whose value a response shows).
    pins: Vec<Option<i64>>,
    /// Key → the versions responses show for it, by revision.
    key_hints: BTreeMap<Bytes, Vec<(i64, Option<KeyValue>)>>,
    /// Key → revisions at which an acknowledged write certainly put it.
    known_puts: BTreeMap<Bytes, Vec<i64>>,
    /// Lease → indeterminate writes that attach it.
    indet_lease_refs: BTreeMap<i64, Vec<usize>>,
    /// Per item: its class among interchangeable indeterminate writes (same request but
    /// for values no response shows), if it has one.
    classes: Vec<Option<usize>>,
    /// Unclaimed revisions up to each revision (index = revision).
    gaps_upto: Vec<i64>,
    lease_refs: BTreeMap<i64, Vec<usize>>,
    compact_refs: Vec<usize>,
}

/// Every key version a response shows.
fn kvs_in_response(response: &Response) -> Vec<&KeyValue> {
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

fn leases_of(request: &Request) -> Vec<i64> {
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

fn depends_on_compaction(request: &Request) -> bool {
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

fn prepare<'a>(
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
fn without_values(request: &Request) -> Request {
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
fn certain_puts(request: &Request, expect: &Expect) -> Vec<Bytes> {
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
fn order_key(item: &Item) -> Option<(i64, u8)> {
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
fn revision_order(items: &[Item]) -> Result<(), Box<LinearizabilityFailure>> {
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

fn describe_version(v: Option<&KeyValue>) -> String {
    match v {
        Some(kv) => kv.to_string(),
        None => "deleted".to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// The search.

enum Outcome2 {
    Linearizable(Linearization),
    Failed(Box<LinearizabilityFailure>),
    Inconclusive(u64),
}

fn search(items: &[Item], constraints: &[WatchConstraint], budget: u64) -> Outcome2 {
    let prepared = match prepare(items, constraints) {
        Ok(p) => p,
        Err(f) => return Outcome2::Failed(f),
    };
    Search::new(&prepared, budget).run()
}

struct Stuck {
    placed: usize,
    revision: i64,
    reason: String,
    involved: Vec<Source>,
}

struct Frame {
    candidates: Vec<usize>,
    next: usize,
    forced: bool,
    applied: Option<(usize, Undo)>,
}

struct Search<'p> {
    p: &'p Prepared<'p>,
    model: KvModel,
    done: Vec<bool>,
    set_hash: u64,
    /// Determinate items not yet linearized, by completion time.
    pending: BTreeSet<(Time, usize)>,
    /// Determinate items with a revision, not yet linearized, by the last revision at which
    /// they can take effect.
    required: BTreeSet<(i64, usize)>,
    /// Revision → determinate items that can take effect at it.
    buckets: Vec<Vec<usize>>,
    /// Determinate items without a revision (store errors), by invocation.
    free: BTreeSet<(Time, usize)>,
    indet_kv: BTreeSet<(Time, usize)>,
    /// Weakened writes by the revision they would make.
    pinned: BTreeSet<(i64, usize)>,
    indet_other: BTreeSet<(Time, usize)>,
    memo: HashSet<(u64, u64)>,
    placed: usize,
    steps: u64,
    budget: u64,
    deepest: Option<Stuck>,
}

fn item_hash(i: usize) -> u64 {
    splitmix(splitmix(i as u64 ^ 0x5eed_1234))
}

impl<'p> Search<'p> {
    fn new(p: &'p Prepared<'p>, budget: u64) -> Self {
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
    fn set_membership(&mut self, i: usize, present: bool) {
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

    fn mark(&mut self, i: usize, done: bool) {
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

    fn bound(&self) -> Option<Time> {
        self.pending.first().map(|&(t, _)| t)
    }

    fn is_gap(&self, rev: i64) -> bool {
        rev <= self.p.max_observed && !self.p.reserved.contains_key(&rev)
    }

    fn run(mut self) -> Outcome2 {
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
    fn frame(&mut self) -> Option<Frame> {
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
    fn relevant(&self, i: usize, bound: Time, gap: bool) -> bool {
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
    fn compaction_needed(&self, bound: Time) -> bool {
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
    fn lease_needed(&self, id: i64, bound: Time, exists: bool) -> bool {
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
    fn pure_matches(&mut self, i: usize) -> bool {
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

    fn try_place(&mut self, i: usize, forced: bool) -> Option<Undo> {
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
    fn revision_allowed(&self, i: usize) -> bool {
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
    fn next_shown(&self, key: &[u8], rev: i64) -> Option<(i64, &KeyValue)> {
        self.next_put_shown(key, rev)
            .filter(|(_, kv)| kv.create_revision <= rev)
    }

    /// The next version of `key` a response shows after revision `rev`, if it is a put.
    fn next_put_shown(&self, key: &[u8], rev: i64) -> Option<(i64, &KeyValue)> {
        let shown = self.p.key_hints.get(key)?;
        let next = shown.partition_point(|(r, _)| *r <= rev);
        match shown.get(next) {
            Some((m, Some(kv))) => Some((*m, kv)),
            _ => None,
        }
    }

    /// Puts of `key` certain in `(rev, m]` given that a response shows its version written
    /// at `m`: the acknowledged ones before `m`, and the one at `m`.
    fn certain_puts_until(&self, key: &[u8], rev: i64, m: i64) -> i64 {
        self.known_puts_between(key, rev, m - 1) + 1
    }

    /// Acknowledged puts of `key` in revisions `(after, until]`.
    fn known_puts_between(&self, key: &[u8], after: i64, until: i64) -> i64 {
        self.p.known_puts.get(key).map_or(0, |revs| {
            (revs.partition_point(|r| *r <= until) - revs.partition_point(|r| *r <= after)) as i64
        })
    }

    /// Version accounting against what responses show later: if key k is later shown at
    /// (create c, version n) with c at or before this revision, then k lives on from here
    /// in the same incarnation (so it cannot be deleted now, and a put now keeps create c),
    /// and a put now plus the acknowledged puts until then cannot exceed version n.
    fn versions_fit(&self, rev: i64) -> bool {
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
    fn must_put(&self, g: i64) -> Option<Vec<Bytes>> {
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
    fn demand(&self, i: usize) -> usize {
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

    fn success(self, stack: &[Frame]) -> Outcome2 {
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

    fn failure(self) -> Outcome2 {
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

    /// Records why the search is stuck here, if this is the furthest point so far.
    fn note_stuck(&mut self) {
        if self
            .deepest
            .as_ref()
            .is_some_and(|d| d.placed >= self.placed)
        {
            return;
        }
        let rev = self.model.revision();
        let Some(bound) = self.bound() else { return };
        let dead = self
            .required
            .first()
            .filter(|&&(h, _)| h < rev)
            .map(|&(_, i)| i);
        // The write that made the next revision, if known, is the one that could not go on.
        let next_writer = self
            .p
            .reserved
            .get(&(rev + 1))
            .copied()
            .filter(|&j| !self.done[j] && self.p.items[j].invoke <= bound);
        let blocking = dead
            .or(next_writer)
            .unwrap_or_else(|| self.pending.first().map_or(0, |&(_, i)| i));
        let reason = self.explain(blocking, bound);
        self.deepest = Some(Stuck {
            placed: self.placed,
            revision: rev,
            reason,
            involved: vec![self.p.items[blocking].source],
        });
    }

    fn explain(&mut self, i: usize, bound: Time) -> String {
        let rev = self.model.revision();
        let p = self.p;
        let item = &p.items[i];
        let who = item.source;
        let (lo, hi, h) = match item.class {
            Class::Pure(Some(h)) => (h, h, h),
            Class::Write { lo, hi, claims } => (lo, hi, claims.unwrap_or(hi)),
            _ => (rev, rev, rev),
        };
        if hi < rev {
            if let Some(why) = self.read_mismatch_at(i, h) {
                return why;
            }
            return format!(
                "{who} reports revision {h}, but the store must already be at revision {rev} \
                 before it can take effect (writes that completed before it was invoked, or \
                 that other operations saw earlier, come first)"
            );
        }
        if lo > rev {
            let by = if bound == Time::MAX {
                "at all".to_string()
            } else {
                format!("by {}", crate::history::fmt_time(bound))
            };
            return format!(
                "{who} reports revision {h}, but revision {} cannot be made {by}: {}",
                rev + 1,
                self.why_no_write(bound)
            );
        }
        match &item.body {
            Body::Request { request, expect } => {
                let recorded = match expect {
                    Expect::Ok(r) => r.to_string(),
                    Expect::Err(e) => format!("error: {e}"),
                    Expect::Unknown => "unknown".to_string(),
                };
                let why = self.why_not(i);
                format!("{who} ({request}) returned {recorded}, but {why}")
            }
            Body::ReadAt { range, result } => {
                let read_rev = if range.revision > 0 {
                    range.revision
                } else {
                    rev
                };
                let got = self
                    .model
                    .range(&range.key, &range.range_end, read_rev, range.limit);
                format!(
                    "{who} ({range}) returned {result} at revision {read_rev}, but the store \
                     had {got} then"
                )
            }
            Body::RevisionReached => format!("{who} shows revision {h}"),
        }
    }

    /// For a read passed over at its revision `h`: what the store had then, from the
    /// model's history, if that differs from what it returned.
    fn read_mismatch_at(&self, i: usize, h: i64) -> Option<String> {
        let item = &self.p.items[i];
        let who = item.source;
        let at = |r: &Range| if r.revision > 0 { r.revision } else { h };
        let range_at = |r: &Range| self.model.range(&r.key, &r.range_end, at(r), r.limit);
        match &item.body {
            Body::Request {
                request: Request::Range(r),
                expect: Expect::Ok(Response::Range { result, .. }),
            }
            | Body::ReadAt { range: r, result } => {
                let had = range_at(r);
                (had != *result).then(|| {
                    format!(
                        "{who} ({r}) returned {result} at revision {}, but the store had {had} \
                         then",
                        at(r)
                    )
                })
            }
            Body::Request {
                request: Request::Txn(t),
                expect:
                    Expect::Ok(Response::Txn {
                        succeeded, results, ..
                    }),
            } if t.is_read_only() => {
                let holds = t.compare.iter().all(|c| self.model.compare_at(c, h));
                if holds != *succeeded {
                    return Some(format!(
                        "{who} ({}) reports its compares {} at revision {h}, but they {} then",
                        item.request()?,
                        if *succeeded { "held" } else { "failed" },
                        if holds { "held" } else { "failed" }
                    ));
                }
                let ops = if holds { &t.success } else { &t.failure };
                ops.iter()
                    .zip(results)
                    .find_map(|(op, result)| match (op, result) {
                        (TxnOp::Range(r), TxnOpResult::Range(got)) if range_at(r) != *got => {
                            Some(format!(
                                "{who} ({}) returned {got} for {r} at revision {}, but the store \
                             had {} then",
                                item.request()?,
                                at(r),
                                range_at(r)
                            ))
                        }
                        _ => None,
                    })
            }
            _ => None,
        }
    }

    /// Why request item `i` cannot take effect in the current state.
    fn why_not(&mut self, i: usize) -> String {
        let p = self.p;
        let Body::Request { request, expect } = &p.items[i].body else {
            return "it does not fit".to_string();
        };
        let rev = self.model.revision();
        let mut undo = Undo::default();
        let result = self.model.apply_logged(request, &mut undo);
        let applied_rev = self.model.revision();
        let why = match (&result, expect) {
            (Ok(got), Expect::Ok(want)) if same_response(got, want) => {
                if applied_rev != rev && !self.revision_allowed(i) {
                    self.conflict_at(applied_rev, i)
                } else {
                    "its answer fits here, yet no order of the operations around it fits \
                     them all"
                        .to_string()
                }
            }
            (Err(got), Expect::Err(want)) if got == want => {
                "its answer fits here, yet no order of the operations around it fits them all"
                    .to_string()
            }
            (Ok(got), _) => format!("at revision {rev} the store answers {got}"),
            (Err(e), _) => format!("at revision {rev} the store answers error: {e}"),
        };
        self.model.undo(undo);
        why
    }

    /// Why no operation can make the next revision now.
    fn why_no_write(&mut self, bound: Time) -> String {
        let p = self.p;
        let next = self.model.revision() + 1;
        if let Some(&j) = p.reserved.get(&next) {
            let writer = &p.items[j];
            if writer.invoke > bound {
                return format!(
                    "{}, which made it, was invoked only at {}, after an operation that comes \
                     later had completed",
                    writer.source,
                    crate::history::fmt_time(writer.invoke)
                );
            }
            let why = self.why_not(j);
            return format!("{}, which made it, cannot: {why}", writer.source);
        }
        if next > p.max_observed {
            return format!("no response shows revision {next}");
        }
        let tried: Vec<String> = self
            .indet_kv
            .range(..=(bound, usize::MAX))
            .map(|&(_, j)| j)
            .chain(
                self.pinned
                    .range((next, 0)..=(next, usize::MAX))
                    .map(|&(_, j)| j),
            )
            .take(3)
            .map(|j| p.items[j].source.to_string())
            .collect();
        if tried.is_empty() {
            "no acknowledged write made it, and no write with an unknown outcome could have"
                .to_string()
        } else {
            format!(
                "no acknowledged write made it, and the writes with an unknown outcome that \
                 could have ({}{}) do not fit what other operations saw",
                tried.join(", "),
                if tried.len() == 3 { ", ..." } else { "" }
            )
        }
    }

    /// Why the write just applied by item `i` (making `rev`) is refused.
    fn conflict_at(&self, rev: i64, i: usize) -> String {
        if rev > self.p.max_observed {
            return format!("no response shows revision {rev}");
        }
        if let Some(&j) = self.p.reserved.get(&rev).filter(|&&j| j != i) {
            return format!("revision {rev} is {}'s write", self.p.items[j].source);
        }
        if let Some(hints) = self.p.hints.get(&rev) {
            for (key, want, source) in hints {
                let got = self.model.written_at(key, rev);
                if got.as_ref() != Some(want) {
                    return format!(
                        "{source} shows key {} at revision {rev} as {}, while this write makes \
                         it {}",
                        crate::history::fmt_bytes(key),
                        describe_version(want.as_ref()),
                        match got {
                            Some(v) => describe_version(v.as_ref()),
                            None => "unwritten".to_string(),
                        }
                    );
                }
            }
        }
        format!("its revision {rev} contradicts a watch's events")
    }
}

// ---------------------------------------------------------------------------------------
// Shrinking.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    /// Outcome unknown: may or may not have taken effect (see [`Item::weakened`]).
    Unknown,
    /// Deadline dropped (see [`Item::relaxed`]).
    Relax,
    Drop,
}

struct Kept {
    fates: Vec<Fate>,
}

impl Kept {
    fn items(&self, all: &[Item]) -> Vec<Item> {
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

    fn dropped(&self) -> usize {
        self.fates.iter().filter(|f| **f == Fate::Drop).count()
    }

    /// Lines for the items kept as they were, and for the other writes the kept items
    /// refer to (their value or revision appears in a kept response); and the number of
    /// writes kept but not listed.
    fn describe(&self, history: &History, all: &[Item]) -> (Vec<String>, usize) {
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
fn written(request: &Request) -> Vec<(Bytes, Bytes)> {
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

fn shrink_items(
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
