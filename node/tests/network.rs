//! The libp2p networking layer over loopback: discovery, gossip with validation, block-sync
//! request-response with its limits, and the block list.
//!
//! Every node listens on 127.0.0.1 port 0, every wait is bounded by a tokio timeout, and every
//! node is shut down at the end of its test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mesh_node::network::{
    Keypair, MessageId, Multiaddr, Network, NetworkConfig, NetworkError, NetworkEvent,
    NetworkHandle, PeerId, Topic, Validation,
};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

const CHAIN: &str = "mesh-test";
/// Upper bound for anything that should happen "soon" on loopback.
const SOON: Duration = Duration::from_secs(20);

struct Node {
    handle: NetworkHandle,
    events: mpsc::Receiver<NetworkEvent>,
}

fn config(bootnodes: Vec<Multiaddr>) -> NetworkConfig {
    let mut config = NetworkConfig::new(CHAIN, Keypair::generate_ed25519());
    config.listen_addr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    config.bootnodes = bootnodes;
    config.gossip_heartbeat = Duration::from_millis(200);
    config.discovery_interval = Duration::from_millis(500);
    config.sync_timeout = Duration::from_secs(2);
    config
}

async fn start(config: NetworkConfig) -> Node {
    let (handle, events) = timeout(SOON, Network::start(config))
        .await
        .expect("start timed out")
        .expect("start failed");
    Node { handle, events }
}

impl Node {
    fn id(&self) -> PeerId {
        self.handle.local_peer_id()
    }

    async fn addr(&self) -> Multiaddr {
        self.handle.listen_addrs().await.unwrap().remove(0)
    }

    /// Connected peers that are subscribed to both topics.
    async fn gossip_peers(&self) -> Vec<PeerId> {
        let peers = self.handle.peers().await.unwrap();
        peers
            .into_iter()
            .filter(|p| {
                p.topics.contains(&Topic::Transactions) && p.topics.contains(&Topic::Consensus)
            })
            .map(|p| p.peer_id)
            .collect()
    }

    async fn connected(&self) -> Vec<PeerId> {
        let peers = self.handle.peers().await.unwrap();
        peers.into_iter().map(|p| p.peer_id).collect()
    }

    /// The next gossip event within `limit`, skipping peer events.
    async fn next_gossip(
        &mut self,
        limit: Duration,
    ) -> Option<(Topic, MessageId, PeerId, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(NetworkEvent::Gossip {
                    topic,
                    message_id,
                    source,
                    data,
                })) => return Some((topic, message_id, source, data)),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next sync request within `limit`, skipping other events.
    async fn next_sync_request(
        &mut self,
        limit: Duration,
    ) -> Option<(PeerId, mesh_node::network::SyncRequestId, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(NetworkEvent::SyncRequest {
                    peer,
                    request_id,
                    data,
                })) => return Some((peer, request_id, data)),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Receives one gossip message, checks it and reports `validation`; returns its source.
    async fn expect_gossip(&mut self, topic: Topic, data: &[u8], validation: Validation) -> PeerId {
        let (got_topic, id, source, got) = self
            .next_gossip(SOON)
            .await
            .expect("gossip message not delivered");
        assert_eq!(got_topic, topic);
        assert_eq!(got, data);
        assert_eq!(id, MessageId::of(data));
        self.handle
            .report_validation(id, source, validation)
            .await
            .unwrap();
        source
    }

    /// Counts gossip events carrying `data` during `window`, accepting each.
    async fn count_gossip(&mut self, data: &[u8], window: Duration) -> usize {
        let deadline = Instant::now() + window;
        let mut count = 0;
        while let Some((_, id, source, got)) = self
            .next_gossip(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            if got == data {
                count += 1;
            }
            self.handle
                .report_validation(id, source, Validation::Accept)
                .await
                .unwrap();
        }
        count
    }

    async fn shutdown(self) {
        timeout(SOON, self.handle.shutdown())
            .await
            .unwrap()
            .unwrap();
    }
}

/// Re-evaluates `check` (which may `.await`) every 100 ms until it holds, at most `SOON`.
macro_rules! wait_until {
    ($what:expr, $check:expr) => {{
        let deadline = Instant::now() + SOON;
        loop {
            if $check {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

/// Publishes once some peer is subscribed (gossipsub refuses before that).
async fn publish(node: &Node, topic: Topic, data: &[u8]) -> MessageId {
    let deadline = Instant::now() + SOON;
    loop {
        match node.handle.publish(topic, data.to_vec()).await {
            Ok(id) => return id,
            Err(NetworkError::NoPeersForTopic { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publish failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_discover_each_other_and_gossip_exactly_once() {
    let mut a = start(config(vec![])).await;
    let bootnode = a.addr().await;
    let mut b = start(config(vec![bootnode.clone()])).await;
    let mut c = start(config(vec![bootnode])).await;
    let (ida, idb, idc) = (a.id(), b.id(), c.id());

    // B and C only know A; Kademlia makes them find each other.
    for (node, others) in [(&a, [idb, idc]), (&b, [ida, idc]), (&c, [ida, idb])] {
        wait_until!(
            "every node is connected to and subscribed with both others",
            {
                let peers = node.gossip_peers().await;
                others.iter().all(|o| peers.contains(o))
            }
        );
    }
    // A was dialled by B (its bootnode list), B dialled A.
    let a_peers = a.handle.peers().await.unwrap();
    let b_seen_by_a = a_peers.iter().find(|p| p.peer_id == idb).unwrap();
    assert!(b_seen_by_a.inbound, "B dialled A");
    let b_peers = b.handle.peers().await.unwrap();
    let a_seen_by_b = b_peers.iter().find(|p| p.peer_id == ida).unwrap();
    assert!(!a_seen_by_b.inbound, "B dialled A, so A is outbound for B");
    // Let a heartbeat or two build the meshes.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let tx = b"signed transaction batch".to_vec();
    let id = publish(&c, Topic::Transactions, &tx).await;
    assert_eq!(id, MessageId::of(&tx));
    a.expect_gossip(Topic::Transactions, &tx, Validation::Accept)
        .await;
    b.expect_gossip(Topic::Transactions, &tx, Validation::Accept)
        .await;
    // A and B forward after accepting; de-duplication by id keeps it at exactly once.
    assert_eq!(a.count_gossip(&tx, Duration::from_millis(1500)).await, 0);
    assert_eq!(b.count_gossip(&tx, Duration::from_millis(200)).await, 0);
    assert_eq!(
        c.count_gossip(&tx, Duration::from_millis(200)).await,
        0,
        "publisher must not get its own message"
    );
    // Publishing the same bytes again is a duplicate, not a second message.
    assert!(matches!(
        c.handle.publish(Topic::Transactions, tx.clone()).await,
        Err(NetworkError::DuplicateMessage { .. })
    ));

    let vote = b"consensus vote".to_vec();
    publish(&a, Topic::Consensus, &vote).await;
    b.expect_gossip(Topic::Consensus, &vote, Validation::Accept)
        .await;
    c.expect_gossip(Topic::Consensus, &vote, Validation::Accept)
        .await;

    let stats = a.handle.stats().snapshot();
    assert_eq!(stats.gossip_received, 1);
    assert_eq!(stats.gossip_published, 1);
    assert_eq!(stats.peers_connected, 2);

    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_oversized_messages_are_not_forwarded() {
    // A line A - B - C: B has a small message cap; A and C block each other so every message
    // from A to C must pass through B.
    let mut a_config = config(vec![]);
    a_config.max_message_bytes = 64 * 1024;
    let mut b_config = config(vec![]);
    b_config.max_message_bytes = 1024;
    let a = start(a_config).await;
    let mut b = start(b_config).await;
    let mut c = start(config(vec![])).await;
    a.handle.block_peer(c.id()).await.unwrap();
    c.handle.block_peer(a.id()).await.unwrap();
    b.handle.dial(a.addr().await).await.unwrap();
    b.handle.dial(c.addr().await).await.unwrap();
    wait_until!("B sees A and C subscribed", {
        let peers = b.gossip_peers().await;
        peers.contains(&a.id()) && peers.contains(&c.id())
    });
    wait_until!("A and C see B subscribed", {
        a.gossip_peers().await == vec![b.id()] && c.gossip_peers().await == vec![b.id()]
    });
    tokio::time::sleep(Duration::from_millis(600)).await;

    // B rejects: the message stops at B and A's score at B drops below zero.
    let bad = b"transaction with a bad signature".to_vec();
    publish(&a, Topic::Transactions, &bad).await;
    let source = b
        .expect_gossip(Topic::Transactions, &bad, Validation::Reject)
        .await;
    assert_eq!(source, a.id());
    assert_eq!(
        c.count_gossip(&bad, Duration::from_millis(1500)).await,
        0,
        "rejected message forwarded"
    );
    let score = b
        .handle
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.peer_id == a.id())
        .and_then(|p| p.gossip_score)
        .expect("A is scored at B");
    assert!(score < 0.0, "score of a rejected sender is {score}");
    assert_eq!(b.handle.stats().snapshot().gossip_rejected, 1);

    // Control: an accepted message does travel A -> B -> C.
    let good = b"good transaction".to_vec();
    publish(&a, Topic::Transactions, &good).await;
    b.expect_gossip(Topic::Transactions, &good, Validation::Accept)
        .await;
    c.expect_gossip(Topic::Transactions, &good, Validation::Accept)
        .await;

    // Over B's 1 KiB cap (but within A's): counted and dropped at B, never delivered or forwarded.
    let big = vec![7u8; 2000];
    publish(&a, Topic::Transactions, &big).await;
    wait_until!("B counts the oversized message", {
        b.handle.stats().snapshot().gossip_oversized == 1
    });
    assert_eq!(b.count_gossip(&big, Duration::from_millis(500)).await, 0);
    assert_eq!(c.count_gossip(&big, Duration::from_millis(1000)).await, 0);

    // Over the publisher's own cap: refused locally.
    let too_big = vec![0u8; 64 * 1024 + 1];
    assert!(matches!(
        a.handle.publish(Topic::Consensus, too_big).await,
        Err(NetworkError::MessageTooLarge {
            bytes: 65537,
            max_bytes: 65536
        })
    ));

    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_request_response_with_limits_and_timeout() {
    let mut a_config = config(vec![]);
    a_config.max_sync_bytes = 1024;
    let a = start(a_config).await;
    let mut b_config = config(vec![a.addr().await]);
    b_config.max_sync_bytes = 1024 * 1024;
    // B holds unanswered requests far longer than A waits, so A meets a peer that never
    // answers (with equal timeouts B's own timeout may close the stream first: `SyncFailed`).
    b_config.sync_timeout = Duration::from_secs(30);
    let mut b = start(b_config).await;
    let (ida, idb) = (a.id(), b.id());
    wait_until!("A and B connected", a.connected().await == vec![idb]);

    // A asks, B answers.
    let ask = tokio::spawn({
        let handle = a.handle.clone();
        async move {
            handle
                .send_sync_request(idb, b"blocks from 1".to_vec())
                .await
        }
    });
    let (peer, request_id, data) = b.next_sync_request(SOON).await.expect("no sync request");
    assert_eq!((peer, data.as_slice()), (ida, &b"blocks from 1"[..]));
    b.handle
        .respond_sync(request_id, b"block 1".to_vec())
        .await
        .unwrap();
    assert_eq!(
        timeout(SOON, ask).await.unwrap().unwrap().unwrap(),
        b"block 1"
    );
    // A request id is answered once.
    assert!(matches!(
        b.handle.respond_sync(request_id, b"again".to_vec()).await,
        Err(NetworkError::UnknownSyncRequest { .. })
    ));

    // B answers with 4 KiB, over A's 1 KiB cap: A refuses it before reading the payload.
    let ask = tokio::spawn({
        let handle = a.handle.clone();
        async move { handle.send_sync_request(idb, b"a big one".to_vec()).await }
    });
    let (_, request_id, _) = b.next_sync_request(SOON).await.expect("no sync request");
    // Over B's own cap is refused locally and leaves the request open.
    assert!(matches!(
        b.handle
            .respond_sync(request_id, vec![0u8; 1024 * 1024 + 1])
            .await,
        Err(NetworkError::MessageTooLarge { .. })
    ));
    b.handle
        .respond_sync(request_id, vec![1u8; 4096])
        .await
        .unwrap();
    let result = timeout(SOON, ask).await.unwrap().unwrap();
    assert!(
        matches!(result, Err(NetworkError::SyncFailed { .. })),
        "{result:?}"
    );

    // A request over A's own cap is refused locally.
    assert!(matches!(
        a.handle.send_sync_request(idb, vec![0u8; 1025]).await,
        Err(NetworkError::MessageTooLarge { .. })
    ));

    // B never answers: A gets a timeout error after `sync_timeout` (2 s), not a hang.
    let started = Instant::now();
    let ask = tokio::spawn({
        let handle = a.handle.clone();
        async move {
            handle
                .send_sync_request(idb, b"anyone there?".to_vec())
                .await
        }
    });
    let _ignored = b.next_sync_request(SOON).await.expect("no sync request");
    let result = timeout(SOON, ask).await.unwrap().unwrap();
    assert!(
        matches!(result, Err(NetworkError::SyncTimeout { peer }) if peer == idb),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(a.handle.stats().snapshot().sync_outbound_failures >= 2);

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_peer_disconnects_and_refuses_until_unblocked() {
    let a = start(config(vec![])).await;
    let a_addr = a.addr().await;
    // B keeps re-dialing A as its bootnode every 500 ms.
    let b = start(config(vec![a_addr.clone()])).await;
    let (ida, idb) = (a.id(), b.id());
    wait_until!("A and B connected", a.connected().await == vec![idb]);

    a.handle.block_peer(idb).await.unwrap();
    wait_until!("B disconnected from A", {
        a.connected().await.is_empty() && b.connected().await.is_empty()
    });
    let failures_before = a.handle.stats().snapshot().connection_failures;
    // An explicit dial from B and its bootnode redials are all refused.
    b.handle.dial(a_addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < deadline {
        assert!(a.connected().await.is_empty(), "blocked peer got back in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.handle.stats().snapshot().connection_failures > failures_before);

    a.handle.unblock_peer(idb).await.unwrap();
    wait_until!("B reconnected after unblock", {
        a.connected().await == vec![idb] && b.connected().await == vec![ida]
    });

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootnode_given_by_host_name_is_resolved_and_dialed() {
    let a = start(config(vec![])).await;
    let port = a
        .addr()
        .await
        .iter()
        .find_map(|protocol| match protocol {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let by_name: Multiaddr = format!("/dns4/localhost/tcp/{port}/p2p/{}", a.id())
        .parse()
        .unwrap();
    let b = start(config(vec![by_name])).await;
    let (ida, idb) = (a.id(), b.id());
    wait_until!("B dialed A by name", {
        a.connected().await == vec![idb] && b.connected().await == vec![ida]
    });
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootnode_that_comes_up_late_is_dialed_within_seconds() {
    // A's key and port are fixed before A exists; B knows A only as its bootnode.
    let a_key = Keypair::generate_ed25519();
    let a_id = a_key.public().to_peer_id();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let slow_discovery = |mut config: NetworkConfig| {
        // Far beyond the test's wait: only the bootnode backoff can connect them in time.
        config.discovery_interval = Duration::from_secs(300);
        config
    };
    let bootnode: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{a_id}")
        .parse()
        .unwrap();
    let b = start(slow_discovery(config(vec![bootnode]))).await;
    // B's first dial fails (nothing listens); A comes up 3 s later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(b.connected().await.is_empty());
    let mut a_config = slow_discovery(NetworkConfig::new(CHAIN, a_key));
    a_config.listen_addr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    a_config.gossip_heartbeat = Duration::from_millis(200);
    let a = start(a_config).await;
    let started = Instant::now();
    wait_until!(
        "B re-dials its bootnode A",
        b.connected().await == vec![a_id]
    );
    // Backoff 1, 2, 4, 8 s: the redial comes within 10 s of A starting, not 300 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn invalid_config_is_refused() {
    let mut bad_chain = config(vec![]);
    bad_chain.chain_id = "a/b".into();
    assert!(matches!(
        Network::start(bad_chain).await,
        Err(NetworkError::InvalidConfig { .. })
    ));
    let mut no_peer_id = config(vec![]);
    no_peer_id.bootnodes = vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()];
    assert!(matches!(
        Network::start(no_peer_id).await,
        Err(NetworkError::InvalidConfig { .. })
    ));
}
