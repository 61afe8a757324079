//! Fetching unfinalized blocks by hash. A proposal (ours as leader, or a peer's we must
//! verify) names a parent; when this node lacks it — it restarted, or never received the
//! parent's proposal — nothing in consensus brings it: only finalized blocks are synced, and a
//! notarized parent may never be finalized without a child. So the driver asks peers for the
//! block by hash (`SyncRequest::Block`), checks that it hashes to what was asked, executes it on
//! its own parent (fetching that first if needed), journals it, and hands it to consensus
//! (`Input::BlocksRecovered`); the waiting build or verification then proceeds.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use mesh_consensus::{Block as ConsensusBlock, Input};
use mesh_ledger::Hash;
use tracing::{debug, warn};

use super::{wall_ms, Driver, DriverError};
use crate::chain::ChainError;
use crate::network::{NetworkError, PeerId};
use crate::wire::{SyncRequest, SyncResponse};

/// Most blocks wanted at once; a parent chain longer than this is sync's job.
const WANTED_MAX: usize = 64;
/// Most fetched blocks kept while their own parent is fetched.
const WAITING_MAX: usize = 64;
/// Most block requests in flight.
const IN_FLIGHT_MAX: usize = 4;
/// First retry delay; doubles per attempt up to `RETRY_MAX`.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// A wish older than this is dropped (re-made if the block is still needed).
const WANTED_FOR_MAX: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Wanted {
    since: Instant,
    attempts: u32,
    /// When the next request may go (None while one is in flight).
    next_at: Option<Instant>,
}

/// Blocks wanted by hash and fetched blocks waiting for their parent.
#[derive(Debug, Default)]
pub(super) struct FetchState {
    wanted: BTreeMap<Hash, Wanted>,
    waiting: VecDeque<ConsensusBlock>,
    in_flight: usize,
}

impl FetchState {
    /// When the next request is due, if any.
    pub(super) fn next_due(&self) -> Option<Instant> {
        if self.in_flight >= IN_FLIGHT_MAX {
            return None;
        }
        self.wanted
            .values()
            .filter_map(|wanted| wanted.next_at)
            .min()
    }
}

impl Driver {
    /// Notes that `hash` is needed as a parent and asks a peer for it when none is asking.
    pub(super) fn want_block(&mut self, hash: Hash) {
        if self.chain.knows(&hash) || self.fetch.wanted.contains_key(&hash) {
            return;
        }
        if self.fetch.wanted.len() >= WANTED_MAX {
            return;
        }
        debug!(block = %hash, "fetching a parent block by hash");
        let now = Instant::now();
        self.fetch.wanted.insert(
            hash,
            Wanted {
                since: now,
                attempts: 0,
                next_at: Some(now),
            },
        );
        self.send_due_fetches();
    }

    /// Sends the block requests whose time has come, to rotating peers.
    pub(super) fn send_due_fetches(&mut self) {
        let now = Instant::now();
        self.fetch
            .wanted
            .retain(|_, wanted| now.duration_since(wanted.since) < WANTED_FOR_MAX);
        let due: Vec<Hash> = self
            .fetch
            .wanted
            .iter()
            .filter(|(_, wanted)| wanted.next_at.is_some_and(|at| at <= now))
            .map(|(hash, _)| *hash)
            .collect();
        for hash in due {
            if self.fetch.in_flight >= IN_FLIGHT_MAX {
                break;
            }
            let Some(peer) = self.sync.pick_peer(now) else {
                break;
            };
            if let Some(wanted) = self.fetch.wanted.get_mut(&hash) {
                wanted.attempts = wanted.attempts.saturating_add(1);
                wanted.next_at = None;
            }
            self.fetch.in_flight += 1;
            self.send_sync_request(peer, SyncRequest::Block { hash });
        }
    }

    /// A peer's answer (or failure) to `SyncRequest::Block { hash }`.
    pub(super) async fn on_fetch_reply(
        &mut self,
        peer: PeerId,
        hash: Hash,
        result: Result<Vec<u8>, NetworkError>,
    ) -> Result<(), DriverError> {
        self.fetch.in_flight = self.fetch.in_flight.saturating_sub(1);
        if let Some(wanted) = self.fetch.wanted.get_mut(&hash) {
            let backoff = RETRY_BASE
                .saturating_mul(1 << wanted.attempts.min(5))
                .min(RETRY_MAX);
            wanted.next_at = Some(Instant::now() + backoff);
        }
        let response = result.map_err(|err| err.to_string()).and_then(|bytes| {
            SyncResponse::decode(&bytes, self.config.sync_response_bytes_max + (1 << 20))
                .map_err(|err| err.to_string())
        });
        let block = match response {
            Ok(SyncResponse::Block { block: Some(block) }) => block,
            Ok(SyncResponse::Block { block: None }) | Ok(SyncResponse::Refused { .. }) => {
                debug!(%peer, block = %hash, "peer does not have the block");
                return Ok(());
            }
            Ok(_) => {
                self.metrics.reject("sync", "wrong_response");
                return Ok(());
            }
            Err(err) => {
                debug!(%peer, block = %hash, error = %err, "block request failed");
                return Ok(());
            }
        };
        if block.header.hash != hash || self.chain.check_synced(&block).is_err() {
            warn!(%peer, block = %hash, "peer sent a block that is not the one asked for");
            self.metrics.reject("sync", "invalid_blocks");
            self.set_aside(peer, "sent the wrong block");
            return Ok(());
        }
        self.fetch.wanted.remove(&hash);
        self.metrics.blocks_fetched.inc();
        self.accept_blocks(vec![block]).await
    }

    /// Executes fetched or journaled blocks whose parent is known (fetching the parent of the
    /// others), journals them and hands them to consensus; then retries what waited for them.
    pub(super) async fn accept_blocks(
        &mut self,
        blocks: Vec<ConsensusBlock>,
    ) -> Result<(), DriverError> {
        let mut queue: VecDeque<ConsensusBlock> = blocks.into();
        let mut accepted = Vec::new();
        while let Some(block) = queue.pop_front() {
            let header = block.header;
            if header.height.0 <= self.chain.head().height {
                continue;
            }
            if !self.chain.knows(&header.parent) {
                if self.fetch.waiting.len() >= WAITING_MAX {
                    self.fetch.waiting.pop_front();
                }
                self.fetch.waiting.push_back(block);
                self.want_block(header.parent);
                continue;
            }
            let leader = self.consensus.leader(header.view);
            let drift = self.config.max_clock_drift_ms;
            let chain = &mut self.chain;
            let mempool = &self.mempool;
            let verdict = tokio::task::block_in_place(|| {
                chain.verify(
                    &header.parent,
                    header.height,
                    &header.hash,
                    &block.payload,
                    leader,
                    wall_ms(),
                    drift,
                    &|hash| mempool.signature_verified(hash),
                )
            });
            match verdict {
                Ok(()) => {}
                Err(ChainError::Storage(err)) => return Err(DriverError::Storage(err.to_string())),
                Err(err) => {
                    warn!(block = %header.hash, error = %err, "fetched or journaled block is invalid");
                    self.metrics.reject("sync", "invalid_blocks");
                    continue;
                }
            }
            self.journal
                .record(&block)
                .map_err(|err| DriverError::Storage(err.to_string()))?;
            // Children that waited for this block can go now.
            let (ready, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.fetch.waiting)
                .into_iter()
                .partition(|child| child.header.parent == header.hash);
            self.fetch.waiting = still.into();
            queue.extend(ready);
            accepted.push(block);
        }
        if accepted.is_empty() {
            return Ok(());
        }
        debug!(count = accepted.len(), "blocks recovered for consensus");
        let outputs = self
            .consensus
            .on_input(self.now_ms(), Input::BlocksRecovered { blocks: accepted });
        self.carry_out(outputs).await?;
        let more = self.retry_pending_verifications()?;
        self.carry_out(more).await
    }

    /// Forgets wishes and waiting blocks that finality made moot.
    pub(super) fn prune_fetches(&mut self) {
        let head = self.chain.head().height;
        let chain = &self.chain;
        self.fetch.wanted.retain(|hash, _| !chain.knows(hash));
        self.fetch
            .waiting
            .retain(|block| block.header.height.0 > head);
    }
}
