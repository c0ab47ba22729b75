//! Peer transport: Raft messages between members over TCP (see [`crate::peer::frame`]). The
//! sending side is `transport/sender.rs`, the receiving side (the peer port)
//! `transport/receiver.rs`.
//!
//! Each member dials each peer once and only sends on that connection; it receives on the
//! connections its peers dialled. A peer's messages wait in a bounded queue: when it is full
//! they are dropped (Raft resends), and a peer that cannot be reached is reported so the
//! leader stops pipelining to it. Connections are re-dialled with backoff. A frame that fails
//! to decode, or a hello from another cluster or for another member, closes that connection
//! with a log line and harms nothing else.
//!
//! With `https://` peer URLs the connection is TLS first (the hello and every frame inside
//! it); with `--peer-client-cert-auth` a peer without a certificate from the trusted CA is
//! refused at the handshake, before it can say anything.

mod receiver;
mod sender;

pub use receiver::PeerPort;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::mvcc::View;
use keel_core::raft::{Message, MessageBody, NodeId};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use crate::tls::ClientTls;

/// A peer connection: plain TCP or TLS over it.
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerIo for T {}
pub type PeerStream = Box<dyn PeerIo>;

/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES: usize = 4096;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Most peer URLs kept from one hello, and the longest one.
const MAX_HINT_URLS: usize = 8;
const MAX_HINT_URL_BYTES: usize = 512;

/// What the transport tells the server loop about sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerReport {
    /// A message to this peer was dropped or its connection failed.
    Unreachable(NodeId),
    /// A snapshot to this peer could not be sent whole.
    SnapshotFailed(NodeId),
    /// A snapshot to this peer is still streaming (sent at most every
    /// [`SNAPSHOT_PROGRESS_INTERVAL`]), so the leader does not give up on it.
    SnapshotProgress(NodeId),
    /// This peer refused our connection because we were removed from the cluster.
    RemovedBy(NodeId),
}

/// How often a snapshot stream says it is still moving.
pub const SNAPSHOT_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// How many progress intervals a sender waits for the peer to make a streamed snapshot
/// durable and confirm it.
const MAX_SNAPSHOT_ACK_WAITS: u32 = 60;

/// The peer URLs each peer named in its latest hello: where it listens now. A member that
/// has not applied a peer's `member update` yet (it was behind when the change committed)
/// would dial the old URLs forever and never acknowledge the entries that carry the new
/// ones; the moved peer's own connections say where it is, so its senders try there too
/// (etcd gets the same from streams dialled in both directions). Only a hint: whoever
/// answers there must still be that member of this cluster, which its hello check enforces.
///
/// A hello also says the peer is up now: its sender, waiting out a backoff of up to
/// [`MAX_BACKOFF`] after failed dials (a member restarting, or added and not started yet),
/// dials at once instead of leaving it without messages for that long.
#[derive(Clone, Debug, Default)]
pub struct DialHints(Arc<std::sync::Mutex<BTreeMap<NodeId, PeerHint>>>);

#[derive(Debug, Default)]
struct PeerHint {
    urls: Vec<String>,
    /// Wakes this peer's sender from its backoff.
    up: Arc<Notify>,
}

impl DialHints {
    /// Keeps what `peer` said, within limits (a peer's hello is not trusted with memory),
    /// and wakes its sender.
    fn learn(&self, peer: NodeId, urls: &[String]) {
        let urls: Vec<String> = urls
            .iter()
            .filter(|url| url.len() <= MAX_HINT_URL_BYTES)
            .take(MAX_HINT_URLS)
            .cloned()
            .collect();
        if let Ok(mut hints) = self.0.lock() {
            let hint = hints.entry(peer).or_default();
            hint.urls = urls;
            hint.up.notify_one();
        }
    }

    /// `known` (the member list's URLs for `peer`), then what it said that they lack.
    fn dial_urls(&self, peer: NodeId, known: &[String]) -> Vec<String> {
        let mut urls = known.to_vec();
        if let Ok(hints) = self.0.lock() {
            let said = hints.get(&peer).into_iter().flat_map(|hint| &hint.urls);
            urls.extend(said.filter(|url| !known.contains(url)).cloned());
        }
        urls
    }

    /// What `peer`'s hellos notify (see the type's docs).
    fn peer_up(&self, peer: NodeId) -> Arc<Notify> {
        match self.0.lock() {
            Ok(mut hints) => hints.entry(peer).or_default().up.clone(),
            // Poisoned: a sender that is never woken early still dials after its backoff.
            Err(_) => Arc::new(Notify::new()),
        }
    }
}

/// Counters for `/metrics` (etcd's `etcd_network_peer_*`).
#[derive(Debug, Default)]
pub struct TransportStats {
    pub sent_bytes: AtomicU64,
    pub received_bytes: AtomicU64,
    pub sent_failures: AtomicU64,
    pub dropped_messages: AtomicU64,
}

/// The sending half, owned by the server loop.
#[derive(Debug)]
pub struct Transport {
    local_id: NodeId,
    cluster_id: ClusterId,
    peers: BTreeMap<NodeId, Peer>,
    reports: mpsc::UnboundedSender<PeerReport>,
    stats: Arc<TransportStats>,
    dialing: Dialing,
}

/// How this member dials its peers.
#[derive(Clone, Debug, Default)]
pub struct Dialing {
    /// For dialling `https://` peer URLs.
    pub tls: Option<ClientTls>,
    /// Where this member listens for peers, said in each hello.
    pub own_peer_urls: Vec<String>,
    /// Where peers said they listen.
    pub hints: DialHints,
}

#[derive(Debug)]
struct Peer {
    urls: Vec<String>,
    queue: mpsc::Sender<Message>,
}

impl Transport {
    pub fn new(
        local_id: NodeId,
        cluster_id: ClusterId,
        reports: mpsc::UnboundedSender<PeerReport>,
        stats: Arc<TransportStats>,
        dialing: Dialing,
    ) -> Transport {
        Transport {
            local_id,
            cluster_id,
            peers: BTreeMap::new(),
            reports,
            stats,
            dialing,
        }
    }

    /// Makes the set of peers match `members` (id, peer URLs): starts senders for new or
    /// moved peers, stops those of removed ones.
    pub fn set_peers(&mut self, members: &[(NodeId, Vec<String>)]) {
        self.peers.retain(|id, peer| {
            members
                .iter()
                .any(|(m, urls)| m == id && *urls == peer.urls)
        });
        for (id, urls) in members {
            if *id == self.local_id || self.peers.contains_key(id) || urls.is_empty() {
                continue;
            }
            let (queue, rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
            let sender = Sender {
                cluster_id: self.cluster_id.clone(),
                from: self.local_id,
                to: *id,
                urls: urls.clone(),
                reports: self.reports.clone(),
                stats: self.stats.clone(),
                dialing: self.dialing.clone(),
            };
            tokio::spawn(sender.run(rx));
            self.peers.insert(
                *id,
                Peer {
                    urls: urls.clone(),
                    queue,
                },
            );
        }
    }

    /// Sends a leader's snapshot with its store's engine: `message` (whose image holds no
    /// store) and `view`'s rows, on a connection of their own (see
    /// `crate::peer::snapshot_stream`), so the peer's heartbeats do not wait behind it. A failure
    /// is reported as [`PeerReport::SnapshotFailed`].
    pub fn send_snapshot(&mut self, message: Message, view: Arc<dyn View>) {
        let to = message.to;
        let Some(peer) = self.peers.get(&to) else {
            let _ = self.reports.send(PeerReport::SnapshotFailed(to));
            return;
        };
        let sender = Sender {
            cluster_id: self.cluster_id.clone(),
            from: self.local_id,
            to,
            urls: peer.urls.clone(),
            reports: self.reports.clone(),
            stats: self.stats.clone(),
            dialing: self.dialing.clone(),
        };
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            match sender.stream_snapshot(&message, view).await {
                Ok((rows, bytes)) => {
                    let took = started.elapsed();
                    info!(
                        peer = to,
                        rows,
                        size_bytes = bytes,
                        took_ms = took.as_millis() as u64,
                        "sent a snapshot"
                    );
                }
                Err(error) => {
                    warn!(peer = to, %error, "sending a snapshot failed");
                    let _ = sender.reports.send(PeerReport::SnapshotFailed(to));
                }
            }
        });
    }

    /// Queues `message` for its peer; drops it if the queue is full or the peer unknown.
    pub fn send(&mut self, message: Message) {
        let to = message.to;
        let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot(_));
        let Some(peer) = self.peers.get(&to) else {
            debug!(to, "dropping a message for an unknown peer");
            return;
        };
        if peer.queue.try_send(message).is_err() {
            self.stats.dropped_messages.fetch_add(1, Ordering::Relaxed);
            let report = if is_snapshot {
                PeerReport::SnapshotFailed(to)
            } else {
                PeerReport::Unreachable(to)
            };
            let _ = self.reports.send(report);
        }
    }
}

/// The cluster id, shared by a member's senders and receivers. A member that joins an
/// existing cluster starts with 0 (unknown) and takes the id from the first peer that dials
/// it; from then on, and for every other member, hellos must carry it.
#[derive(Clone, Debug, Default)]
pub struct ClusterId(Arc<AtomicU64>);

impl ClusterId {
    pub fn new(id: u64) -> ClusterId {
        ClusterId(Arc::new(AtomicU64::new(id)))
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Takes `id` as the cluster's if none is known yet (0 changes nothing).
    pub fn learn(&self, id: u64) {
        let _ = self
            .0
            .compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Accepts `offered` if it is the known id, or adopts it if none is known yet.
    fn accept(&self, offered: u64) -> bool {
        match self
            .0
            .compare_exchange(0, offered, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => offered != 0,
            Err(known) => known == offered,
        }
    }
}

/// Sends one peer's queue over a connection it dials, re-dialling with backoff.
struct Sender {
    cluster_id: ClusterId,
    from: NodeId,
    to: NodeId,
    urls: Vec<String>,
    reports: mpsc::UnboundedSender<PeerReport>,
    stats: Arc<TransportStats>,
    dialing: Dialing,
}

async fn write_flush(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    // A simulated stream delivers on flush; a real one wants it too (no Nagle delay).
    stream.flush().await
}

pub(crate) async fn connect(url: &str, tls: Option<&ClientTls>) -> std::io::Result<PeerStream> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.trim_end_matches('/');
    let stream = TcpStream::connect(authority).await?;
    let _ = stream.set_nodelay(true);
    if scheme != "https" {
        return Ok(Box::new(stream));
    }
    let tls = tls.ok_or_else(|| {
        std::io::Error::other("an https:// peer URL, but this member has no peer TLS settings")
    })?;
    let host = crate::tls::host_of(authority);
    Ok(Box::new(tls.connect(&host, stream).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_dials_the_known_urls_first_then_those_the_peer_said() {
        let hints = DialHints::default();
        let known = vec!["http://10.0.0.3:2380".to_string()];
        assert_eq!(hints.dial_urls(3, &known), known);
        let moved = "http://10.0.0.3:2390".to_string();
        hints.learn(3, &[known[0].clone(), moved.clone()]);
        assert_eq!(hints.dial_urls(3, &known), vec![known[0].clone(), moved]);
        // What a peer says is about itself only.
        assert_eq!(hints.dial_urls(4, &known), known);
    }

    #[test]
    fn a_hello_wakes_that_peers_sender_from_its_backoff_and_no_other() {
        use futures_util::FutureExt;
        let hints = DialHints::default();
        let (up_3, up_4) = (hints.peer_up(3), hints.peer_up(4));
        assert!(
            up_3.notified().now_or_never().is_none(),
            "not before a hello"
        );
        hints.learn(3, &[]);
        assert!(up_3.notified().now_or_never().is_some());
        assert!(up_4.notified().now_or_never().is_none());
        hints.learn(5, &[]);
        assert!(
            hints.peer_up(5).notified().now_or_never().is_some(),
            "a sender started after the hello dials at once too"
        );
    }

    #[test]
    fn a_hello_cannot_make_the_hints_grow_without_bound() {
        let hints = DialHints::default();
        let long = format!("http://{}:2380", "a".repeat(MAX_HINT_URL_BYTES));
        hints.learn(3, &[long]);
        assert!(hints.dial_urls(3, &[]).is_empty());
        let many: Vec<String> = (0..100)
            .map(|port| format!("http://10.0.0.3:{port}"))
            .collect();
        hints.learn(3, &many);
        assert_eq!(hints.dial_urls(3, &[]).len(), MAX_HINT_URLS);
        // The latest hello replaces what came before.
        hints.learn(3, &[]);
        assert!(hints.dial_urls(3, &[]).is_empty());
    }
}
