//! Automatic compaction, as etcd's `--auto-compaction-mode`/`--auto-compaction-retention`:
//! the leader proposes a `Compaction` so history older than the retention goes away (see
//! `Node::tick`). Time and the current revision are arguments.

use std::collections::VecDeque;
use std::time::Duration;

use crate::mvcc::{Command, CompactionRequest};

/// Retention of automatic compaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AutoCompaction {
    #[default]
    Off,
    /// Keep this much history by time.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// etcd's revision compactor checks every five minutes.
const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct AutoCompactor {
    retention: AutoCompaction,
    /// (time, revision) samples, oldest first.
    samples: VecDeque<(u64, i64)>,
    next_sample_ms: u64,
    compacted_to: i64,
}

impl AutoCompactor {
    pub fn new(retention: AutoCompaction) -> AutoCompactor {
        AutoCompactor {
            retention,
            samples: VecDeque::new(),
            next_sample_ms: 0,
            compacted_to: 0,
        }
    }

    /// Called on the leader's ticks; returns a compaction to propose when one is due.
    pub fn on_tick(&mut self, now_ms: u64, revision: i64) -> Option<Command> {
        let target = match self.retention {
            AutoCompaction::Off => return None,
            AutoCompaction::Revision(keep) => {
                if now_ms < self.next_sample_ms {
                    return None;
                }
                self.next_sample_ms = now_ms + duration_ms(REVISION_CHECK_INTERVAL);
                revision - keep
            }
            AutoCompaction::Periodic(retention) => {
                self.periodic_target(now_ms, revision, retention)?
            }
        };
        if target <= self.compacted_to || target <= 0 {
            return None;
        }
        self.compacted_to = target;
        Some(Command::Compaction(CompactionRequest {
            revision: target,
            physical: false,
        }))
    }

    /// Samples the revision every tenth of the retention and compacts to the newest sample
    /// at least one retention old (etcd's periodic compactor works the same way).
    fn periodic_target(&mut self, now_ms: u64, revision: i64, retention: Duration) -> Option<i64> {
        let retention_ms = duration_ms(retention).max(10);
        if now_ms >= self.next_sample_ms {
            self.samples.push_back((now_ms, revision));
            self.next_sample_ms = now_ms + retention_ms / 10;
        }
        let mut target = None;
        while let Some(&(at, rev)) = self.samples.front() {
            if now_ms.saturating_sub(at) < retention_ms {
                break;
            }
            target = Some(rev);
            self.samples.pop_front();
        }
        target
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(command: Option<Command>) -> Option<i64> {
        match command {
            Some(Command::Compaction(request)) => Some(request.revision),
            _ => None,
        }
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions_checking_every_five_minutes() {
        let mut compactor = AutoCompactor::new(AutoCompaction::Revision(100));
        assert_eq!(target(compactor.on_tick(0, 50)), None, "nothing old enough");
        assert_eq!(
            target(compactor.on_tick(1_000, 500)),
            None,
            "not time to check"
        );
        assert_eq!(target(compactor.on_tick(300_000, 500)), Some(400));
        assert_eq!(
            target(compactor.on_tick(600_000, 450)),
            None,
            "never backwards"
        );
    }

    #[test]
    fn periodic_mode_compacts_to_what_was_current_one_retention_ago() {
        let mut compactor = AutoCompactor::new(AutoCompaction::Periodic(Duration::from_secs(100)));
        let mut compacted = Vec::new();
        for second in 0..=250u64 {
            let revision = 1 + second as i64 * 2;
            if let Some(rev) = target(compactor.on_tick(second * 1000, revision)) {
                compacted.push((second, rev));
            }
        }
        assert!(!compacted.is_empty());
        for (second, rev) in compacted {
            let age_s = second - (rev as u64 - 1) / 2;
            assert!(
                (100..=110).contains(&age_s),
                "compacted {age_s} s of history at {second}"
            );
        }
    }

    #[test]
    fn off_never_compacts() {
        let mut compactor = AutoCompactor::new(AutoCompaction::Off);
        assert!(compactor.on_tick(10_000_000, 1_000_000).is_none());
    }
}
