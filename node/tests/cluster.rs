//! In-process multi-node tests: real libp2p on loopback, real RocksDB, real consensus.
//! Each test bounds every wait and stops every node it starts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use std::time::Duration;

use common::*;
use mesh_ledger::state::StateReader;
use mesh_ledger::{Op, Transaction};
use mesh_node::service::{self, RunningNode};
use tokio::time::{sleep, Instant};

const LIMIT: Duration = Duration::from_secs(90);

async fn start_validators(testnet: &Testnet, dirs: &[tempfile::TempDir]) -> Vec<RunningNode> {
    let mut nodes: Vec<RunningNode> = Vec::new();
    for (i, key) in testnet.validators.iter().enumerate() {
        let bootnodes = nodes
            .first()
            .and_then(|n| n.p2p_address())
            .map(|a| vec![a.to_string()])
            .unwrap_or_default();
        let config = test_config(0, 0, bootnodes);
        let node = service::start(options(dirs[i].path(), testnet, Some(key), config))
            .await
            .expect("node starts");
        nodes.push(node);
    }
    nodes
}

async fn wait_height(node: &RunningNode, height: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if node.handle().status().finalized_height >= height {
            return true;
        }
        sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn stop_all(nodes: Vec<RunningNode>) {
    for node in nodes {
        node.stop().await.expect("clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_validators_finalize_and_replicate_a_transfer() {
    let testnet = Testnet::new(4);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_validators(&testnet, &dirs).await;

    for node in &nodes {
        assert!(
            wait_height(node, 3, LIMIT).await,
            "every validator finalizes blocks"
        );
    }

    let recipient = mesh_ledger::SecretKey::from_seed([99; 32]).address();
    let tx = Transaction {
        chain_id: CHAIN.into(),
        sender: testnet.account.address(),
        nonce: 0,
        fee: 10,
        op: Op::Transfer {
            to: recipient,
            amount: 12_345,
        },
    }
    .sign(&testnet.account);
    let hash = nodes[0]
        .handle()
        .submit(tx.clone())
        .await
        .unwrap()
        .expect("admitted");
    // Same bytes again: same hash, never a second execution.
    assert_eq!(nodes[0].handle().submit(tx).await.unwrap(), Ok(hash));

    let deadline = Instant::now() + LIMIT;
    loop {
        let store = nodes[3].handle().store();
        if let Some(account) = store.account(&recipient).unwrap() {
            assert_eq!(account.balance, 12_345);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the transfer reaches node 3's state"
        );
        sleep(Duration::from_millis(100)).await;
    }
    let location = nodes[3]
        .handle()
        .store()
        .tx_location(&hash)
        .unwrap()
        .expect("indexed");
    // Every node agrees on the block that holds it.
    for node in &nodes {
        assert!(wait_height(node, location.height, LIMIT).await);
        let header = node
            .handle()
            .store()
            .header(location.height)
            .unwrap()
            .unwrap();
        let reference = nodes[0]
            .handle()
            .store()
            .header(location.height)
            .unwrap()
            .unwrap();
        assert_eq!(header.hash(), reference.hash());
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_full_node_syncs_to_the_same_state() {
    let testnet = Testnet::new(4);
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_validators(&testnet, &dirs[..4]).await;
    assert!(wait_height(&nodes[0], 12, LIMIT).await);
    // Epochs of 5 blocks: the validators crossed the boundaries at 5 and 10 without a
    // restart, and the full node syncs across both (each epoch checked with its own set).
    assert!(nodes[0].handle().status().epoch >= 2);

    let bootnode = nodes[1].p2p_address().unwrap().to_string();
    let config = test_config(0, 0, vec![bootnode]);
    let full = service::start(options(dirs[4].path(), &testnet, None, config))
        .await
        .unwrap();
    assert_eq!(full.handle().status().validator, None);
    let target = nodes[0].handle().status().finalized_height;
    assert!(
        wait_height(&full, target + 2, LIMIT).await,
        "the full node catches up and follows"
    );
    assert!(full.handle().status().epoch >= 2);
    let height = target + 2;
    let ours = full.handle().store().header(height).unwrap().unwrap();
    assert!(wait_height(&nodes[2], height, LIMIT).await);
    let theirs = nodes[2].handle().store().header(height).unwrap().unwrap();
    assert_eq!(ours.hash(), theirs.hash());
    assert_eq!(ours.state_root, theirs.state_root);
    full.stop().await.unwrap();
    stop_all(nodes).await;
}

/// Publishes on `topic` once some peer subscribes (bounded).
async fn publish_when_possible(
    net: &mesh_node::network::NetworkHandle,
    topic: mesh_node::network::Topic,
    data: Vec<u8>,
) {
    let deadline = Instant::now() + LIMIT;
    loop {
        match net.publish(topic, data.clone()).await {
            Ok(_) => return,
            Err(mesh_node::network::NetworkError::NoPeersForTopic { .. }) => {
                assert!(Instant::now() < deadline, "no peer subscribed in time");
                sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("publish failed: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_garbage_peer_is_penalised_and_the_chain_goes_on() {
    use mesh_consensus::{Message, SignedVote, View, Vote};
    use mesh_node::network::{Keypair, Network, NetworkConfig, Topic};
    use mesh_node::wire::{ConsensusEnvelope, TxGossip};

    let testnet = Testnet::new(4);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_validators(&testnet, &dirs).await;
    assert!(wait_height(&nodes[0], 2, LIMIT).await);

    let bootnode = nodes[0].p2p_address().unwrap();
    let start_attacker = || async {
        let mut config = NetworkConfig::new(CHAIN, Keypair::generate_ed25519());
        config.listen_addr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        config.bootnodes = vec![bootnode.clone()];
        // Our own cap is higher than the nodes', so we can send what they must refuse.
        config.max_message_bytes = 8 << 20;
        tune_network(&mut config);
        Network::start(config).await.unwrap()
    };
    // Two identities: two refused consensus messages put a peer on the graylist (P4 is
    // quadratic), after which nothing more from it is even looked at; whether a third gets in
    // first is a race. So the first attacker sends two, the second the rest.
    let (flooder, _flooder_events) = start_attacker().await;
    let attacker_id = flooder.local_peer_id();
    let (attacker, _events) = start_attacker().await;

    // 1. An oversized message (over the nodes' 4 MiB cap).
    publish_when_possible(&flooder, Topic::Consensus, vec![0; 5 << 20]).await;
    // 2. Bytes that are not a consensus message at all.
    publish_when_possible(&flooder, Topic::Consensus, vec![0, 0xff, 0x13, 0x37]).await;
    // 3. A vote in a validator's name with someone else's signature, in the round the
    // validators are in (or about to be), so it is checked rather than dropped as stale. With
    // epochs of five blocks the round may be gone before the vote arrives (then it is refused
    // as `wrong_epoch`, unpunished): it is sent again below until one is checked.
    let forger = mesh_ledger::SecretKey::from_seed([77; 32]);
    let forged_vote = |status: mesh_node::driver::NodeStatus, sequence: u64| {
        let round = mesh_consensus::Round {
            epoch: mesh_consensus::Epoch(status.epoch),
            view: View(status.view + 1),
        };
        let forged = Vote::Nullify(round).sign(&forger, CHAIN);
        let forged = SignedVote {
            signer: testnet.validators[1].address(),
            ..forged
        };
        ConsensusEnvelope::V1 {
            sender: testnet.validators[1].address(),
            sequence,
            message: Message::Vote(forged),
        }
        .encode()
    };
    let mut sequence = 1;
    publish_when_possible(
        &attacker,
        Topic::Consensus,
        forged_vote(nodes[0].handle().status(), sequence),
    )
    .await;
    // 4. A kind from the future: ignored and counted, not penalised.
    publish_when_possible(&attacker, Topic::Consensus, vec![9, 1, 2, 3]).await;
    // 5. Transactions with a bad signature.
    let mut bad_tx = mesh_ledger::Transaction {
        chain_id: CHAIN.into(),
        sender: testnet.account.address(),
        nonce: 0,
        fee: 10,
        op: mesh_ledger::Op::Delete { key: b"k".to_vec() },
    }
    .sign(&forger);
    bad_tx.tx.fee = 11;
    publish_when_possible(
        &attacker,
        Topic::Transactions,
        TxGossip::V1 { txs: vec![bad_tx] }.encode(),
    )
    .await;

    // The chain goes on.
    let height = nodes[0].handle().status().finalized_height;
    for node in &nodes {
        assert!(
            wait_height(node, height + 3, LIMIT).await,
            "finality continues"
        );
    }

    // The refusals are counted by reason, and the attacker's gossip score went negative.
    let deadline = Instant::now() + LIMIT;
    loop {
        // Each message reached the nodes the attacker could still publish to: after the
        // oversized one a node may have cut the flooder's stream before its next message, so
        // a refusal counts wherever it was counted.
        let text: String = nodes
            .iter()
            .map(|node| scrape(node.metrics_addr).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let has = |reason: &str| {
            text.lines()
                .any(|l| l.starts_with("mesh_rejected_messages_total") && l.contains(reason))
        };
        let peers = nodes[0].handle().network().peers().await.unwrap();
        let score = peers
            .iter()
            .find(|p| p.peer_id == attacker_id)
            .and_then(|p| p.gossip_score);
        // It went to whichever nodes were in the attacker's gossip mesh.
        let oversized: u64 = nodes
            .iter()
            .map(|n| n.handle().network().stats().snapshot().gossip_oversized)
            .sum();
        if has("reason=\"malformed\"")
            && has("reason=\"invalid_signature\"")
            && has("reason=\"unknown_kind\"")
            && has("reason=\"invalid_tx\"")
            && oversized > 0
            && score.is_none_or(|s| s < 0.0)
        {
            break;
        }
        if !has("reason=\"invalid_signature\"") {
            sequence += 1;
            let envelope = forged_vote(nodes[0].handle().status(), sequence);
            let _ = attacker.publish(Topic::Consensus, envelope).await;
        }
        let rejected: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mesh_rejected_messages_total"))
            .filter(|l| !l.contains("wrong_epoch"))
            .collect();
        assert!(
            Instant::now() < deadline,
            "refusals not all counted: score {score:?}, oversized {oversized}, {rejected:?}"
        );
        sleep(Duration::from_millis(200)).await;
    }
    attacker.shutdown().await.unwrap();
    flooder.shutdown().await.unwrap();
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lying_sync_peer_is_passed_over_and_sync_completes_from_honest_ones() {
    use mesh_node::network::{Keypair, Network, NetworkConfig, NetworkEvent};
    use mesh_node::wire::{SyncRequest, SyncResponse};

    let testnet = Testnet::new(4);
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_validators(&testnet, &dirs[..4]).await;
    assert!(wait_height(&nodes[0], 10, LIMIT).await);

    // A peer that claims a far higher chain and answers every block request with garbage
    // or with blocks that do not match their headers.
    let mut config = NetworkConfig::new(CHAIN, Keypair::generate_ed25519());
    config.listen_addr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    tune_network(&mut config);
    let (liar, mut liar_events) = Network::start(config).await.unwrap();
    let liar_addr = liar.listen_addrs().await.unwrap().remove(0);
    let liar_addr = if mesh_node::network::peer_id_of(&liar_addr).is_some() {
        liar_addr
    } else {
        liar_addr.with(libp2p::multiaddr::Protocol::P2p(liar.local_peer_id()))
    };
    let honest_blocks = nodes[0]
        .handle()
        .store()
        .block(1)
        .unwrap()
        .unwrap()
        .encode();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let liar_task = {
        let liar = liar.clone();
        let asked = std::sync::Arc::clone(&asked);
        tokio::spawn(async move {
            while let Some(event) = liar_events.recv().await {
                if let NetworkEvent::SyncRequest {
                    request_id, data, ..
                } = event
                {
                    let answered = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    let response = match SyncRequest::decode(&data) {
                        Ok(SyncRequest::Status) => SyncResponse::Status {
                            finalized_height: 1_000_000,
                            finalized_hash: mesh_ledger::Hash::ZERO,
                        }
                        .encode(),
                        // Garbage half the time, a payload under the wrong header otherwise.
                        _ if answered.is_multiple_of(2) => vec![1, 0xde, 0xad],
                        _ => {
                            let mut forged = SyncResponse::Blocks { blocks: Vec::new() };
                            if let SyncResponse::Blocks { blocks } = &mut forged {
                                let header = mesh_consensus::Header {
                                    epoch: mesh_consensus::Epoch(0),
                                    view: mesh_consensus::View(1),
                                    height: mesh_consensus::Height(1),
                                    parent_view: mesh_consensus::View(0),
                                    parent: mesh_ledger::Hash::ZERO,
                                    hash: mesh_ledger::Hash::ZERO,
                                };
                                blocks.push(mesh_consensus::CertifiedBlock {
                                    block: mesh_consensus::Block {
                                        header,
                                        payload: honest_blocks.clone(),
                                    },
                                    certificate: mesh_consensus::Certificate {
                                        subject: header.id(),
                                        signatures: Vec::new(),
                                    },
                                });
                            }
                            forged.encode()
                        }
                    };
                    let _ = liar.respond_sync(request_id, response).await;
                }
            }
        })
    };

    // A full node that first knows only the liar: it is asked for status and blocks and
    // answers with lies and garbage.
    let config = test_config(0, 0, vec![liar_addr.to_string()]);
    let full = service::start(options(dirs[4].path(), &testnet, None, config))
        .await
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while asked.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the liar is asked");
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        full.handle().status().finalized_height,
        0,
        "nothing accepted from the liar"
    );
    // Then it meets an honest validator (and through it, the rest).
    full.handle()
        .network()
        .dial(nodes[0].p2p_address().unwrap())
        .await
        .unwrap();
    let target = nodes[0].handle().status().finalized_height;
    assert!(
        wait_height(&full, target + 2, LIMIT).await,
        "sync completes from honest peers"
    );
    let height = target + 2;
    assert!(wait_height(&nodes[1], height, LIMIT).await);
    let ours = full.handle().store().header(height).unwrap().unwrap();
    let theirs = nodes[1].handle().store().header(height).unwrap().unwrap();
    assert_eq!(ours.hash(), theirs.hash());
    assert_eq!(ours.state_root, theirs.state_root);

    full.stop().await.unwrap();
    liar.shutdown().await.unwrap();
    liar_task.abort();
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_partition_stops_finality_and_healing_resumes_it() {
    let testnet = Testnet::new(4);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<RunningNode> = Vec::new();
    for (i, key) in testnet.validators.iter().enumerate() {
        let bootnodes = nodes
            .first()
            .and_then(|n| n.p2p_address())
            .map(|a| vec![a.to_string()])
            .unwrap_or_default();
        let mut options = options(
            dirs[i].path(),
            &testnet,
            Some(key),
            test_config(0, 0, bootnodes),
        );
        // Node 3 runs without the admin endpoints: they must not exist there.
        options.admin = i < 3;
        nodes.push(service::start(options).await.unwrap());
    }
    for node in &nodes {
        assert!(wait_height(node, 2, LIMIT).await);
    }
    let metrics = |i: usize| nodes[i].metrics_addr;
    let peer = |i: usize| nodes[i].handle().network().local_peer_id().to_string();
    let (status, _) = post(metrics(3), "/admin/heal", "").unwrap();
    assert_eq!(status, 404, "no admin surface without --admin");
    let (status, body) = post(metrics(0), "/admin/partition", "not-a-peer-id").unwrap();
    assert_eq!(status, 400, "{body}");

    // {0, 1} | {2, 3}: node 3 cannot block, but 0 and 1 refuse 2 and 3, and 2 refuses 0, 1.
    let others_of_01 = format!("{}\n{}\n", peer(2), peer(3));
    let others_of_23 = format!("{}\n{}\n", peer(0), peer(1));
    for i in [0, 1] {
        assert_eq!(
            post(metrics(i), "/admin/partition", &others_of_01)
                .unwrap()
                .0,
            200
        );
    }
    assert_eq!(
        post(metrics(2), "/admin/partition", &others_of_23)
            .unwrap()
            .0,
        200
    );
    // Let blocks in flight settle, then nothing more may become final anywhere: neither
    // side holds the 3 of 4 votes a quorum needs.
    sleep(Duration::from_secs(2)).await;
    let frozen: Vec<u64> = nodes
        .iter()
        .map(|n| n.handle().status().finalized_height)
        .collect();
    sleep(Duration::from_secs(3)).await;
    let still: Vec<u64> = nodes
        .iter()
        .map(|n| n.handle().status().finalized_height)
        .collect();
    assert_eq!(frozen, still, "no finality without a quorum");

    for i in [0, 1, 2] {
        assert_eq!(post(metrics(i), "/admin/heal", "").unwrap().0, 200);
    }
    let top = *still.iter().max().unwrap();
    for node in &nodes {
        assert!(
            wait_height(node, top + 3, LIMIT).await,
            "finality resumes after healing"
        );
    }
    let reference = nodes[0].handle().store().header(top + 2).unwrap().unwrap();
    for node in &nodes[1..] {
        let header = node.handle().store().header(top + 2).unwrap().unwrap();
        assert_eq!(
            header.hash(),
            reference.hash(),
            "no fork across the partition"
        );
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_transaction_outlives_a_restart_of_its_node() {
    use mesh_node::driver::MempoolLookup;
    let testnet = Testnet::new(1);
    let dir = tempfile::tempdir().unwrap();
    let key = &testnet.validators[0];
    let start = || {
        service::start(options(
            dir.path(),
            &testnet,
            Some(key),
            test_config(0, 0, vec![]),
        ))
    };
    let node = start().await.expect("node starts");
    assert!(
        wait_height(&node, 1, LIMIT).await,
        "the validator finalizes"
    );
    let transfer = |nonce: u64| {
        Transaction {
            chain_id: CHAIN.into(),
            sender: testnet.account.address(),
            nonce,
            fee: 10,
            op: Op::Transfer {
                to: mesh_ledger::SecretKey::from_seed([98; 32]).address(),
                amount: 7,
            },
        }
        .sign(&testnet.account)
    };
    // Nonce 1 before nonce 0: accepted, and pending until nonce 0 arrives.
    let later = transfer(1);
    let later_hash = node
        .handle()
        .submit(later)
        .await
        .unwrap()
        .expect("admitted");
    node.stop().await.expect("clean stop");

    let node = start().await.expect("node restarts");
    let lookup = node.handle().pending_tx(later_hash).await.unwrap();
    assert!(
        matches!(lookup, Some(MempoolLookup::Pending(_))),
        "the accepted transaction is pending again after the restart: {lookup:?}"
    );
    // Its predecessor arrives: both become final, each once.
    node.handle()
        .submit(transfer(0))
        .await
        .unwrap()
        .expect("admitted");
    let deadline = Instant::now() + LIMIT;
    while node
        .handle()
        .store()
        .tx_location(&later_hash)
        .unwrap()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the journaled transaction becomes final"
        );
        sleep(Duration::from_millis(100)).await;
    }
    let account = node
        .handle()
        .store()
        .account(&testnet.account.address())
        .unwrap()
        .unwrap();
    assert_eq!(account.nonce, 2);
    // Final transactions leave the journal (docs/storage.md: `txs/v1/` ‖ hash), so a restart
    // has nothing to re-admit.
    let journaled = node
        .handle()
        .store()
        .consensus_records_with_prefix(b"txs/v1/", 16)
        .unwrap();
    assert!(journaled.is_empty(), "{} entries left", journaled.len());
    node.stop().await.expect("clean stop");
}
