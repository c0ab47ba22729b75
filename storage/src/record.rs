//! WAL record framing: how one record is laid out, and how a reader tells a valid record
//! from the end of the data, a torn write, and corruption.
//!
//! ```text
//! offset  size  field
//!  0       4    magic "KREC"
//!  4       1    kind (1 segment header, 2 entry, 3 hard state)
//!  5       3    zero
//!  8       4    body length in bytes (u32, little endian, as are all numbers)
//! 12       4    CRC32C of the body
//! 16       4    position: the byte offset this record was written at in its segment
//! 20       4    synced-through: bytes of this segment known durable when it was encoded
//! 24       4    the segment's sequence number (low 32 bits)
//! 28       4    CRC32C of bytes 0..28 (so of the body too, through its CRC)
//! 32       n    body (bincode)
//!  ..           zero padding
//! end-8    8    trailer "KEEL-END"
//! //! ```
//!
//! Records start at multiples of 32 bytes, so a header never straddles a sector (sectors are
//! multiples of 512 bytes): a torn write leaves a header whole or not at all. A torn write
//! keeps a prefix of its sectors; the rest reads as zeros (segments are zero-filled, and
//! sparse files read zeros). So a record is *torn* when its header is valid and the part of
//! it after its last sector boundary is all zeros — where a complete record always has its
//! non-zero trailer. Any other damage is corruption: a single flipped bit cannot turn a
//! complete record into a torn-looking one.
//!
//! The synced-through field lets recovery tell a crash's lost tail from lost synced data: a
//! damaged spot followed by a valid record that says "everything before byte N was synced",
//! with N past the spot, is corruption, not a crash. The position and sequence fields catch a
//! misdirected write: a valid record found anywhere but where it was written.

pub(crate) const RECORD_ALIGN_BYTES: usize = 32;
pub(crate) const HEADER_BYTES: usize = 32;
pub(crate) const TRAILER_BYTES: usize = 8;
/// The smallest sector size a disk has; torn writes break at multiples of it.
pub(crate) const SECTOR_BYTES: usize = 512;

const MAGIC: [u8; 4] = *b"KREC";
const TRAILER: [u8; TRAILER_BYTES] = *b"KEEL-END";

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordKind {
    SegmentHeader = 1,
    Entry = 2,
    HardState = 3,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::SegmentHeader),
            2 => Some(RecordKind::Entry),
            3 => Some(RecordKind::HardState),
            _ => None,
        }
    }
}

/// Bytes a record with a body of `body_bytes` takes on disk.
/// Where records may start in a WAL segment's bytes: the record magic at each alignment
/// boundary (a match inside a body is possible). For tools that aim damage at records, such
/// as the simulator's bit flips.
pub fn record_starts(segment: &[u8]) -> Vec<usize> {
    (0..segment.len())
        .step_by(RECORD_ALIGN_BYTES)
        .filter(|&at| segment[at..].starts_with(&MAGIC))
        .collect()
}

pub(crate) fn record_size_bytes(body_bytes: usize) -> usize {
    (HEADER_BYTES + body_bytes + TRAILER_BYTES).next_multiple_of(RECORD_ALIGN_BYTES)
}

/// Appends one record to `out`, which must end at a record boundary. `write_body` appends
/// the body; encoding straight into `out` saves a copy per entry.
pub(crate) fn encode<E>(
    out: &mut Vec<u8>,
    kind: RecordKind,
    place: Placement,
    write_body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    debug_assert_eq!(out.len() % RECORD_ALIGN_BYTES, 0);
    let start = out.len();
    out.resize(start + HEADER_BYTES, 0);
    if let Err(e) = write_body(out) {
        out.truncate(start);
        return Err(e);
    }
    let body_bytes = out.len() - start - HEADER_BYTES;
    let body_crc = crc32c::crc32c(&out[start + HEADER_BYTES..]);
    let size = record_size_bytes(body_bytes);
    out.resize(start + size - TRAILER_BYTES, 0);
    out.extend_from_slice(&TRAILER);
    let header = &mut out[start..start + HEADER_BYTES];
    header[0..4].copy_from_slice(&MAGIC);
    header[4] = kind as u8;
    // Callers keep bodies under the record limit, which is far below 4 GiB.
    header[8..12].copy_from_slice(&(body_bytes as u32).to_le_bytes());
    header[12..16].copy_from_slice(&body_crc.to_le_bytes());
    header[16..20].copy_from_slice(&place.position_bytes.to_le_bytes());
    header[20..24].copy_from_slice(&place.synced_through_bytes.to_le_bytes());
    header[24..28].copy_from_slice(&(place.seq as u32).to_le_bytes());
    let header_crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&header_crc.to_le_bytes());
    Ok(())
}

/// Where a record goes: segment offsets fit in 32 bits (segments are at most a few GiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The segment's sequence number.
    pub seq: u64,
    /// The offset the record is written at.
    pub position_bytes: u32,
    /// Bytes of the segment known durable when the record was encoded.
    pub synced_through_bytes: u32,
}

/// A valid record found in a segment.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub kind: RecordKind,
    pub body: &'a [u8],
    pub synced_through_bytes: u64,
    pub size_bytes: usize,
}

/// What a record's header says.
struct Header {
    kind: RecordKind,
    body_bytes: u32,
    body_crc: u32,
    position_bytes: u32,
    synced_through_bytes: u32,
    seq_low: u32,
}

/// What lies at a record boundary.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    Record(Record<'a>),
    /// Zeros (or nothing): the data ends here.
    End,
    /// The tail of a write that never completed.
    Torn {
        problem: String,
    },
    /// A valid record, but not where it was written: a misdirected write.
    Misplaced {
        problem: String,
    },
    /// Damage no crash can explain.
    Corrupt {
        problem: String,
    },
}

/// Reads the record at `offset` of `segment` (the whole file of segment `seq`). Bodies
/// above `max_body_bytes` are corrupt: the writer never makes them.
pub(crate) fn decode(segment: &[u8], offset: usize, seq: u64, max_body_bytes: u64) -> Decoded<'_> {
    debug_assert_eq!(offset % RECORD_ALIGN_BYTES, 0);
    let available = segment.get(offset..).unwrap_or(&[]);
    if available.len() < HEADER_BYTES {
        return if available.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            corrupt("a partial record header at the end of the file")
        };
    }
    let header = &available[..HEADER_BYTES];
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let header = match parse_header(header) {
        Ok(header) => header,
        Err(problem) => return Decoded::Corrupt { problem },
    };
    if u64::from(header.position_bytes) != offset as u64 || header.seq_low != seq as u32 {
        return Decoded::Misplaced {
            problem: format!(
                "a record written at byte {} of segment {} (low 32 bits) is found here: a \
                 misdirected write",
                header.position_bytes, header.seq_low
            ),
        };
    }
    let Header {
        kind,
        body_bytes,
        body_crc,
        synced_through_bytes,
        ..
    } = header;
    if u64::from(body_bytes) > max_body_bytes {
        return corrupt(&format!(
            "record body of {body_bytes} bytes exceeds the limit of {max_body_bytes} bytes"
        ));
    }
    let size_bytes = record_size_bytes(body_bytes as usize);
    let body_end = HEADER_BYTES + body_bytes as usize;
    // Every byte counts, padding included: a flip anywhere is reported, never ignored.
    let complete = available.len() >= size_bytes
        && crc32c::crc32c(&available[HEADER_BYTES..body_end]) == body_crc
        && available[body_end..size_bytes - TRAILER_BYTES]
            .iter()
            .all(|&b| b == 0)
        && available[size_bytes - TRAILER_BYTES..size_bytes] == TRAILER;
    if complete {
        return Decoded::Record(Record {
            kind,
            body: &available[HEADER_BYTES..body_end],
            synced_through_bytes: u64::from(synced_through_bytes),
            size_bytes,
        });
    }
    classify_damage(segment, offset, size_bytes)
}

fn parse_header(header: &[u8]) -> Result<Header, String> {
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if header[0..4] != MAGIC {
        return Err("no record header where one must start (bad magic)".into());
    }
    let stored_crc = u32_at(28);
    let computed_crc = crc32c::crc32c(&header[..28]);
    if stored_crc != computed_crc {
        return Err(format!(
            "record header checksum mismatch (stored {stored_crc:#010x}, computed {computed_crc:#010x})"
        ));
    }
    let kind = RecordKind::from_byte(header[4])
        .ok_or_else(|| format!("unknown record kind {}", header[4]))?;
    Ok(Header {
        kind,
        body_bytes: u32_at(8),
        body_crc: u32_at(12),
        position_bytes: u32_at(16),
        synced_through_bytes: u32_at(20),
        seq_low: u32_at(24),
    })
}

/// A record with a valid header but a bad body or trailer: torn if everything after its last
/// sector boundary is zero (or missing), otherwise corrupt.
fn classify_damage(segment: &[u8], offset: usize, size_bytes: usize) -> Decoded<'_> {
    let end = offset + size_bytes;
    let last_boundary = (end - 1) / SECTOR_BYTES * SECTOR_BYTES;
    if last_boundary <= offset {
        // The whole record sits in one sector, which a crash writes whole or not at all.
        return corrupt("record checksum mismatch inside a single sector");
    }
    let tail = segment
        .get(last_boundary..end.min(segment.len()))
        .unwrap_or(&[]);
    if tail.iter().all(|&b| b == 0) {
        Decoded::Torn {
            problem: "record cut short by an interrupted write".into(),
        }
    } else {
        corrupt("record body checksum mismatch")
    }
}

fn corrupt(problem: &str) -> Decoded<'static> {
    Decoded::Corrupt {
        problem: problem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(position_bytes: usize, synced_through_bytes: u32) -> Placement {
        Placement {
            seq: 7,
            position_bytes: position_bytes as u32,
            synced_through_bytes,
        }
    }

    fn one_record(body: &[u8], synced_through: u32) -> Vec<u8> {
        let mut out = Vec::new();
        encode::<()>(&mut out, RecordKind::Entry, place(0, synced_through), |o| {
            o.extend_from_slice(body);
            Ok(())
        })
        .unwrap();
        out
    }

    fn expect_record(bytes: &[u8], offset: usize) -> Record<'_> {
        match decode(bytes, offset, 7, 1 << 20) {
            Decoded::Record(r) => r,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    #[test]
    fn records_round_trip_and_align() {
        for len in [0usize, 1, 23, 24, 25, 100, 1000, 5000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let bytes = one_record(&body, 77);
            assert_eq!(bytes.len(), record_size_bytes(len));
            assert_eq!(bytes.len() % RECORD_ALIGN_BYTES, 0);
            let record = expect_record(&bytes, 0);
            assert_eq!(record.body, &body[..]);
            assert_eq!(record.kind, RecordKind::Entry);
            assert_eq!(record.synced_through_bytes, 77);
            assert_eq!(record.size_bytes, bytes.len());
        }
    }

    #[test]
    fn zeros_and_nothing_are_the_end() {
        assert!(matches!(decode(&[], 0, 7, 100), Decoded::End));
        assert!(matches!(decode(&[0u8; 64], 0, 7, 100), Decoded::End));
        assert!(matches!(decode(&[0u8; 64], 32, 7, 100), Decoded::End));
        assert!(matches!(decode(&[0u8; 10], 0, 7, 100), Decoded::End));
    }

    #[test]
    fn every_single_bit_flip_is_detected_never_mistaken_for_a_tear() {
        // A body whose tail is zeros: without the trailer, a flip elsewhere would look torn.
        let mut body = vec![0u8; 1200];
        body[..100].fill(9);
        let bytes = one_record(&body, 5);
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                match decode(&damaged, 0, 7, 1 << 20) {
                    Decoded::Corrupt { .. } => {}
                    other => panic!("flip at byte {at} bit {bit}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_write_cut_at_a_sector_boundary_is_torn() {
        let body = vec![3u8; 1500];
        let bytes = one_record(&body, 0);
        for kept_sectors in 1..bytes.len().div_ceil(SECTOR_BYTES) {
            let mut damaged = bytes.clone();
            damaged[kept_sectors * SECTOR_BYTES..].fill(0);
            assert!(
                matches!(decode(&damaged, 0, 7, 1 << 20), Decoded::Torn { .. }),
                "kept {kept_sectors} sectors"
            );
            // A file that simply ends there (not preallocated) is torn too.
            let short = &bytes[..kept_sectors * SECTOR_BYTES];
            assert!(matches!(decode(short, 0, 7, 1 << 20), Decoded::Torn { .. }));
        }
    }

    #[test]
    fn limits_and_headers_are_checked() {
        let bytes = one_record(&[1u8; 100], 0);
        assert!(matches!(decode(&bytes, 0, 7, 99), Decoded::Corrupt { .. }));
        let mut bad_kind = bytes.clone();
        bad_kind[4] = 9;
        let crc = crc32c::crc32c(&bad_kind[..28]);
        bad_kind[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode(&bad_kind, 0, 7, 1 << 20),
            Decoded::Corrupt { .. }
        ));
        assert!(matches!(
            decode(&bytes[..20], 0, 7, 1 << 20),
            Decoded::Corrupt { .. }
        ));
    }

    #[test]
    fn records_follow_each_other() {
        let mut out = Vec::new();
        for i in 0..5u8 {
            let at = out.len();
            encode::<()>(
                &mut out,
                RecordKind::HardState,
                place(at, u32::from(i)),
                |o| {
                    o.extend_from_slice(&vec![i; 40 * usize::from(i)]);
                    Ok(())
                },
            )
            .unwrap();
        }
        let mut offset = 0;
        for i in 0..5u8 {
            let record = expect_record(&out, offset);
            assert_eq!(record.kind, RecordKind::HardState);
            assert_eq!(record.body.len(), 40 * usize::from(i));
            offset += record.size_bytes;
        }
        assert!(matches!(decode(&out, offset, 7, 100), Decoded::End));
    }

    #[test]
    fn a_record_found_away_from_where_it_was_written_is_corrupt() {
        let bytes = one_record(&[5u8; 100], 0);
        let mut moved = vec![0u8; 512];
        moved.extend_from_slice(&bytes);
        assert!(matches!(
            decode(&moved, 512, 7, 1 << 20),
            Decoded::Misplaced { .. }
        ));
        assert!(matches!(
            decode(&bytes, 0, 8, 1 << 20),
            Decoded::Misplaced { .. }
        ));
    }
}
