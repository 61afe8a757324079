//! Epochs: fixed runs of `epoch_blocks` heights, each with one validator set (ADR 003 §1).
//!
//! Height 0 (genesis) is the boundary before epoch 0; for `h ≥ 1`, `epoch(h) = (h − 1) / E`,
//! `first(e) = e·E + 1`, `last(e) = (e + 1)·E`. The block at `last(e)` is the *boundary block*
//! of epoch `e`: its execution ends with the end-of-epoch step, which computes `set(e + 2)`.
//! Epochs depend on the height alone, so ledger, consensus, node and light clients compute
//! them from `epoch_blocks` without reading state.

/// The epoch arithmetic of one chain. `epoch_blocks ≥ 1` (checked by `Params::validate`; a
/// zero here is treated as one so that no method can divide by zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochSchedule {
    epoch_blocks: u64,
}

impl EpochSchedule {
    /// The schedule of epochs `epoch_blocks` heights long.
    pub fn new(epoch_blocks: u64) -> EpochSchedule {
        EpochSchedule {
            epoch_blocks: epoch_blocks.max(1),
        }
    }

    /// Heights per epoch.
    pub fn epoch_blocks(&self) -> u64 {
        self.epoch_blocks
    }

    /// The epoch of `height`; genesis (height 0) counts as epoch 0, whose set it fixes.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height.saturating_sub(1) / self.epoch_blocks
    }

    /// First height of `epoch` (saturates at `u64::MAX` for epochs no chain reaches).
    pub fn first(&self, epoch: u64) -> u64 {
        epoch.saturating_mul(self.epoch_blocks).saturating_add(1)
    }

    /// Last height of `epoch`: its boundary block.
    pub fn last(&self, epoch: u64) -> u64 {
        epoch.saturating_add(1).saturating_mul(self.epoch_blocks)
    }

    /// Whether `height` is the boundary block of its epoch (genesis is not).
    pub fn is_boundary(&self, height: u64) -> bool {
        height != 0 && height.is_multiple_of(self.epoch_blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_map_to_epochs_and_back() {
        let schedule = EpochSchedule::new(10);
        assert_eq!(schedule.epoch_of(0), 0);
        assert_eq!(schedule.epoch_of(1), 0);
        assert_eq!(schedule.epoch_of(10), 0);
        assert_eq!(schedule.epoch_of(11), 1);
        assert_eq!((schedule.first(0), schedule.last(0)), (1, 10));
        assert_eq!((schedule.first(3), schedule.last(3)), (31, 40));
        assert!(!schedule.is_boundary(0));
        assert!(!schedule.is_boundary(9));
        assert!(schedule.is_boundary(10));
        assert!(!schedule.is_boundary(11));
        for height in 1..100 {
            let epoch = schedule.epoch_of(height);
            assert!(schedule.first(epoch) <= height && height <= schedule.last(epoch));
            assert_eq!(schedule.is_boundary(height), height == schedule.last(epoch));
        }
    }

    #[test]
    fn one_block_epochs_make_every_block_a_boundary() {
        let schedule = EpochSchedule::new(1);
        for height in 1..20 {
            assert_eq!(schedule.epoch_of(height), height - 1);
            assert!(schedule.is_boundary(height));
        }
        assert_eq!(EpochSchedule::new(0), schedule);
    }
}
