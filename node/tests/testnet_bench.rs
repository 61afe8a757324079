//! `meshd testnet bench` end to end: 4 real validators on loopback, a short load at 50 tx/s,
//! then the durability invariant — every transaction the bench saw accepted is final on every
//! node, at the same place, and in the chain exactly once. A guard stops every node the test
//! started even when an assertion fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod testnet_support;

use testnet_support::{meshd, Guard};

use std::collections::HashMap;
use std::time::Duration;

use mesh_ledger::TxHash;
use mesh_rpc::types::TxStatus;
use mesh_rpc::{BlockRef, Client, ClientConfig};
use mesh_testnet::{BenchOp, BenchOptions, BenchRate, BenchReport, TestnetCommand, TestnetFile};

#[test]
fn bench_at_50_tx_per_s_finalizes_every_accepted_transaction_exactly_once() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let _guard = Guard { dir: dir.clone() };
    mesh_testnet::run(
        TestnetCommand::Up {
            validators: Some(4),
            full_nodes: None,
            dir: dir.clone(),
            base_port: None,
            accounts: Some(10),
            detach: true,
            netns: false,
        },
        meshd(),
    )
    .expect("testnet up --detach");
    let file = TestnetFile::load(&dir).unwrap();

    let (report, json_path) = mesh_testnet::bench(&BenchOptions {
        dir: dir.clone(),
        rate: BenchRate::Fixed(50.0),
        duration: Duration::from_secs(5),
        accounts: None,
        op: BenchOp::Transfer,
        value_bytes: 0,
        nodes: None,
        stop: None,
    })
    .expect("bench");

    // The report on disk is the one returned, with sane figures.
    let on_disk: BenchReport =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    // (Floats may differ in the last digit after a JSON round trip; compare the rest.)
    assert_eq!(on_disk.runs.len(), report.runs.len());
    let (disk, mem) = (&on_disk.runs[0], &report.runs[0]);
    assert_eq!(
        (
            disk.submitted,
            disk.accepted,
            disk.finalized,
            &disk.rejected
        ),
        (mem.submitted, mem.accepted, mem.finalized, &mem.rejected)
    );
    assert_eq!(disk.accepted_hashes, mem.accepted_hashes);
    assert!((disk.latency_ms.p99 - mem.latency_ms.p99).abs() < 1e-6);
    assert_eq!(on_disk.node_usage.len(), report.node_usage.len());
    assert!(
        json_path.with_extension("svg").exists(),
        "the plot is written"
    );
    assert_eq!(report.runs.len(), 1);
    assert_eq!((report.accounts, report.nodes), (10, 4));
    let run = &report.runs[0];
    assert_eq!(run.submitted, 250, "50 tx/s for 5 s");
    let rejected: u64 = run.rejected.values().sum();
    assert_eq!(
        run.accepted + rejected,
        run.submitted,
        "every submission is accepted or rejected"
    );
    assert_eq!(
        rejected, 0,
        "nothing is rejected at 50 tx/s: {:?}",
        run.rejected
    );
    assert_eq!(
        run.finalized, run.accepted,
        "every accepted transaction became final within the drain time"
    );
    assert_eq!(run.finalized_twice, 0);
    assert_eq!(run.accepted_hashes.len() as u64, run.accepted);
    assert_eq!(
        run.finalized_hashes, run.accepted_hashes,
        "every accepted transaction was seen final"
    );
    assert!(run.finalized_tps > 10.0, "{}", run.finalized_tps);
    assert!(
        run.submitted_tps > 40.0 && run.submitted_tps < 60.0,
        "{}",
        run.submitted_tps
    );
    let l = run.latency_ms;
    assert!(0.0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99, "{l:?}");
    assert!(l.p99 < 30_000.0, "{l:?}");
    assert!(!run.seconds.is_empty());
    assert_eq!(
        run.seconds.iter().map(|s| s.finalized).sum::<u64>(),
        run.finalized
    );
    assert_eq!(report.node_usage.len(), 4);
    assert!(report
        .node_usage
        .iter()
        .all(|u| u.rss_kib.is_some_and(|kib| kib > 0) && u.cpu_percent.is_some()));

    // Durability: every accepted hash is final on every node at the same place, and appears in
    // the chain exactly once.
    let hashes: Vec<TxHash> = run
        .accepted_hashes
        .iter()
        .map(|h| h.parse().unwrap())
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut places: Vec<HashMap<TxHash, (u64, u32)>> = Vec::new();
        for node in &file.nodes {
            let client = Client::http(&node.rpc, &ClientConfig::default()).unwrap();
            let mut place = HashMap::new();
            for hash in &hashes {
                let info = client.transaction(hash).await.unwrap();
                match info.status {
                    TxStatus::Final { height, index } => {
                        place.insert(*hash, (height, index));
                    }
                    other => panic!("{hash} on {}: {other:?}, not final", node.name),
                }
            }
            places.push(place);
        }
        assert!(
            places.windows(2).all(|pair| pair[0] == pair[1]),
            "nodes disagree on where the transactions are"
        );

        let client = Client::http(&file.nodes[0].rpc, &ClientConfig::default()).unwrap();
        let tip = client.status().await.unwrap().finalized_height;
        let mut count: HashMap<TxHash, u32> = HashMap::new();
        for height in 1..=tip {
            let block = client.block(BlockRef::Height(height), false).await.unwrap();
            for hash in block.tx_hashes {
                *count.entry(hash).or_default() += 1;
            }
        }
        for hash in &hashes {
            assert_eq!(count.get(hash), Some(&1), "{hash} is in the chain once");
        }
    });

    // The command-line path: a tiny `put` bench through `run`.
    mesh_testnet::run(
        TestnetCommand::Bench {
            dir: dir.clone(),
            rate: "20".into(),
            duration: 1,
            accounts: Some(2),
            op: BenchOp::Put,
            value_bytes: 64,
            nodes: Some(vec![1, 2]),
        },
        meshd(),
    )
    .expect("bench --op put through run");
    let reports = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("bench-") && name.ends_with(".json")
        })
        .count();
    assert!(reports >= 1);
    assert!(mesh_testnet::run(
        TestnetCommand::Bench {
            dir: dir.clone(),
            rate: "fast".into(),
            duration: 1,
            accounts: None,
            op: BenchOp::Transfer,
            value_bytes: 0,
            nodes: None,
        },
        meshd(),
    )
    .is_err());

    mesh_testnet::run(TestnetCommand::Down { dir: dir.clone() }, meshd()).expect("down");
}
