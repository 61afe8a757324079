//! # mesh-ledger
//!
//! Owns Mesh Ledger's replicated state and its data: keys and signatures, hashing, the
//! canonical encoding, transactions, blocks, validator sets, receipts, genesis, deterministic
//! execution of a block against state, the authenticated state tree with its proofs, and the
//! RocksDB storage (feature `storage`).
//!
//! It must never: do async or network I/O, read a clock, draw randomness, or depend on the
//! order of a hash map. The same blocks give the same state root on every machine.

pub mod bytes;
pub mod crypto;
pub mod encoding;
pub mod epoch;
pub mod limits;
pub mod validator;

pub use crypto::{Address, Hash, SecretKey, Signature};
pub use validator::{Validator, ValidatorSet};
pub mod block;
pub mod genesis;
pub mod state;
pub mod tx;

pub use block::{Block, BlockHeader, FailureReason, Receipt, ReceiptStatus};
pub use epoch::EpochSchedule;
pub use genesis::{Genesis, GenesisAccount, Params};
pub use state::{Account, StateKey};
pub use tx::{Op, SignedTransaction, Transaction, TxHash};
pub mod execution;
pub mod memory;
pub mod staking;

pub use execution::{
    apply_block, apply_block_with, build_block, build_block_with, check_staking, check_stateful,
    genesis_block, BlockError, ChainContext, ExecutedBlock, SignaturesVerified, StatefulError,
    NONE_VERIFIED,
};
#[cfg(feature = "storage")]
pub mod storage;

/// The hash map of the ledger's working sets and caches: foldhash, several times faster than
/// std's SipHash on short keys, and seeded per process so that keys a client chooses cannot be
/// aimed at one bucket. Nothing may depend on its iteration order.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
