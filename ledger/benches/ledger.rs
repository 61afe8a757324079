//! Ledger benchmarks: signature verification (single vs batch), execution and commit of a
//! block of 1,000 transfers over 100k accounts, and state proofs.
//!
//! `cargo bench -p mesh-ledger` for figures; under `cargo test --benches` each benchmark runs
//! once on a smaller state, to keep it compiling and working.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mesh_ledger::block::{receipts_root, tx_root, PROTOCOL_VERSION};
use mesh_ledger::execution::{execute_txs, expected_set_hashes, ChainContext, ExecutedBlock};
use mesh_ledger::state::{compute_state_root, verify_account_proof};
use mesh_ledger::storage::Store;
use mesh_ledger::tx::verify_signatures;
use mesh_ledger::{
    Block, BlockHeader, Genesis, GenesisAccount, Op, Params, SecretKey, SignedTransaction,
    Transaction, Validator,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CHAIN: &str = "bench";
const TXS_PER_BLOCK: usize = 1_000;

fn full_size() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn key(n: u64) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    SecretKey::from_seed(seed)
}

fn signed_transfer(from: &SecretKey, nonce: u64, to: &SecretKey) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN.into(),
        sender: from.address(),
        nonce,
        fee: 1,
        op: Op::Transfer {
            to: to.address(),
            amount: 1,
        },
    }
    .sign(from)
}

fn signatures(c: &mut Criterion) {
    let txs: Vec<SignedTransaction> = (0..64)
        .map(|i| signed_transfer(&key(i), 0, &key(i + 1)))
        .collect();
    let mut group = c.benchmark_group("signatures");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_single", |b| {
        b.iter(|| black_box(&txs[0]).verify_signature().unwrap())
    });
    group.throughput(Throughput::Elements(txs.len() as u64));
    group.bench_function("verify_batch_64", |b| {
        b.iter(|| verify_signatures(black_box(&txs)).unwrap())
    });
    group.finish();
}

/// A store holding `accounts` funded accounts, with the keys.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    ctx: ChainContext,
}

/// Signed transfers between random accounts of the fixture, nonces in order.
struct Workload {
    keys: Vec<SecretKey>,
    nonces: HashMap<usize, u64>,
    rng: ChaCha8Rng,
}

impl Fixture {
    fn new(accounts: usize) -> (Fixture, Workload) {
        let keys: Vec<SecretKey> = (0..accounts as u64).map(key).collect();
        let genesis = Genesis {
            chain_id: CHAIN.into(),
            genesis_time_ms: 0,
            validators: vec![Validator {
                address: key(u64::MAX).address(),
                power: 1,
            }],
            balances: keys
                .iter()
                .map(|k| GenesisAccount {
                    address: k.address(),
                    balance: 1 << 40,
                })
                .collect(),
            params: Params {
                block_txs_max: 10_000,
                min_validators: 1,
                ..Params::default()
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.init_genesis(&genesis).unwrap();
        let ctx = ChainContext::from_genesis(&genesis).unwrap();
        let workload = Workload {
            keys,
            nonces: HashMap::new(),
            rng: ChaCha8Rng::seed_from_u64(1),
        };
        (
            Fixture {
                _dir: dir,
                store,
                ctx,
            },
            workload,
        )
    }
}

impl Workload {
    /// 1,000 transfers between random accounts, nonces in order.
    fn next_txs(&mut self) -> Vec<SignedTransaction> {
        (0..TXS_PER_BLOCK)
            .map(|_| {
                let from = self.rng.gen_range(0..self.keys.len());
                let to = self.rng.gen_range(0..self.keys.len());
                let nonce = self.nonces.entry(from).or_insert(0);
                let stx = signed_transfer(&self.keys[from], *nonce, &self.keys[to]);
                *nonce += 1;
                stx
            })
            .collect()
    }
}

impl Fixture {
    /// Execution without signature checks (they are benchmarked apart): what the ledger
    /// adds on top of verification.
    fn execute(&self, txs: Vec<SignedTransaction>) -> ExecutedBlock {
        let parent = self.store.latest_header().unwrap();
        let height = parent.height + 1;
        let proposer = key(u64::MAX).address();
        let tx_hashes: Vec<_> = txs.iter().map(SignedTransaction::hash).collect();
        let (receipts, changes) = execute_txs(
            &self.store,
            &self.ctx.params,
            height,
            &proposer,
            &txs,
            &tx_hashes,
        )
        .unwrap();
        let (validator_set_hash, next_validator_set_hash) =
            expected_set_hashes(&self.store, &self.ctx.params, height).unwrap();
        let (state_root, tree_nodes) = compute_state_root(&self.store, height, &changes).unwrap();
        let header = BlockHeader {
            version: PROTOCOL_VERSION,
            chain_id: CHAIN.into(),
            height,
            parent_hash: parent.hash(),
            proposer,
            timestamp_ms: parent.timestamp_ms + 1,
            tx_count: txs.len() as u32,
            tx_root: tx_root(&tx_hashes),
            receipts_root: receipts_root(&receipts),
            state_root,
            validator_set_hash,
            next_validator_set_hash,
        };
        let block = Block { header, txs };
        ExecutedBlock {
            block_hash: block.hash(),
            block,
            tx_hashes,
            receipts,
            changes,
            tree_nodes,
        }
    }

    /// Executes `txs` as the next block and commits it.
    fn execute_and_commit(&self, txs: Vec<SignedTransaction>) {
        let executed = self.execute(txs);
        self.store.commit_block(&executed, b"certificate").unwrap();
    }
}

/// CPU time this thread has run, from Linux's `/proc/thread-self/schedstat` (nanoseconds on
/// CPU first); `None` elsewhere, and the caller falls back to wall time.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// CPU time of all this process's threads (the sum of `/proc/self/task/*/schedstat`).
fn process_cpu_time() -> Option<Duration> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        nanos += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

fn execution(c: &mut Criterion) {
    let accounts = if full_size() { 100_000 } else { 2_000 };
    let (fixture, mut workload) = Fixture::new(accounts);
    let mut group = c.benchmark_group(format!("block_of_1000_transfers_over_{accounts}_accounts"));
    group.sample_size(20);
    group.throughput(Throughput::Elements(TXS_PER_BLOCK as u64));
    let txs = workload.next_txs();
    group.bench_function("execute", |b| {
        b.iter(|| fixture.execute(black_box(txs.clone())))
    });
    // Commit that block so the workload's nonces stay in step with the store.
    fixture.execute_and_commit(txs);
    group.bench_function("execute_and_commit", |b| {
        b.iter_batched(
            || workload.next_txs(),
            |txs| fixture.execute_and_commit(txs),
            BatchSize::PerIteration,
        )
    });
    // The same work measured in CPU time of the executing thread, not wall time: on a shared
    // machine other tenants' load stretches wall time but not this. It is the figure for "tx/s
    // on one core" (RocksDB's background flushes and compactions run on other threads and are
    // not in it; docs/performance.md counts them apart).
    group.bench_function("execute_and_commit_thread_cpu", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let txs = workload.next_txs();
                let wall = Instant::now();
                let cpu = thread_cpu_time();
                fixture.execute_and_commit(txs);
                total += match (cpu, thread_cpu_time()) {
                    (Some(before), Some(after)) => after.saturating_sub(before),
                    _ => wall.elapsed(),
                };
            }
            total
        })
    });
    // And in CPU time of the whole process over a run of blocks: what RocksDB's background
    // flushes and compactions add to the thread's figure (the transactions are signed before
    // the clock starts).
    group.bench_function("execute_and_commit_process_cpu", |b| {
        b.iter_custom(|iters| {
            let blocks: Vec<_> = (0..iters).map(|_| workload.next_txs()).collect();
            let wall = Instant::now();
            let cpu = process_cpu_time();
            for txs in blocks {
                fixture.execute_and_commit(txs);
            }
            match (cpu, process_cpu_time()) {
                (Some(before), Some(after)) => after.saturating_sub(before),
                _ => wall.elapsed(),
            }
        })
    });
    // The commit alone: each block is executed outside the timed part, then committed.
    group.bench_function("commit", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let executed = fixture.execute(workload.next_txs());
                let start = Instant::now();
                fixture
                    .store
                    .commit_block(&executed, b"certificate")
                    .unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();

    let height = fixture.store.latest_height().unwrap().unwrap();
    let root = fixture.store.header(height).unwrap().unwrap().state_root;
    let address = workload.keys[7].address();
    let mut group = c.benchmark_group("proofs");
    group.bench_function("account_proof_generate", |b| {
        b.iter(|| {
            fixture
                .store
                .account_at(black_box(&address), height)
                .unwrap()
        })
    });
    let (account, proof) = fixture.store.account_at(&address, height).unwrap();
    group.bench_function("account_proof_verify", |b| {
        b.iter(|| {
            verify_account_proof(&root, black_box(&address), account.as_ref(), &proof).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, signatures, execution);
criterion_main!(benches);
