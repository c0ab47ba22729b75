//! Network faults: partitions, an isolated leader, one-way and random loss, clogged links
//! in turn, a bridge between two halves, a slow network.

use std::time::Duration;

use madsim::net::NetSim;
use rand::Rng;

use crate::world::{World, NORMAL_LATENCY};

use super::{resolve, shuffle, Servers, Target};

pub(super) async fn inject_partition(
    servers: &Servers,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let n = servers.ids.len();
    let net = &servers.net;
    let ids = &servers.ids;
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, rng);
    let split = rng.gen_range(1..n);
    let (a, b) = order.split_at(split);
    cut_between(net, ids, a, b, hold).await;
    let names = |g: &[usize]| {
        g.iter()
            .map(|&i| servers.name(i))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!("partition [{}] | [{}] for {hold:?}", names(a), names(b))
}

pub(super) async fn inject_crash_successor_of_isolated_leader(
    world: &mut World,
    servers: &Servers,
    rng: &mut impl Rng,
    hold: Duration,
    clients_on_old_leader: bool,
) -> String {
    let n = servers.ids.len();
    let net = &servers.net;
    let ids = &servers.ids;
    let Some(old) = resolve(world, Target::Leader, rng).await else {
        return "crash successor: no leader".into();
    };
    let mut links: Vec<(madsim::task::NodeId, madsim::task::NodeId)> = (0..n)
        .filter(|&i| i != old)
        .flat_map(|i| [(ids[old], ids[i]), (ids[i], ids[old])])
        .collect();
    if clients_on_old_leader {
        let others: Vec<_> = (0..n).filter(|&i| i != old).map(|i| ids[i]).collect();
        links.extend(world.client_links_to(&others));
    }
    for &(from, to) in &links {
        net.clog_link(from, to);
    }
    let successor = successor_committing(world, old, hold).await;
    if let Some(s) = successor {
        world.crash(s);
    }
    // What the crashed successor had sent the old leader is lost with it: the simulated
    // network delivers a clogged link's data once it opens, and the successor's first
    // Append would repair the stale log before it could stand for election. Its links to
    // the old leader open only once it is back, when that data is of a term long past.
    let successor_link = |&(from, to): &(madsim::task::NodeId, madsim::task::NodeId)| {
        successor
            .is_some_and(|s| (from, to) == (ids[old], ids[s]) || (from, to) == (ids[s], ids[old]))
    };
    let (held, opened): (Vec<_>, Vec<_>) = links.iter().partition(|l| successor_link(l));
    for &(from, to) in opened {
        net.unclog_link(from, to);
    }
    tokio::time::sleep(hold).await;
    let what = match successor {
        Some(s) => {
            world.restart(s);
            format!("crashed successor {}", servers.name(s))
        }
        None => "no successor committed".to_string(),
    };
    for &(from, to) in held {
        net.unclog_link(from, to);
    }
    let clients = if clients_on_old_leader {
        " (clients reaching only it)"
    } else {
        ""
    };
    format!(
        "isolate leader {}{clients} until a successor commits: {what}",
        servers.name(old)
    )
}

pub(super) async fn inject_isolate_leader(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let net = &servers.net;
    let ids = &servers.ids;
    let target = if target == Target::Any {
        Target::Leader
    } else {
        target
    };
    let Some(leader) = resolve(world, target, rng).await else {
        return "isolate leader: none".into();
    };
    for (i, &id) in ids.iter().enumerate() {
        if i != leader {
            net.clog_link(ids[leader], id);
            net.clog_link(id, ids[leader]);
        }
    }
    tokio::time::sleep(hold).await;
    for (i, &id) in ids.iter().enumerate() {
        if i != leader {
            net.unclog_link(ids[leader], id);
            net.unclog_link(id, ids[leader]);
        }
    }
    format!("isolate leader {} for {hold:?}", servers.name(leader))
}

pub(super) async fn inject_one_way_loss(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let n = servers.ids.len();
    let net = &servers.net;
    let ids = &servers.ids;
    let Some(from) = resolve(world, target, rng).await else {
        return "one-way loss: no such server".into();
    };
    let to = (from + rng.gen_range(1..n)) % n;
    net.clog_link(ids[from], ids[to]);
    tokio::time::sleep(hold).await;
    net.unclog_link(ids[from], ids[to]);
    format!(
        "one-way loss {} -> {} for {hold:?}",
        servers.name(from),
        servers.name(to)
    )
}

pub(super) async fn inject_swizzle_clog(
    servers: &Servers,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let n = servers.ids.len();
    let net = &servers.net;
    let ids = &servers.ids;
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, rng);
    let step = hold / (2 * n as u32).max(1);
    for &i in &order {
        net.clog_node(ids[i]);
        tokio::time::sleep(step).await;
    }
    for &i in order.iter().rev() {
        net.unclog_node(ids[i]);
        tokio::time::sleep(step).await;
    }
    let names: Vec<String> = order.iter().map(|&i| servers.name(i)).collect();
    format!("swizzle-clog {} over {hold:?}", names.join(" "))
}

pub(super) async fn inject_packet_loss(
    servers: &Servers,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let net = &servers.net;
    let rate = [0.01, 0.05, 0.2][rng.gen_range(0..3)];
    net.update_config(|c| c.packet_loss_rate = rate);
    tokio::time::sleep(hold).await;
    net.update_config(|c| c.packet_loss_rate = 0.0);
    format!("packet loss {rate} for {hold:?}")
}

pub(super) async fn inject_bridge(servers: &Servers, rng: &mut impl Rng, hold: Duration) -> String {
    let n = servers.ids.len();
    let net = &servers.net;
    let ids = &servers.ids;
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, rng);
    let (bridge, rest) = order.split_at(1);
    let (a, b) = rest.split_at(rest.len() / 2);
    cut_between(net, ids, a, b, hold).await;
    let names = |g: &[usize]| {
        g.iter()
            .map(|&i| servers.name(i))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "bridge [{}] - {} - [{}] for {hold:?}",
        names(a),
        servers.name(bridge[0]),
        names(b)
    )
}

pub(super) async fn inject_slow_network(servers: &Servers, hold: Duration) -> String {
    let net = &servers.net;
    net.update_config(|c| {
        c.send_latency = Duration::from_millis(10)..Duration::from_millis(150);
    });
    tokio::time::sleep(hold).await;
    net.update_config(|c| c.send_latency = NORMAL_LATENCY);
    format!("slow network for {hold:?}")
}

/// Waits up to `within` for a leader other than server `old` to commit an entry of its own
/// term, in a term after any seen so far; its server index.
pub(super) async fn successor_committing(
    world: &World,
    old: usize,
    within: Duration,
) -> Option<usize> {
    let old_id = world.servers[old].config.member_id;
    let seen_term = world.invariants.committing_leader().map_or(0, |(_, t)| t);
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Some((id, term)) = world.invariants.committing_leader() {
            if term > seen_term && id != old_id {
                return world.servers.iter().position(|s| s.config.member_id == id);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// No message passes between a server of `a` and one of `b` for `hold`.
pub(super) async fn cut_between(
    net: &NetSim,
    ids: &[madsim::task::NodeId],
    a: &[usize],
    b: &[usize],
    hold: Duration,
) {
    let pairs = || {
        a.iter()
            .flat_map(|&x| b.iter().map(move |&y| (ids[x], ids[y])))
    };
    for (x, y) in pairs() {
        net.clog_link(x, y);
        net.clog_link(y, x);
    }
    tokio::time::sleep(hold).await;
    for (x, y) in pairs() {
        net.unclog_link(x, y);
        net.unclog_link(y, x);
    }
}
