//! Watch guarantees: a valid stream passes, and breaking each guarantee is reported as
//! that guarantee.

mod common;

use bytes::Bytes;
use common::*;
use keel_sim::check::{check_all, CheckOptions, Guarantee, Violation};
use keel_sim::history::*;

fn put_event(
    key: &str,
    value: &str,
    create: i64,
    modr: i64,
    ver: i64,
    prev: Option<KeyValue>,
) -> Event {
    Event {
        kind: EventKind::Put,
        kv: kv(key, value, create, modr, ver),
        prev_kv: prev,
    }
}

fn delete_event(key: &str, modr: i64, prev: Option<KeyValue>) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: b(key),
            mod_revision: modr,
            ..KeyValue::default()
        },
        prev_kv: prev,
    }
}

fn events(received: Time, header: i64, events: Vec<Event>) -> WatchResponse {
    WatchResponse {
        received,
        header_revision: header,
        kind: WatchResponseKind::Events(events),
    }
}

fn progress(received: Time, header: i64) -> WatchResponse {
    WatchResponse {
        received,
        header_revision: header,
        kind: WatchResponseKind::Progress,
    }
}

fn created(received: Time, header: i64) -> WatchResponse {
    WatchResponse {
        received,
        header_revision: header,
        kind: WatchResponseKind::Created,
    }
}

fn e2() -> Event {
    put_event("a", "1", 2, 2, 1, None)
}
fn e3() -> Event {
    put_event("b", "1", 3, 3, 1, None)
}
fn e4a() -> Event {
    put_event("a", "2", 2, 4, 2, Some(kv("a", "1", 2, 2, 1)))
}
fn e4b() -> Event {
    put_event("b", "2", 3, 4, 2, Some(kv("b", "1", 3, 3, 1)))
}
fn e5() -> Event {
    delete_event("a", 5, Some(kv("a", "2", 2, 4, 2)))
}

/// put a (2), put b (3), txn put a+b (4), delete a (5), then a read at 5.
fn base_ops() -> Vec<Operation> {
    let both = Request::Txn(Txn {
        compare: vec![],
        success: vec![
            TxnOp::Put(Put {
                key: b("a"),
                value: b("2"),
                ..Put::default()
            }),
            TxnOp::Put(Put {
                key: b("b"),
                value: b("2"),
                ..Put::default()
            }),
        ],
        failure: vec![],
    });
    vec![
        op(1, 0, 10, put("a", "1"), ok_put(2)),
        op(1, 11, 20, put("b", "1"), ok_put(3)),
        op(
            1,
            21,
            30,
            both,
            Outcome::Ok(Response::Txn {
                revision: 4,
                succeeded: true,
                results: vec![
                    TxnOpResult::Put { prev_kv: None },
                    TxnOpResult::Put { prev_kv: None },
                ],
            }),
        ),
        op(1, 31, 40, delete("a"), ok_delete(5, 1)),
        op(
            2,
            41,
            50,
            Request::Range(Range {
                key: b("a"),
                range_end: b("c"),
                ..Range::default()
            }),
            ok_get(5, vec![kv("b", "2", 3, 4, 2)]),
        ),
    ]
}

fn watch_request(start: i64) -> WatchRequest {
    WatchRequest {
        key: b("a"),
        range_end: b("c"),
        start_revision: start,
        prev_kv: true,
        ..WatchRequest::default()
    }
}

fn valid_responses() -> Vec<WatchResponse> {
    vec![
        created(1, 1),
        events(11, 2, vec![e2()]),
        events(21, 3, vec![e3()]),
        events(31, 4, vec![e4a(), e4b()]),
        events(41, 5, vec![e5()]),
        progress(51, 5),
    ]
}

fn with_watch(request: WatchRequest, responses: Vec<WatchResponse>) -> History {
    let mut h = history(base_ops());
    h.watches.push(WatchRecord {
        client: 9,
        member: Some(1),
        created: 0,
        request,
        responses,
    });
    h
}

fn broken(h: &History, guarantee: Guarantee) -> String {
    match check_all(h, &CheckOptions::default()) {
        Err(Violation::Watch(w)) if w.guarantee == guarantee => w.to_string(),
        Err(other) => panic!("expected {guarantee:?}, got:\n{other}"),
        Ok(_) => panic!("expected {guarantee:?} to be broken"),
    }
}

fn passes(h: &History) {
    if let Err(v) = check_all(h, &CheckOptions::default()) {
        panic!("expected to pass:\n{v}");
    }
}

#[test]
fn valid_stream_passes() {
    let h = with_watch(watch_request(2), valid_responses());
    check_all(&h, &CheckOptions::default()).expect("valid");
    passes(&with_watch(
        WatchRequest {
            start_revision: 0,
            ..watch_request(0)
        },
        vec![created(12, 2), events(21, 3, vec![e3()]), progress(25, 3)],
    ));
}

#[test]
fn gap_breaks_reliable() {
    let mut r = valid_responses();
    r.remove(2);
    let text = broken(&with_watch(watch_request(2), r), Guarantee::Reliable);
    assert!(text.contains("missing"), "{text}");
}

#[test]
fn duplicate_breaks_unique() {
    let mut r = valid_responses();
    r[2] = events(21, 3, vec![e3(), e3()]);
    broken(&with_watch(watch_request(2), r), Guarantee::Unique);
}

#[test]
fn split_revision_breaks_atomic() {
    let mut r = valid_responses();
    r[3] = events(31, 4, vec![e4a()]);
    r.insert(4, events(32, 4, vec![e4b()]));
    broken(&with_watch(watch_request(2), r), Guarantee::Atomic);
}

#[test]
fn missing_half_of_a_revision_breaks_reliable() {
    let mut r = valid_responses();
    r[3] = events(31, 4, vec![e4a()]);
    broken(&with_watch(watch_request(2), r), Guarantee::Reliable);
}

#[test]
fn progress_notification_followed_by_an_older_event_breaks_bookmarkable() {
    let mut r = valid_responses();
    r.insert(3, progress(25, 4));
    broken(&with_watch(watch_request(2), r), Guarantee::Bookmarkable);
}

#[test]
fn progress_notification_going_back_breaks_bookmarkable() {
    let mut r = valid_responses();
    r.push(progress(60, 4));
    broken(&with_watch(watch_request(2), r), Guarantee::Bookmarkable);
}

#[test]
fn wrong_prev_kv_is_caught() {
    let mut r = valid_responses();
    let mut bad = e4b();
    bad.prev_kv = Some(kv("b", "0", 3, 3, 1));
    r[3] = events(31, 4, vec![e4a(), bad]);
    broken(&with_watch(watch_request(2), r), Guarantee::PrevKv);
}

#[test]
fn prev_kv_not_asked_for_is_caught() {
    let request = WatchRequest {
        prev_kv: false,
        ..watch_request(2)
    };
    broken(&with_watch(request, valid_responses()), Guarantee::PrevKv);
}

#[test]
fn filters_are_respected() {
    let no_delete = WatchRequest {
        filters: WatchFilters {
            no_put: false,
            no_delete: true,
        },
        ..watch_request(2)
    };
    broken(
        &with_watch(no_delete.clone(), valid_responses()),
        Guarantee::Filter,
    );
    // Without the delete it passes.
    let mut r = valid_responses();
    r.remove(4);
    passes(&with_watch(no_delete, r));

    let only_a = WatchRequest {
        range_end: Bytes::new(),
        ..watch_request(2)
    };
    broken(&with_watch(only_a, valid_responses()), Guarantee::Filter);
}

#[test]
fn watch_from_a_future_revision_never_returns_older_events() {
    // etcd #20221: a watch at current + 10 received old events.
    let future = watch_request(15);
    broken(
        &with_watch(
            future.clone(),
            vec![created(41, 5), events(42, 5, vec![e5()])],
        ),
        Guarantee::StartRevision,
    );
    passes(&with_watch(future, vec![created(41, 5), progress(50, 5)]));
}

#[test]
fn watch_from_now_starts_after_its_creation_revision() {
    let now = watch_request(0);
    broken(
        &with_watch(now, vec![created(21, 3), events(22, 3, vec![e3()])]),
        Guarantee::StartRevision,
    );
}

#[test]
fn resumed_watch_must_start_at_its_revision() {
    let r = vec![
        created(21, 3),
        events(31, 4, vec![e4a(), e4b()]),
        events(41, 5, vec![e5()]),
    ];
    broken(&with_watch(watch_request(3), r), Guarantee::Resumable);
    let r = vec![
        created(21, 3),
        events(22, 3, vec![e3()]),
        events(31, 4, vec![e4a(), e4b()]),
    ];
    passes(&with_watch(watch_request(3), r));
}

#[test]
fn events_must_agree_with_the_history() {
    let mut r = valid_responses();
    r[1] = events(11, 2, vec![put_event("a", "x", 2, 2, 1, None)]);
    let text = broken(&with_watch(watch_request(2), r), Guarantee::Reliable);
    assert!(text.contains("disagrees"), "{text}");

    // An event no write made.
    let mut r = valid_responses();
    r[2] = events(
        21,
        3,
        vec![
            e3(),
            put_event("a", "zzz", 2, 3, 2, Some(kv("a", "1", 2, 2, 1))),
        ],
    );
    broken(&with_watch(watch_request(2), r), Guarantee::Reliable);
}

#[test]
fn event_before_its_write_was_invoked_is_caught() {
    // The watch received revision 3 before the write that made it was invoked.
    let mut r = valid_responses();
    r[2] = events(5, 3, vec![e3()]);
    r[1] = events(4, 2, vec![e2()]);
    match check_all(&with_watch(watch_request(2), r), &CheckOptions::default()) {
        Err(Violation::Observations(_)) => {}
        other => panic!("expected an observation violation, got {other:?}"),
    }
}

fn compact_op(revision: i64) -> Operation {
    op(
        3,
        60,
        70,
        Request::Compact { revision },
        Outcome::Ok(Response::Compact { revision: 5 }),
    )
}

fn canceled(received: Time, compact_revision: i64) -> WatchResponse {
    WatchResponse {
        received,
        header_revision: 5,
        kind: WatchResponseKind::Canceled {
            compact_revision,
            reason: "compacted".into(),
        },
    }
}

#[test]
fn cancel_for_compaction_only_when_needed_revisions_were_compacted() {
    let mut h = with_watch(watch_request(2), vec![created(71, 5), canceled(72, 4)]);
    h.operations.push(compact_op(4));
    passes(&h);

    // It needed revisions from 4 on, which compaction at 4 keeps.
    let mut h = with_watch(
        watch_request(2),
        vec![
            created(1, 1),
            events(11, 2, vec![e2()]),
            events(21, 3, vec![e3()]),
            canceled(72, 4),
        ],
    );
    h.operations.push(compact_op(4));
    broken(&h, Guarantee::Compaction);

    // No compaction at all.
    let h = with_watch(watch_request(2), vec![created(71, 5), canceled(72, 4)]);
    broken(&h, Guarantee::Compaction);
}

#[test]
fn nothing_after_a_cancel() {
    let mut h = with_watch(
        watch_request(2),
        vec![created(71, 5), canceled(72, 4), events(73, 5, vec![e5()])],
    );
    h.operations.push(compact_op(4));
    broken(&h, Guarantee::Ordered);
}

#[test]
fn events_going_back_break_ordered() {
    let mut r = valid_responses();
    r.swap(1, 2);
    broken(&with_watch(watch_request(2), r), Guarantee::Ordered);
}
