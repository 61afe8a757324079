//! The state machine: construction, the input dispatcher, views, timers and proposals.
//! Vote and certificate handling live in `votes.rs`, finality and sync in `finality.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mesh_ledger::{Address, Hash, SecretKey};

use crate::config::Config;
use crate::epoch::{Committee, EpochInfo};
use crate::io::{Input, Output, SafetyState};
use crate::tally::ViewState;
use crate::types::{
    Block, BlockId, Epoch, FinalityCertificate, Header, Height, Message, Proposal, Round, View,
    Vote,
};
use crate::Rejection;

/// Counters of what the state machine did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages_rejected: u64,
    pub duplicates_ignored: u64,
    pub future_messages_buffered: u64,
    pub future_messages_dropped: u64,
    pub evidence_reported: u64,
    pub blocks_finalized: u64,
    pub views_nullified: u64,
    /// Views left without a notarized block (see [`crate::ViewReport`] for why).
    pub views_without_block: u64,
    /// Blocks accepted through [`Input::BlocksRecovered`].
    pub blocks_recovered: u64,
    /// Messages refused because they belong to another epoch ([`Rejection::WrongEpoch`]).
    pub wrong_epoch_messages: u64,
    /// Epochs entered through [`Input::EnterEpoch`].
    pub epochs_entered: u64,
    /// Re-proposals of a boundary block this validator made as leader.
    pub reproposals: u64,
}

/// Why a machine cannot be rebuilt from what the driver stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "the stored safety state is of epoch {stored}, ahead of epoch {epoch} that the \
         committed chain is in: the store is damaged"
    )]
    SafetyStateAhead { stored: Epoch, epoch: Epoch },
    #[error(
        "the last finalized block (height {height}, epoch {block_epoch}) is not in epoch \
         {epoch} nor its base"
    )]
    FinalizedOutsideEpoch {
        height: Height,
        block_epoch: Epoch,
        epoch: Epoch,
    },
}

/// One validator's Simplex consensus, driven by [`Consensus::on_input`].
#[derive(Debug)]
pub struct Consensus {
    pub(crate) config: Config,
    pub(crate) key: SecretKey,
    pub(crate) me: Address,
    /// The epoch this machine is in, and its set.
    pub(crate) epoch: Epoch,
    pub(crate) committee: Committee,
    /// The next epoch's set: finality certificates of that epoch are checked with it before
    /// the machine enters it, and its keys are ready when it does.
    pub(crate) next_committee: Committee,
    /// The epoch's boundary block is final: nothing more is proposed or voted in this epoch.
    pub(crate) ended: bool,
    /// The highest verified finality certificate of the next epoch, applied on entering it.
    pub(crate) next_finality: Option<FinalityCertificate>,
    pub(crate) safety: SafetyState,
    pub(crate) now_ms: u64,
    /// The view this validator is in: it entered it on a certificate for the previous view.
    pub(crate) view: View,
    pub(crate) view_deadline_ms: u64,
    /// Views in a row that ended by nullification; drives the timeout back-off.
    pub(crate) failed_views: u32,
    /// The highest finalized block of this epoch, or its base (the previous boundary block) as
    /// view 0 of this epoch.
    pub(crate) finalized: BlockId,
    /// The certificate of `finalized` (None for genesis), re-sent to help laggards.
    pub(crate) finality: Option<FinalityCertificate>,
    /// A finalization above `finalized` that waits for missing blocks.
    pub(crate) pending_finality: Option<FinalityCertificate>,
    /// Highest height already asked for with `RequestSync`.
    pub(crate) sync_requested_to: Height,
    /// How far the chain reached, as messages of later epochs claim (unverified): a laggard
    /// fetches up to there, one epoch at a time, since each epoch's blocks are checked with
    /// that epoch's set.
    pub(crate) sync_hint: Height,
    pub(crate) views: BTreeMap<View, ViewState>,
    /// Blocks above `finalized` that the application found valid.
    pub(crate) blocks: BTreeMap<Hash, Block>,
    /// The view we asked the application to build for, and the parent it must extend.
    pub(crate) build_requested: Option<(View, BlockId)>,
    pub(crate) future: BTreeMap<Address, VecDeque<Message>>,
    pub(crate) evidence_seen: BTreeSet<(View, Address)>,
    /// Peers we sent our finality certificate to, and at which finalized height.
    pub(crate) helped: BTreeMap<Address, Height>,
    /// Peers we sent an older view's certificate to: which view, and when.
    pub(crate) helped_in_view: BTreeMap<Address, (View, u64)>,
    pub(crate) outputs: Vec<Output>,
    pub(crate) last_rejection: Option<Rejection>,
    pub(crate) stats: Stats,
}

impl Consensus {
    /// A fresh validator at the start of `epoch` (at genesis: [`EpochInfo::genesis`]). Call
    /// [`Consensus::start`] before feeding inputs.
    pub fn new(config: Config, key: SecretKey, epoch: EpochInfo) -> Consensus {
        let safety = SafetyState::of_epoch(epoch.epoch);
        let base = epoch.base_in_epoch();
        Consensus::build(config, key, epoch, safety, base, None)
    }

    /// Rebuilds a validator after a restart from its durable safety state and the highest
    /// finalized block (with its certificate, None at genesis). `epoch` is the epoch that
    /// block is in — or, when it is a boundary block, the next one. The machine will never sign
    /// a vote that conflicts with one recorded in `safety`; a safety state of an earlier epoch
    /// is void and dropped, one of a later epoch is refused.
    pub fn restore(
        config: Config,
        key: SecretKey,
        epoch: EpochInfo,
        safety: SafetyState,
        last_finalized: BlockId,
        certificate: Option<FinalityCertificate>,
    ) -> Result<Consensus, RestoreError> {
        let current = epoch.epoch;
        if safety.epoch > current {
            return Err(RestoreError::SafetyStateAhead {
                stored: safety.epoch,
                epoch: current,
            });
        }
        let safety = if safety.epoch < current {
            SafetyState::of_epoch(current)
        } else {
            safety
        };
        let base = epoch.base_in_epoch();
        let finalized = if last_finalized.height == base.height && last_finalized.hash == base.hash
        {
            base
        } else if last_finalized.epoch == current && last_finalized.height > base.height {
            last_finalized
        } else {
            return Err(RestoreError::FinalizedOutsideEpoch {
                height: last_finalized.height,
                block_epoch: last_finalized.epoch,
                epoch: current,
            });
        };
        Ok(Consensus::build(
            config,
            key,
            epoch,
            safety,
            finalized,
            certificate,
        ))
    }

    /// The machine in `epoch` with a safety state of that epoch and `finalized` its newest
    /// final block (or the epoch's base as view 0), as `restore` checked them.
    fn build(
        config: Config,
        key: SecretKey,
        epoch: EpochInfo,
        safety: SafetyState,
        finalized: BlockId,
        certificate: Option<FinalityCertificate>,
    ) -> Consensus {
        let me = key.address();
        let current = epoch.epoch;
        let weak = config.mutation_weak_quorum;
        let committee = Committee::new(epoch.validators, weak);
        let next_committee = Committee::new(epoch.next_validators, weak);
        let ended = finalized.height >= config.last_height(current);
        Consensus {
            view: safety.view.max(finalized.view.next()),
            config,
            key,
            me,
            epoch: current,
            committee,
            next_committee,
            ended,
            next_finality: None,
            safety,
            now_ms: 0,
            view_deadline_ms: 0,
            failed_views: 0,
            finalized,
            finality: certificate,
            pending_finality: None,
            sync_requested_to: finalized.height,
            sync_hint: finalized.height,
            views: BTreeMap::new(),
            blocks: BTreeMap::new(),
            build_requested: None,
            future: BTreeMap::new(),
            evidence_seen: BTreeSet::new(),
            helped: BTreeMap::new(),
            helped_in_view: BTreeMap::new(),
            outputs: Vec::new(),
            last_rejection: None,
            stats: Stats::default(),
        }
    }

    /// Enters the first view: arms its timer and, when leading, asks for a payload.
    pub fn start(&mut self, now_ms: u64) -> Vec<Output> {
        self.now_ms = now_ms;
        // Votes signed before a restart count again: peers may still need them to form the
        // certificate of a view that only this validator's lost memory had completed.
        let finalized_view = self.finalized.view;
        let own_votes: Vec<Vote> = self
            .safety
            .votes
            .iter()
            .filter(|vote| vote.view() > finalized_view)
            .copied()
            .collect();
        for vote in own_votes {
            self.count_vote(vote.sign(&self.key, &self.config.chain_id));
        }
        self.enter_view(self.view, false);
        if self.ended {
            // Restarted after the boundary was final but before the next epoch was entered:
            // ask again.
            self.outputs.push(Output::EpochEnded {
                epoch: self.epoch,
                boundary: self.finalized,
            });
        }
        self.advance();
        std::mem::take(&mut self.outputs)
    }

    /// Handles one input and returns the work it causes, in order (see [`Output`]).
    pub fn on_input(&mut self, now_ms: u64, input: Input) -> Vec<Output> {
        self.now_ms = self.now_ms.max(now_ms);
        self.last_rejection = None;
        let result = match input {
            Input::Message { from, message } => self.on_message(from, message),
            Input::Messages { messages } => {
                self.on_message_batch(messages);
                Ok(())
            }
            Input::Timeout { view } => {
                self.on_timeout(view);
                Ok(())
            }
            Input::PayloadBuilt {
                view,
                block_hash,
                payload,
            } => self.on_payload_built(view, block_hash, payload),
            Input::PayloadVerified {
                view,
                block_hash,
                valid,
            } => {
                self.on_payload_verified(view, block_hash, valid);
                Ok(())
            }
            Input::BlocksSynced { blocks } => self.on_blocks_synced(blocks),
            Input::BlocksRecovered { blocks } => {
                self.on_blocks_recovered(blocks);
                Ok(())
            }
            Input::EnterEpoch(info) => {
                self.on_enter_epoch(info);
                Ok(())
            }
        };
        if let Err(rejection) = result {
            self.reject(rejection);
        }
        self.advance();
        self.replay_future_messages();
        std::mem::take(&mut self.outputs)
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view
    }

    /// The leader's proposal for `view`, if one arrived and the view's state is still kept.
    pub fn proposal(&self, view: View) -> Option<&Proposal> {
        self.views.get(&view)?.proposal.as_ref()
    }

    /// The highest finalized block of this epoch, or the epoch's base as its view 0.
    pub fn finalized(&self) -> BlockId {
        self.finalized
    }

    /// The epoch this machine is in.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Whether this epoch's boundary block is final and the machine waits for
    /// [`Input::EnterEpoch`].
    pub fn epoch_ended(&self) -> bool {
        self.ended
    }

    /// Whether this validator's key has voting power in the current epoch.
    pub fn is_voter(&self) -> bool {
        self.committee.set.power_of(&self.me) > 0
    }

    /// The leader of `view` in the current epoch.
    pub fn leader(&self, view: View) -> Address {
        self.committee.leader(view)
    }

    /// The current safety state (what the last `PersistSafetyState` carried).
    pub fn safety_state(&self) -> &SafetyState {
        &self.safety
    }

    /// This validator's address.
    pub fn address(&self) -> Address {
        self.me
    }

    /// Why the last input was rejected, if it was.
    pub fn last_rejection(&self) -> Option<&Rejection> {
        self.last_rejection.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Checks a vote's signature with the cached key of its signer (false for non-members).
    pub(crate) fn vote_signature_is_valid(&self, signed: &crate::SignedVote) -> bool {
        if signed.vote.epoch() != self.epoch {
            return false;
        }
        let Some(index) = self.committee.set.index_of(&signed.signer) else {
            return false;
        };
        let vote = signed.vote;
        let message = mesh_ledger::crypto::signing_bytes(
            vote.domain(),
            &self.config.chain_id,
            &vote.signed_payload(),
        );
        self.committee
            .keys
            .verify(index, &message, &signed.signature)
    }

    pub(crate) fn reject(&mut self, rejection: Rejection) {
        self.stats.messages_rejected += 1;
        self.last_rejection = Some(rejection);
    }

    /// Moves into `view`: arms its timer, drops state too old to matter, and leads if ours.
    pub(crate) fn enter_view(&mut self, view: View, progress: bool) {
        if progress {
            self.failed_views = 0;
        }
        self.view = view;
        self.arm_timer(view);
        let retained = self.config.limits.past_views_retained_max;
        let oldest_kept = View(view.0.saturating_sub(retained));
        while let Some((&oldest, _)) = self.views.first_key_value() {
            if oldest >= oldest_kept {
                break;
            }
            if let Some((_, state)) = self.views.pop_first() {
                // A re-proposal shares its hash with the boundary block it names.
                if let Some(proposal) = state.proposal {
                    if !proposal.block.header.is_reproposal() {
                        self.blocks.remove(&proposal.block.header.hash);
                    }
                }
            }
        }
    }

    /// Runs every rule that may fire after the state changed, until none does: move to the
    /// view after the highest certified one, vote notarize when allowed, propose when leader.
    pub(crate) fn advance(&mut self) {
        if self.ended {
            return;
        }
        loop {
            let mut certified = None;
            for (view, state) in self.views.range(self.view..) {
                if state.notarization.is_some()
                    || state.nullification.is_some()
                    || state.finalization.is_some()
                {
                    certified = Some(*view);
                }
            }
            if let Some(view) = certified {
                self.leave_certified_view(view);
                continue;
            }
            if self.try_vote_notarize() {
                continue;
            }
            break;
        }
        self.try_propose();
        self.try_apply_finality();
    }

    /// Leaves `view` (≥ the current view), which has a certificate: a notarized view gets our
    /// finalize vote first, unless we nullified it (the one rule safety rests on).
    fn leave_certified_view(&mut self, view: View) {
        let Some(state) = self.views.get(&view) else {
            return;
        };
        let notarized = state.notarization.as_ref().map(|cert| cert.subject.id());
        let progress = notarized.is_some() || state.finalization.is_some();
        if let Some(id) = notarized {
            if self.safety.may_finalize(id) {
                self.cast_vote(Vote::Finalize(id));
            }
        }
        if !progress {
            self.stats.views_nullified += 1;
            self.failed_views = self.failed_views.saturating_add(1);
        }
        self.report_view(view, true);
        self.enter_view(view.next(), progress);
    }

    /// Records a vote in the safety state, asks for it to be persisted, then sends it and
    /// counts it like anyone else's. A node whose key has no voting power (a full node
    /// following the chain) casts nothing: its signature must never enter a certificate.
    pub(crate) fn cast_vote(&mut self, vote: Vote) {
        if !self.is_voter() {
            return;
        }
        if self.safety.record(vote) {
            let views_max = self.config.limits.safety_views_max;
            self.safety.close_views(self.finalized.view, views_max);
            self.outputs
                .push(Output::PersistSafetyState(self.safety.clone()));
        }
        let signed = vote.sign(&self.key, &self.config.chain_id);
        self.outputs.push(Output::Broadcast(Message::Vote(signed)));
        self.count_vote(signed);
    }

    /// Votes notarize for the current view's proposal once it is verified, extends a
    /// certified parent, and we neither voted nor nullified in this view.
    fn try_vote_notarize(&mut self) -> bool {
        // `advance` loops while this votes; a node that cannot vote must not claim it did.
        if !self.is_voter() {
            return false;
        }
        let view = self.view;
        let Some(state) = self.views.get(&view) else {
            return false;
        };
        let Some(proposal) = &state.proposal else {
            return false;
        };
        if state.verdict != Some(true) {
            return false;
        }
        let header = proposal.block.header;
        if self.safety.notarized_in(view).is_some()
            || self.safety.nullified(view)
            || !self.safety.may_notarize(view, header.hash)
            || !self.parent_is_certified(&header)
        {
            return false;
        }
        self.cast_vote(Vote::Notarize(header));
        true
    }

    /// The block a proposal in `view` must extend: the newest notarized (or finalized) block
    /// of an earlier view such that every view in between was nullified.
    pub(crate) fn certified_parent(&self, view: View) -> Option<BlockId> {
        let mut candidate = View(view.0.checked_sub(1)?);
        loop {
            if candidate == self.finalized.view {
                return Some(self.finalized);
            }
            if candidate < self.finalized.view {
                return None;
            }
            let state = self.views.get(&candidate)?;
            if let Some(cert) = &state.notarization {
                return Some(cert.subject.id());
            }
            if let Some(cert) = &state.finalization {
                return Some(cert.subject);
            }
            state.nullification.as_ref()?;
            candidate = View(candidate.0.checked_sub(1)?);
        }
    }

    /// Does `header` extend a certified parent, one height up, with every skipped view
    /// nullified?
    /// At the epoch's last height only a re-proposal of the certified boundary block counts,
    /// and nothing is ever certified above it.
    pub(crate) fn parent_is_certified(&self, header: &Header) -> bool {
        let last = self.config.last_height(self.epoch);
        if header.epoch != self.epoch || header.parent_view >= header.view || header.height > last {
            return false;
        }
        let parent = if header.parent_view == self.finalized.view {
            Some(self.finalized)
        } else if header.parent_view < self.finalized.view {
            None
        } else {
            self.views.get(&header.parent_view).and_then(|state| {
                state
                    .notarization
                    .as_ref()
                    .map(|cert| cert.subject.id())
                    .or_else(|| state.finalization.as_ref().map(|cert| cert.subject))
            })
        };
        let Some(parent) = parent else { return false };
        let links = if header.is_reproposal() {
            parent.height == last && header.height == last
        } else {
            parent.height.next() == header.height
        };
        if parent.hash != header.parent || !links {
            return false;
        }
        let mut skipped = header.parent_view.next();
        while skipped < header.view {
            let nullified = self
                .views
                .get(&skipped)
                .is_some_and(|state| state.nullification.is_some());
            if !nullified {
                return false;
            }
            skipped = skipped.next();
        }
        true
    }

    /// As leader of the current view, asks the application for a payload once the parent is
    /// known.
    fn try_propose(&mut self) {
        let view = self.view;
        if self.committee.leader(view) != self.me
            || self
                .build_requested
                .is_some_and(|(requested, _)| requested >= view)
            || self.safety.notarized_in(view).is_some()
            || self.safety.nullified(view)
        {
            return;
        }
        let Some(parent) = self.certified_parent(view) else {
            return;
        };
        let last = self.config.last_height(self.epoch);
        if parent.height > last {
            return;
        }
        self.build_requested = Some((view, parent));
        if parent.height == last {
            // Nothing may be built above the boundary: propose it again until it is final.
            let header = Header {
                epoch: self.epoch,
                view,
                height: last,
                parent_view: parent.view,
                parent: parent.hash,
                hash: parent.hash,
            };
            if self.is_voter() && self.safety.may_notarize(view, header.hash) {
                self.stats.reproposals += 1;
                self.propose(header, Vec::new());
            }
            return;
        }
        self.outputs.push(Output::BuildPayload {
            view,
            height: parent.height.next(),
            parent: parent.hash,
        });
    }

    fn on_payload_built(
        &mut self,
        view: View,
        block_hash: Hash,
        payload: Vec<u8>,
    ) -> Result<(), Rejection> {
        let Some((requested, parent)) = self.build_requested else {
            return Ok(());
        };
        if requested != view || self.view != view {
            return Ok(());
        }
        let max = self.config.limits.payload_bytes_max;
        if payload.len() > max {
            return Err(Rejection::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        if self.safety.notarized_in(view).is_some()
            || self.safety.nullified(view)
            || !self.safety.may_notarize(view, block_hash)
            || block_hash == parent.hash
        {
            return Ok(());
        }
        let header = Header {
            epoch: self.epoch,
            view,
            height: parent.height.next(),
            parent_view: parent.view,
            parent: parent.hash,
            hash: block_hash,
        };
        self.propose(header, payload);
        Ok(())
    }

    /// Signs and sends our proposal of `header` (the leader's notarize vote), persisting the
    /// vote first.
    fn propose(&mut self, header: Header, payload: Vec<u8>) {
        let view = header.view;
        let block_hash = header.hash;
        let block = Block { header, payload };
        let vote = Vote::Notarize(header);
        // Persist before the proposal leaves: it carries our notarize signature.
        if self.safety.record(vote) {
            let views_max = self.config.limits.safety_views_max;
            self.safety.close_views(self.finalized.view, views_max);
            self.outputs
                .push(Output::PersistSafetyState(self.safety.clone()));
        }
        let signed = vote.sign(&self.key, &self.config.chain_id);
        let proposal = Proposal {
            block: block.clone(),
            signature: signed.signature,
        };
        self.outputs
            .push(Output::Broadcast(Message::Propose(proposal.clone())));
        if !header.is_reproposal() {
            self.blocks.insert(block_hash, block);
        }
        let state = self.views.entry(view).or_default();
        state.proposal = Some(proposal);
        state.verdict = Some(true);
        self.count_vote(signed);
    }

    fn on_payload_verified(&mut self, view: View, block_hash: Hash, valid: bool) {
        let Some(state) = self.views.get_mut(&view) else {
            return;
        };
        let Some(proposal) = &state.proposal else {
            return;
        };
        if proposal.block.header.hash != block_hash || state.verdict.is_some() {
            return;
        }
        state.verdict = Some(valid);
        if valid && !proposal.block.header.is_reproposal() {
            self.blocks.insert(block_hash, proposal.block.clone());
        }
    }

    /// The view timer fired: nullify the view (if we have not finalized in it), and re-send
    /// what peers need to catch up, since messages may have been lost. Re-arms itself.
    fn on_timeout(&mut self, view: View) {
        if view != self.view || self.now_ms < self.view_deadline_ms {
            return;
        }
        if self.ended {
            // Waiting for the next epoch: peers still in this one need the boundary's
            // certificate to leave it.
            if let Some(cert) = &self.finality {
                let message = Message::Finalization(cert.clone());
                self.outputs.push(Output::Broadcast(message));
            }
            self.arm_timer(view);
            return;
        }
        self.report_view(view, false);
        // Re-send first: the nullify vote cast just below is sent once, after its persist.
        self.rebroadcast_justification(view);
        if self.safety.may_nullify(view) && !self.safety.nullified(view) {
            let round = Round {
                epoch: self.epoch,
                view,
            };
            self.cast_vote(Vote::Nullify(round));
        }
        if let Some(cert) = &self.pending_finality {
            let to = cert.subject.height;
            self.outputs.push(Output::RequestSync {
                from: self.finalized.height.next(),
                to,
            });
        } else {
            // A request for what later epochs claim may have been lost: ask again.
            let to = self.sync_hint.min(self.config.last_height(self.epoch));
            if to > self.finalized.height {
                self.outputs.push(Output::RequestSync {
                    from: self.finalized.height.next(),
                    to,
                });
            }
        }
        // Our own vote may have completed the nullification: then the next view's timer
        // replaces this one.
        self.advance();
        if self.view != view {
            return;
        }
        self.arm_timer(view);
    }

    /// Schedules `view`'s timeout, backed off by the views that failed in a row.
    fn arm_timer(&mut self, view: View) {
        let timeout_ms = self.config.timeouts.view_timeout_ms(self.failed_views);
        self.view_deadline_ms = self.now_ms.saturating_add(timeout_ms);
        self.outputs.push(Output::ScheduleTimeout {
            view,
            at_ms: self.view_deadline_ms,
        });
    }

    /// Re-sends the certificates that justify being in `view` (the parent's notarization and
    /// the nullifications after it), our latest finality certificate, and our own votes of
    /// the view, so peers that lost messages catch up.
    fn rebroadcast_justification(&mut self, view: View) {
        let mut messages = Vec::new();
        if let Some(cert) = &self.finality {
            messages.push(Message::Finalization(cert.clone()));
        }
        let mut candidate = View(view.0.saturating_sub(1));
        while candidate > self.finalized.view {
            let Some(state) = self.views.get(&candidate) else {
                break;
            };
            if let Some(cert) = &state.notarization {
                messages.push(Message::Notarization(cert.clone()));
                break;
            }
            if let Some(cert) = &state.finalization {
                messages.push(Message::Finalization(cert.clone()));
                break;
            }
            let Some(cert) = &state.nullification else {
                break;
            };
            messages.push(Message::Nullification(cert.clone()));
            candidate = View(candidate.0.saturating_sub(1));
        }
        // Our votes in views still unresolved here: peers stuck there may need them.
        for vote in &self.safety.votes {
            let unresolved = self
                .views
                .get(&vote.view())
                .is_none_or(|state| state.notarization.is_none() && state.nullification.is_none());
            if vote.view() > self.finalized.view && (vote.view() == view || unresolved) {
                let signed = vote.sign(&self.key, &self.config.chain_id);
                messages.push(Message::Vote(signed));
            }
        }
        self.outputs
            .extend(messages.into_iter().map(Output::Broadcast));
    }
}

impl Consensus {
    /// Enters the next epoch once its boundary block is final here and committed by the
    /// driver: the announced next set becomes current (its keys were decoded already), every
    /// view of the old epoch is dropped, and the buffered messages of the new one are replayed.
    fn on_enter_epoch(&mut self, info: EpochInfo) {
        if !self.ended
            || info.epoch != self.epoch.next()
            || info.base.hash != self.finalized.hash
            || info.base.height != self.finalized.height
        {
            return;
        }
        let weak = self.config.mutation_weak_quorum;
        let next = Committee::new(info.next_validators.clone(), weak);
        let announced = std::mem::replace(&mut self.next_committee, next);
        // The set was announced a whole epoch ahead; the driver read the same from state.
        if !self.config.mutation_stale_set {
            self.committee = if announced.set == info.validators {
                announced
            } else {
                Committee::new(info.validators.clone(), weak)
            };
        }
        self.epoch = info.epoch;
        self.ended = false;
        self.finalized = info.base_in_epoch();
        self.views.clear();
        self.blocks.clear();
        self.build_requested = None;
        self.pending_finality = None;
        self.evidence_seen.clear();
        self.helped.clear();
        self.helped_in_view.clear();
        self.failed_views = 0;
        self.sync_requested_to = self.sync_requested_to.max(self.finalized.height);
        // Persisted before any vote of the new epoch leaves (the usual ordering rule).
        self.safety = SafetyState::of_epoch(self.epoch);
        self.outputs
            .push(Output::PersistSafetyState(self.safety.clone()));
        self.stats.epochs_entered += 1;
        self.enter_view(View(1), true);
        if let Some(cert) = self.next_finality.take() {
            if cert.subject.epoch == self.epoch {
                self.note_finality(cert);
            }
        }
        // A laggard goes on to the next epoch's blocks at once.
        self.request_sync_to_hint();
    }

    /// A message of a later `epoch` claims the chain reached the end of the epoch before it.
    /// Unverified (no set to check it with yet), so it only raises what we fetch: at most one
    /// request per epoch entered, clipped to our boundary.
    pub(crate) fn note_later_epoch(&mut self, epoch: Epoch) {
        let reached = Height(self.config.schedule.last(epoch.0.saturating_sub(1)));
        self.sync_hint = self.sync_hint.max(reached);
        self.request_sync_to_hint();
    }

    fn request_sync_to_hint(&mut self) {
        let to = self.sync_hint.min(self.config.last_height(self.epoch));
        if !self.ended && to > self.finalized.height && to > self.sync_requested_to {
            self.sync_requested_to = to;
            self.outputs.push(Output::RequestSync {
                from: self.finalized.height.next(),
                to,
            });
        }
    }
}
