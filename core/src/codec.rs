//! bincode (version 1), configured in this one place for every keel encoding: Raft log
//! entries, peer frames, WAL records, snapshot images and engine rows.
//!
//! A [`Codec`] names the two choices that are part of a format: how integers are laid out
//! (fixed width or varint, little-endian either way) and whether a decode refuses bytes
//! left over. Neither may change for a format already written to disk or sent to a peer.
//! An encode or a decode is bounded by the codec's limit (a longer input is refused before
//! it is read). Within it, bincode 1 bounds a decode from a slice by the slice itself (it
//! applies no limit of its own there, whatever its options say): a damaged length
//! prefix runs out of input and is an error, never a huge allocation, since serde caps
//! what it reserves ahead and every element takes at least one byte (keel encodes no
//! sequences of zero-sized values).

use std::io::Write;

use bincode::Options;
use serde::{Deserialize, Serialize};

/// How a format lays out its integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integers {
    /// As wide as their type: positions inside a record are easy to reason about.
    Fixed,
    /// One byte for small values: store commands and images, which hold many.
    Varint,
}

/// One format's bincode settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    integers: Integers,
    /// Bytes an encode may write or a decode may be given, at most.
    limit_bytes: u64,
    /// A decode that leaves bytes unread fails.
    reject_trailing_bytes: bool,
}

/// Applies a codec's settings to bincode's options and runs `$body` with them as `$o`
/// (each combination is its own type in bincode, hence a macro).
macro_rules! with_options {
    ($codec:expr, $o:ident => $body:expr) => {{
        let base = bincode::DefaultOptions::new().with_limit($codec.limit_bytes);
        match ($codec.integers, $codec.reject_trailing_bytes) {
            (Integers::Fixed, false) => {
                let $o = base.with_fixint_encoding().allow_trailing_bytes();
                $body
            }
            (Integers::Fixed, true) => {
                let $o = base.with_fixint_encoding().reject_trailing_bytes();
                $body
            }
            (Integers::Varint, false) => {
                let $o = base.with_varint_encoding().allow_trailing_bytes();
                $body
            }
            (Integers::Varint, true) => {
                let $o = base.with_varint_encoding().reject_trailing_bytes();
                $body
            }
        }
    }};
}

impl Codec {
    /// Fixed-width integers, trailing bytes allowed, at most `limit_bytes` either way.
    pub const fn fixed(limit_bytes: u64) -> Codec {
        Codec {
            integers: Integers::Fixed,
            limit_bytes,
            reject_trailing_bytes: false,
        }
    }

    /// Varint integers, trailing bytes allowed, at most `limit_bytes` either way.
    pub const fn varint(limit_bytes: u64) -> Codec {
        Codec {
            integers: Integers::Varint,
            limit_bytes,
            reject_trailing_bytes: false,
        }
    }

    /// The same, and a decode must read every byte it is given.
    pub const fn rejecting_trailing_bytes(self) -> Codec {
        Codec {
            reject_trailing_bytes: true,
            ..self
        }
    }

    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> bincode::Result<Vec<u8>> {
        with_options!(self, o => o.serialize(value))
    }

    pub fn encode_into<W: Write, T: Serialize + ?Sized>(
        &self,
        out: W,
        value: &T,
    ) -> bincode::Result<()> {
        with_options!(self, o => o.serialize_into(out, value))
    }

    /// The encoded size of `value`, without encoding it.
    pub fn size_bytes<T: Serialize + ?Sized>(&self, value: &T) -> bincode::Result<u64> {
        with_options!(self, o => o.serialized_size(value))
    }

    /// Decodes `bytes`: refused if they are over the limit, and never reads (or reserves
    /// for) more than they hold.
    pub fn decode<'a, T: Deserialize<'a>>(&self, bytes: &'a [u8]) -> bincode::Result<T> {
        if bytes.len() as u64 > self.limit_bytes {
            return Err(Box::new(bincode::ErrorKind::SizeLimit));
        }
        with_options!(self, o => o.deserialize(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        small: u64,
        items: Vec<u32>,
    }

    fn sample() -> Sample {
        Sample {
            small: 5,
            items: vec![1, 2, 3],
        }
    }

    #[test]
    fn fixed_and_varint_lay_integers_out_as_bincode_1_does() {
        let fixed = Codec::fixed(1024).encode(&sample()).unwrap();
        assert_eq!(fixed, bincode::serialize(&sample()).unwrap());
        let varint = Codec::varint(1024).encode(&sample()).unwrap();
        assert_eq!(
            varint,
            bincode::DefaultOptions::new().serialize(&sample()).unwrap()
        );
        assert!(varint.len() < fixed.len());
        for codec in [Codec::fixed(1024), Codec::varint(1024)] {
            let bytes = codec.encode(&sample()).unwrap();
            assert_eq!(codec.size_bytes(&sample()).unwrap(), bytes.len() as u64);
            assert_eq!(codec.decode::<Sample>(&bytes).unwrap(), sample());
        }
    }

    #[test]
    fn a_damaged_length_prefix_is_an_error_not_an_allocation() {
        let mut bytes = Codec::fixed(1024).encode(&sample()).unwrap();
        // The vector's length, right after the u64: claim 2^62 items.
        bytes[8..16].copy_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(Codec::fixed(u64::MAX).decode::<Sample>(&bytes).is_err());
        let bytes = Codec::fixed(1024).encode(&sample()).unwrap();
        let cut = &bytes[..bytes.len() - 1];
        assert!(Codec::fixed(u64::MAX).decode::<Sample>(cut).is_err());
    }

    #[test]
    fn limits_and_trailing_bytes_are_enforced() {
        let bytes = Codec::fixed(1024).encode(&sample()).unwrap();
        assert!(Codec::fixed(8).encode(&sample()).is_err());
        assert!(Codec::fixed(8).decode::<Sample>(&bytes).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Codec::fixed(1024).decode::<Sample>(&longer).is_ok());
        let strict = Codec::fixed(1024).rejecting_trailing_bytes();
        assert!(strict.decode::<Sample>(&longer).is_err());
        assert_eq!(strict.decode::<Sample>(&bytes).unwrap(), sample());
    }
}
