//! `meshd testnet scenario NAME`: the faults a mesh must survive, run against a running testnet,
//! each followed by checks of named invariants ([`Invariant`]).
//!
//! | scenario | what happens | invariants checked |
//! |---|---|---|
//! | `transfer` | a transfer submitted at node 0 | visibility (final, then read at the last validator with a proof verified against the certificate), state agreement |
//! | `crash-restart` | under load, SIGKILL the last validator; later restart it | liveness (no stall over 20 s without it; it reaches the others' height + 5), agreement, state agreement, no equivocation, durability |
//! | `partition` | split the validators in two halves, then heal | no finality without quorum, liveness (resumes within 20 s of heal), agreement |
//! | `pause` | SIGSTOP a validator for 10 s, then SIGCONT | liveness (the rest go on; it catches up), agreement, no equivocation |
//! | `join` | a new full node joins once the chain is 100 blocks long | liveness (it syncs), agreement, state agreement (same state root) |
//! | `restart-all` | under load, every node stopped at once — first all by SIGKILL, then all by SIGTERM — and started again | liveness (finality resumes within 20 s of the last start; every node catches up), agreement, state agreement, no equivocation, durability |
//! | `reconfigure` | under load, three new nodes join the validator set one at a time (4 → 7), then three of the original validators leave it one at a time (7 → 4), each change by transaction at an epoch boundary | liveness (no stall over 20 s on node 0 throughout), agreement, state agreement, durability |
//! | `all` | all of the above in that order, under one load | each of the above, then durability of every transaction the load saw final, on every node |
//!
//! Load comes from the bench (`bench.rs`) at a fixed rate, submitted to nodes 0 and 1 only (the
//! nodes the scenarios never stop), from every development account but the last, which the
//! `transfer` scenario uses. The first failed check ends the scenario with
//! [`TestnetError::Violated`]; faults already injected are undone first (heal, resume), so the
//! network is left running.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mesh_ledger::{Address, Op, ReceiptStatus, SecretKey, Transaction, TxHash};
use serde::Serialize;

use crate::bench::{self, BenchOp, BenchOptions, BenchRate, BenchReport, BenchRun};
use crate::invariants::{client, rpc_failed, Invariant, Passed, Probe};
use crate::metrics::scrape_metrics;
use crate::state::TestnetFile;
use crate::{faults, membership, process, TestnetError};

/// The bound on a stall while one validator is down, and on finality resuming after
/// `heal`.
pub const STALL_MAX: Duration = Duration::from_secs(20);
/// How long the survivors are watched while a validator is down or paused.
pub const FAULT_WINDOW: Duration = Duration::from_secs(10);
/// How long a validator stays paused.
pub const PAUSE_FOR: Duration = Duration::from_secs(10);
/// Height the chain must reach before the `join` scenario adds a full node.
pub const JOIN_AFTER: u64 = 100;
/// A restarted or resumed node must reach the others' height plus this many blocks.
pub const CATCH_UP_BLOCKS: u64 = 5;
/// Longest a scenario's load runs (its transactions are signed up front).
pub const LOAD_SECONDS_MAX: u64 = 300;
/// Default rate of the scenario load, tx/s.
pub const DEFAULT_LOAD_RATE: u32 = 40;
/// Upper bound on any single wait for catch-up or sync.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(90);
/// How long the load gets to show up in finalized transactions.
const LOAD_START_LIMIT: Duration = Duration::from_secs(60);
/// Validators `reconfigure` adds, then removes (4 → 7 → 4 on the usual testnet).
pub(crate) const RECONFIGURE_CHANGES: usize = 3;
/// Amount of the scenario transfer.
const TRANSFER_AMOUNT: u64 = 7;

/// Which scenario to run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A transfer at node 0, read with a verified proof at the last validator.
    Transfer,
    /// Under load, SIGKILL the last validator, then restart it.
    CrashRestart,
    /// Split the validators in two halves (no quorum on either side), then heal.
    Partition,
    /// Pause a validator for 10 s, then resume it.
    Pause,
    /// Add a full node once the chain is 100 blocks long; it must sync to the same state.
    Join,
    /// Under load, stop every node at once (SIGKILL, then SIGTERM) and start them again.
    RestartAll,
    /// Under load, grow the validator set by three, one at a time, then let three of the
    /// original validators leave. Changes the set for good: run it last.
    Reconfigure,
    /// Every scenario above under one load, then durability on every node.
    All,
}

/// What `scenario` runs.
#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    /// The testnet directory (the network must be running).
    pub dir: PathBuf,
    /// The scenario.
    pub scenario: Scenario,
    /// Rate of the background load, tx/s.
    pub load_rate: f64,
}

/// The outcome of a scenario that passed.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The scenario.
    pub scenario: Scenario,
    /// Every check that held, in order.
    pub passed: Vec<Passed>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// The background load's figures, when the scenario ran one.
    pub load: Option<BenchRun>,
}

/// Runs a scenario against the running testnet in `options.dir`, starting nodes (restart,
/// join) with `meshd`.
pub fn scenario(meshd: &Path, options: &ScenarioOptions) -> Result<ScenarioReport, TestnetError> {
    if !(options.load_rate.is_finite() && options.load_rate > 0.0 && options.load_rate <= 10_000.0)
    {
        return Err(TestnetError::Usage(
            "--load-rate must be above 0 and at most 10000 tx/s".into(),
        ));
    }
    let started = Instant::now();
    let run = Run::new(meshd, options)?;
    let mut passed = Vec::new();
    let load = match options.scenario {
        Scenario::Transfer => run.transfer(&mut passed).map(|()| None)?,
        Scenario::CrashRestart => Some(run.with_load(&mut passed, Run::crash_restart)?),
        Scenario::Partition => run.partition(&mut passed).map(|()| None)?,
        Scenario::Pause => run.pause(&mut passed).map(|()| None)?,
        Scenario::Join => run.join(&mut passed).map(|()| None)?,
        Scenario::RestartAll => Some(run.with_load(&mut passed, Run::restart_all)?),
        Scenario::Reconfigure => Some(run.with_load(&mut passed, Run::reconfigure)?),
        Scenario::All => Some(run.with_load(&mut passed, Run::every_scenario)?),
    };
    let report = ScenarioReport {
        scenario: options.scenario,
        passed,
        seconds: started.elapsed().as_secs_f64(),
        load,
    };
    println!(
        "scenario {} passed: {} check(s) in {:.0} s",
        options.scenario,
        report.passed.len(),
        report.seconds
    );
    Ok(report)
}

impl std::fmt::Display for Scenario {
    /// The name on the command line (clap's, so the two never differ).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum as _;
        match self.to_possible_value() {
            Some(value) => f.write_str(value.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
}

/// The network a scenario runs on, and who plays which part.
struct Run {
    meshd: PathBuf,
    dir: PathBuf,
    probe: Probe,
    load_rate: f64,
    validators: Vec<usize>,
    /// Submits the load and is never stopped: nodes 0 and 1.
    load_nodes: Vec<usize>,
    /// Killed and restarted: the last validator.
    crash_victim: usize,
    /// Paused and resumed: the validator before it.
    pause_victim: usize,
    /// Sends the transfer and is read from by the load's finality follower.
    transfer_key: SecretKey,
    /// The load's accounts: every development account but the last.
    load_accounts: usize,
    watched_accounts: Vec<Address>,
}

impl Run {
    fn new(meshd: &Path, options: &ScenarioOptions) -> Result<Run, TestnetError> {
        let dir = crate::setup::absolute(&options.dir)?;
        let file = TestnetFile::load(&dir)?;
        let validators: Vec<usize> = (0..file.nodes.len())
            .filter(|&i| file.nodes[i].validator)
            .collect();
        if validators.len() < 4 || validators != (0..validators.len()).collect::<Vec<_>>() {
            return Err(TestnetError::Usage(format!(
                "scenarios need a testnet of at least 4 validators, listed first (one may fail of 3f+1); {} has {}",
                dir.display(),
                validators.len()
            )));
        }
        if let Some(node) = file.nodes.iter().find(|node| !process::node_alive(node)) {
            return Err(TestnetError::NotRunning {
                name: node.name.clone(),
            });
        }
        let keys = bench::load_keys(&file.accounts_dir, None)?;
        if keys.len() < 2 {
            return Err(TestnetError::Usage(format!(
                "scenarios need at least 2 development accounts in {}",
                file.accounts_dir.display()
            )));
        }
        let watched_accounts: Vec<Address> = keys.iter().take(8).map(SecretKey::address).collect();
        let load_accounts = keys.len() - 1;
        let transfer_key = keys
            .into_iter()
            .last()
            .ok_or_else(|| TestnetError::Usage("no development account".into()))?;
        let count = validators.len();
        Ok(Run {
            meshd: meshd.to_path_buf(),
            probe: Probe::new(&dir)?,
            dir,
            load_rate: options.load_rate,
            load_nodes: vec![0, 1],
            crash_victim: count - 1,
            pause_victim: count - 2,
            validators,
            transfer_key,
            load_accounts,
            watched_accounts,
        })
    }

    fn file(&self) -> Result<TestnetFile, TestnetError> {
        self.probe.file()
    }

    fn all_nodes(&self) -> Result<Vec<usize>, TestnetError> {
        Ok((0..self.file()?.nodes.len()).collect())
    }

    /// `all`: every scenario, in the order of the issue (run under one load by the caller).
    fn every_scenario(&self, passed: &mut Vec<Passed>) -> Result<(), TestnetError> {
        self.transfer(passed)?;
        self.crash_restart(passed)?;
        self.partition(passed)?;
        self.pause(passed)?;
        self.join(passed)?;
        self.restart_all(passed)?;
        // Last: afterwards the set is no longer the validators testnet.json lists first.
        self.reconfigure(passed)
    }

    /// Runs `body` under the background load, then stops the load, waits for its last
    /// transactions and checks durability of every one it saw final, on every node.
    fn with_load(
        &self,
        passed: &mut Vec<Passed>,
        body: impl FnOnce(&Run, &mut Vec<Passed>) -> Result<(), TestnetError>,
    ) -> Result<BenchRun, TestnetError> {
        let load = Load::start(self)?;
        let outcome = load.wait_flowing(self).and_then(|()| body(self, passed));
        let run = load.finish();
        outcome?;
        let run = run?;
        println!(
            "load: {} submitted, {} accepted, {} final ({:.1} final tx/s, p99 {:.0} ms)",
            run.submitted, run.accepted, run.finalized, run.finalized_tps, run.latency_ms.p99
        );
        if run.finalized == 0 {
            return Err(Invariant::Liveness.violated(format!(
                "none of the load's {} accepted transactions became final",
                run.accepted
            )));
        }
        let hashes = parse_hashes(&run.finalized_hashes)?;
        let file = self.file()?;
        let nodes = self.all_nodes()?;
        // Every node must first have the blocks node 0 had when the load ended.
        let top = self.probe.top(&file, &[0]);
        self.probe.wait_heights(
            &file,
            &nodes,
            top,
            CATCH_UP_LIMIT,
            "every node reaches node 0's height",
        )?;
        passed.push(self.probe.durability(&file, &nodes, &hashes)?);
        passed.push(self.probe.no_equivocation(&file, &nodes)?);
        Ok(run)
    }

    /// Scenario 1: a transfer submitted at node 0 is final, and visible at the last validator
    /// with a proof the client verifies against the certificate.
    fn transfer(&self, passed: &mut Vec<Passed>) -> Result<(), TestnetError> {
        println!(
            "scenario transfer: a transfer at node 0, read at node {}",
            self.crash_victim
        );
        let file = self.file()?;
        let sender = &self.transfer_key;
        let recipient = SecretKey::from_seed(random_seed()).address();
        let submitter = file.node(0)?;
        let reader = file.node(self.crash_victim)?;
        let mut anchor = self.probe.anchor().clone();
        let chain_id = file.chain_id.clone();
        let fee = bench::fee_min(&submitter.home);
        let (receipt, info) = self.probe.block_on(async {
            let at_submitter = client(submitter)?;
            let nonce = at_submitter
                .account(&sender.address(), mesh_rpc::types::ReadOptions::default())
                .await
                .map_err(|err| rpc_failed(submitter, "sender account", &err))?
                .nonce;
            let tx = Transaction {
                chain_id,
                sender: sender.address(),
                nonce,
                fee,
                op: Op::Transfer {
                    to: recipient,
                    amount: TRANSFER_AMOUNT,
                },
            }
            .sign(sender);
            let receipt = at_submitter
                .send_transaction_and_wait(&tx, 30_000)
                .await
                .map_err(|err| {
                    Invariant::Visibility.violated(format!(
                        "the transfer submitted at {} did not become final: {err}",
                        submitter.name
                    ))
                })?;
            let at_reader = client(reader)?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let status = at_reader
                    .status()
                    .await
                    .map_err(|err| rpc_failed(reader, "status", &err))?;
                if status.finalized_height >= receipt.height {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Invariant::Visibility.violated(format!(
                        "{} is still at height {} 30 s after the transfer became final at height {}",
                        reader.name, status.finalized_height, receipt.height
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let info = at_reader
                .verified_account(&mut anchor, &recipient, None)
                .await
                .map_err(|err| {
                    Invariant::Visibility.violated(format!(
                        "{} did not answer for the recipient with a proof that verifies: {err}",
                        reader.name
                    ))
                })?;
            Ok::<_, TestnetError>((receipt, info))
        })?;
        if receipt.status != ReceiptStatus::Success {
            return Err(Invariant::Visibility
                .violated(format!("the transfer failed: {:?}", receipt.status)));
        }
        if !info.exists || info.balance != TRANSFER_AMOUNT {
            return Err(Invariant::Visibility.violated(format!(
                "{} serves the recipient {recipient} with balance {} (exists: {}) at height {}, not {TRANSFER_AMOUNT}",
                reader.name, info.balance, info.exists, info.height
            )));
        }
        passed.push(Invariant::Visibility.passed(format!(
            "transfer {} final at height {} via {}; {} serves the recipient's balance {} at height {}, proof verified against the certificate",
            receipt.tx_hash, receipt.height, submitter.name, reader.name, info.balance, info.height
        )));
        let mut accounts = self.watched_accounts.clone();
        accounts.push(recipient);
        accounts.push(sender.address());
        passed.push(
            self.probe
                .state_agreement(&file, &self.validators, info.height, &accounts)?,
        );
        Ok(())
    }

    /// Scenario 2: SIGKILL the last validator; the rest keep finalizing; restarted, it catches
    /// up with the same chain.
    fn crash_restart(&self, passed: &mut Vec<Passed>) -> Result<(), TestnetError> {
        let victim = self.crash_victim;
        println!("scenario crash-restart: SIGKILL node {victim}, restart it");
        let node = self.file()?.node(victim)?.clone();
        let target = self.one_validator_out(
            passed,
            victim,
            FAULT_WINDOW,
            || process::kill_node(&node),
            || crate::restart(&self.meshd, &self.dir, victim),
            "restarted",
        )?;
        // From genesis: the restarted node's whole chain, and its state at the end.
        self.one_chain_up_to(passed, target, &self.validators)
    }

    /// Scenario 6: every node stopped at once — all by SIGKILL, then all by SIGTERM — and
    /// started again; finality must resume within [`STALL_MAX`] of the last start (a network
    /// that cannot restart as a whole is issue 20's failure), then every node catches up on
    /// one chain and one state.
    fn restart_all(&self, passed: &mut Vec<Passed>) -> Result<(), TestnetError> {
        println!("scenario restart-all: stop every node at once (SIGKILL, then SIGTERM), start them again");
        let nodes = self.all_nodes()?;
        let mut target = 0;
        for how in ["SIGKILL", "SIGTERM"] {
            let file = self.file()?;
            let before = self.probe.top(&file, &nodes);
            if how == "SIGKILL" {
                for node in &file.nodes {
                    process::kill_node(node)?;
                }
            } else {
                process::stop_nodes(&file.nodes)?;
            }
            // Started in reverse order, so the node the load submits to comes back last.
            for index in nodes.iter().rev() {
                crate::restart(&self.meshd, &self.dir, *index)?;
            }
            let file = self.file()?;
            let started = Instant::now();
            loop {
                let top = self.probe.top(&file, &nodes);
                if top > before {
                    passed.push(Invariant::Liveness.passed(format!(
                        "after {how} to all {} nodes at height {before}, finality resumed {:.1} s after the last start (height {top})",
                        nodes.len(),
                        started.elapsed().as_secs_f64()
                    )));
                    target = top;
                    break;
                }
                if started.elapsed() >= STALL_MAX {
                    let heights = self.probe.heights(&file, &nodes);
                    return Err(Invariant::Liveness.violated(format!(
                        "after {how} to all nodes at height {before}, nothing new was finalized within {} s of the last start; heights: {heights:?}",
                        STALL_MAX.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let took = self.probe.wait_heights(
                &file,
                &nodes,
                target,
                CATCH_UP_LIMIT,
                &format!("every node catches up after {how} to all"),
            )?;
            passed.push(Invariant::Liveness.passed(format!(
                "every node reached height {target} {:.1} s later",
                took.as_secs_f64()
            )));
        }
        self.one_chain_up_to(passed, target, &nodes)
    }

    /// After nodes came back: the validators agree on every block from height 1 to `target`
    /// and on the state there, and none of `watched` signed conflicting votes.
    fn one_chain_up_to(
        &self,
        passed: &mut Vec<Passed>,
        target: u64,
        watched: &[usize],
    ) -> Result<(), TestnetError> {
        let file = self.file()?;
        passed.push(self.probe.agreement(&file, &self.validators, 1, target)?);
        passed.push(self.probe.state_agreement(
            &file,
            &self.validators,
            target,
            &self.watched_accounts,
        )?);
        passed.push(self.probe.no_equivocation(&file, watched)?);
        Ok(())
    }

    /// Takes validator `victim` out with `fault`, checks that the others keep finalizing for
    /// `window` (it must answer nothing meanwhile), brings it back with `recover`, and waits
    /// until it reaches the others' height + [`CATCH_UP_BLOCKS`]; returns that height.
    fn one_validator_out(
        &self,
        passed: &mut Vec<Passed>,
        victim: usize,
        window: Duration,
        fault: impl FnOnce() -> Result<(), TestnetError>,
        recover: impl FnOnce() -> Result<(), TestnetError>,
        recovered: &str,
    ) -> Result<u64, TestnetError> {
        fault()?;
        let file = self.file()?;
        let others: Vec<usize> = self
            .validators
            .iter()
            .copied()
            .filter(|&i| i != victim)
            .collect();
        let watched = self
            .probe
            .keeps_finalizing(&file, &others, window, 3, STALL_MAX);
        let silent = scrape_metrics(&file.node(victim)?.metrics).is_none();
        // Undo the fault before reporting a violation: the network is left running.
        recover()?;
        passed.push(watched?);
        if !silent {
            return Err(TestnetError::Usage(format!(
                "node {victim} still answered while it was out: the fault did not take effect"
            )));
        }
        let file = self.file()?;
        let target = self.probe.top(&file, &others) + CATCH_UP_BLOCKS;
        let took = self.probe.wait_heights(
            &file,
            &[victim],
            target,
            CATCH_UP_LIMIT,
            &format!("the {recovered} validator catches up"),
        )?;
        passed.push(Invariant::Liveness.passed(format!(
            "{recovered} node {victim} reached height {target} (the others' + {CATCH_UP_BLOCKS}) {:.1} s later",
            took.as_secs_f64()
        )));
        Ok(target)
    }

    /// Scenario 3: two halves without a quorum finalize nothing; after heal, finality resumes
    /// within [`STALL_MAX`].
    fn partition(&self, passed: &mut Vec<Passed>) -> Result<(), TestnetError> {
        let half = self.validators.len() / 2;
        let groups = format!(
            "{}/{}",
            join_indexes(&self.validators[..half]),
            join_indexes(&self.validators[half..])
        );
        println!("scenario partition: --groups {groups}, then heal");
        faults::partition(&self.dir, &groups)?;
        let file = self.file()?;
        // A certificate already on its way may still land; after that, nothing.
        std::thread::sleep(Duration::from_secs(3));
        let frozen = self
            .probe
            .frozen(&file, &self.validators, Duration::from_secs(5));
        faults::heal(&self.dir)?;
        passed.push(frozen?);
        let top = self.probe.top(&file, &self.validators);
        let took = self.probe.wait_heights(
            &file,
            &self.validators,
            top + 2,
            STALL_MAX,
            "finality resumes after heal",
        )?;
        passed.push(Invariant::Liveness.passed(format!(
            "every validator finalized height {} {:.1} s after heal (bound {} s)",
            top + 2,
            took.as_secs_f64(),
            STALL_MAX.as_secs()
        )));
        passed.push(self.probe.agreement(
            &file,
            &self.validators,
            top.saturating_sub(5).max(1),
            top + 2,
        )?);
        Ok(())
    }

    /// Scenario 4: a validator paused for [`PAUSE_FOR`] does not hold the rest up and catches
    /// up after resume, without equivocating.
    fn pause(&self, passed: &mut Vec<Passed>) -> Result<(), TestnetError> {
        let victim = self.pause_victim;
        println!(
            "scenario pause: SIGSTOP node {victim} for {} s, then SIGCONT",
            PAUSE_FOR.as_secs()
        );
        let target = self.one_validator_out(
            passed,
            victim,
            PAUSE_FOR,
            || faults::pause(&self.dir, victim),
            || faults::resume(&self.dir, victim),
            "resumed",
        )?;
        let file = self.file()?;
        passed.push(self.probe.agreement(
            &file,
            &self.validators,
            target.saturating_sub(30).max(1),
            target,
        )?);
        passed.push(self.probe.no_equivocation(&file, &self.validators)?);
        Ok(())
    }

    /// Scenario 5: once the chain is [`JOIN_AFTER`] blocks long, a new full node joins and syncs
    /// to the same blocks and state.
    fn join(&self, passed: &mut Vec<Passed>) -> Result<(), TestnetError> {
        println!("scenario join: a full node joins after height {JOIN_AFTER}");
        let file = self.file()?;
        let limit = Duration::from_secs(JOIN_AFTER).max(Duration::from_secs(60)) * 2;
        self.probe.wait_heights(
            &file,
            &[0],
            JOIN_AFTER,
            limit,
            "the chain grows to the join height",
        )?;
        let index = crate::join(&self.meshd, &self.dir, None)?;
        let file = self.file()?;
        let target = self.probe.top(&file, &self.validators);
        let took = self.probe.wait_heights(
            &file,
            &[index],
            target,
            CATCH_UP_LIMIT,
            "the joined full node syncs",
        )?;
        passed.push(Invariant::Liveness.passed(format!(
            "full node {index} joined at height {target} and synced it in {:.1} s",
            took.as_secs_f64()
        )));
        let mut nodes = self.validators.clone();
        nodes.push(index);
        passed.push(self.probe.agreement(&file, &nodes, 1, target)?);
        passed.push(
            self.probe
                .state_agreement(&file, &nodes, target, &self.watched_accounts)?,
        );
        Ok(())
    }
}

impl Run {
    /// Scenario `reconfigure`: validators join and leave by transaction while the load runs;
    /// node 0 (which leaves the set but keeps running) must never stand still for longer than
    /// [`STALL_MAX`], and every node, old and new, must agree on the chain and the state.
    fn reconfigure(&self, passed: &mut Vec<Passed>) -> Result<(), TestnetError> {
        let before = self.validators.len();
        if before < RECONFIGURE_CHANGES + 1 {
            return Err(TestnetError::Usage(format!(
                "reconfigure needs at least {} validators",
                RECONFIGURE_CHANGES + 1
            )));
        }
        println!(
            "scenario reconfigure: {before} → {} → {before} validators, one change at a time",
            before + RECONFIGURE_CHANGES
        );
        let watch = StallWatch::start(self.file()?.node(0)?.metrics.clone());
        let started = Instant::now();
        let outcome = (|| {
            for _ in 0..RECONFIGURE_CHANGES {
                let key = SecretKey::from_seed(random_seed());
                let index = crate::join(&self.meshd, &self.dir, Some(&key))?;
                membership::become_validator(
                    &self.dir,
                    index,
                    &key,
                    None,
                    Some(&self.transfer_key),
                )?;
            }
            for &index in &self.validators[..RECONFIGURE_CHANGES] {
                membership::leave(&self.dir, index, Some(&self.transfer_key))?;
            }
            Ok(())
        })();
        let longest = watch.stop();
        outcome?;
        if longest > STALL_MAX {
            return Err(Invariant::Liveness.violated(format!(
                "node 0 finalized nothing for {:.1} s while the set changed (bound {} s)",
                longest.as_secs_f64(),
                STALL_MAX.as_secs()
            )));
        }
        passed.push(Invariant::Liveness.passed(format!(
            "{} set changes in {:.0} s, longest stall {:.1} s (bound {} s)",
            2 * RECONFIGURE_CHANGES,
            started.elapsed().as_secs_f64(),
            longest.as_secs_f64(),
            STALL_MAX.as_secs()
        )));
        let file = self.file()?;
        let nodes = self.all_nodes()?;
        let target = self.probe.top(&file, &[0]);
        self.probe.wait_heights(
            &file,
            &nodes,
            target,
            CATCH_UP_LIMIT,
            "every node reaches node 0's height after the set changes",
        )?;
        passed.push(self.probe.agreement(&file, &nodes, 1, target)?);
        passed.push(
            self.probe
                .state_agreement(&file, &nodes, target, &self.watched_accounts)?,
        );
        Ok(())
    }
}

/// The longest time a node's finalized height stood still, watched from its own thread.
struct StallWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Duration>,
}

impl StallWatch {
    fn start(metrics: String) -> StallWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut best = 0;
            let mut since = Instant::now();
            let mut longest = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                if let Some(now) = scrape_metrics(&metrics).map(|m| m.finalized_height) {
                    if now > best {
                        best = now;
                        since = Instant::now();
                    }
                }
                longest = longest.max(since.elapsed());
                std::thread::sleep(Duration::from_millis(100));
            }
            longest
        });
        StallWatch { stop, thread }
    }

    /// Stops watching; the longest stall seen.
    fn stop(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(Duration::MAX)
    }
}

/// The background load: a fixed-rate bench on its own thread, stopped by a flag.
struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(BenchReport, PathBuf), TestnetError>>,
}

impl Load {
    fn start(run: &Run) -> Result<Load, TestnetError> {
        println!(
            "load: {} tx/s of transfers from {} account(s) to nodes {:?}",
            run.load_rate, run.load_accounts, run.load_nodes
        );
        let stop = Arc::new(AtomicBool::new(false));
        let options = BenchOptions {
            dir: run.dir.clone(),
            rate: BenchRate::Fixed(run.load_rate),
            duration: Duration::from_secs(LOAD_SECONDS_MAX),
            accounts: Some(run.load_accounts),
            op: BenchOp::Transfer,
            value_bytes: 0,
            nodes: Some(run.load_nodes.clone()),
            stop: Some(Arc::clone(&stop)),
        };
        let thread = std::thread::Builder::new()
            .name("scenario-load".into())
            .spawn(move || bench::bench(&options))
            .map_err(|err| TestnetError::Bench(format!("cannot start the load thread: {err}")))?;
        Ok(Load { stop, thread })
    }

    /// Waits until node 0 counts more finalized transactions than before: the load is real.
    fn wait_flowing(&self, run: &Run) -> Result<(), TestnetError> {
        let file = run.file()?;
        let node = file.node(0)?;
        let before = scrape_metrics(&node.metrics).map_or(0, |m| m.txs_finalized);
        let deadline = Instant::now() + LOAD_START_LIMIT;
        while Instant::now() < deadline {
            if self.thread.is_finished() {
                return Err(TestnetError::Bench("the load ended before it began".into()));
            }
            let now = scrape_metrics(&node.metrics).map_or(0, |m| m.txs_finalized);
            if now > before + 10 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(Invariant::Liveness.violated(format!(
            "the load's transactions did not become final at {} within {} s",
            node.name,
            LOAD_START_LIMIT.as_secs()
        )))
    }

    fn finish(self) -> Result<BenchRun, TestnetError> {
        self.stop.store(true, Ordering::SeqCst);
        let (report, _) = self
            .thread
            .join()
            .map_err(|_| TestnetError::Bench("the load thread panicked".into()))??;
        report
            .runs
            .into_iter()
            .next()
            .ok_or_else(|| TestnetError::Bench("the load reported no run".into()))
    }
}

fn parse_hashes(hashes: &[String]) -> Result<Vec<TxHash>, TestnetError> {
    hashes
        .iter()
        .map(|hash| {
            hash.parse::<TxHash>()
                .map_err(|err| TestnetError::Bench(format!("bench report hash {hash}: {err}")))
        })
        .collect()
}

fn join_indexes(indexes: &[usize]) -> String {
    indexes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn random_seed() -> [u8; 32] {
    use rand::RngCore as _;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    seed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn groups_split_the_validators_in_halves() {
        assert_eq!(join_indexes(&[0, 1]), "0,1");
        assert_eq!(join_indexes(&[]), "");
        let validators = [0, 1, 2, 3, 4];
        let half = validators.len() / 2;
        assert_eq!(
            format!(
                "{}/{}",
                join_indexes(&validators[..half]),
                join_indexes(&validators[half..])
            ),
            "0,1/2,3,4"
        );
    }

    #[test]
    fn scenarios_are_named_as_on_the_command_line_and_in_reports() {
        assert_eq!(Scenario::CrashRestart.to_string(), "crash-restart");
        assert_eq!(Scenario::All.to_string(), "all");
        assert_eq!(
            serde_json::to_string(&Scenario::CrashRestart).unwrap(),
            "\"crash-restart\""
        );
    }

    #[test]
    fn bad_hashes_in_a_report_are_an_error() {
        assert!(parse_hashes(&["0x12".into()]).is_err());
        let hash = mesh_ledger::Hash::of(b"scenario").to_string();
        assert_eq!(parse_hashes(&[hash]).unwrap().len(), 1);
    }
}
