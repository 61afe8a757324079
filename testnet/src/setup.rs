//! Writing a new testnet directory: one home per node (by running `meshd init`), the shared
//! genesis, each node's `config.toml` (ports, bootnodes, fast consensus timing) and the dev
//! account key files.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_ledger::bytes::{parse_hex_fixed, to_hex};
use mesh_ledger::{Address, Genesis, GenesisAccount, Params, SecretKey, Validator};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use crate::state::{NodeEntry, TestnetFile};
use crate::TestnetError;

/// Chain id of a testnet's genesis.
pub const CHAIN_ID: &str = "mesh-testnet";
/// Voting power of every testnet validator.
pub const VALIDATOR_POWER: u64 = 10;
/// Balance of every development account.
pub const ACCOUNT_BALANCE: u64 = 1_000_000_000_000;
/// `consensus.block_interval_ms` written to every node's config.
pub const BLOCK_INTERVAL_MS: i64 = 200;
/// `consensus.empty_block_interval_ms` written to every node's config: an idle testnet makes
/// about two blocks a second instead of five, half the work (docs/performance.md).
pub const EMPTY_BLOCK_INTERVAL_MS: i64 = 500;
/// `consensus.view_timeout_ms` written to every node's config.
pub const VIEW_TIMEOUT_MS: i64 = 1_000;
/// Heights per epoch on a testnet: short, so every scenario crosses epoch boundaries (and a
/// boundary's re-proposals and `EnterEpoch`) many times (ADR 003 §10 step 5).
pub(crate) const EPOCH_BLOCKS: u64 = 30;

/// The shape of a new network.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) validators: u32,
    pub(crate) full_nodes: u32,
    pub(crate) accounts: u32,
    pub(crate) base_port: Option<u16>,
}

/// Where the nodes of a new network listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hosts {
    /// Every node on 127.0.0.1, each with its own three ports.
    Loopback,
    /// Node i on `addresses[i]` (its own network namespace, see `netns`), every node on the same
    /// three ports: [`NETNS_BASE_PORT`] or `--base-port`, and the two after it.
    Each(Vec<Ipv4Addr>),
}

/// First of the three ports every node uses when each has its own address (`up --netns`).
pub(crate) const NETNS_BASE_PORT: u16 = 30_400;

/// The three ports of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports {
    p2p: u16,
    rpc: u16,
    metrics: u16,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    address: Address,
    secret: String,
}

#[derive(Deserialize)]
struct AddressOnly {
    address: Address,
}

#[derive(Deserialize)]
struct NodeKeyFile {
    ed25519_seed: String,
}

/// Writes every home, the genesis and the account keys of a new network in `dir` (absolute),
/// and returns its description with pid 0 for every node (nothing is started here).
pub(crate) fn create(
    meshd: &Path,
    dir: &Path,
    shape: Shape,
    hosts: &Hosts,
) -> Result<TestnetFile, TestnetError> {
    let count = usize::try_from(shape.validators.saturating_add(shape.full_nodes))
        .map_err(|_| TestnetError::Usage("too many nodes".into()))?;
    let (ports, host) = match hosts {
        Hosts::Loopback => (
            choose_ports(count, shape.base_port)?,
            vec![Ipv4Addr::LOCALHOST; count],
        ),
        Hosts::Each(addresses) if addresses.len() == count => {
            (same_ports(count, shape.base_port)?, addresses.clone())
        }
        Hosts::Each(addresses) => {
            return Err(TestnetError::Usage(format!(
                "{count} nodes need {count} addresses, not {}",
                addresses.len()
            )))
        }
    };
    let nodes_dir = dir.join("nodes");
    create_dir(&nodes_dir)?;

    // Homes and keys.
    let mut homes = Vec::with_capacity(count);
    let mut validators = Vec::new();
    let mut peer_ids = Vec::with_capacity(count);
    for index in 0..count {
        let name = format!("node-{index}");
        let home = nodes_dir.join(&name);
        meshd_init(meshd, &home, &name)?;
        // `init` funds an account of its own; the testnet's accounts are in `accounts/`.
        remove_file(&home.join("account_key.json"))?;
        let validator_key = home.join("validator_key.json");
        let is_validator = index < usize::try_from(shape.validators).unwrap_or(usize::MAX);
        if is_validator {
            let key: AddressOnly = read_json(&validator_key)?;
            validators.push(Validator {
                address: key.address,
                power: VALIDATOR_POWER,
            });
        } else {
            remove_file(&validator_key)?;
        }
        peer_ids.push(peer_id(&home.join("node_key.json"))?);
        homes.push((name, home, is_validator));
    }

    // Development accounts.
    let accounts_dir = dir.join("accounts");
    create_dir(&accounts_dir)?;
    let mut balances = Vec::new();
    for index in 0..shape.accounts {
        let key = SecretKey::from_seed(random_seed());
        write_key(&accounts_dir.join(format!("account-{index}.json")), &key)?;
        balances.push(GenesisAccount {
            address: key.address(),
            balance: ACCOUNT_BALANCE,
        });
    }

    let genesis = Genesis {
        chain_id: CHAIN_ID.into(),
        genesis_time_ms: now_ms(),
        params: Params {
            epoch_blocks: EPOCH_BLOCKS,
            ..Params::for_genesis_set(validators.len())
        },
        validators,
        balances,
    };
    genesis
        .validate()
        .map_err(|err| TestnetError::Genesis(err.to_string()))?;
    let genesis_json = format!("{}\n", genesis.to_json());

    let p2p_addr = |index: usize| -> String {
        format!(
            "/ip4/{}/tcp/{}/p2p/{}",
            host[index], ports[index].p2p, peer_ids[index]
        )
    };
    let mut nodes = Vec::with_capacity(count);
    for (index, (name, home, validator)) in homes.into_iter().enumerate() {
        write_private(&home.join("genesis.json"), genesis_json.as_bytes())?;
        let bootnodes: Vec<String> = (0..count).filter(|&i| i != index).map(p2p_addr).collect();
        rewrite_config(
            &home.join("config.toml"),
            &name,
            host[index],
            ports[index],
            &bootnodes,
        )?;
        nodes.push(NodeEntry {
            name,
            pid: 0,
            home,
            rpc: format!("http://{}:{}", host[index], ports[index].rpc),
            p2p: p2p_addr(index),
            metrics: format!("{}:{}", host[index], ports[index].metrics),
            validator,
        });
    }
    Ok(TestnetFile {
        chain_id: CHAIN_ID.into(),
        nodes,
        accounts_dir,
    })
}

/// `--base-port P`: node i gets P+3i, P+3i+1, P+3i+2 (each checked free); otherwise free
/// loopback ports from the system, all held open until every one is chosen so none repeats.
fn choose_ports(count: usize, base: Option<u16>) -> Result<Vec<Ports>, TestnetError> {
    let needed = count.saturating_mul(3);
    let numbers: Vec<u16> = match base {
        Some(base) => {
            let last = usize::from(base).saturating_add(needed).saturating_sub(1);
            if base == 0 || last > usize::from(u16::MAX) {
                return Err(TestnetError::Usage(format!(
                    "--base-port {base}: {count} nodes need ports {base}..={last}, which must lie in 1..=65535"
                )));
            }
            let numbers: Vec<u16> = (0..needed)
                .filter_map(|offset| u16::try_from(usize::from(base) + offset).ok())
                .collect();
            for &port in &numbers {
                if TcpListener::bind(("127.0.0.1", port)).is_err() {
                    return Err(TestnetError::Usage(format!(
                        "port {port} on 127.0.0.1 is in use; pick another --base-port or leave it out for free ports"
                    )));
                }
            }
            numbers
        }
        None => {
            let mut held = Vec::with_capacity(needed);
            for _ in 0..needed {
                let listener = TcpListener::bind(("127.0.0.1", 0))
                    .map_err(|source| TestnetError::io(Path::new("127.0.0.1:0"), source))?;
                held.push(listener);
            }
            let mut numbers = Vec::with_capacity(needed);
            for listener in &held {
                let port = listener
                    .local_addr()
                    .map_err(|source| TestnetError::io(Path::new("127.0.0.1:0"), source))?
                    .port();
                numbers.push(port);
            }
            numbers
        }
    };
    Ok(numbers
        .chunks_exact(3)
        .map(|chunk| Ports {
            p2p: chunk[0],
            rpc: chunk[1],
            metrics: chunk[2],
        })
        .collect())
}

/// Every node on the same three ports (each has its own address): `base`, `base + 1`,
/// `base + 2`, with `base` = `--base-port` or [`NETNS_BASE_PORT`].
fn same_ports(count: usize, base: Option<u16>) -> Result<Vec<Ports>, TestnetError> {
    let p2p = base.unwrap_or(NETNS_BASE_PORT);
    let (Some(rpc), Some(metrics)) = (p2p.checked_add(1), p2p.checked_add(2)) else {
        return Err(TestnetError::Usage(format!(
            "--base-port {p2p}: every node needs ports {p2p}..={p2p}+2, which must lie in 1..=65535"
        )));
    };
    if p2p == 0 {
        return Err(TestnetError::Usage("--base-port must be at least 1".into()));
    }
    Ok(vec![Ports { p2p, rpc, metrics }; count])
}

pub(crate) fn meshd_init(meshd: &Path, home: &Path, name: &str) -> Result<(), TestnetError> {
    let output = Command::new(meshd)
        .arg("init")
        .arg("--home")
        .arg(home)
        .args(["--chain-id", CHAIN_ID, "--moniker", name, "--force"])
        .output()
        .map_err(|source| TestnetError::Spawn {
            program: meshd.display().to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(TestnetError::Init {
        home: home.display().to_string(),
        output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Sets the testnet's values in a `config.toml` written by `meshd init`, keeping the rest.
fn rewrite_config(
    path: &Path,
    moniker: &str,
    host: Ipv4Addr,
    ports: Ports,
    bootnodes: &[String],
) -> Result<(), TestnetError> {
    let text = std::fs::read_to_string(path).map_err(|source| TestnetError::io(path, source))?;
    let mut table: toml::Table =
        text.parse()
            .map_err(|err: toml::de::Error| TestnetError::Malformed {
                path: path.display().to_string(),
                reason: err.to_string(),
            })?;
    table.insert("moniker".into(), toml::Value::String(moniker.into()));
    let section = |table: &mut toml::Table, name: &str| -> toml::Table {
        match table.remove(name) {
            Some(toml::Value::Table(inner)) => inner,
            _ => toml::Table::new(),
        }
    };
    let mut p2p = section(&mut table, "p2p");
    p2p.insert(
        "listen_addr".into(),
        toml::Value::String(format!("/ip4/{host}/tcp/{}", ports.p2p)),
    );
    p2p.insert(
        "bootnodes".into(),
        toml::Value::Array(bootnodes.iter().cloned().map(toml::Value::String).collect()),
    );
    table.insert("p2p".into(), toml::Value::Table(p2p));
    let mut rpc = section(&mut table, "rpc");
    rpc.insert(
        "listen_addr".into(),
        toml::Value::String(format!("{host}:{}", ports.rpc)),
    );
    table.insert("rpc".into(), toml::Value::Table(rpc));
    let mut metrics = section(&mut table, "metrics");
    metrics.insert(
        "listen_addr".into(),
        toml::Value::String(format!("{host}:{}", ports.metrics)),
    );
    table.insert("metrics".into(), toml::Value::Table(metrics));
    let mut consensus = section(&mut table, "consensus");
    consensus.insert(
        "block_interval_ms".into(),
        toml::Value::Integer(BLOCK_INTERVAL_MS),
    );
    consensus.insert(
        "empty_block_interval_ms".into(),
        toml::Value::Integer(EMPTY_BLOCK_INTERVAL_MS),
    );
    consensus.insert(
        "view_timeout_ms".into(),
        toml::Value::Integer(VIEW_TIMEOUT_MS),
    );
    table.insert("consensus".into(), toml::Value::Table(consensus));
    let text = format!(
        "# Written by `meshd testnet up` (docs/testnet.md); keys as in docs/operators.md.\n{}",
        toml::to_string(&table).map_err(|err| TestnetError::Malformed {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?
    );
    write_private(path, text.as_bytes())
}

/// The libp2p peer id of a home's `node_key.json` (`{"ed25519_seed": "0x…"}`), derived the
/// way the node derives its own.
pub(crate) fn peer_id(path: &Path) -> Result<String, TestnetError> {
    let file: NodeKeyFile = read_json(path)?;
    let malformed = |reason: String| TestnetError::Malformed {
        path: path.display().to_string(),
        reason,
    };
    let seed: [u8; 32] = parse_hex_fixed(&file.ed25519_seed)
        .map_err(|err| malformed(format!("field `ed25519_seed`: {err}")))?;
    let keypair = libp2p_identity::Keypair::ed25519_from_bytes(seed)
        .map_err(|err| malformed(format!("field `ed25519_seed`: {err}")))?;
    Ok(keypair.public().to_peer_id().to_string())
}

/// A key file in the node's format: `{"address": "0x…", "secret": "0x…"}`, mode 0600.
pub(crate) fn write_key(path: &Path, key: &SecretKey) -> Result<(), TestnetError> {
    let file = KeyFile {
        address: key.address(),
        secret: to_hex(&key.seed()),
    };
    let json = serde_json::to_string_pretty(&file).map_err(|err| TestnetError::Malformed {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    write_private(path, format!("{json}\n").as_bytes())
}

/// Writes a file readable by the owner only (replacing any old one).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), TestnetError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut file = options.open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    write().map_err(|source| TestnetError::io(path, source))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TestnetError> {
    let text = std::fs::read_to_string(path).map_err(|source| TestnetError::io(path, source))?;
    serde_json::from_str(&text).map_err(|err| TestnetError::Malformed {
        path: path.display().to_string(),
        reason: err.to_string(),
    })
}

pub(crate) fn create_dir(path: &Path) -> Result<(), TestnetError> {
    std::fs::create_dir_all(path).map_err(|source| TestnetError::io(path, source))
}

pub(crate) fn remove_file(path: &Path) -> Result<(), TestnetError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TestnetError::io(path, source)),
    }
}

pub(crate) fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    seed
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `dir` made absolute (against the current directory), so the homes recorded in testnet.json
/// and on the nodes' command lines are the same wherever the tool is run from later.
pub(crate) fn absolute(dir: &Path) -> Result<PathBuf, TestnetError> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    let current = std::env::current_dir().map_err(|source| TestnetError::io(dir, source))?;
    Ok(current.join(dir))
}

/// Writes the home of one more full node for the network in `dir` (absolute): `meshd init`,
/// the network's genesis (copied from the first node's home), free loopback ports and every
/// existing node as a bootnode. Returns its entry with pid 0; the caller records and starts it.
pub(crate) fn add_full_node(
    meshd: &Path,
    dir: &Path,
    file: &TestnetFile,
) -> Result<NodeEntry, TestnetError> {
    let index = file.nodes.len();
    let first = file.nodes.first().ok_or_else(|| TestnetError::Malformed {
        path: TestnetFile::path(dir).display().to_string(),
        reason: "it lists no node".into(),
    })?;
    let name = format!("node-{index}");
    let home = dir.join("nodes").join(&name);
    if home.exists() {
        return Err(TestnetError::Usage(format!(
            "{} already exists but testnet.json lists {index} node(s); remove it or use another --dir",
            home.display()
        )));
    }
    let genesis_path = first.home.join("genesis.json");
    let genesis =
        std::fs::read(&genesis_path).map_err(|source| TestnetError::io(&genesis_path, source))?;
    let ports = choose_ports(1, None)?;
    let written = (|| {
        meshd_init(meshd, &home, &name)?;
        remove_file(&home.join("account_key.json"))?;
        remove_file(&home.join("validator_key.json"))?;
        write_private(&home.join("genesis.json"), &genesis)?;
        let bootnodes: Vec<String> = file.nodes.iter().map(|node| node.p2p.clone()).collect();
        rewrite_config(
            &home.join("config.toml"),
            &name,
            Ipv4Addr::LOCALHOST,
            ports[0],
            &bootnodes,
        )?;
        peer_id(&home.join("node_key.json"))
    })();
    let peer = match written {
        Ok(peer) => peer,
        Err(err) => {
            // Half a home would make the next `join` refuse: leave nothing behind.
            let _ = std::fs::remove_dir_all(&home);
            return Err(err);
        }
    };
    Ok(NodeEntry {
        name,
        pid: 0,
        home,
        rpc: format!("http://127.0.0.1:{}", ports[0].rpc),
        p2p: format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer}", ports[0].p2p),
        metrics: format!("127.0.0.1:{}", ports[0].metrics),
        validator: false,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn base_port_gives_three_consecutive_ports_per_node() {
        // A high range that is very likely free on a test machine.
        let ports = choose_ports(2, Some(47_100)).unwrap();
        assert_eq!(
            ports
                .iter()
                .map(|p| (p.p2p, p.rpc, p.metrics))
                .collect::<Vec<_>>(),
            vec![(47_100, 47_101, 47_102), (47_103, 47_104, 47_105)]
        );
        assert!(choose_ports(2, Some(65_534)).is_err());
    }

    #[test]
    fn nodes_with_their_own_address_share_three_ports() {
        let ports = same_ports(3, None).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| (p.p2p, p.rpc, p.metrics)
            == (NETNS_BASE_PORT, NETNS_BASE_PORT + 1, NETNS_BASE_PORT + 2)));
        assert_eq!(same_ports(1, Some(5_000)).unwrap()[0].metrics, 5_002);
        assert!(same_ports(1, Some(65_534)).is_err());
        assert!(same_ports(1, Some(0)).is_err());
    }

    #[test]
    fn free_ports_never_repeat() {
        let ports = choose_ports(5, None).unwrap();
        let mut all: Vec<u16> = ports
            .iter()
            .flat_map(|p| [p.p2p, p.rpc, p.metrics])
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 15);
    }

    #[test]
    fn config_rewrite_sets_the_testnet_values_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "moniker = \"x\"\n[p2p]\nlisten_addr = \"/ip4/0.0.0.0/tcp/30400\"\nbootnodes = []\nmax_peers = 50\n[rpc]\nlisten_addr = \"127.0.0.1:30401\"\nbatch_len_max = 100\n",
        )
        .unwrap();
        let ports = Ports {
            p2p: 1,
            rpc: 2,
            metrics: 3,
        };
        rewrite_config(
            &path,
            "node-0",
            Ipv4Addr::LOCALHOST,
            ports,
            &["/ip4/127.0.0.1/tcp/4/p2p/abc".into()],
        )
        .unwrap();
        let table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        assert_eq!(table["moniker"].as_str(), Some("node-0"));
        assert_eq!(
            table["p2p"]["listen_addr"].as_str(),
            Some("/ip4/127.0.0.1/tcp/1")
        );
        assert_eq!(table["p2p"]["max_peers"].as_integer(), Some(50));
        assert_eq!(
            table["p2p"]["bootnodes"][0].as_str(),
            Some("/ip4/127.0.0.1/tcp/4/p2p/abc")
        );
        assert_eq!(table["rpc"]["listen_addr"].as_str(), Some("127.0.0.1:2"));
        assert_eq!(table["rpc"]["batch_len_max"].as_integer(), Some(100));
        assert_eq!(
            table["metrics"]["listen_addr"].as_str(),
            Some("127.0.0.1:3")
        );
        assert_eq!(
            table["consensus"]["block_interval_ms"].as_integer(),
            Some(BLOCK_INTERVAL_MS)
        );
        assert_eq!(
            table["consensus"]["view_timeout_ms"].as_integer(),
            Some(VIEW_TIMEOUT_MS)
        );
    }

    #[test]
    fn peer_id_matches_libp2p_and_key_files_match_the_node_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node_key.json");
        std::fs::write(
            &path,
            format!("{{\"ed25519_seed\": \"{}\"}}", to_hex(&[7u8; 32])),
        )
        .unwrap();
        let expected = libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32])
            .unwrap()
            .public()
            .to_peer_id()
            .to_string();
        assert_eq!(peer_id(&path).unwrap(), expected);

        let key = SecretKey::from_seed([9u8; 32]);
        let key_path = dir.path().join("account-0.json");
        write_key(&key_path, &key).unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
        assert_eq!(value["secret"].as_str(), Some(to_hex(&[9u8; 32]).as_str()));
        assert_eq!(
            value["address"].as_str(),
            Some(key.address().to_string().as_str())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
