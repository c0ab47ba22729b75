//! Raft's rules, one module per section of the paper (and of Ongaro's thesis), each test
//! named after the behaviour it pins down. In the spirit of etcd-io/raft's
//! `raft_paper_test.go`; written against keel's API.
//!
//! Index 1 is the bootstrap snapshot every founding member starts from (term 1); the logs
//! built by `MemStorage::with_log` continue at index 2.

// In tests a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::Bytes;
use keel_core::raft::harness::{default_config, Cluster, MemStorage};
use keel_core::raft::*;

/// PreVote and CheckQuorum off: the bare algorithm of the paper's §5.
fn plain_config(id: NodeId, seed: u64) -> Config {
    let mut config = default_config(id, seed);
    config.pre_vote = false;
    config.check_quorum = false;
    config
}

fn plain_raft(id: NodeId, voters: &[NodeId], entry_terms: &[Term], term: Term) -> Raft {
    let storage = MemStorage::with_log(voters, entry_terms, term);
    Raft::new(plain_config(id, 1), storage.initial_state()).expect("valid start")
}

/// Carries out every `Ready` (without a disk) and returns all messages it produced.
fn drain(raft: &mut Raft) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(mut ready) = raft.ready() {
        out.append(&mut ready.messages);
        out.append(&mut ready.persisted_messages);
        raft.advance(&ready);
    }
    out
}

fn message(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn vote_request(last_log_index: Index, last_log_term: Term) -> MessageBody {
    MessageBody::RequestVote(RequestVote {
        pre_vote: false,
        last_log_index,
        last_log_term,
        leader_transfer: false,
    })
}

fn granted(messages: &[Message], to: NodeId) -> Option<bool> {
    messages.iter().find_map(|m| match m.body {
        MessageBody::RequestVoteResponse(r) if m.to == to => Some(r.granted),
        _ => None,
    })
}

fn cluster_of(
    voters: &[NodeId],
    logs: &[(&[Term], Term)],
    config: fn(NodeId, u64) -> Config,
) -> Cluster {
    let storages: BTreeMap<NodeId, MemStorage> = voters
        .iter()
        .zip(logs)
        .map(|(&id, &(terms, term))| (id, MemStorage::with_log(voters, terms, term)))
        .collect();
    Cluster::with_storages(storages, 1, config)
}

fn log_terms(raft: &Raft) -> Vec<Term> {
    (raft.first_index()..=raft.last_index())
        .map(|i| raft.log_term(i).expect("in memory"))
        .collect()
}

fn check(cluster: &mut Cluster) {
    cluster
        .check_invariants()
        .unwrap_or_else(|v| panic!("{v}\n{}", cluster.describe()));
}

mod s5_2_leader_election {
    use super::*;

    #[test]
    fn follower_campaigns_after_election_timeout() {
        let mut raft = plain_raft(1, &[1, 2, 3], &[], 1);
        for _ in 0..20 {
            raft.tick();
        }
        assert_eq!(raft.role(), Role::Candidate);
        assert_eq!(raft.term(), 2);
        assert_eq!(
            raft.hard_state().vote,
            Some(1),
            "a candidate votes for itself"
        );
        let ready = raft.ready().expect("votes to send");
        assert!(ready.must_sync(), "term and vote must be on disk first");
        let requests: Vec<NodeId> = ready
            .persisted_messages
            .iter()
            .filter(|m| matches!(m.body, MessageBody::RequestVote(_)))
            .map(|m| m.to)
            .collect();
        assert_eq!(requests, vec![2, 3]);
        assert!(
            ready.messages.is_empty(),
            "vote requests wait for the persist"
        );
    }

    #[test]
    fn election_timeouts_are_randomized_between_one_and_two_timeouts() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut config = plain_config(1, seed);
            config.seed = seed;
            let storage = MemStorage::with_log(&[1, 2, 3], &[], 1);
            let mut raft = Raft::new(config, storage.initial_state()).unwrap();
            let mut ticks = 0;
            while raft.role() == Role::Follower {
                raft.tick();
                ticks += 1;
            }
            assert!(
                (10..20).contains(&ticks),
                "timeout of {ticks} ticks is out of range"
            );
            seen.insert(ticks);
        }
        assert!(seen.len() > 3, "timeouts are not spread: {seen:?}");
    }

    #[test]
    fn candidate_with_votes_from_a_majority_becomes_leader() {
        let mut cluster = Cluster::with_config(5, 1, plain_config);
        cluster.isolate(4);
        cluster.isolate(5);
        cluster.elect(1);
        assert_eq!(cluster.raft(1).term(), 2);
        check(&mut cluster);
    }

    #[test]
    fn candidate_rejected_by_a_majority_returns_to_follower() {
        let mut raft = plain_raft(1, &[1, 2, 3], &[], 1);
        raft.campaign();
        drain(&mut raft);
        for from in [2, 3] {
            let response = MessageBody::RequestVoteResponse(RequestVoteResponse {
                pre_vote: false,
                granted: false,
            });
            raft.step(message(from, 1, 2, response)).unwrap();
        }
        assert_eq!(raft.role(), Role::Follower);
        assert_eq!(raft.term(), 2);
    }

    #[test]
    fn candidate_follows_a_leader_of_its_own_term() {
        let mut raft = plain_raft(1, &[1, 2, 3], &[], 1);
        raft.campaign();
        drain(&mut raft);
        let append = MessageBody::Append(Append {
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![],
            commit_index: 1,
        });
        raft.step(message(2, 1, 2, append)).unwrap();
        assert_eq!(raft.role(), Role::Follower);
        assert_eq!(raft.leader(), Some(2));
    }

    #[test]
    fn each_node_votes_for_at_most_one_candidate_per_term() {
        let mut raft = plain_raft(1, &[1, 2, 3], &[], 1);
        raft.step(message(2, 1, 2, vote_request(1, 1))).unwrap();
        assert_eq!(granted(&drain(&mut raft), 2), Some(true));
        raft.step(message(3, 1, 2, vote_request(1, 1))).unwrap();
        assert_eq!(
            granted(&drain(&mut raft), 3),
            Some(false),
            "already voted this term"
        );
        raft.step(message(2, 1, 2, vote_request(1, 1))).unwrap();
        assert_eq!(
            granted(&drain(&mut raft), 2),
            Some(true),
            "a repeated request is re-granted"
        );
    }

    #[test]
    fn vote_is_sent_only_after_it_is_persisted() {
        let mut raft = plain_raft(1, &[1, 2, 3], &[], 1);
        raft.step(message(2, 1, 2, vote_request(1, 1))).unwrap();
        let ready = raft.ready().unwrap();
        assert_eq!(
            ready.hard_state.map(|h| (h.term, h.vote)),
            Some((2, Some(2)))
        );
        assert!(ready.must_sync());
        assert!(ready.messages.is_empty());
        assert_eq!(granted(&ready.persisted_messages, 2), Some(true));
    }

    #[test]
    fn leader_sends_heartbeats_every_heartbeat_interval() {
        let mut cluster = Cluster::with_config(3, 1, plain_config);
        cluster.elect(1);
        cluster.tick(1);
        cluster.process_ready(1);
        let heartbeats: Vec<NodeId> = cluster
            .take_messages(|m| matches!(m.body, MessageBody::Heartbeat(_)))
            .iter()
            .map(|m| m.to)
            .collect();
        assert_eq!(heartbeats, vec![2, 3]);
    }

    #[test]
    fn leader_steps_down_on_seeing_a_higher_term() {
        let mut cluster = Cluster::with_config(3, 1, plain_config);
        cluster.elect(1);
        let response = MessageBody::RequestVoteResponse(RequestVoteResponse {
            pre_vote: false,
            granted: false,
        });
        cluster
            .raft_mut(1)
            .step(message(3, 1, 7, response))
            .unwrap();
        assert_eq!(cluster.raft(1).role(), Role::Follower);
        assert_eq!(cluster.raft(1).term(), 7);
    }
}

mod s5_3_log_replication {
    use super::*;

    #[test]
    fn leader_commits_once_a_majority_stores_the_entry() {
        let mut cluster = Cluster::with_config(3, 1, plain_config);
        cluster.elect(1);
        cluster.isolate(3);
        let Proposed::Appended { index, .. } = cluster.propose(1, "x").unwrap() else {
            panic!("the leader appends")
        };
        cluster.stabilize();
        assert_eq!(cluster.raft(1).commit_index(), index);
        assert!(cluster.raft(3).last_index() < index);
        cluster.heal();
        cluster.run_ticks(2);
        assert_eq!(
            cluster.raft(3).commit_index(),
            index,
            "the lagging follower catches up"
        );
        check(&mut cluster);
        cluster.check_converged().unwrap();
    }

    #[test]
    fn leader_sends_appends_before_its_own_persist() {
        let mut cluster = Cluster::with_config(3, 1, plain_config);
        cluster.elect(1);
        let leader = cluster.raft_mut(1);
        leader.propose(Bytes::from_static(b"x")).unwrap();
        let ready = leader.ready().unwrap();
        assert_eq!(ready.entries.len(), 1);
        let appends = ready
            .messages
            .iter()
            .filter(|m| matches!(&m.body, MessageBody::Append(a) if a.entries.len() == 1))
            .count();
        assert_eq!(
            appends, 2,
            "both followers get the entry while the leader syncs (§10.2.1)"
        );
        assert_eq!(
            leader.commit_index(),
            leader.last_index() - 1,
            "nothing is committed yet"
        );
        leader.advance(&ready);
    }

    #[test]
    fn follower_rejects_append_whose_previous_entry_it_lacks_and_hints_where_to_retry() {
        let mut raft = plain_raft(1, &[1, 2, 3], &[1, 2, 2], 3);
        let append = MessageBody::Append(Append {
            prev_log_index: 6,
            prev_log_term: 3,
            entries: vec![],
            commit_index: 1,
        });
        raft.step(message(2, 1, 3, append)).unwrap();
        let response = drain(&mut raft)
            .into_iter()
            .find_map(|m| match m.body {
                MessageBody::AppendResponse(r) => Some(r),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            response,
            AppendResponse::Rejected {
                rejected_index: 6,
                hint_index: 4,
                hint_term: 2
            },
            "the hint is the follower's last entry with a term not above the leader's"
        );
    }

    /// Figure 2, AppendEntries rule 5: commitIndex = min(leaderCommit, index of the last new
    /// entry). Entries past those the Append brought may be a deposed leader's, not this
    /// leader's: they are not committed, however far the leader's commit index goes.
    #[test]
    fn follower_commits_only_through_the_last_entry_an_append_brought() {
        // Bootstrap entry, then indexes 2..=4 of term 1 (written by a leader since deposed).
        let mut raft = plain_raft(2, &[1, 2, 3], &[1, 1, 1], 2);
        let append = MessageBody::Append(Append {
            prev_log_index: 2,
            prev_log_term: 1,
            entries: vec![],
            commit_index: 4,
        });
        raft.step(message(1, 2, 3, append)).unwrap();
        drain(&mut raft);
        assert_eq!(raft.last_index(), 4, "nothing was truncated");
        assert_eq!(
            raft.commit_index(),
            2,
            "only what the Append showed to match the leader's log is committed"
        );
    }

    /// Figure 7: whatever a follower's log looks like, the leader of term 8 makes it equal
    /// to its own, removing extra entries and filling in missing ones.
    #[test]
    fn figure_7_followers_logs_become_the_leaders() {
        // After the bootstrap entry (index 1, term 1), the paper's logs from index 2 on.
        let leader: &[Term] = &[1, 1, 4, 4, 5, 5, 6, 6, 6];
        let followers: [&[Term]; 6] = [
            &[1, 1, 4, 4, 5, 5, 6, 6],
            &[1, 1, 4],
            &[1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
            &[1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
            &[1, 1, 4, 4, 4, 4],
            &[1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
        ];
        for (case, follower) in followers.into_iter().enumerate() {
            // Node 3 holds the leader's log, so node 1 can win whatever node 2 holds.
            let mut cluster = cluster_of(
                &[1, 2, 3],
                &[(leader, 7), (follower, 7), (leader, 7)],
                plain_config,
            );
            cluster.elect(1);
            cluster.run_ticks(2);
            assert_eq!(cluster.raft(1).term(), 8, "case {case}");
            assert_eq!(
                log_terms(cluster.raft(2)),
                log_terms(cluster.raft(1)),
                "case {case}: the follower's log must equal the leader's"
            );
            let mut expected = leader.to_vec();
            expected.push(8);
            assert_eq!(
                log_terms(cluster.raft(1)),
                expected,
                "case {case}: leader's log is append-only"
            );
            check(&mut cluster);
        }
    }

    #[test]
    fn pipelining_stops_at_the_inflight_limit() {
        let config = |id, seed| {
            let mut config = plain_config(id, seed);
            config.max_inflight_appends = 2;
            config.max_append_bytes = 1;
            config
        };
        let mut cluster = Cluster::with_config(3, 1, config);
        cluster.elect(1);
        // Follower 2's answers are lost from now on.
        cluster.cut_link(2, 1);
        for i in 0..10 {
            cluster.propose(1, format!("e{i}")).unwrap();
        }
        cluster.process_ready(1);
        let to_two = cluster
            .take_messages(|m| m.to == 2 && matches!(m.body, MessageBody::Append(_)))
            .len();
        assert_eq!(to_two, 2, "two appends in flight, then the leader waits");
        assert_eq!(cluster.raft(1).status().progress[&2].inflight_appends, 2);
    }

    #[test]
    fn followers_learn_the_commit_index_from_the_leader() {
        let mut cluster = Cluster::with_config(3, 1, plain_config);
        cluster.elect(1);
        cluster.propose(1, "x").unwrap();
        cluster.stabilize();
        let commit = cluster.raft(1).commit_index();
        for id in [2, 3] {
            assert_eq!(cluster.raft(id).commit_index(), commit);
            assert_eq!(cluster.raft(id).applied_index(), commit);
        }
    }
}

mod s5_4_1_election_restriction {
    use super::*;

    #[test]
    fn voter_refuses_a_candidate_whose_log_is_less_up_to_date() {
        // The voter's last entry is (index 4, term 3).
        let cases = [
            ((10, 2), false), // more entries but an older last term
            ((3, 3), false),  // same last term, shorter
            ((4, 3), true),   // equal
            ((2, 4), true),   // newer last term wins whatever its length
        ];
        for ((last_index, last_term), expect) in cases {
            let mut raft = plain_raft(1, &[1, 2, 3], &[2, 3, 3], 3);
            raft.step(message(2, 1, 4, vote_request(last_index, last_term)))
                .unwrap();
            assert_eq!(
                granted(&drain(&mut raft), 2),
                Some(expect),
                "candidate log ({last_index}, {last_term})"
            );
        }
    }

    #[test]
    fn candidate_missing_committed_entries_cannot_win() {
        let mut cluster = cluster_of(
            &[1, 2, 3],
            &[(&[2, 2], 2), (&[2, 2], 2), (&[2], 2)],
            plain_config,
        );
        cluster.raft_mut(3).campaign();
        cluster.stabilize();
        assert_ne!(cluster.raft(3).role(), Role::Leader);
    }
}

mod s5_4_2_committing_entries_from_previous_terms {
    use super::*;

    fn one_entry_per_append(id: NodeId, seed: u64) -> Config {
        let mut config = plain_config(id, seed);
        config.max_append_bytes = 1;
        config
    }

    /// Figure 8: the leader of term 4 gets its term-2 entry onto a majority, but must not
    /// count that as committed: node 5, holding a term-3 entry at that index, can still win
    /// an election and overwrite it.
    #[test]
    fn figure_8_an_earlier_term_entry_is_not_committed_by_counting_replicas() {
        let voters = [1, 2, 3, 4, 5];
        let mut cluster = cluster_of(
            &voters,
            &[(&[2], 3), (&[2], 3), (&[], 3), (&[], 3), (&[3], 3)],
            one_entry_per_append,
        );
        cluster.isolate(5);
        cluster.raft_mut(1).campaign();
        // Deliver everything, but strip the new leader's own entry (index 3) from appends,
        // as if it were never sent: the followers see only the older entries.
        for _ in 0..100 {
            cluster.process_all_ready();
            let messages = cluster.take_messages(|_| true);
            if messages.is_empty() {
                break;
            }
            for mut m in messages {
                if let MessageBody::Append(append) = &mut m.body {
                    append.entries.retain(|e| e.index < 3);
                }
                cluster.deliver(m);
            }
        }
        assert_eq!(cluster.raft(1).role(), Role::Leader);
        assert_eq!(cluster.raft(1).term(), 4);
        let holding_term_2_entry = [1, 2, 3, 4]
            .iter()
            .filter(|&&id| cluster.raft(id).log_term(2) == Some(2))
            .count();
        assert!(
            holding_term_2_entry >= 3,
            "the term-2 entry is on a majority"
        );
        assert_eq!(cluster.raft(1).commit_index(), 1, "but it is not committed");
        // The leader crashes; node 5 returns and wins with its term-3 entry.
        cluster.crash(1);
        cluster.heal();
        // Its first try in term 4 meets voters that already voted; term 5 wins.
        cluster.raft_mut(5).campaign();
        cluster.stabilize();
        cluster.elect(5);
        assert_eq!(cluster.raft(5).term(), 5);
        for id in [2, 3, 4, 5] {
            assert_eq!(cluster.raft(id).log_term(2), Some(3), "node {id}");
        }
        check(&mut cluster);
    }

    #[test]
    fn earlier_term_entries_commit_with_the_first_entry_of_the_current_term() {
        let mut cluster = cluster_of(
            &[1, 2, 3],
            &[(&[2, 2], 3), (&[2], 3), (&[], 3)],
            one_entry_per_append,
        );
        cluster.elect(1);
        cluster.stabilize();
        let leader = cluster.raft(1);
        assert_eq!(
            leader.commit_index(),
            4,
            "the term-2 entries commit with the term-4 entry"
        );
        assert_eq!(leader.log_term(4), Some(4));
        check(&mut cluster);
    }
}

mod s9_6_prevote_and_check_quorum {
    use super::*;

    #[test]
    fn partitioned_node_does_not_raise_its_term() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        let term = cluster.raft(1).term();
        cluster.isolate(3);
        cluster.run_ticks(100);
        assert_eq!(
            cluster.raft(3).term(),
            term,
            "pre-votes fail, so the term stays"
        );
        assert_eq!(cluster.raft(3).role(), Role::PreCandidate);
    }

    #[test]
    fn rejoining_node_does_not_depose_a_healthy_leader() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        let term = cluster.raft(1).term();
        cluster.isolate(3);
        cluster.run_ticks(100);
        cluster.heal();
        cluster.run_ticks(30);
        assert_eq!(cluster.leader(), Some(1));
        assert_eq!(cluster.raft(1).term(), term);
        assert_eq!(cluster.raft(3).leader(), Some(1));
    }

    /// Why PreVote exists: without it, the same partition deposes the leader on healing.
    #[test]
    fn without_prevote_a_rejoining_node_disrupts_the_leader() {
        let mut cluster = Cluster::with_config(3, 1, plain_config);
        cluster.elect(1);
        let term = cluster.raft(1).term();
        cluster.isolate(3);
        cluster.run_ticks(100);
        assert!(cluster.raft(3).term() > term + 3, "its term kept rising");
        cluster.heal();
        cluster.run_ticks(1);
        assert!(
            cluster.raft(1).term() > term,
            "the leader was forced into a new term"
        );
    }

    #[test]
    fn leader_without_a_quorum_steps_down() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.isolate(1);
        cluster.run_ticks(20);
        assert_ne!(
            cluster.raft(1).role(),
            Role::Leader,
            "CheckQuorum deposes an isolated leader"
        );
    }

    #[test]
    fn follower_hearing_from_its_leader_ignores_vote_requests() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        let term = cluster.raft(2).term();
        cluster
            .raft_mut(2)
            .step(message(3, 2, term + 1, vote_request(100, term)))
            .unwrap();
        assert_eq!(
            cluster.raft(2).term(),
            term,
            "within the leader lease, the term holds"
        );
        cluster.process_ready(2);
        assert_eq!(
            cluster.take_messages(|m| m.from == 2).len(),
            0,
            "and no answer is sent"
        );
    }
}

mod s6_4_read_index {
    use super::*;

    fn read_states(cluster: &Cluster, id: NodeId) -> Vec<ReadState> {
        cluster.node(id).read_states.clone()
    }

    #[test]
    fn new_leader_answers_reads_only_after_committing_an_entry_of_its_term() {
        let mut cluster = Cluster::new(3, 1);
        cluster.raft_mut(1).campaign();
        // Win the election, but hold back the appends of the new leader's first entry.
        for _ in 0..10 {
            cluster.process_all_ready();
            let messages = cluster.take_messages(|m| !matches!(m.body, MessageBody::Append(_)));
            for m in messages {
                cluster.deliver(m);
            }
        }
        assert_eq!(cluster.raft(1).role(), Role::Leader);
        cluster.read_index(1, 7).unwrap();
        cluster.process_ready(1);
        assert!(read_states(&cluster, 1).is_empty());
        cluster.run_ticks(2);
        let reads = read_states(&cluster, 1);
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].request_id, 7);
        assert!(
            reads[0].read_index >= 2,
            "covers the new leader's first entry"
        );
    }

    #[test]
    fn read_is_answered_only_after_a_quorum_confirms_leadership() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.cut_link(2, 1);
        cluster.cut_link(3, 1);
        cluster.read_index(1, 1).unwrap();
        cluster.run_ticks(3);
        assert!(read_states(&cluster, 1).is_empty(), "no quorum answered");
        cluster.heal();
        cluster.run_ticks(1);
        assert_eq!(read_states(&cluster, 1).len(), 1);
    }

    #[test]
    fn deposed_leader_in_a_minority_serves_no_reads() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.isolate(1);
        // Node 1 still believes it leads when the read arrives.
        cluster.read_index(1, 9).unwrap();
        cluster.run_ticks(40);
        let leader = cluster.leader().expect("the majority elects a new leader");
        assert_ne!(leader, 1);
        cluster.propose(leader, "new").unwrap();
        cluster.stabilize();
        cluster.heal();
        cluster.run_ticks(5);
        assert!(
            read_states(&cluster, 1).is_empty(),
            "the old leader never confirmed the read"
        );
        check(&mut cluster);
    }

    #[test]
    fn many_reads_share_one_heartbeat_round() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        for request_id in 0..100 {
            cluster.read_index(1, request_id).unwrap();
        }
        cluster.process_ready(1);
        assert_eq!(
            cluster.count_in_flight("Heartbeat"),
            2,
            "one heartbeat per follower"
        );
        cluster.stabilize();
        assert_eq!(read_states(&cluster, 1).len(), 100);
    }

    #[test]
    fn stray_read_index_answers_are_ignored() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        let term = cluster.raft(1).term();
        let answer = |from, request_id| {
            message(
                from,
                2,
                term,
                MessageBody::ReadIndexResponse(ReadIndexResponse {
                    request_id,
                    read_index: 1,
                }),
            )
        };
        cluster.deliver(answer(1, 40));
        cluster.process_ready(2);
        assert!(read_states(&cluster, 2).is_empty(), "never asked: ignored");
        cluster.raft_mut(2).read_index(41).unwrap();
        cluster.take_messages(|m| matches!(m.body, MessageBody::ReadIndex(_)));
        cluster.deliver(answer(3, 41));
        cluster.process_ready(2);
        assert!(
            read_states(&cluster, 2).is_empty(),
            "answered by a non-leader: ignored"
        );
        cluster.deliver(answer(1, 41));
        cluster.process_ready(2);
        assert_eq!(
            read_states(&cluster, 2).len(),
            1,
            "the leader's answer is taken"
        );
    }

    #[test]
    fn follower_read_is_forwarded_to_the_leader() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.propose(1, "x").unwrap();
        cluster.stabilize();
        let commit = cluster.raft(1).commit_index();
        cluster.read_index(2, 5).unwrap();
        cluster.stabilize();
        assert_eq!(
            read_states(&cluster, 2),
            vec![ReadState {
                request_id: 5,
                read_index: commit
            }]
        );
    }
}

fn change(kind: ConfChangeKind, node_id: NodeId) -> ConfChange {
    ConfChange {
        kind,
        node_id,
        context: Bytes::new(),
    }
}

fn applied_payloads(cluster: &Cluster, id: NodeId) -> usize {
    cluster.node(id).state_machine.payloads.len()
}

mod s6_cluster_membership_changes {
    use super::*;

    /// Adds empty node 4 as a learner through the leader, node 1.
    fn with_learner_4() -> Cluster {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.propose(1, "before").unwrap();
        cluster.add_empty_node(4);
        cluster
            .raft_mut(1)
            .propose_conf_change(change(ConfChangeKind::AddLearner, 4))
            .unwrap();
        cluster.stabilize();
        cluster.run_ticks(2);
        cluster
    }

    #[test]
    fn joining_node_learns_the_membership_from_a_snapshot() {
        let cluster = with_learner_4();
        let learner = cluster.raft(4).status();
        assert!(
            learner.snapshot_index >= 1,
            "an empty node starts from the leader's snapshot"
        );
        assert_eq!(learner.conf_state.voters, [1, 2, 3].into());
        assert_eq!(learner.conf_state.learners, [4].into());
        cluster.check_converged().unwrap();
    }

    #[test]
    fn learner_receives_the_log_but_neither_votes_nor_counts() {
        let mut cluster = with_learner_4();
        cluster.isolate(4);
        let Proposed::Appended { index, .. } = cluster.propose(1, "x").unwrap() else {
            panic!()
        };
        cluster.stabilize();
        assert!(
            cluster.raft(1).commit_index() >= index,
            "two of three voters suffice"
        );
        cluster.heal();
        cluster.partition(&[1, 4], &[2, 3]);
        let Proposed::Appended { index, .. } = cluster.propose(1, "y").unwrap() else {
            panic!()
        };
        cluster.stabilize();
        assert!(
            cluster.raft(1).commit_index() < index,
            "a learner's copy does not count"
        );
        cluster.heal();
        cluster.isolate(4);
        cluster.run_ticks(100);
        assert_eq!(
            cluster.raft(4).role(),
            Role::Follower,
            "a learner never campaigns"
        );
        check(&mut cluster);
    }

    #[test]
    fn promoted_learner_counts_toward_the_quorum() {
        let mut cluster = with_learner_4();
        cluster
            .raft_mut(1)
            .propose_conf_change(change(ConfChangeKind::PromoteLearner, 4))
            .unwrap();
        cluster.stabilize();
        assert_eq!(
            cluster.agreed_conf_state().unwrap().voters,
            [1, 2, 3, 4].into()
        );
        cluster.partition(&[1, 2], &[3, 4]);
        let Proposed::Appended { index, .. } = cluster.propose(1, "x").unwrap() else {
            panic!()
        };
        cluster.stabilize();
        assert!(
            cluster.raft(1).commit_index() < index,
            "two of four voters are not a quorum"
        );
        cluster.heal();
        cluster.run_ticks(2);
        assert!(cluster.raft(1).commit_index() >= index);
        check(&mut cluster);
    }

    #[test]
    fn removed_voter_no_longer_counts() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster
            .raft_mut(1)
            .propose_conf_change(change(ConfChangeKind::RemoveNode, 3))
            .unwrap();
        cluster.stabilize();
        assert_eq!(cluster.raft(1).conf_state().voters, [1, 2].into());
        cluster.crash(3);
        cluster.propose(1, "x").unwrap();
        cluster.stabilize();
        assert_eq!(cluster.raft(1).commit_index(), cluster.raft(1).last_index());
        check(&mut cluster);
    }

    #[test]
    fn only_one_membership_change_at_a_time() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        let leader = cluster.raft_mut(1);
        leader
            .propose_conf_change(change(ConfChangeKind::AddLearner, 4))
            .unwrap();
        assert!(matches!(
            leader.propose_conf_change(change(ConfChangeKind::AddLearner, 5)),
            Err(ProposeError::ConfChangePending { .. })
        ));
        cluster.stabilize();
        cluster
            .raft_mut(1)
            .propose_conf_change(change(ConfChangeKind::AddLearner, 5))
            .expect("allowed once the first change is applied");
    }

    #[test]
    fn new_leader_proposes_no_change_until_its_first_entry_is_applied() {
        let mut cluster = Cluster::new(3, 1);
        cluster.raft_mut(1).campaign();
        for _ in 0..10 {
            cluster.process_all_ready();
            for m in cluster.take_messages(|m| !matches!(m.body, MessageBody::Append(_))) {
                cluster.deliver(m);
            }
        }
        assert_eq!(cluster.raft(1).role(), Role::Leader);
        assert!(matches!(
            cluster
                .raft_mut(1)
                .propose_conf_change(change(ConfChangeKind::AddLearner, 4)),
            Err(ProposeError::ConfChangePending { .. })
        ));
    }

    #[test]
    fn leader_that_removes_itself_steps_down() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster
            .raft_mut(1)
            .propose_conf_change(change(ConfChangeKind::RemoveNode, 1))
            .unwrap();
        cluster.stabilize();
        // It hands over first: one heartbeat round confirms the others know.
        cluster.run_ticks(2);
        assert_ne!(cluster.raft(1).role(), Role::Leader);
        let leader = cluster
            .wait_for_leader(50)
            .expect("the remaining voters elect a leader");
        assert_ne!(leader, 1);
        cluster.propose(leader, "after").unwrap();
        cluster.stabilize();
        assert_eq!(
            cluster.raft(leader).commit_index(),
            cluster.raft(leader).last_index()
        );
        check(&mut cluster);
    }

    /// Voters {1, 2}, leader 1 removes itself: node 2 stores the entry, node 1 commits and
    /// applies it, and the message telling node 2 of the commit is lost.
    fn leader_of_two_applies_its_removal_and_the_commit_is_lost() -> Cluster {
        let mut cluster = Cluster::new(2, 3);
        cluster.elect(1);
        cluster
            .raft_mut(1)
            .propose_conf_change(change(ConfChangeKind::RemoveNode, 1))
            .unwrap();
        cluster.process_ready(1);
        while cluster.in_flight() > 0 {
            cluster.deliver_one();
            cluster.process_ready(2);
        }
        cluster.process_ready(1);
        cluster.take_messages(|m| m.from == 1);
        cluster
    }

    /// etcd issue 10563: removing the leader of two voters. The leader keeps leading until
    /// the survivor has confirmed it knows the removal is committed.
    #[test]
    fn leader_removed_from_two_voters_hands_over_before_stepping_down() {
        let mut cluster = leader_of_two_applies_its_removal_and_the_commit_is_lost();
        assert_eq!(
            cluster.raft(1).role(),
            Role::Leader,
            "it must not step down yet"
        );
        cluster.run_ticks(3);
        assert_ne!(cluster.raft(1).role(), Role::Leader, "handed over");
        assert_eq!(cluster.raft(2).conf_state().voters, [2].into());
        cluster.crash(1);
        assert_eq!(cluster.wait_for_leader(50), Some(2));
        check(&mut cluster);
    }

    /// The same, but the removed leader crashes and restarts before handing over: it is no
    /// longer a member, yet it must campaign, since only it can get the removal committed.
    #[test]
    fn removed_voter_campaigns_until_the_survivors_know_of_its_removal() {
        let mut cluster = leader_of_two_applies_its_removal_and_the_commit_is_lost();
        cluster.crash(1);
        cluster.restart(1);
        cluster.run_ticks(100);
        assert_eq!(cluster.raft(2).conf_state().voters, [2].into());
        assert_eq!(cluster.leader(), Some(2));
        check(&mut cluster);
    }

    #[test]
    fn nonsensical_changes_are_refused() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        for bad in [
            change(ConfChangeKind::AddVoter, 2),
            change(ConfChangeKind::PromoteLearner, 2),
            change(ConfChangeKind::RemoveNode, 9),
            change(ConfChangeKind::AddLearner, 3),
        ] {
            assert!(
                matches!(
                    cluster.raft_mut(1).propose_conf_change(bad.clone()),
                    Err(ProposeError::InvalidConfChange { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn follower_forwards_a_change_to_the_leader() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.add_empty_node(4);
        let proposed = cluster
            .raft_mut(2)
            .propose_conf_change(change(ConfChangeKind::AddLearner, 4))
            .unwrap();
        assert_eq!(proposed, Proposed::Forwarded { to: 1 });
        cluster.stabilize();
        assert_eq!(cluster.agreed_conf_state().unwrap().learners, [4].into());
    }
}

mod s7_log_compaction {
    use super::*;

    fn lagging_node_3() -> Cluster {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.isolate(3);
        for i in 0..20 {
            cluster.propose(1, format!("e{i}")).unwrap();
        }
        cluster.stabilize();
        cluster.compact(1, 0);
        cluster.compact(2, 0);
        cluster
    }

    #[test]
    fn lagging_follower_catches_up_from_a_snapshot() {
        let mut cluster = lagging_node_3();
        let snapshot_index = cluster.raft(1).status().snapshot_index;
        assert!(snapshot_index > 20);
        cluster.heal();
        cluster.run_ticks(3);
        assert_eq!(cluster.raft(3).status().snapshot_index, snapshot_index);
        assert_eq!(applied_payloads(&cluster, 3), 20);
        cluster.check_converged().unwrap();
        check(&mut cluster);
    }

    /// Delivers everything until quiet, except snapshots to `to`, which a slow transport
    /// is still streaming; returns how many such snapshots the leader sent.
    fn stabilize_holding_snapshots_to(cluster: &mut Cluster, to: NodeId) -> usize {
        let mut held = 0;
        loop {
            cluster.process_all_ready();
            held += cluster
                .take_messages(|m| m.to == to && matches!(m.body, MessageBody::InstallSnapshot(_)))
                .len();
            if !cluster.deliver_one() {
                return held;
            }
        }
    }

    #[test]
    fn a_snapshot_still_streaming_is_not_sent_again_while_its_transport_reports_progress() {
        let retry_ticks = default_config(1, 0).snapshot_retry_ticks;
        for reporting in [false, true] {
            let mut cluster = lagging_node_3();
            cluster.heal();
            let mut sent = 0;
            for tick in 0..retry_ticks * 3 {
                cluster.tick_all();
                sent += stabilize_holding_snapshots_to(&mut cluster, 3);
                if reporting && tick % 10 == 0 {
                    cluster.raft_mut(1).report_snapshot_progress(3);
                }
            }
            if reporting {
                assert_eq!(sent, 1, "one snapshot, waited for");
                let state = cluster.raft(1).status().progress[&3].state;
                assert!(
                    matches!(state, ReplicationState::Snapshot { .. }),
                    "{state:?}"
                );
            } else {
                assert!(
                    sent >= 2,
                    "without progress, the leader gives up and sends again"
                );
            }
        }
    }

    #[test]
    fn duplicate_and_stale_snapshots_change_nothing() {
        let mut cluster = lagging_node_3();
        cluster.heal();
        cluster.tick(1);
        cluster.process_ready(1);
        for _ in 0..20 {
            cluster.deliver_one();
            cluster.process_all_ready();
            if cluster.count_in_flight("InstallSnapshot") > 0 {
                break;
            }
        }
        let snapshots =
            cluster.take_messages(|m| matches!(m.body, MessageBody::InstallSnapshot(_)));
        assert_eq!(snapshots.len(), 1, "the leader sent one snapshot");
        let snapshot = snapshots[0].clone();
        cluster.deliver(snapshot.clone());
        cluster.process_ready(3);
        cluster.deliver(snapshot.clone());
        let MessageBody::InstallSnapshot(mut stale) = snapshot.body.clone() else {
            unreachable!()
        };
        stale.meta.index = 1;
        stale.meta.term = 1;
        cluster.deliver(Message {
            body: MessageBody::InstallSnapshot(stale),
            ..snapshot
        });
        cluster.stabilize();
        cluster.run_ticks(2);
        cluster.check_converged().unwrap();
        check(&mut cluster);
    }

    #[test]
    fn restarted_follower_starts_from_its_snapshot() {
        let mut cluster = lagging_node_3();
        cluster.heal();
        cluster.run_ticks(3);
        cluster.crash(3);
        cluster.restart(3);
        cluster.run_ticks(2);
        assert_eq!(applied_payloads(&cluster, 3), 20);
        cluster.check_converged().unwrap();
    }

    #[test]
    fn the_catch_up_floor_follows_a_member_from_its_snapshot_until_it_caught_up() {
        let mut cluster = lagging_node_3();
        assert_eq!(
            cluster.raft(1).catch_up_floor(),
            None,
            "3 is not heard from"
        );
        cluster.heal();
        cluster.tick_all();
        let mut held = Vec::new();
        loop {
            cluster.process_all_ready();
            held.extend(
                cluster.take_messages(|m| {
                    m.to == 3 && matches!(m.body, MessageBody::InstallSnapshot(_))
                }),
            );
            if !cluster.deliver_one() {
                break;
            }
        }
        assert!(!held.is_empty(), "the leader sent 3 a snapshot");
        let state = cluster.raft(1).status().progress[&3].state;
        let ReplicationState::Snapshot { pending_index } = state else {
            panic!("3 waits for a snapshot: {state:?}");
        };
        assert_eq!(cluster.raft(1).catch_up_floor(), Some(pending_index + 1));
        assert_eq!(
            cluster.raft(2).catch_up_floor(),
            None,
            "a follower has none"
        );
        for snapshot in held {
            cluster.deliver(snapshot);
        }
        cluster.run_ticks(3);
        assert_eq!(
            cluster.raft(1).status().progress[&3].match_index,
            cluster.raft(1).status().last_index
        );
        assert_eq!(cluster.raft(1).catch_up_floor(), None, "3 caught up");
    }

    #[test]
    fn compaction_keeps_the_entries_asked_to_retain() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        for i in 0..20 {
            cluster.propose(1, format!("e{i}")).unwrap();
        }
        cluster.stabilize();
        cluster.compact(1, 5);
        let status = cluster.raft(1).status();
        assert_eq!(status.first_index, status.snapshot_index - 5 + 1);
    }
}

mod s3_10_leadership_transfer {
    use super::*;

    #[test]
    fn transfer_to_an_up_to_date_follower_despite_leader_leases() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        let term = cluster.raft(1).term();
        cluster.raft_mut(1).transfer_leader(2).unwrap();
        cluster.stabilize();
        assert_eq!(cluster.leader(), Some(2));
        assert_eq!(cluster.raft(2).term(), term + 1);
        check(&mut cluster);
    }

    #[test]
    fn transfer_waits_for_the_target_to_catch_up() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.isolate(3);
        for i in 0..5 {
            cluster.propose(1, format!("e{i}")).unwrap();
        }
        cluster.stabilize();
        cluster.heal();
        cluster.raft_mut(1).transfer_leader(3).unwrap();
        cluster.stabilize();
        assert_eq!(cluster.leader(), Some(3));
        assert_eq!(applied_payloads(&cluster, 3), 5);
        check(&mut cluster);
    }

    #[test]
    fn proposals_are_refused_during_a_transfer_until_it_is_abandoned() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.cut_link(1, 3);
        cluster.raft_mut(1).transfer_leader(3).unwrap();
        assert_eq!(
            cluster.propose(1, "x"),
            Err(ProposeError::LeaderTransferInProgress { to: 3 })
        );
        cluster.run_ticks(10);
        assert_eq!(
            cluster.raft(1).transfer_target(),
            None,
            "abandoned after an election timeout"
        );
        assert!(cluster.propose(1, "x").is_ok());
    }

    #[test]
    fn a_lost_timeout_now_is_sent_again() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.raft_mut(1).transfer_leader(2).unwrap();
        cluster.process_ready(1);
        let lost = cluster.take_messages(|m| matches!(m.body, MessageBody::TimeoutNow));
        assert_eq!(lost.len(), 1);
        cluster.run_ticks(2);
        assert_eq!(
            cluster.leader(),
            Some(2),
            "a heartbeat answer brought a second TimeoutNow"
        );
    }

    #[test]
    fn repeated_transfers_do_not_keep_a_cut_off_leader_alive() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        cluster.isolate(1);
        for i in 0..30 {
            let target = if i % 2 == 0 { 2 } else { 3 };
            let _ = cluster.raft_mut(1).transfer_leader(target);
            cluster.run_ticks(1);
        }
        assert_ne!(
            cluster.raft(1).role(),
            Role::Leader,
            "CheckQuorum still deposes it"
        );
    }

    #[test]
    fn transfer_to_a_non_voter_is_refused() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        assert_eq!(
            cluster.raft_mut(1).transfer_leader(9),
            Err(TransferError::NotVoter { to: 9 })
        );
        assert_eq!(
            cluster.raft_mut(2).transfer_leader(3),
            Err(TransferError::NotLeader)
        );
    }
}

mod peer_input_validation {
    use super::*;

    fn append(prev: (Index, Term), entries: &[(Index, Term)], commit_index: Index) -> MessageBody {
        MessageBody::Append(Append {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries: entries
                .iter()
                .map(|&(index, term)| Entry {
                    index,
                    term,
                    payload: EntryPayload::Empty,
                })
                .collect(),
            commit_index,
        })
    }

    #[test]
    fn malformed_messages_are_refused_and_change_nothing() {
        let mut raft = plain_raft(1, &[1, 2, 3], &[2, 2], 3);
        drain(&mut raft);
        let before = raft.status();
        let mut snapshot_without_voters = Snapshot::default();
        snapshot_without_voters.meta.index = 9;
        snapshot_without_voters.meta.term = 3;
        let bad = [
            message(0, 1, 3, append((3, 2), &[], 3)),
            message(2, 9, 3, append((3, 2), &[], 3)),
            message(1, 1, 3, append((3, 2), &[], 3)),
            message(2, 1, 3, append((3, 2), &[(4, 3), (6, 3)], 3)),
            message(2, 1, 3, append((3, 2), &[(4, 4)], 3)),
            message(2, 1, 3, append((3, 4), &[], 3)),
            message(2, 1, 3, append((u64::MAX, 2), &[(0, 3)], 3)),
            message(
                2,
                1,
                3,
                MessageBody::InstallSnapshot(snapshot_without_voters),
            ),
            message(2, 1, 3, MessageBody::InstallSnapshot(Snapshot::default())),
            message(
                2,
                1,
                3,
                MessageBody::AppendResponse(AppendResponse::Rejected {
                    rejected_index: 2,
                    hint_index: 5,
                    hint_term: 1,
                }),
            ),
        ];
        for m in bad {
            let kind = m.body.kind_name();
            assert!(raft.step(m).is_err(), "a malformed {kind} was accepted");
        }
        assert_eq!(raft.status(), before);
        assert!(!raft.has_ready(), "nothing to persist or send");
    }

    #[test]
    fn terms_and_indexes_beyond_any_real_log_are_refused() {
        let huge = u64::MAX;
        let mut raft = plain_raft(1, &[1, 2, 3], &[], 1);
        let before = raft.status();
        let mut snapshot = Snapshot::default();
        snapshot.meta.index = huge;
        snapshot.meta.term = 1;
        snapshot.meta.conf_state = ConfState::with_voters([1, 2, 3]);
        let hostile = [
            message(
                2,
                1,
                1,
                MessageBody::AppendResponse(AppendResponse::Rejected {
                    rejected_index: huge,
                    hint_index: huge,
                    hint_term: 1,
                }),
            ),
            message(2, 1, 1, MessageBody::InstallSnapshot(snapshot)),
            message(
                3,
                1,
                huge,
                MessageBody::HeartbeatResponse(HeartbeatResponse { read_round: 0 }),
            ),
            message(2, 1, MAX_TERM_OR_INDEX + 1, vote_request(1, 1)),
        ];
        for m in hostile {
            let kind = m.body.kind_name();
            assert!(raft.step(m).is_err(), "a hostile {kind} was accepted");
        }
        assert_eq!(raft.status(), before);
        raft.campaign();
        assert_eq!(
            raft.term(),
            2,
            "the term was never raised by a hostile message"
        );
    }

    #[test]
    fn oversized_proposal_batch_is_refused() {
        let mut config = plain_config(1, 1);
        config.message_limits.max_payloads_per_proposal = 2;
        let storage = MemStorage::with_log(&[1, 2, 3], &[], 1);
        let mut raft = Raft::new(config, storage.initial_state()).unwrap();
        let propose = MessageBody::Propose(Propose {
            payloads: vec![EntryPayload::Empty; 3],
        });
        assert!(matches!(
            raft.step(message(2, 1, 0, propose)),
            Err(MessageError::TooLarge { .. })
        ));
    }

    #[test]
    fn leader_refuses_an_acknowledgement_beyond_its_log() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        let leader = cluster.raft_mut(1);
        let before = leader.status();
        let ack = MessageBody::AppendResponse(AppendResponse::Accepted {
            match_index: before.last_index + 10,
        });
        let term = leader.term();
        assert!(matches!(
            leader.step(message(2, 1, term, ack)),
            Err(MessageError::IndexOutOfRange { .. })
        ));
        assert_eq!(leader.status(), before);
    }

    #[test]
    fn append_reaching_below_the_commit_index_cannot_remove_committed_entries() {
        let mut storage = MemStorage::with_log(&[1, 2, 3], &[2, 2], 3);
        storage.hard_state.commit_index = 3;
        let mut raft = Raft::new(plain_config(1, 1), storage.initial_state()).unwrap();
        drain(&mut raft);
        let conflicting = append((1, 1), &[(2, 3)], 3);
        raft.step(message(2, 1, 3, conflicting)).unwrap();
        assert_eq!(raft.log_term(2), Some(2), "the committed entry stays");
        assert_eq!(raft.last_index(), 3);
        let answer = drain(&mut raft).into_iter().find_map(|m| match m.body {
            MessageBody::AppendResponse(r) => Some(r),
            _ => None,
        });
        assert_eq!(
            answer,
            Some(AppendResponse::Accepted { match_index: 3 }),
            "the leader is told where the committed log ends"
        );
    }

    #[test]
    fn a_second_leader_in_the_same_term_is_refused() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        let term = cluster.raft(1).term();
        let heartbeat = MessageBody::Heartbeat(Heartbeat {
            commit_index: 0,
            read_round: 0,
            acknowledged_index: 0,
        });
        assert!(cluster
            .raft_mut(1)
            .step(message(2, 1, term, heartbeat))
            .is_err());
        assert_eq!(cluster.raft(1).role(), Role::Leader);
    }
}

mod restart_and_durability {
    use super::*;

    #[test]
    fn committed_entries_survive_a_crash_of_every_node() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        for i in 0..10 {
            cluster.propose(1, format!("e{i}")).unwrap();
        }
        cluster.stabilize();
        for id in [1, 2, 3] {
            cluster.crash(id);
        }
        for id in [1, 2, 3] {
            cluster.restart(id);
        }
        let leader = cluster.wait_for_leader(50).unwrap();
        cluster.propose(leader, "after").unwrap();
        cluster.stabilize();
        cluster.run_ticks(2);
        for id in [1, 2, 3] {
            assert_eq!(applied_payloads(&cluster, id), 11, "node {id}");
        }
        cluster.check_converged().unwrap();
        check(&mut cluster);
    }

    #[test]
    fn restart_keeps_term_and_vote() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(2);
        let hard_state = cluster.raft(3).hard_state();
        cluster.crash(3);
        cluster.restart(3);
        assert_eq!(cluster.raft(3).hard_state().term, hard_state.term);
        assert_eq!(cluster.raft(3).hard_state().vote, hard_state.vote);
    }
}

mod proposals_and_reads {
    use super::*;

    #[test]
    fn follower_forwards_proposals_to_the_leader() {
        let mut cluster = Cluster::new(3, 1);
        cluster.elect(1);
        assert_eq!(
            cluster.propose(2, "via 2"),
            Ok(Proposed::Forwarded { to: 1 })
        );
        assert_eq!(
            cluster.propose(3, "via 3"),
            Ok(Proposed::Forwarded { to: 1 })
        );
        cluster.stabilize();
        for id in [1, 2, 3] {
            assert_eq!(applied_payloads(&cluster, id), 2);
        }
    }

    #[test]
    fn forwarded_proposals_travel_in_batches_the_leader_accepts() {
        let mut cluster = Cluster::with_config(3, 1, |id, seed| {
            let mut config = default_config(id, seed);
            config.message_limits.max_payloads_per_proposal = 10;
            config
        });
        cluster.elect(1);
        for i in 0..35u32 {
            cluster.propose(2, i.to_be_bytes().to_vec()).unwrap();
        }
        for i in 35..40u32 {
            assert!(matches!(
                cluster.propose(2, i.to_be_bytes().to_vec()),
                Err(ProposeError::ForwardQueueFull { limit: 40 }) | Ok(_)
            ));
        }
        assert_eq!(
            cluster.propose(2, "one too many"),
            Err(ProposeError::ForwardQueueFull { limit: 40 })
        );
        cluster.stabilize();
        assert_eq!(
            applied_payloads(&cluster, 1),
            40,
            "every batch was accepted"
        );
    }

    #[test]
    fn without_a_known_leader_proposals_and_reads_are_refused() {
        let mut cluster = Cluster::new(3, 1);
        assert_eq!(
            cluster.propose(1, "x"),
            Err(ProposeError::NotLeader { leader_hint: None })
        );
        assert_eq!(cluster.read_index(1, 1), Err(ReadIndexError::NoLeader));
    }

    #[test]
    fn with_forwarding_off_a_follower_names_the_leader() {
        let mut cluster = Cluster::with_config(3, 1, |id, seed| {
            let mut config = default_config(id, seed);
            config.forward_proposals = false;
            config
        });
        cluster.elect(1);
        assert_eq!(
            cluster.propose(2, "x"),
            Err(ProposeError::NotLeader {
                leader_hint: Some(1)
            })
        );
    }

    #[test]
    fn uncommitted_bytes_are_bounded() {
        let mut cluster = Cluster::with_config(3, 1, |id, seed| {
            let mut config = plain_config(id, seed);
            config.max_uncommitted_bytes = 1000;
            config
        });
        cluster.elect(1);
        cluster.isolate(1);
        let mut accepted = 0;
        let refused = loop {
            match cluster.propose(1, vec![0u8; 100]) {
                Ok(_) => accepted += 1,
                Err(error) => break error,
            }
        };
        assert!(matches!(refused, ProposeError::UncommittedLimit { .. }));
        assert!((7..=8).contains(&accepted), "accepted {accepted}");
        cluster.heal();
        cluster.stabilize();
        assert!(
            cluster.propose(1, vec![0u8; 100]).is_ok(),
            "room again once committed"
        );
    }

    #[test]
    fn pending_reads_are_bounded() {
        let mut cluster = Cluster::with_config(3, 1, |id, seed| {
            let mut config = default_config(id, seed);
            config.max_pending_reads = 4;
            config
        });
        cluster.elect(1);
        cluster.isolate(1);
        for request_id in 0..4 {
            cluster.read_index(1, request_id).unwrap();
        }
        assert!(matches!(
            cluster.read_index(1, 4),
            Err(ReadIndexError::TooManyPending { .. })
        ));
    }
}

/// The `Ready` contract's persistence rules, where a crash between sending and persisting
/// would otherwise break safety.
mod ready_contract {
    use super::*;

    /// A lone voter wins without a vote round trip. If its appends left before its new term
    /// was on disk and it crashed, it could win the same term again and give the same
    /// (index, term) to a different entry.
    #[test]
    fn messages_of_a_new_term_wait_until_the_term_is_persisted() {
        let mut cluster = Cluster::new(1, 7);
        cluster.elect(1);
        cluster.add_empty_node(2);
        cluster
            .raft_mut(1)
            .propose_conf_change(change(ConfChangeKind::AddLearner, 2))
            .unwrap();
        cluster.stabilize();
        cluster.run_ticks(3);
        // A later synced write puts the learner's commit on disk too.
        cluster.propose(1, "base").unwrap();
        cluster.stabilize();
        cluster.crash(1);
        cluster.restart(1);
        cluster.process_ready(1);
        cluster.raft_mut(1).campaign();
        assert_eq!(cluster.raft(1).role(), Role::Leader);
        cluster
            .raft_mut(1)
            .propose(Bytes::from_static(b"A"))
            .unwrap();
        let ready = cluster.raft_mut(1).ready().unwrap();
        assert!(
            ready.hard_state.is_some(),
            "the new term is not on disk yet"
        );
        assert!(
            ready.messages.is_empty(),
            "so nothing may leave before the persist"
        );
        assert!(ready
            .persisted_messages
            .iter()
            .any(|m| matches!(&m.body, MessageBody::Append(a) if !a.entries.is_empty())));
        // Crash right there, win the same term again, propose something else.
        cluster.crash(1);
        cluster.restart(1);
        cluster.process_ready(1);
        cluster.raft_mut(1).campaign();
        cluster
            .raft_mut(1)
            .propose(Bytes::from_static(b"B"))
            .unwrap();
        cluster.stabilize();
        cluster.run_ticks(3);
        check(&mut cluster);
        cluster.check_converged().unwrap();
    }
}

mod applied_state_survives_crashes {
    use super::*;

    /// A follower that learns a commit index from a heartbeat, with no new entries, applies
    /// the entries it covers without a sync: the commit index is written and rides on the
    /// next sync. (A restarted node may so start behind what it applied; `Node` fences its
    /// reads until it has caught up, see core/tests/node.rs.)
    #[test]
    fn a_commit_index_learned_alone_is_applied_without_a_sync() {
        let mut raft = plain_raft(1, &[1, 2, 3], &[2, 2], 2);
        drain(&mut raft);
        let heartbeat = |commit_index| {
            message(
                2,
                1,
                2,
                MessageBody::Heartbeat(Heartbeat {
                    commit_index,
                    read_round: 0,
                    acknowledged_index: 0,
                }),
            )
        };
        raft.step(heartbeat(3)).unwrap();
        let ready = raft.ready().unwrap();
        assert!(ready.entries.is_empty(), "no new entries");
        assert_eq!(ready.committed_entries.len(), 2);
        assert_eq!(ready.hard_state.map(|h| h.commit_index), Some(3));
        assert!(!ready.must_sync(), "a commit index alone is not synced");
        raft.advance(&ready);
        assert_eq!(raft.applied_index(), 3);
    }
}

/// §5.2 and §5.4 assume a voter never forgets a vote or an entry it acknowledged. A member
/// whose data dir went back (wiped, an older copy, synced writes lost) breaks that; the
/// leader's match index for it is the evidence (see `raft::lost_state`).
mod lost_durable_state {
    use super::*;

    /// Node 3 acknowledged five entries, then comes back from a copy of its disk taken
    /// before them, while node 1 still leads.
    fn rolled_back_follower_3() -> Cluster {
        let mut cluster = Cluster::new(3, 11);
        cluster.elect(1);
        let old_disk = cluster.nodes[&3].storage.clone();
        for i in 0..5 {
            cluster.propose(1, format!("e{i}")).unwrap();
        }
        cluster.stabilize();
        cluster.crash(3);
        cluster.nodes.get_mut(&3).expect("node 3").storage = old_disk;
        cluster.restart(3);
        cluster
    }

    #[test]
    fn a_follower_learns_from_a_heartbeat_that_its_log_lost_acknowledged_entries() {
        let mut cluster = rolled_back_follower_3();
        cluster.run_ticks(2);
        let lost = cluster
            .raft(3)
            .lost_state()
            .expect("node 3 learns it lost state");
        assert_eq!(lost.leader, 1);
        assert!(
            lost.acknowledged_index > lost.last_index,
            "{lost}: the leader holds more than the log"
        );
    }

    #[test]
    fn a_member_that_lost_state_neither_votes_nor_acknowledges() {
        let mut cluster = rolled_back_follower_3();
        cluster.run_ticks(2);
        assert!(cluster.raft(3).lost_state().is_some());
        // Without node 3's vote, node 2 cannot win once the leader is gone.
        cluster.crash(1);
        cluster.raft_mut(2).campaign();
        cluster.stabilize();
        cluster.run_ticks(40);
        assert_ne!(cluster.raft(2).role(), Role::Leader);
        assert_ne!(cluster.raft(3).role(), Role::Leader);
        assert_eq!(cluster.raft(3).term(), cluster.raft(3).hard_state().term);
    }

    /// The leader must not answer each rejection with another Append at once: the follower
    /// can never accept one, and the exchange would run at network speed (measured before
    /// this rule: ~170 MB/s from a leader to a wiped member).
    #[test]
    fn the_leader_sends_a_member_that_lost_state_at_most_one_append_per_heartbeat() {
        let mut cluster = rolled_back_follower_3();
        // Keep node 3 from stopping itself: drop the heartbeats that would tell it.
        let mut appends_to_3 = 0;
        for i in 0..20 {
            cluster.propose(1, format!("more{i}")).unwrap();
            cluster.tick_all();
            for _ in 0..50 {
                cluster.process_all_ready();
                let heartbeats = cluster
                    .take_messages(|m| m.to == 3 && matches!(m.body, MessageBody::Heartbeat(_)));
                for heartbeat in heartbeats {
                    // The answer a node 3 that ignored the proof would give.
                    cluster.deliver(message(
                        3,
                        1,
                        heartbeat.term,
                        MessageBody::HeartbeatResponse(HeartbeatResponse { read_round: 0 }),
                    ));
                }
                appends_to_3 += cluster
                    .take_messages(|m| m.to == 3 && matches!(m.body, MessageBody::Append(_)))
                    .into_iter()
                    .map(|m| cluster.deliver(m))
                    .count();
                if !cluster.deliver_one() {
                    break;
                }
            }
        }
        assert!(
            appends_to_3 <= 2 * 20,
            "{appends_to_3} Appends to node 3 in 20 heartbeats"
        );
        assert!(cluster.raft(3).lost_state().is_none());
        let notices = cluster.raft_mut(1).take_notices();
        assert!(
            matches!(notices[..], [Notice::FollowerLostState { follower: 3, .. }]),
            "the leader reports it, once per term: {notices:?}"
        );
    }
}
