//! `meshd testnet init`: the homes, the shared genesis and `DIR/network.json` of a network
//! spread over several machines. Nothing is started: the operator copies each home to its host
//! and runs `meshd run --home …` there (docs/operators.md, "Deploy a network on several
//! machines").
//!
//! Unlike `up`, the homes keep the production settings `meshd init` wrote (consensus timing,
//! limits), the p2p listener binds every interface of its host (only a loopback host binds
//! that exact address), and RPC and metrics stay on loopback: exposing them is the operator's
//! decision. Node i runs on host i mod H (H hosts), validators first; the j-th node of a host
//! listens on P+3j (p2p), P+3j+1 (RPC) and P+3j+2 (metrics).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use mesh_ledger::genesis::GenesisError;
use mesh_ledger::{Address, Genesis, GenesisAccount, Params, SecretKey, Validator};
use serde::{Deserialize, Serialize};

use crate::setup::{self, ACCOUNT_BALANCE, EPOCH_BLOCKS, VALIDATOR_POWER};
use crate::{TestnetError, ACCOUNTS_MAX, NODES_MAX};

/// Chain id when `--chain-id` is not given.
pub(crate) const DEFAULT_CHAIN_ID: &str = "mesh-net";
/// First port of every host when `--base-port` is not given: the node's own default p2p port,
/// so the first node of each host uses meshd's default ports (30400, 30401, 30402).
pub(crate) const DEFAULT_BASE_PORT: u16 = 30400;
/// Funded accounts when `--accounts` is not given.
pub(crate) const DEFAULT_ACCOUNTS: u32 = 1;
/// Name of the network description inside the output directory.
pub(crate) const NETWORK_FILE: &str = "network.json";
/// Longest DNS name accepted as a host (RFC 1035, without the trailing dot).
const DNS_NAME_BYTES_MAX: usize = 253;
/// Longest label of a DNS name.
const DNS_LABEL_BYTES_MAX: usize = 63;

/// The `init` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitRequest {
    pub(crate) validators: u32,
    pub(crate) full_nodes: u32,
    /// `--hosts` as given: comma-separated.
    pub(crate) hosts: String,
    pub(crate) out: PathBuf,
    pub(crate) accounts: u32,
    pub(crate) chain_id: String,
    pub(crate) base_port: u16,
}

/// A machine of the network, as the other machines reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name (lower case).
    Dns(String),
}

impl Host {
    /// Parses entry `position` (from 1) of `--hosts`: an IPv4 address, an IPv6 address (with or
    /// without brackets) or a DNS name.
    fn parse(text: &str, position: usize) -> Result<Host, String> {
        let shown = format!("--hosts entry {position} ({text:?})");
        if text.is_empty() {
            return Err(format!(
                "--hosts entry {position} is empty: give hosts as h1,h2,… with no empty entry"
            ));
        }
        if text.chars().any(char::is_whitespace) {
            return Err(format!(
                "{shown} contains whitespace: a host is one IP address or DNS name, and hosts are separated by commas only"
            ));
        }
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            if ip.is_unspecified() || ip.is_multicast() || ip == Ipv4Addr::BROADCAST {
                return Err(format!(
                    "{shown} is not an address another machine can dial (unspecified, multicast or broadcast)"
                ));
            }
            return Ok(Host::Ip(ip));
        }
        if unbracketed.contains(':') || unbracketed.len() != text.len() {
            return Err(format!("{shown} is not a valid IPv6 address"));
        }
        check_dns_name(text)
            .map_err(|reason| format!("{shown} is not a valid IP address or DNS name: {reason}"))?;
        Ok(Host::Dns(text.to_ascii_lowercase()))
    }

    fn is_loopback(&self) -> bool {
        matches!(self, Host::Ip(ip) if ip.is_loopback())
    }

    /// The start of a multiaddress that dials this host: `/ip4/…`, `/ip6/…` or `/dns/…`.
    fn multiaddr_prefix(&self) -> String {
        match self {
            Host::Ip(IpAddr::V4(ip)) => format!("/ip4/{ip}"),
            Host::Ip(IpAddr::V6(ip)) => format!("/ip6/{ip}"),
            Host::Dns(name) => format!("/dns/{name}"),
        }
    }

    /// Where a node on this host binds its p2p listener: the host's own address when it is a
    /// loopback address (a test on one machine binds nothing else), otherwise every interface
    /// (a machine's public or NAT address is often not on any of its interfaces). A DNS name
    /// binds IPv4.
    fn p2p_bind(&self) -> IpAddr {
        match self {
            Host::Ip(ip) if ip.is_loopback() => *ip,
            Host::Ip(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            Host::Ip(IpAddr::V4(_)) | Host::Dns(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    /// Where a node on this host binds RPC and metrics: loopback. A loopback host uses its own
    /// address, so nodes on 127.0.0.1 and 127.0.0.2 with the same ports do not collide.
    fn local_bind(&self) -> IpAddr {
        match self {
            Host::Ip(ip) if ip.is_loopback() => *ip,
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The host as `scp` and `ssh` want it (IPv6 in brackets).
    fn for_scp(&self) -> String {
        match self {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

/// Whether `name` is a host name other machines could resolve: labels of letters, digits and
/// inner hyphens, and not all digits at the end (that is a mistyped IPv4 address).
fn check_dns_name(name: &str) -> Result<(), String> {
    if name.len() > DNS_NAME_BYTES_MAX {
        return Err(format!("longer than {DNS_NAME_BYTES_MAX} characters"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a dot at an end)".into());
        }
        if label.len() > DNS_LABEL_BYTES_MAX {
            return Err(format!(
                "label {label:?} is longer than {DNS_LABEL_BYTES_MAX} characters"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!(
                "{bad:?} is not allowed (letters, digits, '-' and '.' only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    if labels
        .last()
        .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("it is not a valid IPv4 address".into());
    }
    Ok(())
}

/// Parses `--hosts`: each entry a valid host, none repeated.
fn parse_hosts(list: &str) -> Result<Vec<Host>, TestnetError> {
    let mut hosts: Vec<Host> = Vec::new();
    for (index, entry) in list.split(',').enumerate() {
        let host = Host::parse(entry, index + 1).map_err(TestnetError::Usage)?;
        if hosts.contains(&host) {
            return Err(TestnetError::Usage(format!(
                "--hosts names {host} twice; list each host once (nodes wrap around the list: node i runs on host i mod the number of hosts)"
            )));
        }
        hosts.push(host);
    }
    Ok(hosts)
}

/// The three ports of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodePorts {
    pub(crate) p2p: u16,
    pub(crate) rpc: u16,
    pub(crate) metrics: u16,
}

/// Where one node of the network runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedNode {
    /// `node-<i>`; also the moniker and the home's directory name.
    pub(crate) name: String,
    pub(crate) host: Host,
    pub(crate) validator: bool,
    pub(crate) ports: NodePorts,
}

impl PlannedNode {
    /// The address the other nodes dial, given this node's peer id.
    fn dial_addr(&self, peer_id: &str) -> String {
        format!(
            "{}/tcp/{}/p2p/{peer_id}",
            self.host.multiaddr_prefix(),
            self.ports.p2p
        )
    }

    fn p2p_listen(&self) -> String {
        let protocol = match self.host.p2p_bind() {
            IpAddr::V4(_) => "ip4",
            IpAddr::V6(_) => "ip6",
        };
        format!(
            "/{protocol}/{}/tcp/{}",
            self.host.p2p_bind(),
            self.ports.p2p
        )
    }

    fn rpc_listen(&self) -> SocketAddr {
        SocketAddr::new(self.host.local_bind(), self.ports.rpc)
    }

    fn metrics_listen(&self) -> SocketAddr {
        SocketAddr::new(self.host.local_bind(), self.ports.metrics)
    }
}

/// Checks every flag and places the nodes; nothing is written.
fn plan(request: &InitRequest) -> Result<Vec<PlannedNode>, TestnetError> {
    if request.validators == 0 {
        return Err(TestnetError::Usage(
            "--validators must be at least 1".into(),
        ));
    }
    let total = request.validators.saturating_add(request.full_nodes);
    if total > NODES_MAX {
        return Err(TestnetError::Usage(format!(
            "--validators plus --full-nodes is {total}; at most {NODES_MAX} nodes"
        )));
    }
    if request.accounts > ACCOUNTS_MAX {
        return Err(TestnetError::Usage(format!(
            "--accounts must be at most {ACCOUNTS_MAX}"
        )));
    }
    check_chain_id(&request.chain_id)?;
    let hosts = parse_hosts(&request.hosts)?;
    let count = usize::try_from(total).map_err(|_| TestnetError::Usage("too many nodes".into()))?;
    if hosts.len() > count {
        return Err(TestnetError::Usage(format!(
            "--hosts lists {} hosts but there are only {count} nodes, so {} would run nothing; list at most {count} hosts",
            hosts.len(),
            hosts[count]
        )));
    }
    // The j-th node of a host (j = i / hosts) uses ports P+3j ..= P+3j+2.
    let per_host = count.div_ceil(hosts.len());
    let last = usize::from(request.base_port) + 3 * per_host - 1;
    if request.base_port == 0 || last > usize::from(u16::MAX) {
        return Err(TestnetError::Usage(format!(
            "--base-port {}: up to {per_host} node(s) per host need ports {}..={last}, which must lie in 1..=65535",
            request.base_port, request.base_port
        )));
    }
    let validators = usize::try_from(request.validators).unwrap_or(usize::MAX);
    let mut nodes = Vec::with_capacity(count);
    for index in 0..count {
        let block = u16::try_from(3 * (index / hosts.len()))
            .map_err(|_| TestnetError::Usage("--base-port: ports out of range".into()))?;
        let p2p = request.base_port + block;
        nodes.push(PlannedNode {
            name: format!("node-{index}"),
            host: hosts[index % hosts.len()].clone(),
            validator: index < validators,
            ports: NodePorts {
                p2p,
                rpc: p2p + 1,
                metrics: p2p + 2,
            },
        });
    }
    Ok(nodes)
}

/// The ledger's own rule for chain ids, checked before anything is written.
fn check_chain_id(chain_id: &str) -> Result<(), TestnetError> {
    let probe = Genesis {
        chain_id: chain_id.to_owned(),
        genesis_time_ms: 0,
        validators: vec![Validator {
            address: SecretKey::from_seed([1; 32]).address(),
            power: VALIDATOR_POWER,
        }],
        balances: Vec::new(),
        params: Params {
            min_validators: 1,
            ..Params::default()
        },
    };
    match probe.validate() {
        Ok(()) => Ok(()),
        Err(GenesisError::Invalid {
            field: "chain_id",
            reason,
        }) => Err(TestnetError::Usage(format!(
            "--chain-id {chain_id:?} is invalid: {reason}"
        ))),
        Err(err) => Err(TestnetError::Genesis(err.to_string())),
    }
}

/// `DIR/network.json`: what `init` wrote, for people and scripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NetworkFile {
    /// Chain id of the genesis.
    pub(crate) chain_id: String,
    /// `genesis_time_ms` of the genesis.
    pub(crate) genesis_time_ms: u64,
    /// The shared genesis (the same bytes as every home's `genesis.json`).
    pub(crate) genesis: PathBuf,
    /// Directory of the funded accounts' key files (`account-<i>.json`).
    pub(crate) accounts_dir: PathBuf,
    /// Addresses of those accounts, in file order.
    pub(crate) accounts: Vec<Address>,
    /// Every node, validators first.
    pub(crate) nodes: Vec<NetworkNode>,
}

/// One node of `network.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NetworkNode {
    /// `node-<i>`; also its moniker.
    pub(crate) name: String,
    /// The host it runs on, as given to `--hosts` (IPs normalised, names lower case).
    pub(crate) host: String,
    /// Whether its key is in the genesis validator set.
    pub(crate) validator: bool,
    /// Its validator address (`null` on a full node).
    pub(crate) validator_address: Option<Address>,
    /// Its libp2p peer id (from `node_key.json`).
    pub(crate) peer_id: String,
    /// Its home on this machine (absolute); copy it to the host.
    pub(crate) home: PathBuf,
    pub(crate) p2p_port: u16,
    pub(crate) rpc_port: u16,
    pub(crate) metrics_port: u16,
    /// The address other nodes dial: `/ip4|ip6|dns/<host>/tcp/<p2p_port>/p2p/<peer_id>`.
    pub(crate) p2p: String,
    /// `p2p.listen_addr` of its config.
    pub(crate) p2p_listen: String,
    /// `rpc.listen_addr` of its config.
    pub(crate) rpc_listen: SocketAddr,
    /// `metrics.listen_addr` of its config.
    pub(crate) metrics_listen: SocketAddr,
    /// Its `p2p.bootnodes`: the dial addresses of every other validator.
    pub(crate) bootnodes: Vec<String>,
}

/// `meshd testnet init`.
pub(crate) fn init(meshd: &Path, request: &InitRequest) -> Result<(), TestnetError> {
    let nodes = plan(request)?;
    let out = setup::absolute(&request.out)?;
    let existed = claim_out_dir(&out)?;
    let written = nodes
        .iter()
        .try_for_each(|node| {
            setup::meshd_init(meshd, &out.join("nodes").join(&node.name), &node.name)
        })
        .and_then(|()| {
            write_network(
                &out,
                &request.chain_id,
                request.accounts,
                &nodes,
                setup::now_ms(),
            )
        });
    let network = match written {
        Ok(network) => network,
        Err(err) => {
            // The directory was absent or empty: leave it so, not half written.
            let _ = std::fs::remove_dir_all(&out);
            if existed {
                let _ = std::fs::create_dir(&out);
            }
            return Err(err);
        }
    };
    print!("{}", summary(&out, &network, &nodes));
    Ok(())
}

/// Refuses an `--out` that is a file or a non-empty directory, and creates it otherwise;
/// whether it existed (empty) before.
fn claim_out_dir(out: &Path) -> Result<bool, TestnetError> {
    let shown = out.display();
    let existed = match std::fs::metadata(out) {
        Ok(meta) if !meta.is_dir() => {
            return Err(TestnetError::Usage(format!(
                "--out {shown} exists and is not a directory; pick a new directory"
            )))
        }
        Ok(_) => true,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => return Err(TestnetError::io(out, source)),
    };
    if existed {
        let mut entries = std::fs::read_dir(out).map_err(|source| TestnetError::io(out, source))?;
        if entries.next().is_some() {
            return Err(TestnetError::Usage(format!(
                "--out {shown} exists and is not empty; init never writes into an existing directory: pick a new one or remove it"
            )));
        }
    }
    setup::create_dir(out)?;
    Ok(existed)
}

#[derive(Deserialize)]
struct AddressOnly {
    address: Address,
}

/// Given homes written by `meshd init` in `out/nodes/<name>`, makes them one network: drops
/// init's own funded account (and the validator key of full nodes), writes the funded accounts,
/// the shared genesis into every home and `out/genesis.json`, each `config.toml`'s addresses
/// and bootnodes, and `out/network.json`.
fn write_network(
    out: &Path,
    chain_id: &str,
    accounts: u32,
    nodes: &[PlannedNode],
    genesis_time_ms: u64,
) -> Result<NetworkFile, TestnetError> {
    let homes: Vec<PathBuf> = nodes
        .iter()
        .map(|node| out.join("nodes").join(&node.name))
        .collect();
    let mut validators = Vec::new();
    let mut validator_addresses = Vec::with_capacity(nodes.len());
    let mut peer_ids = Vec::with_capacity(nodes.len());
    for (node, home) in nodes.iter().zip(&homes) {
        // `init` funds an account of its own; this network's accounts are in `accounts/`.
        setup::remove_file(&home.join("account_key.json"))?;
        let validator_key = home.join("validator_key.json");
        if node.validator {
            let key: AddressOnly = setup::read_json(&validator_key)?;
            validators.push(Validator {
                address: key.address,
                power: VALIDATOR_POWER,
            });
            validator_addresses.push(Some(key.address));
        } else {
            setup::remove_file(&validator_key)?;
            validator_addresses.push(None);
        }
        peer_ids.push(setup::peer_id(&home.join("node_key.json"))?);
    }

    let accounts_dir = out.join("accounts");
    setup::create_dir(&accounts_dir)?;
    let mut balances = Vec::new();
    for index in 0..accounts {
        let key = SecretKey::from_seed(setup::random_seed());
        setup::write_key(&accounts_dir.join(format!("account-{index}.json")), &key)?;
        balances.push(GenesisAccount {
            address: key.address(),
            balance: ACCOUNT_BALANCE,
        });
    }

    let genesis = Genesis {
        chain_id: chain_id.to_owned(),
        genesis_time_ms,
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
    let genesis_path = out.join("genesis.json");
    setup::write_private(&genesis_path, genesis_json.as_bytes())?;

    let dial: Vec<String> = nodes
        .iter()
        .zip(&peer_ids)
        .map(|(node, peer_id)| node.dial_addr(peer_id))
        .collect();
    let mut entries = Vec::with_capacity(nodes.len());
    for (index, node) in nodes.iter().enumerate() {
        let home = &homes[index];
        setup::write_private(&home.join("genesis.json"), genesis_json.as_bytes())?;
        let bootnodes: Vec<String> = nodes
            .iter()
            .enumerate()
            .filter(|&(other, peer)| other != index && peer.validator)
            .map(|(other, _)| dial[other].clone())
            .collect();
        let settings = [
            Setting::new("", "moniker", toml::Value::String(node.name.clone())),
            Setting::new("p2p", "listen_addr", toml::Value::String(node.p2p_listen())),
            Setting::new(
                "p2p",
                "bootnodes",
                toml::Value::Array(bootnodes.iter().cloned().map(toml::Value::String).collect()),
            ),
            Setting::new(
                "rpc",
                "listen_addr",
                toml::Value::String(node.rpc_listen().to_string()),
            ),
            Setting::new(
                "metrics",
                "listen_addr",
                toml::Value::String(node.metrics_listen().to_string()),
            ),
        ];
        let header = format!(
            "# {} of chain {chain_id} on host {}, written by `meshd testnet init` ({NETWORK_FILE} beside nodes/ describes the network).\n",
            node.name, node.host
        );
        set_config(&home.join("config.toml"), &header, &settings)?;
        entries.push(NetworkNode {
            name: node.name.clone(),
            host: node.host.to_string(),
            validator: node.validator,
            validator_address: validator_addresses[index],
            peer_id: peer_ids[index].clone(),
            home: home.clone(),
            p2p_port: node.ports.p2p,
            rpc_port: node.ports.rpc,
            metrics_port: node.ports.metrics,
            p2p: dial[index].clone(),
            p2p_listen: node.p2p_listen(),
            rpc_listen: node.rpc_listen(),
            metrics_listen: node.metrics_listen(),
            bootnodes,
        });
    }
    let network = NetworkFile {
        chain_id: chain_id.to_owned(),
        genesis_time_ms,
        genesis: genesis_path,
        accounts_dir,
        accounts: genesis
            .balances
            .iter()
            .map(|account| account.address)
            .collect(),
        nodes: entries,
    };
    let path = out.join(NETWORK_FILE);
    let json = serde_json::to_string_pretty(&network).map_err(|err| TestnetError::Malformed {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    std::fs::write(&path, format!("{json}\n")).map_err(|source| TestnetError::io(&path, source))?;
    Ok(network)
}

/// One value `init` sets in a `config.toml`; `section` "" is the top level.
#[derive(Debug, Clone)]
struct Setting {
    section: &'static str,
    key: &'static str,
    value: toml::Value,
}

impl Setting {
    fn new(section: &'static str, key: &'static str, value: toml::Value) -> Setting {
        Setting {
            section,
            key,
            value,
        }
    }
}

/// Sets `settings` in the `config.toml` at `path`, keeping everything else. The file is edited
/// line by line so the comments `meshd init` wrote (the operator's reference on the host)
/// survive; if a key is not on a line of its own, the file is rewritten through a TOML table
/// instead (comments lost). Either way the result is parsed back and checked.
fn set_config(path: &Path, header: &str, settings: &[Setting]) -> Result<(), TestnetError> {
    let malformed = |reason: String| TestnetError::Malformed {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| TestnetError::io(path, source))?;
    let edited = match edit_lines(&text, settings) {
        Some(edited) if holds(&edited, settings) => edited,
        _ => {
            let rewritten = rewrite_table(&text, settings).map_err(malformed)?;
            if !holds(&rewritten, settings) {
                return Err(malformed(
                    "the rewritten file does not hold the values set".into(),
                ));
            }
            rewritten
        }
    };
    setup::write_private(path, format!("{header}{edited}").as_bytes())
}

/// Replaces the line of each setting (`key = …` inside its section); `None` if a setting has
/// no such line.
fn edit_lines(text: &str, settings: &[Setting]) -> Option<String> {
    let mut section = String::new();
    let mut done = vec![false; settings.len()];
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix('[') {
            section = rest.split(']').next().unwrap_or_default().trim().to_owned();
        } else if !trimmed.starts_with('#') {
            if let Some((key, _)) = trimmed.split_once('=') {
                let key = key.trim();
                let found = settings
                    .iter()
                    .position(|s| s.section == section && s.key == key);
                if let Some(index) = found {
                    out.push_str(&format!("{key} = {}\n", render(&settings[index].value)));
                    done[index] = true;
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    done.iter().all(|&done| done).then_some(out)
}

/// A value as written on the right of `=`; an array of several items one per line.
fn render(value: &toml::Value) -> String {
    match value {
        toml::Value::Array(items) if items.len() > 1 => {
            let lines: Vec<String> = items.iter().map(|item| format!("    {item},\n")).collect();
            format!("[\n{}]", lines.concat())
        }
        other => other.to_string(),
    }
}

/// The settings applied to the parsed table, serialized again (comments are lost).
fn rewrite_table(text: &str, settings: &[Setting]) -> Result<String, String> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|err: toml::de::Error| err.to_string())?;
    for setting in settings {
        if setting.section.is_empty() {
            table.insert(setting.key.into(), setting.value.clone());
            continue;
        }
        let section = table
            .entry(setting.section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section {
            toml::Value::Table(inner) => {
                inner.insert(setting.key.into(), setting.value.clone());
            }
            _ => return Err(format!("`{}` is not a section", setting.section)),
        }
    }
    toml::to_string(&table).map_err(|err| err.to_string())
}

/// Whether `text` parses as TOML and holds every setting's value.
fn holds(text: &str, settings: &[Setting]) -> bool {
    let Ok(table) = text.parse::<toml::Table>() else {
        return false;
    };
    settings.iter().all(|setting| {
        let value = if setting.section.is_empty() {
            table.get(setting.key)
        } else {
            table
                .get(setting.section)
                .and_then(|section| section.get(setting.key))
        };
        value == Some(&setting.value)
    })
}

/// The table and next steps printed after a successful `init`.
fn summary(out: &Path, network: &NetworkFile, nodes: &[PlannedNode]) -> String {
    let validators = network.nodes.iter().filter(|node| node.validator).count();
    let mut text = format!(
        "wrote chain {} to {}: {validators} validator(s), {} full node(s), {} funded account(s)\n\n",
        network.chain_id,
        out.display(),
        network.nodes.len() - validators,
        network.accounts.len()
    );
    let host_width = network
        .nodes
        .iter()
        .map(|node| node.host.len())
        .max()
        .unwrap_or(0)
        .max(4);
    text.push_str(&format!(
        "{:<8} {:<host_width$} {:>5} {:>5} {:>7}  {:<9}  home\n",
        "node", "host", "p2p", "rpc", "metrics", "validator"
    ));
    for node in &network.nodes {
        text.push_str(&format!(
            "{:<8} {:<host_width$} {:>5} {:>5} {:>7}  {:<9}  {}\n",
            node.name,
            node.host,
            node.p2p_port,
            node.rpc_port,
            node.metrics_port,
            if node.validator { "yes" } else { "no" },
            node.home.display()
        ));
    }
    let all_local = nodes.iter().all(|node| node.host.is_loopback());
    text.push_str(&format!(
        "\nnetwork description: {}\nfunded account keys: {} (keep them safe; the hosts do not need them)\n\nnext steps (docs/operators.md, \"Deploy a network on several machines\"):\n",
        out.join(NETWORK_FILE).display(),
        network.accounts_dir.display()
    ));
    if all_local {
        text.push_str(
            "  1. every host is this machine: start each node on its home as it is, e.g.\n",
        );
    } else {
        let example = network
            .nodes
            .iter()
            .zip(nodes)
            .find(|(_, planned)| !planned.host.is_loopback())
            .map(|(node, planned)| {
                format!(
                    "scp -rp {} {}:   (then on {}: meshd run --home ~/{})",
                    node.home.display(),
                    planned.host.for_scp(),
                    planned.host,
                    node.name
                )
            })
            .unwrap_or_default();
        text.push_str(&format!(
            "  1. copy each home to its host, e.g.\n       {example}\n  2. on each host, accept TCP from the other hosts on the p2p port(s) listed above\n  3. start each node on its host (under systemd for a lasting network), e.g.\n"
        ));
    }
    if let Some(node) = network.nodes.first() {
        text.push_str(&format!(
            "       meshd run --home {}\n  then check a node on its host: meshd query status --rpc http://{}\n  RPC and metrics listen on loopback; expose them deliberately (see the guide)\n",
            node.home.display(),
            node.rpc_listen
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use mesh_ledger::bytes::to_hex;

    fn request(validators: u32, full_nodes: u32, hosts: &str, base_port: u16) -> InitRequest {
        InitRequest {
            validators,
            full_nodes,
            hosts: hosts.into(),
            out: PathBuf::from("unused"),
            accounts: DEFAULT_ACCOUNTS,
            chain_id: DEFAULT_CHAIN_ID.into(),
            base_port,
        }
    }

    fn usage(result: Result<Vec<PlannedNode>, TestnetError>) -> String {
        match result {
            Err(TestnetError::Usage(message)) => message,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn nodes_wrap_around_the_hosts_and_share_a_host_on_distinct_port_blocks() {
        let nodes = plan(&request(4, 1, "10.0.0.1,10.0.0.2", 30400)).unwrap();
        let placed: Vec<(String, String, bool, NodePorts)> = nodes
            .iter()
            .map(|n| (n.name.clone(), n.host.to_string(), n.validator, n.ports))
            .collect();
        let ports = |p2p: u16| NodePorts {
            p2p,
            rpc: p2p + 1,
            metrics: p2p + 2,
        };
        assert_eq!(
            placed,
            vec![
                ("node-0".into(), "10.0.0.1".into(), true, ports(30400)),
                ("node-1".into(), "10.0.0.2".into(), true, ports(30400)),
                ("node-2".into(), "10.0.0.1".into(), true, ports(30403)),
                ("node-3".into(), "10.0.0.2".into(), true, ports(30403)),
                ("node-4".into(), "10.0.0.1".into(), false, ports(30406)),
            ]
        );
        // One host: one block of three ports per node.
        let nodes = plan(&request(4, 0, "127.0.0.1", 40000)).unwrap();
        let p2p: Vec<u16> = nodes.iter().map(|n| n.ports.p2p).collect();
        assert_eq!(p2p, vec![40000, 40003, 40006, 40009]);
        assert_eq!(nodes[3].ports.metrics, 40011);
    }

    #[test]
    fn multiaddrs_follow_the_kind_of_host() {
        let nodes = plan(&request(
            3,
            0,
            "192.0.2.7,[2001:db8::5],Val-1.Example.org",
            30400,
        ))
        .unwrap();
        let dial: Vec<String> = nodes.iter().map(|n| n.dial_addr("PEER")).collect();
        assert_eq!(
            dial,
            vec![
                "/ip4/192.0.2.7/tcp/30400/p2p/PEER",
                "/ip6/2001:db8::5/tcp/30400/p2p/PEER",
                "/dns/val-1.example.org/tcp/30400/p2p/PEER",
            ]
        );
        let listen: Vec<String> = nodes.iter().map(PlannedNode::p2p_listen).collect();
        assert_eq!(
            listen,
            vec![
                "/ip4/0.0.0.0/tcp/30400",
                "/ip6/::/tcp/30400",
                "/ip4/0.0.0.0/tcp/30400"
            ]
        );
        for node in &nodes {
            assert_eq!(node.rpc_listen().to_string(), "127.0.0.1:30401");
            assert_eq!(node.metrics_listen().to_string(), "127.0.0.1:30402");
        }
        // Loopback hosts bind exactly their own address, RPC and metrics included.
        let nodes = plan(&request(2, 0, "127.0.0.2,::1", 30400)).unwrap();
        assert_eq!(nodes[0].p2p_listen(), "/ip4/127.0.0.2/tcp/30400");
        assert_eq!(nodes[0].rpc_listen().to_string(), "127.0.0.2:30401");
        assert_eq!(nodes[1].p2p_listen(), "/ip6/::1/tcp/30400");
        assert_eq!(nodes[1].metrics_listen().to_string(), "[::1]:30402");
        assert_eq!(nodes[1].dial_addr("P"), "/ip6/::1/tcp/30400/p2p/P");
    }

    #[test]
    fn bad_hosts_are_refused_with_the_reason() {
        let cases = [
            ("", "entry 1 is empty"),
            ("10.0.0.1,,10.0.0.2", "entry 2 is empty"),
            ("10.0.0.1,", "entry 2 is empty"),
            ("bad host", "contains whitespace"),
            (" 10.0.0.1", "contains whitespace"),
            ("0.0.0.0", "can dial"),
            ("::", "can dial"),
            ("224.0.0.1", "can dial"),
            ("255.255.255.255", "can dial"),
            ("10.0.0.256", "not a valid IPv4 address"),
            ("1.2.3", "not a valid IPv4 address"),
            ("2001:db8::g", "not a valid IPv6 address"),
            ("fe80::1%eth0", "not a valid IPv6 address"),
            ("[10.0.0.1", "'['"),
            ("under_score.example", "'_'"),
            ("-lead.example", "starts or ends with '-'"),
            ("a..b", "empty label"),
            ("host.example.", "empty label"),
            ("10.0.0.1,10.0.0.1", "names 10.0.0.1 twice"),
            ("Node.Example,node.example", "names node.example twice"),
            ("::1,0:0:0:0:0:0:0:1", "names ::1 twice"),
        ];
        for (hosts, expected) in cases {
            let message = usage(plan(&request(4, 0, hosts, 30400)));
            assert!(
                message.contains(expected),
                "{hosts:?}: {message:?} should say {expected:?}"
            );
        }
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(usage(plan(&request(1, 0, &long_label, 30400))).contains("longer than 63"));
        let long_name = vec!["abcdefgh"; 30].join(".");
        assert!(usage(plan(&request(1, 0, &long_name, 30400))).contains("longer than 253"));
        assert!(plan(&request(1, 0, "localhost", 30400)).is_ok());
        assert!(plan(&request(1, 0, "[::1]", 30400)).is_ok());
    }

    #[test]
    fn bad_shapes_ports_and_chain_ids_are_refused() {
        assert!(usage(plan(&request(0, 2, "10.0.0.1", 30400))).contains("--validators"));
        assert!(usage(plan(&request(60, 5, "10.0.0.1", 30400))).contains("at most 64"));
        assert!(
            usage(plan(&request(2, 0, "10.0.0.1,10.0.0.2,10.0.0.3", 30400)))
                .contains("10.0.0.3 would run nothing")
        );
        assert!(usage(plan(&request(4, 0, "10.0.0.1", 0))).contains("--base-port"));
        // Two nodes on one host need 6 ports: 65530..=65535 fits, 65531 does not.
        assert!(plan(&request(2, 0, "10.0.0.1", 65530)).is_ok());
        assert!(usage(plan(&request(2, 0, "10.0.0.1", 65531))).contains("65531..=65536"));
        let mut bad_chain = request(1, 0, "10.0.0.1", 30400);
        bad_chain.chain_id = "my chain".into();
        assert!(usage(plan(&bad_chain)).contains("--chain-id \"my chain\" is invalid"));
        let mut many_accounts = request(1, 0, "10.0.0.1", 30400);
        many_accounts.accounts = ACCOUNTS_MAX + 1;
        assert!(usage(plan(&many_accounts)).contains("--accounts"));
    }

    /// A config with `meshd init`'s shape: comments, the sections and keys `init` sets.
    const INIT_CONFIG: &str = "# node configuration\n\n# Name of this node.\nmoniker = \"mesh-node\"\n\n[p2p]\n# libp2p listen address\nlisten_addr = \"/ip4/0.0.0.0/tcp/30400\"\nbootnodes = []\nmax_peers = 50\n\n[rpc]\nlisten_addr = \"127.0.0.1:30401\"\nbatch_len_max = 100\n\n[metrics]\nlisten_addr = \"127.0.0.1:30402\"\n\n[consensus]\nblock_interval_ms = 500\nview_timeout_ms = 2000\n";

    /// Homes as `meshd init` leaves them, without running it.
    fn fake_homes(out: &Path, nodes: &[PlannedNode]) {
        for (index, node) in nodes.iter().enumerate() {
            let home = out.join("nodes").join(&node.name);
            std::fs::create_dir_all(&home).unwrap();
            std::fs::write(home.join("config.toml"), INIT_CONFIG).unwrap();
            let seed = [u8::try_from(index).unwrap() + 1; 32];
            std::fs::write(
                home.join("node_key.json"),
                format!("{{\"ed25519_seed\": \"{}\"}}", to_hex(&seed)),
            )
            .unwrap();
            setup::write_key(
                &home.join("validator_key.json"),
                &SecretKey::from_seed([u8::try_from(index).unwrap() + 100; 32]),
            )
            .unwrap();
            setup::write_key(&home.join("account_key.json"), &SecretKey::from_seed(seed)).unwrap();
        }
    }

    #[test]
    fn homes_get_one_genesis_and_production_configs_that_bind_safely() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let nodes = plan(&request(3, 1, "10.0.0.1,10.0.0.2", 30400)).unwrap();
        fake_homes(out, &nodes);
        let network = write_network(out, "mesh-net", 2, &nodes, 1_234).unwrap();

        let shared = std::fs::read_to_string(out.join("genesis.json")).unwrap();
        let genesis = Genesis::from_json(&shared).unwrap();
        assert_eq!(genesis.chain_id, "mesh-net");
        assert_eq!(genesis.genesis_time_ms, 1_234);
        assert_eq!(genesis.validators.len(), 3);
        assert_eq!(genesis.balances.len(), 2);
        assert_eq!(
            genesis
                .balances
                .iter()
                .map(|b| b.address)
                .collect::<Vec<_>>(),
            network.accounts
        );
        for index in 0..2 {
            assert!(out.join(format!("accounts/account-{index}.json")).exists());
        }

        for (index, node) in network.nodes.iter().enumerate() {
            let home = out.join("nodes").join(&node.name);
            assert_eq!(
                std::fs::read_to_string(home.join("genesis.json")).unwrap(),
                shared
            );
            assert!(!home.join("account_key.json").exists());
            assert_eq!(home.join("validator_key.json").exists(), index < 3);
            assert_eq!(node.validator_address.is_some(), index < 3);

            let text = std::fs::read_to_string(home.join("config.toml")).unwrap();
            assert!(text.contains("# libp2p listen address"), "comments kept");
            let config: toml::Table = text.parse().unwrap();
            assert_eq!(config["moniker"].as_str(), Some(node.name.as_str()));
            assert_eq!(
                config["p2p"]["listen_addr"].as_str(),
                Some(format!("/ip4/0.0.0.0/tcp/{}", node.p2p_port).as_str())
            );
            assert_eq!(
                config["rpc"]["listen_addr"].as_str(),
                Some(format!("127.0.0.1:{}", node.rpc_port).as_str())
            );
            assert_eq!(
                config["metrics"]["listen_addr"].as_str(),
                Some(format!("127.0.0.1:{}", node.metrics_port).as_str())
            );
            // Production timing and the other keys are as `init` wrote them.
            assert_eq!(
                config["consensus"]["block_interval_ms"].as_integer(),
                Some(500)
            );
            assert_eq!(
                config["consensus"]["view_timeout_ms"].as_integer(),
                Some(2000)
            );
            assert_eq!(config["p2p"]["max_peers"].as_integer(), Some(50));
            assert_eq!(config["rpc"]["batch_len_max"].as_integer(), Some(100));

            // Bootnodes: every other validator, never the node itself nor the full node.
            let bootnodes: Vec<&str> = config["p2p"]["bootnodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_str().unwrap())
                .collect();
            let expected: Vec<&str> = network.nodes[..3]
                .iter()
                .filter(|other| other.name != node.name)
                .map(|other| other.p2p.as_str())
                .collect();
            assert_eq!(bootnodes, expected, "{}", node.name);
            assert!(!bootnodes.iter().any(|b| b.ends_with(&node.peer_id)));
            assert_eq!(node.bootnodes, expected);
            assert!(node.p2p.starts_with(&format!(
                "/ip4/{}/tcp/{}/p2p/12D3KooW",
                node.host, node.p2p_port
            )));
        }

        let text = std::fs::read_to_string(out.join(NETWORK_FILE)).unwrap();
        let reread: NetworkFile = serde_json::from_str(&text).unwrap();
        assert_eq!(reread, network);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "chain_id",
            "genesis_time_ms",
            "genesis",
            "accounts_dir",
            "accounts",
            "nodes",
        ] {
            assert!(value.get(key).is_some(), "{key}");
        }
        let printed = summary(out, &network, &nodes);
        assert!(printed.contains("node-3   10.0.0.2"), "{printed}");
        assert!(printed.contains("scp -rp"), "{printed}");
    }

    #[test]
    fn config_without_init_comments_is_rewritten_as_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        // No `bootnodes` line and no [metrics] section: the line edit cannot apply.
        std::fs::write(
            &path,
            "moniker = \"x\"\n[p2p]\nlisten_addr = \"/ip4/0.0.0.0/tcp/1\"\nmax_peers = 7\n",
        )
        .unwrap();
        let settings = [
            Setting::new(
                "p2p",
                "bootnodes",
                toml::Value::Array(vec![toml::Value::String(
                    "/ip4/10.0.0.1/tcp/1/p2p/x".into(),
                )]),
            ),
            Setting::new(
                "metrics",
                "listen_addr",
                toml::Value::String("127.0.0.1:3".into()),
            ),
        ];
        set_config(&path, "# header\n", &settings).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# header\n"));
        assert!(holds(&text, &settings));
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["p2p"]["max_peers"].as_integer(), Some(7));
    }

    #[test]
    fn out_dir_must_be_new_or_empty() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        assert!(!claim_out_dir(&fresh).unwrap());
        assert!(fresh.is_dir());
        assert!(claim_out_dir(&fresh).unwrap(), "an empty directory is fine");
        std::fs::write(fresh.join("x"), "x").unwrap();
        let err = claim_out_dir(&fresh).unwrap_err().to_string();
        assert!(err.contains("exists and is not empty"), "{err}");
        let err = claim_out_dir(&fresh.join("x")).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
