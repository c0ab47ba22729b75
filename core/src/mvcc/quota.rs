//! The space quota and alarms, as etcd's quota and capped applier behave.
//!
//! A member's quota (`--quota-backend-bytes`) is its own flag, so it never decides what
//! applying an entry does: members whose quotas differ (an operator raising it one member at
//! a time) must still hold the same data. The quota is looked at in two places only:
//! - before proposing: a write that would take the size estimate beyond this member's quota
//!   is refused with `NoSpace` ([`Store::check_command`]), and the member raises the alarm;
//! - after applying: a member whose estimate is beyond its quota (writes already in the log
//!   when it filled, which every member applies, as etcd does) raises the alarm
//!   ([`Store::over_quota`], looked at every tick).
//!
//! The NOSPACE alarm goes through the log under the member's id, so it is replicated state:
//! while it is active every member refuses, when applying, every write that adds data (a put
//! anywhere in a txn, a lease grant), and deletes, compaction and lease revokes still run. An
//! operator disarms it (`AlarmRequest` DEACTIVATE) after freeing space.
//!
//! The estimate is logical (see [`super::key_index::ENTRY_OVERHEAD_BYTES`]): every member
//! counts the same bytes for the same writes.

use super::error::Error;
use super::key_index::ENTRY_OVERHEAD_BYTES;
use super::request::{
    AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType, Command, PutRequest,
    RequestOp, ResponseHeader, TxnRequest,
};
use super::store::Store;

/// What a lease costs the quota (etcd's `leaseOverhead`).
pub const LEASE_OVERHEAD_BYTES: u64 = 64;

pub(crate) fn put_cost(put: &PutRequest) -> u64 {
    (put.key.len() + put.value.len()) as u64 + ENTRY_OVERHEAD_BYTES
}

/// etcd's `costTxn`: the costlier branch.
pub(crate) fn txn_cost(txn: &TxnRequest) -> u64 {
    let branch_cost = |ops: &[RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match op {
                RequestOp::Put(put) => put_cost(put),
                RequestOp::Txn(nested) => txn_cost(nested),
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => 0,
            })
            .sum()
    };
    branch_cost(&txn.success).max(branch_cost(&txn.failure))
}

pub(crate) fn cost(command: &Command) -> u64 {
    match command {
        Command::Put(put) => put_cost(put),
        Command::Txn(txn) => txn_cost(txn),
        Command::LeaseGrant(_) => LEASE_OVERHEAD_BYTES,
        Command::DeleteRange(_)
        | Command::Compaction(_)
        | Command::LeaseRevoke(_)
        | Command::LeaseCheckpoint(_)
        | Command::Alarm(_) => 0,
    }
}

/// Whether a CORRUPT alarm stops `command`: every write does, as etcd's corrupt applier
/// refuses them; alarms themselves (an operator must be able to disarm it) and lease
/// checkpoints (the leader's bookkeeping) go on.
fn stopped_by_corrupt_alarm(command: &Command) -> bool {
    !matches!(command, Command::Alarm(_) | Command::LeaseCheckpoint(_))
}

/// What the store holds, as the quota counts it. Replicated state: saved in the store's
/// state row and restored from snapshots, so every member counts the same.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Usage {
    /// Estimated bytes of everything visible (history after the compaction point included).
    size_bytes: u64,
    /// Keys with any version in the engine (deleted keys count until compaction).
    key_count: u64,
}

impl Usage {
    /// As the state row or a snapshot says.
    pub(super) fn restored(size_bytes: u64, key_count: u64) -> Usage {
        Usage {
            size_bytes,
            key_count,
        }
    }

    pub(super) fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub(super) fn key_count(&self) -> u64 {
        self.key_count
    }

    pub(super) fn add_bytes(&mut self, bytes: u64) {
        self.size_bytes += bytes;
    }

    pub(super) fn free_bytes(&mut self, bytes: u64) {
        self.size_bytes = self.size_bytes.saturating_sub(bytes);
    }

    /// A key got its first version.
    pub(super) fn add_key(&mut self) {
        self.key_count += 1;
    }

    /// A key's last version was compacted away.
    pub(super) fn drop_key(&mut self) {
        self.key_count = self.key_count.saturating_sub(1);
    }
}

impl Store {
    pub fn no_space_alarm_active(&self) -> bool {
        self.alarms.iter().any(|a| a.alarm == AlarmType::NoSpace)
    }

    pub fn corrupt_alarm_active(&self) -> bool {
        self.alarms.iter().any(|a| a.alarm == AlarmType::Corrupt)
    }

    /// Refuses every write while a CORRUPT alarm is active.
    pub(crate) fn check_corrupt_alarm(&self, command: &Command) -> Result<(), Error> {
        if self.corrupt_alarm_active() && stopped_by_corrupt_alarm(command) {
            return Err(Error::Corrupt);
        }
        Ok(())
    }

    /// Whether a write of `cost` bytes may be proposed here: not while the NOSPACE alarm is
    /// active, nor if it would take the estimate beyond this member's quota.
    pub(crate) fn check_quota(&self, cost: u64) -> Result<(), Error> {
        if cost == 0 {
            return Ok(());
        }
        if self.no_space_alarm_active()
            || self.usage.size_bytes().saturating_add(cost) > self.config().quota_bytes
        {
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    /// Refuses, when applying, a write that adds `cost` bytes while the NOSPACE alarm is
    /// active. Replicated state only: the quota itself is not looked at (see the module
    /// docs).
    pub(crate) fn check_no_space_alarm(&self, cost: u64) -> Result<(), Error> {
        if cost > 0 && self.no_space_alarm_active() {
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    /// The estimate is beyond this member's quota: it should raise the NOSPACE alarm.
    pub fn over_quota(&self) -> bool {
        self.usage.size_bytes() > self.config().quota_bytes
    }

    pub(crate) fn apply_alarm(&mut self, request: &AlarmRequest) -> AlarmResponse {
        let member = AlarmMember {
            member_id: request.member_id,
            alarm: request.alarm,
        };
        let alarms = match request.action {
            AlarmAction::Get => self
                .alarms
                .iter()
                .filter(|a| request.alarm == AlarmType::None || a.alarm == request.alarm)
                .copied()
                .collect(),
            AlarmAction::Activate if request.alarm != AlarmType::None => {
                if self.alarms.insert(member) {
                    self.save_alarms();
                }
                vec![member]
            }
            AlarmAction::Deactivate if self.alarms.remove(&member) => {
                self.save_alarms();
                vec![member]
            }
            AlarmAction::Activate | AlarmAction::Deactivate => Vec::new(),
        };
        AlarmResponse {
            header: ResponseHeader::at(self.current_revision()),
            alarms,
        }
    }
}
