//! `meshd testnet init` through the real binary: four validators written for one loopback host
//! start with plain `meshd run --home …` and finalize blocks; bad input is refused with a
//! message naming the problem; mixed IPv4 / IPv6 / DNS hosts give production homes that the
//! node's own loaders accept. Every process the test starts is stopped by a guard, pass or
//! fail, and everything binds 127.0.0.1 only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod testnet_support;

use testnet_support::meshd;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mesh_ledger::Genesis;
use mesh_node::config::{
    Config, ConsensusSettings, DEFAULT_METRICS_PORT, DEFAULT_P2P_PORT, DEFAULT_RPC_PORT,
};
use mesh_testnet::scrape_metrics;

/// Longest wait for every node to finalize height 2.
const LIVE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a node gets after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

fn run_meshd(args: &[&str]) -> Output {
    Command::new(meshd()).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn network(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("network.json")).unwrap()).unwrap()
}

/// A base port whose `count` consecutive ports are free on 127.0.0.1 right now (below the
/// usual ephemeral range, starting at a spot that differs between processes).
fn free_port_block(count: u16) -> u16 {
    let start = 20_000 + u16::try_from(std::process::id() % 900).unwrap() * 12;
    for attempt in 0..400u16 {
        let base = 20_000 + (start - 20_000 + attempt * count) % 12_000;
        let held: Vec<TcpListener> = (0..count)
            .map_while(|offset| TcpListener::bind(("127.0.0.1", base + offset)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return base;
        }
    }
    panic!("no block of {count} free ports on 127.0.0.1 between 20000 and 32000");
}

/// Node processes; dropping it stops every one: SIGTERM, then SIGKILL after `STOP_TIMEOUT`.
struct Nodes {
    children: Vec<(PathBuf, Child)>,
}

impl Nodes {
    fn start(&mut self, home: &Path) {
        let log = File::create(home.join("meshd.log")).unwrap();
        let child = Command::new(meshd())
            .arg("run")
            .arg("--home")
            .arg(home)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push((home.to_path_buf(), child));
    }

    /// Panics with the end of its log if a node has exited.
    fn check_running(&mut self) {
        for (home, child) in &mut self.children {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(home.join("meshd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "the node in {} exited ({status}); end of its log:\n{}",
                    home.display(),
                    tail.join("\n")
                );
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline
            && self
                .children
                .iter_mut()
                .any(|(_, child)| matches!(child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        for (_, child) in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

#[test]
fn four_validators_on_one_host_start_from_their_homes_and_finalize() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("net");
    let base = free_port_block(12);
    let output = run_meshd(&[
        "testnet",
        "init",
        "--validators",
        "4",
        "--hosts",
        "127.0.0.1",
        "--out",
        out.to_str().unwrap(),
        "--base-port",
        &base.to_string(),
    ]);
    let printed = text(&output);
    assert!(output.status.success(), "init failed:\n{printed}");
    assert!(printed.contains("node-3"), "{printed}");
    assert!(printed.contains("next steps"), "{printed}");

    let description = network(&out);
    assert_eq!(description["chain_id"], "mesh-net");
    let nodes = description["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    let shared_genesis = std::fs::read(out.join("genesis.json")).unwrap();
    for (j, node) in nodes.iter().enumerate() {
        let p2p = base + 3 * u16::try_from(j).unwrap();
        assert_eq!(node["host"], "127.0.0.1");
        assert_eq!(node["validator"], true);
        assert_eq!(node["p2p_port"], p2p);
        assert_eq!(node["rpc_port"], p2p + 1);
        assert_eq!(node["metrics_port"], p2p + 2);
        let home = PathBuf::from(node["home"].as_str().unwrap());
        assert_eq!(
            std::fs::read(home.join("genesis.json")).unwrap(),
            shared_genesis
        );
        // A loopback host binds exactly its address: nothing listens beyond 127.0.0.1.
        let config = Config::load(&home.join("config.toml")).unwrap();
        assert_eq!(config.p2p.listen_addr, format!("/ip4/127.0.0.1/tcp/{p2p}"));
        assert_production_ports(&config, p2p);
        assert_eq!(config.p2p.bootnodes.len(), 3);
    }

    let mut running = Nodes {
        children: Vec::new(),
    };
    for node in nodes {
        running.start(Path::new(node["home"].as_str().unwrap()));
    }
    let metrics: Vec<String> = nodes
        .iter()
        .map(|node| node["metrics_listen"].as_str().unwrap().to_owned())
        .collect();
    let deadline = Instant::now() + LIVE_TIMEOUT;
    loop {
        running.check_running();
        let heights: Vec<Option<u64>> = metrics
            .iter()
            .map(|addr| scrape_metrics(addr).map(|m| m.finalized_height))
            .collect();
        if heights.iter().all(|h| h.is_some_and(|h| h >= 2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every node finalized height 2 within {LIVE_TIMEOUT:?}: {heights:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The check the operator guide gives works on the RPC address init chose.
    let rpc = format!("http://{}", nodes[0]["rpc_listen"].as_str().unwrap());
    let status = run_meshd(&["query", "status", "--rpc", &rpc]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("mesh-net"), "{}", text(&status));
}

#[test]
fn bad_input_is_refused_with_a_message_naming_the_problem() {
    let temp = tempfile::tempdir().unwrap();
    let taken = temp.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("keep.txt"), "mine").unwrap();
    let fresh = temp.path().join("fresh");
    let fresh_arg = fresh.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 5] = [
        (
            vec![
                "--validators",
                "4",
                "--hosts",
                "10.0.0.1",
                "--out",
                taken.to_str().unwrap(),
            ],
            "exists and is not empty",
        ),
        (
            vec!["--validators", "4", "--hosts", "", "--out", fresh_arg],
            "--hosts entry 1 is empty",
        ),
        (
            vec![
                "--validators",
                "4",
                "--hosts",
                "bad host",
                "--out",
                fresh_arg,
            ],
            "\"bad host\"",
        ),
        (
            vec![
                "--validators",
                "0",
                "--hosts",
                "10.0.0.1",
                "--out",
                fresh_arg,
            ],
            "--validators must be at least 1",
        ),
        (
            vec![
                "--validators",
                "2",
                "--hosts",
                "10.0.0.1,10.0.0.1",
                "--out",
                fresh_arg,
            ],
            "twice",
        ),
    ];
    for (args, expected) in cases {
        let mut words = vec!["testnet", "init"];
        words.extend(&args);
        let output = run_meshd(&words);
        let printed = text(&output);
        assert!(!output.status.success(), "{args:?} succeeded:\n{printed}");
        assert!(
            printed.contains(expected),
            "{args:?}: expected {expected:?} in:\n{printed}"
        );
    }
    assert!(!fresh.exists(), "a refused init writes nothing");
    assert_eq!(
        std::fs::read_to_string(taken.join("keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&taken).unwrap().count(), 1);
}

#[test]
fn mixed_hosts_give_production_homes_the_node_accepts() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("net");
    let output = run_meshd(&[
        "testnet",
        "init",
        "--validators",
        "3",
        "--full-nodes",
        "1",
        "--accounts",
        "2",
        "--chain-id",
        "prod-1",
        "--hosts",
        "192.0.2.10,2001:db8::20,val3.example.org",
        "--out",
        out.to_str().unwrap(),
    ]);
    let printed = text(&output);
    assert!(output.status.success(), "init failed:\n{printed}");

    let description = network(&out);
    let nodes = description["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    let genesis = Genesis::load(&out.join("genesis.json")).unwrap();
    assert_eq!(genesis.chain_id, "prod-1");
    assert_eq!(genesis.validators.len(), 3);
    assert_eq!(genesis.balances.len(), 2);
    assert_eq!(std::fs::read_dir(out.join("accounts")).unwrap().count(), 2);

    let expected = [
        (
            "192.0.2.10",
            "/ip4/0.0.0.0/tcp/30400",
            "/ip4/192.0.2.10/tcp/30400/p2p/",
            30400,
        ),
        (
            "2001:db8::20",
            "/ip6/::/tcp/30400",
            "/ip6/2001:db8::20/tcp/30400/p2p/",
            30400,
        ),
        (
            "val3.example.org",
            "/ip4/0.0.0.0/tcp/30400",
            "/dns/val3.example.org/tcp/30400/p2p/",
            30400,
        ),
        // The fourth node wraps around to the first host, on the next port block.
        (
            "192.0.2.10",
            "/ip4/0.0.0.0/tcp/30403",
            "/ip4/192.0.2.10/tcp/30403/p2p/",
            30403,
        ),
    ];
    // The first node of a host uses the node's own default ports.
    assert_eq!(nodes[0]["p2p_port"], DEFAULT_P2P_PORT);
    assert_eq!(nodes[0]["rpc_port"], DEFAULT_RPC_PORT);
    assert_eq!(nodes[0]["metrics_port"], DEFAULT_METRICS_PORT);
    assert!(nodes[3]["validator_address"].is_null());
    let dial: Vec<&str> = nodes.iter().map(|n| n["p2p"].as_str().unwrap()).collect();
    for (index, (node, (host, listen, dial_prefix, p2p))) in nodes.iter().zip(expected).enumerate()
    {
        let home = PathBuf::from(node["home"].as_str().unwrap());
        assert_eq!(node["host"], host);
        assert!(dial[index].starts_with(dial_prefix), "{}", dial[index]);
        assert_eq!(node["validator"], index < 3);
        assert_eq!(home.join("validator_key.json").exists(), index < 3);
        assert!(!home.join("account_key.json").exists());
        assert_eq!(Genesis::load(&home.join("genesis.json")).unwrap(), genesis);

        let config = Config::load(&home.join("config.toml")).unwrap();
        assert_eq!(config.moniker, format!("node-{index}"));
        assert_eq!(config.p2p.listen_addr, listen);
        assert_production_ports(&config, p2p);
        let others: Vec<String> = (0..3)
            .filter(|&other| other != index)
            .map(|other| dial[other].to_owned())
            .collect();
        assert_eq!(config.p2p.bootnodes, others, "node-{index}");
        // The commented reference `meshd init` wrote is still there for the operator.
        let raw = std::fs::read_to_string(home.join("config.toml")).unwrap();
        assert!(raw.contains("# Most connected peers."), "{raw}");
    }
    assert!(
        !printed.contains("warning"),
        "host names are dialed like addresses: {printed}"
    );
}

/// RPC and metrics on loopback at the two ports after `p2p`, and the production consensus
/// timing `meshd init` wrote (not the local testnet's fast one).
fn assert_production_ports(config: &Config, p2p: u16) {
    assert_eq!(
        config.rpc.listen_addr.to_string(),
        format!("127.0.0.1:{}", p2p + 1)
    );
    assert_eq!(
        config.metrics.listen_addr.to_string(),
        format!("127.0.0.1:{}", p2p + 2)
    );
    assert_eq!(config.consensus, ConsensusSettings::default());
}
