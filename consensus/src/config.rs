//! Configuration and every bound the state machine enforces, in one place.

use mesh_ledger::EpochSchedule;

use crate::types::{Epoch, Height};

/// Every buffer and message bound. Each one caps memory a peer can make us hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest block payload accepted or built, in bytes.
    pub payload_bytes_max: usize,
    /// Votes and proposals are tallied for views up to this far ahead of the current view;
    /// beyond it they wait in the per-peer future buffer.
    pub future_views_max: u64,
    /// Far-future messages buffered per sending peer (oldest dropped first).
    pub future_messages_per_peer_max: usize,
    /// Distinct peers with a far-future buffer (others' far-future messages are dropped).
    pub future_peers_max: usize,
    /// Views behind the current view whose votes and certificates are still kept when nothing
    /// was finalized for a while; older state is dropped (sync recovers it).
    pub past_views_retained_max: u64,
    /// Views whose own votes the safety state keeps (to re-send them after a restart).
    pub safety_views_max: u64,
    /// Evidence items remembered (to report each equivocation once).
    pub evidence_max: usize,
    /// Messages in one `Input::Messages` batch.
    pub message_batch_max: usize,
    /// Blocks in one `BlocksSynced` input.
    pub sync_blocks_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            payload_bytes_max: 4 << 20,
            future_views_max: 64,
            future_messages_per_peer_max: 32,
            future_peers_max: 256,
            past_views_retained_max: 256,
            safety_views_max: 32,
            evidence_max: 1024,
            sync_blocks_max: 512,
            message_batch_max: 1024,
        }
    }
}

/// Timer settings. Timeouts double on each consecutive view that ends without a notarization
/// and reset when one does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Time a view waits for a notarization before nullifying, after a good view.
    pub view_timeout_base_ms: u64,
    /// Ceiling of the backed-off view timeout.
    pub view_timeout_max_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            view_timeout_base_ms: 1_000,
            view_timeout_max_ms: 30_000,
        }
    }
}

impl Timeouts {
    /// The timeout of a view entered after `failed_views` consecutive nullified views.
    pub fn view_timeout_ms(&self, failed_views: u32) -> u64 {
        let shift = failed_views.min(20);
        self.view_timeout_base_ms
            .saturating_mul(1u64 << shift)
            .min(self.view_timeout_max_ms)
    }
}

/// What stays fixed for the life of a chain. The validator sets change by epoch and are
/// given to the machine as [`crate::EpochInfo`]s.
#[derive(Debug, Clone)]
pub struct Config {
    /// Chain id mixed into every signature.
    pub chain_id: String,
    /// Where epochs begin and end; every node computes it from the genesis parameters.
    pub schedule: EpochSchedule,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// Test-only mutation: quorum becomes f+1 instead of 2f+1 so the simulator can prove it
    /// catches a broken protocol. Never set outside tests.
    #[doc(hidden)]
    pub mutation_weak_quorum: bool,
    /// Test-only mutation: on entering an epoch keep tallying, verifying and leading with the
    /// previous epoch's set, so the simulator can prove it catches a certificate signed by a
    /// set not in force. Never set outside tests.
    #[doc(hidden)]
    pub mutation_stale_set: bool,
}

impl Config {
    /// A config with default timeouts and limits.
    pub fn new(chain_id: impl Into<String>, schedule: EpochSchedule) -> Self {
        Config {
            chain_id: chain_id.into(),
            schedule,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            mutation_weak_quorum: false,
            mutation_stale_set: false,
        }
    }

    /// The last height of `epoch`: its boundary block, above which it builds nothing.
    pub fn last_height(&self, epoch: Epoch) -> Height {
        Height(self.schedule.last(epoch.0))
    }
}
