//! The store's engine as the loop drives it: durable commits in batches (etcd's backend
//! batch), off the loop when they sync, a leader's engine installed in place of this
//! member's, and the Raft log released behind what the engine holds.

use std::time::Duration;

use keel_core::mvcc::Store;
use keel_core::node::snapshot_of_view;
use keel_storage::{Disk, RedbEngine};
use tokio::time::Instant;
use tracing::{error, info};

use crate::peer::snapshot_stream;

use super::{LoopError, ServerLoop};

/// Revisions of physical compaction a quiet member runs per step (see
/// `maybe_commit_engine`): milliseconds of work in a 1 GB store.
const IDLE_COMPACTION_REVISIONS_PER_STEP: usize = 2_000;
/// Steps a quiet member runs per tick at most, and the time after which it runs no more:
/// well inside a heartbeat. (One step a tick dropped 150k revisions in 18 s, longer than
/// etcdctl waits for a `compact --physical`.)
const IDLE_COMPACTION_STEPS_PER_TICK: usize = 10;
const IDLE_COMPACTION_TICK_BUDGET: Duration = Duration::from_millis(40);

/// The loop's error for a failure of the store's engine.
pub(super) fn engine_result<T>(result: Result<T, keel_core::mvcc::Error>) -> Result<T, LoopError> {
    result.map_err(|e| {
        error!(%e, "the store's engine failed");
        LoopError::Engine(e.to_string())
    })
}

impl<D: Disk + Send + 'static> ServerLoop<D> {
    /// A commit index learned alone is written but not synced (no fsync on the path of a
    /// write, see `keel_core::raft::ready`); when it stays so for a whole tick — the end of a
    /// burst, an idle cluster — it is synced, so that what was applied here (member
    /// attributes included) is what a restart after a crash applies at once, without a
    /// leader.
    pub(super) fn sync_idle_commit(&mut self) -> Result<(), LoopError> {
        if !self.commit_unsynced {
            self.commit_unsynced_ticks = 0;
            return Ok(());
        }
        self.commit_unsynced_ticks += 1;
        if self.commit_unsynced_ticks < 2 {
            return Ok(());
        }
        self.commit_unsynced = false;
        self.commit_unsynced_ticks = 0;
        self.storage
            .sync()
            .inspect_err(|e| error!(%e, "sync failed"))?;
        Ok(())
    }

    /// Puts the leader's engine received for the snapshot at `index` in place of this
    /// node's (before the snapshot is persisted to the log: a crash in between leaves the
    /// engine ahead of the log, which the next start rebases, see `Node::open`).
    pub(super) fn install_engine(&mut self, index: u64) -> Result<(), LoopError> {
        let engine_error = |what: &str, e: &dyn std::fmt::Display| {
            error!(%e, index, "{what}");
            LoopError::Engine(format!("{what}: {e}"))
        };
        drop(self.node.take_store());
        snapshot_stream::replace_engine(&mut self.engine_disk, index)
            .map_err(|e| engine_error("cannot put the leader's engine in place", &e))?;
        let disk = self
            .engine_disk
            .share()
            .map_err(|e| engine_error("cannot open the data dir again", &e))?;
        let engine = RedbEngine::open(disk, self.settings.engine_cache_size_bytes)
            .map_err(|e| engine_error("cannot open the leader's engine", &e))?;
        let store = Store::open(Box::new(engine), *self.node.store().config())
            .map_err(|e| engine_error("cannot open the leader's store", &e))?;
        self.node.install_store(store);
        self.engine_commit_in_flight = false;
        self.applied_since_commit = 0;
        self.last_engine_commit = Instant::now();
        Ok(())
    }

    /// Stops the loop once the store's engine failed.
    pub(super) fn check_engine(&self) -> Result<(), LoopError> {
        match self.node.store().failure() {
            Some(e) => {
                error!(%e, "the store's engine failed");
                Err(LoopError::Engine(e.to_string()))
            }
            None => Ok(()),
        }
    }

    /// Begins a durable commit of the engine once `--backend-batch-limit` entries, or
    /// (checked on ticks, so that a lone write after a quiet spell does not pay a commit of
    /// its own) `--backend-batch-interval`, have gone by since the last one began. The
    /// commit runs off the loop (see `keel_storage::RedbEngine`); once it is done, the Raft
    /// log may be released behind it.
    pub(super) fn maybe_commit_engine(&mut self, on_tick: bool) -> Result<(), LoopError> {
        // Asked every time: an idle engine also takes in a defragmented file's view here.
        let done = engine_result(self.node.store_commit_done())?;
        if self.engine_commit_in_flight && done {
            self.engine_commit_in_flight = false;
            self.after_engine_commit()?;
        }
        // Physical compaction moves with applies; on a quiet member, ticks move it, each with
        // an engine commit (which also moves the index checkpoint it may wait for).
        if on_tick && self.applied_since_commit == 0 && self.node.store().compaction_behind() {
            let started = Instant::now();
            for _ in 0..IDLE_COMPACTION_STEPS_PER_TICK {
                let behind = self
                    .node
                    .step_store_compaction(IDLE_COMPACTION_REVISIONS_PER_STEP);
                if !behind || started.elapsed() >= IDLE_COMPACTION_TICK_BUDGET {
                    break;
                }
            }
            self.applied_since_commit = 1;
        }
        let due = self.applied_since_commit >= self.settings.backend_batch_limit
            || (on_tick
                && self.applied_since_commit > 0
                && self.last_engine_commit.elapsed() >= self.settings.backend_batch_interval);
        // A commit still under way (a large index checkpoint, a slow disk) is not waited
        // for: the writes wait in memory and the next commit takes them all.
        if due && !self.engine_commit_in_flight {
            let beginning = Instant::now();
            let result = self.node.begin_store_commit();
            self.turn.begin_engine_commit += beginning.elapsed();
            engine_result(result)?;
            self.engine_commit_in_flight = true;
            self.applied_since_commit = 0;
            self.last_engine_commit = Instant::now();
        }
        Ok(())
    }

    /// Commits the engine durably and waits (at shutdown).
    pub(super) fn commit_engine(&mut self) -> Result<(), LoopError> {
        let result = self.node.commit_store(true);
        engine_result(result)?;
        self.engine_commit_in_flight = false;
        self.applied_since_commit = 0;
        self.after_engine_commit()
    }

    /// After a durable commit: releases the Raft log behind it every `--snapshot-count`
    /// entries, since the engine holds everything the released entries did.
    pub(super) fn after_engine_commit(&mut self) -> Result<(), LoopError> {
        let started = Instant::now();
        let result = self.release_log_behind_engine();
        self.turn.after_engine_commit += started.elapsed();
        result
    }

    pub(super) fn release_log_behind_engine(&mut self) -> Result<(), LoopError> {
        if let Some(ms) = self.node.store().last_commit_ms() {
            self.metrics
                .observe_engine_commit(Duration::from_millis(ms));
        }
        let view = engine_result(self.node.store().view())?;
        let marker = snapshot_of_view(&*view).map_err(|e| LoopError::Engine(e.to_string()))?;
        let index = marker.meta.index;
        if index < self.storage.snapshot_index() + self.settings.snapshot_count {
            return Ok(());
        }
        if let Some(retain_entries) = self.node.compact_log(marker.clone()) {
            self.storage
                .save_snapshot(&marker, retain_entries)
                .inspect_err(|e| error!(%e, "saving a snapshot marker failed"))?;
            info!(index, "released the Raft log behind the store's engine");
            if let Some(inspector) = &self.settings.hooks.inspector {
                inspector.log_released(&self.node, index);
            }
        }
        Ok(())
    }
}
