//! Genesis: the chain id, the first validator set, the initial balances and the chain
//! parameters, loaded from JSON with errors that name the offending field.

use std::path::Path;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::crypto::{Address, Hash};
use crate::encoding;
use crate::epoch::EpochSchedule;
use crate::limits::{
    BLOCK_BYTES_CEILING, BLOCK_TXS_CEILING, CHAIN_ID_BYTES_MAX, EPOCH_BLOCKS_CEILING,
    GENESIS_ACCOUNTS_MAX, GENESIS_JSON_BYTES_MAX, TX_BYTES_CEILING, TX_OVERHEAD_BYTES,
    VALIDATORS_MAX,
};
use crate::validator::{Validator, ValidatorSet, ValidatorSetError};

/// Chain parameters: the limits every node enforces identically. Changing one is a hard fork.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Longest key of the key-value repository, in bytes (keys are never empty).
    pub key_bytes_max: u32,
    /// Longest value, in bytes.
    pub value_bytes_max: u32,
    /// Largest signed transaction, in encoded bytes.
    pub tx_bytes_max: u32,
    /// Most transactions in one block.
    pub block_txs_max: u32,
    /// Largest sum of the encoded sizes of a block's transactions.
    pub block_bytes_max: u64,
    /// Smallest fee a transaction may offer.
    pub fee_min: u64,
    /// Heights per epoch; the validator set changes only between epochs (ADR 003 §1).
    pub epoch_blocks: u64,
    /// Smallest total bond, in base units, of a candidate (a registering self-bond, or what an
    /// unbond may leave behind unless it leaves nothing).
    pub min_bond: u64,
    /// Most validators in a set: the size of the cut. The stake table holds at most twice this
    /// many candidates.
    pub max_validators: u32,
    /// Fewest validators in a set: an unbond that would leave a smaller cut fails.
    pub min_validators: u32,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            key_bytes_max: 256,
            value_bytes_max: 16 * 1024,
            tx_bytes_max: 16 * 1024 + 256 + TX_OVERHEAD_BYTES,
            block_txs_max: 10_000,
            block_bytes_max: 8 << 20,
            fee_min: 1,
            epoch_blocks: 1_000,
            min_bond: 1,
            max_validators: 100,
            min_validators: 4,
        }
    }
}

impl Params {
    /// Checks each limit against its ceiling and the relations between them.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let invalid =
            |field: &'static str, reason: String| Err(GenesisError::Invalid { field, reason });
        if self.key_bytes_max == 0 {
            return invalid("params.key_bytes_max", "must be at least 1".into());
        }
        if self.tx_bytes_max > TX_BYTES_CEILING {
            return invalid(
                "params.tx_bytes_max",
                format!("must be at most {TX_BYTES_CEILING}"),
            );
        }
        let needed = u64::from(self.key_bytes_max)
            + u64::from(self.value_bytes_max)
            + u64::from(TX_OVERHEAD_BYTES);
        if u64::from(self.tx_bytes_max) < needed {
            return invalid(
                "params.tx_bytes_max",
                format!("must be at least key_bytes_max + value_bytes_max + {TX_OVERHEAD_BYTES} = {needed}, so the largest put fits"),
            );
        }
        if self.block_txs_max == 0 || self.block_txs_max > BLOCK_TXS_CEILING {
            return invalid(
                "params.block_txs_max",
                format!("must be in 1..={BLOCK_TXS_CEILING}"),
            );
        }
        if self.block_bytes_max > BLOCK_BYTES_CEILING {
            return invalid(
                "params.block_bytes_max",
                format!("must be at most {BLOCK_BYTES_CEILING}"),
            );
        }
        if self.block_bytes_max < u64::from(self.tx_bytes_max) {
            return invalid(
                "params.block_bytes_max",
                "must be at least tx_bytes_max, so the largest transaction fits in a block".into(),
            );
        }
        if self.epoch_blocks == 0 || self.epoch_blocks > EPOCH_BLOCKS_CEILING {
            return invalid(
                "params.epoch_blocks",
                format!("must be in 1..={EPOCH_BLOCKS_CEILING}"),
            );
        }
        if self.min_bond == 0 {
            return invalid("params.min_bond", "must be at least 1".into());
        }
        if self.max_validators == 0 || self.max_validators as usize > VALIDATORS_MAX {
            return invalid(
                "params.max_validators",
                format!("must be in 1..={VALIDATORS_MAX}"),
            );
        }
        if self.min_validators == 0 || self.min_validators > self.max_validators {
            return invalid(
                "params.min_validators",
                "must be in 1..=max_validators".into(),
            );
        }
        Ok(())
    }

    /// The defaults, with `min_validators` lowered to `validators` when the genesis set is
    /// smaller than the default's 4 (development and test networks): the set can then never
    /// shrink below its genesis size.
    pub fn for_genesis_set(validators: usize) -> Params {
        let defaults = Params::default();
        Params {
            min_validators: u32::try_from(validators)
                .unwrap_or(u32::MAX)
                .clamp(1, defaults.min_validators),
            ..defaults
        }
    }

    /// The epoch arithmetic of this chain.
    pub fn schedule(&self) -> EpochSchedule {
        EpochSchedule::new(self.epoch_blocks)
    }

    /// Most candidates the stake table holds: twice the cut, so that a full set still has
    /// challengers, and the table (one state value) stays bounded.
    pub fn candidates_max(&self) -> usize {
        2 * self.max_validators as usize
    }
}

/// An initial balance.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    pub address: Address,
    pub balance: u64,
}

/// The genesis document.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    /// Timestamp of the genesis header; the first block must not be earlier.
    pub genesis_time_ms: u64,
    /// The set of epochs 0 and 1. Each validator's `power` is its self-bond at height 0, in
    /// the base units of balances (added to the supply, not taken from a balance).
    pub validators: Vec<Validator>,
    /// Initial balances.
    #[serde(default)]
    pub balances: Vec<GenesisAccount>,
    #[serde(default)]
    pub params: Params,
}

/// Why a genesis document was refused.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("cannot read genesis file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("genesis file {path} is {len} bytes, more than the limit of {max}")]
    TooLarge { path: String, len: u64, max: u64 },
    #[error("genesis JSON is malformed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("genesis field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Genesis {
    /// Parses and validates a genesis JSON document.
    pub fn from_json(text: &str) -> Result<Genesis, GenesisError> {
        let genesis: Genesis = serde_json::from_str(text)?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// Reads, parses and validates a genesis JSON file.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let shown = path.display().to_string();
        let len = std::fs::metadata(path)
            .map_err(|source| GenesisError::Io {
                path: shown.clone(),
                source,
            })?
            .len();
        if len > GENESIS_JSON_BYTES_MAX {
            return Err(GenesisError::TooLarge {
                path: shown,
                len,
                max: GENESIS_JSON_BYTES_MAX,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Io {
            path: shown,
            source,
        })?;
        Genesis::from_json(&text)
    }

    /// Pretty JSON, as written by `meshd init`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), GenesisError> {
        if self.chain_id.is_empty()
            || self.chain_id.len() > CHAIN_ID_BYTES_MAX
            || !self
                .chain_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(GenesisError::Invalid {
                field: "chain_id",
                reason: format!("must be 1..={CHAIN_ID_BYTES_MAX} characters of [A-Za-z0-9._-]"),
            });
        }
        self.params.validate()?;
        let set = self.validator_set()?;
        let (min, max) = (self.params.min_validators, self.params.max_validators);
        if !(min as usize..=max as usize).contains(&set.len()) {
            return Err(GenesisError::Invalid {
                field: "validators",
                reason: format!(
                    "{} validators, outside params.min_validators..=params.max_validators = {min}..={max}",
                    set.len()
                ),
            });
        }
        if let Some(small) = set
            .validators()
            .iter()
            .find(|v| v.power < self.params.min_bond)
        {
            return Err(GenesisError::Invalid {
                field: "validators",
                reason: format!(
                    "validator {} has power (self-bond) {}, below params.min_bond = {}",
                    small.address, small.power, self.params.min_bond
                ),
            });
        }
        if self.balances.len() > GENESIS_ACCOUNTS_MAX {
            return Err(GenesisError::Invalid {
                field: "balances",
                reason: format!("more than {GENESIS_ACCOUNTS_MAX} accounts"),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        // Self-bonds are part of the supply: they return to balances when unbonded.
        let mut supply: u64 = set.total_power();
        for account in &self.balances {
            if !seen.insert(account.address) {
                return Err(GenesisError::Invalid {
                    field: "balances",
                    reason: format!("address {} appears more than once", account.address),
                });
            }
            // Fees move value, never mint it, so a supply that fits in u64 can never overflow a
            // balance later.
            supply = supply
                .checked_add(account.balance)
                .ok_or_else(|| GenesisError::Invalid {
                    field: "balances",
                    reason: "the sum of balances and validator powers (bonds) overflows u64".into(),
                })?;
        }
        Ok(())
    }

    /// The validator set in force from height 1.
    pub fn validator_set(&self) -> Result<ValidatorSet, GenesisError> {
        ValidatorSet::new(self.validators.clone()).map_err(|err: ValidatorSetError| {
            GenesisError::Invalid {
                field: "validators",
                reason: err.to_string(),
            }
        })
    }

    /// Commitment to the whole document; nodes refuse a database made from another genesis.
    pub fn hash(&self) -> Hash {
        Hash::of(&encoding::encode(self))
    }
}
