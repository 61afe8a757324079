//! Shared harness of the multi-node tests: a genesis for n validators, node homes on
//! loopback with free ports, and bounded waits.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::time::Duration;

use mesh_ledger::{Genesis, GenesisAccount, Params, SecretKey, Validator};
use mesh_node::config::Config;
use mesh_node::driver::DriverConfig;
use mesh_node::home::Home;
use mesh_node::keys;
use mesh_node::network::NetworkConfig;
use mesh_node::service::NodeOptions;

pub const CHAIN: &str = "mesh-cluster-test";
/// Heights per epoch of the test chains.
pub const EPOCH_BLOCKS: u64 = 5;

/// A chain's keys and genesis.
pub struct Testnet {
    pub genesis: Genesis,
    pub validators: Vec<SecretKey>,
    pub account: SecretKey,
}

impl Testnet {
    pub fn new(validators: usize) -> Testnet {
        let keys: Vec<SecretKey> = (0..validators)
            .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
            .collect();
        let account = SecretKey::from_seed([200; 32]);
        let genesis = Genesis {
            chain_id: CHAIN.into(),
            genesis_time_ms: 1_700_000_000_000,
            validators: keys
                .iter()
                .map(|k| Validator {
                    address: k.address(),
                    power: 10,
                })
                .collect(),
            balances: vec![GenesisAccount {
                address: account.address(),
                balance: 1_000_000_000,
            }],
            // Epochs of five blocks: every cluster test crosses boundaries.
            params: Params {
                epoch_blocks: EPOCH_BLOCKS,
                ..Params::for_genesis_set(validators)
            },
        };
        Testnet {
            genesis,
            validators: keys,
            account,
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: a tiny race, acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node config for tests: loopback, fast blocks, short timeouts.
pub fn test_config(p2p_port: u16, metrics_port: u16, bootnodes: Vec<String>) -> Config {
    let mut config = Config::default();
    config.p2p.listen_addr = format!("/ip4/127.0.0.1/tcp/{p2p_port}");
    config.p2p.bootnodes = bootnodes;
    config.metrics.listen_addr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    // Port 0: the server binds a free port and reports it (no bind-and-release race).
    config.rpc.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.consensus.block_interval_ms = 100;
    // Empty blocks at the block interval: tests wait for heights.
    config.consensus.empty_block_interval_ms = Some(100);
    config.consensus.view_timeout_ms = 1_500;
    config.consensus.view_timeout_max_ms = 6_000;
    config
}

pub fn tune_network(config: &mut NetworkConfig) {
    config.gossip_heartbeat = Duration::from_millis(200);
    config.discovery_interval = Duration::from_millis(500);
    config.sync_timeout = Duration::from_secs(3);
}

/// Options for an in-process node.
pub fn options(
    dir: &Path,
    testnet: &Testnet,
    validator: Option<&SecretKey>,
    config: Config,
) -> NodeOptions {
    let mut driver = DriverConfig {
        block_interval_ms: config.consensus.block_interval_ms,
        empty_block_interval_ms: config.consensus.empty_block_interval(),
        ..DriverConfig::default()
    };
    driver.status_interval = Duration::from_millis(500);
    driver.sync_peer_backoff = Duration::from_secs(2);
    NodeOptions {
        home: Home::new(dir),
        config,
        genesis: testnet.genesis.clone(),
        validator_key: validator.cloned(),
        node_key_seed: keys::generate_seed(),
        driver,
        tune_network: Some(tune_network),
        admin: false,
    }
}

/// Writes a home for `meshd run` (config, genesis, keys).
pub fn write_home(dir: &Path, testnet: &Testnet, validator: Option<&SecretKey>, config: &Config) {
    let home = Home::new(dir);
    std::fs::create_dir_all(dir).unwrap();
    keys::write_private(&home.config(), config.to_documented_toml().as_bytes(), true).unwrap();
    keys::write_private(&home.genesis(), testnet.genesis.to_json().as_bytes(), true).unwrap();
    keys::write_node_key(&home.node_key(), &keys::generate_seed(), true).unwrap();
    if let Some(key) = validator {
        keys::write_key(&home.validator_key(), key, true).unwrap();
    }
}

/// Reads `GET /metrics` from a node.
pub fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of an un-labelled metric (or the sum over its label sets) in a scrape.
pub fn metric(scrape: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in scrape.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let bare = key.split('{').next().unwrap_or(key);
        if bare == name {
            let v: f64 = value.parse().ok()?;
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// `POST <path>` with a text body to a node's metrics listener; (status, body).
pub fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((status, body))
}
