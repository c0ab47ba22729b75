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
