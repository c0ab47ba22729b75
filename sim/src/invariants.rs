//! Raft's safety properties, checked from every server's node state after each batch of
//! work (through the server loop's read-only `Inspector` hook) across a whole run:
//! - Election Safety: at most one leader per term;
//! - terms never go back on any member, even across crashes (they are always synced);
//! - Log Matching: two logs holding an entry with the same index and term hold the same
//!   entry, and the same term at the index before (so, by induction, the same prefix);
//! - Leader Completeness (§5.4): when a member is first seen leading a term, its log holds
//!   every entry any member applied (all of them committed in earlier terms);
//! - the commit rule (§5.4.2): a leader's commit index only ever advances to an entry of its
//!   own term (an earlier term's entries are committed only through one of the current term);
//! - State Machine Safety: every member applies the same entry at each index.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use keel_core::coverage::{Coverage, Path};
use keel_core::node::Node;
use keel_core::raft::{Entry, Index, NodeId, Role, Term};
use keel_net::server_loop::Inspector;

#[derive(Debug, Default)]
struct State {
    leaders_by_term: BTreeMap<Term, NodeId>,
    last_term: BTreeMap<NodeId, Term>,
    /// Entry content and the term at the index before (when still known), by (index, term),
    /// as any log held it.
    logged: BTreeMap<(Index, Term), (u64, Option<Term>)>,
    /// The (member, term) leaderships already checked for Leader Completeness.
    leaderships_checked: std::collections::BTreeSet<(NodeId, Term)>,
    /// The latest leader seen to have committed an entry of its own term, with that term.
    committing_leader: Option<(NodeId, Term)>,
    /// Per leader: its term and commit index when last seen leading.
    leader_commit: BTreeMap<NodeId, (Term, Index)>,
    /// Entry content by index, as any member applied it.
    applied: BTreeMap<Index, (Term, u64)>,
    /// Per member: the last index whose log entry / applied entry was recorded.
    logged_to: BTreeMap<NodeId, Index>,
    applied_to: BTreeMap<NodeId, Index>,
    coverage: BTreeMap<NodeId, MemberCoverage>,
    /// Per member: the last log index its disk held durably when it was damaged; the next
    /// process must recover at least that far or refuse to start.
    expected_recovery: BTreeMap<NodeId, Index>,
    /// Members whose log an operator fault changed on purpose (checksums intact): the
    /// corruption checks must catch them, so Log Matching and State Machine Safety skip
    /// them.
    diverged: std::collections::BTreeSet<NodeId>,
    crash_probes: CrashProbes,
    violations: Vec<String>,
}

/// How many crash images the probes opened (see `crate::crash_probe`): a floor in the sweep
/// keeps them from silently probing nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashProbes {
    /// Right after a member released its log behind the engine.
    pub after_release: u64,
    /// In the middle of a WAL sync.
    pub at_sync: u64,
}

impl CrashProbes {
    pub fn add(&mut self, other: &CrashProbes) {
        self.after_release += other.after_release;
        self.at_sync += other.at_sync;
    }
}

/// A member's rare paths taken, across its processes (each counts from zero).
#[derive(Debug, Default)]
struct MemberCoverage {
    earlier_processes: Coverage,
    current_process: Coverage,
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
        self.coverage().count(Path::LeaderSnapshotInstalled)
    }

    /// The rare paths every member took, summed over members and their processes (a
    /// restart is noticed when a process's count drops).
    pub fn coverage(&self) -> Coverage {
        let mut total = Coverage::default();
        if let Ok(state) = self.state.lock() {
            for member in state.coverage.values() {
                total.add(&member.earlier_processes);
                total.add(&member.current_process);
            }
        }
        total
    }

    /// Counts a crash image opened by a probe.
    pub fn probed(&self, count: impl FnOnce(&mut CrashProbes)) {
        if let Ok(mut state) = self.state.lock() {
            count(&mut state.crash_probes);
        }
    }

    pub fn crash_probes(&self) -> CrashProbes {
        self.state
            .lock()
            .map(|s| s.crash_probes)
            .unwrap_or_default()
    }

    /// Records a violation found outside the node (say, by a crash probe of its disk).
    pub fn report(&self, what: String) {
        if let Ok(mut state) = self.state.lock() {
            state.violated(what);
        }
    }

    pub fn violations(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.violations.clone())
            .unwrap_or_else(|_| vec!["the invariant checker panicked".into()])
    }
}

/// Prints `coverage` when `KEEL_SIM_COVERAGE` is set (for setting floors by measurement).
pub fn print_coverage_if_asked(coverage: &Coverage) {
    if std::env::var_os("KEEL_SIM_COVERAGE").is_some() {
        for (path, count) in coverage.iter() {
            println!("coverage {path:?}: {count}");
        }
    }
}

impl RaftInvariants {
    /// Says that member `id`'s disk durably held its log through `last_index` when it was
    /// damaged (say, a bit flipped in its WAL): its next process must recover that far, or
    /// refuse to start. Corruption taken for a torn tail would silently drop the rest.
    pub fn expect_recovery(&self, id: NodeId, last_index: Index) {
        if let Ok(mut state) = self.state.lock() {
            state.expected_recovery.insert(id, last_index);
        }
    }

    /// The latest leader seen to have committed an entry of its own term, and that term
    /// (for faults timed on a new leader's first commit).
    pub fn committing_leader(&self) -> Option<(NodeId, Term)> {
        self.state.lock().ok()?.committing_leader
    }

    /// Says that member `id`'s log was changed on purpose (see `State::diverged`).
    pub fn expect_divergence(&self, id: NodeId) {
        if let Ok(mut state) = self.state.lock() {
            state.diverged.insert(id);
        }
    }
}

impl Inspector for RaftInvariants {
    /// A new process: its log is checked again from its first entry (a damaged WAL may have
    /// been replayed as data), and its coverage counts from zero.
    fn started(&self, node: &Node) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let id = node.id();
        state.logged_to.insert(id, 0);
        let member = state.coverage.entry(id).or_default();
        let earlier = std::mem::take(&mut member.current_process);
        member.earlier_processes.add(&earlier);
        let last_index = node.raft().last_index();
        if let Some(expected) = state.expected_recovery.remove(&id) {
            if last_index < expected {
                let v = format!(
                    "member {id:x} restarted with its log through {last_index}, though its disk \
                     held it through {expected} before the damage: records were dropped"
                );
                state.violated(v);
            }
        }
    }

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
        check_leader_completeness(&mut state, node);
        check_leader_commit(&mut state, node);
        if !state.diverged.contains(&id) {
            check_log(&mut state, node);
            check_applied(&mut state, node);
        }
        state.coverage.entry(id).or_default().current_process = node.coverage();
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
        let prev_term = raft.log_term(index - 1);
        let known = state
            .logged
            .entry((index, entry.term))
            .or_insert((print, prev_term));
        if known.1.is_none() {
            known.1 = prev_term;
        }
        let (known_print, known_prev_term) = *known;
        if known_print != print {
            let v = format!(
                "Log Matching: member {id:x} holds a different entry at index {index}, term {}",
                entry.term
            );
            state.violated(v);
        }
        if let (Some(known), Some(here)) = (known_prev_term, prev_term) {
            if known != here {
                let v = format!(
                    "Log Matching: member {id:x} holds index {index}, term {} after an entry of \
                     term {here}; another log holds it after term {known}",
                    entry.term
                );
                state.violated(v);
            }
        }
    }
    state.logged_to.insert(id, raft.last_index());
}

/// Leader Completeness (§5.4), once per leadership, at its first sighting: nothing it has
/// sent can have been applied anywhere yet (messages take simulated time), so every entry
/// applied anywhere was committed in an earlier term and must be in its log, with the same
/// term. Entries it no longer holds in memory (behind its snapshot) are committed there.
fn check_leader_completeness(state: &mut State, node: &Node) {
    let raft = node.raft();
    let (id, term) = (node.id(), raft.term());
    if raft.role() != Role::Leader || !state.leaderships_checked.insert((id, term)) {
        return;
    }
    let Some((&highest_applied, _)) = state.applied.last_key_value() else {
        return;
    };
    if highest_applied > raft.last_index() {
        let v = format!(
            "Leader Completeness: {id:x} leads term {term} with its log through {}, but entry \
             {highest_applied} was applied",
            raft.last_index()
        );
        state.violated(v);
        return;
    }
    let mismatch = state
        .applied
        .range(raft.first_index()..)
        .find(|(&index, &(applied_term, _))| {
            raft.log_term(index).is_some_and(|t| t != applied_term)
        })
        .map(|(&index, &(applied_term, _))| (index, applied_term));
    if let Some((index, applied_term)) = mismatch {
        let v = format!(
            "Leader Completeness: {id:x} leads term {term} holding index {index} of term {}, \
             but the entry of term {applied_term} was applied there",
            raft.log_term(index).unwrap_or(0)
        );
        state.violated(v);
    }
}

/// The commit rule (§5.4.2, Raft's Figure 8): while a member leads a term, each advance
/// of its commit index ends on an entry of that term.
fn check_leader_commit(state: &mut State, node: &Node) {
    let raft = node.raft();
    let id = node.id();
    if raft.role() != Role::Leader {
        state.leader_commit.remove(&id);
        return;
    }
    let (term, commit) = (raft.term(), raft.commit_index());
    if raft.log_term(commit) == Some(term) && state.committing_leader.is_none_or(|(_, t)| t <= term)
    {
        state.committing_leader = Some((id, term));
    }
    let seen = state.leader_commit.insert(id, (term, commit));
    let Some((seen_term, seen_commit)) = seen else {
        return;
    };
    if seen_term != term || commit <= seen_commit {
        return;
    }
    let commit_term = raft.log_term(commit);
    if commit_term.is_some_and(|t| t != term) {
        let v = format!(
            "commit rule: leader {id:x} of term {term} advanced its commit index to {commit}, \
             an entry of term {}",
            commit_term.unwrap_or(0)
        );
        state.violated(v);
    }
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
