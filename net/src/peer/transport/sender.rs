//! The sending side of a peer link: one task per peer dials it, writes framed messages in
//! batches, backs off when the peer is down, and streams snapshots chunk by chunk.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use keel_core::mvcc::{EngineError, View};
use keel_core::raft::{Message, MessageBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::blocking::{self, BlockingTask};
use crate::peer::frame::{self, Decoded, Decoder, Hello, Refusal, SnapshotEnd};
use crate::peer::snapshot_stream::ViewReader;

use super::{
    connect, write_flush, PeerReport, PeerStream, Sender, MAX_BACKOFF, MAX_SNAPSHOT_ACK_WAITS,
    MIN_BACKOFF, SNAPSHOT_PROGRESS_INTERVAL,
};

impl Sender {
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let mut backoff = MIN_BACKOFF;
        let mut attempt = 0usize;
        let peer_up = self.dialing.hints.peer_up(self.to);
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
            tokio::select! {
                () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(MAX_BACKOFF),
                () = peer_up.notified() => backoff = MIN_BACKOFF,
            }
        }
    }

    pub(super) async fn stream(
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
    pub(super) fn hello(&self) -> Hello {
        Hello {
            cluster_id: self.cluster_id.get(),
            from: self.from,
            to: self.to,
            peer_urls: self.dialing.own_peer_urls.clone(),
        }
    }

    /// The member list's URLs for the peer, then those it said it listens on.
    pub(super) fn dial_urls(&self) -> Vec<String> {
        self.dialing.hints.dial_urls(self.to, &self.urls)
    }

    /// Streams a snapshot on a new connection; returns the rows and bytes sent.
    pub(super) async fn stream_snapshot(
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
    pub(super) fn refused(&self, refusal: Refusal) -> std::io::Error {
        if refusal == Refusal::Removed {
            let _ = self.reports.send(PeerReport::RemovedBy(self.to));
        }
        std::io::Error::other(format!("the peer refused the connection: {refusal:?}"))
    }

    pub(super) fn report_lost(&self, message: &Message) {
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
pub(super) async fn read_refusal(
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

/// A view's next rows chunk, read off the async threads.
pub(super) fn read_next_chunk(mut reader: ViewReader) -> BlockingTask<(ViewReader, ChunkRead)> {
    blocking::start_blocking(move || {
        let chunk = reader.next_chunk();
        (reader, chunk)
    })
}

pub(super) type ChunkRead = Result<Option<Vec<u8>>, EngineError>;
