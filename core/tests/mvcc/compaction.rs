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
