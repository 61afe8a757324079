//! Block sync: serving and asking peers for finalized blocks by height range, and for single
//! blocks by hash (a parent this node lacks: see `fetch.rs`), over the request-response
//! protocol. One range request is in flight at a time; a peer that fails or lies is set aside.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use mesh_consensus::Input;
use tracing::{debug, error, warn};

use super::{Driver, DriverError};
use crate::network::{NetworkError, PeerId};
use crate::wire::{SyncRequest, SyncResponse, WireError};

/// The outcome of a sync request, sent back by the task that awaited it.
#[derive(Debug)]
pub(super) struct SyncReply {
    pub(super) peer: PeerId,
    pub(super) request: SyncRequest,
    pub(super) result: Result<Vec<u8>, NetworkError>,
}

#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// Highest finalized height we know exists.
    pub(super) target: u64,
    /// The request in flight, if any.
    pub(super) in_flight: Option<(PeerId, SyncRequest)>,
    pub(super) peers: HashSet<PeerId>,
    /// Peers passed over until the instant.
    pub(super) backoff: HashMap<PeerId, Instant>,
    /// Rotates through peers.
    pub(super) turn: usize,
}

impl SyncState {
    pub(super) fn pick_peer(&mut self, now: Instant) -> Option<PeerId> {
        self.backoff.retain(|_, until| *until > now);
        let mut candidates: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|peer| !self.backoff.contains_key(peer))
            .copied()
            .collect();
        if candidates.is_empty() {
            return None;
        }
        candidates.sort();
        self.turn = self.turn.wrapping_add(1);
        Some(candidates[self.turn % candidates.len()])
    }
}

impl Driver {
    pub(super) fn serve_sync(&mut self, peer: PeerId, data: &[u8]) -> SyncResponse {
        let request = match SyncRequest::decode(data) {
            Ok(request) => request,
            Err(err) => {
                debug!(%peer, error = %err, "bad sync request");
                let reason = match err {
                    WireError::UnknownKind { .. } => "unknown_kind",
                    WireError::Malformed { .. } => "malformed",
                };
                self.metrics.reject("sync", reason);
                return SyncResponse::Refused {
                    reason: err.to_string(),
                };
            }
        };
        match request {
            SyncRequest::Status => SyncResponse::Status {
                finalized_height: self.chain.head().height,
                finalized_hash: self.chain.head_hash(),
            },
            SyncRequest::Block { hash } => self.serve_block(&hash),
            SyncRequest::Blocks { from, to } => {
                if from > to {
                    return SyncResponse::Refused {
                        reason: "from is above to".into(),
                    };
                }
                let count_max = usize::try_from(self.config.sync_batch_blocks).unwrap_or(128);
                let chain = &self.chain;
                let bytes_max = self.config.sync_response_bytes_max;
                match tokio::task::block_in_place(|| {
                    chain.certified_blocks(from, to, count_max, bytes_max)
                }) {
                    Ok(blocks) => SyncResponse::Blocks { blocks },
                    Err(err) => {
                        error!(error = %err, "cannot read blocks to serve");
                        SyncResponse::Refused {
                            reason: "storage error".into(),
                        }
                    }
                }
            }
        }
    }

    /// A block by hash: from the journal (unfinalized) or the finalized chain.
    fn serve_block(&self, hash: &mesh_ledger::Hash) -> SyncResponse {
        let found = self.journal.get(hash).and_then(|block| match block {
            Some(block) => Ok(Some(block)),
            None => {
                let store = self.chain.store();
                match store.height_of(hash)? {
                    Some(height) => Ok(self
                        .chain
                        .certified_blocks(height, height, 1, self.config.sync_response_bytes_max)
                        .ok()
                        .and_then(|mut blocks| blocks.pop())
                        .map(|certified| certified.block)),
                    None => Ok(None),
                }
            }
        });
        match found {
            Ok(block) => SyncResponse::Block { block },
            Err(err) => {
                error!(error = %err, "cannot read a block to serve");
                SyncResponse::Refused {
                    reason: "storage error".into(),
                }
            }
        }
    }

    pub(super) fn raise_sync_target(&mut self, height: u64) {
        if height > self.sync.target {
            self.sync.target = height;
            self.update_gauges();
        }
        self.start_sync();
    }

    /// Sends the next block request if we are behind and nothing is in flight.
    pub(super) fn start_sync(&mut self) {
        let head = self.chain.head().height;
        if self.sync.in_flight.is_some() || self.sync.target <= head {
            return;
        }
        let Some(peer) = self.sync.pick_peer(Instant::now()) else {
            return;
        };
        // Clipped at the epoch's boundary: the blocks beyond are checked with the next set,
        // once consensus has entered that epoch (ADR 003 §3).
        let schedule = self.consensus_config.schedule;
        let boundary = schedule.last(schedule.epoch_of(head.saturating_add(1)));
        let to = self
            .sync
            .target
            .min(head.saturating_add(self.config.sync_batch_blocks))
            .min(boundary);
        let request = SyncRequest::Blocks { from: head + 1, to };
        debug!(%peer, from = head + 1, to, "requesting blocks");
        self.send_sync_request(peer, request);
    }

    pub(super) fn poll_status(&mut self) {
        if self.sync.in_flight.is_some() {
            return;
        }
        if self.sync.target > self.chain.head().height {
            self.start_sync();
            return;
        }
        if let Some(peer) = self.sync.pick_peer(Instant::now()) {
            self.send_sync_request(peer, SyncRequest::Status);
        }
    }

    /// Sends `request`; status and range requests are the one sync request in flight, block
    /// fetches by hash (`fetch.rs`) are counted there and never take that slot.
    pub(super) fn send_sync_request(&mut self, peer: PeerId, request: SyncRequest) {
        if !matches!(request, SyncRequest::Block { .. }) {
            self.sync.in_flight = Some((peer, request));
        }
        let net = self.net.clone();
        let replies = self.sync_replies_tx.clone();
        tokio::spawn(async move {
            let result = net.send_sync_request(peer, request.encode()).await;
            let _ = replies
                .send(SyncReply {
                    peer,
                    request,
                    result,
                })
                .await;
        });
    }

    pub(super) fn set_aside(&mut self, peer: PeerId, reason: &'static str) {
        debug!(%peer, reason, "sync peer set aside");
        self.sync
            .backoff
            .insert(peer, Instant::now() + self.config.sync_peer_backoff);
    }

    pub(super) async fn on_sync_reply(&mut self, reply: SyncReply) -> Result<(), DriverError> {
        if let SyncRequest::Block { hash } = reply.request {
            return self.on_fetch_reply(reply.peer, hash, reply.result).await;
        }
        if self.sync.in_flight == Some((reply.peer, reply.request)) {
            self.sync.in_flight = None;
        }
        let peer = reply.peer;
        let bytes = match reply.result {
            Ok(bytes) => bytes,
            Err(err) => {
                debug!(%peer, error = %err, "sync request failed");
                self.set_aside(peer, "request failed");
                self.start_sync();
                return Ok(());
            }
        };
        let response =
            match SyncResponse::decode(&bytes, self.config.sync_response_bytes_max + (1 << 20)) {
                Ok(response) => response,
                Err(err) => {
                    warn!(%peer, error = %err, "malformed sync response");
                    self.metrics.reject("sync", "malformed");
                    self.set_aside(peer, "malformed response");
                    self.start_sync();
                    return Ok(());
                }
            };
        match (reply.request, response) {
            (
                SyncRequest::Status,
                SyncResponse::Status {
                    finalized_height, ..
                },
            ) => {
                if finalized_height > self.chain.head().height {
                    debug!(%peer, finalized_height, "peer is ahead");
                }
                self.raise_sync_target(finalized_height);
            }
            (SyncRequest::Blocks { from, .. }, SyncResponse::Blocks { blocks }) => {
                self.on_synced_blocks(peer, from, blocks).await?;
                self.start_sync();
            }
            (_, SyncResponse::Refused { reason }) => {
                debug!(%peer, %reason, "sync request refused");
                self.set_aside(peer, "refused");
                self.start_sync();
            }
            _ => {
                self.metrics.reject("sync", "wrong_response");
                self.set_aside(peer, "answered another question");
                self.start_sync();
            }
        }
        Ok(())
    }

    pub(super) async fn on_synced_blocks(
        &mut self,
        peer: PeerId,
        from: u64,
        blocks: Vec<mesh_consensus::CertifiedBlock>,
    ) -> Result<(), DriverError> {
        let head = self.chain.head().height;
        if blocks.is_empty() {
            // The peer does not have what it (or someone) claimed: forget the claim and learn
            // the height again from the next status answer.
            self.set_aside(peer, "has no blocks");
            self.sync.target = head;
            self.update_gauges();
            return Ok(());
        }
        let starts_right = blocks
            .first()
            .is_some_and(|b| b.block.header.height.0 == from);
        let payloads_match = blocks
            .iter()
            .all(|item| self.chain.check_synced(&item.block).is_ok());
        if !starts_right || !payloads_match {
            warn!(%peer, "sync peer sent blocks that do not match their headers");
            self.metrics.reject("sync", "invalid_blocks");
            self.set_aside(peer, "invalid blocks");
            let _ = self.net.block_peer(peer).await;
            return Ok(());
        }
        let count = blocks.len();
        let outputs = self
            .consensus
            .on_input(self.now_ms(), Input::BlocksSynced { blocks });
        if let Some(rejection) = self.consensus.last_rejection() {
            warn!(%peer, %rejection, "synced blocks refused");
            self.metrics.reject("sync", "invalid_certificate");
            self.set_aside(peer, "invalid certificate");
        }
        self.carry_out(outputs).await?;
        debug!(%peer, count, head = self.chain.head().height, "synced blocks applied");
        Ok(())
    }
}
