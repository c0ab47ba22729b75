//! etcd's corruption checks: members whose stores differ at the same revision are found and
//! stopped from taking writes, instead of serving diverged data while `/health` says ok.
//!
//! - `--experimental-initial-corrupt-check`: before serving clients, a member compares its
//!   `HashKV` at its revision with every peer's at that revision; a difference where both
//!   compacted to the same revision stops it ("found data inconsistency with peers").
//! - `--experimental-corrupt-check-time` (etcd 3.4) and `--experimental-compact-hash-check-*`
//!   (etcd 3.5): the leader compares, at intervals, the hashes of every member at its own
//!   current revision, and at its latest compaction's revision. A member whose hash differs
//!   from the majority's gets a CORRUPT alarm through the log (the leader itself too, when it
//!   is the odd one): every write is refused until an operator replaces that member and
//!   disarms the alarm (see the README's operations section).
//!
//! Hashes go over the peer port (see `crate::peer::query`), so they work with auth enabled.

use crate::server_loop::handle::Consistency;
use keel_core::node::query::{CompactRevision, HashKv, IsLeader, ProposeAlarm};
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use keel_core::mvcc::{AlarmAction, AlarmRequest, AlarmType, HashKvResponse};
use keel_core::raft::NodeId;
use tracing::{error, info, warn};

use crate::peer::frame::{Answer, Question};
use crate::peer::query::{self as peer_query, MembersView};
use crate::peer::transport::ClusterId;
use crate::server_loop::handle::NodeHandle;
use crate::tls::ClientTls;

/// How long a peer may take to answer with a hash.
const HASH_TIMEOUT: Duration = Duration::from_secs(5);
/// At start-up, where a peer that is itself starting may not answer at all.
const INITIAL_HASH_TIMEOUT: Duration = Duration::from_secs(2);

/// Which checks run (the flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CorruptionChecks {
    pub initial: bool,
    /// The leader compares hashes at its current revision this often.
    pub periodic: Option<Duration>,
    /// The leader compares hashes at its latest compaction's revision this often.
    pub compact_hash: Option<Duration>,
}

/// What the checks need of the member.
#[derive(Clone, Debug)]
pub struct Checker {
    pub node: NodeHandle,
    pub members: MembersView,
    pub member_id: NodeId,
    pub cluster_id: ClusterId,
    pub peer_tls: Option<ClientTls>,
}

/// One member's hash at a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hashed {
    hash: u32,
    revision: i64,
    compact_revision: i64,
}

impl From<HashKvResponse> for Hashed {
    fn from(hashed: HashKvResponse) -> Hashed {
        Hashed {
            hash: hashed.hash,
            revision: hashed.hash_revision,
            compact_revision: hashed.compact_revision,
        }
    }
}

impl Checker {
    /// This member's hash at `revision` (0: its current revision).
    async fn own_hash(&self, revision: i64) -> anyhow::Result<Hashed> {
        // Unfenced: a member restarted behind what it served hashes the revision it is at,
        // and its peers hash that same revision.
        let hashed = self
            .node
            .ask(Consistency::Unfenced, HashKv { revision })
            .await?
            .value?;
        Ok(Hashed::from(hashed))
    }

    /// Every other member's hash at `revision`; members that cannot say are left out, with
    /// a log line.
    async fn peer_hashes(&self, revision: i64, timeout: Duration) -> BTreeMap<NodeId, Hashed> {
        let members = self.members.get();
        let question = Question::HashKv {
            cluster_id: self.cluster_id.get(),
            revision,
        };
        let mut hashes = BTreeMap::new();
        for member in members.iter().filter(|m| m.id != self.member_id) {
            let mut said = None;
            for url in &member.peer_urls {
                match peer_query::ask(url, self.peer_tls.as_ref(), &question, timeout).await {
                    Ok(Answer::HashKv {
                        hash,
                        revision,
                        compact_revision,
                    }) => {
                        said = Some(Hashed {
                            hash,
                            revision,
                            compact_revision,
                        });
                        break;
                    }
                    Ok(other) => {
                        warn!(
                            peer = format!("{:x}", member.id),
                            ?other,
                            "no hash from peer"
                        )
                    }
                    Err(error) => {
                        warn!(peer = format!("{:x}", member.id), %error, "no hash from peer")
                    }
                }
            }
            if let Some(hashed) = said {
                hashes.insert(member.id, hashed);
            }
        }
        hashes
    }

    /// This member's hash at its revision once it has applied its own log (the start fence
    /// lifts then, see `keel_core::node`); without a leader to lift it, the hash of what it
    /// applied so far.
    async fn own_hash_caught_up(&self) -> anyhow::Result<Hashed> {
        match self
            .node
            .ask(Consistency::Serializable, HashKv { revision: 0 })
            .await
        {
            Ok(hashed) => Ok(Hashed::from(hashed.value?)),
            Err(error) => {
                warn!(%error, "initial corruption check: not caught up; hashing what is applied");
                self.own_hash(0).await
            }
        }
    }

    /// Before serving: this member's store against its peers' at its revision.
    pub async fn initial_check(&self) -> anyhow::Result<()> {
        let own = self.own_hash_caught_up().await?;
        let peers = self.peer_hashes(own.revision, INITIAL_HASH_TIMEOUT).await;
        let mut differing = Vec::new();
        for (id, peer) in &peers {
            if peer.hash == own.hash {
                continue;
            }
            if peer.compact_revision == own.compact_revision {
                differing.push(format!(
                    "{id:x} has hash {:#010x}, this member {:#010x}",
                    peer.hash, own.hash
                ));
            } else {
                warn!(
                    peer = format!("{id:x}"),
                    revision = own.revision,
                    "cannot compare hashes with a peer compacted to another revision"
                );
            }
        }
        if !differing.is_empty() {
            bail!(
                "member {:x} found data inconsistency with peers at revision {}: {}. Its data \
                 cannot be trusted: {}",
                self.member_id,
                own.revision,
                differing.join("; "),
                keel_storage::CORRUPTION_REMEDY
            );
        }
        info!(
            revision = own.revision,
            peers = peers.len(),
            "initial corruption check passed"
        );
        Ok(())
    }

    /// The leader's checks, forever (see the module docs).
    pub async fn run_periodic(self, checks: CorruptionChecks) {
        let period = [checks.periodic, checks.compact_hash]
            .into_iter()
            .flatten()
            .min();
        let Some(period) = period else {
            return;
        };
        let mut since_periodic = Duration::ZERO;
        let mut since_compact = Duration::ZERO;
        loop {
            tokio::time::sleep(period).await;
            since_periodic += period;
            since_compact += period;
            let is_leader = self.node.ask(Consistency::Unfenced, IsLeader).await;
            if !matches!(is_leader, Ok(true)) {
                continue;
            }
            if checks.periodic.is_some_and(|p| since_periodic >= p) {
                since_periodic = Duration::ZERO;
                self.compare_at(0).await;
            }
            if checks.compact_hash.is_some_and(|p| since_compact >= p) {
                since_compact = Duration::ZERO;
                let compacted = self.node.ask(Consistency::Unfenced, CompactRevision).await;
                match compacted {
                    Ok(revision) if revision > 0 => self.compare_at(revision).await,
                    _ => {}
                }
            }
        }
    }

    /// Compares every member's hash at `revision` (0: the leader's current one) and raises
    /// a CORRUPT alarm for each member off the majority.
    async fn compare_at(&self, revision: i64) {
        let Ok(own) = self.own_hash(revision).await else {
            return;
        };
        let mut hashes = self.peer_hashes(own.revision, HASH_TIMEOUT).await;
        hashes.retain(|_, h| h.compact_revision == own.compact_revision);
        hashes.insert(self.member_id, own);
        for id in odd_ones_out(&hashes, self.member_id) {
            error!(
                member = format!("{id:x}"),
                revision = own.revision,
                "found data inconsistency: the member's hash differs from the majority's; \
                 raising a CORRUPT alarm, which stops all writes until the member is replaced \
                 and the alarm disarmed"
            );
            self.raise_alarm(id).await;
        }
    }

    async fn raise_alarm(&self, member_id: NodeId) {
        let alarm = AlarmRequest {
            action: AlarmAction::Activate,
            member_id,
            alarm: AlarmType::Corrupt,
        };
        let proposed = self
            .node
            .ask(Consistency::Unfenced, ProposeAlarm { alarm })
            .await;
        if !matches!(proposed, Ok(Ok(()))) {
            warn!(
                ?proposed,
                "could not propose the CORRUPT alarm; will try again"
            );
        }
    }
}

/// Members whose hash differs from the one most members share (ties go to `leader`'s).
fn odd_ones_out(hashes: &BTreeMap<NodeId, Hashed>, leader: NodeId) -> Vec<NodeId> {
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for hashed in hashes.values() {
        *counts.entry(hashed.hash).or_default() += 1;
    }
    let leader_hash = hashes.get(&leader).map(|h| h.hash);
    let majority = counts
        .iter()
        .max_by_key(|(hash, count)| (**count, Some(**hash) == leader_hash))
        .map(|(hash, _)| *hash);
    hashes
        .iter()
        .filter(|(_, h)| Some(h.hash) != majority)
        .map(|(id, _)| *id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(list: &[(NodeId, u32)]) -> BTreeMap<NodeId, Hashed> {
        list.iter()
            .map(|&(id, hash)| {
                let hashed = Hashed {
                    hash,
                    revision: 9,
                    compact_revision: 3,
                };
                (id, hashed)
            })
            .collect()
    }

    #[test]
    fn the_member_off_the_majority_is_the_odd_one_out_the_leader_included() {
        assert!(odd_ones_out(&hashes(&[(1, 7), (2, 7), (3, 7)]), 1).is_empty());
        assert_eq!(odd_ones_out(&hashes(&[(1, 7), (2, 7), (3, 8)]), 1), [3]);
        assert_eq!(odd_ones_out(&hashes(&[(1, 8), (2, 7), (3, 7)]), 1), [1]);
        // Two members, two hashes: nobody can tell, the leader is believed.
        assert_eq!(odd_ones_out(&hashes(&[(1, 7), (2, 8)]), 1), [2]);
    }
}
