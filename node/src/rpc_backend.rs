//! The node behind the JSON-RPC API: [`mesh_rpc::Backend`] over a [`NodeHandle`].
//!
//! Reads go to RocksDB on tokio's blocking pool (`spawn_blocking`), never on the async workers,
//! through a [`BoundedPool`]: at most `storage_reads_max` at once and `storage_queue_max`
//! waiting, so a subscription storm cannot grow the blocking pool to hundreds of threads.
//! Submissions are checked off the consensus path first — size against the chain's limit,
//! chain id, fee floor, signature — on a second bounded pool (`admission_threads`,
//! `admission_queue_max`), so a flood of bad signatures costs RPC threads and never the
//! driver's loop; only transactions that pass reach the driver's command mailbox. Every
//! failure becomes an [`ApiError`] — storage failures are `internal`, a stopped node is
//! `unavailable`, a full queue is `busy` — and nothing here panics on what a client sends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use mesh_ledger::state::StateError;
use mesh_ledger::storage::{Store, StoreError};
use mesh_ledger::{
    Account, Address, Block, BlockHeader, Params, Receipt, SignedTransaction, TxHash, ValidatorSet,
};
use mesh_rpc::types::{
    CandidateInfo, EpochStatus, MempoolStats, NodeRole, NodeStatus, PeerInfo, TxStatus,
    UnbondingInfo,
};
use mesh_rpc::{
    ApiError, Backend, BlockRef, DroppedTx, EpochValidators, FinalityRecord, FinalizedEvent,
    KeyValue, StateRead, TxLookup,
};
use tokio::sync::{broadcast, Semaphore};

use crate::driver::MempoolLookup;
use crate::mempool::{CheckedTx, MempoolError};
use crate::service::{NodeError, NodeHandle};
use crate::wire;

/// The `version` `mesh_status` reports.
pub const NODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Blocking work with a bound on what runs and on what waits: at most `running` closures on
/// tokio's blocking pool at once, at most `queue_max` callers waiting for a turn; a caller
/// past that is answered `busy` at once.
#[derive(Debug)]
pub struct BoundedPool {
    what: &'static str,
    running: Arc<Semaphore>,
    waiting: AtomicU32,
    queue_max: u32,
}

/// One waiting caller, counted until it runs or gives up.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BoundedPool {
    /// A pool named `what` in its `busy` errors.
    pub fn new(what: &'static str, running: u32, queue_max: u32) -> BoundedPool {
        BoundedPool {
            what,
            running: Arc::new(Semaphore::new(running.max(1) as usize)),
            waiting: AtomicU32::new(0),
            queue_max,
        }
    }

    /// Runs `work` on the blocking pool when a slot is free.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let queue_max = self.queue_max;
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < queue_max).then_some(waiting + 1)
            });
        if queued.is_err() {
            return Err(ApiError::Busy {
                what: self.what.into(),
                limit: u64::from(queue_max),
            });
        }
        let waiting = Waiting(&self.waiting);
        let permit = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable {
                detail: "the node is shutting down".into(),
            })?;
        drop(waiting);
        // The permit moves into the closure: a caller that gives up does not free a slot
        // while its work still runs.
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|err| ApiError::internal(format!("{} task failed: {err}", self.what)))
    }
}

/// The node as the API sees it.
#[derive(Debug, Clone)]
pub struct NodeBackend {
    handle: NodeHandle,
    version: String,
    mempool_max_txs: u64,
    mempool_max_bytes: u64,
    chain_id: Arc<str>,
    params: Arc<Params>,
    admission: Arc<BoundedPool>,
    storage: Arc<BoundedPool>,
}

/// The bounds of a [`NodeBackend`]'s work, from `[rpc]`.
#[derive(Debug, Clone, Copy)]
pub struct BackendLimits {
    pub admission_threads: u32,
    pub admission_queue_max: u32,
    pub storage_reads_max: u32,
    pub storage_queue_max: u32,
}

impl BackendLimits {
    /// The bounds `config` sets.
    pub fn of(config: &mesh_rpc::RpcServerConfig) -> BackendLimits {
        BackendLimits {
            admission_threads: config.admission_threads,
            admission_queue_max: config.admission_queue_max,
            storage_reads_max: config.storage_reads_max,
            storage_queue_max: config.storage_queue_max,
        }
    }
}

impl NodeBackend {
    /// A backend over a running node. `mempool_max_*` are the mempool's capacities, reported
    /// by `mesh_mempool`; `chain_id` and `params` are the chain's, checked at admission (the
    /// validator sets come from the committed state, by height).
    pub fn new(
        handle: NodeHandle,
        mempool_max_txs: usize,
        mempool_max_bytes: usize,
        chain: (&str, &Params),
        limits: BackendLimits,
    ) -> NodeBackend {
        NodeBackend {
            handle,
            version: NODE_VERSION.to_owned(),
            mempool_max_txs: u64::try_from(mempool_max_txs).unwrap_or(u64::MAX),
            mempool_max_bytes: u64::try_from(mempool_max_bytes).unwrap_or(u64::MAX),
            chain_id: Arc::from(chain.0),
            params: Arc::new(chain.1.clone()),
            admission: Arc::new(BoundedPool::new(
                "admission_queue",
                limits.admission_threads,
                limits.admission_queue_max,
            )),
            storage: Arc::new(BoundedPool::new(
                "storage_queue",
                limits.storage_reads_max,
                limits.storage_queue_max,
            )),
        }
    }

    /// Runs a storage read on the bounded blocking pool.
    async fn read<T, F>(&self, read: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(self.handle.store());
        self.storage
            .run(move || read(&store))
            .await?
            .map_err(store_error)
    }

    /// The checks that need no state — size against the chain's limit, chain id, fee floor,
    /// key and value sizes — then the signature, on the admission pool. The transaction and
    /// its hash when it passes.
    async fn admit_stateless(&self, tx: SignedTransaction) -> Result<CheckedTx, ApiError> {
        let chain_id = Arc::clone(&self.chain_id);
        let params = Arc::clone(&self.params);
        self.admission
            .run(move || CheckedTx::check(tx, &chain_id, &params))
            .await?
            .map_err(ApiError::from)
    }
}

/// A storage error as the API reports it.
fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::State(StateError::HeightNotRetained {
            height,
            oldest,
            newest,
        }) => ApiError::HeightNotRetained {
            height,
            oldest,
            newest,
        },
        other => ApiError::internal(other),
    }
}

/// The node stopped or is stopping.
fn node_error(err: NodeError) -> ApiError {
    match err {
        NodeError::Stopped => ApiError::Unavailable {
            detail: "the node is shutting down".into(),
        },
        other => ApiError::internal(other),
    }
}

/// `mesh_getEpoch` from the newest finalized state: the epoch the next height belongs to, as
/// consensus sees it (`Chain::epoch_info`).
fn epoch_status(store: &Store, params: &Params) -> Result<EpochStatus, StoreError> {
    use mesh_ledger::staking;
    let schedule = params.schedule();
    let head = store.latest_height()?.ok_or(StoreError::NoGenesis)?;
    let epoch = schedule.epoch_of(head.saturating_add(1));
    let set = |epoch: u64| -> Result<Vec<mesh_ledger::Validator>, StoreError> {
        staking::epoch_set(store, epoch)?
            .map(|set| set.validators().to_vec())
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the state at height {head} holds no validator set for epoch {epoch}"
                ))
            })
    };
    let table = staking::stake_table(store)?;
    let cut = staking::cut(&table, params);
    let projected_validators = if cut.is_empty() {
        Vec::new()
    } else {
        // The cut comes in cut order; a set lists its members by address.
        ValidatorSet::new(cut)
            .map_err(|err| StoreError::Corrupt(format!("the stake table's cut: {err}")))?
            .validators()
            .to_vec()
    };
    let mut unbonding = Vec::new();
    for release_epoch in [epoch, epoch.saturating_add(1)] {
        for (owner, amount) in staking::unbonding_of(store, release_epoch)?.entries {
            unbonding.push(UnbondingInfo {
                release_epoch,
                owner,
                amount,
            });
        }
    }
    Ok(EpochStatus {
        epoch,
        first_height: schedule.first(epoch),
        last_height: schedule.last(epoch),
        finalized_height: head,
        validators: set(epoch)?,
        next_validators: set(epoch.saturating_add(1))?,
        projected_validators,
        candidates: table
            .candidates()
            .iter()
            .map(|c| CandidateInfo {
                key: c.key,
                bonded: c.bonded,
                registered_height: c.registered_height,
            })
            .collect(),
        unbonding,
    })
}

/// A mempool rejection as the API reports it (`docs/rpc.md`, "Errors").
pub fn mempool_error(err: MempoolError) -> ApiError {
    match err {
        MempoolError::Invalid(err) => ApiError::from(err),
        MempoolError::NonceTooLow { expected, got } => ApiError::NonceTooLow {
            expected_nonce: expected,
            got,
        },
        MempoolError::NonceTooHigh { expected, got, max } => ApiError::NonceTooHigh {
            expected_nonce: expected,
            got,
            max_nonce: max,
        },
        MempoolError::InsufficientBalance { balance, fee } => {
            ApiError::InsufficientBalance { balance, fee }
        }
        MempoolError::NonceAlreadyPending { nonce, pending_fee } => {
            ApiError::NonceAlreadyPending { nonce, pending_fee }
        }
        MempoolError::Full { fee, lowest } => ApiError::MempoolFull {
            fee,
            lowest_fee: lowest,
        },
        MempoolError::Staking { reason, fee } => mesh_rpc::error::staking_refusal(reason, fee),
    }
}

fn saturating_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

impl Backend for NodeBackend {
    async fn status(&self) -> Result<NodeStatus, ApiError> {
        let status = self.handle.status();
        Ok(NodeStatus {
            chain_id: status.chain_id,
            node_id: status.peer_id,
            version: self.version.clone(),
            role: if status.validator.is_some() {
                NodeRole::Validator
            } else {
                NodeRole::FullNode
            },
            validator_address: status.validator,
            finalized_height: status.finalized_height,
            finalized_hash: status.finalized_hash,
            finalized_time_ms: status.finalized_time_ms,
            retained_from_height: 0,
            syncing: status.syncing,
            peer_count: u32::try_from(status.peers).unwrap_or(u32::MAX),
        })
    }

    async fn submit(&self, tx: SignedTransaction) -> Result<TxHash, ApiError> {
        // Refused here, a bad transaction never reaches the driver's loop.
        let checked = self.admit_stateless(tx).await?;
        let hash = checked.hash();
        // Already final: the same bytes again are answered with the same hash, and never
        // reach the nonce check (which would call them `nonce_too_low`).
        if self
            .read(move |store| store.tx_location(&hash))
            .await?
            .is_some()
        {
            return Ok(hash);
        }
        match self
            .handle
            .submit_checked(checked)
            .await
            .map_err(node_error)?
        {
            Ok(admitted) => Ok(admitted),
            Err(err @ MempoolError::NonceTooLow { .. }) => {
                // It may have become final between the look-up and the admission.
                if self
                    .read(move |store| store.tx_location(&hash))
                    .await?
                    .is_some()
                {
                    Ok(hash)
                } else {
                    Err(mempool_error(err))
                }
            }
            Err(err) => Err(mempool_error(err)),
        }
    }

    async fn transaction(&self, hash: TxHash) -> Result<Option<TxLookup>, ApiError> {
        let final_lookup = move |store: &Store| -> Result<Option<TxLookup>, StoreError> {
            let Some(location) = store.tx_location(&hash)? else {
                return Ok(None);
            };
            let block = store.block(location.height)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "transaction {hash} is indexed at height {} but the block is missing",
                    location.height
                ))
            })?;
            let index = usize::try_from(location.index).unwrap_or(usize::MAX);
            let transaction = block.txs.get(index).cloned().ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "transaction {hash} is indexed at {}:{} past the block's end",
                    location.height, location.index
                ))
            })?;
            Ok(Some(TxLookup {
                transaction,
                status: TxStatus::Final {
                    height: location.height,
                    index: location.index,
                },
            }))
        };
        if let Some(found) = self.read(final_lookup).await? {
            return Ok(Some(found));
        }
        match self.handle.pending_tx(hash).await.map_err(node_error)? {
            Some(MempoolLookup::Pending(transaction)) => {
                return Ok(Some(TxLookup {
                    transaction,
                    status: TxStatus::Pending,
                }));
            }
            Some(MempoolLookup::Dropped {
                transaction,
                reason,
            }) => {
                // It may also have become final meanwhile (another node included it).
                if let Some(found) = self.read(final_lookup).await? {
                    return Ok(Some(found));
                }
                return Ok(Some(TxLookup {
                    transaction,
                    status: TxStatus::Dropped {
                        detail: reason.to_string(),
                    },
                }));
            }
            None => {}
        }
        // It may have been committed (and left the mempool) between the two look-ups.
        self.read(final_lookup).await
    }

    async fn receipt(&self, hash: TxHash) -> Result<Option<Receipt>, ApiError> {
        self.read(move |store| store.receipt(&hash)).await
    }

    async fn block(&self, at: BlockRef) -> Result<Option<Block>, ApiError> {
        self.read(move |store| {
            let height = match at {
                BlockRef::Latest => store.latest_height()?,
                BlockRef::Height(height) => Some(height),
                BlockRef::Hash(hash) => store.height_of(&hash)?,
            };
            match height {
                Some(height) => store.block(height),
                None => Ok(None),
            }
        })
        .await
    }

    async fn headers(&self, from: u64, to: u64) -> Result<Vec<BlockHeader>, ApiError> {
        self.read(move |store| {
            let mut headers = Vec::new();
            let mut height = from;
            while height <= to {
                match store.header(height)? {
                    Some(header) => headers.push(header),
                    None => break,
                }
                height = match height.checked_add(1) {
                    Some(next) => next,
                    None => break,
                };
            }
            Ok(headers)
        })
        .await
    }

    async fn finality(&self, height: u64) -> Result<Option<FinalityRecord>, ApiError> {
        let bytes = self.read(move |store| store.certificate(height)).await?;
        let Some(bytes) = bytes.filter(|bytes| !bytes.is_empty()) else {
            return Ok(None);
        };
        let record = wire::FinalityRecord::decode(&bytes).map_err(|err| {
            ApiError::internal(format!("stored finality record of height {height}: {err}"))
        })?;
        Ok(Some(FinalityRecord {
            header: *record.header(),
            certificate: record.certificate().clone(),
        }))
    }

    async fn account(
        &self,
        address: Address,
        height: u64,
        prove: bool,
    ) -> Result<StateRead<Account>, ApiError> {
        let (value, proof) = self
            .read(move |store| store.account_at(&address, height))
            .await?;
        Ok(StateRead {
            value,
            proof: prove.then_some(proof),
        })
    }

    async fn value(
        &self,
        owner: Address,
        key: Vec<u8>,
        height: u64,
        prove: bool,
    ) -> Result<StateRead<Vec<u8>>, ApiError> {
        let (value, proof) = self
            .read(move |store| store.value_at(&owner, &key, height))
            .await?;
        Ok(StateRead {
            value,
            proof: prove.then_some(proof),
        })
    }

    async fn keys(
        &self,
        owner: Address,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, ApiError> {
        self.read(move |store| store.keys(&owner, &prefix, start_after.as_deref(), limit))
            .await
    }

    async fn epoch_status(&self) -> Result<EpochStatus, ApiError> {
        let params = Arc::clone(&self.params);
        self.read(move |store| epoch_status(store, &params)).await
    }

    fn epoch_blocks(&self) -> u64 {
        self.params.epoch_blocks
    }

    async fn validators(&self, height: u64) -> Result<EpochValidators, ApiError> {
        let schedule = self.params.schedule();
        let epoch = schedule.epoch_of(height);
        // Sets are written two epochs ahead, so the state before the height holds its own.
        let set = self
            .read(move |store| store.epoch_set_at(epoch, height.saturating_sub(1)))
            .await?
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "the state before height {height} holds no validator set for epoch {epoch}"
                ))
            })?;
        Ok(EpochValidators {
            epoch,
            first_height: schedule.first(epoch),
            last_height: schedule.last(epoch),
            set,
        })
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>, ApiError> {
        let peers = self
            .handle
            .network()
            .peers()
            .await
            .map_err(|err| ApiError::Unavailable {
                detail: format!("network: {err}"),
            })?;
        Ok(peers
            .into_iter()
            .map(|peer| PeerInfo {
                peer_id: peer.peer_id.to_string(),
                address: peer.address.to_string(),
                inbound: peer.inbound,
            })
            .collect())
    }

    async fn mempool(&self) -> Result<MempoolStats, ApiError> {
        let status = self.handle.status();
        Ok(MempoolStats {
            count: saturating_u64(status.mempool_txs),
            bytes: saturating_u64(status.mempool_bytes),
            max_count: self.mempool_max_txs,
            max_bytes: self.mempool_max_bytes,
        })
    }

    fn subscribe_finalized(&self) -> broadcast::Receiver<Arc<FinalizedEvent>> {
        self.handle.subscribe_finalized()
    }

    fn subscribe_dropped(&self) -> Option<broadcast::Receiver<Arc<DroppedTx>>> {
        Some(self.handle.subscribe_dropped())
    }
}
