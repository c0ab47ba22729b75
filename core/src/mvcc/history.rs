//! Reading history back as watch events: what a watcher that starts in the past, or fell
//! behind, catches up from.

use bytes::Bytes;

use super::error::Error;
use super::key_index::Entry;
use super::request::{Event, EventType, KeyValue};
use super::revision::{KeyRange, Revision};
use super::store::Store;

/// Which events a watcher wants.
#[derive(Clone, Debug)]
pub struct EventFilter {
    pub range: KeyRange,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
}

impl EventFilter {
    pub fn wants(&self, event: &Event) -> bool {
        let by_type = match event.r#type {
            EventType::Put => !self.no_put,
            EventType::Delete => !self.no_delete,
        };
        by_type && self.range.contains(&event.kv.key)
    }
}

/// Events read from history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatchUp {
    pub events: Vec<Event>,
    /// The first revision not yet read; above the current revision once caught up.
    pub next_revision: i64,
}

impl Store {
    /// The events of revisions `from_rev..` that `filter` wants, in order, whole revisions
    /// only: it stops at a revision boundary once `max_events` are collected or
    /// `max_revisions` revisions were read (a single revision larger than `max_events` is
    /// still returned whole). `prev_kv` is the key's state at the revision before, as
    /// etcd reports it (absent for creations and when that revision is compacted).
    pub fn events_since(
        &self,
        from_rev: i64,
        filter: &EventFilter,
        max_events: usize,
        max_revisions: usize,
    ) -> Result<CatchUp, Error> {
        self.healthy()?;
        if from_rev < self.compact_revision() {
            return Err(Error::Compacted);
        }
        let mut events = Vec::new();
        let mut revisions = 0usize;
        let mut last_main = None;
        let mut next_revision = self.current_revision() + 1;
        self.scan_log(Revision::new(from_rev.max(0), 0), &mut |rev, _, key| {
            if last_main != Some(rev.main) {
                let full = events.len() >= max_events.max(1) || revisions >= max_revisions.max(1);
                if full {
                    next_revision = rev.main;
                    return false;
                }
                revisions += 1;
                last_main = Some(rev.main);
            }
            if !filter.range.contains(key) {
                return true;
            }
            if let Some(event) = self.event_at(key, rev, filter.prev_kv) {
                if filter.wants(&event) {
                    events.push(event);
                }
            }
            true
        });
        self.healthy()?;
        Ok(CatchUp {
            events,
            next_revision,
        })
    }

    /// The event of `key` at `rev`, if that change is still visible.
    fn event_at(&self, key: &[u8], rev: Revision, with_prev: bool) -> Option<Event> {
        let entry = self.version_exactly_at(key, rev)?;
        if rev.main <= self.compact_revision() {
            // Only the newest change at the compact revision stays visible.
            let newest =
                self.version_at_or_before(key, Revision::new(self.compact_revision(), i64::MAX));
            if rev.main < self.compact_revision() || newest.is_none_or(|n| n.rev != rev) {
                return None;
            }
        }
        let key = Bytes::copy_from_slice(key);
        let prev_kv = if with_prev {
            self.prev_for_event(&entry, &key)
        } else {
            None
        };
        Some(event_of(&key, &entry, prev_kv))
    }

    fn prev_for_event(&self, entry: &Entry, key: &Bytes) -> Option<KeyValue> {
        if entry.version == 1 || entry.rev.main - 1 < self.compact_revision() {
            return None;
        }
        self.live_before(key, Revision::new(entry.rev.main, 0))
            .map(|e| e.to_kv(key))
    }
}

pub(crate) fn event_of(key: &Bytes, entry: &Entry, prev_kv: Option<KeyValue>) -> Event {
    if entry.is_tombstone() {
        Event {
            r#type: EventType::Delete,
            kv: KeyValue {
                key: key.clone(),
                mod_revision: entry.rev.main,
                ..KeyValue::default()
            },
            prev_kv,
        }
    } else {
        Event {
            r#type: EventType::Put,
            kv: entry.to_kv(key),
            prev_kv,
        }
    }
}
