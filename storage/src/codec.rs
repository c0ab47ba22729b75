//! bincode (version 1) with the settings every keel file uses: fixed-width little-endian
//! integers, a limit on what a decode may allocate, and no trailing bytes.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T) -> bincode::Result<()> {
    options().serialize_into(out, value)
}

pub(crate) fn encoded_size_bytes<T: Serialize>(value: &T) -> bincode::Result<u64> {
    options().serialized_size(value)
}

/// Decodes `bytes`, allocating at most `limit_bytes` (a damaged length prefix cannot make it
/// allocate more).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], limit_bytes: u64) -> bincode::Result<T> {
    options()
        .with_limit(limit_bytes)
        .reject_trailing_bytes()
        .deserialize(bytes)
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
}
