//! Writes held in memory over an engine's rows: reads merge them over the rows beneath.
//! The redb engine holds its uncommitted writes in one (`keel_storage::RedbEngine`), and
//! the store its index rows between checkpoints (see `rows.rs`).

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;

use super::engine::{EngineResult, Read, Table, Visit};

/// A key's pending write: a value, or `None` for a delete.
pub type Pending = Option<Vec<u8>>;

/// Writes taken out of an overlay, in key order.
pub type Taken = Vec<(Vec<u8>, Pending)>;

/// Writes per table, in key order.
#[derive(Debug, Default)]
pub struct Overlay {
    tables: [BTreeMap<Vec<u8>, Pending>; Table::ALL.len()],
    pub bytes: usize,
}

/// What a lookup in the overlays found.
#[derive(Debug)]
pub enum Found<'a> {
    Written(&'a [u8]),
    Deleted,
    NotHere,
}

impl Overlay {
    pub fn table(&self, table: Table) -> &BTreeMap<Vec<u8>, Pending> {
        &self.tables[table as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(BTreeMap::is_empty)
    }

    /// Bytes a row takes in [`Overlay::bytes`].
    fn row_bytes(key: &[u8], value: &Pending) -> usize {
        key.len() + value.as_ref().map_or(0, Vec::len)
    }

    pub fn write(&mut self, table: Table, key: &[u8], value: Pending) {
        self.bytes += Self::row_bytes(key, &value);
        if let Some(old) = self.tables[table as usize].insert(key.to_vec(), value) {
            self.bytes -= Self::row_bytes(key, &old);
        }
    }

    /// Forgets the write to `key`, if any.
    pub fn remove(&mut self, table: Table, key: &[u8]) {
        if let Some(old) = self.tables[table as usize].remove(key) {
            self.bytes -= Self::row_bytes(key, &old);
        }
    }

    /// Takes out the writes of `table` from `from` on, in key order, until they hold
    /// `budget_bytes` (at least one); returns them and the key the next ones start at
    /// (`None`: none are left after them).
    pub fn take_from(
        &mut self,
        table: Table,
        from: &[u8],
        budget_bytes: usize,
    ) -> (Taken, Option<Vec<u8>>) {
        let rows = &mut self.tables[table as usize];
        let mut keys = Vec::new();
        let mut taken_bytes = 0usize;
        let mut next = None;
        for (key, value) in rows.range::<[u8], _>((Bound::Included(from), Bound::Unbounded)) {
            if !keys.is_empty() && taken_bytes >= budget_bytes {
                next = Some(key.clone());
                break;
            }
            taken_bytes += Self::row_bytes(key, value);
            keys.push(key.clone());
        }
        let taken = keys
            .into_iter()
            .filter_map(|key| rows.remove_entry(&key))
            .collect();
        self.bytes -= taken_bytes;
        (taken, next)
    }

    /// Takes every write out, table by table, leaving the overlay empty.
    pub fn take(&mut self) -> Vec<(Table, BTreeMap<Vec<u8>, Pending>)> {
        self.bytes = 0;
        Table::ALL
            .iter()
            .map(|&table| (table, std::mem::take(&mut self.tables[table as usize])))
            .collect()
    }

    /// The last write of `table` in `[from, to)`, if any.
    pub fn last_in(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Option<(&[u8], &Pending)> {
        if empty_range(from, to) {
            return None;
        }
        // The last key up to `to`, then checked against `from`: one descent of the tree
        // instead of the two a two-sided range takes (a put's previous-version lookup; the
        // key comparisons were 2.5% of three members' CPU under put 8/64).
        let (key, value) = self
            .table(table)
            .range::<[u8], _>((Bound::Unbounded, to))
            .next_back()?;
        let key = key.as_slice();
        let from_ok = match from {
            Bound::Included(from) => key >= from,
            Bound::Excluded(from) => key > from,
            Bound::Unbounded => true,
        };
        from_ok.then_some((key, value))
    }

    pub fn find(&self, table: Table, key: &[u8]) -> Found<'_> {
        match self.table(table).get(key) {
            Some(Some(value)) => Found::Written(value),
            Some(None) => Found::Deleted,
            None => Found::NotHere,
        }
    }
}

/// Whether `[from, to)` holds no key at all (inverted, or one excluded point).
pub fn empty_range(from: Bound<&[u8]>, to: Bound<&[u8]>) -> bool {
    match (from, to) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a >= b
        }
        _ => false,
    }
}

type Entries<'a> = Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Pending)> + 'a>;

/// The entries of `table` in `[from, to)` of the newer overlay and the older one, in scan
/// order, the newer winning when both hold a key.
pub struct Merged<'a> {
    newer: Peekable<Entries<'a>>,
    older: Peekable<Entries<'a>>,
    reverse: bool,
}

fn entries<'a>(
    overlay: Option<&'a Overlay>,
    table: Table,
    from: Bound<&[u8]>,
    to: Bound<&[u8]>,
    reverse: bool,
) -> Peekable<Entries<'a>> {
    let iter: Entries<'a> = match overlay {
        Some(overlay) if !empty_range(from, to) => {
            let range = overlay.table(table).range::<[u8], _>((from, to));
            if reverse {
                Box::new(range.rev())
            } else {
                Box::new(range)
            }
        }
        _ => Box::new(std::iter::empty()),
    };
    iter.peekable()
}

impl std::fmt::Debug for Merged<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merged")
            .field("reverse", &self.reverse)
            .finish_non_exhaustive()
    }
}

impl<'a> Merged<'a> {
    pub fn new(
        newer: Option<&'a Overlay>,
        older: Option<&'a Overlay>,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
    ) -> Merged<'a> {
        Merged {
            newer: entries(newer, table, from, to, reverse),
            older: entries(older, table, from, to, reverse),
            reverse,
        }
    }

    /// Whether `a` comes before `b` in scan order.
    fn before(&self, a: &[u8], b: &[u8]) -> bool {
        if self.reverse {
            a > b
        } else {
            a < b
        }
    }

    fn peek_key(&mut self) -> Option<&'a [u8]> {
        let newer = self.newer.peek().map(|(k, _)| k.as_slice());
        let older = self.older.peek().map(|(k, _)| k.as_slice());
        match (newer, older) {
            (Some(n), Some(o)) => Some(if self.before(o, n) { o } else { n }),
            (n, o) => n.or(o),
        }
    }

    fn next_entry(&mut self) -> Option<(&'a [u8], &'a Pending)> {
        let key = self.peek_key()?;
        let newer = self
            .newer
            .next_if(|(k, _)| k.as_slice() == key)
            .map(|(_, v)| v);
        let older = self
            .older
            .next_if(|(k, _)| k.as_slice() == key)
            .map(|(_, v)| v);
        Some((key, newer.or(older)?))
    }
}

/// Rows of `base` in `[from, to)` with the overlays' writes merged over them, in order (or
/// reversed), until `visit` says stop.
pub fn scan_merged(
    base: &dyn Read,
    mut merged: Merged<'_>,
    table: Table,
    from: Bound<&[u8]>,
    to: Bound<&[u8]>,
    visit: Visit<'_>,
) -> EngineResult<()> {
    let reverse = merged.reverse;
    let mut stopped = false;
    base.scan(table, from, to, reverse, &mut |key, value| {
        // The overlays' entries before this row come first.
        while let Some(pending) = merged.peek_key() {
            if !merged.before(pending, key) {
                break;
            }
            if let Some((k, Some(v))) = merged.next_entry() {
                if !visit(k, v) {
                    stopped = true;
                    return false;
                }
            }
        }
        if merged.peek_key() == Some(key) {
            // Rewritten or deleted since the commit.
            if let Some((k, Some(v))) = merged.next_entry() {
                if !visit(k, v) {
                    stopped = true;
                    return false;
                }
            }
            return true;
        }
        if !visit(key, value) {
            stopped = true;
            return false;
        }
        true
    })?;
    if !stopped {
        while let Some((k, pending)) = merged.next_entry() {
            if let Some(v) = pending {
                if !visit(k, v) {
                    break;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bound(kind: u8, key: &[u8]) -> Bound<&[u8]> {
        match kind % 3 {
            0 => Bound::Included(key),
            1 => Bound::Excluded(key),
            _ => Bound::Unbounded,
        }
    }

    proptest! {
        /// `last_in` answers what the last key of a two-sided range is.
        #[test]
        fn last_in_is_the_last_write_of_the_range(
            keys in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..4), 0..24),
            from in proptest::collection::vec(0u8..4, 0..4),
            to in proptest::collection::vec(0u8..4, 0..4),
            kinds in (0u8..3, 0u8..3),
        ) {
            let mut overlay = Overlay::default();
            for key in &keys {
                overlay.write(Table::Kv, key, Some(key.clone()));
            }
            let (from, to) = (bound(kinds.0, &from), bound(kinds.1, &to));
            let expected = if empty_range(from, to) {
                None
            } else {
                overlay.table(Table::Kv).range::<[u8], _>((from, to)).next_back()
            };
            let found = overlay.last_in(Table::Kv, from, to);
            prop_assert_eq!(found.map(|(k, _)| k.to_vec()), expected.map(|(k, _)| k.clone()));
        }
    }
}
