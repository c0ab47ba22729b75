//! Peer transport: Raft messages between members over TCP (see [`crate::peer::frame`]).
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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use keel_core::mvcc::{EngineError, View};
use keel_core::raft::{Message, MessageBody, NodeId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::blocking::{self, BlockingTask};
use crate::peer::frame::{self, Decoded, Decoder, Hello, Refusal, SnapshotEnd};
use crate::peer::query::AnswerDesk;
use crate::peer::snapshot_stream::{SnapshotInbox, StagedSnapshot, ViewReader};
use crate::tls::{ClientTls, ServerTls};

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
#[derive(Clone, Debug, Default)]
pub struct DialHints(Arc<std::sync::Mutex<BTreeMap<NodeId, Vec<String>>>>);

impl DialHints {
    /// Keeps what `peer` said, within limits (a peer's hello is not trusted with memory).
    fn learn(&self, peer: NodeId, urls: &[String]) {
        let urls: Vec<String> = urls
            .iter()
            .filter(|url| url.len() <= MAX_HINT_URL_BYTES)
            .take(MAX_HINT_URLS)
            .cloned()
            .collect();
        if let Ok(mut hints) = self.0.lock() {
            hints.insert(peer, urls);
        }
    }

    /// `known` (the member list's URLs for `peer`), then what it said that they lack.
    fn dial_urls(&self, peer: NodeId, known: &[String]) -> Vec<String> {
        let mut urls = known.to_vec();
        if let Ok(hints) = self.0.lock() {
            let said = hints.get(&peer).into_iter().flatten();
            urls.extend(said.filter(|url| !known.contains(url)).cloned());
        }
        urls
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

impl Sender {
    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let mut backoff = MIN_BACKOFF;
        let mut attempt = 0usize;
        loop {
            let urls = self.dial_urls();
            let url = &urls[attempt % urls.len()];
            attempt += 1;
            match connect(url, self.dialing.tls.as_ref()).await {
                Ok(stream) => {
                    backoff = MIN_BACKOFF;
                    info!(peer = self.to, url, "connected to peer");
                    match self.stream(stream, &mut queue).await {
                        Ok(()) => return, // the queue closed: this peer was removed
                        Err(error) => {
                            self.stats.sent_failures.fetch_add(1, Ordering::Relaxed);
                            warn!(peer = self.to, %error, "peer connection lost");
                        }
                    }
                }
                Err(error) => {
                    debug!(peer = self.to, url, %error, "cannot reach peer");
                    let _ = self.reports.send(PeerReport::Unreachable(self.to));
                }
            }
            // Messages queued while disconnected are stale; Raft resends what matters.
            while let Ok(message) = queue.try_recv() {
                self.report_lost(&message);
            }
            if queue.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn stream(
        &self,
        stream: PeerStream,
        queue: &mut mpsc::Receiver<Message>,
    ) -> std::io::Result<()> {
        let (reader, mut stream) = tokio::io::split(stream);
        let mut out = BytesMut::new();
        frame::encode_hello(&self.hello(), &mut out);
        stream.write_all(&out).await?;
        stream.flush().await?;
        // The peer says nothing on this connection, unless it refuses it.
        let (refused, mut refusal) = tokio::sync::oneshot::channel();
        tokio::spawn(read_refusal(reader, refused));
        let mut may_refuse = true;
        loop {
            let first = tokio::select! {
                biased;
                said = &mut refusal, if may_refuse => match said {
                    Ok(refusal) => return Err(self.refused(refusal)),
                    // The peer said nothing and its side of the connection ended.
                    Err(_) => {
                        may_refuse = false;
                        continue;
                    }
                },
                first = queue.recv() => first,
            };
            let Some(first) = first else {
                return Ok(());
            };
            out.clear();
            let mut batch = vec![first];
            // Everything already queued goes in one write.
            while batch.len() < 256 {
                match queue.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            for message in &batch {
                frame::encode_message(message, &mut out);
            }
            if let Err(error) = write_flush(&mut stream, &out).await {
                for message in &batch {
                    self.report_lost(message);
                }
                return Err(error);
            }
            self.stats
                .sent_bytes
                .fetch_add(out.len() as u64, Ordering::Relaxed);
        }
    }

    /// What this sender says first on each of its connections.
    fn hello(&self) -> Hello {
        Hello {
            cluster_id: self.cluster_id.get(),
            from: self.from,
            to: self.to,
            peer_urls: self.dialing.own_peer_urls.clone(),
        }
    }

    /// The member list's URLs for the peer, then those it said it listens on.
    fn dial_urls(&self) -> Vec<String> {
        self.dialing.hints.dial_urls(self.to, &self.urls)
    }

    /// Streams a snapshot on a new connection; returns the rows and bytes sent.
    async fn stream_snapshot(
        &self,
        message: &Message,
        view: Arc<dyn View>,
    ) -> std::io::Result<(u64, u64)> {
        let mut last_error = None;
        let mut stream = None;
        for url in &self.dial_urls() {
            match connect(url, self.dialing.tls.as_ref()).await {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let Some(mut stream) = stream else {
            return Err(last_error.unwrap_or_else(|| std::io::Error::other("no peer URL")));
        };
        let mut out = BytesMut::new();
        frame::encode_hello(&self.hello(), &mut out);
        frame::encode_snapshot_begin(message, &mut out).map_err(std::io::Error::other)?;
        write_flush(&mut stream, &out).await?;
        let mut sent_bytes = out.len() as u64;
        let mut reading = read_next_chunk(ViewReader::new(view));
        let mut checksum = 0u32;
        let rows;
        let mut reported = tokio::time::Instant::now();
        loop {
            if reported.elapsed() >= SNAPSHOT_PROGRESS_INTERVAL {
                let _ = self.reports.send(PeerReport::SnapshotProgress(self.to));
                reported = tokio::time::Instant::now();
            }
            let (reader, chunk) = reading
                .wait()
                .await
                .ok_or_else(|| std::io::Error::other("reading the snapshot's view failed"))?;
            let Some(chunk) = chunk.map_err(std::io::Error::other)? else {
                rows = reader.rows;
                break;
            };
            // The next chunk is read while this one is sent.
            reading = read_next_chunk(reader);
            checksum = crc32c::crc32c_append(checksum, &chunk);
            out.clear();
            frame::encode_snapshot_rows(&chunk, &mut out).map_err(std::io::Error::other)?;
            write_flush(&mut stream, &out).await?;
            sent_bytes += out.len() as u64;
            self.stats
                .sent_bytes
                .fetch_add(out.len() as u64, Ordering::Relaxed);
        }
        out.clear();
        frame::encode_snapshot_end(&SnapshotEnd { rows, checksum }, &mut out)
            .map_err(std::io::Error::other)?;
        write_flush(&mut stream, &out).await?;
        // The peer closes the connection once the engine is durable on its disk (or it
        // refused the stream): wait for that, so a report of success means something.
        let mut ack = [0u8; 1];
        for _ in 0..MAX_SNAPSHOT_ACK_WAITS {
            match tokio::time::timeout(SNAPSHOT_PROGRESS_INTERVAL, stream.read(&mut ack)).await {
                Ok(_) => return Ok((rows, sent_bytes + out.len() as u64)),
                // Still writing it out: still progress.
                Err(_) => {
                    let _ = self.reports.send(PeerReport::SnapshotProgress(self.to));
                }
            }
        }
        Err(std::io::Error::other(
            "the peer did not confirm the snapshot within a minute of its end",
        ))
    }

    /// The peer refused this member's connection: a removed member learns it here.
    fn refused(&self, refusal: Refusal) -> std::io::Error {
        if refusal == Refusal::Removed {
            let _ = self.reports.send(PeerReport::RemovedBy(self.to));
        }
        std::io::Error::other(format!("the peer refused the connection: {refusal:?}"))
    }

    fn report_lost(&self, message: &Message) {
        let report = if matches!(message.body, MessageBody::InstallSnapshot(_)) {
            PeerReport::SnapshotFailed(message.to)
        } else {
            PeerReport::Unreachable(message.to)
        };
        let _ = self.reports.send(report);
    }
}

/// Reads what a peer sends back on a connection this member dialled: a refusal, or nothing
/// until the connection closes.
async fn read_refusal(
    mut reader: tokio::io::ReadHalf<PeerStream>,
    refused: tokio::sync::oneshot::Sender<Refusal>,
) {
    let mut decoder = Decoder::new(frame::MAX_FRAME_BYTES);
    loop {
        match decoder.decode_next() {
            Ok(Some(Decoded::Refusal(refusal))) => {
                let _ = refused.send(refusal);
                return;
            }
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return,
        }
        match reader.read_buf(decoder.buffer_mut()).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Tells the dialling member why its connection is refused, as far as it can be told.
async fn refuse(stream: &mut PeerStream, error: &ReceiveError) {
    let refusal = match error {
        ReceiveError::Removed { .. } => Refusal::Removed,
        other => Refusal::Mismatch(other.to_string()),
    };
    let mut out = BytesMut::new();
    if frame::encode_refusal(&refusal, &mut out).is_ok() {
        let _ = write_flush(stream, &out).await;
    }
}

/// A view's next rows chunk, read off the async threads.
fn read_next_chunk(mut reader: ViewReader) -> BlockingTask<(ViewReader, ChunkRead)> {
    blocking::start_blocking(move || {
        let chunk = reader.next_chunk();
        (reader, chunk)
    })
}

type ChunkRead = Result<Option<Vec<u8>>, EngineError>;

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

/// The receiving side of a member's peer port: Raft messages go to `inbox`, questions are
/// answered from `desk`.
#[derive(Clone, Debug)]
pub struct PeerPort {
    /// This member's id; 0 until it is known (while the data dir is being opened): Raft
    /// messages are refused until then, questions answered.
    pub local_id: tokio::sync::watch::Receiver<NodeId>,
    pub cluster_id: ClusterId,
    pub max_message_bytes: usize,
    pub inbox: mpsc::Sender<Message>,
    pub stats: Arc<TransportStats>,
    pub desk: AnswerDesk,
    /// Where leaders' snapshot streams are written.
    pub snapshots: Arc<dyn SnapshotInbox>,
    /// Where dialling peers say they listen, for this member's senders.
    pub hints: DialHints,
}

impl PeerPort {
    /// Accepts peers' connections on `listener` (through TLS when `tls` is set).
    pub async fn serve(self, listener: TcpListener, tls: Option<ServerTls>) {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "peer listener failed to accept");
                    tokio::time::sleep(MIN_BACKOFF).await;
                    continue;
                }
            };
            let receiver = Receiver {
                local_id: self.local_id.clone(),
                cluster_id: self.cluster_id.clone(),
                inbox: self.inbox.clone(),
                stats: self.stats.clone(),
                desk: self.desk.clone(),
                snapshots: self.snapshots.clone(),
                hints: self.hints.clone(),
            };
            let (tls, max_message_bytes) = (tls.clone(), self.max_message_bytes);
            tokio::spawn(async move {
                let stream: PeerStream = match tls {
                    None => Box::new(stream),
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => Box::new(stream),
                        Err(error) => {
                            warn!(%addr, %error, "refused a peer connection: TLS handshake failed");
                            return;
                        }
                    },
                };
                if let Err(error) = receiver.run(stream, max_message_bytes).await {
                    warn!(%addr, %error, "closing peer connection");
                }
            });
        }
    }
}

struct Receiver {
    local_id: tokio::sync::watch::Receiver<NodeId>,
    cluster_id: ClusterId,
    inbox: mpsc::Sender<Message>,
    stats: Arc<TransportStats>,
    desk: AnswerDesk,
    snapshots: Arc<dyn SnapshotInbox>,
    hints: DialHints,
}

/// A snapshot stream being received on a connection.
struct Receiving {
    message: Message,
    /// The write of the last chunk into the staged engine, still under way off the async
    /// threads while the next chunk comes in from the network; it hands the engine back.
    writing: BlockingTask<ChunkWritten>,
}

type ChunkWritten = (Box<dyn StagedSnapshot>, Result<(), String>);

impl Receiving {
    /// The staged engine once the last chunk's write is done, or why it failed.
    async fn written(self) -> Result<(Message, Box<dyn StagedSnapshot>), ReceiveError> {
        let (staged, written) = self
            .writing
            .wait()
            .await
            .ok_or_else(|| ReceiveError::Snapshot("writing failed".into()))?;
        match written {
            Ok(()) => Ok((self.message, staged)),
            Err(error) => {
                let _ = blocking::blocking(move || staged.abandon()).await;
                Err(ReceiveError::Snapshot(error))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ReceiveError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    #[error("hello for cluster {cluster_id:x} member {to:x}, but this is cluster {expected_cluster:x} member {expected_to:x}")]
    WrongHello {
        cluster_id: u64,
        to: NodeId,
        expected_cluster: u64,
        expected_to: NodeId,
    },
    #[error("message claims to be from {claimed:x} on a connection from {peer:x}")]
    WrongSender { claimed: NodeId, peer: NodeId },
    #[error("member {from:x} was removed from the cluster; refused its connection")]
    Removed { from: NodeId },
    #[error("this member is still opening its data dir")]
    Starting,
    #[error("a snapshot stream failed: {0}")]
    Snapshot(String),
}

impl Receiver {
    async fn run(
        self,
        mut stream: PeerStream,
        max_message_bytes: usize,
    ) -> Result<(), ReceiveError> {
        let mut decoder = Decoder::new(max_message_bytes);
        let mut peer: Option<NodeId> = None;
        let mut receiving: Option<Receiving> = None;
        let outcome = self
            .receive(&mut stream, &mut decoder, &mut peer, &mut receiving)
            .await;
        if let Some(receiving) = receiving {
            // The stream ended before its end frame.
            if let Ok((_, staged)) = receiving.written().await {
                let _ = blocking::blocking(move || staged.abandon()).await;
            }
        }
        outcome
    }

    async fn receive(
        &self,
        stream: &mut PeerStream,
        decoder: &mut Decoder,
        peer: &mut Option<NodeId>,
        receiving: &mut Option<Receiving>,
    ) -> Result<(), ReceiveError> {
        loop {
            while let Some(decoded) = decoder.decode_next()? {
                let peer = &mut *peer;
                match (decoded, *peer) {
                    (Decoded::Hello(hello), None) => {
                        if let Err(error) = self.check_hello(&hello) {
                            refuse(stream, &error).await;
                            return Err(error);
                        }
                        // Kept for members only: the hints stay as few as they are.
                        if self.desk.members.is_member(hello.from) {
                            self.hints.learn(hello.from, &hello.peer_urls);
                        }
                        *peer = Some(hello.from);
                    }
                    (Decoded::Question(question), None) => {
                        let answer = self.desk.answer(question, self.cluster_id.get()).await;
                        let mut out = BytesMut::new();
                        frame::encode_answer(&answer, &mut out)?;
                        write_flush(stream, &out).await?;
                        return Ok(());
                    }
                    (Decoded::SnapshotBegin(message), Some(from)) => {
                        let MessageBody::InstallSnapshot(snapshot) = &message.body else {
                            return Err(ReceiveError::Snapshot("not a snapshot".into()));
                        };
                        if message.from != from || receiving.is_some() {
                            return Err(ReceiveError::Snapshot(
                                "a second snapshot, or one from another member".into(),
                            ));
                        }
                        let index = snapshot.meta.index;
                        let inbox = self.snapshots.clone();
                        let staged = blocking::blocking(move || inbox.begin(index))
                            .await
                            .ok_or_else(|| ReceiveError::Snapshot("staging failed".into()))?
                            .map_err(ReceiveError::Snapshot)?;
                        info!(peer = from, index, "receiving a snapshot");
                        let writing = blocking::start_blocking(move || (staged, Ok(())));
                        *receiving = Some(Receiving { message, writing });
                    }
                    (Decoded::SnapshotRows(chunk), Some(_)) => {
                        let Some(previous) = receiving.take() else {
                            return Err(ReceiveError::Snapshot("rows without a snapshot".into()));
                        };
                        let (message, mut staged) = previous.written().await?;
                        let writing = blocking::start_blocking(move || {
                            let written = staged.write_chunk(&chunk);
                            (staged, written)
                        });
                        *receiving = Some(Receiving { message, writing });
                    }
                    (Decoded::SnapshotEnd(end), Some(from)) => {
                        let Some(last) = receiving.take() else {
                            return Err(ReceiveError::Snapshot("an end without a snapshot".into()));
                        };
                        let (message, staged) = last.written().await?;
                        blocking::blocking(move || staged.finish(end.rows, end.checksum))
                            .await
                            .ok_or_else(|| ReceiveError::Snapshot("finishing failed".into()))?
                            .map_err(ReceiveError::Snapshot)?;
                        info!(peer = from, rows = end.rows, "received a snapshot");
                        // Closing the connection tells the leader the engine is on disk.
                        let _ = self.inbox.send(message).await;
                        return Ok(());
                    }
                    (Decoded::Message(message), Some(from)) => {
                        if message.from != from {
                            return Err(ReceiveError::WrongSender {
                                claimed: message.from,
                                peer: from,
                            });
                        }
                        // Removed while connected: tell it now, as at the handshake, or a
                        // member that missed its own removal (it was behind) would go on
                        // talking over the connection it has and never stop.
                        if self.desk.members.is_removed(from) {
                            let error = ReceiveError::Removed { from };
                            refuse(stream, &error).await;
                            return Err(error);
                        }
                        if self.inbox.send(message).await.is_err() {
                            return Ok(()); // the server is stopping
                        }
                    }
                    _ => return Err(frame::FrameError::NoHello.into()),
                }
            }
            let buffer = decoder.buffer_mut();
            buffer.reserve(READ_CHUNK_BYTES);
            let read = stream.read_buf(buffer).await?;
            if read == 0 {
                return Ok(());
            }
            self.stats
                .received_bytes
                .fetch_add(read as u64, Ordering::Relaxed);
        }
    }

    fn check_hello(&self, hello: &Hello) -> Result<(), ReceiveError> {
        let local_id = *self.local_id.borrow();
        if local_id == 0 {
            return Err(ReceiveError::Starting);
        }
        if self.desk.members.is_removed(hello.from) {
            return Err(ReceiveError::Removed { from: hello.from });
        }
        if hello.to != local_id || !self.cluster_id.accept(hello.cluster_id) {
            return Err(ReceiveError::WrongHello {
                cluster_id: hello.cluster_id,
                to: hello.to,
                expected_cluster: self.cluster_id.get(),
                expected_to: local_id,
            });
        }
        Ok(())
    }
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
