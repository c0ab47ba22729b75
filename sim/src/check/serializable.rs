//! Serializable reads: served by one member from its own state without ReadIndex, so they
//! may be stale, but what they return must be a state the store really had.
//!
//! etcd answers a serializable range from one read transaction: the data and the header
//! revision come from the same state. So a serializable read with header revision `h` must
//! return exactly the ground truth's state at `h` (or at its explicit `revision`), and `h`
//! must be a revision the cluster reached. Stale (`h` older than the latest revision) is
//! fine; a state that never existed, or data a member lost, is not. This is stricter than
//! "equals some state at or before `h`", and it is what clients rely on when they watch
//! from a read's header revision + 1.
//!
//! Serializable read-only txns are checked the same way: their compares evaluated at `h`
//! must pick the branch they report, and each range must match. Reads that failed or timed
//! out are not checked.

use std::fmt;

use crate::history::{
    History, OpId, Outcome, Range, RangeResult, Request, Response, TxnOp, TxnOpResult,
};
use crate::model::KvModel;

use super::Violation;

/// A serializable read that returned a state the store never had at its revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerializableFailure {
    pub op: OpId,
    /// The operation, for humans.
    pub operation: String,
    pub detail: String,
}

impl fmt::Display for SerializableFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "serializable read returned a state that did not exist: op #{}: {}\n  {}",
            self.op, self.operation, self.detail
        )
    }
}

/// Checks every successful serializable read against the ground truth.
pub fn check(history: &History, truth: &KvModel) -> Result<(), Violation> {
    for (id, op) in history.operations.iter().enumerate() {
        if !op.request.is_serializable() {
            continue;
        }
        let Outcome::Ok(response) = &op.outcome else {
            continue;
        };
        if let Err(detail) = check_read(&op.request, response, truth) {
            return Err(Violation::Serializable(Box::new(SerializableFailure {
                op: id,
                operation: op.to_string(),
                detail,
            })));
        }
    }
    Ok(())
}

fn check_read(request: &Request, response: &Response, truth: &KvModel) -> Result<(), String> {
    let h = response.revision();
    if h < 1 || h > truth.revision() {
        return Err(format!(
            "header revision {h} is outside the history's revisions 1..={}",
            truth.revision()
        ));
    }
    match (request, response) {
        (Request::Range(range), Response::Range { result, .. }) => {
            check_range(range, result, h, truth)
        }
        (
            Request::Txn(txn),
            Response::Txn {
                succeeded, results, ..
            },
        ) => {
            let holds = txn.compare.iter().all(|c| truth.compare_at(c, h));
            if holds != *succeeded {
                return Err(format!(
                    "at revision {h} the compares {}, but the txn reports {}",
                    if holds { "hold" } else { "fail" },
                    if *succeeded { "success" } else { "failure" }
                ));
            }
            let ops = if holds { &txn.success } else { &txn.failure };
            if ops.len() != results.len() {
                return Err(format!(
                    "{} results for {} operations",
                    results.len(),
                    ops.len()
                ));
            }
            for (op, result) in ops.iter().zip(results) {
                match (op, result) {
                    (TxnOp::Range(range), TxnOpResult::Range(result)) => {
                        check_range(range, result, h, truth)?
                    }
                    _ => return Err("a result does not fit its operation".to_string()),
                }
            }
            Ok(())
        }
        _ => Err("the response does not fit the request".to_string()),
    }
}

fn check_range(range: &Range, result: &RangeResult, h: i64, truth: &KvModel) -> Result<(), String> {
    let rev = if range.revision > 0 {
        range.revision
    } else {
        h
    };
    if rev > h {
        return Err(format!(
            "asked for revision {rev} but answered at header revision {h}"
        ));
    }
    let want = truth.range(&range.key, &range.range_end, rev, range.limit);
    if want == *result {
        return Ok(());
    }
    // Help the reader: which revision, if any, did it return?
    let matching = (1..=truth.revision())
        .rev()
        .take(10_000)
        .find(|&r| truth.range(&range.key, &range.range_end, r, range.limit) == *result);
    let hint = match matching {
        Some(r) => format!(" (it is the state at revision {r})"),
        None => " (no revision of the history had that state)".to_string(),
    };
    Err(format!(
        "{range} at revision {rev} returned {result}, but the history has {want}{hint}"
    ))
}
