//! Faults made by operators' hands, and the procedures operators follow to repair them, as
//! the nemesis injects them (see the README's operations section for the same procedures
//! with `etcdctl`):
//!
//! - a member's data dir wiped and the member restarted with its usual flags: it must refuse
//!   to start ("already been bootstrapped"), or stop once a leader shows it lost state;
//! - a data dir replaced by an older copy of itself (a VM snapshot, a restored disk): it
//!   must stop at the leader's first heartbeat if it lost entries it had acknowledged;
//! - `member update` to a new peer URL, then a restart there: same member, same id;
//! - `member remove` of a running member (it must stop), then `member add` on the same URL:
//!   a new member with a new id joins with an empty data dir;
//! - one member's `--quota-backend-bytes` lowered to just above what it holds (a flag rolled
//!   out one member at a time), so that the writes going on fill it: it must raise NOSPACE
//!   for every member and apply the log as the others do. Repaired as the README says: the
//!   quota raised again, the member restarted, the alarm disarmed.
//!
//! A member that lost its state is replaced as the README says: remove it, add it again,
//! start it with an empty data dir and `--initial-cluster-state existing`. What must hold
//! and did not is recorded in [`OperatorLog`] and fails the run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::cluster_client::ClusterClient;
use keel_net::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;

use crate::history::MemberId;
use crate::nemesis::{leader_and_term, member_term};
use crate::world::{peer_port_of, ServerState, World, PEER_PORT};

/// How long a server has to do what it must (refuse, stop, serve) after a step.
const SETTLE: Duration = Duration::from_secs(5);
/// How long an operator keeps retrying a member change.
const CHANGE_DEADLINE: Duration = Duration::from_secs(20);
/// The other peer port a moved member listens on.
const MOVED_PEER_PORT: u16 = 2390;

/// What operators' faults broke that must not break, and the members whose state an
/// operator took back in time; shared with the run's report.
#[derive(Clone, Debug, Default)]
pub struct OperatorLog {
    violations: Arc<Mutex<Vec<String>>>,
    rollbacks: Arc<Mutex<Vec<(MemberId, tokio::time::Instant)>>>,
}

impl OperatorLog {
    pub fn violation(&self, what: String) {
        if let Ok(mut log) = self.violations.lock() {
            log.push(what);
        }
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Member `member` restarts now on a data dir an operator put back to an older copy.
    fn rolled_back(&self, member: MemberId) {
        if let Ok(mut log) = self.rollbacks.lock() {
            log.push((member, tokio::time::Instant::now()));
        }
    }

    /// Every rollback, in the order they happened.
    pub fn rollbacks(&self) -> Vec<(MemberId, tokio::time::Instant)> {
        self.rollbacks.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

fn peer_url_of(world: &World, index: usize) -> String {
    world
        .flags(index)
        .advertise_peer_urls
        .first()
        .cloned()
        .unwrap_or_default()
}

/// Client URLs of the servers other than `index`.
fn other_urls(world: &World, index: usize) -> Vec<String> {
    (0..world.servers.len())
        .filter(|&i| i != index)
        .map(|i| world.servers[i].client_url())
        .collect()
}

/// Runs `call` on the control node against the members in `urls` in turn (each try within 2
/// s) until one succeeds or `within` passes; otherwise each member's last failure (the one
/// member that answered says more than the others' transport errors).
async fn until_answered<T, F, Fut>(
    world: &World,
    urls: Vec<String>,
    within: Duration,
    call: F,
) -> Result<T, String>
where
    T: Send + 'static,
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, tonic::Status>> + Send,
{
    world
        .control
        .spawn(async move {
            let deadline = tokio::time::Instant::now() + within;
            let mut last = std::collections::BTreeMap::new();
            for attempt in 0.. {
                let url = urls[attempt % urls.len()].clone();
                match tokio::time::timeout(Duration::from_secs(2), call(url.clone())).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(status)) => last.insert(url, status.message().to_string()),
                    Err(_) => last.insert(url, "timed out".to_string()),
                };
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let failures: Vec<String> = last
                .iter()
                .map(|(url, why)| format!("{url}: {why}"))
                .collect();
            Err(if failures.is_empty() {
                "no member answered".to_string()
            } else {
                failures.join("; ")
            })
        })
        .await
        .unwrap_or_else(|e| Err(format!("the control task failed: {e}")))
}

fn unavailable(error: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::unavailable(error.to_string())
}

/// A Cluster call, as [`until_answered`], within `CHANGE_DEADLINE`.
async fn cluster_call<T, F, Fut>(world: &World, urls: Vec<String>, call: F) -> Result<T, String>
where
    T: Send + 'static,
    F: Fn(ClusterClient<Channel>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, tonic::Status>> + Send,
{
    let call = std::sync::Arc::new(call);
    until_answered(world, urls, CHANGE_DEADLINE, move |url| {
        let call = call.clone();
        async move {
            let client = ClusterClient::connect(url).await.map_err(unavailable)?;
            call(client).await
        }
    })
    .await
}

/// The id the cluster lists for peer URL `peer_url`.
async fn listed_id(world: &World, index: usize, peer_url: &str) -> Result<u64, String> {
    let peer_url = peer_url.to_string();
    let list = cluster_call(world, other_urls(world, index), |mut client| async move {
        let request = pb::MemberListRequest { linearizable: true };
        Ok(client.member_list(request).await?.into_inner())
    })
    .await?;
    list.members
        .iter()
        .find(|m| m.peer_ur_ls.contains(&peer_url))
        .map(|m| m.id)
        .ok_or_else(|| format!("no member has peer URL {peer_url}"))
}

async fn remove_member(world: &World, index: usize, id: u64) -> Result<(), String> {
    cluster_call(
        world,
        other_urls(world, index),
        move |mut client| async move {
            match client.member_remove(pb::MemberRemoveRequest { id }).await {
                Ok(_) => Ok(()),
                // An earlier try that timed out may have done it.
                Err(status) if status.message() == "etcdserver: member not found" => Ok(()),
                Err(status) => Err(status),
            }
        },
    )
    .await
}

async fn add_member(world: &World, index: usize, peer_url: &str) -> Result<u64, String> {
    let peer_url = peer_url.to_string();
    cluster_call(world, other_urls(world, index), move |mut client| {
        let request = pb::MemberAddRequest {
            peer_ur_ls: vec![peer_url.clone()],
            is_learner: false,
        };
        async move {
            match client.member_add(request).await {
                Ok(added) => Ok(added.into_inner().member.map_or(0, |m| m.id)),
                Err(status) => Err(status),
            }
        }
    })
    .await
}

/// Polls server `index`'s state until `done` says yes or `SETTLE` passes; returns the last.
async fn settle(world: &World, index: usize, done: impl Fn(&ServerState) -> bool) -> ServerState {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let state = world.state(index);
        if done(&state) || tokio::time::Instant::now() >= deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator's repair of a member that lost its state: remove it, add it again on the
/// same peer URL, start it on an empty data dir as `existing`. Returns the new id.
pub async fn replace(world: &mut World, index: usize) -> Result<u64, String> {
    let peer_url = peer_url_of(world, index);
    // Not listed: removed already (by an earlier step), nothing to remove.
    if let Ok(old) = listed_id(world, index, &peer_url).await {
        remove_member(world, index, old).await?;
    }
    let id = add_member(world, index, &peer_url).await?;
    world.crash(index);
    let disk = world.empty_disk(index);
    world.replace_disk(index, disk);
    let port = peer_port_of(&peer_url);
    let flags = world.joining_flags(index, port);
    world.set_flags(index, flags);
    world.restart(index);
    let state = settle(world, index, |s| matches!(s, ServerState::Serving { .. })).await;
    match state {
        ServerState::Serving { member_id } if member_id == id => Ok(id),
        other => Err(format!(
            "the replacement did not start as member {id:x}: {other:?}"
        )),
    }
}

/// Replaces server `index`, or marks it damaged (left out of the final checks) if the
/// cluster would not take the change; says which.
async fn replace_or_give_up(world: &mut World, index: usize) -> String {
    match replace(world, index).await {
        Ok(id) => format!("replaced it as member {id:x}"),
        Err(why) => {
            world.damaged.insert(index);
            format!("could not replace it ({why}); left out")
        }
    }
}

/// A wiped data dir, the member restarted with its usual flags.
pub async fn wipe_data_dir(world: &mut World, index: usize, log: &OperatorLog) -> String {
    let name = world.servers[index].name.clone();
    if world.member_id(index).is_none() {
        // Only a serving member has state of its own to lose. One that is not (a
        // replacement that could not start, left out) may be a member added but never
        // started, which rightly starts on an empty data dir (seed 7957 of the operators'
        // sweep).
        return format!("wipe {name}'s data dir: skipped, it is not serving");
    }
    world.crash(index);
    let disk = world.empty_disk(index);
    world.replace_disk(index, disk);
    world.restart(index);
    let state = settle(world, index, |s| {
        matches!(s, ServerState::Refused(_) | ServerState::Stopped(_))
    })
    .await;
    let outcome = match &state {
        // Every refusal of an empty data dir of a started (or removed) member says so.
        ServerState::Refused(why) if why.contains("is empty") => "refused",
        ServerState::Stopped(why) if why.contains("went back in time") => "stopped",
        other => {
            log.violation(format!(
                "{name} started on a wiped data dir and did not refuse or stop: {other:?}"
            ));
            "not caught"
        }
    };
    let repaired = replace_or_give_up(world, index).await;
    format!("wipe {name}'s data dir: {outcome}; {repaired}")
}

/// A data dir put back to a copy taken `hold` earlier, while the same leader led.
pub async fn rollback_data_dir(
    world: &mut World,
    index: usize,
    hold: Duration,
    log: &OperatorLog,
) -> String {
    let name = world.servers[index].name.clone();
    let before = leader_and_term(world).await;
    // A member behind the leader's term would learn it during the hold, and the copy would
    // take its term back: a vote it cast in the newer term forgotten, which Raft cannot
    // detect. Only a member in the leader's term is rolled back.
    let own_term = member_term(world, index).await;
    if own_term.is_none() || own_term != before.map(|(_, term)| term) {
        return format!("roll back {name}: skipped (its term {own_term:?}, leader {before:?})");
    }
    let Some(copy) = world.disk(index).map(|d| d.copy_as_crashed()) else {
        return format!("roll back {name}: no disk");
    };
    tokio::time::sleep(hold).await;
    let after = leader_and_term(world).await;
    if before.is_none() || before != after || before.is_some_and(|(leader, _)| leader == index) {
        // Only a leader that kept leading knows what the member acknowledged: anything else
        // is a fault Raft cannot detect (and would let the member vote twice in a term).
        return format!("roll back {name}: skipped (leader {before:?} then {after:?})");
    }
    // Its observations are recorded under the id it serves as, and its clients' under the
    // id its server started with (a replaced member keeps its endpoint).
    let ids = [
        world.member_id(index),
        Some(world.servers[index].config.member_id),
    ];
    world.crash(index);
    world.replace_disk(index, copy);
    // Until the leader's first message shows it what it lost, the member serves its older
    // state, as etcd's does: its revision going down is the operator's doing.
    for (i, id) in ids.iter().enumerate() {
        if let Some(id) = id.filter(|id| !ids[..i].contains(&Some(*id))) {
            log.rolled_back(id);
        }
    }
    world.restart(index);
    let state = settle(world, index, |s| matches!(s, ServerState::Stopped(_))).await;
    match state {
        ServerState::Stopped(why) if why.contains("went back in time") => {
            let repaired = replace_or_give_up(world, index).await;
            format!("roll {name}'s data dir back by {hold:?}: stopped; {repaired}")
        }
        ServerState::Stopped(why) => {
            log.violation(format!(
                "{name} rolled back stopped for another reason: {why}"
            ));
            world.damaged.insert(index);
            format!("roll {name}'s data dir back by {hold:?}: stopped ({why})")
        }
        // Nothing it acknowledged was lost (no write reached it meanwhile): it goes on.
        other => format!("roll {name}'s data dir back by {hold:?}: {other:?}"),
    }
}

/// `member update` to a new peer URL, then the member restarted there with its data.
pub async fn move_member(world: &mut World, index: usize, log: &OperatorLog) -> String {
    let name = world.servers[index].name.clone();
    let old_url = peer_url_of(world, index);
    let port = if peer_port_of(&old_url) == PEER_PORT {
        MOVED_PEER_PORT
    } else {
        PEER_PORT
    };
    let new_url = format!("http://{}:{port}", world.servers[index].ip);
    let id = match listed_id(world, index, &old_url).await {
        Ok(id) => id,
        Err(why) => return format!("move {name}: {why}"),
    };
    let update_url = new_url.clone();
    let updated = cluster_call(world, other_urls(world, index), move |mut client| {
        let request = pb::MemberUpdateRequest {
            id,
            peer_ur_ls: vec![update_url.clone()],
        };
        async move { client.member_update(request).await.map(drop) }
    })
    .await;
    if let Err(why) = updated {
        return format!("move {name}: member update failed ({why})");
    }
    world.crash(index);
    let flags = world.moved_flags(index, port);
    world.set_flags(index, flags);
    world.relist_moved_member(index);
    world.restart(index);
    let state = settle(world, index, |s| matches!(s, ServerState::Serving { .. })).await;
    if state != (ServerState::Serving { member_id: id }) {
        log.violation(format!(
            "{name} moved to {new_url} did not come back as member {id:x}: {state:?}"
        ));
    }
    format!("move {name} ({id:x}) to {new_url}: {state:?}")
}

/// `member remove` of a running member, then `member add` on its URL and a new start.
pub async fn remove_and_add_again(world: &mut World, index: usize, log: &OperatorLog) -> String {
    let name = world.servers[index].name.clone();
    let peer_url = peer_url_of(world, index);
    let id = match listed_id(world, index, &peer_url).await {
        Ok(id) => id,
        Err(why) => return format!("remove and re-add {name}: {why}"),
    };
    // Only a member that serves can be told it was removed (one whose disk kept it from
    // starting is not running at all).
    let gave_up = matches!(
        world.state(index),
        ServerState::Refused(_) | ServerState::Stopped(_)
    );
    let was_running = !world.crashed.contains(&index) && !gave_up;
    if let Err(why) = remove_member(world, index, id).await {
        return format!("remove {name}: failed ({why})");
    }
    let state = settle(world, index, |s| !matches!(s, ServerState::Serving { .. })).await;
    let stopped = matches!(&state, ServerState::Stopped(why) if why.contains("Removed"));
    if was_running && !stopped {
        log.violation(format!(
            "{name} ({id:x}) removed from the cluster did not stop: {state:?}"
        ));
    }
    let repaired = replace_or_give_up(world, index).await;
    format!("remove {name} ({id:x}): {state:?}; {repaired}")
}

/// What a diverged member must lead to, by the checks the cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DivergenceCheck {
    /// `--experimental-initial-corrupt-check`: it refuses to start.
    AtStart,
    /// `--experimental-corrupt-check-time`: the leader raises a CORRUPT alarm naming it,
    /// which stops every write until an operator replaces it and disarms the alarm.
    Periodic { within: Duration },
}

/// A double fault leaves a member's data silently different from the others': one write
/// already overwritten in its log reads otherwise, every checksum intact (memory that
/// flipped before the bytes were summed). The member restarts on it; the corruption checks
/// must find it (see [`DivergenceCheck`]), and the operator replaces it.
pub async fn diverge(
    world: &mut World,
    index: usize,
    check: DivergenceCheck,
    log: &OperatorLog,
) -> String {
    let name = world.servers[index].name.clone();
    let old_id = match listed_id(world, index, &peer_url_of(world, index)).await {
        Ok(id) => id,
        Err(why) => return format!("diverge {name}: {why}"),
    };
    world.crash(index);
    let diverged = match rewrite_one_overwritten_put(world, index) {
        Ok(diverged) => diverged,
        Err(why) => {
            world.restart(index);
            return format!("diverge {name}: nothing to change ({why})");
        }
    };
    world.invariants.expect_divergence(old_id);
    world.restart(index);
    let outcome = match check {
        DivergenceCheck::AtStart => {
            let state = settle(world, index, |s| !matches!(s, ServerState::Starting)).await;
            match state {
                ServerState::Refused(why) if why.contains("data inconsistency") => "refused",
                other => {
                    log.violation(format!(
                        "{name} with diverged data ({diverged}) did not refuse to start: {other:?}"
                    ));
                    "not caught"
                }
            }
        }
        DivergenceCheck::Periodic { within } => {
            match corrupt_alarm_blocks_writes(world, index, old_id, within).await {
                Ok(()) => "CORRUPT alarm raised, writes refused",
                Err(why) => {
                    log.violation(format!("{name} with diverged data ({diverged}): {why}"));
                    "not caught"
                }
            }
        }
    };
    let repaired = replace_or_give_up(world, index).await;
    if matches!(check, DivergenceCheck::Periodic { .. }) {
        if let Err(why) = disarm_corrupt(world, index, old_id).await {
            log.violation(format!(
                "the CORRUPT alarm for {name} could not be disarmed: {why}"
            ));
        }
    }
    format!("diverge {name} ({diverged}): {outcome}; {repaired}")
}

/// Changes the value of the newest committed plain put in server `index`'s log whose key a
/// later committed entry writes again, and writes the data dir back with valid checksums.
fn rewrite_one_overwritten_put(world: &mut World, index: usize) -> Result<String, String> {
    use keel_core::mvcc::Command;
    use keel_core::node::{Proposal, ProposalBody};
    use keel_core::raft::EntryPayload;
    use keel_storage::Storage;

    let options = world.flags(index).storage;
    let disk = world.disk(index).ok_or("no disk")?;
    let (storage, recovered) = Storage::open(disk, options.clone()).map_err(|e| e.to_string())?;
    drop(storage);
    let commit_index = recovered.hard_state.commit_index;
    let put_at = |entry: &keel_core::raft::Entry| match &entry.payload {
        EntryPayload::Normal(data) => match Proposal::decode(data) {
            // A put that cannot fail when applied (a lease may be gone by then).
            Some(Proposal {
                body: ProposalBody::Store(Command::Put(put)),
                ..
            }) if put.lease == 0 && !put.ignore_value && !put.ignore_lease => Some(put.key),
            _ => None,
        },
        _ => None,
    };
    let mut entries = recovered.entries.clone();
    let committed = entries.partition_point(|e| e.index <= commit_index);
    let target = (0..committed).rev().find(|&i| {
        put_at(&entries[i]).is_some_and(|key| {
            entries[i + 1..committed]
                .iter()
                .any(|later| put_at(later).as_ref() == Some(&key))
        })
    });
    let Some(target) = target else {
        return Err("no committed put overwritten later in the log".into());
    };
    let EntryPayload::Normal(data) = &entries[target].payload else {
        return Err("not a normal entry".into());
    };
    let Some(mut proposal) = Proposal::decode(data) else {
        return Err("undecodable".into());
    };
    let ProposalBody::Store(Command::Put(put)) = &mut proposal.body else {
        return Err("not a put".into());
    };
    let mut value = put.value.to_vec();
    value.extend_from_slice(b"~diverged");
    put.value = bytes::Bytes::from(value);
    let what = format!(
        "entry {} puts {:?} differently",
        entries[target].index,
        String::from_utf8_lossy(&put.key)
    );
    entries[target].payload = EntryPayload::Normal(bytes::Bytes::from(proposal.encode()));
    let fresh = world.empty_disk(index);
    let (mut rewritten, _) = Storage::open(fresh.clone(), options).map_err(|e| e.to_string())?;
    let io = |e: keel_storage::StorageError| e.to_string();
    if let Some(identity) = recovered.identity {
        rewritten.save_identity(identity).map_err(io)?;
    }
    if let Some(snapshot) = &recovered.snapshot {
        rewritten.install_snapshot(snapshot).map_err(io)?;
    }
    rewritten.append(&entries).map_err(io)?;
    rewritten.set_hard_state(recovered.hard_state).map_err(io)?;
    rewritten.sync().map_err(io)?;
    drop(rewritten);
    world.replace_disk(index, fresh);
    Ok(what)
}

/// Within `within`, a CORRUPT alarm naming `member` is listed and a write is refused with
/// etcd's "etcdserver: corrupt cluster".
async fn corrupt_alarm_blocks_writes(
    world: &World,
    index: usize,
    member: u64,
    within: Duration,
) -> Result<(), String> {
    use keel_net::proto::etcdserverpb::kv_client::KvClient;

    let urls = other_urls(world, index);
    let listed = until_answered(world, urls, within, move |url| async move {
        let mut client = MaintenanceClient::connect(url.clone())
            .await
            .map_err(unavailable)?;
        let alarms = client
            .alarm(pb::AlarmRequest::default())
            .await?
            .into_inner()
            .alarms;
        let corrupt = pb::AlarmType::Corrupt as i32;
        if !alarms
            .iter()
            .any(|a| a.alarm == corrupt && a.member_id == member)
        {
            return Err(tonic::Status::unavailable(format!(
                "no CORRUPT alarm for {member:x} yet"
            )));
        }
        let mut kv = KvClient::connect(url).await.map_err(unavailable)?;
        let request = pb::PutRequest {
            key: bytes::Bytes::from_static(b"corrupt-probe"),
            ..Default::default()
        };
        Ok(kv.put(request).await.map(drop))
    })
    .await?;
    match listed {
        Err(status)
            if status.code() == tonic::Code::DataLoss
                && status.message() == "etcdserver: corrupt cluster" =>
        {
            Ok(())
        }
        other => Err(format!("a put under the alarm answered {other:?}")),
    }
}

async fn disarm_corrupt(world: &World, index: usize, member: u64) -> Result<(), String> {
    let urls = other_urls(world, index);
    until_answered(world, urls, CHANGE_DEADLINE, move |url| async move {
        let mut client = MaintenanceClient::connect(url).await.map_err(unavailable)?;
        let request = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Deactivate as i32,
            member_id: member,
            alarm: pb::AlarmType::Corrupt as i32,
        };
        client.alarm(request).await.map(drop)
    })
    .await
}

/// Most bytes of room a lowered quota leaves above what the member holds.
const MAX_QUOTA_ROOM_BYTES: u64 = 2 * 1024;

/// Restarts server `index` with `quota_bytes` (0: the default), as an operator rolling out
/// a flag does.
fn restart_with_quota(world: &mut World, index: usize, quota_bytes: u64) {
    let mut flags = world.flags(index);
    flags.quota_bytes = quota_bytes;
    world.set_flags(index, flags);
    world.crash(index);
    world.restart(index);
}

/// Lowers server `index`'s quota to `room_bytes` above the logical size it holds, holds
/// that while the writes go on, then repairs (see the module docs).
pub async fn lower_quota(
    world: &mut World,
    index: usize,
    room_bytes: u64,
    hold: Duration,
) -> String {
    let name = world.servers[index].name.clone();
    let url = world.servers[index].client_url();
    let held = until_answered(world, vec![url], SETTLE, |url| async move {
        let mut client = MaintenanceClient::connect(url).await.map_err(unavailable)?;
        let status = client.status(pb::StatusRequest {}).await?.into_inner();
        Ok(u64::try_from(status.db_size_in_use).unwrap_or(0))
    })
    .await
    .unwrap_or(0);
    let usual = world.flags(index).quota_bytes;
    // Never 0, which means the default.
    let lowered = held + room_bytes.clamp(1, MAX_QUOTA_ROOM_BYTES);
    restart_with_quota(world, index, lowered);
    tokio::time::sleep(hold).await;
    restart_with_quota(world, index, usual);
    let disarmed = match disarm_no_space(world).await {
        Ok(alarms) => format!("NOSPACE alarms disarmed: {alarms}"),
        Err(e) => format!("disarming failed: {e}"),
    };
    format!(
        "quota of {name} lowered to {lowered} bytes for {hold:?}, then raised again; {disarmed}"
    )
}

/// Deactivates every NOSPACE alarm until none is listed; returns how many it deactivated.
async fn disarm_no_space(world: &World) -> Result<usize, String> {
    let urls = (0..world.servers.len())
        .map(|i| world.servers[i].client_url())
        .collect();
    until_answered(world, urls, CHANGE_DEADLINE, |url| async move {
        let mut client = MaintenanceClient::connect(url).await.map_err(unavailable)?;
        let no_space = pb::AlarmType::Nospace as i32;
        let listed = client
            .alarm(pb::AlarmRequest::default())
            .await?
            .into_inner()
            .alarms;
        let raised: Vec<u64> = listed
            .iter()
            .filter(|a| a.alarm == no_space)
            .map(|a| a.member_id)
            .collect();
        for &member_id in &raised {
            let request = pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Deactivate as i32,
                member_id,
                alarm: no_space,
            };
            client.alarm(request).await?;
        }
        // Asked again until none is left: a member's raise may commit after a disarm.
        let left = client
            .alarm(pb::AlarmRequest::default())
            .await?
            .into_inner()
            .alarms;
        if left.iter().any(|a| a.alarm == no_space) {
            return Err(tonic::Status::unavailable("NOSPACE raised again"));
        }
        Ok(raised.len())
    })
    .await
}
