//! The cluster's members as etcd's Cluster API shows them: id, name, peer and client URLs,
//! learner or voter. Replicated: changed only by applied entries, part of every snapshot.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::raft::{ConfChange, ConfChangeKind, NodeId};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// Empty until the member starts and publishes it (as in etcd).
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// What a running member publishes about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttributes {
    pub id: NodeId,
    pub name: String,
    pub client_urls: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// Derived from the founding members; 0 until a joining node learns it.
    cluster_id: u64,
    members: BTreeMap<NodeId, Member>,
    /// Removed ids may never come back (etcd refuses to re-add a removed id).
    removed: BTreeSet<NodeId>,
}

impl Members {
    /// The founding members of a new cluster; the cluster id derives from their ids.
    pub fn new(members: impl IntoIterator<Item = Member>) -> Members {
        let members: BTreeMap<NodeId, Member> = members.into_iter().map(|m| (m.id, m)).collect();
        Members {
            cluster_id: cluster_id(members.keys().copied()),
            members,
            removed: BTreeSet::new(),
        }
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn is_removed(&self, id: NodeId) -> bool {
        self.removed.contains(&id)
    }

    /// Ids removed from the cluster, which may never come back.
    pub fn removed_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.removed.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Applies a committed membership change with its member record (`None` when the
    /// change carried none, e.g. a removal).
    pub fn apply_conf_change(&mut self, change: &ConfChange, member: Option<Member>) {
        let id = change.node_id;
        match change.kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                if self.removed.contains(&id) {
                    return;
                }
                let is_learner = change.kind == ConfChangeKind::AddLearner;
                let record = self.members.entry(id).or_insert_with(|| Member {
                    id,
                    ..Member::default()
                });
                if let Some(member) = member {
                    record.peer_urls = member.peer_urls;
                }
                record.is_learner = is_learner;
            }
            ConfChangeKind::PromoteLearner => {
                if let Some(record) = self.members.get_mut(&id) {
                    record.is_learner = false;
                }
            }
            ConfChangeKind::RemoveNode => {
                self.members.remove(&id);
                self.removed.insert(id);
            }
        }
    }

    /// Whether the member's record shows these name and client URLs.
    pub fn shows(&self, attributes: &MemberAttributes) -> bool {
        self.members.get(&attributes.id).is_some_and(|record| {
            record.name == attributes.name && record.client_urls == attributes.client_urls
        })
    }

    /// A member's name and client URLs, once it started (ignored for unknown ids).
    pub fn publish(&mut self, attributes: &MemberAttributes) {
        if let Some(record) = self.members.get_mut(&attributes.id) {
            record.name = attributes.name.clone();
            record.client_urls = attributes.client_urls.clone();
        }
    }

    /// Replaces peer URLs (etcd's MemberUpdate).
    pub fn update_peer_urls(&mut self, id: NodeId, peer_urls: Vec<String>) {
        if let Some(record) = self.members.get_mut(&id) {
            record.peer_urls = peer_urls;
        }
    }
}

/// A member id derived from its peer URLs and the cluster token, the same on every node
/// that computes it (etcd derives ids from the same inputs). FNV-1a, 64 bits, never 0.
pub fn member_id(peer_urls: &[String], cluster_token: &str) -> NodeId {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut hash = fnv1a(0xcbf2_9ce4_8422_2325, urls.join(",").as_bytes());
    hash = fnv1a(hash, cluster_token.as_bytes());
    hash.max(1)
}

/// The id of a member added to a running cluster (etcd's `member add`): from its peer URLs,
/// the cluster token and `salt` (random, as etcd uses the time), so a member added again on
/// the same URLs after a removal gets a new id. The added member learns it from the cluster
/// when it starts (it cannot compute it).
pub fn added_member_id(peer_urls: &[String], cluster_token: &str, salt: u64) -> NodeId {
    fnv1a(member_id(peer_urls, cluster_token), &salt.to_be_bytes()).max(1)
}

/// The cluster id: derived from the founding members' ids.
pub fn cluster_id(member_ids: impl IntoIterator<Item = NodeId>) -> u64 {
    let mut ids: Vec<NodeId> = member_ids.into_iter().collect();
    ids.sort_unstable();
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        hash = fnv1a(hash, &id.to_be_bytes());
    }
    hash.max(1)
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_id_ignores_url_order_and_depends_on_the_token() {
        let a = vec!["http://a:2380".to_string(), "http://b:2380".to_string()];
        let b = vec!["http://b:2380".to_string(), "http://a:2380".to_string()];
        assert_eq!(member_id(&a, "t"), member_id(&b, "t"));
        assert_ne!(member_id(&a, "t"), member_id(&a, "u"));
        assert_ne!(member_id(&a, "t"), 0);
    }

    #[test]
    fn removed_member_cannot_be_added_back() {
        let mut members = Members::new([Member {
            id: 7,
            ..Member::default()
        }]);
        let remove = ConfChange {
            kind: ConfChangeKind::RemoveNode,
            node_id: 7,
            context: bytes::Bytes::new(),
        };
        members.apply_conf_change(&remove, None);
        let add = ConfChange {
            kind: ConfChangeKind::AddVoter,
            ..remove
        };
        members.apply_conf_change(&add, None);
        assert!(members.get(7).is_none());
        assert!(members.is_removed(7));
    }
}
