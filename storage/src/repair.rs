//! What recovery fixed or set aside on the way to opening a data dir: told to the caller
//! (which logs each), never silent. WAL recovery and the storage's own checks both add to
//! the list.

use std::fmt;

use keel_core::raft::{Index, Term};

/// Something recovery fixed or set aside. None of these loses anything a completed sync
/// covered; the caller should log each one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// The last segment ended in a write a crash interrupted; it was cut off here.
    TornTailTruncated { file: String, offset_bytes: u64 },
    /// The last segment was created by a rotation a crash interrupted; it held nothing.
    EmptySegmentRemoved { file: String },
    /// A snapshot being written when the process stopped.
    TempFileRemoved { file: String },
    /// A snapshot failed its checksum or could not be read. It was renamed (kept for
    /// diagnosis) and an older snapshot plus the WAL used instead.
    SnapshotSetAside {
        file: String,
        renamed_to: String,
        offset_bytes: u64,
        problem: String,
    },
    /// A snapshot from the leader was saved but the crash came before its log reset was:
    /// the old entries after it, which it replaces, were dropped.
    EntriesReplacedBySnapshot {
        snapshot_index: Index,
        dropped_through_index: Index,
    },
    /// The log (or snapshot) holds a term the last saved hard state had not reached yet (a
    /// batch torn between its entries and its hard state): the term was raised to it with no
    /// vote. No vote of the lost term was sent: votes go out only after a sync.
    TermRaised { from_term: Term, to_term: Term },
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::TornTailTruncated { file, offset_bytes } => write!(
                f,
                "cut off a torn write at the end of {file} at byte {offset_bytes} (never synced)"
            ),
            Repair::EmptySegmentRemoved { file } => {
                write!(
                    f,
                    "removed {file}, a segment a crash left without its header"
                )
            }
            Repair::TempFileRemoved { file } => write!(f, "removed unfinished {file}"),
            Repair::SnapshotSetAside {
                file,
                renamed_to,
                offset_bytes,
                problem,
            } => write!(
                f,
                "snapshot {file} is unusable at byte {offset_bytes} ({problem}); renamed it to \
                 {renamed_to} and recovered from an older snapshot and the WAL"
            ),
            Repair::EntriesReplacedBySnapshot {
                snapshot_index,
                dropped_through_index,
            } => write!(
                f,
                "dropped log entries {}..={dropped_through_index}, replaced by the leader's \
                 snapshot at {snapshot_index}",
                snapshot_index + 1
            ),
            Repair::TermRaised { from_term, to_term } => write!(
                f,
                "raised the saved term from {from_term} to {to_term}, the log's"
            ),
        }
    }
}
