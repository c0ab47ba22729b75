//! etcd's real-world failures (issue 9's table) as named scenarios keel must survive: each
//! test is named after what happens, cites the etcd issue in its doc comment, runs the
//! fault schedule that provoked the bug in etcd, and is judged by every checker of the
//! simulator (linearizability, watch guarantees, serializable reads, durability,
//! cross-member `HashKV`, revisions that never go down, Raft invariants) plus its own
//! assertions. A failure prints the seed and the command that replays it.
#![cfg(madsim)]

use std::time::Duration;

use keel_core::mvcc::WatchConfig;
use keel_scenarios::scenario;
use keel_sim::nemesis::{FaultKind::*, Step, Target};
use keel_sim::run::{Extras, RunConfig, RunReport};
use keel_sim::watcher::{WatchStart, WatcherConfig};
use keel_sim::workload::WorkloadMix;
use keel_storage::Faults;

const FILE: &str = "etcd_issues";

fn script(seed: u64, servers: usize, steps: Vec<Step>) -> RunConfig {
    RunConfig::scripted(seed, servers, steps)
}

/// Every member's revision and compact revision, asked every 100 ms.
fn probed() -> Extras {
    Extras {
        member_probe: Some(Duration::from_millis(100)),
        ..Extras::default()
    }
}

/// The run recorded at least `min` successful operations of the kind `what` describes:
/// the scenario did provoke what it is about.
fn assert_some(
    report: &RunReport,
    what: &str,
    min: usize,
    pred: impl Fn(&keel_sim::history::Operation) -> bool,
) {
    let n = report
        .history
        .operations
        .iter()
        .filter(|op| matches!(op.outcome, keel_sim::history::Outcome::Ok(_)))
        .filter(|op| pred(op))
        .count();
    assert!(
        n >= min,
        "seed {}: only {n} successful {what} (the scenario needs at least {min})",
        report.config.seed
    );
}

/// etcd #14370: a single-node cluster lost an acknowledged write on a crash (it answered
/// before its WAL write was synced). One node, crashes that lose, tear or keep unsynced
/// writes at random; durability and linearizability must find every acknowledged write.
#[test]
fn a_single_node_cluster_keeps_every_acknowledged_write_across_crashes() {
    scenario(
        FILE,
        "a_single_node_cluster_keeps_every_acknowledged_write_across_crashes",
        |seed| RunConfig {
            clients: 4,
            disk_faults: Faults::crashes(),
            extras: probed(),
            ..script(
                seed,
                1,
                vec![
                    Step::new(1000, Crash, Target::Server(0), 300),
                    Step::new(700, Crash, Target::Server(0), 100),
                    Step::new(700, CrashAll, Target::Any, 500),
                ],
            )
        },
    );
}

/// etcd #13766: a crash under load made revisions diverge between members (the applied
/// index was not saved atomically with the data, so a restart applied entries twice).
/// Followers crash again and again while snapshots are taken every 25 entries; members'
/// `HashKV` at the final revision must be equal, and no revision may go down.
#[test]
fn followers_crashing_during_writes_and_snapshots_keep_identical_data() {
    scenario(
        FILE,
        "followers_crashing_during_writes_and_snapshots_keep_identical_data",
        |seed| RunConfig {
            clients: 5,
            snapshot_count: 25,
            extras: probed(),
            ..script(
                seed,
                3,
                vec![
                    Step::new(800, Crash, Target::Follower, 400),
                    Step::new(500, Crash, Target::Follower, 200),
                    Step::new(500, Crash, Target::Follower, 800),
                    Step::new(500, Crash, Target::Follower, 100),
                ],
            )
        },
    );
}

/// etcd #17780: the revision went down after a crash during compaction. Many keys and
/// frequent compactions close behind the head, with crashes of the leader and of every
/// node; a probe asks each member its revision and compact revision every 100 ms, and
/// neither may ever go down (nor may the final state lose a compaction).
#[test]
fn a_crash_during_compaction_never_lowers_a_revision() {
    let reports = scenario(
        FILE,
        "a_crash_during_compaction_never_lowers_a_revision",
        |seed| RunConfig {
            clients: 5,
            snapshot_count: 100,
            workload: keel_sim::workload::WorkloadConfig {
                keys: 40,
                ..Default::default()
            },
            extras: Extras {
                mix: WorkloadMix {
                    compactions: 8,
                    ..WorkloadMix::default()
                },
                ..probed()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(1500, CrashLeader, Target::Leader, 300),
                    Step::new(800, Crash, Target::Any, 300),
                    Step::new(800, CrashAll, Target::Any, 300),
                ],
            )
        },
    );
    for report in &reports {
        assert_some(report, "compactions", 5, |op| {
            matches!(op.request, keel_sim::history::Request::Compact { .. })
        });
    }
}

/// etcd #14685: a crash during defragmentation made revisions diverge. Defragments of the
/// leader and of any member, each followed by crashes that tear unsynced writes (on the
/// leader, on any node, on all at once), with snapshots every 10 entries (the log released
/// behind engine commits): members' `HashKV` must stay equal.
#[test]
fn crashes_while_snapshots_are_written_keep_members_identical() {
    let reports = scenario(
        FILE,
        "crashes_while_snapshots_are_written_keep_members_identical",
        |seed| RunConfig {
            clients: 5,
            snapshot_count: 10,
            disk_faults: Faults {
                unsynced_write_tears_probability: 0.8,
                ..Faults::crashes()
            },
            extras: probed(),
            ..script(
                seed,
                3,
                vec![
                    Step::new(500, Defragment, Target::Leader, 100),
                    Step::new(300, CrashLeader, Target::Leader, 200),
                    Step::new(400, Defragment, Target::Any, 100),
                    Step::new(200, Crash, Target::Any, 200),
                    Step::new(400, Defragment, Target::Any, 100),
                    Step::new(200, CrashAll, Target::Any, 200),
                ],
            )
        },
    );
    for report in &reports {
        let defragmented = report
            .faults
            .iter()
            .filter(|f| f.what.starts_with("defragment") && f.what.ends_with("(done)"))
            .count();
        assert!(
            defragmented >= 2,
            "seed {}: {defragmented} defragments answered OK: {:?}",
            report.config.seed,
            report.faults
        );
    }
}

/// etcd #15271: a watch went back in time when its member, partitioned, caught up by a
/// snapshot. Every watcher watches on server 3 (some from revision 1, some from now,
/// with progress requests), which is cut off long enough for the leader to compact its
/// log past it (snapshots every 10 entries, 1 entry kept after each; 15 s, as clients
/// whose requests went to server 3 stall until they time out), then heals: the watches
/// must stay ordered, unique and gapless (Ordered, Unique, Reliable, Bookmarkable). Every
/// seed must really send a snapshot.
#[test]
fn a_watch_on_a_member_that_catches_up_by_snapshot_never_goes_back() {
    let reports = scenario(
        FILE,
        "a_watch_on_a_member_that_catches_up_by_snapshot_never_goes_back",
        |seed| RunConfig {
            clients: 5,
            watchers: 3,
            snapshot_count: 10,
            extras: Extras {
                snapshot_catchup_entries: Some(1),
                watch: WatcherConfig {
                    server: Some(2),
                    progress_every: Some(Duration::from_millis(300)),
                    ..WatcherConfig::default()
                },
                ..probed()
            },
            ..script(
                seed,
                3,
                vec![Step::new(1000, IsolateLeader, Target::Server(2), 15_000)],
            )
        },
    );
    assert_snapshots_were_sent(&reports);
}

/// etcd #18089 and #19179: a watch dropped the delete event when compaction happened on
/// that delete; a watch opened at the compact revision missed the delete there. A client
/// puts a key, deletes it at revision D, compacts at exactly D and watches from D - 1
/// (must be cancelled as compacted), D (must start with the delete: Resumable) and
/// D + 1, over and over, while leaders crash and followers restore snapshots taken after
/// such compactions (every 50 entries).
#[test]
fn a_delete_at_the_compact_revision_reaches_watches_from_that_revision() {
    let reports = scenario(
        FILE,
        "a_delete_at_the_compact_revision_reaches_watches_from_that_revision",
        |seed| RunConfig {
            snapshot_count: 50,
            extras: Extras {
                compaction_watches: true,
                ..probed()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(2000, CrashLeader, Target::Leader, 500),
                    Step::new(1500, Crash, Target::Follower, 2000),
                ],
            )
        },
    );
    for report in &reports {
        // Some watch opened exactly at a compaction's revision saw the delete there.
        let compactions: Vec<i64> = report
            .history
            .operations
            .iter()
            .filter(|op| matches!(op.outcome, keel_sim::history::Outcome::Ok(_)))
            .filter_map(|op| match op.request {
                keel_sim::history::Request::Compact { revision } => Some(revision),
                _ => None,
            })
            .collect();
        let delete_seen = report.history.watches.iter().any(|w| {
            compactions.contains(&w.request.start_revision)
                && w.responses.iter().any(|r| match &r.kind {
                    keel_sim::history::WatchResponseKind::Events(events) => {
                        events.iter().any(|e| {
                            e.kind == keel_sim::history::EventKind::Delete
                                && e.kv.mod_revision == w.request.start_revision
                        })
                    }
                    _ => false,
                })
        });
        assert!(
            delete_seen,
            "seed {}: no watch from a compact revision saw the delete there ({} compactions)",
            report.config.seed,
            compactions.len()
        );
    }
}

/// etcd #17247: a watch got an event twice (a txn's writes were cached and replayed).
/// Txns that put and delete up to six keys in one revision, watchers over all keys, the
/// leader crashing and handing over: every watch must be Unique and Atomic (and Reliable).
/// A stream holds one to four unsent events at most, so watchers fall to catch-up often and
/// a catch-up read fills its budget in the middle of a txn's revision (it must still end at
/// a revision boundary: `sim/mutants/27` cuts there and is caught here).
#[test]
fn txns_writing_many_keys_reach_each_watch_once_and_whole() {
    let reports = scenario(
        FILE,
        "txns_writing_many_keys_reach_each_watch_once_and_whole",
        |seed| RunConfig {
            clients: 4,
            watchers: 4,
            extras: Extras {
                mix: WorkloadMix {
                    multi_key_txns: 40,
                    ..WorkloadMix::default()
                },
                watch_limits: Some(WatchConfig {
                    max_pending_events_per_stream: 1 + (seed % 4) as usize,
                    max_catch_up_revisions: [1, 8, 1000][(seed / 4 % 3) as usize],
                    ..WatchConfig::default()
                }),
                ..Extras::default()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(1500, CrashLeader, Target::Leader, 500),
                    Step::new(1000, TransferLeader, Target::Any, 500),
                ],
            )
        },
    );
    for report in &reports {
        assert_some(
            report,
            "multi-key txns",
            20,
            |op| matches!(&op.request, keel_sim::history::Request::Txn(t) if t.success.len() > 1 && !t.is_read_only()),
        );
    }
}

/// etcd #17529 and #20655: events were lost when a watch stream starved, and when watches
/// were created quickly one after another. Eight watchers, one of them reading slowly;
/// every stream opens four watches at once (consecutive start revisions) and is replaced
/// every 1.5 s; writes keep coming and a leader crashes. No watch may lose or skip an
/// event: it catches up or is cancelled with `compact_revision` (Reliable, Compaction).
#[test]
fn a_slow_watcher_and_bursts_of_watch_creation_lose_no_event() {
    scenario(
        FILE,
        "a_slow_watcher_and_bursts_of_watch_creation_lose_no_event",
        |seed| RunConfig {
            clients: 5,
            watchers: 8,
            extras: Extras {
                watch: WatcherConfig {
                    slow_reader: Some(Duration::from_millis(150)),
                    lifetime: Some(Duration::from_millis(1500)),
                    burst: 4,
                    ..WatcherConfig::default()
                },
                ..Extras::default()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(2000, CrashLeader, Target::Leader, 500),
                    Step::new(1500, Crash, Target::Follower, 500),
                ],
            )
        },
    );
}

/// etcd #15220: a progress notification was not in sync with the event stream (a
/// notification at revision R, then an event at or below R). Watchers ask for progress
/// every 20 ms while clients write, across a partition and a leader crash: a notification
/// at R must never be followed by an event at or below R (Bookmarkable).
#[test]
fn progress_requests_interleaved_with_writes_never_precede_older_events() {
    let reports = scenario(
        FILE,
        "progress_requests_interleaved_with_writes_never_precede_older_events",
        |seed| RunConfig {
            clients: 5,
            watchers: 4,
            extras: Extras {
                watch: WatcherConfig {
                    progress_every: Some(Duration::from_millis(20)),
                    ..WatcherConfig::default()
                },
                ..Extras::default()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(1000, Partition, Target::Any, 1000),
                    Step::new(1000, CrashLeader, Target::Leader, 500),
                ],
            )
        },
    );
    for report in &reports {
        let progress = report
            .history
            .watches
            .iter()
            .flat_map(|w| &w.responses)
            .filter(|r| r.kind == keel_sim::history::WatchResponseKind::Progress)
            .count();
        assert!(
            progress >= 50,
            "seed {}: only {progress} progress notifications",
            report.config.seed
        );
    }
}

/// etcd #20221: a watch on a future revision returned old events. Every stream watches
/// from the current revision + 10 while clients write: the first event must be at or
/// after the start revision (StartRevision), and none may be missing from there on
/// (Reliable, Resumable).
#[test]
fn a_watch_on_a_future_revision_sends_nothing_older() {
    let reports = scenario(
        FILE,
        "a_watch_on_a_future_revision_sends_nothing_older",
        |seed| RunConfig {
            watchers: 3,
            extras: Extras {
                watch: WatcherConfig {
                    start: WatchStart::Ahead(10),
                    lifetime: Some(Duration::from_millis(1500)),
                    ..WatcherConfig::default()
                },
                ..Extras::default()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(2000, CrashLeader, Target::Leader, 500),
                    Step::new(2000, TransferLeader, Target::Any, 500),
                ],
            )
        },
    );
    for report in &reports {
        let served = report
            .history
            .watches
            .iter()
            .filter(|w| {
                w.responses
                    .iter()
                    .any(|r| matches!(r.kind, keel_sim::history::WatchResponseKind::Events(_)))
            })
            .count();
        assert!(
            served >= 3,
            "seed {}: only {served} future watches got events",
            report.config.seed
        );
    }
}

/// etcd #18667: a txn reading at a revision being compacted gave inconsistent results.
/// Txns that read at a revision a few behind the head, write, and read again, racing
/// compactions close behind the head: each txn fails whole with `ErrCompacted` or
/// succeeds whole (linearizability against the model, which checks both).
#[test]
fn a_txn_reading_a_revision_being_compacted_is_all_or_nothing() {
    let reports = scenario(
        FILE,
        "a_txn_reading_a_revision_being_compacted_is_all_or_nothing",
        |seed| RunConfig {
            clients: 5,
            extras: Extras {
                mix: WorkloadMix {
                    past_revision_txns: 30,
                    compactions: 10,
                    ..WorkloadMix::default()
                },
                ..Extras::default()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(1500, CrashLeader, Target::Leader, 500),
                    Step::new(1000, Crash, Target::Follower, 500),
                ],
            )
        },
    );
    for report in &reports {
        let compacted = report
            .history
            .operations
            .iter()
            .filter(|op| {
                matches!(op.request, keel_sim::history::Request::Txn(_))
                    && op.outcome
                        == keel_sim::history::Outcome::Error(
                            keel_sim::history::StoreError::Compacted,
                        )
            })
            .count();
        assert!(
            compacted >= 1,
            "seed {}: no txn was refused as compacted",
            report.config.seed
        );
    }
}

/// etcd #20418 (found by Antithesis): a paused process served stale reads when it
/// resumed. The leader's process stops for 3 s, far past its election timeout, while a
/// new leader takes writes; when it resumes, clients still send it linearizable reads:
/// none may be stale (linearizability).
#[test]
fn a_paused_leader_serves_no_stale_read_when_it_resumes() {
    scenario(
        FILE,
        "a_paused_leader_serves_no_stale_read_when_it_resumes",
        |seed| RunConfig {
            clients: 5,
            ..script(
                seed,
                3,
                vec![
                    Step::new(1000, Pause, Target::Leader, 3000),
                    Step::new(500, Pause, Target::Leader, 1200),
                ],
            )
        },
    );
}

/// etcd #14140 (Jepsen with lazyfs): a stale read after writes that were never fsynced
/// were lost. Every crash loses exactly the unsynced writes (a perfect disk), on
/// followers, the leader and everyone: linearizability must hold, and no member may
/// serve data it lost (serializable reads, `HashKV`).
#[test]
fn crashes_that_lose_unsynced_writes_cause_no_stale_read() {
    scenario(
        FILE,
        "crashes_that_lose_unsynced_writes_cause_no_stale_read",
        |seed| RunConfig {
            clients: 5,
            disk_faults: Faults::none(),
            extras: probed(),
            ..script(
                seed,
                3,
                vec![
                    Step::new(800, Crash, Target::Follower, 300),
                    Step::new(600, CrashLeader, Target::Leader, 300),
                    Step::new(600, CrashAll, Target::Any, 200),
                ],
            )
        },
    );
}

/// etcd #15247: every lease was revoked while the leader was stuck in `fdatasync`.
/// keel's server loop persists inline, so a stuck sync stops the whole loop; a process
/// pause is that (see the report: the simulated disk cannot stall). The leader stops for
/// 5 s while a client keeps a lease alive through the others: the lease must not expire
/// (the lease holder's verdict), and the stuck leader must step down (a new term).
#[test]
fn a_leader_stuck_for_seconds_revokes_no_lease_and_steps_down() {
    let reports = scenario(
        FILE,
        "a_leader_stuck_for_seconds_revokes_no_lease_and_steps_down",
        |seed| RunConfig {
            lease_holder: true,
            ..script(seed, 3, vec![Step::new(2500, Pause, Target::Leader, 5000)])
        },
    );
    for report in &reports {
        let (Some((_, before)), Some((_, after))) = (report.leader_before, report.leader_after)
        else {
            panic!(
                "seed {}: no leader to compare: {:?} / {:?}",
                report.config.seed, report.leader_before, report.leader_after
            );
        };
        assert!(
            after > before,
            "seed {}: the stuck leader kept its term {before} (now {after})",
            report.config.seed
        );
    }
}

/// etcd #18055: a follower panicked when two snapshots arrived close together. Snapshots
/// every 10 entries, 1 entry kept after each; server 3 is down long enough to need one
/// (8 s), is cut off again while it catches up, and crashes once more, so snapshots reach
/// it back to back and half applied: no panic, and it converges (`HashKV` equal, revisions
/// never go down). Every seed must really send a snapshot.
#[test]
fn a_follower_receiving_snapshots_back_to_back_converges() {
    let reports = scenario(
        FILE,
        "a_follower_receiving_snapshots_back_to_back_converges",
        |seed| RunConfig {
            clients: 5,
            snapshot_count: 10,
            extras: Extras {
                snapshot_catchup_entries: Some(1),
                ..probed()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(500, Crash, Target::Server(2), 8000),
                    Step::new(100, IsolateLeader, Target::Server(2), 1500),
                    Step::new(50, Crash, Target::Server(2), 100),
                    Step::new(50, SlowNetwork, Target::Any, 1000),
                ],
            )
        },
    );
    assert_snapshots_were_sent(&reports);
}

/// Jepsen's etcd 3.4.3 analysis: a watch from revision 0 is an edge case. A watch with
/// `start_revision = 0` means "from the revision after the current one": no event at or
/// before the `created` header's revision, none missed after it (StartRevision,
/// Reliable). Streams are replaced every second across a partition and a leader crash.
#[test]
fn a_watch_from_revision_zero_starts_after_its_creation() {
    scenario(
        FILE,
        "a_watch_from_revision_zero_starts_after_its_creation",
        |seed| RunConfig {
            watchers: 3,
            extras: Extras {
                watch: WatcherConfig {
                    start: WatchStart::FromNow,
                    lifetime: Some(Duration::from_millis(1000)),
                    ..WatcherConfig::default()
                },
                ..Extras::default()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(1000, Partition, Target::Any, 1000),
                    Step::new(1000, CrashLeader, Target::Leader, 500),
                ],
            )
        },
    );
}

/// etcd #14571: enabling authentication made members' data diverge (a request checked
/// against one auth state was applied under another). Authentication is turned on and off
/// again and again while clients (without tokens) write and a leader crashes: whatever
/// each member accepted or refused, members' `HashKV` must be equal and the history
/// linearizable. (Membership changes, the row's other half, are in `membership.rs`.)
#[test]
fn turning_auth_on_and_off_during_writes_keeps_members_identical() {
    let reports = scenario(
        FILE,
        "turning_auth_on_and_off_during_writes_keeps_members_identical",
        |seed| RunConfig {
            clients: 4,
            extras: Extras {
                auth_toggling: true,
                ..probed()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(2500, CrashLeader, Target::Leader, 500),
                    Step::new(2000, Crash, Target::Follower, 500),
                ],
            )
        },
    );
    for report in &reports {
        let enabled = report.auth_enabled.unwrap_or(0);
        assert!(
            enabled >= 2,
            "seed {}: authentication was turned on only {enabled} times",
            report.config.seed
        );
        let refused = report
            .history
            .operations
            .iter()
            .filter(|op| {
                matches!(&op.outcome, keel_sim::history::Outcome::Failed(why) if why.contains("user name is empty"))
            })
            .count();
        assert!(
            refused >= 1,
            "seed {}: no request was refused for want of a user",
            report.config.seed
        );
    }
}

/// Jepsen's etcd 3.4.3 analysis: locks built on leases are unsafe when their holder
/// pauses. Three clients take a lock with a 2 s lease and sometimes stall 3 to 4 s while
/// holding it (their lease expires, another takes the lock), then write once fenced (a
/// txn guarded by the lock key's create revision) and once plainly, while the leader
/// pauses and crashes. Every fenced write must land while its writer held the lock; the
/// plain writes of stalled holders do land under someone else's lock, which is why
/// locks need fencing (as etcd's documentation and keel's README say).
#[test]
fn a_paused_lock_holder_is_stopped_by_fencing_with_the_lock_revision() {
    use keel_sim::client::{FENCED_KEY, LOCK_KEY, UNFENCED_KEY};
    use keel_sim::history::{Outcome, Request, Response, TxnOp};
    let reports = scenario(
        FILE,
        "a_paused_lock_holder_is_stopped_by_fencing_with_the_lock_revision",
        |seed| RunConfig {
            clients: 2,
            extras: Extras {
                lock_holders: 3,
                ..Extras::default()
            },
            ..script(
                seed,
                3,
                vec![
                    Step::new(2000, Pause, Target::Leader, 1500),
                    Step::new(2000, CrashLeader, Target::Leader, 500),
                    Step::new(2000, Pause, Target::Follower, 1000),
                ],
            )
        },
    );
    let (mut refused, mut unsafe_plain) = (0, 0);
    for report in &reports {
        let Ok(check) = &report.check else {
            unreachable!("the scenario driver only returns passing runs")
        };
        let truth = &check.truth;
        let holder_at = |revision: i64| truth.get(LOCK_KEY.as_bytes(), revision).map(|kv| kv.value);
        for op in &report.history.operations {
            match (&op.request, &op.outcome) {
                (
                    Request::Txn(txn),
                    Outcome::Ok(Response::Txn {
                        revision,
                        succeeded,
                        ..
                    }),
                ) => {
                    let Some(TxnOp::Put(put)) = txn.success.first() else {
                        continue;
                    };
                    if put.key != FENCED_KEY.as_bytes() {
                        continue;
                    }
                    if !succeeded {
                        refused += 1;
                        continue;
                    }
                    // "fenced<id>-<round>" was written under "holder<id>-<round>".
                    let holder = String::from_utf8_lossy(&put.value).replace("fenced", "holder");
                    assert_eq!(
                        holder_at(*revision).as_deref(),
                        Some(holder.as_bytes()),
                        "seed {}: a fenced write at revision {revision} landed while {holder} did not hold the lock",
                        report.config.seed
                    );
                }
                (Request::Put(put), Outcome::Ok(Response::Put { revision, .. }))
                    if put.key == UNFENCED_KEY.as_bytes() =>
                {
                    let holder = String::from_utf8_lossy(&put.value).replace("unfenced", "holder");
                    if holder_at(*revision).as_deref() != Some(holder.as_bytes()) {
                        unsafe_plain += 1;
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        refused >= 1 && unsafe_plain >= 1,
        "the stalls never cost a holder its lock: {refused} fenced writes refused, {unsafe_plain} \
         plain writes outside the lock"
    );
}

/// The run really made a lagging member catch up from a leader's snapshot.
fn assert_snapshots_were_sent(reports: &[keel_sim::run::RunReport]) {
    for report in reports {
        assert!(
            report.leader_snapshots_restored > 0,
            "seed {}: no member was sent a snapshot",
            report.config.seed
        );
    }
}
