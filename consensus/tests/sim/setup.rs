//! The committee and the toy application every simulated validator shares.

use mesh_consensus::{Config, Height, Timeouts};
use mesh_ledger::{EpochSchedule, Hash, SecretKey, Validator, ValidatorSet};

pub const CHAIN_ID: &str = "mesh-sim";

/// The toy application's block hash: blake3(parent ‖ height ‖ payload).
pub fn toy_block_hash(parent: &Hash, height: Height, payload: &[u8]) -> Hash {
    let mut bytes = Vec::with_capacity(40 + payload.len());
    bytes.extend_from_slice(parent.as_bytes());
    bytes.extend_from_slice(&height.0.to_le_bytes());
    bytes.extend_from_slice(payload);
    Hash::of(&bytes)
}

pub fn genesis_hash() -> Hash {
    Hash::of(b"mesh-sim genesis")
}

pub fn validator_key(index: usize) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
    seed[31] = 0x5e;
    SecretKey::from_seed(seed)
}

/// Keys and config for `nodes` simulated nodes.
pub fn committee(nodes: usize, timeouts: Timeouts, epoch_blocks: u64) -> (Vec<SecretKey>, Config) {
    let keys: Vec<SecretKey> = (0..nodes).map(validator_key).collect();
    let mut config = Config::new(CHAIN_ID, EpochSchedule::new(epoch_blocks));
    config.timeouts = timeouts;
    (keys, config)
}

/// The validator set of `members` (node indices; node i holds `powers[i]`).
pub fn validator_set(keys: &[SecretKey], powers: &[u64], members: &[usize]) -> ValidatorSet {
    ValidatorSet::new(
        members
            .iter()
            .map(|i| Validator {
                address: keys[*i].address(),
                power: powers[*i],
            })
            .collect(),
    )
    .unwrap()
}
