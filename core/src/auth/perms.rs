//! Permissions on keys and key ranges, decided as etcd's `range_perm_cache.go` does.
//!
//! A permission covers an interval of keys: `[key, range_end)`; `range_end` empty means the
//! single key (the interval `[key, key + "\0")`), and `range_end == "\0"` means every key from
//! `key` on. A request on one key is allowed when some permission of the right kind holds
//! that key; a request on a range is allowed only when the union of the permissions of the
//! right kind covers the whole range.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// etcd's `authpb.Permission.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PermissionType {
    Read,
    Write,
    ReadWrite,
}

impl PermissionType {
    /// Whether a permission of this type allows an access of kind `wanted` (Read or Write).
    pub fn allows(self, wanted: Access) -> bool {
        matches!(
            (self, wanted),
            (PermissionType::ReadWrite, _)
                | (PermissionType::Read, Access::Read)
                | (PermissionType::Write, Access::Write)
        )
    }
}

/// The kind of access a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One permission of a role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub kind: PermissionType,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

impl Permission {
    /// The keys this permission covers.
    fn interval(&self) -> Interval {
        if self.range_end.is_empty() {
            return Interval::point(&self.key);
        }
        Interval::range(&self.key, &self.range_end)
    }
}

/// etcd's rule for a permission's range: a key is needed; `range_end` empty (one key),
/// after the key, or `"\0"` (open-ended).
pub fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    range_end.is_empty() || is_open_ended(range_end) || key < range_end
}

fn is_open_ended(range_end: &[u8]) -> bool {
    range_end == [0]
}

/// An end of an interval: a key, or past every key (`None`).
type End = Option<Vec<u8>>;

fn compare_ends(a: &End, b: &End) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => a.cmp(b),
    }
}

/// A half-open interval of keys `[begin, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    begin: Vec<u8>,
    end: End,
}

impl Interval {
    fn point(key: &[u8]) -> Interval {
        let mut end = key.to_vec();
        end.push(0);
        Interval {
            begin: key.to_vec(),
            end: Some(end),
        }
    }

    fn range(key: &[u8], range_end: &[u8]) -> Interval {
        Interval {
            begin: key.to_vec(),
            end: (!is_open_ended(range_end)).then(|| range_end.to_vec()),
        }
    }

    fn intersects(&self, other: &Interval) -> bool {
        let begins_before_other_ends = match &other.end {
            None => true,
            Some(end) => self.begin < *end,
        };
        let other_begins_before_end = match &self.end {
            None => true,
            Some(end) => other.begin < *end,
        };
        begins_before_other_ends && other_begins_before_end
    }
}

/// Whether `permissions` allow `access` to `key` (with `range_end` as in a request: empty for
/// one key, `"\0"` for every key from `key` on).
pub fn is_permitted<'a>(
    permissions: impl IntoIterator<Item = &'a Permission>,
    access: Access,
    key: &[u8],
    range_end: &[u8],
) -> bool {
    let relevant = permissions
        .into_iter()
        .filter(|p| p.kind.allows(access))
        .map(Permission::interval);
    if range_end.is_empty() {
        let wanted = Interval::point(key);
        return relevant
            .into_iter()
            .any(|held| held.begin.as_slice() <= key && wanted.intersects(&held));
    }
    covers(relevant, &Interval::range(key, range_end))
}

/// Whether the union of `held` covers `wanted`, as etcd's `IntervalTree.Contains`: the held
/// intervals meeting `wanted`, in order, must leave no gap, start at or before its start
/// and end at or after its end.
fn covers(held: impl Iterator<Item = Interval>, wanted: &Interval) -> bool {
    let mut meeting: Vec<Interval> = held.filter(|h| h.intersects(wanted)).collect();
    meeting.sort_by(|a, b| a.begin.cmp(&b.begin));
    let mut iter = meeting.into_iter();
    let Some(first) = iter.next() else {
        return false;
    };
    if first.begin > wanted.begin {
        return false;
    }
    let mut reach = first.end;
    for next in iter {
        let gap = match &reach {
            None => false,
            Some(reach) => *reach < next.begin,
        };
        if gap {
            return false;
        }
        if compare_ends(&next.end, &reach) == Ordering::Greater {
            reach = next.end;
        }
    }
    compare_ends(&reach, &wanted.end) != Ordering::Less
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermissionType, key: &str, end: &str) -> Permission {
        Permission {
            kind,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }
    }

    fn read(perms: &[Permission], key: &str, end: &str) -> bool {
        is_permitted(perms, Access::Read, key.as_bytes(), end.as_bytes())
    }

    #[test]
    fn a_single_key_permission_allows_that_key_only() {
        let perms = [perm(PermissionType::Read, "a", "")];
        assert!(read(&perms, "a", ""));
        assert!(!read(&perms, "a0", ""));
        assert!(!read(&perms, "b", ""));
        // The range holding just "a" is covered too ([a, a\0)).
        assert!(read(&perms, "a", "a\0"));
        assert!(!read(&perms, "a", "b"));
    }

    #[test]
    fn a_prefix_permission_allows_keys_and_ranges_inside_it() {
        let perms = [perm(PermissionType::ReadWrite, "app/", "app0")];
        assert!(read(&perms, "app/x", ""));
        assert!(read(&perms, "app/", "app0"));
        assert!(read(&perms, "app/x", "app/y"));
        assert!(!read(&perms, "app", ""));
        assert!(!read(&perms, "app/", "b"));
        assert!(!read(&perms, "app/", "\0"));
    }

    #[test]
    fn the_kind_must_match_the_access() {
        let perms = [perm(PermissionType::Read, "k", "")];
        assert!(is_permitted(&perms, Access::Read, b"k", b""));
        assert!(!is_permitted(&perms, Access::Write, b"k", b""));
        let perms = [perm(PermissionType::Write, "k", "")];
        assert!(!is_permitted(&perms, Access::Read, b"k", b""));
        assert!(is_permitted(&perms, Access::Write, b"k", b""));
    }

    #[test]
    fn adjacent_permissions_cover_a_range_together_but_a_gap_denies() {
        let perms = [
            perm(PermissionType::Read, "a", "c"),
            perm(PermissionType::Read, "c", "e"),
        ];
        assert!(read(&perms, "a", "e"));
        assert!(read(&perms, "b", "d"));
        let gapped = [
            perm(PermissionType::Read, "a", "c"),
            perm(PermissionType::Read, "d", "e"),
        ];
        assert!(!read(&gapped, "a", "e"));
        assert!(read(&gapped, "a", "c"));
    }

    #[test]
    fn open_ended_permissions_and_requests() {
        let perms = [perm(PermissionType::Read, "m", "\0")];
        assert!(read(&perms, "m", "\0"));
        assert!(read(&perms, "z", "\0"));
        assert!(read(&perms, "zzz", ""));
        assert!(!read(&perms, "a", "\0"));
        let bounded = [perm(PermissionType::Read, "m", "z")];
        assert!(!read(&bounded, "m", "\0"));
    }

    #[test]
    fn no_permission_allows_nothing() {
        assert!(!read(&[], "a", ""));
        assert!(!read(&[], "a", "b"));
    }

    #[test]
    fn permission_ranges_are_validated_as_etcd_does() {
        assert!(is_valid_permission_range(b"a", b""));
        assert!(is_valid_permission_range(b"a", b"b"));
        assert!(is_valid_permission_range(b"a", b"\0"));
        assert!(!is_valid_permission_range(b"", b""));
        assert!(!is_valid_permission_range(b"b", b"a"));
        assert!(!is_valid_permission_range(b"a", b"a"));
    }
}
