//! Revisions and key ranges.
//!
//! A revision is `(main, sub)`: `main` is the store-wide revision a write request created
//! (one per request that changed something, a whole txn included), `sub` orders the changes
//! inside it. A fresh store is at revision 1, like etcd, so the first write is revision 2.

use std::ops::Bound;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The position of one change in the store's history.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }
}

/// Bounds for `BTreeMap::range` over byte-string keys.
pub type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Where a range ends, decoded from etcd's `range_end` convention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeEnd {
    /// `range_end` empty: the single key.
    Single,
    /// `range_end == "\0"`: every key `>= key`.
    Unbounded,
    /// Half-open `[key, end)`.
    Excluded(Bytes),
}

/// A key or a half-open range of keys, as etcd's `key`/`range_end` pair describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bytes,
    pub end: RangeEnd,
}

impl KeyRange {
    /// Decodes etcd's convention: empty `range_end` is the single key, `"\0"` is
    /// "every key `>= key`", anything else is the half-open range `[key, range_end)`.
    pub fn new(key: &Bytes, range_end: &Bytes) -> Self {
        let end = match range_end.as_ref() {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            _ => RangeEnd::Excluded(range_end.clone()),
        };
        KeyRange {
            start: key.clone(),
            end,
        }
    }

    pub fn single(key: &Bytes) -> Self {
        KeyRange {
            start: key.clone(),
            end: RangeEnd::Single,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => key == self.start.as_ref(),
            RangeEnd::Unbounded => key >= self.start.as_ref(),
            RangeEnd::Excluded(end) => key >= self.start.as_ref() && key < end.as_ref(),
        }
    }

    /// True when no key can be in the range (`range_end <= key`).
    pub fn is_empty(&self) -> bool {
        matches!(&self.end, RangeEnd::Excluded(end) if end.as_ref() <= self.start.as_ref())
    }

    /// Bounds for `BTreeMap::range`, or `None` when the range is empty (`BTreeMap::range`
    /// panics on inverted bounds, and the bounds come from clients).
    pub fn bounds(&self) -> Option<KeyBounds<'_>> {
        if self.is_empty() {
            return None;
        }
        let start = Bound::Included(self.start.as_ref());
        let end = match &self.end {
            RangeEnd::Single => Bound::Included(self.start.as_ref()),
            RangeEnd::Unbounded => Bound::Unbounded,
            RangeEnd::Excluded(end) => Bound::Excluded(end.as_ref()),
        };
        Some((start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_conventions() {
        let a = Bytes::from_static(b"a");
        assert_eq!(KeyRange::new(&a, &Bytes::new()).end, RangeEnd::Single);
        assert_eq!(
            KeyRange::new(&a, &Bytes::from_static(b"\0")).end,
            RangeEnd::Unbounded
        );
        let r = KeyRange::new(&a, &Bytes::from_static(b"c"));
        assert!(r.contains(b"a") && r.contains(b"bz") && !r.contains(b"c"));
    }

    #[test]
    fn inverted_range_is_empty_and_has_no_bounds() {
        let r = KeyRange::new(&Bytes::from_static(b"b"), &Bytes::from_static(b"a"));
        assert!(r.is_empty());
        assert!(r.bounds().is_none());
        assert!(!r.contains(b"b"));
    }
}
