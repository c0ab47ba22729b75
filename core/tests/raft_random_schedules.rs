//! Random schedules over many seeds: messages dropped, duplicated, reordered, partitions,
//! crashes and restarts, compactions, leader transfers, reads and proposals, with Raft's
//! safety properties checked after every step, then a calm phase in which the cluster must
//! recover, converge and commit (liveness).
//!
//! `KEEL_RAFT_SEEDS=N` runs N seeds per test (default small, for CI);
//! `KEEL_RAFT_SEED=S` runs exactly seed S (the failure message prints it).

// In tests a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use keel_core::raft::harness::{default_config, Cluster};
use keel_core::raft::{ConfChange, ConfChangeKind, ConfState, Index, NodeId, Proposed, Term};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DEFAULT_SEEDS: u64 = 60;
const STEPS_PER_RUN: usize = 1_500;
/// After faults stop, a leader must emerge and everyone converge within this many ticks.
const RECOVERY_TICKS: u32 = 300;
/// A client gives up on a proposal after this many ticks and proposes again.
const CLIENT_TIMEOUT_TICKS: u32 = 30;

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("KEEL_RAFT_SEED") {
        return vec![seed.parse().expect("KEEL_RAFT_SEED must be a u64")];
    }
    let count = std::env::var("KEEL_RAFT_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    (0..count).collect()
}

/// Swarm testing: each seed picks its own fault mix, so some runs are calm, some brutal.
struct FaultMix {
    drop_percent: u32,
    duplicate_percent: u32,
    delay_percent: u32,
    reorder: bool,
    partitions: bool,
    crashes: bool,
    compactions: bool,
    /// Tiny appends split old-term entries from a new leader's first entry (Figure 8).
    max_append_bytes: usize,
    max_inflight_appends: usize,
    pre_vote: bool,
    check_quorum: bool,
}

fn fault_mix(rng: &mut ChaCha8Rng) -> FaultMix {
    FaultMix {
        drop_percent: [0, 0, 5, 20][rng.gen_range(0..4)],
        duplicate_percent: [0, 0, 5][rng.gen_range(0..3)],
        delay_percent: [0, 10, 50][rng.gen_range(0..3)],
        reorder: rng.gen_bool(0.5),
        partitions: rng.gen_bool(0.6),
        crashes: rng.gen_bool(0.6),
        compactions: rng.gen_bool(0.6),
        max_append_bytes: [1, 64, 1024 * 1024][rng.gen_range(0..3)],
        max_inflight_appends: [1, 4, 256][rng.gen_range(0..3)],
        pre_vote: rng.gen_bool(0.75),
        check_quorum: rng.gen_bool(0.75),
    }
}

/// Identifies a run in failure messages, with the command that replays it.
struct Run {
    seed: u64,
    size: u64,
    test_name: &'static str,
}

impl Run {
    fn fail(&self, cluster: &Cluster, step: usize, what: String) -> ! {
        panic!(
            "{what}\n{}  seed {}, step {step}, {} nodes\n  replay: KEEL_RAFT_SEED={} cargo test \
             -p keel-core --test raft_random_schedules {}",
            cluster.describe(),
            self.seed,
            self.size,
            self.seed,
            self.test_name
        )
    }
}

fn pick(rng: &mut ChaCha8Rng, ids: &[NodeId]) -> NodeId {
    ids[rng.gen_range(0..ids.len())]
}

fn run(seed: u64, size: u64, test_name: &'static str) -> u64 {
    run_with(seed, size, false, test_name).0
}

/// Nodes that may join a cluster of `size` during a run with membership changes, as
/// learners first.
fn joiners(size: u64) -> Vec<NodeId> {
    (size + 1..=size + 2).collect()
}

/// Runs one seed; returns the trace hash and the final membership.
fn run_with(seed: u64, size: u64, membership: bool, test_name: &'static str) -> (u64, ConfState) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b65656c);
    let mix = fault_mix(&mut rng);
    let (max_append_bytes, max_inflight_appends) = (mix.max_append_bytes, mix.max_inflight_appends);
    let (pre_vote, check_quorum) = (mix.pre_vote, mix.check_quorum);
    let mut cluster = Cluster::with_config(size, seed, move |id, seed| {
        let mut config = default_config(id, seed);
        config.max_append_bytes = max_append_bytes;
        config.max_inflight_appends = max_inflight_appends;
        config.pre_vote = pre_vote;
        config.check_quorum = check_quorum;
        config
    });
    cluster.set_drop_percent(mix.drop_percent);
    cluster.set_duplicate_percent(mix.duplicate_percent);
    cluster.set_delay_percent(mix.delay_percent);
    cluster.set_reorder(mix.reorder);
    if membership {
        for id in joiners(size) {
            cluster.add_empty_node(id);
        }
    }
    let ids = cluster.ids();
    // At most a minority down at once, but a lone voter may crash too (and come back).
    let max_crashed = ((ids.len() - 1) / 2).max(1);
    let mut request_id = 0u64;
    let run = Run {
        seed,
        size,
        test_name,
    };
    for step in 0..STEPS_PER_RUN {
        let crashed: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|&id| !cluster.is_running(id))
            .collect();
        let running: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|&id| cluster.is_running(id))
            .collect();
        match rng.gen_range(0..100) {
            0..=34 => cluster.tick(pick(&mut rng, &running)),
            35..=64 => {
                for _ in 0..rng.gen_range(1..8) {
                    cluster.deliver_one();
                }
            }
            65..=74 => {
                let id = pick(&mut rng, &running);
                let _ = cluster.propose(id, format!("s{seed}-{step}").into_bytes());
            }
            75..=79 => {
                request_id += 1;
                let _ = cluster.read_index(pick(&mut rng, &running), request_id);
            }
            80..=82 if mix.partitions => {
                let mut shuffled = ids.clone();
                for i in (1..shuffled.len()).rev() {
                    shuffled.swap(i, rng.gen_range(0..=i));
                }
                let split = rng.gen_range(1..shuffled.len());
                cluster.heal();
                cluster.partition(&shuffled[..split], &shuffled[split..]);
            }
            83..=85 => cluster.heal(),
            86..=87 if mix.crashes && crashed.len() < max_crashed => {
                let id = pick(&mut rng, &running);
                if rng.gen_bool(0.5) {
                    cluster.crash(id);
                } else {
                    // Its messages are out, its disk never saw them.
                    cluster.crash_mid_ready(id);
                }
            }
            88..=90 if !crashed.is_empty() => cluster.restart(pick(&mut rng, &crashed)),
            91..=92 if mix.compactions => {
                cluster.compact(pick(&mut rng, &running), rng.gen_range(0..5));
            }
            93 => {
                if let Some(leader) = cluster.leader() {
                    let _ = cluster
                        .raft_mut(leader)
                        .transfer_leader(pick(&mut rng, &ids));
                }
            }
            94..=96 if membership => change_membership(&mut cluster, &mut rng, &joiners(size)),
            _ => {}
        }
        // Nodes carry out their Ready at different moments, as real ones do.
        let id = pick(&mut rng, &running);
        if cluster.is_running(id) {
            cluster.process_ready(id);
        }
        if let Err(violation) = cluster.check_invariants() {
            run.fail(&cluster, step, violation.0);
        }
    }
    recover(&mut cluster, &ids, &run);
    let leader = cluster.leader().expect("recovered");
    (
        cluster.trace_hash(),
        cluster.raft(leader).conf_state().clone(),
    )
}

/// Proposes a random membership change through the leader, if there is one: a joiner
/// becomes a learner, a learner is promoted, or a member is removed (never the last voter).
fn change_membership(cluster: &mut Cluster, rng: &mut ChaCha8Rng, joining: &[NodeId]) {
    let Some(leader) = cluster.leader() else {
        return;
    };
    let conf = cluster.raft(leader).conf_state().clone();
    let joiners: Vec<NodeId> = joining
        .iter()
        .copied()
        .filter(|id| !conf.contains(*id))
        .collect();
    let learners: Vec<NodeId> = conf.learners.iter().copied().collect();
    let members: Vec<NodeId> = conf.members().collect();
    let kind = rng.gen_range(0..3);
    let change = match kind {
        0 if !joiners.is_empty() => (ConfChangeKind::AddLearner, pick(rng, &joiners)),
        1 if !learners.is_empty() => (ConfChangeKind::PromoteLearner, pick(rng, &learners)),
        2 if conf.voters.len() > 1 => (ConfChangeKind::RemoveNode, pick(rng, &members)),
        _ => return,
    };
    let _ = cluster.raft_mut(leader).propose_conf_change(ConfChange {
        kind: change.0,
        node_id: change.1,
        context: Bytes::new(),
    });
}

/// Liveness: faults stop, everyone is restarted and healed; a leader must emerge, commit a
/// new entry everywhere, and all state machines must agree.
fn recover(cluster: &mut Cluster, ids: &[NodeId], run: &Run) {
    cluster.heal();
    cluster.set_drop_percent(0);
    cluster.set_duplicate_percent(0);
    cluster.set_delay_percent(0);
    for &id in ids {
        if !cluster.is_running(id) {
            cluster.restart(id);
        }
    }
    if cluster.wait_for_leader(RECOVERY_TICKS).is_none() {
        run.fail(
            cluster,
            STEPS_PER_RUN,
            "no leader after faults stopped".into(),
        );
    }
    // Like a client: propose through the leader, and propose again if the entry was lost
    // (a different entry now holds its index) or the request timed out (a new leader with a
    // shorter log truncated it).
    let mut proposal: Option<(NodeId, Index, Term)> = None;
    let mut ticks = 0;
    let mut proposed_at_tick = 0;
    while !(converged(cluster) && final_applied_everywhere(cluster, &members(cluster, ids))) {
        let timed_out = ticks - proposed_at_tick > CLIENT_TIMEOUT_TICKS;
        let lost = timed_out
            || proposal.is_none_or(|(_, index, term)| {
                ids.iter().any(|&id| {
                    cluster.is_running(id) && {
                        let raft = cluster.raft(id);
                        raft.commit_index() >= index
                            && raft.log_term(index).is_some_and(|t| t != term)
                    }
                })
            });
        if lost {
            proposal = None;
            if let Some(leader) = cluster.leader() {
                if let Ok(Proposed::Appended { index, term }) =
                    cluster.propose(leader, b"final".to_vec())
                {
                    proposal = Some((leader, index, term));
                    proposed_at_tick = ticks;
                }
            }
        }
        if ticks == RECOVERY_TICKS {
            let why = cluster
                .check_converged_among(&members(cluster, ids))
                .err()
                .map_or(
                    format!(
                    "the entry proposed after recovery was not applied everywhere: {proposal:?}"
                ),
                    |v| v.0,
                );
            run.fail(cluster, STEPS_PER_RUN, why);
        }
        cluster.run_ticks(1);
        ticks += 1;
    }
    if let Err(violation) = cluster.check_invariants() {
        run.fail(cluster, STEPS_PER_RUN, violation.0);
    }
}

/// The members according to the current leader (every node when there is none).
fn members(cluster: &Cluster, ids: &[NodeId]) -> Vec<NodeId> {
    match cluster.leader() {
        Some(leader) => cluster.raft(leader).conf_state().members().collect(),
        None => ids.to_vec(),
    }
}

fn converged(cluster: &Cluster) -> bool {
    let ids = cluster.ids();
    cluster.leader().is_some()
        && cluster
            .check_converged_among(&members(cluster, &ids))
            .is_ok()
}

fn final_applied_everywhere(cluster: &Cluster, ids: &[NodeId]) -> bool {
    ids.iter().all(|&id| {
        cluster
            .node(id)
            .state_machine
            .payloads
            .iter()
            .any(|(_, data)| data.as_ref() == b"final")
    })
}

#[test]
fn random_schedules_three_nodes() {
    for seed in seeds() {
        run(seed, 3, "random_schedules_three_nodes");
    }
}

#[test]
fn random_schedules_five_nodes() {
    for seed in seeds() {
        run(seed, 5, "random_schedules_five_nodes");
    }
}

#[test]
fn same_seed_same_trace() {
    for seed in [3, 17, 99] {
        let first = run(seed, 3, "same_seed_same_trace");
        let second = run(seed, 3, "same_seed_same_trace");
        assert_eq!(first, second, "seed {seed} is not deterministic");
    }
}

#[test]
fn random_schedules_with_membership_changes() {
    membership_runs(3, "random_schedules_with_membership_changes");
}

/// One voter growing (learners, promotion) and shrinking back: a lone voter wins without
/// a vote round trip, and a leader removing itself from two voters must hand over.
#[test]
fn random_schedules_from_one_voter() {
    membership_runs(1, "random_schedules_from_one_voter");
}

#[test]
fn random_schedules_from_two_voters() {
    membership_runs(2, "random_schedules_from_two_voters");
}

fn membership_runs(size: u64, test_name: &'static str) {
    let seeds = seeds();
    let mut changed = 0;
    let initial: ConfState = ConfState::with_voters(1..=size);
    for &seed in &seeds {
        let (_, final_conf) = run_with(seed, size, true, test_name);
        if final_conf != initial {
            changed += 1;
        }
    }
    // Guards against a schedule that silently stopped changing anything.
    assert!(
        seeds.len() < 20 || changed * 3 > seeds.len(),
        "membership changed in only {changed} of {} runs",
        seeds.len()
    );
}
