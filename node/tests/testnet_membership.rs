//! `meshd testnet join --validator`, `leave` and the roles `status` shows, end to end: four
//! real validators on loopback, a fifth node that bonds its way into the set, then a genesis
//! validator that unbonds its way out and runs on as a full node. A guard stops every node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod testnet_support;

use testnet_support::{meshd, Guard};

use std::path::Path;
use std::process::Command;

use mesh_testnet::{TestnetCommand, TestnetFile};

/// `meshd testnet status` as a user sees it.
fn status(dir: &Path) -> String {
    let output = Command::new(meshd())
        .args(["testnet", "status", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The status line of `node` split into its columns.
fn columns(status: &str, node: &str) -> Vec<String> {
    status
        .lines()
        .find(|line| line.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("no line for {node} in:\n{status}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_node_joins_as_a_validator_and_another_leaves() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let _guard = Guard { dir: dir.clone() };
    mesh_testnet::run(
        TestnetCommand::Up {
            validators: Some(4),
            full_nodes: None,
            dir: dir.clone(),
            base_port: None,
            accounts: Some(2),
            detach: true,
            netns: false,
        },
        meshd(),
    )
    .unwrap();
    let before = status(&dir);
    assert!(before.contains("epoch "), "{before}");
    assert_eq!(columns(&before, "node-0")[1], "validator", "{before}");

    // Waits until the set in force holds the new node: the command fails otherwise.
    mesh_testnet::run(
        TestnetCommand::Join {
            dir: dir.clone(),
            validator: true,
            bond: Some(7),
        },
        meshd(),
    )
    .unwrap();
    let file = TestnetFile::load(&dir).unwrap();
    assert_eq!(file.nodes.len(), 5);
    assert!(file.nodes[4].home.join("validator_key.json").exists());
    let joined = status(&dir);
    let newcomer = columns(&joined, "node-4");
    assert_eq!(newcomer[1], "validator", "{joined}");
    assert_eq!(newcomer[2], "7", "its power is its bond: {joined}");

    mesh_testnet::run(
        TestnetCommand::Leave {
            dir: dir.clone(),
            node: 0,
        },
        meshd(),
    )
    .unwrap();
    let left = status(&dir);
    let former = columns(&left, "node-0");
    assert_eq!(former[1], "full", "{left}");
    assert_eq!(former[2], "0", "{left}");
    // It keeps running and following the chain.
    assert_ne!(former[4], "stopped", "{left}");
    assert_eq!(columns(&left, "node-4")[1], "validator", "{left}");

    // Leaving twice is an error that says why.
    let again = mesh_testnet::run(
        TestnetCommand::Leave {
            dir: dir.clone(),
            node: 0,
        },
        meshd(),
    )
    .unwrap_err();
    assert!(again.to_string().contains("no bond"), "{again}");
}
