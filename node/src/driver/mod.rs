//! The consensus driver: one task that owns the consensus state machine, the chain and the
//! mempool, turns network events, timers and client commands into consensus inputs, and
//! carries out consensus outputs in order.
//!
//! *Invariants:*
//! - a `PersistSafetyState` is synced to RocksDB before any message after it leaves (outputs
//!   are carried out one by one, and persisting is synchronous);
//! - a finalized block is committed (block, receipts, state, certificate: one synced batch)
//!   before the driver does anything else; a failed write stops the node;
//! - every channel into or out of this task is bounded, and everything a peer sends is decoded
//!   under a size cap and judged (`Accept` / `Reject` / `Ignore`) for the gossip layer.
//!
//! Block sync runs inside the same loop: the driver learns of higher finalized heights from
//! consensus (`RequestSync`) and by asking a peer for its status every few seconds, fetches
//! certified blocks in ranges from one peer at a time, checks that each payload hashes to its
//! consensus header, and hands them to consensus, which checks the certificates. A peer that
//! fails or lies is set aside and another tried.

mod fetch;
mod journal;
mod sync;
mod tx_journal;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_consensus::{
    Block as ConsensusBlock, Consensus, FinalityCertificate, Height, Input, Message, Output,
    Rejection, SafetyState, View, ViewOutcome, ViewReport,
};
use mesh_ledger::{Address, Hash, SignedTransaction, TxHash};
use mesh_rpc::{DroppedTx, FinalizedEvent};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::chain::{Chain, ChainError, Committed};
use crate::mempool::{Admitted, CheckedTx, Mempool, MempoolError};
use crate::metrics::Metrics;
use crate::network::{NetworkError, NetworkEvent, NetworkHandle, Topic, Validation};
use crate::wire::{ConsensusEnvelope, TxGossip, WireError, TX_BATCH_MAX};
use fetch::FetchState;
use journal::BlockJournal;
use sync::{SyncReply, SyncState};
use tx_journal::TxJournal;

/// Name of the safety-state record in the consensus column family.
pub const SAFETY_RECORD: &[u8] = b"safety_state/v1";
/// Largest stored safety state accepted on restart.
const SAFETY_RECORD_BYTES_MAX: usize = 1 << 20;

/// Timing and bounds of the driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Least time between a parent's timestamp and its child's.
    pub block_interval_ms: u64,
    /// With nothing to include, the leader waits this long after the parent's timestamp
    /// before proposing an empty block; a transaction arriving meanwhile is proposed at the
    /// block interval. At most `block_interval_ms` means empty blocks at the block interval.
    pub empty_block_interval_ms: u64,
    /// Proposals stamped further ahead of our clock are refused.
    pub max_clock_drift_ms: u64,
    /// How often a peer is asked for its finalized height.
    pub status_interval: Duration,
    /// Most blocks asked for in one sync request.
    pub sync_batch_blocks: u64,
    /// Largest sync response we ask a peer to build (bytes).
    pub sync_response_bytes_max: usize,
    /// How long a peer that failed a sync request is passed over.
    pub sync_peer_backoff: Duration,
    /// Largest gossip message (must match the network's cap).
    pub gossip_bytes_max: usize,
    /// Transactions submitted locally wait at most this long to be gossiped in one batch.
    pub tx_gossip_delay: Duration,
    /// Most proposals waiting for a parent we lack.
    pub pending_verifications_max: usize,
    /// A transaction still pending after this many committed blocks is gossiped again.
    pub tx_reannounce_after_blocks: u64,
    /// Bytes per second that re-announcing pending transactions may use.
    pub tx_reannounce_bytes_per_sec: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            block_interval_ms: 500,
            empty_block_interval_ms: 500,
            max_clock_drift_ms: 10_000,
            status_interval: Duration::from_secs(2),
            sync_batch_blocks: 128,
            sync_response_bytes_max: 12 << 20,
            sync_peer_backoff: Duration::from_secs(10),
            gossip_bytes_max: 4 << 20,
            tx_gossip_delay: Duration::from_millis(20),
            pending_verifications_max: 32,
            tx_reannounce_after_blocks: 3,
            tx_reannounce_bytes_per_sec: 256 * 1024,
        }
    }
}

/// What clients (RPC, tests) ask of the driver.
#[derive(Debug)]
pub enum NodeCommand {
    /// Admit a transaction to the mempool and gossip it; its signature is already checked.
    SubmitTx {
        tx: Box<CheckedTx>,
        reply: oneshot::Sender<Result<TxHash, MempoolError>>,
    },
    /// The transaction if it is pending in the mempool, or left it without being included.
    PendingTx {
        hash: TxHash,
        reply: oneshot::Sender<Option<MempoolLookup>>,
    },
}

/// What the mempool knows of a transaction that is not final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MempoolLookup {
    /// Waiting for a block.
    Pending(SignedTransaction),
    /// Left without being included (replaced, evicted, stale), and why.
    Dropped {
        transaction: SignedTransaction,
        reason: &'static str,
    },
}

/// A snapshot of what the node is doing, refreshed by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub chain_id: String,
    pub peer_id: String,
    /// This node's validator address, when it is in the validator set.
    pub validator: Option<Address>,
    pub finalized_height: u64,
    pub finalized_hash: Hash,
    pub finalized_time_ms: u64,
    /// The consensus epoch and the view within it.
    pub epoch: u64,
    pub view: u64,
    /// Highest finalized height known to exist (ours or a peer's).
    pub sync_target: u64,
    pub syncing: bool,
    pub peers: usize,
    pub mempool_txs: usize,
    pub mempool_bytes: usize,
}

/// Why the driver stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("a finalized block failed to execute; this node's state cannot be trusted: {0}")]
    FinalizedBlockInvalid(String),
    #[error("the stored safety state is unreadable ({0}); refusing to vote without it")]
    SafetyState(String),
    #[error("the network task stopped")]
    NetworkStopped,
}

/// The channels a driver is wired to.
#[derive(Debug)]
pub struct DriverChannels {
    pub events: mpsc::Receiver<NetworkEvent>,
    pub commands: mpsc::Receiver<NodeCommand>,
    pub status: watch::Sender<NodeStatus>,
    /// Every committed block, in height order, sent after the commit is durable.
    pub finalized: broadcast::Sender<Arc<FinalizedEvent>>,
    /// Transactions that left the mempool without being included.
    pub dropped: broadcast::Sender<Arc<DroppedTx>>,
    pub shutdown: watch::Receiver<bool>,
}

/// A proposal whose parent we have not executed yet.
#[derive(Debug)]
struct PendingVerification {
    view: View,
    height: Height,
    parent: Hash,
    block_hash: Hash,
    payload: Vec<u8>,
}

/// The driver task's state.
pub struct Driver {
    config: DriverConfig,
    consensus: Consensus,
    /// The consensus configuration (limits, epoch schedule).
    consensus_config: mesh_consensus::Config,
    me: Address,
    chain: Chain,
    mempool: Mempool,
    net: NetworkHandle,
    metrics: Arc<Metrics>,
    channels: DriverChannels,
    sync_replies_tx: mpsc::Sender<SyncReply>,
    sync_replies: mpsc::Receiver<SyncReply>,
    started: Instant,
    /// Latest deadline per view (consensus clock, ms).
    timers: BTreeMap<View, u64>,
    /// A payload to build once the block interval has passed: (view, height, parent, at_ms).
    pending_build: Option<(View, Height, Hash, u64)>,
    pending_verifications: VecDeque<PendingVerification>,
    sequence: u64,
    first_seen: HashMap<Hash, Instant>,
    tx_outbox: Vec<SignedTransaction>,
    tx_flush_at: Option<Instant>,
    /// Token bucket of re-announcement bytes, and when it was last refilled.
    reannounce_budget: usize,
    reannounce_refilled: Instant,
    next_status_poll: Instant,
    sync: SyncState,
    fetch: FetchState,
    journal: BlockJournal,
    /// Transactions clients submitted here, pending: re-admitted after a restart.
    tx_journal: TxJournal,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("me", &self.me)
            .field("is_validator", &self.is_validator())
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

/// Wall-clock milliseconds since the Unix epoch (block timestamps only; consensus timers use
/// a monotonic clock).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Loads the durable safety state (default when this validator never voted).
pub fn load_safety_state(chain: &Chain) -> Result<SafetyState, DriverError> {
    let bytes = chain
        .store()
        .consensus_record(SAFETY_RECORD)
        .map_err(|err| DriverError::Storage(err.to_string()))?;
    match bytes {
        None => Ok(SafetyState::default()),
        Some(bytes) => {
            mesh_ledger::encoding::decode("safety state", &bytes, SAFETY_RECORD_BYTES_MAX)
                .map_err(|err| DriverError::SafetyState(err.to_string()))
        }
    }
}

impl Driver {
    /// A driver around a restored consensus machine.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: DriverConfig,
        consensus_config: mesh_consensus::Config,
        consensus: Consensus,
        chain: Chain,
        mempool: Mempool,
        net: NetworkHandle,
        metrics: Arc<Metrics>,
        channels: DriverChannels,
    ) -> Driver {
        let (sync_replies_tx, sync_replies) = mpsc::channel(8);
        let now = Instant::now();
        let journal = BlockJournal::new(Arc::clone(chain.store()));
        let tx_journal = TxJournal::new(Arc::clone(chain.store()), mempool.capacity());
        Driver {
            config,
            me: consensus.address(),
            consensus_config,
            consensus,
            chain,
            mempool,
            net,
            metrics,
            channels,
            sync_replies_tx,
            sync_replies,
            started: now,
            timers: BTreeMap::new(),
            pending_build: None,
            pending_verifications: VecDeque::new(),
            sequence: 0,
            first_seen: HashMap::new(),
            tx_outbox: Vec::new(),
            tx_flush_at: None,
            reannounce_budget: 0,
            reannounce_refilled: now,
            next_status_poll: now,
            sync: SyncState::default(),
            fetch: FetchState::default(),
            journal,
            tx_journal,
        }
    }

    /// Consensus clock: monotonic milliseconds since the driver started (never 0).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn instant_of(&self, at_ms: u64) -> Instant {
        self.started + Duration::from_millis(at_ms.saturating_sub(1))
    }

    /// Runs until shutdown or a fatal error. A clean shutdown returns between two steps, so a
    /// commit in progress always completes.
    pub async fn run(mut self) -> Result<(), DriverError> {
        info!(
            validator = self.is_validator(),
            address = %self.me,
            height = self.chain.head().height,
            epoch = self.consensus.epoch().0,
            view = self.consensus.view().0,
            "consensus driver started"
        );
        self.metrics
            .epoch
            .set(i64::try_from(self.consensus.epoch().0).unwrap_or(i64::MAX));
        let outputs = self.consensus.start(self.now_ms());
        self.carry_out(outputs).await?;
        self.recover_journal().await?;
        self.recover_transactions().await?;
        self.metrics
            .voted_view
            .set(i64::try_from(self.consensus.safety_state().view.0).unwrap_or(i64::MAX));
        self.update_gauges();
        let mut status_refresh = tokio::time::interval(Duration::from_secs(1));
        status_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                changed = self.channels.shutdown.changed() => {
                    if changed.is_err() || *self.channels.shutdown.borrow() {
                        break;
                    }
                }
                event = self.channels.events.recv() => match event {
                    Some(event) => self.on_network_event(event).await?,
                    None => return Err(DriverError::NetworkStopped),
                },
                Some(reply) = self.sync_replies.recv() => self.on_sync_reply(reply).await?,
                Some(command) = self.channels.commands.recv() => self.on_command(command).await,
                _ = tokio::time::sleep_until(wake.into()) => self.on_wake().await?,
                _ = status_refresh.tick() => self.publish_status(),
            }
        }
        self.flush_txs().await;
        info!(
            height = self.chain.head().height,
            "consensus driver stopped"
        );
        Ok(())
    }

    /// Re-admits the transactions clients submitted here before a restart and gossips them
    /// again; those the chain has overtaken (included, nonce used) leave the journal.
    async fn recover_transactions(&mut self) -> Result<(), DriverError> {
        let tx_bytes_max = self.chain.context().params.tx_bytes_max as usize;
        let txs = self.tx_journal.load(tx_bytes_max).map_err(storage)?;
        if txs.is_empty() {
            return Ok(());
        }
        let journaled = txs.len();
        let mut overtaken = Vec::new();
        for stx in txs {
            let hash = stx.hash();
            let account = self
                .chain
                .committed_account(&stx.tx.sender)
                .map_err(fatal)?;
            match self.mempool.insert(stx.clone(), &account) {
                Ok(Admitted::New(_)) => self.tx_outbox.push(stx),
                Ok(Admitted::Known(_)) => {}
                Err(_) => overtaken.push(hash),
            }
        }
        self.tx_journal.forget(&overtaken).map_err(storage)?;
        info!(
            journaled,
            pending = self.tx_journal.len(),
            "re-admitted transactions submitted here before the restart"
        );
        self.flush_txs().await;
        self.update_gauges();
        Ok(())
    }

    /// Re-executes the blocks journaled before a restart and hands them back to consensus:
    /// a notarized block may exist nowhere else (see `journal.rs`).
    async fn recover_journal(&mut self) -> Result<(), DriverError> {
        let head = self.chain.head().height;
        let finalized = self.consensus.finalized().round();
        let blocks = self.journal.load(head).map_err(storage)?;
        let certificates = self.journal.load_certificates(finalized).map_err(storage)?;
        if blocks.is_empty() && certificates.is_empty() {
            return Ok(());
        }
        info!(
            blocks = blocks.len(),
            certificates = certificates.len(),
            "recovering journaled blocks and certificates above the finalized head"
        );
        // Checked like any peer's: a damaged record cannot make us accept a false one.
        let batch_max = self.consensus_config.limits.message_batch_max.max(1);
        for chunk in certificates.chunks(batch_max) {
            let messages = chunk
                .iter()
                .map(|message| (self.me, message.clone()))
                .collect();
            let outputs = self
                .consensus
                .on_input(self.now_ms(), Input::Messages { messages });
            self.carry_out(outputs).await?;
        }
        self.accept_blocks(blocks).await
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_status_poll;
        if let Some(at) = self.fetch.next_due() {
            wake = wake.min(at);
        }
        if let Some(at) = self.timers.values().min() {
            wake = wake.min(self.instant_of(*at));
        }
        if let Some((_, _, _, at)) = self.pending_build {
            wake = wake.min(self.instant_of(at));
        }
        if let Some(at) = self.tx_flush_at {
            wake = wake.min(at);
        }
        wake
    }

    async fn on_wake(&mut self) -> Result<(), DriverError> {
        let now_ms = self.now_ms();
        let due: Vec<View> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now_ms)
            .map(|(view, _)| *view)
            .collect();
        for view in due {
            self.timers.remove(&view);
            let outputs = self
                .consensus
                .on_input(self.now_ms(), Input::Timeout { view });
            self.carry_out(outputs).await?;
        }
        // Views already left never fire usefully.
        let current = self.consensus.view();
        self.timers.retain(|view, _| *view >= current);
        if let Some((view, height, parent, at)) = self.pending_build {
            if at <= self.now_ms() {
                self.pending_build = None;
                self.build(view, height, parent).await?;
            }
        }
        if self.tx_flush_at.is_some_and(|at| at <= Instant::now()) {
            self.flush_txs().await;
        }
        self.send_due_fetches();
        if self.next_status_poll <= Instant::now() {
            self.next_status_poll = Instant::now() + self.config.status_interval;
            self.poll_status();
            self.metrics
                .views_nullified
                .set(i64::try_from(self.consensus.stats().views_nullified).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- consensus outputs

    /// Carries out outputs in order; outputs caused on the way (a verdict fed back) queue
    /// behind them, which keeps every batch's persist-then-send order.
    async fn carry_out(&mut self, outputs: Vec<Output>) -> Result<(), DriverError> {
        // Our own proposal goes into the journal before anything of the batch is carried out:
        // the safety-state write that precedes its broadcast then makes it durable.
        // Certificates too: after a restart of every node they are what resumes the views.
        for output in &outputs {
            let recorded = match output {
                // A re-proposal names a block journaled (or final) already, under its hash.
                Output::Broadcast(Message::Propose(proposal))
                    if !proposal.block.header.is_reproposal() =>
                {
                    self.journal.record(&proposal.block)
                }
                Output::Certified(
                    message @ (Message::Notarization(_) | Message::Nullification(_)),
                ) => self.journal.record_certificate(message),
                _ => Ok(()),
            };
            recorded.map_err(|err| DriverError::Storage(err.to_string()))?;
        }
        let mut queue: VecDeque<Output> = outputs.into();
        while let Some(output) = queue.pop_front() {
            match output {
                Output::PersistSafetyState(state) => self.persist_safety(&state)?,
                Output::Broadcast(message) | Output::SendTo { message, .. } => {
                    // SendTo goes out on gossip too: every validator receives it and the ones
                    // it is not for drop it as a duplicate. Simpler than mapping validator
                    // addresses to peer ids, and the sets are small.
                    self.send_consensus(message).await;
                }
                Output::ScheduleTimeout { view, at_ms } => {
                    self.timers.insert(view, at_ms);
                }
                Output::BuildPayload {
                    view,
                    height,
                    parent,
                } => {
                    // Only a leader is asked, and leaders are validators.
                    let at = self.build_time(&parent);
                    self.pending_build = Some((view, height, parent, at));
                }
                Output::VerifyPayload {
                    view,
                    height,
                    parent,
                    block_hash,
                    payload,
                } => {
                    let pending = PendingVerification {
                        view,
                        height,
                        parent,
                        block_hash,
                        payload,
                    };
                    if let Some(more) = self.verify(pending)? {
                        queue.extend(more);
                        // A child proposal may have been waiting for this block.
                        if !self.pending_verifications.is_empty() {
                            queue.extend(self.retry_pending_verifications()?);
                        }
                    }
                }
                Output::Finalize { block, certificate } => {
                    self.commit(&block, &certificate).await?;
                    for more in self.retry_pending_verifications()? {
                        queue.push_back(more);
                    }
                }
                Output::EpochEnded { epoch, boundary } => {
                    // The boundary block was committed (synced) by the `Finalize` just before:
                    // the next sets come from its state. A crash before this point restarts
                    // in the next epoch directly (`Chain::epoch_info`).
                    let info = self.chain.epoch_info().map_err(fatal)?;
                    if info.epoch != epoch.next() || info.base.hash != boundary.hash {
                        return Err(DriverError::Storage(format!(
                            "epoch {epoch} ended at block {} but the committed chain is in \
                             epoch {} on base {}",
                            boundary.hash, info.epoch, info.base.hash
                        )));
                    }
                    info!(
                        epoch = info.epoch.0,
                        height = boundary.height.0,
                        validators = info.validators.len(),
                        validator = info.validators.power_of(&self.me) > 0,
                        "entering epoch"
                    );
                    self.metrics
                        .epoch
                        .set(i64::try_from(info.epoch.0).unwrap_or(i64::MAX));
                    // A build asked for in the ended epoch would answer a view of the next.
                    self.pending_build = None;
                    let more = self
                        .consensus
                        .on_input(self.now_ms(), Input::EnterEpoch(info));
                    queue.extend(more);
                }
                Output::RequestSync { from, to } => {
                    debug!(from = from.0, to = to.0, "consensus asks for blocks");
                    self.raise_sync_target(to.0);
                }
                Output::ViewReport(report) => self.on_view_report(&report),
                // Journaled before the batch was carried out (above).
                Output::Certified(_) => {}
                Output::ReportEvidence(evidence) => {
                    self.metrics.evidence_reported.inc();
                    warn!(
                        signer = %evidence.signer(),
                        view = evidence.first.vote.view().0,
                        "validator signed conflicting votes"
                    );
                }
            }
        }
        self.metrics
            .view
            .set(i64::try_from(self.consensus.view().0).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Logs why a view ended without a block (or is still without one at its timeout), with
    /// what the driver knows beyond consensus: a proposal or a build waiting for its parent.
    fn on_view_report(&mut self, report: &ViewReport) {
        if report.ended {
            self.metrics.view_ended(report.outcome.label());
        }
        if matches!(
            report.outcome,
            ViewOutcome::Notarized | ViewOutcome::Finalized
        ) {
            return;
        }
        let waiting_parent = self
            .pending_build
            .filter(|(view, ..)| *view == report.view)
            .map(|(_, _, parent, _)| parent)
            .or_else(|| {
                self.pending_verifications
                    .iter()
                    .find(|pending| pending.view == report.view)
                    .map(|pending| pending.parent)
            });
        debug!(
            view = report.view.0,
            leader = %report.leader,
            ended = report.ended,
            outcome = report.outcome.label(),
            waiting_for_parent = ?waiting_parent,
            "view without a block: {}",
            report.outcome
        );
    }

    fn persist_safety(&mut self, state: &SafetyState) -> Result<(), DriverError> {
        // A follower's machine never votes, so it never asks for this.
        let started = Instant::now();
        let bytes = mesh_ledger::encoding::encode(state);
        let store = Arc::clone(self.chain.store());
        tokio::task::block_in_place(|| store.put_consensus_record(SAFETY_RECORD, &bytes))
            .map_err(|err| DriverError::Storage(err.to_string()))?;
        self.metrics
            .voted_view
            .set(i64::try_from(state.view.0).unwrap_or(i64::MAX));
        self.metrics
            .safety_persist_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Only validators speak in consensus; a full node follows silently (its machine casts no
    /// vote; the certificates it would re-send are the validators' to spread). Whether this
    /// node is one changes at epoch boundaries.
    fn is_validator(&self) -> bool {
        self.consensus.is_voter()
    }

    async fn send_consensus(&mut self, message: Message) {
        if !self.is_validator() {
            return;
        }
        self.sequence = self.sequence.wrapping_add(1);
        let envelope = ConsensusEnvelope::V1 {
            sender: self.me,
            sequence: self.sequence,
            message,
        };
        match self.net.publish(Topic::Consensus, envelope.encode()).await {
            Ok(_) => {}
            Err(NetworkError::NoPeersForTopic { .. }) => {
                debug!("no peers to send a consensus message to");
            }
            Err(err) => warn!(error = %err, "consensus message not sent"),
        }
    }

    /// When the leader may build on `parent`: once the block interval since the parent's
    /// timestamp has passed (at once if the parent is unknown or old).
    fn build_time(&self, parent: &Hash) -> u64 {
        self.now_ms()
            .saturating_add(self.wait_after_parent(parent, self.config.block_interval_ms))
    }

    /// How long from now until `interval_ms` after `parent`'s timestamp (0 if the parent is
    /// unknown or old; never more than `interval_ms`, whatever the parent's clock said).
    fn wait_after_parent(&self, parent: &Hash, interval_ms: u64) -> u64 {
        self.chain.parent_header(parent).map_or(0, |header| {
            header
                .timestamp_ms
                .saturating_add(interval_ms)
                .saturating_sub(wall_ms())
                .min(interval_ms)
        })
    }

    /// A transaction arrived: a leader holding back an empty block builds at the block
    /// interval instead.
    fn wake_waiting_build(&mut self) {
        if let Some((view, height, parent, at)) = self.pending_build {
            let sooner = self.build_time(&parent);
            if sooner < at {
                self.pending_build = Some((view, height, parent, sooner));
            }
        }
    }

    async fn build(&mut self, view: View, height: Height, parent: Hash) -> Result<(), DriverError> {
        if self.consensus.view() != view {
            return Ok(()); // the view ended before the block interval did
        }
        if !self.chain.knows(&parent) {
            // The parent is on its way (sync, or a fetch by hash asked for here); try again
            // shortly while the view lasts.
            self.want_block(parent);
            self.pending_build = Some((view, height, parent, self.now_ms().saturating_add(50)));
            return Ok(());
        }
        let params = &self.chain.context().params;
        let bytes_max = params
            .block_bytes_max
            .min(self.config.gossip_bytes_max.saturating_sub(64 * 1024) as u64);
        let txs_max = params.block_txs_max as usize;
        let candidates = {
            let nonces = self.chain.nonces_at(&parent).map_err(fatal)?;
            self.mempool.select(txs_max, bytes_max, nonces)
        };
        if candidates.is_empty() {
            // An idle chain: at most one empty block per empty-block interval.
            let wait = self.wait_after_parent(&parent, self.config.empty_block_interval_ms);
            if wait > 0 {
                self.pending_build =
                    Some((view, height, parent, self.now_ms().saturating_add(wait)));
                return Ok(());
            }
        }
        let chain = &mut self.chain;
        let mempool = &self.mempool;
        let me = self.me;
        let built = tokio::task::block_in_place(|| {
            chain.build(&parent, me, wall_ms(), candidates, &|hash| {
                mempool.signature_verified(hash)
            })
        });
        let (block_hash, payload, tx_count) = match built {
            Ok(built) => built,
            Err(ChainError::Storage(err)) => return Err(DriverError::Storage(err.to_string())),
            Err(err) => {
                warn!(view = view.0, error = %err, "could not build a block");
                return Ok(());
            }
        };
        self.first_seen.insert(block_hash, Instant::now());
        self.metrics.blocks_proposed.inc();
        debug!(view = view.0, height = height.0, block = %block_hash, txs = tx_count, "built block");
        let outputs = self.consensus.on_input(
            self.now_ms(),
            Input::PayloadBuilt {
                view,
                block_hash,
                payload,
            },
        );
        Box::pin(self.carry_out(outputs)).await
    }

    /// Checks a proposal. `Some(outputs)` once judged; `None` when its parent is unknown and
    /// it waits (bounded) for the parent to be executed or finalized.
    fn verify(&mut self, pending: PendingVerification) -> Result<Option<Vec<Output>>, DriverError> {
        if pending.height.0 <= self.chain.head().height {
            return Ok(Some(Vec::new())); // already final at that height
        }
        if !self.chain.knows(&pending.parent) {
            if self.pending_verifications.len() >= self.config.pending_verifications_max {
                self.pending_verifications.pop_front();
            }
            debug!(view = pending.view.0, parent = %pending.parent, "proposal waits for its parent");
            let parent = pending.parent;
            self.pending_verifications.push_back(pending);
            self.want_block(parent);
            return Ok(None);
        }
        let started = Instant::now();
        let leader = self.consensus_leader(pending.view);
        let drift = self.config.max_clock_drift_ms;
        let chain = &mut self.chain;
        let mempool = &self.mempool;
        let verdict = tokio::task::block_in_place(|| {
            chain.verify(
                &pending.parent,
                pending.height,
                &pending.block_hash,
                &pending.payload,
                leader,
                wall_ms(),
                drift,
                &|hash| mempool.signature_verified(hash),
            )
        });
        self.metrics
            .payload_verify_duration
            .observe(started.elapsed().as_secs_f64());
        let valid = match verdict {
            Ok(()) => true,
            Err(ChainError::Storage(err)) => return Err(DriverError::Storage(err.to_string())),
            Err(err) => {
                warn!(view = pending.view.0, block = %pending.block_hash, error = %err, "proposal refused");
                self.metrics.reject("consensus", "invalid_block");
                false
            }
        };
        if valid {
            self.first_seen
                .entry(pending.block_hash)
                .or_insert_with(Instant::now);
            // Journaled before consensus hears the verdict, so before our vote on it leaves.
            let block = self
                .consensus
                .proposal(pending.view)
                .filter(|proposal| proposal.block.header.hash == pending.block_hash)
                .filter(|proposal| !proposal.block.header.is_reproposal())
                .map(|proposal| proposal.block.clone());
            if let Some(block) = block {
                self.journal
                    .record(&block)
                    .map_err(|err| DriverError::Storage(err.to_string()))?;
            }
        }
        Ok(Some(self.consensus.on_input(
            self.now_ms(),
            Input::PayloadVerified {
                view: pending.view,
                block_hash: pending.block_hash,
                valid,
            },
        )))
    }

    fn consensus_leader(&self, view: View) -> Address {
        self.consensus.leader(view)
    }

    /// Re-checks proposals whose parent has become known.
    fn retry_pending_verifications(&mut self) -> Result<Vec<Output>, DriverError> {
        let head = self.chain.head().height;
        let waiting = std::mem::take(&mut self.pending_verifications);
        let mut outputs = Vec::new();
        for pending in waiting {
            if pending.height.0 <= head || pending.view < self.consensus.view() {
                continue;
            }
            if let Some(more) = self.verify(pending)? {
                outputs.extend(more);
            }
        }
        Ok(outputs)
    }

    async fn commit(
        &mut self,
        block: &ConsensusBlock,
        certificate: &FinalityCertificate,
    ) -> Result<(), DriverError> {
        let started = Instant::now();
        let chain = &mut self.chain;
        let committed = tokio::task::block_in_place(|| chain.commit(block, certificate));
        let committed: Committed = match committed {
            Ok(committed) => committed,
            Err(ChainError::Storage(err)) => {
                error!(height = block.header.height.0, error = %err, "commit failed");
                return Err(DriverError::Storage(err.to_string()));
            }
            Err(err) => {
                error!(height = block.header.height.0, error = %err, "finalized block is invalid");
                return Err(DriverError::FinalizedBlockInvalid(err.to_string()));
            }
        };
        let elapsed = started.elapsed();
        self.metrics
            .block_commit_duration
            .observe(elapsed.as_secs_f64());
        if let Some(seen) = self.first_seen.remove(&committed.hash) {
            self.metrics
                .finality_latency
                .observe(seen.elapsed().as_secs_f64());
        }
        self.first_seen
            .retain(|_, seen| seen.elapsed() < Duration::from_secs(120));
        let height = committed.header.height;
        self.metrics
            .finalized_height
            .set(i64::try_from(height).unwrap_or(i64::MAX));
        self.metrics.blocks_finalized.inc();
        self.metrics
            .txs_finalized
            .inc_by(committed.tx_hashes.len() as u64);
        self.metrics.txs_failed.inc_by(committed.failed_txs as u64);
        let commit_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let txs = committed.tx_hashes.len();
        // An idle chain finalizes an empty block every interval: those stay out of the INFO log.
        if txs == 0 {
            debug!(height, view = block.header.view.0, block = %committed.hash, txs, commit_ms, "block finalized");
        } else {
            info!(height, view = block.header.view.0, block = %committed.hash, txs, commit_ms, "block finalized");
        }
        let chain = &self.chain;
        self.mempool
            .on_block_committed(&committed.tx_hashes, |address| {
                chain.committed_account(address).unwrap_or_default()
            });
        self.tx_journal
            .forget(&committed.tx_hashes)
            .map_err(storage)?;
        self.sync.target = self.sync.target.max(height);
        self.reannounce_pending_txs().await;
        self.journal
            .prune_through(height)
            .and_then(|()| {
                let round = block.header.id().round();
                self.journal.prune_certificates_through(round)
            })
            .map_err(|err| DriverError::Storage(err.to_string()))?;
        self.prune_fetches();
        self.report_dropped();
        self.update_gauges();
        // Nobody listening is fine: subscribers come and go.
        let _ = self.channels.finalized.send(committed.event);
        Ok(())
    }

    // ---------------------------------------------------------------- network

    async fn on_network_event(&mut self, event: NetworkEvent) -> Result<(), DriverError> {
        match event {
            NetworkEvent::Gossip {
                topic: Topic::Consensus,
                message_id,
                source,
                data,
            } => {
                let validation = self.on_consensus_gossip(&data).await?;
                let _ = self
                    .net
                    .report_validation(message_id, source, validation)
                    .await;
            }
            NetworkEvent::Gossip {
                topic: Topic::Transactions,
                message_id,
                source,
                data,
            } => {
                let validation = self.on_tx_gossip(&data);
                let _ = self
                    .net
                    .report_validation(message_id, source, validation)
                    .await;
            }
            NetworkEvent::SyncRequest {
                peer,
                request_id,
                data,
            } => {
                let response = self.serve_sync(peer, &data);
                if let Err(err) = self.net.respond_sync(request_id, response.encode()).await {
                    debug!(%peer, error = %err, "sync response not sent");
                }
            }
            NetworkEvent::PeerConnected(peer) => {
                debug!(%peer, "peer connected");
                self.sync.peers.insert(peer);
                self.update_gauges();
            }
            NetworkEvent::PeerDisconnected(peer) => {
                debug!(%peer, "peer disconnected");
                self.sync.peers.remove(&peer);
                self.update_gauges();
            }
        }
        Ok(())
    }

    async fn on_consensus_gossip(&mut self, data: &[u8]) -> Result<Validation, DriverError> {
        let envelope = match ConsensusEnvelope::decode(data, self.config.gossip_bytes_max) {
            Ok(envelope) => envelope,
            Err(WireError::UnknownKind { tag }) => {
                debug!(tag, "consensus message of an unknown kind ignored");
                self.metrics.reject("consensus", "unknown_kind");
                return Ok(Validation::Ignore);
            }
            Err(err) => {
                debug!(error = %err, "malformed consensus message");
                self.metrics.reject("consensus", "malformed");
                return Ok(Validation::Reject);
            }
        };
        let ConsensusEnvelope::V1 {
            sender, message, ..
        } = envelope;
        let outputs = self.consensus.on_input(
            self.now_ms(),
            Input::Message {
                from: sender,
                message,
            },
        );
        let validation = match self.consensus.last_rejection() {
            None => Validation::Accept,
            Some(rejection) => {
                let (reason, validation) = judge(rejection);
                debug!(%rejection, "consensus message refused");
                self.metrics.reject("consensus", reason);
                validation
            }
        };
        self.carry_out(outputs).await?;
        Ok(validation)
    }

    fn on_tx_gossip(&mut self, data: &[u8]) -> Validation {
        let txs = match TxGossip::decode(data, self.config.gossip_bytes_max) {
            Ok(txs) => txs,
            Err(WireError::UnknownKind { .. }) => {
                self.metrics.reject("tx", "unknown_kind");
                return Validation::Ignore;
            }
            Err(_) => {
                self.metrics.reject("tx", "malformed");
                return Validation::Reject;
            }
        };
        // A staking operation that would fail now is not pooled; forwarding it was no fault
        // (the forwarder checked against its own, maybe older, state).
        let txs: Vec<SignedTransaction> = txs
            .into_iter()
            .filter(|stx| self.staking_refusal(stx).is_none())
            .collect();
        let chain = &self.chain;
        let results = self.mempool.insert_batch(txs, |address| {
            chain.committed_account(address).unwrap_or_default()
        });
        let mut new = 0u64;
        let mut invalid = false;
        for result in &results {
            match result {
                Ok(Admitted::New(_)) => new += 1,
                Ok(Admitted::Known(_)) => {}
                // A signature or format no honest node would forward.
                Err(MempoolError::Invalid(_)) => invalid = true,
                // Races (nonce, balance, full pool) are nobody's fault.
                Err(_) => {}
            }
        }
        self.metrics.txs_submitted.inc_by(new);
        if new > 0 {
            self.wake_waiting_build();
        }
        self.report_dropped();
        self.update_gauges();
        if invalid {
            self.metrics.reject("tx", "invalid_tx");
            Validation::Reject
        } else if new > 0 {
            Validation::Accept
        } else {
            Validation::Ignore
        }
    }

    /// The admission check of a staking operation (`Chain::check_staking`): the refusal, if it
    /// would fail in the next block. A storage error admits it (its receipt decides) and is
    /// logged.
    fn staking_refusal(&self, stx: &SignedTransaction) -> Option<MempoolError> {
        match self.chain.check_staking(&stx.tx) {
            Ok(Some(Err(reason))) => Some(MempoolError::Staking {
                reason,
                fee: stx.tx.fee,
            }),
            Ok(_) => None,
            Err(err) => {
                error!(error = %err, "cannot run the staking admission check");
                None
            }
        }
    }

    async fn on_command(&mut self, command: NodeCommand) {
        match command {
            NodeCommand::SubmitTx { tx: checked, reply } => {
                let account = match self.chain.committed_account(&checked.tx().tx.sender) {
                    Ok(account) => account,
                    Err(err) => {
                        // Dropping the reply tells the caller the node could not answer,
                        // never that the transaction was accepted.
                        error!(error = %err, "cannot read an account for admission");
                        return;
                    }
                };
                let tx = checked.tx().clone();
                let result = match self.staking_refusal(&tx) {
                    Some(refusal) if self.mempool.get(&tx.hash()).is_none() => Err(refusal),
                    _ => self.mempool.insert_checked(*checked, &account),
                };
                if let Ok(Admitted::New(_)) = result {
                    self.metrics.txs_submitted.inc();
                    if let Err(err) = self.tx_journal.record(&tx) {
                        // Still pending in memory; only a restart would lose it.
                        error!(error = %err, "cannot journal a submitted transaction");
                    }
                    self.wake_waiting_build();
                    self.tx_outbox.push(tx);
                    if self.tx_outbox.len() >= TX_BATCH_MAX / 10 {
                        self.flush_txs().await;
                    } else if self.tx_flush_at.is_none() {
                        self.tx_flush_at = Some(Instant::now() + self.config.tx_gossip_delay);
                    }
                }
                self.report_dropped();
                self.update_gauges();
                let _ = reply.send(result.map(|admitted| admitted.hash()));
            }
            NodeCommand::PendingTx { hash, reply } => {
                let found =
                    match self.mempool.get(&hash) {
                        Some(stx) => Some(MempoolLookup::Pending(stx.clone())),
                        None => self.mempool.dropped(&hash).map(|(stx, reason)| {
                            MempoolLookup::Dropped {
                                transaction: stx.clone(),
                                reason,
                            }
                        }),
                    };
                let _ = reply.send(found);
            }
        }
    }

    /// Gossips again the transactions pending for a few blocks, within a byte budget per
    /// second: one publish is not a delivery (gossip drops messages under load), and a
    /// transaction only this node holds would otherwise wait for this node's turn to lead.
    async fn reannounce_pending_txs(&mut self) {
        let rate = self.config.tx_reannounce_bytes_per_sec;
        let elapsed = self.reannounce_refilled.elapsed();
        self.reannounce_refilled = Instant::now();
        let earned = usize::try_from(elapsed.as_millis())
            .unwrap_or(usize::MAX)
            .saturating_mul(rate)
            / 1000;
        // At most one second's worth saved up, so a quiet spell cannot become a burst.
        self.reannounce_budget = self.reannounce_budget.saturating_add(earned).min(rate);
        let budget = self.reannounce_budget;
        let txs = self
            .mempool
            .take_reannouncements(self.config.tx_reannounce_after_blocks, budget);
        if txs.is_empty() {
            return;
        }
        let bytes: usize = txs
            .iter()
            .map(|tx| mesh_ledger::encoding::encode(tx).len())
            .sum();
        self.reannounce_budget = self.reannounce_budget.saturating_sub(bytes);
        self.metrics.txs_reannounced.inc_by(txs.len() as u64);
        debug!(
            count = txs.len(),
            bytes, "re-announcing pending transactions"
        );
        for chunk in txs.chunks(TX_BATCH_MAX / 10) {
            let batch = TxGossip::V1 {
                txs: chunk.to_vec(),
            };
            match self.net.publish(Topic::Transactions, batch.encode()).await {
                Ok(_) | Err(NetworkError::NoPeersForTopic { .. }) => {}
                Err(err) => debug!(error = %err, "pending transactions not re-announced"),
            }
        }
    }

    async fn flush_txs(&mut self) {
        self.tx_flush_at = None;
        if self.tx_outbox.is_empty() {
            return;
        }
        let txs = std::mem::take(&mut self.tx_outbox);
        let count = txs.len();
        match self
            .net
            .publish(Topic::Transactions, TxGossip::V1 { txs }.encode())
            .await
        {
            Ok(_) | Err(NetworkError::NoPeersForTopic { .. }) => {}
            Err(err) => warn!(error = %err, count, "transactions not gossiped"),
        }
    }

    // ---------------------------------------------------------------- status

    /// Tells subscribers about transactions the mempool let go without including them.
    fn report_dropped(&mut self) {
        let dropped = self.mempool.take_dropped();
        if let Err(err) = self.tx_journal.forget(dropped.iter().map(|(hash, _)| hash)) {
            // Harmless: a restart re-admits it, and the mempool refuses it again.
            warn!(error = %err, "cannot remove dropped transactions from the journal");
        }
        for (hash, reason) in dropped {
            debug!(tx = %hash, reason, "transaction dropped from the mempool");
            // Nobody listening is fine.
            let _ = self.channels.dropped.send(Arc::new(DroppedTx {
                hash,
                detail: reason.to_owned(),
            }));
        }
    }

    fn update_gauges(&mut self) {
        let head = self.chain.head().height;
        // Set here too, not only on commit: a restarted node reports its real height at once.
        self.metrics
            .finalized_height
            .set(i64::try_from(head).unwrap_or(i64::MAX));
        let lag = self.sync.target.saturating_sub(head);
        self.metrics
            .sync_lag
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        self.metrics
            .mempool_txs
            .set(i64::try_from(self.mempool.len()).unwrap_or(i64::MAX));
        self.metrics
            .mempool_bytes
            .set(i64::try_from(self.mempool.bytes()).unwrap_or(i64::MAX));
        self.metrics
            .peers
            .set(i64::try_from(self.sync.peers.len()).unwrap_or(i64::MAX));
        self.publish_status();
    }

    fn publish_status(&self) {
        let head = self.chain.head();
        let status = NodeStatus {
            chain_id: self.chain.context().chain_id.clone(),
            peer_id: self.net.local_peer_id().to_string(),
            validator: self.is_validator().then_some(self.me),
            finalized_height: head.height,
            finalized_hash: self.chain.head_hash(),
            finalized_time_ms: head.timestamp_ms,
            epoch: self.consensus.epoch().0,
            view: self.consensus.view().0,
            sync_target: self.sync.target.max(head.height),
            syncing: self.sync.target > head.height,
            peers: self.sync.peers.len(),
            mempool_txs: self.mempool.len(),
            mempool_bytes: self.mempool.bytes(),
        };
        self.channels.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }
}

/// How a consensus refusal maps onto the gossip verdict and the metric's reason.
fn judge(rejection: &Rejection) -> (&'static str, Validation) {
    match rejection {
        Rejection::NotValidator { .. } => ("not_validator", Validation::Reject),
        Rejection::InvalidSignature { .. } => ("invalid_signature", Validation::Reject),
        Rejection::PayloadTooLarge { .. } => ("too_large", Validation::Reject),
        Rejection::Certificate(_) => ("invalid_certificate", Validation::Reject),
        Rejection::InvalidSync { .. } => ("invalid_sync", Validation::Reject),
        Rejection::FutureBufferFull { .. } => ("future_buffer_full", Validation::Ignore),
        Rejection::BatchTooLarge { .. } => ("batch_too_large", Validation::Ignore),
        Rejection::InvalidProposal { .. } => ("invalid_proposal", Validation::Reject),
        // An honest laggard (or a node ahead of us) sends these: never penalised.
        Rejection::WrongEpoch { .. } => ("wrong_epoch", Validation::Ignore),
    }
}

fn fatal(err: ChainError) -> DriverError {
    DriverError::Storage(err.to_string())
}

fn storage(err: mesh_ledger::storage::StoreError) -> DriverError {
    DriverError::Storage(err.to_string())
}
