//! Blocks, headers, receipts, and the Merkle roots a header commits to.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::crypto::{Address, Hash};
use crate::encoding;
use crate::tx::{SignedTransaction, TxHash};

/// Version of the block format and execution rules; a header with another version is refused.
///
/// 2: state tree nodes hashed with keyed blake3 (ADR 002); a version-1 chain's state roots
/// differ, so its blocks are refused by version rather than by a state-root mismatch.
/// 3: `next_validator_set_hash`; both set hashes come from the state's epoch sets, and the
/// state holds staking (ADR 003).
pub const PROTOCOL_VERSION: u32 = 3;

/// A block header. Its hash identifies the block: it commits to the transactions (`tx_root`),
/// their outcomes (`receipts_root`) and the state after executing them (`state_root`).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockHeader {
    pub version: u32,
    pub chain_id: String,
    pub height: u64,
    pub parent_hash: Hash,
    pub proposer: Address,
    /// Chosen by the proposer; never earlier than the parent's.
    pub timestamp_ms: u64,
    pub tx_count: u32,
    pub tx_root: Hash,
    pub receipts_root: Hash,
    /// Root of the authenticated state after this block.
    pub state_root: Hash,
    /// Hash of the validator set that finalizes this block: `set(epoch(height))`.
    pub validator_set_hash: Hash,
    /// Hash of the set of the next epoch, `set(epoch(height) + 1)`; equal across an epoch.
    pub next_validator_set_hash: Hash,
}

impl BlockHeader {
    /// The block hash: blake3 of the canonical header bytes.
    pub fn hash(&self) -> Hash {
        Hash::of(&encoding::encode(self))
    }
}

/// A header and its transactions.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Vec<SignedTransaction>,
}

impl Block {
    /// The block hash (the header's).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }
}

/// The outcome of one transaction in a block.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub tx_hash: TxHash,
    pub height: u64,
    /// Position of the transaction in its block.
    pub index: u32,
    pub status: ReceiptStatus,
    pub fee_charged: u64,
}

/// Whether the operation took effect. Either way the nonce advanced and the fee was paid.
///
/// JSON: `{"status":"success"}` or `{"status":"failed","reason":{"kind":…},"code":1301}`,
/// `code` being [`FailureReason::code`] when the reason has one (it is derived from the
/// reason, so it is not part of the receipt's bytes, and decoding ignores it).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReceiptStatus {
    Success,
    Failed { reason: FailureReason },
}

impl Serialize for ReceiptStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            ReceiptStatus::Success => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("status", "success")?;
                map.end()
            }
            ReceiptStatus::Failed { reason } => {
                let code = reason.code();
                let mut map = serializer.serialize_map(Some(2 + usize::from(code.is_some())))?;
                map.serialize_entry("status", "failed")?;
                map.serialize_entry("reason", reason)?;
                if let Some(code) = code {
                    map.serialize_entry("code", &code)?;
                }
                map.end()
            }
        }
    }
}

/// Why an operation failed after its transaction was accepted into a block.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureReason {
    /// The balance left after the fee does not cover the transfer.
    InsufficientBalance { needed: u64, available: u64 },
    /// The recipient's balance would overflow (impossible while supply fits in u64; kept
    /// so execution never relies on that silently).
    BalanceOverflow,
    /// Delete of a key that is not set.
    KeyNotFound,
    /// Delegating or unbonding from a key that is not a candidate.
    UnknownValidator { validator: Address },
    /// A self-bond registering with less than `min_bond`, or an unbond leaving a candidate a
    /// total bond in `(0, min_bond)`.
    BelowMinimumBond { bonded: u64, min_bond: u64 },
    /// Registering a candidate while the stake table holds `candidates_max`.
    ValidatorSetFull { candidates_max: u64 },
    /// Unbonding more than the sender has bonded to that key.
    InsufficientBond { bonded: u64, requested: u64 },
    /// The cut computed on the stake table after the unbond would be empty.
    WouldEmptySet,
    /// That cut would have fewer than `min_validators` members.
    BelowSafeSize { size: u64, min_validators: u64 },
    /// The unbonding queue of the release epoch holds `UNBONDS_PER_EPOCH_MAX` entries.
    UnbondingQueueFull { release_epoch: u64 },
}

impl FailureReason {
    /// The stable error code of the reason in the RPC's code space (`docs/rpc.md`): the same
    /// number a client gets when an admission check refuses a transaction for this reason.
    /// Codes never change meaning. The two reasons that no admission check can foresee
    /// (`balance_overflow`, `key_not_found`) have none.
    pub fn code(&self) -> Option<i32> {
        Some(match self {
            FailureReason::InsufficientBalance { .. } => 1006,
            FailureReason::BalanceOverflow | FailureReason::KeyNotFound => return None,
            FailureReason::UnknownValidator { .. } => 1301,
            FailureReason::BelowMinimumBond { .. } => 1302,
            FailureReason::ValidatorSetFull { .. } => 1303,
            FailureReason::InsufficientBond { .. } => 1304,
            FailureReason::WouldEmptySet => 1305,
            FailureReason::BelowSafeSize { .. } => 1306,
            FailureReason::UnbondingQueueFull { .. } => 1307,
        })
    }

    /// The snake-case name of the reason, as in JSON's `kind`.
    pub fn name(&self) -> &'static str {
        match self {
            FailureReason::InsufficientBalance { .. } => "insufficient_balance",
            FailureReason::BalanceOverflow => "balance_overflow",
            FailureReason::KeyNotFound => "key_not_found",
            FailureReason::UnknownValidator { .. } => "unknown_validator",
            FailureReason::BelowMinimumBond { .. } => "below_minimum_bond",
            FailureReason::ValidatorSetFull { .. } => "validator_set_full",
            FailureReason::InsufficientBond { .. } => "insufficient_bond",
            FailureReason::WouldEmptySet => "would_empty_set",
            FailureReason::BelowSafeSize { .. } => "below_safe_size",
            FailureReason::UnbondingQueueFull { .. } => "unbonding_queue_full",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureReason::InsufficientBalance { needed, available } => {
                write!(f, "insufficient balance: needed {needed}, available {available}")
            }
            FailureReason::BalanceOverflow => write!(f, "the recipient's balance would overflow"),
            FailureReason::KeyNotFound => write!(f, "the key is not set"),
            FailureReason::UnknownValidator { validator } => {
                write!(f, "validator {validator} is not a candidate")
            }
            FailureReason::BelowMinimumBond { bonded, min_bond } => write!(
                f,
                "a candidate's total bond of {bonded} would be below the minimum of {min_bond}"
            ),
            FailureReason::ValidatorSetFull { candidates_max } => {
                write!(f, "the stake table is full ({candidates_max} candidates)")
            }
            FailureReason::InsufficientBond { bonded, requested } => write!(
                f,
                "unbonding {requested} but only {bonded} is bonded by the sender"
            ),
            FailureReason::WouldEmptySet => write!(f, "the unbond would leave the validator set empty"),
            FailureReason::BelowSafeSize {
                size,
                min_validators,
            } => write!(
                f,
                "the unbond would leave {size} validators, fewer than the minimum of {min_validators}"
            ),
            FailureReason::UnbondingQueueFull { release_epoch } => write!(
                f,
                "the unbonding queue released at the end of epoch {release_epoch} is full"
            ),
        }
    }
}

/// Domain tags for the binary Merkle trees over transactions and receipts (RFC 6962 shape:
/// distinct leaf and node prefixes, so a leaf can never pose as an inner node).
const LEAF_PREFIX: u8 = 0;
const NODE_PREFIX: u8 = 1;

/// Root of a binary Merkle tree over `leaves` (each already a hash). Empty → `Hash::ZERO`.
///
/// Written here rather than taken from a crate: it is a dozen lines, and the crates that offer
/// it either fix another hash function or pull in much more than we need.
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return Hash::ZERO;
    }
    let mut level: Vec<Hash> = leaves
        .iter()
        .map(|leaf| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&[LEAF_PREFIX]);
            hasher.update(&leaf.0);
            Hash(*hasher.finalize().as_bytes())
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => {
                    let mut hasher = blake3::Hasher::new();
                    hasher.update(&[NODE_PREFIX]);
                    hasher.update(&left.0);
                    hasher.update(&right.0);
                    Hash(*hasher.finalize().as_bytes())
                }
                // An odd node is promoted unchanged (as in RFC 6962's unbalanced trees).
                [single] => *single,
                _ => Hash::ZERO,
            })
            .collect();
    }
    level[0]
}

/// Root over the hashes of `txs`, in block order.
pub fn tx_root(tx_hashes: &[TxHash]) -> Hash {
    merkle_root(tx_hashes)
}

/// Root over the hashes of the encoded receipts, in block order.
pub fn receipts_root(receipts: &[Receipt]) -> Hash {
    let leaves: Vec<Hash> = receipts
        .iter()
        .map(|r| Hash::of(&encoding::encode(r)))
        .collect();
    merkle_root(&leaves)
}
