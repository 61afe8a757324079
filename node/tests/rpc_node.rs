//! The JSON-RPC API served by real in-process nodes (RocksDB, consensus, libp2p on loopback),
//! through the typed client: submissions and their idempotence, receipts, verified reads,
//! the documented error codes, and a node that keeps finalizing after malformed input.
//! RPC listens on port 0; every wait is bounded and every node is stopped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mesh_ledger::{Op, ReceiptStatus, SecretKey, SignedTransaction, Transaction};
use mesh_node::service::{self, RunningNode};
use mesh_rpc::types::{NodeRole, ReadOptions, TxStatus};
use mesh_rpc::{
    ApiError, BlockRef, Client, ClientConfig, ClientError, HttpTransport, TrustAnchor,
    CALL_RATE_PER_IP_EXPOSED, CALL_RATE_PER_IP_LOOPBACK, PER_IP_MAX_EXPOSED, PER_IP_MAX_LOOPBACK,
};
use tokio::time::{sleep, Instant};

const LIMIT: Duration = Duration::from_secs(60);

async fn start_validator(
    testnet: &Testnet,
    dir: &std::path::Path,
    key: &SecretKey,
    bootnodes: Vec<String>,
) -> RunningNode {
    let mut config = test_config(0, 0, bootnodes);
    config.rpc.listen_addr = "127.0.0.1:0".parse().unwrap();
    service::start(options(dir, testnet, Some(key), config))
        .await
        .expect("node starts")
}

fn client(node: &RunningNode) -> Client<HttpTransport> {
    Client::http(
        &format!("http://{}", node.rpc_addr()),
        &ClientConfig::default(),
    )
    .unwrap()
}

async fn wait_rpc_height(client: &Client<HttpTransport>, height: u64) -> u64 {
    let deadline = Instant::now() + LIMIT;
    loop {
        let status = client.status().await.expect("mesh_status answers");
        if status.finalized_height >= height {
            return status.finalized_height;
        }
        assert!(
            Instant::now() < deadline,
            "height {height} within {LIMIT:?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

fn transfer(
    testnet: &Testnet,
    nonce: u64,
    to: mesh_ledger::Address,
    amount: u64,
) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN.into(),
        sender: testnet.account.address(),
        nonce,
        fee: 10,
        op: Op::Transfer { to, amount },
    }
    .sign(&testnet.account)
}

fn anchor(testnet: &Testnet) -> TrustAnchor {
    TrustAnchor::from_genesis(&testnet.genesis).unwrap()
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> ApiError {
    match result {
        Err(ClientError::Api(err)) => err,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A raw JSON-RPC POST (for inputs the typed client cannot produce); the parsed answer.
async fn post(addr: SocketAddr, body: String) -> serde_json::Value {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (_, json) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        serde_json::from_str(json.trim()).unwrap_or_else(|err| panic!("{err}: {answer}"))
    })
    .await
    .unwrap()
}

fn call(method: &str, params: serde_json::Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_validator_serves_submissions_receipts_and_verified_reads() {
    let testnet = Testnet::new(1);
    let dir = tempfile::tempdir().unwrap();
    let node = start_validator(&testnet, dir.path(), &testnet.validators[0], vec![]).await;
    assert_ne!(node.rpc_addr().port(), 0, "the real port is reported");
    assert!(node.rpc_addr().ip().is_loopback());
    let rpc = client(&node);

    wait_rpc_height(&rpc, 2).await;
    let status = rpc.status().await.unwrap();
    assert_eq!(status.chain_id, CHAIN);
    assert_eq!(status.role, NodeRole::Validator);
    assert_eq!(
        status.validator_address,
        Some(testnet.validators[0].address())
    );
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));

    // Submit, then the same bytes again while pending: the same hash.
    let recipient = SecretKey::from_seed([77; 32]).address();
    let tx = transfer(&testnet, 0, recipient, 12_345);
    let hash = rpc.send_transaction(&tx).await.unwrap();
    assert_eq!(hash, tx.hash());
    assert_eq!(rpc.send_transaction(&tx).await.unwrap(), hash);

    // Final: the receipt, the transaction, the block that holds it, its certificate.
    let receipt = rpc.send_transaction_and_wait(&tx, 30_000).await.unwrap();
    assert_eq!(receipt.tx_hash, hash);
    assert_eq!(receipt.status, ReceiptStatus::Success);
    assert_eq!(rpc.receipt(&hash).await.unwrap(), Some(receipt.clone()));
    let info = rpc.transaction(&hash).await.unwrap();
    assert_eq!(
        info.status,
        TxStatus::Final {
            height: receipt.height,
            index: receipt.index
        }
    );
    assert_eq!(info.transaction, Some(tx.clone()));
    let block = rpc
        .block(BlockRef::Height(receipt.height), true)
        .await
        .unwrap();
    assert!(block.tx_hashes.contains(&hash));
    assert_eq!(block.transactions.unwrap()[receipt.index as usize], tx);
    let by_hash = rpc.block(BlockRef::Hash(block.hash), false).await.unwrap();
    assert_eq!(by_hash.header, block.header);
    let record = rpc.certificate(receipt.height).await.unwrap().unwrap();
    assert!(record.certificate.height >= receipt.height);
    assert_eq!(rpc.certificate(0).await.unwrap(), None, "genesis has none");

    // Idempotent after finality too: same hash, and waiting again gives the same receipt.
    assert_eq!(rpc.send_transaction(&tx).await.unwrap(), hash);
    assert_eq!(
        rpc.send_transaction_and_wait(&tx, 5_000).await.unwrap(),
        receipt
    );
    // Executed once: the balance moved once, the nonce advanced once.
    let mut anchor = anchor(&testnet);
    let account = rpc
        .verified_account(&mut anchor, &recipient, None)
        .await
        .unwrap();
    assert!(account.exists);
    assert_eq!(account.balance, 12_345);
    let sender = rpc
        .verified_account(
            &mut anchor,
            &testnet.account.address(),
            Some(receipt.height),
        )
        .await
        .unwrap();
    assert_eq!(sender.nonce, 1);
    assert_eq!(sender.balance, 1_000_000_000 - 12_345 - 10);
    // Absence is proven too.
    let nobody = SecretKey::from_seed([78; 32]).address();
    let absent = rpc
        .verified_account(&mut anchor, &nobody, None)
        .await
        .unwrap();
    assert!(!absent.exists);
    // Against another chain's validators, the same honest answer does not verify.
    let stranger = Testnet::new(2);
    let mut wrong_anchor = TrustAnchor::new(
        CHAIN.into(),
        testnet.genesis.params.epoch_blocks,
        stranger.genesis.validator_set().unwrap(),
    );
    assert!(matches!(
        rpc.verified_account(&mut wrong_anchor, &recipient, None)
            .await,
        Err(ClientError::Verify(_))
    ));

    // The key-value repository: put, then a verified read and a page of keys.
    let put = Transaction {
        chain_id: CHAIN.into(),
        sender: testnet.account.address(),
        nonce: 1,
        fee: 10,
        op: Op::Put {
            key: b"greeting".to_vec(),
            value: b"hello".to_vec(),
        },
    }
    .sign(&testnet.account);
    let put_receipt = rpc.send_transaction_and_wait(&put, 30_000).await.unwrap();
    assert_eq!(put_receipt.status, ReceiptStatus::Success);
    let owner = testnet.account.address();
    let value = rpc
        .verified_value(&mut anchor, &owner, b"greeting", None)
        .await
        .unwrap();
    assert_eq!(value.value.unwrap().0, b"hello");
    let page = rpc.list_keys(&owner, b"gree", None, None).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].key.0, b"greeting");
    assert_eq!(page.next_cursor, None);

    // Height out of range, unknown block.
    let tip = rpc.status().await.unwrap().finalized_height;
    let err = api_error(
        rpc.account(
            &recipient,
            ReadOptions {
                height: Some(tip + 1_000),
                prove: false,
            },
        )
        .await,
    );
    assert_eq!(err.code(), mesh_rpc::error::HEIGHT_NOT_RETAINED);
    let err = api_error(rpc.block(BlockRef::Height(tip + 1_000), false).await);
    assert_eq!(err.code(), mesh_rpc::error::UNKNOWN_BLOCK);

    // The rest of the surface answers.
    let validators = rpc.validators(None).await.unwrap();
    assert_eq!(validators.validators.len(), 1);
    let mempool = rpc.mempool().await.unwrap();
    assert!(mempool.max_count > 0);
    assert!(rpc.peers().await.unwrap().is_empty());
    assert!(rpc
        .methods()
        .await
        .unwrap()
        .methods
        .contains(&"mesh_getAccount".to_owned()));

    node.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejections_carry_documented_codes_and_the_node_keeps_finalizing() {
    let testnet = Testnet::new(1);
    let dir = tempfile::tempdir().unwrap();
    let node = start_validator(&testnet, dir.path(), &testnet.validators[0], vec![]).await;
    let rpc = client(&node);
    let addr = node.rpc_addr();
    wait_rpc_height(&rpc, 1).await;
    let recipient = SecretKey::from_seed([5; 32]).address();

    // Final first, so there is something to replay.
    let first = transfer(&testnet, 0, recipient, 1);
    rpc.send_transaction_and_wait(&first, 30_000).await.unwrap();

    // Bad signature.
    // Signed, then changed: the signature no longer covers the body.
    let mut forged = transfer(&testnet, 1, recipient, 2);
    forged.tx.fee = 11;
    let err = api_error(rpc.send_transaction(&forged).await);
    assert_eq!(err, ApiError::InvalidSignature);
    assert_eq!(err.code(), mesh_rpc::error::INVALID_SIGNATURE);

    // Wrong chain.
    let foreign = Transaction {
        chain_id: "another-chain".into(),
        ..transfer(&testnet, 1, recipient, 2).tx
    }
    .sign(&testnet.account);
    let err = api_error(rpc.send_transaction(&foreign).await);
    assert!(matches!(err, ApiError::WrongChain { .. }), "{err:?}");
    assert_eq!(err.code(), mesh_rpc::error::WRONG_CHAIN);

    // A used nonce with other bytes: nonce_too_low, naming the expected nonce.
    let replay = transfer(&testnet, 0, recipient, 999);
    let err = api_error(rpc.send_transaction(&replay).await);
    assert_eq!(
        err,
        ApiError::NonceTooLow {
            expected_nonce: 1,
            got: 0
        }
    );
    assert_eq!(err.code(), mesh_rpc::error::NONCE_TOO_LOW);

    // Far-future nonce.
    let err = api_error(
        rpc.send_transaction(&transfer(&testnet, 10_000, recipient, 1))
            .await,
    );
    assert!(matches!(err, ApiError::NonceTooHigh { .. }), "{err:?}");

    // Same nonce as a pending one, same fee: nonce_already_pending.
    let pending = transfer(&testnet, 5, recipient, 1);
    rpc.send_transaction(&pending).await.unwrap();
    let err = api_error(
        rpc.send_transaction(&transfer(&testnet, 5, recipient, 2))
            .await,
    );
    assert!(
        matches!(err, ApiError::NonceAlreadyPending { nonce: 5, .. }),
        "{err:?}"
    );

    // An unfunded sender cannot pay the fee.
    let pauper = SecretKey::from_seed([6; 32]);
    let broke = Transaction {
        chain_id: CHAIN.into(),
        sender: pauper.address(),
        nonce: 0,
        fee: 10,
        op: Op::Transfer {
            to: recipient,
            amount: 1,
        },
    }
    .sign(&pauper);
    let err = api_error(rpc.send_transaction(&broke).await);
    assert_eq!(
        err,
        ApiError::InsufficientBalance {
            balance: 0,
            fee: 10
        }
    );

    // Fee below the chain's minimum.
    let cheap = Transaction {
        fee: 0,
        ..transfer(&testnet, 1, recipient, 1).tx
    }
    .sign(&testnet.account);
    let err = api_error(rpc.send_transaction(&cheap).await);
    assert!(matches!(err, ApiError::FeeTooLow { fee: 0, .. }), "{err:?}");

    // Malformed input on the wire: truncated transaction, invalid hex, wrong type, unknown
    // method, invalid JSON.
    let encoded = mesh_ledger::bytes::to_hex(&first.encode());
    let truncated = &encoded[..encoded.len() - 10];
    let answer = post(
        addr,
        call("mesh_sendTransaction", serde_json::json!([truncated])),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert_eq!(answer["error"]["data"]["param"], "tx", "{answer}");
    let answer = post(
        addr,
        call("mesh_sendTransaction", serde_json::json!(["0xzz"])),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    let answer = post(addr, call("mesh_getAccount", serde_json::json!([42]))).await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    let answer = post(addr, call("mesh_noSuchMethod", serde_json::json!([]))).await;
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    let answer = post(addr, "{not json".to_owned()).await;
    assert_eq!(answer["error"]["code"], -32700, "{answer}");

    // The node still answers and still finalizes, and the first transfer executed once.
    let before = rpc.status().await.unwrap().finalized_height;
    wait_rpc_height(&rpc, before + 3).await;
    let account = rpc
        .account(&recipient, ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(account.balance, 1);
    assert_eq!(rpc.send_transaction(&first).await.unwrap(), first.hash());

    node.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_validators_a_transfer_sent_to_one_is_proven_by_another() {
    let testnet = Testnet::new(4);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<RunningNode> = Vec::new();
    for (i, key) in testnet.validators.iter().enumerate() {
        let bootnodes = nodes
            .first()
            .and_then(|n| n.p2p_address())
            .map(|a| vec![a.to_string()])
            .unwrap_or_default();
        nodes.push(start_validator(&testnet, dirs[i].path(), key, bootnodes).await);
    }
    let first = client(&nodes[0]);
    let last = client(&nodes[3]);
    wait_rpc_height(&first, 2).await;
    wait_rpc_height(&last, 2).await;

    let recipient = SecretKey::from_seed([91; 32]).address();
    let tx = transfer(&testnet, 0, recipient, 4_242);
    let hash = first.send_transaction(&tx).await.unwrap();
    // Wait on another node: it learns of the transaction by gossip or in a block.
    let deadline = Instant::now() + LIMIT;
    let receipt = loop {
        if let Some(receipt) = last.receipt(&hash).await.unwrap() {
            break receipt;
        }
        assert!(Instant::now() < deadline, "the transfer is final on node 3");
        sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(receipt.status, ReceiptStatus::Success);
    // Resubmitted to a node that only saw it in a block: same hash.
    assert_eq!(last.send_transaction(&tx).await.unwrap(), hash);
    let account = last
        .verified_account(&mut anchor(&testnet), &recipient, None)
        .await
        .unwrap();
    assert_eq!(account.balance, 4_242);
    let certificate = last.certificate(receipt.height).await.unwrap().unwrap();
    assert!(certificate.certificate.signatures.len() >= 3);

    for node in nodes {
        node.stop().await.expect("clean stop");
    }
}

/// The next notification of a subscription, within 20 s.
macro_rules! next_event {
    ($subscription:expr) => {
        tokio::time::timeout(Duration::from_secs(20), $subscription.next())
            .await
            .expect("a notification within 20 s")
            .expect("the subscription is open")
            .expect("the notification parses")
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_replay_resume_and_follow_the_real_chain() {
    use mesh_rpc::types::{AccountEvent, BlockEvent, TxEvent};

    let testnet = Testnet::new(1);
    let dir = tempfile::tempdir().unwrap();
    let node = start_validator(&testnet, dir.path(), &testnet.validators[0], vec![]).await;
    let rpc = client(&node);
    wait_rpc_height(&rpc, 3).await;
    let ws = Client::ws(
        &format!("ws://{}", node.rpc_addr()),
        &ClientConfig::default(),
    )
    .await
    .unwrap();

    // From height 1: the replay, then live blocks, each once and in order.
    let mut blocks = ws.subscribe_blocks(Some(1)).await.unwrap();
    let mut expected = 1;
    while expected <= 6 {
        match next_event!(blocks) {
            BlockEvent::Block { height, header, .. } => {
                assert_eq!(height, expected);
                assert_eq!(header.height, expected);
                expected += 1;
            }
            BlockEvent::Lagged { .. } => panic!("lagged"),
        }
    }
    // Gone for a while, back from the last height seen plus one: no gap, no repeat.
    drop(blocks);
    wait_rpc_height(&rpc, expected + 3).await;
    let mut blocks = ws.subscribe_blocks(Some(expected)).await.unwrap();
    let until = expected + 6;
    while expected <= until {
        match next_event!(blocks) {
            BlockEvent::Block { height, .. } => {
                assert_eq!(height, expected);
                expected += 1;
            }
            BlockEvent::Lagged { .. } => panic!("lagged"),
        }
    }

    // An account and a transaction, followed until the transfer is final.
    let recipient = SecretKey::from_seed([55; 32]).address();
    let mut account = ws.subscribe_account(&recipient).await.unwrap();
    match next_event!(account) {
        AccountEvent::Account { exists, .. } => assert!(!exists),
        other => panic!("{other:?}"),
    }
    let tx = transfer(&testnet, 0, recipient, 321);
    let mut status = ws.subscribe_transaction(&tx.hash()).await.unwrap();
    rpc.send_transaction(&tx).await.unwrap();
    let receipt = loop {
        match next_event!(status) {
            TxEvent::Status {
                status: TxStatus::Final { .. },
                receipt,
                ..
            } => break receipt.expect("a final status carries its receipt"),
            TxEvent::Status { .. } => {}
            TxEvent::Lagged { .. } => panic!("lagged"),
        }
    };
    assert_eq!(receipt.tx_hash, tx.hash());
    match next_event!(account) {
        AccountEvent::Account {
            exists,
            balance,
            height,
            ..
        } => {
            assert!(exists);
            assert_eq!(balance, 321);
            assert_eq!(height, receipt.height);
        }
        other => panic!("{other:?}"),
    }

    node.stop().await.expect("clean stop");
}

#[test]
fn the_rpc_section_of_config_toml_maps_onto_the_server_and_is_checked() {
    use mesh_node::config::Config;
    use mesh_rpc::{CorsPolicy, RpcServerConfig};

    // Defaults are the server's defaults.
    let config = Config::default();
    assert_eq!(config.rpc, RpcServerConfig::default());
    assert_eq!(config.rpc.listen_addr.to_string(), "127.0.0.1:30401");

    let text = r#"
[rpc]
listen_addr = "127.0.0.1:0"
batch_len_max = 7
connections_max = 9
cors = { origins = ["https://app.example"] }
ready_peers_min = 0
"#;
    let config = Config::parse(text, "config.toml").unwrap();
    let server = config.rpc.clone();
    assert_eq!(server.batch_len_max, 7);
    assert_eq!(server.connections_max, 9);
    assert_eq!(server.ready_peers_min, 0);
    assert_eq!(
        server.cors,
        CorsPolicy::Origins(vec!["https://app.example".into()])
    );
    assert_eq!(
        server.wait_max_ms,
        RpcServerConfig::default().wait_max_ms,
        "unnamed settings keep their defaults"
    );
    // The documented file round-trips, non-default values included.
    assert_eq!(
        Config::parse(&config.to_documented_toml(), "generated").unwrap(),
        config
    );
    let mut any = Config::default();
    any.rpc.cors = CorsPolicy::AnyOrigin;
    assert_eq!(
        Config::parse(&any.to_documented_toml(), "generated").unwrap(),
        any
    );
    // Every server setting is written, with a comment.
    let documented = Config::default().to_documented_toml();
    let server = serde_json::to_value(RpcServerConfig::default()).unwrap();
    for key in server.as_object().unwrap().keys() {
        assert!(
            documented.contains(&format!("\n{key} = ")),
            "{key} missing from the documented config"
        );
    }

    // The per-address cap is stricter when the server listens beyond loopback, unless set.
    assert!(documented.contains("\n# connections_per_ip_max = 64\n"));
    let parsed = |toml: &str| Config::parse(toml, "config.toml").unwrap().rpc;
    let loopback = parsed("[rpc]\nlisten_addr = \"127.0.0.1:30401\"");
    assert_eq!(
        loopback.effective_connections_per_ip_max(),
        PER_IP_MAX_LOOPBACK
    );
    let exposed = parsed("[rpc]\nlisten_addr = \"0.0.0.0:30401\"");
    assert_eq!(
        exposed.effective_connections_per_ip_max(),
        PER_IP_MAX_EXPOSED
    );
    const { assert!(PER_IP_MAX_EXPOSED < PER_IP_MAX_LOOPBACK) };
    let chosen = parsed("[rpc]\nlisten_addr = \"0.0.0.0:30401\"\nconnections_per_ip_max = 40");
    assert_eq!(chosen.effective_connections_per_ip_max(), 40);
    let exposed_config = Config {
        rpc: exposed,
        ..Config::default()
    };
    assert!(exposed_config
        .to_documented_toml()
        .contains("\n# connections_per_ip_max = 16\n"));
    // So is the per-address call rate, and its burst follows it unless set.
    assert!(documented.contains("\n# calls_per_ip_per_second = 100000\n"));
    assert_eq!(
        loopback.effective_calls_per_ip_per_second(),
        CALL_RATE_PER_IP_LOOPBACK
    );
    assert_eq!(
        exposed_config.rpc.effective_calls_per_ip_per_second(),
        CALL_RATE_PER_IP_EXPOSED
    );
    assert_eq!(
        exposed_config.rpc.effective_calls_per_ip_burst(),
        CALL_RATE_PER_IP_EXPOSED
    );
    const { assert!(CALL_RATE_PER_IP_EXPOSED < CALL_RATE_PER_IP_LOOPBACK) };
    assert!(exposed_config
        .to_documented_toml()
        .contains("\n# calls_per_ip_per_second = 1000\n"));
    let chosen =
        parsed("[rpc]\nlisten_addr = \"0.0.0.0:30401\"\ncalls_per_ip_per_second = 50\ncalls_per_ip_burst = 200");
    assert_eq!(chosen.effective_calls_per_ip_per_second(), 50);
    assert_eq!(chosen.effective_calls_per_ip_burst(), 200);

    let err = |toml: &str| Config::parse(toml, "config.toml").unwrap_err().to_string();
    assert!(err("[rpc]\nsurprise = 1").contains("surprise"));
    assert!(err("[rpc]\nbatch_len_max = \"many\"").contains("batch_len_max"));
    let message = err("[rpc]\nwait_default_ms = 500000");
    assert!(message.contains("rpc.wait_default_ms"), "{message}");
    let message = err("[rpc]\nrequest_body_bytes_max = 2000");
    assert!(message.contains("rpc.request_body_bytes_max"), "{message}");
    assert!(err("[rpc]\ncors = \"everyone\"").contains("cors"));
    // The socket, connection and admission bounds (issue 21) are checked by name too.
    for (toml, key) in [
        ("[rpc]\nidle_timeout_ms = 10", "rpc.idle_timeout_ms"),
        (
            "[rpc]\nconnections_per_ip_max = 0",
            "rpc.connections_per_ip_max",
        ),
        (
            "[rpc]\ncalls_per_ip_per_second = 0",
            "rpc.calls_per_ip_per_second",
        ),
        ("[rpc]\ncalls_per_ip_burst = 10", "rpc.calls_per_ip_burst"),
        ("[rpc]\nlarge_requests_max = 0", "rpc.large_requests_max"),
        (
            "[rpc]\nconnection_unwritten_bytes_max = 1024",
            "rpc.connection_unwritten_bytes_max",
        ),
        (
            "[rpc]\ncalls_per_connection_max = 0",
            "rpc.calls_per_connection_max",
        ),
        ("[rpc]\nbody_timeout_ms = 0", "rpc.body_timeout_ms"),
        ("[rpc]\nadmission_threads = 0", "rpc.admission_threads"),
        ("[rpc]\nstorage_queue_max = 0", "rpc.storage_queue_max"),
    ] {
        let message = err(toml);
        assert!(message.contains(key), "{toml}: {message}");
    }
}

/// A client waiting for a transaction that the mempool lets go (here: replaced by a higher
/// fee) is told so, with the reason, instead of waiting for its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_learns_that_its_transaction_was_replaced() {
    let testnet = Testnet::new(1);
    let dir = tempfile::tempdir().unwrap();
    let node = start_validator(&testnet, dir.path(), &testnet.validators[0], vec![]).await;
    let rpc = client(&node);
    wait_rpc_height(&rpc, 1).await;

    // Nonce 5 while the account is at 0: it waits in the mempool for nonces 0..=4.
    let recipient = SecretKey::from_seed([42; 32]).address();
    let waiting = transfer(&testnet, 5, recipient, 1);
    let waiting_hash = waiting.hash();
    let waiter = {
        let rpc = client(&node);
        tokio::spawn(async move { rpc.send_transaction_and_wait(&waiting, 30_000).await })
    };
    // Let the wait begin, then replace it with a higher fee.
    let deadline = Instant::now() + LIMIT;
    while !matches!(
        rpc.transaction(&waiting_hash).await.map(|info| info.status),
        Ok(TxStatus::Pending)
    ) {
        assert!(Instant::now() < deadline, "the transaction becomes pending");
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_millis(200)).await;
    let replacement = Transaction {
        chain_id: CHAIN.into(),
        sender: testnet.account.address(),
        nonce: 5,
        fee: 20,
        op: Op::Transfer {
            to: recipient,
            amount: 1,
        },
    }
    .sign(&testnet.account);
    rpc.send_transaction(&replacement).await.unwrap();

    let outcome = tokio::time::timeout(LIMIT, waiter).await.unwrap().unwrap();
    match outcome {
        Err(ClientError::Api(ApiError::TransactionDropped { hash, detail })) => {
            assert_eq!(hash, waiting_hash);
            assert!(detail.contains("replaced"), "{detail}");
        }
        other => panic!("expected a drop notice, got {other:?}"),
    }
    node.stop().await.unwrap();
}

/// A raw WebSocket to `addr`, handshake done (for a pipelined flood no typed client sends).
async fn raw_websocket(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// A masked WebSocket text frame (zero mask key).
fn ws_frame(payload: &str) -> Vec<u8> {
    let payload = payload.as_bytes();
    let mut frame = vec![0x81u8];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// The text frames the server sends, until `count` arrived or `timeout`.
async fn ws_texts(
    stream: &mut tokio::net::TcpStream,
    count: usize,
    timeout: Duration,
) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + timeout;
    let mut texts = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while pending.len() >= 2 {
            let (len, header) = match pending[1] & 0x7f {
                126 if pending.len() >= 4 => {
                    (usize::from(u16::from_be_bytes([pending[2], pending[3]])), 4)
                }
                126 | 127 => break,
                len => (usize::from(len), 2),
            };
            if pending.len() < header + len {
                break;
            }
            if pending[0] & 0x0f == 1 {
                texts.push(String::from_utf8_lossy(&pending[header..header + len]).into_owned());
            }
            pending.drain(..header + len);
        }
        if texts.len() >= count {
            return texts;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buf[..n]),
            _ => return texts,
        }
    }
}

/// Issue 21: bad signatures pipelined on one WebSocket used to be verified on the driver's
/// loop and stall finality; now they are refused on the RPC's admission pool (or answered
/// `busy` past the connection's bound) while the chain keeps finalizing and a normal client is
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_signature_flood_on_one_websocket_does_not_stall_finality() {
    use tokio::io::AsyncWriteExt;
    let testnet = Testnet::new(1);
    let dir = tempfile::tempdir().unwrap();
    let node = start_validator(&testnet, dir.path(), &testnet.validators[0], vec![]).await;
    let rpc = client(&node);
    let start = wait_rpc_height(&rpc, 1).await;
    let recipient = SecretKey::from_seed([6; 32]).address();
    let mut forged = transfer(&testnet, 0, recipient, 1);
    forged.tx.fee = 11;
    let forged = mesh_ledger::bytes::to_hex(&forged.encode());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = stop.clone();
    let mut ws = raw_websocket(node.rpc_addr()).await;
    let flood = tokio::spawn(async move {
        let mut rounds = 0u32;
        let mut refused = 0usize;
        while !flooding.load(std::sync::atomic::Ordering::Relaxed) && rounds < 1000 {
            let mut burst = Vec::new();
            for id in 0..500 {
                burst.extend(ws_frame(&format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"mesh_sendTransaction","params":["{forged}"]}}"#
                )));
            }
            ws.write_all(&burst).await.unwrap();
            let answers = ws_texts(&mut ws, 500, LIMIT).await;
            assert_eq!(answers.len(), 500, "every call is answered");
            for answer in &answers {
                let response: serde_json::Value = serde_json::from_str(answer).unwrap();
                let code = response["error"]["code"].as_i64();
                assert!(
                    code == Some(i64::from(mesh_rpc::error::INVALID_SIGNATURE))
                        || code == Some(i64::from(mesh_rpc::error::BUSY)),
                    "{response}"
                );
                if code == Some(i64::from(mesh_rpc::error::INVALID_SIGNATURE)) {
                    refused += 1;
                }
            }
            rounds += 1;
        }
        refused
    });
    // Twenty blocks are finalized, and a normal client is answered, while the flood goes on.
    let reached = wait_rpc_height(&rpc, start + 20).await;
    assert!(reached >= start + 20);
    assert!(!flood.is_finished(), "the flood must still be running");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused = tokio::time::timeout(LIMIT, flood)
        .await
        .expect("the flood ends")
        .expect("the flood's answers are all errors it expects");
    assert!(refused > 0, "bad signatures are refused as such");
    node.stop().await.unwrap();
}
