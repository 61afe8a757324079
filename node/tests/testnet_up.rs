//! `meshd testnet` end to end: real `meshd run` processes on loopback, driven through the
//! `mesh_testnet` library with this crate's `meshd` binary. Every wait is bounded, and a guard
//! stops every node the test started even when an assertion fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod testnet_support;

use testnet_support::{meshd, Guard};

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_testnet::{node_alive, scrape_metrics, TestnetCommand, TestnetError, TestnetFile};

/// The tests run one network at a time: two cores cannot run eight nodes quickly.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn up_detached(dir: &Path) -> Result<(), TestnetError> {
    mesh_testnet::run(
        TestnetCommand::Up {
            validators: Some(4),
            full_nodes: None,
            dir: dir.to_path_buf(),
            base_port: None,
            accounts: Some(5),
            detach: true,
            netns: false,
        },
        meshd(),
    )
}

fn up_again(dir: &Path) -> Result<(), TestnetError> {
    mesh_testnet::run(
        TestnetCommand::Up {
            validators: None,
            full_nodes: None,
            dir: dir.to_path_buf(),
            base_port: None,
            accounts: None,
            detach: true,
            netns: false,
        },
        meshd(),
    )
}

fn height(file: &TestnetFile, index: usize) -> Option<u64> {
    scrape_metrics(&file.nodes[index].metrics).map(|m| m.finalized_height)
}

/// Waits until every node in `nodes` reports a finalized height of at least `target(i)`.
fn wait_heights(
    file: &TestnetFile,
    nodes: &[usize],
    target: impl Fn(usize) -> u64,
    limit: Duration,
    what: &str,
) {
    let deadline = Instant::now() + limit;
    loop {
        let heights: Vec<Option<u64>> = nodes.iter().map(|&i| height(file, i)).collect();
        if nodes
            .iter()
            .zip(&heights)
            .all(|(&i, h)| h.is_some_and(|h| h >= target(i)))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {limit:?}; heights of nodes {nodes:?}: {heights:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn heights(file: &TestnetFile) -> Vec<u64> {
    (0..file.nodes.len())
        .map(|i| height(file, i).expect("node answers on its metrics endpoint"))
        .collect()
}

#[test]
fn testnet_up_kill_restart_down_and_up_again() {
    let _serial = serial();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let _guard = Guard { dir: dir.clone() };

    // up --detach: 4 validators, live pids, a first block final everywhere.
    up_detached(&dir).expect("testnet up --detach");
    let file = TestnetFile::load(&dir).unwrap();
    assert_eq!(file.chain_id, mesh_testnet::CHAIN_ID);
    assert_eq!(file.nodes.len(), 4);
    assert!(file.nodes.iter().all(|node| node.validator));
    assert!(
        file.nodes.iter().all(node_alive),
        "every pid is a live node"
    );
    assert!(file
        .nodes
        .iter()
        .all(|node| node.rpc.starts_with("http://127.0.0.1:")));
    assert!(file
        .nodes
        .iter()
        .all(|node| node.p2p.starts_with("/ip4/127.0.0.1/tcp/")));
    assert_eq!(
        std::fs::read_dir(&file.accounts_dir).unwrap().count(),
        5,
        "one key file per account"
    );
    let start = heights(&file);
    assert!(
        start.iter().all(|&h| h >= 1),
        "first block final: {start:?}"
    );

    // Every node's height increases.
    wait_heights(
        &file,
        &[0, 1, 2, 3],
        |i| start[i] + 3,
        Duration::from_secs(60),
        "all four finalize",
    );

    mesh_testnet::run(TestnetCommand::Status { dir: dir.clone() }, meshd()).expect("status");

    // A second `up` while it runs is refused, clearly.
    let err = up_again(&dir).unwrap_err();
    assert!(
        matches!(err, TestnetError::AlreadyRunning { .. }),
        "unexpected: {err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("already running") && message.contains("testnet down"),
        "{message}"
    );

    // kill --node 3: the other three keep finalizing.
    mesh_testnet::run(
        TestnetCommand::Kill {
            dir: dir.clone(),
            node: 3,
        },
        meshd(),
    )
    .expect("kill --node 3");
    assert!(!node_alive(&file.nodes[3]), "node 3 is gone");
    mesh_testnet::run(TestnetCommand::Status { dir: dir.clone() }, meshd())
        .expect("status with a node down");
    let before: Vec<u64> = (0..3).map(|i| height(&file, i).unwrap()).collect();
    wait_heights(
        &file,
        &[0, 1, 2],
        |i| before[i] + 5,
        Duration::from_secs(60),
        "three validators keep finalizing",
    );

    // restart --node 3: new pid recorded, and it catches up with the others.
    mesh_testnet::run(
        TestnetCommand::Restart {
            dir: dir.clone(),
            node: 3,
        },
        meshd(),
    )
    .expect("restart --node 3");
    let file = TestnetFile::load(&dir).unwrap();
    assert!(node_alive(&file.nodes[3]), "node 3 runs again");
    let others = height(&file, 0).unwrap();
    wait_heights(
        &file,
        &[3],
        |_| others + 2,
        Duration::from_secs(60),
        "restarted node 3 catches up",
    );

    // down: every pid gone.
    let last = heights(&file);
    mesh_testnet::run(TestnetCommand::Down { dir: dir.clone() }, meshd()).expect("down");
    for node in &file.nodes {
        assert!(
            !node_alive(node),
            "{} (pid {}) stopped",
            node.name,
            node.pid
        );
    }

    // up again on the same directory: the same chain continues from where it stopped.
    up_again(&dir).expect("up again on the same directory");
    let again = TestnetFile::load(&dir).unwrap();
    assert_eq!(again.nodes.len(), 4);
    assert!(again.nodes.iter().all(node_alive));
    let resumed = heights(&again);
    for (i, (&was, &now)) in last.iter().zip(&resumed).enumerate() {
        assert!(
            now >= was,
            "node {i} resumed at {now}, below its {was} before down"
        );
    }
    wait_heights(
        &again,
        &[0, 1, 2, 3],
        |i| resumed[i] + 2,
        Duration::from_secs(60),
        "the restarted network keeps finalizing",
    );

    mesh_testnet::run(TestnetCommand::Down { dir: dir.clone() }, meshd()).expect("down");
    assert!(again.nodes.iter().all(|node| !node_alive(node)));
}

/// Foreground `up` with a validator and a full node: the full node has no validator key and
/// follows the chain; SIGTERM to the tool stops every node and `up` returns.
#[test]
fn foreground_up_runs_a_full_node_and_stops_everything_on_sigterm() {
    let _serial = serial();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let _guard = Guard { dir: dir.clone() };

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let up_dir = dir.clone();
    std::thread::spawn(move || {
        let result = mesh_testnet::run(
            TestnetCommand::Up {
                validators: Some(1),
                full_nodes: Some(1),
                dir: up_dir,
                base_port: None,
                accounts: Some(2),
                detach: false,
                netns: false,
            },
            meshd(),
        );
        let _ = done_tx.send(result.map_err(|err| err.to_string()));
    });

    // testnet.json gets its pids only after the tool watches SIGTERM; wait for both nodes to
    // be live and final at height 1 or more.
    let deadline = Instant::now() + Duration::from_secs(90);
    let file = loop {
        if let Ok(file) = TestnetFile::load(&dir) {
            if file
                .nodes
                .iter()
                .all(|node| node.pid != 0 && node_alive(node))
                && (0..file.nodes.len()).all(|i| height(&file, i).is_some_and(|h| h >= 1))
            {
                break file;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the foreground testnet did not come up; result so far: {:?}",
            done_rx.try_recv()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(file.nodes.len(), 2);
    assert!(file.nodes[0].validator && !file.nodes[1].validator);
    assert!(!file.nodes[1].home.join("validator_key.json").exists());
    let start = height(&file, 1).unwrap();
    wait_heights(
        &file,
        &[1],
        |_| start + 2,
        Duration::from_secs(60),
        "the full node follows the chain",
    );

    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(std::process::id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let result = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("foreground up returns after SIGTERM");
    assert_eq!(result, Ok(()));
    for node in &file.nodes {
        assert!(
            !node_alive(node),
            "{} (pid {}) stopped",
            node.name,
            node.pid
        );
    }
}
