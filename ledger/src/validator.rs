//! The validator set: who may vote and with how much power, and the quorum arithmetic every
//! consensus decision rests on.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::crypto::{Address, Hash};
use crate::encoding;
use crate::limits::VALIDATORS_MAX;

/// One validator: its public key and voting power.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    pub address: Address,
    pub power: u64,
}

/// A set of validators sorted by address, each present once, each with power > 0.
///
/// *Invariant:* the total power fits in a `u64`, so quorum arithmetic cannot overflow.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, Serialize)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    #[borsh(skip)]
    #[serde(skip)]
    total_power: u64,
}

/// Why a validator set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    #[error("the validator set is empty")]
    Empty,
    #[error("the validator set has {count} validators, more than the limit of {max}")]
    TooMany { count: usize, max: usize },
    #[error("validator {address} has zero voting power")]
    ZeroPower { address: Address },
    #[error("validator {address} appears more than once")]
    Duplicate { address: Address },
    #[error("validator {address} is not a valid ed25519 public key")]
    InvalidKey { address: Address },
    #[error("the total voting power overflows u64")]
    PowerOverflow,
}

impl ValidatorSet {
    /// Builds a set, sorting by address and checking every rule.
    pub fn new(mut validators: Vec<Validator>) -> Result<ValidatorSet, ValidatorSetError> {
        if validators.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        if validators.len() > VALIDATORS_MAX {
            return Err(ValidatorSetError::TooMany {
                count: validators.len(),
                max: VALIDATORS_MAX,
            });
        }
        validators.sort_by_key(|v| v.address);
        let mut total_power: u64 = 0;
        for (i, validator) in validators.iter().enumerate() {
            if validator.power == 0 {
                return Err(ValidatorSetError::ZeroPower {
                    address: validator.address,
                });
            }
            if i > 0 && validators[i - 1].address == validator.address {
                return Err(ValidatorSetError::Duplicate {
                    address: validator.address,
                });
            }
            if validator.address.verifying_key().is_err() {
                return Err(ValidatorSetError::InvalidKey {
                    address: validator.address,
                });
            }
            total_power = total_power
                .checked_add(validator.power)
                .ok_or(ValidatorSetError::PowerOverflow)?;
        }
        Ok(ValidatorSet {
            validators,
            total_power,
        })
    }

    /// Validators in address order.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Never true for a constructed set; present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// Sum of all voting power.
    pub fn total_power(&self) -> u64 {
        self.total_power
    }

    /// The smallest power that is more than two thirds of the total: any two quorums share
    /// more than one third, so at least one honest validator when at most f < total/3 lie.
    pub fn quorum_power(&self) -> u64 {
        let total = u128::from(self.total_power);
        let quorum = total * 2 / 3 + 1;
        // quorum <= total because total >= 1.
        u64::try_from(quorum).unwrap_or(u64::MAX)
    }

    /// The largest power that may be faulty while safety and liveness hold: more than this
    /// guarantees at least one honest member (used e.g. to trust a claim seen from f+1).
    pub fn max_faulty_power(&self) -> u64 {
        (self.total_power - 1) / 3
    }

    /// Position of `address` in the set.
    pub fn index_of(&self, address: &Address) -> Option<usize> {
        self.validators
            .binary_search_by(|v| v.address.cmp(address))
            .ok()
    }

    /// Voting power of `address`, zero when it is not a member.
    pub fn power_of(&self, address: &Address) -> u64 {
        self.index_of(address)
            .map_or(0, |i| self.validators[i].power)
    }

    /// Validator at `index`.
    pub fn get(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }

    /// Commitment to the set, stored in every header.
    pub fn hash(&self) -> Hash {
        Hash::of(&encoding::encode(self))
    }
}

impl BorshDeserialize for ValidatorSet {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let validators = Vec::<Validator>::deserialize_reader(reader)?;
        let set = ValidatorSet::new(validators.clone())
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err.to_string()))?;
        // Canonical form only: decoding must not silently reorder what was hashed.
        if set.validators != validators {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "validators are not sorted by address",
            ));
        }
        Ok(set)
    }
}

impl<'de> Deserialize<'de> for ValidatorSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            validators: Vec<Validator>,
        }
        let raw = Raw::deserialize(deserializer)?;
        ValidatorSet::new(raw.validators).map_err(serde::de::Error::custom)
    }
}
