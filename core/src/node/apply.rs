//! Applying committed entries, in log order, the same on every member: a client's proposal
//! to the store, the auth store or the membership, a Raft membership change; answers for
//! this member's clients, and the linearizable reads an applied index releases.

use crate::auth::TokenEffect;
use crate::coverage::Path;
use crate::mvcc::Command;
use crate::raft::{self, EntryPayload, Index, Ready, Term};

use super::proposal::{ConfChangeContext, Proposal, ProposalBody, NO_CLIENT};
use super::start_fence::START_FENCE_READ_ID;
use super::{admission, ApplyOutput, Completion, Node, Outcome};

impl Node {
    /// Applies what `ready` holds for the state machine — the snapshot, then the committed
    /// entries — and releases reads. Call after persisting, before `advance`.
    pub fn apply(&mut self, ready: &mut Ready, now_ms: u64) -> ApplyOutput {
        self.lease_clock.observe(now_ms);
        let mut output = ApplyOutput::default();
        if let Some(snapshot) = &ready.snapshot {
            self.restore_snapshot(snapshot);
            output.membership_changed = true;
        }
        let applied_any = ready.snapshot.is_some() || !ready.committed_entries.is_empty();
        for entry in std::mem::take(&mut ready.committed_entries) {
            self.apply_entry(entry, &mut output);
        }
        if applied_any {
            self.save_node_rows();
        }
        self.watches.sync(&self.store);
        self.check_start_fence();
        for read in std::mem::take(&mut ready.read_states) {
            if read.read_index > self.applied_index {
                self.coverage.hit(Path::ReadWaitedForApply);
            }
            self.waiting_reads
                .insert((read.read_index, read.request_id), ());
        }
        self.release_reads(&mut output);
        output
    }

    pub(super) fn apply_entry(&mut self, entry: raft::Entry, output: &mut ApplyOutput) {
        let index = entry.index;
        self.check_lost_proposals(index, entry.term, output);
        match &entry.payload {
            EntryPayload::Empty => self.store.apply_empty(index),
            EntryPayload::Normal(data) => match Proposal::decode(data) {
                Some(proposal) => self.apply_proposal(index, proposal, output),
                None => {
                    output.undecodable_entries += 1;
                    self.store.apply_empty(index);
                }
            },
            EntryPayload::ConfChange(change) => {
                let context = ConfChangeContext::decode(&change.context);
                // Checked when proposed against the same members (see `admission`).
                debug_assert!(
                    context.as_ref().is_none_or(|c| {
                        admission::admissible(&self.members, change.kind, &c.member).is_ok()
                    }),
                    "membership change {change:?} at index {index} applies to members it \
                     was not checked against"
                );
                self.members
                    .apply_conf_change(change, context.as_ref().map(|c| c.member.clone()));
                self.applied_conf = raft::apply_to_conf(&self.applied_conf, change);
                self.dirty.members = true;
                self.dirty.conf = true;
                self.store.apply_empty(index);
                output.membership_changed = true;
                if let Some(context) = context.filter(|c| c.proposer == self.id) {
                    self.complete(
                        context.request_id,
                        Outcome::MembershipChanged {
                            members: self.members.iter().cloned().collect(),
                        },
                        output,
                    );
                }
            }
        }
        self.applied_index = index;
        self.applied_term = entry.term;
    }

    pub(super) fn apply_proposal(
        &mut self,
        index: Index,
        proposal: Proposal,
        output: &mut ApplyOutput,
    ) {
        let Proposal {
            proposer,
            request_id,
            caller,
            body,
        } = proposal;
        let outcome = match body {
            ProposalBody::Store(command) => {
                match self.auth.check_command(&caller, &self.store, &command) {
                    Ok(()) => self.apply_store(index, &command),
                    Err(error) => {
                        self.store.apply_empty(index);
                        Outcome::Auth(Err(error))
                    }
                }
            }
            ProposalBody::PublishMember(attributes) => {
                self.members.publish(&attributes);
                self.dirty.members = true;
                self.store.apply_empty(index);
                Outcome::MemberPublished
            }
            ProposalBody::UpdatePeerUrls { id, peer_urls } => {
                self.store.apply_empty(index);
                // Checked again: another update may have taken the URLs since (see
                // `admission`). Every member applies the same log to the same members.
                match admission::check_update(&self.members, id, &peer_urls) {
                    Ok(()) => {
                        self.members.update_peer_urls(id, peer_urls);
                        self.dirty.members = true;
                        output.membership_changed = true;
                        Outcome::MembershipChanged {
                            members: self.members.iter().cloned().collect(),
                        }
                    }
                    Err(error) => Outcome::MembershipRefused(error),
                }
            }
            ProposalBody::Auth(command) => {
                let (result, effect) = self.auth.apply(&caller, index, &command);
                self.dirty.auth = true;
                self.apply_token_effect(effect);
                self.store.apply_empty(index);
                Outcome::Auth(result)
            }
        };
        if proposer == self.id {
            self.complete(request_id, outcome, output);
        }
    }

    pub(super) fn apply_store(&mut self, index: Index, command: &Command) -> Outcome {
        self.store
            .set_event_prev_values(self.watches.wants_prev_values());
        let applied = self.store.apply(index, self.lease_clock.now_ms(), command);
        // Only writes that changed something create a revision (and events).
        if applied.revision > self.watches.current_revision() {
            self.watches.on_apply(applied.revision, &applied.events);
        }
        Outcome::Store(applied.result)
    }

    pub(super) fn apply_token_effect(&mut self, effect: TokenEffect) {
        match effect {
            TokenEffect::None => {}
            TokenEffect::Assign { token, user } => {
                self.tokens.assign(token, &user, self.lease_clock.now_ms())
            }
            TokenEffect::InvalidateUser(user) => self.tokens.invalidate_user(&user),
            TokenEffect::Clear => self.tokens.clear(),
        }
    }

    pub(super) fn complete(&mut self, request_id: u64, outcome: Outcome, output: &mut ApplyOutput) {
        if request_id != NO_CLIENT {
            output.completions.push(Completion {
                request_id,
                outcome,
            });
        }
    }

    /// A local proposal appended at `index` in another term than the entry now applied
    /// there was overwritten: tell its client now rather than let it time out.
    pub(super) fn check_lost_proposals(
        &mut self,
        index: Index,
        term: Term,
        output: &mut ApplyOutput,
    ) {
        while let Some((&at, &(proposed_term, request_id))) = self.appended.first_key_value() {
            if at > index {
                break;
            }
            self.appended.pop_first();
            if at == index && proposed_term != term {
                self.complete(request_id, Outcome::Lost, output);
            }
        }
    }

    pub(super) fn release_reads(&mut self, output: &mut ApplyOutput) {
        while let Some((&(read_index, request_id), ())) = self.waiting_reads.first_key_value() {
            if read_index > self.applied_index {
                break;
            }
            self.waiting_reads.pop_first();
            if request_id == START_FENCE_READ_ID {
                self.start_fence = None;
            } else if let Some(asked) = self.asked_queries.remove(&request_id) {
                let answer = self.answer_for(asked.asked_by.as_ref(), asked.query);
                output.answers.push((request_id, answer));
            } else {
                output.reads.push(request_id);
            }
        }
    }
}
