//! Compaction. Logically it completes at once: the compact revision moves, reads and
//! watches below it get `ErrCompacted`, and the size estimate drops by what became
//! unreachable (known exactly from the [`GarbageLedger`]). Physically, history is dropped
//! in bounded steps ([`Store::compaction_step`]) that walk the history log from its oldest
//! end, so a large compaction never stalls applying. Nothing observable depends on how
//! far the physical steps got.

use std::collections::VecDeque;

use super::error::Error;
use super::request::{CompactionRequest, CompactionResponse, ResponseHeader};
use super::store::Store;

/// Bytes that become unreachable once the compact revision reaches a revision.
///
/// A version becomes garbage when compaction reaches the revision that replaced it, and a
/// tombstone when compaction passes it (revision + 1); both are known when that revision is
/// written, and revisions are written in order, so this is a queue of `(revision, bytes)`
/// appended at the back (a write at revision `r` adds at `r` or `r + 1`) and consumed from
/// the front.
#[derive(Clone, Debug, Default)]
pub(crate) struct GarbageLedger {
    by_revision: VecDeque<(i64, u64)>,
}

impl GarbageLedger {
    pub fn add(&mut self, revision: i64, bytes: u64) {
        // Within one write, a replaced version (at `r`) may follow a tombstone (at `r + 1`).
        let at = self
            .by_revision
            .iter()
            .rev()
            .take(2)
            .take_while(|(r, _)| *r >= revision)
            .count();
        let index = self.by_revision.len() - at;
        assert!(
            at < 2 || self.by_revision[index].0 == revision,
            "garbage recorded out of revision order ({revision})"
        );
        match self.by_revision.get_mut(index) {
            Some((r, total)) if *r == revision => *total += bytes,
            _ => self.by_revision.insert(index, (revision, bytes)),
        }
    }

    /// `bytes` recorded as garbage at `from` become garbage at `to` (earlier) instead: a
    /// tombstone written at `to` and overwritten in the same revision (a txn that deletes a
    /// key, then puts it) is unreachable once compaction reaches `to`, not only once it
    /// passes it.
    pub fn move_earlier(&mut self, from: i64, to: i64, bytes: u64) {
        debug_assert!(to < from);
        if let Some(pos) = self.by_revision.iter().rposition(|(r, _)| *r == from) {
            let (_, total) = &mut self.by_revision[pos];
            *total = total.saturating_sub(bytes);
            if *total == 0 {
                self.by_revision.remove(pos);
            }
        }
        self.add(to, bytes);
    }

    /// Removes and sums everything that is garbage at `compact_rev`.
    pub fn drain_through(&mut self, compact_rev: i64) -> u64 {
        let mut freed = 0;
        while let Some(&(revision, bytes)) = self.by_revision.front() {
            if revision > compact_rev {
                break;
            }
            freed += bytes;
            self.by_revision.pop_front();
        }
        freed
    }
}

impl Store {
    pub(crate) fn apply_compaction(
        &mut self,
        request: &CompactionRequest,
    ) -> Result<CompactionResponse, Error> {
        if request.revision <= self.compact_rev {
            return Err(Error::Compacted);
        }
        if request.revision > self.current_rev {
            return Err(Error::FutureRev);
        }
        self.compact_rev = request.revision;
        let freed = self.garbage.drain_through(request.revision);
        debug_assert!(freed <= self.size_bytes, "freed more than the store holds");
        self.size_bytes = self.size_bytes.saturating_sub(freed);
        Ok(CompactionResponse {
            header: ResponseHeader::at(self.current_rev),
        })
    }

    /// Drops unreachable history for up to `max_revisions` entries of the history log.
    /// Returns true while work remains. [`Store::apply`] calls it after every entry; a
    /// server may call it more when idle.
    pub fn compaction_step(&mut self, max_revisions: usize) -> bool {
        for _ in 0..max_revisions {
            let Some((rev, _)) = self.history_log.front() else {
                self.release_spare_log_capacity();
                return false;
            };
            // Entries at the compact revision stay: a watch may start there.
            if rev.main >= self.compact_rev {
                self.release_spare_log_capacity();
                return false;
            }
            let Some((_, key)) = self.history_log.pop_front() else {
                return false;
            };
            let emptied = self
                .keys
                .get_mut(key.as_ref())
                .is_some_and(|history| history.compact(self.compact_rev));
            if emptied {
                self.keys.remove(key.as_ref());
            }
        }
        self.history_log
            .front()
            .is_some_and(|(rev, _)| rev.main < self.compact_rev)
    }

    /// A drained history log gives its memory back (it may have held every revision).
    fn release_spare_log_capacity(&mut self) {
        const MIN_CAPACITY: usize = 1024;
        let len = self.history_log.len();
        if self.history_log.capacity() > 4 * len.max(MIN_CAPACITY) {
            self.history_log.shrink_to(2 * len.max(MIN_CAPACITY));
        }
    }
}
