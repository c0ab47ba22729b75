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

use std::collections::BTreeSet;
use std::fmt;

use crate::history::{History, OpId, Outcome, Time, WatchIndex};
use crate::model::KvModel;

use super::Violation;

mod explain;
mod items;
mod prepare;
mod search;
mod shrink;

use items::*;
use prepare::*;
use search::*;
use shrink::*;

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
