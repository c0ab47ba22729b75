//! The encoding every keel file uses (WAL records, segment headers, snapshot metadata):
//! fixed-width integers and no trailing bytes (see `keel_core::codec`).

use keel_core::codec::Codec;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A file's records carry their own sizes; encoding them needs no limit of its own.
const FILES: Codec = Codec::fixed(u64::MAX).rejecting_trailing_bytes();

pub(crate) fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T) -> bincode::Result<()> {
    FILES.encode_into(out, value)
}

pub(crate) fn encoded_size_bytes<T: Serialize>(value: &T) -> bincode::Result<u64> {
    FILES.size_bytes(value)
}

/// Decodes a record's body: a damaged length prefix in it runs out of body, so it cannot
/// make the decode allocate more than the body's size.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> bincode::Result<T> {
    FILES.decode(bytes)
}
