//! etcd's watch guarantees (as its API guarantees page and its robustness tests state
//! them), checked per watch.
//!
//! [`check_streams`] needs only the stream itself; [`check_against`] compares with the
//! ground truth, a linearization's [`KvModel`] (every revision's events).
//!
//! The revisions a watch *covers* run from its first expected revision (its start
//! revision; for a watch "from now", the `created` response's header revision + 1) to the
//! last revision it is known to be complete up to (its last event or progress
//! notification). Within them, the watch must have received exactly the history's events
//! in its range that its filters let through.

use std::collections::BTreeSet;
use std::fmt;

use crate::history::{
    fmt_bytes, EventKind, History, MemberId, Request, WatchIndex, WatchRecord, WatchRequest,
    WatchResponseKind,
};
use crate::model::{in_range, KvModel};

use super::Violation;

/// A watch guarantee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Guarantee {
    /// Only events in the watched range, of the kinds not filtered out.
    Filter,
    /// Event revisions never go back, and nothing arrives after a cancel.
    Ordered,
    /// No (revision, key) event twice.
    Unique,
    /// All events of one revision arrive in one response.
    Atomic,
    /// A progress notification at revision R: every event up to R was delivered; later
    /// events are above R, and notifications do not go back.
    Bookmarkable,
    /// No event is older than the start revision (a watch from a future revision waits for
    /// it; a watch from 0 starts after the revision it was created at).
    StartRevision,
    /// Every event of the covered revisions arrives, and each agrees with the history
    /// (key, value, create/mod revision, version, lease).
    Reliable,
    /// A watch from revision R starts with the first event at or after R.
    Resumable,
    /// `prev_kv` is the key's version before the event; absent unless asked for.
    PrevKv,
    /// A cancel with `compact_revision` only when a revision the watch still needed was
    /// compacted, at a revision some compaction asked for.
    Compaction,
}

impl Guarantee {
    fn describe(self) -> &'static str {
        match self {
            Guarantee::Filter => "only events in the watched range that the filters let through",
            Guarantee::Ordered => "events are ordered by revision and stop at a cancel",
            Guarantee::Unique => "an event never appears twice",
            Guarantee::Atomic => "all events of one revision arrive in one response",
            Guarantee::Bookmarkable => {
                "a progress notification at revision R means every event up to R was delivered"
            }
            Guarantee::StartRevision => "no event older than the revision the watch starts at",
            Guarantee::Reliable => {
                "no event of the covered revisions is missing and each agrees with the history"
            }
            Guarantee::Resumable => {
                "a watch from revision R starts with the first event at or after R"
            }
            Guarantee::PrevKv => "prev_kv is the key's previous version, and only when asked for",
            Guarantee::Compaction => {
                "cancelled for compaction only when a revision it needed was compacted"
            }
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A broken watch guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchFailure {
    pub guarantee: Guarantee,
    pub watch: WatchIndex,
    pub client: u64,
    pub member: Option<MemberId>,
    pub request: WatchRequest,
    pub detail: String,
}

impl fmt::Display for WatchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "watch #{} (client {}, member {}, {}) broke {}: {}\n  {}",
            self.watch,
            self.client,
            self.member
                .map_or_else(|| "?".to_string(), |m| m.to_string()),
            self.request,
            self.guarantee,
            self.guarantee.describe(),
            self.detail
        )
    }
}

fn fail(w: WatchIndex, watch: &WatchRecord, guarantee: Guarantee, detail: String) -> Violation {
    Violation::Watch(Box::new(WatchFailure {
        guarantee,
        watch: w,
        client: watch.client,
        member: watch.member,
        request: watch.request.clone(),
        detail,
    }))
}

/// The revisions a watch covers, `[first, last]`, or `None` if it covers none yet.
pub fn covered_revisions(watch: &WatchRecord) -> Option<(i64, i64)> {
    let first = first_expected(watch)?;
    let mut last = 0;
    for resp in &watch.responses {
        match &resp.kind {
            WatchResponseKind::Events(events) => {
                if let Some(e) = events.last() {
                    last = last.max(e.revision());
                }
            }
            WatchResponseKind::Progress => last = last.max(resp.header_revision),
            WatchResponseKind::Created | WatchResponseKind::Canceled { .. } => {}
        }
    }
    (last >= first).then_some((first, last))
}

fn first_expected(watch: &WatchRecord) -> Option<i64> {
    if watch.request.start_revision > 0 {
        return Some(watch.request.start_revision);
    }
    let first = watch.responses.first()?;
    match &first.kind {
        WatchResponseKind::Created | WatchResponseKind::Progress => Some(first.header_revision + 1),
        WatchResponseKind::Events(events) => events.first().map(|e| e.revision()),
        WatchResponseKind::Canceled { .. } => None,
    }
}

/// The guarantees a stream shows on its own: Filter, Ordered, Unique, Atomic,
/// Bookmarkable, StartRevision, and `prev_kv` only when asked for.
pub fn check_streams(history: &History) -> Result<(), Violation> {
    for (w, watch) in history.watches.iter().enumerate() {
        check_stream(w, watch)?;
    }
    Ok(())
}

fn check_stream(w: WatchIndex, watch: &WatchRecord) -> Result<(), Violation> {
    let req = &watch.request;
    let fail = |g: Guarantee, detail: String| Err(fail(w, watch, g, detail));
    let created_at = match watch
        .responses
        .first()
        .map(|r| (&r.kind, r.header_revision))
    {
        Some((WatchResponseKind::Created, h)) => Some(h),
        _ => None,
    };
    let mut last_event = 0i64;
    let mut last_progress = 0i64;
    let mut seen: BTreeSet<(i64, &[u8])> = BTreeSet::new();
    let mut canceled = None;
    for (r, resp) in watch.responses.iter().enumerate() {
        let at = format!("response #{r} {resp}");
        if let Some(c) = canceled {
            if !matches!(resp.kind, WatchResponseKind::Created) {
                return fail(
                    Guarantee::Ordered,
                    format!("response #{r} arrived after the cancel in response #{c}: {at}"),
                );
            }
        }
        match &resp.kind {
            WatchResponseKind::Created => {}
            WatchResponseKind::Canceled { .. } => canceled = Some(r),
            WatchResponseKind::Progress => {
                if resp.header_revision < last_progress {
                    return fail(
                        Guarantee::Bookmarkable,
                        format!(
                            "progress notification at revision {} after one at {last_progress}: {at}",
                            resp.header_revision
                        ),
                    );
                }
                if resp.header_revision < last_event {
                    return fail(
                        Guarantee::Bookmarkable,
                        format!(
                            "progress notification at revision {} after an event at revision \
                             {last_event}: {at}",
                            resp.header_revision
                        ),
                    );
                }
                last_progress = resp.header_revision;
            }
            WatchResponseKind::Events(events) => {
                if let Some(first) = events.first() {
                    if first.revision() == last_event {
                        return fail(
                            Guarantee::Atomic,
                            format!(
                                "revision {last_event} is split: it ended the previous event \
                                 response and starts {at}"
                            ),
                        );
                    }
                }
                for e in events {
                    let rev = e.revision();
                    let wanted = match e.kind {
                        EventKind::Put => !req.filters.no_put,
                        EventKind::Delete => !req.filters.no_delete,
                    };
                    if !wanted || !in_range(&e.kv.key, &req.key, &req.range_end) {
                        return fail(Guarantee::Filter, format!("event {e} in {at}"));
                    }
                    if e.prev_kv.is_some() && !req.prev_kv {
                        return fail(
                            Guarantee::PrevKv,
                            format!("prev_kv not asked for but sent: event {e} in {at}"),
                        );
                    }
                    if req.start_revision > 0 && rev < req.start_revision {
                        return fail(
                            Guarantee::StartRevision,
                            format!(
                                "event at revision {rev} for a watch from revision {}: {at}",
                                req.start_revision
                            ),
                        );
                    }
                    if let (true, Some(h)) = (req.start_revision <= 0, created_at) {
                        if rev <= h {
                            return fail(
                                Guarantee::StartRevision,
                                format!(
                                    "a watch from now (created at revision {h}) received an \
                                     event at revision {rev}: {at}"
                                ),
                            );
                        }
                    }
                    if rev <= last_progress {
                        return fail(
                            Guarantee::Bookmarkable,
                            format!(
                                "event at revision {rev} after a progress notification at \
                                 revision {last_progress}: {at}"
                            ),
                        );
                    }
                    if rev < last_event {
                        return fail(
                            Guarantee::Ordered,
                            format!("event at revision {rev} after revision {last_event}: {at}"),
                        );
                    }
                    if !seen.insert((rev, e.kv.key.as_ref())) {
                        return fail(
                            Guarantee::Unique,
                            format!(
                                "key {} at revision {rev} delivered twice (again in {at})",
                                fmt_bytes(&e.kv.key)
                            ),
                        );
                    }
                    last_event = rev;
                }
            }
        }
    }
    Ok(())
}

/// The highest revision any compaction in the history asked for (whatever its outcome).
fn max_compaction(history: &History) -> i64 {
    history
        .operations
        .iter()
        .filter_map(|op| match op.request {
            Request::Compact { revision } => Some(revision),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The guarantees that need the history: Reliable, Resumable, PrevKv, Compaction.
pub fn check_against(history: &History, truth: &KvModel) -> Result<(), Violation> {
    let compaction = max_compaction(history);
    for (w, watch) in history.watches.iter().enumerate() {
        check_watch_against(w, watch, truth, compaction)?;
    }
    Ok(())
}

fn check_watch_against(
    w: WatchIndex,
    watch: &WatchRecord,
    truth: &KvModel,
    compaction: i64,
) -> Result<(), Violation> {
    let req = &watch.request;
    let fail = |g: Guarantee, detail: String| Err(fail(w, watch, g, detail));
    let got: Vec<(usize, &crate::history::Event)> = watch
        .responses
        .iter()
        .enumerate()
        .flat_map(|(r, resp)| match &resp.kind {
            WatchResponseKind::Events(events) => events.iter().map(|e| (r, e)).collect(),
            _ => Vec::new(),
        })
        .collect();

    // prev_kv: the key's version at the revision before the event.
    if req.prev_kv {
        for &(r, e) in &got {
            let rev = e.revision();
            let want = truth.get(&e.kv.key, rev - 1);
            let ok = match (&e.prev_kv, &want) {
                (Some(p), Some(w)) => p == w,
                (Some(_), None) => false,
                (None, None) => true,
                // etcd reads prev_kv at rev - 1 and leaves it out if that was compacted.
                (None, Some(_)) => rev - 1 < compaction,
            };
            if !ok {
                return fail(
                    Guarantee::PrevKv,
                    format!(
                        "event {e} in response #{r}: the history has {} before revision {rev}",
                        want.map_or_else(|| "no such key".to_string(), |kv| kv.to_string())
                    ),
                );
            }
        }
    }

    // Cancelled for compaction: only if a revision it still needed was compacted.
    let mut next_needed = first_expected(watch).unwrap_or(req.start_revision.max(1));
    for (r, resp) in watch.responses.iter().enumerate() {
        match &resp.kind {
            WatchResponseKind::Events(events) => {
                if let Some(e) = events.last() {
                    next_needed = next_needed.max(e.revision() + 1);
                }
            }
            WatchResponseKind::Progress => next_needed = next_needed.max(resp.header_revision + 1),
            WatchResponseKind::Canceled {
                compact_revision, ..
            } if *compact_revision > 0 => {
                if next_needed >= *compact_revision {
                    return fail(
                        Guarantee::Compaction,
                        format!(
                            "response #{r} {resp}: the watch needed revisions from \
                             {next_needed}, which compaction at {compact_revision} keeps"
                        ),
                    );
                }
                if *compact_revision > compaction {
                    return fail(
                        Guarantee::Compaction,
                        format!(
                            "response #{r} {resp}: no compaction asked for revision \
                             {compact_revision} (the highest was {compaction})"
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    // Reliable and Resumable: exactly the history's events over the covered revisions.
    let Some((first, last)) = covered_revisions(watch) else {
        return Ok(());
    };
    if last > truth.revision() {
        return fail(
            Guarantee::Reliable,
            format!(
                "the watch reached revision {last}, but the history's last revision is {}",
                truth.revision()
            ),
        );
    }
    let want: Vec<&crate::history::Event> = (first..=last)
        .flat_map(|rev| truth.events(rev))
        .filter(|e| {
            in_range(&e.kv.key, &req.key, &req.range_end)
                && match e.kind {
                    EventKind::Put => !req.filters.no_put,
                    EventKind::Delete => !req.filters.no_delete,
                }
        })
        .collect();
    let same =
        |a: &crate::history::Event, b: &crate::history::Event| a.kind == b.kind && a.kv == b.kv;
    for i in 0..want.len().max(got.len()) {
        match (want.get(i), got.get(i)) {
            (Some(want), Some(&(r, got))) if same(want, got) => {
                let _ = r;
            }
            (Some(want), got) => {
                let same_event = got.is_some_and(|&(_, g)| {
                    g.revision() == want.revision() && g.kv.key == want.kv.key
                });
                let resumable = i == 0 && req.start_revision > 0 && !same_event;
                let g = if resumable {
                    Guarantee::Resumable
                } else {
                    Guarantee::Reliable
                };
                let detail = match got {
                    Some(&(r, got))
                        if got.revision() == want.revision() && got.kv.key == want.kv.key =>
                    {
                        format!("event {got} in response #{r} disagrees with the history's {want}")
                    }
                    Some(&(r, got))
                        if got.revision() > want.revision()
                            || (got.revision() == want.revision() && got.kv.key > want.kv.key) =>
                    {
                        format!(
                            "missing the history's event {want} (covered revisions {first}..={last}); \
                             response #{r} has {got} instead"
                        )
                    }
                    Some(&(r, got)) => format!(
                        "event {got} in response #{r} is not in the history (expected {want} next)"
                    ),
                    None => format!(
                        "missing the history's event {want} (covered revisions {first}..={last})"
                    ),
                };
                return fail(g, detail);
            }
            (None, Some(&(r, got))) => {
                return fail(
                    Guarantee::Reliable,
                    format!("event {got} in response #{r} is not in the history"),
                );
            }
            (None, None) => {}
        }
    }
    Ok(())
}
