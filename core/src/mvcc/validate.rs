//! The checks etcd's API layer makes before a request reaches Raft (`v3rpc/key.go`):
//! empty keys, `ignore_*` misuse, the number of txn operations, keys written twice in one
//! txn, and the request size. [`check_command`] runs them all with the configured limits;
//! the store re-runs the limit-free ones when applying, so a malformed entry that reached
//! the log is refused identically on every member and never corrupts the store.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::codec;
use super::error::Error;
use super::request::{
    Command, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024 + 512 * 1024;
/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Per-request limits, applied before proposing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }
}

/// Every check etcd makes before proposing, in etcd's order: the request's shape first,
/// then its encoded size.
pub fn check_command(command: &Command, limits: &Limits) -> Result<(), Error> {
    if let Command::Txn(txn) = command {
        check_txn_op_count(txn, limits.max_txn_ops)?;
    }
    check_structure(command)?;
    if codec::encoded_len(command) > limits.max_request_bytes as u64 {
        return Err(Error::RequestTooLarge);
    }
    Ok(())
}

/// A range request a client sends outside a txn.
pub fn check_range(request: &RangeRequest) -> Result<(), Error> {
    if request.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// The limit-free checks, also run when applying.
pub(crate) fn check_structure(command: &Command) -> Result<(), Error> {
    match command {
        Command::Put(put) => check_put(put),
        Command::DeleteRange(delete) => check_delete(delete),
        Command::Txn(txn) => check_txn_structure(txn),
        Command::Compaction(_)
        | Command::LeaseGrant(_)
        | Command::LeaseRevoke(_)
        | Command::LeaseCheckpoint(_)
        | Command::Alarm(_) => Ok(()),
    }
}

/// A txn's limit-free checks: empty keys, `ignore_*` misuse, keys written twice.
pub(crate) fn check_txn_structure(txn: &TxnRequest) -> Result<(), Error> {
    check_txn_shape(txn)?;
    check_intervals(&txn.success)?;
    check_intervals(&txn.failure)?;
    Ok(())
}

fn check_put(put: &PutRequest) -> Result<(), Error> {
    if put.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if put.ignore_value && !put.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if put.ignore_lease && put.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

fn check_delete(delete: &DeleteRangeRequest) -> Result<(), Error> {
    if delete.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// etcd counts `max(compares, success, failure)` against the limit, and a nested txn
/// against what its parent left over.
fn check_txn_op_count(txn: &TxnRequest, max_ops: usize) -> Result<(), Error> {
    let ops = txn
        .compare
        .len()
        .max(txn.success.len())
        .max(txn.failure.len());
    if ops > max_ops {
        return Err(Error::TooManyOps);
    }
    for op in txn.success.iter().chain(&txn.failure) {
        if let RequestOp::Txn(nested) = op {
            check_txn_op_count(nested, max_ops - ops)?;
        }
    }
    Ok(())
}

fn check_txn_shape(txn: &TxnRequest) -> Result<(), Error> {
    if txn.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(range) => check_range(range)?,
            RequestOp::Put(put) => check_put(put)?,
            RequestOp::DeleteRange(delete) => check_delete(delete)?,
            RequestOp::Txn(nested) => check_txn_shape(nested)?,
        }
    }
    Ok(())
}

/// A delete's key interval as etcd's `checkIntervals` sees it: a point, or the literal
/// `[key, range_end)`. A `range_end` of `"\0"` makes an interval that contains nothing
/// there (etcd's quirk), so a from-key delete and a put of a key in it may share a txn.
#[derive(Clone, Debug)]
struct DeleteInterval {
    key: Bytes,
    range_end: Bytes,
}

impl DeleteInterval {
    fn contains(&self, key: &Bytes) -> bool {
        if self.range_end.is_empty() {
            return self.key == key;
        }
        self.key <= key && key < &self.range_end
    }
}

fn any_contains(deletes: &[DeleteInterval], key: &Bytes) -> bool {
    deletes.iter().any(|d| d.contains(key))
}

/// etcd's rule that a txn writes each key once: within one branch list, no key is put
/// twice and no put falls inside a delete; a nested txn's success and failure may put the
/// same key (only one of them runs).
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Bytes>, Vec<DeleteInterval>), Error> {
    let mut deletes: Vec<DeleteInterval> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(DeleteInterval {
                key: d.key.clone(),
                range_end: d.range_end.clone(),
            }),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<Bytes> = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(nested) = op else { continue };
        let (puts_then, deletes_then) = check_intervals(&nested.success)?;
        let (puts_else, deletes_else) = check_intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || any_contains(&deletes, key) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            let clashes = puts.contains(key) && !puts_then.contains(key);
            if clashes || any_contains(&deletes, key) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        deletes.extend(deletes_then);
        deletes.extend(deletes_else);
    }
    for op in ops {
        let RequestOp::Put(put) = op else { continue };
        if puts.contains(&put.key) || any_contains(&deletes, &put.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, deletes))
}
