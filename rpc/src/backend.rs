//! The boundary between the API and the node: what the node implements so the server can
//! answer every method.
//!
//! The backend answers primitive, typed questions (a block by height, an account at a height
//! with or without proof, the finality record of a height); the server composes them (proof
//! bundles with header and certificate, replay then live streaming, waiting for a receipt) and
//! owns every JSON shape, every limit and the error table. The node never sees JSON.

use std::future::Future;
use std::sync::Arc;

use mesh_ledger::execution::ExecutedBlock;
use mesh_ledger::state::{StateKey, StateProof};
use mesh_ledger::{
    Account, Address, Block, BlockHeader, Hash, Receipt, SignedTransaction, TxHash, ValidatorSet,
};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::types::{EpochStatus, FinalityRecord, MempoolStats, NodeStatus, PeerInfo, TxStatus};

/// One key-value entry: `(key, value)`.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The validator set in force at a height, with the epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochValidators {
    /// The epoch of the height.
    pub epoch: u64,
    /// The epoch's first height.
    pub first_height: u64,
    /// The epoch's last height (its boundary block).
    pub last_height: u64,
    /// `set(epoch)`.
    pub set: ValidatorSet,
}

/// Which block a read names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockRef {
    /// The newest finalized block.
    Latest,
    /// The finalized block at a height.
    Height(u64),
    /// The finalized block with this hash.
    Hash(Hash),
}

/// A transaction the node knows: pending in its mempool or in a finalized block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxLookup {
    /// The transaction.
    pub transaction: SignedTransaction,
    /// [`TxStatus::Pending`] or [`TxStatus::Final`].
    pub status: TxStatus,
}

/// A state read at a height: the entry (`None`: absent) and, when asked for, its proof against
/// the state root of that height's header.
#[derive(Debug, Clone)]
pub struct StateRead<T> {
    /// The entry.
    pub value: Option<T>,
    /// Inclusion or absence proof, when the read asked for one.
    pub proof: Option<StateProof>,
}

/// What the server learns about each newly finalized block, broadcast by the node in height
/// order, each height once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizedEvent {
    /// The block's header.
    pub header: BlockHeader,
    /// Its receipts, in block order.
    pub receipts: Vec<Receipt>,
    /// Accounts the block changed, with their values after it (`None`: deleted), in address
    /// order.
    pub accounts: Vec<(Address, Option<Account>)>,
}

impl FinalizedEvent {
    /// The event of an executed block: what the node has in hand when it commits one.
    pub fn from_executed(executed: &ExecutedBlock) -> FinalizedEvent {
        let accounts = executed
            .changes
            .iter()
            .filter_map(|(key, value)| match StateKey::decode(key) {
                Some(StateKey::Account(address)) => {
                    let account = value
                        .as_deref()
                        .and_then(|bytes| Account::decode(bytes).ok());
                    Some((address, account))
                }
                _ => None,
            })
            .collect();
        FinalizedEvent {
            header: executed.block.header.clone(),
            receipts: executed.receipts.clone(),
            accounts,
        }
    }
}

/// A transaction that left the mempool without being finalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTx {
    /// Its hash.
    pub hash: TxHash,
    /// Why: replaced by a higher fee, evicted when the pool was full, invalidated by a block.
    pub detail: String,
}

/// What the node implements. Every method that may touch storage or the node's event loop is
/// async (`impl Future + Send`), so the node decides how to serve it (a RocksDB read inline, a
/// `spawn_blocking`, or a message to its mempool task) without the boundary changing; the
/// server is generic over the backend, so nothing is boxed. Streams are plain
/// `tokio::sync::broadcast` receivers: cheap to subscribe, bounded, and a slow reader sees
/// `Lagged` rather than blocking the node.
///
/// Errors are [`ApiError`]s: the node maps its own (mempool rejections, `HeightNotRetained`,
/// storage failures → `Internal`) onto the API's one error table.
pub trait Backend: Send + Sync + 'static {
    /// Status of the node (cheap: called for every `latest` resolution and `/readyz`).
    fn status(&self) -> impl Future<Output = Result<NodeStatus, ApiError>> + Send;

    /// Submits a signed transaction to the mempool (stateless, signature and stateful checks)
    /// and gossips it when new. Returns its hash once admitted.
    ///
    /// Must be idempotent: the same bytes again return the same hash and never a second
    /// execution — also when the transaction is already final (check the transaction index
    /// before the nonce, so a resubmission is not reported as `nonce_too_low`).
    fn submit(
        &self,
        tx: SignedTransaction,
    ) -> impl Future<Output = Result<TxHash, ApiError>> + Send;

    /// A transaction, pending or final; `None` when unknown.
    fn transaction(
        &self,
        hash: TxHash,
    ) -> impl Future<Output = Result<Option<TxLookup>, ApiError>> + Send;

    /// The receipt of a final transaction; `None` otherwise.
    fn receipt(
        &self,
        hash: TxHash,
    ) -> impl Future<Output = Result<Option<Receipt>, ApiError>> + Send;

    /// A finalized block; `None` when no finalized block matches.
    fn block(&self, at: BlockRef) -> impl Future<Output = Result<Option<Block>, ApiError>> + Send;

    /// Finalized headers `from..=to`, ascending. The server never asks for more than
    /// [`crate::RpcServerConfig::headers_per_read`] at once.
    fn headers(
        &self,
        from: u64,
        to: u64,
    ) -> impl Future<Output = Result<Vec<BlockHeader>, ApiError>> + Send;

    /// The finality record stored with the block at `height`; `None` for genesis or an
    /// unknown height.
    fn finality(
        &self,
        height: u64,
    ) -> impl Future<Output = Result<Option<FinalityRecord>, ApiError>> + Send;

    /// An account at a finalized `height`, with its proof when `prove`.
    /// `HeightNotRetained` when the height is outside what the node keeps.
    fn account(
        &self,
        address: Address,
        height: u64,
        prove: bool,
    ) -> impl Future<Output = Result<StateRead<Account>, ApiError>> + Send;

    /// A key-value entry at a finalized `height`, with its proof when `prove`.
    fn value(
        &self,
        owner: Address,
        key: Vec<u8>,
        height: u64,
        prove: bool,
    ) -> impl Future<Output = Result<StateRead<Vec<u8>>, ApiError>> + Send;

    /// Up to `limit` entries of `owner` whose key starts with `prefix`, in key order, strictly
    /// after `start_after` when given, from the latest finalized state.
    fn keys(
        &self,
        owner: Address,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<KeyValue>, ApiError>> + Send;

    /// The epoch in progress, its sets and the pending staking changes, as of the newest
    /// finalized state.
    fn epoch_status(&self) -> impl Future<Output = Result<EpochStatus, ApiError>> + Send;

    /// The chain's `epoch_blocks` (genesis parameter): heights per epoch.
    fn epoch_blocks(&self) -> u64;

    /// The validator set in force at a finalized `height`, with its epoch.
    fn validators(
        &self,
        height: u64,
    ) -> impl Future<Output = Result<EpochValidators, ApiError>> + Send;

    /// Connected peers.
    fn peers(&self) -> impl Future<Output = Result<Vec<PeerInfo>, ApiError>> + Send;

    /// Mempool occupancy.
    fn mempool(&self) -> impl Future<Output = Result<MempoolStats, ApiError>> + Send;

    /// A new receiver of finalized blocks: every block finalized after this call, in height
    /// order, each once ([`FinalizedEvent::from_executed`] builds one). The channel's capacity
    /// is the node's choice (a few hundred blocks); a reader that falls further behind sees
    /// `Lagged`, and the server then tells its subscriber and closes the subscription.
    fn subscribe_finalized(&self) -> broadcast::Receiver<Arc<FinalizedEvent>>;

    /// A new receiver of transactions dropped from the mempool, if the node reports them;
    /// without it, a subscriber of a dropped transaction waits until it unsubscribes.
    fn subscribe_dropped(&self) -> Option<broadcast::Receiver<Arc<DroppedTx>>> {
        None
    }
}
