use bytes::Bytes;
use keel_core::mvcc::*;

use crate::common::*;

fn busy_store() -> Harness {
    let mut h = Harness::new();
    h.grant(10, 60).unwrap();
    h.put("a", "1");
    h.put_req(PutRequest {
        key: b("b"),
        value: b("2"),
        lease: 10,
        ..Default::default()
    })
    .unwrap();
    h.put("a", "3");
    h.delete("a", "");
    h.put("c", "4");
    h.compact(4).unwrap();
    h.put("a", "5");
    h.apply(Command::Alarm(AlarmRequest {
        action: AlarmAction::Activate,
        member_id: 2,
        alarm: AlarmType::NoSpace,
    }));
    h
}

#[test]
fn a_snapshot_restores_to_an_identical_store() {
    let h = busy_store();
    let bytes = h.store.snapshot();
    let restored = Store::restore(&bytes, StoreConfig::default()).unwrap();
    assert_eq!(restored.current_revision(), h.rev());
    assert_eq!(restored.compact_revision(), 4);
    assert_eq!(restored.applied_index(), h.store.applied_index());
    assert_eq!(restored.alarms(), h.store.alarms());
    assert_eq!(restored.lease_leases(), h.store.lease_leases());
    assert_eq!(restored.stats().size_bytes, h.store.stats().size_bytes);
    for rev in 4..=h.rev() {
        let mut req = range("\0", "\0");
        req.revision = rev;
        assert_eq!(
            restored.range(&req),
            h.store.range(&req),
            "at revision {rev}"
        );
        assert_eq!(restored.hash_kv(rev), h.store.hash_kv(rev));
    }
    assert_eq!(
        restored.snapshot(),
        bytes,
        "snapshots of equal stores are equal bytes"
    );
    let filter = EventFilter {
        range: KeyRange::new(&b("\0"), &b("\0")),
        no_put: false,
        no_delete: false,
        prev_kv: true,
    };
    assert_eq!(
        restored.events_since(4, &filter, 100, 100),
        h.store.events_since(4, &filter, 100, 100)
    );
}

#[test]
fn a_restored_store_keeps_lease_attachments_and_applies_on() {
    let h = busy_store();
    let mut restored = Store::restore(&h.store.snapshot(), StoreConfig::default()).unwrap();
    let index = restored.applied_index() + 1;
    let applied = restored.apply(
        index,
        0,
        &Command::LeaseRevoke(LeaseRevokeRequest { id: 10 }),
    );
    assert_eq!(applied.events.len(), 1);
    assert_eq!(applied.events[0].kv.key, b("b"));
}

#[test]
fn a_corrupt_snapshot_is_a_typed_error() {
    let bytes = busy_store().store.snapshot();
    let config = StoreConfig::default();
    assert!(matches!(
        Store::restore(&bytes[..10], config),
        Err(SnapshotError::TooShort { .. })
    ));
    let mut bad_magic = bytes.clone();
    bad_magic[0] ^= 1;
    assert_eq!(
        Store::restore(&bad_magic, config).unwrap_err(),
        SnapshotError::BadMagic
    );
    let mut bad_version = bytes.clone();
    bad_version[8] = 9;
    assert!(matches!(
        Store::restore(&bad_version, config),
        Err(SnapshotError::UnsupportedVersion { .. })
    ));
    assert!(matches!(
        Store::restore(&bytes[..bytes.len() - 1], config),
        Err(SnapshotError::LengthMismatch { .. })
    ));
    for i in 24..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x10;
        assert!(
            matches!(
                Store::restore(&flipped, config),
                Err(SnapshotError::ChecksumMismatch { .. })
            ),
            "bit flip at {i}"
        );
    }
}

#[test]
fn random_bytes_never_panic_a_restore() {
    use proptest::prelude::*;
    proptest!(ProptestConfig::with_cases(200), |(bytes in proptest::collection::vec(any::<u8>(), 0..200))| {
        let _ = Store::restore(&bytes, StoreConfig::default());
        let _ = Command::decode(&bytes);
    });
}

/// A txn that deletes a key and puts it again leaves a tombstone that is overwritten in the
/// same revision: compaction at that revision already drops it. The size estimate (which
/// decides NOSPACE on every member alike) must say so both when applied and when restored
/// from a snapshot, or a restored member would refuse writes the others accept. Found by
/// the model test.
#[test]
fn size_after_a_txn_that_deletes_and_puts_a_key_is_the_same_restored() {
    let mut h = Harness::new();
    h.put("ba", "");
    h.put("b", "");
    let delete_then_put = TxnRequest {
        success: vec![delete_op("ba", "\0"), put_op("ba", "")],
        ..Default::default()
    };
    h.txn(delete_then_put).unwrap();
    let txn_revision = h.rev();
    h.put("b", "");
    for compact in [txn_revision, txn_revision + 1] {
        let mut h = Harness::new();
        h.put("ba", "");
        h.put("b", "");
        h.txn(TxnRequest {
            success: vec![delete_op("ba", "\0"), put_op("ba", "")],
            ..Default::default()
        })
        .unwrap();
        h.put("b", "");
        h.compact(compact).unwrap();
        let restored = Store::restore(&h.store.snapshot(), StoreConfig::default()).unwrap();
        assert_eq!(
            restored.stats().size_bytes,
            h.store.stats().size_bytes,
            "compacted at {compact}"
        );
    }
}

/// A backup's path: the store read out version by version in revision order (as etcd's
/// file holds it), grouped by key, written with `StoreBuilder`.
fn rebuilt_through_versions(store: &Store) -> Store {
    let mut keys: std::collections::BTreeMap<Bytes, Vec<VersionRecord>> = Default::default();
    let mut versions = store.kept_versions_by_revision();
    assert!(
        versions
            .windows(2)
            .all(|w| w[0].revision() < w[1].revision()),
        "in revision order"
    );
    // A slice at a time, as a backup reads them.
    for chunk in versions.chunks_mut(2) {
        assert!(store.read_values(chunk), "{:?}", store.failure());
    }
    for v in versions {
        keys.entry(v.key).or_default().push(v.record);
    }
    let mut builder = StoreBuilder::new(
        Box::new(MemEngine::default()),
        StoreConfig::default(),
        store.current_revision(),
        store.compact_revision(),
    )
    .unwrap();
    for lease in store.lease_records() {
        builder
            .lease(lease.id, lease.ttl_s, lease.remaining_ttl_s)
            .unwrap();
    }
    for (key, history) in keys {
        builder.key(key, &history).unwrap();
    }
    builder.alarms(&store.alarms()).unwrap();
    builder.finish().unwrap()
}

#[test]
fn a_store_read_out_version_by_version_rebuilds_an_identical_one() {
    let h = busy_store();
    let rebuilt = rebuilt_through_versions(&h.store);
    assert_eq!(rebuilt.current_revision(), h.rev());
    assert_eq!(rebuilt.compact_revision(), 4);
    assert_eq!(rebuilt.lease_leases(), h.store.lease_leases());
    assert_eq!(rebuilt.stats().size_bytes, h.store.stats().size_bytes);
    for rev in 4..=h.rev() {
        let mut req = range("\0", "\0");
        req.revision = rev;
        assert_eq!(
            rebuilt.range(&req),
            h.store.range(&req),
            "at revision {rev}"
        );
        assert_eq!(rebuilt.hash_kv(rev), h.store.hash_kv(rev));
    }
}

#[test]
fn a_history_compacted_but_not_cleaned_keeps_what_compaction_keeps() {
    let put = |main, create, version| VersionRecord {
        main,
        sub: 0,
        create_revision: create,
        version,
        lease: 0,
        value: b("v"),
    };
    let tombstone = |main| VersionRecord {
        main,
        sub: 0,
        create_revision: 0,
        version: 0,
        lease: 0,
        value: Bytes::new(),
    };
    let live = [put(2, 2, 1), put(3, 2, 2), put(6, 2, 3)];
    assert_eq!(compacted_history(&live, 4), &live[1..]);
    assert_eq!(compacted_history(&live, 1), &live[..]);
    let deleted = [put(2, 2, 1), tombstone(3), put(7, 7, 1)];
    assert_eq!(compacted_history(&deleted, 4), &deleted[2..]);
    // A delete at the compaction revision stays: a watch from there must see it.
    assert_eq!(compacted_history(&deleted, 3), &deleted[1..]);
}
