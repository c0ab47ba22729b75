//! Why a history is not linearizable, in words: where the search got furthest, which
//! operation could not be placed there, and what it conflicts with.

use crate::history::{Range, Request, Response, Time, TxnOp, TxnOpResult};
use crate::model::{same_response, Undo};

use super::*;

impl<'p> Search<'p> {
    /// Records why the search is stuck here, if this is the furthest point so far.
    pub(super) fn note_stuck(&mut self) {
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

    pub(super) fn explain(&mut self, i: usize, bound: Time) -> String {
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
    pub(super) fn read_mismatch_at(&self, i: usize, h: i64) -> Option<String> {
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
    pub(super) fn why_not(&mut self, i: usize) -> String {
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
    pub(super) fn why_no_write(&mut self, bound: Time) -> String {
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
    pub(super) fn conflict_at(&self, rev: i64, i: usize) -> String {
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
