//! What a Raft entry carries for keel: who proposed it (so that node can answer its client
//! when the entry is applied) and what to do.

use serde::{Deserialize, Serialize};

use crate::auth::{AuthCommand, Caller};
use crate::codec::Codec;
use crate::mvcc::Command;
use crate::raft::NodeId;

use super::members::{Member, MemberAttributes};

/// Entries above this size cannot come from a valid proposal (the request limit is far
/// smaller); decoding refuses them rather than allocating.
const MAX_PROPOSAL_BYTES: u64 = 64 * 1024 * 1024;

/// `request_id` 0 means nobody waits for the outcome (e.g. a lease expiry).
pub const NO_CLIENT: u64 = 0;

/// A normal entry's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub proposer: NodeId,
    pub request_id: u64,
    /// Who asked: permissions are checked against it when the entry applies.
    pub caller: Caller,
    pub body: ProposalBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalBody {
    /// A write to the MVCC store (KV, lease, compaction, alarm).
    Store(Command),
    /// A member announces its name and client URLs (etcd's member attributes).
    PublishMember(MemberAttributes),
    /// New peer URLs for a member (etcd's MemberUpdate). Not a Raft configuration change:
    /// the voter set stays the same, only where to reach the member changes.
    UpdatePeerUrls { id: NodeId, peer_urls: Vec<String> },
    /// A change to users, roles or permissions, or a login (etcd's Auth service).
    Auth(AuthCommand),
}

/// A membership change entry's context: the member record and who asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfChangeContext {
    pub proposer: NodeId,
    pub request_id: u64,
    pub member: Member,
}

/// The encoding of proposals: fixed-width integers.
const PROPOSALS: Codec = Codec::fixed(MAX_PROPOSAL_BYTES);
/// The encoding of snapshot images: as proposals, as large as the store (a decode still
/// reads no more than its input).
const IMAGES: Codec = Codec::fixed(u64::MAX);

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data structures into a Vec cannot fail.
    PROPOSALS
        .encode(value)
        .expect("proposals are plain data and always serialize")
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    PROPOSALS.decode(bytes).ok()
}

/// Encodes a snapshot image, as large as the store (no proposal limit), sized first so the
/// buffer is allocated once.
pub(crate) fn encode_large<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data structures without a limit cannot fail.
    let size_bytes = IMAGES
        .size_bytes(value)
        .expect("images are plain data and always serialize");
    let mut out = Vec::with_capacity(usize::try_from(size_bytes).unwrap_or(0));
    IMAGES
        .encode_into(&mut out, value)
        .expect("images are plain data and always serialize");
    out
}

/// Decodes a snapshot image: the lengths it declares may not add up to more than `bytes`
/// holds, so a damaged one cannot make the decoder allocate more than the input's size.
pub(crate) fn decode_large<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    IMAGES.decode(bytes).ok()
}

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Option<Proposal> {
        decode(bytes)
    }
}

impl ConfChangeContext {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Option<ConfChangeContext> {
        decode(bytes)
    }
}
