//! Leases. The lease table (id, granted TTL, checkpointed remaining TTL, attached keys) is
//! replicated state: the leases are kept in memory and in the engine, the attached keys
//! only in the engine (they may be most of the keys). Expiry timers are not: only the primary lessor (on the leader) keeps
//! them, from the caller's monotonic clock, and only it decides that a lease expired — it
//! offers the ids ([`Store::expired_leases`]) and the leader proposes a `LeaseRevoke` for
//! each, so every member deletes the same keys at the same revision. KeepAlive and
//! TimeToLive are answered by the primary only (others return `NotPrimary` and the server
//! forwards them). On promotion every lease's timer restarts from its remaining TTL plus
//! the election time, as etcd does, so a failover never expires leases en masse.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::error::Error;
use super::quota::LEASE_OVERHEAD_BYTES;
use super::request::{
    Event, LeaseCheckpoint, LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, ResponseHeader,
};
use super::store::Store;
use super::write::Writer;

/// etcd's `MaxLeaseTTL`, in seconds.
pub const MAX_LEASE_TTL_S: i64 = 9_000_000_000;

const MS_PER_S: u64 = 1000;

/// One lease's replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lease {
    pub ttl_s: i64,
    /// The last checkpointed remaining TTL; 0 when none (use `ttl_s`).
    pub remaining_ttl_s: i64,
}

/// The leader's timers: each lease's expiry, and when it is next offered for revocation
/// (its expiry, then every retry interval until the revoke is applied).
#[derive(Clone, Debug, Default)]
struct Primary {
    expiry_ms: BTreeMap<i64, u64>,
    offer_ms: BTreeMap<i64, u64>,
    by_offer: BTreeSet<(u64, i64)>,
    checkpoint_cursor: i64,
}

impl Primary {
    fn set(&mut self, id: i64, expiry_ms: u64) {
        self.expiry_ms.insert(id, expiry_ms);
        self.offer_at(id, expiry_ms);
    }

    fn offer_at(&mut self, id: i64, offer_ms: u64) {
        if let Some(old) = self.offer_ms.insert(id, offer_ms) {
            self.by_offer.remove(&(old, id));
        }
        self.by_offer.insert((offer_ms, id));
    }

    fn remove(&mut self, id: i64) {
        self.expiry_ms.remove(&id);
        if let Some(old) = self.offer_ms.remove(&id) {
            self.by_offer.remove(&(old, id));
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Lessor {
    pub leases: BTreeMap<i64, Lease>,
    primary: Option<Primary>,
}

impl Lessor {
    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn insert_restored(&mut self, id: i64, lease: Lease) {
        self.leases.insert(id, lease);
    }
}

fn expiry_after(now_ms: u64, ttl_s: i64) -> u64 {
    now_ms.saturating_add((ttl_s.max(0) as u64).saturating_mul(MS_PER_S))
}

/// A well-mixed 64-bit value from `x` (splitmix64), for choosing lease ids.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the server does after a KeepAlive: answer the client, and propose `checkpoint`
/// when there is one (it clears a stale checkpointed TTL, as etcd's Renew does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepAliveOutcome {
    pub response: LeaseKeepAliveResponse,
    pub checkpoint: Option<LeaseCheckpointRequest>,
}

impl Store {
    /// Attaches `key` to lease `id` (if the lease exists).
    pub(crate) fn attach(&mut self, id: i64, key: &[u8]) {
        if id != 0 && self.lessor.contains(id) {
            self.attach_row(id, key);
        }
    }

    /// Detaches `key` from lease `id`.
    pub(crate) fn detach(&mut self, id: i64, key: &[u8]) {
        if id != 0 && self.lessor.contains(id) {
            self.detach_row(id, key);
        }
    }

    pub(crate) fn apply_lease_grant(
        &mut self,
        request: &LeaseGrantRequest,
        index: u64,
        now_ms: u64,
    ) -> Result<LeaseGrantResponse, Error> {
        self.check_no_space_alarm(LEASE_OVERHEAD_BYTES)?;
        if request.ttl > MAX_LEASE_TTL_S {
            return Err(Error::LeaseTtlTooLarge);
        }
        let id = if request.id == 0 {
            self.choose_lease_id(index)
        } else {
            request.id
        };
        if self.lessor.contains(id) {
            return Err(Error::LeaseExists);
        }
        let ttl_s = request.ttl.max(self.config().min_lease_ttl_s);
        let lease = Lease {
            ttl_s,
            ..Lease::default()
        };
        self.save_lease(id, &lease);
        self.lessor.leases.insert(id, lease);
        self.usage.add_bytes(LEASE_OVERHEAD_BYTES);
        if let Some(primary) = &mut self.lessor.primary {
            primary.set(id, expiry_after(now_ms, ttl_s));
        }
        Ok(LeaseGrantResponse {
            header: ResponseHeader::at(self.current_revision()),
            id,
            ttl: ttl_s,
            error: String::new(),
        })
    }

    /// A nonzero, unused id derived from the Raft index: the same on every member.
    fn choose_lease_id(&self, index: u64) -> i64 {
        let mut seed = index;
        loop {
            seed = mix(seed);
            let id = (seed & i64::MAX as u64) as i64;
            if id != 0 && !self.lessor.contains(id) {
                return id;
            }
        }
    }

    /// Deletes the lease's keys at one revision (in key order), then the lease.
    pub(crate) fn apply_lease_revoke(
        &mut self,
        request: &LeaseRevokeRequest,
    ) -> Result<(LeaseRevokeResponse, Vec<Event>), Error> {
        if !self.lessor.contains(request.id) {
            return Err(Error::LeaseNotFound);
        }
        let keys = self.lease_keys(request.id);
        let mut writer = Writer::begin(self);
        for key in &keys {
            writer.delete(key);
        }
        let (revision, events) = writer.finish();
        // Keys attached but deleted already (none, unless the rows disagree) go too.
        for key in self.lease_keys(request.id) {
            self.detach_row(request.id, &key);
        }
        self.lessor.leases.remove(&request.id);
        self.delete_lease_row(request.id);
        self.usage.free_bytes(LEASE_OVERHEAD_BYTES);
        if let Some(primary) = &mut self.lessor.primary {
            primary.remove(request.id);
        }
        Ok((
            LeaseRevokeResponse {
                header: ResponseHeader::at(revision),
            },
            events,
        ))
    }

    pub(crate) fn apply_lease_checkpoint(
        &mut self,
        request: &LeaseCheckpointRequest,
    ) -> LeaseCheckpointResponse {
        for checkpoint in &request.checkpoints {
            if let Some(lease) = self.lessor.leases.get_mut(&checkpoint.id) {
                lease.remaining_ttl_s = checkpoint.remaining_ttl.max(0);
                let lease = lease.clone();
                self.save_lease(checkpoint.id, &lease);
            }
        }
        LeaseCheckpointResponse {
            header: ResponseHeader::at(self.current_revision()),
        }
    }

    /// Whether this member's lessor is the primary (it is the leader's).
    pub fn is_primary(&self) -> bool {
        self.lessor.primary.is_some()
    }

    /// Becomes the primary lessor: every lease expires `extend_ms` (the election time)
    /// after its remaining TTL from `now_ms`.
    pub fn promote(&mut self, now_ms: u64, extend_ms: u64) {
        let mut primary = Primary::default();
        for (&id, lease) in &self.lessor.leases {
            let remaining_s = if lease.remaining_ttl_s > 0 {
                lease.remaining_ttl_s
            } else {
                lease.ttl_s
            };
            primary.set(
                id,
                expiry_after(now_ms, remaining_s).saturating_add(extend_ms),
            );
        }
        self.lessor.primary = Some(primary);
    }

    /// Stops being the primary: no lease expires here until the next promotion.
    pub fn demote(&mut self) {
        self.lessor.primary = None;
    }

    /// Up to `max` leases expired at `now_ms`, soonest first, for the leader to propose
    /// `LeaseRevoke`s. A lease offered is offered again only after the retry interval,
    /// in case its revoke was lost. Empty unless primary.
    pub fn expired_leases(&mut self, now_ms: u64, max: usize) -> Vec<i64> {
        let retry_ms = self.config().expired_lease_retry_ms;
        let Some(primary) = &mut self.lessor.primary else {
            return Vec::new();
        };
        let expired: Vec<i64> = primary
            .by_offer
            .iter()
            .take_while(|(offer, _)| *offer <= now_ms)
            .take(max)
            .map(|&(_, id)| id)
            .collect();
        for &id in &expired {
            primary.offer_at(id, now_ms.saturating_add(retry_ms));
        }
        expired
    }

    /// When [`Store::expired_leases`] next has something to offer, for the server's
    /// timer. `None` unless primary.
    pub fn next_lease_expiry_ms(&self) -> Option<u64> {
        let primary = self.lessor.primary.as_ref()?;
        primary.by_offer.first().map(|&(offer, _)| offer)
    }

    /// Renews a lease (not replicated, like etcd's Renew).
    pub fn lease_keep_alive(
        &mut self,
        request: &LeaseKeepAliveRequest,
        now_ms: u64,
    ) -> Result<KeepAliveOutcome, Error> {
        let header = ResponseHeader::at(self.current_revision());
        let Some(primary) = &mut self.lessor.primary else {
            return Err(Error::NotPrimary);
        };
        let Some(lease) = self.lessor.leases.get(&request.id) else {
            return Err(Error::LeaseNotFound);
        };
        let expired = primary
            .expiry_ms
            .get(&request.id)
            .is_none_or(|&e| e <= now_ms);
        if expired {
            // Its revoke is on the way.
            return Err(Error::LeaseNotFound);
        }
        primary.set(request.id, expiry_after(now_ms, lease.ttl_s));
        let checkpoint = (lease.remaining_ttl_s > 0).then(|| LeaseCheckpointRequest {
            checkpoints: vec![LeaseCheckpoint {
                id: request.id,
                remaining_ttl: 0,
            }],
        });
        Ok(KeepAliveOutcome {
            response: LeaseKeepAliveResponse {
                header,
                id: request.id,
                ttl: lease.ttl_s,
            },
            checkpoint,
        })
    }

    /// A lease's remaining and granted TTL, and its keys if asked. An unknown lease gets
    /// TTL -1, not an error (etcd's answer).
    pub fn lease_time_to_live(
        &self,
        request: &LeaseTimeToLiveRequest,
        now_ms: u64,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        self.healthy()?;
        let header = ResponseHeader::at(self.current_revision());
        let Some(primary) = &self.lessor.primary else {
            return Err(Error::NotPrimary);
        };
        let Some(lease) = self.lessor.leases.get(&request.id) else {
            return Ok(LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: -1,
                ..LeaseTimeToLiveResponse::default()
            });
        };
        let expiry_ms = primary
            .expiry_ms
            .get(&request.id)
            .copied()
            .unwrap_or(now_ms);
        let remaining_ms = i128::from(expiry_ms) - i128::from(now_ms);
        Ok(LeaseTimeToLiveResponse {
            header,
            id: request.id,
            ttl: i64::try_from(remaining_ms / i128::from(MS_PER_S)).unwrap_or(i64::MAX),
            granted_ttl: lease.ttl_s,
            keys: if request.keys {
                self.lease_keys(request.id)
            } else {
                Vec::new()
            },
        })
    }

    /// The keys attached to lease `id` in key order (none for an unknown lease);
    /// replicated state, for permission checks on any member.
    pub fn lease_keys(&self, id: i64) -> Vec<Bytes> {
        let mut keys = Vec::new();
        self.scan_lease_keys(id, &mut |key| {
            keys.push(Bytes::copy_from_slice(key));
            true
        });
        keys
    }

    /// Calls `check` with every key attached to any lease until it fails.
    pub fn try_for_each_lease_key<E>(
        &self,
        mut check: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut outcome = Ok(());
        self.scan_all_lease_keys(&mut |key| {
            outcome = check(key);
            outcome.is_ok()
        });
        outcome
    }

    /// Every lease id, ascending (replicated state: any member answers).
    pub fn lease_leases(&self) -> LeaseLeasesResponse {
        LeaseLeasesResponse {
            header: ResponseHeader::at(self.current_revision()),
            leases: self
                .lessor
                .leases
                .keys()
                .map(|&id| LeaseStatus { id })
                .collect(),
        }
    }

    /// Remaining TTLs worth replicating (those that changed since the last checkpoint),
    /// up to `max`, taking leases in turn across calls. The leader proposes the request
    /// now and then (etcd: every 5 minutes). `None` when there is nothing to say or this
    /// member is not primary.
    pub fn lease_checkpoints(&mut self, now_ms: u64, max: usize) -> Option<LeaseCheckpointRequest> {
        let primary = self.lessor.primary.as_mut()?;
        let leases = &self.lessor.leases;
        let after = leases.range(primary.checkpoint_cursor.saturating_add(1)..);
        let wrapped = leases.range(..=primary.checkpoint_cursor);
        let mut checkpoints = Vec::new();
        for (&id, lease) in after.chain(wrapped).take(max) {
            primary.checkpoint_cursor = id;
            let Some(&expiry_ms) = primary.expiry_ms.get(&id) else {
                continue;
            };
            let remaining_s = expiry_ms.saturating_sub(now_ms).div_ceil(MS_PER_S) as i64;
            if remaining_s < lease.ttl_s && remaining_s != lease.remaining_ttl_s {
                checkpoints.push(LeaseCheckpoint {
                    id,
                    remaining_ttl: remaining_s.max(1),
                });
            }
        }
        (!checkpoints.is_empty()).then_some(LeaseCheckpointRequest { checkpoints })
    }
}
