//! Serializable reads, durability, and the checks across members.

mod common;

use common::*;
use keel_sim::check::{check_all, cluster, durability, CheckOptions, Violation};
use keel_sim::history::*;

fn writes() -> Vec<Operation> {
    vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(1, 11, 20, put("a", "2"), ok_put(3)),
        op(1, 21, 30, put("b", "1"), ok_put(4)),
    ]
}

fn served(mut o: Operation, member: MemberId) -> Operation {
    o.member = Some(member);
    o
}

#[test]
fn stale_serializable_read_of_a_real_state_passes() {
    let mut ops = writes();
    // Long after the writes, a lagging member still answers at revision 2.
    ops.push(served(
        op(
            2,
            100,
            110,
            get_serializable("a"),
            ok_get(2, vec![kv("a", "1", 2, 2, 1)]),
        ),
        1,
    ));
    ops.push(served(
        op(
            2,
            111,
            120,
            get_serializable("a"),
            ok_get(3, vec![kv("a", "2", 2, 3, 2)]),
        ),
        1,
    ));
    check_all(&history(ops), &CheckOptions::default()).expect("stale reads are allowed");
}

#[test]
fn serializable_read_must_match_its_header_revision() {
    let mut ops = writes();
    // Header 3 but the data of revision 2: a state that never existed at revision 3.
    ops.push(op(
        2,
        100,
        110,
        get_serializable("a"),
        ok_get(3, vec![kv("a", "1", 2, 2, 1)]),
    ));
    match check_all(&history(ops), &CheckOptions::default()) {
        Err(Violation::Serializable(s)) => {
            let text = s.to_string();
            assert!(text.contains("state at revision 2"), "{text}");
        }
        other => panic!("expected a serializable-read violation, got {other:?}"),
    }
}

#[test]
fn serializable_read_of_a_value_never_written_fails() {
    let mut ops = writes();
    ops.push(op(
        2,
        100,
        110,
        get_serializable("a"),
        ok_get(3, vec![kv("a", "lost", 2, 3, 2)]),
    ));
    assert!(matches!(
        check_all(&history(ops), &CheckOptions::default()),
        Err(Violation::Serializable(_))
    ));
}

#[test]
fn serializable_read_beyond_the_history_fails() {
    let mut ops = writes();
    ops.push(op(2, 100, 110, get_serializable("a"), ok_get(9, vec![])));
    assert!(check_all(&history(ops), &CheckOptions::default()).is_err());
}

#[test]
fn member_serving_older_revisions_later_is_caught() {
    let mut ops = writes();
    ops.push(served(
        op(
            2,
            100,
            110,
            get_serializable("a"),
            ok_get(3, vec![kv("a", "2", 2, 3, 2)]),
        ),
        1,
    ));
    ops.push(served(
        op(
            2,
            111,
            120,
            get_serializable("a"),
            ok_get(2, vec![kv("a", "1", 2, 2, 1)]),
        ),
        1,
    ));
    match check_all(&history(ops.clone()), &CheckOptions::default()) {
        Err(Violation::RevisionDecreased { member: 1, .. }) => {}
        other => panic!("expected a revision decrease, got {other:?}"),
    }
    // Two different members may be at different revisions.
    ops[4].member = Some(2);
    check_all(&history(ops), &CheckOptions::default()).expect("different members");
}

fn final_read(revision: i64, kvs: Vec<KeyValue>) -> FinalRead {
    FinalRead {
        member: Some(1),
        time: 1_000,
        revision,
        kvs,
    }
}

#[test]
fn durability_every_acknowledged_write_survives() {
    let mut h = history(writes());
    h.final_reads.push(final_read(
        4,
        vec![kv("a", "2", 2, 3, 2), kv("b", "1", 4, 4, 1)],
    ));
    durability::check(&h).expect("all there");

    // Revision 4 lost: b is missing and the store is behind.
    let mut lost = history(writes());
    lost.final_reads
        .push(final_read(3, vec![kv("a", "2", 2, 3, 2)]));
    let err = durability::check(&lost).expect_err("lost");
    assert!(err.to_string().contains("behind"), "{err}");

    // The store went on, but lost a's second write.
    let mut lost = history(writes());
    lost.final_reads.push(final_read(
        4,
        vec![kv("a", "1", 2, 2, 1), kv("b", "1", 4, 4, 1)],
    ));
    let err = durability::check(&lost).expect_err("lost");
    assert!(err.to_string().contains("older than the write"), "{err}");

    // Absent, and nothing could delete it.
    let mut lost = history(writes());
    lost.final_reads
        .push(final_read(4, vec![kv("a", "2", 2, 3, 2)]));
    assert!(durability::check(&lost).is_err());
}

#[test]
fn durability_allows_later_overwrites_and_deletes() {
    let mut ops = writes();
    ops.push(op(2, 40, 50, delete("b"), unknown()));
    ops.push(op(2, 51, 60, put("a", "3"), ok_put(6)));
    let mut h = history(ops);
    // b may have been deleted (the delete's outcome is unknown) at revision 5.
    h.final_reads
        .push(final_read(6, vec![kv("a", "3", 2, 6, 3)]));
    durability::check(&h).expect("overwritten and deleted");
}

#[test]
fn durability_allows_a_later_leased_put_to_take_the_key_away() {
    // Found by simulation seed 1179: a key written without a lease was later put again
    // with a lease; the lease's expiry (not in the history) deleted it.
    let mut ops = writes();
    let mut leased = put("b", "2");
    if let Request::Put(p) = &mut leased {
        p.lease = 7;
    }
    ops.push(op(2, 40, 50, leased, ok_put(5)));
    let mut h = history(ops);
    h.final_reads
        .push(final_read(6, vec![kv("a", "2", 2, 3, 2)]));
    durability::check(&h).expect("the lease could have expired");
}

#[test]
fn durability_of_acknowledged_deletes() {
    let mut ops = writes();
    ops.push(op(2, 40, 50, delete("a"), ok_delete(5, 1)));
    let mut h = history(ops.clone());
    h.final_reads
        .push(final_read(5, vec![kv("b", "1", 4, 4, 1)]));
    durability::check(&h).expect("deleted");

    // The delete was lost: a is still the old version.
    let mut h = history(ops);
    h.final_reads.push(final_read(
        5,
        vec![kv("a", "2", 2, 3, 2), kv("b", "1", 4, 4, 1)],
    ));
    assert!(durability::check(&h).is_err());
}

fn hash(member: MemberId, revision: i64, compact: i64, hash: u32) -> MemberHash {
    MemberHash {
        member,
        revision,
        compact_revision: compact,
        hash,
    }
}

#[test]
fn hash_kv_must_agree_at_a_common_revision() {
    cluster::check_hashes(&[
        hash(1, 10, 5, 0xaa),
        hash(2, 10, 5, 0xaa),
        hash(3, 10, 5, 0xaa),
    ])
    .expect("equal");
    // Different revisions or compact revisions are not compared.
    cluster::check_hashes(&[
        hash(1, 10, 5, 0xaa),
        hash(2, 11, 5, 0xbb),
        hash(3, 10, 6, 0xcc),
    ])
    .expect("not comparable");
    let err =
        cluster::check_hashes(&[hash(1, 10, 5, 0xaa), hash(2, 10, 5, 0xab)]).expect_err("diverged");
    assert!(err.to_string().contains("member 2"), "{err}");
}

fn seen(member: MemberId, time: Time, revision: i64, compact: Option<i64>) -> MemberRevision {
    MemberRevision {
        member,
        time,
        revision,
        compact_revision: compact,
    }
}

#[test]
fn member_revision_never_decreases() {
    let mut h = History {
        member_revisions: vec![
            seen(1, 10, 5, Some(1)),
            seen(2, 11, 3, None),
            seen(1, 20, 7, Some(4)),
            seen(2, 21, 9, None),
        ],
        ..History::default()
    };
    cluster::check_member_revisions(&h).expect("monotonic");

    h.member_revisions.push(seen(1, 30, 6, Some(4)));
    match cluster::check_member_revisions(&h) {
        Err(Violation::RevisionDecreased {
            member: 1,
            what: "revision",
            ..
        }) => {}
        other => panic!("expected a decrease, got {other:?}"),
    }

    // etcd #17780: the compact revision went back after a crash.
    h.member_revisions.pop();
    h.member_revisions.push(seen(1, 30, 8, Some(2)));
    match cluster::check_member_revisions(&h) {
        Err(Violation::RevisionDecreased {
            what: "compact revision",
            ..
        }) => {}
        other => panic!("expected a compact revision decrease, got {other:?}"),
    }
}

#[test]
fn a_member_rolled_back_by_an_operator_starts_over_at_the_rollback() {
    let mut h = History {
        member_revisions: vec![seen(1, 10, 9, Some(4)), seen(1, 30, 6, Some(2))],
        ..History::default()
    };
    assert!(cluster::check_member_revisions(&h).is_err());
    h.member_rollbacks.push(MemberRollback {
        member: 1,
        time: 20,
    });
    cluster::check_member_revisions(&h).expect("a new epoch after the rollback");
    // Within the epoch after the rollback, the revision still never goes down.
    h.member_revisions.push(seen(1, 40, 5, Some(2)));
    assert!(cluster::check_member_revisions(&h).is_err());
    // Another member's rollback changes nothing for member 1.
    h.member_revisions.pop();
    h.member_rollbacks[0].member = 2;
    assert!(cluster::check_member_revisions(&h).is_err());
}
