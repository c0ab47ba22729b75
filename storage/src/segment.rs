//! WAL segment files: their names, their opening record, and reading one back.
//!
//! A segment is named `<seq>-<first index>.wal` (both 16 hex digits): `seq` counts segments
//! without gaps, `first index` is the index the log continued at when the segment was
//! opened. Every segment opens with a `SegmentHeader` record, then the hard state in force
//! (so deleting older segments never loses it), then entries and hard-state updates.

use serde::{Deserialize, Serialize};

use keel_core::raft::{Entry, HardState, Index, Term};

use crate::codec;
use crate::record::{self, Decoded, RecordKind, RECORD_ALIGN_BYTES};

const SUFFIX: &str = ".wal";
/// Bumped on any incompatible change of the WAL layout.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The identity of a segment, as its file name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentName {
    pub seq: u64,
    pub first_index: Index,
}

impl SegmentName {
    pub fn file_name(&self) -> String {
        format!("{:016x}-{:016x}{SUFFIX}", self.seq, self.first_index)
    }

    pub fn parse(name: &str) -> Option<SegmentName> {
        let stem = name.strip_suffix(SUFFIX)?;
        let (seq, first_index) = stem.split_once('-')?;
        if seq.len() != 16 || first_index.len() != 16 {
            return None;
        }
        Some(SegmentName {
            seq: u64::from_str_radix(seq, 16).ok()?,
            first_index: u64::from_str_radix(first_index, 16).ok()?,
        })
    }
}

/// The first record of every segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentHeader {
    pub format_version: u32,
    pub seq: u64,
    /// The log continues after this index...
    pub prev_index: Index,
    /// ...whose entry had this term.
    pub prev_term: Term,
    /// The log before this segment is void: a snapshot from the leader replaced it.
    pub log_reset: bool,
}

/// One decoded record of a segment, with the byte offset it starts at.
#[derive(Debug)]
pub(crate) enum Item {
    Entry(Entry),
    HardState(HardState),
}

/// A segment as read back.
#[derive(Debug)]
pub(crate) struct SegmentScan {
    pub header: SegmentHeader,
    /// Records after the header, with their offsets.
    pub items: Vec<(u64, Item)>,
    /// Where the valid records end.
    pub end_offset_bytes: u64,
    /// Whether anything other than zeros follows `end_offset_bytes` (a torn or partly lost
    /// tail, which recovery truncates).
    pub dirty_tail: bool,
}

/// Why a segment could not be read back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScanError {
    pub offset_bytes: u64,
    pub problem: String,
}

/// Reads a whole segment. `is_last` allows a torn or lost tail; anywhere else that is
/// corruption. `Ok(None)`: the last segment lost even its header to a crash.
pub(crate) fn scan(
    bytes: &[u8],
    name: &SegmentName,
    is_last: bool,
    max_body_bytes: u64,
) -> Result<Option<SegmentScan>, ScanError> {
    let mut offset = 0usize;
    let mut header = None;
    let mut items = Vec::new();
    let stopped_by_tear = loop {
        match record::decode(bytes, offset, name.seq, max_body_bytes) {
            Decoded::Record(rec) => {
                let at = offset as u64;
                offset += rec.size_bytes;
                match (&header, rec.kind) {
                    (None, RecordKind::SegmentHeader) => {
                        header = Some(parse_header(rec.body, name, at)?);
                    }
                    (None, _) => return Err(problem(at, "segment does not start with a header")),
                    (Some(_), kind) => items.push((at, parse_item(kind, rec.body, at)?)),
                }
            }
            Decoded::End => break false,
            Decoded::Torn { .. } if is_last => break true,
            Decoded::Torn { problem: why }
            | Decoded::Misplaced { problem: why }
            | Decoded::Corrupt { problem: why } => {
                return Err(problem(offset as u64, &why));
            }
        }
    };
    // Segments are zero-filled: past the data, only a crash's leftovers can be non-zero.
    let used = offset.max(nonzero_len(bytes));
    check_nothing_synced_after(&bytes[..used], offset, name.seq, is_last, max_body_bytes)?;
    let dirty_tail = stopped_by_tear || used > offset;
    Ok(header.map(|header| SegmentScan {
        header,
        items,
        end_offset_bytes: offset as u64,
        dirty_tail,
    }))
}

/// The valid records end at `end`. In the last segment, what follows may be a crash's
/// leftovers, but no record after `end` may prove that `end` had been synced, and none may
/// sit where it was not written. In any other segment (synced whole before the next was
/// opened) no valid record may follow at all.
fn check_nothing_synced_after(
    bytes: &[u8],
    end: usize,
    seq: u64,
    is_last: bool,
    max_body_bytes: u64,
) -> Result<(), ScanError> {
    let mut offset = end + RECORD_ALIGN_BYTES;
    while offset + RECORD_ALIGN_BYTES <= bytes.len() {
        if bytes[offset..offset + 4] == *b"KREC" {
            match record::decode(bytes, offset, seq, max_body_bytes) {
                Decoded::Record(rec) if !is_last || rec.synced_through_bytes > end as u64 => {
                    return Err(problem(
                        end as u64,
                        &format!(
                            "the records stop here, but a valid record at byte {offset} shows \
                             that data up to byte {} had been synced: synced data was lost \
                             (a lost or misdirected write)",
                            rec.synced_through_bytes
                        ),
                    ));
                }
                Decoded::Misplaced { problem: why } => return Err(problem(offset as u64, &why)),
                _ => {}
            }
        }
        offset += RECORD_ALIGN_BYTES;
    }
    Ok(())
}

/// The length of `bytes` without its trailing zeros. Compares whole pages (a `memcmp`), as
/// a preallocated segment is mostly zeros.
fn nonzero_len(bytes: &[u8]) -> usize {
    const PAGE_BYTES: usize = 4096;
    const ZEROS: [u8; PAGE_BYTES] = [0; PAGE_BYTES];
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(PAGE_BYTES);
        let page = &bytes[start..end];
        if page != &ZEROS[..page.len()] {
            return start + page.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        }
        end = start;
    }
    0
}

fn parse_header(body: &[u8], name: &SegmentName, at: u64) -> Result<SegmentHeader, ScanError> {
    let header: SegmentHeader = codec::decode(body)
        .map_err(|e| problem(at, &format!("undecodable segment header: {e}")))?;
    if header.format_version != FORMAT_VERSION {
        return Err(problem(
            at,
            &format!(
                "WAL format version {} is not supported (this build reads {FORMAT_VERSION})",
                header.format_version
            ),
        ));
    }
    if header.seq != name.seq || header.prev_index + 1 != name.first_index {
        return Err(problem(
            at,
            &format!(
                "segment header (seq {}, first index {}) does not match the file name",
                header.seq,
                header.prev_index + 1
            ),
        ));
    }
    Ok(header)
}

fn parse_item(kind: RecordKind, body: &[u8], at: u64) -> Result<Item, ScanError> {
    let item = match kind {
        RecordKind::Entry => codec::decode(body).map(Item::Entry),
        RecordKind::HardState => codec::decode(body).map(Item::HardState),
        RecordKind::SegmentHeader => return Err(problem(at, "a second segment header")),
    };
    item.map_err(|e| problem(at, &format!("undecodable {kind:?} record: {e}")))
}

fn problem(offset_bytes: u64, problem: &str) -> ScanError {
    ScanError {
        offset_bytes,
        problem: problem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_zeros_are_skipped() {
        let mut bytes = vec![0u8; 10_000];
        assert_eq!(nonzero_len(&bytes), 0);
        bytes[0] = 1;
        assert_eq!(nonzero_len(&bytes), 1);
        bytes[5000] = 1;
        assert_eq!(nonzero_len(&bytes), 5001);
        bytes[9999] = 1;
        assert_eq!(nonzero_len(&bytes), 10_000);
    }

    #[test]
    fn names_round_trip() {
        let name = SegmentName {
            seq: 3,
            first_index: 0x1_0000,
        };
        assert_eq!(name.file_name(), "0000000000000003-0000000000010000.wal");
        assert_eq!(SegmentName::parse(&name.file_name()), Some(name));
        for bad in [
            "x.wal",
            "3-4.wal",
            "0000000000000003-0000000000010000.snap",
            "zzzzzzzzzzzzzzzz-0000000000010000.wal",
        ] {
            assert_eq!(SegmentName::parse(bad), None, "{bad}");
        }
    }
}
