//! Clients' watch streams: opened and closed on the node, their responses moved from the
//! node's watch hub to each stream's outbox.

use keel_core::mvcc::StreamId;
use keel_storage::Disk;
use tokio::sync::mpsc;

use super::{ServerLoop, WatchOpen};

/// Responses a watch stream may hold unsent; past it, the hub keeps them (and moves slow
/// watchers to catch up from history) until the stream's reader drains.
const WATCH_OUTBOX: usize = 256;

impl<D: Disk + Send + 'static> ServerLoop<D> {
    pub(super) fn open_watch_stream(&mut self, open: WatchOpen) {
        let stream = self.node.open_watch_stream();
        let (outbox, inbox) = mpsc::channel(WATCH_OUTBOX);
        self.watch_outboxes.insert(stream, outbox);
        if open.reply.send((stream, inbox)).is_err() {
            self.close_watch_stream(stream);
        }
    }

    pub(super) fn close_watch_stream(&mut self, stream: StreamId) {
        self.watch_outboxes.remove(&stream);
        self.node.close_watch_stream(stream);
    }

    /// Moves watch responses from the hub to each stream's outbox while it has room.
    pub(super) fn flush_watches(&mut self) {
        let mut closed = Vec::new();
        for (&stream, outbox) in &self.watch_outboxes {
            if outbox.is_closed() {
                closed.push(stream);
                continue;
            }
            while outbox.capacity() > 0 {
                let Some(response) = self.node.poll_watch_stream(stream) else {
                    break;
                };
                if outbox.try_send(response).is_err() {
                    break;
                }
            }
        }
        for stream in closed {
            self.close_watch_stream(stream);
        }
    }
}
