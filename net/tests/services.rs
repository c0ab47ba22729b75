//! The Watch, Lease, Cluster and Maintenance services of a real single-node server started
//! in-process on loopback, driven through etcd's generated gRPC clients. Waiting is polling
//! with a deadline, never a fixed sleep.

#![cfg(not(madsim))]
// In tests a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clap::Parser;
use keel_net::config::ServeArgs;
use keel_net::proto::etcdserverpb as pb;
use keel_net::proto::etcdserverpb::cluster_client::ClusterClient;
use keel_net::proto::etcdserverpb::kv_client::KvClient;
use keel_net::proto::etcdserverpb::lease_client::LeaseClient;
use keel_net::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_net::proto::etcdserverpb::watch_client::WatchClient;
use keel_net::proto::mvccpb;
use keel_net::server::{self, RunningServer};
use keel_storage::FsDisk;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

struct TestServer {
    running: Option<RunningServer>,
    channel: Channel,
    member_id: u64,
    peer_url: String,
    client_url: String,
    _dir: tempfile::TempDir,
}

/// Listeners bound before start-up, so every member knows the others' URLs.
struct Listeners {
    name: String,
    client: TcpListener,
    peer: TcpListener,
}

impl Listeners {
    async fn bind(name: &str) -> Listeners {
        Listeners {
            name: name.to_string(),
            client: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            peer: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn client_url(&self) -> String {
        format!("http://{}", self.client.local_addr().unwrap())
    }

    fn peer_url(&self) -> String {
        format!("http://{}", self.peer.local_addr().unwrap())
    }
}

impl TestServer {
    /// A single-member cluster with a leader.
    async fn start() -> TestServer {
        TestServer::start_with(&[]).await
    }

    /// The same with more command-line flags.
    async fn start_with(flags: &[&str]) -> TestServer {
        let listeners = Listeners::bind("t").await;
        let cluster = format!("t={}", listeners.peer_url());
        let server = TestServer::start_member(listeners, &cluster, flags).await;
        server.wait_for_leader().await;
        server
    }

    /// Members of one cluster, started together; not waiting for a leader.
    async fn start_cluster(size: usize) -> Vec<TestServer> {
        let mut all = Vec::new();
        for i in 1..=size {
            all.push(Listeners::bind(&format!("m{i}")).await);
        }
        let cluster: Vec<String> = all
            .iter()
            .map(|l| format!("{}={}", l.name, l.peer_url()))
            .collect();
        let cluster = cluster.join(",");
        let mut servers = Vec::new();
        for listeners in all {
            servers.push(TestServer::start_member(listeners, &cluster, &[]).await);
        }
        servers
    }

    async fn start_member(listeners: Listeners, cluster: &str, flags: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let client_url = listeners.client_url();
        let peer_url = listeners.peer_url();
        let data_dir = dir.path().join("member.keel");
        let mut argv = vec![
            "keel",
            "--name",
            &listeners.name,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            cluster,
            "--heartbeat-interval",
            "20",
            "--election-timeout",
            "200",
        ];
        argv.extend_from_slice(flags);
        let config = Cli::try_parse_from(argv).unwrap().serve.resolve().unwrap();
        let disk = FsDisk::open(&data_dir).unwrap();
        let running = server::start(
            &config,
            disk,
            vec![server::Listener::plain(listeners.client)],
            vec![server::Listener::plain(listeners.peer)],
        )
        .await
        .unwrap();
        let channel = Channel::from_shared(client_url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        TestServer {
            member_id: running.member_id,
            running: Some(running),
            channel,
            peer_url,
            client_url,
            _dir: dir,
        }
    }

    /// This member's view of the leader, once it has one.
    async fn leader(&self) -> u64 {
        let maintenance = self.maintenance();
        poll("a leader", || {
            let mut maintenance = maintenance.clone();
            async move {
                let status = maintenance.status(pb::StatusRequest {}).await.ok()?;
                let leader = status.into_inner().leader;
                (leader != 0).then_some(leader)
            }
        })
        .await
    }

    async fn wait_for_leader(&self) {
        self.leader().await;
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone())
    }

    fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }

    fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone())
    }

    fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone())
    }

    async fn put(&self, key: &str, value: &[u8], lease: i64) -> i64 {
        let request = pb::PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.to_vec().into(),
            lease,
            ..pb::PutRequest::default()
        };
        let response = self.kv().put(request).await.unwrap().into_inner();
        response.header.unwrap().revision
    }

    async fn count(&self, key: &str) -> i64 {
        let request = pb::RangeRequest {
            key: key.as_bytes().to_vec().into(),
            count_only: true,
            ..pb::RangeRequest::default()
        };
        self.kv().range(request).await.unwrap().into_inner().count
    }

    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }
}

/// Polls `check` until it gives `Some`, or fails the test with `what` at the deadline.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// An open watch stream: requests in, responses out.
struct WatchStream {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: Streaming<pb::WatchResponse>,
}

impl WatchStream {
    async fn open(server: &TestServer) -> WatchStream {
        let (requests, outgoing) = mpsc::channel(16);
        let responses = server
            .watch()
            .watch(ReceiverStream::new(outgoing))
            .await
            .unwrap()
            .into_inner();
        WatchStream {
            requests,
            responses,
        }
    }

    async fn send(&self, request: pb::watch_request::RequestUnion) {
        let request = pb::WatchRequest {
            request_union: Some(request),
        };
        self.requests.send(request).await.unwrap();
    }

    async fn create(&self, create: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(create))
            .await;
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(DEADLINE, self.responses.message())
            .await
            .expect("a watch response in time")
            .unwrap()
            .expect("the stream is open")
    }

    /// The events of the responses until `count` events arrived.
    async fn event_list(&mut self, count: usize) -> Vec<mvccpb::Event> {
        let responses = self.events(count).await;
        responses.into_iter().flat_map(|r| r.events).collect()
    }

    /// Responses until `count` events arrived.
    async fn events(&mut self, count: usize) -> Vec<pb::WatchResponse> {
        let mut responses = Vec::new();
        let mut seen = 0;
        while seen < count {
            let response = self.next().await;
            seen += response.events.len();
            responses.push(response);
        }
        responses
    }
}

fn create(key: &str, start_revision: i64) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.as_bytes().to_vec().into(),
        start_revision,
        ..pb::WatchCreateRequest::default()
    }
}

fn value_of(kv: &Option<mvccpb::KeyValue>) -> Vec<u8> {
    kv.as_ref().map(|kv| kv.value.to_vec()).unwrap_or_default()
}

#[tokio::test]
async fn watch_from_a_past_revision_with_prev_kv_then_progress_and_cancel() {
    let server = TestServer::start().await;
    let first = server.put("foo", b"1", 0).await;
    server.put("foo", b"2", 0).await;
    server.put("bar", b"x", 0).await;
    let mut watch = WatchStream::open(&server).await;
    watch
        .create(pb::WatchCreateRequest {
            prev_kv: true,
            ..create("foo", first)
        })
        .await;
    let created = watch.next().await;
    assert!(created.created && !created.canceled);
    let header = created.header.unwrap();
    assert_eq!(header.member_id, server.member_id);
    assert_ne!(header.cluster_id, 0);
    assert!(header.raft_term >= 1);
    let watch_id = created.watch_id;

    let events = watch.event_list(2).await;
    assert_eq!(value_of(&events[0].kv), b"1");
    assert!(events[0].prev_kv.is_none());
    assert_eq!(value_of(&events[1].kv), b"2");
    assert_eq!(value_of(&events[1].prev_kv), b"1");

    // A live change: the store reads the previous value because this watcher asked for it.
    let last = server.put("foo", b"3", 0).await;
    let live = watch.event_list(1).await;
    assert_eq!(value_of(&live[0].kv), b"3");
    assert_eq!(value_of(&live[0].prev_kv), b"2");

    let progress = pb::WatchProgressRequest {};
    watch
        .send(pb::watch_request::RequestUnion::ProgressRequest(progress))
        .await;
    let progress = watch.next().await;
    assert_eq!(progress.watch_id, -1);
    assert!(progress.events.is_empty());
    assert_eq!(progress.header.unwrap().revision, last);

    let cancel = pb::WatchCancelRequest { watch_id };
    watch
        .send(pb::watch_request::RequestUnion::CancelRequest(cancel))
        .await;
    let canceled = watch.next().await;
    assert!(canceled.canceled);
    assert_eq!(canceled.watch_id, watch_id);

    // A new write after the cancel reaches nobody; a new watch from now sees the next one.
    server.put("foo", b"3", 0).await;
    watch.create(create("foo", 0)).await;
    assert!(watch.next().await.created);
    server.put("foo", b"4", 0).await;
    let live = watch.events(1).await;
    assert_eq!(value_of(&live[0].events[0].kv), b"4");
    server.stop().await;
}

#[tokio::test]
async fn watch_filters_and_ids_chosen_by_the_client() {
    let server = TestServer::start().await;
    let mut watch = WatchStream::open(&server).await;
    watch
        .create(pb::WatchCreateRequest {
            watch_id: 100,
            range_end: b"k\xff".to_vec().into(),
            filters: vec![pb::watch_create_request::FilterType::Noput as i32],
            ..create("k", 0)
        })
        .await;
    let created = watch.next().await;
    assert_eq!(created.watch_id, 100);
    // The same id again is refused as etcd refuses it.
    watch
        .create(pb::WatchCreateRequest {
            watch_id: 100,
            ..create("k", 0)
        })
        .await;
    let duplicate = watch.next().await;
    assert!(duplicate.created && duplicate.canceled);
    assert_eq!(duplicate.watch_id, -1);
    assert!(duplicate.cancel_reason.contains("duplicate watch ID"));

    server.put("k1", b"v", 0).await;
    let delete = pb::DeleteRangeRequest {
        key: b"k1".to_vec().into(),
        ..pb::DeleteRangeRequest::default()
    };
    server.kv().delete_range(delete).await.unwrap();
    let events = watch.events(1).await;
    let event = &events[0].events[0];
    assert_eq!(event.r#type, mvccpb::event::EventType::Delete as i32);
    server.stop().await;
}

#[tokio::test]
async fn a_watch_below_the_compaction_is_canceled_with_the_compact_revision() {
    let server = TestServer::start().await;
    let first = server.put("c", b"1", 0).await;
    server.put("c", b"2", 0).await;
    let compact_at = server.put("c", b"3", 0).await;
    let compact = pb::CompactionRequest {
        revision: compact_at,
        physical: true,
    };
    server.kv().compact(compact).await.unwrap();
    let mut watch = WatchStream::open(&server).await;
    watch.create(create("c", first)).await;
    let created = watch.next().await;
    assert!(created.created);
    let canceled = watch.next().await;
    assert!(canceled.canceled);
    assert_eq!(canceled.compact_revision, compact_at);
    assert_eq!(canceled.watch_id, created.watch_id);

    watch.create(create("c", -1)).await;
    let refused = watch.next().await;
    assert!(refused.created && refused.canceled);
    assert_eq!(
        refused.cancel_reason,
        "etcdserver: mvcc: required revision has been compacted"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_large_catch_up_is_split_into_fragments_when_asked() {
    let server = TestServer::start().await;
    let value = vec![b'v'; 200 * 1024];
    let first = server.put("big/0", &value, 0).await;
    for i in 1..12 {
        server.put(&format!("big/{i}"), &value, 0).await;
    }
    let mut watch = WatchStream::open(&server).await;
    watch
        .create(pb::WatchCreateRequest {
            range_end: b"big0".to_vec().into(),
            fragment: true,
            ..create("big/", first)
        })
        .await;
    assert!(watch.next().await.created);
    let responses = watch.events(12).await;
    assert!(responses.len() > 1, "split into fragments");
    let (last, rest) = responses.split_last().unwrap();
    assert!(rest.iter().all(|r| r.fragment));
    assert!(!last.fragment);
    server.stop().await;
}

#[tokio::test]
async fn lease_grant_keep_alive_time_to_live_and_revoke() {
    let server = TestServer::start().await;
    let mut lease = server.lease();
    let grant = pb::LeaseGrantRequest { ttl: 60, id: 0 };
    let granted = lease.lease_grant(grant).await.unwrap().into_inner();
    assert_eq!(granted.ttl, 60);
    let id = granted.id;
    assert_ne!(id, 0);
    assert_eq!(granted.header.unwrap().member_id, server.member_id);
    server.put("leased", b"v", id).await;

    let (requests, outgoing) = mpsc::channel(4);
    let mut answers = lease
        .lease_keep_alive(ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(pb::LeaseKeepAliveRequest { id })
        .await
        .unwrap();
    let renewed = answers.message().await.unwrap().unwrap();
    assert_eq!((renewed.id, renewed.ttl), (id, 60));

    let ask = pb::LeaseTimeToLiveRequest { id, keys: true };
    let ttl = lease.lease_time_to_live(ask).await.unwrap().into_inner();
    assert_eq!(ttl.granted_ttl, 60);
    assert!(ttl.ttl > 50 && ttl.ttl <= 60, "{}", ttl.ttl);
    assert_eq!(ttl.keys, vec![bytes_of("leased")]);

    let leases = lease.lease_leases(pb::LeaseLeasesRequest {}).await.unwrap();
    assert_eq!(leases.into_inner().leases, vec![pb::LeaseStatus { id }]);

    lease
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .unwrap();
    assert_eq!(server.count("leased").await, 0);
    // A revoked lease: keep-alive answers TTL 0, TimeToLive -1, Revoke "not found".
    requests
        .send(pb::LeaseKeepAliveRequest { id })
        .await
        .unwrap();
    let expired = answers.message().await.unwrap().unwrap();
    assert_eq!((expired.id, expired.ttl), (id, 0));
    let ask = pb::LeaseTimeToLiveRequest { id, keys: false };
    let gone = lease.lease_time_to_live(ask).await.unwrap().into_inner();
    assert_eq!(gone.ttl, -1);
    let again = lease
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    assert_eq!(again.message(), "etcdserver: requested lease not found");
    server.stop().await;
}

fn bytes_of(text: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(text.as_bytes())
}

#[tokio::test]
async fn an_expired_lease_deletes_its_keys() {
    let server = TestServer::start().await;
    let grant = pb::LeaseGrantRequest { ttl: 1, id: 0 };
    let granted = server
        .lease()
        .lease_grant(grant)
        .await
        .unwrap()
        .into_inner();
    server.put("short-lived", b"v", granted.id).await;
    assert_eq!(server.count("short-lived").await, 1);
    poll("the lease to expire and take its key", || async {
        (server.count("short-lived").await == 0).then_some(())
    })
    .await;
    let leases = server
        .lease()
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .unwrap();
    assert!(leases.into_inner().leases.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn members_are_listed_added_as_learners_refused_promotion_and_removed() {
    let server = TestServer::start().await;
    let mut cluster = server.cluster();
    let own = poll("this member to publish its client URLs", || {
        let mut cluster = cluster.clone();
        async move {
            let list = cluster.member_list(pb::MemberListRequest::default()).await;
            let members = list.ok()?.into_inner().members;
            members.into_iter().find(|m| !m.client_ur_ls.is_empty())
        }
    })
    .await;
    assert_eq!(own.id, server.member_id);
    assert_eq!(own.name, "t");
    assert_eq!(own.peer_ur_ls, vec![server.peer_url.clone()]);
    assert_eq!(own.client_ur_ls, vec![server.client_url.clone()]);

    let taken = pb::MemberAddRequest {
        peer_ur_ls: vec![server.peer_url.clone()],
        is_learner: true,
    };
    let refused = cluster.member_add(taken).await.unwrap_err();
    assert_eq!(refused.message(), "etcdserver: Peer URLs already exists");
    let bad = pb::MemberAddRequest {
        peer_ur_ls: vec!["127.0.0.1:1".into()],
        is_learner: true,
    };
    let refused = cluster.member_add(bad).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    let learner_url = "http://127.0.0.1:1".to_string();
    let add = pb::MemberAddRequest {
        peer_ur_ls: vec![learner_url.clone()],
        is_learner: true,
    };
    let added = cluster.member_add(add).await.unwrap().into_inner();
    let learner = added.member.unwrap();
    assert!(learner.is_learner);
    assert_eq!(learner.peer_ur_ls, vec![learner_url.clone()]);
    assert_eq!(added.members.len(), 2);

    let promote = pb::MemberPromoteRequest { id: learner.id };
    let refused = cluster.member_promote(promote).await.unwrap_err();
    assert_eq!(
        refused.message(),
        "etcdserver: can only promote a learner member which is in sync with leader"
    );
    let promote = pb::MemberPromoteRequest { id: own.id };
    let refused = cluster.member_promote(promote).await.unwrap_err();
    assert_eq!(
        refused.message(),
        "etcdserver: can only promote a learner member"
    );

    let update = pb::MemberUpdateRequest {
        id: learner.id,
        peer_ur_ls: vec!["http://127.0.0.1:2".into()],
    };
    let updated = cluster.member_update(update).await.unwrap().into_inner();
    let moved = updated.members.iter().find(|m| m.id == learner.id).unwrap();
    assert_eq!(moved.peer_ur_ls, vec!["http://127.0.0.1:2".to_string()]);

    let remove = pb::MemberRemoveRequest { id: learner.id };
    let removed = cluster.member_remove(remove).await.unwrap().into_inner();
    assert_eq!(removed.members.len(), 1);
    let remove = pb::MemberRemoveRequest { id: learner.id };
    let refused = cluster.member_remove(remove).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(refused.message(), "etcdserver: member not found");
    // As in etcd, a member added again on the same URLs is a new member with a new id.
    let again = pb::MemberAddRequest {
        peer_ur_ls: vec![learner_url.clone()],
        is_learner: true,
    };
    let added = cluster.member_add(again).await.unwrap().into_inner();
    let readded = added.member.unwrap();
    assert_ne!(readded.id, learner.id, "a removed id never comes back");
    assert_eq!(readded.peer_ur_ls, vec![learner_url.clone()]);
    let list = pb::MemberListRequest { linearizable: true };
    let listed = cluster.member_list(list).await.unwrap().into_inner();
    assert_eq!(listed.members.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn status_alarms_hashes_and_defragment() {
    let server = TestServer::start().await;
    let revision = server.put("h", b"1", 0).await;
    let mut maintenance = server.maintenance();
    let status = maintenance
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.leader, server.member_id);
    assert!(status.raft_term >= 1);
    assert!(status.raft_applied_index >= 1 && status.raft_index >= status.raft_applied_index);
    assert!(status.db_size > 0);
    assert!(status.errors.is_empty(), "{:?}", status.errors);
    assert!(!status.is_learner);
    assert_eq!(status.header.unwrap().revision, revision);

    let activate = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Activate as i32,
        member_id: server.member_id,
        alarm: pb::AlarmType::Nospace as i32,
    };
    maintenance.alarm(activate).await.unwrap();
    let get = pb::AlarmRequest::default();
    let alarms = maintenance.alarm(get).await.unwrap().into_inner().alarms;
    assert_eq!(alarms.len(), 1);
    let put = pb::PutRequest {
        key: bytes_of("h"),
        value: bytes_of("2"),
        ..pb::PutRequest::default()
    };
    let refused = server.kv().put(put).await.unwrap_err();
    assert_eq!(
        refused.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    let status = maintenance.status(pb::StatusRequest {}).await.unwrap();
    assert_eq!(status.into_inner().errors.len(), 1);
    let deactivate = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Deactivate as i32,
        member_id: server.member_id,
        alarm: pb::AlarmType::Nospace as i32,
    };
    maintenance.alarm(deactivate).await.unwrap();
    let later = server.put("h", b"2", 0).await;

    let at = |revision| pb::HashKvRequest { revision };
    let now = maintenance.hash_kv(at(0)).await.unwrap().into_inner();
    assert_eq!(now.hash_revision, later);
    let same = maintenance.hash_kv(at(later)).await.unwrap().into_inner();
    assert_eq!(now.hash, same.hash);
    let before = maintenance
        .hash_kv(at(revision))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(now.hash, before.hash);
    let whole = maintenance.hash(pb::HashRequest {}).await.unwrap();
    assert_eq!(whole.into_inner().hash, now.hash);
    let future = maintenance.hash_kv(at(later + 10)).await.unwrap_err();
    assert_eq!(future.code(), Code::OutOfRange);

    maintenance
        .defragment(pb::DefragmentRequest {})
        .await
        .unwrap();
    let downgrade = pb::DowngradeRequest::default();
    let refused = maintenance.downgrade(downgrade).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented);
    server.stop().await;
}

/// The operator's clean-up (README, the NOSPACE alarm): delete, compact with `physical`,
/// defragment. The compaction answers once the member's engine has dropped the history
/// (etcd's `physical`), so the one defragment after it rewrites `store.redb` without those
/// pages: the file shrinks, and what the store holds stays. (Answered at once, the
/// compaction left its deletions to the member's ticks, and a defragment run then copied
/// the dropped history.)
#[tokio::test]
async fn defragment_after_a_physical_compaction_shrinks_the_data_file_and_keeps_the_data() {
    let server = TestServer::start().await;
    let big = vec![b'x'; 4096];
    for i in 0..1500 {
        server.put(&format!("big/{i:04}"), &big, 0).await;
    }
    let kept = server.put("kept", b"value", 0).await;
    let delete = pb::DeleteRangeRequest {
        key: bytes_of("big/"),
        range_end: bytes_of("big0"),
        ..pb::DeleteRangeRequest::default()
    };
    let deleted = server.kv().delete_range(delete).await.unwrap().into_inner();
    assert_eq!(deleted.deleted, 1500);
    // Compacted past the delete, so that the tombstones go with the values.
    let revision = server.put("after", b"", 0).await;
    let compact = pb::CompactionRequest {
        revision,
        physical: true,
    };
    server.kv().compact(compact).await.unwrap();
    let mut maintenance = server.maintenance();
    let size = |status: pb::StatusResponse| status.db_size;
    let before = size(
        maintenance
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(
        before > 6_000_000,
        "the file holds the big values: {before}"
    );
    maintenance
        .defragment(pb::DefragmentRequest {})
        .await
        .unwrap();
    let after = size(
        maintenance
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(
        after * 4 < before,
        "the file stays at {after} bytes (from {before})"
    );
    let got = server
        .kv()
        .range(pb::RangeRequest {
            key: bytes_of("kept"),
            ..pb::RangeRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kvs.len(), 1, "{after} bytes");
    assert_eq!(got.kvs[0].mod_revision, kept);
    assert_eq!(got.kvs[0].value, b"value".to_vec());
    server.stop().await;
}

#[tokio::test]
async fn a_snapshot_streams_etcds_database_file_and_its_sha256() {
    let server = TestServer::start().await;
    for i in 0..50 {
        server.put(&format!("s{i}"), &[b'x'; 1024], 0).await;
    }
    let mut stream = server
        .maintenance()
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        messages.push(message);
    }
    let (checksum, chunks) = messages.split_last().unwrap();
    assert!(chunks.len() > 1, "several chunks");
    let remaining: Vec<u64> = chunks.iter().map(|m| m.remaining_bytes).collect();
    assert!(remaining.windows(2).all(|w| w[0] > w[1]), "{remaining:?}");
    assert_eq!(remaining.last(), Some(&0));
    let body: Vec<u8> = chunks.iter().flat_map(|m| m.blob.to_vec()).collect();
    assert!(body.len() > 50 * 1024);
    // A bbolt file as etcd writes it: bbolt's magic in the first meta page, whole pages
    // (etcdctl finds the checksum by the body being whole 512-byte sectors).
    assert_eq!(body[16..20], 0xED0C_DAEDu32.to_le_bytes());
    assert_eq!(body.len() % 4096, 0);
    assert_eq!(checksum.blob.as_ref(), Sha256::digest(&body).as_slice());
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.db");
    std::fs::write(&saved, [body.as_slice(), checksum.blob.as_ref()].concat()).unwrap();
    let status = keel_net::backup::status(&saved).unwrap();
    assert_eq!(status.revision, 51, "the 50 puts' last revision");
    // 50 versions, and the meta, auth, cluster and members rows.
    assert!(status.total_key > 50, "{status:?}");
    server.stop().await;
}

/// Every message of a RangeStream, in order.
async fn range_stream(server: &TestServer, request: pb::RangeRequest) -> Vec<pb::RangeResponse> {
    let mut stream = server
        .kv()
        .range_stream(request)
        .await
        .unwrap()
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        chunks.push(message.range_response.unwrap());
    }
    chunks
}

#[tokio::test]
async fn range_stream_sends_a_prefix_in_chunks_that_merge_into_the_range() {
    let server = TestServer::start().await;
    // 3,000 keys of 1 KiB: many chunks, by count (500) and by size (256 KiB).
    for i in 0..3000 {
        server.put(&format!("r/{i:05}"), &[b'v'; 1024], 0).await;
    }
    server.put("s", b"outside", 0).await;
    let prefix = pb::RangeRequest {
        key: b"r/".to_vec().into(),
        range_end: b"r0".to_vec().into(),
        ..pb::RangeRequest::default()
    };
    let unary = server
        .kv()
        .range(prefix.clone())
        .await
        .unwrap()
        .into_inner();
    let chunks = range_stream(&server, prefix.clone()).await;
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let (last, before) = chunks.split_last().unwrap();
    assert!(before
        .iter()
        .all(|c| c.header.is_none() && c.count == 0 && !c.more));
    let kvs: Vec<_> = chunks.iter().flat_map(|c| c.kvs.clone()).collect();
    assert_eq!(kvs, unary.kvs);
    assert_eq!(last.count, 3000);
    assert_eq!(
        last.header.as_ref().unwrap().revision,
        unary.header.unwrap().revision
    );

    // A limit, keys only: the first 1,500 keys without values, `more` and the full count.
    let limited = pb::RangeRequest {
        limit: 1500,
        keys_only: true,
        ..prefix.clone()
    };
    let chunks = range_stream(&server, limited.clone()).await;
    let unary = server.kv().range(limited).await.unwrap().into_inner();
    let kvs: Vec<_> = chunks.iter().flat_map(|c| c.kvs.clone()).collect();
    assert_eq!(kvs, unary.kvs);
    assert_eq!(kvs.len(), 1500);
    let last = chunks.last().unwrap();
    assert!(last.more && unary.more);
    assert_eq!(last.count, 3000);

    // A sorted request streams too, read whole first.
    let sorted = pb::RangeRequest {
        sort_order: pb::range_request::SortOrder::Descend as i32,
        ..prefix
    };
    let chunks = range_stream(&server, sorted.clone()).await;
    let unary = server.kv().range(sorted).await.unwrap().into_inner();
    let kvs: Vec<_> = chunks.iter().flat_map(|c| c.kvs.clone()).collect();
    assert_eq!(kvs, unary.kvs);
    assert_eq!(kvs.first().unwrap().key.as_ref(), b"r/02999");

    // etcd's errors, as Range's.
    let future = pb::RangeRequest {
        key: b"r/".to_vec().into(),
        revision: 1_000_000,
        ..pb::RangeRequest::default()
    };
    let error = server.kv().range_stream(future).await.unwrap_err();
    assert_eq!(
        error.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    server.stop().await;
}

#[tokio::test]
async fn move_leader_on_a_single_node_and_to_strangers() {
    let server = TestServer::start().await;
    let mut maintenance = server.maintenance();
    let to_self = pb::MoveLeaderRequest {
        target_id: server.member_id,
    };
    maintenance.move_leader(to_self).await.unwrap();
    let to_nobody = pb::MoveLeaderRequest { target_id: 12345 };
    let refused = maintenance.move_leader(to_nobody).await.unwrap_err();
    assert_eq!(refused.message(), "etcdserver: bad leader transferee");
    let status = maintenance.status(pb::StatusRequest {}).await.unwrap();
    assert_eq!(status.into_inner().leader, server.member_id);
    server.stop().await;
}

#[tokio::test]
async fn followers_forward_keep_alives_and_ttls_to_the_leader_and_leadership_moves() {
    let servers = TestServer::start_cluster(3).await;
    let leader_id = servers[0].leader().await;
    let follower = servers.iter().find(|s| s.member_id != leader_id).unwrap();
    assert_eq!(follower.leader().await, leader_id);
    let mut lease = follower.lease();
    let grant = pb::LeaseGrantRequest { ttl: 30, id: 0 };
    let id = lease.lease_grant(grant).await.unwrap().into_inner().id;

    let (requests, outgoing) = mpsc::channel(4);
    let mut answers = lease
        .lease_keep_alive(ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(pb::LeaseKeepAliveRequest { id })
        .await
        .unwrap();
    let renewed = answers.message().await.unwrap().unwrap();
    assert_eq!((renewed.id, renewed.ttl), (id, 30));
    assert_eq!(renewed.header.unwrap().member_id, follower.member_id);
    requests
        .send(pb::LeaseKeepAliveRequest { id: id + 1 })
        .await
        .unwrap();
    let unknown = answers.message().await.unwrap().unwrap();
    assert_eq!(unknown.ttl, 0);

    let ask = pb::LeaseTimeToLiveRequest { id, keys: false };
    let ttl = lease.lease_time_to_live(ask).await.unwrap().into_inner();
    assert_eq!(ttl.granted_ttl, 30);
    assert!(ttl.ttl > 20, "{}", ttl.ttl);
    assert_eq!(ttl.header.unwrap().member_id, follower.member_id);

    // A follower is not the one to move leadership; the leader is.
    let to_follower = pb::MoveLeaderRequest {
        target_id: follower.member_id,
    };
    let refused = follower
        .maintenance()
        .move_leader(to_follower)
        .await
        .unwrap_err();
    assert_eq!(refused.message(), "etcdserver: not leader");
    let leader = servers.iter().find(|s| s.member_id == leader_id).unwrap();
    leader.maintenance().move_leader(to_follower).await.unwrap();
    let status = leader.maintenance().status(pb::StatusRequest {}).await;
    assert_eq!(status.unwrap().into_inner().leader, follower.member_id);
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test]
async fn a_watch_stream_is_closed_on_the_server_when_the_client_goes_away() {
    let server = TestServer::start().await;
    let mut watch = WatchStream::open(&server).await;
    watch
        .create(pb::WatchCreateRequest {
            fragment: true,
            ..create("gone", 0)
        })
        .await;
    let watch_id = watch.next().await.watch_id;
    let handle = server.running.as_ref().unwrap().handle.clone();
    // The first stream of a fresh server is stream 1; its watch is there while the client is.
    let exists = move |handle: keel_net::server_loop::handle::NodeHandle| async move {
        let watch = keel_core::node::query::WatchExists {
            stream: 1,
            watch_id,
        };
        handle
            .ask(keel_net::server_loop::handle::Consistency::Unfenced, watch)
            .await
            .unwrap()
    };
    assert!(exists(handle.clone()).await);
    drop(watch);
    poll("the server to drop the stream's watchers", || {
        let handle = handle.clone();
        async move { (!exists(handle).await).then_some(()) }
    })
    .await;
    server.stop().await;
}
