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
    let height = target + 2;
    let ours = full.handle().store().header(height).unwrap().unwrap();
    assert!(wait_height(&nodes[2], height, LIMIT).await);
    let theirs = nodes[2].handle().store().header(height).unwrap().unwrap();
    assert_eq!(ours.hash(), theirs.hash());
    assert_eq!(ours.state_root, theirs.state_root);
    full.stop().await.unwrap();
    stop_all(nodes).await;
}
