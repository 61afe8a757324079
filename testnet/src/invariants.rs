//! Named invariants, checked against a running testnet through the nodes' public endpoints
//! only (JSON-RPC and `/metrics`), exactly as an outside observer would: a check passes with a
//! [`Passed`] that says what was seen, or fails with [`TestnetError::Violated`] naming the
//! invariant and the evidence.
//!
//! The scenarios in `scenario.rs` are sequences of faults with these checks between them; a
//! check is never an `assert!`, so `meshd testnet scenario` can report it and exit ≠ 0.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mesh_ledger::{Address, Genesis, TxHash};
use mesh_rpc::{BlockRef, Client, ClientConfig, HttpTransport, TrustAnchor};
use serde::Serialize;

use crate::metrics::scrape_metrics;
use crate::state::{NodeEntry, TestnetFile};
use crate::TestnetError;

/// How often heights are polled while waiting or watching.
const POLL: Duration = Duration::from_millis(200);
/// How long a comparison waits for every node to have the heights it compares.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// A property the mesh promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invariant {
    /// Every node has the same block (hash, hence header and state root) at every height.
    Agreement,
    /// Every node serves the same accounts at a height, each read proven against that height's
    /// state root and finality certificate.
    StateAgreement,
    /// The network keeps finalizing: bounded stalls, catch-up after a fault.
    Liveness,
    /// Without a quorum (more than two thirds of the voting power) no block becomes final.
    NoFinalityWithoutQuorum,
    /// Every transaction acknowledged as final is in the chain exactly once, at the same place,
    /// on every node.
    Durability,
    /// No validator signed two different blocks for one view (`mesh_evidence_reported_total`
    /// stays 0 everywhere).
    NoEquivocation,
    /// A final write at one node is readable, with a verified proof, at another.
    Visibility,
}

impl Invariant {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::Agreement => "agreement",
            Invariant::StateAgreement => "state-agreement",
            Invariant::Liveness => "liveness",
            Invariant::NoFinalityWithoutQuorum => "no-finality-without-quorum",
            Invariant::Durability => "durability",
            Invariant::NoEquivocation => "no-equivocation",
            Invariant::Visibility => "visibility",
        }
    }

    pub(crate) fn violated(self, detail: impl Into<String>) -> TestnetError {
        TestnetError::Violated {
            invariant: self.name(),
            detail: detail.into(),
        }
    }

    pub(crate) fn passed(self, detail: impl Into<String>) -> Passed {
        let passed = Passed {
            invariant: self,
            detail: detail.into(),
        };
        println!("  ok  {:<27} {}", passed.invariant.name(), passed.detail);
        passed
    }
}

impl std::fmt::Display for Invariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A check that held, with what was observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Passed {
    /// The invariant.
    pub invariant: Invariant,
    /// What was seen (nodes, heights, counts, durations).
    pub detail: String,
}

/// Observes a running testnet: heights from `/metrics`, blocks and proven reads over JSON-RPC.
pub(crate) struct Probe {
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    anchor: TrustAnchor,
}

impl Probe {
    /// A probe of the testnet in `dir`; trusts the genesis in the first node's home (the
    /// validator set a client would get out of band).
    pub(crate) fn new(dir: &Path) -> Result<Probe, TestnetError> {
        let file = TestnetFile::load(dir)?;
        let first = file.node(0)?;
        let path = first.home.join("genesis.json");
        let text =
            std::fs::read_to_string(&path).map_err(|source| TestnetError::io(&path, source))?;
        let malformed = |reason: String| TestnetError::Malformed {
            path: path.display().to_string(),
            reason,
        };
        let genesis = Genesis::from_json(&text).map_err(|err| malformed(err.to_string()))?;
        let anchor =
            TrustAnchor::from_genesis(&genesis).map_err(|err| malformed(err.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| TestnetError::Bench(format!("cannot start the runtime: {err}")))?;
        Ok(Probe {
            dir: dir.to_path_buf(),
            runtime,
            anchor,
        })
    }

    /// testnet.json as it is now (pids change on restart, nodes are added by `join`).
    pub(crate) fn file(&self) -> Result<TestnetFile, TestnetError> {
        TestnetFile::load(&self.dir)
    }

    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The trust anchor reads are verified against.
    pub(crate) fn anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    /// Each node's finalized height (`None`: not answering).
    pub(crate) fn heights(&self, file: &TestnetFile, nodes: &[usize]) -> Vec<Option<u64>> {
        nodes
            .iter()
            .map(|&i| {
                file.nodes
                    .get(i)
                    .and_then(|node| scrape_metrics(&node.metrics))
                    .map(|m| m.finalized_height)
            })
            .collect()
    }

    /// The highest finalized height any of `nodes` reports (0 when none answers).
    pub(crate) fn top(&self, file: &TestnetFile, nodes: &[usize]) -> u64 {
        self.heights(file, nodes)
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0)
    }

    /// Waits until every node in `nodes` has finalized `target`; a [`Invariant::Liveness`]
    /// violation after `limit`. Returns how long it took.
    pub(crate) fn wait_heights(
        &self,
        file: &TestnetFile,
        nodes: &[usize],
        target: u64,
        limit: Duration,
        what: &str,
    ) -> Result<Duration, TestnetError> {
        let started = Instant::now();
        loop {
            let heights = self.heights(file, nodes);
            if heights.iter().all(|h| h.is_some_and(|h| h >= target)) {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= limit {
                return Err(Invariant::Liveness.violated(format!(
                    "{what}: height {target} not reached within {} s; heights of nodes {nodes:?}: {}",
                    limit.as_secs(),
                    show_heights(&heights)
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Watches `nodes` for `observe`: the highest finalized height among them must grow by at
    /// least `gain` and never stand still longer than `stall_max`.
    pub(crate) fn keeps_finalizing(
        &self,
        file: &TestnetFile,
        nodes: &[usize],
        observe: Duration,
        gain: u64,
        stall_max: Duration,
    ) -> Result<Passed, TestnetError> {
        let started = Instant::now();
        let first = self.top(file, nodes);
        let mut best = first;
        let mut since = Instant::now();
        let mut longest = Duration::ZERO;
        while started.elapsed() < observe {
            std::thread::sleep(POLL);
            let now = self.top(file, nodes);
            if now > best {
                best = now;
                since = Instant::now();
            }
            longest = longest.max(since.elapsed());
            if longest > stall_max {
                return Err(Invariant::Liveness.violated(format!(
                    "nodes {nodes:?} finalized nothing for {:.1} s (bound {} s), stuck at height {best}",
                    longest.as_secs_f64(),
                    stall_max.as_secs()
                )));
            }
        }
        if best < first + gain {
            return Err(Invariant::Liveness.violated(format!(
                "nodes {nodes:?} finalized {} block(s) in {} s, fewer than {gain}",
                best - first,
                observe.as_secs()
            )));
        }
        Ok(Invariant::Liveness.passed(format!(
            "nodes {nodes:?} finalized heights {first}..{best} in {} s, longest stall {:.1} s (bound {} s)",
            observe.as_secs(),
            longest.as_secs_f64(),
            stall_max.as_secs()
        )))
    }

    /// No node's finalized height changes during `window`.
    pub(crate) fn frozen(
        &self,
        file: &TestnetFile,
        nodes: &[usize],
        window: Duration,
    ) -> Result<Passed, TestnetError> {
        let before = self.heights(file, nodes);
        if before.iter().any(Option::is_none) {
            return Err(TestnetError::Timeout(format!(
                "a node does not answer on its metrics endpoint: heights {}",
                show_heights(&before)
            )));
        }
        let started = Instant::now();
        while started.elapsed() < window {
            std::thread::sleep(POLL);
            let now = self.heights(file, nodes);
            let grew = before
                .iter()
                .zip(&now)
                .any(|(b, n)| matches!((b, n), (Some(b), Some(n)) if n > b));
            if grew {
                return Err(Invariant::NoFinalityWithoutQuorum.violated(format!(
                    "a block became final without a quorum: heights of nodes {nodes:?} went from {} to {}",
                    show_heights(&before),
                    show_heights(&now)
                )));
            }
        }
        Ok(Invariant::NoFinalityWithoutQuorum.passed(format!(
            "heights of nodes {nodes:?} stayed at {} for {} s",
            show_heights(&before),
            window.as_secs()
        )))
    }

    /// Every node in `nodes` has the same block hash (so the same header and state root) at
    /// every height in `from..=to`.
    pub(crate) fn agreement(
        &self,
        file: &TestnetFile,
        nodes: &[usize],
        from: u64,
        to: u64,
    ) -> Result<Passed, TestnetError> {
        self.wait_heights(
            file,
            nodes,
            to,
            CATCH_UP_LIMIT,
            "every node has the blocks compared",
        )?;
        let chains = self.block_on(async {
            let mut chains = Vec::with_capacity(nodes.len());
            for &index in nodes {
                let node = file.node(index)?;
                let client = client(node)?;
                let mut chain = Vec::new();
                for height in from..=to {
                    let block = client
                        .block(BlockRef::Height(height), false)
                        .await
                        .map_err(|err| rpc_failed(node, &format!("block {height}"), &err))?;
                    chain.push((block.hash, block.header.state_root));
                }
                chains.push(chain);
            }
            Ok::<_, TestnetError>(chains)
        })?;
        for (position, chain) in chains.iter().enumerate().skip(1) {
            if let Some(offset) = (0..chain.len()).find(|&k| chain[k] != chains[0][k]) {
                let height = from + offset as u64;
                return Err(Invariant::Agreement.violated(format!(
                    "at height {height} node {} has block {} (state root {}) but node {} has {} (state root {})",
                    nodes[0],
                    chains[0][offset].0,
                    chains[0][offset].1,
                    nodes[position],
                    chain[offset].0,
                    chain[offset].1
                )));
            }
        }
        Ok(Invariant::Agreement.passed(format!(
            "nodes {nodes:?} have the same block hash and state root at heights {from}..={to}"
        )))
    }

    /// Every node in `nodes` serves the same state for `accounts` at `height`, each read
    /// carrying a proof the client verifies against the header's state root and the finality
    /// certificate against the genesis validator set.
    pub(crate) fn state_agreement(
        &self,
        file: &TestnetFile,
        nodes: &[usize],
        height: u64,
        accounts: &[Address],
    ) -> Result<Passed, TestnetError> {
        self.wait_heights(
            file,
            nodes,
            height,
            CATCH_UP_LIMIT,
            "every node has the height read",
        )?;
        let views = self.block_on(async {
            // The probe's anchor trusts genesis; a copy walks the epoch changes to `height`.
            let mut anchor = self.anchor.clone();
            let mut views = Vec::with_capacity(nodes.len());
            for &index in nodes {
                let node = file.node(index)?;
                let client = client(node)?;
                let mut view = Vec::with_capacity(accounts.len());
                for address in accounts {
                    let info = client
                        .verified_account(&mut anchor, address, Some(height))
                        .await
                        .map_err(|err| match err {
                            mesh_rpc::ClientError::Verify(why) => {
                                Invariant::StateAgreement.violated(format!(
                                    "{}'s answer for {address} at height {height} does not verify: {why}",
                                    node.name
                                ))
                            }
                            other => rpc_failed(node, &format!("account {address} at {height}"), &other),
                        })?;
                    view.push((info.exists, info.balance, info.nonce));
                }
                views.push(view);
            }
            Ok::<_, TestnetError>(views)
        })?;
        for (position, view) in views.iter().enumerate().skip(1) {
            if let Some(k) = (0..view.len()).find(|&k| view[k] != views[0][k]) {
                return Err(Invariant::StateAgreement.violated(format!(
                    "at height {height} account {} is (exists, balance, nonce) {:?} on node {} but {:?} on node {}",
                    accounts[k], views[0][k], nodes[0], view[k], nodes[position]
                )));
            }
        }
        Ok(Invariant::StateAgreement.passed(format!(
            "nodes {nodes:?} serve the same {} account(s) at height {height}, every read proven and verified",
            accounts.len()
        )))
    }

    /// `mesh_evidence_reported_total` is 0 on every node of `nodes` that answers.
    pub(crate) fn no_equivocation(
        &self,
        file: &TestnetFile,
        nodes: &[usize],
    ) -> Result<Passed, TestnetError> {
        let mut answered = 0;
        for &index in nodes {
            let node = file.node(index)?;
            if let Some(metrics) = scrape_metrics(&node.metrics) {
                answered += 1;
                if metrics.evidence_reported > 0 {
                    return Err(Invariant::NoEquivocation.violated(format!(
                        "{} reported {} equivocation(s) (mesh_evidence_reported_total)",
                        node.name, metrics.evidence_reported
                    )));
                }
            }
        }
        Ok(Invariant::NoEquivocation.passed(format!(
            "no evidence of equivocation on the {answered} answering node(s) of {nodes:?}"
        )))
    }

    /// Every hash in `acknowledged` is in the chain of every node in `nodes` exactly once, at
    /// the same height and position everywhere. Scans every block up to the lowest tip.
    pub(crate) fn durability(
        &self,
        file: &TestnetFile,
        nodes: &[usize],
        acknowledged: &[TxHash],
    ) -> Result<Passed, TestnetError> {
        let tip = self
            .heights(file, nodes)
            .into_iter()
            .map(|h| h.unwrap_or(0))
            .min()
            .unwrap_or(0);
        let placements = self.block_on(async {
            let mut placements = Vec::with_capacity(nodes.len());
            for &index in nodes {
                let node = file.node(index)?;
                let client = client(node)?;
                let mut seen: HashMap<TxHash, Vec<(u64, usize)>> = HashMap::new();
                for height in 1..=tip {
                    let block = client
                        .block(BlockRef::Height(height), false)
                        .await
                        .map_err(|err| rpc_failed(node, &format!("block {height}"), &err))?;
                    for (position, hash) in block.tx_hashes.into_iter().enumerate() {
                        seen.entry(hash).or_default().push((height, position));
                    }
                }
                placements.push(seen);
            }
            Ok::<_, TestnetError>(placements)
        })?;
        for (position, seen) in placements.iter().enumerate() {
            let node = nodes[position];
            for hash in acknowledged {
                match seen.get(hash).map(Vec::as_slice) {
                    Some([_]) => {}
                    None | Some([]) => {
                        return Err(Invariant::Durability.violated(format!(
                            "transaction {hash} was acknowledged as final but is not in node {node}'s chain (heights 1..={tip})"
                        )))
                    }
                    Some(places) => {
                        return Err(Invariant::Durability.violated(format!(
                            "transaction {hash} is in node {node}'s chain {} times, at (height, index) {places:?}",
                            places.len()
                        )))
                    }
                }
            }
            if position > 0 {
                for hash in acknowledged {
                    if seen.get(hash) != placements[0].get(hash) {
                        return Err(Invariant::Durability.violated(format!(
                            "transaction {hash} is at {:?} on node {} but at {:?} on node {node}",
                            placements[0].get(hash),
                            nodes[0],
                            seen.get(hash)
                        )));
                    }
                }
            }
        }
        Ok(Invariant::Durability.passed(format!(
            "all {} acknowledged transaction(s) are in the chain exactly once, at the same place, on nodes {nodes:?} (heights 1..={tip})",
            acknowledged.len()
        )))
    }
}

/// Checks [`Invariant::Durability`] of `acknowledged` on every node of the running testnet in
/// `dir`: each hash in the chain exactly once, at the same place everywhere.
pub fn check_durability(dir: &Path, acknowledged: &[TxHash]) -> Result<Passed, TestnetError> {
    let probe = Probe::new(dir)?;
    let file = probe.file()?;
    let nodes: Vec<usize> = (0..file.nodes.len()).collect();
    probe.durability(&file, &nodes, acknowledged)
}

/// A JSON-RPC client of `node`.
pub(crate) fn client(node: &NodeEntry) -> Result<Client<HttpTransport>, TestnetError> {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    Client::http(&node.rpc, &config)
        .map_err(|err| TestnetError::Bench(format!("{} at {}: {err}", node.name, node.rpc)))
}

pub(crate) fn rpc_failed(
    node: &NodeEntry,
    what: &str,
    err: &mesh_rpc::ClientError,
) -> TestnetError {
    TestnetError::Bench(format!("{} ({}): {what}: {err}", node.name, node.rpc))
}

fn show_heights(heights: &[Option<u64>]) -> String {
    let shown: Vec<String> = heights
        .iter()
        .map(|h| h.map_or_else(|| "-".to_owned(), |h| h.to_string()))
        .collect();
    format!("[{}]", shown.join(", "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn invariant_names_are_stable() {
        let names: Vec<&str> = [
            Invariant::Agreement,
            Invariant::StateAgreement,
            Invariant::Liveness,
            Invariant::NoFinalityWithoutQuorum,
            Invariant::Durability,
            Invariant::NoEquivocation,
            Invariant::Visibility,
        ]
        .iter()
        .map(|i| i.name())
        .collect();
        assert_eq!(
            names,
            [
                "agreement",
                "state-agreement",
                "liveness",
                "no-finality-without-quorum",
                "durability",
                "no-equivocation",
                "visibility"
            ]
        );
        // The JSON form is the same name.
        assert_eq!(
            serde_json::to_string(&Invariant::NoFinalityWithoutQuorum).unwrap(),
            "\"no-finality-without-quorum\""
        );
        let err = Invariant::Durability.violated("x");
        assert_eq!(err.to_string(), "invariant violated: durability: x");
    }

    #[test]
    fn heights_show_missing_nodes() {
        assert_eq!(show_heights(&[Some(3), None, Some(4)]), "[3, -, 4]");
    }
}
