//! `meshd testnet bench`: a load generator against a running testnet.
//!
//! It loads the development accounts' key files, reads each account's next nonce
//! (`mesh_getAccount`), pre-signs every transaction of a run, then submits them at the target
//! rate (`mesh_sendTransaction` calls in JSON-RPC batches of at most [`SUBMIT_BATCH_MAX`], one
//! HTTP request each, at most [`IN_FLIGHT_MAX`] requests in flight) spread over every
//! running node — each account always to the same node (account `a` to node `a mod n`), so one
//! node sees an account's nonces in order (`--nodes` narrows the nodes submitted to). It follows finality with a `mesh_subscribeBlocks`
//! WebSocket subscription on the first running node, reading each final block's transaction
//! hashes (`mesh_getBlock`), and measures the latency from just before the submission to the
//! arrival of the block's notification.
//!
//! `--rate max` runs steps of `--duration` seconds each, starting at [`MAX_START_RATE`] tx/s and
//! multiplying the rate by 1.5, until the finalized tx/s stops growing (under 5 % above the best
//! step), p99 latency exceeds [`MAX_P99`], more than 5 % of submissions are rejected, or
//! [`MAX_STEPS`] steps ran; the saturation point is the step with the most finalized tx/s.
//! Then it runs at [`LOAD_FRACTIONS`] (50 % and 80 %) of that maximum finalized rate, for the
//! latency of a network that keeps up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh_ledger::bytes::parse_hex_fixed;
use mesh_ledger::{Op, SecretKey, SignedTransaction, Transaction, TxHash};
use mesh_rpc::types::{BlockEvent, ReadOptions};
use mesh_rpc::{BlockRef, Client, ClientConfig, ClientError, HttpTransport};
use serde::{Deserialize, Serialize};

use crate::process;
use crate::state::{NodeEntry, TestnetFile};
use crate::TestnetError;

/// Most submission requests (batches) in flight at once.
pub const IN_FLIGHT_MAX: usize = 256;
/// Most transactions submitted in one JSON-RPC batch: a node's default `batch_len_max`.
pub(crate) const SUBMIT_BATCH_MAX: usize = 100;
/// After the submissions, how long the bench waits for accepted transactions to become final.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// `--rate max`: the first step's rate, tx/s.
pub const MAX_START_RATE: f64 = 50.0;
/// `--rate max`: after the saturation point, one run at each of these fractions of it.
pub const LOAD_FRACTIONS: [f64; 2] = [0.5, 0.8];
/// `--rate max`: a step whose p99 latency exceeds this is past saturation.
pub const MAX_P99: Duration = Duration::from_secs(5);
/// `--rate max`: most steps.
pub const MAX_STEPS: usize = 12;
/// Fee of every bench transaction when the genesis cannot be read (the default `fee_min`).
const FEE_DEFAULT: u64 = 1;

/// What each transaction does.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchOp {
    /// Transfer 1 unit to the next account.
    Transfer,
    /// Put `--value-bytes` random-looking bytes under `bench/<nonce>` in the sender's namespace.
    Put,
}

/// The target rate: fixed, or `max` (find the saturation point).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BenchRate {
    /// Transactions per second.
    Fixed(f64),
    /// Step the rate up until finality stops keeping up.
    Max,
}

impl std::str::FromStr for BenchRate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "max" {
            return Ok(BenchRate::Max);
        }
        match text.parse::<f64>() {
            Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 => {
                Ok(BenchRate::Fixed(rate))
            }
            _ => Err(format!(
                "{text:?} is not a rate: give transactions per second (0 < R ≤ 1000000) or `max`"
            )),
        }
    }
}

/// Options of one bench.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The testnet directory.
    pub dir: PathBuf,
    /// Target rate.
    pub rate: BenchRate,
    /// Length of the run (of each step with `--rate max`).
    pub duration: Duration,
    /// How many of the development accounts send (`None`: all).
    pub accounts: Option<usize>,
    /// What the transactions do.
    pub op: BenchOp,
    /// Value size of `put` transactions.
    pub value_bytes: usize,
    /// Indexes (into testnet.json) of the nodes to submit to and follow finality on (the first
    /// one); `None`: every running node.
    pub nodes: Option<Vec<usize>>,
    /// Raised by the caller to end the submissions early (a fixed-rate run then drains and
    /// reports as if its duration were over): scenario checks load the network for exactly as
    /// long as their faults last.
    pub stop: Option<Arc<AtomicBool>>,
}

/// One run at one target rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRun {
    /// Target rate, tx/s.
    pub target_rate: f64,
    /// Seconds spent submitting.
    pub submit_seconds: f64,
    /// The rate the bench achieved: submitted / submit_seconds. Well below `target_rate`, the
    /// bench itself (or the RPC servers) was the limit, not finality.
    pub submitted_tps: f64,
    /// Transactions sent.
    pub submitted: u64,
    /// Accepted into a mempool (the node answered with the hash).
    pub accepted: u64,
    /// Refused, by reason (the API error's name, or `transport` for a failed request).
    pub rejected: BTreeMap<String, u64>,
    /// Accepted transactions seen in a final block.
    pub finalized: u64,
    /// Accepted transactions seen final more than once (must be 0).
    pub finalized_twice: u64,
    /// Finalized tx/s over the run: finalized / seconds from the first submission to the last
    /// finality.
    pub finalized_tps: f64,
    /// Latency from submission to finality, milliseconds.
    pub latency_ms: Latency,
    /// Per second of the run: finalized count and p50 latency of those.
    pub seconds: Vec<SecondSample>,
    /// Every accepted transaction's hash (`0x…`), for durability checks.
    pub accepted_hashes: Vec<String>,
    /// The accepted transactions the bench saw final (`0x…`, submission order): what it was
    /// told is durable, so what must be in the chain exactly once on every node.
    #[serde(default)]
    pub finalized_hashes: Vec<String>,
}

/// Latency percentiles, milliseconds (0 when nothing was finalized).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// One second of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SecondSample {
    /// Seconds since the run started.
    pub second: u64,
    /// Transactions that became final in this second.
    pub finalized: u64,
    /// Their median latency, ms (0 if none).
    pub p50_ms: f64,
}

/// A run at a fraction of the maximum finalized rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadPoint {
    /// The fraction (0.5 = 50 %).
    pub fraction: f64,
    /// Index into `runs`.
    pub run: usize,
}

/// One node's resource use during the bench.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeUsage {
    /// `node-<i>`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// CPU time used during the bench over wall time, percent of one core (`None`: not
    /// readable, e.g. no `/proc`).
    pub cpu_percent: Option<f64>,
    /// Resident set size at the end, KiB.
    pub rss_kib: Option<u64>,
}

/// The JSON report (`DIR/bench-<timestamp>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Chain id of the testnet.
    pub chain_id: String,
    /// Unix time the bench started, ms.
    pub started_unix_ms: u64,
    /// `transfer` or `put`.
    pub op: BenchOp,
    /// Value size of `put`.
    pub value_bytes: usize,
    /// Sending accounts.
    pub accounts: usize,
    /// Nodes submitted to.
    pub nodes: usize,
    /// `fixed` or `max`.
    pub mode: String,
    /// The runs (one, or one per step of `--rate max`).
    pub runs: Vec<BenchRun>,
    /// With `--rate max`: index into `runs` of the saturation point (most finalized tx/s).
    pub saturation: Option<usize>,
    /// With `--rate max`: the runs at fractions of the saturation point's finalized tx/s.
    #[serde(default)]
    pub load_points: Vec<LoadPoint>,
    /// Per node, CPU and memory.
    pub node_usage: Vec<NodeUsage>,
}

/// An account key file (`{"address": "0x…", "secret": "0x…"}`); the address derives from the
/// secret.
#[derive(Deserialize)]
struct KeyFile {
    secret: String,
}

/// Runs the bench and writes its report and plot; returns the report and the JSON's path.
pub fn bench(options: &BenchOptions) -> Result<(BenchReport, PathBuf), TestnetError> {
    let file = TestnetFile::load(&options.dir)?;
    let nodes: Vec<NodeEntry> = match &options.nodes {
        None => file
            .nodes
            .iter()
            .filter(|node| process::node_alive(node))
            .cloned()
            .collect(),
        Some(indexes) => {
            let mut chosen = Vec::with_capacity(indexes.len());
            for &index in indexes {
                let node = file.node(index)?;
                if !process::node_alive(node) {
                    return Err(TestnetError::NotRunning {
                        name: node.name.clone(),
                    });
                }
                chosen.push(node.clone());
            }
            chosen
        }
    };
    if nodes.is_empty() {
        return Err(TestnetError::Usage(format!(
            "no node of the testnet in {} is running; start it with `meshd testnet up --detach`",
            options.dir.display()
        )));
    }
    let keys = load_keys(&file.accounts_dir, options.accounts)?;
    let fee = fee_min(&nodes[0].home);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| TestnetError::Bench(format!("cannot start the runtime: {err}")))?;
    let started_unix_ms = unix_ms();
    let cpu_before: Vec<Option<u64>> = nodes.iter().map(|node| cpu_ticks(node.pid)).collect();
    let wall = Instant::now();
    let ctx = Context {
        chain_id: file.chain_id.clone(),
        nodes: nodes.clone(),
        keys,
        fee,
        op: options.op,
        value_bytes: options.value_bytes,
        stop: options.stop.clone(),
    };
    let (runs, saturation, load_points) = runtime.block_on(async {
        match options.rate {
            BenchRate::Fixed(rate) => {
                let run = run_once(&ctx, rate, options.duration).await?;
                Ok::<_, TestnetError>((vec![run], None, Vec::new()))
            }
            BenchRate::Max => {
                let (mut runs, saturation) = find_max(&ctx, options.duration).await?;
                let mut points = Vec::new();
                if let Some(best) = saturation.and_then(|i| runs.get(i)) {
                    let max = best.finalized_tps;
                    for fraction in LOAD_FRACTIONS {
                        if ctx.stopped() || max * fraction <= 0.0 {
                            break;
                        }
                        eprintln!(
                            "at {:.0} % of the maximum: {:.0} tx/s for {} s",
                            fraction * 100.0,
                            max * fraction,
                            options.duration.as_secs()
                        );
                        let run = run_once(&ctx, max * fraction, options.duration).await?;
                        points.push(LoadPoint {
                            fraction,
                            run: runs.len(),
                        });
                        runs.push(run);
                    }
                }
                Ok((runs, saturation, points))
            }
        }
    })?;
    let seconds = wall.elapsed().as_secs_f64();
    let ticks = clock_ticks();
    let node_usage = nodes
        .iter()
        .zip(cpu_before)
        .map(|(node, before)| NodeUsage {
            name: node.name.clone(),
            pid: node.pid,
            cpu_percent: before.zip(cpu_ticks(node.pid)).map(|(a, b)| {
                let used = b.saturating_sub(a) as f64 / ticks;
                (used / seconds.max(1e-9) * 1000.0).round() / 10.0
            }),
            rss_kib: rss_kib(node.pid),
        })
        .collect();
    let report = BenchReport {
        chain_id: file.chain_id.clone(),
        started_unix_ms,
        op: options.op,
        value_bytes: options.value_bytes,
        accounts: ctx.keys.len(),
        nodes: nodes.len(),
        mode: match options.rate {
            BenchRate::Fixed(_) => "fixed".into(),
            BenchRate::Max => "max".into(),
        },
        runs,
        saturation,
        load_points,
        node_usage,
    };
    let stamp = started_unix_ms;
    let json_path = options.dir.join(format!("bench-{stamp}.json"));
    let svg_path = options.dir.join(format!("bench-{stamp}.svg"));
    let json = serde_json::to_string_pretty(&report).map_err(|err| TestnetError::Malformed {
        path: json_path.display().to_string(),
        reason: err.to_string(),
    })?;
    std::fs::write(&json_path, format!("{json}\n"))
        .map_err(|source| TestnetError::io(&json_path, source))?;
    std::fs::write(&svg_path, svg(&report))
        .map_err(|source| TestnetError::io(&svg_path, source))?;
    print!("{}", summary(&report));
    println!(
        "report: {}\nplot:   {}",
        json_path.display(),
        svg_path.display()
    );
    Ok((report, json_path))
}

/// What every run shares.
struct Context {
    chain_id: String,
    nodes: Vec<NodeEntry>,
    keys: Vec<SecretKey>,
    fee: u64,
    op: BenchOp,
    value_bytes: usize,
    stop: Option<Arc<AtomicBool>>,
}

impl Context {
    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|stop| stop.load(Ordering::SeqCst))
    }
}

/// How often a submission that failed in transport is sent again, and how long apart: 20 ×
/// 500 ms covers a node's restart.
const TRANSPORT_RETRIES: usize = 20;
const TRANSPORT_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Wait before the finality follower reconnects to a node that went away.
const FOLLOWER_RECONNECT_DELAY: Duration = Duration::from_millis(300);

/// What the follower saw: the instant each transaction hash became final, and the hashes seen
/// final more than once.
#[derive(Default)]
struct Finality {
    at: HashMap<TxHash, Instant>,
    repeated: HashSet<TxHash>,
}

async fn find_max(
    ctx: &Context,
    duration: Duration,
) -> Result<(Vec<BenchRun>, Option<usize>), TestnetError> {
    let mut runs: Vec<BenchRun> = Vec::new();
    let mut rate = MAX_START_RATE;
    let mut best: Option<usize> = None;
    for _ in 0..MAX_STEPS {
        eprintln!("step: {rate:.0} tx/s for {} s", duration.as_secs());
        let run = run_once(ctx, rate, duration).await?;
        let rejected: u64 = run.rejected.values().sum();
        let too_slow = run.latency_ms.p99 > MAX_P99.as_secs_f64() * 1000.0;
        let too_many_rejected = rejected * 20 > run.submitted;
        let best_tps = best.map_or(0.0, |i| runs[i].finalized_tps);
        let grew = run.finalized_tps > best_tps * 1.05;
        if run.finalized_tps > best_tps {
            best = Some(runs.len());
        }
        runs.push(run);
        if too_slow || too_many_rejected || !grew {
            break;
        }
        rate *= 1.5;
    }
    Ok((runs, best))
}

async fn run_once(ctx: &Context, rate: f64, duration: Duration) -> Result<BenchRun, TestnetError> {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    };
    let mut clients = Vec::with_capacity(ctx.nodes.len());
    for node in &ctx.nodes {
        let client = Client::http(&node.rpc, &config).map_err(|err| rpc_error(node, &err))?;
        clients.push(Arc::new(client));
    }
    // Next nonces, from the first node.
    let mut nonces = Vec::with_capacity(ctx.keys.len());
    for key in &ctx.keys {
        let info = clients[0]
            .account(&key.address(), ReadOptions::default())
            .await
            .map_err(|err| rpc_error(&ctx.nodes[0], &err))?;
        nonces.push(info.nonce);
    }
    // Pre-sign: transaction j is account j mod K's next nonce.
    let count = to_count((rate * duration.as_secs_f64()).ceil()).max(1);
    let accounts = ctx.keys.len() as u64;
    let mut txs: Vec<(usize, SignedTransaction)> = Vec::new();
    for j in 0..count {
        let a = usize::try_from(j % accounts).unwrap_or(0);
        let nonce = nonces[a] + j / accounts;
        let op = match ctx.op {
            BenchOp::Transfer => Op::Transfer {
                to: ctx.keys[(a + 1) % ctx.keys.len()].address(),
                amount: 1,
            },
            BenchOp::Put => Op::Put {
                key: format!("bench/{nonce}").into_bytes(),
                value: filler(ctx.value_bytes, j),
            },
        };
        let tx = Transaction {
            chain_id: ctx.chain_id.clone(),
            sender: ctx.keys[a].address(),
            nonce,
            fee: ctx.fee,
            op,
        }
        .sign(&ctx.keys[a]);
        txs.push((a % ctx.nodes.len(), tx));
    }

    // Follow finality on the first node. The testnet may restart that node mid-run (the
    // `restart-all` scenario runs this load): reconnect and resume from the next height, so
    // blocks finalized meanwhile are replayed rather than missed.
    let ws_url = ctx.nodes[0].rpc.replacen("http://", "ws://", 1);
    let ws = Client::ws(&ws_url, &config)
        .await
        .map_err(|err| rpc_error(&ctx.nodes[0], &err))?;
    let subscription = ws
        .subscribe_blocks(None)
        .await
        .map_err(|err| rpc_error(&ctx.nodes[0], &err))?;
    let finality = Arc::new(Mutex::new(Finality::default()));
    let follower_finality = Arc::clone(&finality);
    let follower = tokio::spawn(async move {
        let mut connection = Some((ws, subscription));
        let mut next_height: Option<u64> = None;
        loop {
            let (ws, mut subscription) = match connection.take() {
                Some(open) => open,
                None => {
                    tokio::time::sleep(FOLLOWER_RECONNECT_DELAY).await;
                    let Ok(ws) = Client::ws(&ws_url, &config).await else {
                        continue;
                    };
                    let Ok(subscription) = ws.subscribe_blocks(next_height).await else {
                        continue;
                    };
                    (ws, subscription)
                }
            };
            while let Some(event) = subscription.next().await {
                let (height, header) = match event {
                    Ok(BlockEvent::Block { height, header, .. }) => (height, header),
                    Ok(BlockEvent::Lagged { resume_from_height }) => {
                        next_height = Some(resume_from_height);
                        break;
                    }
                    // Undecodable: resubscribe from the next height.
                    Err(_) => break,
                };
                next_height = Some(height.saturating_add(1));
                if header.tx_count == 0 {
                    continue;
                }
                let now = Instant::now();
                let Ok(block) = ws.block(BlockRef::Height(height), false).await else {
                    continue;
                };
                let mut seen = follower_finality
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for hash in block.tx_hashes {
                    if seen.at.insert(hash, now).is_some() {
                        seen.repeated.insert(hash);
                    }
                }
            }
        }
    });

    // Submit at the target rate.
    let start = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    let interval = Duration::from_millis(10);
    let mut sent = 0usize;
    let total = txs.len();
    let mut txs = txs.into_iter();
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let mut progress_at = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    while sent < total && !ctx.stopped() {
        let due = usize::try_from(to_count((start.elapsed().as_secs_f64() * rate).ceil()))
            .unwrap_or(usize::MAX)
            .min(total);
        while sent < due {
            // What is due now, per node, in batches of at most SUBMIT_BATCH_MAX: one HTTP
            // request per batch rather than per transaction. Each account's transactions
            // keep their order within a batch, and the node admits a batch's calls in order
            // of arrival at its driver, so nonces still arrive in order at low rates; a
            // nonce gap at most waits in the pool (the future-nonce window).
            let mut batches: BTreeMap<usize, Vec<SignedTransaction>> = BTreeMap::new();
            while sent < due {
                let Some((node, tx)) = txs.next() else {
                    break;
                };
                batches.entry(node).or_default().push(tx);
                sent += 1;
            }
            for (node, pending) in batches {
                for chunk in pending.chunks(SUBMIT_BATCH_MAX) {
                    let Ok(permit) = Arc::clone(&semaphore).acquire_owned().await else {
                        break;
                    };
                    let client = Arc::clone(&clients[node]);
                    let outcomes = Arc::clone(&outcomes);
                    let chunk = chunk.to_vec();
                    tasks.spawn(async move {
                        let results = submit_batch(&client, &chunk).await;
                        drop(permit);
                        outcomes
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .extend(results);
                    });
                }
            }
        }
        if progress_at.elapsed() >= Duration::from_secs(1) {
            progress_at = Instant::now();
            progress(terminal, start, duration, &outcomes, &finality);
        }
        tokio::time::sleep(interval).await;
    }
    while tasks.join_next().await.is_some() {}
    let submit_seconds = start.elapsed().as_secs_f64();

    // Drain: wait until every accepted transaction is final (or the drain times out).
    let accepted: Vec<(TxHash, Instant)> = outcomes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .filter(|o| o.result.is_ok())
        .map(|o| (o.hash, o.at))
        .collect();
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let done = {
            let seen = finality
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            accepted.iter().all(|(hash, _)| seen.at.contains_key(hash))
        };
        if done || Instant::now() >= drain_deadline || follower.is_finished() {
            break;
        }
        if progress_at.elapsed() >= Duration::from_secs(1) {
            progress_at = Instant::now();
            progress(terminal, start, duration, &outcomes, &finality);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    follower.abort();
    if terminal {
        eprintln!();
    }

    let outcomes = std::mem::take(
        &mut *outcomes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    let seen = finality
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Ok(tally(rate, submit_seconds, start, &outcomes, &seen))
}

/// Submits `txs` to one node as one JSON-RPC batch and returns each one's outcome. A batch
/// that failed in transport may or may not have arrived (the node may be restarting): the same
/// bytes are sent again, which the mempool answers with the same hash and never executes
/// twice. Skipping the nonces instead would leave every later transaction of those accounts
/// waiting forever. So are single transactions that failed in transport within a batch.
async fn submit_batch(client: &Client<HttpTransport>, txs: &[SignedTransaction]) -> Vec<Outcome> {
    let at = Instant::now();
    let mut results: Vec<Option<Result<(), String>>> = vec![None; txs.len()];
    for attempt in 0..=TRANSPORT_RETRIES {
        let retry: Vec<usize> = (0..txs.len()).filter(|&i| results[i].is_none()).collect();
        if retry.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(TRANSPORT_RETRY_DELAY).await;
        }
        let batch: Vec<SignedTransaction> = retry.iter().map(|&i| txs[i].clone()).collect();
        let last = attempt == TRANSPORT_RETRIES;
        match client.send_transactions(&batch).await {
            Ok(answers) if answers.len() == retry.len() => {
                for (&i, answer) in retry.iter().zip(answers) {
                    match answer {
                        Err(ClientError::Transport(_)) if !last => {}
                        other => results[i] = Some(other.map(|_| ()).map_err(|err| reason(&err))),
                    }
                }
            }
            Ok(answers) => {
                let why = format!("{} answers to a batch of {}", answers.len(), retry.len());
                for &i in &retry {
                    results[i] = Some(Err(why.clone()));
                }
            }
            Err(ClientError::Transport(_)) if !last => {}
            Err(err) => {
                for &i in &retry {
                    results[i] = Some(Err(reason(&err)));
                }
            }
        }
    }
    txs.iter()
        .zip(results)
        .map(|(tx, result)| Outcome {
            hash: tx.hash(),
            at,
            result: result.unwrap_or_else(|| Err("transport".into())),
        })
        .collect()
}

/// One submission's result: accepted, or refused with a reason.
struct Outcome {
    hash: TxHash,
    at: Instant,
    result: Result<(), String>,
}

fn tally(
    rate: f64,
    submit_seconds: f64,
    start: Instant,
    outcomes: &[Outcome],
    seen: &Finality,
) -> BenchRun {
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    let mut latencies: Vec<f64> = Vec::new();
    let mut per_second: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut accepted_hashes = Vec::new();
    let mut finalized_hashes = Vec::new();
    let mut last_final = start;
    for outcome in outcomes {
        match &outcome.result {
            Err(why) => *rejected.entry(why.clone()).or_default() += 1,
            Ok(()) => {
                accepted_hashes.push(outcome.hash.to_string());
                if let Some(&at) = seen.at.get(&outcome.hash) {
                    finalized_hashes.push(outcome.hash.to_string());
                    let ms = at.saturating_duration_since(outcome.at).as_secs_f64() * 1000.0;
                    latencies.push(ms);
                    let second = at.saturating_duration_since(start).as_secs();
                    per_second.entry(second).or_default().push(ms);
                    last_final = last_final.max(at);
                }
            }
        }
    }
    let finalized = latencies.len() as u64;
    let span = last_final.saturating_duration_since(start).as_secs_f64();
    let last_second = per_second.keys().next_back().copied().unwrap_or(0);
    let seconds = (0..=last_second)
        .map(|second| {
            let mut values = per_second.remove(&second).unwrap_or_default();
            SecondSample {
                second,
                finalized: values.len() as u64,
                p50_ms: percentile(&mut values, 0.50),
            }
        })
        .collect();
    BenchRun {
        target_rate: rate,
        submit_seconds,
        submitted_tps: if submit_seconds > 0.0 {
            outcomes.len() as f64 / submit_seconds
        } else {
            0.0
        },
        submitted: outcomes.len() as u64,
        accepted: accepted_hashes.len() as u64,
        rejected,
        finalized,
        finalized_twice: outcomes
            .iter()
            .filter(|o| o.result.is_ok() && seen.repeated.contains(&o.hash))
            .count() as u64,
        finalized_tps: if span > 0.0 {
            finalized as f64 / span
        } else {
            0.0
        },
        latency_ms: Latency {
            p50: percentile(&mut latencies, 0.50),
            p90: percentile(&mut latencies, 0.90),
            p99: percentile(&mut latencies, 0.99),
        },
        seconds,
        accepted_hashes,
        finalized_hashes,
    }
}

fn progress(
    terminal: bool,
    start: Instant,
    duration: Duration,
    outcomes: &Mutex<Vec<Outcome>>,
    finality: &Mutex<Finality>,
) {
    let (submitted, accepted) = {
        let outcomes = outcomes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let accepted = outcomes.iter().filter(|o| o.result.is_ok()).count();
        (outcomes.len(), accepted)
    };
    let finalized = finality
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .at
        .len();
    let elapsed = start.elapsed().as_secs_f64();
    let line = format!(
        "{} [{elapsed:>5.1}/{} s] submitted {submitted}  accepted {accepted}  final (all senders) {finalized}",
        progress_bar(elapsed / duration.as_secs_f64().max(1e-9)),
        duration.as_secs()
    );
    if terminal {
        eprint!("\r{line}\x1b[K");
    } else {
        eprintln!("{line}");
    }
}

/// A 20-cell bar for `fraction` of the run done (past 1: full; NaN: empty).
fn progress_bar(fraction: f64) -> String {
    const CELLS: u32 = 20;
    // A cell is filled once the run is past its middle.
    let filled = (0..CELLS)
        .filter(|&cell| (f64::from(cell) + 0.5) / f64::from(CELLS) < fraction)
        .count();
    let empty = (0..CELLS).count() - filled;
    format!("[{}{}]", "#".repeat(filled), "-".repeat(empty))
}

/// The API error's name (`NonceTooLow`, …), `rpc_<code>`, or `transport`.
fn reason(err: &ClientError) -> String {
    match err {
        ClientError::Api(api) => {
            let debug = format!("{api:?}");
            debug
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .next()
                .unwrap_or("api")
                .to_owned()
        }
        ClientError::Rpc { code, .. } => format!("rpc_{code}"),
        ClientError::Transport(_) => "transport".into(),
        ClientError::Verify(_) => "verify".into(),
    }
}

fn rpc_error(node: &NodeEntry, err: &ClientError) -> TestnetError {
    TestnetError::Bench(format!("{} at {}: {err}", node.name, node.rpc))
}

/// `q` in 0..=1 of `values` (sorted here), nearest rank; 0 when empty.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = usize::try_from(to_count((q * values.len() as f64).ceil()))
        .unwrap_or(usize::MAX)
        .clamp(1, values.len());
    values[rank - 1]
}

/// A non-negative float as a count: `as` saturates (NaN and negatives give 0, too large gives
/// `u64::MAX`), which is the meaning wanted here.
#[allow(clippy::cast_possible_truncation)]
fn to_count(value: f64) -> u64 {
    value as u64
}

/// Deterministic filler bytes for `put` values.
fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// `account-<i>.json` in index order; the first `limit`.
pub(crate) fn load_keys(dir: &Path, limit: Option<usize>) -> Result<Vec<SecretKey>, TestnetError> {
    let entries = std::fs::read_dir(dir).map_err(|source| TestnetError::io(dir, source))?;
    let mut files: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let index = name.strip_prefix("account-")?.strip_suffix(".json")?;
            Some((index.parse().ok()?, entry.path()))
        })
        .collect();
    files.sort();
    if let Some(limit) = limit {
        if limit == 0 || limit > files.len() {
            return Err(TestnetError::Usage(format!(
                "--accounts {limit}: {} holds {} account key files",
                dir.display(),
                files.len()
            )));
        }
        files.truncate(limit);
    }
    if files.is_empty() {
        return Err(TestnetError::Usage(format!(
            "no account key files (account-<i>.json) in {}",
            dir.display()
        )));
    }
    files.iter().map(|(_, path)| read_key(path)).collect()
}

/// Reads a key file (`{"address","secret"}`, as `meshd keys new` writes it).
pub(crate) fn read_key(path: &Path) -> Result<SecretKey, TestnetError> {
    let text = std::fs::read_to_string(path).map_err(|source| TestnetError::io(path, source))?;
    let malformed = |reason: String| TestnetError::Malformed {
        path: path.display().to_string(),
        reason,
    };
    let file: KeyFile = serde_json::from_str(&text).map_err(|err| malformed(err.to_string()))?;
    let seed: [u8; 32] = parse_hex_fixed(&file.secret).map_err(|err| malformed(err.to_string()))?;
    Ok(SecretKey::from_seed(seed))
}

/// The chain's `fee_min` from a home's genesis.json.
pub(crate) fn fee_min(home: &Path) -> u64 {
    std::fs::read_to_string(home.join("genesis.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|genesis| genesis["params"]["fee_min"].as_u64())
        .unwrap_or(FEE_DEFAULT)
}

/// utime + stime of a process, clock ticks (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of a process, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when unknown).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Accepted transactions the bench never saw final (by the end of its drain window).
pub(crate) fn accepted_never_final(run: &BenchRun) -> u64 {
    run.accepted.saturating_sub(run.finalized)
}

/// The human summary printed at the end.
pub(crate) fn summary(report: &BenchReport) -> String {
    let mut out = format!(
        "\nbench: {} account(s) → {} node(s), op {:?}\n{:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8}\n",
        report.accounts,
        report.nodes,
        report.op,
        "target/s",
        "sent/s",
        "submitted",
        "accepted",
        "rejected",
        "finalized",
        "final tx/s",
        "p50 ms",
        "p90 ms",
        "p99 ms"
    );
    for run in &report.runs {
        let rejected: u64 = run.rejected.values().sum();
        out.push_str(&format!(
            "{:>9.1} {:>8.1} {:>9} {:>9} {:>9} {:>9} {:>10.1} {:>8.0} {:>8.0} {:>8.0}\n",
            run.target_rate,
            run.submitted_tps,
            run.submitted,
            run.accepted,
            rejected,
            run.finalized,
            run.finalized_tps,
            run.latency_ms.p50,
            run.latency_ms.p90,
            run.latency_ms.p99
        ));
        for (why, count) in &run.rejected {
            out.push_str(&format!("    rejected {why}: {count}\n"));
        }
        out.push_str(&format!(
            "    accepted but never final: {}\n",
            accepted_never_final(run)
        ));
        if run.finalized_twice > 0 {
            out.push_str(&format!(
                "    WARNING: {} transaction(s) seen final twice\n",
                run.finalized_twice
            ));
        }
    }
    if let Some(run) = report.saturation.and_then(|i| report.runs.get(i)) {
        out.push_str(&format!(
            "saturation: {:.1} finalized tx/s at a target of {:.1} tx/s (p50 {:.0} ms, p99 {:.0} ms)\n",
            run.finalized_tps, run.target_rate, run.latency_ms.p50, run.latency_ms.p99
        ));
    }
    for point in &report.load_points {
        if let Some(run) = report.runs.get(point.run) {
            out.push_str(&format!(
                "at {:.0} % of that ({:.1} tx/s): {:.1} finalized tx/s, p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms\n",
                point.fraction * 100.0,
                run.target_rate,
                run.finalized_tps,
                run.latency_ms.p50,
                run.latency_ms.p90,
                run.latency_ms.p99
            ));
        }
    }
    for run in &report.runs {
        if run.submitted_tps < run.target_rate * 0.9 {
            out.push_str(&format!(
                "note: at a target of {:.1} tx/s the bench submitted only {:.1} tx/s: the \
                 submitter or the RPC servers, not finality, limited that run\n",
                run.target_rate, run.submitted_tps
            ));
        }
    }
    for usage in &report.node_usage {
        let cpu = usage
            .cpu_percent
            .map_or("-".into(), |cpu| format!("{cpu:.1} %"));
        let rss = usage
            .rss_kib
            .map_or("-".into(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0));
        out.push_str(&format!(
            "{:<8} pid {:>8}  cpu {cpu:>8}  rss {rss:>10}\n",
            usage.name, usage.pid
        ));
    }
    out
}

/// A plot of every run's per-second finalized tx/s (blue, left axis) and p50 latency (orange,
/// right axis), the runs one after another.
pub(crate) fn svg(report: &BenchReport) -> String {
    let samples: Vec<SecondSample> = report
        .runs
        .iter()
        .flat_map(|run| run.seconds.iter().copied())
        .collect();
    let (width, height, margin) = (800.0_f64, 400.0_f64, 50.0_f64);
    let n = samples.len().max(2) as f64;
    let tps_max = samples
        .iter()
        .map(|s| s.finalized as f64)
        .fold(1.0, f64::max);
    let lat_max = samples.iter().map(|s| s.p50_ms).fold(1.0, f64::max);
    let x = |i: usize| margin + (i as f64) * (width - 2.0 * margin) / (n - 1.0);
    let y = |v: f64, max: f64| height - margin - v / max * (height - 2.0 * margin);
    let line = |values: &dyn Fn(&SecondSample) -> f64, max: f64| -> String {
        samples
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{:.1},{:.1}", x(i), y(values(s), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let tps = line(&|s| s.finalized as f64, tps_max);
    let lat = line(&|s| s.p50_ms, lat_max);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{margin}" y="20">meshd testnet bench ({chain}): finalized tx/s (blue, max {tps_max:.0}) and p50 latency ms (orange, max {lat_max:.0}) per second</text>
<line x1="{margin}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>
<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{bottom}" stroke="black"/>
<line x1="{right}" y1="{margin}" x2="{right}" y2="{bottom}" stroke="black"/>
<text x="{margin}" y="{label}">0 s</text>
<text x="{right}" y="{label}" text-anchor="end">{seconds} s</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{tps}"/>
<polyline fill="none" stroke="#ff7f0e" stroke-width="2" points="{lat}"/>
</svg>
"##,
        chain = report.chain_id,
        bottom = height - margin,
        right = width - margin,
        label = height - margin + 18.0,
        seconds = samples.len(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!("max".parse::<BenchRate>(), Ok(BenchRate::Max));
        assert_eq!("50".parse::<BenchRate>(), Ok(BenchRate::Fixed(50.0)));
        assert_eq!("2.5".parse::<BenchRate>(), Ok(BenchRate::Fixed(2.5)));
        for bad in ["0", "-1", "x", "inf", "NaN"] {
            assert!(bad.parse::<BenchRate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut values, 0.50), 50.0);
        assert_eq!(percentile(&mut values, 0.90), 90.0);
        assert_eq!(percentile(&mut values, 0.99), 99.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        assert_eq!(percentile(&mut [7.0], 0.99), 7.0);
    }

    #[test]
    fn tally_counts_outcomes_latency_and_seconds() {
        let start = Instant::now();
        let hash = |i: u8| TxHash::of(&[i]);
        let outcomes = vec![
            Outcome {
                hash: hash(1),
                at: start,
                result: Ok(()),
            },
            Outcome {
                hash: hash(2),
                at: start,
                result: Ok(()),
            },
            Outcome {
                hash: hash(3),
                at: start,
                result: Err("NonceTooLow".into()),
            },
        ];
        let mut seen = Finality::default();
        seen.at.insert(hash(1), start + Duration::from_millis(1500));
        let run = tally(10.0, 1.0, start, &outcomes, &seen);
        assert_eq!((run.submitted, run.accepted, run.finalized), (3, 2, 1));
        assert_eq!(run.rejected.get("NonceTooLow"), Some(&1));
        assert_eq!(run.latency_ms.p50, 1500.0);
        assert_eq!(run.seconds.len(), 2);
        assert_eq!(run.seconds[1].finalized, 1);
        assert_eq!(run.accepted_hashes.len(), 2);
        assert!((run.finalized_tps - 1.0 / 1.5).abs() < 1e-9);
    }

    #[test]
    fn keys_load_in_index_order_and_proc_figures_read() {
        let dir = tempfile::tempdir().unwrap();
        for i in [10u8, 2, 1] {
            let key = SecretKey::from_seed([i; 32]);
            let json = serde_json::json!({
                "address": key.address(),
                "secret": mesh_ledger::bytes::to_hex(&key.seed()),
            });
            std::fs::write(
                dir.path().join(format!("account-{i}.json")),
                json.to_string(),
            )
            .unwrap();
        }
        let keys = load_keys(dir.path(), None).unwrap();
        let seeds: Vec<u8> = keys.iter().map(|k| k.seed()[0]).collect();
        assert_eq!(seeds, vec![1, 2, 10]);
        assert_eq!(load_keys(dir.path(), Some(2)).unwrap().len(), 2);
        assert!(load_keys(dir.path(), Some(4)).is_err());
        if Path::new("/proc/self").exists() {
            assert!(cpu_ticks(std::process::id()).is_some());
            assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
        }
    }

    #[test]
    fn the_progress_bar_fills_with_the_run() {
        assert_eq!(progress_bar(0.0), format!("[{}]", "-".repeat(20)));
        assert_eq!(
            progress_bar(0.5),
            format!("[{}{}]", "#".repeat(10), "-".repeat(10))
        );
        assert_eq!(progress_bar(1.0), format!("[{}]", "#".repeat(20)));
        // Draining past the submission time, or nonsense, stays within the bar.
        assert_eq!(progress_bar(3.0), progress_bar(1.0));
        assert_eq!(progress_bar(f64::NAN).len(), 22);
    }

    #[test]
    fn the_summary_names_the_saturation_point_and_the_load_points() {
        let run = |target: f64, finalized_tps: f64, p99: f64| {
            let mut run = tally(target, 1.0, Instant::now(), &[], &Finality::default());
            run.finalized_tps = finalized_tps;
            run.submitted_tps = target;
            run.latency_ms = Latency {
                p50: p99 / 2.0,
                p90: p99 * 0.9,
                p99,
            };
            run
        };
        let report = BenchReport {
            chain_id: "c".into(),
            started_unix_ms: 0,
            op: BenchOp::Transfer,
            value_bytes: 0,
            accounts: 4,
            nodes: 4,
            mode: "max".into(),
            runs: vec![
                run(50.0, 50.0, 200.0),
                run(75.0, 70.0, 900.0),
                run(35.0, 35.0, 150.0),
                run(56.0, 56.0, 300.0),
            ],
            saturation: Some(1),
            load_points: vec![
                LoadPoint {
                    fraction: 0.5,
                    run: 2,
                },
                LoadPoint {
                    fraction: 0.8,
                    run: 3,
                },
            ],
            node_usage: vec![],
        };
        let text = summary(&report);
        assert!(
            text.contains("saturation: 70.0 finalized tx/s at a target of 75.0 tx/s"),
            "{text}"
        );
        assert!(
            text.contains("at 50 % of that (35.0 tx/s): 35.0 finalized tx/s, p50 75 ms, p90 135 ms, p99 150 ms"),
            "{text}"
        );
        assert!(text.contains("at 80 % of that (56.0 tx/s)"), "{text}");
        let json = serde_json::to_string(&report).unwrap();
        let back: BenchReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back.load_points, report.load_points);
    }

    #[test]
    fn the_plot_is_an_svg_with_two_lines() {
        let report = BenchReport {
            chain_id: "c".into(),
            started_unix_ms: 0,
            op: BenchOp::Transfer,
            value_bytes: 0,
            accounts: 1,
            nodes: 1,
            mode: "fixed".into(),
            runs: vec![],
            saturation: None,
            load_points: vec![],
            node_usage: vec![],
        };
        let text = svg(&report);
        assert!(text.starts_with("<svg"));
        assert_eq!(text.matches("<polyline").count(), 2);
        assert!(summary(&report).contains("bench:"));
    }
}
