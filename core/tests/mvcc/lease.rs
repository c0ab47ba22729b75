use keel_core::mvcc::*;

use crate::common::*;

fn put_with_lease(h: &mut Harness, key: &str, lease: i64) {
    h.put_req(PutRequest {
        key: b(key),
        value: b("v"),
        lease,
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn a_grant_below_the_minimum_ttl_gets_the_minimum() {
    let mut h = Harness::new();
    let r = h.grant(1, 1).unwrap();
    assert_eq!((r.id, r.ttl), (1, DEFAULT_MIN_LEASE_TTL_S));
    assert_eq!(h.rev(), 1, "a grant does not create a revision");
}

#[test]
fn a_grant_with_a_too_large_ttl_or_an_existing_id_is_refused() {
    let mut h = Harness::new();
    assert_eq!(
        h.grant(1, MAX_LEASE_TTL_S + 1).unwrap_err(),
        Error::LeaseTtlTooLarge
    );
    h.grant(1, 10).unwrap();
    assert_eq!(h.grant(1, 20).unwrap_err(), Error::LeaseExists);
    assert_eq!(h.store.lease_leases().leases.len(), 1);
}

#[test]
fn a_grant_without_an_id_gets_a_nonzero_id_derived_from_the_raft_index() {
    let mut a = Harness::new();
    let mut b = Harness::new();
    let ia = a.grant(0, 10).unwrap().id;
    let ib = b.grant(0, 10).unwrap().id;
    assert_ne!(ia, 0);
    assert!(ia > 0);
    assert_eq!(ia, ib, "every member chooses the same id");
    assert_ne!(a.grant(0, 10).unwrap().id, ia);
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let mut h = Harness::new();
    h.grant(5, 60).unwrap();
    put_with_lease(&mut h, "b", 5);
    put_with_lease(&mut h, "a", 5);
    h.put("c", "no lease");
    let applied = h.apply(Command::LeaseRevoke(LeaseRevokeRequest { id: 5 }));
    assert_eq!(applied.revision, 5);
    let keys: Vec<_> = applied
        .events
        .iter()
        .map(|e| (e.r#type, e.kv.key.clone()))
        .collect();
    assert_eq!(
        keys,
        [(EventType::Delete, b("a")), (EventType::Delete, b("b"))]
    );
    assert!(h.get("a").is_none() && h.get("b").is_none() && h.get("c").is_some());
    assert!(h.store.lease_leases().leases.is_empty());
    assert_eq!(h.revoke(5).unwrap_err(), Error::LeaseNotFound);
}

#[test]
fn revoking_a_lease_without_keys_does_not_bump_the_revision() {
    let mut h = Harness::new();
    h.grant(5, 60).unwrap();
    assert_eq!(h.revoke(5).unwrap().header.revision, 1);
}

#[test]
fn a_put_moves_a_key_between_leases_and_a_delete_detaches_it() {
    let mut h = Harness::new();
    h.grant(1, 60).unwrap();
    h.grant(2, 60).unwrap();
    h.store.promote(0, 0);
    put_with_lease(&mut h, "a", 1);
    put_with_lease(&mut h, "a", 2);
    let ttl = |h: &Harness, id| {
        h.store
            .lease_time_to_live(&LeaseTimeToLiveRequest { id, keys: true }, 0)
            .unwrap()
            .keys
    };
    assert!(ttl(&h, 1).is_empty());
    assert_eq!(ttl(&h, 2), [b("a")]);
    h.put("a", "no lease now");
    assert!(ttl(&h, 2).is_empty());
    put_with_lease(&mut h, "b", 1);
    h.delete("b", "");
    h.revoke(1).unwrap();
    assert_eq!(h.rev(), 6, "revoking lease 1 deleted nothing");
}

#[test]
fn only_the_primary_expires_leases_and_offers_each_again_after_the_retry_interval() {
    let mut h = Harness::new();
    h.grant(1, 10).unwrap();
    h.grant(2, 20).unwrap();
    assert!(
        h.store.expired_leases(1_000_000, 10).is_empty(),
        "a follower never expires leases"
    );
    h.store.promote(1000, 0);
    assert!(h.store.expired_leases(10_999, 10).is_empty());
    assert_eq!(h.store.expired_leases(11_000, 10), [1]);
    assert!(
        h.store.expired_leases(12_000, 10).is_empty(),
        "offered once per retry interval"
    );
    assert_eq!(h.store.expired_leases(14_000, 10), [1]);
    assert_eq!(h.store.expired_leases(30_000, 10), [1, 2]);
    h.revoke(1).unwrap();
    assert_eq!(h.store.next_lease_expiry_ms(), Some(33_000));
}

#[test]
fn promotion_extends_every_lease_by_the_election_time_and_uses_checkpointed_ttls() {
    let mut h = Harness::new();
    h.grant(1, 10).unwrap();
    h.grant(2, 100).unwrap();
    h.apply(Command::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint {
            id: 2,
            remaining_ttl: 30,
        }],
    }));
    h.store.promote(50_000, 2_000);
    assert!(h.store.expired_leases(61_999, 10).is_empty());
    assert_eq!(h.store.expired_leases(62_000, 10), [1]);
    let ttl2 = h
        .store
        .lease_time_to_live(&LeaseTimeToLiveRequest { id: 2, keys: false }, 50_000)
        .unwrap();
    assert_eq!((ttl2.ttl, ttl2.granted_ttl), (32, 100));
    h.store.demote();
    assert!(h.store.expired_leases(1_000_000, 10).is_empty());
}

#[test]
fn keep_alive_renews_on_the_primary_and_is_refused_elsewhere() {
    let mut h = Harness::new();
    h.grant(1, 10).unwrap();
    let req = LeaseKeepAliveRequest { id: 1 };
    assert_eq!(
        h.store.lease_keep_alive(&req, 0).unwrap_err(),
        Error::NotPrimary
    );
    h.store.promote(0, 0);
    let out = h.store.lease_keep_alive(&req, 9_000).unwrap();
    assert_eq!((out.response.id, out.response.ttl), (1, 10));
    assert!(out.checkpoint.is_none());
    assert!(h.store.expired_leases(18_999, 10).is_empty());
    assert_eq!(h.store.expired_leases(19_000, 10), [1]);
    assert_eq!(
        h.store.lease_keep_alive(&req, 19_000).unwrap_err(),
        Error::LeaseNotFound,
        "an expired lease is not renewed; its revoke is on the way"
    );
    assert_eq!(
        h.store
            .lease_keep_alive(&LeaseKeepAliveRequest { id: 9 }, 0)
            .unwrap_err(),
        Error::LeaseNotFound
    );
}

#[test]
fn keep_alive_asks_to_clear_a_checkpointed_ttl() {
    let mut h = Harness::new();
    h.grant(1, 100).unwrap();
    h.store.promote(0, 0);
    let cp = h.store.lease_checkpoints(40_000, 10).unwrap();
    assert_eq!(
        cp.checkpoints,
        [LeaseCheckpoint {
            id: 1,
            remaining_ttl: 60
        }]
    );
    h.apply(Command::LeaseCheckpoint(cp));
    assert!(
        h.store.lease_checkpoints(40_000, 10).is_none(),
        "nothing new to checkpoint"
    );
    let out = h
        .store
        .lease_keep_alive(&LeaseKeepAliveRequest { id: 1 }, 40_000)
        .unwrap();
    assert_eq!(
        out.checkpoint.unwrap().checkpoints,
        [LeaseCheckpoint {
            id: 1,
            remaining_ttl: 0
        }]
    );
}

#[test]
fn time_to_live_of_an_unknown_lease_is_minus_one_not_an_error() {
    let mut h = Harness::new();
    h.store.promote(0, 0);
    let r = h
        .store
        .lease_time_to_live(&LeaseTimeToLiveRequest { id: 3, keys: true }, 0)
        .unwrap();
    assert_eq!((r.id, r.ttl), (3, -1));
}

#[test]
fn time_to_live_lists_keys_and_counts_down() {
    let mut h = Harness::new();
    h.store.promote(0, 0);
    h.now_ms = 1_000;
    h.grant(4, 30).unwrap();
    put_with_lease(&mut h, "x", 4);
    put_with_lease(&mut h, "w", 4);
    let r = h
        .store
        .lease_time_to_live(&LeaseTimeToLiveRequest { id: 4, keys: true }, 11_500)
        .unwrap();
    assert_eq!((r.ttl, r.granted_ttl), (19, 30));
    assert_eq!(r.keys, [b("w"), b("x")]);
}
