//! The state machine: construction, the input dispatcher, views, timers and proposals.
//! Vote and certificate handling live in `votes.rs`, finality and sync in `finality.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mesh_ledger::{Address, Hash, SecretKey};

use crate::config::Config;
use crate::io::{Input, Output, SafetyState};
use crate::tally::ViewState;
use crate::types::{
    Block, BlockId, FinalityCertificate, Header, Height, Message, Proposal, View, Vote,
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
}

/// One validator's Simplex consensus, driven by [`Consensus::on_input`].
#[derive(Debug)]
pub struct Consensus {
    pub(crate) config: Config,
    pub(crate) key: SecretKey,
    pub(crate) me: Address,
    pub(crate) quorum: u64,
    pub(crate) keys: crate::keys::KeyCache,
    pub(crate) safety: SafetyState,
    pub(crate) now_ms: u64,
    /// The view this validator is in: it entered it on a certificate for the previous view.
    pub(crate) view: View,
    pub(crate) view_deadline_ms: u64,
    /// Views in a row that ended by nullification; drives the timeout back-off.
    pub(crate) failed_views: u32,
    /// The highest finalized block.
    pub(crate) finalized: BlockId,
    /// The certificate of `finalized` (None for genesis), re-sent to help laggards.
    pub(crate) finality: Option<FinalityCertificate>,
    /// A finalization above `finalized` that waits for missing blocks.
    pub(crate) pending_finality: Option<FinalityCertificate>,
    /// Highest height already asked for with `RequestSync`.
    pub(crate) sync_requested_to: Height,
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
    /// A fresh validator at genesis. Call [`Consensus::start`] before feeding inputs.
    pub fn new(config: Config, key: SecretKey) -> Consensus {
        let genesis = BlockId {
            view: View(0),
            height: Height(0),
            hash: config.genesis_hash,
        };
        Consensus::restore(config, key, SafetyState::default(), genesis, None)
    }

    /// Rebuilds a validator after a restart from its durable safety state and the highest
    /// finalized block (with its certificate, None at genesis). It will never sign a vote that
    /// conflicts with one recorded in `safety`.
    pub fn restore(
        config: Config,
        key: SecretKey,
        safety: SafetyState,
        last_finalized: BlockId,
        certificate: Option<FinalityCertificate>,
    ) -> Consensus {
        let me = key.address();
        let quorum = config.quorum_power();
        let keys = crate::keys::KeyCache::new(&config.validators);
        Consensus {
            view: safety.view.max(last_finalized.view.next()),
            config,
            key,
            me,
            quorum,
            keys,
            safety,
            now_ms: 0,
            view_deadline_ms: 0,
            failed_views: 0,
            finalized: last_finalized,
            finality: certificate,
            pending_finality: None,
            sync_requested_to: last_finalized.height,
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

    /// The highest finalized block.
    pub fn finalized(&self) -> BlockId {
        self.finalized
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
        let Some(index) = self.config.validators.index_of(&signed.signer) else {
            return false;
        };
        let vote = signed.vote;
        let message = mesh_ledger::crypto::signing_bytes(
            vote.domain(),
            &self.config.chain_id,
            &vote.signed_payload(),
        );
        self.keys.verify(index, &message, &signed.signature)
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
        let timeout_ms = self.config.timeouts.view_timeout_ms(self.failed_views);
        self.view_deadline_ms = self.now_ms.saturating_add(timeout_ms);
        self.outputs.push(Output::ScheduleTimeout {
            view,
            at_ms: self.view_deadline_ms,
        });
        let retained = self.config.limits.past_views_retained_max;
        let oldest_kept = View(view.0.saturating_sub(retained));
        while let Some((&oldest, _)) = self.views.first_key_value() {
            if oldest >= oldest_kept {
                break;
            }
            if let Some((_, state)) = self.views.pop_first() {
                if let Some(proposal) = state.proposal {
                    self.blocks.remove(&proposal.block.header.hash);
                }
            }
        }
    }

    /// Runs every rule that may fire after the state changed, until none does: move to the
    /// view after the highest certified one, vote notarize when allowed, propose when leader.
    pub(crate) fn advance(&mut self) {
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

    /// Whether our key carries voting power; a full node's does not, and it only follows.
    fn is_voter(&self) -> bool {
        self.config.validators.power_of(&self.me) > 0
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
    pub(crate) fn parent_is_certified(&self, header: &Header) -> bool {
        if header.parent_view >= header.view {
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
        if parent.hash != header.parent || parent.height.next() != header.height {
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
        if self.config.leader(view) != self.me
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
        self.build_requested = Some((view, parent));
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
        {
            return Ok(());
        }
        let header = Header {
            view,
            height: parent.height.next(),
            parent_view: parent.view,
            parent: parent.hash,
            hash: block_hash,
        };
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
        self.blocks.insert(block_hash, block);
        let state = self.views.entry(view).or_default();
        state.proposal = Some(proposal);
        state.verdict = Some(true);
        self.count_vote(signed);
        Ok(())
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
        if valid {
            self.blocks.insert(block_hash, proposal.block.clone());
        }
    }

    /// The view timer fired: nullify the view (if we have not finalized in it), and re-send
    /// what peers need to catch up, since messages may have been lost. Re-arms itself.
    fn on_timeout(&mut self, view: View) {
        if view != self.view || self.now_ms < self.view_deadline_ms {
            return;
        }
        self.report_view(view, false);
        // Re-send first: the nullify vote cast just below is sent once, after its persist.
        self.rebroadcast_justification(view);
        if self.safety.may_nullify(view) && !self.safety.nullified(view) {
            self.cast_vote(Vote::Nullify(view));
        }
        if let Some(cert) = &self.pending_finality {
            let to = cert.subject.height;
            self.outputs.push(Output::RequestSync {
                from: self.finalized.height.next(),
                to,
            });
        }
        // Our own vote may have completed the nullification: then the next view's timer
        // replaces this one.
        self.advance();
        if self.view != view {
            return;
        }
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
