//! `meshd testnet partition|heal|pause|resume` end to end: 4 real validators on loopback, driven
//! through the `mesh_testnet` library with this crate's `meshd` binary. Every wait is bounded and
//! a guard stops every node the test started even when an assertion fails.
//!
//! Invariants checked: no finality without quorum (partition 0,1/2,3: heights frozen on every
//! node), liveness after heal (finality resumes within 20 s), agreement (every node has the same
//! block hash at a common height), catch-up of a paused validator after resume.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod testnet_support;

use testnet_support::{meshd, Guard};

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mesh_rpc::{BlockRef, Client, ClientConfig};
use mesh_testnet::{node_alive, scrape_metrics, Partition, TestnetCommand, TestnetFile};

/// The bound: finality resumes within 20 s of `heal`.
const HEAL_LIMIT_S: u64 = 20;

fn height(file: &TestnetFile, index: usize) -> Option<u64> {
    scrape_metrics(&file.nodes[index].metrics).map(|m| m.finalized_height)
}

fn heights_of(file: &TestnetFile, nodes: &[usize]) -> Vec<Option<u64>> {
    nodes.iter().map(|&i| height(file, i)).collect()
}

/// Waits until every node in `nodes` reports a finalized height of at least `target`.
fn wait_heights(file: &TestnetFile, nodes: &[usize], target: u64, limit: Duration, what: &str) {
    let started = Instant::now();
    let deadline = started + limit;
    loop {
        let heights = heights_of(file, nodes);
        if heights.iter().all(|h| h.is_some_and(|h| h >= target)) {
            eprintln!("{what}: took {:?}", started.elapsed());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: height {target} not reached within {limit:?}; heights of nodes {nodes:?}: {heights:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Like [`wait_heights`], but returns whether the target was reached in time.
fn wait_until_heights(file: &TestnetFile, nodes: &[usize], target: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if heights_of(file, nodes)
            .iter()
            .all(|h| h.is_some_and(|h| h >= target))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn max_height(file: &TestnetFile) -> u64 {
    heights_of(file, &[0, 1, 2, 3])
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
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

fn run(command: TestnetCommand) {
    let shown = format!("{command:?}");
    mesh_testnet::run(command, meshd()).unwrap_or_else(|err| panic!("{shown}: {err}"));
}

/// The tests run one network at a time: two cores cannot run eight nodes quickly.
static SERIAL: Mutex<()> = Mutex::new(());

/// Starts 4 validators (`up --detach`) in a fresh directory and waits until all finalize.
fn four_validators() -> (
    MutexGuard<'static, ()>,
    tempfile::TempDir,
    Guard,
    PathBuf,
    TestnetFile,
) {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let guard = Guard { dir: dir.clone() };
    run(TestnetCommand::Up {
        validators: Some(4),
        full_nodes: None,
        dir: dir.clone(),
        base_port: None,
        accounts: Some(2),
        detach: true,
        netns: false,
    });
    let file = TestnetFile::load(&dir).unwrap();
    let start = max_height(&file);
    wait_heights(
        &file,
        &[0, 1, 2, 3],
        start + 2,
        Duration::from_secs(60),
        "all four finalize",
    );
    (serial, temp, guard, dir, file)
}

#[test]
fn partition_stops_finality_and_heal_resumes_it() {
    let (_serial, _temp, _guard, dir, file) = four_validators();

    // partition 0,1/2,3: two against two, no side has a quorum of 3.
    run(TestnetCommand::Partition {
        dir: dir.clone(),
        groups: "0,1/2,3".into(),
    });
    assert_eq!(
        Partition::load(&dir).map(|p| p.groups),
        Some(vec![vec![0, 1], vec![2, 3]]),
        "the partition is recorded for status"
    );
    run(TestnetCommand::Status { dir: dir.clone() });
    // Let a certificate already in flight land, then nothing may become final anywhere.
    std::thread::sleep(Duration::from_secs(3));
    let frozen = heights_of(&file, &[0, 1, 2, 3]);
    assert!(frozen.iter().all(Option::is_some), "{frozen:?}");
    std::thread::sleep(Duration::from_secs(5));
    let later = heights_of(&file, &[0, 1, 2, 3]);
    assert_eq!(
        frozen, later,
        "no block may become final without a quorum (before, after 5 s)"
    );

    // heal: finality resumes within 20 s, and every node agrees.
    run(TestnetCommand::Heal { dir: dir.clone() });
    assert_eq!(Partition::load(&dir), None, "heal forgets the partition");
    let top = frozen.iter().flatten().copied().max().unwrap();
    let healed = Instant::now();
    let resumed = wait_until_heights(&file, &[0, 1, 2, 3], top + 2, Duration::from_secs(45));
    let took = healed.elapsed();
    assert!(
        resumed,
        "finality did not resume within 45 s of heal; heights: {:?}",
        heights_of(&file, &[0, 1, 2, 3])
    );
    assert!(
        took <= Duration::from_secs(HEAL_LIMIT_S),
        "finality resumed {took:?} after heal, beyond the {HEAL_LIMIT_S} s bound: the nodes \
         reconnect only at their next bootnode redial (network discovery_interval, 30 s); \
         `POST /admin/heal` should dial the unblocked peers"
    );
    assert_agree(&file, top + 1);

    run(TestnetCommand::Down { dir: dir.clone() });
    assert!(file.nodes.iter().all(|node| !node_alive(node)));
}

#[test]
fn a_paused_validator_catches_up_after_resume() {
    let (_serial, _temp, _guard, dir, file) = four_validators();
    // pause --node 1: the other three keep finalizing; resume: node 1 catches up.
    run(TestnetCommand::Pause {
        dir: dir.clone(),
        node: 1,
    });
    let paused_at = max_height(&file);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(height(&file, 1), None, "a paused node answers nothing");
    wait_heights(
        &file,
        &[0, 2, 3],
        paused_at + 3,
        Duration::from_secs(30),
        "three validators finalize while node 1 is paused",
    );
    std::thread::sleep(Duration::from_secs(2));
    run(TestnetCommand::Status { dir: dir.clone() });
    run(TestnetCommand::Resume {
        dir: dir.clone(),
        node: 1,
    });
    let others = max_height(&file);
    wait_heights(
        &file,
        &[1],
        others + 1,
        Duration::from_secs(30),
        "node 1 catches up after resume",
    );
    assert_agree(&file, others);

    run(TestnetCommand::Down { dir: dir.clone() });
    assert!(file.nodes.iter().all(|node| !node_alive(node)));
}
