use bytes::Bytes;
use keel_core::mvcc::*;

use crate::common::*;

/// A store and a watch hub fed by every apply, as the server wires them.
struct World {
    h: Harness,
    hub: WatchHub,
}

impl World {
    fn new() -> Self {
        Self::with(WatchConfig::default())
    }

    fn with(config: WatchConfig) -> Self {
        let h = Harness::new();
        let hub = WatchHub::new(config, &h.store);
        World { h, hub }
    }

    fn apply(&mut self, command: Command) -> Applied {
        // As the node does: events carry previous values only if a watcher asked.
        self.h
            .store
            .set_event_prev_values(self.hub.wants_prev_values());
        let applied = self.h.apply(command);
        if !applied.events.is_empty() {
            self.hub.on_apply(applied.revision, &applied.events);
        }
        applied
    }

    fn put(&mut self, key: &str, value: &str) {
        self.apply(Command::Put(PutRequest {
            key: b(key),
            value: b(value),
            ..Default::default()
        }));
    }

    fn delete(&mut self, key: &str) {
        self.apply(Command::DeleteRange(DeleteRangeRequest {
            key: b(key),
            ..Default::default()
        }));
    }

    /// Replaces the store with one restored from `source`'s snapshot, as a member that
    /// receives a leader's snapshot does.
    fn restore_from(&mut self, source: &Store) {
        self.h.store = Store::restore(&source.snapshot(), StoreConfig::default()).unwrap();
        self.hub.on_restore(&self.h.store);
    }

    /// What a new stream watching `request` receives at once (history catch-up included).
    fn watch_now(&mut self, request: &WatchCreateRequest) -> Vec<WatchResponse> {
        let s = self.hub.open_stream();
        self.hub.create_watch(s, request).unwrap();
        self.hub.sync(&self.h.store);
        self.drain(s)
    }

    /// Compacts at `revision` and runs physical compaction to the end.
    fn compact_fully(&mut self, revision: i64) {
        self.apply(Command::Compaction(CompactionRequest {
            revision,
            physical: true,
        }));
        while self.h.store.compaction_step(1) {}
    }

    fn drain(&mut self, stream: StreamId) -> Vec<WatchResponse> {
        std::iter::from_fn(|| self.hub.poll(stream)).collect()
    }
}

fn watch(key: &str, end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: b(key),
        range_end: b(end),
        start_revision: start,
        ..Default::default()
    }
}

/// (revision, type, key) of every event in the responses.
fn flat(responses: &[WatchResponse]) -> Vec<(i64, EventType, String)> {
    responses
        .iter()
        .flat_map(|r| r.events.iter())
        .map(|e| {
            (
                e.kv.mod_revision,
                e.r#type,
                String::from_utf8_lossy(&e.kv.key).into_owned(),
            )
        })
        .collect()
}

#[test]
fn a_watcher_gets_each_revision_in_order_in_one_response() {
    let mut w = World::new();
    let s = w.hub.open_stream();
    let id = w.hub.create_watch(s, &watch("a", "b", 0)).unwrap();
    assert_eq!(id, 0, "etcd's first automatic watch id is 0");
    let created = w.drain(s);
    assert!(created[0].created && created[0].header.revision == 1);
    w.put("a1", "x");
    w.apply(Command::Txn(TxnRequest {
        success: vec![
            put_op("a2", "y"),
            put_op("zz", "out of range"),
            delete_op("a1", ""),
        ],
        ..Default::default()
    }));
    let got = w.drain(s);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].header.revision, 3);
    assert_eq!(
        flat(&got),
        [
            (2, EventType::Put, "a1".into()),
            (3, EventType::Put, "a2".into()),
            (3, EventType::Delete, "a1".into())
        ]
    );
    assert!(
        got[1].events[1].prev_kv.is_none(),
        "prev_kv only when asked"
    );
}

#[test]
fn prev_kv_is_the_state_before_the_revision_and_absent_for_creations() {
    let mut w = World::new();
    let s = w.hub.open_stream();
    w.hub
        .create_watch(
            s,
            &WatchCreateRequest {
                prev_kv: true,
                ..watch("a", "", 0)
            },
        )
        .unwrap();
    w.put("a", "1");
    w.put("a", "2");
    w.delete("a");
    let got: Vec<WatchResponse> = w.drain(s).into_iter().skip(1).collect();
    let prevs: Vec<Option<Bytes>> = got
        .iter()
        .map(|r| r.events[0].prev_kv.as_ref().map(|kv| kv.value.clone()))
        .collect();
    assert_eq!(prevs, [None, Some(b("1")), Some(b("2"))]);
}

#[test]
fn filters_drop_puts_or_deletes() {
    let mut w = World::new();
    let s = w.hub.open_stream();
    w.hub
        .create_watch(
            s,
            &WatchCreateRequest {
                filters: vec![WatchFilterType::NoPut],
                ..watch("a", "", 0)
            },
        )
        .unwrap();
    w.hub
        .create_watch(
            s,
            &WatchCreateRequest {
                filters: vec![WatchFilterType::NoDelete],
                ..watch("a", "", 0)
            },
        )
        .unwrap();
    w.put("a", "1");
    w.delete("a");
    let got = w.drain(s);
    let by_watch: Vec<(i64, EventType)> = got
        .iter()
        .filter(|r| !r.created)
        .map(|r| (r.watch_id, r.events[0].r#type))
        .collect();
    assert_eq!(by_watch, [(1, EventType::Put), (0, EventType::Delete)]);
}

#[test]
fn a_watch_from_the_past_catches_up_from_history_then_goes_live() {
    let mut w = World::new();
    w.put("a", "1");
    w.put("b", "1");
    w.put("a", "2");
    let s = w.hub.open_stream();
    w.hub.create_watch(s, &watch("a", "", 2)).unwrap();
    assert!(w.hub.is_unsynced(s, 0));
    w.put("a", "3"); // not delivered yet: the watcher is catching up
    assert_eq!(w.hub.sync(&w.h.store), 0);
    w.put("a", "4");
    let got = w.drain(s);
    assert_eq!(
        flat(&got),
        [
            (2, EventType::Put, "a".into()),
            (4, EventType::Put, "a".into()),
            (5, EventType::Put, "a".into()),
            (6, EventType::Put, "a".into())
        ]
    );
    assert_eq!(
        got[1].header.revision, 5,
        "a catch-up batch that reaches the present carries the current revision"
    );
}

#[test]
fn a_watch_from_a_future_revision_waits_for_it() {
    let mut w = World::new();
    let s = w.hub.open_stream();
    w.hub.create_watch(s, &watch("a", "", 4)).unwrap();
    for v in ["1", "2", "3", "4"] {
        w.put("a", v);
    }
    assert_eq!(
        flat(&w.drain(s)).iter().map(|e| e.0).collect::<Vec<_>>(),
        [4, 5]
    );
}

#[test]
fn a_watch_below_the_compact_revision_is_cancelled_with_it() {
    let mut w = World::new();
    for v in ["1", "2", "3"] {
        w.put("a", v);
    }
    w.apply(Command::Compaction(CompactionRequest {
        revision: 3,
        physical: false,
    }));
    let s = w.hub.open_stream();
    w.hub.create_watch(s, &watch("a", "", 2)).unwrap();
    w.hub.create_watch(s, &watch("a", "", 3)).unwrap();
    w.hub.sync(&w.h.store);
    let got = w.drain(s);
    let cancel = got.iter().find(|r| r.canceled).unwrap();
    assert_eq!((cancel.watch_id, cancel.compact_revision), (0, 3));
    let from_compact: Vec<i64> = got
        .iter()
        .filter(|r| r.watch_id == 1)
        .flat_map(|r| r.events.iter().map(|e| e.kv.mod_revision))
        .collect();
    assert_eq!(
        from_compact,
        [3, 4],
        "a watch may start at the compact revision"
    );
}

#[test]
fn a_slow_stream_moves_its_watchers_to_catch_up_and_loses_nothing() {
    let mut w = World::with(WatchConfig {
        max_pending_events_per_stream: 3,
        max_catch_up_revisions: 2,
        ..WatchConfig::default()
    });
    let s = w.hub.open_stream();
    w.hub.create_watch(s, &watch("k", "l", 0)).unwrap();
    w.drain(s);
    for i in 0..10 {
        w.put(&format!("k{i}"), "v");
    }
    assert!(w.hub.pending_events(s) <= 3, "the outbox stays bounded");
    assert!(w.hub.is_unsynced(s, 0));
    let mut revisions = Vec::new();
    for _ in 0..20 {
        let got = w.drain(s);
        revisions.extend(flat(&got).into_iter().map(|e| e.0));
        w.hub.sync(&w.h.store);
    }
    revisions.extend(flat(&w.drain(s)).into_iter().map(|e| e.0));
    assert_eq!(revisions, (2..=11).collect::<Vec<_>>());
    assert!(!w.hub.is_unsynced(s, 0));
    w.put("k", "live again");
    assert_eq!(flat(&w.drain(s))[0].0, 12);
}

#[test]
fn a_progress_request_is_answered_at_once_when_synced_and_later_otherwise() {
    let mut w = World::new();
    w.put("a", "1");
    let s = w.hub.open_stream();
    w.hub.create_watch(s, &watch("a", "", 0)).unwrap();
    w.drain(s);
    w.hub.request_progress(s);
    let r = w.drain(s);
    assert_eq!(
        (r[0].watch_id, r[0].header.revision, r[0].events.len()),
        (PROGRESS_WATCH_ID, 2, 0)
    );
    w.hub.create_watch(s, &watch("a", "", 1)).unwrap();
    w.drain(s);
    w.hub.request_progress(s);
    assert!(w.drain(s).is_empty(), "a watcher is still catching up");
    w.hub.sync(&w.h.store);
    let r = w.drain(s);
    assert_eq!(r.last().unwrap().watch_id, PROGRESS_WATCH_ID);
}

#[test]
fn progress_notify_watchers_hear_from_quiet_ticks_only() {
    let mut w = World::new();
    let s = w.hub.open_stream();
    w.hub
        .create_watch(
            s,
            &WatchCreateRequest {
                progress_notify: true,
                ..watch("a", "", 0)
            },
        )
        .unwrap();
    w.drain(s);
    w.put("a", "1");
    w.hub.progress_tick();
    assert_eq!(w.drain(s).len(), 1, "just the event");
    w.put("b", "elsewhere");
    w.hub.progress_tick();
    let r = w.drain(s);
    assert_eq!((r.len(), r[0].watch_id, r[0].header.revision), (1, 0, 3));
}

#[test]
fn watch_ids_are_per_stream_and_misuse_is_cancelled_with_etcds_reason() {
    let mut w = World::new();
    let s1 = w.hub.open_stream();
    let s2 = w.hub.open_stream();
    assert_eq!(
        w.hub.create_watch(
            s1,
            &WatchCreateRequest {
                watch_id: 1,
                ..watch("a", "", 0)
            }
        ),
        Ok(1)
    );
    assert_eq!(w.hub.create_watch(s1, &watch("a", "", 0)), Ok(0));
    assert_eq!(
        w.hub.create_watch(s1, &watch("a", "", 0)),
        Ok(2),
        "automatic ids skip used ones"
    );
    assert_eq!(w.hub.create_watch(s2, &watch("a", "", 0)), Ok(0));
    assert_eq!(
        w.hub.create_watch(
            s1,
            &WatchCreateRequest {
                watch_id: 2,
                ..watch("a", "", 0)
            }
        ),
        Err(WatchError::DuplicateId)
    );
    assert_eq!(
        w.hub.create_watch(s1, &watch("b", "a", 0)),
        Err(WatchError::EmptyRange)
    );
    let r: Vec<WatchResponse> = w.drain(s1).into_iter().filter(|r| r.canceled).collect();
    assert_eq!(
        r[0].cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    assert_eq!(r[1].cancel_reason, "mvcc: watcher range is empty");
    assert!(r.iter().all(|r| r.created && r.watch_id == -1));
}

#[test]
fn a_cancelled_watch_hears_nothing_more() {
    let mut w = World::new();
    let s = w.hub.open_stream();
    let id = w.hub.create_watch(s, &watch("a", "", 0)).unwrap();
    assert!(w.hub.cancel_watch(s, id));
    assert!(!w.hub.cancel_watch(s, id));
    w.put("a", "1");
    let r = w.drain(s);
    assert_eq!(r.len(), 2);
    assert!(r[1].canceled && r[1].events.is_empty());
}

#[test]
fn an_empty_key_watches_from_the_smallest_key() {
    let mut w = World::new();
    let s = w.hub.open_stream();
    w.hub.create_watch(s, &watch("", "\0", 0)).unwrap();
    w.put("a", "1");
    w.put("zzz", "1");
    assert_eq!(flat(&w.drain(s)).len(), 2);
}

/// etcd#18089: with a compaction at the revision of a delete, a watch opened at that
/// revision lost the delete. Found in keel by simulation (scenario
/// `fsync_error_on_the_leader`, seed 291): the tombstone at the compact revision was
/// dropped by physical compaction, and left out of snapshots.
#[test]
fn a_watch_at_the_compact_revision_sees_the_delete_made_at_it() {
    let mut w = World::new();
    for v in ["2", "3", "4"] {
        w.put("k", v);
    }
    w.delete("k"); // revision 5
    w.put("k", "6");
    w.compact_fully(5);
    let expected = [
        (5, EventType::Delete, "k".into()),
        (6, EventType::Put, "k".into()),
    ];
    let mut prev_kv = watch("k", "", 5);
    prev_kv.prev_kv = true;
    let got = w.watch_now(&prev_kv);
    assert_eq!(flat(&got), expected);
    assert!(
        got.iter()
            .flat_map(|r| &r.events)
            .all(|e| e.prev_kv.is_none()),
        "revision 4 is compacted: etcd leaves prev_kv out"
    );

    // A member restored from this store's snapshot answers the same.
    let mut other = World::new();
    other.restore_from(&w.h.store);
    assert_eq!(flat(&other.watch_now(&watch("k", "", 5))), expected);

    // Once compaction passes the delete, the tombstone goes.
    w.compact_fully(6);
    assert_eq!(
        flat(&w.watch_now(&watch("k", "", 6))),
        [(6, EventType::Put, "k".into())]
    );
}

#[test]
fn after_a_snapshot_restore_watchers_catch_up_from_the_restored_history() {
    let mut w = World::new();
    let s = w.hub.open_stream();
    w.hub.create_watch(s, &watch("a", "", 0)).unwrap();
    w.drain(s);
    // Another member moves on; this one receives its snapshot.
    let mut leader = Harness::new();
    leader.put("a", "1");
    leader.put("a", "2");
    w.restore_from(&leader.store);
    w.hub.sync(&w.h.store);
    assert_eq!(
        flat(&w.drain(s)).iter().map(|e| e.0).collect::<Vec<_>>(),
        [2, 3]
    );
}

#[test]
fn a_watch_from_the_future_still_waits_for_its_revision_after_a_snapshot_restore() {
    // Found by simulation seed 1297 (with unbiased select): a client resumed a watch from
    // revision 91 on a member that had restarted at 75; a snapshot then brought the member
    // to 77, and the watch was sent every event from 78 on.
    let mut w = World::new();
    let s = w.hub.open_stream();
    w.hub.create_watch(s, &watch("a", "", 6)).unwrap();
    w.drain(s);
    let mut leader = Harness::new();
    leader.put("a", "1");
    leader.put("a", "2");
    w.restore_from(&leader.store);
    w.h.index = leader.index;
    w.hub.sync(&w.h.store);
    for value in ["3", "4", "5", "6"] {
        w.put("a", value);
    }
    assert_eq!(
        flat(&w.drain(s)).iter().map(|e| e.0).collect::<Vec<_>>(),
        [6, 7]
    );
}

mod slow_consumers {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Put(u8),
        Delete(u8),
        Poll(u8),
        Sync,
        Compact,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u8..4).prop_map(Step::Put),
            2 => (0u8..4).prop_map(Step::Delete),
            3 => (0u8..6).prop_map(Step::Poll),
            2 => Just(Step::Sync),
            1 => Just(Step::Compact),
        ]
    }

    fn name(k: u8) -> String {
        format!("k{k}")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Whatever the consumer's pace, each watcher receives exactly the events history
        /// holds for it, each once, in order, whole revisions per response — or, if
        /// compaction overtook it, a cancel with the compact revision.
        #[test]
        fn every_event_arrives_once_in_order_or_the_watch_is_cancelled_as_compacted(
            steps in proptest::collection::vec(step(), 1..80),
            start_back in 0i64..3,
            max_pending in 1usize..5,
        ) {
            let config = WatchConfig { max_pending_events_per_stream: max_pending, max_catch_up_revisions: 2, max_watchers_per_sync: 1 };
            let mut w = World::with(config);
            // The same writes without compaction: the full history to compare with.
            let mut shadow = Harness::new();
            let mut compactions = Vec::new();
            w.put("k0", "seed");
            w.put("k1", "seed");
            for k in ["k0", "k1"] {
                shadow.put(k, "seed");
            }
            let s = w.hub.open_stream();
            let start = (w.h.rev() - start_back).max(1);
            let all = w.hub.create_watch(s, &WatchCreateRequest { prev_kv: true, ..watch("k", "l", start) }).unwrap();
            let one = w.hub.create_watch(s, &WatchCreateRequest { filters: vec![WatchFilterType::NoDelete], ..watch("k1", "", start) }).unwrap();
            let mut received: Vec<WatchResponse> = Vec::new();
            for step in steps {
                match step {
                    Step::Put(k) => {
                        w.put(&name(k), "v");
                        shadow.put(&name(k), "v");
                    }
                    Step::Delete(k) => {
                        w.delete(&name(k));
                        shadow.delete(&name(k), "");
                    }
                    Step::Poll(n) => received.extend((0..n).filter_map(|_| w.hub.poll(s))),
                    Step::Sync => { w.hub.sync(&w.h.store); }
                    Step::Compact => {
                        let revision = w.h.rev() - 1;
                        if w.apply(Command::Compaction(CompactionRequest { revision, physical: false })).result.is_ok() {
                            compactions.push(revision);
                        }
                    }
                }
                prop_assert!(w.hub.pending_events(s) <= max_pending.max(4), "outbox bounded");
            }
            for _ in 0..200 {
                w.hub.sync(&w.h.store);
                received.extend(std::iter::from_fn(|| w.hub.poll(s)));
            }
            for (id, filter) in [
                (all, EventFilter { range: KeyRange::new(&b("k"), &b("l")), no_put: false, no_delete: false, prev_kv: true }),
                (one, EventFilter { range: KeyRange::single(&b("k1")), no_put: false, no_delete: true, prev_kv: false }),
            ] {
                let mine: Vec<&WatchResponse> = received.iter().filter(|r| r.watch_id == id && !r.created).collect();
                if let Some(cancel) = mine.iter().find(|r| r.canceled) {
                    prop_assert!(cancel.compact_revision > 0);
                    continue;
                }
                let got: Vec<Event> = mine.iter().flat_map(|r| r.events.iter().cloned()).collect();
                let full = shadow.store.events_since(start, &filter, usize::MAX, usize::MAX).unwrap().events;
                // A catch-up that starts exactly at a compact revision cannot see a delete
                // there (compaction dropped it, as in etcd); nothing else may be missing.
                let mut rest = got.iter().peekable();
                for event in &full {
                    let same = rest.peek().is_some_and(|g| g.kv == event.kv && g.r#type == event.r#type);
                    if same {
                        let g = rest.next().unwrap();
                        if g.prev_kv.is_some() {
                            prop_assert_eq!(&g.prev_kv, &event.prev_kv);
                        }
                    } else {
                        let excused = event.r#type == EventType::Delete && compactions.contains(&event.kv.mod_revision);
                        prop_assert!(excused, "missing {:?}", event);
                    }
                }
                prop_assert!(rest.next().is_none(), "unexpected extra events");
                for r in mine {
                    let revs: Vec<i64> = r.events.iter().map(|e| e.kv.mod_revision).collect();
                    prop_assert!(revs.windows(2).all(|p| p[0] <= p[1]));
                }
            }
        }
    }
}

#[test]
fn previous_values_are_wanted_while_a_watcher_that_asked_for_them_exists() {
    let mut w = World::new();
    w.put("a", "1");
    assert!(!w.hub.wants_prev_values());
    let with_prev = WatchCreateRequest {
        prev_kv: true,
        ..watch("a", "", 0)
    };
    let s = w.hub.open_stream();
    let plain = w.hub.create_watch(s, &watch("a", "", 0)).unwrap();
    let first = w.hub.create_watch(s, &with_prev).unwrap();
    assert!(w.hub.wants_prev_values());
    w.drain(s);
    w.put("a", "2");
    let events: Vec<Event> = w.drain(s).into_iter().flat_map(|r| r.events).collect();
    let prev_values: Vec<Option<Bytes>> = events
        .iter()
        .map(|e| e.prev_kv.as_ref().map(|kv| kv.value.clone()))
        .collect();
    assert_eq!(
        prev_values,
        [None, Some(b("1"))],
        "only the watcher that asked"
    );

    // A second one from the past (unsynced, then synced), then both cancelled.
    let second = w
        .hub
        .create_watch(
            s,
            &WatchCreateRequest {
                start_revision: 2,
                ..with_prev.clone()
            },
        )
        .unwrap();
    w.hub.sync(&w.h.store);
    assert!(w.hub.cancel_watch(s, first));
    assert!(w.hub.wants_prev_values(), "the second still asks");
    assert!(w.hub.cancel_watch(s, second));
    assert!(!w.hub.wants_prev_values());
    w.drain(s);
    w.put("a", "3");
    let events: Vec<Event> = w.drain(s).into_iter().flat_map(|r| r.events).collect();
    assert_eq!(events.len(), 1);
    assert!(events[0].prev_kv.is_none());
    assert!(w.hub.cancel_watch(s, plain));

    // Closing a stream forgets its watchers.
    let s = w.hub.open_stream();
    w.hub.create_watch(s, &with_prev).unwrap();
    assert!(w.hub.wants_prev_values());
    w.hub.close_stream(s);
    assert!(!w.hub.wants_prev_values());
}
