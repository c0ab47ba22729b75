//! The start fence: after a restart, a member serves nothing from its own state until it has
//! applied at least as far as it had before it stopped.
//!
//! Why: Raft syncs entries, term and vote, but not a commit index learned on its own (that
//! would put a second fsync on the path of every write, see `keel_core::raft::ready`). So a
//! member that crashes may restart with a commit index below entries it had applied — and
//! served: serializable reads, watch events, `HashKV`. Serving again from the older state
//! would take the member's revision back (the class of etcd issue 17780).
//!
//! What it had applied lies within its log (entries are synced before they are applied), so
//! reaching the log's last index at start-up is enough; but entries past the true commit
//! index may be replaced by another leader and never reach that index in an idle cluster. A
//! linearizable read index taken after the restart covers every entry committed before it,
//! so applying up to it is enough as well. Whichever comes first lifts the fence.

use crate::raft::Index;

/// The request id of the fence's own read index (client request ids count up from the time
/// of start-up and never reach it).
pub(crate) const START_FENCE_READ_ID: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StartFence {
    /// The last log index at start-up.
    last_index: Index,
    /// When the fence's read index was last asked for (in node ticks); asked again after a
    /// while, since a leader change may drop it.
    read_asked_tick: Option<u64>,
}

impl StartFence {
    /// The fence for a node that starts with `last_index` in its log and commit index
    /// `commit_index`: none if the log holds nothing past what it will apply at once.
    pub(crate) fn at_start(last_index: Index, commit_index: Index) -> Option<StartFence> {
        (last_index > commit_index).then_some(StartFence {
            last_index,
            read_asked_tick: None,
        })
    }

    /// The fence for a member that joins with an empty data dir: it holds nothing yet, and
    /// serving its empty store would show its clients a state from the cluster's first
    /// revision. Only a read index lifts it, once the leader's snapshot and log are applied.
    pub(crate) fn joining() -> StartFence {
        StartFence {
            last_index: Index::MAX,
            read_asked_tick: None,
        }
    }

    /// Whether applying through `applied_index` lifts the fence.
    pub(crate) fn is_passed_at(&self, applied_index: Index) -> bool {
        applied_index >= self.last_index
    }

    /// Whether the read index should be asked for (again) at tick `now_tick`.
    pub(crate) fn should_ask(&mut self, now_tick: u64, retry_ticks: u64) -> bool {
        let due = self
            .read_asked_tick
            .is_none_or(|asked| now_tick >= asked + retry_ticks);
        if due {
            self.read_asked_tick = Some(now_tick);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_fence_when_the_log_ends_at_the_commit_index() {
        assert_eq!(StartFence::at_start(7, 7), None);
        assert!(StartFence::at_start(8, 7).is_some());
    }

    #[test]
    fn the_read_index_is_asked_again_after_the_retry_interval() {
        let Some(mut fence) = StartFence::at_start(8, 7) else {
            panic!("a fence");
        };
        assert!(fence.should_ask(3, 10));
        assert!(!fence.should_ask(12, 10));
        assert!(fence.should_ask(13, 10));
        assert!(!fence.is_passed_at(7));
        assert!(fence.is_passed_at(8));
    }
}
