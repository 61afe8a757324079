//! Hostile and broken input: every malformed request gets a clean JSON-RPC error (or a clean
//! HTTP refusal), and the server keeps answering afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use mesh_rpc::error::*;
use mesh_rpc::{Client, ClientConfig, ClientError, RpcServerConfig};

/// The server still answers and the node still finalizes after the abuse.
async fn still_healthy(node: &MockNode, addr: std::net::SocketAddr) {
    let before = node.height();
    node.finalize();
    let response = call(addr, "mesh_status", "[]").await;
    assert_eq!(response["result"]["finalized_height"], before + 1);
}

#[tokio::test]
async fn malformed_requests_use_standard_codes() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let alice_hex = alice().address().to_string();

    // Invalid JSON.
    let response = rpc_raw(addr, r#"{"jsonrpc":"2.0","id":1,"method":"#).await;
    expect_error(&response, i64::from(PARSE_ERROR));
    // Not a request object.
    let response = rpc_raw(addr, r#"{"jsonrpc":"2.0","id":1}"#).await;
    expect_error(&response, i64::from(INVALID_REQUEST));
    let response = rpc_raw(addr, r#"42"#).await;
    let code = response["error"]["code"].as_i64().unwrap();
    assert!(
        code == i64::from(INVALID_REQUEST) || code == i64::from(PARSE_ERROR),
        "{response}"
    );
    // Unknown method.
    let response = call(addr, "mesh_noSuchMethod", "[]").await;
    expect_error(&response, i64::from(METHOD_NOT_FOUND));

    // Wrong types.
    for (method, params) in [
        ("mesh_getAccount", "[42]".to_owned()),
        (
            "mesh_getAccount",
            format!(r#"["{alice_hex}", {{"height": "ten"}}]"#),
        ),
        (
            "mesh_getAccount",
            format!(r#"["{alice_hex}", {{"unknown_option": true}}]"#),
        ),
        ("mesh_getBlock", "[-1]".to_owned()),
        ("mesh_getBlock", "[1.5]".to_owned()),
        ("mesh_getBlock", r#"[{"height": 1}]"#.to_owned()),
        ("mesh_getBlock", r#"[1, "yes"]"#.to_owned()),
        ("mesh_getCertificate", r#"["1"]"#.to_owned()),
        ("mesh_getCertificate", "[]".to_owned()),
        (
            "mesh_listKeys",
            format!(r#"["{alice_hex}", "0x", null, -5]"#),
        ),
        ("mesh_sendTransaction", "[123]".to_owned()),
        ("mesh_sendTransaction", "[]".to_owned()),
        (
            "mesh_sendTransactionAndWait",
            r#"["0x00", "soon"]"#.to_owned(),
        ),
        // Object-form params are refused (positional only).
        ("mesh_getReceipt", r#"{"hash": "0x00"}"#.to_owned()),
        // Too many params.
        ("mesh_status", "[1, 2, 3, 4, 5, 6]".to_owned()),
        ("mesh_peers", "[1]".to_owned()),
    ] {
        let response = call(addr, method, &params).await;
        let error = expect_error(&response, i64::from(INVALID_PARAMS));
        assert_eq!(
            error["data"]["reason"], "invalid_params",
            "{method} {params}"
        );
    }

    // Invalid hex.
    for (method, params) in [
        ("mesh_getTransaction", r#"["0xzz"]"#.to_owned()),
        ("mesh_getTransaction", r#"["0x1234"]"#.to_owned()),
        ("mesh_getAccount", r#"["not hex"]"#.to_owned()),
        ("mesh_getValue", format!(r#"["{alice_hex}", "0xabc"]"#)),
        ("mesh_getValue", format!(r#"["{alice_hex}", "abcd"]"#)),
        ("mesh_sendTransaction", r#"["0xg0"]"#.to_owned()),
        ("mesh_getBlock", r#"["0x12"]"#.to_owned()),
        // Longer than any key can be.
        (
            "mesh_getValue",
            format!(r#"["{alice_hex}", "0x{}"]"#, "00".repeat(1_100_000)),
        ),
    ] {
        let response = call(addr, method, &params).await;
        expect_error(&response, i64::from(INVALID_PARAMS));
    }

    // A truncated transaction.
    let full = hex_of(&transfer(&alice(), 0, &bob(), 1));
    let truncated = &full[..full.len() - 10];
    let response = call(addr, "mesh_sendTransaction", &format!(r#"["{truncated}"]"#)).await;
    let error = expect_error(&response, i64::from(INVALID_PARAMS));
    assert_eq!(error["data"]["param"], "tx");
    // Trailing bytes.
    let response = call(addr, "mesh_sendTransaction", &format!(r#"["{full}00"]"#)).await;
    expect_error(&response, i64::from(INVALID_PARAMS));
    // Over the server's transaction ceiling: refused before decoding.
    let big = format!("0x{}", "00".repeat(1_100_000));
    let response = call(addr, "mesh_sendTransaction", &format!(r#"["{big}"]"#)).await;
    let error = expect_error(&response, i64::from(TOO_LARGE));
    assert_eq!(error["data"]["what"], "transaction");

    still_healthy(&node, addr).await;
}

#[tokio::test]
async fn oversized_body_and_huge_batch_are_refused_cleanly() {
    let node = MockNode::new();
    let config = RpcServerConfig {
        request_body_bytes_max: 4 << 20,
        batch_len_max: 100,
        ..test_config()
    };
    let (_server, addr) = serve(&node, config).await;

    // Body over the limit: HTTP 413, no JSON-RPC processing.
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"mesh_status","params":["{}"]}}"#,
        "a".repeat(5 << 20)
    );
    let (status, _) = http_raw(addr, "POST", "/", body.as_bytes()).await;
    assert_eq!(status, 413);

    // A batch of 10,000 calls: refused whole with one error.
    let calls: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"mesh_status","params":[]}}"#))
        .collect();
    let response = rpc_raw(addr, &format!("[{}]", calls.join(","))).await;
    let error = expect_error(&response, i64::from(TOO_BIG_BATCH));
    assert!(
        error["message"].as_str().unwrap().contains("batch"),
        "{error}"
    );

    // A batch within the limit works, and each call is answered.
    let calls: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"mesh_status","params":[]}}"#))
        .collect();
    let response = rpc_raw(addr, &format!("[{}]", calls.join(","))).await;
    assert_eq!(response.as_array().unwrap().len(), 50);

    // An empty batch is an invalid request.
    let response = rpc_raw(addr, "[]").await;
    expect_error(&response, i64::from(INVALID_REQUEST));

    still_healthy(&node, addr).await;
}

#[tokio::test]
async fn many_connections_are_bounded() {
    let node = MockNode::new();
    let config = RpcServerConfig {
        connections_max: 8,
        ..test_config()
    };
    let (_server, addr) = serve(&node, config).await;
    // Hold 8 WebSocket connections open: the 9th is refused, the first 8 keep working.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(
            Client::ws(&format!("ws://{addr}"), &ClientConfig::default())
                .await
                .unwrap(),
        );
    }
    let extra = tokio::time::timeout(
        Duration::from_secs(10),
        Client::ws(&format!("ws://{addr}"), &ClientConfig::default()),
    )
    .await
    .expect("connecting must not hang");
    match extra {
        Err(_) => {}
        Ok(client) => assert!(client.status().await.is_err()),
    }
    for client in &clients {
        client.status().await.unwrap();
    }
    drop(clients);
    // Slots free up again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    still_healthy(&node, addr).await;
}

#[tokio::test]
async fn many_subscriptions_per_connection_are_bounded() {
    let node = MockNode::new();
    let config = RpcServerConfig {
        subscriptions_per_connection_max: 16,
        ..test_config()
    };
    let (_server, addr) = serve(&node, config).await;
    let client = Client::ws(&format!("ws://{addr}"), &ClientConfig::default())
        .await
        .unwrap();
    let mut subscriptions = Vec::new();
    for _ in 0..16 {
        subscriptions.push(client.subscribe_blocks(None).await.unwrap());
    }
    match client.subscribe_blocks(None).await {
        Err(ClientError::Rpc { code, .. }) => {
            assert_eq!(code, TOO_MANY_SUBSCRIPTIONS)
        }
        other => panic!("expected too many subscriptions, got {other:?}"),
    }
    // The 16 still deliver.
    node.finalize();
    for subscription in &mut subscriptions {
        let event = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(
            event,
            mesh_rpc::types::BlockEvent::Block { height: 1, .. }
        ));
    }
    // Subscription errors from bad params use our codes.
    match client.subscribe_account(&alice().address()).await {
        Err(ClientError::Rpc { code, .. }) => {
            assert_eq!(code, TOO_MANY_SUBSCRIPTIONS)
        }
        other => panic!("expected too many subscriptions, got {other:?}"),
    }
    drop(subscriptions);
    still_healthy(&node, addr).await;
}
