//! Items: what the search places — one per operation of the history, with what its response
//! reveals (its class, expected answer, revision, deadline), and the watch constraints.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::history::{
    EventKind, History, KeyValue, OpId, Outcome, Range, RangeResult, Request, Response, StoreError,
    Time, TxnOp, TxnOpResult, WatchFilters, WatchResponseKind,
};
use crate::model::resolve;

use super::super::Violation;
use super::*;

#[derive(Clone, Debug)]
pub(super) struct Item {
    pub(super) source: Source,
    pub(super) invoke: Time,
    /// `None`: indeterminate (no deadline, may never take effect).
    pub(super) ret: Option<Time>,
    pub(super) body: Body,
    pub(super) class: Class,
    /// An indeterminate write weakened from an acknowledged one: if it took effect, it
    /// made this revision.
    pub(super) pin: Option<i64>,
}

#[derive(Clone, Debug)]
pub(super) enum Body {
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
pub(super) enum Expect {
    Ok(Response),
    Err(StoreError),
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
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
    pub(super) fn determinate(&self) -> bool {
        self.ret.is_some()
    }

    pub(super) fn request(&self) -> Option<&Request> {
        match &self.body {
            Body::Request { request, .. } => Some(request),
            _ => None,
        }
    }

    /// The item with its deadline dropped: it still happened, at the revision its response
    /// says, but at any time after its invocation. `None` for items without a revision.
    pub(super) fn relaxed(&self) -> Option<Item> {
        match self.class {
            Class::Write { .. } | Class::Pure(Some(_)) if self.ret.is_some() => Some(Item {
                ret: Some(Time::MAX),
                ..self.clone()
            }),
            _ => None,
        }
    }

    /// The item weakened to "outcome unknown" (a write) or `None` (dropped: a read).
    pub(super) fn weakened(&self) -> Option<Item> {
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

pub(super) fn indeterminate_class(request: &Request) -> Option<Class> {
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

pub(super) fn invalid(id: OpId, why: &str) -> Violation {
    Violation::InvalidHistory {
        reason: format!("operation #{id}: {why}"),
    }
}

/// The search's items: the operations, and with `observe_until`, the observations
/// (serializable reads, watch responses) made by then.
pub(super) fn items(
    history: &History,
    observe_until: Option<Time>,
) -> Result<Vec<Item>, Violation> {
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
pub(super) fn classify(request: &Request, response: &Response) -> Option<Class> {
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
pub(super) struct WatchConstraint {
    pub(super) key: Bytes,
    pub(super) range_end: Bytes,
    pub(super) filters: WatchFilters,
    pub(super) first: i64,
    pub(super) last: i64,
    pub(super) by_rev: BTreeMap<i64, Vec<(EventKind, KeyValue)>>,
    /// Revision → the response that carried its events.
    pub(super) sources: BTreeMap<i64, Source>,
    /// The `prev_kv`s the events carried: (event revision, prev_kv, response).
    pub(super) prev_kvs: Vec<(i64, KeyValue, Source)>,
    /// Per response, in stream order: when it was received, and the last revision the
    /// watch was complete up to after it.
    pub(super) marks: Vec<(Time, i64)>,
}

impl WatchConstraint {
    /// What the watch had said by time `t` (responses received later are left out).
    pub(super) fn cut(&self, t: Time) -> Option<WatchConstraint> {
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

pub(super) fn cut_all(constraints: &[WatchConstraint], t: Time) -> Vec<WatchConstraint> {
    constraints.iter().filter_map(|c| c.cut(t)).collect()
}

pub(super) fn watch_constraints(history: &History) -> Vec<WatchConstraint> {
    let mut out = Vec::new();
    for (w, watch) in history.watches.iter().enumerate() {
        let Some((first, last)) = super::super::watch::covered_revisions(watch) else {
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
