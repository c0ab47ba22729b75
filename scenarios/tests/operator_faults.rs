//! Operators' faults (the operator-faults issue): a wiped or rolled-back data dir, a member
//! moved to a new peer URL, a member removed while it runs and added again on its URL. Each
//! is a fixed schedule on the real server code, judged by every checker (linearizability,
//! watches, durability, Raft invariants, member revisions never going down) and by what
//! the fault itself demands (`keel_sim::operator`): a member that lost its state refuses to
//! start or stops, and is replaced by the operator's procedure; a removed member stops; a
//! moved member keeps its id.
#![cfg(madsim)]

use std::time::Duration;

use keel_scenarios::{scenario, scenario_over};
use keel_sim::nemesis::{FaultKind::*, Step, Target};
use keel_sim::run::{Extras, RunConfig};

const FILE: &str = "operator_faults";

/// Every run of these scenarios watches every member's revision (it must never go down,
/// which a member serving from a lost state would show).
fn script(seed: u64, steps: Vec<Step>) -> RunConfig {
    RunConfig {
        extras: Extras {
            member_probe: Some(Duration::from_millis(200)),
            ..Extras::default()
        },
        ..RunConfig::scripted(seed, 3, steps)
    }
}

/// Asserts `holds` of each run's fault log (one line a fault, as the failure report prints).
fn each_log(reports: Vec<keel_sim::run::RunReport>, what: &str, holds: impl Fn(&str) -> bool) {
    for report in reports {
        let log = report
            .faults
            .iter()
            .map(|f| f.what.clone())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(holds(&log), "seed {}: {what}:\n{log}", report.config.seed);
    }
}

#[test]
fn a_wiped_member_refuses_to_start_and_is_replaced() {
    let reports = scenario(
        FILE,
        "a_wiped_member_refuses_to_start_and_is_replaced",
        |seed| {
            script(
                seed,
                vec![
                    Step::new(1500, WipeDataDir, Target::Follower, 0),
                    Step::new(1500, WipeDataDir, Target::Leader, 0),
                ],
            )
        },
    );
    each_log(reports, "both refused and replaced", |log| {
        log.matches(": refused; replaced it as member").count() == 2
    });
}

#[test]
fn a_rolled_back_member_stops_at_the_first_heartbeat_and_is_replaced() {
    let reports = scenario(
        FILE,
        "a_rolled_back_member_stops_at_the_first_heartbeat_and_is_replaced",
        |seed| {
            script(
                seed,
                vec![
                    Step::new(1500, RollbackDataDir, Target::Follower, 2000),
                    Step::new(1500, RollbackDataDir, Target::Follower, 1500),
                ],
            )
        },
    );
    each_log(reports, "a rollback under writes is caught", |log| {
        log.contains(": stopped; replaced it as member")
    });
}

#[test]
fn a_member_moved_to_a_new_peer_url_keeps_its_id() {
    let reports = scenario(
        FILE,
        "a_member_moved_to_a_new_peer_url_keeps_its_id",
        |seed| {
            script(
                seed,
                vec![
                    Step::new(1500, MoveMember, Target::Follower, 0),
                    Step::new(1500, MoveMember, Target::Leader, 0),
                    Step::new(1500, MoveMember, Target::Follower, 0),
                ],
            )
        },
    );
    each_log(reports, "every moved member serves", |log| {
        log.matches("Serving").count() == 3
    });
}

#[test]
fn a_removed_member_stops_and_one_added_on_its_url_joins_as_a_new_member() {
    let reports = scenario(
        FILE,
        "a_removed_member_stops_and_one_added_on_its_url_joins_as_a_new_member",
        |seed| {
            script(
                seed,
                vec![
                    Step::new(1500, RemoveAndAddAgain, Target::Follower, 0),
                    Step::new(1500, RemoveAndAddAgain, Target::Leader, 0),
                ],
            )
        },
    );
    each_log(
        reports,
        "both removed members stopped and were replaced",
        |log| {
            log.matches("Stopped(\"Removed\")").count() == 2
                && log.matches("replaced it as member").count() == 2
        },
    );
}

/// A member's quota lowered to just above what it holds (a flag rolled out one member at a
/// time), on a follower and then on the leader, while clients write: the member must raise
/// NOSPACE for every member (writes then fail everywhere, as definite failures) and must
/// apply the log as the others do. Applying that looked at the applying member's own quota
/// left that member without writes the others hold (HashKV differs at the end).
#[test]
fn a_member_whose_lowered_quota_fills_raises_nospace_for_all_and_holds_the_same_data() {
    // 5 seeds: sim/mutants/28 (applying that looks at the member's own quota) is caught at
    // seed 4 (two writes at one revision), and at none before.
    let reports = scenario_over(
        FILE,
        "a_member_whose_lowered_quota_fills_raises_nospace_for_all_and_holds_the_same_data",
        5,
        |seed| {
            script(
                seed,
                vec![
                    Step::new(1500, LowerQuota, Target::Follower, 5000),
                    Step::new(1500, LowerQuota, Target::Leader, 5000),
                ],
            )
        },
    );
    // Whether a quota fills within its hold depends on the writes that get through (a
    // leader restarted has to be replaced first): at least one must.
    each_log(reports, "a lowered quota filled and was repaired", |log| {
        log.contains("NOSPACE alarms disarmed: 1")
    });
}

/// etcd's strict reconfiguration check: with one member down for good (its WAL corrupt, it
/// refuses to start), removing a healthy one would leave a cluster of two with one up, which
/// could never commit again. The removal is refused ("etcdserver: unhealthy cluster"),
/// through whichever member the operator asks, and the cluster goes on serving.
#[test]
fn removing_a_healthy_member_while_another_is_down_is_refused_as_an_unhealthy_cluster() {
    let reports = scenario(
        FILE,
        "removing_a_healthy_member_while_another_is_down_is_refused_as_an_unhealthy_cluster",
        |seed| {
            script(
                seed,
                vec![
                    Step::new(1000, CorruptDisk, Target::Follower, 0),
                    Step::new(2000, RemoveAndAddAgain, Target::Leader, 0),
                ],
            )
        },
    );
    each_log(reports, "the removal was refused", |log| {
        log.contains("unhealthy cluster") && !log.contains("Stopped(\"Removed\")")
    });
}

/// The diverged write must stay visible to a hash (no compaction) and to no client of the
/// diverged member (no reads at past revisions, no watchers): the member's history is wrong
/// by construction until it is found, and what is under test is that it is found.
fn diverging(mut config: RunConfig) -> RunConfig {
    config.watchers = 0;
    config.workload.compactions = false;
    config.workload.past_reads = false;
    config
}

/// etcd's `--experimental-initial-corrupt-check`: a member whose data differs from its
/// peers' at its revision (a double fault, checksums intact) must not start.
#[test]
fn a_member_with_diverged_data_does_not_start_with_the_initial_check() {
    let reports = scenario(
        FILE,
        "a_member_with_diverged_data_does_not_start_with_the_initial_check",
        |seed| {
            let mut config = diverging(script(
                seed,
                vec![Step::new(2500, DivergeCaughtAtStart, Target::Follower, 0)],
            ));
            config.extras.initial_corrupt_check = true;
            config
        },
    );
    each_log(reports, "refused and replaced", |log| {
        log.contains(": refused; replaced it as member")
    });
}

/// etcd's periodic corruption check: the leader compares every member's `HashKV` and a
/// CORRUPT alarm names the member whose data differs; while it is active every write is
/// refused ("etcdserver: corrupt cluster"); the operator replaces the member and disarms
/// the alarm, and writes go on.
#[test]
fn a_member_with_diverged_data_gets_a_corrupt_alarm_that_stops_writes() {
    let reports = scenario(
        FILE,
        "a_member_with_diverged_data_gets_a_corrupt_alarm_that_stops_writes",
        |seed| {
            let mut config = diverging(script(
                seed,
                vec![Step::new(
                    2500,
                    DivergeCaughtByLeader,
                    Target::Follower,
                    5000,
                )],
            ));
            config.extras.corrupt_check = Some(Duration::from_millis(500));
            config
        },
    );
    each_log(reports, "alarmed, writes refused, replaced", |log| {
        log.contains("CORRUPT alarm raised, writes refused; replaced it as member")
    });
}
