//! Disk faults: bit rot in the WAL, failing reads, a full disk, power lost at a sync,
//! failing syncs; and what a member must recover after each.

use std::time::Duration;

use keel_storage::Faults;
use rand::Rng;

use crate::world::World;

use super::{damage_target, resolve, Servers, Target};

pub(super) async fn inject_corrupt_disk(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = damage_target(world, target, rng).await else {
        return "corrupt disk: no such server".into();
    };
    world.crash(i);
    expect_durable_log_recovered(world, i);
    let flipped = flip_a_wal_bit(world, i, rng);
    tokio::time::sleep(hold).await;
    world.damaged.insert(i);
    world.restart(i);
    format!(
        "bit flip in {}'s WAL ({flipped}), then reboot",
        servers.name(i)
    )
}

pub(super) async fn inject_read_errors(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = damage_target(world, target, rng).await else {
        return "read errors: no such server".into();
    };
    world.crash(i);
    world.damaged.insert(i);
    world.set_disk_faults(
        i,
        Faults {
            read_error_probability: 0.05,
            ..world.config.faults
        },
    );
    world.restart(i);
    tokio::time::sleep(hold).await;
    // New reads succeed again; the sectors that failed stay bad.
    world.set_disk_faults(i, world.config.faults);
    format!("read errors on {} for {hold:?}", servers.name(i))
}

pub(super) async fn inject_disk_full(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "disk full: no such server".into();
    };
    let used = world.disk(i).map_or(0, |d| d.used_bytes());
    let room = rng.gen_range(0..2 * 1024 * 1024);
    world.set_disk_faults(
        i,
        Faults {
            quota_bytes: Some(used + room),
            ..world.config.faults
        },
    );
    tokio::time::sleep(hold).await;
    // A server that hit the quota has stopped; reboot it with room again.
    world.crash(i);
    world.set_disk_faults(i, world.config.faults);
    world.restart(i);
    format!(
        "disk of {} full after {room} more bytes for {hold:?}, then reboot",
        servers.name(i)
    )
}

pub(super) async fn inject_power_loss_at_sync(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "power loss: no such server".into();
    };
    let after_syncs = rng.gen_range(0..4);
    let outcome = lose_power_at_sync(world, i, after_syncs, hold).await;
    tokio::time::sleep(hold).await;
    world.restart(i);
    format!(
        "power loss at {}'s fsync after {after_syncs} more ({outcome}), then reboot",
        servers.name(i)
    )
}

pub(super) async fn inject_sync_errors(
    world: &mut World,
    servers: &Servers,
    target: Target,
    rng: &mut impl Rng,
    hold: Duration,
) -> String {
    let Some(i) = resolve(world, target, rng).await else {
        return "fsync errors: no such server".into();
    };
    world.set_disk_faults(
        i,
        Faults {
            sync_error_probability: 0.5,
            ..world.config.faults
        },
    );
    tokio::time::sleep(hold).await;
    // A node whose fsync failed has stopped; reboot it on a disk that works again.
    world.crash(i);
    world.set_disk_faults(i, world.config.faults);
    world.restart(i);
    format!(
        "fsync errors on {} for {hold:?}, then reboot",
        servers.name(i)
    )
}

/// Arms the power loss at server `server`'s fsync after `after_syncs` more and waits up to
/// `within` for it; the server is down afterwards either way (crashed from outside if no
/// such sync came).
pub(super) async fn lose_power_at_sync(
    world: &mut World,
    server: usize,
    after_syncs: u64,
    within: Duration,
) -> &'static str {
    let Some(disk) = world.disk(server) else {
        return "no disk";
    };
    let before = disk.stats().power_losses_at_sync;
    disk.lose_power_at_sync(Some(after_syncs));
    let deadline = tokio::time::Instant::now() + within;
    let fired = loop {
        if disk.stats().power_losses_at_sync > before {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    disk.lose_power_at_sync(None);
    world.crash(server);
    if fired {
        "during an fsync"
    } else {
        "no fsync came: crashed"
    }
}

/// Tells the invariants how far the crashed server's WAL reaches before it is damaged: what
/// recovery finds on an undamaged copy of its disk.
pub(super) fn expect_durable_log_recovered(world: &World, server: usize) {
    let Some(disk) = world.disk(server) else {
        return;
    };
    let options = keel_storage::StorageOptions {
        segment_size_bytes: world.config.segment_size_bytes,
        ..keel_storage::StorageOptions::default()
    };
    let Ok((_, recovered)) = keel_storage::Storage::open(disk.copy_as_crashed(), options) else {
        return;
    };
    let Some(identity) = recovered.identity else {
        return;
    };
    let snapshot_index = recovered.snapshot.as_ref().map_or(0, |s| s.meta.index);
    let last_index = recovered.entries.last().map_or(snapshot_index, |e| e.index);
    world
        .invariants
        .expect_recovery(identity.member_id, last_index);
}

/// Flips one bit in synced WAL data that a crash cannot have torn: inside a record that a
/// later complete record follows, in the newest segment (where corruption could be taken
/// for a torn tail) or the largest one; says where.
pub(super) fn flip_a_wal_bit(world: &World, server: usize, rng: &mut impl Rng) -> String {
    use keel_storage::Disk;
    let Some(mut disk) = world.disk(server) else {
        return "no disk".into();
    };
    let Ok(names) = disk.list() else {
        return "unlistable disk".into();
    };
    let segments: Vec<(usize, String)> = names
        .iter()
        .filter(|n| n.ends_with(".wal"))
        .filter_map(|n| disk.contents(n).map(|c| (used_bytes(&c), n.clone())))
        .collect();
    let newest = segments.iter().max_by(|a, b| a.1.cmp(&b.1));
    let largest = segments.iter().max();
    let chosen = if rng.gen_bool(0.5) { newest } else { largest };
    let Some((used, name)) = chosen.filter(|(used, _)| *used > 64).cloned() else {
        return "no WAL data".into();
    };
    let starts = disk
        .contents(&name)
        .map(|c| keel_storage::record_starts(&c))
        .unwrap_or_default();
    let offset = if starts.len() >= 2 {
        // Half the time one of the last few records: written in the segment's last sync,
        // no later record proves they were synced, so only their checksum tells corruption
        // from a torn write.
        let last = starts.len() - 2;
        let first = if rng.gen_bool(0.5) {
            last.saturating_sub(8)
        } else {
            0
        };
        let record = rng.gen_range(first..=last);
        rng.gen_range(starts[record]..starts[record + 1]) as u64
    } else {
        rng.gen_range(0..used / 2) as u64
    };
    let bit = rng.gen_range(0..8u8);
    match disk.flip_bit(&name, offset, bit) {
        Ok(()) => format!("{name} byte {offset} bit {bit}"),
        Err(error) => format!("flip failed: {error}"),
    }
}

/// Bytes up to the last non-zero one (segments are preallocated with zeros).
pub(super) fn used_bytes(contents: &[u8]) -> usize {
    contents.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}
