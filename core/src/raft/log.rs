//! The in-memory Raft log: the entries after the last compaction point, what of them is on
//! disk, what is committed and what is applied.
//!
//! Positions, in order: `compacted_index <= applied_index <= commit_index <= last_index`, and
//! `persisted_index <= last_index`. Entries above `persisted_index` from `unstable_from` on
//! have not been handed to the application for persisting yet.

use std::collections::VecDeque;

use super::entry::{Entry, Index, Snapshot, Term};

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The newest snapshot, sent to followers that need entries already compacted away.
    snapshot: Snapshot,
    /// Index and term of the last entry dropped from memory: the log starts after it.
    compacted: (Index, Term),
    entries: VecDeque<Entry>,
    commit_index: Index,
    applied_index: Index,
    /// The last index known to be on disk (after `advance`).
    persisted_index: Index,
    /// The first index not yet handed out in a `Ready` for persisting.
    unstable_from: Index,
    /// A snapshot received from the leader that must be persisted and restored.
    pending_snapshot: Option<Snapshot>,
}

/// Outcome of offering a leader's entries to a follower's log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    /// The log matched at `prev_log_index` and now matches the leader through
    /// `last_new_index`; `truncated` when entries that conflicted with the leader's were
    /// dropped on the way.
    Matched {
        last_new_index: Index,
        truncated: bool,
    },
    /// The log has no entry at `prev_log_index` with `prev_log_term`.
    Mismatch,
    /// Accepting would remove a committed entry; refused.
    ConflictsWithCommitted { index: Index },
}

impl RaftLog {
    /// A log restored from disk: everything given is persisted.
    pub(crate) fn restore(
        snapshot: Snapshot,
        entries: Vec<Entry>,
        commit_index: Index,
        applied_index: Index,
    ) -> RaftLog {
        let compacted = (snapshot.meta.index, snapshot.meta.term);
        let entries: VecDeque<Entry> = entries.into();
        let last_index = entries.back().map_or(compacted.0, |e| e.index);
        RaftLog {
            snapshot,
            compacted,
            entries,
            commit_index,
            applied_index,
            persisted_index: last_index,
            unstable_from: last_index + 1,
            pending_snapshot: None,
        }
    }

    pub(crate) fn first_index(&self) -> Index {
        self.compacted.0 + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.entries.back().map_or(self.compacted.0, |e| e.index)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.compacted.1, |e| e.term)
    }

    pub(crate) fn commit_index(&self) -> Index {
        self.commit_index
    }

    pub(crate) fn applied_index(&self) -> Index {
        self.applied_index
    }

    pub(crate) fn persisted_index(&self) -> Index {
        self.persisted_index
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub(crate) fn compacted_index(&self) -> Index {
        self.compacted.0
    }

    /// The term of the entry at `index`, if the log still knows it.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.compacted.0 {
            return Some(self.compacted.1);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    pub(crate) fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// §5.4.1: a candidate's log is at least as up to date as this one.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Entries from `from` on, at most `max_bytes` of them but at least one if any exist.
    /// `from` must not be compacted.
    pub(crate) fn entries_from(&self, from: Index, max_bytes: usize) -> Vec<Entry> {
        debug_assert!(
            from >= self.first_index(),
            "entries_from({from}) below the first index"
        );
        self.copy_bounded(from, self.last_index(), max_bytes)
    }

    /// Copies entries `from..=to` still in memory, stopping before `max_bytes` would be
    /// exceeded (but always taking the first).
    fn copy_bounded(&self, from: Index, to: Index, max_bytes: usize) -> Vec<Entry> {
        let mut taken = Vec::new();
        let mut size_bytes = 0usize;
        for index in from..=to {
            let Some(entry) = self.entry(index) else {
                break;
            };
            size_bytes += entry.size_bytes();
            if !taken.is_empty() && size_bytes > max_bytes {
                break;
            }
            taken.push(entry.clone());
        }
        taken
    }

    /// Appends entries the leader created itself.
    pub(crate) fn append_local(&mut self, entry: Entry) {
        debug_assert_eq!(
            entry.index,
            self.last_index() + 1,
            "leader append must be contiguous"
        );
        debug_assert!(
            entry.term >= self.last_term(),
            "terms in the log never decrease"
        );
        self.entries.push_back(entry);
    }

    /// Offers a leader's entries after (`prev_log_index`, `prev_log_term`) (§5.3): keeps what
    /// matches, truncates at the first conflict, appends the rest.
    pub(crate) fn append_from_leader(
        &mut self,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
    ) -> AppendOutcome {
        if !self.matches(prev_log_index, prev_log_term) {
            return AppendOutcome::Mismatch;
        }
        let last_new_index = prev_log_index + entries.len() as Index;
        let conflict = entries.iter().position(|e| !self.matches(e.index, e.term));
        let mut truncated = false;
        if let Some(position) = conflict {
            let conflict_index = entries[position].index;
            truncated = conflict_index <= self.last_index();
            if conflict_index <= self.commit_index {
                return AppendOutcome::ConflictsWithCommitted {
                    index: conflict_index,
                };
            }
            self.truncate_from(conflict_index);
            for entry in entries.into_iter().skip(position) {
                debug_assert!(
                    entry.term >= self.last_term(),
                    "log matching: terms never decrease"
                );
                self.entries.push_back(entry);
            }
        }
        AppendOutcome::Matched {
            last_new_index,
            truncated,
        }
    }

    /// Drops every entry at or after `index` (never a committed one).
    fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.commit_index,
            "truncating committed entry {index}"
        );
        let keep = usize::try_from(index - self.first_index()).unwrap_or(usize::MAX);
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted_index = self.persisted_index.min(index - 1);
    }

    /// The hint a follower returns on a mismatch: its last index at or below `index` whose
    /// term is at most `term`, with that term. Lets the leader skip a whole term at once.
    pub(crate) fn find_conflict_hint(&self, index: Index, term: Term) -> (Index, Term) {
        let mut probe = index.min(self.last_index());
        loop {
            match self.term(probe) {
                Some(t) if t <= term => return (probe, t),
                Some(_) if probe > self.compacted.0 => probe -= 1,
                // Below what this log still knows: the leader will send a snapshot.
                _ => return (probe, 0),
            }
        }
    }

    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        if index <= self.commit_index {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit index {index} beyond last index {}",
            self.last_index()
        );
        self.commit_index = index;
        true
    }

    /// A follower's snapshot from the leader replaces the whole log.
    pub(crate) fn restore_snapshot(&mut self, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        assert!(
            index > self.commit_index,
            "restoring a snapshot below the commit index"
        );
        self.entries.clear();
        self.compacted = (index, term);
        self.commit_index = index;
        self.persisted_index = self.persisted_index.min(index);
        self.unstable_from = index + 1;
        self.snapshot = snapshot.clone();
        self.pending_snapshot = Some(snapshot);
    }

    /// The application took a snapshot through `snapshot.meta.index`: remember it for slow
    /// followers and drop entries, keeping the last `retain_entries` before it so a follower
    /// slightly behind still gets entries instead of a whole snapshot.
    pub(crate) fn compact(&mut self, snapshot: Snapshot, retain_entries: u64) {
        let index = snapshot.meta.index;
        assert!(
            index <= self.applied_index,
            "snapshot {index} is beyond the applied index"
        );
        if index <= self.snapshot.meta.index {
            return;
        }
        let compact_to = index
            .saturating_sub(retain_entries)
            .min(self.persisted_index);
        if compact_to > self.compacted.0 {
            let term = self.term(compact_to).expect("compact point is in the log");
            let drop = usize::try_from(compact_to - self.compacted.0).unwrap_or(usize::MAX);
            self.entries.drain(..drop.min(self.entries.len()));
            self.compacted = (compact_to, term);
        }
        self.snapshot = snapshot;
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.pending_snapshot.is_some() || self.unstable_from <= self.last_index()
    }

    pub(crate) fn take_pending_snapshot(&mut self) -> Option<Snapshot> {
        self.pending_snapshot.take()
    }

    /// Hands out the entries not yet given for persisting.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from.max(self.first_index());
        let taken: Vec<Entry> = match usize::try_from(from - self.first_index()) {
            Ok(offset) if offset < self.entries.len() => {
                self.entries.range(offset..).cloned().collect()
            }
            _ => Vec::new(),
        };
        self.unstable_from = self.last_index() + 1;
        taken
    }

    /// The application persisted everything through (`index`, `term`). If the log was
    /// truncated meanwhile and that entry is gone, nothing is marked.
    pub(crate) fn persisted_to(&mut self, index: Index, term: Term) {
        if index > self.persisted_index && self.matches(index, term) {
            self.persisted_index = index;
            self.unstable_from = self.unstable_from.max(index + 1);
        }
    }

    pub(crate) fn snapshot_persisted(&mut self, index: Index) {
        if self.compacted.0 == index {
            self.persisted_index = self.persisted_index.max(index);
        }
    }

    pub(crate) fn has_committed_to_apply(&self) -> bool {
        self.commit_index > self.applied_index
    }

    /// Committed entries after the applied index, bounded by `max_bytes` (at least one).
    pub(crate) fn committed_to_apply(&self, max_bytes: usize) -> Vec<Entry> {
        self.copy_bounded(self.applied_index + 1, self.commit_index, max_bytes)
    }

    pub(crate) fn applied_to(&mut self, index: Index) {
        assert!(
            index <= self.commit_index,
            "applied {index} beyond commit index {}",
            self.commit_index
        );
        self.applied_index = self.applied_index.max(index);
    }

    /// Every entry in `(from, to]` still in memory.
    pub(crate) fn range(
        &self,
        from_exclusive: Index,
        to_inclusive: Index,
    ) -> impl Iterator<Item = &Entry> {
        let start = from_exclusive.max(self.compacted.0) + 1;
        (start..=to_inclusive.min(self.last_index())).filter_map(move |i| self.entry(i))
    }
}
