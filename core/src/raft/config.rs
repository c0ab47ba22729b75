//! Tunables of one Raft node. Every limit has a default that suits etcd-like workloads.

use super::entry::NodeId;
use super::error::ConfigError;
use super::message::MessageLimits;

#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; non-zero.
    pub id: NodeId,
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_ticks, 2 * election_ticks)` starts an election (§5.2).
    pub election_ticks: u32,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: u32,
    /// Run a pre-vote before raising the term (thesis §9.6), so a node that was partitioned
    /// away cannot depose a healthy leader when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down, and a
    /// follower that heard from a leader within the minimum election timeout ignores votes
    /// (thesis §6.2, §4.2.3).
    pub check_quorum: bool,
    /// Upper bound on the entry bytes in one Append message (at least one entry is always sent).
    pub max_append_bytes: usize,
    /// How many Append messages may be unacknowledged per follower while pipelining.
    pub max_inflight_appends: usize,
    /// Proposals are refused once this many bytes of entries are uncommitted.
    pub max_uncommitted_bytes: usize,
    /// Upper bound on the entry bytes handed to the application in one `Ready` (at least one
    /// entry is always handed out).
    pub max_committed_bytes_per_ready: usize,
    /// Followers forward proposals to the leader; when false they refuse with `NotLeader`.
    pub forward_proposals: bool,
    /// Read index requests waiting for leadership confirmation, per node.
    pub max_pending_reads: usize,
    /// A follower sent a snapshot that has not answered after this many ticks is probed again
    /// (the snapshot or its answer may have been lost).
    pub snapshot_retry_ticks: u32,
    /// Seeds the node's random election timeouts. The simulator derives it from its seed.
    pub seed: u64,
    /// Bounds enforced on peers' messages.
    pub message_limits: MessageLimits,
}

impl Config {
    /// Defaults for node `id`: a 100 ms tick gives etcd's 100 ms heartbeat and 1 s election.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            max_append_bytes: 1024 * 1024,
            max_inflight_appends: 256,
            max_uncommitted_bytes: 256 * 1024 * 1024,
            max_committed_bytes_per_ready: 16 * 1024 * 1024,
            forward_proposals: true,
            max_pending_reads: 64 * 1024,
            snapshot_retry_ticks: 50,
            seed: id,
            message_limits: MessageLimits {
                max_entries_per_message: 1 << 20,
                max_payloads_per_proposal: 1 << 16,
            },
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election_ticks: self.election_ticks,
                heartbeat_ticks: self.heartbeat_ticks,
            });
        }
        let limits = [
            ("max_append_bytes", self.max_append_bytes),
            ("max_inflight_appends", self.max_inflight_appends),
            ("max_uncommitted_bytes", self.max_uncommitted_bytes),
            (
                "max_committed_bytes_per_ready",
                self.max_committed_bytes_per_ready,
            ),
            ("max_pending_reads", self.max_pending_reads),
            ("snapshot_retry_ticks", self.snapshot_retry_ticks as usize),
            (
                "message_limits.max_entries_per_message",
                self.message_limits.max_entries_per_message,
            ),
            (
                "message_limits.max_payloads_per_proposal",
                self.message_limits.max_payloads_per_proposal,
            ),
        ];
        for (name, value) in limits {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { name });
            }
        }
        Ok(())
    }
}
