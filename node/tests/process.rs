//! Real `meshd run` processes on loopback: four validators finalize; one is killed with
//! SIGKILL while the rest go on; restarted on the same home it catches up without ever
//! signing a conflicting vote; SIGTERM stops every node cleanly; afterwards every database
//! holds the same blocks and state roots. Every wait is bounded and every process is killed
//! when the test ends, pass or fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mesh_ledger::storage::Store;
use mesh_node::home::Home;
use mesh_node::keys;
use mesh_node::network::Keypair;

const LIMIT: Duration = Duration::from_secs(120);

struct Proc {
    home: PathBuf,
    metrics: SocketAddr,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("meshd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_meshd"))
            .args(["run", "--home", self.home.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn height(&self) -> Option<u64> {
        let text = scrape(self.metrics)?;
        metric(&text, "mesh_finalized_height").map(|v| v as u64)
    }

    fn metric(&self, name: &str) -> f64 {
        scrape(self.metrics)
            .and_then(|text| metric(&text, name))
            .unwrap_or(0.0)
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("meshd.log")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Writes four validator homes that know each other as bootnodes.
fn homes(root: &Path, testnet: &Testnet) -> Vec<Proc> {
    let seeds: Vec<[u8; 32]> = (0..4).map(|_| keys::generate_seed()).collect();
    let p2p_ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let addrs: Vec<String> = seeds
        .iter()
        .zip(&p2p_ports)
        .map(|(seed, port)| {
            let peer = Keypair::ed25519_from_bytes(*seed)
                .unwrap()
                .public()
                .to_peer_id();
            format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")
        })
        .collect();
    (0..4)
        .map(|i| {
            let dir = root.join(format!("node{i}"));
            let others = addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| a.clone())
                .collect();
            let metrics_port = free_port();
            let config = test_config(p2p_ports[i], metrics_port, others);
            write_home(&dir, testnet, Some(&testnet.validators[i]), &config);
            keys::write_node_key(&Home::new(&dir).node_key(), &seeds[i], true).unwrap();
            Proc {
                home: dir,
                metrics: config.metrics.listen_addr,
                child: None,
            }
        })
        .collect()
}

#[test]
fn validators_survive_sigkill_and_restart_without_equivocating() {
    let root = tempfile::tempdir().unwrap();
    let testnet = Testnet::new(4);
    let mut nodes = homes(root.path(), &testnet);
    for node in &mut nodes {
        node.spawn();
    }
    for node in &nodes {
        assert!(
            wait_until(LIMIT, || node.height().is_some_and(|h| h >= 3)),
            "every validator finalizes; log:\n{}",
            node.log()
        );
    }

    // Kill one validator outright; the other three (a quorum of 3 of 4) keep finalizing.
    nodes[3].kill9();
    let at_kill = nodes[0].height().unwrap();
    for node in &nodes[..3] {
        assert!(
            wait_until(LIMIT, || node.height().is_some_and(|h| h >= at_kill + 5)),
            "three validators keep finalizing; log:\n{}",
            node.log()
        );
    }

    // Restart it on the same home: it catches up and rejoins.
    nodes[3].spawn();
    let target = nodes[0].height().unwrap() + 3;
    assert!(
        wait_until(LIMIT, || nodes[3].height().is_some_and(|h| h >= target)),
        "the restarted validator catches up; log:\n{}",
        nodes[3].log()
    );
    // Nobody saw it (or anyone) sign two conflicting votes.
    for node in &nodes {
        assert_eq!(node.metric("mesh_evidence_reported_total"), 0.0);
    }

    // SIGTERM: every node exits cleanly.
    for node in &mut nodes {
        assert!(
            node.terminate(),
            "clean exit on SIGTERM; log:\n{}",
            node.log()
        );
    }
    for node in &nodes {
        assert!(
            node.log().contains("consensus driver stopped"),
            "{}",
            node.log()
        );
    }

    // Every database holds the same chain: same block hashes and state roots at every height.
    let stores: Vec<Store> = nodes
        .iter()
        .map(|n| Store::open(&Home::new(&n.home).data()).unwrap())
        .collect();
    let common_height = stores
        .iter()
        .map(|s| s.latest_height().unwrap().unwrap())
        .min()
        .unwrap();
    assert!(common_height >= target, "{common_height} < {target}");
    for height in 1..=common_height {
        let reference = stores[0].header(height).unwrap().unwrap();
        for store in &stores[1..] {
            let header = store.header(height).unwrap().unwrap();
            assert_eq!(header.hash(), reference.hash(), "height {height}");
            assert_eq!(header.state_root, reference.state_root, "height {height}");
        }
    }
}

/// `meshd run` refuses bad homes with a message naming the file and field, exit code ≠ 0.
#[test]
fn meshd_run_names_what_is_wrong_with_a_home() {
    let root = tempfile::tempdir().unwrap();
    let run = |home: &Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_meshd"))
            .args(["run", "--home", home.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!output.status.success(), "must fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // No home at all.
    let missing = run(&root.path().join("nowhere"));
    assert!(missing.contains("config.toml"), "{missing}");

    let dir = root.path().join("node");
    let testnet = Testnet::new(1);
    let config = test_config(free_port(), free_port(), Vec::new());
    write_home(&dir, &testnet, Some(&testnet.validators[0]), &config);
    let home = Home::new(&dir);

    // A bad config value.
    let good_config = std::fs::read_to_string(home.config()).unwrap();
    std::fs::write(
        home.config(),
        good_config.replace("max_peers = 50", "max_peers = 0"),
    )
    .unwrap();
    let bad_config = run(&dir);
    assert!(bad_config.contains("p2p.max_peers"), "{bad_config}");
    std::fs::write(
        home.config(),
        good_config.replace("block_interval_ms = 100", "block_interval_ms = 5000"),
    )
    .unwrap();
    let bad_timing = run(&dir);
    assert!(
        bad_timing.contains("consensus.view_timeout_ms"),
        "{bad_timing}"
    );
    std::fs::write(home.config(), &good_config).unwrap();

    // A bad genesis field.
    let good_genesis = std::fs::read_to_string(home.genesis()).unwrap();
    std::fs::write(
        home.genesis(),
        good_genesis.replace("\"chain_id\"", "\"chain\""),
    )
    .unwrap();
    let bad_genesis = run(&dir);
    assert!(bad_genesis.contains("genesis.json"), "{bad_genesis}");
    assert!(bad_genesis.contains("chain"), "{bad_genesis}");

    // A corrupt validator key.
    std::fs::write(home.genesis(), &good_genesis).unwrap();
    std::fs::write(home.validator_key(), "{\"address\": 1}").unwrap();
    let bad_key = run(&dir);
    assert!(bad_key.contains("validator_key.json"), "{bad_key}");
}

/// `meshd dev`: funded accounts printed and written, blocks at once, clean stop, and the same
/// home continues the same chain.
#[test]
fn meshd_dev_runs_a_chain_with_funded_accounts_and_resumes_it() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("dev");
    let metrics_port = free_port();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_meshd"))
            .args([
                "dev",
                "--home",
                home.to_str().unwrap(),
                "--accounts",
                "3",
                "--block-interval-ms",
                "50",
                "--rpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut node = Proc {
        home: home.clone(),
        metrics: format!("127.0.0.1:{metrics_port}").parse().unwrap(),
        child: Some(spawn()),
    };
    assert!(wait_until(LIMIT, || node.height().is_some_and(|h| h >= 3)));
    for i in 0..3 {
        let key = keys::read_key(&home.join(format!("accounts/account-{i}.json"))).unwrap();
        let genesis = mesh_ledger::Genesis::load(&Home::new(&home).genesis()).unwrap();
        assert!(genesis.balances.iter().any(|b| b.address == key.address()));
    }
    let mut child = node.child.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    node.child = Some(child);
    assert!(node.terminate(), "clean exit on SIGTERM");
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut printed).unwrap();
    assert_eq!(printed.matches("secret 0x").count(), 3, "{printed}");

    let before = Store::open(&Home::new(&home).data())
        .unwrap()
        .latest_height()
        .unwrap()
        .unwrap();
    node.child = Some(spawn());
    assert!(
        wait_until(LIMIT, || node.height().is_some_and(|h| h > before)),
        "the same home continues the same chain"
    );
    assert!(node.terminate());
}
