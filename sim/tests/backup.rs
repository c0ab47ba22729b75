//! A cluster restored from a backup taken mid-run, under the simulator with the real server
//! code: the backup is a member's engine at its last durable commit written as etcd's file
//! (`keel_net::backup::etcd_file`), every member's disk is restored from it through the
//! same code as `keel snapshot restore`, and the cluster starts again. A watcher that
//! follows the cluster as Kubernetes' informers do (list, then watch from the next
//! revision, list again when told its revision was compacted) must end with exactly the
//! cluster's state: with `--bump-revision --mark-compacted` it is told to list again;
//! without, the restored cluster hands out again revisions the watcher saw with other
//! content, and it silently misses writes (run with `KEEL_BACKUP_NO_BUMP=1` to see it fail).
#![cfg(madsim)]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::mvcc::{Store, StoreConfig};
use keel_core::node::backup_of_view;
use keel_net::backup::{etcd_file, restore};
use keel_net::proto::etcdserverpb::kv_client::KvClient;
use keel_net::proto::etcdserverpb::watch_client::WatchClient;
use keel_net::proto::etcdserverpb::{
    watch_request, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, WatchCreateRequest,
    WatchRequest,
};
use keel_net::proto::mvccpb::event::EventType;
use keel_sim::world::{World, WorldConfig};
use keel_storage::RedbEngine;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// What a watcher that lists and watches believes the keyspace is.
#[derive(Debug, Default)]
struct Informer {
    state: BTreeMap<String, String>,
    revision: i64,
    lists: u32,
}

fn text_pair(key: &[u8], value: &[u8]) -> (String, String) {
    (
        String::from_utf8_lossy(key).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    )
}

async fn range_all(url: &str, revision: i64) -> Result<RangeResponse, tonic::Status> {
    let mut client = KvClient::connect(url.to_string())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(client
        .range(RangeRequest {
            key: vec![0].into(),
            range_end: vec![0].into(),
            revision,
            ..Default::default()
        })
        .await?
        .into_inner())
}

async fn list(urls: &[String], informer: &Mutex<Informer>) {
    for attempt in 0.. {
        let url = &urls[attempt % urls.len()];
        if let Ok(Ok(listed)) =
            tokio::time::timeout(Duration::from_secs(2), range_all(url, 0)).await
        {
            let mut informer = informer.lock().unwrap();
            informer.state = listed
                .kvs
                .into_iter()
                .map(|kv| text_pair(&kv.key, &kv.value))
                .collect();
            informer.revision = listed.header.map_or(0, |h| h.revision);
            informer.lists += 1;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One watch stream from the informer's next revision until it breaks or is compacted
/// (then: list again).
async fn watch_once(url: &str, urls: &[String], informer: &Mutex<Informer>) -> Option<()> {
    let start_revision = informer.lock().unwrap().revision + 1;
    let mut client = WatchClient::connect(url.to_string()).await.ok()?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: vec![0].into(),
                range_end: vec![0].into(),
                start_revision,
                ..Default::default()
            },
        )),
    })
    .await
    .ok()?;
    let mut stream = client
        .watch(ReceiverStream::new(rx))
        .await
        .ok()?
        .into_inner();
    while let Ok(Some(response)) = stream.message().await {
        if response.compact_revision > 0 {
            list(urls, informer).await;
            return Some(());
        }
        let mut informer = informer.lock().unwrap();
        for event in response.events {
            let kv = event.kv.unwrap_or_default();
            if event.r#type == EventType::Delete as i32 {
                informer.state.remove(&text_pair(&kv.key, &kv.value).0);
            } else {
                let (key, value) = text_pair(&kv.key, &kv.value);
                informer.state.insert(key, value);
            }
            informer.revision = informer.revision.max(kv.mod_revision);
        }
    }
    drop(tx);
    None
}

async fn follow(urls: Vec<String>, informer: Arc<Mutex<Informer>>, stop: Arc<AtomicBool>) {
    list(&urls, &informer).await;
    let mut next = 0;
    while !stop.load(Ordering::SeqCst) {
        let url = urls[next % urls.len()].clone();
        next += 1;
        let _ =
            tokio::time::timeout(Duration::from_secs(3), watch_once(&url, &urls, &informer)).await;
    }
}

async fn write(urls: &[String], key: &str, value: Option<&str>) {
    for attempt in 0..400 {
        let url = urls[attempt % urls.len()].clone();
        let done = tokio::time::timeout(Duration::from_secs(2), async {
            let mut client = KvClient::connect(url).await.ok()?;
            match value {
                Some(value) => client
                    .put(PutRequest {
                        key: key.as_bytes().to_vec().into(),
                        value: value.as_bytes().to_vec().into(),
                        ..Default::default()
                    })
                    .await
                    .ok()
                    .map(|_| ()),
                None => client
                    .delete_range(DeleteRangeRequest {
                        key: key.as_bytes().to_vec().into(),
                        ..Default::default()
                    })
                    .await
                    .ok()
                    .map(|_| ()),
            }
        })
        .await;
        if matches!(done, Ok(Some(()))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("writing {key} never succeeded");
}

/// The cluster's revision, read linearizably.
async fn current_revision(urls: &[String]) -> i64 {
    for attempt in 0..400 {
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(2),
            range_all(&urls[attempt % urls.len()], 0),
        )
        .await
        {
            return r.header.map_or(0, |h| h.revision);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no read succeeded");
}

async fn caught_up(urls: &[String], informer: &Mutex<Informer>) -> i64 {
    let target = current_revision(urls).await;
    for _ in 0..600 {
        if informer.lock().unwrap().revision >= target {
            return target;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the informer never reached revision {target}: {informer:?}");
}

#[madsim::test]
async fn a_cluster_restored_with_a_bumped_revision_keeps_its_watchers_right() {
    let seed = madsim::runtime::Handle::current().seed();
    let bump = std::env::var_os("KEEL_BACKUP_NO_BUMP").is_none();
    let mut world = World::start(WorldConfig::new(3, seed));
    let urls: Vec<String> = world.servers.iter().map(|s| s.client_url()).collect();
    let client = world.client_node("client");
    let informer = Arc::new(Mutex::new(Informer::default()));
    let stop = Arc::new(AtomicBool::new(false));
    client.spawn(follow(urls.clone(), informer.clone(), stop.clone()));

    let (u, i) = (urls.clone(), informer.clone());
    client
        .spawn(async move {
            for n in 0..20 {
                write(&u, &format!("k{n}"), Some(&format!("before-{n}"))).await;
            }
            caught_up(&u, &i).await;
        })
        .await
        .unwrap();
    // Every member's engine commits within its batch interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let copy = world.disk(0).unwrap().copy_as_crashed();
    let engine = RedbEngine::open(copy, 8 << 20).unwrap();
    let store = Store::open(Box::new(engine), StoreConfig::default()).unwrap();
    let backup = backup_of_view(store.view().unwrap(), StoreConfig::default()).unwrap();
    let backup_revision = backup.store.current_revision();
    let file =
        std::env::temp_dir().join(format!("keel-sim-backup-{}-{seed}.db", std::process::id()));
    let _ = std::fs::remove_file(&file);
    etcd_file::write(&file, &backup, "3.5.0").unwrap();

    // Writes after the backup: the restore loses them, and the watcher saw them.
    let (u, i) = (urls.clone(), informer.clone());
    let seen = client
        .spawn(async move {
            for n in 20..40 {
                write(&u, &format!("k{n}"), Some(&format!("lost-{n}"))).await;
            }
            write(&u, "k0", None).await;
            caught_up(&u, &i).await
        })
        .await
        .unwrap();
    assert!(
        seen > backup_revision + 20,
        "{seen} after {backup_revision}"
    );

    for index in 0..3 {
        world.crash(index);
    }
    for index in 0..3 {
        let flags = world.flags(index);
        let plan = restore::RestorePlan {
            member_id: flags.member_id,
            members: flags.initial_members.clone(),
            bump_revision: if bump { 1000 } else { 0 },
            mark_compacted: bump,
        };
        let disk = world.empty_disk(index);
        let restored = restore::restore_to_disk(disk.clone(), &plan, &file).unwrap();
        assert_eq!(
            restored.revision,
            backup_revision + if bump { 1000 } else { 0 }
        );
        world.replace_disk(index, disk);
    }
    let _ = std::fs::remove_file(&file);
    for index in 0..3 {
        world.restart(index);
    }

    // New writes, past every revision the watcher saw before the restore.
    let (u, i, s) = (urls.clone(), informer.clone(), stop.clone());
    client
        .spawn(async move {
            for n in 0..30 {
                write(&u, &format!("new{n}"), Some(&format!("after-{n}"))).await;
            }
            let last = caught_up(&u, &i).await;
            s.store(true, Ordering::SeqCst);
            let truth = range_all(&u[0], last).await.unwrap();
            let truth: BTreeMap<String, String> = truth
                .kvs
                .into_iter()
                .map(|kv| text_pair(&kv.key, &kv.value))
                .collect();
            let informer = i.lock().unwrap();
            assert_eq!(
                informer.state, truth,
                "seed {seed}: the watcher's keyspace differs from the cluster's at revision \
                 {last} (replay: RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim \
                 MADSIM_TEST_SEED={seed} cargo test -p keel-sim --test backup)"
            );
            assert!(informer.lists >= 2, "told to list again: {informer:?}");
            assert!(truth.contains_key("k0"), "the backup's k0 is back");
            assert!(
                !truth.contains_key("k25"),
                "writes after the backup are gone"
            );
        })
        .await
        .unwrap();
}
