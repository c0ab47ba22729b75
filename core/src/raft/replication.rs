//! Log replication (§5.3), the commit rule (§5.4.2), flow control, and snapshots (§7).

use super::entry::{Entry, EntryPayload, Index, NodeId, Snapshot};
use super::error::{MessageError, ProposeError};
use super::log::AppendOutcome;
use super::lost_state::{LostState, Notice};
use super::message::{Append, AppendResponse, Heartbeat, HeartbeatResponse, MessageBody};
use super::progress::{Rejection, ReplicationState};
use super::quorum;
use super::state::Role;
use super::{Proposed, Raft};
use crate::coverage::Path;

impl Raft {
    // ---- Leader: proposals ----

    pub(super) fn append_proposal(
        &mut self,
        payload: EntryPayload,
    ) -> Result<Proposed, ProposeError> {
        debug_assert_eq!(self.role, Role::Leader);
        if let Some(transfer) = self.transfer {
            return Err(ProposeError::LeaderTransferInProgress { to: transfer.to });
        }
        if !self.conf.contains(self.id) {
            return Err(ProposeError::NotMember);
        }
        let size_bytes = payload.size_bytes() + super::entry::ENTRY_OVERHEAD_BYTES;
        // One proposal always fits when nothing is uncommitted, however large it is.
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size_bytes > self.config.max_uncommitted_bytes
        {
            return Err(ProposeError::UncommittedLimit {
                uncommitted_bytes: self.uncommitted_bytes,
                proposal_bytes: size_bytes,
                limit_bytes: self.config.max_uncommitted_bytes,
            });
        }
        if let EntryPayload::ConfChange(change) = &payload {
            if self.pending_conf_index > self.log.applied_index() {
                return Err(ProposeError::ConfChangePending {
                    pending_index: self.pending_conf_index,
                });
            }
            super::membership::validate(&self.conf, change)?;
        }
        let index = self.append_leader_entry(payload);
        Ok(Proposed::Appended {
            index,
            term: self.term,
        })
    }

    /// Appends an entry of the leader's term; followers get it at the next flush.
    pub(super) fn append_leader_entry(&mut self, payload: EntryPayload) -> Index {
        let index = self.log.last_index() + 1;
        if matches!(payload, EntryPayload::ConfChange(_)) {
            self.pending_conf_index = index;
        }
        let entry = Entry {
            index,
            term: self.term,
            payload,
        };
        self.uncommitted_bytes += entry.size_bytes();
        self.log.append_local(entry);
        self.broadcast_pending = true;
        index
    }

    pub(super) fn handle_forwarded_proposals(&mut self, payloads: Vec<EntryPayload>) {
        if self.role != Role::Leader {
            // Not the leader (any more): dropped, as if lost on the way. The proposer times out.
            return;
        }
        for payload in payloads {
            // A refused forwarded proposal is dropped likewise.
            let _refused = self.append_proposal(payload);
        }
    }

    // ---- Leader: sending ----

    pub(super) fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in peers {
            self.send_appends(id, true);
        }
    }

    /// Sends `to` as many Appends as its flow control allows. With `send_if_empty`, an Append
    /// without entries goes out if nothing else would, to carry the commit index.
    fn send_appends(&mut self, to: NodeId, send_if_empty: bool) {
        let mut first = true;
        while self.send_append(to, send_if_empty && first) {
            first = false;
            let replicating = self
                .progress
                .get(&to)
                .is_some_and(|p| p.state == ReplicationState::Replicate);
            if !replicating {
                break;
            }
        }
    }

    /// Sends one Append (or the snapshot, if `to` needs compacted entries). Returns whether
    /// an Append with entries went out.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(progress) = self.progress.get(&to) else {
            return false;
        };
        if progress.is_paused() {
            return false;
        }
        let next_index = progress.next_index;
        let prev_log_index = next_index - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            self.send_snapshot(to);
            return false;
        };
        let entries = self
            .log
            .entries_from(next_index, self.config.max_append_bytes);
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let last_sent = entries.last().map(|e| e.index);
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.sent_entries(last_sent);
        }
        let append = Append {
            prev_log_index,
            prev_log_term,
            entries,
            commit_index: self.log.commit_index(),
        };
        self.send(to, MessageBody::Append(append));
        last_sent.is_some()
    }

    fn send_snapshot(&mut self, to: NodeId) {
        let snapshot = self.log.snapshot().clone();
        debug_assert!(
            snapshot.meta.index >= self.log.compacted_index(),
            "entries were compacted without a snapshot covering them"
        );
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(snapshot.meta.index);
        }
        self.send(to, MessageBody::InstallSnapshot(snapshot));
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        self.removal_handoff_round();
        let read_round = self.reads.next_heartbeat_round();
        let commit_index = self.log.commit_index();
        for progress in self.progress.values_mut() {
            progress.acked_since_heartbeat = false;
        }
        let peers: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .filter(|(&id, _)| id != self.id)
            .map(|(&id, p)| (id, p.match_index))
            .collect();
        for (id, match_index) in peers {
            // A follower may only commit what it is known to hold in the leader's version.
            if match_index < commit_index {
                self.coverage.hit(Path::HeartbeatCommitCapped);
            }
            let heartbeat = Heartbeat {
                commit_index: commit_index.min(match_index),
                read_round,
                acknowledged_index: match_index,
            };
            self.send(id, MessageBody::Heartbeat(heartbeat));
        }
        // A lone voter confirms its own rounds.
        self.release_confirmed_reads();
    }

    pub(super) fn tick_snapshot_retries(&mut self) {
        let retry_ticks = self.config.snapshot_retry_ticks;
        for progress in self.progress.values_mut() {
            if let ReplicationState::Snapshot { .. } = progress.state {
                progress.snapshot_elapsed_ticks += 1;
                if progress.snapshot_elapsed_ticks >= retry_ticks {
                    progress.become_probe();
                }
            }
        }
    }

    // ---- Leader: answers ----

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        response: AppendResponse,
    ) -> Result<(), MessageError> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        progress.recent_active = true;
        match response {
            AppendResponse::Accepted { match_index } => {
                if match_index > last_index {
                    return Err(MessageError::IndexOutOfRange {
                        kind: "AppendResponse",
                        index: match_index,
                        last_index,
                    });
                }
                let advanced = progress.update_match(match_index);
                // A probe answered at the known match also proves the logs agree there.
                let probe_confirmed = !advanced
                    && progress.state == ReplicationState::Probe
                    && match_index == progress.match_index;
                if !advanced && !probe_confirmed {
                    return Ok(());
                }
                match progress.state {
                    ReplicationState::Probe => progress.become_replicate(),
                    ReplicationState::Snapshot { pending_index } => {
                        // Either the snapshot arrived, or the member holds enough of the log
                        // for entries to continue from where it matches.
                        if progress.match_index >= pending_index
                            || progress.match_index >= self.log.compacted_index()
                        {
                            progress.become_replicate();
                        }
                    }
                    ReplicationState::Replicate => progress.inflights.free_to(match_index),
                }
                if self.maybe_commit() {
                    self.broadcast_pending = true;
                } else {
                    self.send_appends(from, false);
                }
                self.maybe_finish_transfer(from);
            }
            AppendResponse::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            } => {
                let probe_from = match self.log.term(hint_index) {
                    Some(_) => self.leader_conflict_hint(hint_index, hint_term) + 1,
                    None => hint_index + 1,
                };
                let progress = self.progress.get_mut(&from).expect("checked above");
                let match_index = progress.match_index;
                match progress.rejected(rejected_index, probe_from, hint_index) {
                    Rejection::Stale => {}
                    Rejection::Retry => self.send_appends(from, true),
                    Rejection::BelowAcknowledged => {
                        self.report_lost_state(from, match_index, hint_index)
                    }
                }
            }
        }
        Ok(())
    }

    /// A follower's log ends below what it acknowledged in this term: tell the operator,
    /// once per term. Heartbeats carry the proof to the follower, which stops itself.
    fn report_lost_state(&mut self, follower: NodeId, acknowledged_index: Index, hint: Index) {
        if self.lost_state_reported.insert(follower) {
            self.notices.push(Notice::FollowerLostState {
                follower,
                acknowledged_index,
                log_end_index: hint,
            });
        }
    }

    /// The leader's last index at or below `index` whose term is at most `term`.
    fn leader_conflict_hint(&self, index: Index, term: super::entry::Term) -> Index {
        self.log.find_conflict_hint(index, term).0
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, response: HeartbeatResponse) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        progress.probe_sent = false;
        if progress.state == ReplicationState::Replicate && progress.inflights.is_full() {
            progress.inflights.free_first_one();
        }
        // While appends are flowing (one was acknowledged since the heartbeat was sent) the
        // pipeline needs no help; when it stalled, an Append from `next` either fills a gap
        // left by a lost message or gets rejected and turns the follower to probing.
        let stalled = !progress.acked_since_heartbeat;
        let lagging = progress.match_index < last_index;
        if lagging && (stalled || progress.state != ReplicationState::Replicate) {
            self.send_appends(from, true);
        }
        // A TimeoutNow may have been lost; the heartbeat rhythm resends it.
        self.maybe_finish_transfer(from);
        if response.read_round > 0 && self.conf.voters.contains(&from) {
            self.reads.ack(from, response.read_round);
            self.release_confirmed_reads();
            self.maybe_finish_removal_handoff();
        }
    }

    /// The leader's own entries reached its disk.
    pub(super) fn leader_persisted(&mut self) {
        let persisted = self.log.persisted_index();
        if let Some(progress) = self.progress.get_mut(&self.id) {
            progress.update_match(persisted);
        }
        if self.maybe_commit() {
            self.broadcast_pending = true;
        }
    }

    /// Commits the highest index a majority of voters holds, if it is of the current term
    /// (§5.4.2: counting replicas never commits an earlier term's entry, Figure 8).
    pub(super) fn maybe_commit(&mut self) -> bool {
        let progress = &self.progress;
        let quorum_index = quorum::majority_value(&self.conf.voters, &mut self.scratch, |id| {
            progress.get(&id).map_or(0, |p| p.match_index)
        });
        if quorum_index <= self.log.commit_index() {
            return false;
        }
        if self.log.term(quorum_index) != Some(self.term) {
            self.coverage.hit(Path::EarlierTermEntryNotCommitted);
            return false;
        }
        let previous = self.log.commit_index();
        if self.log.term(previous + 1).is_some_and(|t| t < self.term) {
            self.coverage
                .hit(Path::EarlierTermEntryCommittedThroughCurrent);
        }
        self.log.commit_to(quorum_index);
        let committed_bytes: usize = self
            .log
            .range(previous, quorum_index)
            .filter(|e| e.term == self.term)
            .map(Entry::size_bytes)
            .sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(committed_bytes);
        self.on_leader_commit_advanced();
        true
    }

    // ---- Follower ----

    pub(super) fn follow(&mut self, from: NodeId) {
        if self.role != Role::Follower {
            // A candidate hears from the leader it lost to (§5.2).
            self.become_follower(self.term, Some(from));
        }
        self.election_elapsed_ticks = 0;
        if self.leader != Some(from) {
            self.set_leader(Some(from));
        }
    }

    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        append: Append,
    ) -> Result<(), MessageError> {
        if self.role == Role::Leader {
            return Err(MessageError::Malformed {
                kind: "Append",
                reason: "a second leader in this leader's term",
            });
        }
        self.follow(from);
        let commit_index = self.log.commit_index();
        if append.prev_log_index < commit_index {
            // Everything up to our commit index matches any leader's log (§5.4.3).
            self.respond_append(
                from,
                AppendResponse::Accepted {
                    match_index: commit_index,
                },
            );
            return Ok(());
        }
        let Append {
            prev_log_index,
            prev_log_term,
            entries,
            commit_index: leader_commit,
        } = append;
        match self
            .log
            .append_from_leader(prev_log_index, prev_log_term, entries)
        {
            AppendOutcome::Matched {
                last_new_index,
                truncated,
            } => {
                if truncated {
                    self.coverage.hit(Path::ConflictingSuffixTruncated);
                }
                self.log.commit_to(leader_commit.min(last_new_index));
                self.respond_append(
                    from,
                    AppendResponse::Accepted {
                        match_index: last_new_index,
                    },
                );
            }
            AppendOutcome::Mismatch => {
                self.coverage.hit(Path::AppendRejectedPrevMismatch);
                let (hint_index, hint_term) =
                    self.log.find_conflict_hint(prev_log_index, prev_log_term);
                self.respond_append(
                    from,
                    AppendResponse::Rejected {
                        rejected_index: prev_log_index,
                        hint_index,
                        hint_term,
                    },
                );
            }
            AppendOutcome::ConflictsWithCommitted { index } => {
                return Err(MessageError::ConflictsWithCommitted { from, index });
            }
        }
        Ok(())
    }

    fn respond_append(&mut self, to: NodeId, response: AppendResponse) {
        self.send(to, MessageBody::AppendResponse(response));
    }

    pub(super) fn handle_heartbeat(
        &mut self,
        from: NodeId,
        heartbeat: Heartbeat,
    ) -> Result<(), MessageError> {
        if self.role == Role::Leader {
            return Err(MessageError::Malformed {
                kind: "Heartbeat",
                reason: "a second leader in this leader's term",
            });
        }
        let last_index = self.log.last_index();
        let acknowledged_index = heartbeat.acknowledged_index.max(heartbeat.commit_index);
        if acknowledged_index > last_index {
            // This node acknowledged entries through that index to this leader, in this
            // term, each after it was on disk: they were lost since.
            self.lost_state = Some(LostState {
                leader: from,
                term: self.term,
                acknowledged_index,
                last_index,
            });
            return Ok(());
        }
        self.follow(from);
        self.log.commit_to(heartbeat.commit_index);
        self.send(
            from,
            MessageBody::HeartbeatResponse(HeartbeatResponse {
                read_round: heartbeat.read_round,
            }),
        );
        Ok(())
    }

    pub(super) fn handle_snapshot(
        &mut self,
        from: NodeId,
        snapshot: Snapshot,
    ) -> Result<(), MessageError> {
        if self.role == Role::Leader {
            return Err(MessageError::Malformed {
                kind: "InstallSnapshot",
                reason: "a second leader in this leader's term",
            });
        }
        self.follow(from);
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        let match_index = if index <= self.log.commit_index() {
            // Older than what we have committed (a duplicate, or overtaken): nothing to do.
            self.log.commit_index()
        } else if self.log.matches(index, term) {
            // We already hold the entries it covers: just learn they are committed.
            self.log.commit_to(index);
            index
        } else {
            self.conf = snapshot.meta.conf_state.clone();
            // Changes in the outstanding Ready predate the snapshot, which already holds them.
            self.ready_conf_changes.clear();
            self.log.restore_snapshot(snapshot);
            index
        };
        self.respond_append(from, AppendResponse::Accepted { match_index });
        Ok(())
    }
}
