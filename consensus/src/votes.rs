//! Messages from peers: proposals, votes and certificates, each checked before it counts, and
//! the bounded buffer for messages about views too far ahead.

use mesh_ledger::Address;

use crate::machine::Consensus;
use crate::types::{
    Epoch, FinalityCertificate, Message, Notarization, Nullification, Proposal, SignedVote, View,
    Vote,
};
use crate::{Output, Rejection};

/// How a certificate reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// From a peer (or replayed from our journal): the same bytes others may have.
    Received,
    /// Formed here from a quorum of votes: our own choice of signers.
    Assembled,
}

/// Where a message's round sits relative to what we keep state for.
enum ViewRange {
    /// At or below the finalized view, or after the epoch ended: decided already.
    Stale,
    /// Within the window we tally.
    Current,
    /// Beyond the window: buffer per peer.
    FarFuture,
    /// Of an earlier epoch: an honest laggard may send it; never counted.
    PastEpoch,
    /// Of the next epoch: its finality certificates are checked with the announced set, the
    /// rest waits in the per-peer buffer until the machine enters that epoch.
    NextEpoch,
    /// Further ahead: no set to check it with.
    BeyondNextEpoch,
}

impl Consensus {
    fn classify(&self, epoch: Epoch, view: View) -> ViewRange {
        if epoch < self.epoch {
            ViewRange::PastEpoch
        } else if epoch == self.epoch.next() {
            ViewRange::NextEpoch
        } else if epoch > self.epoch {
            ViewRange::BeyondNextEpoch
        } else if view <= self.finalized.view || self.ended {
            ViewRange::Stale
        } else if view.0
            > self
                .view
                .0
                .saturating_add(self.config.limits.future_views_max)
        {
            ViewRange::FarFuture
        } else {
            ViewRange::Current
        }
    }

    pub(crate) fn on_message(&mut self, from: Address, message: Message) -> Result<(), Rejection> {
        self.on_message_checked(from, message, false)
    }

    /// Several messages that arrived together: the vote signatures among them are checked as
    /// one batch (about half the cost); if the batch fails, each vote is checked alone so only
    /// the bad ones are rejected.
    pub(crate) fn on_message_batch(&mut self, mut messages: Vec<(Address, Message)>) {
        let batch_max = self.config.limits.message_batch_max;
        if messages.len() > batch_max {
            messages.truncate(batch_max);
            self.reject(Rejection::BatchTooLarge { max: batch_max });
        }
        // Which messages are votes in the batch check; only those skip their own check.
        let in_batch: Vec<bool> = messages
            .iter()
            .map(|(_, message)| match message {
                // Only votes that will need a check: members, in the window, not yet counted.
                Message::Vote(signed) => self.needs_signature_check(signed),
                _ => false,
            })
            .collect();
        let batch_passed = {
            let votes: Vec<(&SignedVote, Vec<u8>, usize)> = messages
                .iter()
                .zip(&in_batch)
                .filter_map(|((_, message), included)| match message {
                    Message::Vote(signed) if *included => Some(signed),
                    _ => None,
                })
                .map(|signed| {
                    let vote = signed.vote;
                    let bytes = mesh_ledger::crypto::signing_bytes(
                        vote.domain(),
                        &self.config.chain_id,
                        &vote.signed_payload(),
                    );
                    let index = self.committee.set.index_of(&signed.signer);
                    (signed, bytes, index.unwrap_or(usize::MAX))
                })
                .collect();
            let items: Vec<mesh_ledger::crypto::SignedMessage<'_>> = votes
                .iter()
                .map(|(signed, bytes, _)| mesh_ledger::crypto::SignedMessage {
                    signer: &signed.signer,
                    message: bytes,
                    signature: &signed.signature,
                })
                .collect();
            let indices: Vec<usize> = votes.iter().map(|(_, _, index)| *index).collect();
            items.len() > 1 && self.committee.keys.verify_batch(&items, &indices)
        };
        for ((from, message), included) in messages.into_iter().zip(in_batch) {
            let checked = batch_passed && included;
            if let Err(rejection) = self.on_message_checked(from, message, checked) {
                self.reject(rejection);
            }
            self.advance();
        }
    }

    fn needs_signature_check(&self, signed: &SignedVote) -> bool {
        let view = signed.vote.view();
        matches!(self.classify(signed.vote.epoch(), view), ViewRange::Current)
            && self.committee.set.power_of(&signed.signer) > 0
            && !self
                .views
                .get(&view)
                .is_some_and(|state| state.has_exact(signed))
    }

    fn on_message_checked(
        &mut self,
        from: Address,
        message: Message,
        signature_checked: bool,
    ) -> Result<(), Rejection> {
        let epoch = message.epoch();
        if epoch != self.epoch {
            return self.on_other_epoch(from, message);
        }
        match message {
            Message::Finalization(cert) => return self.on_finalization(cert),
            Message::Notarization(cert) => return self.on_notarization(cert),
            Message::Nullification(cert) => return self.on_nullification(cert),
            Message::Propose(_) | Message::Vote(_) => {}
        }
        // Only a nullify vote says its sender is stuck: it timed out in that view. Notarize and
        // finalize votes for a view we left are mostly stragglers of a quorum already reached
        // (a 16-validator view ends on 11 votes of each kind; the other 5 arrive afterwards),
        // and answering each with a certificate cost n² messages per view.
        let timed_out =
            matches!(&message, Message::Vote(vote) if matches!(vote.vote, crate::Vote::Nullify(_)));
        match self.classify(epoch, message.view()) {
            ViewRange::PastEpoch | ViewRange::NextEpoch | ViewRange::BeyondNextEpoch => Ok(()),
            ViewRange::Stale => {
                if timed_out {
                    self.help_lagging_peer(from);
                }
                Ok(())
            }
            ViewRange::FarFuture => self.buffer_future(from, message),
            ViewRange::Current => match message {
                Message::Vote(vote) if vote.vote.view() < self.view && timed_out => {
                    self.help_peer_behind(from, vote.vote.view());
                    self.on_vote(vote, signature_checked)
                }
                Message::Propose(proposal) => self.on_proposal(proposal),
                Message::Vote(vote) => self.on_vote(vote, signature_checked),
                _ => Ok(()),
            },
        }
    }

    /// A message of another epoch (ADR 003 §3). A nullify vote of an earlier one says its
    /// sender is stuck there, and gets our finality certificate; a finality certificate of the
    /// next one is checked with the announced set and kept, and says how far to sync; other
    /// messages of the next epoch wait for it; everything else is refused and counted.
    fn on_other_epoch(&mut self, from: Address, message: Message) -> Result<(), Rejection> {
        let epoch = message.epoch();
        // A finality certificate of the next epoch is verified below and fetches on its own;
        // anything else from a later epoch is an unverified claim that the chain got there.
        let verified_below =
            epoch == self.epoch.next() && matches!(message, Message::Finalization(_));
        if epoch > self.epoch && !verified_below {
            self.note_later_epoch(epoch);
        }
        let signer = match &message {
            Message::Vote(vote) => vote.signer,
            _ => from,
        };
        let refused = Rejection::WrongEpoch {
            signer,
            epoch,
            current: self.epoch,
        };
        match (self.classify(epoch, message.view()), message) {
            (ViewRange::PastEpoch, Message::Vote(vote))
                if matches!(vote.vote, Vote::Nullify(_)) =>
            {
                self.help_lagging_peer(from);
                Ok(())
            }
            (ViewRange::NextEpoch, Message::Finalization(cert)) => self.on_next_finalization(cert),
            (ViewRange::NextEpoch, message) => self.buffer_future(from, message),
            _ => {
                self.stats.wrong_epoch_messages += 1;
                Err(refused)
            }
        }
    }

    /// A finality certificate of the next epoch proves this epoch ended: check it with the
    /// announced set, keep the highest for when we enter that epoch, and fetch the blocks up to
    /// our boundary (the blocks beyond it are checked in the next epoch).
    fn on_next_finalization(&mut self, cert: FinalityCertificate) -> Result<(), Rejection> {
        let known = self
            .next_finality
            .as_ref()
            .is_some_and(|kept| kept.subject.height >= cert.subject.height);
        if known {
            self.stats.duplicates_ignored += 1;
            return Ok(());
        }
        cert.verify_with_quorum(
            &self.config.chain_id,
            &self.next_committee.set,
            self.next_committee.quorum,
            Some(&self.next_committee.keys),
        )?;
        self.next_finality = Some(cert);
        let last = self.config.last_height(self.epoch);
        if self.finalized.height < last && self.sync_requested_to < last {
            self.sync_requested_to = last;
            self.outputs.push(Output::RequestSync {
                from: self.finalized.height.next(),
                to: last,
            });
        }
        Ok(())
    }

    /// A peer that timed out in a finalized view missed our progress: send it our finality
    /// certificate, once per peer per finalized height.
    fn help_lagging_peer(&mut self, peer: Address) {
        let Some(cert) = &self.finality else { return };
        if self.helped.get(&peer) == Some(&self.finalized.height) {
            return;
        }
        if self.helped.len() >= self.config.limits.future_peers_max
            && !self.helped.contains_key(&peer)
        {
            self.helped.pop_first();
        }
        self.helped.insert(peer, self.finalized.height);
        let message = Message::Finalization(cert.clone());
        self.outputs.push(Output::SendTo { peer, message });
    }

    /// A peer that timed out in an older view that we left: send it the certificate that
    /// closed the view, at most once per view per timeout period.
    fn help_peer_behind(&mut self, peer: Address, view: View) {
        let Some(state) = self.views.get(&view) else {
            return;
        };
        let message = match (&state.notarization, &state.nullification) {
            (Some(cert), _) => Message::Notarization(cert.clone()),
            (None, Some(cert)) => Message::Nullification(cert.clone()),
            (None, None) => return,
        };
        let period_ms = self.config.timeouts.view_timeout_base_ms;
        if let Some((helped_view, at_ms)) = self.helped_in_view.get(&peer) {
            if *helped_view == view && self.now_ms < at_ms.saturating_add(period_ms) {
                return;
            }
        }
        if self.helped_in_view.len() >= self.config.limits.future_peers_max
            && !self.helped_in_view.contains_key(&peer)
        {
            self.helped_in_view.pop_first();
        }
        self.helped_in_view.insert(peer, (view, self.now_ms));
        self.outputs.push(Output::SendTo { peer, message });
    }

    fn buffer_future(&mut self, from: Address, message: Message) -> Result<(), Rejection> {
        let limits = &self.config.limits;
        if !self.future.contains_key(&from) && self.future.len() >= limits.future_peers_max {
            self.stats.future_messages_dropped += 1;
            return Err(Rejection::FutureBufferFull { peer: from });
        }
        let per_peer_max = limits.future_messages_per_peer_max;
        let buffer = self.future.entry(from).or_default();
        if buffer.len() >= per_peer_max {
            buffer.pop_front();
            self.stats.future_messages_dropped += 1;
        }
        buffer.push_back(message);
        self.stats.future_messages_buffered += 1;
        Ok(())
    }

    /// Feeds buffered messages whose view came within the window (bounded by the buffer).
    pub(crate) fn replay_future_messages(&mut self) {
        let window_end = self
            .view
            .0
            .saturating_add(self.config.limits.future_views_max);
        let epoch = self.epoch;
        let mut ready = Vec::new();
        for (peer, buffer) in self.future.iter_mut() {
            let mut kept = std::collections::VecDeque::new();
            for message in buffer.drain(..) {
                // Messages of an epoch left behind are dropped; the next epoch's wait.
                if message.epoch() < epoch {
                    continue;
                }
                if message.epoch() == epoch && message.view().0 <= window_end {
                    ready.push((*peer, message));
                } else {
                    kept.push_back(message);
                }
            }
            *buffer = kept;
        }
        self.future.retain(|_, buffer| !buffer.is_empty());
        for (peer, message) in ready {
            if let Err(rejection) = self.on_message(peer, message) {
                self.reject(rejection);
            }
            self.advance();
        }
    }

    fn on_proposal(&mut self, proposal: Proposal) -> Result<(), Rejection> {
        let header = proposal.block.header;
        let view = header.view;
        let leader = self.committee.leader(view);
        if header.is_reproposal() && !proposal.block.payload.is_empty() {
            return Err(Rejection::InvalidProposal {
                signer: leader,
                view,
                reason: "a re-proposal carries a payload",
            });
        }
        let max = self.config.limits.payload_bytes_max;
        if proposal.block.payload.len() > max {
            return Err(Rejection::PayloadTooLarge {
                len: proposal.block.payload.len(),
                max,
            });
        }
        let signed = SignedVote {
            vote: Vote::Notarize(header),
            signer: leader,
            signature: proposal.signature,
        };
        let state = self.views.entry(view).or_default();
        if let Some(known) = &state.proposal {
            if *known == proposal {
                self.stats.duplicates_ignored += 1;
                return Ok(());
            }
        }
        if !self.vote_signature_is_valid(&signed) {
            return Err(Rejection::InvalidSignature {
                signer: leader,
                view,
            });
        }
        let state = self.views.entry(view).or_default();
        if state.proposal.is_none() {
            state.proposal = Some(proposal.clone());
            self.outputs.push(Output::VerifyPayload {
                view,
                height: header.height,
                parent: header.parent,
                block_hash: header.hash,
                payload: proposal.block.payload,
            });
        }
        // The proposal is the leader's notarize vote; a second, different one is evidence.
        self.count_vote(signed);
        Ok(())
    }

    fn on_vote(&mut self, signed: SignedVote, signature_checked: bool) -> Result<(), Rejection> {
        let view = signed.vote.view();
        if self.committee.set.power_of(&signed.signer) == 0 {
            return Err(Rejection::NotValidator {
                signer: signed.signer,
            });
        }
        if let Some(state) = self.views.get(&view) {
            if state.has_exact(&signed) {
                self.stats.duplicates_ignored += 1;
                return Ok(());
            }
        }
        if !signature_checked && !self.vote_signature_is_valid(&signed) {
            return Err(Rejection::InvalidSignature {
                signer: signed.signer,
                view,
            });
        }
        self.count_vote(signed);
        Ok(())
    }

    /// Counts a vote whose signature is good; forms and spreads certificates at quorum.
    pub(crate) fn count_vote(&mut self, signed: SignedVote) {
        let view = signed.vote.view();
        if signed.vote.epoch() != self.epoch {
            return;
        }
        let state = self.views.entry(view).or_default();
        let tallied = state.add(signed, &self.committee.set, self.committee.quorum);
        let certificate = tallied.quorum.then(|| match signed.vote {
            Vote::Notarize(header) => {
                Certified::Notarization(state.certificate(&signed.vote, header))
            }
            Vote::Finalize(id) => Certified::Finalization(state.certificate(&signed.vote, id)),
            Vote::Nullify(view) => Certified::Nullification(state.certificate(&signed.vote, view)),
        });
        if let Some(evidence) = tallied.evidence {
            self.report_evidence(view, evidence);
        }
        let origin = Origin::Assembled;
        match certificate {
            Some(Certified::Notarization(cert)) => self.record_notarization(cert, origin),
            Some(Certified::Finalization(cert)) => self.record_finalization(cert, origin),
            Some(Certified::Nullification(cert)) => self.record_nullification(cert, origin),
            None => {}
        }
    }

    fn report_evidence(&mut self, view: View, evidence: crate::Evidence) {
        let key = (view, evidence.signer());
        if self.evidence_seen.contains(&key) {
            return;
        }
        if self.evidence_seen.len() >= self.config.limits.evidence_max {
            self.evidence_seen.pop_first();
        }
        self.evidence_seen.insert(key);
        self.stats.evidence_reported += 1;
        self.outputs.push(Output::ReportEvidence(evidence));
    }

    fn on_notarization(&mut self, cert: Notarization) -> Result<(), Rejection> {
        let view = cert.subject.view;
        if view <= self.finalized.view
            || self.ended
            || self
                .views
                .get(&view)
                .is_some_and(|state| state.notarization.is_some())
        {
            self.stats.duplicates_ignored += 1;
            return Ok(());
        }
        cert.verify_with_quorum(
            &self.config.chain_id,
            &self.committee.set,
            self.committee.quorum,
            Some(&self.committee.keys),
        )?;
        self.record_notarization(cert, Origin::Received);
        Ok(())
    }

    fn on_nullification(&mut self, cert: Nullification) -> Result<(), Rejection> {
        let view = cert.subject.view;
        if view <= self.finalized.view
            || self.ended
            || self
                .views
                .get(&view)
                .is_some_and(|state| state.nullification.is_some())
        {
            self.stats.duplicates_ignored += 1;
            return Ok(());
        }
        cert.verify_with_quorum(
            &self.config.chain_id,
            &self.committee.set,
            self.committee.quorum,
            Some(&self.committee.keys),
        )?;
        self.record_nullification(cert, Origin::Received);
        Ok(())
    }

    fn on_finalization(&mut self, cert: FinalityCertificate) -> Result<(), Rejection> {
        let id = cert.subject;
        let known = self
            .views
            .get(&id.view)
            .is_some_and(|state| state.finalization.is_some())
            || self
                .pending_finality
                .as_ref()
                .is_some_and(|pending| pending.subject == id);
        if id.height <= self.finalized.height || known {
            self.stats.duplicates_ignored += 1;
            return Ok(());
        }
        if id.height > self.config.last_height(self.epoch) {
            // Honest members sign nothing above the boundary: more than a third lied.
            return Err(Rejection::InvalidSync {
                reason: "finality certificate above the epoch's last height",
            });
        }
        cert.verify_with_quorum(
            &self.config.chain_id,
            &self.committee.set,
            self.committee.quorum,
            Some(&self.committee.keys),
        )?;
        self.record_finalization(cert, Origin::Received);
        Ok(())
    }

    /// Whether to relay a certificate for `view` that reached us from `origin`.
    ///
    /// A certificate received from the network is relayed: its bytes are the ones everyone else
    /// received, so the gossip layer delivers it once and drops the copies. A certificate we
    /// assembled from votes carries our own choice of signers, so each validator's is different
    /// bytes: if all `n` relayed theirs, each view would flood `n` certificates of each kind
    /// through the network (n² deliveries, most of the traffic of a 16-validator committee).
    /// Only the leaders of the next two views relay theirs: the next leader needs the
    /// certificate to propose anyway, and the one after covers a crashed next leader. Every other
    /// path that spreads certificates stays (timeouts re-send them, a nullify vote for a view we
    /// left is answered with the certificate that closed it), and those paths carry liveness.
    fn relays(&self, view: View, origin: Origin) -> bool {
        match origin {
            Origin::Received => true,
            Origin::Assembled => {
                let me = self.address();
                self.committee.leader(View(view.0.saturating_add(1))) == me
                    || self.committee.leader(View(view.0.saturating_add(2))) == me
            }
        }
    }

    /// Stores a new notarization and relays it (see [`Consensus::relays`]): in Simplex every
    /// validator that sees a certificate makes sure the others see it too.
    pub(crate) fn record_notarization(&mut self, cert: Notarization, origin: Origin) {
        let view = cert.subject.view;
        let message = Message::Notarization(cert.clone());
        if self.relays(view, origin) {
            self.outputs.push(Output::Broadcast(message.clone()));
        }
        self.outputs.push(Output::Certified(message));
        self.views.entry(view).or_default().notarization = Some(cert);
    }

    pub(crate) fn record_nullification(&mut self, cert: Nullification, origin: Origin) {
        let view = cert.subject.view;
        let message = Message::Nullification(cert.clone());
        if self.relays(view, origin) {
            self.outputs.push(Output::Broadcast(message.clone()));
        }
        self.outputs.push(Output::Certified(message));
        self.views.entry(view).or_default().nullification = Some(cert);
    }

    pub(crate) fn record_finalization(&mut self, cert: FinalityCertificate, origin: Origin) {
        let message = Message::Finalization(cert.clone());
        if self.relays(cert.subject.view, origin) {
            self.outputs.push(Output::Broadcast(message.clone()));
        }
        self.outputs.push(Output::Certified(message));
        self.note_finality(cert);
    }

    /// Keeps a finality certificate of this epoch as the one to apply (when higher than the
    /// pending one) and in its view's state.
    pub(crate) fn note_finality(&mut self, cert: FinalityCertificate) {
        let id = cert.subject;
        if id.height <= self.finalized.height {
            return;
        }
        let higher = self
            .pending_finality
            .as_ref()
            .is_none_or(|pending| pending.subject.height < id.height);
        if higher {
            self.pending_finality = Some(cert.clone());
        }
        if id.view.0
            <= self
                .view
                .0
                .saturating_add(self.config.limits.future_views_max)
        {
            self.views.entry(id.view).or_default().finalization = Some(cert);
        }
    }
}

/// A certificate just formed from counted votes.
enum Certified {
    Notarization(Notarization),
    Finalization(FinalityCertificate),
    Nullification(Nullification),
}
