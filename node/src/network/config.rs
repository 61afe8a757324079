//! Every knob of the networking layer, with its default and the relations between them.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::Multiaddr;

use super::NetworkError;

/// Longest chain id accepted; it appears in every protocol name and topic.
pub const CHAIN_ID_BYTES_MAX: usize = 64;

/// Gossipsub's frame limit is this many times `message_bytes_max`, so that a maximal message
/// plus gossipsub's own framing and control messages always fits (a limit just above the largest
/// message stalled delivery in an earlier test).
pub const GOSSIP_TRANSMIT_FACTOR: usize = 4;

/// Configuration of one node's networking layer.
///
/// Build it with [`NetworkConfig::new`] (which fills in the defaults listed on each field) and
/// override fields as needed; [`NetworkConfig::validate`] (called by `Network::start`) checks
/// every bound and the relations between them.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Chain id, part of every protocol name and topic (`/mesh/<chain_id>/…`), so that nodes of
    /// different chains never exchange messages. 1 to 64 bytes of `[A-Za-z0-9._-]`.
    pub chain_id: String,
    /// Address to listen on. Default `/ip4/0.0.0.0/tcp/30400` (DESIGN §7); tests use
    /// `/ip4/127.0.0.1/tcp/0`.
    pub listen_addr: Multiaddr,
    /// Peers to dial at start and whenever we are not connected to them. Each must end in
    /// `/p2p/<peer id>`. Default: none.
    pub bootnodes: Vec<Multiaddr>,
    /// The node's libp2p identity (ed25519). Its peer id is what other nodes put in their
    /// bootnode lists.
    pub keypair: Keypair,
    /// Most established connections in total (inbound + outbound). Default 50.
    pub max_peers: u32,
    /// Most established connections to one peer. Default 2 (two nodes that dial each other at
    /// the same instant briefly hold two connections).
    pub max_connections_per_peer: u32,
    /// Most connections still in the handshake, per direction. Default 16.
    pub max_pending_connections: u32,
    /// Largest gossip payload (one transaction batch or one consensus message) we publish or
    /// accept. Default 4 MiB; set it to at least the largest block or batch the node produces.
    pub max_message_bytes: usize,
    /// Largest block-sync request or response we send or accept. Default 16 MiB.
    pub max_sync_bytes: usize,
    /// How long an outbound sync request may wait for its response. Default 10 s.
    pub sync_timeout: Duration,
    /// Most concurrent sync streams per connection. Default 16.
    pub max_sync_streams_per_connection: usize,
    /// Most inbound sync requests waiting for `respond_sync`. Beyond it new requests are
    /// dropped (the requester sees an error). Default 256.
    pub max_pending_sync_requests: usize,
    /// Gossipsub heartbeat. Default 1 s.
    pub gossip_heartbeat: Duration,
    /// How often we re-dial every bootnode we are not connected to and run a Kademlia
    /// bootstrap. Default 30 s. (A bootnode that drops is also re-dialed on its own, after 1 s,
    /// then 2 s, 4 s, … up to this interval.)
    pub discovery_interval: Duration,
    /// How long a connection with no protocol using it stays open. Default 10 min: peers
    /// outside our gossip mesh are still useful for sync and discovery.
    pub idle_connection_timeout: Duration,
    /// Capacity of the command channel from `NetworkHandle`s to the network task. Default 1024.
    pub command_channel_capacity: usize,
    /// Capacity of the event channel from the network task to the application. When it is full,
    /// new events are dropped and counted (gossip is then reported `Ignore`, so the sender is not
    /// penalised). Default 4096.
    pub event_channel_capacity: usize,
}

impl NetworkConfig {
    /// Default p2p port (DESIGN §7).
    pub const PORT_DEFAULT: u16 = 30400;

    /// A configuration with every default, for this chain and identity.
    pub fn new(chain_id: impl Into<String>, keypair: Keypair) -> Self {
        let listen_addr = Multiaddr::empty()
            .with(libp2p::multiaddr::Protocol::Ip4(
                std::net::Ipv4Addr::UNSPECIFIED,
            ))
            .with(libp2p::multiaddr::Protocol::Tcp(Self::PORT_DEFAULT));
        Self {
            chain_id: chain_id.into(),
            listen_addr,
            bootnodes: Vec::new(),
            keypair,
            max_peers: 50,
            max_connections_per_peer: 2,
            max_pending_connections: 16,
            max_message_bytes: 4 * 1024 * 1024,
            max_sync_bytes: 16 * 1024 * 1024,
            sync_timeout: Duration::from_secs(10),
            max_sync_streams_per_connection: 16,
            max_pending_sync_requests: 256,
            gossip_heartbeat: Duration::from_secs(1),
            discovery_interval: Duration::from_secs(30),
            idle_connection_timeout: Duration::from_secs(600),
            command_channel_capacity: 1024,
            event_channel_capacity: 4096,
        }
    }

    /// Gossipsub's frame limit: [`GOSSIP_TRANSMIT_FACTOR`] × `max_message_bytes`.
    pub fn max_gossip_transmit_bytes(&self) -> usize {
        self.max_message_bytes
            .saturating_mul(GOSSIP_TRANSMIT_FACTOR)
    }

    /// Checks every bound; `Network::start` refuses a configuration that fails.
    pub fn validate(&self) -> Result<(), NetworkError> {
        let invalid = |reason: String| Err(NetworkError::InvalidConfig { reason });
        let chain_ok = !self.chain_id.is_empty()
            && self.chain_id.len() <= CHAIN_ID_BYTES_MAX
            && self
                .chain_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !chain_ok {
            return invalid(format!(
                "chain_id {:?} must be 1..={CHAIN_ID_BYTES_MAX} bytes of [A-Za-z0-9._-]",
                self.chain_id
            ));
        }
        if self.max_peers == 0 || self.max_connections_per_peer == 0 {
            return invalid("max_peers and max_connections_per_peer must be at least 1".into());
        }
        if self.max_pending_connections == 0 {
            return invalid("max_pending_connections must be at least 1".into());
        }
        // The upper bounds keep a u32 length prefix and gossipsub's frame limit meaningful.
        const BYTES_CEILING: usize = 256 * 1024 * 1024;
        if self.max_message_bytes == 0 || self.max_message_bytes > BYTES_CEILING / 4 {
            return invalid(format!(
                "max_message_bytes must be in 1..={}",
                BYTES_CEILING / 4
            ));
        }
        if self.max_sync_bytes == 0 || self.max_sync_bytes > BYTES_CEILING {
            return invalid(format!("max_sync_bytes must be in 1..={BYTES_CEILING}"));
        }
        if self.sync_timeout.is_zero()
            || self.gossip_heartbeat.is_zero()
            || self.discovery_interval.is_zero()
        {
            return invalid(
                "sync_timeout, gossip_heartbeat and discovery_interval must be > 0".into(),
            );
        }
        if self.max_sync_streams_per_connection == 0 || self.max_pending_sync_requests == 0 {
            return invalid("sync stream and pending limits must be at least 1".into());
        }
        if self.command_channel_capacity == 0 || self.event_channel_capacity == 0 {
            return invalid("channel capacities must be at least 1".into());
        }
        for addr in &self.bootnodes {
            if super::peer_id_of(addr).is_none() {
                return invalid(format!("bootnode {addr} does not end in /p2p/<peer id>"));
            }
        }
        Ok(())
    }
}
