//! RocksDB storage: commits, reopening, historical proofs, refusals, and crash safety under
//! SIGKILL at random moments.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)] // tests: a panic is a failure

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mesh_ledger::execution::apply_block;
use mesh_ledger::state::{verify_account_proof, verify_value_proof, StateError, StateReader};
use mesh_ledger::storage::{Store, StoreError, SCHEMA_VERSION};
use mesh_ledger::{build_block, Op, SignedTransaction};
use rand::{Rng, SeedableRng};
use support::{key, transfer, tx, MemChain};

const WORKLOAD_SEED: u64 = 42;
const WORKLOAD_ACCOUNTS: u64 = 30;
const WORKLOAD_BLOCKS: usize = 150;

fn workload() -> (mesh_ledger::Genesis, Vec<Vec<SignedTransaction>>) {
    support::workload(WORKLOAD_SEED, WORKLOAD_ACCOUNTS, WORKLOAD_BLOCKS, 20)
}

/// Builds and commits the next block of the workload on the store, the way a proposer would.
fn commit_next(store: &Store, ctx: &mesh_ledger::ChainContext, txs: &[SignedTransaction]) {
    let head = store.latest_header().unwrap();
    let proposer = key(1000 + head.height % 4).address();
    let (executed, excluded) = build_block(
        store,
        &head,
        proposer,
        head.timestamp_ms + 1000,
        txs.to_vec(),
        ctx,
    )
    .unwrap();
    assert!(excluded.is_empty());
    let certificate = format!("certificate of {}", executed.height()).into_bytes();
    store.commit_block(&executed, &certificate).unwrap();
}

#[test]
fn blocks_commit_reopen_and_prove_history() {
    let dir = tempfile::tempdir().unwrap();
    let (genesis, blocks) = workload();
    let ctx = mesh_ledger::ChainContext::from_genesis(&genesis).unwrap();
    let mut memory = MemChain::new(&genesis);
    {
        let store = Store::open(dir.path()).unwrap();
        let header0 = store.init_genesis(&genesis).unwrap();
        assert_eq!(header0, memory.head);
        for txs in &blocks[..40] {
            // The validator's path: apply the block built in memory, then commit it.
            let block = memory.push(txs.clone()).block.clone();
            let head = store.latest_header().unwrap();
            let executed = apply_block(&store, &head, &block, &ctx).unwrap();
            store.commit_block(&executed, b"cert").unwrap();
        }
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.init_genesis(&genesis).unwrap().height,
        0,
        "reopening with the same genesis is fine"
    );
    assert_eq!(store.latest_height().unwrap(), Some(40));
    assert_eq!(store.latest_header().unwrap(), memory.head);
    for height in [0u64, 1, 17, 40] {
        let header = store.header(height).unwrap().unwrap();
        assert_eq!(store.state_root_at(height).unwrap(), header.state_root);
        assert_eq!(store.height_of(&header.hash()).unwrap(), Some(height));
        // Every account, at every height, proves against that height's root.
        for i in 0..WORKLOAD_ACCOUNTS + 3 {
            let address = key(i).address();
            let (account, proof) = store.account_at(&address, height).unwrap();
            assert!(
                verify_account_proof(&header.state_root, &address, account.as_ref(), &proof)
                    .is_ok()
            );
            let (value, proof) = store.value_at(&address, &[3], height).unwrap();
            assert!(verify_value_proof(
                &header.state_root,
                &address,
                &[3],
                value.as_deref(),
                &proof
            )
            .is_ok());
        }
    }
    // Transactions are indexed with their receipts.
    let block = store.block(7).unwrap().unwrap();
    assert_eq!(block, memory.blocks[7].block);
    assert_eq!(store.receipts(7).unwrap(), memory.blocks[7].receipts);
    for (index, stx) in block.txs.iter().enumerate() {
        let location = store.tx_location(&stx.hash()).unwrap().unwrap();
        assert_eq!((location.height, location.index as usize), (7, index));
        assert_eq!(
            store.receipt(&stx.hash()).unwrap().unwrap().index as usize,
            index
        );
    }
    assert_eq!(store.certificate(7).unwrap(), Some(b"cert".to_vec()));
    // Latest state agrees with memory.
    for i in 0..WORKLOAD_ACCOUNTS + 3 {
        let address = key(i).address();
        assert_eq!(
            store.account(&address).unwrap(),
            memory.state.account(&address).unwrap()
        );
    }
    // Beyond the newest height: a clear refusal.
    let err = store.account_at(&key(0).address(), 41).unwrap_err();
    assert!(matches!(
        err,
        StoreError::State(StateError::HeightNotRetained {
            height: 41,
            newest: 40,
            ..
        })
    ));
}

/// The store's in-memory caches (decoded tree nodes, latest state) never disagree with the
/// database: a store that stays open for the whole workload (warm caches, reads interleaved
/// with commits) and one reopened afterwards (cold caches) read the same state, roots and
/// proofs as a replay in memory.
#[test]
fn warm_caches_agree_with_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (genesis, blocks) = workload();
    let ctx = mesh_ledger::ChainContext::from_genesis(&genesis).unwrap();
    let mut memory = MemChain::new(&genesis);
    let addresses: Vec<_> = (0..WORKLOAD_ACCOUNTS + 3)
        .map(|i| key(i).address())
        .collect();
    let store = Store::open(dir.path()).unwrap();
    store.init_genesis(&genesis).unwrap();
    for txs in &blocks {
        let block = memory.push(txs.clone()).block.clone();
        let head = store.latest_header().unwrap();
        let executed = apply_block(&store, &head, &block, &ctx).unwrap();
        store.commit_block(&executed, b"cert").unwrap();
        for address in &addresses {
            assert_eq!(
                store.account(address).unwrap(),
                memory.state.account(address).unwrap()
            );
            for k in 0..8u8 {
                assert_eq!(
                    store.value(address, &[k]).unwrap(),
                    memory.state.value(address, &[k]).unwrap()
                );
            }
        }
    }
    let check = |store: &Store| {
        let newest = store.latest_height().unwrap().unwrap();
        for height in [0, newest / 2, newest] {
            let header = store.header(height).unwrap().unwrap();
            assert_eq!(store.state_root_at(height).unwrap(), header.state_root);
            for address in &addresses {
                let (account, proof) = store.account_at(address, height).unwrap();
                assert!(verify_account_proof(
                    &header.state_root,
                    address,
                    account.as_ref(),
                    &proof
                )
                .is_ok());
            }
        }
        for address in &addresses {
            assert_eq!(
                store.account(address).unwrap(),
                memory.state.account(address).unwrap()
            );
        }
    };
    check(&store);
    drop(store);
    check(&Store::open(dir.path()).unwrap());
}

#[test]
fn repository_keys_page_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = support::genesis_with(2, 1_000);
    let ctx = mesh_ledger::ChainContext::from_genesis(&genesis).unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.init_genesis(&genesis).unwrap();
    let alice = key(0);
    let puts: Vec<_> = [&b"a1"[..], b"a2", b"a3", b"b1", b"a"]
        .iter()
        .enumerate()
        .map(|(n, k)| {
            tx(
                &alice,
                n as u64,
                1,
                Op::Put {
                    key: k.to_vec(),
                    value: vec![n as u8],
                },
            )
        })
        .collect();
    commit_next(&store, &ctx, &puts);
    let keys = |prefix: &[u8], after: Option<&[u8]>, limit| -> Vec<Vec<u8>> {
        store
            .keys(&alice.address(), prefix, after, limit)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(
        keys(b"a", None, 10),
        vec![
            b"a".to_vec(),
            b"a1".to_vec(),
            b"a2".to_vec(),
            b"a3".to_vec()
        ]
    );
    assert_eq!(keys(b"a", None, 2), vec![b"a".to_vec(), b"a1".to_vec()]);
    assert_eq!(
        keys(b"a", Some(b"a1"), 10),
        vec![b"a2".to_vec(), b"a3".to_vec()]
    );
    assert_eq!(keys(b"", Some(b"a3"), 10), vec![b"b1".to_vec()]);
    assert!(keys(b"", None, 10).len() == 5);
    assert!(
        store
            .keys(&key(1).address(), b"", None, 10)
            .unwrap()
            .is_empty(),
        "namespaces are per owner"
    );

    // A deleted key leaves the listing, an overwritten one shows its newest value, from the
    // warm caches and from the database alone.
    let changes = vec![
        tx(
            &alice,
            5,
            1,
            Op::Delete {
                key: b"a2".to_vec(),
            },
        ),
        tx(
            &alice,
            6,
            1,
            Op::Put {
                key: b"a1".to_vec(),
                value: b"new".to_vec(),
            },
        ),
    ];
    commit_next(&store, &ctx, &changes);
    let expected: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"a".to_vec(), vec![4]),
        (b"a1".to_vec(), b"new".to_vec()),
        (b"a3".to_vec(), vec![2]),
        (b"b1".to_vec(), vec![3]),
    ];
    assert_eq!(
        store.keys(&alice.address(), b"", None, 10).unwrap(),
        expected
    );
    drop(store);
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(
        reopened.keys(&alice.address(), b"", None, 10).unwrap(),
        expected
    );
}

#[test]
fn refusals_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = support::genesis_with(2, 1_000);
    let ctx = mesh_ledger::ChainContext::from_genesis(&genesis).unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.init_genesis(&genesis).unwrap();
        commit_next(&store, &ctx, &[transfer(&key(0), 0, key(1).address(), 1)]);
        // Another chain's genesis.
        let other = support::genesis_with(3, 1_000);
        assert!(matches!(
            store.init_genesis(&other),
            Err(StoreError::GenesisMismatch { .. })
        ));
        // A block that is not next, or does not extend the head.
        let head = store.latest_header().unwrap();
        let (executed, _) = build_block(
            &store,
            &head,
            key(1000).address(),
            head.timestamp_ms,
            vec![],
            &ctx,
        )
        .unwrap();
        store.commit_block(&executed, b"").unwrap();
        assert!(matches!(
            store.commit_block(&executed, b""),
            Err(StoreError::NotNext {
                expected: 3,
                got: 2
            })
        ));
        let mut forked = executed.clone();
        forked.block.header.height = 3;
        assert!(matches!(
            store.commit_block(&forked, b""),
            Err(StoreError::WrongParent { height: 3, .. })
        ));
    }
    // Another schema version: overwrite the record with raw RocksDB access.
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), &cfs).unwrap();
        db.put_cf(
            db.cf_handle("meta").unwrap(),
            b"schema_version",
            (SCHEMA_VERSION + 1).to_be_bytes(),
        )
        .unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaMismatch { found, expected: SCHEMA_VERSION, .. } if found == SCHEMA_VERSION + 1)
    );
    assert!(err.to_string().contains("schema version"));

    // A database of the previous layout (schema 2: latest values in a `state` column family
    // that schema 3 retired): refused, naming both versions, not misread or called foreign.
    {
        let mut options = rocksdb::Options::default();
        options.create_missing_column_families(true);
        let mut cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        cfs.push("state".to_string());
        let db = rocksdb::DB::open_cf(&options, dir.path(), &cfs).unwrap();
        db.put_cf(
            db.cf_handle("meta").unwrap(),
            b"schema_version",
            2u32.to_be_bytes(),
        )
        .unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaMismatch {
                found: 2,
                expected: SCHEMA_VERSION,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("schema version 2")
            && message.contains(&format!("reads version {SCHEMA_VERSION}")),
        "{message}"
    );

    // A database of another program.
    let foreign = tempfile::tempdir().unwrap();
    {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        rocksdb::DB::open_cf(&options, foreign.path(), ["other_things"]).unwrap();
    }
    let err = Store::open(foreign.path()).unwrap_err();
    assert!(
        err.to_string().contains("not a Mesh Ledger database"),
        "{err}"
    );

    // A corrupt database: its manifest overwritten with garbage.
    let corrupt = tempfile::tempdir().unwrap();
    Store::open(corrupt.path())
        .unwrap()
        .init_genesis(&genesis)
        .unwrap();
    for entry in std::fs::read_dir(corrupt.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("MANIFEST") || name == "CURRENT" {
            std::fs::write(&path, b"garbage garbage garbage").unwrap();
        }
    }
    let err = Store::open(corrupt.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err
        .to_string()
        .contains(&corrupt.path().display().to_string()));
}

/// Entry point of the child process of `sigkill_at_random_moments_loses_nothing_committed`.
/// Run normally (without MESH_CRASH_DIR) it has nothing to do.
#[test]
fn crash_child_entry_point() {
    let Ok(dir) = std::env::var("MESH_CRASH_DIR") else {
        return;
    };
    let (genesis, blocks) = workload();
    let ctx = mesh_ledger::ChainContext::from_genesis(&genesis).unwrap();
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    store.init_genesis(&genesis).unwrap();
    let mut height = store.latest_height().unwrap().unwrap() as usize;
    while height < blocks.len() {
        commit_next(&store, &ctx, &blocks[height]);
        height += 1;
        // The parent counts these lines to kill us in the middle of the commit stream.
        println!("committed {height}");
    }
}

/// A child process commits blocks and is killed with SIGKILL at random moments; after
/// reopening, the newest block is whole and the state matches a replay from genesis.
#[test]
fn sigkill_at_random_moments_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (genesis, blocks) = workload();
    let mut memory = MemChain::new(&genesis);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let exe = std::env::current_exe().unwrap();
    let mut kills = 0;
    let mut last_height = 0u64;
    for round in 0..12 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_entry_point",
                "--test-threads",
                "1",
                "--nocapture",
            ])
            .env("MESH_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill after a random number of commits (and a random few milliseconds more), so the
        // kill lands inside the stream of commits however fast or slow this machine is.
        let commits_before_kill = rng.gen_range(1..=12);
        let (lines_tx, lines_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("committed ") && lines_tx.send(()).is_err() {
                    break;
                }
            }
        });
        let mut seen = 0;
        while seen < commits_before_kill {
            match lines_rx.recv_timeout(Duration::from_secs(120)) {
                Ok(()) => seen += 1,
                Err(mpsc::RecvTimeoutError::Disconnected) => break, // the child finished
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("round {round}: the child made no progress for 120 s");
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..5_000)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL on Unix
            kills += 1;
        }
        child.wait().unwrap();

        let store = Store::open(dir.path()).unwrap();
        let Some(height) = store.latest_height().unwrap() else {
            continue;
        };
        assert!(
            height >= last_height,
            "round {round}: height went back from {last_height} to {height}"
        );
        last_height = height;
        while memory.head.height < height {
            memory.push(blocks[memory.head.height as usize].clone());
        }
        let header = store.latest_header().unwrap();
        assert_eq!(
            header, memory.head,
            "round {round}: the stored head differs from the replay"
        );
        let block = store.block(height).unwrap().unwrap();
        assert_eq!(
            block.txs.len(),
            header.tx_count as usize,
            "round {round}: block {height} is not whole"
        );
        assert_eq!(
            store.receipts(height).unwrap().len(),
            header.tx_count as usize
        );
        assert!(store.certificate(height).unwrap().is_some());
        assert!(
            store.header(height + 1).unwrap().is_none(),
            "round {round}: a partial next block was left"
        );
        assert_eq!(store.state_root_at(height).unwrap(), header.state_root);
        for i in 0..WORKLOAD_ACCOUNTS + 2 {
            let address = key(i).address();
            assert_eq!(
                store.account(&address).unwrap(),
                memory.state.account(&address).unwrap()
            );
            for k in 0..8u8 {
                assert_eq!(
                    store.value(&address, &[k]).unwrap(),
                    memory.state.value(&address, &[k]).unwrap()
                );
            }
        }
        if height as usize == blocks.len() {
            break;
        }
    }
    assert!(
        kills >= 3,
        "only {kills} kills landed; the test did not exercise crashes"
    );
    assert!(last_height > 0, "the child never committed a block");
}
