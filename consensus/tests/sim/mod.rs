//! A deterministic simulator: N consensus state machines over a seeded network with virtual
//! time, crashes and restarts from persisted state (also of the whole network at once), an
//! application that must hold a block's parent to build or check it (`app.rs`), and Byzantine
//! doubles. Invariants are checked on every run and reported by name.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

pub mod app;
pub mod byzantine;
pub mod invariants;
pub mod scenario;
pub mod setup;

use std::collections::BTreeMap;

use mesh_consensus::{
    Block, BlockId, CertifiedBlock, Config, Consensus, Epoch, EpochInfo, Height, Input, Message,
    Output, SafetyState, Timeouts, View, ViewOutcome,
};
use mesh_ledger::{encoding, Address, Hash, SecretKey, ValidatorSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use app::{App, Job};
use invariants::Checker;
use scenario::{Role, Scenario};

pub use setup::{committee, genesis_hash, toy_block_hash, CHAIN_ID};

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        message: Message,
    },
    Timer {
        node: usize,
        view: View,
        incarnation: u32,
    },
    App {
        node: usize,
        input: Input,
        incarnation: u32,
    },
    Crash {
        node: usize,
    },
    /// The crash has not struck yet (the node carried out no batch): strike now.
    CrashNow {
        node: usize,
    },
    Restart {
        node: usize,
    },
    /// A request for a block by hash (`app.rs`).
    FetchRequest {
        to: usize,
        from: usize,
        hash: Hash,
    },
    FetchResponse {
        to: usize,
        from: usize,
        hash: Hash,
        block: Option<Block>,
    },
    FetchRetry {
        node: usize,
        hash: Hash,
        incarnation: u32,
    },
    GarbageTick {
        node: usize,
    },
}

struct Node {
    key: SecretKey,
    role: Role,
    machine: Option<Consensus>,
    incarnation: u32,
    /// What the driver made durable: the safety state and the finalized chain.
    durable_safety: SafetyState,
    durable_chain: Vec<CertifiedBlock>,
    /// Block hash → index in `durable_chain`.
    final_index: BTreeMap<Hash, usize>,
    /// The driver's certificate journal (durable, as the node's since issue 20): every
    /// notarization and nullification it broadcast, by (epoch, view, 0 notarization | 1
    /// nullification), pruned as views become final and fed back at start.
    cert_journal: BTreeMap<(u64, u64, u8), Message>,
    crash_pending: bool,
    app: App,
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub seed: u64,
    pub violations: Vec<String>,
    pub blocks_finalized: u64,
    pub trace_hash: Hash,
    pub scenario: Scenario,
    pub evidence_reported: u64,
    pub batches_delivered: u64,
    /// Block requests by hash sent, and blocks fetched that way and handed to consensus.
    pub fetches_sent: u64,
    pub blocks_fetched: u64,
    /// Blocks and certificates handed back to consensus from the journals on restarts.
    pub blocks_from_journal: u64,
    pub certificates_from_journal: u64,
    /// Parents a leader waited for that no node held at the end (view of the first wait).
    pub lost_parents: Vec<(View, Hash)>,
    /// How views ended, by `ViewOutcome::label`, over all nodes.
    pub view_outcomes: BTreeMap<&'static str, u64>,
    /// Simulated time at the end of the run, and the real time it took (not deterministic;
    /// for the cost summary only).
    pub end_ms: u64,
    pub wall_ms: u64,
}

pub struct World {
    scenario: Scenario,
    config: Config,
    /// The set of each epoch of the scenario's schedule (later epochs keep the last).
    sets: Vec<ValidatorSet>,
    addresses: Vec<Address>,
    nodes: Vec<Node>,
    queue: BTreeMap<(u64, u64), Event>,
    sequence: u64,
    now_ms: u64,
    rng: ChaCha8Rng,
    checker: Checker,
    trace: Hash,
    verbose: bool,
    evidence_reported: u64,
    batches_delivered: u64,
    fetches_sent: u64,
    blocks_fetched: u64,
    blocks_from_journal: u64,
    certificates_from_journal: u64,
    /// Parents some leader had to wait for → the view it first waited in; removed once a
    /// leader could build on it.
    build_waits: BTreeMap<Hash, View>,
    view_outcomes: BTreeMap<&'static str, u64>,
}

impl World {
    pub fn new(scenario: Scenario, verbose: bool) -> World {
        let timeouts = Timeouts {
            view_timeout_base_ms: 250,
            view_timeout_max_ms: 2_000,
        };
        let (keys, mut config) = committee(scenario.n(), timeouts, scenario.epoch_blocks);
        config.mutation_stale_set = scenario.mutation_stale_set;
        let sets: Vec<ValidatorSet> = scenario
            .sets
            .iter()
            .map(|members| setup::validator_set(&keys, &scenario.powers, members))
            .collect();
        config.mutation_weak_quorum = scenario.mutation_weak_quorum;
        config.limits.payload_bytes_max = 1024;
        let addresses = keys.iter().map(SecretKey::address).collect();
        let nodes = keys
            .into_iter()
            .zip(&scenario.roles)
            .map(|(key, role)| Node {
                key,
                role: *role,
                machine: None,
                incarnation: 0,
                durable_safety: SafetyState::default(),
                durable_chain: Vec::new(),
                final_index: BTreeMap::new(),
                cert_journal: BTreeMap::new(),
                crash_pending: false,
                app: App::default(),
            })
            .collect();
        let checker = Checker::new(&scenario, sets.clone(), config.schedule);
        World {
            rng: ChaCha8Rng::seed_from_u64(scenario.seed),
            scenario,
            config,
            sets,
            addresses,
            nodes,
            queue: BTreeMap::new(),
            sequence: 0,
            now_ms: 0,
            checker,
            trace: Hash::ZERO,
            verbose,
            evidence_reported: 0,
            batches_delivered: 0,
            fetches_sent: 0,
            blocks_fetched: 0,
            blocks_from_journal: 0,
            certificates_from_journal: 0,
            build_waits: BTreeMap::new(),
            view_outcomes: BTreeMap::new(),
        }
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.sequence += 1;
        self.queue
            .insert((at_ms.max(self.now_ms), self.sequence), event);
    }

    /// Runs the scenario to the end of the liveness window (or earlier, once every honest
    /// validator made the required progress) and checks every invariant.
    pub fn run(mut self) -> RunReport {
        for node in 0..self.nodes.len() {
            if self.nodes[node].role == Role::GarbageFlood {
                self.schedule(5, Event::GarbageTick { node });
            }
            if self.nodes[node].role != Role::Silent {
                self.boot(node);
            }
        }
        for crash in self.scenario.crashes.clone() {
            self.schedule(crash.at_ms, Event::Crash { node: crash.node });
            if let Some(at_ms) = crash.down_by_ms {
                self.schedule(at_ms, Event::CrashNow { node: crash.node });
            }
            self.schedule(crash.restart_ms, Event::Restart { node: crash.node });
        }
        let faults_end = self.scenario.faults_end_ms;
        let deadline = faults_end + self.scenario.liveness_window_ms;
        let mut snapshot: Option<Vec<u64>> = None;
        while let Some(((at_ms, _), event)) = self.queue.pop_first() {
            if at_ms > deadline {
                break;
            }
            self.now_ms = at_ms;
            if snapshot.is_none() && at_ms >= faults_end {
                snapshot = Some(self.chain_lengths());
            }
            self.handle(event);
            // Stop at the first violation, except under a mutation, where the test looks for
            // the agreement violation that follows the validity ones.
            let stop = if self.scenario.mutation_weak_quorum {
                self.checker
                    .violations
                    .iter()
                    .any(|v| v.starts_with("agreement"))
            } else {
                !self.checker.violations.is_empty()
            };
            if stop {
                break;
            }
            if let Some(start) = &snapshot {
                if self.liveness_met(start) {
                    break;
                }
            }
        }
        let start = snapshot.unwrap_or_else(|| self.chain_lengths());
        let chains: Vec<(bool, &[CertifiedBlock])> = self
            .nodes
            .iter()
            .map(|node| (node.role == Role::Honest, node.durable_chain.as_slice()))
            .collect();
        self.checker.check_chains(&chains);
        if self.checker.violations.is_empty() && !self.liveness_met(&start) {
            // After a whole-network stop, faults end at or after the last restart.
            let (name, after) = match &self.scenario.whole_stop {
                Some(stop) => (
                    "liveness-after-restart",
                    format!(
                        "after the last restart ({} ms) and the end of faults ({} ms)",
                        stop.last_restart_ms, faults_end
                    ),
                ),
                None => (
                    "liveness",
                    format!("after faults stopped ({faults_end} ms)"),
                ),
            };
            self.checker.violation(format!(
                "{name}: finalized heights went from {start:?} to {:?} in {} ms {after} (need \
                 +{}); parents no node holds: {:?}",
                self.chain_lengths(),
                self.scenario.liveness_window_ms,
                self.scenario.liveness_blocks,
                self.lost_parents()
            ));
        }
        RunReport {
            seed: self.scenario.seed,
            violations: self.checker.violations.clone(),
            blocks_finalized: self.checker.final_heights(),
            trace_hash: self.trace,
            evidence_reported: self.evidence_reported,
            batches_delivered: self.batches_delivered,
            fetches_sent: self.fetches_sent,
            blocks_fetched: self.blocks_fetched,
            blocks_from_journal: self.blocks_from_journal,
            certificates_from_journal: self.certificates_from_journal,
            lost_parents: self.lost_parents(),
            view_outcomes: self.view_outcomes.clone(),
            end_ms: self.now_ms,
            wall_ms: 0,
            scenario: self.scenario,
        }
    }

    fn chain_lengths(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|node| node.durable_chain.len() as u64)
            .collect()
    }

    /// Every honest validator that is up finalized `liveness_blocks` more blocks.
    fn liveness_met(&self, start: &[u64]) -> bool {
        self.nodes
            .iter()
            .zip(start)
            .enumerate()
            .all(|(index, (node, before))| {
                node.role != Role::Honest
                    || self.scenario.stays_down.contains(&index)
                    || node.durable_chain.len() as u64 >= before + self.scenario.liveness_blocks
            })
    }

    /// The epoch a node is in given its finalized tip, as the node's driver derives it: the
    /// tip's own epoch, or the next one when the tip is a boundary block (ADR 003 §3).
    fn epoch_at(&self, tip: &BlockId) -> EpochInfo {
        let schedule = self.config.schedule;
        let height = tip.height.0;
        let epoch = if schedule.is_boundary(height) {
            schedule.epoch_of(height) + 1
        } else {
            schedule.epoch_of(height)
        };
        let base_height = schedule.last(epoch.saturating_sub(1));
        let base = if epoch == 0 {
            genesis_id()
        } else if base_height == height {
            *tip
        } else {
            // Mid-epoch: the boundary block below is final on some node.
            self.nodes_chain_block(base_height).unwrap_or(*tip)
        };
        self.epoch_info(Epoch(epoch), base)
    }

    /// The set in force in `epoch`.
    fn set_of(&self, epoch: Epoch) -> ValidatorSet {
        let index = usize::try_from(epoch.0)
            .unwrap_or(usize::MAX)
            .min(self.sets.len() - 1);
        self.sets[index].clone()
    }

    /// What the driver reads from its committed state at the start of `epoch`.
    fn epoch_info(&self, epoch: Epoch, base: BlockId) -> EpochInfo {
        EpochInfo {
            epoch,
            validators: self.set_of(epoch),
            next_validators: self.set_of(epoch.next()),
            base,
        }
    }

    /// The id of the block final at `height` on any node (they agree, or the checker says).
    fn nodes_chain_block(&self, height: u64) -> Option<BlockId> {
        let index = usize::try_from(height.checked_sub(1)?).ok()?;
        self.nodes
            .iter()
            .find_map(|node| node.durable_chain.get(index))
            .map(|item| item.block.header.id())
    }

    fn boot(&mut self, node: usize) {
        let entry = &self.nodes[node];
        let (tip, certificate) = match entry.durable_chain.last() {
            Some(last) => (last.block.header.id(), Some(last.certificate.clone())),
            None => (genesis_id(), None),
        };
        let safety = if self.scenario.mutation_forget_safety {
            SafetyState::default()
        } else {
            entry.durable_safety.clone()
        };
        let epoch = self.epoch_at(&tip);
        let epoch_number = epoch.epoch.0;
        let mut config = self.config.clone();
        if self.nodes[node].role == Role::StaleVoter {
            config.mutation_stale_set = true;
        }
        let machine = Consensus::restore(
            config,
            self.nodes[node].key.clone(),
            epoch,
            safety,
            tip,
            certificate,
        );
        let mut machine = match machine {
            Ok(machine) => machine,
            Err(err) => {
                self.checker
                    .violation(format!("restart: node {node} cannot restore: {err}"));
                return;
            }
        };
        // The application re-reads its journal before consensus asks it anything...
        self.app_restart(node);
        let blocks = self.journal_blocks(node);
        let finalized_view = machine.finalized().view.0;
        let entry = &mut self.nodes[node];
        entry.cert_journal = entry
            .cert_journal
            .split_off(&(epoch_number, finalized_view + 1, 0));
        let certificates: Vec<Message> = entry.cert_journal.values().cloned().collect();
        let me = self.addresses[node];
        let outputs = machine.start(self.now_ms);
        self.nodes[node].machine = Some(machine);
        self.carry_out(node, outputs);
        // ...then, as the node does, the driver feeds back its journaled certificates
        // (checked like a peer's)...
        let batch_max = self.config.limits.message_batch_max.max(1);
        for chunk in certificates.chunks(batch_max) {
            self.certificates_from_journal += chunk.len() as u64;
            let messages = chunk.iter().map(|message| (me, message.clone())).collect();
            self.feed(node, Input::Messages { messages });
        }
        // ...and the journaled blocks above the finalized height.
        if !blocks.is_empty() && self.nodes[node].machine.is_some() {
            self.blocks_from_journal += blocks.len() as u64;
            if self.verbose {
                println!(
                    "{:>7} ms  node {node} recovers {} journaled blocks",
                    self.now_ms,
                    blocks.len()
                );
            }
            self.feed(node, Input::BlocksRecovered { blocks });
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, message } => {
                if self.verbose {
                    println!("{:>7} ms  {from} -> {to}  {:?}", self.now_ms, message);
                }
                // Messages reaching one node at the same instant arrive as one batch, as
                // a driver draining its socket would hand them over.
                let mut batch = vec![(self.addresses[from], message)];
                let batching = self.scenario.batch_delivery;
                let same_instant: Vec<(u64, u64)> = self
                    .queue
                    .range((self.now_ms, 0)..=(self.now_ms, u64::MAX))
                    .filter(|(_, event)| {
                        batching
                            && matches!(event, Event::Deliver { to: other, .. } if *other == to)
                    })
                    .map(|(key, _)| *key)
                    .collect();
                for key in same_instant {
                    if let Some(Event::Deliver { from, message, .. }) = self.queue.remove(&key) {
                        if self.verbose {
                            println!("{:>7} ms  {from} -> {to}  {:?}", self.now_ms, message);
                        }
                        batch.push((self.addresses[from], message));
                    }
                }
                let input = if batch.len() == 1 {
                    let (from, message) = batch.remove(0);
                    Input::Message { from, message }
                } else {
                    self.batches_delivered += 1;
                    Input::Messages { messages: batch }
                };
                self.feed(to, input);
            }
            Event::Timer {
                node,
                view,
                incarnation,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.feed(node, Input::Timeout { view });
                }
            }
            Event::App {
                node,
                input,
                incarnation,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.feed(node, input);
                }
            }
            Event::Crash { node } => self.nodes[node].crash_pending = true,
            Event::CrashNow { node } => {
                if self.nodes[node].crash_pending && self.nodes[node].machine.is_some() {
                    if self.verbose {
                        println!("{:>7} ms  node {node} crashes between batches", self.now_ms);
                    }
                    self.crash(node);
                }
            }
            Event::FetchRequest { to, from, hash } => self.serve_fetch(to, from, hash),
            Event::FetchResponse {
                to,
                from,
                hash,
                block,
            } => self.on_fetch_response(to, from, hash, block),
            Event::FetchRetry {
                node,
                hash,
                incarnation,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.retry_fetch(node, hash);
                }
            }
            Event::Restart { node } => {
                self.nodes[node].crash_pending = false;
                if self.nodes[node].machine.is_none() {
                    if self.verbose {
                        println!("{:>7} ms  node {node} restarts", self.now_ms);
                    }
                    self.boot(node);
                }
            }
            Event::GarbageTick { node } => {
                let genesis_set = self.sets[0].clone();
                let messages =
                    byzantine::garbage(&mut self.rng, &self.config, &genesis_set, self.now_ms);
                for message in messages {
                    let to = self.rng.gen_range(0..self.nodes.len());
                    if to != node {
                        self.send(node, to, message);
                    }
                }
                let next = self.now_ms + self.rng.gen_range(10..40);
                self.schedule(next, Event::GarbageTick { node });
            }
        }
    }

    fn feed(&mut self, node: usize, input: Input) {
        let now_ms = self.now_ms;
        let Some(machine) = self.nodes[node].machine.as_mut() else {
            return;
        };
        let outputs = machine.on_input(now_ms, input);
        self.carry_out(node, outputs);
    }

    /// Carries out outputs in order. A pending crash strikes at a random point of the batch:
    /// whatever comes after it — persisted or not — is lost.
    fn carry_out(&mut self, node: usize, outputs: Vec<Output>) {
        let mut record = Vec::with_capacity(40);
        record.extend_from_slice(self.trace.as_bytes());
        record.extend_from_slice(&self.now_ms.to_le_bytes());
        record.extend_from_slice(&(node as u64).to_le_bytes());
        record.extend_from_slice(&encoding::encode(&outputs));
        self.trace = Hash::of(&record);

        let cut = if self.nodes[node].crash_pending {
            self.rng.gen_range(0..=outputs.len())
        } else {
            outputs.len()
        };
        for output in outputs.into_iter().take(cut) {
            self.carry_out_one(node, output);
        }
        if self.nodes[node].crash_pending {
            if self.verbose {
                println!(
                    "{:>7} ms  node {node} crashes after {cut} outputs",
                    self.now_ms
                );
            }
            self.crash(node);
        }
    }

    /// The node stops: consensus and the application's memory are gone; the safety state,
    /// the finalized chain and the block journal stay.
    fn crash(&mut self, node: usize) {
        let entry = &mut self.nodes[node];
        entry.crash_pending = false;
        entry.machine = None;
        entry.incarnation += 1;
        entry.app.crash();
    }

    fn carry_out_one(&mut self, node: usize, output: Output) {
        let incarnation = self.nodes[node].incarnation;
        match output {
            Output::PersistSafetyState(state) => self.nodes[node].durable_safety = state,
            Output::Certified(message) => {
                if self.nodes[node].role == Role::Honest {
                    self.checker.on_certified(node, &message);
                }
                // Certificates go into the driver's journal as they are obtained.
                let key = match &message {
                    Message::Notarization(cert) => {
                        Some((cert.subject.epoch.0, cert.subject.view.0, 0))
                    }
                    Message::Nullification(cert) => {
                        Some((cert.subject.epoch.0, cert.subject.view.0, 1))
                    }
                    _ => None,
                };
                if let Some(key) = key {
                    if !self.scenario.mutation_forget_certificates {
                        self.nodes[node].cert_journal.entry(key).or_insert(message);
                    }
                }
            }
            Output::Broadcast(message) => {
                for to in 0..self.nodes.len() {
                    if to != node {
                        self.send_from_node(node, to, message.clone());
                    }
                }
            }
            Output::SendTo { peer, message } => {
                if let Some(to) = self.addresses.iter().position(|a| *a == peer) {
                    self.send_from_node(node, to, message);
                }
            }
            Output::ScheduleTimeout { view, at_ms } => {
                self.schedule(
                    at_ms,
                    Event::Timer {
                        node,
                        view,
                        incarnation,
                    },
                );
            }
            Output::BuildPayload {
                view,
                height,
                parent,
            } => {
                let epoch = self.nodes[node]
                    .machine
                    .as_ref()
                    .map_or(Epoch(0), Consensus::epoch);
                self.app_request(
                    node,
                    Job::Build {
                        epoch,
                        view,
                        height,
                        parent,
                    },
                );
            }
            Output::VerifyPayload {
                view,
                height,
                parent,
                block_hash,
                payload,
            } => self.app_request(
                node,
                Job::Verify {
                    view,
                    height,
                    parent,
                    block_hash,
                    payload,
                },
            ),
            Output::Finalize { block, certificate } => {
                let role = self.nodes[node].role;
                let honest = role == Role::Honest;
                let sound = role != Role::StaleVoter;
                let item = CertifiedBlock { block, certificate };
                let chain = &self.nodes[node].durable_chain;
                self.checker.on_finalize(node, honest, sound, chain, &item);
                let entry = &mut self.nodes[node];
                let header = item.block.header;
                entry
                    .final_index
                    .insert(header.hash, entry.durable_chain.len());
                entry.durable_chain.push(item);
                entry.app.prune_through(header.height);
                let finalized = item_round(&entry.durable_chain);
                entry.cert_journal = entry.cert_journal.split_off(&finalized);
                // A build or check may have waited for this block.
                self.app_resolve(node);
            }
            Output::RequestSync { from, to } => self.serve_sync(node, from, to),
            Output::EpochEnded { epoch, boundary } => {
                // The boundary's Finalize came first and is durable: the driver reads the next
                // sets and enters the next epoch a moment later, so a crash can fall between.
                let info = self.epoch_info(epoch.next(), boundary);
                let at = self.now_ms + self.rng.gen_range(0..3);
                self.schedule(
                    at,
                    Event::App {
                        node,
                        input: Input::EnterEpoch(info),
                        incarnation,
                    },
                );
            }
            Output::ReportEvidence(evidence) => {
                self.evidence_reported += 1;
                let honest = self.nodes[node].role == Role::Honest;
                let accused = self.addresses.iter().position(|a| *a == evidence.signer());
                self.checker
                    .on_evidence(honest, accused.map(|i| self.nodes[i].role));
            }
            // Diagnostics for operators; the checker judges outcomes, not explanations, but
            // the outcomes are counted and traced.
            Output::ViewReport(report) => {
                if report.ended {
                    *self
                        .view_outcomes
                        .entry(report.outcome.label())
                        .or_default() += 1;
                }
                if self.verbose && !matches!(report.outcome, ViewOutcome::Notarized) {
                    println!(
                        "{:>7} ms  node {node} view {} ({}): {}",
                        self.now_ms,
                        report.view.0,
                        if report.ended { "ended" } else { "open" },
                        report.outcome
                    );
                }
            }
        }
    }

    /// A random other validator answers from its durable chain (partially, if it lacks some).
    fn serve_sync(&mut self, node: usize, from: Height, to: Height) {
        let server = self.rng.gen_range(0..self.nodes.len());
        if server == node || self.rng.gen_bool(self.scenario.loss.min(0.5)) {
            return;
        }
        let max = self.config.limits.sync_blocks_max as u64;
        let blocks: Vec<CertifiedBlock> = self.nodes[server]
            .durable_chain
            .iter()
            .filter(|item| {
                let height = item.block.header.height;
                height >= from && height <= to && height.0 < from.0 + max
            })
            // The driver's duty: only blocks whose hash the application recomputes.
            .filter(|item| {
                let header = item.block.header;
                toy_block_hash(&header.parent, header.height, &item.block.payload) == header.hash
            })
            .cloned()
            .collect();
        if blocks.is_empty() {
            return;
        }
        let at = self.now_ms + self.delay();
        let incarnation = self.nodes[node].incarnation;
        let input = Input::BlocksSynced { blocks };
        self.schedule(
            at,
            Event::App {
                node,
                input,
                incarnation,
            },
        );
    }

    /// Sends from a node's state machine, letting its Byzantine role rewrite the message.
    fn send_from_node(&mut self, from: usize, to: usize, message: Message) {
        let role = self.nodes[from].role;
        if role == Role::Honest {
            self.checker.on_sent(from, &message, &self.addresses);
        }
        let messages = byzantine::rewrite(
            role,
            &self.nodes[from].key,
            &self.config,
            from,
            to,
            message,
            &mut self.rng,
        );
        for message in messages {
            self.send(from, to, message);
        }
    }

    fn delay(&mut self) -> u64 {
        self.scenario.latency_ms + self.rng.gen_range(0..=self.scenario.jitter_ms)
    }

    /// When a request or reply from `from` reaches `to`, or None if the network drops it
    /// (partitions and loss apply until the faults stop; no duplication).
    fn route(&mut self, from: usize, to: usize) -> Option<u64> {
        if self.now_ms < self.scenario.faults_end_ms {
            let now_ms = self.now_ms;
            if self
                .scenario
                .partitions
                .iter()
                .any(|p| p.blocks(from, to, now_ms))
            {
                return None;
            }
            if self.rng.gen_bool(self.scenario.loss) {
                return None;
            }
        }
        Some(self.now_ms + self.delay())
    }

    /// The network: partitions, loss and duplication apply until the faults stop.
    fn send(&mut self, from: usize, to: usize, message: Message) {
        let faulty = self.now_ms < self.scenario.faults_end_ms;
        if faulty {
            let now_ms = self.now_ms;
            if self
                .scenario
                .partitions
                .iter()
                .any(|p| p.blocks(from, to, now_ms))
            {
                return;
            }
            if self.rng.gen_bool(self.scenario.loss) {
                return;
            }
            if self.rng.gen_bool(self.scenario.duplication) {
                let at = self.now_ms + self.delay();
                self.schedule(
                    at,
                    Event::Deliver {
                        to,
                        from,
                        message: message.clone(),
                    },
                );
            }
        }
        let at = self.now_ms + self.delay();
        self.schedule(at, Event::Deliver { to, from, message });
    }
}

/// The genesis block as view 0 of epoch 0.
pub fn genesis_id() -> BlockId {
    BlockId {
        epoch: Epoch(0),
        view: View(0),
        height: Height(0),
        hash: genesis_hash(),
    }
}

/// The journal key above which certificates still matter once `chain`'s last block is final:
/// views after the one that finalized it, in its epoch.
fn item_round(chain: &[CertifiedBlock]) -> (u64, u64, u8) {
    chain.last().map_or((0, 1, 0), |item| {
        let certified = item.certificate.subject;
        (certified.epoch.0, certified.view.0 + 1, 0)
    })
}

/// Runs one seed.
pub fn run_seed(seed: u64, mutation_weak_quorum: bool, verbose: bool) -> RunReport {
    run_scenario(Scenario::from_seed(seed, mutation_weak_quorum), verbose)
}

/// Runs one scenario.
pub fn run_scenario(scenario: Scenario, verbose: bool) -> RunReport {
    let seed = scenario.seed;
    if verbose {
        println!("seed {seed}: {}", scenario.describe());
    }
    let started = std::time::Instant::now();
    let mut report = World::new(scenario, verbose).run();
    report.wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}
