//! Staking (ADR 003 §2): bonds, the stake table, the cut that picks each epoch's validator set,
//! and the delayed release of unbonded funds.
//!
//! Pure: every function works on a [`StakingState`] by exact keys (state keys are hashed, so
//! nothing here iterates over state). The amounts are in the base units of balances, and a
//! key's voting power is the sum of the bonds to it: nothing is rounded, and the total power of
//! any set fits in a `u64` because bonds come out of a supply that does.
//!
//! *Invariant (conservation):* `Σ balances + Σ bonds + Σ unbonding queues` only changes by
//! what genesis minted; a bond, an unbond and a release move value between the three.

use std::cmp::Reverse;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::block::FailureReason;
use crate::crypto::Address;
use crate::encoding;
use crate::epoch::EpochSchedule;
use crate::genesis::Params;
use crate::limits::UNBONDS_PER_EPOCH_MAX;
use crate::state::{Account, StateError, StateKey, StateReader};
use crate::validator::{Validator, ValidatorSet};

/// One candidate of the stake table.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Candidate {
    /// The validator key, registered by its own self-bond.
    pub key: Address,
    /// Sum of every bond to this key (self-bond and delegations), in base units.
    pub bonded: u64,
    /// Height of the block that registered the key (0 for genesis validators); the cut's
    /// second tie-break, so that grinding low keys buys nothing.
    pub registered_height: u64,
}

/// Every candidate, sorted by key (`StateKey::StakeTable`). At most
/// [`Params::candidates_max`] entries.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct StakeTable {
    candidates: Vec<Candidate>,
}

impl StakeTable {
    /// Candidates in key order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// The candidate registered under `key`.
    pub fn get(&self, key: &Address) -> Option<&Candidate> {
        self.position(key).ok().map(|i| &self.candidates[i])
    }

    fn position(&self, key: &Address) -> Result<usize, usize> {
        self.candidates.binary_search_by(|c| c.key.cmp(key))
    }

    /// Sets `key`'s total bond: inserts a candidate registered at `height`, updates one, or
    /// removes it when `bonded` is 0.
    fn set_bonded(&mut self, key: Address, bonded: u64, height: u64) {
        match self.position(&key) {
            Ok(i) if bonded == 0 => {
                self.candidates.remove(i);
            }
            Ok(i) => self.candidates[i].bonded = bonded,
            Err(_) if bonded == 0 => {}
            Err(i) => self.candidates.insert(
                i,
                Candidate {
                    key,
                    bonded,
                    registered_height: height,
                },
            ),
        }
    }

    /// A table of `candidates` in any order; `None` if a key appears twice.
    pub fn from_candidates(mut candidates: Vec<Candidate>) -> Option<StakeTable> {
        candidates.sort_by_key(|c| c.key);
        if candidates.windows(2).any(|w| w[0].key == w[1].key) {
            return None;
        }
        Some(StakeTable { candidates })
    }

    /// The table of a genesis set: each validator registered at height 0 with its power as
    /// self-bond.
    pub fn from_genesis(set: &ValidatorSet) -> StakeTable {
        StakeTable {
            candidates: set
                .validators()
                .iter()
                .map(|v| Candidate {
                    key: v.address,
                    bonded: v.power,
                    registered_height: 0,
                })
                .collect(),
        }
    }

    /// Decodes stored bytes, refusing an unsorted or duplicated table.
    pub fn decode(bytes: &[u8]) -> Result<StakeTable, StateError> {
        let table: StakeTable = encoding::decode("stake table", bytes, bytes.len())
            .map_err(|err| StateError::Corrupt(err.to_string()))?;
        if table.candidates.windows(2).any(|w| w[0].key >= w[1].key) {
            return Err(StateError::Corrupt(
                "stake table is not sorted by key".into(),
            ));
        }
        Ok(table)
    }

    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }
}

/// Amounts waiting for release at the end of one epoch (`StateKey::Unbonding`): one entry per
/// owner, in the order of their first unbond. At most [`UNBONDS_PER_EPOCH_MAX`] entries.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct UnbondingQueue {
    pub entries: Vec<(Address, u64)>,
}

impl UnbondingQueue {
    /// Decodes stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<UnbondingQueue, StateError> {
        encoding::decode("unbonding queue", bytes, bytes.len())
            .map_err(|err| StateError::Corrupt(err.to_string()))
    }

    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Total amount waiting.
    pub fn total(&self) -> u128 {
        self.entries
            .iter()
            .map(|(_, amount)| u128::from(*amount))
            .sum()
    }
}

/// What staking reads and writes, by exact key. Execution's working state implements it with
/// caches, so a block decodes the stake table and a queue once however many of its
/// transactions stake, and writes each back once.
pub trait StakingState {
    fn account(&mut self, address: &Address) -> Result<Account, StateError>;
    fn set_account(&mut self, address: Address, account: Account);
    /// The stake table (the empty table if none is stored).
    fn stake_table(&mut self) -> Result<&StakeTable, StateError>;
    /// The stake table, to change: it is written back with the block's changes.
    fn stake_table_mut(&mut self) -> Result<&mut StakeTable, StateError>;
    /// What `owner` has bonded to `validator` (0 if nothing).
    fn bond(&mut self, validator: &Address, owner: &Address) -> Result<u64, StateError>;
    /// Sets that bond; 0 removes the entry.
    fn set_bond(
        &mut self,
        validator: Address,
        owner: Address,
        amount: u64,
    ) -> Result<(), StateError>;
    /// The queue released at the end of `release_epoch` (empty if none is stored).
    fn unbonding(&mut self, release_epoch: u64) -> Result<&UnbondingQueue, StateError>;
    /// That queue, to change: it is written back (removed if empty) with the block's changes.
    fn unbonding_mut(&mut self, release_epoch: u64) -> Result<&mut UnbondingQueue, StateError>;
    /// Stores `set(epoch)`, or removes it (`None`).
    fn set_epoch_set(&mut self, epoch: u64, set: Option<&ValidatorSet>) -> Result<(), StateError>;
}

/// The outcome of a staking operation: done, or failed for a reason the receipt records.
pub type Outcome = Result<(), FailureReason>;

/// `sender` bonds `amount` to `validator` in the block at `height`. Assumes the fee is paid and
/// the stateless checks passed (`amount > 0`, `validator` a valid key).
pub fn bond<S: StakingState>(
    state: &mut S,
    params: &Params,
    height: u64,
    sender: Address,
    validator: Address,
    amount: u64,
) -> Result<Outcome, StateError> {
    let mut account = state.account(&sender)?;
    if account.balance < amount {
        return Ok(Err(FailureReason::InsufficientBalance {
            needed: amount,
            available: account.balance,
        }));
    }
    let table = state.stake_table()?;
    let current = table.get(&validator).map(|c| c.bonded);
    let total = match current {
        Some(bonded) => match bonded.checked_add(amount) {
            Some(total) => total,
            None => return Ok(Err(FailureReason::BalanceOverflow)),
        },
        // Registration: only the key's holder may make it a candidate.
        None if sender != validator => {
            return Ok(Err(FailureReason::UnknownValidator { validator }));
        }
        None if amount < params.min_bond => {
            return Ok(Err(FailureReason::BelowMinimumBond {
                bonded: amount,
                min_bond: params.min_bond,
            }));
        }
        None if table.candidates.len() >= params.candidates_max() => {
            return Ok(Err(FailureReason::ValidatorSetFull {
                candidates_max: params.candidates_max() as u64,
            }));
        }
        None => amount,
    };
    let Some(own) = state.bond(&validator, &sender)?.checked_add(amount) else {
        return Ok(Err(FailureReason::BalanceOverflow));
    };
    state
        .stake_table_mut()?
        .set_bonded(validator, total, height);
    state.set_bond(validator, sender, own)?;
    account.balance -= amount;
    state.set_account(sender, account);
    Ok(Ok(()))
}

/// `sender` unbonds `amount` from `validator` in the block at `height`; the amount joins the
/// queue released at `last(epoch(height) + 1)`. Assumes the fee is paid and the stateless
/// checks passed. Checks, in order: 1301, 1304, 1302, 1305, 1306, 1307; a failed check changes
/// nothing.
pub fn unbond<S: StakingState>(
    state: &mut S,
    params: &Params,
    height: u64,
    sender: Address,
    validator: Address,
    amount: u64,
) -> Result<Outcome, StateError> {
    let Some(candidate) = state.stake_table()?.get(&validator).cloned() else {
        return Ok(Err(FailureReason::UnknownValidator { validator }));
    };
    let own = state.bond(&validator, &sender)?;
    if own < amount {
        return Ok(Err(FailureReason::InsufficientBond {
            bonded: own,
            requested: amount,
        }));
    }
    let remaining = candidate.bonded.checked_sub(amount).ok_or_else(|| {
        StateError::Corrupt(format!(
            "candidate {validator} has total bond {} below one of its bonds ({own})",
            candidate.bonded
        ))
    })?;
    if remaining > 0 && remaining < params.min_bond {
        return Ok(Err(FailureReason::BelowMinimumBond {
            bonded: remaining,
            min_bond: params.min_bond,
        }));
    }
    // The cut's size depends on how many candidates are eligible, not on their order.
    let table = state.stake_table()?;
    let eligible_now = table
        .candidates
        .iter()
        .filter(|c| c.bonded >= params.min_bond)
        .count();
    let eligible = eligible_now - usize::from(candidate.bonded >= params.min_bond)
        + usize::from(remaining >= params.min_bond);
    let size = eligible.min(params.max_validators as usize);
    if size == 0 {
        return Ok(Err(FailureReason::WouldEmptySet));
    }
    if size < params.min_validators as usize {
        return Ok(Err(FailureReason::BelowSafeSize {
            size: size as u64,
            min_validators: u64::from(params.min_validators),
        }));
    }
    let release_epoch = params.schedule().epoch_of(height).saturating_add(1);
    let queue = state.unbonding(release_epoch)?;
    let queued = queue.entries.iter().position(|(owner, _)| *owner == sender);
    if queued.is_none() && queue.entries.len() >= UNBONDS_PER_EPOCH_MAX {
        return Ok(Err(FailureReason::UnbondingQueueFull { release_epoch }));
    }
    let queue = state.unbonding_mut(release_epoch)?;
    match queued {
        // Bounded by the sender's bonds, which fit in the supply.
        Some(i) => queue.entries[i].1 = queue.entries[i].1.saturating_add(amount),
        None => queue.entries.push((sender, amount)),
    }
    state
        .stake_table_mut()?
        .set_bonded(validator, remaining, candidate.registered_height);
    state.set_bond(validator, sender, own - amount)?;
    Ok(Ok(()))
}

/// The cut: candidates with `bonded ≥ min_bond`, by bonded amount descending, then earlier
/// registration, then lower key; the first `max_validators`. Power is the bonded amount.
/// Returned in cut order (not the set's address order).
pub fn cut(table: &StakeTable, params: &Params) -> Vec<Validator> {
    let mut eligible: Vec<&Candidate> = table
        .candidates
        .iter()
        .filter(|c| c.bonded >= params.min_bond)
        .collect();
    eligible.sort_by_key(|c| (Reverse(c.bonded), c.registered_height, c.key));
    eligible
        .into_iter()
        .take(params.max_validators as usize)
        .map(|c| Validator {
            address: c.key,
            power: c.bonded,
        })
        .collect()
}

/// Why the end-of-epoch step could not run. Unbonds are checked against the cut they leave,
/// so on a valid chain this never happens; it is a block error, never a fallback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochStepError {
    #[error("the set of epoch {epoch} would have {size} validators, fewer than min_validators = {min_validators}")]
    UnsafeSet {
        epoch: u64,
        size: usize,
        min_validators: u32,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The end-of-epoch step, run after the transactions of `last(epoch)`: releases the queue of
/// `epoch` into balances, stores `set(epoch + 2)` (the cut of the stake table as it stands)
/// and removes `set(epoch)`, which no later block reads. Returns the new set.
pub fn end_epoch<S: StakingState>(
    state: &mut S,
    params: &Params,
    epoch: u64,
) -> Result<ValidatorSet, EpochStepError> {
    let queue = std::mem::take(state.unbonding_mut(epoch)?);
    for (owner, amount) in &queue.entries {
        let mut account = state.account(owner)?;
        account.balance = account.balance.checked_add(*amount).ok_or_else(|| {
            StateError::Corrupt(format!(
                "releasing {amount} to {owner} overflows its balance"
            ))
        })?;
        state.set_account(*owner, account);
    }
    let validators = cut(state.stake_table()?, params);
    let target = epoch.saturating_add(2);
    if validators.len() < params.min_validators as usize || validators.is_empty() {
        return Err(EpochStepError::UnsafeSet {
            epoch: target,
            size: validators.len(),
            min_validators: params.min_validators,
        });
    }
    let set = ValidatorSet::new(validators)
        .map_err(|err| StateError::Corrupt(format!("the cut is not a valid set: {err}")))?;
    state.set_epoch_set(target, Some(&set))?;
    state.set_epoch_set(epoch, None)?;
    Ok(set)
}

/// Reads `set(epoch)` from state, if stored there (epochs in force or next).
pub fn epoch_set<S: StateReader + ?Sized>(
    state: &S,
    epoch: u64,
) -> Result<Option<ValidatorSet>, StateError> {
    state
        .raw(&StateKey::EpochSet(epoch).encode())?
        .map(|bytes| {
            encoding::decode("validator set", &bytes, bytes.len())
                .map_err(|err| StateError::Corrupt(err.to_string()))
        })
        .transpose()
}

/// Reads the stake table from state (empty if none is stored).
pub fn stake_table<S: StateReader + ?Sized>(state: &S) -> Result<StakeTable, StateError> {
    match state.raw(&StateKey::StakeTable.encode())? {
        Some(bytes) => StakeTable::decode(&bytes),
        None => Ok(StakeTable::default()),
    }
}

/// Reads what `owner` has bonded to `validator`.
pub fn bond_of<S: StateReader + ?Sized>(
    state: &S,
    validator: &Address,
    owner: &Address,
) -> Result<u64, StateError> {
    match state.raw(
        &StateKey::Bond {
            validator: *validator,
            owner: *owner,
        }
        .encode(),
    )? {
        Some(bytes) => decode_amount(&bytes),
        None => Ok(0),
    }
}

/// Reads the queue released at the end of `release_epoch`.
pub fn unbonding_of<S: StateReader + ?Sized>(
    state: &S,
    release_epoch: u64,
) -> Result<UnbondingQueue, StateError> {
    match state.raw(&StateKey::Unbonding { release_epoch }.encode())? {
        Some(bytes) => UnbondingQueue::decode(&bytes),
        None => Ok(UnbondingQueue::default()),
    }
}

/// Decodes a stored bond amount.
pub fn decode_amount(bytes: &[u8]) -> Result<u64, StateError> {
    encoding::decode("bond", bytes, 8).map_err(|err| StateError::Corrupt(err.to_string()))
}

/// The schedule and the epoch whose boundary `height` is, if it is one.
pub fn boundary_epoch(params: &Params, height: u64) -> Option<u64> {
    let schedule: EpochSchedule = params.schedule();
    schedule
        .is_boundary(height)
        .then(|| schedule.epoch_of(height))
}
