//! Deterministic execution: validating a block against its parent and executing its
//! transactions against state, producing receipts, state changes and the new state root.
//!
//! A transaction whose nonce is wrong or whose sender cannot pay the fee makes the whole block
//! invalid (a proposer must never include it). A transaction whose *operation* fails (a transfer
//! larger than the balance, deleting a missing key) still advances the nonce and pays the fee,
//! and gets a failed receipt; it never aborts the block.

use std::collections::hash_map::Entry;

use jmt::storage::{NodeBatch, TreeReader};

use crate::block::{
    self, Block, BlockHeader, FailureReason, Receipt, ReceiptStatus, PROTOCOL_VERSION,
};
use crate::crypto::{Address, Hash};
use crate::encoding;
use crate::genesis::{Genesis, GenesisError, Params};
use crate::staking::{self, EpochStepError, StakeTable, StakingState, UnbondingQueue};
use crate::state::{self, Account, StateChanges, StateError, StateKey, StateReader};
use crate::tx::{self, Op, SignedTransaction, Transaction, TxError, TxHash};
use crate::validator::ValidatorSet;
use crate::HashMap;

/// What execution needs to know about the chain besides state. The validator sets are not
/// here: they are state (`StateKey::EpochSet`), read from the parent's state for each block.
#[derive(Debug, Clone)]
pub struct ChainContext {
    pub chain_id: String,
    pub params: Params,
}

impl ChainContext {
    /// The context of a chain started from `genesis`.
    pub fn from_genesis(genesis: &Genesis) -> Result<ChainContext, GenesisError> {
        genesis.params.validate()?;
        Ok(ChainContext {
            chain_id: genesis.chain_id.clone(),
            params: genesis.params.clone(),
        })
    }
}

/// The hashes a header at `height` must carry: of `set(epoch(height))` and of
/// `set(epoch(height) + 1)`, read from the state after its parent. Each stored value is the
/// canonical encoding of its set, so its hash is the set's hash.
pub fn expected_set_hashes<S: StateReader + ?Sized>(
    state: &S,
    params: &Params,
    height: u64,
) -> Result<(Hash, Hash), StateError> {
    let epoch = params.schedule().epoch_of(height);
    let read = |epoch: u64| -> Result<Hash, StateError> {
        state
            .raw(&StateKey::EpochSet(epoch).encode())?
            .map(|bytes| Hash::of(&bytes))
            .ok_or_else(|| {
                StateError::Corrupt(format!(
                    "the validator set of epoch {epoch} is missing from the state before height {height}"
                ))
            })
    };
    Ok((read(epoch)?, read(epoch.saturating_add(1))?))
}

/// A block that has been validated and executed but not necessarily stored.
#[derive(Debug, Clone)]
pub struct ExecutedBlock {
    pub block: Block,
    pub block_hash: Hash,
    pub tx_hashes: Vec<TxHash>,
    pub receipts: Vec<Receipt>,
    pub changes: StateChanges,
    /// New tree nodes and versioned values of this height.
    pub tree_nodes: NodeBatch,
}

impl ExecutedBlock {
    /// Height of the block.
    pub fn height(&self) -> u64 {
        self.block.header.height
    }
}

/// Why a block is invalid (or could not be executed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block version {got} is not the supported version {expected}")]
    WrongVersion { expected: u32, got: u32 },
    #[error("block is for chain {got:?}, not {expected:?}")]
    WrongChain { expected: String, got: String },
    #[error("block height {got} does not follow parent height {parent}")]
    WrongHeight { parent: u64, got: u64 },
    #[error("block parent hash {got} is not the parent's hash {expected}")]
    WrongParent { expected: Hash, got: Hash },
    #[error("block timestamp {got} ms is before its parent's {parent} ms")]
    TimestampBeforeParent { parent: u64, got: u64 },
    #[error("block validator-set hash {got} is not the expected {expected}")]
    WrongValidatorSet { expected: Hash, got: Hash },
    #[error("block next-validator-set hash {got} is not the expected {expected}")]
    WrongNextValidatorSet { expected: Hash, got: Hash },
    #[error("the end-of-epoch step failed: {0}")]
    EpochStep(EpochStepError),
    #[error("block has {count} transactions, more than the limit of {max}")]
    TooManyTxs { count: usize, max: u32 },
    #[error("block transactions are {bytes} bytes, more than the limit of {max}")]
    TooManyBytes { bytes: u64, max: u64 },
    #[error("header says {header} transactions, block has {actual}")]
    TxCountMismatch { header: u32, actual: usize },
    #[error("tx root {header} in the header does not match the transactions ({computed})")]
    TxRootMismatch { header: Hash, computed: Hash },
    #[error("transaction {index} is invalid: {reason}")]
    InvalidTx { index: usize, reason: TxError },
    #[error("transaction {index} has nonce {got}, the account expects {expected}")]
    WrongNonce {
        index: usize,
        expected: u64,
        got: u64,
    },
    #[error("transaction {index} offers fee {fee} but the sender holds {balance}")]
    CannotPayFee {
        index: usize,
        fee: u64,
        balance: u64,
    },
    #[error("receipts root {header} in the header does not match execution ({computed})")]
    ReceiptsRootMismatch { header: Hash, computed: Hash },
    #[error("state root {header} in the header does not match execution ({computed})")]
    StateRootMismatch { header: Hash, computed: Hash },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Why a transaction cannot be executed on the current state (as opposed to its operation
/// failing). Shared with the mempool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatefulError {
    #[error("nonce {got} is too low: the account expects {expected}")]
    NonceTooLow { expected: u64, got: u64 },
    #[error("nonce {got} is too high: the account expects {expected}")]
    NonceTooHigh { expected: u64, got: u64 },
    #[error("insufficient balance for the fee: balance {balance}, fee {fee}")]
    InsufficientFee { balance: u64, fee: u64 },
}

/// Checks nonce and fee of `tx` against the sender's current account.
pub fn check_stateful(sender: &Account, tx: &Transaction) -> Result<(), StatefulError> {
    if tx.nonce < sender.nonce {
        return Err(StatefulError::NonceTooLow {
            expected: sender.nonce,
            got: tx.nonce,
        });
    }
    if tx.nonce > sender.nonce {
        return Err(StatefulError::NonceTooHigh {
            expected: sender.nonce,
            got: tx.nonce,
        });
    }
    if sender.balance < tx.fee {
        return Err(StatefulError::InsufficientFee {
            balance: sender.balance,
            fee: tx.fee,
        });
    }
    Ok(())
}

/// The state a block's transactions see while it executes: reads fall through to `base`,
/// writes stay here until the block is done.
struct WorkingState<'a, S> {
    base: &'a S,
    /// Accounts read or written so far, each with whether this block changed it.
    accounts: HashMap<Address, (Account, bool)>,
    values: StateChanges,
    /// The stake table once read, with whether this block changed it.
    stake_table: Option<(StakeTable, bool)>,
    /// Unbonding queues read so far, by release epoch, with whether this block changed them.
    unbonding: std::collections::BTreeMap<u64, (UnbondingQueue, bool)>,
}

impl<'a, S: StateReader> WorkingState<'a, S> {
    fn new(base: &'a S) -> Self {
        WorkingState {
            base,
            accounts: HashMap::default(),
            values: StateChanges::new(),
            stake_table: None,
            unbonding: std::collections::BTreeMap::new(),
        }
    }

    fn raw(&self, encoded_key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.values.get(encoded_key) {
            Some(value) => Ok(value.clone()),
            None => self.base.raw(encoded_key),
        }
    }

    /// Removes an entry: a deletion if the base holds it, otherwise just forgets this block's
    /// write (a deletion of a key the tree never held is not a change).
    fn delete(&mut self, encoded_key: Vec<u8>) -> Result<(), StateError> {
        if self.base.raw(&encoded_key)?.is_some() {
            self.values.insert(encoded_key, None);
        } else {
            self.values.remove(&encoded_key);
        }
        Ok(())
    }

    fn load_stake_table(&mut self) -> Result<&mut (StakeTable, bool), StateError> {
        if self.stake_table.is_none() {
            self.stake_table = Some((staking::stake_table(self.base)?, false));
        }
        self.stake_table
            .as_mut()
            .ok_or_else(|| StateError::Corrupt("stake table cache".into()))
    }

    fn load_unbonding(
        &mut self,
        release_epoch: u64,
    ) -> Result<&mut (UnbondingQueue, bool), StateError> {
        if !self.unbonding.contains_key(&release_epoch) {
            let queue = staking::unbonding_of(self.base, release_epoch)?;
            self.unbonding.insert(release_epoch, (queue, false));
        }
        self.unbonding
            .get_mut(&release_epoch)
            .ok_or_else(|| StateError::Corrupt("unbonding cache".into()))
    }

    fn account(&mut self, address: &Address) -> Result<Account, StateError> {
        if let Some((account, _)) = self.accounts.get(address) {
            return Ok(*account);
        }
        let account = self.base.account(address)?.unwrap_or_default();
        self.accounts.insert(*address, (account, false));
        Ok(account)
    }

    fn set_account(&mut self, address: Address, account: Account) {
        match self.accounts.entry(address) {
            Entry::Occupied(mut entry) => {
                let (current, changed) = entry.get_mut();
                if *current != account {
                    *current = account;
                    *changed = true;
                }
            }
            Entry::Vacant(entry) => {
                entry.insert((account, true));
            }
        }
    }

    fn value_exists(&self, encoded_key: &[u8]) -> Result<bool, StateError> {
        match self.values.get(encoded_key) {
            Some(value) => Ok(value.is_some()),
            None => Ok(self.base.raw(encoded_key)?.is_some()),
        }
    }

    /// The block's writes. The accounts go in through a `BTreeMap`, so the map's order does
    /// not leak into them.
    fn into_changes(mut self) -> Result<StateChanges, StateError> {
        for (address, (account, changed)) in std::mem::take(&mut self.accounts) {
            if changed {
                self.values
                    .insert(StateKey::Account(address).encode(), Some(account.encode()));
            }
        }
        if let Some((table, true)) = self.stake_table.take() {
            self.values
                .insert(StateKey::StakeTable.encode(), Some(table.encode()));
        }
        for (release_epoch, (queue, changed)) in std::mem::take(&mut self.unbonding) {
            let key = StateKey::Unbonding { release_epoch }.encode();
            match (changed, queue.entries.is_empty()) {
                (false, _) => {}
                (true, true) => self.delete(key)?,
                (true, false) => {
                    self.values.insert(key, Some(queue.encode()));
                }
            }
        }
        Ok(self.values)
    }
}

impl<S: StateReader> StakingState for WorkingState<'_, S> {
    fn account(&mut self, address: &Address) -> Result<Account, StateError> {
        WorkingState::account(self, address)
    }

    fn set_account(&mut self, address: Address, account: Account) {
        WorkingState::set_account(self, address, account);
    }

    fn stake_table(&mut self) -> Result<&StakeTable, StateError> {
        Ok(&self.load_stake_table()?.0)
    }

    fn stake_table_mut(&mut self) -> Result<&mut StakeTable, StateError> {
        let entry = self.load_stake_table()?;
        entry.1 = true;
        Ok(&mut entry.0)
    }

    fn bond(&mut self, validator: &Address, owner: &Address) -> Result<u64, StateError> {
        let key = StateKey::Bond {
            validator: *validator,
            owner: *owner,
        };
        match self.raw(&key.encode())? {
            Some(bytes) => staking::decode_amount(&bytes),
            None => Ok(0),
        }
    }

    fn set_bond(
        &mut self,
        validator: Address,
        owner: Address,
        amount: u64,
    ) -> Result<(), StateError> {
        let key = StateKey::Bond { validator, owner }.encode();
        if amount == 0 {
            self.delete(key)
        } else {
            self.values.insert(key, Some(encoding::encode(&amount)));
            Ok(())
        }
    }

    fn unbonding(&mut self, release_epoch: u64) -> Result<&UnbondingQueue, StateError> {
        Ok(&self.load_unbonding(release_epoch)?.0)
    }

    fn unbonding_mut(&mut self, release_epoch: u64) -> Result<&mut UnbondingQueue, StateError> {
        let entry = self.load_unbonding(release_epoch)?;
        entry.1 = true;
        Ok(&mut entry.0)
    }

    fn set_epoch_set(&mut self, epoch: u64, set: Option<&ValidatorSet>) -> Result<(), StateError> {
        let key = StateKey::EpochSet(epoch).encode();
        match set {
            Some(set) => {
                self.values.insert(key, Some(encoding::encode(set)));
                Ok(())
            }
            None => self.delete(key),
        }
    }
}

/// Runs the end-of-epoch step if `height` is a boundary (ADR 003 §1).
fn end_of_block<S: StateReader>(
    working: &mut WorkingState<'_, S>,
    params: &Params,
    height: u64,
) -> Result<(), BlockError> {
    if let Some(epoch) = staking::boundary_epoch(params, height) {
        staking::end_epoch(working, params, epoch).map_err(|err| match err {
            EpochStepError::State(err) => BlockError::State(err),
            other => BlockError::EpochStep(other),
        })?;
    }
    Ok(())
}

/// Executes `txs` in order against `state` for a block at `height` proposed by `proposer`, then
/// the end-of-epoch step if `height` is a boundary. Assumes the transactions passed their
/// stateless checks.
pub fn execute_txs<S: StateReader>(
    state: &S,
    params: &Params,
    height: u64,
    proposer: &Address,
    txs: &[SignedTransaction],
    tx_hashes: &[TxHash],
) -> Result<(Vec<Receipt>, StateChanges), BlockError> {
    let mut working = WorkingState::new(state);
    let mut receipts = Vec::with_capacity(txs.len());
    for (index, (stx, tx_hash)) in txs.iter().zip(tx_hashes).enumerate() {
        let status = execute_one(&mut working, params, height, proposer, &stx.tx, index)?;
        receipts.push(Receipt {
            tx_hash: *tx_hash,
            height,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            status,
            fee_charged: stx.tx.fee,
        });
    }
    end_of_block(&mut working, params, height)?;
    Ok((receipts, working.into_changes()?))
}

fn execute_one<S: StateReader>(
    working: &mut WorkingState<'_, S>,
    params: &Params,
    height: u64,
    proposer: &Address,
    tx: &Transaction,
    index: usize,
) -> Result<ReceiptStatus, BlockError> {
    let mut sender = working.account(&tx.sender)?;
    check_stateful(&sender, tx).map_err(|err| match err {
        StatefulError::NonceTooLow { expected, got }
        | StatefulError::NonceTooHigh { expected, got } => BlockError::WrongNonce {
            index,
            expected,
            got,
        },
        StatefulError::InsufficientFee { balance, fee } => BlockError::CannotPayFee {
            index,
            fee,
            balance,
        },
    })?;
    // check_stateful guarantees balance >= fee and nonce < u64::MAX (stateless check).
    sender.balance -= tx.fee;
    sender.nonce += 1;
    working.set_account(tx.sender, sender);
    let mut proposer_account = working.account(proposer)?;
    proposer_account.balance = proposer_account.balance.saturating_add(tx.fee);
    working.set_account(*proposer, proposer_account);

    Ok(match &tx.op {
        Op::Transfer { to, amount } => {
            let mut sender = working.account(&tx.sender)?;
            if sender.balance < *amount {
                ReceiptStatus::Failed {
                    reason: FailureReason::InsufficientBalance {
                        needed: *amount,
                        available: sender.balance,
                    },
                }
            } else if to == &tx.sender {
                ReceiptStatus::Success
            } else {
                let mut recipient = working.account(to)?;
                match recipient.balance.checked_add(*amount) {
                    None => ReceiptStatus::Failed {
                        reason: FailureReason::BalanceOverflow,
                    },
                    Some(new_balance) => {
                        recipient.balance = new_balance;
                        sender.balance -= amount;
                        working.set_account(*to, recipient);
                        working.set_account(tx.sender, sender);
                        ReceiptStatus::Success
                    }
                }
            }
        }
        Op::Put { key, value } => {
            let encoded = StateKey::Value {
                owner: tx.sender,
                key: key.clone(),
            }
            .encode();
            working.values.insert(encoded, Some(value.clone()));
            ReceiptStatus::Success
        }
        Op::Delete { key } => {
            let encoded = StateKey::Value {
                owner: tx.sender,
                key: key.clone(),
            }
            .encode();
            if working.value_exists(&encoded)? {
                working.values.insert(encoded, None);
                ReceiptStatus::Success
            } else {
                ReceiptStatus::Failed {
                    reason: FailureReason::KeyNotFound,
                }
            }
        }
        Op::Bond { validator, amount } => status_of(staking::bond(
            working, params, height, tx.sender, *validator, *amount,
        )?),
        Op::Unbond { validator, amount } => status_of(staking::unbond(
            working, params, height, tx.sender, *validator, *amount,
        )?),
    })
}

/// The admission check of a staking operation: what its receipt would say if it executed on
/// `state` in a block at `height`, after its fee is paid. `None` for other operations.
///
/// Advisory, as the mempool's nonce and balance checks are: blocks finalized before the
/// transaction is included may change the answer, and the receipt is what counts. It lets a
/// node refuse at submission, with the receipt reason's own code, an operation that would
/// certainly fail now, instead of charging its fee for a failed receipt.
pub fn check_staking<S: StateReader>(
    state: &S,
    params: &Params,
    height: u64,
    tx: &Transaction,
) -> Result<Option<staking::Outcome>, StateError> {
    if !matches!(tx.op, Op::Bond { .. } | Op::Unbond { .. }) {
        return Ok(None);
    }
    let mut working = WorkingState::new(state);
    let mut sender = working.account(&tx.sender)?;
    // The fee is paid first, as in execution; the mempool refuses one the balance cannot pay.
    sender.balance = sender.balance.saturating_sub(tx.fee);
    working.set_account(tx.sender, sender);
    let outcome = match tx.op {
        Op::Bond { validator, amount } => {
            staking::bond(&mut working, params, height, tx.sender, validator, amount)?
        }
        Op::Unbond { validator, amount } => {
            staking::unbond(&mut working, params, height, tx.sender, validator, amount)?
        }
        _ => return Ok(None),
    };
    Ok(Some(outcome))
}

fn status_of(outcome: staking::Outcome) -> ReceiptStatus {
    match outcome {
        Ok(()) => ReceiptStatus::Success,
        Err(reason) => ReceiptStatus::Failed { reason },
    }
}

/// Which transactions' signatures the caller has already verified, by transaction hash.
///
/// A transaction hash is the hash of the whole signed encoding, signature included, so a hash
/// names one byte string and one verdict of the one signature rule (`crypto.rs`): a node that
/// verified a transaction when it admitted it need not verify it again when it meets it in a
/// block. Answering `true` for a transaction whose signature was not verified would let an
/// invalid block through; [`NONE_VERIFIED`] is always safe.
pub type SignaturesVerified<'a> = &'a dyn Fn(&TxHash) -> bool;

/// Nothing verified beforehand: every signature is checked.
pub const NONE_VERIFIED: SignaturesVerified<'static> = &|_| false;

/// Checks everything about `block` that needs no state: header against parent and context,
/// limits, tx root, every transaction's stateless checks, and all signatures in one batch.
/// Returns the transaction hashes.
pub fn check_block_stateless(
    block: &Block,
    parent: &BlockHeader,
    ctx: &ChainContext,
) -> Result<Vec<TxHash>, BlockError> {
    check_block_stateless_with(block, parent, ctx, NONE_VERIFIED)
}

/// [`check_block_stateless`], verifying in one batch only the signatures `verified` does not
/// vouch for.
pub fn check_block_stateless_with(
    block: &Block,
    parent: &BlockHeader,
    ctx: &ChainContext,
    verified: SignaturesVerified<'_>,
) -> Result<Vec<TxHash>, BlockError> {
    let header = &block.header;
    if header.version != PROTOCOL_VERSION {
        return Err(BlockError::WrongVersion {
            expected: PROTOCOL_VERSION,
            got: header.version,
        });
    }
    if header.chain_id != ctx.chain_id {
        return Err(BlockError::WrongChain {
            expected: ctx.chain_id.clone(),
            got: header.chain_id.clone(),
        });
    }
    if Some(header.height) != parent.height.checked_add(1) {
        return Err(BlockError::WrongHeight {
            parent: parent.height,
            got: header.height,
        });
    }
    let parent_hash = parent.hash();
    if header.parent_hash != parent_hash {
        return Err(BlockError::WrongParent {
            expected: parent_hash,
            got: header.parent_hash,
        });
    }
    if header.timestamp_ms < parent.timestamp_ms {
        return Err(BlockError::TimestampBeforeParent {
            parent: parent.timestamp_ms,
            got: header.timestamp_ms,
        });
    }
    let params = &ctx.params;
    if block.txs.len() > params.block_txs_max as usize {
        return Err(BlockError::TooManyTxs {
            count: block.txs.len(),
            max: params.block_txs_max,
        });
    }
    if usize::try_from(header.tx_count).ok() != Some(block.txs.len()) {
        return Err(BlockError::TxCountMismatch {
            header: header.tx_count,
            actual: block.txs.len(),
        });
    }
    let mut bytes: u64 = 0;
    let mut tx_hashes = Vec::with_capacity(block.txs.len());
    for (index, stx) in block.txs.iter().enumerate() {
        let encoded = stx.encode();
        stx.check_stateless_sized(encoded.len(), &ctx.chain_id, params)
            .map_err(|reason| BlockError::InvalidTx { index, reason })?;
        bytes = bytes.saturating_add(encoded.len() as u64);
        tx_hashes.push(Hash::of(&encoded));
    }
    if bytes > params.block_bytes_max {
        return Err(BlockError::TooManyBytes {
            bytes,
            max: params.block_bytes_max,
        });
    }
    let computed = block::tx_root(&tx_hashes);
    if computed != header.tx_root {
        return Err(BlockError::TxRootMismatch {
            header: header.tx_root,
            computed,
        });
    }
    let unverified: Vec<usize> = (0..block.txs.len())
        .filter(|&index| !verified(&tx_hashes[index]))
        .collect();
    tx::verify_signatures(unverified.iter().map(|&index| &block.txs[index])).map_err(
        |(position, reason)| BlockError::InvalidTx {
            index: unverified.get(position).copied().unwrap_or(position),
            reason,
        },
    )?;
    Ok(tx_hashes)
}

/// Validates `block` against its parent header and executes it on `state` (the state after
/// the parent). Deterministic: the same inputs give the same result on every machine.
pub fn apply_block<S: StateReader + TreeReader>(
    state: &S,
    parent: &BlockHeader,
    block: &Block,
    ctx: &ChainContext,
) -> Result<ExecutedBlock, BlockError> {
    apply_block_with(state, parent, block, ctx, NONE_VERIFIED)
}

/// [`apply_block`], skipping the signatures `verified` vouches for (see
/// [`SignaturesVerified`]); every other check is the same.
pub fn apply_block_with<S: StateReader + TreeReader>(
    state: &S,
    parent: &BlockHeader,
    block: &Block,
    ctx: &ChainContext,
    verified: SignaturesVerified<'_>,
) -> Result<ExecutedBlock, BlockError> {
    let tx_hashes = check_block_stateless_with(block, parent, ctx, verified)?;
    let header = &block.header;
    let (current, next) = expected_set_hashes(state, &ctx.params, header.height)?;
    if header.validator_set_hash != current {
        return Err(BlockError::WrongValidatorSet {
            expected: current,
            got: header.validator_set_hash,
        });
    }
    if header.next_validator_set_hash != next {
        return Err(BlockError::WrongNextValidatorSet {
            expected: next,
            got: header.next_validator_set_hash,
        });
    }
    let (receipts, changes) = execute_txs(
        state,
        &ctx.params,
        header.height,
        &header.proposer,
        &block.txs,
        &tx_hashes,
    )?;
    let receipts_root = block::receipts_root(&receipts);
    if receipts_root != header.receipts_root {
        return Err(BlockError::ReceiptsRootMismatch {
            header: header.receipts_root,
            computed: receipts_root,
        });
    }
    let (state_root, tree_nodes) = state::compute_state_root(state, header.height, &changes)?;
    if state_root != header.state_root {
        return Err(BlockError::StateRootMismatch {
            header: header.state_root,
            computed: state_root,
        });
    }
    Ok(ExecutedBlock {
        block_hash: block.hash(),
        block: block.clone(),
        tx_hashes,
        receipts,
        changes,
        tree_nodes,
    })
}

/// A candidate transaction the proposer left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    pub tx_hash: TxHash,
    pub reason: String,
}

/// Builds and executes the next block from `candidates` (in the order given), leaving out any
/// transaction that would make the block invalid and stopping at the block limits.
pub fn build_block<S: StateReader + TreeReader>(
    state: &S,
    parent: &BlockHeader,
    proposer: Address,
    timestamp_ms: u64,
    candidates: Vec<SignedTransaction>,
    ctx: &ChainContext,
) -> Result<(ExecutedBlock, Vec<Excluded>), BlockError> {
    build_block_with(
        state,
        parent,
        proposer,
        timestamp_ms,
        candidates,
        ctx,
        NONE_VERIFIED,
    )
}

/// [`build_block`], skipping the signature check of the candidates `verified` vouches for
/// (see [`SignaturesVerified`]).
pub fn build_block_with<S: StateReader + TreeReader>(
    state: &S,
    parent: &BlockHeader,
    proposer: Address,
    timestamp_ms: u64,
    candidates: Vec<SignedTransaction>,
    ctx: &ChainContext,
    verified: SignaturesVerified<'_>,
) -> Result<(ExecutedBlock, Vec<Excluded>), BlockError> {
    let params = &ctx.params;
    let height = parent
        .height
        .checked_add(1)
        .ok_or(BlockError::WrongHeight {
            parent: parent.height,
            got: parent.height,
        })?;
    let mut excluded = Vec::new();
    let mut included = Vec::new();
    let mut tx_hashes = Vec::new();
    let mut receipts = Vec::new();
    let mut bytes: u64 = 0;
    let mut working = WorkingState::new(state);
    for stx in candidates {
        let encoded = stx.encode();
        let tx_hash = Hash::of(&encoded);
        if included.len() >= params.block_txs_max as usize
            || bytes.saturating_add(encoded.len() as u64) > params.block_bytes_max
        {
            break;
        }
        let verdict = stx
            .check_stateless_sized(encoded.len(), &ctx.chain_id, params)
            .and_then(|()| {
                if verified(&tx_hash) {
                    Ok(())
                } else {
                    stx.verify_signature()
                }
            })
            .map_err(|err| err.to_string());
        if let Err(reason) = verdict {
            excluded.push(Excluded { tx_hash, reason });
            continue;
        }
        // execute_one refuses (nonce, fee) before it mutates anything, so a refused
        // transaction leaves the working state as it was.
        match execute_one(
            &mut working,
            params,
            height,
            &proposer,
            &stx.tx,
            included.len(),
        ) {
            Ok(status) => {
                bytes += encoded.len() as u64;
                receipts.push(Receipt {
                    tx_hash,
                    height,
                    index: u32::try_from(included.len()).unwrap_or(u32::MAX),
                    status,
                    fee_charged: stx.tx.fee,
                });
                tx_hashes.push(tx_hash);
                included.push(stx);
            }
            Err(BlockError::State(err)) => return Err(BlockError::State(err)),
            Err(err) => excluded.push(Excluded {
                tx_hash,
                reason: err.to_string(),
            }),
        }
    }
    end_of_block(&mut working, params, height)?;
    let changes = working.into_changes()?;
    let (validator_set_hash, next_validator_set_hash) = expected_set_hashes(state, params, height)?;
    let (state_root, tree_nodes) = state::compute_state_root(state, height, &changes)?;
    let header = BlockHeader {
        version: PROTOCOL_VERSION,
        chain_id: ctx.chain_id.clone(),
        height,
        parent_hash: parent.hash(),
        proposer,
        timestamp_ms: timestamp_ms.max(parent.timestamp_ms),
        tx_count: u32::try_from(included.len()).unwrap_or(u32::MAX),
        tx_root: block::tx_root(&tx_hashes),
        receipts_root: block::receipts_root(&receipts),
        state_root,
        validator_set_hash,
        next_validator_set_hash,
    };
    let block = Block {
        header,
        txs: included,
    };
    Ok((
        ExecutedBlock {
            block_hash: block.hash(),
            block,
            tx_hashes,
            receipts,
            changes,
            tree_nodes,
        },
        excluded,
    ))
}

/// The genesis state (version 0) and header (height 0, the parent of block 1).
pub fn genesis_block<R: TreeReader>(
    tree: &R,
    genesis: &Genesis,
) -> Result<ExecutedBlock, GenesisError> {
    genesis.validate()?;
    let set = genesis.validator_set()?;
    let mut changes = StateChanges::new();
    // Each genesis validator's power is its self-bond at height 0; set(0) = set(1) = the
    // genesis set (ADR 003 §1, §2).
    changes.insert(
        StateKey::StakeTable.encode(),
        Some(StakeTable::from_genesis(&set).encode()),
    );
    for validator in set.validators() {
        changes.insert(
            StateKey::Bond {
                validator: validator.address,
                owner: validator.address,
            }
            .encode(),
            Some(encoding::encode(&validator.power)),
        );
    }
    for epoch in [0, 1] {
        changes.insert(
            StateKey::EpochSet(epoch).encode(),
            Some(encoding::encode(&set)),
        );
    }
    for account in &genesis.balances {
        let value = Account {
            balance: account.balance,
            nonce: 0,
        };
        changes.insert(
            StateKey::Account(account.address).encode(),
            Some(value.encode()),
        );
    }
    let (state_root, tree_nodes) =
        state::compute_state_root(tree, 0, &changes).map_err(|err| GenesisError::Invalid {
            field: "accounts",
            reason: err.to_string(),
        })?;
    let header = BlockHeader {
        version: PROTOCOL_VERSION,
        chain_id: genesis.chain_id.clone(),
        height: 0,
        parent_hash: Hash::ZERO,
        proposer: Address::ZERO,
        timestamp_ms: genesis.genesis_time_ms,
        tx_count: 0,
        tx_root: Hash::ZERO,
        receipts_root: Hash::ZERO,
        state_root,
        validator_set_hash: set.hash(),
        next_validator_set_hash: set.hash(),
    };
    let block = Block {
        header,
        txs: Vec::new(),
    };
    Ok(ExecutedBlock {
        block_hash: block.hash(),
        block,
        tx_hashes: Vec::new(),
        receipts: Vec::new(),
        changes,
        tree_nodes,
    })
}
