//! RangeStream's chunks against the unary Range: concatenated, they are its `kvs`; the last
//! one carries its header revision, `more` and `count`. Chunk limits are tiny so that every
//! boundary (mid-limit, mid-filter, counting past the limit) falls inside a chunk.

use bytes::Bytes;
use keel_core::mvcc::*;
use proptest::prelude::*;

use crate::common::{b, Harness};

const TINY: ChunkLimits = ChunkLimits {
    max_kvs: 2,
    max_bytes: 64,
    max_scanned_keys: 3,
};

/// Every chunk of `request`, or the error of the first chunk that failed.
fn stream(store: &Store, request: &RangeRequest) -> Result<Vec<RangeStreamChunk>, Error> {
    let mut cursor = RangeCursor::start(store, request, TINY)?.expect("streams in key order");
    let mut chunks = Vec::new();
    loop {
        let chunk = cursor.next_chunk(store)?;
        let last = chunk.end.is_some();
        chunks.push(chunk);
        if last {
            return Ok(chunks);
        }
        assert!(chunks.len() < 10_000, "the stream does not end");
    }
}

fn assert_same_as_range(store: &Store, request: &RangeRequest) {
    let unary = store.range(request);
    let streamed = stream(store, request);
    match (unary, streamed) {
        (Ok(unary), Ok(chunks)) => {
            let (last, before) = chunks.split_last().expect("one chunk at least");
            assert!(
                before.iter().all(|c| c.end.is_none()),
                "end before the last chunk"
            );
            for chunk in &chunks {
                assert!(chunk.kvs.len() <= TINY.max_kvs, "chunk over its limit");
            }
            let kvs: Vec<KeyValue> = chunks.iter().flat_map(|c| c.kvs.clone()).collect();
            assert_eq!(kvs, unary.kvs, "kvs of {request:?}");
            let end = last.end.expect("the last chunk ends the stream");
            assert_eq!(end.count, unary.count, "count of {request:?}");
            assert_eq!(end.more, unary.more, "more of {request:?}");
            assert_eq!(end.header_revision, unary.header.revision);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (unary, streamed) => panic!("{request:?}: range {unary:?}, stream {streamed:?}"),
    }
}

fn key(i: u8) -> String {
    format!("k{i:02}")
}

#[test]
fn a_stream_over_a_prefix_concatenates_to_the_range() {
    let mut h = Harness::new();
    for i in 0..20u8 {
        h.put(&key(i), &"v".repeat(usize::from(i)));
    }
    h.delete(&key(4), "");
    let request = RangeRequest {
        key: b("k"),
        range_end: b("l"),
        ..Default::default()
    };
    assert_same_as_range(&h.store, &request);
    let chunks = stream(&h.store, &request).unwrap();
    assert!(
        chunks.len() >= 10,
        "tiny limits make many chunks: {}",
        chunks.len()
    );
}

#[test]
fn a_stream_pinned_to_a_revision_ends_with_compacted_once_compaction_passes_it() {
    let mut h = Harness::new();
    for i in 0..10u8 {
        h.put(&key(i), "a");
    }
    let request = RangeRequest {
        key: b("k"),
        range_end: b("l"),
        ..Default::default()
    };
    let mut cursor = RangeCursor::start(&h.store, &request, TINY)
        .unwrap()
        .unwrap();
    let first = cursor.next_chunk(&h.store).unwrap();
    assert!(first.end.is_none());
    // Writes after the pin do not show: the stream reads at its revision.
    h.put(&key(9), "changed");
    let second = cursor.next_chunk(&h.store).unwrap();
    assert!(second.kvs.iter().all(|kv| kv.value.as_ref() == b"a"));
    h.compact(h.store.current_revision()).unwrap();
    assert_eq!(cursor.next_chunk(&h.store), Err(Error::Compacted));
}

#[test]
fn sorted_requests_do_not_stream() {
    let h = Harness::new();
    let request = RangeRequest {
        key: b("k"),
        range_end: b("l"),
        sort_order: SortOrder::Descend,
        ..Default::default()
    };
    assert!(RangeCursor::start(&h.store, &request, TINY)
        .unwrap()
        .is_none());
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..12u8, 0..40u8).prop_map(|(k, len)| Op::Put(k, len)),
        2 => (0..12u8).prop_map(Op::Delete),
        1 => Just(Op::Compact),
    ]
}

/// Revisions up to a little past what 40 ops can reach, so future revisions are asked too.
fn request() -> impl Strategy<Value = RangeRequest> {
    let rev = || prop_oneof![Just(0i64), 0..45i64];
    (
        0..12u8,
        prop_oneof![Just(None), Just(Some(0u8)), (0..13u8).prop_map(Some)],
        0..6i64,
        rev(),
        (any::<bool>(), any::<bool>()),
        (rev(), rev(), rev(), rev()),
    )
        .prop_map(
            |(start, end, limit, revision, (keys_only, count_only), filters)| RangeRequest {
                key: b(&key(start)),
                range_end: match end {
                    None => Bytes::new(),
                    Some(0) => Bytes::from_static(b"\0"),
                    Some(e) => b(&key(e)),
                },
                limit,
                revision,
                keys_only,
                count_only,
                min_mod_revision: filters.0,
                max_mod_revision: filters.1,
                min_create_revision: filters.2,
                max_create_revision: filters.3,
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_stream_concatenates_to_the_unary_range(
        ops in proptest::collection::vec(op(), 1..40),
        requests in proptest::collection::vec(request(), 8),
    ) {
        let mut h = Harness::new();
        for op in ops {
            match op {
                Op::Put(k, len) => {
                    h.put(&key(k), &"x".repeat(usize::from(len)));
                }
                Op::Delete(k) => {
                    h.delete(&key(k), "");
                }
                Op::Compact => {
                    // Compacting the same revision twice is refused; that is no matter here.
                    let _ = h.compact(h.store.current_revision());
                }
            }
        }
        for request in &requests {
            assert_same_as_range(&h.store, request);
        }
    }
}
