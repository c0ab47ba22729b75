//! Raft's safety properties, checked from every server's node state after each batch of
//! work (through the server loop's read-only `Inspector` hook) across a whole run:
//! - Election Safety: at most one leader per term;
//! - terms never go back on any member, even across crashes (they are always synced);
//! - Log Matching: two logs holding an entry with the same index and term hold the same
//!   entry;
//! - State Machine Safety: every member applies the same entry at each index.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use keel_core::node::Node;
use keel_core::raft::{Entry, Index, NodeId, Role, Term};
use keel_net::server_loop::Inspector;

#[derive(Debug, Default)]
struct State {
    leaders_by_term: BTreeMap<Term, NodeId>,
    last_term: BTreeMap<NodeId, Term>,
    /// Entry content by (index, term), as any log held it.
    logged: BTreeMap<(Index, Term), u64>,
    /// Entry content by index, as any member applied it.
    applied: BTreeMap<Index, (Term, u64)>,
    /// Per member: the last index whose log entry / applied entry was recorded.
    logged_to: BTreeMap<NodeId, Index>,
    applied_to: BTreeMap<NodeId, Index>,
    snapshots_restored: BTreeMap<NodeId, SnapshotCounts>,
    violations: Vec<String>,
}

/// A member's count of leader snapshots restored, across its processes.
#[derive(Debug, Default)]
struct SnapshotCounts {
    earlier_processes: u64,
    current_process: u64,
}

impl State {
    /// Records a violation once (the same one is seen again after every batch).
    fn violated(&mut self, what: String) {
        if !self.violations.contains(&what) && self.violations.len() < 100 {
            self.violations.push(what);
        }
    }
}

/// Shared by every server of a run.
#[derive(Debug, Default)]
pub struct RaftInvariants {
    state: Mutex<State>,
}

fn fingerprint(entry: &Entry) -> u64 {
    let mut hasher = DefaultHasher::new();
    entry.payload.hash(&mut hasher);
    hasher.finish()
}

impl RaftInvariants {
    /// What was violated, in the order it was seen.
    /// At least how many snapshots sent by a leader members restored (a restart is noticed
    /// when a process's count drops): proof that a run exercised catching up by snapshot.
    pub fn leader_snapshots_restored(&self) -> u64 {
        self.state
            .lock()
            .map(|s| {
                s.snapshots_restored
                    .values()
                    .map(|c| c.earlier_processes + c.current_process)
                    .sum()
            })
            .unwrap_or(0)
    }

    pub fn violations(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.violations.clone())
            .unwrap_or_else(|_| vec!["the invariant checker panicked".into()])
    }
}

impl Inspector for RaftInvariants {
    fn observe(&self, node: &Node) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let raft = node.raft();
        let id = node.id();
        let term = raft.term();
        if raft.role() == Role::Leader {
            let leader = *state.leaders_by_term.entry(term).or_insert(id);
            if leader != id {
                let v = format!("Election Safety: {leader:x} and {id:x} both led term {term}");
                state.violated(v);
            }
        }
        let last = state.last_term.insert(id, term).unwrap_or(0);
        if term < last {
            let v = format!("member {id:x}'s term went back from {last} to {term}");
            state.violated(v);
        }
        check_log(&mut state, node);
        check_applied(&mut state, node);
        let restored = node.leader_snapshots_restored();
        let counts = state.snapshots_restored.entry(id).or_default();
        if restored < counts.current_process {
            // A restarted process counts from zero again.
            counts.earlier_processes += counts.current_process;
        }
        counts.current_process = restored;
    }
}

/// Log Matching, over the entries appended since the last look.
fn check_log(state: &mut State, node: &Node) {
    let raft = node.raft();
    let id = node.id();
    let from = state
        .logged_to
        .get(&id)
        .copied()
        .unwrap_or(0)
        .min(raft.last_index())
        .max(raft.first_index().saturating_sub(1));
    for index in from + 1..=raft.last_index() {
        let Some(entry) = raft.log_entry(index) else {
            continue;
        };
        let print = fingerprint(entry);
        let known = *state.logged.entry((index, entry.term)).or_insert(print);
        if known != print {
            let v = format!(
                "Log Matching: member {id:x} holds a different entry at index {index}, term {}",
                entry.term
            );
            state.violated(v);
        }
    }
    state.logged_to.insert(id, raft.last_index());
}

/// State Machine Safety, over the entries applied since the last look (a member that
/// restarted applies again from its snapshot, and is checked again).
fn check_applied(state: &mut State, node: &Node) {
    let raft = node.raft();
    let id = node.id();
    let applied = node.applied_index();
    let seen = state.applied_to.get(&id).copied().unwrap_or(0);
    let from = if applied < seen { applied } else { seen };
    for index in from + 1..=applied {
        let Some(entry) = raft.log_entry(index) else {
            continue;
        };
        let print = (entry.term, fingerprint(entry));
        let known = *state.applied.entry(index).or_insert(print);
        if known != print {
            let v = format!(
                "State Machine Safety: member {id:x} applied a different entry at index {index} \
                 (term {} vs {})",
                print.0, known.0
            );
            state.violated(v);
        }
    }
    state.applied_to.insert(id, applied);
}
