//! The checkers that judge a simulation run, each returning `Result<_, Violation>`; a
//! failing run prints the [`Violation`] after its seed and replay command.
//!
//! [`check_all`] runs them in this order and stops at the first violation:
//! 1. watch streams on their own ([`watch::check_streams`]): ordered, unique, atomic,
//!    bookmarkable, filters, start revision, `prev_kv` only when asked, nothing after a
//!    cancel;
//! 2. linearizability of the KV operations ([`linearizability`]) together with the
//!    serializable reads and watch responses as observations, so that the linearization
//!    found agrees with them (and failures shrink fast); if that fails, the operations
//!    alone decide the blame: failing again is a linearizability violation, passing means
//!    an observation is at fault;
//! 3. against that linearization as ground truth: serializable reads
//!    ([`serializable::check`]) and watches ([`watch::check_against`]: reliable,
//!    resumable, `prev_kv`, compaction cancels, agreement with the history);
//! 4. durability of acknowledged writes in the final read-back ([`durability::check`]);
//! 5. across members ([`cluster`]): equal `HashKV` at a common revision, revisions that
//!    never go down.

pub mod cluster;
pub mod durability;
pub mod linearizability;
pub mod serializable;
pub mod watch;

use std::fmt;

use crate::history::History;

pub use cluster::HashMismatch;
pub use durability::DurabilityFailure;
pub use linearizability::{LinearizabilityFailure, Linearization, Source};
pub use serializable::SerializableFailure;
pub use watch::{Guarantee, WatchFailure};

/// What a checker found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The recorded history is malformed (a recorder bug, not a store bug).
    InvalidHistory {
        reason: String,
    },
    /// A search ran out of its step budget: neither proven nor refuted.
    Inconclusive {
        checker: &'static str,
        steps: u64,
    },
    Linearizability(Box<LinearizabilityFailure>),
    /// The operations are linearizable, but no linearization agrees with the serializable
    /// reads and watch responses, and the per-item checks did not single one out.
    Observations(Box<LinearizabilityFailure>),
    Serializable(Box<SerializableFailure>),
    Watch(Box<WatchFailure>),
    Durability(Box<DurabilityFailure>),
    HashKv(Box<HashMismatch>),
    /// A member's revision (or compact revision) went down.
    RevisionDecreased {
        member: crate::history::MemberId,
        what: &'static str,
        earlier: String,
        later: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::InvalidHistory { reason } => write!(f, "invalid history: {reason}"),
            Violation::Inconclusive { checker, steps } => write!(
                f,
                "{checker} check inconclusive: gave up after {steps} steps (raise the budget or \
                 record fewer indeterminate operations)"
            ),
            Violation::Linearizability(l) => write!(f, "{l}"),
            Violation::Observations(l) => write!(
                f,
                "the operations are linearizable, but no linearization agrees with the \
                 serializable reads and watch responses:\n{l}"
            ),
            Violation::Serializable(s) => write!(f, "{s}"),
            Violation::Watch(w) => write!(f, "{w}"),
            Violation::Durability(d) => write!(f, "{d}"),
            Violation::HashKv(h) => write!(f, "{h}"),
            Violation::RevisionDecreased {
                member,
                what,
                earlier,
                later,
            } => write!(
                f,
                "member {member}'s {what} went down:\n  earlier: {earlier}\n  later:   {later}"
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// Options for [`check_all`].
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub linearizability: linearizability::Options,
}

/// What [`check_all`] checked.
#[derive(Clone, Debug)]
pub struct Report {
    pub operations: usize,
    pub watches: usize,
    /// Steps of the linearizability search that produced the ground truth.
    pub steps: u64,
    /// The ground truth's last revision.
    pub revision: i64,
    /// The ground truth: every revision's state and events.
    pub truth: crate::model::KvModel,
}

/// The history as observed until `t`: watch responses received later, and serializable
/// reads completed later, are left out (the operation numbers stay the same).
fn observed_until(history: &History, t: crate::history::Time) -> History {
    let mut h = history.clone();
    for watch in &mut h.watches {
        watch.responses.retain(|r| r.received <= t);
    }
    for op in &mut h.operations {
        if op.request.is_serializable() && op.complete.is_some_and(|c| c > t) {
            op.outcome = crate::history::Outcome::Failed("observed later".to_string());
        }
    }
    h
}

/// Runs every checker (see the module docs).
pub fn check_all(history: &History, options: &CheckOptions) -> Result<Report, Violation> {
    watch::check_streams(history)?;
    let lin_options = &options.linearizability;
    let linearization = match linearizability::check_with_observations(history, lin_options) {
        Ok(l) => l,
        Err(Violation::Linearizability(mut observed)) if observed.fails_without_observations => {
            observed.note = Some(
                "the operations alone, without the watch events and serializable reads, are not \
                 linearizable either"
                    .to_string(),
            );
            return Err(Violation::Linearizability(observed));
        }
        Err(Violation::Linearizability(mut observed)) => {
            // Who is at fault: the operations, or the watch events and serializable reads?
            // The operations alone take a bounded search (a failing one must exhaust every
            // choice for the revisions nobody observed).
            let plain_options = linearizability::Options {
                max_steps: lin_options
                    .max_steps
                    .min(observed.steps.saturating_mul(20).saturating_add(200_000)),
                shrink: false,
                ..lin_options.clone()
            };
            match linearizability::check(history, &plain_options) {
                Ok(_) => {
                    // Find the first observation no linearization agrees with, and judge the
                    // observations made until then against a linearization that agrees
                    // with all earlier ones: the specific check then names the culprit.
                    let (t, truth, failure) =
                        linearizability::first_disagreement(history, lin_options)?;
                    let until = observed_until(history, t);
                    serializable::check(&until, &truth.truth)?;
                    watch::check_against(&until, &truth.truth)?;
                    return Err(Violation::Observations(failure));
                }
                Err(Violation::Linearizability(_)) => {
                    observed.note = Some(
                        "the operations alone, without the watch events and serializable reads, \
                         are not linearizable either"
                            .to_string(),
                    );
                }
                Err(Violation::Inconclusive { steps, .. }) => {
                    observed.note = Some(format!(
                        "with watch events and serializable reads as evidence; the operations \
                         alone could not be checked within {steps} steps, so that evidence may \
                         be at fault instead"
                    ));
                }
                Err(other) => return Err(other),
            }
            return Err(Violation::Linearizability(observed));
        }
        Err(other) => return Err(other),
    };
    let truth = linearization.truth;
    serializable::check(history, &truth)?;
    watch::check_against(history, &truth)?;
    durability::check(history)?;
    cluster::check_hashes(&history.hashes)?;
    cluster::check_member_revisions(history)?;
    Ok(Report {
        operations: history.operations.len(),
        watches: history.watches.len(),
        steps: linearization.steps,
        revision: truth.revision(),
        truth,
    })
}
