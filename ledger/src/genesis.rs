//! Genesis: the chain id, the first validator set, the initial balances and the chain
//! parameters, loaded from JSON with errors that name the offending field.

use std::path::Path;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::crypto::{Address, Hash};
use crate::encoding;
use crate::limits::{
    BLOCK_BYTES_CEILING, BLOCK_TXS_CEILING, CHAIN_ID_BYTES_MAX, GENESIS_ACCOUNTS_MAX,
    GENESIS_JSON_BYTES_MAX, TX_BYTES_CEILING, TX_OVERHEAD_BYTES,
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
        Ok(())
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
        self.validator_set()?;
        if self.balances.len() > GENESIS_ACCOUNTS_MAX {
            return Err(GenesisError::Invalid {
                field: "balances",
                reason: format!("more than {GENESIS_ACCOUNTS_MAX} accounts"),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut supply: u64 = 0;
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
                    reason: "the sum of balances overflows u64".into(),
                })?;
        }
        self.params.validate()
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
