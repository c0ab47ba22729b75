//! A leader's snapshot as a stream of its store's engine, and a follower writing it to disk.
//!
//! A snapshot is the engine at one commit (see `keel_core::node::snapshot_of_view`): the
//! leader reads a view of it in chunks, off the server loop, on a connection of its own, so
//! heartbeats and appends to the follower go on meanwhile; the follower writes the rows into
//! a new engine file as they come, never holding the whole store in memory, and hands the
//! `InstallSnapshot` message to its loop only once that file is durable. The loop then puts
//! the file in place of its engine (see `ServerLoop::install_engine`).
//!
//! On the wire (inside `crate::peer::frame`): `SnapshotBegin(message)`, rows frames, then
//! `SnapshotEnd { rows, checksum }`. A rows frame's body is one table's rows in key order:
//! `table (u8)`, then `key length (u32 BE) ‖ key ‖ value length (u32 BE) ‖ value`, repeated.
//! The checksum is the CRC-32C of every rows body in order; the follower refuses a stream
//! whose rows or checksum differ, a table it does not know, or keys out of order.

use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use keel_core::mvcc::{EngineError, Table, View};
use keel_core::raft::Index;
use keel_storage::{BulkWriter, Disk, STORE_FILE};

/// Rows frames are cut at about this size. The simulator's stores are small: there it is
/// small too, so that its snapshots take several chunks.
#[cfg(not(madsim))]
pub const ROWS_CHUNK_BYTES: usize = 1024 * 1024;
#[cfg(madsim)]
pub const ROWS_CHUNK_BYTES: usize = 4 * 1024;

const INCOMING_PREFIX: &str = "incoming-";
const STAGING_PREFIX: &str = "staging-";
const ENGINE_SUFFIX: &str = ".redb";

/// The file a received engine at `index` waits in for the loop to install it.
pub fn incoming_file(index: Index) -> String {
    format!("{INCOMING_PREFIX}{index:016x}{ENGINE_SUFFIX}")
}

/// Whether `name` is a received engine, whole or partial (left over after a crash).
pub fn is_received_engine(name: &str) -> bool {
    (name.starts_with(INCOMING_PREFIX) || name.starts_with(STAGING_PREFIX))
        && name.ends_with(ENGINE_SUFFIX)
}

fn table_code(table: Table) -> u8 {
    table as u8
}

fn table_of(code: u8) -> Option<Table> {
    Table::ALL.get(usize::from(code)).copied()
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    // Rows come from an engine whose keys and values are far below 4 GiB.
    out.extend_from_slice(&u32::try_from(value).unwrap_or(u32::MAX).to_be_bytes());
}

/// Reads a view's tables in chunks, for the sender.
pub struct ViewReader {
    view: Arc<dyn View>,
    table: usize,
    /// The last key sent of the current table.
    after: Option<Vec<u8>>,
    pub rows: u64,
}

impl fmt::Debug for ViewReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewReader")
            .field("table", &self.table)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ViewReader {
    pub fn new(view: Arc<dyn View>) -> ViewReader {
        ViewReader {
            view,
            table: 0,
            after: None,
            rows: 0,
        }
    }

    /// The next rows frame body, `None` once every table was read. Each read starts a new
    /// range after the last key sent, so nothing is held between chunks but the view.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, EngineError> {
        while let Some(&table) = Table::ALL.get(self.table) {
            let mut chunk = Vec::with_capacity(ROWS_CHUNK_BYTES + ROWS_CHUNK_BYTES / 4);
            chunk.push(table_code(table));
            let mut last = None;
            let mut rows = 0u64;
            let from = match &self.after {
                Some(key) => Bound::Excluded(key.as_slice()),
                None => Bound::Unbounded,
            };
            self.view
                .scan(table, from, Bound::Unbounded, false, &mut |key, value| {
                    put_u32(&mut chunk, key.len());
                    chunk.extend_from_slice(key);
                    put_u32(&mut chunk, value.len());
                    chunk.extend_from_slice(value);
                    rows += 1;
                    if chunk.len() >= ROWS_CHUNK_BYTES {
                        last = Some(key.to_vec());
                        return false;
                    }
                    true
                })?;
            self.rows += rows;
            match last {
                // The chunk filled up: this table goes on in the next one.
                Some(key) => {
                    self.after = Some(key);
                    return Ok(Some(chunk));
                }
                None => {
                    self.table += 1;
                    self.after = None;
                    if rows > 0 {
                        return Ok(Some(chunk));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Where a follower writes received engines: the data dir.
pub trait SnapshotInbox: Send + Sync + fmt::Debug {
    /// Starts receiving the engine of the snapshot at `index`.
    fn begin(&self, index: Index) -> Result<Box<dyn StagedSnapshot>, String>;
}

/// One engine being received.
pub trait StagedSnapshot: Send {
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), String>;
    /// Checks the stream's end, commits durably, closes the engine and puts it where the
    /// loop finds it ([`incoming_file`]).
    fn finish(self: Box<Self>, rows: u64, checksum: u32) -> Result<(), String>;
    /// Removes what was written (best effort).
    fn abandon(self: Box<Self>);
}

/// The [`SnapshotInbox`] of a data dir on `D`.
pub struct DiskInbox<D: Disk> {
    disk: Mutex<D>,
    cache_size_bytes: usize,
}

impl<D: Disk> fmt::Debug for DiskInbox<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskInbox").finish_non_exhaustive()
    }
}

impl<D: Disk> DiskInbox<D> {
    pub fn new(disk: D, cache_size_bytes: usize) -> DiskInbox<D> {
        DiskInbox {
            disk: Mutex::new(disk),
            cache_size_bytes,
        }
    }
}

impl<D: Disk + Send + 'static> SnapshotInbox for DiskInbox<D> {
    fn begin(&self, index: Index) -> Result<Box<dyn StagedSnapshot>, String> {
        let disk = self
            .disk
            .lock()
            .map_err(|_| "the inbox's disk lock is poisoned".to_string())?;
        let staging_disk = disk.share().map_err(|e| e.to_string())?;
        let mut control = disk.share().map_err(|e| e.to_string())?;
        // One stream per file: a retry of the same snapshot may overlap a slow first try.
        let names = control.list().map_err(|e| e.to_string())?;
        let name = (0u32..)
            .map(|n| format!("{STAGING_PREFIX}{index:016x}-{n}{ENGINE_SUFFIX}"))
            .find(|candidate| !names.contains(candidate))
            .unwrap_or_default();
        let writer = BulkWriter::create(staging_disk, &name, self.cache_size_bytes)
            .map_err(|e| e.to_string())?;
        drop(disk);
        Ok(Box::new(Staging {
            writer,
            control,
            name,
            index,
            rows: 0,
            checksum: 0,
        }))
    }
}

struct Staging<D: Disk> {
    writer: BulkWriter,
    /// For renaming and removing the file.
    control: D,
    name: String,
    index: Index,
    rows: u64,
    checksum: u32,
}

/// A key and its value, as a rows frame holds them.
type Row<'a> = (&'a [u8], &'a [u8]);

/// The next length-prefixed field of `rest`.
fn take_field<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let (len, tail) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| "a row is cut short".to_string())?;
    let len = u32::from_be_bytes(*len) as usize;
    if tail.len() < len {
        return Err("a row is cut short".into());
    }
    let (field, tail) = tail.split_at(len);
    *rest = tail;
    Ok(field)
}

/// Splits a rows frame body into its table and rows, checking every length and the order.
fn parse_chunk(chunk: &[u8]) -> Result<(Table, Vec<Row<'_>>), String> {
    let (&code, mut rest) = chunk
        .split_first()
        .ok_or_else(|| "an empty rows frame".to_string())?;
    let table = table_of(code).ok_or_else(|| format!("unknown table {code}"))?;
    let mut rows = Vec::new();
    while !rest.is_empty() {
        let key = take_field(&mut rest)?;
        let value = take_field(&mut rest)?;
        if rows.last().is_some_and(|(previous, _)| *previous >= key) {
            return Err(format!("rows of table {} out of order", table.name()));
        }
        rows.push((key, value));
    }
    Ok((table, rows))
}

impl<D: Disk + Send> StagedSnapshot for Staging<D> {
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), String> {
        let (table, rows) = parse_chunk(chunk)?;
        self.writer.write(table, &rows).map_err(|e| e.to_string())?;
        self.rows += rows.len() as u64;
        self.checksum = crc32c::crc32c_append(self.checksum, chunk);
        Ok(())
    }

    fn finish(self: Box<Self>, rows: u64, checksum: u32) -> Result<(), String> {
        if (rows, checksum) != (self.rows, self.checksum) {
            let problem = format!(
                "the stream ended after {} rows (checksum {:#010x}), its end says {rows} \
                 ({checksum:#010x})",
                self.rows, self.checksum
            );
            self.abandon();
            return Err(problem);
        }
        let Staging {
            writer,
            mut control,
            name,
            index,
            ..
        } = *self;
        writer.finish().map_err(|e| e.to_string())?;
        control
            .rename(&name, &incoming_file(index))
            .and_then(|()| control.sync_dir())
            .map_err(|e| e.to_string())
    }

    fn abandon(self: Box<Self>) {
        let Staging {
            writer,
            mut control,
            name,
            ..
        } = *self;
        drop(writer);
        let _ = control.remove(&name);
    }
}

/// Removes received engines a crash or a refused snapshot left behind.
pub fn remove_received_engines<D: Disk>(disk: &mut D) -> std::io::Result<()> {
    let stale: Vec<String> = disk
        .list()?
        .into_iter()
        .filter(|name| is_received_engine(name))
        .collect();
    for name in &stale {
        disk.remove(name)?;
    }
    if !stale.is_empty() {
        disk.sync_dir()?;
    }
    Ok(())
}

/// Puts the received engine of `index` in place of the store's engine file (the caller
/// closed the old one), durably.
pub fn replace_engine<D: Disk>(disk: &mut D, index: Index) -> std::io::Result<()> {
    disk.rename(&incoming_file(index), STORE_FILE)?;
    disk.sync_dir()?;
    remove_received_engines(disk)
}

#[cfg(test)]
mod tests {
    use keel_core::mvcc::{Engine, MemEngine, Read};
    use keel_storage::{Faults, RedbEngine, SimDisk, SimDiskConfig};

    use super::*;

    fn rows_of(engine: &dyn Read) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let mut rows = Vec::new();
        for table in Table::ALL {
            engine
                .scan(
                    table,
                    Bound::Unbounded,
                    Bound::Unbounded,
                    false,
                    &mut |k, v| {
                        rows.push((table, k.to_vec(), v.to_vec()));
                        true
                    },
                )
                .unwrap();
        }
        rows
    }

    fn source() -> MemEngine {
        let mut engine = MemEngine::default();
        for i in 0..3000u32 {
            let value = vec![(i % 251) as u8; 700];
            engine.put(Table::Kv, &i.to_be_bytes(), &value).unwrap();
            engine.put(Table::Log, &i.to_be_bytes(), b"k").unwrap();
        }
        engine.put(Table::Meta, b"store", b"state").unwrap();
        engine.commit(true).unwrap();
        engine
    }

    #[test]
    fn a_view_streams_into_an_engine_file_that_holds_the_same_rows() {
        let source = source();
        let mut reader = ViewReader::new(source.view().unwrap());
        let disk = SimDisk::new(SimDiskConfig::new(1, Faults::none()));
        let inbox = DiskInbox::new(disk.clone(), 1 << 20);
        let mut staged = inbox.begin(42).unwrap();
        let mut checksum = 0;
        let mut chunks = 0;
        while let Some(chunk) = reader.next_chunk().unwrap() {
            assert!(
                chunk.len() < ROWS_CHUNK_BYTES + 2048,
                "chunks stay near their size"
            );
            checksum = crc32c::crc32c_append(checksum, &chunk);
            staged.write_chunk(&chunk).unwrap();
            chunks += 1;
        }
        assert!(chunks > 2, "the store takes several chunks");
        assert_eq!(reader.rows, 6001);
        staged.finish(reader.rows, checksum).unwrap();
        let mut control = disk.clone();
        let names = control.list().unwrap();
        assert!(names.contains(&incoming_file(42)), "{names:?}");
        replace_engine(&mut control, 42).unwrap();
        let received = RedbEngine::open(disk, 1 << 20).unwrap();
        assert_eq!(rows_of(&received), rows_of(&source));
    }

    #[test]
    fn a_stream_cut_short_or_damaged_is_refused_and_leaves_nothing() {
        let source = source();
        let mut reader = ViewReader::new(source.view().unwrap());
        let disk = SimDisk::new(SimDiskConfig::new(1, Faults::none()));
        let inbox = DiskInbox::new(disk.clone(), 1 << 20);
        let mut staged = inbox.begin(7).unwrap();
        let first = reader.next_chunk().unwrap().unwrap();
        staged.write_chunk(&first).unwrap();
        let error = staged.finish(reader.rows + 1, 0).unwrap_err();
        assert!(error.contains("ended after"), "{error}");
        let mut control = disk.clone();
        assert!(control
            .list()
            .unwrap()
            .iter()
            .all(|n| !is_received_engine(n)));
        let mut staged = inbox.begin(7).unwrap();
        let mut bad = first.clone();
        bad[0] = 99;
        assert!(staged
            .write_chunk(&bad)
            .unwrap_err()
            .contains("unknown table"));
        let cut = &first[..first.len() - 3];
        assert!(staged.write_chunk(cut).unwrap_err().contains("cut short"));
        staged.abandon();
        assert!(control
            .list()
            .unwrap()
            .iter()
            .all(|n| !is_received_engine(n)));
    }
}
