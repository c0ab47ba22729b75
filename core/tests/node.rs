//! keel nodes end to end, still in memory: writes through leader and followers, linearizable
//! reads, leases expiring through the log, failover, snapshots, restarts, membership,
//! watches, and refusal of a damaged snapshot from a peer.

// In tests a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use keel_core::auth::AuthError;
use keel_core::mvcc::{
    self, Command, LeaseGrantRequest, PutRequest, RangeRequest, Response, StoreConfig,
    WatchCreateRequest,
};
use keel_core::node::query::{self, Answer, Ask};
use keel_core::node::{
    AdmissionError, AutoCompaction, ClientRequest, Completion, Consistency, Handled, Member,
    MemberAttributes, MemberChange, Needs, Node, NodeConfig, NodeProposeError, Outcome,
    ProposalBody, RequestError, VoterLiveness,
};
use keel_core::raft::harness::MemStorage;
use keel_core::raft::{
    ConfChangeKind, ConfState, InitialState, Message, MessageBody, NodeId, ReadIndexError,
    ReplicationState, Role, Snapshot, SnapshotMeta,
};

const TICK_MS: u64 = 100;

struct TestNode {
    node: Option<Node>,
    storage: MemStorage,
    completions: Vec<Completion>,
    reads: Vec<u64>,
    answers: Vec<(u64, Result<Answer, AuthError>)>,
    snapshots_taken: usize,
}

struct NodeCluster {
    nodes: BTreeMap<NodeId, TestNode>,
    queue: VecDeque<Message>,
    isolated: BTreeSet<NodeId>,
    /// Snapshots to this member are held here, as a transport still streaming them.
    hold_snapshots_to: Option<NodeId>,
    held: Vec<Message>,
    now_ms: u64,
    next_request_id: u64,
    config: fn(NodeId) -> NodeConfig,
}

fn members(size: u64) -> Vec<Member> {
    (1..=size)
        .map(|id| Member {
            id,
            name: format!("n{id}"),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: vec![],
            is_learner: false,
        })
        .collect()
}

fn default_node_config(id: NodeId) -> NodeConfig {
    let mut config = NodeConfig::new(id);
    config.raft.seed = id * 7919;
    config
}

/// A snapshot every 10 entries, keeping 2 before it.
fn frequent_snapshots(id: NodeId) -> NodeConfig {
    let mut config = default_node_config(id);
    config.snapshot_count = 10;
    config.snapshot_catch_up_entries = 2;
    config
}

impl NodeCluster {
    fn new(size: u64, config: fn(NodeId) -> NodeConfig) -> NodeCluster {
        let image = Node::bootstrap_image(&members(size), StoreConfig::default());
        let mut cluster = NodeCluster {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            isolated: BTreeSet::new(),
            hold_snapshots_to: None,
            held: Vec::new(),
            now_ms: 0,
            next_request_id: 1,
            config,
        };
        for id in 1..=size {
            let initial = InitialState::bootstrap(1..=size, image.clone());
            let storage = MemStorage {
                hard_state: initial.hard_state,
                synced_commit_index: initial.hard_state.commit_index,
                snapshot: initial.snapshot,
                entries: vec![],
            };
            cluster.nodes.insert(
                id,
                TestNode {
                    node: None,
                    storage,
                    completions: vec![],
                    reads: vec![],
                    answers: vec![],
                    snapshots_taken: 0,
                },
            );
            cluster.restart(id);
        }
        cluster
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes[&id].node.as_ref().unwrap()
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).unwrap().node.as_mut().unwrap()
    }

    fn restart(&mut self, id: NodeId) {
        let config = (self.config)(id);
        let test_node = self.nodes.get_mut(&id).unwrap();
        test_node.node = Some(Node::new(config, test_node.storage.initial_state()).unwrap());
    }

    fn crash(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).unwrap().node = None;
    }

    fn process(&mut self, id: NodeId) {
        let now_ms = self.now_ms;
        let test_node = self.nodes.get_mut(&id).unwrap();
        let Some(node) = test_node.node.as_mut() else {
            return;
        };
        while let Some(mut ready) = node.ready() {
            self.queue.extend(ready.messages.drain(..));
            test_node.storage.persist(&ready);
            self.queue.extend(ready.persisted_messages.drain(..));
            let output = node.apply(&mut ready, now_ms);
            test_node.completions.extend(output.completions);
            test_node.reads.extend(output.reads);
            test_node.answers.extend(output.answers);
            node.advance(&ready);
            if let Some(snapshot) = node.maybe_snapshot() {
                let keep_from = node.raft().first_index();
                test_node.storage.compact(snapshot, keep_from);
                test_node.snapshots_taken += 1;
            }
        }
    }

    fn run(&mut self) {
        for _ in 0..10_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.process(id);
            }
            let Some(message) = self.queue.pop_front() else {
                return;
            };
            if self.isolated.contains(&message.from) || self.isolated.contains(&message.to) {
                continue;
            }
            if self.hold_snapshots_to == Some(message.to)
                && matches!(message.body, MessageBody::InstallSnapshot(_))
            {
                self.held.push(message);
                continue;
            }
            if let Some(node) = self
                .nodes
                .get_mut(&message.to)
                .and_then(|n| n.node.as_mut())
            {
                node.step(message).unwrap();
            }
        }
        panic!("no quiescence");
    }

    fn tick(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.now_ms += TICK_MS;
            let now_ms = self.now_ms;
            for test_node in self.nodes.values_mut() {
                if let Some(node) = test_node.node.as_mut() {
                    node.tick(now_ms);
                }
            }
            self.run();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| n.node.as_ref().map(|node| (id, node)))
            .filter(|(id, node)| node.is_leader() && !self.isolated.contains(id))
            .max_by_key(|(_, node)| node.raft().term())
            .map(|(id, _)| id)
    }

    fn elect(&mut self, id: NodeId) {
        self.node_mut(id).raft_mut().campaign();
        self.run();
        assert_eq!(self.node(id).raft().role(), Role::Leader);
    }

    fn propose(&mut self, id: NodeId, command: Command) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.node_mut(id)
            .propose(request_id, ProposalBody::Store(command))
            .unwrap();
        request_id
    }

    fn put(&mut self, id: NodeId, key: &str, value: &str) -> u64 {
        self.propose(
            id,
            Command::Put(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                ..Default::default()
            }),
        )
    }

    fn outcome(&self, id: NodeId, request_id: u64) -> Option<&Outcome> {
        self.nodes[&id]
            .completions
            .iter()
            .find(|c| c.request_id == request_id)
            .map(|c| &c.outcome)
    }

    fn get(&self, id: NodeId, key: &str) -> Option<Bytes> {
        let request = RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        };
        let response = self.node(id).store().range(&request).unwrap();
        response.kvs.first().map(|kv| kv.value.clone())
    }

    fn hashes(&self) -> Vec<u32> {
        let running: Vec<&Node> = self
            .nodes
            .values()
            .filter_map(|n| n.node.as_ref())
            .collect();
        let revision = running
            .iter()
            .map(|n| n.store().current_revision())
            .min()
            .unwrap();
        running
            .iter()
            .map(|n| n.store().hash_kv(revision).unwrap().hash)
            .collect()
    }

    fn assert_converged(&self) {
        let revisions: BTreeSet<i64> = self
            .nodes
            .values()
            .filter_map(|n| n.node.as_ref())
            .map(|n| n.store().current_revision())
            .collect();
        assert_eq!(revisions.len(), 1, "revisions differ: {revisions:?}");
        let hashes: BTreeSet<u32> = self.hashes().into_iter().collect();
        assert_eq!(hashes.len(), 1, "HashKV differs between members");
    }
}

fn put_ok(outcome: Option<&Outcome>) -> bool {
    matches!(outcome, Some(Outcome::Store(Ok(Response::Put(_)))))
}

#[test]
fn writes_through_leader_and_follower_reach_every_member() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    let via_leader = cluster.put(1, "a", "1");
    let via_follower = cluster.put(2, "b", "2");
    cluster.run();
    assert!(put_ok(cluster.outcome(1, via_leader)));
    assert!(
        put_ok(cluster.outcome(2, via_follower)),
        "the follower answers its own client"
    );
    for id in [1, 2, 3] {
        assert_eq!(cluster.get(id, "a").as_deref(), Some(&b"1"[..]));
        assert_eq!(cluster.get(id, "b").as_deref(), Some(&b"2"[..]));
    }
    cluster.assert_converged();
}

fn learner_on(id: NodeId, url: &str) -> MemberChange {
    MemberChange::Add {
        id,
        peer_urls: vec![url.to_string()],
        is_learner: true,
    }
}

/// etcd's membership checks run where the change is proposed, on the leader, in the same
/// step as the proposal: a follower leaves the judgement to the leader, and the members a
/// change is checked against are the members it applies to.
#[test]
fn a_membership_change_is_checked_and_proposed_by_the_leader_in_one_step() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    let url = "http://10.0.0.9:2380";
    assert_eq!(
        cluster
            .node_mut(2)
            .propose_member_change(90, learner_on(9, url)),
        Err(NodeProposeError::Membership(AdmissionError::NotLeader))
    );
    let added = cluster
        .node_mut(1)
        .propose_member_change(91, learner_on(9, url));
    assert_eq!(added.map(|m| (m.id, m.is_learner)), Ok((9, true)));
    cluster.run();
    assert!(matches!(
        cluster.outcome(1, 91),
        Some(Outcome::MembershipChanged { .. })
    ));
    for id in [1, 2, 3] {
        assert!(cluster
            .node(id)
            .members()
            .get(9)
            .is_some_and(|m| m.is_learner));
    }
    assert_eq!(
        cluster
            .node_mut(1)
            .propose_member_change(92, learner_on(10, url)),
        Err(NodeProposeError::Membership(AdmissionError::PeerUrlExists))
    );
    assert_eq!(
        cluster
            .node_mut(1)
            .propose_member_change(93, MemberChange::Remove { id: 42 }),
        Err(NodeProposeError::Membership(AdmissionError::MemberNotFound))
    );
}

/// Two updates that take the same peer URL, proposed before either applies, both pass the
/// check when proposed (updates are normal entries, not ordered like membership changes):
/// the second is checked again when it applies, changes nothing and is refused everywhere.
#[test]
fn a_member_update_is_checked_again_when_it_applies() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    let url = "http://10.0.0.9:2380".to_string();
    let update = |id| MemberChange::Update {
        id,
        peer_urls: vec![url.clone()],
    };
    cluster
        .node_mut(1)
        .propose_member_change(95, update(2))
        .unwrap();
    cluster
        .node_mut(1)
        .propose_member_change(96, update(3))
        .unwrap();
    cluster.run();
    assert!(matches!(
        cluster.outcome(1, 95),
        Some(Outcome::MembershipChanged { .. })
    ));
    assert_eq!(
        cluster.outcome(1, 96),
        Some(&Outcome::MembershipRefused(AdmissionError::PeerUrlExists))
    );
    for id in [1, 2, 3] {
        let members = cluster.node(id).members();
        assert_eq!(members.get(2).unwrap().peer_urls, vec![url.clone()]);
        assert_eq!(
            members.get(3).unwrap().peer_urls,
            vec!["http://10.0.0.3:2380".to_string()]
        );
    }
    assert_eq!(
        cluster.node_mut(2).propose_member_change(97, update(3)),
        Err(NodeProposeError::Membership(AdmissionError::PeerUrlExists))
    );
}

/// A change that breaks the membership rules when it applies was checked against other
/// members than it applies to: a bug, which debug builds (tests, the simulator) stop at.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "applies to members it was not checked against")]
fn a_membership_change_that_breaks_the_rules_when_it_applies_stops_a_debug_build() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    let taken = Member {
        id: 9,
        peer_urls: vec!["http://10.0.0.2:2380".to_string()],
        is_learner: true,
        ..Member::default()
    };
    cluster
        .node_mut(1)
        .propose_conf_change(94, ConfChangeKind::AddLearner, taken)
        .unwrap();
    cluster.run();
}

#[test]
fn linearizable_read_on_a_follower_waits_for_the_apply() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    cluster.put(1, "k", "v1");
    cluster.run();
    cluster.node_mut(3).read_index(77).unwrap();
    cluster.run();
    assert_eq!(cluster.nodes[&3].reads, vec![77]);
    assert_eq!(cluster.get(3, "k").as_deref(), Some(&b"v1"[..]));
}

#[test]
fn an_expired_lease_is_revoked_through_the_log_on_every_member() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    let grant = cluster.propose(1, Command::LeaseGrant(LeaseGrantRequest { ttl: 3, id: 42 }));
    cluster.run();
    assert!(matches!(
        cluster.outcome(1, grant),
        Some(Outcome::Store(Ok(Response::LeaseGrant(_))))
    ));
    cluster.propose(
        1,
        Command::Put(PutRequest {
            key: Bytes::from_static(b"ephemeral"),
            value: Bytes::from_static(b"x"),
            lease: 42,
            ..Default::default()
        }),
    );
    cluster.run();
    cluster.tick(20);
    for id in [1, 2, 3] {
        assert!(
            cluster.get(id, "ephemeral").is_some(),
            "2 s into a 3 s lease"
        );
    }
    cluster.tick(20);
    for id in [1, 2, 3] {
        assert!(
            cluster.get(id, "ephemeral").is_none(),
            "node {id}: lease expired"
        );
    }
    cluster.assert_converged();
}

#[test]
fn a_new_leader_extends_leases_instead_of_expiring_them() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    cluster.propose(1, Command::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 9 }));
    cluster.propose(
        1,
        Command::Put(PutRequest {
            key: Bytes::from_static(b"lock"),
            value: Bytes::from_static(b"held"),
            lease: 9,
            ..Default::default()
        }),
    );
    cluster.run();
    cluster.tick(40);
    cluster.crash(1);
    let mut ticks = 0;
    while cluster.leader().is_none() {
        cluster.tick(1);
        ticks += 1;
        assert!(ticks < 100, "no new leader");
    }
    let leader = cluster.leader().unwrap();
    assert!(
        cluster.get(leader, "lock").is_some(),
        "no expiry at failover"
    );
    cluster.tick(80);
    assert!(
        cluster.get(leader, "lock").is_none(),
        "the lease still expires later"
    );
}

#[test]
fn a_leap_of_the_monotonic_clock_expires_no_lease_early() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    cluster.propose(1, Command::LeaseGrant(LeaseGrantRequest { ttl: 3, id: 5 }));
    cluster.propose(
        1,
        Command::Put(PutRequest {
            key: Bytes::from_static(b"lock"),
            value: Bytes::from_static(b"held"),
            lease: 5,
            ..Default::default()
        }),
    );
    cluster.run();
    // The monotonic clock leaps an hour (a suspended host, a migrated virtual machine).
    cluster.now_ms += 3_600_000;
    cluster.tick(1);
    assert!(
        cluster.get(1, "lock").is_some(),
        "a clock leap is not three seconds of lease time"
    );
    cluster.tick(25);
    assert!(cluster.get(1, "lock").is_some(), "2.6 s into a 3 s lease");
    cluster.tick(15);
    assert!(cluster.get(1, "lock").is_none(), "expired in its time");
    cluster.assert_converged();
}

#[test]
fn snapshots_are_taken_and_a_restarted_member_recovers_from_one() {
    let mut cluster = NodeCluster::new(3, frequent_snapshots);
    cluster.elect(1);
    for i in 0..50 {
        cluster.put(1, &format!("k{i}"), &format!("v{i}"));
        cluster.run();
    }
    assert!(cluster.nodes[&2].snapshots_taken >= 4);
    cluster.crash(2);
    cluster.restart(2);
    cluster.tick(3);
    assert_eq!(cluster.get(2, "k49").as_deref(), Some(&b"v49"[..]));
    cluster.assert_converged();
}

/// The commit index is not synced on its own, so a member that crashes may restart behind
/// what it had applied. It must not serve from that older state (its revision would go back,
/// etcd #17780's class) until it has caught up again, which takes a leader.
#[test]
fn a_member_restarted_behind_what_it_applied_serves_nothing_until_caught_up() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    for i in 0..3 {
        cluster.put(1, &format!("k{i}"), "v");
        cluster.run();
    }
    assert_eq!(cluster.get(2, "k2").as_deref(), Some(&b"v"[..]));
    assert!(cluster.node(2).serves_local_reads());
    let revision_before_crash = cluster.node(2).store().current_revision();

    cluster.crash(2);
    cluster.nodes.get_mut(&2).unwrap().storage.lose_unsynced();
    cluster.restart(2);
    cluster.process(2);
    assert!(
        cluster.node(2).store().current_revision() < revision_before_crash,
        "the restart really is behind what was applied"
    );
    assert!(!cluster.node(2).serves_local_reads());
    assert!(cluster.node(2).must_hold(Needs::LocalState), "reads wait");
    assert!(!cluster.node(2).must_hold(Needs::Nothing));

    // Without a leader it stays fenced, however long it waits; after an election timeout
    // what it holds fails.
    cluster.isolated.insert(2);
    cluster.tick(30);
    assert!(!cluster.node(2).serves_local_reads());
    assert!(cluster.node(2).held_requests_fail());

    cluster.isolated.clear();
    cluster.tick(3);
    assert!(cluster.node(2).serves_local_reads());
    assert!(!cluster.node(2).must_hold(Needs::LocalState));
    assert!(!cluster.node(2).held_requests_fail());
    assert!(cluster.node(2).store().current_revision() >= revision_before_crash);
    assert_eq!(cluster.get(2, "k2").as_deref(), Some(&b"v"[..]));
    cluster.assert_converged();
}

/// Entries past the commit index at a crash may be replaced by another leader, so the log's
/// end at start-up may not be reached again while the cluster is idle; the fence's read
/// index lifts it then.
#[test]
fn a_restarted_member_whose_uncommitted_tail_is_replaced_is_unfenced_by_a_read_index() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(2);
    cluster.put(2, "a", "1");
    cluster.run();
    // Leader 2, cut off, appends three entries only it will ever have, then crashes.
    cluster.isolated.insert(2);
    for i in 0..3 {
        cluster.put(2, &format!("lost{i}"), "x");
    }
    cluster.run();
    let last_index_at_crash = cluster.node(2).raft().status().last_index;
    cluster.crash(2);
    cluster.nodes.get_mut(&2).unwrap().storage.lose_unsynced();
    // Members 1 and 3 go on in a new term with a shorter log.
    cluster.isolated.clear();
    cluster.tick(25);
    assert!(matches!(cluster.leader(), Some(1 | 3)));
    cluster.restart(2);
    cluster.process(2);
    assert!(!cluster.node(2).serves_local_reads());
    cluster.tick(25);
    assert!(
        cluster.node(2).raft().status().last_index < last_index_at_crash,
        "the tail was replaced and the log is shorter than at the crash"
    );
    assert!(cluster.node(2).serves_local_reads());
    assert_eq!(cluster.get(2, "a").as_deref(), Some(&b"1"[..]));
    assert_eq!(cluster.get(2, "lost0"), None);
    cluster.assert_converged();
}

/// A snapshot is as large as the store: more than a proposal may be (64 MiB).
#[test]
fn a_store_larger_than_a_proposal_is_snapshotted_and_restored() {
    fn one_snapshot(id: NodeId) -> NodeConfig {
        let mut config = default_node_config(id);
        config.snapshot_count = 290;
        config
    }
    let mut cluster = NodeCluster::new(3, one_snapshot);
    cluster.elect(1);
    let value = "v".repeat(256 * 1024);
    for i in 0..290 {
        cluster.put(1, &format!("k{i:03}"), &value);
        cluster.run();
    }
    assert!(cluster.node(1).store().size_bytes() > 70 << 20);
    assert_eq!(cluster.nodes[&2].snapshots_taken, 1);
    cluster.crash(2);
    cluster.restart(2);
    cluster.tick(3);
    assert_eq!(cluster.get(2, "k289").map(|v| v.len()), Some(value.len()));
    cluster.assert_converged();
}

/// Puts `k<i>` for each `i` of `keys` through member 1, one at a time.
fn put_each(cluster: &mut NodeCluster, keys: std::ops::Range<u32>) {
    for i in keys {
        cluster.put(1, &format!("k{i}"), "v");
        cluster.run();
    }
}

/// Leader 1 took 40 puts (and several snapshots) while member 3 was cut off.
fn member_3_behind_the_leaders_snapshots() -> NodeCluster {
    let mut cluster = NodeCluster::new(3, frequent_snapshots);
    cluster.elect(1);
    cluster.isolated.insert(3);
    put_each(&mut cluster, 0..40);
    cluster.isolated.clear();
    cluster
}

#[test]
fn a_lagging_member_catches_up_from_the_leaders_snapshot() {
    let mut cluster = member_3_behind_the_leaders_snapshots();
    cluster.tick(3);
    assert!(cluster.node(3).raft().status().snapshot_index > 10);
    assert_eq!(cluster.get(3, "k39").as_deref(), Some(&b"v"[..]));
    cluster.assert_converged();
}

/// A snapshot takes a while to stream (seconds for a large store) while writes go on: the
/// leader keeps the log after it, so the member catches up from the log once it installed
/// it, rather than needing another snapshot, which would take as long again.
#[test]
fn the_log_after_a_snapshot_in_flight_is_kept_for_its_member() {
    let mut cluster = member_3_behind_the_leaders_snapshots();
    cluster.hold_snapshots_to = Some(3);
    cluster.tick(1);
    assert_eq!(cluster.held.len(), 1, "the leader sent member 3 a snapshot");
    let pending_index = cluster.node(1).raft().status().progress[&3].state;
    let ReplicationState::Snapshot { pending_index } = pending_index else {
        panic!("member 3 waits for its snapshot: {pending_index:?}");
    };
    // Writes go on while it streams, and the log is released (every 10 entries) meanwhile.
    let releases_before = cluster.nodes[&1].snapshots_taken;
    put_each(&mut cluster, 40..55);
    assert!(cluster.nodes[&1].snapshots_taken > releases_before);
    assert!(
        cluster.node(1).raft().first_index() <= pending_index + 1,
        "the leader kept the entries after the snapshot in flight"
    );
    for message in std::mem::take(&mut cluster.held) {
        cluster.node_mut(3).step(message).unwrap();
    }
    cluster.run();
    cluster.tick(2);
    assert!(
        cluster.held.is_empty(),
        "no second snapshot was needed: {:?} {:?}",
        cluster
            .held
            .iter()
            .map(|m| (
                m.from,
                m.to,
                match &m.body {
                    MessageBody::InstallSnapshot(s) => s.meta.index,
                    _ => 0,
                }
            ))
            .collect::<Vec<_>>(),
        cluster.node(1).raft().status()
    );
    assert_eq!(cluster.get(3, "k54").as_deref(), Some(&b"v"[..]));
    cluster.assert_converged();
    // Once it caught up, the log is released as usual again.
    put_each(&mut cluster, 55..80);
    let status = cluster.node(1).raft().status();
    assert!(
        status.snapshot_index - status.first_index < 10,
        "{status:?}"
    );
}

#[test]
fn a_damaged_snapshot_from_a_peer_is_refused_and_changes_nothing() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    let term = cluster.node(1).raft().term();
    let before = cluster.node(3).raft().status();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 50,
            term,
            conf_state: ConfState::with_voters([1, 2, 3]),
        },
        data: Bytes::from_static(b"not an image"),
    };
    let message = Message {
        from: 1,
        to: 3,
        term,
        body: MessageBody::InstallSnapshot(snapshot),
    };
    assert!(cluster.node_mut(3).step(message).is_err());
    assert_eq!(cluster.node(3).raft().status(), before);
}

/// Member 4, to be added as a learner.
fn learner_4() -> Member {
    Member {
        id: 4,
        name: String::new(),
        peer_urls: vec!["http://10.0.0.4:2380".into()],
        client_urls: vec![],
        is_learner: true,
    }
}

#[test]
fn membership_change_updates_the_members_everywhere_and_answers_the_proposer() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    cluster
        .node_mut(2)
        .propose_conf_change(500, ConfChangeKind::AddLearner, learner_4())
        .unwrap();
    cluster.run();
    let Some(Outcome::MembershipChanged { members }) = cluster.outcome(2, 500) else {
        panic!("the proposer is answered")
    };
    assert_eq!(members.len(), 4);
    for id in [1, 2, 3] {
        let member = cluster.node(id).members().get(4).cloned().unwrap();
        assert!(member.is_learner);
        assert_eq!(member.peer_urls, vec!["http://10.0.0.4:2380".to_string()]);
    }
}

#[test]
fn a_proposal_overwritten_by_another_leader_is_reported_lost() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    cluster.isolated.insert(1);
    let doomed = cluster.put(1, "x", "old leader");
    cluster.run();
    // Once the followers' leases on node 1 lapse, one of them takes over.
    let mut ticks = 0;
    while cluster.leader().is_none_or(|id| id == 1) {
        cluster.tick(1);
        ticks += 1;
        assert!(ticks < 100, "no new leader");
    }
    let new_leader = cluster.leader().unwrap();
    cluster.put(new_leader, "y", "new leader");
    cluster.run();
    cluster.isolated.clear();
    cluster.tick(5);
    assert_eq!(cluster.outcome(1, doomed), Some(&Outcome::Lost));
    assert!(cluster.get(1, "x").is_none());
    cluster.assert_converged();
}

#[test]
fn watch_on_a_follower_sees_every_event_in_order() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    let stream = cluster.node_mut(3).watches_mut().open_stream();
    let request = WatchCreateRequest {
        key: Bytes::from_static(b"w"),
        range_end: Bytes::from_static(b"x"),
        ..Default::default()
    };
    cluster
        .node_mut(3)
        .watches_mut()
        .create_watch(stream, &request)
        .unwrap();
    for i in 0..5 {
        cluster.put(1, &format!("w{i}"), "v");
    }
    cluster.run();
    let mut revisions = Vec::new();
    while let Some(response) = cluster.node_mut(3).watches_mut().poll(stream) {
        revisions.extend(response.events.iter().map(|e| e.kv.mod_revision));
    }
    assert_eq!(revisions.len(), 5);
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
}

#[test]
fn peer_urls_update_reaches_every_member_and_answers_the_proposer() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    let update = ProposalBody::UpdatePeerUrls {
        id: 2,
        peer_urls: vec!["http://10.0.0.22:2380".into()],
    };
    cluster.node_mut(3).propose(600, update).unwrap();
    cluster.run();
    let Some(Outcome::MembershipChanged { members }) = cluster.outcome(3, 600) else {
        panic!("the proposer is answered")
    };
    assert_eq!(members.len(), 3);
    for id in [1, 2, 3] {
        let member = cluster.node(id).members().get(2).cloned().unwrap();
        assert_eq!(member.peer_urls, vec!["http://10.0.0.22:2380".to_string()]);
        assert!(!member.is_learner);
    }
    cluster.assert_converged();
}

#[test]
fn a_watch_from_the_past_catches_up_when_synced_without_new_writes() {
    let mut cluster = NodeCluster::new(1, default_node_config);
    cluster.elect(1);
    for i in 0..3 {
        cluster.put(1, &format!("p{i}"), "v");
    }
    cluster.run();
    let node = cluster.node_mut(1);
    let stream = node.watches_mut().open_stream();
    let request = WatchCreateRequest {
        key: Bytes::from_static(b"p"),
        range_end: Bytes::from_static(b"q"),
        start_revision: 1,
        ..Default::default()
    };
    node.watches_mut().create_watch(stream, &request).unwrap();
    assert_eq!(node.sync_watches(), 0, "caught up in one round");
    let mut events = 0;
    while let Some(response) = node.watches_mut().poll(stream) {
        events += response.events.len();
    }
    assert_eq!(events, 3);
}

// ---- Auth: replicated, in snapshots, enforced when entries apply ----

mod auth {
    use super::*;
    use keel_core::auth::{
        AuthCommand, AuthError, AuthResponse, Credentials, Permission, PermissionType,
    };

    fn admin(cluster: &mut NodeCluster, id: NodeId, command: AuthCommand) -> u64 {
        let request_id = cluster.next_request_id;
        cluster.next_request_id += 1;
        cluster
            .node_mut(id)
            .propose(request_id, ProposalBody::Auth(command))
            .unwrap();
        cluster.run();
        request_id
    }

    fn propose_as(
        cluster: &mut NodeCluster,
        id: NodeId,
        body: ProposalBody,
        credentials: &Credentials,
    ) -> u64 {
        let request_id = cluster.next_request_id;
        cluster.next_request_id += 1;
        cluster
            .node_mut(id)
            .propose_as(request_id, body, credentials)
            .unwrap();
        cluster.run();
        request_id
    }

    /// root, and alice with read-write on `app/`; auth enabled.
    fn set_up(cluster: &mut NodeCluster) {
        let hash = Some("$2b$04$not-checked-here".to_string());
        for name in ["root", "alice"] {
            let add = AuthCommand::UserAdd {
                name: name.into(),
                password_hash: hash.clone(),
                no_password: false,
            };
            admin(cluster, 1, add);
        }
        admin(cluster, 1, AuthCommand::RoleAdd { name: "app".into() });
        let grant = AuthCommand::RoleGrantPermission {
            name: "app".into(),
            permission: Some(Permission {
                kind: PermissionType::ReadWrite,
                key: b"app/".to_vec(),
                range_end: b"app0".to_vec(),
            }),
        };
        admin(cluster, 1, grant);
        for (user, role) in [("root", "root"), ("alice", "app")] {
            let grant = AuthCommand::UserGrantRole {
                user: user.into(),
                role: role.into(),
            };
            admin(cluster, 1, grant);
        }
        admin(cluster, 1, AuthCommand::Enable);
    }

    fn login(cluster: &mut NodeCluster, id: NodeId, name: &str) -> String {
        let checked_revision = cluster.node(id).auth().revision();
        let login = AuthCommand::Authenticate {
            name: name.into(),
            token_prefix: "prefix".into(),
            checked_revision,
        };
        let request_id = propose_as(
            cluster,
            id,
            ProposalBody::Auth(login),
            &Credentials::default(),
        );
        match cluster.outcome(id, request_id) {
            Some(Outcome::Auth(Ok(AuthResponse::Token(token)))) => token.clone(),
            other => panic!("login failed: {other:?}"),
        }
    }

    fn put_body(key: &str) -> ProposalBody {
        ProposalBody::Store(Command::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        }))
    }

    fn token(token: &str) -> Credentials {
        Credentials {
            token: Some(token.to_string()),
            ..Credentials::default()
        }
    }

    #[test]
    fn a_token_from_one_member_works_on_another_and_permissions_hold_everywhere() {
        let mut cluster = NodeCluster::new(3, default_node_config);
        cluster.elect(1);
        set_up(&mut cluster);
        let alice = login(&mut cluster, 2, "alice");
        // The token was handed out by applying the entry: member 3 knows it too.
        let allowed = propose_as(&mut cluster, 3, put_body("app/x"), &token(&alice));
        assert!(put_ok(cluster.outcome(3, allowed)));
        let denied = propose_as(&mut cluster, 3, put_body("other"), &token(&alice));
        assert_eq!(
            cluster.outcome(3, denied),
            Some(&Outcome::Auth(Err(AuthError::PermissionDenied)))
        );
        assert_eq!(cluster.get(1, "other"), None);
        // Without credentials nothing is written.
        let anonymous = propose_as(&mut cluster, 1, put_body("app/y"), &Credentials::default());
        assert_eq!(
            cluster.outcome(1, anonymous),
            Some(&Outcome::Auth(Err(AuthError::UserEmpty)))
        );
        let forged = cluster
            .node_mut(1)
            .propose_as(999, put_body("app/z"), &token("forged.1"));
        assert!(forged.is_err());
        cluster.assert_converged();
    }

    #[test]
    fn a_permission_change_between_check_and_apply_refuses_the_write() {
        let mut cluster = NodeCluster::new(3, default_node_config);
        cluster.elect(1);
        set_up(&mut cluster);
        let alice = login(&mut cluster, 1, "alice");
        // The revoke is proposed (not yet applied) before alice's write is: her credentials
        // are checked at the revision before it, and the write applies after it.
        let revoke = AuthCommand::RoleRevokePermission {
            role: "app".into(),
            key: b"app/".to_vec(),
            range_end: b"app0".to_vec(),
        };
        cluster
            .node_mut(1)
            .propose(9_999, ProposalBody::Auth(revoke))
            .unwrap();
        let request_id = propose_as(&mut cluster, 1, put_body("app/late"), &token(&alice));
        assert_eq!(
            cluster.outcome(1, request_id),
            Some(&Outcome::Auth(Err(AuthError::AuthOldRevision)))
        );
        assert_eq!(cluster.get(1, "app/late"), None);
    }

    #[test]
    fn users_roles_and_permissions_survive_snapshots_and_restarts() {
        let mut cluster = NodeCluster::new(3, frequent_snapshots);
        cluster.elect(1);
        set_up(&mut cluster);
        for i in 0..30 {
            cluster.put(1, &format!("k{i}"), "v");
            cluster.run();
        }
        assert!(cluster.nodes[&2].snapshots_taken >= 2);
        let before = cluster.node(1).auth().clone();
        cluster.crash(2);
        cluster.restart(2);
        cluster.tick(3);
        assert_eq!(cluster.node(2).auth(), &before);
        assert!(cluster.node(2).auth().is_enabled());
        assert_eq!(cluster.node(2).auth().user_get("alice").unwrap(), ["app"]);
        // Tokens are not in snapshots: a restarted member forgets them; logging in again works.
        let alice = login(&mut cluster, 2, "alice");
        let allowed = propose_as(&mut cluster, 2, put_body("app/after"), &token(&alice));
        assert!(put_ok(cluster.outcome(2, allowed)));
        cluster.assert_converged();
    }
}

fn small_quota(id: NodeId) -> NodeConfig {
    let mut config = default_node_config(id);
    config.store.quota_bytes = 4_000;
    config
}

/// etcd's quota: a write that does not fit raises the NOSPACE alarm through the log, so
/// every member refuses writes that add data, small ones included, until it is disarmed.
#[test]
fn a_write_over_the_quota_raises_nospace_on_every_member_until_disarmed() {
    let mut cluster = NodeCluster::new(3, small_quota);
    cluster.elect(1);
    cluster.put(1, "small", "v");
    cluster.run();
    let big = "x".repeat(5_000);
    let refused = cluster.node_mut(2).propose(
        99,
        ProposalBody::Store(Command::Put(PutRequest {
            key: Bytes::from_static(b"big"),
            value: Bytes::from(big),
            ..Default::default()
        })),
    );
    assert!(refused.is_err(), "the big put does not fit");
    cluster.run();
    assert_no_space_raised_by(&cluster, 2);
    let small = propose_tiny_put(&mut cluster, 3);
    assert!(
        small.is_err(),
        "a small put is refused too while the alarm is on"
    );
    cluster.propose(
        1,
        Command::Alarm(mvcc::AlarmRequest {
            action: mvcc::AlarmAction::Deactivate,
            member_id: 2,
            alarm: mvcc::AlarmType::NoSpace,
        }),
    );
    cluster.run();
    let id = cluster.put(3, "tiny", "1");
    cluster.run();
    assert!(put_ok(cluster.outcome(3, id)), "disarmed");
}

/// Every member holds exactly one alarm: NOSPACE raised by `member`.
fn assert_no_space_raised_by(cluster: &NodeCluster, member: NodeId) {
    for id in 1..=3 {
        let alarms = cluster.node(id).store().alarms();
        assert!(
            matches!(
                alarms[..],
                [mvcc::AlarmMember { member_id, alarm: mvcc::AlarmType::NoSpace }]
                    if member_id == member
            ),
            "member {id} sees the alarm raised by member {member}: {alarms:?}"
        );
    }
}

fn propose_tiny_put(cluster: &mut NodeCluster, id: NodeId) -> Result<(), NodeProposeError> {
    cluster.node_mut(id).propose(
        100,
        ProposalBody::Store(Command::Put(PutRequest {
            key: Bytes::from_static(b"tiny"),
            value: Bytes::from_static(b"1"),
            ..Default::default()
        })),
    )
}

fn small_quota_on_member_3(id: NodeId) -> NodeConfig {
    if id == 3 {
        small_quota(id)
    } else {
        default_node_config(id)
    }
}

/// A member's quota is its own flag (an operator raises it one member at a time), so it
/// must not decide what applying does: writes proposed through a member with room apply
/// on the member without room too, which then raises NOSPACE for everyone, as etcd's does.
/// Refusing them when applying made member 3 skip writes the others hold.
#[test]
fn members_with_different_quotas_hold_the_same_data_and_the_full_one_raises_nospace() {
    let mut cluster = NodeCluster::new(3, small_quota_on_member_3);
    cluster.elect(1);
    let value = "x".repeat(1_000);
    let puts: Vec<u64> = (0..8)
        .map(|i| cluster.put(1, &format!("k{i}"), &value))
        .collect();
    cluster.run();
    for id in puts {
        assert!(
            put_ok(cluster.outcome(1, id)),
            "member 1 has room for every put"
        );
    }
    cluster.assert_converged();
    assert!(cluster.node(3).store().over_quota());
    cluster.tick(1);
    assert_no_space_raised_by(&cluster, 3);
    let refused = propose_tiny_put(&mut cluster, 1);
    assert!(
        refused.is_err(),
        "refused on member 1 too while the alarm is on"
    );
    cluster.assert_converged();
}

/// A member that joins on an empty data dir (an added member, or one an operator replaced)
/// has nothing to serve: its empty store would show clients the cluster's first revision.
/// It serves once a read index from the leader, taken after its start, is applied.
#[test]
fn a_member_joining_on_an_empty_data_dir_serves_nothing_until_caught_up() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    cluster.put(1, "k", "v");
    cluster.run();
    cluster
        .node_mut(1)
        .propose_conf_change(501, ConfChangeKind::AddLearner, learner_4())
        .unwrap();
    cluster.run();
    cluster.nodes.insert(
        4,
        TestNode {
            node: None,
            storage: MemStorage::default(),
            completions: vec![],
            reads: vec![],
            answers: vec![],
            snapshots_taken: 0,
        },
    );
    cluster.isolated.insert(4);
    cluster.restart(4);
    assert!(
        !cluster.node(4).serves_local_reads(),
        "nothing to serve yet"
    );
    cluster.tick(30);
    assert!(
        !cluster.node(4).serves_local_reads(),
        "cut off: still nothing"
    );
    cluster.isolated.clear();
    cluster.tick(5);
    assert!(cluster.node(4).serves_local_reads());
    assert_eq!(cluster.get(4, "k").as_deref(), Some(&b"v"[..]));
}

/// etcd's `--force-new-cluster`: after losing its majority for good, a surviving member is
/// restarted as the only member of its cluster, with every entry it held; then it serves
/// and takes writes alone, and its membership (and any snapshot's) says so.
#[test]
fn a_member_forced_into_a_new_cluster_keeps_its_data_and_leads_alone() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    for i in 0..5 {
        cluster.put(1, &format!("k{i}"), "v");
        cluster.run();
    }
    // Members 2 and 3 are lost for good; member 1 restarts forced into a new cluster.
    for id in 1..=3 {
        cluster.crash(id);
    }
    let mut survivor = cluster.nodes.remove(&1).unwrap();
    cluster.nodes.clear();
    let mut initial = survivor.storage.initial_state();
    let appended = initial.force_new_cluster(1).unwrap();
    assert_eq!(appended.len(), 2, "members 2 and 3 removed");
    survivor.storage.entries.extend(appended);
    survivor.storage.hard_state = initial.hard_state;
    cluster.nodes.insert(1, survivor);
    cluster.restart(1);
    cluster.tick(30);
    assert!(cluster.node(1).is_leader(), "a lone voter leads");
    assert_eq!(cluster.get(1, "k4").as_deref(), Some(&b"v"[..]));
    let members: Vec<NodeId> = cluster.node(1).members().iter().map(|m| m.id).collect();
    assert_eq!(members, vec![1]);
    let id = cluster.put(1, "after", "v");
    cluster.run();
    assert!(put_ok(cluster.outcome(1, id)));
    let mut learner_of_nothing = MemStorage::default().initial_state();
    assert!(
        learner_of_nothing.force_new_cluster(1).is_err(),
        "a member that is no voter cannot"
    );
}

#[test]
fn a_leader_counts_a_voter_up_while_it_answers_every_few_heartbeats_for_an_election_timeout() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    let election_ticks = u64::from(default_node_config(1).raft.election_ticks);
    let liveness = |cluster: &NodeCluster, id| cluster.node(1).voter_liveness(id);
    cluster.tick(election_ticks);
    assert!([1, 2, 3]
        .iter()
        .all(|&id| liveness(&cluster, id) == VoterLiveness::Up));
    cluster.crash(3);
    cluster.tick(4);
    assert_eq!(
        liveness(&cluster, 1),
        VoterLiveness::Up,
        "the leader itself"
    );
    assert_eq!(
        liveness(&cluster, 2),
        VoterLiveness::Up,
        "heartbeats answered"
    );
    assert_eq!(
        liveness(&cluster, 3),
        VoterLiveness::Unsteady,
        "silent for 4 heartbeats: not up, not down yet"
    );
    cluster.tick(election_ticks);
    assert_eq!(liveness(&cluster, 3), VoterLiveness::Down);
    cluster.restart(3);
    cluster.tick(2);
    assert_eq!(
        liveness(&cluster, 3),
        VoterLiveness::Unsteady,
        "heard again, but not for an election timeout yet"
    );
    cluster.tick(election_ticks);
    assert_eq!(
        liveness(&cluster, 3),
        VoterLiveness::Up,
        "heard without a pause"
    );
}

/// etcd's `MoveLeader` checks, made by the node: only the leader starts a transfer, and
/// only to a voting member; one started ends with the target leading.
#[test]
fn a_leader_transfer_is_started_by_the_leader_for_a_voting_member_only() {
    use keel_core::node::query::{Ask, Query, TransferLeader, TransferRefused};
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    cluster
        .node_mut(1)
        .propose_conf_change(500, ConfChangeKind::AddLearner, learner_4())
        .unwrap();
    cluster.run();
    let transfer = |cluster: &mut NodeCluster, on: NodeId, target: NodeId| {
        let answer = cluster
            .node_mut(on)
            .answer(TransferLeader { target }.into_query());
        TransferLeader::take(answer).expect("answered in kind")
    };
    assert_eq!(
        transfer(&mut cluster, 2, 3),
        Err(TransferRefused::NotLeader)
    );
    assert_eq!(
        transfer(&mut cluster, 1, 4),
        Err(TransferRefused::BadTransferee),
        "a learner cannot lead"
    );
    assert_eq!(
        transfer(&mut cluster, 1, 42),
        Err(TransferRefused::BadTransferee),
        "not a member"
    );
    assert_eq!(cluster.leader(), Some(1), "nothing was started");
    assert_eq!(transfer(&mut cluster, 1, 3), Ok(()));
    cluster.tick(20);
    assert_eq!(cluster.leader(), Some(3));
    // Another query's answer is not this one's.
    let header = cluster
        .node_mut(3)
        .answer(Query::Header(keel_core::node::query::Header));
    assert!(TransferLeader::take(header).is_none());
}

/// etcd's `--auto-compaction-mode=revision --auto-compaction-retention=10`: the leader
/// compacts, through the log, to ten revisions behind the newest, checking every five
/// minutes (300 s, 3,000 ticks of 100 ms).
#[test]
fn the_leader_compacts_history_beyond_the_retention_on_its_own() {
    fn keep_ten_revisions(id: NodeId) -> NodeConfig {
        let mut config = default_node_config(id);
        config.auto_compaction = AutoCompaction::Revision(10);
        config
    }
    let mut cluster = NodeCluster::new(3, keep_ten_revisions);
    cluster.elect(1);
    let put_fifty = |cluster: &mut NodeCluster| {
        for i in 0..50 {
            cluster.put(1, &format!("k{i}"), "v");
            cluster.run();
        }
        cluster.node(1).store().current_revision()
    };
    let compacted = |cluster: &NodeCluster| -> Vec<i64> {
        (1..=3)
            .map(|id| cluster.node(id).store().compact_revision())
            .collect()
    };
    let revision = put_fifty(&mut cluster);
    cluster.tick(1);
    assert_eq!(compacted(&cluster), vec![revision - 10; 3]);

    let newer = put_fifty(&mut cluster);
    cluster.tick(2_998);
    assert_eq!(
        compacted(&cluster),
        vec![revision - 10; 3],
        "not before five minutes"
    );
    cluster.tick(2);
    assert_eq!(compacted(&cluster), vec![newer - 10; 3]);
}

fn announcing(id: NodeId) -> NodeConfig {
    let mut config = default_node_config(id);
    config.attributes = Some(MemberAttributes {
        id,
        name: format!("member-{id}"),
        client_urls: vec![format!("http://10.0.1.{id}:2379")],
    });
    config
}

fn shows_attributes(cluster: &NodeCluster, at: NodeId, of: NodeId) -> bool {
    let member = cluster.node(at).members().get(of).cloned();
    member.is_some_and(|m| m.name == format!("member-{of}"))
}

/// etcd's `publish`: a member announces its name and client URLs through the log once it
/// knows a leader; without one it announces nothing.
#[test]
fn members_announce_their_attributes_once_a_leader_is_known() {
    let mut cluster = NodeCluster::new(3, announcing);
    cluster.isolated.insert(3);
    cluster.elect(1);
    for at in 1..=2 {
        assert!(shows_attributes(&cluster, at, 1) && shows_attributes(&cluster, at, 2));
        assert!(!shows_attributes(&cluster, at, 3), "3 knows no leader");
    }
    cluster.isolated.clear();
    cluster.tick(1);
    for at in 1..=3 {
        for of in 1..=3 {
            assert!(shows_attributes(&cluster, at, of), "{at} shows {of}'s");
        }
    }
}

/// An announcement lost on its way to the leader is made again within twenty ticks.
#[test]
fn a_lost_announcement_is_made_again() {
    let mut cluster = NodeCluster::new(3, announcing);
    cluster.isolated.insert(3);
    cluster.elect(1);
    // The leader's heartbeat reaches 3, which announces itself at once; its announcement
    // is lost.
    cluster.now_ms += TICK_MS;
    let now_ms = cluster.now_ms;
    cluster.node_mut(1).tick(now_ms);
    cluster.process(1);
    let to_3: Vec<Message> = cluster
        .queue
        .iter()
        .filter(|m| m.to == 3)
        .cloned()
        .collect();
    assert!(!to_3.is_empty(), "the leader speaks to 3");
    for message in to_3 {
        cluster.node_mut(3).step(message).unwrap();
    }
    cluster.process(3);
    cluster.run();
    assert_eq!(cluster.node(3).raft().leader(), Some(1));
    assert!(!shows_attributes(&cluster, 1, 3));

    cluster.isolated.clear();
    cluster.tick(20);
    assert!(shows_attributes(&cluster, 1, 3) && shows_attributes(&cluster, 3, 3));
}

/// A member that knows no leader holds what needs one for one election timeout (an
/// election is a slower answer, not an error), then lets it fail with `no leader`.
#[test]
fn what_needs_a_leader_is_held_for_one_election_timeout() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    assert!(!cluster.node(2).must_hold(Needs::Leader));
    cluster.isolated.insert(2);
    let election_ticks = u64::from(cluster.node(2).raft().config().election_ticks);
    // It hears nothing: at the next election timeout it stands and forgets the leader; that
    // tick is the first without one.
    let mut ticks = 0;
    while cluster.node(2).raft().leader().is_some() {
        cluster.tick(1);
        ticks += 1;
        assert!(ticks < 10 * election_ticks, "2 never gave up on its leader");
    }
    for _ in 1..election_ticks {
        assert!(cluster.node(2).must_hold(Needs::Leader));
        assert!(!cluster.node(2).held_requests_fail());
        cluster.tick(1);
    }
    assert!(!cluster.node(2).must_hold(Needs::Leader), "refused now");
    assert!(cluster.node(2).held_requests_fail());
    assert!(
        !cluster.node(2).must_hold(Needs::LocalState),
        "2 was never fenced"
    );
}

fn range_of(key: &str, consistency: Consistency) -> ClientRequest {
    let request = RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    };
    ClientRequest::Ask {
        query: query::Range(request).into_query(),
        asked_by: None,
        consistency,
    }
}

fn value_in(answer: Answer) -> Option<Bytes> {
    let range = query::Range::take(answer).expect("a range's answer");
    let response = range.value.expect("the range succeeds");
    response.kvs.first().map(|kv| kv.value.clone())
}

/// `Node::handle`: a serializable question is answered at once; a linearizable one comes
/// out of `apply` once its read index is applied; one its client gave up on answers nothing.
#[test]
fn questions_are_answered_at_once_or_once_their_read_index_is_applied() {
    let mut cluster = NodeCluster::new(3, default_node_config);
    cluster.elect(1);
    cluster.put(1, "k", "v1");
    cluster.run();

    let serializable = cluster
        .node_mut(2)
        .handle(0, range_of("k", Consistency::Serializable));
    match serializable {
        Ok(Handled::Now(Ok(answer))) => assert_eq!(value_in(answer).as_deref(), Some(&b"v1"[..])),
        other => panic!("answered at once, not {other:?}"),
    }

    let later = cluster
        .node_mut(2)
        .handle(7, range_of("k", Consistency::Linearizable));
    assert!(matches!(later, Ok(Handled::Later)));
    let given_up = cluster
        .node_mut(2)
        .handle(8, range_of("k", Consistency::Linearizable));
    assert!(matches!(given_up, Ok(Handled::Later)));
    cluster.node_mut(2).forget_question(8);
    cluster.run();
    let answers = std::mem::take(&mut cluster.nodes.get_mut(&2).unwrap().answers);
    let ids: Vec<u64> = answers.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![7], "the forgotten question answers nothing");
    let (_, answer) = answers.into_iter().next().unwrap();
    assert_eq!(value_in(answer.unwrap()).as_deref(), Some(&b"v1"[..]));

    cluster.isolated.insert(2);
    cluster.tick(30);
    let refused = cluster
        .node_mut(2)
        .handle(9, range_of("k", Consistency::Linearizable));
    assert!(
        matches!(
            refused,
            Err(RequestError::ReadIndex(ReadIndexError::NoLeader))
        ),
        "{refused:?}"
    );
}

/// A member that crashed while restoring its founding image, once one of the restore's
/// commits had reached the disk but before the first durable one, starts again: its engine
/// holds a store at index 0 without the node's rows, which is thrown away and restored
/// again. It stopped the member for good ("the engine restored into already holds a
/// store"); the simulator found it with an engine committing every 2 s (seed 1342).
#[test]
fn a_restore_a_crash_cut_short_is_done_again_when_the_member_starts() {
    let config = default_node_config(1);
    let image = Node::bootstrap_image(&members(3), config.store);
    let initial = InitialState::bootstrap([1, 2, 3], image);
    // The rows such a restore leaves: the founding store's, and none of the node's.
    let founding_store = mvcc::Store::new(config.store).snapshot();
    let engine = mvcc::Store::restore_into(
        &founding_store,
        Box::new(mvcc::MemEngine::default()),
        config.store,
    )
    .unwrap()
    .into_engine();
    let store = mvcc::Store::open(engine, config.store).unwrap();
    let (node, rebased) = Node::open(config, initial, store, "store.redb").unwrap();
    assert!(rebased.is_none());
    assert_eq!(node.applied_index(), 1);
    assert_eq!(node.store().applied_index(), 1);
    assert_eq!(node.members().iter().count(), 3);
}
