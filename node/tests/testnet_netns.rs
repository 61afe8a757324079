//! `meshd testnet up --netns` end to end: 4 real validators, each in its own Linux network
//! namespace, with a partition made of routes rather than admin requests. Every wait is bounded
//! (polled every 200 ms), and a guard kills every node and deletes every namespace, veth and
//! bridge the test created, even when an assertion fails.
//!
//! **Loopback exception.** The project's tests bind loopback only; this one deliberately does
//! not: each node listens on a private address `10.77.K.x` that exists only inside its own
//! namespace and on a bridge this test creates on this machine (and deletes again). Nothing is
//! reachable from outside the machine.
//!
//! It needs root and a kernel that lets it create network namespaces; without either it prints
//! why and returns without checking anything (so it passes, skipped).
//!
//! Invariants checked: no finality without quorum (partition 0,1/2,3 in the network: heights
//! frozen on every node), liveness after heal (finality resumes on all four within 20 s, by the
//! nodes' own reconnection), agreement (the same block hash everywhere), and that `down` leaves
//! no namespace or link of the testnet behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod testnet_support;

use testnet_support::{meshd, Guard};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mesh_rpc::{BlockRef, Client, ClientConfig};
use mesh_testnet::{node_alive, scrape_metrics, NetnsFile, Partition, TestnetCommand, TestnetFile};

/// The bound: finality resumes within 20 s of `heal`.
const HEAL_LIMIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(200);
const ALL: [usize; 4] = [0, 1, 2, 3];

/// `ip <args>`: stdout on success, stderr on failure.
fn ip(args: &[&str]) -> Result<String, String> {
    let program = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("ip");
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|err| format!("cannot run ip: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// Why this machine cannot run the test, if it cannot: not root, or `ip netns add` refused.
fn cannot_run() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse::<u32>().ok());
    if euid != Some(0) {
        return Some(format!("not root (effective uid {euid:?})"));
    }
    let probe = format!("meshprobe-{}", std::process::id());
    if let Err(err) = ip(&["netns", "add", &probe]) {
        return Some(format!("`ip netns add` is not permitted: {err}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}

/// The shared guard (SIGCONT, `down`, SIGKILL), then deletes by hand whatever `down` left of the
/// namespaces, veths and bridge recorded in DIR/netns.json.
struct NetnsGuard {
    dir: PathBuf,
    nodes: Option<Guard>,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        drop(self.nodes.take());
        if let Ok(Some(layout)) = NetnsFile::load(&self.dir) {
            for node in &layout.nodes {
                let _ = ip(&["link", "del", &node.host_link]);
                let _ = ip(&["netns", "del", &node.namespace]);
            }
            let _ = ip(&["link", "del", &layout.bridge]);
        }
    }
}

fn run(command: TestnetCommand) {
    let shown = format!("{command:?}");
    mesh_testnet::run(command, meshd()).unwrap_or_else(|err| panic!("{shown}: {err}"));
}

fn up(dir: &Path, validators: Option<u32>, accounts: Option<u32>) {
    run(TestnetCommand::Up {
        validators,
        full_nodes: None,
        dir: dir.to_path_buf(),
        base_port: None,
        accounts,
        detach: true,
        netns: true,
    });
}

fn heights(file: &TestnetFile, nodes: &[usize]) -> Vec<Option<u64>> {
    nodes
        .iter()
        .map(|&i| scrape_metrics(&file.nodes[i].metrics).map(|m| m.finalized_height))
        .collect()
}

fn max_height(file: &TestnetFile) -> u64 {
    heights(file, &ALL).into_iter().flatten().max().unwrap_or(0)
}

/// How long until every node in `nodes` reports a finalized height of at least `target`;
/// `None` if that takes longer than `limit`.
fn time_to_heights(
    file: &TestnetFile,
    nodes: &[usize],
    target: u64,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if heights(file, nodes)
            .iter()
            .all(|h| h.is_some_and(|h| h >= target))
        {
            return Some(started.elapsed());
        }
        std::thread::sleep(POLL);
    }
    None
}

fn wait_heights(file: &TestnetFile, nodes: &[usize], target: u64, limit: Duration, what: &str) {
    let took = time_to_heights(file, nodes, target, limit);
    assert!(
        took.is_some(),
        "{what}: height {target} not reached within {limit:?}; heights of nodes {nodes:?}: {:?}",
        heights(file, nodes)
    );
    eprintln!("{what}: took {took:?}");
}

/// Agreement: every node serves the same block hash at `height`.
fn assert_agree(file: &TestnetFile, height: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut hashes = Vec::new();
        for node in &file.nodes {
            let client = Client::http(&node.rpc, &ClientConfig::default()).unwrap();
            let block = client
                .block(BlockRef::Height(height), false)
                .await
                .unwrap_or_else(|err| panic!("{} block {height}: {err}", node.name));
            hashes.push(block.hash);
        }
        assert!(
            hashes.windows(2).all(|pair| pair[0] == pair[1]),
            "nodes disagree at height {height}: {hashes:?}"
        );
    });
}

/// Every node runs in its own namespace, at the address recorded for it.
fn assert_in_namespaces(file: &TestnetFile, layout: &NetnsFile) {
    assert_eq!(layout.nodes.len(), file.nodes.len());
    for (node, place) in file.nodes.iter().zip(&layout.nodes) {
        assert!(node_alive(node), "{} is not running", node.name);
        let identified = ip(&["netns", "identify", &node.pid.to_string()]).unwrap();
        assert_eq!(
            identified.trim(),
            place.namespace,
            "{} (pid {}) runs in the wrong namespace",
            node.name,
            node.pid
        );
        let address = place.address.to_string();
        assert!(
            node.rpc.contains(&address) && node.metrics.starts_with(&address),
            "{}: {} / {} are not at {address}",
            node.name,
            node.rpc,
            node.metrics
        );
        assert!(node.p2p.starts_with(&format!("/ip4/{address}/tcp/")));
    }
}

/// Nothing of the testnet is left in `ip netns list` or `ip link`.
fn assert_nothing_left(layout: &NetnsFile) {
    let namespaces = ip(&["netns", "list"]).unwrap();
    let links = ip(&["-o", "link", "show"]).unwrap();
    for node in &layout.nodes {
        assert!(
            !namespaces
                .lines()
                .any(|line| line.split_whitespace().next() == Some(node.namespace.as_str())),
            "namespace {} is left:\n{namespaces}",
            node.namespace
        );
        assert!(
            !links.contains(&format!(" {}@", node.host_link))
                && !links.contains(&format!(" {}:", node.host_link)),
            "link {} is left:\n{links}",
            node.host_link
        );
    }
    assert!(
        !links.contains(&format!(" {}:", layout.bridge)),
        "bridge {} is left:\n{links}",
        layout.bridge
    );
}

#[test]
fn a_network_partition_stops_finality_and_heal_resumes_it() {
    if let Some(why) = cannot_run() {
        eprintln!("skipping the --netns test: {why}");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let _guard = NetnsGuard {
        dir: dir.clone(),
        nodes: Some(Guard { dir: dir.clone() }),
    };

    up(&dir, Some(4), Some(2));
    let file = TestnetFile::load(&dir).unwrap();
    let layout = NetnsFile::load(&dir)
        .unwrap()
        .expect("netns.json is written");
    assert_in_namespaces(&file, &layout);
    let start = max_height(&file);
    wait_heights(
        &file,
        &ALL,
        start + 2,
        Duration::from_secs(60),
        "all four finalize",
    );
    run(TestnetCommand::Status { dir: dir.clone() });

    // partition 0,1/2,3 in the network: two against two, no side has a quorum of 3.
    run(TestnetCommand::Partition {
        dir: dir.clone(),
        groups: "0,1/2,3".into(),
    });
    assert_eq!(
        Partition::load(&dir).map(|p| p.groups),
        Some(vec![vec![0, 1], vec![2, 3]]),
        "the partition is recorded for status"
    );
    let routes = ip(&[
        "-n",
        &layout.nodes[0].namespace,
        "route",
        "show",
        "type",
        "unreachable",
    ])
    .unwrap();
    for cut in [2, 3] {
        assert!(
            routes.contains(&layout.nodes[cut].address.to_string()),
            "node 0 has no route cutting node {cut}: {routes:?}"
        );
    }
    // Let a certificate already in flight land, then nothing may become final anywhere.
    std::thread::sleep(Duration::from_secs(3));
    let frozen = heights(&file, &ALL);
    assert!(frozen.iter().all(Option::is_some), "{frozen:?}");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        frozen,
        heights(&file, &ALL),
        "no block may become final without a quorum (before, after 5 s)"
    );

    // heal: the nodes reconnect on their own; finality resumes on all four within 20 s.
    run(TestnetCommand::Heal { dir: dir.clone() });
    assert_eq!(Partition::load(&dir), None, "heal forgets the partition");
    let top = frozen.iter().flatten().copied().max().unwrap();
    let took = time_to_heights(&file, &ALL, top + 2, Duration::from_secs(45));
    eprintln!(
        "heal to finality on all four (height {}): {took:?}",
        top + 2
    );
    let took = took.unwrap_or_else(|| {
        panic!(
            "finality did not resume within 45 s of heal; heights: {:?}",
            heights(&file, &ALL)
        )
    });
    assert!(
        took <= HEAL_LIMIT,
        "finality resumed {took:?} after heal, beyond the {HEAL_LIMIT:?} bound"
    );
    assert_agree(&file, top + 1);

    // restart --node 3 runs it in its namespace again, and it keeps up.
    run(TestnetCommand::Restart {
        dir: dir.clone(),
        node: 3,
    });
    let file = TestnetFile::load(&dir).unwrap();
    assert_in_namespaces(&file, &layout);
    let now = max_height(&file);
    wait_heights(
        &file,
        &ALL,
        now + 2,
        Duration::from_secs(60),
        "finality after restart",
    );

    // down: every node stopped, every namespace and link gone.
    let before = max_height(&file);
    run(TestnetCommand::Down { dir: dir.clone() });
    assert!(file.nodes.iter().all(|node| !node_alive(node)));
    assert_nothing_left(&layout);

    // up again on the same directory re-creates the namespaces; the chain continues.
    up(&dir, None, None);
    let file = TestnetFile::load(&dir).unwrap();
    assert_in_namespaces(&file, &layout);
    let resumed = heights(&file, &ALL);
    assert!(
        resumed.iter().all(|h| h.is_some_and(|h| h >= before)),
        "the chain continues from height {before} with its data: {resumed:?}"
    );
    wait_heights(
        &file,
        &ALL,
        before + 2,
        Duration::from_secs(60),
        "finality after up again",
    );
    run(TestnetCommand::Down { dir: dir.clone() });
    assert!(file.nodes.iter().all(|node| !node_alive(node)));
    assert_nothing_left(&layout);
}
