//! Checks across members, as etcd's robustness suite does at the end of every run:
//! - [`check_hashes`]: members' `HashKV` at the same revision (and compact revision) are
//!   equal, so no member's data diverged (etcd #13766, #14685, #14571);
//! - [`check_member_revisions`]: a member's revision and compact revision never go down
//!   (etcd #17780), from the observations the simulator recorded and from the header
//!   revisions of the serializable reads each member served one after another (a read
//!   that started after another one finished must not see an older revision). A member an
//!   operator rolled back to an older copy of its data dir starts over at that moment: what
//!   it serves after is compared only with what it served after.

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{fmt_time, History, MemberHash, MemberId, Outcome, Time};

use super::Violation;

/// Members that disagree about `HashKV` at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashMismatch {
    pub revision: i64,
    pub compact_revision: i64,
    pub hashes: Vec<MemberHash>,
}

impl fmt::Display for HashMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "members' HashKV differ at revision {} (compact revision {}):",
            self.revision, self.compact_revision
        )?;
        for h in &self.hashes {
            write!(f, "\n  member {}: {:#010x}", h.member, h.hash)?;
        }
        Ok(())
    }
}

/// All members' hashes at the same (revision, compact revision) are equal.
pub fn check_hashes(hashes: &[MemberHash]) -> Result<(), Violation> {
    let mut groups: BTreeMap<(i64, i64), Vec<&MemberHash>> = BTreeMap::new();
    for h in hashes {
        groups
            .entry((h.revision, h.compact_revision))
            .or_default()
            .push(h);
    }
    for ((revision, compact_revision), group) in groups {
        if group.iter().any(|h| h.hash != group[0].hash) {
            return Err(Violation::HashKv(Box::new(HashMismatch {
                revision,
                compact_revision,
                hashes: group.into_iter().cloned().collect(),
            })));
        }
    }
    Ok(())
}

/// How many times an operator had rolled `member` back by `time`: observations of different
/// epochs are not compared.
fn rollback_epoch(history: &History, member: MemberId, time: Time) -> usize {
    history
        .member_rollbacks
        .iter()
        .filter(|r| r.member == member && r.time <= time)
        .count()
}

/// A serializable read a member served: invoked, completed, revision, operation index.
type ServedRead = (Time, Time, i64, usize);

/// No member's revision or compact revision goes down (see the module docs).
pub fn check_member_revisions(history: &History) -> Result<(), Violation> {
    // Recorded observations, per member and epoch in time order (recording order for equal
    // times).
    let mut per_member: BTreeMap<(MemberId, usize), Vec<(Time, usize)>> = BTreeMap::new();
    for (i, m) in history.member_revisions.iter().enumerate() {
        let epoch = rollback_epoch(history, m.member, m.time);
        per_member
            .entry((m.member, epoch))
            .or_default()
            .push((m.time, i));
    }
    for ((member, _), mut seen) in per_member {
        seen.sort();
        let obs = |i: usize| &history.member_revisions[i];
        let describe = |i: usize| {
            let o = obs(i);
            format!(
                "at {}: revision {}{}",
                fmt_time(o.time),
                o.revision,
                o.compact_revision
                    .map_or_else(String::new, |c| format!(", compact revision {c}"))
            )
        };
        let mut max_rev: Option<usize> = None;
        let mut max_compact: Option<usize> = None;
        for &(_, i) in &seen {
            if let Some(j) = max_rev.filter(|&j| obs(j).revision > obs(i).revision) {
                return Err(Violation::RevisionDecreased {
                    member,
                    what: "revision",
                    earlier: describe(j),
                    later: describe(i),
                });
            }
            max_rev = Some(i);
            if let Some(c) = obs(i).compact_revision {
                if let Some(j) =
                    max_compact.filter(|&j| obs(j).compact_revision.is_some_and(|cj| cj > c))
                {
                    return Err(Violation::RevisionDecreased {
                        member,
                        what: "compact revision",
                        earlier: describe(j),
                        later: describe(i),
                    });
                }
                max_compact = Some(i);
            }
        }
    }

    // Serializable reads per member (and rollback epoch): one invoked after another completed sees no older
    // revision.
    let mut reads: BTreeMap<(MemberId, usize), Vec<ServedRead>> = BTreeMap::new();
    for (id, op) in history.operations.iter().enumerate() {
        if let (Some(member), Some(complete), Outcome::Ok(r), true) = (
            op.member,
            op.complete,
            &op.outcome,
            op.request.is_serializable(),
        ) {
            let epoch = rollback_epoch(history, member, op.invoke);
            reads
                .entry((member, epoch))
                .or_default()
                .push((op.invoke, complete, r.revision(), id));
        }
    }
    for ((member, _), mut by_invoke) in reads {
        let mut by_complete = by_invoke.clone();
        by_invoke.sort();
        by_complete.sort_by_key(|&(_, c, _, id)| (c, id));
        let mut next = 0;
        let mut best: Option<(i64, usize)> = None;
        for &(invoke, _, rev, id) in &by_invoke {
            while next < by_complete.len() && by_complete[next].1 < invoke {
                let (_, _, r, i) = by_complete[next];
                if best.is_none_or(|(b, _)| r > b) {
                    best = Some((r, i));
                }
                next += 1;
            }
            if let Some((b, j)) = best.filter(|&(b, _)| b > rev) {
                return Err(Violation::RevisionDecreased {
                    member,
                    what: "revision (serializable reads it served)",
                    earlier: format!("op #{j} at revision {b}: {}", history.operations[j]),
                    later: format!("op #{id} at revision {rev}: {}", history.operations[id]),
                });
            }
        }
    }
    Ok(())
}
