//! Finality: turning a finalization certificate into `Finalize` outputs for the block and its
//! not-yet-final ancestors, asking for blocks we lack, and accepting synced blocks.

use std::collections::BTreeMap;

use mesh_ledger::Hash;

use crate::machine::Consensus;
use crate::types::{Block, CertifiedBlock, FinalityCertificate, View};
use crate::{Output, Rejection};

impl Consensus {
    /// Applies the pending finalization when every block between our finalized block and it
    /// is known; otherwise asks for the missing range once.
    pub(crate) fn try_apply_finality(&mut self) {
        let Some(cert) = self.pending_finality.clone() else {
            return;
        };
        if cert.subject.height <= self.finalized.height
            || cert.subject.height > self.config.last_height(self.epoch)
        {
            self.pending_finality = None;
            return;
        }
        match self.chain_down_to_finalized(&cert, &BTreeMap::new()) {
            Some(chain) => {
                self.pending_finality = None;
                let with_certs = chain
                    .into_iter()
                    .map(|block| {
                        let own = self.own_certificate(&block);
                        let certificate = own.unwrap_or_else(|| cert.clone());
                        CertifiedBlock { block, certificate }
                    })
                    .collect();
                self.finalize_chain(with_certs, cert);
            }
            None => {
                if self.sync_requested_to < cert.subject.height {
                    self.sync_requested_to = cert.subject.height;
                    self.outputs.push(Output::RequestSync {
                        from: self.finalized.height.next(),
                        to: cert.subject.height,
                    });
                }
            }
        }
    }

    /// The blocks from just above our finalized block up to the certified one, ascending, if
    /// all are known and the parent links reach our finalized block.
    fn chain_down_to_finalized(
        &self,
        cert: &FinalityCertificate,
        extra: &BTreeMap<Hash, Block>,
    ) -> Option<Vec<Block>> {
        let mut chain = Vec::new();
        let mut hash = cert.subject.hash;
        let mut height = cert.subject.height;
        while height > self.finalized.height {
            let block = self.blocks.get(&hash).or_else(|| extra.get(&hash))?;
            if block.header.height != height {
                return None;
            }
            hash = block.header.parent;
            height = Height(height.0 - 1);
            chain.push(block.clone());
        }
        if hash != self.finalized.hash {
            // Cannot happen while at most f validators are faulty; refuse rather than fork.
            return None;
        }
        chain.reverse();
        Some(chain)
    }

    /// The block's own finality certificate, when its view formed one.
    fn own_certificate(&self, block: &Block) -> Option<FinalityCertificate> {
        let state = self.views.get(&block.header.view)?;
        let cert = state.finalization.as_ref()?;
        (cert.subject == block.header.id()).then(|| cert.clone())
    }

    /// Emits `Finalize` for each block (ascending), moves the finalized block to the top of
    /// `chain`, and drops state that finality made irrelevant.
    fn finalize_chain(&mut self, chain: Vec<CertifiedBlock>, top: FinalityCertificate) {
        for item in chain {
            self.stats.blocks_finalized += 1;
            self.outputs.push(Output::Finalize {
                block: item.block,
                certificate: item.certificate,
            });
        }
        self.finalized = top.subject;
        self.finality = Some(top);
        let finalized = self.finalized;
        if finalized.height >= self.config.last_height(self.epoch) && !self.ended {
            // The boundary block is final: this epoch is over. What was in flight above it
            // (re-proposals, a sibling at the last height) is dropped on entering the next.
            self.ended = true;
            self.build_requested = None;
            self.pending_finality = None;
            self.outputs.push(Output::EpochEnded {
                epoch: self.epoch,
                boundary: finalized,
            });
        }
        let safety_views_max = self.config.limits.safety_views_max;
        self.safety.close_views(finalized.view, safety_views_max);
        self.views = self.views.split_off(&finalized.view.next());
        self.blocks
            .retain(|_, block| block.header.height > finalized.height);
        if self.view <= finalized.view {
            self.enter_view(finalized.view.next(), true);
        }
    }

    /// Keeps blocks the application recovered (journal or fetch by hash) and found valid, so
    /// finality can reach them; a proposal of this view waiting for the application's verdict
    /// on the same block gets it.
    pub(crate) fn on_blocks_recovered(&mut self, mut blocks: Vec<Block>) {
        let max = self.config.limits.sync_blocks_max;
        if blocks.len() > max {
            blocks.truncate(max);
        }
        let payload_max = self.config.limits.payload_bytes_max;
        let retained = self.config.limits.past_views_retained_max;
        let oldest_kept = View(self.view.0.saturating_sub(retained));
        let last = self.config.last_height(self.epoch);
        for block in blocks {
            let header = block.header;
            if header.epoch != self.epoch
                || header.height > last
                || header.is_reproposal()
                || header.height <= self.finalized.height
                || header.view <= self.finalized.view
                || header.view < oldest_kept
                || block.payload.len() > payload_max
                || self.blocks.contains_key(&header.hash)
                || self.blocks.len() as u64 >= retained
            {
                continue;
            }
            if let Some(state) = self.views.get_mut(&header.view) {
                let same = state
                    .proposal
                    .as_ref()
                    .is_some_and(|proposal| proposal.block.header == header);
                if same && state.verdict.is_none() {
                    state.verdict = Some(true);
                }
            }
            self.stats.blocks_recovered += 1;
            self.blocks.insert(header.hash, block);
        }
    }

    /// Accepts finalized blocks fetched from peers: each must extend the previous one (the
    /// first our finalized block) and be covered by a certificate that verifies, over itself
    /// or over a later block of the batch.
    pub(crate) fn on_blocks_synced(
        &mut self,
        blocks: Vec<CertifiedBlock>,
    ) -> Result<(), Rejection> {
        let max = self.config.limits.sync_blocks_max;
        if blocks.len() > max {
            return Err(Rejection::InvalidSync {
                reason: "too many blocks",
            });
        }
        let mut verified: Vec<FinalityCertificate> = Vec::new();
        let mut run: Vec<CertifiedBlock> = Vec::new();
        let last = self.config.last_height(self.epoch);
        for item in blocks {
            let header = item.block.header;
            if header.height <= self.finalized.height {
                continue;
            }
            if header.height > last || self.ended {
                // Certified by the next epoch's set: checked once we are in it.
                break;
            }
            let (parent_hash, parent_height) = match run.last() {
                Some(last) => (last.block.header.hash, last.block.header.height),
                None => (self.finalized.hash, self.finalized.height),
            };
            if header.parent != parent_hash || header.height != parent_height.next() {
                return Err(Rejection::InvalidSync {
                    reason: "blocks do not link",
                });
            }
            let payload_max = self.config.limits.payload_bytes_max;
            if item.block.payload.len() > payload_max {
                let len = item.block.payload.len();
                return Err(Rejection::PayloadTooLarge {
                    len,
                    max: payload_max,
                });
            }
            if item.certificate.subject.height < header.height {
                return Err(Rejection::InvalidSync {
                    reason: "certificate below its block",
                });
            }
            if item.certificate.subject.epoch != self.epoch || header.epoch != self.epoch {
                return Err(Rejection::InvalidSync {
                    reason: "block or certificate of another epoch",
                });
            }
            if !verified.contains(&item.certificate) {
                item.certificate.verify_with_quorum(
                    &self.config.chain_id,
                    &self.committee.set,
                    self.committee.quorum,
                    Some(&self.committee.keys),
                )?;
                verified.push(item.certificate.clone());
            }
            let certifies_itself = item.certifies_itself();
            run.push(item);
            if certifies_itself {
                // Everything in the run links to this certified block, so all of it is final.
                let top = run.last().map(|last| last.certificate.clone());
                if let Some(top) = top {
                    self.finalize_chain(std::mem::take(&mut run), top);
                }
            }
        }
        Ok(())
    }
}

use crate::types::Height;
