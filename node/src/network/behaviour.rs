//! The composed libp2p behaviour and the construction of the swarm from a [`NetworkConfig`].

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, connection_limits, gossipsub, identify, kad, noise, ping, request_response,
    tcp, yamux, StreamProtocol, Swarm, SwarmBuilder,
};

use super::codec::SyncCodec;
use super::{NetworkConfig, NetworkError, Topic};

/// Version reported by identify; peers of other chains or protocol families are not added to
/// the routing table.
pub(crate) fn identify_protocol(chain_id: &str) -> String {
    format!("/mesh/{chain_id}/id/2")
}

/// `/mesh/<chain_id>/sync/2`.
pub(crate) fn sync_protocol(chain_id: &str) -> String {
    format!("/mesh/{chain_id}/sync/2")
}

/// `/mesh/<chain_id>/kad/1`.
pub(crate) fn kad_protocol(chain_id: &str) -> String {
    format!("/mesh/{chain_id}/kad/1")
}

pub(crate) type Gossipsub =
    gossipsub::Behaviour<gossipsub::IdentityTransform, gossipsub::WhitelistSubscriptionFilter>;

/// Everything the node speaks. The order matters only for connection denial: the block list
/// and the limits are asked first.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) gossipsub: Gossipsub,
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
}

fn protocol(name: String) -> Result<StreamProtocol, NetworkError> {
    StreamProtocol::try_from_owned(name.clone()).map_err(|_| NetworkError::InvalidConfig {
        reason: format!("invalid protocol name {name}"),
    })
}

/// Gossipsub scoring. Only what our traffic makes meaningful is switched on:
/// - P1 (time in mesh) and P2 (first deliveries) reward useful peers, capped;
/// - P3/P3b (mesh delivery rate) are off: consensus traffic is bursty and tx traffic depends on
///   load, so a quiet topic would wrongly penalise honest peers;
/// - P4 (invalid messages, i.e. our `Reject`) is heavy: honest peers validate before forwarding,
///   so a single reject takes a peer below the gossip threshold and three below the graylist.
/// - P7 (behaviour penalty) keeps its default against GRAFT/IHAVE spam.
///
/// Loopback is exempt from the IP-colocation penalty so a local testnet is not penalised.
fn score_params(config: &NetworkConfig) -> gossipsub::PeerScoreParams {
    let mut params = gossipsub::PeerScoreParams {
        topic_score_cap: 100.0,
        ip_colocation_factor_whitelist: HashSet::from([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]),
        ..Default::default()
    };
    for (topic, weight) in [(Topic::Consensus, 1.0), (Topic::Transactions, 0.5)] {
        let topic_params = gossipsub::TopicScoreParams {
            topic_weight: weight,
            time_in_mesh_weight: 0.01,
            time_in_mesh_quantum: Duration::from_secs(1),
            time_in_mesh_cap: 3600.0,
            first_message_deliveries_weight: 1.0,
            first_message_deliveries_decay: 0.9,
            first_message_deliveries_cap: 50.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            invalid_message_deliveries_weight: -20.0,
            invalid_message_deliveries_decay: 0.99,
            ..Default::default()
        };
        params
            .topics
            .insert(topic.topic_hash(&config.chain_id), topic_params);
    }
    params
}

fn score_thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}

/// Smallest message for which gossipsub announces IDONTWANT to its mesh peers.
///
/// Each IDONTWANT a peer receives makes gossipsub scan that peer's whole outbound queue
/// (`Queue::remove_data_messages` compares every queued message id with every announced one).
/// With gossipsub's default (1,000 bytes) every consensus certificate of a 16-validator committee
/// triggered such a scan on each of 15 connections, and the scans took 40 % of a node's CPU on an
/// idle network (perf, docs/performance.md). Saving a duplicate only pays for messages well above
/// the size of the scan, so only large transaction batches and blocks announce it.
const IDONTWANT_THRESHOLD_BYTES: usize = 16 * 1024;

fn build_gossipsub(config: &NetworkConfig) -> Result<Gossipsub, NetworkError> {
    let gossip_err = |reason: String| NetworkError::InvalidConfig { reason };
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(config.gossip_heartbeat)
        .max_transmit_size(config.max_gossip_transmit_bytes())
        // Our payloads carry their own signatures; gossip-level signing would cost ~3x CPU
        // per hop (DESIGN §5). Anonymous messages have no author, no seqno, no signature.
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .message_id_fn(|message: &gossipsub::Message| {
            gossipsub::MessageId::from(blake3::hash(&message.data).as_bytes().to_vec())
        })
        // The application reports Accept/Reject/Ignore before anything is forwarded.
        .validate_messages()
        .idontwant_message_size_threshold(IDONTWANT_THRESHOLD_BYTES)
        .build()
        .map_err(|e| gossip_err(format!("gossipsub: {e}")))?;
    let topics = HashSet::from([
        Topic::Transactions.topic_hash(&config.chain_id),
        Topic::Consensus.topic_hash(&config.chain_id),
    ]);
    let mut behaviour = Gossipsub::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Anonymous,
        gossip_config,
        gossipsub::WhitelistSubscriptionFilter(topics),
    )
    .map_err(|e| gossip_err(format!("gossipsub: {e}")))?;
    behaviour
        .with_peer_score(score_params(config), score_thresholds())
        .map_err(|e| gossip_err(format!("gossipsub scoring: {e}")))?;
    for topic in [Topic::Transactions, Topic::Consensus] {
        behaviour
            .subscribe(&topic.ident(&config.chain_id))
            .map_err(|e| gossip_err(format!("gossipsub subscribe: {e:?}")))?;
    }
    Ok(behaviour)
}

fn build_kad(
    config: &NetworkConfig,
) -> Result<kad::Behaviour<kad::store::MemoryStore>, NetworkError> {
    let peer_id = config.keypair.public().to_peer_id();
    let mut kad_config = kad::Config::new(protocol(kad_protocol(&config.chain_id))?);
    kad_config
        .set_query_timeout(Duration::from_secs(30))
        .set_periodic_bootstrap_interval(Some(config.discovery_interval))
        // Only FIND_NODE is used; records are never stored.
        .set_record_ttl(Some(Duration::from_secs(60)))
        .set_replication_interval(None)
        .set_publication_interval(None)
        .set_provider_publication_interval(None)
        .set_max_packet_size(16 * 1024);
    if let Some(parallelism) = NonZeroUsize::new(3) {
        kad_config.set_parallelism(parallelism);
    }
    let mut behaviour =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    // Kademlia's automatic mode answers queries only once an external address is confirmed,
    // which never happens on a private network or loopback. Every node serves the DHT.
    behaviour.set_mode(Some(kad::Mode::Server));
    Ok(behaviour)
}

/// Builds the swarm (TCP + noise + yamux) with every behaviour configured from `config`.
pub(crate) fn build_swarm(config: &NetworkConfig) -> Result<Swarm<Behaviour>, NetworkError> {
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_peers))
        .with_max_established_per_peer(Some(config.max_connections_per_peer))
        .with_max_pending_incoming(Some(config.max_pending_connections))
        .with_max_pending_outgoing(Some(config.max_pending_connections));
    let identify = identify::Behaviour::new(
        identify::Config::new(identify_protocol(&config.chain_id), config.keypair.public())
            .with_agent_version(format!("meshd/{}", env!("CARGO_PKG_VERSION")))
            .with_cache_size(config.max_peers.try_into().unwrap_or(usize::MAX)),
    );
    let sync = request_response::Behaviour::with_codec(
        SyncCodec {
            frame_bytes_max: config.max_sync_bytes,
        },
        [(
            protocol(sync_protocol(&config.chain_id))?,
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(config.sync_timeout)
            .with_max_concurrent_streams(config.max_sync_streams_per_connection),
    );
    let behaviour = Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        identify,
        ping: ping::Behaviour::new(ping::Config::new()),
        gossipsub: build_gossipsub(config)?,
        sync,
        kad: build_kad(config)?,
    };
    let swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetworkError::Transport {
            reason: e.to_string(),
        })?
        // Resolves /dns, /dns4 and /dns6 addresses with the system's resolver configuration.
        .with_dns()
        .map_err(|e| NetworkError::Transport {
            reason: format!("cannot set up DNS resolution from the system configuration (/etc/resolv.conf): {e}"),
        })?
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetworkError::Transport {
            reason: e.to_string(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
        .build();
    Ok(swarm)
}
