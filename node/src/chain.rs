//! The ledger as consensus sees it: builds and checks block payloads on top of blocks that are
//! executed but not yet final, and commits finalized blocks with their certificates.
//!
//! Consensus blocks carry the borsh encoding of a ledger [`Block`] as payload, and the
//! consensus block hash *is* the ledger block hash, so a finality certificate names exactly one
//! ledger block. Execution results of proposals are kept ("speculative") so that finalizing a
//! block we already checked costs only the database write.
//!
//! Synchronous and single-owner: the driver calls it from its task.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_consensus::{Block as ConsensusBlock, BlockId, CertifiedBlock, FinalityCertificate};
use mesh_consensus::{Epoch, EpochInfo, Header, Height, View};
use mesh_ledger::encoding;
use mesh_ledger::memory::Layered;
use mesh_ledger::storage::{Store, StoreError};
use mesh_ledger::{
    apply_block, apply_block_with, build_block_with, Account, Address, Block, BlockError,
    BlockHeader, ChainContext, ExecutedBlock, Genesis, Hash, SignaturesVerified, SignedTransaction,
    TxHash, ValidatorSet,
};

use mesh_rpc::FinalizedEvent;

use crate::wire::FinalityRecord;

/// Most executed-but-not-final blocks kept. Simplex keeps at most a few views open; anything
/// beyond this is a flood of proposals and the oldest are dropped (re-executed if needed).
const SPECULATIVE_MAX: usize = 64;

/// Why a payload was refused or a block could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The payload is not a valid block there: vote against it.
    #[error("invalid block: {0}")]
    Invalid(String),
    /// The parent is neither our finalized head nor a block we executed.
    #[error("parent {0} is unknown")]
    UnknownParent(Hash),
    /// The database failed: fatal to the node.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl From<BlockError> for ChainError {
    fn from(err: BlockError) -> Self {
        match err {
            // A failed read is the node's problem, not the block's.
            BlockError::State(state) => ChainError::Storage(StoreError::State(state)),
            other => ChainError::Invalid(other.to_string()),
        }
    }
}

/// Whether `certificate` is over the block `id` itself: in its own view, or a re-proposal's
/// (same height and hash, a later view), rather than over a descendant.
fn certifies(certificate: &FinalityCertificate, id: &BlockId) -> bool {
    certificate.subject.height == id.height && certificate.subject.hash == id.hash
}

/// A block just committed.
#[derive(Debug, Clone)]
pub struct Committed {
    pub header: BlockHeader,
    pub hash: Hash,
    pub tx_hashes: Vec<TxHash>,
    /// How many of its transactions failed (and only paid the fee).
    pub failed_txs: usize,
    /// What subscribers learn: header, receipts, changed accounts.
    pub event: Arc<FinalizedEvent>,
}

/// The chain: database, chain context and the speculative blocks above the head.
pub struct Chain {
    store: Arc<Store>,
    ctx: ChainContext,
    genesis_hash: Hash,
    head: BlockHeader,
    head_hash: Hash,
    /// Consensus identity of the head (view 0 at genesis).
    head_id: BlockId,
    /// The certificate stored with the head, if it is the head's own.
    head_certificate: Option<FinalityCertificate>,
    speculative: HashMap<Hash, ExecutedBlock>,
    /// Insertion order of `speculative`, for bounded eviction.
    speculative_order: Vec<Hash>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("chain_id", &self.ctx.chain_id)
            .field("head_height", &self.head.height)
            .field("head_hash", &self.head_hash)
            .field("speculative", &self.speculative.len())
            .finish()
    }
}

impl Chain {
    /// Opens the chain in `store`, writing genesis into an empty database or checking that the
    /// stored one is `genesis`.
    pub fn open(store: Arc<Store>, genesis: &Genesis) -> Result<Chain, ChainError> {
        let genesis_header = store.init_genesis(genesis)?;
        let ctx = ChainContext::from_genesis(genesis).map_err(StoreError::from)?;
        let head = store.latest_header()?;
        let head_hash = head.hash();
        let (head_id, head_certificate) = if head.height == 0 {
            (
                BlockId {
                    epoch: Epoch(0),
                    view: View(0),
                    height: Height(0),
                    hash: head_hash,
                },
                None,
            )
        } else {
            let record = Self::record_at(&store, head.height)?;
            let id = record.header().id();
            if id.hash != head_hash {
                return Err(StoreError::Corrupt(format!(
                    "finality record at height {} names block {}, the stored block is {head_hash}",
                    head.height, id.hash
                ))
                .into());
            }
            let certificate = record.certificate();
            let own = certifies(certificate, &id).then(|| certificate.clone());
            (id, own)
        };
        Ok(Chain {
            store,
            ctx,
            genesis_hash: genesis_header.hash(),
            head,
            head_hash,
            head_id,
            head_certificate,
            speculative: HashMap::new(),
            speculative_order: Vec::new(),
        })
    }

    fn record_at(store: &Store, height: u64) -> Result<FinalityRecord, StoreError> {
        let bytes = store
            .certificate(height)?
            .ok_or_else(|| StoreError::Corrupt(format!("no finality record at height {height}")))?;
        FinalityRecord::decode(&bytes).map_err(|err| {
            StoreError::Corrupt(format!("finality record at height {height}: {err}"))
        })
    }

    /// The database.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The chain context (id, params, validator-set hash).
    pub fn context(&self) -> &ChainContext {
        &self.ctx
    }

    /// Hash of the genesis header (height 0), the root of consensus.
    pub fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }

    /// The newest finalized header.
    pub fn head(&self) -> &BlockHeader {
        &self.head
    }

    /// Hash of the newest finalized block.
    pub fn head_hash(&self) -> Hash {
        self.head_hash
    }

    /// Consensus identity of the newest finalized block and its own certificate, for
    /// restoring consensus after a restart.
    pub fn finalized(&self) -> (BlockId, Option<FinalityCertificate>) {
        (self.head_id, self.head_certificate.clone())
    }

    /// The epoch consensus is in with the committed head (ADR 003 §3): the head's own epoch, or
    /// the next one when the head is a boundary block; its set and the next one, read from the
    /// committed state; and its base, the previous epoch's boundary block.
    pub fn epoch_info(&self) -> Result<EpochInfo, ChainError> {
        let schedule = self.ctx.params.schedule();
        let height = self.head.height;
        // The state after the head holds the sets of the next height's epoch and the one after.
        let epoch = schedule.epoch_of(height.saturating_add(1));
        let validators = self.stored_set(epoch)?;
        let next_validators = self.stored_set(epoch.saturating_add(1))?;
        let base = if epoch == 0 {
            BlockId {
                epoch: Epoch(0),
                view: View(0),
                height: Height(0),
                hash: self.genesis_hash,
            }
        } else {
            let base_height = schedule.last(epoch - 1);
            if base_height == height {
                self.head_id
            } else {
                Self::record_at(&self.store, base_height)?.header().id()
            }
        };
        Ok(EpochInfo {
            epoch: Epoch(epoch),
            validators,
            next_validators,
            base,
        })
    }

    fn stored_set(&self, epoch: u64) -> Result<ValidatorSet, ChainError> {
        mesh_ledger::staking::epoch_set(self.store.as_ref(), epoch)
            .map_err(StoreError::State)?
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the state at height {} holds no validator set for epoch {epoch}",
                    self.head.height
                ))
                .into()
            })
    }

    /// Number of executed blocks waiting for finality.
    pub fn speculative_len(&self) -> usize {
        self.speculative.len()
    }

    /// The committed account (for mempool admission), default if it does not exist.
    pub fn committed_account(&self, address: &Address) -> Result<Account, ChainError> {
        use mesh_ledger::state::StateReader;
        Ok(self
            .store
            .account(address)
            .map_err(StoreError::from)?
            .unwrap_or_default())
    }

    /// The admission check of a staking operation against the committed state, as if it were
    /// in the next block (`mesh_ledger::execution::check_staking`); `Ok(None)` for other
    /// operations.
    pub fn check_staking(
        &self,
        tx: &mesh_ledger::Transaction,
    ) -> Result<Option<mesh_ledger::staking::Outcome>, ChainError> {
        mesh_ledger::check_staking(
            self.store.as_ref(),
            &self.ctx.params,
            self.head.height.saturating_add(1),
            tx,
        )
        .map_err(|err| StoreError::State(err).into())
    }

    /// The executed blocks from just above the head up to `parent`, oldest first; empty when
    /// `parent` is the head; `None` when `parent` does not lead back to the head.
    fn layers_to(&self, parent: &Hash) -> Option<Vec<&ExecutedBlock>> {
        let mut layers = Vec::new();
        let mut cursor = *parent;
        while cursor != self.head_hash {
            let block = self.speculative.get(&cursor)?;
            if block.height() <= self.head.height {
                return None;
            }
            layers.push(block);
            cursor = block.block.header.parent_hash;
        }
        layers.reverse();
        Some(layers)
    }

    /// The header of the head or of an executed block above it.
    pub fn parent_header(&self, parent: &Hash) -> Option<&BlockHeader> {
        if *parent == self.head_hash {
            Some(&self.head)
        } else {
            self.speculative.get(parent).map(|b| &b.block.header)
        }
    }

    /// The header of `parent` and the state after it: the committed state with the executed
    /// blocks from the head up to `parent` layered on top.
    fn state_after(&self, parent: &Hash) -> Result<(BlockHeader, Layered<'_, Store>), ChainError> {
        let header = self
            .parent_header(parent)
            .ok_or(ChainError::UnknownParent(*parent))?
            .clone();
        let layers = self
            .layers_to(parent)
            .ok_or(ChainError::UnknownParent(*parent))?;
        Ok((header, Layered::new(self.store.as_ref(), layers)))
    }

    /// True when `hash` is the head or an executed block above it.
    pub fn knows(&self, hash: &Hash) -> bool {
        self.layers_to(hash).is_some()
    }

    /// The account nonces as of `parent` (committed state plus the executed blocks up to it).
    pub fn nonces_at(&self, parent: &Hash) -> Result<impl FnMut(&Address) -> u64 + '_, ChainError> {
        use mesh_ledger::state::StateReader;
        let layers = self
            .layers_to(parent)
            .ok_or(ChainError::UnknownParent(*parent))?;
        let state = Layered::new(self.store.as_ref(), layers);
        Ok(move |address: &Address| {
            state
                .account(address)
                .ok()
                .flatten()
                .map_or(0, |account| account.nonce)
        })
    }

    /// Builds and executes a block on `parent` from `candidates`; keeps the result and returns
    /// the block hash and the payload to propose. Signatures `verified` vouches for (the
    /// mempool's) are not checked again.
    pub fn build(
        &mut self,
        parent: &Hash,
        proposer: Address,
        timestamp_ms: u64,
        candidates: Vec<SignedTransaction>,
        verified: SignaturesVerified<'_>,
    ) -> Result<(Hash, Vec<u8>, usize), ChainError> {
        let (parent_header, state) = self.state_after(parent)?;
        let (executed, excluded) = build_block_with(
            &state,
            &parent_header,
            proposer,
            timestamp_ms,
            candidates,
            &self.ctx,
            verified,
        )?;
        for item in &excluded {
            tracing::debug!(tx = %item.tx_hash, reason = %item.reason, "transaction left out of block");
        }
        let hash = executed.block_hash;
        let payload = executed.block.encode();
        let tx_count = executed.block.txs.len();
        self.remember(executed);
        Ok((hash, payload, tx_count))
    }

    /// Checks a proposed payload: it decodes, hashes to `block_hash`, sits at `height` on
    /// `parent`, was proposed by `leader`, is not stamped too far in the future, and executes
    /// to the roots in its header. Keeps the execution for finalization. Signatures `verified`
    /// vouches for (the mempool's) are not checked again; the rest are, in one batch.
    #[allow(clippy::too_many_arguments)]
    pub fn verify(
        &mut self,
        parent: &Hash,
        height: Height,
        block_hash: &Hash,
        payload: &[u8],
        leader: Address,
        now_wall_ms: u64,
        max_clock_drift_ms: u64,
        verified: SignaturesVerified<'_>,
    ) -> Result<(), ChainError> {
        if self.speculative.contains_key(block_hash) {
            return Ok(()); // checked already (re-proposal, or our own block)
        }
        let block = self.decode_payload(payload)?;
        let header = &block.header;
        if header.hash() != *block_hash {
            return Err(ChainError::Invalid(
                "payload does not hash to the proposed block hash".into(),
            ));
        }
        if header.height != height.0 || header.parent_hash != *parent {
            return Err(ChainError::Invalid(
                "payload height or parent differs from the proposal".into(),
            ));
        }
        if header.proposer != leader {
            return Err(ChainError::Invalid(format!(
                "block proposer {} is not the view's leader {leader}",
                header.proposer
            )));
        }
        if header.timestamp_ms > now_wall_ms.saturating_add(max_clock_drift_ms) {
            return Err(ChainError::Invalid(format!(
                "block timestamp {} ms is more than {max_clock_drift_ms} ms ahead of our clock",
                header.timestamp_ms
            )));
        }
        let (parent_header, state) = self.state_after(parent)?;
        let executed = apply_block_with(&state, &parent_header, &block, &self.ctx, verified)?;
        self.remember(executed);
        Ok(())
    }

    fn decode_payload(&self, payload: &[u8]) -> Result<Block, ChainError> {
        let max = usize::try_from(self.ctx.params.block_bytes_max)
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024);
        encoding::decode("block", payload, max).map_err(|err| ChainError::Invalid(err.to_string()))
    }

    fn remember(&mut self, executed: ExecutedBlock) {
        if self.speculative.len() >= SPECULATIVE_MAX && !self.speculative_order.is_empty() {
            let oldest = self.speculative_order.remove(0);
            self.speculative.remove(&oldest);
        }
        self.speculative_order.push(executed.block_hash);
        self.speculative.insert(executed.block_hash, executed);
    }

    /// Checks that a synced consensus block carries a ledger block whose hash, height and
    /// parent match its consensus header (consensus checks the certificate and links).
    pub fn check_synced(&self, block: &ConsensusBlock) -> Result<(), ChainError> {
        let ledger_block = self.decode_payload(&block.payload)?;
        let header = &ledger_block.header;
        if header.hash() != block.header.hash
            || header.height != block.header.height.0
            || header.parent_hash != block.header.parent
        {
            return Err(ChainError::Invalid(
                "synced payload does not match its consensus header".into(),
            ));
        }
        Ok(())
    }

    /// Executes (unless already executed) and commits a finalized block with its certificate,
    /// in one synced write.
    pub fn commit(
        &mut self,
        block: &ConsensusBlock,
        certificate: &FinalityCertificate,
    ) -> Result<Committed, ChainError> {
        let hash = block.header.hash;
        let executed = match self.speculative.remove(&hash) {
            Some(executed) if executed.block.header.parent_hash == self.head_hash => executed,
            _ => {
                let ledger_block = self.decode_payload(&block.payload)?;
                if ledger_block.header.hash() != hash {
                    return Err(ChainError::Invalid(
                        "finalized payload does not hash to its block hash".into(),
                    ));
                }
                apply_block(self.store.as_ref(), &self.head, &ledger_block, &self.ctx)?
            }
        };
        let record = FinalityRecord::V1 {
            header: block.header,
            certificate: certificate.clone(),
        };
        self.store.commit_block(&executed, &record.encode())?;
        let header = executed.block.header.clone();
        self.head = header.clone();
        self.head_hash = hash;
        self.head_id = block.header.id();
        self.head_certificate = certifies(certificate, &self.head_id).then(|| certificate.clone());
        // Everything at or below the new head is final or lost its race.
        let head_height = self.head.height;
        self.speculative.retain(|_, b| b.height() > head_height);
        let speculative = &self.speculative;
        self.speculative_order
            .retain(|h| speculative.contains_key(h));
        let failed_txs = executed
            .receipts
            .iter()
            .filter(|r| !matches!(r.status, mesh_ledger::ReceiptStatus::Success))
            .count();
        Ok(Committed {
            header,
            hash,
            event: Arc::new(FinalizedEvent::from_executed(&executed)),
            tx_hashes: executed.tx_hashes,
            failed_txs,
        })
    }

    /// Finalized blocks `from..=to` with their certificates, as sync serves them: stops early
    /// at `count_max` blocks or before `bytes_max` encoded bytes.
    pub fn certified_blocks(
        &self,
        from: u64,
        to: u64,
        count_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<CertifiedBlock>, ChainError> {
        let mut blocks = Vec::new();
        let mut bytes = 0usize;
        let to = to.min(self.head.height);
        let mut height = from.max(1);
        while height <= to && blocks.len() < count_max {
            let Some(ledger_block) = self.store.block(height)? else {
                break;
            };
            let record = Self::record_at(&self.store, height)?;
            let payload = ledger_block.encode();
            let size = payload.len().saturating_add(4096);
            if !blocks.is_empty() && bytes.saturating_add(size) > bytes_max {
                break;
            }
            bytes = bytes.saturating_add(size);
            let header: Header = *record.header();
            blocks.push(CertifiedBlock {
                block: ConsensusBlock { header, payload },
                certificate: record.certificate().clone(),
            });
            height += 1;
        }
        Ok(blocks)
    }
}
