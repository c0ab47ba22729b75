//! The engine under the store: a few ordered tables of bytes, written in one open
//! transaction that [`Engine::commit`] makes visible (and, when asked, durable). The store's
//! logic (revisions, histories, compaction, leases) is written once against this trait; the
//! server runs it on redb over the `Disk` (`keel_storage::engine`), tests and the pure core
//! on [`MemEngine`]. The trait does no IO of its own, so the core stays pure.
//!
//! Errors: an engine that fails (a read or write the disk refused) is of no use any more:
//! the store remembers the first failure and the node stops (see `Store::failure`).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use thiserror::Error;

/// The store's tables. Rows are ordered by their key bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Every version of every key: `escaped key ‖ main ‖ sub` → entry.
    Kv,
    /// Every change in revision order: `main ‖ sub` → key (watch catch-up, compaction).
    Log,
    /// Bytes that become unreachable when compaction reaches a revision: `main` → bytes.
    Garbage,
    /// Leases: `id` → TTL and remaining TTL.
    Leases,
    /// Keys attached to leases: `id ‖ key` → nothing.
    LeaseKeys,
    /// The store's scalars (revisions, size, applied index, alarms) and the node's
    /// (membership, auth, Raft position), by name.
    Meta,
    /// The value of every version that is not a tombstone: `main ‖ sub` → value. Kept
    /// apart from `Kv` so the key-ordered table holds small rows and values are appended
    /// in revision order.
    Values,
    /// `Garbage` summed by 1,024 revisions: `main / 1024` → bytes (see `garbage.rs`).
    /// Last, so the tables before it keep their codes in snapshot streams.
    GarbageBuckets,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::Kv,
        Table::Log,
        Table::Garbage,
        Table::Leases,
        Table::LeaseKeys,
        Table::Meta,
        Table::Values,
        Table::GarbageBuckets,
    ];

    /// The table's name in a database file.
    pub fn name(self) -> &'static str {
        match self {
            Table::Kv => "kv",
            Table::Log => "log",
            Table::Garbage => "garbage",
            Table::Leases => "leases",
            Table::LeaseKeys => "lease_keys",
            Table::Meta => "meta",
            Table::Values => "values",
            Table::GarbageBuckets => "garbage_buckets",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("storage engine: {0}")]
pub struct EngineError(pub String);

pub type EngineResult<T> = Result<T, EngineError>;

/// Every key of `table`, in key order (or reverse).
pub(crate) fn keys_of(
    engine: &dyn Read,
    table: Table,
    reverse: bool,
) -> EngineResult<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let (all, none) = (Bound::Unbounded, Bound::Unbounded);
    engine.scan(table, all, none, reverse, &mut |key, _| {
        keys.push(key.to_vec());
        true
    })?;
    Ok(keys)
}

/// Called for each row of a scan; returns false to stop.
pub type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> bool;

/// Reads of a consistent state.
pub trait Read {
    fn get(&self, table: Table, key: &[u8]) -> EngineResult<Option<Vec<u8>>>;

    /// Rows with keys in `[from, to)` bounds, in key order (or reverse).
    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> EngineResult<()>;
}

/// A read view of the last commit, for work off the store's thread (snapshots streamed to
/// followers, backups): it stays what it was while the store goes on.
pub trait View: Read + Send + Sync + fmt::Debug {}

/// The store's engine: reads see every write at once; commits make the writes so far
/// visible to views and (when asked) durable.
pub trait Engine: Read + Send + fmt::Debug {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> EngineResult<()>;
    fn delete(&mut self, table: Table, key: &[u8]) -> EngineResult<()>;

    /// Commits every write so far; `durable`: on disk when it returns. Waits for a commit
    /// begun with [`Engine::begin_commit`] first.
    fn commit(&mut self, durable: bool) -> EngineResult<()>;

    /// Starts a durable commit of every write so far and returns without waiting for the
    /// disk (a server's engine does the IO on a thread of its own, so applying goes on);
    /// it waits only for the commit begun before, if that is still going. The default
    /// commits at once.
    fn begin_commit(&mut self) -> EngineResult<()> {
        self.commit(true)
    }

    /// Whether the commit last begun is done (then [`Engine::view`] shows it); its error
    /// if it failed.
    fn commit_done(&mut self) -> EngineResult<bool> {
        Ok(true)
    }

    /// How long the last finished durable commit took, in milliseconds, if known.
    fn last_commit_ms(&self) -> Option<u64> {
        None
    }

    /// A view of the last commit.
    fn view(&self) -> EngineResult<Arc<dyn View>>;

    /// Bytes the engine takes on disk (0 in memory), and of those, in use.
    fn size_on_disk(&self) -> (u64, u64) {
        (0, 0)
    }

    /// Starts rewriting the engine's file without its free pages while reads and commits go
    /// on; the answer tells when it is over. One already under way is joined. Engines in
    /// memory have nothing to do.
    fn begin_defragment(&mut self) -> EngineResult<Defragmenting> {
        Ok(Defragmenting::finished(Ok(())))
    }
}

/// The outcome of a defragment (see [`Engine::begin_defragment`]), once there is one. The
/// engine's writer fills it in; whoever asked polls it.
#[derive(Clone, Debug, Default)]
pub struct Defragmenting(Arc<std::sync::Mutex<Option<Result<(), String>>>>);

impl Defragmenting {
    /// A defragment under way.
    pub fn pending() -> Self {
        Defragmenting::default()
    }

    /// One that is over already.
    pub fn finished(outcome: Result<(), String>) -> Self {
        let done = Defragmenting::default();
        done.finish(outcome);
        done
    }

    /// Records how it ended (the first outcome stays).
    pub fn finish(&self, outcome: Result<(), String>) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(outcome);
        }
    }

    /// How it ended, once it has: an error says why the file was left as it was.
    pub fn outcome(&self) -> Option<Result<(), String>> {
        match self.0.lock() {
            Ok(slot) => slot.clone(),
            Err(_) => Some(Err("the defragment's state is poisoned".into())),
        }
    }
}

type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

/// Tables in memory: the reference engine, for tests and the pure core.
#[derive(Clone, Debug, Default)]
pub struct MemEngine {
    tables: BTreeMap<Table, Rows>,
    committed: Arc<MemView>,
}

/// A committed state of a [`MemEngine`].
#[derive(Clone, Debug, Default)]
pub struct MemView {
    tables: BTreeMap<Table, Rows>,
}

fn get_in(tables: &BTreeMap<Table, Rows>, table: Table, key: &[u8]) -> Option<Vec<u8>> {
    tables.get(&table).and_then(|rows| rows.get(key)).cloned()
}

fn scan_in(
    tables: &BTreeMap<Table, Rows>,
    table: Table,
    from: Bound<&[u8]>,
    to: Bound<&[u8]>,
    reverse: bool,
    visit: Visit<'_>,
) {
    let Some(rows) = tables.get(&table) else {
        return;
    };
    if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
        (from, to)
    {
        // BTreeMap::range panics on an empty or inverted range; it holds nothing.
        if a > b || (a == b && !matches!((from, to), (Bound::Included(_), Bound::Included(_)))) {
            return;
        }
    }
    let range = rows.range::<[u8], _>((from, to));
    if reverse {
        for (k, v) in range.rev() {
            if !visit(k, v) {
                return;
            }
        }
    } else {
        for (k, v) in range {
            if !visit(k, v) {
                return;
            }
        }
    }
}

impl Read for MemEngine {
    fn get(&self, table: Table, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(get_in(&self.tables, table, key))
    }

    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> EngineResult<()> {
        scan_in(&self.tables, table, from, to, reverse, visit);
        Ok(())
    }
}

impl Read for MemView {
    fn get(&self, table: Table, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(get_in(&self.tables, table, key))
    }

    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> EngineResult<()> {
        scan_in(&self.tables, table, from, to, reverse, visit);
        Ok(())
    }
}

impl View for MemView {}

impl Engine for MemEngine {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> EngineResult<()> {
        self.tables
            .entry(table)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> EngineResult<()> {
        if let Some(rows) = self.tables.get_mut(&table) {
            rows.remove(key);
        }
        Ok(())
    }

    fn commit(&mut self, _durable: bool) -> EngineResult<()> {
        self.committed = Arc::new(MemView {
            tables: self.tables.clone(),
        });
        Ok(())
    }

    fn view(&self) -> EngineResult<Arc<dyn View>> {
        Ok(self.committed.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(engine: &dyn Read, table: Table, reverse: bool) -> Vec<Vec<u8>> {
        keys_of(engine, table, reverse).unwrap()
    }

    #[test]
    fn writes_are_read_back_at_once_and_views_see_the_last_commit() {
        let mut engine = MemEngine::default();
        engine.put(Table::Kv, b"b", b"2").unwrap();
        engine.put(Table::Kv, b"a", b"1").unwrap();
        assert_eq!(engine.get(Table::Kv, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            rows(&engine, Table::Kv, false),
            [b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            rows(&engine, Table::Kv, true),
            [b"b".to_vec(), b"a".to_vec()]
        );
        let before = engine.view().unwrap();
        engine.commit(false).unwrap();
        let after = engine.view().unwrap();
        engine.delete(Table::Kv, b"a").unwrap();
        assert_eq!(before.get(Table::Kv, b"a").unwrap(), None);
        assert_eq!(after.get(Table::Kv, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(Table::Kv, b"a").unwrap(), None);
    }

    #[test]
    fn empty_and_inverted_ranges_hold_nothing() {
        let mut engine = MemEngine::default();
        engine.put(Table::Log, b"m", b"").unwrap();
        let mut seen = 0;
        let mut count = |_: &[u8], _: &[u8]| {
            seen += 1;
            true
        };
        engine
            .scan(
                Table::Log,
                Bound::Included(&b"z"[..]),
                Bound::Excluded(&b"a"[..]),
                false,
                &mut count,
            )
            .unwrap();
        engine
            .scan(
                Table::Log,
                Bound::Included(&b"m"[..]),
                Bound::Excluded(&b"m"[..]),
                false,
                &mut count,
            )
            .unwrap();
        assert_eq!(seen, 0);
    }
}
