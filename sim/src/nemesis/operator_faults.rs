//! What operators do to a running cluster: leader transfers, defragments, a wiped or
//! rolled-back data dir, a member moved or removed and added again, a diverged member.

use std::time::Duration;

use keel_net::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use rand::Rng;

use crate::world::World;

use super::{damage_target, pb, resolve, FaultKind, Servers, Target};

/// The server `target` names now (`None`: it asked for the leader and there is none).
/// One Maintenance call from the control node to `url`, within `timeout`: whether it was
/// answered OK.
pub(super) async fn maintenance_call<F, Fut, T>(
    world: &World,
    url: String,
    timeout: Duration,
    call: F,
) -> bool
where
    F: FnOnce(MaintenanceClient<tonic::transport::Channel>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, tonic::Status>> + Send,
    T: Send + 'static,
{
    world
        .control
        .spawn(async move {
            let answered = async { call(MaintenanceClient::connect(url).await.ok()?).await.ok() };
            tokio::time::timeout(timeout, answered)
                .await
                .ok()
                .flatten()
                .is_some()
        })
        .await
        .unwrap_or(false)
}

pub(super) async fn inject_transfer_leader(
    world: &mut World,
    servers: &Servers,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let (Some(leader), Some(to)) = (
        resolve(world, Target::Leader, rng).await,
        resolve(world, Target::Follower, rng).await,
    ) else {
        return "transfer leader: no leader".into();
    };
    let (url, member) = (
        world.servers[leader].client_url(),
        world
            .member_id(to)
            .unwrap_or(world.servers[to].config.member_id),
    );
    let request = pb::MoveLeaderRequest { target_id: member };
    let moved = maintenance_call(
        world,
        url,
        Duration::from_secs(5),
        move |mut client| async move { client.move_leader(request).await },
    )
    .await;
    tokio::time::sleep(hold).await;
    format!(
        "transfer leader {} -> {} ({})",
        servers.name(leader),
        servers.name(to),
        if moved { "done" } else { "failed" }
    )
}

pub(super) async fn inject_defragment(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "defragment: no such server".into();
    };
    let url = world.servers[i].client_url();
    let done = maintenance_call(
        world,
        url,
        Duration::from_secs(10),
        |mut client| async move { client.defragment(pb::DefragmentRequest {}).await },
    )
    .await;
    tokio::time::sleep(hold).await;
    let outcome = if done { "done" } else { "failed" };
    format!("defragment {} ({outcome})", servers.name(i))
}

pub(super) async fn inject_wipe_data_dir(
    world: &mut World,
    target: Target,
    rng: &mut impl Rng,
) -> String {
    // A wiped member lost its state: a damage fault, kept to one member like the others.
    let Some(i) = damage_target(world, target, rng).await else {
        return "wipe data dir: no such server".into();
    };
    let log = world.operator_log.clone();
    crate::operator::wipe_data_dir(world, i, &log).await
}

pub(super) async fn inject_rollback_data_dir(
    world: &mut World,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let target = if target == Target::Any {
        Target::Follower
    } else {
        target
    };
    let Some(i) = resolve(world, target, rng).await else {
        return "roll back data dir: no such server".into();
    };
    if let Some(&damaged) = world.damaged.all().first() {
        // A rolled-back member lost state it acknowledged, as a damaged one did: two would
        // leave no intact majority. And a damaged disk may rightly keep its own member
        // from starting, whatever the copy holds.
        return format!(
            "roll back {}'s data dir: skipped, {}'s disk is damaged",
            world.servers[i].name, world.servers[damaged].name
        );
    }
    let log = world.operator_log.clone();
    crate::operator::rollback_data_dir(world, i, hold, &log).await
}

pub(super) async fn inject_lower_quota(
    world: &mut World,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "lower quota: no such server".into();
    };
    let room_bytes = rng.gen_range(0..2 * 1024);
    crate::operator::lower_quota(world, i, room_bytes, hold).await
}

pub(super) async fn inject_move_member(
    world: &mut World,
    target: Target,
    rng: &mut impl Rng,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "move member: no such server".into();
    };
    if world.damaged.contains(i) {
        // A move keeps the data dir, which may rightly keep it from starting.
        return format!(
            "move member: skipped, {}'s disk is damaged",
            world.servers[i].name
        );
    }
    let log = world.operator_log.clone();
    crate::operator::move_member(world, i, &log).await
}

pub(super) async fn inject_remove_and_add_again(
    world: &mut World,
    target: Target,
    rng: &mut impl Rng,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "remove and add again: no such server".into();
    };
    let log = world.operator_log.clone();
    crate::operator::remove_and_add_again(world, i, &log).await
}

pub(super) async fn inject_diverge(
    world: &mut World,
    kind: FaultKind,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = damage_target(world, target, rng).await else {
        return "diverge: no such server".into();
    };
    let check = if kind == FaultKind::DivergeCaughtAtStart {
        crate::operator::DivergenceCheck::AtStart
    } else {
        crate::operator::DivergenceCheck::Periodic { within: hold }
    };
    let log = world.operator_log.clone();
    crate::operator::diverge(world, i, check, &log).await
}
