//! Epochs as the state machine sees them (ADR 003 §3): the sets it is told at each boundary,
//! and the committee — set, decoded keys, quorum, leader rotation — that each set becomes.

use borsh::{BorshDeserialize, BorshSerialize};
use mesh_ledger::{Address, Hash, ValidatorSet};

use crate::keys::KeyCache;
use crate::types::{BlockId, Epoch, Height, View};

/// What the machine needs to run one epoch, read by the driver from finalized state: the set
/// in force, the next one (whose hash every header of the epoch commits to, so finality
/// certificates of the next epoch can be checked before entering it), and the block the epoch
/// extends.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct EpochInfo {
    pub epoch: Epoch,
    pub validators: ValidatorSet,
    pub next_validators: ValidatorSet,
    /// The previous epoch's boundary block (genesis for epoch 0), as its own epoch and view
    /// named it. The new epoch treats it as its view 0: the parent of its first block.
    pub base: BlockId,
}

impl EpochInfo {
    /// Epoch 0 of a chain: its set is the genesis set, in force for epochs 0 and 1.
    pub fn genesis(validators: ValidatorSet, genesis_hash: Hash) -> EpochInfo {
        EpochInfo {
            epoch: Epoch(0),
            next_validators: validators.clone(),
            validators,
            base: BlockId {
                epoch: Epoch(0),
                view: View(0),
                height: Height(0),
                hash: genesis_hash,
            },
        }
    }

    /// The base as the epoch's own view 0: what its first proposal names as parent.
    pub(crate) fn base_in_epoch(&self) -> BlockId {
        BlockId {
            epoch: self.epoch,
            view: View(0),
            height: self.base.height,
            hash: self.base.hash,
        }
    }
}

/// One validator set made ready for voting: keys decoded once, quorum computed once.
#[derive(Debug)]
pub(crate) struct Committee {
    pub(crate) set: ValidatorSet,
    pub(crate) keys: KeyCache,
    pub(crate) quorum: u64,
}

impl Committee {
    /// `weak_quorum` is the test-only mutation of `Config::mutation_weak_quorum`.
    pub(crate) fn new(set: ValidatorSet, weak_quorum: bool) -> Committee {
        let quorum = if weak_quorum {
            set.max_faulty_power().saturating_add(1)
        } else {
            set.quorum_power()
        };
        Committee {
            keys: KeyCache::new(&set),
            quorum,
            set,
        }
    }

    /// The leader of `view`: round-robin over the validators in address order. Deterministic,
    /// so every validator agrees without talking.
    pub(crate) fn leader(&self, view: View) -> Address {
        let count = self.set.len().max(1) as u64;
        let index = usize::try_from(view.0 % count).unwrap_or(0);
        self.set.get(index).map_or(Address::ZERO, |v| v.address)
    }
}
