//! WebSocket subscriptions: replay then live with each block exactly once, resubscription
//! after a disconnect, the lagged notice, transaction and account streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use jsonrpsee_core::client::Subscription;
use mesh_rpc::types::{AccountEvent, BlockEvent, TxEvent, TxStatus};
use mesh_rpc::{ApiError, Client, ClientConfig, ClientError, RpcServerConfig, WsTransport};

async fn ws(addr: std::net::SocketAddr) -> Client<WsTransport> {
    Client::ws(&format!("ws://{addr}"), &ClientConfig::default())
        .await
        .unwrap()
}

async fn next<T: serde::de::DeserializeOwned>(subscription: &mut Subscription<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("no notification within 10 s")
        .expect("subscription ended")
        .expect("notification did not parse")
}

fn height_of(event: &BlockEvent) -> u64 {
    match event {
        BlockEvent::Block {
            height,
            hash,
            header,
        } => {
            assert_eq!(header.height, *height);
            assert_eq!(header.hash(), *hash);
            *height
        }
        BlockEvent::Lagged { .. } => panic!("unexpected lag: {event:?}"),
    }
}

#[tokio::test]
async fn live_blocks_arrive_in_order() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let client = ws(addr).await;
    let mut blocks = client.subscribe_blocks(None).await.unwrap();
    for _ in 0..3 {
        node.finalize();
    }
    for expected in 1..=3 {
        assert_eq!(height_of(&next(&mut blocks).await), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_while_finalizing_delivers_each_block_exactly_once() {
    let node = MockNode::new();
    for _ in 0..30 {
        node.finalize();
    }
    let (_server, addr) = serve(&node, test_config()).await;
    let client = ws(addr).await;
    // Blocks keep coming while the replay runs.
    let producer = {
        let node = node.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                node.finalize();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut blocks = client.subscribe_blocks(Some(5)).await.unwrap();
    let mut seen = Vec::new();
    while seen.last() != Some(&60) {
        seen.push(height_of(&next(&mut blocks).await));
    }
    producer.await.unwrap();
    assert_eq!(seen, (5..=60).collect::<Vec<u64>>());
}

#[tokio::test]
async fn resubscribing_from_the_last_height_loses_nothing() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let mut seen = Vec::new();
    {
        let client = ws(addr).await;
        let mut blocks = client.subscribe_blocks(Some(1)).await.unwrap();
        for _ in 0..4 {
            node.finalize();
        }
        for _ in 0..4 {
            seen.push(height_of(&next(&mut blocks).await));
        }
        // The client disconnects; blocks keep being finalized meanwhile.
    }
    for _ in 0..5 {
        node.finalize();
    }
    let client = ws(addr).await;
    let resume = seen.last().unwrap() + 1;
    let mut blocks = client.subscribe_blocks(Some(resume)).await.unwrap();
    node.finalize();
    while seen.last() != Some(&10) {
        seen.push(height_of(&next(&mut blocks).await));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<u64>>());
}

/// On a single-threaded runtime the server task cannot run while the test finalizes, so the
/// node's 4-block stream overflows: the subscriber is told where to resume, and resuming there
/// delivers the rest.
#[tokio::test(flavor = "current_thread")]
async fn a_lagging_subscriber_is_told_and_can_resume() {
    let node = MockNode::with_capacity(4);
    let (_server, addr) = serve(&node, test_config()).await;
    let client = ws(addr).await;
    let mut blocks = client.subscribe_blocks(None).await.unwrap();
    node.finalize();
    assert_eq!(height_of(&next(&mut blocks).await), 1);
    for _ in 0..20 {
        node.finalize();
    }
    let mut seen = vec![1];
    let resume = loop {
        match next(&mut blocks).await {
            BlockEvent::Lagged { resume_from_height } => break resume_from_height,
            event => seen.push(height_of(&event)),
        }
    };
    assert_eq!(resume, seen.last().unwrap() + 1);
    let mut blocks = client.subscribe_blocks(Some(resume)).await.unwrap();
    while seen.last() != Some(&21) {
        seen.push(height_of(&next(&mut blocks).await));
    }
    assert_eq!(seen, (1..=21).collect::<Vec<u64>>());
}

#[tokio::test]
async fn replay_limits_are_enforced() {
    let node = MockNode::new();
    let config = RpcServerConfig {
        replay_blocks_max: 5,
        ..test_config()
    };
    for _ in 0..10 {
        node.finalize();
    }
    let (_server, addr) = serve(&node, config).await;
    let client = ws(addr).await;
    match client.subscribe_blocks(Some(1)).await {
        Err(ClientError::Api(ApiError::RangeTooLarge { requested, max, .. })) => {
            assert_eq!((requested, max), (10, 5));
        }
        other => panic!("expected range_too_large, got {other:?}"),
    }
    // Within the limit it works; from a future height it simply waits.
    let mut recent = client.subscribe_blocks(Some(8)).await.unwrap();
    assert_eq!(height_of(&next(&mut recent).await), 8);
    let mut future = client.subscribe_blocks(Some(12)).await.unwrap();
    node.finalize();
    node.finalize();
    assert_eq!(height_of(&next(&mut future).await), 12);
}

#[tokio::test]
async fn transaction_subscription_follows_its_fate() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let client = ws(addr).await;

    // Subscribed before submission: unknown, then final with its receipt.
    let stx = transfer(&alice(), 0, &bob(), 3);
    let hash = stx.hash();
    let mut events = client.subscribe_transaction(&hash).await.unwrap();
    match next(&mut events).await {
        TxEvent::Status { status, .. } => assert_eq!(status, TxStatus::Unknown),
        other => panic!("{other:?}"),
    }
    client.send_transaction(&stx).await.unwrap();
    let height = node.finalize();
    match next(&mut events).await {
        TxEvent::Status {
            status, receipt, ..
        } => {
            assert_eq!(status, TxStatus::Final { height, index: 0 });
            assert_eq!(receipt.unwrap().tx_hash, hash);
        }
        other => panic!("{other:?}"),
    }

    // Subscribed to a final one: final at once.
    let mut again = client.subscribe_transaction(&hash).await.unwrap();
    match next(&mut again).await {
        TxEvent::Status {
            status, receipt, ..
        } => {
            assert_eq!(status, TxStatus::Final { height, index: 0 });
            assert!(receipt.is_some());
        }
        other => panic!("{other:?}"),
    }

    // Pending, then dropped.
    let stx = transfer(&alice(), 1, &bob(), 3);
    client.send_transaction(&stx).await.unwrap();
    let mut events = client.subscribe_transaction(&stx.hash()).await.unwrap();
    match next(&mut events).await {
        TxEvent::Status { status, .. } => assert_eq!(status, TxStatus::Pending),
        other => panic!("{other:?}"),
    }
    node.drop_tx(stx.hash(), "evicted");
    match next(&mut events).await {
        TxEvent::Status { status, .. } => assert_eq!(
            status,
            TxStatus::Dropped {
                detail: "evicted".into()
            }
        ),
        other => panic!("{other:?}"),
    }

    // Bad params are refused with our error.
    let response = call(addr, "mesh_getTransaction", r#"["0x01"]"#).await;
    expect_error(&response, i64::from(mesh_rpc::error::INVALID_PARAMS));
}

#[tokio::test]
async fn account_subscription_reports_changes_only() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let client = ws(addr).await;
    let mut events = client.subscribe_account(&bob().address()).await.unwrap();
    let balance = |event: AccountEvent| match event {
        AccountEvent::Account {
            balance, height, ..
        } => (height, balance),
        other => panic!("{other:?}"),
    };
    assert_eq!(balance(next(&mut events).await), (0, 500));
    client
        .send_transaction(&transfer(&alice(), 0, &bob(), 25))
        .await
        .unwrap();
    node.finalize(); // height 1 changes bob
    node.finalize(); // height 2 does not
    client
        .send_transaction(&put(&alice(), 1, b"k", b"v"))
        .await
        .unwrap();
    node.finalize(); // height 3 changes alice only
    client
        .send_transaction(&transfer(&bob(), 0, &alice(), 5))
        .await
        .unwrap();
    node.finalize(); // height 4: bob pays 5 + fee 1
    assert_eq!(balance(next(&mut events).await), (1, 525));
    assert_eq!(balance(next(&mut events).await), (4, 519));
}

/// A subscriber that stops reading: once the server cannot hand it a notification within
/// `subscription_send_timeout_ms`, it gets the `lagged` notice (when it reads again) and the
/// subscription ends — it is never silently dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_gets_a_lagged_notice() {
    let node = MockNode::new();
    // About 800 bytes of JSON a block: 10,000 blocks overflow any loopback socket buffers
    // (at most 4 MiB here).
    for _ in 0..10_000 {
        node.finalize();
    }
    let config = RpcServerConfig {
        replay_blocks_max: 20_000,
        subscription_send_timeout_ms: 200,
        connection_buffer_messages: 1,
        ..test_config()
    };
    let (_server, addr) = serve(&node, config).await;
    let mut stalled = StalledWs::connect(
        addr,
        r#"{"jsonrpc":"2.0","id":1,"method":"mesh_subscribeBlocks","params":[{"from_height":1}]}"#,
    )
    .await;
    // Not reading: the replay backs up and times out. (Generous: the buffers must fill first,
    // which takes longer on a loaded machine.)
    tokio::time::sleep(Duration::from_secs(4)).await;
    let text = stalled
        .read_until(
            |t| t.contains(r#""type":"lagged""#),
            Duration::from_secs(20),
        )
        .await;
    let at = text.find(r#""type":"lagged""#).expect("no lagged notice");
    let tail = &text[at..];
    let resume: u64 = tail
        .split(r#""resume_from_height":"#)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .expect("lagged notice names the resume height");
    assert!(resume > 1 && resume <= 10_000, "resume at {resume}");
    // Nothing after the notice: the subscription is closed.
    let after = stalled
        .read_until(|t| t.contains("mesh_block"), Duration::from_millis(500))
        .await;
    assert!(!after.contains(r#""type":"block""#), "{after}");
}
