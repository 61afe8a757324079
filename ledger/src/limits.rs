//! Every bound the ledger enforces, in one place.
//!
//! Chain parameters ([`crate::Params`]) may lower or raise some of these per chain; the
//! absolute ceilings here hold for every chain so that a hostile genesis cannot make a node
//! allocate without bound.

/// Most validators in a set.
pub const VALIDATORS_MAX: usize = 1024;
/// Longest chain id, in bytes.
pub const CHAIN_ID_BYTES_MAX: usize = 64;
/// Ceiling of `Params::tx_bytes_max`.
pub const TX_BYTES_CEILING: u32 = 1 << 20;
/// Ceiling of `Params::block_bytes_max`.
pub const BLOCK_BYTES_CEILING: u64 = 64 << 20;
/// Ceiling of `Params::block_txs_max`.
pub const BLOCK_TXS_CEILING: u32 = 100_000;
/// Most bytes of a borsh-encoded header.
pub const HEADER_BYTES_MAX: usize = 1024;
/// Most genesis accounts.
pub const GENESIS_ACCOUNTS_MAX: usize = 1_000_000;
/// Largest genesis JSON file.
pub const GENESIS_JSON_BYTES_MAX: u64 = 256 << 20;
/// Bytes a transaction's encoding adds around its key and value (chain id, addresses,
/// integers, enum tags, length prefixes, signature), rounded up.
pub const TX_OVERHEAD_BYTES: u32 = 256;
/// Ceiling of `Params::epoch_blocks`.
pub const EPOCH_BLOCKS_CEILING: u64 = 1_000_000;
/// Most `(owner, amount)` entries released at one epoch's end (ADR 003 §2); an unbond that
/// would add one more fails with `unbonding_queue_full`.
pub const UNBONDS_PER_EPOCH_MAX: usize = 4_096;
