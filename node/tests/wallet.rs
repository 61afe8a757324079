//! The `meshd tx` / `meshd query` wallet, as the real binary, against the JSON-RPC API of an
//! in-process validator on loopback (RPC on port 0). Every process is bounded in time and
//! killed if it overruns; the node is stopped at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mesh_ledger::SecretKey;
use mesh_node::keys;
use mesh_node::service::{self, RunningNode};

const PROCESS_LIMIT: Duration = Duration::from_secs(60);

/// What a `meshd` run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {}", self.text()))
    }

    fn text(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `meshd` with `args` (off the async workers), killed after [`PROCESS_LIMIT`].
async fn meshd(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshd"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + PROCESS_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(status.is_some(), "meshd {args:?} overran {PROCESS_LIMIT:?}");
        Run {
            code: status.and_then(|status| status.code()),
            stdout,
            stderr,
        }
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn start_node(testnet: &Testnet, dir: &Path) -> RunningNode {
    let mut config = test_config(0, 0, vec![]);
    config.rpc.listen_addr = "127.0.0.1:0".parse().unwrap();
    service::start(options(dir, testnet, Some(&testnet.validators[0]), config))
        .await
        .expect("node starts")
}

async fn wait_height(node: &RunningNode, height: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while node.handle().status().finalized_height < height {
        assert!(tokio::time::Instant::now() < deadline, "height {height}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_put_and_queries_through_the_cli() {
    let testnet = Testnet::new(1);
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&testnet, &dir.path().join("node")).await;
    wait_height(&node, 1).await;
    let url = format!("http://{}", node.rpc_addr());
    let key_file = dir.path().join("alice.json");
    keys::write_key(&key_file, &testnet.account, false).unwrap();
    let key = key_file.to_str().unwrap();
    let genesis_file = dir.path().join("genesis.json");
    std::fs::write(&genesis_file, testnet.genesis.to_json()).unwrap();
    let sender = testnet.account.address().to_string();
    let recipient = SecretKey::from_seed([42; 32]).address().to_string();

    // Transfer and wait for the receipt.
    let run = meshd(args(&[
        "tx", "transfer", "--rpc", &url, "--key", key, "--to", &recipient, "--amount", "500",
        "--wait",
    ]))
    .await;
    assert!(run.ok(), "{}", run.text());
    assert!(run.stdout.contains("status success"), "{}", run.text());

    // The same, for scripts: the receipt as JSON.
    let run = meshd(args(&[
        "tx", "transfer", "--rpc", &url, "--key", key, "--to", &recipient, "--amount", "250",
        "--fee", "3", "--wait", "--json",
    ]))
    .await;
    assert!(run.ok(), "{}", run.text());
    let receipt = run.json();
    assert_eq!(receipt["status"]["status"], "success", "{}", run.text());
    assert_eq!(receipt["fee_charged"], 3);
    let hash = receipt["tx_hash"].as_str().unwrap().to_owned();

    // The same transfer twice without waiting: the second is a new transaction, next nonce.
    let first = meshd(args(&[
        "tx", "transfer", "--rpc", &url, "--key", key, "--to", &recipient, "--amount", "1",
        "--json",
    ]))
    .await;
    assert!(first.ok(), "{}", first.text());
    let second = meshd(args(&[
        "tx", "transfer", "--rpc", &url, "--key", key, "--to", &recipient, "--amount", "1",
        "--json",
    ]))
    .await;
    assert!(second.ok(), "{}", second.text());
    let (n1, n2) = (
        first.json()["nonce"].as_u64().unwrap(),
        second.json()["nonce"].as_u64().unwrap(),
    );
    assert_eq!(n1, 2, "{}", first.text());
    assert_eq!(
        n2,
        3,
        "identical bytes are a new transaction: {}",
        second.text()
    );
    assert_ne!(first.json()["hash"], second.json()["hash"]);

    // Put a value and read it back, verified against genesis.
    let run = meshd(args(&[
        "tx",
        "put",
        "--rpc",
        &url,
        "--key",
        key,
        "--key-str",
        "greeting",
        "--value-str",
        "hello",
        "--wait",
    ]))
    .await;
    assert!(run.ok(), "{}", run.text());
    let run = meshd(args(&[
        "query",
        "value",
        &sender,
        "--key-str",
        "greeting",
        "--rpc",
        &url,
        "--verify-genesis",
        genesis_file.to_str().unwrap(),
    ]))
    .await;
    assert!(run.ok(), "{}", run.text());
    assert!(run.stdout.contains("\"hello\""), "{}", run.text());
    assert!(run.stdout.contains("verified    yes"), "{}", run.text());
    let run = meshd(args(&[
        "query",
        "keys",
        &sender,
        "--prefix-str",
        "gre",
        "--rpc",
        &url,
        "--json",
    ]))
    .await;
    assert!(run.ok(), "{}", run.text());
    assert_eq!(run.json()["entries"].as_array().unwrap().len(), 1);

    // Queries: account (plain, JSON and verified), status, the transaction, a block.
    let run = meshd(args(&[
        "query", "account", &recipient, "--rpc", &url, "--json",
    ]))
    .await;
    assert!(run.ok(), "{}", run.text());
    let balance = run.json()["balance"].as_u64().unwrap();
    assert!(balance >= 750, "{}", run.text());
    let run = meshd(args(&[
        "query",
        "account",
        &recipient,
        "--rpc",
        &url,
        "--verify-genesis",
        genesis_file.to_str().unwrap(),
    ]))
    .await;
    assert!(run.ok(), "{}", run.text());
    assert!(run.stdout.contains("balance"), "{}", run.text());
    assert!(run.stdout.contains("verified    yes"), "{}", run.text());
    let run = meshd(args(&["query", "status", "--rpc", &url])).await;
    assert!(run.ok(), "{}", run.text());
    assert!(run.stdout.contains(CHAIN), "{}", run.text());
    assert!(run.stdout.contains("validator"), "{}", run.text());
    let run = meshd(args(&["query", "tx", &hash, "--rpc", &url, "--json"])).await;
    assert!(run.ok(), "{}", run.text());
    let tx = run.json();
    assert_eq!(
        tx["transaction"]["status"]["state"],
        "final",
        "{}",
        run.text()
    );
    assert_eq!(tx["receipt"]["tx_hash"], hash.as_str());
    let run = meshd(args(&["query", "tx", &hash, "--rpc", &url])).await;
    assert!(run.stdout.contains("result      success"), "{}", run.text());
    let height = tx["receipt"]["height"].as_u64().unwrap().to_string();
    let run = meshd(args(&["query", "block", &height, "--rpc", &url])).await;
    assert!(run.ok(), "{}", run.text());
    assert!(run.stdout.contains(&hash), "{}", run.text());
    let run = meshd(args(&["query", "block", "--rpc", &url, "--json"])).await;
    assert!(run.ok(), "{}", run.text());
    assert!(run.json()["header"]["height"].as_u64().unwrap() >= 1);

    node.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_are_explained_with_a_non_zero_exit_code() {
    let testnet = Testnet::new(1);
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&testnet, &dir.path().join("node")).await;
    wait_height(&node, 1).await;
    let url = format!("http://{}", node.rpc_addr());
    let key_file = dir.path().join("alice.json");
    keys::write_key(&key_file, &testnet.account, false).unwrap();
    let key = key_file.to_str().unwrap();
    let recipient = SecretKey::from_seed([43; 32]).address().to_string();

    // A malformed key file.
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"{"address": "0x00", "secret": "zz"}"#).unwrap();
    let run = meshd(args(&[
        "tx",
        "transfer",
        "--rpc",
        &url,
        "--key",
        broken.to_str().unwrap(),
        "--to",
        &recipient,
        "--amount",
        "1",
    ]))
    .await;
    assert!(!run.ok(), "{}", run.text());
    assert!(run.stderr.contains("malformed"), "{}", run.text());
    // A missing key file names its path.
    let run = meshd(args(&[
        "tx",
        "transfer",
        "--rpc",
        &url,
        "--key",
        "/nonexistent/key.json",
        "--to",
        &recipient,
        "--amount",
        "1",
    ]))
    .await;
    assert!(!run.ok(), "{}", run.text());
    assert!(
        run.stderr.contains("/nonexistent/key.json"),
        "{}",
        run.text()
    );

    // A bad address: refused before anything is sent.
    let run = meshd(args(&[
        "tx", "transfer", "--rpc", &url, "--key", key, "--to", "0x1234", "--amount", "1",
    ]))
    .await;
    assert!(!run.ok(), "{}", run.text());
    assert!(run.stderr.contains("--to"), "{}", run.text());
    let run = meshd(args(&["query", "account", "not-an-address", "--rpc", &url])).await;
    assert!(!run.ok(), "{}", run.text());

    // The node's refusal: its reason and code, human and JSON.
    let run = meshd(args(&[
        "tx", "transfer", "--rpc", &url, "--key", key, "--to", &recipient, "--amount", "1",
        "--fee", "0",
    ]))
    .await;
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(run.stderr.contains("fee_too_low"), "{}", run.text());
    assert!(run.stderr.contains("1007"), "{}", run.text());
    let run = meshd(args(&[
        "tx", "transfer", "--rpc", &url, "--key", key, "--to", &recipient, "--amount", "1",
        "--fee", "0", "--json",
    ]))
    .await;
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert_eq!(run.json()["error"]["data"]["reason"], "fee_too_low");
    assert_eq!(run.json()["error"]["code"], 1007);
    // An explicit used nonce is not silently replaced.
    let run = meshd(args(&[
        "tx", "transfer", "--rpc", &url, "--key", key, "--to", &recipient, "--amount", "1",
        "--wait",
    ]))
    .await;
    assert!(run.ok(), "{}", run.text());
    let run = meshd(args(&[
        "tx", "transfer", "--rpc", &url, "--key", key, "--to", &recipient, "--amount", "2",
        "--nonce", "0",
    ]))
    .await;
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(run.stderr.contains("nonce_too_low"), "{}", run.text());

    // A final transaction whose operation failed: exit code 3, with the reason.
    let run = meshd(args(&[
        "tx",
        "transfer",
        "--rpc",
        &url,
        "--key",
        key,
        "--to",
        &recipient,
        "--amount",
        "999999999999",
        "--wait",
    ]))
    .await;
    assert_eq!(run.code, Some(3), "{}", run.text());
    assert!(
        run.stdout.contains("insufficient balance"),
        "{}",
        run.text()
    );
    // Deleting a key that is not set fails the same way.
    let run = meshd(args(&[
        "tx",
        "delete",
        "--rpc",
        &url,
        "--key",
        key,
        "--key-hex",
        "0x0102",
        "--wait",
    ]))
    .await;
    assert_eq!(run.code, Some(3), "{}", run.text());

    // An unknown block is the node's error too.
    let run = meshd(args(&["query", "block", "999999", "--rpc", &url])).await;
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(run.stderr.contains("unknown_block"), "{}", run.text());

    node.stop().await.expect("clean stop");

    // Nobody listening any more: the URL is named.
    let run = meshd(args(&["query", "status", "--rpc", &url])).await;
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(run.stderr.contains(&url), "{}", run.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bond_and_unbond_through_the_cli() {
    let testnet = Testnet::new(1);
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&testnet, &dir.path().join("node")).await;
    wait_height(&node, 1).await;
    let url = format!("http://{}", node.rpc_addr());
    let key_file = dir.path().join("alice.json");
    keys::write_key(&key_file, &testnet.account, false).unwrap();
    let key = key_file.to_str().unwrap();
    let alice = testnet.account.address().to_string();
    let validator = testnet.validators[0].address().to_string();
    let stranger = SecretKey::from_seed([44; 32]).address().to_string();
    // `meshd tx <op> --validator V --amount N` from alice, with `extra` flags.
    let staking = |op: &str, validator: &str, amount: &str, extra: &[&str]| {
        let mut list = vec![
            "tx",
            op,
            "--rpc",
            &url,
            "--key",
            key,
            "--validator",
            validator,
            "--amount",
            amount,
        ];
        list.extend_from_slice(extra);
        meshd(args(&list))
    };

    // Registering the sender's own key as a candidate.
    let run = staking("bond", &alice, "100", &["--wait"]).await;
    assert!(run.ok(), "{}", run.text());
    assert!(run.stdout.contains("status success"), "{}", run.text());

    // Refusals at admission carry the receipt reason's code; nothing is charged.
    let run = staking("bond", &stranger, "5", &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(
        run.stderr.contains("unknown_validator, code 1301"),
        "{}",
        run.text()
    );
    let run = staking("unbond", &validator, "1", &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(
        run.stderr.contains("insufficient_bond, code 1304"),
        "{}",
        run.text()
    );

    // Unbonding the registration: the genesis validator keeps the set non-empty.
    let run = staking("unbond", &alice, "100", &["--wait", "--json"]).await;
    assert!(run.ok(), "{}", run.text());
    assert_eq!(run.json()["status"]["status"], "success", "{}", run.text());
    node.stop().await.unwrap();
}
