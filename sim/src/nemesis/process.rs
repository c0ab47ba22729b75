//! Process faults: crashes (one member, the leader, all), pauses, clocks that drift or leap.

use std::time::Duration;

use rand::Rng;

use crate::world::World;

use super::{crash_for, resolve, Servers, Target};

pub(super) async fn inject_crash(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "crash: no such server".into();
    };
    crash_for(world, &[i], hold).await;
    format!("crash {} for {hold:?}", servers.name(i))
}

pub(super) async fn inject_crash_leader(
    world: &mut World,
    servers: &Servers,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(leader) = resolve(world, Target::Leader, rng).await else {
        return "crash leader: none".into();
    };
    crash_for(world, &[leader], hold).await;
    format!("crash leader {} for {hold:?}", servers.name(leader))
}

pub(super) async fn inject_crash_all(
    world: &mut World,
    servers: &Servers,
    hold: Duration,
) -> String {
    let n = servers.ids.len();
    let all: Vec<usize> = (0..n).collect();
    crash_for(world, &all, hold).await;
    format!("crash all for {hold:?}")
}

pub(super) async fn inject_pause(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let ids = &servers.ids;
    let Some(i) = resolve(world, target, rng).await else {
        return "pause: no such server".into();
    };
    let handle = madsim::runtime::Handle::current();
    handle.pause(ids[i]);
    tokio::time::sleep(hold).await;
    handle.resume(ids[i]);
    format!("pause {} for {hold:?}", servers.name(i))
}

pub(super) async fn inject_clock_drift(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "clock drift: no such server".into();
    };
    let rate_ppm = rng.gen_range(-200_000..=200_000);
    world.servers[i].clock.set_rate_ppm(rate_ppm);
    tokio::time::sleep(hold).await;
    world.servers[i].clock.set_rate_ppm(0);
    format!(
        "clock of {} runs {rate_ppm:+} ppm for {hold:?}",
        servers.name(i)
    )
}

pub(super) async fn inject_clock_leap(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let target = if target == Target::Any && rng.gen_bool(0.5) {
        Target::Leader
    } else {
        target
    };
    let Some(i) = resolve(world, target, rng).await else {
        return "clock leap: no such server".into();
    };
    let leap = Duration::from_millis(rng.gen_range(1_000..60_000));
    world.servers[i].clock.leap(leap);
    tokio::time::sleep(hold).await;
    format!("clock of {} leaps {leap:?}", servers.name(i))
}
