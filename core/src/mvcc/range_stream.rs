//! RangeStream (etcd 3.7's `KV.RangeStream`): one Range answered in chunks, every chunk a
//! bounded read of the store at the revision the first one pinned, so a client reads a
//! prefix of any size while neither side holds more than a chunk (etcd#12342: a unary
//! LIST of a large prefix runs a server out of memory).
//!
//! The chunks' `kvs`, concatenated, are the unary Range's `kvs`; the last chunk says the
//! header revision, `more` and `count`, exactly as the unary Range would have at the pinned
//! revision. Only key order streams (no sort, or ascending by key): other sorts need every
//! result before the first, so [`RangeCursor::start`] refuses them and the caller answers
//! them from a unary Range.

use bytes::Bytes;

use super::error::Error;
use super::key_index::Entry;
use super::request::{KeyValue, RangeRequest, SortOrder, SortTarget};
use super::revision::KeyRange;
use super::store::Store;
use super::validate::check_range;

/// How much one chunk may hold and how many keys one chunk's read may visit (counting goes
/// on past `limit`, and filters may skip most keys: the visit is bounded either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLimits {
    pub max_kvs: usize,
    pub max_bytes: usize,
    pub max_scanned_keys: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_kvs: 500,
            max_bytes: 256 * 1024,
            max_scanned_keys: 10_000,
        }
    }
}

/// What the last chunk adds to its `kvs`: the unary Range's header revision, `more` and
/// `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeStreamEnd {
    pub header_revision: i64,
    pub more: bool,
    pub count: i64,
}

/// One chunk: a slice of the result in key order; `end` on the last one only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeStreamChunk {
    pub kvs: Vec<KeyValue>,
    pub end: Option<RangeStreamEnd>,
}

/// Where a RangeStream stands between chunks. Small (the request and a key), so it can
/// travel to the store and back for every chunk.
#[derive(Clone, Debug)]
pub struct RangeCursor {
    request: RangeRequest,
    limits: ChunkLimits,
    /// The revision every chunk reads at.
    rev: i64,
    /// The store's revision when the stream began (etcd's Range header reports it).
    header_rev: i64,
    /// Where the next chunk's read starts; `None` once the range is read to its end.
    next: Option<Bytes>,
    /// Live keys seen so far (etcd's `count`: before filters and limit).
    count: i64,
    /// Keys that passed the filters so far (those after `limit` are not sent: `more`).
    matched: i64,
}

impl RangeCursor {
    /// Pins the stream to the request's revision (the current one if 0), with the checks
    /// and typed errors of `Store::range`; `None` for a sorted request, which only a unary
    /// Range answers.
    pub fn start(
        store: &Store,
        request: &RangeRequest,
        limits: ChunkLimits,
    ) -> Result<Option<RangeCursor>, Error> {
        store.healthy()?;
        check_range(request)?;
        let rev = store.read_revision(request.revision, store.current_revision())?;
        if !streams_in_key_order(request) {
            return Ok(None);
        }
        assert!(limits.max_kvs > 0 && limits.max_bytes > 0 && limits.max_scanned_keys > 0);
        Ok(Some(RangeCursor {
            request: request.clone(),
            limits,
            rev,
            header_rev: store.current_revision(),
            next: Some(request.key.clone()),
            count: 0,
            matched: 0,
        }))
    }

    /// The revision the stream reads at.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// Reads the next chunk. It may hold no kvs (a stretch of filtered or counted-only
    /// keys); the last one has `end`. A compaction past the pinned revision since the last
    /// chunk ends the stream with `Error::Compacted`, as a Range at that revision would.
    pub fn next_chunk(&mut self, store: &Store) -> Result<RangeStreamChunk, Error> {
        store.healthy()?;
        let Some(from) = self.next.take() else {
            return Ok(RangeStreamChunk {
                kvs: Vec::new(),
                end: Some(self.end()),
            });
        };
        if self.rev < store.compact_revision() {
            return Err(Error::Compacted);
        }
        let range = KeyRange::new(&self.request.key, &self.request.range_end);
        let Some((_, end)) = range.bounds() else {
            return Ok(RangeStreamChunk {
                kvs: Vec::new(),
                end: Some(self.end()),
            });
        };
        let mut chunk = Vec::new();
        let (mut bytes, mut scanned) = (0usize, 0usize);
        let mut resume_at = None;
        store.for_each_live_at(&from, end, self.rev, &mut |key, entry| {
            if scanned >= self.limits.max_scanned_keys
                || chunk.len() >= self.limits.max_kvs
                || bytes >= self.limits.max_bytes
            {
                resume_at = Some(key.clone());
                return false;
            }
            scanned += 1;
            self.count += 1;
            if let Some(kv) = self.take(store, key, entry) {
                bytes += kv.key.len() + kv.value.len();
                chunk.push(kv);
            }
            true
        });
        // A read the engine failed part-way through is not an answer.
        store.healthy()?;
        self.next = resume_at;
        let end = self.next.is_none().then(|| self.end());
        Ok(RangeStreamChunk { kvs: chunk, end })
    }

    /// The key-value to send for a live key, if it passes the filters and the limit.
    fn take(&mut self, store: &Store, key: &Bytes, entry: &Entry) -> Option<KeyValue> {
        let request = &self.request;
        let passes = (request.max_mod_revision == 0 || entry.rev.main <= request.max_mod_revision)
            && (request.min_mod_revision == 0 || entry.rev.main >= request.min_mod_revision)
            && (request.max_create_revision == 0
                || entry.create_revision <= request.max_create_revision)
            && (request.min_create_revision == 0
                || entry.create_revision >= request.min_create_revision);
        if !passes {
            return None;
        }
        self.matched += 1;
        if request.count_only || (request.limit > 0 && self.matched > request.limit) {
            return None;
        }
        let mut entry = entry.clone();
        if !request.keys_only {
            store.load_value(&mut entry);
        }
        Some(entry.to_kv(key))
    }

    fn end(&self) -> RangeStreamEnd {
        RangeStreamEnd {
            header_revision: self.header_rev,
            more: !self.request.count_only
                && self.request.limit > 0
                && self.matched > self.request.limit,
            count: self.count,
        }
    }
}

/// Whether the result comes in key order, so it can be sent as it is read.
fn streams_in_key_order(request: &RangeRequest) -> bool {
    request.sort_target == SortTarget::Key
        && matches!(request.sort_order, SortOrder::None | SortOrder::Ascend)
}
