//! The task that owns the swarm: one loop over commands, swarm events and the discovery tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, kad, request_response, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn, Instrument};

use super::behaviour::{build_swarm, identify_protocol, kad_protocol, Behaviour, BehaviourEvent};
use super::stats::count;
use super::{
    peer_id_of, Command, MessageId, NetworkConfig, NetworkError, NetworkEvent, NetworkStats,
    PeerInfo, SyncRequestId, Topic, Validation,
};

/// How long `Network::start` waits for the listener to come up.
const LISTEN_WAIT: Duration = Duration::from_secs(5);
/// Most listen addresses taken from one peer's identify record.
const PEER_LISTEN_ADDRS_MAX: usize = 8;
/// A bootnode we are not connected to is re-dialed after this long, then after twice as long
/// each time up to `discovery_interval`: a restarted or healed peer is back within seconds
/// without a dead one being hammered.
const BOOTNODE_REDIAL_FIRST: Duration = Duration::from_secs(1);

type SyncEvent = request_response::Event<Vec<u8>, Vec<u8>>;
type SyncReply = oneshot::Sender<Result<Vec<u8>, NetworkError>>;

pub(super) struct Actor {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    stats: Arc<NetworkStats>,
    chain_id: String,
    topics: [(gossipsub::TopicHash, Topic); 2],
    bootnodes: Vec<(PeerId, Multiaddr)>,
    max_peers: usize,
    max_message_bytes: usize,
    max_sync_bytes: usize,
    max_pending_sync_requests: usize,
    discovery_interval: Duration,
    /// Per bootnode not connected: when to dial it next, and the wait after that.
    bootnode_redial: HashMap<PeerId, (tokio::time::Instant, Duration)>,
    /// First remote address of each connected peer.
    /// Connected peers: remote address of the first connection, and whether they dialled us.
    connected: HashMap<PeerId, (Multiaddr, bool)>,
    /// Our sync requests awaiting a response.
    sync_outbound: HashMap<request_response::OutboundRequestId, (PeerId, SyncReply)>,
    /// Inbound sync requests awaiting `respond_sync`.
    sync_inbound: HashMap<
        SyncRequestId,
        (
            request_response::InboundRequestId,
            request_response::ResponseChannel<Vec<u8>>,
        ),
    >,
    next_sync_request_id: u64,
    /// Peers reported slow: when we last warned, and messages dropped since.
    slow_peers: HashMap<PeerId, (Option<tokio::time::Instant>, u64)>,
}

/// Least time between two warnings about the same slow gossip peer.
const SLOW_PEER_WARN_INTERVAL: Duration = Duration::from_secs(30);

impl Actor {
    /// Builds the swarm and waits until it listens.
    pub(super) async fn new(
        config: &NetworkConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetworkEvent>,
        stats: Arc<NetworkStats>,
    ) -> Result<Self, NetworkError> {
        let mut swarm = build_swarm(config)?;
        let local = *swarm.local_peer_id();
        let bootnodes: Vec<(PeerId, Multiaddr)> = config
            .bootnodes
            .iter()
            .filter_map(|addr| peer_id_of(addr).map(|peer| (peer, addr.clone())))
            .filter(|(peer, _)| *peer != local)
            .collect();
        swarm
            .listen_on(config.listen_addr.clone())
            .map_err(|e| NetworkError::Listen {
                addr: config.listen_addr.clone(),
                reason: e.to_string(),
            })?;
        let chain_id = config.chain_id.clone();
        let mut actor = Actor {
            swarm,
            commands,
            events,
            stats,
            topics: [
                (
                    Topic::Transactions.topic_hash(&chain_id),
                    Topic::Transactions,
                ),
                (Topic::Consensus.topic_hash(&chain_id), Topic::Consensus),
            ],
            chain_id,
            bootnodes,
            max_peers: usize::try_from(config.max_peers).unwrap_or(usize::MAX),
            max_message_bytes: config.max_message_bytes,
            max_sync_bytes: config.max_sync_bytes,
            max_pending_sync_requests: config.max_pending_sync_requests,
            discovery_interval: config.discovery_interval,
            bootnode_redial: HashMap::new(),
            connected: HashMap::new(),
            sync_outbound: HashMap::new(),
            sync_inbound: HashMap::new(),
            next_sync_request_id: 0,
            slow_peers: HashMap::new(),
        };
        actor.wait_listening(&config.listen_addr).await?;
        for (peer, addr) in actor.bootnodes.clone() {
            actor.swarm.behaviour_mut().kad.add_address(&peer, addr);
        }
        actor.dial_bootnodes();
        Ok(actor)
    }

    async fn wait_listening(&mut self, listen_addr: &Multiaddr) -> Result<(), NetworkError> {
        let listen_error = |reason: String| NetworkError::Listen {
            addr: listen_addr.clone(),
            reason,
        };
        let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| listen_error("no listen address within 5 s".into()))?;
            match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    info!(%address, "listening");
                    return Ok(());
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(listen_error(error.to_string()))
                }
                SwarmEvent::ListenerClosed { reason, .. } => {
                    return Err(listen_error(format!("listener closed: {reason:?}")))
                }
                other => self.on_swarm_event(other),
            }
        }
    }

    pub(super) async fn run(mut self) {
        let span = tracing::info_span!("network", local = %self.swarm.local_peer_id());
        async move {
            let mut discovery = tokio::time::interval(self.discovery_interval);
            discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick fires at once; bootnodes were dialed in `new`.
            discovery.tick().await;
            let mut redial = tokio::time::interval(BOOTNODE_REDIAL_FIRST);
            redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    command = self.commands.recv() => match command {
                        Some(Command::Shutdown { reply }) => {
                            info!("network shutting down");
                            let _ = reply.send(());
                            break;
                        }
                        Some(command) => self.on_command(command),
                        None => {
                            info!("every network handle dropped; stopping");
                            break;
                        }
                    },
                    event = self.swarm.select_next_some() => self.on_swarm_event(event),
                    _ = discovery.tick() => self.on_discovery_tick(),
                    _ = redial.tick() => self.redial_bootnodes(),
                }
            }
        }
        .instrument(span)
        .await
    }

    fn emit(&self, event: NetworkEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                count!(self.stats, events_dropped);
                warn!(?event, "event channel full; dropping event");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                count!(self.stats, events_dropped);
                false
            }
        }
    }

    fn topic_of(&self, hash: &gossipsub::TopicHash) -> Option<Topic> {
        self.topics
            .iter()
            .find(|(known, _)| known == hash)
            .map(|(_, topic)| *topic)
    }

    fn topic_hash(&self, topic: Topic) -> gossipsub::TopicHash {
        topic.topic_hash(&self.chain_id)
    }

    fn is_blocked(&self, peer: &PeerId) -> bool {
        self.swarm
            .behaviour()
            .blocked
            .blocked_peers()
            .contains(peer)
    }

    fn dial_peer(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&peer)
            || self.is_blocked(&peer)
            || self.connected.len() >= self.max_peers
        {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addresses)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(error) = self.swarm.dial(opts) {
            debug!(%peer, %error, "dial refused");
        }
    }

    fn dial_bootnodes(&mut self) {
        for (peer, addr) in self.bootnodes.clone() {
            self.dial_peer(peer, vec![addr]);
        }
    }

    /// Dials each bootnode we are not connected to whose backoff has run out.
    fn redial_bootnodes(&mut self) {
        let now = tokio::time::Instant::now();
        for (peer, addr) in self.bootnodes.clone() {
            if self.swarm.is_connected(&peer) || self.is_blocked(&peer) {
                self.bootnode_redial.remove(&peer);
                continue;
            }
            let cap = self.discovery_interval;
            let (next, wait) = self
                .bootnode_redial
                .entry(peer)
                .or_insert((now + BOOTNODE_REDIAL_FIRST, BOOTNODE_REDIAL_FIRST));
            if now < *next {
                continue;
            }
            *next = now + *wait;
            *wait = (*wait * 2).min(cap);
            self.dial_peer(peer, vec![addr]);
        }
    }

    fn on_discovery_tick(&mut self) {
        self.dial_bootnodes();
        if self.connected.len() < self.max_peers {
            // Errors only when the routing table is empty; the bootnode dial refills it.
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    // ---- commands ----

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.on_publish(topic, data));
            }
            Command::ReportValidation {
                message_id,
                source,
                validation,
            } => self.on_report_validation(message_id, source, validation),
            Command::SendSyncRequest { peer, data, reply } => {
                self.on_send_sync_request(peer, data, reply)
            }
            Command::RespondSync {
                request_id,
                data,
                reply,
            } => {
                let _ = reply.send(self.on_respond_sync(request_id, data));
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peers());
            }
            Command::ListenAddrs { reply } => {
                let local = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|addr| addr.clone().with_p2p(local).unwrap_or_else(|addr| addr))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::Dial { addr, reply } => {
                let result = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| NetworkError::Dial {
                        addr,
                        reason: e.to_string(),
                    });
                let _ = reply.send(result);
            }
            Command::BlockPeer { peer, reply } => {
                info!(%peer, "blocking peer");
                self.swarm.behaviour_mut().blocked.block_peer(peer);
                let _ = reply.send(());
            }
            Command::UnblockPeer { peer, reply } => {
                info!(%peer, "unblocking peer");
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                // Reconnect now rather than at the next discovery tick: the addresses the
                // DHT and identify learned are still known to the swarm.
                self.dial_peer(peer, Vec::new());
                self.dial_bootnodes();
                let _ = reply.send(());
            }
            // Handled in `run`.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn on_publish(&mut self, topic: Topic, data: Vec<u8>) -> Result<MessageId, NetworkError> {
        if data.len() > self.max_message_bytes {
            return Err(NetworkError::MessageTooLarge {
                bytes: data.len(),
                max_bytes: self.max_message_bytes,
            });
        }
        let message_id = MessageId::of(&data);
        let hash = self.topic_hash(topic);
        match self.swarm.behaviour_mut().gossipsub.publish(hash, data) {
            Ok(_) => {
                count!(self.stats, gossip_published);
                debug!(?topic, %message_id, "published");
                Ok(message_id)
            }
            Err(gossipsub::PublishError::Duplicate) => {
                Err(NetworkError::DuplicateMessage { message_id })
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                Err(NetworkError::NoPeersForTopic { topic })
            }
            Err(error) => Err(NetworkError::PublishFailed {
                topic,
                reason: error.to_string(),
            }),
        }
    }

    fn on_report_validation(
        &mut self,
        message_id: MessageId,
        source: PeerId,
        validation: Validation,
    ) {
        let acceptance = match validation {
            Validation::Accept => {
                count!(self.stats, gossip_accepted);
                gossipsub::MessageAcceptance::Accept
            }
            Validation::Reject => {
                count!(self.stats, gossip_rejected);
                gossipsub::MessageAcceptance::Reject
            }
            Validation::Ignore => {
                count!(self.stats, gossip_ignored);
                gossipsub::MessageAcceptance::Ignore
            }
        };
        self.report(&message_id.to_gossipsub(), &source, acceptance);
    }

    fn report(
        &mut self,
        message_id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: gossipsub::MessageAcceptance,
    ) {
        let found = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(message_id, source, acceptance);
        if !found {
            // Validated too late: the message left gossipsub's cache (history_length heartbeats).
            debug!(peer = %source, "validation for a message no longer cached");
        }
    }

    fn on_send_sync_request(&mut self, peer: PeerId, data: Vec<u8>, reply: SyncReply) {
        if data.len() > self.max_sync_bytes {
            let _ = reply.send(Err(NetworkError::MessageTooLarge {
                bytes: data.len(),
                max_bytes: self.max_sync_bytes,
            }));
            return;
        }
        // Drop entries whose caller gave up; the behaviour's timeout removes them anyway.
        self.sync_outbound
            .retain(|_, (_, reply)| !reply.is_closed());
        if self.sync_outbound.len() >= self.max_pending_sync_requests {
            let _ = reply.send(Err(NetworkError::TooManySyncRequests {
                max: self.max_pending_sync_requests,
            }));
            return;
        }
        let request_id = self.swarm.behaviour_mut().sync.send_request(&peer, data);
        debug!(%peer, %request_id, "sync request sent");
        self.sync_outbound.insert(request_id, (peer, reply));
    }

    fn on_respond_sync(
        &mut self,
        request_id: SyncRequestId,
        data: Vec<u8>,
    ) -> Result<(), NetworkError> {
        if data.len() > self.max_sync_bytes {
            return Err(NetworkError::MessageTooLarge {
                bytes: data.len(),
                max_bytes: self.max_sync_bytes,
            });
        }
        let (_, channel) = self
            .sync_inbound
            .remove(&request_id)
            .ok_or(NetworkError::UnknownSyncRequest { request_id })?;
        self.swarm
            .behaviour_mut()
            .sync
            .send_response(channel, data)
            .map_err(|_| NetworkError::UnknownSyncRequest { request_id })
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let mut topics: HashMap<PeerId, Vec<Topic>> = HashMap::new();
        for (peer, hashes) in gossipsub.all_peers() {
            let known = hashes
                .iter()
                .filter_map(|hash| self.topic_of(hash))
                .collect();
            topics.insert(*peer, known);
        }
        let mut peers: Vec<PeerInfo> = self
            .connected
            .iter()
            .map(|(peer_id, (address, inbound))| PeerInfo {
                peer_id: *peer_id,
                address: address.clone(),
                inbound: *inbound,
                gossip_score: gossipsub.peer_score(peer_id),
                topics: topics.remove(peer_id).unwrap_or_default(),
            })
            .collect();
        peers.sort_by_key(|peer| peer.peer_id);
        peers
    }

    // ---- swarm events ----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossipsub(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify(event),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => {
                if let Err(error) = event.result {
                    debug!(peer = %event.peer, %error, "ping failed");
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if num_established.get() == 1 {
                    let address = endpoint.get_remote_address().clone();
                    info!(peer = %peer_id, %address, "peer connected");
                    self.connected
                        .insert(peer_id, (address, endpoint.is_listener()));
                    self.stats.set_peers_connected(self.connected.len());
                    self.emit(NetworkEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                if num_established == 0 && self.connected.remove(&peer_id).is_some() {
                    self.slow_peers.remove(&peer_id);
                    info!(peer = %peer_id, cause = ?cause, "peer disconnected");
                    self.stats.set_peers_connected(self.connected.len());
                    self.emit(NetworkEvent::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                count!(self.stats, connection_failures);
                debug!(address = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                count!(self.stats, connection_failures);
                debug!(peer = ?peer_id, %error, "outgoing connection failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => info!(%address, "listening"),
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                warn!(?addresses, ?reason, "listener closed")
            }
            other => trace!(event = ?other, "swarm event"),
        }
    }

    fn on_gossipsub(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                count!(self.stats, gossip_received);
                let Some(topic) = self.topic_of(&message.topic) else {
                    count!(self.stats, gossip_unknown_topic);
                    debug!(peer = %propagation_source, topic = %message.topic, "gossip on unknown topic");
                    self.report(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Ignore,
                    );
                    return;
                };
                if message.data.len() > self.max_message_bytes {
                    count!(self.stats, gossip_oversized);
                    warn!(
                        peer = %propagation_source,
                        ?topic,
                        bytes = message.data.len(),
                        max_bytes = self.max_message_bytes,
                        "oversized gossip message rejected"
                    );
                    self.report(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Reject,
                    );
                    return;
                }
                let id = MessageId::from_gossipsub(&message_id, &message.data);
                trace!(peer = %propagation_source, ?topic, message_id = %id, "gossip received");
                let delivered = self.emit(NetworkEvent::Gossip {
                    topic,
                    message_id: id,
                    source: propagation_source,
                    data: message.data,
                });
                if !delivered {
                    self.report(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Ignore,
                    );
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                debug!(peer = %peer_id, %topic, "peer subscribed")
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                debug!(peer = %peer_id, %topic, "peer unsubscribed")
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                debug!(peer = %peer_id, "peer does not speak gossipsub")
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => self.on_slow_peer(peer_id, failed_messages),
        }
    }

    /// Counts what a slow peer missed; warns about it at most once per
    /// [`SLOW_PEER_WARN_INTERVAL`] per peer, with the total since the last warning. Gossipsub
    /// reports a slow peer on every heartbeat, and a line per report (and gossipsub's own line
    /// per refused message, which formats the whole message) cost more CPU on a loaded
    /// 16-validator network than the messages themselves.
    fn on_slow_peer(&mut self, peer: PeerId, failed: gossipsub::FailedMessages) {
        let dropped =
            u64::try_from(failed.priority.saturating_add(failed.non_priority)).unwrap_or(u64::MAX);
        self.stats
            .gossip_send_dropped
            .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        let (last_warned, unreported) = self.slow_peers.entry(peer).or_insert((None, 0));
        *unreported = unreported.saturating_add(dropped);
        if last_warned.is_none_or(|at| now.duration_since(at) >= SLOW_PEER_WARN_INTERVAL) {
            warn!(
                peer = %peer,
                dropped = *unreported,
                "slow gossip peer: its send queue was full, messages to it were dropped"
            );
            *last_warned = Some(now);
            *unreported = 0;
        }
    }

    fn on_sync(&mut self, event: SyncEvent) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    if self.sync_inbound.len() >= self.max_pending_sync_requests {
                        // Dropping the channel fails the request on the peer's side.
                        count!(self.stats, sync_requests_dropped);
                        warn!(%peer, "too many pending sync requests; dropping one");
                        return;
                    }
                    count!(self.stats, sync_requests_received);
                    self.next_sync_request_id = self.next_sync_request_id.wrapping_add(1);
                    let id = SyncRequestId(self.next_sync_request_id);
                    debug!(%peer, request_id = id.0, bytes = request.len(), "sync request received");
                    self.sync_inbound.insert(id, (request_id, channel));
                    if !self.emit(NetworkEvent::SyncRequest {
                        peer,
                        request_id: id,
                        data: request,
                    }) {
                        self.sync_inbound.remove(&id);
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    count!(self.stats, sync_responses_received);
                    if let Some((_, reply)) = self.sync_outbound.remove(&request_id) {
                        debug!(%peer, %request_id, bytes = response.len(), "sync response");
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                count!(self.stats, sync_outbound_failures);
                debug!(%peer, %request_id, %error, "sync request failed");
                if let Some((_, reply)) = self.sync_outbound.remove(&request_id) {
                    let error = match error {
                        request_response::OutboundFailure::Timeout => {
                            NetworkError::SyncTimeout { peer }
                        }
                        other => NetworkError::SyncFailed {
                            peer,
                            reason: other.to_string(),
                        },
                    };
                    let _ = reply.send(Err(error));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                count!(self.stats, sync_inbound_failures);
                debug!(%peer, %request_id, %error, "inbound sync request failed");
                self.sync_inbound
                    .retain(|_, (inbound_id, _)| *inbound_id != request_id);
            }
            request_response::Event::ResponseSent {
                peer, request_id, ..
            } => {
                trace!(%peer, %request_id, "sync response sent");
            }
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        if info.protocol_version != identify_protocol(&self.chain_id) {
            debug!(peer = %peer_id, version = %info.protocol_version, "peer of another network; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer_id);
            return;
        }
        let kad_name = kad_protocol(&self.chain_id);
        if !info.protocols.iter().any(|p| p.as_ref() == kad_name) {
            return;
        }
        for addr in info.listen_addrs.into_iter().take(PEER_LISTEN_ADDRS_MAX) {
            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated {
                peer, addresses, ..
            } => {
                debug!(%peer, "routing table updated");
                self.dial_peer(peer, addresses.into_vec());
            }
            kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::Bootstrap(result),
                ..
            } => trace!(?result, "kademlia bootstrap progressed"),
            other => trace!(event = ?other, "kademlia event"),
        }
    }
}
