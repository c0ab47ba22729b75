//! Transactions, as etcd runs them (`txn.go`): every compare along the chosen path is
//! evaluated first against the state before the txn; then the puts on that path are
//! checked (lease exists, `ignore_*` key exists), then the ranges' revisions; only then do
//! the operations run, in order, all at one new revision. Nothing is written unless every
//! check passed, so a failing txn changes nothing.

use std::cmp::Ordering;

use super::error::Error;
use super::key_index::Entry;
use super::quota;
use super::request::{
    Compare, CompareResult, CompareTarget, Event, RequestOp, ResponseHeader, ResponseOp,
    TargetUnion, TxnRequest, TxnResponse,
};
use super::revision::KeyRange;
use super::store::Store;
use super::validate::check_txn_structure;
use super::write::Writer;

/// Which branch each txn on the path takes: this txn's, then its nested txns' (those in
/// the chosen branch, in order).
#[derive(Debug)]
struct TxnPath {
    succeeded: bool,
    nested: Vec<TxnPath>,
}

fn branch(txn: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &txn.success
    } else {
        &txn.failure
    }
}

impl Store {
    pub(crate) fn apply_txn(
        &mut self,
        txn: &TxnRequest,
    ) -> Result<(TxnResponse, Vec<Event>), Error> {
        self.check_no_space_alarm(quota::txn_cost(txn))?;
        let path = self.txn_path(txn);
        let ops = branch(txn, path.succeeded);
        self.check_puts(ops, &path, &mut Vec::new())?;
        self.check_ranges(ops, &path)?;
        let mut writer = Writer::begin(self);
        let responses = execute(&mut writer, ops, &path);
        let (revision, events) = writer.finish();
        let response = TxnResponse {
            header: ResponseHeader::at(revision),
            succeeded: path.succeeded,
            responses,
        };
        Ok((response, events))
    }

    /// A txn without writes, served without Raft (after ReadIndex, or serializable).
    ///
    /// # Panics
    /// If the txn writes ([`TxnRequest::is_read_only`] is the caller's routing test).
    pub fn read_txn(&self, txn: &TxnRequest) -> Result<TxnResponse, Error> {
        assert!(txn.is_read_only(), "read_txn given a txn that writes");
        self.healthy()?;
        check_txn_structure(txn)?;
        let path = self.txn_path(txn);
        let ops = branch(txn, path.succeeded);
        self.check_ranges(ops, &path)?;
        let responses = self.read_ops(ops, &path);
        // As for a Range: a read the engine failed part-way through (an unreadable sector)
        // is not an answer; without this a key whose value could not be read was left out
        // (simulator seed 2791, a read error on one member).
        self.healthy()?;
        Ok(TxnResponse {
            header: ResponseHeader::at(self.current_revision()),
            succeeded: path.succeeded,
            responses,
        })
    }

    fn txn_path(&self, txn: &TxnRequest) -> TxnPath {
        let succeeded = txn.compare.iter().all(|c| self.compare_holds(c));
        let nested = branch(txn, succeeded)
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(nested) => Some(self.txn_path(nested)),
                _ => None,
            })
            .collect();
        TxnPath { succeeded, nested }
    }

    /// etcd's `applyCompare`: every key in the range must satisfy the compare; with no
    /// key, a VALUE compare fails and the others compare against zero.
    fn compare_holds(&self, compare: &Compare) -> bool {
        let range = KeyRange::new(&compare.key, &compare.range_end);
        let mut any = false;
        let mut all = true;
        self.for_each_live(&range, self.current_revision(), |_, entry| {
            any = true;
            let mut entry = entry.clone();
            if compare.target == CompareTarget::Value {
                self.load_value(&mut entry);
            }
            all = compare_entry(compare, Some(&entry));
            all
        });
        if !any {
            return compare.target != CompareTarget::Value && compare_entry(compare, None);
        }
        all
    }

    /// etcd's `checkRequestPut` over the path, in execution order. `deleted` collects the
    /// path's deletes so far: etcd lets a from-key delete and a put of a key in it share a
    /// txn, and an `ignore_*` put after such a delete finds no key (etcd panics there;
    /// keel refuses the txn).
    fn check_puts(
        &self,
        ops: &[RequestOp],
        path: &TxnPath,
        deleted: &mut Vec<KeyRange>,
    ) -> Result<(), Error> {
        let mut nested = path.nested.iter();
        for op in ops {
            match op {
                RequestOp::Put(put) => {
                    if put.ignore_value || put.ignore_lease {
                        let exists = self.is_live(&put.key);
                        if !exists || deleted.iter().any(|r| r.contains(&put.key)) {
                            return Err(Error::KeyNotFound);
                        }
                    }
                    if put.lease != 0 && !self.lessor.contains(put.lease) {
                        return Err(Error::LeaseNotFound);
                    }
                }
                RequestOp::DeleteRange(d) => deleted.push(KeyRange::new(&d.key, &d.range_end)),
                RequestOp::Txn(txn) => {
                    if let Some(p) = nested.next() {
                        self.check_puts(branch(txn, p.succeeded), p, deleted)?;
                    }
                }
                RequestOp::Range(_) => {}
            }
        }
        Ok(())
    }

    /// etcd's `checkRequestRange`: an explicit revision must be readable now.
    fn check_ranges(&self, ops: &[RequestOp], path: &TxnPath) -> Result<(), Error> {
        let mut nested = path.nested.iter();
        for op in ops {
            match op {
                RequestOp::Range(r) if r.revision > 0 => {
                    self.read_revision(r.revision, self.current_revision())?;
                }
                RequestOp::Txn(txn) => {
                    if let Some(p) = nested.next() {
                        self.check_ranges(branch(txn, p.succeeded), p)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn read_ops(&self, ops: &[RequestOp], path: &TxnPath) -> Vec<ResponseOp> {
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                RequestOp::Range(r) => {
                    let rev = if r.revision > 0 {
                        r.revision
                    } else {
                        self.current_revision()
                    };
                    responses.push(ResponseOp::Range(self.range_at(
                        r,
                        rev,
                        self.current_revision(),
                    )));
                }
                RequestOp::Txn(txn) => {
                    let Some(p) = nested.next() else { continue };
                    responses.push(ResponseOp::Txn(TxnResponse {
                        header: ResponseHeader::at(self.current_revision()),
                        succeeded: p.succeeded,
                        responses: self.read_ops(branch(txn, p.succeeded), p),
                    }));
                }
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => {
                    unreachable!("read_ops runs only read-only txns")
                }
            }
        }
        responses
    }
}

/// Runs the checked operations; reads see the txn's earlier writes.
fn execute(writer: &mut Writer<'_>, ops: &[RequestOp], path: &TxnPath) -> Vec<ResponseOp> {
    let mut nested = path.nested.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match op {
            RequestOp::Range(r) => {
                let view = writer.view_rev();
                let rev = if r.revision > 0 { r.revision } else { view };
                ResponseOp::Range(writer.store.range_at(r, rev, view))
            }
            RequestOp::Put(put) => {
                let prev_kv = writer.put_request(put);
                ResponseOp::Put(super::request::PutResponse {
                    header: ResponseHeader::at(writer.view_rev()),
                    prev_kv: if put.prev_kv { prev_kv } else { None },
                })
            }
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(writer.delete_request(d)),
            RequestOp::Txn(txn) => {
                let Some(p) = nested.next() else { continue };
                let inner = execute(writer, branch(txn, p.succeeded), p);
                ResponseOp::Txn(TxnResponse {
                    header: ResponseHeader::at(writer.view_rev()),
                    succeeded: p.succeeded,
                    responses: inner,
                })
            }
        };
        responses.push(response);
    }
    responses
}

/// etcd's `compareKV`; `None` is the zero KeyValue of a missing key.
fn compare_entry(compare: &Compare, entry: Option<&Entry>) -> bool {
    let ordering = match compare.target {
        CompareTarget::Value => {
            let theirs: &[u8] = match &compare.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            let ours: &[u8] = entry.map_or(&[], |e| &e.value);
            ours.cmp(theirs)
        }
        CompareTarget::Version => {
            int_ordering(entry.map_or(0, |e| e.version), compare, |u| match u {
                TargetUnion::Version(v) => Some(*v),
                _ => None,
            })
        }
        CompareTarget::Create => int_ordering(
            entry.map_or(0, |e| e.create_revision),
            compare,
            |u| match u {
                TargetUnion::CreateRevision(v) => Some(*v),
                _ => None,
            },
        ),
        CompareTarget::Mod => int_ordering(entry.map_or(0, |e| e.rev.main), compare, |u| match u {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        }),
        CompareTarget::Lease => int_ordering(entry.map_or(0, |e| e.lease), compare, |u| match u {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        }),
    };
    match compare.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

fn int_ordering(
    ours: i64,
    compare: &Compare,
    pick: impl Fn(&TargetUnion) -> Option<i64>,
) -> Ordering {
    let theirs = compare.target_union.as_ref().and_then(pick).unwrap_or(0);
    ours.cmp(&theirs)
}
