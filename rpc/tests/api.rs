//! Every method and every error code, over real HTTP and WebSocket against the mock node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use mesh_ledger::{Op, TxHash};
use mesh_rpc::error::*;
use mesh_rpc::types::{BlockInfo, NodeRole, ReadOptions, TxStatus};
use mesh_rpc::{ApiError, BlockRef, Client, ClientConfig, ClientError, CorsPolicy};
use serde_json::json;

async fn http_client(addr: std::net::SocketAddr) -> Client<mesh_rpc::HttpTransport> {
    Client::http(&format!("http://{addr}"), &ClientConfig::default()).unwrap()
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> ApiError {
    match result {
        Err(ClientError::Api(err)) => err,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn status_peers_mempool_validators_and_methods() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let client = http_client(addr).await;

    let status = client.status().await.unwrap();
    assert_eq!(status.chain_id, CHAIN);
    assert_eq!(status.role, NodeRole::Validator);
    assert_eq!(status.finalized_height, 0);
    assert_eq!(status.peer_count, 3);

    assert_eq!(client.peers().await.unwrap().len(), 3);
    let mempool = client.mempool().await.unwrap();
    assert_eq!((mempool.count, mempool.bytes), (0, 0));

    let validators = client.validators(None).await.unwrap();
    assert_eq!(validators.validators.len(), 4);
    assert_eq!(validators.total_power, 40);
    assert_eq!(validators.quorum_power, 27);
    assert_eq!(
        validators.validator_set_hash,
        anchor().set(0).unwrap().hash()
    );
    let err = api_error(client.validators(Some(99)).await);
    assert!(matches!(
        err,
        ApiError::HeightNotRetained { height: 99, .. }
    ));

    let methods = client.methods().await.unwrap().methods;
    for name in [
        "mesh_sendTransaction",
        "mesh_sendTransactionAndWait",
        "mesh_getTransaction",
        "mesh_getReceipt",
        "mesh_getBlock",
        "mesh_getCertificate",
        "mesh_getAccount",
        "mesh_getValue",
        "mesh_listKeys",
        "mesh_status",
        "mesh_peers",
        "mesh_validators",
        "mesh_getEpoch",
        "mesh_getEpochProof",
        "mesh_mempool",
        "mesh_subscribeBlocks",
        "mesh_subscribeTransaction",
        "mesh_subscribeAccount",
        "rpc_methods",
    ] {
        assert!(methods.iter().any(|m| m == name), "{name} missing");
    }
}

#[tokio::test]
async fn submit_is_idempotent_and_lookups_follow_the_transaction() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let client = http_client(addr).await;
    let stx = transfer(&alice(), 0, &bob(), 250);

    let hash = client.send_transaction(&stx).await.unwrap();
    assert_eq!(hash, stx.hash());
    // The same bytes again: same hash, no error, one pending transaction.
    assert_eq!(client.send_transaction(&stx).await.unwrap(), hash);
    assert_eq!(client.mempool().await.unwrap().count, 1);

    let info = client.transaction(&hash).await.unwrap();
    assert_eq!(info.status, TxStatus::Pending);
    assert_eq!(info.transaction.as_ref(), Some(&stx));
    assert_eq!(client.receipt(&hash).await.unwrap(), None);

    let height = node.finalize();
    let info = client.transaction(&hash).await.unwrap();
    assert_eq!(info.status, TxStatus::Final { height, index: 0 });
    let receipt = client.receipt(&hash).await.unwrap().unwrap();
    assert_eq!((receipt.height, receipt.index), (height, 0));
    // Still idempotent once final.
    assert_eq!(client.send_transaction(&stx).await.unwrap(), hash);

    let unknown = client.transaction(&TxHash::ZERO).await.unwrap();
    assert_eq!(unknown.status, TxStatus::Unknown);
    assert!(unknown.transaction.is_none());

    let account = client
        .account(&bob().address(), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (account.balance, account.nonce, account.exists),
        (750, 0, true)
    );
    assert!(account.proof.is_none());
    // Historical read.
    let before = client
        .account(
            &bob().address(),
            ReadOptions {
                height: Some(0),
                prove: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(before.balance, 500);
    // A never-created account reads as absent, balance 0.
    let nobody = client
        .account(&key(77).address(), ReadOptions::default())
        .await
        .unwrap();
    assert_eq!((nobody.exists, nobody.balance, nobody.nonce), (false, 0, 0));
}

#[tokio::test]
async fn a_batch_of_submissions_answers_each_in_order() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let client = http_client(addr).await;
    let first = transfer(&alice(), 0, &bob(), 1);
    let second = transfer(&alice(), 1, &bob(), 2);
    let mut forged = transfer(&alice(), 2, &bob(), 3);
    forged.signature.0[0] ^= 1;

    assert!(client.send_transactions(&[]).await.unwrap().is_empty());
    let answers = client
        .send_transactions(&[first.clone(), forged, second.clone(), first.clone()])
        .await
        .unwrap();
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0].as_ref().unwrap(), &first.hash());
    assert!(
        matches!(
            &answers[1],
            Err(ClientError::Api(ApiError::InvalidSignature))
        ),
        "{:?}",
        answers[1]
    );
    assert_eq!(answers[2].as_ref().unwrap(), &second.hash());
    // The same bytes twice in one batch: the same hash, one pending transaction.
    assert_eq!(answers[3].as_ref().unwrap(), &first.hash());
    assert_eq!(client.mempool().await.unwrap().count, 2);

    // Longer than the server's `batch_len_max`: refused whole, nothing admitted.
    let config = test_config();
    let many: Vec<_> = (0..u64::from(config.batch_len_max) + 1)
        .map(|nonce| transfer(&bob(), nonce, &alice(), 1))
        .collect();
    assert!(client.send_transactions(&many).await.is_err());
    assert_eq!(client.mempool().await.unwrap().count, 2);
}

#[tokio::test]
async fn send_and_wait_returns_the_receipt_or_times_out_with_status() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let client = http_client(addr).await;

    let producer = {
        let node = node.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(40)).await;
                node.finalize();
            }
        })
    };
    let stx = transfer(&alice(), 0, &bob(), 10);
    let receipt = client
        .send_transaction_and_wait(&stx, 10_000)
        .await
        .unwrap();
    assert_eq!(receipt.tx_hash, stx.hash());
    producer.abort();

    // No blocks: times out, and the error carries the current status.
    let stx = transfer(&alice(), 1, &bob(), 10);
    let err = api_error(client.send_transaction_and_wait(&stx, 200).await);
    match err {
        ApiError::Timeout {
            hash,
            timeout_ms,
            status,
        } => {
            assert_eq!(hash, stx.hash());
            assert_eq!(timeout_ms, 200);
            assert_eq!(status, TxStatus::Pending);
        }
        other => panic!("expected timeout, got {other:?}"),
    }
    // Raw: code and data.status.
    let stx = transfer(&alice(), 2, &bob(), 10);
    let response = call(
        addr,
        "mesh_sendTransactionAndWait",
        &format!(r#"["{}", 100]"#, hex_of(&stx)),
    )
    .await;
    let error = expect_error(&response, i64::from(TIMEOUT));
    assert_eq!(error["data"]["reason"], "timeout");
    assert_eq!(error["data"]["status"]["state"], "pending");

    // A wait longer than the server allows is refused up front.
    let err = api_error(client.send_transaction_and_wait(&stx, 10_000_000).await);
    assert!(matches!(err, ApiError::RangeTooLarge { .. }));

    // A dropped transaction ends the wait with its reason.
    let stx = transfer(&alice(), 3, &bob(), 10);
    let dropper = {
        let node = node.clone();
        let hash = stx.hash();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            node.drop_tx(hash, "replaced by a higher fee");
        })
    };
    let err = api_error(client.send_transaction_and_wait(&stx, 10_000).await);
    assert!(
        matches!(err, ApiError::TransactionDropped { .. }),
        "{err:?}"
    );
    dropper.await.unwrap();
}

#[tokio::test]
async fn blocks_certificates_values_and_keys() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let client = http_client(addr).await;
    for (nonce, (k, v)) in [
        (b"app/a", b"1"),
        (b"app/b", b"2"),
        (b"app/c", b"3"),
        (b"zzz/d", b"4"),
    ]
    .iter()
    .enumerate()
    {
        client
            .send_transaction(&put(&alice(), nonce as u64, *k, *v))
            .await
            .unwrap();
    }
    let height = node.finalize();

    let latest = client.block(BlockRef::Latest, false).await.unwrap();
    assert_eq!(latest.header.height, height);
    assert_eq!(latest.tx_hashes.len(), 4);
    assert!(latest.transactions.is_none());
    let by_height = client.block(BlockRef::Height(height), true).await.unwrap();
    assert_eq!(by_height.transactions.as_ref().unwrap().len(), 4);
    let by_hash = client
        .block(BlockRef::Hash(latest.hash), false)
        .await
        .unwrap();
    assert_eq!(by_hash.header, latest.header);
    let genesis: BlockInfo = client.block(BlockRef::Height(0), false).await.unwrap();
    assert_eq!(genesis.header.height, 0);

    let err = api_error(client.block(BlockRef::Height(99), false).await);
    assert_eq!(err, ApiError::UnknownBlock { block: "99".into() });
    let response = call(
        addr,
        "mesh_getBlock",
        &format!(r#"["0x{}"]"#, "ab".repeat(32)),
    )
    .await;
    let error = expect_error(&response, i64::from(UNKNOWN_BLOCK));
    assert_eq!(error["data"]["reason"], "unknown_block");

    let record = client.certificate(height).await.unwrap().unwrap();
    assert_eq!(record.certificate.height, height);
    assert_eq!(record.certificate.block_hash, latest.hash);
    assert_eq!(record.certificate.signatures.len(), 3);
    assert_eq!(record.header.hash, latest.hash);
    let decoded: mesh_rpc::FinalityRecord = borsh::from_slice(&record.encoded.0).unwrap();
    assert_eq!(decoded.certificate.subject.hash, latest.hash);
    assert!(client.certificate(0).await.unwrap().is_none());
    let err = api_error(client.certificate(height + 1).await);
    assert!(matches!(err, ApiError::UnknownBlock { .. }));

    let value = client
        .value(&alice().address(), b"app/b", ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(value.value.unwrap().0, b"2");
    let missing = client
        .value(&alice().address(), b"nope", ReadOptions::default())
        .await
        .unwrap();
    assert!(missing.value.is_none());

    // Paging: 2 per page over the `app/` prefix.
    let owner = alice().address();
    let page1 = client
        .list_keys(&owner, b"app/", None, Some(2))
        .await
        .unwrap();
    assert_eq!(page1.entries.len(), 2);
    assert_eq!(page1.entries[0].key.0, b"app/a");
    let cursor = page1.next_cursor.clone().unwrap();
    let page2 = client
        .list_keys(&owner, b"app/", Some(&cursor.0), Some(2))
        .await
        .unwrap();
    assert_eq!(page2.entries.len(), 1);
    assert_eq!(page2.entries[0].key.0, b"app/c");
    assert!(page2.next_cursor.is_none());
    let all = client.list_keys(&owner, b"", None, None).await.unwrap();
    assert_eq!(all.entries.len(), 4);
    let err = api_error(client.list_keys(&owner, b"", None, Some(100_000)).await);
    assert!(matches!(err, ApiError::RangeTooLarge { .. }));
    let err = api_error(client.list_keys(&owner, b"", None, Some(0)).await);
    assert!(matches!(err, ApiError::RangeTooLarge { .. }));
}

/// One test per domain error code raised by submission.
#[tokio::test]
async fn every_submission_error_has_its_code_and_data() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let send = |stx: mesh_ledger::SignedTransaction| async move {
        call(
            addr,
            "mesh_sendTransaction",
            &format!(r#"["{}"]"#, hex_of(&stx)),
        )
        .await
    };

    // Bad signature: sign, then flip a bit of the signature.
    let mut bad = transfer(&alice(), 0, &bob(), 1);
    bad.signature.0[0] ^= 1;
    let error = expect_error(&send(bad).await, i64::from(INVALID_SIGNATURE));
    assert_eq!(error["data"], json!({"reason": "invalid_signature"}));

    // Wrong chain.
    let mut wrong = transfer(&alice(), 0, &bob(), 1).tx;
    wrong.chain_id = "other-chain".into();
    let error = expect_error(&send(wrong.sign(&alice())).await, i64::from(WRONG_CHAIN));
    assert_eq!(error["data"]["expected"], CHAIN);
    assert_eq!(error["data"]["got"], "other-chain");

    // Fee too low.
    let cheap = tx(&alice(), 0, 0, Op::Delete { key: b"k".to_vec() });
    let error = expect_error(&send(cheap).await, i64::from(FEE_TOO_LOW));
    assert_eq!(error["data"]["fee_min"], 1);

    // Too large (value over the chain's limit).
    let huge = put(&alice(), 0, b"k", &vec![7u8; 20_000]);
    let error = expect_error(&send(huge).await, i64::from(TOO_LARGE));
    assert_eq!(error["data"]["reason"], "too_large");

    // Empty key.
    let empty = put(&alice(), 0, b"", b"v");
    let error = expect_error(&send(empty).await, i64::from(INVALID_TRANSACTION));
    assert_eq!(error["data"]["reason"], "invalid_transaction");

    // Nonce too low (replay of a used nonce with other bytes).
    let first = transfer(&alice(), 0, &bob(), 1);
    assert!(send(first).await.get("result").is_some());
    node.finalize();
    let replay = transfer(&alice(), 0, &bob(), 2);
    let error = expect_error(&send(replay).await, i64::from(NONCE_TOO_LOW));
    assert_eq!(error["data"]["expected_nonce"], 1);
    assert_eq!(error["data"]["got"], 0);

    // Nonce too high.
    let far = transfer(&alice(), 1000, &bob(), 1);
    let error = expect_error(&send(far).await, i64::from(NONCE_TOO_HIGH));
    assert_eq!(error["data"]["expected_nonce"], 1);
    assert!(error["data"]["max_nonce"].as_u64().is_some());

    // Same nonce pending with other bytes.
    assert!(send(transfer(&alice(), 1, &bob(), 1))
        .await
        .get("result")
        .is_some());
    let error = expect_error(
        &send(transfer(&alice(), 1, &bob(), 2)).await,
        i64::from(NONCE_ALREADY_PENDING),
    );
    assert_eq!(error["data"]["nonce"], 1);

    // Insufficient balance for the fee.
    let poor = key(55);
    let error = expect_error(
        &send(tx(&poor, 0, 5, Op::Delete { key: b"k".to_vec() })).await,
        i64::from(INSUFFICIENT_BALANCE),
    );
    assert_eq!(
        error["data"],
        json!({"reason": "insufficient_balance", "balance": 0, "fee": 5})
    );

    // Mempool full.
    node.chain.lock().unwrap().mempool_max = 1;
    let error = expect_error(
        &send(transfer(&bob(), 0, &alice(), 1)).await,
        i64::from(MEMPOOL_FULL),
    );
    assert_eq!(error["data"]["lowest_fee"], 1);
}

#[tokio::test]
async fn read_errors_have_their_codes() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let alice_hex = alice().address().to_string();

    let response = call(
        addr,
        "mesh_getAccount",
        &format!(r#"["{alice_hex}", {{"height": 5}}]"#),
    )
    .await;
    let error = expect_error(&response, i64::from(HEIGHT_NOT_RETAINED));
    assert_eq!(
        error["data"],
        json!({"reason": "height_not_retained", "height": 5, "oldest": 0, "newest": 0})
    );
    let response = call(
        addr,
        "mesh_getValue",
        &format!(r#"["{alice_hex}", "0x01", {{"height": 9}}]"#),
    )
    .await;
    expect_error(&response, i64::from(HEIGHT_NOT_RETAINED));

    // The backend's own failures come through with their code.
    node.chain.lock().unwrap().fail_with = Some(ApiError::Unavailable {
        detail: "starting".into(),
    });
    let response = call(addr, "mesh_status", "[]").await;
    let error = expect_error(&response, i64::from(UNAVAILABLE));
    assert_eq!(error["data"]["detail"], "starting");
    node.chain.lock().unwrap().fail_with = Some(ApiError::internal("disk on fire"));
    let response = call(addr, "mesh_peers", "[]").await;
    let error = expect_error(&response, i64::from(INTERNAL_ERROR));
    assert_eq!(error["data"]["reason"], "internal");
}

#[tokio::test]
async fn livez_and_readyz() {
    let node = MockNode::new();
    let config = mesh_rpc::RpcServerConfig {
        ready_peers_min: 1,
        ..test_config()
    };
    let (_server, addr) = serve(&node, config).await;

    let (status, body) = http_raw(addr, "GET", "/livez", b"").await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = http_raw(addr, "GET", "/readyz", b"").await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["ready"], true);

    {
        let mut chain = node.chain.lock().unwrap();
        chain.peers = 0;
        chain.syncing = true;
    }
    let (status, body) = http_raw(addr, "GET", "/readyz", b"").await;
    assert_eq!(status, 503, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["failed"], json!(["has_peers", "not_syncing"]));

    // A stale chain (the genesis block is from 2023) fails `recent_block`.
    let stale = mesh_rpc::RpcServerConfig {
        ready_peers_min: 0,
        ready_block_age_max_ms: 60_000,
        ..test_config()
    };
    node.chain.lock().unwrap().syncing = false;
    let (_server2, addr2) = serve(&node, stale).await;
    let (status, body) = http_raw(addr2, "GET", "/readyz", b"").await;
    assert_eq!(status, 503);
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["failed"], json!(["recent_block"]));

    // The backend failing is a failed check too.
    node.chain.lock().unwrap().fail_with = Some(ApiError::internal("down"));
    let (status, body) = http_raw(addr, "GET", "/readyz", b"").await;
    assert_eq!(status, 503);
    assert!(body.contains("\"backend\""), "{body}");
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let node = MockNode::new();
    let config = mesh_rpc::RpcServerConfig {
        cors: CorsPolicy::Origins(vec!["https://wallet.example".into()]),
        ..test_config()
    };
    let (_server, addr) = serve(&node, config).await;
    let preflight = |origin: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "OPTIONS / HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out.to_ascii_lowercase()
    };
    let allowed = preflight("https://wallet.example").await;
    assert!(
        allowed.contains("access-control-allow-origin: https://wallet.example"),
        "{allowed}"
    );
    let refused = preflight("https://evil.example").await;
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );
}

#[tokio::test]
async fn invalid_config_is_refused() {
    let node = MockNode::new();
    let config = mesh_rpc::RpcServerConfig {
        request_body_bytes_max: 10,
        ..test_config()
    };
    let err = mesh_rpc::start(config, node.clone()).await.unwrap_err();
    assert!(err.to_string().contains("request_body_bytes_max"), "{err}");
    let config = mesh_rpc::RpcServerConfig {
        cors: CorsPolicy::Origins(vec!["bad\norigin".into()]),
        ..test_config()
    };
    assert!(mesh_rpc::start(config, node).await.is_err());
}

#[tokio::test]
async fn websocket_client_calls_too() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;
    let client = Client::ws(&format!("ws://{addr}"), &ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(client.status().await.unwrap().chain_id, CHAIN);
    let stx = transfer(&alice(), 0, &bob(), 5);
    assert_eq!(client.send_transaction(&stx).await.unwrap(), stx.hash());
}

#[test]
fn config_reads_from_toml_like_json_with_defaults() {
    let config: mesh_rpc::RpcServerConfig = serde_json::from_str(
        r#"{"batch_len_max": 10, "cors": {"origins": ["https://a.example"]}}"#,
    )
    .unwrap();
    assert_eq!(config.batch_len_max, 10);
    assert_eq!(
        config.cors,
        CorsPolicy::Origins(vec!["https://a.example".into()])
    );
    assert_eq!(
        config.connections_max,
        mesh_rpc::RpcServerConfig::default().connections_max
    );
    let any: mesh_rpc::RpcServerConfig = serde_json::from_str(r#"{"cors": "any_origin"}"#).unwrap();
    assert_eq!(any.cors, CorsPolicy::AnyOrigin);
    assert!(serde_json::from_str::<mesh_rpc::RpcServerConfig>(r#"{"batch_len": 1}"#).is_err());
    mesh_rpc::RpcServerConfig::default().validate().unwrap();
}
