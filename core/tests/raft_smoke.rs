use keel_core::raft::harness::Cluster;
use keel_core::raft::Role;

#[test]
fn three_nodes_elect_and_commit() {
    let mut cluster = Cluster::new(3, 7);
    let leader = cluster.wait_for_leader(100).expect("a leader");
    for i in 0..10u32 {
        cluster.propose(leader, i.to_be_bytes().to_vec()).unwrap();
    }
    cluster.stabilize();
    cluster.run_ticks(3);
    cluster.check_invariants().unwrap();
    cluster.check_converged().unwrap();
    assert_eq!(cluster.node(1).state_machine.payloads.len(), 10);
    assert_eq!(cluster.raft(leader).role(), Role::Leader);
}
