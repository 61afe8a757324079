//! # Networking: the libp2p layer of the node
//!
//! One tokio task owns the libp2p [`Swarm`](libp2p::Swarm); the rest of the node talks to it
//! through a cloneable [`NetworkHandle`] (commands) and one bounded receiver of
//! [`NetworkEvent`]s. Payloads are opaque bytes: this module knows nothing of transactions,
//! blocks or votes, and consensus never sees a socket.
//!
//! What the task speaks (see `docs/networking.md` for the reasons and every limit):
//! - TCP + noise + yamux; identify (`/mesh/<chain>/id/2`) and ping;
//! - gossipsub with one topic per kind: `/mesh/<chain>/tx/1` and `/mesh/<chain>/consensus/2`,
//!   anonymous messages whose id is blake3 of the payload; every message waits for the
//!   application's [`Validation`] before it is forwarded, and `Reject` lowers the sender's score;
//! - request-response `/mesh/<chain>/sync/2` for block sync, length-prefixed frames capped at
//!   `max_sync_bytes` before allocation;
//! - Kademlia `/mesh/<chain>/kad/1` for discovery from the bootnodes;
//! - connection limits and a block list (`block_peer` / `unblock_peer`).
//!
//! *Invariant:* nothing a peer sends can make this task panic or allocate beyond a configured
//! cap; bad input is dropped, counted in [`NetworkStats`] and, where it is the peer's fault,
//! penalised.

mod actor;
mod behaviour;
mod codec;
mod config;
mod stats;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use libp2p::gossipsub;
use libp2p::multiaddr::Protocol;
use tokio::sync::{mpsc, oneshot};

pub use config::{NetworkConfig, CHAIN_ID_BYTES_MAX, GOSSIP_TRANSMIT_FACTOR};
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};
pub use stats::{NetworkStats, NetworkStatsSnapshot};

/// The gossip topics. Each maps to a per-chain, versioned topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Transactions (or batches of them): `/mesh/<chain_id>/tx/1`.
    Transactions,
    /// Consensus messages (proposals, votes, certificates): `/mesh/<chain_id>/consensus/2`.
    Consensus,
}

impl Topic {
    /// The topic's name on the wire for this chain.
    pub fn name(self, chain_id: &str) -> String {
        match self {
            Topic::Transactions => format!("/mesh/{chain_id}/tx/1"),
            Topic::Consensus => format!("/mesh/{chain_id}/consensus/2"),
        }
    }

    fn ident(self, chain_id: &str) -> gossipsub::IdentTopic {
        gossipsub::IdentTopic::new(self.name(chain_id))
    }

    fn topic_hash(self, chain_id: &str) -> gossipsub::TopicHash {
        self.ident(chain_id).hash()
    }
}

/// Gossip message id: blake3 of the payload, so the same bytes are delivered once whoever
/// publishes them and however many paths they take.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 32]);

impl MessageId {
    /// The id of a payload.
    pub fn of(payload: &[u8]) -> Self {
        MessageId(*blake3::hash(payload).as_bytes())
    }

    fn from_gossipsub(id: &gossipsub::MessageId, payload: &[u8]) -> Self {
        match <[u8; 32]>::try_from(id.0.as_slice()) {
            Ok(bytes) => MessageId(bytes),
            // Our id function always yields 32 bytes; recompute rather than trust otherwise.
            Err(_) => MessageId::of(payload),
        }
    }

    fn to_gossipsub(self) -> gossipsub::MessageId {
        gossipsub::MessageId(self.0.to_vec())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The application's verdict on a gossip message, reported with
/// [`NetworkHandle::report_validation`]. Until it is reported the message is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Valid: deliver and forward to the mesh.
    Accept,
    /// Invalid (bad signature, malformed): drop and penalise the peer that sent it.
    Reject,
    /// Not useful now (duplicate, stale, nonce race): drop without penalty.
    Ignore,
}

/// Identifies one inbound sync request until it is answered with
/// [`NetworkHandle::respond_sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncRequestId(pub u64);

/// A connected peer as the network task sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    /// The peer's identity.
    pub peer_id: PeerId,
    /// Remote address of the first established connection.
    pub address: Multiaddr,
    /// The peer dialled us (its first connection was inbound).
    pub inbound: bool,
    /// Gossipsub score (higher is better; below -80 the peer is ignored), if scored yet.
    pub gossip_score: Option<f64>,
    /// Our topics the peer is subscribed to.
    pub topics: Vec<Topic>,
}

/// Everything the network task reports to the application: one closed enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkEvent {
    /// A gossip message, already de-duplicated by id and within `max_message_bytes`. The
    /// application must answer with [`NetworkHandle::report_validation`].
    Gossip {
        /// Topic it arrived on.
        topic: Topic,
        /// blake3 of `data`.
        message_id: MessageId,
        /// The peer that forwarded it to us (the one penalised on `Reject`).
        source: PeerId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A peer asks for blocks; answer with [`NetworkHandle::respond_sync`] before
    /// `sync_timeout`, or the peer sees a timeout.
    SyncRequest {
        /// Who asks.
        peer: PeerId,
        /// Pass it back to `respond_sync`.
        request_id: SyncRequestId,
        /// The request, within `max_sync_bytes`.
        data: Vec<u8>,
    },
    /// First connection to this peer established.
    PeerConnected(PeerId),
    /// Last connection to this peer closed.
    PeerDisconnected(PeerId),
}

/// Errors of the networking layer.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The configuration breaks a bound; nothing was started.
    #[error("invalid network config: {reason}")]
    InvalidConfig { reason: String },
    /// `Network::start` was called outside a tokio runtime.
    #[error("the network must be started inside a tokio runtime")]
    NoRuntime,
    /// The transport could not be built.
    #[error("transport: {reason}")]
    Transport { reason: String },
    /// Listening on the configured address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    /// A payload exceeds the configured cap; it was not sent.
    #[error("message of {bytes} bytes exceeds the cap of {max_bytes} bytes")]
    MessageTooLarge { bytes: usize, max_bytes: usize },
    /// No connected peer is subscribed to the topic yet.
    #[error("no peers subscribed to {topic:?}")]
    NoPeersForTopic { topic: Topic },
    /// The same payload was published recently (same message id); it is already out.
    #[error("message {message_id} was already published")]
    DuplicateMessage { message_id: MessageId },
    /// Gossipsub refused the message for another reason.
    #[error("publishing on {topic:?} failed: {reason}")]
    PublishFailed { topic: Topic, reason: String },
    /// The sync request failed (dial failure, connection closed, oversized response…).
    #[error("sync request to {peer} failed: {reason}")]
    SyncFailed { peer: PeerId, reason: String },
    /// No sync response arrived within `sync_timeout`.
    #[error("sync request to {peer} timed out")]
    SyncTimeout { peer: PeerId },
    /// Too many of our sync requests are in flight.
    #[error("too many sync requests in flight (max {max})")]
    TooManySyncRequests { max: usize },
    /// The sync request is unknown: answered already, timed out, or its connection closed.
    #[error("unknown or expired sync request {request_id:?}")]
    UnknownSyncRequest { request_id: SyncRequestId },
    /// Dialing failed immediately.
    #[error("cannot dial {addr}: {reason}")]
    Dial { addr: Multiaddr, reason: String },
    /// The network task has stopped.
    #[error("the network task has stopped")]
    Stopped,
}

/// The peer id in a `…/p2p/<peer id>` address.
pub fn peer_id_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer_id)) => Some(peer_id),
        _ => None,
    }
}

/// Starts the networking layer.
#[derive(Debug)]
pub struct Network;

impl Network {
    /// Builds the swarm, binds `config.listen_addr`, waits (at most 5 s) until the listener is
    /// up so that [`NetworkHandle::listen_addrs`] is meaningful at once, dials the bootnodes and
    /// spawns the task that owns the swarm. Must be called inside a tokio runtime.
    ///
    /// The task stops on [`NetworkHandle::shutdown`] or when every handle is dropped.
    pub async fn start(
        config: NetworkConfig,
    ) -> Result<(NetworkHandle, mpsc::Receiver<NetworkEvent>), NetworkError> {
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| NetworkError::NoRuntime)?;
        let (command_tx, command_rx) = mpsc::channel(config.command_channel_capacity);
        let (event_tx, event_rx) = mpsc::channel(config.event_channel_capacity);
        let stats = Arc::new(NetworkStats::default());
        let local_peer_id = config.keypair.public().to_peer_id();
        let actor = actor::Actor::new(&config, command_rx, event_tx, Arc::clone(&stats)).await?;
        tokio::spawn(actor.run());
        let handle = NetworkHandle {
            commands: command_tx,
            local_peer_id,
            stats,
            sync_timeout: config.sync_timeout,
        };
        Ok((handle, event_rx))
    }
}

/// Commands from handles to the network task.
#[derive(Debug)]
enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<MessageId, NetworkError>>,
    },
    ReportValidation {
        message_id: MessageId,
        source: PeerId,
        validation: Validation,
    },
    SendSyncRequest {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetworkError>>,
    },
    RespondSync {
        request_id: SyncRequestId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    BlockPeer {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    UnblockPeer {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Cloneable handle to the network task. Every method fails with [`NetworkError::Stopped`]
/// once the task has stopped.
#[derive(Debug, Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    stats: Arc<NetworkStats>,
    sync_timeout: Duration,
}

/// Grace beyond `sync_timeout` before the handle gives up on a reply from the task itself.
const SYNC_REPLY_GRACE: Duration = Duration::from_secs(2);

impl NetworkHandle {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Counters of the network task, shared and live.
    pub fn stats(&self) -> Arc<NetworkStats> {
        Arc::clone(&self.stats)
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| NetworkError::Stopped)?;
        response.await.map_err(|_| NetworkError::Stopped)
    }

    /// Publishes `data` on `topic`; returns its message id (blake3 of `data`).
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<MessageId, NetworkError> {
        self.request(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Reports the application's verdict on a [`NetworkEvent::Gossip`]; `source` is the
    /// event's `source`. Only then is an accepted message forwarded.
    pub async fn report_validation(
        &self,
        message_id: MessageId,
        source: PeerId,
        validation: Validation,
    ) -> Result<(), NetworkError> {
        self.commands
            .send(Command::ReportValidation {
                message_id,
                source,
                validation,
            })
            .await
            .map_err(|_| NetworkError::Stopped)
    }

    /// Sends a sync request to `peer` (dialing it if needed and its address is known) and waits
    /// for the response, at most `sync_timeout`.
    pub async fn send_sync_request(
        &self,
        peer: PeerId,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, NetworkError> {
        let deadline = self.sync_timeout.saturating_add(SYNC_REPLY_GRACE);
        let request = self.request(|reply| Command::SendSyncRequest { peer, data, reply });
        match tokio::time::timeout(deadline, request).await {
            Ok(result) => result?,
            Err(_) => Err(NetworkError::SyncTimeout { peer }),
        }
    }

    /// Answers the inbound sync request `request_id`.
    pub async fn respond_sync(
        &self,
        request_id: SyncRequestId,
        data: Vec<u8>,
    ) -> Result<(), NetworkError> {
        self.request(|reply| Command::RespondSync {
            request_id,
            data,
            reply,
        })
        .await?
    }

    /// The peers we are connected to.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetworkError> {
        self.request(|reply| Command::Peers { reply }).await
    }

    /// The addresses we listen on, each ending in `/p2p/<local peer id>` so it can be given to
    /// other nodes as a bootnode.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.request(|reply| Command::ListenAddrs { reply }).await
    }

    /// Dials an address (which may end in `/p2p/<peer id>`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetworkError> {
        self.request(|reply| Command::Dial { addr, reply }).await?
    }

    /// Closes every connection to `peer` and refuses new ones, inbound and outbound, until
    /// [`NetworkHandle::unblock_peer`].
    pub async fn block_peer(&self, peer: PeerId) -> Result<(), NetworkError> {
        self.request(|reply| Command::BlockPeer { peer, reply })
            .await
    }

    /// Allows connections with `peer` again (they are re-established by discovery, the
    /// bootnode redial, or an explicit [`NetworkHandle::dial`]).
    pub async fn unblock_peer(&self, peer: PeerId) -> Result<(), NetworkError> {
        self.request(|reply| Command::UnblockPeer { peer, reply })
            .await
    }

    /// Stops the network task: connections are closed and pending requests fail. Returns once
    /// the task has stopped; succeeds if it had stopped already.
    pub async fn shutdown(&self) -> Result<(), NetworkError> {
        match self.request(|reply| Command::Shutdown { reply }).await {
            Ok(()) | Err(NetworkError::Stopped) => Ok(()),
            Err(other) => Err(other),
        }
    }
}
