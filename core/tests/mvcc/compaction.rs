use std::ops::Bound;

use keel_core::mvcc::*;

use crate::common::*;

#[test]
fn compacting_to_a_future_revision_is_future_rev_and_twice_is_compacted() {
    let mut h = Harness::new();
    h.put("a", "1");
    assert_eq!(h.compact(3).unwrap_err(), Error::FutureRev);
    h.compact(2).unwrap();
    assert_eq!(h.compact(2).unwrap_err(), Error::Compacted);
    assert_eq!(h.compact(1).unwrap_err(), Error::Compacted);
}

#[test]
fn compaction_does_not_bump_the_revision_and_answers_with_the_current_one() {
    let mut h = Harness::new();
    h.put("a", "1");
    h.put("a", "2");
    let r = h.compact(2).unwrap();
    assert_eq!(r.header.revision, 3);
    assert_eq!(h.rev(), 3);
}

#[test]
fn compaction_keeps_the_latest_version_of_live_keys_and_drops_deleted_keys() {
    let mut h = Harness::new();
    h.put("a", "1");
    h.put("a", "2");
    h.put("b", "1");
    h.delete("b", "");
    h.put("c", "1");
    h.compact(h.rev()).unwrap();
    let stats = h.store.stats();
    assert_eq!(stats.keys, 2, "b's history is gone");
    assert_eq!(stats.entries, 2, "one version each for a and c");
    assert_eq!(h.get("a").unwrap().value, b("2"));
    assert_eq!(
        h.get("a").unwrap().version,
        2,
        "versions survive compaction"
    );
}

#[test]
fn a_large_compaction_proceeds_in_bounded_steps_while_reads_see_it_at_once() {
    let config = StoreConfig {
        compaction_batch_revisions: 10,
        ..StoreConfig::default()
    };
    let mut h = Harness::with_config(config);
    for i in 0..100 {
        h.put(&format!("k{:03}", i % 10), &i.to_string());
    }
    h.compact(h.rev()).unwrap();
    let hash_before = h.store.hash_kv(0).unwrap().hash;
    let stats = h.store.stats();
    assert!(
        stats.compaction_backlog > 0,
        "only one bounded step ran: {stats:?}"
    );
    let mut req = get("k000");
    req.revision = h.rev() - 5;
    assert_eq!(h.store.range(&req).unwrap_err(), Error::Compacted);
    let mut steps = 0;
    while h.store.compaction_step(10) {
        steps += 1;
        assert_eq!(
            h.store.hash_kv(0).unwrap().hash,
            hash_before,
            "physical progress is invisible"
        );
    }
    assert!(steps >= 5);
    assert_eq!(h.store.stats().entries, 10);
    assert_eq!(h.store.stats().compaction_backlog, 0);
}

#[test]
fn size_estimate_drops_at_compaction_by_what_became_unreachable() {
    let mut h = Harness::new();
    h.put("a", "1");
    let one = h.store.stats().size_bytes;
    h.put("a", "2");
    h.put("a", "3");
    assert_eq!(h.store.stats().size_bytes, 3 * one);
    h.compact(h.rev()).unwrap();
    assert_eq!(h.store.stats().size_bytes, one);
    h.delete("a", "");
    h.compact(h.rev()).unwrap();
    let tombstone = h.store.stats().size_bytes;
    assert!(
        tombstone > 0 && tombstone < one,
        "a delete at the compact revision stays for watches"
    );
    h.put("b", "1");
    h.compact(h.rev()).unwrap();
    assert_eq!(h.store.stats().size_bytes, one);
}

#[test]
fn hash_kv_covers_history_up_to_a_revision_and_refuses_compacted_ones() {
    let mut h = Harness::new();
    h.put("a", "1");
    let at2 = h.store.hash_kv(2).unwrap();
    h.put("a", "2");
    assert_eq!(h.store.hash_kv(2).unwrap().hash, at2.hash);
    assert_ne!(h.store.hash_kv(3).unwrap().hash, at2.hash);
    assert_eq!(h.store.hash_kv(4).unwrap_err(), Error::FutureRev);
    h.compact(3).unwrap();
    assert_eq!(h.store.hash_kv(2).unwrap_err(), Error::Compacted);
    let r = h.store.hash_kv(0).unwrap();
    assert_eq!((r.compact_revision, r.hash_revision), (3, 3));
}

/// A revision with many entries (a delete of a range) split across compaction steps: each
/// step goes on from where the last stopped, within the revision too, so the history log
/// keeps nothing below the compact revision.
#[test]
fn compaction_steps_resume_inside_a_revision_with_many_entries() {
    let config = StoreConfig {
        compaction_batch_revisions: 3,
        ..StoreConfig::default()
    };
    let mut h = Harness::with_config(config);
    for i in 0..10 {
        h.put(&format!("k{i}"), "v");
    }
    h.delete("k", "l");
    h.put("x", "1");
    h.compact(h.rev()).unwrap();
    while h.store.compaction_step(3) {}
    let stats = h.store.stats();
    assert_eq!(
        stats.history_log_entries, 1,
        "only x's put stays: {stats:?}"
    );
    assert_eq!(stats.entries, 1, "{stats:?}");
}

/// Rows in `table` with keys in `[from, to)`.
fn rows_in(engine: &dyn Read, table: Table, from: u64, to: u64) -> usize {
    let (from, to) = (from.to_be_bytes(), to.to_be_bytes());
    row_keys(engine, table, Bound::Included(&from), Bound::Excluded(&to)).len()
}

/// A history of `revisions` writes over 40 keys: puts, deletes, and txns that delete one
/// key and put another in one revision.
fn write_history(h: &mut Harness, revisions: usize) {
    for i in 0..revisions {
        let key = format!("k{:02}", i % 40);
        if i % 7 == 3 {
            h.delete(&key, "");
        } else if i % 13 == 5 {
            let txn = TxnRequest {
                success: vec![
                    delete_op(&key, ""),
                    put_op(&format!("k{:02}", (i + 1) % 40), "txn"),
                ],
                ..TxnRequest::default()
            };
            h.txn(txn).expect("txn");
        } else {
            h.put(&key, &i.to_string());
        }
    }
}

/// The size estimate a store rebuilt from its own snapshot computes from scratch.
fn rebuilt_size_bytes(h: &Harness) -> u64 {
    let restored = Store::restore(&h.store.snapshot(), *h.store.config()).expect("restore");
    restored.stats().size_bytes
}

/// The store closed and opened again from its engine, as a restart does.
fn reopen(h: &mut Harness) {
    h.store.commit(true).expect("commit");
    let config = *h.store.config();
    let engine = std::mem::replace(&mut h.store, Store::new(config)).into_engine();
    h.store = Store::open(engine, config).expect("open");
}

#[test]
fn compactions_across_garbage_buckets_free_exactly_what_became_unreachable() {
    let mut h = Harness::new();
    // Restarts inside buckets: the garbage of the bucket being written is rebuilt.
    for _ in 0..7 {
        write_history(&mut h, 700);
        reopen(&mut h);
    }
    // Bucket edges (1,024 revisions each), inside buckets, twice in one bucket, the end.
    for at in [700, 1_023, 1_024, 1_025, 2_047, 2_500, 2_600, 4_097, 4_300] {
        h.compact(at).expect("compact");
        assert_eq!(
            h.store.stats().size_bytes,
            rebuilt_size_bytes(&h),
            "after compacting to {at}"
        );
    }
    write_history(&mut h, 1_000);
    h.compact(h.rev()).expect("compact");
    assert_eq!(h.store.stats().size_bytes, rebuilt_size_bytes(&h));
}

#[test]
fn a_compaction_reads_a_row_per_bucket_and_leaves_revision_rows_to_physical_steps() {
    let config = StoreConfig {
        compaction_batch_revisions: 1,
        ..StoreConfig::default()
    };
    let mut h = Harness::with_config(config);
    write_history(&mut h, 5_000);
    let at = 4_500u64;
    h.compact(at as i64).expect("compact");
    let size_bytes = h.store.stats().size_bytes;
    let engine = std::mem::replace(&mut h.store, Store::new(config)).into_engine();
    // The apply took the whole buckets' sums and its own bucket's revisions up to 4,500;
    // the revision rows of whole buckets are left, unread.
    assert_eq!(rows_in(&*engine, Table::GarbageBuckets, 0, at / 1024), 0);
    assert_eq!(rows_in(&*engine, Table::Garbage, 4 * 1024, at + 1), 0);
    assert!(rows_in(&*engine, Table::Garbage, 0, 4 * 1024) > 3_000);
    h.store = Store::open(engine, config).expect("open");
    assert_eq!(h.store.stats().size_bytes, size_bytes);
    while h.store.compaction_step(100) {}
    assert_eq!(h.store.stats().size_bytes, size_bytes);
    h.store.commit(true).expect("commit");
    let engine = std::mem::replace(&mut h.store, Store::new(config)).into_engine();
    assert_eq!(rows_in(&*engine, Table::Garbage, 0, at + 1), 0);
    h.store = Store::open(engine, config).expect("open");
    h.compact(h.rev()).expect("compact");
    assert_eq!(h.store.stats().size_bytes, rebuilt_size_bytes(&h));
}

#[test]
fn a_store_written_before_garbage_buckets_gets_them_when_it_opens() {
    let mut h = Harness::new();
    write_history(&mut h, 3_000);
    h.compact(500).expect("compact");
    h.store.commit(true).expect("commit");
    let config = *h.store.config();
    let mut engine = std::mem::replace(&mut h.store, Store::new(config)).into_engine();
    // As format 3 wrote it: no bucket rows, the state row says 3.
    let buckets = row_keys(
        &*engine,
        Table::GarbageBuckets,
        Bound::Unbounded,
        Bound::Unbounded,
    );
    assert!(!buckets.is_empty());
    for row in &buckets {
        engine.delete(Table::GarbageBuckets, row).expect("delete");
    }
    let mut state = engine
        .get(Table::Meta, b"store")
        .expect("get")
        .expect("state");
    state[..4].copy_from_slice(&3u32.to_be_bytes());
    engine.put(Table::Meta, b"store", &state).expect("put");
    engine.commit(true).expect("commit");
    h.store = Store::open(engine, config).expect("open");
    h.compact(2_000).expect("compact");
    assert_eq!(h.store.stats().size_bytes, rebuilt_size_bytes(&h));
    // The bucket being written when it opened fills and is left behind.
    write_history(&mut h, 2_000);
    h.compact(h.rev()).expect("compact");
    assert_eq!(h.store.stats().size_bytes, rebuilt_size_bytes(&h));
}
