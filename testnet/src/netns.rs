//! `up --netns`: every node in its own Linux network namespace with its own address, so a
//! partition is a cut in the (virtual) network rather than a request to the nodes.
//!
//! The layout of one testnet, `K` being its subnet number (chosen free at creation):
//!
//! - bridge `meshK-br` in the root namespace, address `10.77.K.1/24` (the tool reaches every
//!   node's RPC and metrics through it);
//! - per node i: namespace `meshK-nI`, with `lo` up and `eth0` at `10.77.K.(10+I)/24`, the peer
//!   of veth `meshK-hI` in the root namespace, enslaved to the bridge.
//!
//! All of it is recorded in `DIR/netns.json` ([`NetnsFile`]), which also marks the directory as
//! a netns testnet for every later command. `down` deletes the namespaces, the veths and the
//! bridge; so does a failed `up`. Deleting is idempotent: what is already gone is skipped.
//!
//! A partition is a set of routes in each node's namespace, `unreachable <peer>/32` for every
//! node outside its group (so both directions are cut, each side refusing its own sends): new
//! connections fail at once with "no route to host", established ones stall until `heal`
//! deletes the routes. A retransmission that fails on a local route does not double the
//! retransmission timeout the way a lost packet does (`ss -ti` shows `rto` staying at ~200 ms
//! through a partition), so the nodes' stalled connections carry on within a fraction of a
//! second of `heal` and need no redial (measured on Linux 6.18; a `blackhole` route behaves the
//! same there). A cut enforced on one side only would leave the other side's sends to be lost
//! on the wire, with the usual exponential backoff: hence routes on both sides.
//!
//! Everything goes through the `ip` command (iproute2) and needs root. Only private addresses
//! on the private bridge are used: nothing is reachable from outside the machine.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::faults::Partition;
use crate::setup::{self, Hosts, Shape};
use crate::state::TestnetFile;
use crate::TestnetError;

/// Name of the namespace record inside the testnet directory.
pub const NETNS_FILE: &str = "netns.json";
/// The first two octets of every testnet subnet: `10.77.K.0/24`.
const SUBNET_PREFIX: [u8; 2] = [10, 77];
/// Host part of the bridge's address.
const GATEWAY_HOST: u8 = 1;
/// Host part of node 0's address; node i is at `HOST_OFFSET + i`.
const HOST_OFFSET: u8 = 10;
/// Most nodes one subnet can address (`.10` to `.254`).
const NODES_MAX: usize = 245;
/// Name of the node's interface inside its namespace.
const NODE_LINK: &str = "eth0";
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const LINK_NAME_MAX: usize = 15;
/// Where iproute2's `ip` usually lives (a test's PATH may lack the sbin directories).
const IP_CANDIDATES: [&str; 4] = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"];

/// The contents of `DIR/netns.json`: the network namespaces and links of a `--netns` testnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetnsFile {
    /// The private subnet, `10.77.K.0/24`.
    pub subnet: String,
    /// The bridge in the root namespace, `meshK-br`.
    pub bridge: String,
    /// The bridge's address, `10.77.K.1`.
    pub gateway: Ipv4Addr,
    /// One entry per node, in testnet.json's order.
    pub nodes: Vec<NetnsNode>,
}

/// One node's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetnsNode {
    /// The network namespace, `meshK-nI` (`ip netns list`).
    pub namespace: String,
    /// The node's address on `eth0` inside it, `10.77.K.(10+I)`.
    pub address: Ipv4Addr,
    /// The root-namespace end of its veth pair, `meshK-hI` (on the bridge).
    pub host_link: String,
}

impl NetnsFile {
    /// Path of the record inside `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(NETNS_FILE)
    }

    /// The record, or `None` when `dir` holds a loopback testnet (no netns.json).
    pub fn load(dir: &Path) -> Result<Option<NetnsFile>, TestnetError> {
        let path = NetnsFile::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TestnetError::io(&path, source)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| TestnetError::Malformed {
                path: path.display().to_string(),
                reason: err.to_string(),
            })
    }

    pub(crate) fn save(&self, dir: &Path) -> Result<(), TestnetError> {
        let path = NetnsFile::path(dir);
        let json = serde_json::to_string_pretty(self).map_err(|err| TestnetError::Malformed {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        std::fs::write(&path, format!("{json}\n")).map_err(|source| TestnetError::io(&path, source))
    }

    /// The namespace node `index` runs in.
    pub(crate) fn namespace(&self, index: usize) -> Result<&str, TestnetError> {
        self.nodes
            .get(index)
            .map(|node| node.namespace.as_str())
            .ok_or_else(|| TestnetError::Malformed {
                path: NETNS_FILE.into(),
                reason: format!("no namespace for node {index}"),
            })
    }

    /// `netns (10.77.K.0/24 on bridge meshK-br)`, for `status`.
    pub(crate) fn describe(&self) -> String {
        format!("netns ({} on bridge {})", self.subnet, self.bridge)
    }
}

/// The layout of testnet number `subnet` with `count` nodes (names and addresses only; nothing
/// is created here).
fn plan(subnet: u8, count: usize) -> Result<NetnsFile, TestnetError> {
    if count > NODES_MAX {
        return Err(TestnetError::Usage(format!(
            "--netns puts at most {NODES_MAX} nodes on one /24 subnet"
        )));
    }
    let [a, b] = SUBNET_PREFIX;
    let tag = tag(subnet);
    let mut nodes = Vec::with_capacity(count);
    for (index, host) in (HOST_OFFSET..=u8::MAX).take(count).enumerate() {
        nodes.push(NetnsNode {
            namespace: format!("{tag}-n{index}"),
            address: Ipv4Addr::new(a, b, subnet, host),
            host_link: format!("{tag}-h{index}"),
        });
    }
    Ok(NetnsFile {
        subnet: format!("{a}.{b}.{subnet}.0/24"),
        bridge: format!("{tag}-br"),
        gateway: Ipv4Addr::new(a, b, subnet, GATEWAY_HOST),
        nodes,
    })
}

/// `meshK`: the prefix of every name of testnet number K (at most 7 characters, so the
/// longest link name, `mesh255-h244`, stays within 15).
fn tag(subnet: u8) -> String {
    format!("mesh{subnet}")
}

/// The subnet numbers taken on this machine: any IPv4 address or route in the root namespace
/// that overlaps `10.77.K.0/24` with a prefix of /16 or longer (a wider route, such as a VPN's
/// 10.0.0.0/8, is shadowed by the bridge's /24 and does not count), and any link or namespace
/// named `meshK-…`. `addresses_and_routes` is the output of `ip -o -4 addr show` and
/// `ip -4 route show table all`, `links` of `ip -o link show`, `namespaces` of `ip netns list`.
fn used_subnets(addresses_and_routes: &str, links: &str, namespaces: &str) -> BTreeSet<u8> {
    let mut used = BTreeSet::new();
    for word in addresses_and_routes.split_whitespace() {
        let Some((address, length)) = parse_prefix(word) else {
            continue;
        };
        if length < 16 || address.octets()[..2] != SUBNET_PREFIX {
            continue;
        }
        let third = address.octets()[2];
        if length <= 24 {
            // Covers 2^(24 - length) consecutive /24s starting at `third` (masked).
            let span = 1u16 << (24 - length);
            let first = u16::from(third) & !(span - 1);
            for k in first..first + span {
                used.extend(u8::try_from(k).ok());
            }
        } else {
            used.insert(third);
        }
    }
    let names = links
        .lines()
        .filter_map(|line| line.split(':').nth(1))
        .chain(
            namespaces
                .lines()
                .filter_map(|line| line.split_whitespace().next()),
        );
    for name in names {
        let name = name.trim();
        let name = name.split('@').next().unwrap_or(name);
        if let Some(k) = name
            .strip_prefix("mesh")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(number, _)| number.parse::<u8>().ok())
        {
            used.insert(k);
        }
    }
    used
}

/// `10.77.3.0/24` → (address, 24); a bare address is a /32. Anything else: `None`.
fn parse_prefix(word: &str) -> Option<(Ipv4Addr, u8)> {
    let (address, length) = match word.split_once('/') {
        Some((address, length)) => (address, length.parse::<u8>().ok()?),
        None => (word, 32),
    };
    let address: Ipv4Addr = address.parse().ok()?;
    (length <= 32).then_some((address, length))
}

/// The lowest subnet number in 1..=254 not in `used`.
fn choose_subnet(used: &BTreeSet<u8>) -> Option<u8> {
    (1..=254u8).find(|k| !used.contains(k))
}

/// Refuses `--netns` where it cannot work: not root, or no working `ip netns`.
pub(crate) fn preflight() -> Result<(), TestnetError> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => {
            return Err(TestnetError::Netns(format!(
                "--netns needs root (to create network namespaces, veths and a bridge); this \
                 process runs as uid {uid}. Run it as root, or leave out --netns: on loopback, \
                 partitions go through each node's admin endpoint instead"
            )))
        }
        None => {
            return Err(TestnetError::Netns(
                "--netns needs root and Linux network namespaces; cannot tell this process's \
                 uid (no /proc/self/status)"
                    .into(),
            ))
        }
    }
    ip(&["netns", "list"]).map_err(|err| {
        TestnetError::Netns(format!(
            "--netns needs iproute2's `ip netns`, which failed: {err}; leave out --netns to run \
             on loopback"
        ))
    })?;
    Ok(())
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

/// How many subnet numbers [`reserve`] tries when another `up` takes the one it chose.
const RESERVE_ATTEMPTS: usize = 8;

/// Picks a subnet number no other testnet (or anything else on 10.77.K.0/24) uses, lays out
/// `count` nodes on it, and creates its bridge at once: creating a link is atomic, so two `up`s
/// started together never pick the same number (the second finds the name taken and moves on).
fn reserve(count: usize) -> Result<NetnsFile, TestnetError> {
    let mut used = used_now()?;
    for _ in 0..RESERVE_ATTEMPTS {
        let subnet = choose_subnet(&used).ok_or_else(|| {
            TestnetError::Netns(
                "every subnet 10.77.1.0/24 to 10.77.254.0/24 is in use (or named by a mesh*- \
                 link or namespace); remove stale testnets (docs/testnet.md, cleaning up by hand)"
                    .into(),
            )
        })?;
        let file = plan(subnet, count)?;
        match ip(&["link", "add", &file.bridge, "type", "bridge"]) {
            Ok(_) => return Ok(file),
            Err(_) if link_exists(&file.bridge) => {
                used.insert(subnet);
            }
            Err(err) => return Err(TestnetError::Netns(err)),
        }
    }
    Err(TestnetError::Netns(format!(
        "no free subnet after {RESERVE_ATTEMPTS} attempts (other testnets are being created); \
         try again"
    )))
}

/// Writes a new testnet (`setup::create`): on loopback, or with `netns` in namespaces — then it
/// checks root and `ip netns` first, reserves a subnet, gives node i its address, and records
/// the layout in `DIR/netns.json`. On failure nothing of the layout is left behind.
pub(crate) fn create_testnet(
    meshd: &Path,
    dir: &Path,
    shape: Shape,
    netns: bool,
) -> Result<TestnetFile, TestnetError> {
    if !netns {
        return setup::create(meshd, dir, shape, &Hosts::Loopback);
    }
    preflight()?;
    let count = usize::try_from(shape.validators.saturating_add(shape.full_nodes))
        .map_err(|_| TestnetError::Usage("too many nodes".into()))?;
    let layout = reserve(count)?;
    let hosts = Hosts::Each(layout.nodes.iter().map(|node| node.address).collect());
    let created = setup::create(meshd, dir, shape, &hosts).and_then(|file| {
        layout.save(dir)?;
        Ok(file)
    });
    if created.is_err() {
        let _ = teardown(&layout);
    }
    if created.is_ok() {
        println!(
            "network namespaces: {} on bridge {} (node i at {}.{}.{}.{}+i)",
            layout.subnet,
            layout.bridge,
            SUBNET_PREFIX[0],
            SUBNET_PREFIX[1],
            layout.gateway.octets()[2],
            HOST_OFFSET
        );
    }
    created
}

/// `up` on an existing directory given `--netns`: refused unless the testnet was created so (its
/// configs hold its addresses; the mode cannot change).
pub(crate) fn check_mode(dir: &Path, netns: bool) -> Result<(), TestnetError> {
    if netns && NetnsFile::load(dir)?.is_none() {
        return Err(TestnetError::Usage(format!(
            "the testnet in {} was created on loopback; --netns only applies to a new testnet \
             (leave it out, or use another --dir)",
            dir.display()
        )));
    }
    Ok(())
}

/// Before `up` starts the nodes of a netns testnet: creates what is missing of its namespaces
/// and bridge (after `down` that is all of it) and lifts any partition routes a crash left.
/// `None` for a loopback testnet.
pub(crate) fn bring_up(dir: &Path) -> Result<Option<NetnsFile>, TestnetError> {
    let Some(file) = NetnsFile::load(dir)? else {
        return Ok(None);
    };
    preflight()?;
    check_reusable(&file)?;
    let ready = create(&file)
        .and_then(|()| (0..file.nodes.len()).try_for_each(|index| heal_node(&file, index)));
    if let Err(err) = ready {
        let _ = teardown(&file);
        return Err(err);
    }
    Ok(Some(file))
}

/// After every node of the testnet stopped (`down`, the end of a foreground or failed `up`):
/// deletes its namespaces, veths and bridge. A note for the output; empty on loopback.
pub(crate) fn bring_down(dir: &Path) -> Result<String, TestnetError> {
    let Some(file) = NetnsFile::load(dir)? else {
        return Ok(String::new());
    };
    let removed = teardown(&file)?;
    Ok(if removed.is_empty() {
        format!(
            "; its network namespaces were already gone ({})",
            file.subnet
        )
    } else {
        format!(
            "; deleted its {} network namespaces and bridge {} ({})",
            file.nodes.len(),
            file.bridge,
            file.subnet
        )
    })
}

/// Before `restart --node I` starts the node: in a netns testnet, makes sure its namespace
/// (and the bridge) exist and returns the namespace's name; `None` on loopback.
pub(crate) fn for_restart(dir: &Path, index: usize) -> Result<Option<String>, TestnetError> {
    let Some(file) = NetnsFile::load(dir)? else {
        return Ok(None);
    };
    preflight()?;
    create(&file)?;
    file.namespace(index).map(|name| Some(name.to_owned()))
}

/// The `mode:` line of `status`.
pub(crate) fn mode_line(dir: &Path) -> Result<String, TestnetError> {
    Ok(match NetnsFile::load(dir)? {
        Some(file) => format!(
            "mode: {}; partitions are routes in the nodes' namespaces",
            file.describe()
        ),
        None => "mode: loopback; partitions go through the nodes' admin endpoint".into(),
    })
}

fn used_now() -> Result<BTreeSet<u8>, TestnetError> {
    let mut addresses = ip(&["-o", "-4", "addr", "show"]).map_err(TestnetError::Netns)?;
    addresses.push_str(&ip(&["-4", "route", "show", "table", "all"]).map_err(TestnetError::Netns)?);
    let links = ip(&["-o", "link", "show"]).map_err(TestnetError::Netns)?;
    let namespaces = ip(&["netns", "list"]).map_err(TestnetError::Netns)?;
    Ok(used_subnets(&addresses, &links, &namespaces))
}

/// Before (re)creating a testnet's objects on `up` or `restart`: refuses when something else
/// holds its subnet or its names — a process still running in one of its namespaces (another
/// testnet that took the number while this one was down), or the subnet on a link that is not
/// its bridge.
fn check_reusable(file: &NetnsFile) -> Result<(), TestnetError> {
    let namespaces = ip(&["netns", "list"]).map_err(TestnetError::Netns)?;
    let existing = namespace_names(&namespaces);
    for node in file
        .nodes
        .iter()
        .filter(|n| existing.contains(&n.namespace))
    {
        let pids = ip(&["netns", "pids", &node.namespace]).map_err(TestnetError::Netns)?;
        if !pids.trim().is_empty() {
            return Err(TestnetError::Netns(format!(
                "network namespace {} still has processes in it ({}); stop them, or another \
                 testnet uses this subnet ({})",
                node.namespace,
                pids.split_whitespace().collect::<Vec<_>>().join(", "),
                file.subnet
            )));
        }
    }
    let addresses = ip(&["-o", "-4", "addr", "show"]).map_err(TestnetError::Netns)?;
    let [a, b] = SUBNET_PREFIX;
    let ours = file.gateway.octets()[2];
    for line in addresses.lines() {
        let mut words = line.split_whitespace();
        let link = words.nth(1).unwrap_or("");
        let link = link.split('@').next().unwrap_or(link);
        let overlaps = words.any(|word| {
            parse_prefix(word).is_some_and(|(address, _)| address.octets()[..3] == [a, b, ours])
        });
        if overlaps && link != file.bridge {
            return Err(TestnetError::Netns(format!(
                "{} is already used on {link} (not this testnet's bridge {}); remove it, or \
                 create the testnet again in another directory",
                file.subnet, file.bridge
            )));
        }
    }
    Ok(())
}

fn namespace_names(list: &str) -> BTreeSet<String> {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Creates whatever is missing of the bridge, the namespaces, the veths and the addresses
/// (existing pieces are kept, so this also repairs a half-created testnet).
fn create(file: &NetnsFile) -> Result<(), TestnetError> {
    for name in std::iter::once(&file.bridge).chain(file.nodes.iter().map(|n| &n.host_link)) {
        if name.len() > LINK_NAME_MAX {
            return Err(TestnetError::Netns(format!(
                "interface name {name} is longer than {LINK_NAME_MAX} characters"
            )));
        }
    }
    let run = |args: &[&str]| ip(args).map(|_| ()).map_err(TestnetError::Netns);
    if !link_exists(&file.bridge) {
        run(&["link", "add", &file.bridge, "type", "bridge"])?;
    }
    let gateway = format!("{}/24", file.gateway);
    run(&["addr", "replace", &gateway, "dev", &file.bridge])?;
    run(&["link", "set", &file.bridge, "up"])?;
    let namespaces = namespace_names(&ip(&["netns", "list"]).map_err(TestnetError::Netns)?);
    for node in &file.nodes {
        if !namespaces.contains(&node.namespace) {
            run(&["netns", "add", &node.namespace])?;
        }
        if !link_exists(&node.host_link) {
            run(&[
                "link",
                "add",
                &node.host_link,
                "type",
                "veth",
                "peer",
                "name",
                NODE_LINK,
                "netns",
                &node.namespace,
            ])?;
        }
        run(&["link", "set", &node.host_link, "master", &file.bridge, "up"])?;
        let address = format!("{}/24", node.address);
        let ns = node.namespace.as_str();
        run(&["-n", ns, "link", "set", "lo", "up"])?;
        run(&["-n", ns, "addr", "replace", &address, "dev", NODE_LINK])?;
        run(&["-n", ns, "link", "set", NODE_LINK, "up"])?;
    }
    Ok(())
}

/// Deletes every veth, namespace and the bridge of the testnet; what is already gone is
/// skipped, so it can run any number of times. Returns what it removed. Run it after the nodes
/// have stopped: a namespace with a process still in it lives on (unnamed) until that exits.
fn teardown(file: &NetnsFile) -> Result<Vec<String>, TestnetError> {
    let namespaces = namespace_names(&ip(&["netns", "list"]).map_err(TestnetError::Netns)?);
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for node in &file.nodes {
        // Deleting one end of a veth deletes both.
        if link_exists(&node.host_link) {
            match ip(&["link", "del", &node.host_link]) {
                Ok(_) => removed.push(node.host_link.clone()),
                Err(err) => failures.push(err),
            }
        }
        if namespaces.contains(&node.namespace) {
            match ip(&["netns", "del", &node.namespace]) {
                Ok(_) => removed.push(node.namespace.clone()),
                Err(err) => failures.push(err),
            }
        }
    }
    if link_exists(&file.bridge) {
        match ip(&["link", "del", &file.bridge]) {
            Ok(_) => removed.push(file.bridge.clone()),
            Err(err) => failures.push(err),
        }
    }
    if failures.is_empty() {
        Ok(removed)
    } else {
        Err(TestnetError::Netns(format!(
            "teardown left some objects behind: {}",
            failures.join("; ")
        )))
    }
}

/// For each node, the node indexes whose traffic it must refuse under `partition`: a node in a
/// group cuts every node outside it; a node named in no group cuts every node named in one
/// (the named nodes cut it too, so every cut holds in both directions).
fn cuts(partition: &Partition, count: usize) -> Vec<Vec<usize>> {
    let named: BTreeSet<usize> = partition.groups.iter().flatten().copied().collect();
    (0..count)
        .map(
            |index| match partition.groups.iter().find(|group| group.contains(&index)) {
                Some(group) => (0..count).filter(|i| !group.contains(i)).collect(),
                None => named.iter().copied().filter(|&i| i < count).collect(),
            },
        )
        .collect()
}

/// The `ip -batch` lines that cut node `index` off from `cut` (indexes): one
/// `route replace unreachable <address>/32` each (replace: running it twice is harmless).
fn cut_lines(file: &NetnsFile, cut: &[usize]) -> Vec<String> {
    cut.iter()
        .filter_map(|&i| file.nodes.get(i))
        .map(|node| format!("route replace unreachable {}/32", node.address))
        .collect()
}

/// The `ip -batch` lines that lift every cut a partition may have put in node `index`'s
/// namespace: `route del unreachable <address>/32` for every other node.
fn heal_lines(file: &NetnsFile, index: usize) -> Vec<String> {
    file.nodes
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != index)
        .map(|(_, node)| format!("route del unreachable {}/32", node.address))
        .collect()
}

/// Installs the routes of `partition` for node `index` (replacing nothing else).
pub(crate) fn cut_node(
    file: &NetnsFile,
    partition: &Partition,
    index: usize,
) -> Result<usize, TestnetError> {
    let cut = cuts(partition, file.nodes.len())
        .into_iter()
        .nth(index)
        .unwrap_or_default();
    let lines = cut_lines(file, &cut);
    batch(file.namespace(index)?, &lines, false)?;
    Ok(lines.len())
}

/// Deletes every partition route in node `index`'s namespace, then checks none is left.
pub(crate) fn heal_node(file: &NetnsFile, index: usize) -> Result<(), TestnetError> {
    let namespace = file.namespace(index)?;
    if !namespace_names(&ip(&["netns", "list"]).map_err(TestnetError::Netns)?).contains(namespace) {
        // No namespace, no routes (`down` deleted it).
        return Ok(());
    }
    // `del` of a route that is not there fails; -force carries on past those.
    let _ = batch(namespace, &heal_lines(file, index), true);
    let left = ip(&["-n", namespace, "route", "show", "type", "unreachable"])
        .map_err(TestnetError::Netns)?;
    let ours: Vec<&str> = left
        .lines()
        .filter(|line| {
            file.nodes.iter().any(|node| {
                line.split_whitespace()
                    .any(|w| w == node.address.to_string())
            })
        })
        .collect();
    if ours.is_empty() {
        Ok(())
    } else {
        Err(TestnetError::Netns(format!(
            "{namespace} still has partition routes: {}",
            ours.join("; ")
        )))
    }
}

/// Runs `ip -n <namespace> [-force] -batch -` with `lines` on stdin.
fn batch(namespace: &str, lines: &[String], force: bool) -> Result<(), TestnetError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut command = Command::new(ip_program());
    command.args(["-n", namespace]);
    if force {
        command.arg("-force");
    }
    command
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let shown = format!("ip -n {namespace} -batch -");
    let mut child = command
        .spawn()
        .map_err(|err| TestnetError::Netns(format!("cannot run {shown}: {err}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        stdin
            .write_all(text.as_bytes())
            .map_err(|err| TestnetError::Netns(format!("{shown}: {err}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|err| TestnetError::Netns(format!("{shown}: {err}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(TestnetError::Netns(format!(
            "{shown} ({}) failed: {}",
            lines.join("; "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).is_ok()
}

/// The `ip` program: the first of the usual paths that exists, else `ip` from PATH.
pub(crate) fn ip_program() -> PathBuf {
    IP_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("ip"))
}

/// Runs `ip <args>`; its stdout on success, else a message with its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let output = Command::new(ip_program())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run `ip {}`: {err}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::faults::parse_groups;

    #[test]
    fn the_plan_names_fit_linux_limits_and_addresses_follow_the_index() {
        let file = plan(12, 3).unwrap();
        assert_eq!(file.subnet, "10.77.12.0/24");
        assert_eq!(file.bridge, "mesh12-br");
        assert_eq!(file.gateway, Ipv4Addr::new(10, 77, 12, 1));
        assert_eq!(
            file.nodes[2],
            NetnsNode {
                namespace: "mesh12-n2".into(),
                address: Ipv4Addr::new(10, 77, 12, 12),
                host_link: "mesh12-h2".into(),
            }
        );
        let largest = plan(255, NODES_MAX).unwrap();
        assert_eq!(
            largest.nodes.last().map(|n| n.address),
            Some(Ipv4Addr::new(10, 77, 255, 254))
        );
        for name in
            std::iter::once(&largest.bridge).chain(largest.nodes.iter().map(|n| &n.host_link))
        {
            assert!(name.len() <= LINK_NAME_MAX, "{name}");
        }
        assert!(plan(1, NODES_MAX + 1).is_err());
        assert!(usize::try_from(crate::NODES_MAX).unwrap() <= NODES_MAX);
    }

    #[test]
    fn subnets_in_use_are_found_in_addresses_routes_links_and_namespaces() {
        let addresses = "\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0
5: mesh1-br    inet 10.77.1.1/24 scope global mesh1-br
default via 192.0.2.1 dev eth0
10.0.0.0/8 dev tun0 scope link
10.77.4.0/23 dev docker9 scope link
10.77.9.7 dev tun1 scope link
local 10.77.1.1 dev mesh1-br table local proto kernel scope host src 10.77.1.1
";
        let links = "\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT
7: mesh2-h0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 master mesh2-br state UP
8: meshy-br: <BROADCAST> mtu 1500
";
        let namespaces = "mesh3-n0 (id: 0)\nother\nmesh300-n0\n";
        let used = used_subnets(addresses, links, namespaces);
        assert_eq!(used, BTreeSet::from([1, 2, 3, 4, 5, 9]));
        assert_eq!(choose_subnet(&used), Some(6));
        assert_eq!(choose_subnet(&BTreeSet::new()), Some(1));
        assert_eq!(choose_subnet(&(0..=255).collect()), None);
        // A /16 over the whole prefix takes every subnet.
        let all = used_subnets("10.77.0.0/16 dev x", "", "");
        assert_eq!(all.len(), 256);
        assert_eq!(parse_prefix("10.77.3.0/33"), None);
        assert_eq!(parse_prefix("bogus/24"), None);
    }

    #[test]
    fn a_partition_cuts_both_directions_with_unreachable_routes() {
        let file = plan(7, 5).unwrap();
        let partition = parse_groups("0,1/2,3", 5).unwrap();
        let all = cuts(&partition, 5);
        assert_eq!(
            all,
            vec![
                vec![2, 3, 4],
                vec![2, 3, 4],
                vec![0, 1, 4],
                vec![0, 1, 4],
                vec![0, 1, 2, 3],
            ]
        );
        // Symmetric: i cuts j exactly when j cuts i.
        for (i, cut) in all.iter().enumerate() {
            for &j in cut {
                assert!(all[j].contains(&i), "{i} cuts {j} but not back");
            }
        }
        assert_eq!(
            cut_lines(&file, &all[0]),
            vec![
                "route replace unreachable 10.77.7.12/32",
                "route replace unreachable 10.77.7.13/32",
                "route replace unreachable 10.77.7.14/32",
            ]
        );
        assert_eq!(
            heal_lines(&file, 1),
            vec![
                "route del unreachable 10.77.7.10/32",
                "route del unreachable 10.77.7.12/32",
                "route del unreachable 10.77.7.13/32",
                "route del unreachable 10.77.7.14/32",
            ]
        );
        // One node alone against the rest.
        let alone = cuts(&parse_groups("3", 4).unwrap(), 4);
        assert_eq!(alone, vec![vec![3], vec![3], vec![3], vec![0, 1, 2]]);
    }

    #[test]
    fn the_record_round_trips_and_absent_means_loopback() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NetnsFile::load(dir.path()).unwrap(), None);
        let file = plan(3, 2).unwrap();
        file.save(dir.path()).unwrap();
        assert_eq!(NetnsFile::load(dir.path()).unwrap(), Some(file.clone()));
        assert_eq!(file.namespace(1).unwrap(), "mesh3-n1");
        assert!(file.namespace(2).is_err());
        assert_eq!(file.describe(), "netns (10.77.3.0/24 on bridge mesh3-br)");
        std::fs::write(NetnsFile::path(dir.path()), "{").unwrap();
        assert!(NetnsFile::load(dir.path()).is_err());
    }
}
