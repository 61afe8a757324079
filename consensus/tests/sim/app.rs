//! The toy application each simulated validator runs beside consensus, modelling block
//! availability as the node's driver has it since issue 20:
//!
//! * blocks it holds in **memory** (built as leader, checked valid, fetched), lost on a crash;
//! * a durable **block journal** of every block it built or found valid, written before its
//!   vote on the block can leave (the block is journaled when the application finishes its
//!   work, before consensus hears the answer), pruned as blocks become final, re-read on
//!   restart and handed to consensus as `Input::BlocksRecovered`;
//! * `BuildPayload` and `VerifyPayload` wait while the parent block is unknown (not genesis,
//!   not final, not in memory), and the missing block is **fetched by hash** from a random
//!   peer over the simulated network (latency, loss, partitions), retried with a bounded
//!   back-off while still needed. The answering node serves it from memory, journal or
//!   finalized chain. A fetched block is checked (hash recomputed, its own parent fetched
//!   first), kept in memory and journal, fed to consensus as `Input::BlocksRecovered`, and
//!   whatever waited for it is retried.
//!
//! `Scenario::mutation_forget_blocks` turns the journal off: blocks live in memory only, as
//! before the fix, and a network stopped as a whole can lose a notarized block for good.

use std::collections::{BTreeMap, BTreeSet};

use mesh_consensus::{Block, Epoch, Header, Height, Input, View};
use mesh_ledger::Hash;
use rand::Rng;

use super::scenario::Role;
use super::{genesis_hash, toy_block_hash, Event, World};

/// First fetch retry delay; doubles per attempt up to `FETCH_RETRY_MAX_MS` (as the node's).
const FETCH_RETRY_BASE_MS: u64 = 100;
const FETCH_RETRY_MAX_MS: u64 = 2_000;
/// Most builds and checks waiting for a parent; the oldest goes first.
const JOBS_MAX: usize = 64;

/// A build or a check the application could not do yet: its parent block is unknown.
#[derive(Debug, Clone)]
pub(super) enum Job {
    Build {
        /// The epoch the machine was in when it asked: a build for a view of an epoch it left
        /// is dropped, as its answer would name the wrong parent.
        epoch: Epoch,
        view: View,
        height: Height,
        parent: Hash,
    },
    Verify {
        view: View,
        height: Height,
        parent: Hash,
        block_hash: Hash,
        payload: Vec<u8>,
    },
}

impl Job {
    fn parent(&self) -> Hash {
        match self {
            Job::Build { parent, .. } | Job::Verify { parent, .. } => *parent,
        }
    }
}

/// One validator's application state.
#[derive(Debug, Default)]
pub(super) struct App {
    /// Blocks held in memory: built, found valid or fetched. Lost on a crash.
    pub memory: BTreeMap<Hash, Block>,
    /// The durable block journal (kept across crashes; always empty under
    /// `mutation_forget_blocks`).
    pub journal: BTreeMap<Hash, Block>,
    /// Builds and checks waiting for their parent.
    jobs: Vec<Job>,
    /// Fetched blocks waiting for their own parent.
    orphans: BTreeMap<Hash, Block>,
    /// Blocks being fetched, with the number of requests sent so far.
    fetching: BTreeMap<Hash, u32>,
}

impl App {
    /// A crash: everything but the journal is lost.
    pub fn crash(&mut self) {
        self.memory.clear();
        self.jobs.clear();
        self.orphans.clear();
        self.fetching.clear();
    }

    /// Blocks at or below the finalized height are in the finalized chain (or lost a race):
    /// journal, memory and fetch state forget them.
    pub fn prune_through(&mut self, height: Height) {
        self.journal.retain(|_, block| block.header.height > height);
        self.memory.retain(|_, block| block.header.height > height);
        self.orphans.retain(|_, block| block.header.height > height);
    }
}

/// What the toy application accepts: the hash recomputes and the payload is not marked bad.
fn payload_valid(parent: &Hash, height: Height, payload: &[u8], block_hash: &Hash) -> bool {
    toy_block_hash(parent, height, payload) == *block_hash && payload.first() != Some(&0xff)
}

/// Does `header` extend `parent` (epoch, view, height) one height up? A block's parent is
/// in its own epoch at an earlier view, or is the previous epoch's boundary block, which the
/// new epoch names as view 0.
fn links_to(header: &Header, parent: (Epoch, View, Height)) -> bool {
    let (parent_epoch, parent_view, parent_height) = parent;
    let views = if header.epoch == parent_epoch {
        header.parent_view == parent_view && header.view > parent_view
    } else {
        header.epoch == parent_epoch.next() && header.parent_view == View(0)
    };
    header.height == parent_height.next() && views
}

impl World {
    /// The epoch, view and height of a block this node's application knows (genesis,
    /// finalized, in memory), or None.
    fn known_block(&self, node: usize, hash: &Hash) -> Option<(Epoch, View, Height)> {
        if *hash == genesis_hash() {
            return Some((Epoch(0), View(0), Height(0)));
        }
        let entry = &self.nodes[node];
        if let Some(block) = entry.app.memory.get(hash) {
            let header = block.header;
            return Some((header.epoch, header.view, header.height));
        }
        entry
            .final_index
            .get(hash)
            .map(|index| entry.durable_chain[*index].block.header)
            .map(|header| (header.epoch, header.view, header.height))
    }

    /// The block as a peer would serve it: from memory, journal or the finalized chain.
    fn served_block(&self, node: usize, hash: &Hash) -> Option<Block> {
        let entry = &self.nodes[node];
        entry
            .app
            .memory
            .get(hash)
            .or_else(|| entry.app.journal.get(hash))
            .or_else(|| {
                entry
                    .final_index
                    .get(hash)
                    .map(|index| &entry.durable_chain[*index].block)
            })
            .cloned()
    }

    /// Keeps a block the application built, found valid or fetched: in memory and, before
    /// anything is said about it, in the journal.
    fn keep_block(&mut self, node: usize, block: Block) {
        let hash = block.header.hash;
        if !self.scenario.mutation_forget_blocks {
            self.nodes[node].app.journal.insert(hash, block.clone());
        }
        self.nodes[node].app.memory.insert(hash, block);
    }

    /// `Output::BuildPayload` or `Output::VerifyPayload`: done at once when the parent is
    /// known, else kept waiting while the parent is fetched.
    pub(super) fn app_request(&mut self, node: usize, job: Job) {
        let parent = job.parent();
        if self.known_block(node, &parent).is_some() {
            self.run_job(node, job);
            self.app_resolve(node);
            return;
        }
        if let Job::Build { view, .. } = &job {
            self.build_waits.entry(parent).or_insert(*view);
        }
        let jobs = &mut self.nodes[node].app.jobs;
        if jobs.len() >= JOBS_MAX {
            jobs.remove(0);
        }
        jobs.push(job);
        self.want_block(node, parent);
    }

    /// Builds or checks with the parent known; the answer reaches consensus a little later.
    fn run_job(&mut self, node: usize, job: Job) {
        let incarnation = self.nodes[node].incarnation;
        let Some((_, parent_view, parent_height)) = self.known_block(node, &job.parent()) else {
            return;
        };
        let input = match job {
            Job::Build {
                epoch,
                view,
                height,
                parent,
            } => {
                self.build_waits.remove(&parent);
                let mut payload = format!("block v{} h{} by {node}", view.0, height.0).into_bytes();
                payload.push(self.rng.gen());
                let block_hash = toy_block_hash(&parent, height, &payload);
                // The first block of an epoch names the previous boundary as its view 0.
                let parent_view = if height.0 == self.config.schedule.first(epoch.0) {
                    View(0)
                } else {
                    parent_view
                };
                let header = Header {
                    epoch,
                    view,
                    height,
                    parent_view,
                    parent,
                    hash: block_hash,
                };
                self.keep_block(
                    node,
                    Block {
                        header,
                        payload: payload.clone(),
                    },
                );
                Input::PayloadBuilt {
                    view,
                    block_hash,
                    payload,
                }
            }
            Job::Verify {
                view,
                height,
                parent,
                block_hash,
                payload,
            } => {
                // A re-proposal names the boundary block it proposes again: valid when held.
                let reproposal = parent == block_hash;
                let valid = if reproposal {
                    payload.is_empty() && height == parent_height
                } else {
                    payload_valid(&parent, height, &payload, &block_hash)
                        && height == parent_height.next()
                };
                if valid && !reproposal {
                    // The header as consensus holds it (a proposal for a view it no longer
                    // keeps gets no vote, so need not be journaled).
                    let block = self.nodes[node]
                        .machine
                        .as_ref()
                        .and_then(|machine| machine.proposal(view))
                        .filter(|proposal| proposal.block.header.hash == block_hash)
                        .map(|proposal| proposal.block.clone());
                    if let Some(block) = block {
                        self.keep_block(node, block);
                    }
                }
                Input::PayloadVerified {
                    view,
                    block_hash,
                    valid,
                }
            }
        };
        let at = self.now_ms + self.rng.gen_range(0..5);
        self.schedule(
            at,
            Event::App {
                node,
                input,
                incarnation,
            },
        );
    }

    /// After the node learned blocks: accepts fetched blocks whose parent is now known (and
    /// hands them to consensus), and runs the jobs that waited for them, until nothing moves.
    pub(super) fn app_resolve(&mut self, node: usize) {
        self.prune_jobs(node);
        let mut recovered = Vec::new();
        loop {
            let mut progress = false;
            let orphans: Vec<Block> = self.nodes[node].app.orphans.values().cloned().collect();
            for block in orphans {
                let header = block.header;
                let Some(parent) = self.known_block(node, &header.parent) else {
                    continue;
                };
                self.nodes[node].app.orphans.remove(&header.hash);
                progress = true;
                let links = links_to(&header, parent);
                if links && self.known_block(node, &header.hash).is_none() {
                    self.keep_block(node, block.clone());
                    recovered.push(block);
                }
            }
            let jobs = std::mem::take(&mut self.nodes[node].app.jobs);
            let (ready, waiting): (Vec<Job>, Vec<Job>) = jobs
                .into_iter()
                .partition(|job| self.known_block(node, &job.parent()).is_some());
            self.nodes[node].app.jobs = waiting;
            for job in ready {
                progress = true;
                self.run_job(node, job);
            }
            if !progress {
                break;
            }
        }
        if !recovered.is_empty() {
            self.blocks_fetched += recovered.len() as u64;
            recovered.sort_by_key(|block| block.header.height);
            let incarnation = self.nodes[node].incarnation;
            let at = self.now_ms + self.rng.gen_range(0..3);
            self.schedule(
                at,
                Event::App {
                    node,
                    input: Input::BlocksRecovered { blocks: recovered },
                    incarnation,
                },
            );
        }
    }

    /// Drops jobs whose answer consensus would ignore: builds for views it left, checks of
    /// blocks at or below its finalized height.
    fn prune_jobs(&mut self, node: usize) {
        let entry = &mut self.nodes[node];
        let Some(machine) = entry.machine.as_ref() else {
            return;
        };
        let view = machine.view();
        let epoch = machine.epoch();
        let finalized = machine.finalized();
        entry.app.jobs.retain(|job| match job {
            Job::Build {
                epoch: asked_in,
                view: wanted,
                ..
            } => *asked_in == epoch && *wanted >= view,
            Job::Verify {
                view: wanted,
                height,
                ..
            } => *height > finalized.height && *wanted > finalized.view,
        });
    }

    /// The blocks still needed: parents of waiting jobs, and the ancestors of those that were
    /// fetched already and wait for their own parent.
    fn needed_blocks(&self, node: usize) -> BTreeSet<Hash> {
        let app = &self.nodes[node].app;
        let mut needed: BTreeSet<Hash> = app.jobs.iter().map(Job::parent).collect();
        let mut frontier: Vec<Hash> = needed.iter().copied().collect();
        while let Some(hash) = frontier.pop() {
            if let Some(orphan) = app.orphans.get(&hash) {
                if needed.insert(orphan.header.parent) {
                    frontier.push(orphan.header.parent);
                }
            }
        }
        needed
    }

    /// Starts fetching `hash` unless it is known or on its way (for a fetched block waiting
    /// for its parent, the parent is what is wanted).
    fn want_block(&mut self, node: usize, hash: Hash) {
        if self.known_block(node, &hash).is_some() {
            return;
        }
        let app = &self.nodes[node].app;
        if let Some(orphan) = app.orphans.get(&hash) {
            let parent = orphan.header.parent;
            self.want_block(node, parent);
            return;
        }
        if app.fetching.contains_key(&hash) {
            return;
        }
        self.nodes[node].app.fetching.insert(hash, 0);
        self.send_fetch(node, hash);
    }

    /// Asks a random other validator for `hash`, and arms the retry.
    fn send_fetch(&mut self, node: usize, hash: Hash) {
        let Some(attempts) = self.nodes[node].app.fetching.get_mut(&hash) else {
            return;
        };
        let attempt = *attempts;
        *attempts += 1;
        self.fetches_sent += 1;
        let n = self.nodes.len();
        let mut server = self.rng.gen_range(0..n - 1);
        if server >= node {
            server += 1;
        }
        if self.verbose {
            println!(
                "{:>7} ms  node {node} asks {server} for block {hash} (attempt {})",
                self.now_ms,
                attempt + 1
            );
        }
        if let Some(at) = self.route(node, server) {
            self.schedule(
                at,
                Event::FetchRequest {
                    to: server,
                    from: node,
                    hash,
                },
            );
        }
        let backoff = (FETCH_RETRY_BASE_MS << attempt.min(5)).min(FETCH_RETRY_MAX_MS);
        let at = self.now_ms + backoff + self.rng.gen_range(0..20);
        let incarnation = self.nodes[node].incarnation;
        self.schedule(
            at,
            Event::FetchRetry {
                node,
                hash,
                incarnation,
            },
        );
    }

    /// The retry timer of a fetch: ask again while the block is still needed and missing.
    pub(super) fn retry_fetch(&mut self, node: usize, hash: Hash) {
        if !self.nodes[node].app.fetching.contains_key(&hash) {
            return;
        }
        self.prune_jobs(node);
        if self.known_block(node, &hash).is_some() || !self.needed_blocks(node).contains(&hash) {
            self.nodes[node].app.fetching.remove(&hash);
            return;
        }
        self.send_fetch(node, hash);
    }

    /// A running validator answers a fetch from memory, journal or finalized chain (a garbage
    /// flooder answers with a tampered payload); a node that is down does not answer.
    pub(super) fn serve_fetch(&mut self, server: usize, requester: usize, hash: Hash) {
        if self.nodes[server].machine.is_none() {
            return;
        }
        let mut block = self.served_block(server, &hash);
        if self.nodes[server].role == Role::GarbageFlood {
            if let Some(block) = block.as_mut() {
                block.payload.push(0x66);
            }
        }
        if let Some(at) = self.route(server, requester) {
            self.schedule(
                at,
                Event::FetchResponse {
                    to: requester,
                    from: server,
                    hash,
                    block,
                },
            );
        }
    }

    /// A peer's answer to a fetch: checked, then kept waiting for its parent or accepted.
    pub(super) fn on_fetch_response(
        &mut self,
        node: usize,
        from: usize,
        hash: Hash,
        block: Option<Block>,
    ) {
        if self.nodes[node].machine.is_none() || !self.nodes[node].app.fetching.contains_key(&hash)
        {
            return;
        }
        // "Not found" or a wrong block: the retry timer asks another peer.
        let Some(block) = block else { return };
        let header = block.header;
        if header.hash != hash
            || !payload_valid(&header.parent, header.height, &block.payload, &hash)
        {
            if self.verbose {
                println!(
                    "{:>7} ms  node {node} refuses block {hash} from {from}",
                    self.now_ms
                );
            }
            return;
        }
        if self.verbose {
            println!(
                "{:>7} ms  node {node} fetched block {hash} (height {}) from {from}",
                self.now_ms, header.height.0
            );
        }
        self.nodes[node].app.fetching.remove(&hash);
        self.nodes[node].app.orphans.insert(hash, block);
        self.want_block(node, header.parent);
        self.app_resolve(node);
    }

    /// After a restart: the application re-reads its journal into memory.
    pub(super) fn app_restart(&mut self, node: usize) {
        let height = Height(self.nodes[node].durable_chain.len() as u64);
        let app = &mut self.nodes[node].app;
        app.prune_through(height);
        app.memory = app.journal.clone();
    }

    /// The journal's blocks above the finalized height, ascending, for `BlocksRecovered`.
    pub(super) fn journal_blocks(&self, node: usize) -> Vec<Block> {
        let mut blocks: Vec<Block> = self.nodes[node].app.journal.values().cloned().collect();
        blocks.sort_by_key(|block| (block.header.height, block.header.view));
        blocks
    }

    /// Parents a leader waited for that no node holds at all (not in any memory, journal or
    /// finalized chain): the stall of issue 20.
    pub(super) fn lost_parents(&self) -> Vec<(View, Hash)> {
        self.build_waits
            .iter()
            .filter(|(hash, _)| {
                (0..self.nodes.len()).all(|node| self.served_block(node, hash).is_none())
            })
            .map(|(hash, view)| (*view, *hash))
            .collect()
    }
}
