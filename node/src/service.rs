//! Starting and stopping a whole node: database, chain, consensus, mempool, network, metrics
//! and the driver that joins them. `meshd run` and the multi-node tests both go through
//! [`start`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_consensus::{Consensus, Timeouts};
use mesh_ledger::storage::{Store, StoreError};
use mesh_ledger::{Genesis, Params, SecretKey, SignedTransaction, TxHash};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::info;

use crate::chain::{Chain, ChainError};
use crate::config::{Config, ConfigError};
use crate::driver::{
    self, Driver, DriverChannels, DriverConfig, DriverError, MempoolLookup, NodeCommand, NodeStatus,
};
use crate::home::Home;
use crate::keys::{self, KeyError};
use crate::mempool::{CheckedTx, Mempool, MempoolError};
use crate::metrics::{self, Metrics};
use crate::network::{Keypair, Multiaddr, Network, NetworkConfig, NetworkError, NetworkHandle};
use crate::rpc_backend::{BackendLimits, NodeBackend};
use mesh_rpc::{DroppedTx, FinalizedEvent, RpcServerHandle, StartError};

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {reason}")]
    Genesis { path: String, reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Chain(String),
    #[error("{field}: {reason}")]
    InvalidAddress { field: &'static str, reason: String },
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The JSON-RPC server did not start (bind failure or invalid `[rpc]` setting).
    #[error("cannot start the JSON-RPC server: {0}")]
    Rpc(#[from] StartError),
    #[error("the node stopped")]
    Stopped,
}

impl From<ChainError> for NodeError {
    fn from(err: ChainError) -> Self {
        NodeError::Chain(err.to_string())
    }
}

/// Everything a node is started from.
#[derive(Debug)]
pub struct NodeOptions {
    pub home: Home,
    pub config: Config,
    pub genesis: Genesis,
    /// The validator key; a node whose key is not in the genesis set (or has none) runs as a
    /// full node.
    pub validator_key: Option<SecretKey>,
    /// Seed of the libp2p identity.
    pub node_key_seed: [u8; 32],
    /// Knobs the config file does not expose (tests shorten the status poll, for instance).
    pub driver: DriverConfig,
    /// Network settings beyond the config file (tests shorten heartbeats).
    pub tune_network: Option<fn(&mut NetworkConfig)>,
    /// Serve the testnet-only admin endpoints (`POST /admin/partition`, `/admin/heal`) on
    /// the metrics listener. Off unless `meshd run --admin`.
    pub admin: bool,
}

impl NodeOptions {
    /// Reads config, genesis and keys from a home written by `meshd init`.
    pub fn from_home(home: Home) -> Result<NodeOptions, NodeError> {
        let config = Config::load(&home.config())?;
        let genesis = Genesis::load(&home.genesis()).map_err(|err| NodeError::Genesis {
            path: home.genesis().display().to_string(),
            reason: err.to_string(),
        })?;
        let validator_key = if home.validator_key().exists() {
            Some(keys::read_key(&home.validator_key())?)
        } else {
            None
        };
        let node_key_seed = keys::read_node_key(&home.node_key())?;
        let driver = driver_config(&config);
        Ok(NodeOptions {
            home,
            config,
            genesis,
            validator_key,
            node_key_seed,
            driver,
            tune_network: None,
            admin: false,
        })
    }
}

/// The driver settings that follow from a config file.
pub fn driver_config(config: &Config) -> DriverConfig {
    DriverConfig {
        block_interval_ms: config.consensus.block_interval_ms,
        empty_block_interval_ms: config.consensus.empty_block_interval(),
        max_clock_drift_ms: config.consensus.max_clock_drift_ms,
        ..DriverConfig::default()
    }
}

/// A cloneable way in: submit transactions, read status, follow finalized blocks, read the
/// database.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<NodeCommand>,
    status: watch::Receiver<NodeStatus>,
    finalized: broadcast::Sender<Arc<FinalizedEvent>>,
    dropped: broadcast::Sender<Arc<DroppedTx>>,
    store: Arc<Store>,
    network: NetworkHandle,
    chain_id: Arc<str>,
    params: Arc<Params>,
}

impl NodeHandle {
    /// Checks a transaction (signature included) on the caller's task, then admits it to the
    /// mempool and gossips it; its hash on success. A server with many clients checks on a
    /// pool of its own and calls [`NodeHandle::submit_checked`].
    pub async fn submit(
        &self,
        tx: SignedTransaction,
    ) -> Result<Result<TxHash, MempoolError>, NodeError> {
        match CheckedTx::check(tx, &self.chain_id, &self.params) {
            Ok(checked) => self.submit_checked(checked).await,
            Err(err) => Ok(Err(MempoolError::Invalid(err))),
        }
    }

    /// Admits a transaction checked elsewhere to the mempool (and gossips it): the driver
    /// runs the stateful checks only.
    pub async fn submit_checked(
        &self,
        tx: CheckedTx,
    ) -> Result<Result<TxHash, MempoolError>, NodeError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(NodeCommand::SubmitTx {
                tx: Box::new(tx),
                reply,
            })
            .await
            .map_err(|_| NodeError::Stopped)?;
        response.await.map_err(|_| NodeError::Stopped)
    }

    /// The transaction, if it is waiting in the mempool or left it without being included.
    pub async fn pending_tx(&self, hash: TxHash) -> Result<Option<MempoolLookup>, NodeError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(NodeCommand::PendingTx { hash, reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        response.await.map_err(|_| NodeError::Stopped)
    }

    /// The latest status snapshot.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// Transactions dropped from the mempool without being included, from now on.
    pub fn subscribe_dropped(&self) -> broadcast::Receiver<Arc<DroppedTx>> {
        self.dropped.subscribe()
    }

    /// Finalized blocks from now on.
    pub fn subscribe_finalized(&self) -> broadcast::Receiver<Arc<FinalizedEvent>> {
        self.finalized.subscribe()
    }

    /// The node's database (read only by convention: only the driver writes).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The networking layer.
    pub fn network(&self) -> &NetworkHandle {
        &self.network
    }
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    handle: NodeHandle,
    shutdown: watch::Sender<bool>,
    driver: JoinHandle<Result<(), DriverError>>,
    /// Addresses the p2p listener is bound to (with the real port when 0 was configured).
    pub p2p_addrs: Vec<Multiaddr>,
    /// Address the metrics endpoint is bound to.
    pub metrics_addr: SocketAddr,
    rpc: RpcServerHandle,
}

impl RunningNode {
    /// The handle to the running node.
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// Address the JSON-RPC server (HTTP and WebSocket) is bound to, with the real port when
    /// `rpc.listen_addr` named port 0.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc.local_addr()
    }

    /// The dialable p2p address with `/p2p/<peer id>` appended.
    pub fn p2p_address(&self) -> Option<Multiaddr> {
        let peer_id = self.handle.network.local_peer_id();
        // The listener reports its addresses with `/p2p/<id>` already; add it only if missing.
        self.p2p_addrs.first().cloned().map(|addr| {
            if crate::network::peer_id_of(&addr).is_some() {
                addr
            } else {
                addr.with(libp2p::multiaddr::Protocol::P2p(peer_id))
            }
        })
    }

    /// Waits until the driver stops on its own (a fatal error) — for `meshd run`, raced
    /// against the shutdown signals.
    pub async fn stopped(&mut self) -> Result<(), NodeError> {
        match (&mut self.driver).await {
            Ok(result) => result.map_err(NodeError::from),
            Err(_) => Err(NodeError::Stopped),
        }
    }

    /// Stops cleanly: the driver finishes the step it is in (a commit completes), then the
    /// network closes and the database is released.
    pub async fn stop(self) -> Result<(), NodeError> {
        // API first: no new request reaches a node that is going away.
        self.rpc.stop();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.rpc.clone().stopped()).await;
        let _ = self.shutdown.send(true);
        let result = match self.driver.await {
            Ok(result) => result.map_err(NodeError::from),
            Err(_) => Err(NodeError::Stopped),
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), self.handle.network.shutdown()).await;
        result
    }
}

/// Opens the database, restores consensus from the durable safety state and the finalized
/// head, starts the network, metrics and driver.
pub async fn start(options: NodeOptions) -> Result<RunningNode, NodeError> {
    let NodeOptions {
        home,
        config,
        genesis,
        validator_key,
        node_key_seed,
        driver: driver_config,
        tune_network,
        admin,
    } = options;
    genesis.validate().map_err(|err| NodeError::Genesis {
        path: home.genesis().display().to_string(),
        reason: err.to_string(),
    })?;
    let data = home.data();
    std::fs::create_dir_all(&data).map_err(|err| {
        NodeError::Store(StoreError::Open {
            path: data.display().to_string(),
            reason: err.to_string(),
        })
    })?;
    let store = Arc::new(tokio::task::block_in_place(|| Store::open(&data))?);
    let chain = tokio::task::block_in_place(|| Chain::open(Arc::clone(&store), &genesis))?;

    let key = validator_key.unwrap_or_else(keys::generate_secret);
    let mut consensus_config =
        mesh_consensus::Config::new(genesis.chain_id.clone(), genesis.params.schedule());
    consensus_config.timeouts = Timeouts {
        view_timeout_base_ms: config.consensus.view_timeout_ms,
        view_timeout_max_ms: config.consensus.view_timeout_max_ms,
    };
    let safety = driver::load_safety_state(&chain)?;
    let (finalized, certificate) = chain.finalized();
    // The epoch the committed head is in (the next one after a boundary block), with its
    // sets read from the committed state.
    let epoch = tokio::task::block_in_place(|| chain.epoch_info())?;
    let is_validator = epoch.validators.power_of(&key.address()) > 0;
    let consensus = Consensus::restore(
        consensus_config.clone(),
        key,
        epoch,
        safety,
        finalized,
        certificate,
    )
    .map_err(|err| DriverError::SafetyState(err.to_string()))?;

    let keypair = Keypair::ed25519_from_bytes(node_key_seed).map_err(|err| {
        NodeError::Key(KeyError::Malformed {
            path: home.node_key().display().to_string(),
            reason: err.to_string(),
        })
    })?;
    let mut net_config = NetworkConfig::new(genesis.chain_id.clone(), keypair);
    net_config.listen_addr =
        config
            .p2p
            .listen_addr
            .parse()
            .map_err(|err: libp2p::multiaddr::Error| NodeError::InvalidAddress {
                field: "p2p.listen_addr",
                reason: err.to_string(),
            })?;
    net_config.bootnodes = config
        .p2p
        .bootnodes
        .iter()
        .map(|b| {
            b.parse()
                .map_err(|err: libp2p::multiaddr::Error| NodeError::InvalidAddress {
                    field: "p2p.bootnodes",
                    reason: format!("{b}: {err}"),
                })
        })
        .collect::<Result<_, _>>()?;
    net_config.max_peers = config.p2p.max_peers;
    if let Some(tune) = tune_network {
        tune(&mut net_config);
    }
    let mut driver_config = driver_config;
    driver_config.gossip_bytes_max = net_config.max_message_bytes;
    driver_config.sync_response_bytes_max = net_config
        .max_sync_bytes
        .saturating_sub(1 << 20)
        .max(1 << 20);
    let (network, events) = Network::start(net_config).await?;
    let p2p_addrs = network.listen_addrs().await?;

    let (metrics, mut registry) = Metrics::new();
    registry.register_collector(Box::new(metrics::NetworkCollector(network.stats())));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let admin = admin.then(|| Arc::new(metrics::Admin::new(network.clone())));
    let metrics_addr = metrics::serve(
        config.metrics.listen_addr,
        registry,
        admin,
        shutdown_rx.clone(),
    )
    .await
    .map_err(|source| NodeError::Metrics {
        addr: config.metrics.listen_addr,
        source,
    })?;

    let mempool_max = (config.mempool.max_txs, config.mempool.max_bytes);
    let mempool = Mempool::new(
        (&config.mempool).into(),
        genesis.chain_id.clone(),
        genesis.params.clone(),
    );
    let (commands_tx, commands) = mpsc::channel(1024);
    let initial = NodeStatus {
        chain_id: genesis.chain_id.clone(),
        peer_id: network.local_peer_id().to_string(),
        validator: None,
        finalized_height: chain.head().height,
        finalized_hash: chain.head_hash(),
        finalized_time_ms: chain.head().timestamp_ms,
        epoch: consensus.epoch().0,
        view: 0,
        sync_target: chain.head().height,
        syncing: false,
        peers: 0,
        mempool_txs: 0,
        mempool_bytes: 0,
    };
    let (status_tx, status) = watch::channel(initial);
    let (finalized_tx, _) = broadcast::channel(1024);
    let (dropped_tx, _) = broadcast::channel(4096);
    let handle = NodeHandle {
        commands: commands_tx,
        status,
        finalized: finalized_tx.clone(),
        dropped: dropped_tx.clone(),
        store: Arc::clone(&store),
        network: network.clone(),
        chain_id: Arc::from(genesis.chain_id.as_str()),
        params: Arc::new(genesis.params.clone()),
    };
    info!(
        moniker = %config.moniker,
        chain = %genesis.chain_id,
        peer = %network.local_peer_id(),
        validator = is_validator,
        height = chain.head().height,
        p2p = ?p2p_addrs,
        metrics = %metrics_addr,
        "node started"
    );
    let driver = Driver::new(
        driver_config,
        consensus_config,
        consensus,
        chain,
        mempool,
        network,
        metrics,
        DriverChannels {
            events,
            commands,
            status: status_tx,
            finalized: finalized_tx,
            dropped: dropped_tx,
            shutdown: shutdown_rx,
        },
    );
    let driver = tokio::spawn(driver.run());
    let backend = NodeBackend::new(
        handle.clone(),
        mempool_max.0,
        mempool_max.1,
        (&genesis.chain_id, &genesis.params),
        BackendLimits::of(&config.rpc),
    );
    // The API refuses transactions over the chain's own limit before decoding them, not only
    // over the ledger's ceiling.
    let mut rpc_config = config.rpc.clone();
    rpc_config.tx_bytes_max = rpc_config.tx_bytes_max.min(genesis.params.tx_bytes_max);
    let rpc = match mesh_rpc::start(rpc_config, Arc::new(backend)).await {
        Ok(rpc) => rpc,
        Err(err) => {
            // Undo the start: the driver finishes its step, the network closes.
            let _ = shutdown.send(true);
            let _ = driver.await;
            let _ = tokio::time::timeout(Duration::from_secs(5), handle.network.shutdown()).await;
            return Err(NodeError::Rpc(err));
        }
    };
    info!(rpc = %rpc.local_addr(), "JSON-RPC server started");
    Ok(RunningNode {
        handle,
        shutdown,
        driver,
        p2p_addrs,
        metrics_addr,
        rpc,
    })
}
