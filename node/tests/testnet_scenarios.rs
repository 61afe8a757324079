//! The end-to-end scenarios, run by CI through `meshd testnet scenario`'s library entry:
//! 4 real validators (`meshd run` processes on loopback), one load at 40 tx/s for the whole
//! run, and in order — a transfer at node 0 read with a verified proof at node 3; SIGKILL of
//! node 3 and its restart; partition 0,1/2,3 and heal; a 10 s pause of node 2; a full node
//! joining after height 100 — with the named invariants checked after each, then durability of
//! every transaction the load saw final, on every node (the joined one included).
//!
//! Every wait inside the scenarios is bounded; a guard stops every node the test started, pass
//! or fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod testnet_support;

use testnet_support::{meshd, Guard};

use std::collections::BTreeSet;

use mesh_testnet::{
    node_alive, Invariant, Scenario, ScenarioOptions, TestnetCommand, TestnetError, TestnetFile,
};

fn up(dir: &std::path::Path) {
    mesh_testnet::run(
        TestnetCommand::Up {
            validators: Some(4),
            full_nodes: None,
            dir: dir.to_path_buf(),
            base_port: None,
            accounts: Some(9),
            detach: true,
            netns: false,
        },
        meshd(),
    )
    .expect("testnet up --detach");
}

#[test]
fn every_scenario_under_load_keeps_every_invariant() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let _guard = Guard { dir: dir.clone() };
    up(&dir);

    // A bad rate is refused before anything happens.
    let refused = mesh_testnet::run(
        TestnetCommand::Scenario {
            name: Scenario::Transfer,
            dir: dir.clone(),
            load_rate: 0,
        },
        meshd(),
    );
    assert!(
        matches!(refused, Err(TestnetError::Usage(_))),
        "{refused:?}"
    );

    let report = mesh_testnet::scenario(
        meshd(),
        &ScenarioOptions {
            dir: dir.clone(),
            scenario: Scenario::All,
            load_rate: 40.0,
        },
    )
    .unwrap_or_else(|err| panic!("scenario all: {err}"));

    // Every invariant the issue names was checked, and passed.
    let checked: BTreeSet<&str> = report.passed.iter().map(|p| p.invariant.name()).collect();
    for invariant in [
        Invariant::Visibility,
        Invariant::StateAgreement,
        Invariant::Liveness,
        Invariant::Agreement,
        Invariant::NoFinalityWithoutQuorum,
        Invariant::NoEquivocation,
        Invariant::Durability,
    ] {
        assert!(
            checked.contains(invariant.name()),
            "{invariant} was not checked: {checked:?}"
        );
    }
    // restart-all ran both ways: finality resumed after SIGKILL and after SIGTERM to all.
    for how in ["SIGKILL", "SIGTERM"] {
        assert!(
            report
                .passed
                .iter()
                .any(|p| p.detail.contains("finality resumed")
                    && p.detail.contains(&format!("after {how} to all"))),
            "no restart-all liveness check after {how}: {:?}",
            report.passed
        );
    }
    let load = report.load.as_ref().expect("scenario all runs a load");
    assert!(load.finalized > 0 && load.finalized_twice == 0, "{load:?}");
    assert_eq!(load.finalized_hashes.len() as u64, load.finalized);

    // reconfigure grew the set by three and shrank it back, within the stall bound.
    assert!(
        report
            .passed
            .iter()
            .any(|p| p.detail.contains("6 set changes")),
        "no reconfigure liveness check: {:?}",
        report.passed
    );
    // The joined full node and the three nodes that joined the set are in testnet.json and
    // running; the killed, paused, restarted and retired validators are all running.
    let file = TestnetFile::load(&dir).unwrap();
    assert_eq!(file.nodes.len(), 8);
    assert!(!file.nodes[4].validator);
    assert!(file.nodes.iter().all(node_alive));

    // The durability check is a real check: a hash that was never submitted fails it.
    let forged = mesh_ledger::Hash::of(b"never submitted");
    let err = mesh_testnet::check_durability(&dir, &[forged]).unwrap_err();
    assert!(
        matches!(
            err,
            TestnetError::Violated {
                invariant: "durability",
                ..
            }
        ),
        "{err}"
    );
    let acknowledged: Vec<mesh_ledger::TxHash> = load.finalized_hashes[..10]
        .iter()
        .map(|h| h.parse().unwrap())
        .collect();
    mesh_testnet::check_durability(&dir, &acknowledged).expect("the load's transactions are final");

    // One scenario on its own, through the command-line entry, on the grown network.
    mesh_testnet::run(
        TestnetCommand::Scenario {
            name: Scenario::Transfer,
            dir: dir.clone(),
            load_rate: 40,
        },
        meshd(),
    )
    .expect("scenario transfer");

    mesh_testnet::run(TestnetCommand::Down { dir: dir.clone() }, meshd()).expect("down");
    assert!(file.nodes.iter().all(|node| !node_alive(node)));
}
