//! The pure part of etcd's watch: watchers grouped per stream, fed the events of each
//! applied revision, catching up from history, and producing `WatchResponse`s for the
//! server to send.
//!
//! - A *synced* watcher receives each revision's events from [`WatchHub::on_apply`], all of
//!   one revision in one response, in revision order.
//! - An *unsynced* watcher (started in the past, or too slow) catches up from the store's
//!   history in [`WatchHub::sync`], whole revisions at a time, and becomes synced once it
//!   reaches the current revision. If compaction overtook it, it is cancelled with
//!   `compact_revision` set, as etcd does.
//! - Each stream's outbox is bounded in events: a watcher whose events do not fit becomes
//!   unsynced and catches up later from history, so a slow client never makes memory grow
//!   without bound (etcd's "victim" path).
//!
//! The server drives it: `open_stream`, `create_watch`, `cancel_watch`,
//! `request_progress`, `on_apply` after each applied revision, `sync` and
//! `progress_tick` on timers, and `poll` to take responses to send.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::error::WatchError;
use super::history::EventFilter;
use super::request::{Event, ResponseHeader};
use super::revision::{KeyRange, RangeEnd};
use super::store::Store;
use crate::coverage::{Coverage, Path};

pub type StreamId = u64;
pub type WatchId = i64;

/// The watch id etcd puts on stream-wide progress responses (`clientv3.InvalidWatchID`).
pub const PROGRESS_WATCH_ID: WatchId = -1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// Events a stream may hold unsent before its watchers are moved to catch-up.
    pub max_pending_events_per_stream: usize,
    /// Revisions one catch-up read covers (etcd's `watchBatchMaxRevs`).
    pub max_catch_up_revisions: usize,
    /// Unsynced watchers one `sync` call serves (etcd's `maxWatchersPerSync`).
    pub max_watchers_per_sync: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            max_pending_events_per_stream: 4096,
            max_catch_up_revisions: 1000,
            max_watchers_per_sync: 512,
        }
    }
}

/// `WatchCreateRequest.FilterType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFilterType {
    NoPut,
    NoDelete,
}

/// `WatchCreateRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchCreateRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    /// `<= 0`: from the next revision.
    pub start_revision: i64,
    pub progress_notify: bool,
    pub filters: Vec<WatchFilterType>,
    pub prev_kv: bool,
    /// 0: the stream chooses.
    pub watch_id: WatchId,
    /// Splitting large responses is the server's job; kept for it.
    pub fragment: bool,
}

/// `WatchResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchResponse {
    pub header: ResponseHeader,
    pub watch_id: WatchId,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: i64,
    pub cancel_reason: String,
    /// The watch asked for large responses to be split: the server may send this one in
    /// fragments (the wire's `fragment` flag, set on all but the last, is the server's).
    pub fragment: bool,
    pub events: Vec<Event>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Receives live events of revisions `>= min_rev`.
    Synced { min_rev: i64 },
    /// Has everything before `next_rev`; catches up from history.
    Unsynced { next_rev: i64 },
}

#[derive(Clone, Debug)]
struct Watcher {
    filter: EventFilter,
    progress_notify: bool,
    fragment: bool,
    state: State,
    sent_since_progress: bool,
}

#[derive(Clone, Debug, Default)]
struct Stream {
    watchers: BTreeMap<WatchId, Watcher>,
    next_watch_id: WatchId,
    outbox: VecDeque<WatchResponse>,
    pending_events: usize,
    progress_requested: bool,
}

type WatcherKey = (StreamId, WatchId);

/// Every watch stream of one server (see the module docs).
#[derive(Debug)]
pub struct WatchHub {
    config: WatchConfig,
    current_rev: i64,
    streams: BTreeMap<StreamId, Stream>,
    next_stream_id: StreamId,
    single_key: BTreeMap<Bytes, BTreeSet<WatcherKey>>,
    ranges: BTreeSet<WatcherKey>,
    unsynced: BTreeSet<WatcherKey>,
    sync_cursor: Option<WatcherKey>,
    /// Watchers that asked for `prev_kv` (see [`WatchHub::wants_prev_values`]).
    prev_kv_watchers: usize,
    /// Rare paths taken (see `crate::coverage`).
    coverage: Coverage,
}

impl WatchHub {
    /// How often this hub took each rare path (see `crate::coverage`).
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    /// A hub in step with `store` (its current revision).
    pub fn new(config: WatchConfig, store: &Store) -> Self {
        WatchHub {
            config,
            current_rev: store.current_revision(),
            streams: BTreeMap::new(),
            next_stream_id: 1,
            single_key: BTreeMap::new(),
            ranges: BTreeSet::new(),
            unsynced: BTreeSet::new(),
            sync_cursor: None,
            prev_kv_watchers: 0,
            coverage: Coverage::default(),
        }
    }

    /// Open watch streams (etcd's `etcd_debugging_mvcc_watch_stream_total`).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub fn open_stream(&mut self) -> StreamId {
        let id = self.next_stream_id;
        self.next_stream_id += 1;
        self.streams.insert(id, Stream::default());
        id
    }

    pub fn close_stream(&mut self, stream: StreamId) {
        let Some(s) = self.streams.remove(&stream) else {
            return;
        };
        for (&id, watcher) in &s.watchers {
            self.unindex((stream, id), watcher);
        }
    }

    /// Creates a watch and queues its `created` response (or, on error, a created and
    /// cancelled response with the reason, as etcd sends).
    pub fn create_watch(
        &mut self,
        stream: StreamId,
        request: &WatchCreateRequest,
    ) -> Result<WatchId, WatchError> {
        let current = self.current_rev;
        let s = self
            .streams
            .get_mut(&stream)
            .ok_or(WatchError::NoSuchStream)?;
        let id = match new_watch(s, request) {
            Ok(id) => id,
            Err(e) => {
                s.outbox.push_back(WatchResponse {
                    header: ResponseHeader::at(current),
                    watch_id: PROGRESS_WATCH_ID,
                    created: true,
                    canceled: true,
                    cancel_reason: e.to_string(),
                    ..WatchResponse::default()
                });
                return Err(e);
            }
        };
        let watcher = watcher_for(request, current);
        s.outbox.push_back(WatchResponse {
            header: ResponseHeader::at(current),
            watch_id: id,
            created: true,
            ..WatchResponse::default()
        });
        self.index((stream, id), &watcher);
        if let Some(s) = self.streams.get_mut(&stream) {
            s.watchers.insert(id, watcher);
        }
        Ok(id)
    }

    /// Cancels a watch and queues the `canceled` response; false if there is no such watch
    /// (etcd then sends nothing).
    pub fn cancel_watch(&mut self, stream: StreamId, watch_id: WatchId) -> bool {
        let current = self.current_rev;
        let Some(s) = self.streams.get_mut(&stream) else {
            return false;
        };
        let Some(watcher) = s.watchers.remove(&watch_id) else {
            return false;
        };
        s.outbox.push_back(WatchResponse {
            header: ResponseHeader::at(current),
            watch_id,
            canceled: true,
            ..WatchResponse::default()
        });
        self.unindex((stream, watch_id), &watcher);
        true
    }

    /// A client's progress request: answered at once with the current revision if every
    /// watcher of the stream is synced, else as soon as they are.
    pub fn request_progress(&mut self, stream: StreamId) {
        let current = self.current_rev;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if all_synced(s) {
            s.outbox
                .push_back(progress_response(PROGRESS_WATCH_ID, current));
        } else {
            s.progress_requested = true;
        }
    }

    /// Feeds the events of the newly applied `revision` to the synced watchers.
    ///
    /// # Panics
    /// If revisions are not fed in increasing order.
    pub fn on_apply(&mut self, revision: i64, events: &[Event]) {
        assert!(
            revision > self.current_rev,
            "watch hub fed revision {revision} after {}",
            self.current_rev
        );
        self.current_rev = revision;
        if events.is_empty() {
            return;
        }
        for key in self.targets(events) {
            self.deliver(key, revision, events);
        }
    }

    /// Synced watchers that may want some of `events`.
    fn targets(&self, events: &[Event]) -> BTreeSet<WatcherKey> {
        let mut targets = BTreeSet::new();
        for event in events {
            if let Some(watchers) = self.single_key.get(event.kv.key.as_ref()) {
                targets.extend(watchers.iter().copied());
            }
        }
        for &key in &self.ranges {
            let Some(w) = self.watcher(key) else { continue };
            if events.iter().any(|e| w.filter.range.contains(&e.kv.key)) {
                targets.insert(key);
            }
        }
        targets
    }

    fn deliver(&mut self, key: WatcherKey, revision: i64, events: &[Event]) {
        let max_pending = self.config.max_pending_events_per_stream;
        let Some(s) = self.streams.get_mut(&key.0) else {
            return;
        };
        let Some(w) = s.watchers.get_mut(&key.1) else {
            return;
        };
        let State::Synced { min_rev } = w.state else {
            return;
        };
        if revision < min_rev {
            return;
        }
        let wanted: Vec<Event> = events
            .iter()
            .filter(|e| w.filter.wants(e))
            .map(|e| shaped(e, &w.filter))
            .collect();
        if wanted.is_empty() {
            return;
        }
        if s.pending_events > 0 && s.pending_events + wanted.len() > max_pending {
            w.state = State::Unsynced { next_rev: revision };
            let watcher = w.clone();
            self.unindex(key, &watcher);
            self.index(key, &watcher);
            return;
        }
        push_events(s, key.1, revision, wanted);
    }

    /// Serves up to `max_watchers_per_sync` unsynced watchers from `store`'s history.
    /// Returns how many watchers remain unsynced.
    ///
    /// # Panics
    /// If the hub was not fed every revision `store` has applied.
    pub fn sync(&mut self, store: &Store) -> usize {
        assert_eq!(
            store.current_revision(),
            self.current_rev,
            "watch hub out of step with the store"
        );
        let batch: Vec<WatcherKey> = self.next_unsynced_batch();
        for key in batch {
            self.sync_one(key, store);
        }
        self.answer_progress_requests();
        self.unsynced.len()
    }

    fn next_unsynced_batch(&mut self) -> Vec<WatcherKey> {
        let max = self.config.max_watchers_per_sync.max(1);
        let after: Vec<WatcherKey> = match self.sync_cursor {
            Some(cursor) => self
                .unsynced
                .range((
                    std::ops::Bound::Excluded(cursor),
                    std::ops::Bound::Unbounded,
                ))
                .chain(self.unsynced.range(..=cursor))
                .take(max)
                .copied()
                .collect(),
            None => self.unsynced.iter().take(max).copied().collect(),
        };
        self.sync_cursor = after.last().copied();
        after
    }

    fn sync_one(&mut self, key: WatcherKey, store: &Store) {
        let current = self.current_rev;
        let max_pending = self.config.max_pending_events_per_stream;
        let max_revisions = self.config.max_catch_up_revisions;
        let Some(s) = self.streams.get_mut(&key.0) else {
            return;
        };
        let Some(w) = s.watchers.get(&key.1) else {
            return;
        };
        let State::Unsynced { next_rev } = w.state else {
            return;
        };
        if next_rev < store.compact_revision() {
            s.outbox.push_back(WatchResponse {
                header: ResponseHeader::at(current),
                watch_id: key.1,
                canceled: true,
                compact_revision: store.compact_revision(),
                ..WatchResponse::default()
            });
            if let Some(watcher) = s.watchers.remove(&key.1) {
                self.unindex(key, &watcher);
            }
            return;
        }
        if s.pending_events > 0 && s.pending_events >= max_pending {
            return;
        }
        let room = max_pending.saturating_sub(s.pending_events);
        let Ok(caught_up) = store.events_since(next_rev, &w.filter, room, max_revisions) else {
            return;
        };
        // A watch from a revision still in the future (a restored member behind the one
        // the client saw) stays waiting for that revision, never for an earlier one.
        let done = caught_up.next_revision > current;
        if !done {
            self.coverage.hit(Path::WatchCatchUpCut);
        }
        let resume_rev = caught_up.next_revision.max(next_rev);
        if let Some(last) = caught_up.events.last() {
            let header_rev = if done { current } else { last.kv.mod_revision };
            push_events(s, key.1, header_rev, caught_up.events);
        }
        let Some(w) = s.watchers.get_mut(&key.1) else {
            return;
        };
        w.state = if done {
            State::Synced {
                min_rev: resume_rev.max(current + 1),
            }
        } else {
            State::Unsynced {
                next_rev: resume_rev,
            }
        };
        if done {
            let watcher = w.clone();
            self.unindex(key, &watcher);
            self.index(key, &watcher);
        }
    }

    fn answer_progress_requests(&mut self) {
        let current = self.current_rev;
        for s in self.streams.values_mut() {
            if s.progress_requested && all_synced(s) {
                s.progress_requested = false;
                s.outbox
                    .push_back(progress_response(PROGRESS_WATCH_ID, current));
            }
        }
    }

    /// The periodic progress notification of watchers created with `progress_notify`:
    /// those synced and sent nothing since the last tick get an empty response at the
    /// current revision.
    pub fn progress_tick(&mut self) {
        let current = self.current_rev;
        for s in self.streams.values_mut() {
            let mut due = Vec::new();
            for (&id, w) in s.watchers.iter_mut() {
                let synced = matches!(w.state, State::Synced { .. });
                if w.progress_notify && synced && !w.sent_since_progress {
                    due.push(id);
                }
                w.sent_since_progress = false;
            }
            for id in due {
                s.outbox.push_back(progress_response(id, current));
            }
        }
    }

    /// After the store was replaced by a snapshot: every watcher catches up from the
    /// restored history (cancelled as compacted if it cannot).
    pub fn on_restore(&mut self, store: &Store) {
        let next_rev = self.current_rev + 1;
        let keys: Vec<WatcherKey> = self
            .streams
            .iter()
            .flat_map(|(&sid, s)| s.watchers.keys().map(move |&wid| (sid, wid)))
            .collect();
        for key in keys {
            let Some(w) = self.watcher_mut(key) else {
                continue;
            };
            if let State::Synced { min_rev } = w.state {
                w.state = State::Unsynced {
                    next_rev: min_rev.max(next_rev),
                };
            }
            let watcher = w.clone();
            self.unindex(key, &watcher);
            self.index(key, &watcher);
        }
        self.current_rev = store.current_revision();
    }

    /// The next response to send on `stream`, oldest first.
    pub fn poll(&mut self, stream: StreamId) -> Option<WatchResponse> {
        let s = self.streams.get_mut(&stream)?;
        let response = s.outbox.pop_front()?;
        s.pending_events -= response.events.len().min(s.pending_events);
        Some(response)
    }

    /// Events queued on `stream` and not yet polled.
    pub fn pending_events(&self, stream: StreamId) -> usize {
        self.streams.get(&stream).map_or(0, |s| s.pending_events)
    }

    /// Whether the watch exists and is catching up from history.
    pub fn is_unsynced(&self, stream: StreamId, watch_id: WatchId) -> bool {
        self.unsynced.contains(&(stream, watch_id))
    }

    pub fn current_revision(&self) -> i64 {
        self.current_rev
    }

    /// Whether `stream` has a watch `watch_id`.
    pub fn has_watch(&self, stream: StreamId, watch_id: WatchId) -> bool {
        self.watcher((stream, watch_id)).is_some()
    }

    fn watcher(&self, key: WatcherKey) -> Option<&Watcher> {
        self.streams.get(&key.0)?.watchers.get(&key.1)
    }

    fn watcher_mut(&mut self, key: WatcherKey) -> Option<&mut Watcher> {
        self.streams.get_mut(&key.0)?.watchers.get_mut(&key.1)
    }

    /// Whether any watcher asked for the previous value of each change (`prev_kv`): the
    /// store reads it for the events only then.
    pub fn wants_prev_values(&self) -> bool {
        self.prev_kv_watchers > 0
    }

    /// Indexes a watcher (every [`WatchHub::index`] is undone by one `unindex`).
    fn index(&mut self, key: WatcherKey, w: &Watcher) {
        if w.filter.prev_kv {
            self.prev_kv_watchers += 1;
        }
        match (w.state, &w.filter.range.end) {
            (State::Unsynced { .. }, _) => {
                self.unsynced.insert(key);
            }
            (State::Synced { .. }, RangeEnd::Single) => {
                self.single_key
                    .entry(w.filter.range.start.clone())
                    .or_default()
                    .insert(key);
            }
            (State::Synced { .. }, _) => {
                self.ranges.insert(key);
            }
        }
    }

    fn unindex(&mut self, key: WatcherKey, w: &Watcher) {
        if w.filter.prev_kv {
            debug_assert!(self.prev_kv_watchers > 0, "a watcher unindexed twice");
            self.prev_kv_watchers = self.prev_kv_watchers.saturating_sub(1);
        }
        self.unsynced.remove(&key);
        self.ranges.remove(&key);
        let start = w.filter.range.start.as_ref();
        if let Some(set) = self.single_key.get_mut(start) {
            set.remove(&key);
            if set.is_empty() {
                self.single_key.remove(start);
            }
        }
    }
}

fn new_watch(s: &mut Stream, request: &WatchCreateRequest) -> Result<WatchId, WatchError> {
    let range = watch_range(request);
    if range.is_empty() {
        return Err(WatchError::EmptyRange);
    }
    if request.watch_id != 0 {
        if s.watchers.contains_key(&request.watch_id) {
            return Err(WatchError::DuplicateId);
        }
        return Ok(request.watch_id);
    }
    while s.watchers.contains_key(&s.next_watch_id) {
        s.next_watch_id += 1;
    }
    let id = s.next_watch_id;
    s.next_watch_id += 1;
    Ok(id)
}

/// etcd's conventions: an empty key means `"\0"`, the smallest key.
fn watch_range(request: &WatchCreateRequest) -> KeyRange {
    let key = if request.key.is_empty() {
        Bytes::from_static(b"\0")
    } else {
        request.key.clone()
    };
    KeyRange::new(&key, &request.range_end)
}

fn watcher_for(request: &WatchCreateRequest, current_rev: i64) -> Watcher {
    let start = request.start_revision;
    let state = if start <= 0 {
        State::Synced {
            min_rev: current_rev + 1,
        }
    } else if start > current_rev {
        State::Synced { min_rev: start }
    } else {
        State::Unsynced { next_rev: start }
    };
    Watcher {
        filter: EventFilter {
            range: watch_range(request),
            no_put: request.filters.contains(&WatchFilterType::NoPut),
            no_delete: request.filters.contains(&WatchFilterType::NoDelete),
            prev_kv: request.prev_kv,
        },
        progress_notify: request.progress_notify,
        fragment: request.fragment,
        state,
        sent_since_progress: false,
    }
}

fn shaped(event: &Event, filter: &EventFilter) -> Event {
    Event {
        r#type: event.r#type,
        kv: event.kv.clone(),
        prev_kv: if filter.prev_kv {
            event.prev_kv.clone()
        } else {
            None
        },
    }
}

fn push_events(s: &mut Stream, watch_id: WatchId, header_rev: i64, events: Vec<Event>) {
    s.pending_events += events.len();
    let mut fragment = false;
    if let Some(w) = s.watchers.get_mut(&watch_id) {
        w.sent_since_progress = true;
        fragment = w.fragment;
    }
    s.outbox.push_back(WatchResponse {
        header: ResponseHeader::at(header_rev),
        watch_id,
        fragment,
        events,
        ..WatchResponse::default()
    });
}

fn all_synced(s: &Stream) -> bool {
    s.watchers
        .values()
        .all(|w| matches!(w.state, State::Synced { .. }))
}

fn progress_response(watch_id: WatchId, current_rev: i64) -> WatchResponse {
    WatchResponse {
        header: ResponseHeader::at(current_rev),
        watch_id,
        ..WatchResponse::default()
    }
}
