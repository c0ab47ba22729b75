//! The receiving side of peer links: the peer port accepts a connection, checks who is
//! calling (cluster, member, not removed), then reads framed messages and snapshot streams
//! into the server loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use keel_core::raft::{Message, MessageBody, NodeId};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::blocking::{self, BlockingTask};
use crate::peer::frame::{self, Decoded, Decoder, Hello, Refusal};
use crate::peer::query::AnswerDesk;
use crate::peer::snapshot_stream::{SnapshotInbox, StagedSnapshot};
use crate::tls::ServerTls;

use super::{
    write_flush, ClusterId, DialHints, PeerStream, TransportStats, MIN_BACKOFF, READ_CHUNK_BYTES,
};

/// Tells the dialling member why its connection is refused, as far as it can be told.
pub(super) async fn refuse(stream: &mut PeerStream, error: &ReceiveError) {
    let refusal = match error {
        ReceiveError::Removed { .. } => Refusal::Removed,
        other => Refusal::Mismatch(other.to_string()),
    };
    let mut out = BytesMut::new();
    if frame::encode_refusal(&refusal, &mut out).is_ok() {
        let _ = write_flush(stream, &out).await;
    }
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

pub(super) struct Receiver {
    local_id: tokio::sync::watch::Receiver<NodeId>,
    cluster_id: ClusterId,
    inbox: mpsc::Sender<Message>,
    stats: Arc<TransportStats>,
    desk: AnswerDesk,
    snapshots: Arc<dyn SnapshotInbox>,
    hints: DialHints,
}

/// A snapshot stream being received on a connection.
pub(super) struct Receiving {
    message: Message,
    /// The write of the last chunk into the staged engine, still under way off the async
    /// threads while the next chunk comes in from the network; it hands the engine back.
    writing: BlockingTask<ChunkWritten>,
}

pub(super) type ChunkWritten = (Box<dyn StagedSnapshot>, Result<(), String>);

impl Receiving {
    /// The staged engine once the last chunk's write is done, or why it failed.
    pub(super) async fn written(self) -> Result<(Message, Box<dyn StagedSnapshot>), ReceiveError> {
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
pub(super) enum ReceiveError {
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
    pub(super) async fn run(
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

    pub(super) async fn receive(
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

    pub(super) fn check_hello(&self, hello: &Hello) -> Result<(), ReceiveError> {
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
