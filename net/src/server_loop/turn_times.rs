//! What the loop measures of itself: time per part of a turn (logged when a turn is slow)
//! and heartbeat round trips per peer.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

/// A turn of the loop longer than this delays every request and heartbeat behind it: it is
/// logged with where its time went.
const SLOW_TURN: Duration = Duration::from_millis(100);

/// When the oldest unanswered heartbeat to each peer was sent: a leader's heartbeat round
/// trip is its peer round trip time (etcd measures it with a prober of its own).
#[derive(Debug, Default)]
pub(super) struct RoundTrips {
    pub(super) sent: BTreeMap<u64, Instant>,
}

impl RoundTrips {
    /// Heartbeats to a peer that answers none are not timed past this: a lost heartbeat
    /// would otherwise make the next answer look as slow as the gap.
    const STALE: Duration = Duration::from_secs(5);

    pub(super) fn sent(&mut self, peer: u64, now: Instant) {
        let since = self.sent.entry(peer).or_insert(now);
        if now.duration_since(*since) > Self::STALE {
            *since = now;
        }
    }

    pub(super) fn answered(&mut self, peer: u64, now: Instant) -> Option<Duration> {
        let since = self.sent.remove(&peer)?;
        let round_trip = now.duration_since(since);
        (round_trip <= Self::STALE).then_some(round_trip)
    }
}

/// Where one turn of the server loop spent its time.
#[derive(Debug, Default)]
pub(super) struct TurnTimes {
    /// Writing (and syncing) Raft's log and hard state.
    pub(super) persist: Duration,
    /// Applying committed entries to the store.
    pub(super) apply: Duration,
    pub(super) applied_entries: u64,
    /// Handing a batch of writes to the engine's commit thread.
    pub(super) begin_engine_commit: Duration,
    /// Taking a finished commit's view and releasing the Raft log behind it.
    pub(super) after_engine_commit: Duration,
    /// Clients' requests: proposing writes, serving reads (a RangeStream's chunks among
    /// them), watches.
    pub(super) requests: Duration,
    pub(super) requests_handled: u64,
}

impl TurnTimes {
    pub(super) fn warn_if_slow(&self, took: Duration) {
        if took < SLOW_TURN {
            return;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        warn!(
            took_ms = ms(took),
            persist_ms = ms(self.persist),
            apply_ms = ms(self.apply),
            applied_entries = self.applied_entries,
            begin_engine_commit_ms = ms(self.begin_engine_commit),
            after_engine_commit_ms = ms(self.after_engine_commit),
            requests_ms = ms(self.requests),
            requests = self.requests_handled,
            "a turn of the server loop took too long"
        );
    }
}
