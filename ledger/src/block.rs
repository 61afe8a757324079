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
pub const PROTOCOL_VERSION: u32 = 2;

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
    /// Hash of the validator set that finalizes this block.
    pub validator_set_hash: Hash,
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
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReceiptStatus {
    Success,
    Failed { reason: FailureReason },
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
