//! Named counters of rare paths ("sometimes" assertions, as FoundationDB and Antithesis use
//! them). The core counts each time it takes one of these paths; the simulator sums the
//! counts over a sweep and fails when a path was reached fewer times than its floor, so a
//! change that stops a workload or a fault from reaching a path fails CI instead of quietly
//! shrinking what the simulator tests. Counting is an array increment: it stays on in
//! production builds, where the counts are simply never read.

/// A rare path worth reaching on purpose. Each names where it is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    /// A leader whose quorum index was an entry of an earlier term did not commit it by
    /// counting replicas (§5.4.2, Raft's Figure 8). `raft/replication.rs`.
    EarlierTermEntryNotCommitted,
    /// A leader committed entries of earlier terms through an entry of its own term.
    /// `raft/replication.rs`.
    EarlierTermEntryCommittedThroughCurrent,
    /// A vote or pre-vote refused because the candidate's log is behind (§5.4.1).
    /// `raft/election.rs`.
    VoteRefusedLogBehind,
    /// Of those, a candidate whose log is longer than the voter's but ends in an older
    /// term: only comparing terms first refuses it (§5.4.1). `raft/election.rs`.
    VoteRefusedLongerLogOfOlderTerm,
    /// A follower rejected an Append whose previous entry it does not hold with that term
    /// (Log Matching, §5.3). `raft/replication.rs`.
    AppendRejectedPrevMismatch,
    /// A follower dropped a suffix of its log that conflicts with the leader's (§5.3).
    /// `raft/log.rs`.
    ConflictingSuffixTruncated,
    /// A heartbeat carried a commit index capped at the follower's match index.
    /// `raft/replication.rs`.
    HeartbeatCommitCapped,
    /// A leader stepped down with ReadIndex requests still waiting for a quorum round:
    /// it had been deposed without knowing it. `raft/election.rs`.
    ReadsPendingAtStepDown,
    /// A node installed a snapshot sent by its leader. `node/mod.rs`.
    LeaderSnapshotInstalled,
    /// A linearizable read waited, after its read index was confirmed, for the entries up
    /// to it to be applied. `node/mod.rs`.
    ReadWaitedForApply,
    /// Applying lagged committing: a Ready handed out fewer committed entries than were
    /// committed. `raft/mod.rs`.
    ApplyBehindCommit,
    /// A lease expired and was proposed for revocation within four election timeouts of
    /// this node becoming leader (a new leader first extends every lease by one election
    /// timeout). `node/mod.rs`.
    LeaseExpiredAfterLeaderChange,
    /// A watcher's catch-up read stopped before the current revision (its event budget or
    /// revision budget was used up): the rest comes in later responses. `mvcc/watch.rs`.
    WatchCatchUpCut,
}

impl Path {
    pub const COUNT: usize = 13;
    pub const ALL: [Path; Path::COUNT] = [
        Path::EarlierTermEntryNotCommitted,
        Path::EarlierTermEntryCommittedThroughCurrent,
        Path::VoteRefusedLogBehind,
        Path::VoteRefusedLongerLogOfOlderTerm,
        Path::AppendRejectedPrevMismatch,
        Path::ConflictingSuffixTruncated,
        Path::HeartbeatCommitCapped,
        Path::ReadsPendingAtStepDown,
        Path::LeaderSnapshotInstalled,
        Path::ReadWaitedForApply,
        Path::ApplyBehindCommit,
        Path::LeaseExpiredAfterLeaderChange,
        Path::WatchCatchUpCut,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

/// How often each [`Path`] was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    counts: [u64; Path::COUNT],
}

impl Coverage {
    pub fn hit(&mut self, path: Path) {
        let slot = &mut self.counts[path.slot()];
        *slot = slot.saturating_add(1);
    }

    pub fn count(&self, path: Path) -> u64 {
        self.counts[path.slot()]
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Coverage) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine = mine.saturating_add(theirs);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Path, u64)> + '_ {
        Path::ALL.into_iter().map(|path| (path, self.count(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_has_its_own_slot_in_order() {
        for (slot, path) in Path::ALL.into_iter().enumerate() {
            assert_eq!(path.slot(), slot, "{path:?}");
        }
    }

    #[test]
    fn counts_add_up() {
        let mut first = Coverage::default();
        first.hit(Path::VoteRefusedLogBehind);
        first.hit(Path::VoteRefusedLogBehind);
        let mut second = Coverage::default();
        second.hit(Path::WatchCatchUpCut);
        first.add(&second);
        assert_eq!(first.count(Path::VoteRefusedLogBehind), 2);
        assert_eq!(first.count(Path::WatchCatchUpCut), 1);
    }
}
