//! Hand-made histories for the linearizability checker: each says what happened and
//! whether etcd's semantics allow it.

mod common;

use common::*;
use keel_sim::check::linearizability::{check, Options};
use keel_sim::check::{check_all, CheckOptions, Violation};
use keel_sim::history::*;

fn passes(h: &History) {
    if let Err(v) = check(h, &Options::default()) {
        panic!("expected linearizable, got:\n{v}");
    }
    if let Err(v) = check_all(h, &CheckOptions::default()) {
        panic!("expected every check to pass, got:\n{v}");
    }
}

fn fails(h: &History) -> String {
    match check(h, &Options::default()) {
        Ok(_) => panic!("expected a linearizability violation"),
        Err(v @ Violation::Linearizability(_)) => v.to_string(),
        Err(other) => panic!("expected a linearizability violation, got:\n{other}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    passes(&History::default());
}

#[test]
fn valid_concurrent_history() {
    passes(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        // Concurrent with the put: may see it or not.
        op(2, 5, 15, get("a"), ok_get(2, vec![kv("a", "1", 2, 2, 1)])),
        op(3, 1, 3, get("a"), ok_get(1, vec![])),
        op(3, 4, 12, get("a"), ok_get(1, vec![])),
        op(2, 20, 30, put("a", "2"), ok_put(3)),
        op(1, 25, 35, get("a"), ok_get(3, vec![kv("a", "2", 2, 3, 2)])),
        op(3, 21, 40, put("b", "1"), ok_put(4)),
        op(
            1,
            41,
            45,
            Request::Range(Range {
                key: b("a"),
                range_end: b("c"),
                ..Range::default()
            }),
            ok_get(4, vec![kv("a", "2", 2, 3, 2), kv("b", "1", 4, 4, 1)]),
        ),
    ]));
}

#[test]
fn stale_read_after_an_acknowledged_write_fails() {
    let text = fails(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(2, 20, 30, get("a"), ok_get(1, vec![])),
    ]));
    assert!(text.contains("op #1"), "{text}");
    assert!(
        text.contains("op #0"),
        "the sub-history shows the write:\n{text}"
    );
}

#[test]
fn stale_read_with_the_right_header_but_old_data_fails() {
    fails(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(1, 11, 20, put("a", "2"), ok_put(3)),
        op(2, 30, 40, get("a"), ok_get(3, vec![kv("a", "1", 2, 2, 1)])),
    ]));
}

#[test]
fn lost_acknowledged_write_fails() {
    let h = history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(2, 20, 30, get("a"), ok_get(2, vec![kv("a", "1", 2, 2, 1)])),
        op(1, 40, 50, put("a", "2"), ok_put(3)),
        // The store forgot the second write.
        op(2, 60, 70, get("a"), ok_get(2, vec![kv("a", "1", 2, 2, 1)])),
    ]);
    let text = fails(&h);
    assert!(text.contains("op #3"), "{text}");
}

#[test]
fn a_revision_no_write_made_fails() {
    let text = fails(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(2, 20, 30, get("a"), ok_get(3, vec![kv("a", "1", 2, 2, 1)])),
    ]));
    assert!(text.contains("revision 3"), "{text}");
}

#[test]
fn two_writes_claiming_one_revision_fail() {
    let text = fails(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(2, 0, 10, put("b", "1"), ok_put(2)),
    ]));
    assert!(text.contains("both report writing revision 2"), "{text}");
}

#[test]
fn indeterminate_write_that_happened_passes() {
    passes(&history(vec![
        op(1, 0, 10, put("a", "1"), unknown()),
        op(2, 20, 30, get("a"), ok_get(2, vec![kv("a", "1", 2, 2, 1)])),
    ]));
}

#[test]
fn indeterminate_write_that_did_not_happen_passes() {
    passes(&history(vec![
        op(1, 0, 10, put("a", "1"), unknown()),
        op(2, 20, 30, get("a"), ok_get(1, vec![])),
        op(2, 31, 40, put("b", "1"), ok_put(2)),
        op(2, 41, 50, get("a"), ok_get(2, vec![])),
    ]));
}

#[test]
fn indeterminate_write_may_take_effect_after_the_client_gave_up() {
    passes(&history(vec![
        op(1, 0, 10, put("a", "1"), unknown()),
        op(2, 20, 30, get("a"), ok_get(1, vec![])),
        op(2, 40, 50, get("a"), ok_get(2, vec![kv("a", "1", 2, 2, 1)])),
    ]));
}

#[test]
fn indeterminate_write_cannot_take_effect_before_it_was_invoked() {
    fails(&history(vec![
        op(2, 0, 10, get("a"), ok_get(2, vec![kv("a", "1", 2, 2, 1)])),
        op(1, 20, 30, put("a", "1"), unknown()),
    ]));
}

#[test]
fn never_completed_operation_is_indeterminate() {
    let mut h = History::new();
    let id = h.invoke(1, None, 0, put("a", "1"));
    let r = h.invoke(2, None, 5, get("a"));
    h.complete(r, 9, ok_get(2, vec![kv("a", "1", 2, 2, 1)]));
    assert!(matches!(
        h.operations[id].outcome,
        Outcome::Indeterminate(_)
    ));
    passes(&h);
}

#[test]
fn a_write_observed_by_many_reads_passes() {
    passes(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(2, 5, 15, get("a"), ok_get(2, vec![kv("a", "1", 2, 2, 1)])),
        op(3, 5, 15, get("a"), ok_get(2, vec![kv("a", "1", 2, 2, 1)])),
        op(4, 12, 15, get("a"), ok_get(2, vec![kv("a", "1", 2, 2, 1)])),
    ]));
}

#[test]
fn a_write_applied_twice_fails() {
    // One put, but the key's version says it was applied twice.
    fails(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(2, 20, 30, get("a"), ok_get(3, vec![kv("a", "1", 2, 3, 2)])),
    ]));
}

#[test]
fn a_retried_write_applied_twice_passes() {
    // The first attempt timed out but was applied; the retry was applied again.
    passes(&history(vec![
        op(1, 0, 10, put("a", "1"), unknown()),
        op(1, 11, 20, put("a", "1"), ok_put(3)),
        op(2, 30, 40, get("a"), ok_get(3, vec![kv("a", "1", 2, 3, 2)])),
    ]));
}

#[test]
fn reads_at_past_revisions() {
    let base = vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(1, 11, 20, put("a", "2"), ok_put(3)),
        op(1, 21, 30, delete("a"), ok_delete(4, 1)),
    ];
    let mut ok = base.clone();
    ok.push(op(
        2,
        40,
        50,
        get_at("a", 2),
        ok_get(4, vec![kv("a", "1", 2, 2, 1)]),
    ));
    ok.push(op(
        2,
        51,
        60,
        get_at("a", 3),
        ok_get(4, vec![kv("a", "2", 2, 3, 2)]),
    ));
    ok.push(op(2, 61, 70, get_at("a", 4), ok_get(4, vec![])));
    ok.push(op(2, 71, 80, get_at("a", 1), ok_get(4, vec![])));
    ok.push(op(
        2,
        81,
        90,
        get_at("a", 5),
        Outcome::Error(StoreError::FutureRev),
    ));
    passes(&history(ok));

    let mut wrong = base;
    wrong.push(op(
        2,
        40,
        50,
        get_at("a", 2),
        ok_get(4, vec![kv("a", "2", 2, 3, 2)]),
    ));
    fails(&history(wrong));
}

#[test]
fn delete_of_nothing_does_not_bump_the_revision() {
    passes(&history(vec![
        op(1, 0, 10, delete("a"), ok_delete(1, 0)),
        op(1, 11, 20, put("a", "1"), ok_put(2)),
    ]));
    fails(&history(vec![
        op(1, 0, 10, delete("a"), ok_delete(2, 0)),
        op(1, 11, 20, put("a", "1"), ok_put(2)),
    ]));
}

#[test]
fn version_resets_after_delete() {
    passes(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(1, 11, 20, put("a", "2"), ok_put(3)),
        op(1, 21, 30, delete("a"), ok_delete(4, 1)),
        op(1, 31, 40, put("a", "3"), ok_put(5)),
        op(1, 41, 50, get("a"), ok_get(5, vec![kv("a", "3", 5, 5, 1)])),
    ]));
    fails(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(1, 21, 30, delete("a"), ok_delete(3, 1)),
        op(1, 31, 40, put("a", "3"), ok_put(4)),
        op(1, 41, 50, get("a"), ok_get(4, vec![kv("a", "3", 2, 4, 2)])),
    ]));
}

#[test]
fn txn_cas_race_one_winner_passes() {
    passes(&history(vec![
        op(1, 0, 10, put("a", "0"), ok_put(2)),
        op(1, 20, 40, cas("a", 2, "x"), ok_cas_won(3)),
        op(
            2,
            21,
            41,
            cas("a", 2, "y"),
            ok_cas_lost(3, vec![kv("a", "x", 2, 3, 2)]),
        ),
        op(3, 50, 60, get("a"), ok_get(3, vec![kv("a", "x", 2, 3, 2)])),
    ]));
}

#[test]
fn txn_cas_race_two_winners_fails() {
    fails(&history(vec![
        op(1, 0, 10, put("a", "0"), ok_put(2)),
        op(1, 20, 40, cas("a", 2, "x"), ok_cas_won(3)),
        op(2, 21, 41, cas("a", 2, "y"), ok_cas_won(4)),
    ]));
}

#[test]
fn txn_cas_loser_must_see_the_winner() {
    fails(&history(vec![
        op(1, 0, 10, put("a", "0"), ok_put(2)),
        op(1, 20, 30, cas("a", 2, "x"), ok_cas_won(3)),
        // Invoked after the winner completed, yet reports the old state.
        op(
            2,
            31,
            41,
            cas("a", 3, "y"),
            ok_cas_lost(2, vec![kv("a", "0", 2, 2, 1)]),
        ),
    ]));
}

#[test]
fn indeterminate_cas_pinned_by_a_later_read() {
    passes(&history(vec![
        op(1, 0, 10, put("a", "0"), ok_put(2)),
        op(1, 20, 30, cas("a", 2, "x"), unknown()),
        op(2, 21, 31, cas("a", 2, "y"), unknown()),
        op(3, 50, 60, get("a"), ok_get(3, vec![kv("a", "y", 2, 3, 2)])),
    ]));
}

fn lease_put(key: &str, value: &str, lease: i64) -> Request {
    Request::Put(Put {
        key: b(key),
        value: b(value),
        lease,
        prev_kv: false,
    })
}

fn leased(key: &str, value: &str, create: i64, modr: i64, lease: i64) -> KeyValue {
    KeyValue {
        lease,
        ..kv(key, value, create, modr, 1)
    }
}

fn range_ab() -> Request {
    Request::Range(Range {
        key: b("a"),
        range_end: b("c"),
        ..Range::default()
    })
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision() {
    let grant = |rev| {
        Outcome::Ok(Response::LeaseGrant {
            revision: rev,
            id: 5,
            ttl: 10,
        })
    };
    let base = vec![
        op(1, 0, 10, Request::LeaseGrant { ttl: 10, id: 0 }, grant(1)),
        op(1, 11, 20, lease_put("a", "1", 5), ok_put(2)),
        op(1, 21, 30, lease_put("b", "1", 5), ok_put(3)),
        op(
            2,
            31,
            40,
            range_ab(),
            ok_get(
                3,
                vec![leased("a", "1", 2, 2, 5), leased("b", "1", 3, 3, 5)],
            ),
        ),
    ];
    let mut ok = base.clone();
    ok.push(op(
        1,
        41,
        50,
        Request::LeaseRevoke { id: 5 },
        Outcome::Ok(Response::LeaseRevoke { revision: 4 }),
    ));
    ok.push(op(2, 51, 60, range_ab(), ok_get(4, vec![])));
    ok.push(op(
        2,
        61,
        70,
        lease_put("a", "2", 5),
        Outcome::Error(StoreError::LeaseNotFound),
    ));
    passes(&history(ok.clone()));

    // A key survives the revoke.
    let mut survivor = ok.clone();
    survivor[5] = op(
        2,
        51,
        60,
        range_ab(),
        ok_get(4, vec![leased("b", "1", 3, 3, 5)]),
    );
    fails(&history(survivor));

    // The revoke took two revisions.
    let mut two = base;
    two.push(op(
        1,
        41,
        50,
        Request::LeaseRevoke { id: 5 },
        Outcome::Ok(Response::LeaseRevoke { revision: 5 }),
    ));
    fails(&history(two));
}

#[test]
fn indeterminate_lease_grant_and_revoke() {
    // The grant timed out but happened (a put with the lease succeeded); a revoke timed
    // out and happened (the key disappeared, and a later put with the lease failed).
    passes(&history(vec![
        op(1, 0, 10, Request::LeaseGrant { ttl: 10, id: 7 }, unknown()),
        op(1, 11, 20, lease_put("a", "1", 7), ok_put(2)),
        op(1, 21, 30, Request::LeaseRevoke { id: 7 }, unknown()),
        op(2, 40, 50, get("a"), ok_get(3, vec![])),
        op(
            2,
            51,
            60,
            lease_put("a", "2", 7),
            Outcome::Error(StoreError::LeaseNotFound),
        ),
    ]));
    // A put with a lease nobody granted cannot succeed.
    fails(&history(vec![op(
        1,
        11,
        20,
        lease_put("a", "1", 7),
        ok_put(2),
    )]));
}

#[test]
fn compaction_errors() {
    let compact = |rev: i64| Request::Compact { revision: rev };
    let compacted = |header| Outcome::Ok(Response::Compact { revision: header });
    let base = vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(1, 11, 20, put("a", "2"), ok_put(3)),
        op(1, 21, 30, compact(3), compacted(3)),
    ];
    let mut ok = base.clone();
    ok.push(op(
        2,
        40,
        50,
        get_at("a", 2),
        Outcome::Error(StoreError::Compacted),
    ));
    ok.push(op(
        2,
        51,
        60,
        get_at("a", 3),
        ok_get(3, vec![kv("a", "2", 2, 3, 2)]),
    ));
    ok.push(op(
        2,
        61,
        70,
        compact(2),
        Outcome::Error(StoreError::Compacted),
    ));
    ok.push(op(
        2,
        71,
        80,
        compact(3),
        Outcome::Error(StoreError::Compacted),
    ));
    ok.push(op(
        2,
        81,
        90,
        compact(9),
        Outcome::Error(StoreError::FutureRev),
    ));
    passes(&history(ok));

    // A read below the compaction answered with data.
    let mut wrong = base.clone();
    wrong.push(op(
        2,
        40,
        50,
        get_at("a", 2),
        ok_get(3, vec![kv("a", "1", 2, 2, 1)]),
    ));
    fails(&history(wrong));

    // ErrCompacted before any compaction.
    fails(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(
            2,
            40,
            50,
            get_at("a", 2),
            Outcome::Error(StoreError::Compacted),
        ),
    ]));

    // An indeterminate compaction explains a later ErrCompacted.
    passes(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(1, 11, 20, put("a", "2"), ok_put(3)),
        op(1, 21, 30, compact(3), unknown()),
        op(
            2,
            40,
            50,
            get_at("a", 2),
            ok_get(3, vec![kv("a", "1", 2, 2, 1)]),
        ),
        op(
            2,
            51,
            60,
            get_at("a", 2),
            Outcome::Error(StoreError::Compacted),
        ),
    ]));
}

#[test]
fn failed_operations_are_ignored_and_errors_are_checked() {
    passes(&history(vec![
        op(
            1,
            0,
            10,
            put("a", "1"),
            Outcome::Failed("too many ops".into()),
        ),
        op(2, 20, 30, get("a"), ok_get(1, vec![])),
    ]));
}

#[test]
fn response_of_the_wrong_kind_is_an_invalid_history() {
    let h = history(vec![op(1, 0, 10, put("a", "1"), ok_get(2, vec![]))]);
    assert!(matches!(
        check(&h, &Options::default()),
        Err(Violation::InvalidHistory { .. })
    ));
}

#[test]
fn the_failing_sub_history_is_small() {
    // A long valid history with one stale read near the end.
    let mut g = generate(
        7,
        &GenConfig {
            ops: 600,
            watches: 0,
            ..GenConfig::default()
        },
    );
    let h = &mut g.history;
    let last = h
        .operations
        .iter()
        .map(|o| o.complete.unwrap_or(0))
        .max()
        .unwrap_or(0);
    let writer = h.operations.len();
    h.operations.push(op(
        90,
        last + 10,
        last + 20,
        put("zz", "fresh"),
        ok_put(g.truth.revision() + 1),
    ));
    h.operations.push(op(
        91,
        last + 30,
        last + 40,
        get("zz"),
        ok_get(g.truth.revision(), vec![]),
    ));
    let text = fails(h);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("    ")).collect();
    assert!(lines.len() <= 4, "sub-history too long:\n{text}");
    assert!(text.contains(&format!("op #{writer}:")), "{text}");
    assert!(text.contains(&format!("op #{}:", writer + 1)), "{text}");
}

#[test]
fn lost_writes_to_one_key_counted_by_its_version() {
    // Three lost puts to "a"; a read shows version 3 made at revision 4 by an unobserved
    // mix of them: two of the three happened, in revisions 2 and 3, the last one at 4.
    passes(&history(vec![
        op(1, 0, 10, put("a", "x"), unknown()),
        op(2, 0, 10, put("a", "y"), unknown()),
        op(3, 0, 10, put("a", "z"), unknown()),
        op(4, 0, 10, put("a", "w"), unknown()),
        op(5, 20, 30, get("a"), ok_get(4, vec![kv("a", "w", 2, 4, 3)])),
    ]));
    // Version 5 cannot be made by four puts starting from nothing with one at revision 4.
    fails(&history(vec![
        op(1, 0, 10, put("a", "x"), unknown()),
        op(2, 0, 10, put("a", "y"), unknown()),
        op(4, 0, 10, put("a", "w"), unknown()),
        op(5, 20, 30, get("a"), ok_get(4, vec![kv("a", "w", 2, 4, 5)])),
    ]));
}

#[test]
fn unobserved_revision_filled_by_the_write_a_later_version_needs() {
    // Revision 3 is seen by nobody; "b" at version 2 by revision 4 needs it to be a put of
    // "b" (not the lost put of "a", whose value nobody saw either).
    passes(&history(vec![
        op(1, 0, 10, put("b", "1"), ok_put(2)),
        op(2, 11, 20, put("a", "lost"), unknown()),
        op(3, 11, 20, put("b", "lost"), unknown()),
        op(1, 21, 30, put("c", "1"), ok_put(4)),
        op(
            4,
            31,
            40,
            get("b"),
            ok_get(4, vec![kv("b", "lost", 2, 3, 2)]),
        ),
        op(4, 41, 50, get("a"), ok_get(4, vec![])),
    ]));
    // "a" was put (version 1) but the only revision left for it is taken.
    fails(&history(vec![
        op(1, 0, 10, put("b", "1"), ok_put(2)),
        op(2, 11, 20, put("a", "lost"), unknown()),
        op(3, 11, 20, put("b", "lost"), unknown()),
        op(1, 21, 30, put("c", "1"), ok_put(4)),
        op(
            4,
            31,
            40,
            get("b"),
            ok_get(4, vec![kv("b", "lost", 2, 3, 2)]),
        ),
        op(
            4,
            41,
            50,
            get("a"),
            ok_get(4, vec![kv("a", "lost", 3, 3, 1)]),
        ),
    ]));
}

#[test]
fn lost_delete_and_recreate_counted_by_create_revision() {
    passes(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(2, 11, 20, delete("a"), unknown()),
        op(3, 11, 20, put("a", "2"), unknown()),
        op(4, 30, 40, get("a"), ok_get(4, vec![kv("a", "2", 4, 4, 1)])),
    ]));
    // Recreated at 4 means it was deleted before: without the delete, impossible.
    fails(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(3, 11, 20, put("a", "2"), unknown()),
        op(3, 21, 25, put("b", "2"), ok_put(3)),
        op(4, 30, 40, get("a"), ok_get(4, vec![kv("a", "2", 4, 4, 1)])),
    ]));
}

#[test]
fn compaction_header_is_the_revision_at_reply_time() {
    // Applied at revision 3 (reads at 2 before it succeed), answered when the store was at 4.
    passes(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(1, 11, 20, put("a", "2"), ok_put(3)),
        op(
            2,
            21,
            60,
            Request::Compact { revision: 3 },
            Outcome::Ok(Response::Compact { revision: 4 }),
        ),
        op(3, 30, 40, put("b", "1"), ok_put(4)),
        op(
            4,
            61,
            70,
            get_at("a", 2),
            Outcome::Error(StoreError::Compacted),
        ),
    ]));
    // But not with a header below the revision it compacted.
    fails(&history(vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(1, 11, 20, put("a", "2"), ok_put(3)),
        op(
            2,
            21,
            60,
            Request::Compact { revision: 3 },
            Outcome::Ok(Response::Compact { revision: 2 }),
        ),
    ]));
}

#[test]
fn lease_expiry_is_explained_by_may_expire() {
    let mut h = history(vec![
        op(
            1,
            0,
            10,
            Request::LeaseGrant { ttl: 2, id: 5 },
            Outcome::Ok(Response::LeaseGrant {
                revision: 1,
                id: 5,
                ttl: 2,
            }),
        ),
        op(1, 11, 20, lease_put("a", "1", 5), ok_put(2)),
        // Nobody revoked the lease; it expired.
        op(2, 5_000, 5_010, get("a"), ok_get(3, vec![])),
    ]);
    fails(&h);
    h.may_expire(5, 0);
    passes(&h);
}
