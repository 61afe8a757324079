//! What one seed simulates: committee, network conditions, faults and Byzantine roles, all
//! drawn from the seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a validator behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Honest,
    /// Never sends anything.
    Silent,
    /// Honest code, but as leader sends different proposals to each half of its peers.
    EquivocatingLeader,
    /// Honest code, plus conflicting votes after each vote it casts.
    DoubleVoter,
    /// Honest code, plus a steady flood of invalid and hostile messages.
    GarbageFlood,
    /// Keeps the set it started with (`Config::mutation_stale_set` on its machine alone), so
    /// once the schedule drops it, it goes on voting in epochs it has no power in.
    StaleVoter,
}

/// Messages from `from` to `to` are dropped between `start_ms` and `end_ms`; `one_way`
/// partitions leave the reverse direction open.
#[derive(Debug, Clone)]
pub struct Partition {
    pub side_a: Vec<usize>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub one_way: bool,
}

impl Partition {
    pub fn blocks(&self, from: usize, to: usize, now_ms: u64) -> bool {
        if now_ms < self.start_ms || now_ms >= self.end_ms {
            return false;
        }
        let from_a = self.side_a.contains(&from);
        let to_a = self.side_a.contains(&to);
        if from_a == to_a {
            return false;
        }
        !self.one_way || from_a
    }
}

/// A crash (possibly in the middle of carrying out a batch of outputs) and the restart.
#[derive(Debug, Clone)]
pub struct Crash {
    pub node: usize,
    /// From here the crash strikes at a random point of the node's next batch of outputs...
    pub at_ms: u64,
    /// ...or, if the node has carried out no batch by then, here, between two batches (so a
    /// whole-network stop really has every validator down at once).
    pub down_by_ms: Option<u64>,
    pub restart_ms: u64,
}

/// Every validator crashes (each at its own moment, mid-batch or between batches) and, once
/// all are down, restarts in some order after its own delay: the situation of issue 20.
#[derive(Debug, Clone)]
pub struct WholeStop {
    /// The first crash may strike from here.
    pub stop_ms: u64,
    /// Every validator is down from here...
    pub down_ms: u64,
    /// ...until the first restart; the last one is here.
    pub last_restart_ms: u64,
}

/// Committee sizes a seed draws from, with their weights: the larger committees cost more per
/// seed (votes and relayed certificates grow with n²), so they are drawn less often and
/// `whole_network_restarts_large_committees` runs a fixed number of them every time.
pub const COMMITTEE_SIZES: [(usize, u32); 4] = [(4, 50), (7, 30), (10, 13), (16, 7)];

/// Share of seeds with a whole-network stop and restart.
pub const WHOLE_STOP_SHARE: f64 = 0.12;
/// Share of whole-network stops after which some validators never come back.
pub const STAYS_DOWN_SHARE: f64 = 0.35;

/// What to force instead of drawing it from the seed. Everything else is drawn as usual (the
/// forced values are drawn too, then replaced, so the rest of the scenario does not shift).
#[derive(Debug, Clone, Copy, Default)]
pub struct Draw {
    pub n: Option<usize>,
    pub whole_stop: Option<bool>,
    /// After a whole-network stop, some honest validators never come back (crash faults; with
    /// the Byzantine ones at most `f` power).
    pub stays_down: Option<bool>,
    pub mutation_weak_quorum: bool,
    /// Validator sets change at epoch boundaries (drawn for a quarter of the seeds).
    pub reconfigure: Option<bool>,
}

/// Share of seeds whose validator set changes at epoch boundaries.
pub const RECONFIGURE_SHARE: f64 = 0.25;
/// Epochs a set schedule is drawn for; later epochs keep the last set.
pub const SCHEDULED_EPOCHS: usize = 64;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub powers: Vec<u64>,
    pub roles: Vec<Role>,
    pub latency_ms: u64,
    pub jitter_ms: u64,
    pub loss: f64,
    pub duplication: f64,
    pub partitions: Vec<Partition>,
    pub crashes: Vec<Crash>,
    /// All network faults and crashes stop here; Byzantine validators keep misbehaving.
    pub faults_end_ms: u64,
    /// After `faults_end_ms`, every honest validator must finalize this many more blocks...
    pub liveness_blocks: u64,
    /// ...within this much simulated time.
    pub liveness_window_ms: u64,
    pub mutation_weak_quorum: bool,
    /// Messages reaching a node at the same instant are handed over as one batch.
    pub batch_delivery: bool,
    /// Test-only mutation of the driver: restart validators with an empty safety state.
    pub mutation_forget_safety: bool,
    /// Test-only mutation of the application: no block journal, so blocks live in memory only
    /// and a crash loses them (the behaviour before the fix of issue 20).
    pub mutation_forget_blocks: bool,
    /// Test-only mutation of the driver: no certificate journal, so notarizations and
    /// nullifications live in memory only (also before the fix of issue 20).
    pub mutation_forget_certificates: bool,
    /// A whole-network stop and restart; `faults_end_ms` is at or after its last restart, and
    /// the liveness check is then reported as `liveness-after-restart`.
    pub whole_stop: Option<WholeStop>,
    /// Honest validators that do not restart after the whole-network stop (crash faults): the
    /// liveness checks leave them out.
    pub stays_down: Vec<usize>,
    /// Heights per epoch: short in half the seeds, so runs cross boundaries (re-proposals,
    /// `EpochEnded`, `EnterEpoch`, crashes between commit and entering) under every fault.
    pub epoch_blocks: u64,
    /// The members (node indices) of each epoch's set; epochs past the end keep the last. One
    /// entry, the first `genesis_n` nodes, when the set never changes. Nodes outside an
    /// epoch's set follow the chain as full nodes, and join or leave by input alone.
    pub sets: Vec<Vec<usize>>,
    /// Nodes in the genesis set (the first ones); the rest start as followers.
    pub genesis_n: usize,
    /// Test-only mutation of consensus: keep tallying and verifying with the old set after
    /// `EnterEpoch` (`Config::mutation_stale_set`).
    pub mutation_stale_set: bool,
}

/// Epoch length of seeds that do not draw short epochs: no run reaches it.
pub const LONG_EPOCH_BLOCKS: u64 = 1_000_000;

impl Scenario {
    pub fn from_seed(seed: u64, mutation_weak_quorum: bool) -> Scenario {
        Scenario::draw(
            seed,
            Draw {
                mutation_weak_quorum,
                ..Draw::default()
            },
        )
    }

    /// The scenario of `seed`, with what `force` names forced.
    pub fn draw(seed: u64, force: Draw) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed);
        let weights_total: u32 = COMMITTEE_SIZES.iter().map(|(_, weight)| weight).sum();
        let mut roll = rng.gen_range(0..weights_total);
        let mut n = COMMITTEE_SIZES[0].0;
        for (size, weight) in COMMITTEE_SIZES {
            if roll < weight {
                n = size;
                break;
            }
            roll -= weight;
        }
        let n = force.n.unwrap_or(n);
        let whole_stop = rng.gen_bool(WHOLE_STOP_SHARE);
        let whole_stop = force.whole_stop.unwrap_or(whole_stop);
        let equal = rng.gen_bool(0.5);
        let powers: Vec<u64> = (0..n)
            .map(|_| if equal { 1 } else { rng.gen_range(1..=5) })
            .collect();
        let total: u64 = powers.iter().sum();
        let max_faulty = (total - 1) / 3;

        let mut roles = vec![Role::Honest; n];
        let mut faulty_power = 0;
        let byzantine_count = rng.gen_range(0..=(n - 1) / 3);
        for _ in 0..byzantine_count {
            let node = rng.gen_range(0..n);
            if roles[node] != Role::Honest || faulty_power + powers[node] > max_faulty {
                continue;
            }
            faulty_power += powers[node];
            roles[node] = match rng.gen_range(0..4) {
                0 => Role::Silent,
                1 => Role::EquivocatingLeader,
                2 => Role::DoubleVoter,
                _ => Role::GarbageFlood,
            };
        }

        let faults_end_ms = rng.gen_range(1_000..2_500);
        let mut partitions = Vec::new();
        for _ in 0..rng.gen_range(0..=2) {
            let start_ms = rng.gen_range(0..faults_end_ms - 200);
            let end_ms = (start_ms + rng.gen_range(200..2_000)).min(faults_end_ms);
            let side_a: Vec<usize> = (0..n).filter(|_| rng.gen_bool(0.5)).collect();
            partitions.push(Partition {
                side_a,
                start_ms,
                end_ms,
                one_way: rng.gen_bool(0.4),
            });
        }
        // The whole-network stop is drawn first; single crashes must end before it begins.
        let stop_ms = rng.gen_range(500..faults_end_ms);
        let mut stop_crashes = Vec::new();
        for node in 0..n {
            let at_ms = stop_ms + rng.gen_range(0..300);
            let down_by_ms = at_ms + rng.gen_range(0..150);
            stop_crashes.push((node, at_ms, down_by_ms));
        }
        let down_ms = stop_crashes.iter().map(|c| c.2).max().unwrap_or(stop_ms);
        let restarts: Vec<u64> = (0..n).map(|_| down_ms + rng.gen_range(1..2_500)).collect();
        let mut crashes = Vec::new();
        for _ in 0..rng.gen_range(0..=2) {
            let node = rng.gen_range(0..n);
            if roles[node] != Role::Honest {
                continue;
            }
            let at_ms = rng.gen_range(0..faults_end_ms - 100);
            let restart_ms = (at_ms + rng.gen_range(50..1_500)).min(faults_end_ms);
            let overlaps = crashes
                .iter()
                .any(|c: &Crash| c.node == node && at_ms <= c.restart_ms && c.at_ms <= restart_ms);
            let before_stop = !whole_stop || restart_ms < stop_ms;
            if !overlaps && before_stop {
                crashes.push(Crash {
                    node,
                    at_ms,
                    down_by_ms: None,
                    restart_ms,
                });
            }
        }
        let mut faults_end_ms = faults_end_ms;
        let whole_stop = whole_stop.then(|| {
            for (node, at_ms, down_by_ms) in &stop_crashes {
                // Silent validators never run, so they have nothing to stop.
                if roles[*node] != Role::Silent {
                    crashes.push(Crash {
                        node: *node,
                        at_ms: *at_ms,
                        down_by_ms: Some(*down_by_ms),
                        restart_ms: restarts[*node],
                    });
                }
            }
            let last_restart_ms = restarts.iter().copied().max().unwrap_or(down_ms);
            faults_end_ms = faults_end_ms.max(last_restart_ms);
            WholeStop {
                stop_ms,
                down_ms,
                last_restart_ms,
            }
        });

        let mut scenario = Scenario {
            seed,
            powers,
            roles,
            latency_ms: rng.gen_range(2..40),
            jitter_ms: rng.gen_range(0..40),
            loss: if rng.gen_bool(0.3) {
                0.0
            } else {
                rng.gen_range(0.0..0.3)
            },
            duplication: rng.gen_range(0.0..0.1),
            partitions,
            crashes,
            faults_end_ms,
            liveness_blocks: 3,
            liveness_window_ms: 30_000,
            mutation_weak_quorum: force.mutation_weak_quorum,
            batch_delivery: rng.gen_bool(0.5),
            mutation_forget_safety: false,
            mutation_forget_blocks: false,
            mutation_forget_certificates: false,
            whole_stop,
            stays_down: Vec::new(),
            epoch_blocks: LONG_EPOCH_BLOCKS,
            sets: vec![(0..n).collect()],
            genesis_n: n,
            mutation_stale_set: false,
        };
        // Drawn last, so forcing it leaves the rest of the scenario as it was.
        let stays_down = rng.gen_bool(STAYS_DOWN_SHARE);
        if force.stays_down.unwrap_or(stays_down) && scenario.whole_stop.is_some() {
            let mut faulty_power = faulty_power;
            for _ in 0..n {
                let node = rng.gen_range(0..n);
                let power = scenario.powers[node];
                if scenario.roles[node] == Role::Honest
                    && !scenario.stays_down.contains(&node)
                    && faulty_power + power <= max_faulty
                {
                    faulty_power += power;
                    scenario.stays_down.push(node);
                }
            }
            for crash in &mut scenario.crashes {
                if crash.down_by_ms.is_some() && scenario.stays_down.contains(&crash.node) {
                    crash.restart_ms = u64::MAX;
                }
            }
        }
        // Drawn after everything else, so the fault mix of a seed is what it was before epochs.
        if rng.gen_bool(0.5) {
            scenario.epoch_blocks = rng.gen_range(3..=20);
        }
        let reconfigure = rng.gen_bool(RECONFIGURE_SHARE);
        if force.reconfigure.unwrap_or(reconfigure) {
            scenario.draw_reconfiguration(&mut rng, equal);
        }
        scenario
    }

    pub fn n(&self) -> usize {
        self.powers.len()
    }

    /// Adds up to `n / 2 + 1` nodes outside the genesis set and a schedule of sets over all of
    /// them: from epoch 2 on (the genesis set is in force for epochs 0 and 1), each epoch keeps
    /// the previous set or grows it, shrinks it or swaps a member, so long runs rotate it
    /// entirely. Every set keeps its faulty power — Byzantine members and validators that never
    /// come back — at most `f` of its own total, or the change is not made.
    fn draw_reconfiguration(&mut self, rng: &mut ChaCha8Rng, equal: bool) {
        let extra = self.n() / 2 + 1;
        for _ in 0..extra {
            self.powers
                .push(if equal { 1 } else { rng.gen_range(1..=5) });
            self.roles.push(Role::Honest);
        }
        // Boundaries every few blocks, so a run sees many sets.
        self.epoch_blocks = rng.gen_range(2..=4);
        let universe = self.n();
        let mut sets = vec![self.sets[0].clone(), self.sets[0].clone()];
        for _ in 2..SCHEDULED_EPOCHS {
            let mut next = sets.last().cloned().unwrap_or_default();
            match rng.gen_range(0..4) {
                0 => {}
                1 => {
                    let outside: Vec<usize> = (0..universe).filter(|i| !next.contains(i)).collect();
                    if !outside.is_empty() {
                        next.push(outside[rng.gen_range(0..outside.len())]);
                    }
                }
                2 => {
                    if next.len() > 1 {
                        next.remove(rng.gen_range(0..next.len()));
                    }
                }
                _ => {
                    let outside: Vec<usize> = (0..universe).filter(|i| !next.contains(i)).collect();
                    if !outside.is_empty() && !next.is_empty() {
                        let slot = rng.gen_range(0..next.len());
                        next[slot] = outside[rng.gen_range(0..outside.len())];
                    }
                }
            }
            next.sort_unstable();
            if !self.tolerates(&next) {
                next = sets.last().cloned().unwrap_or_default();
            }
            sets.push(next);
        }
        self.sets = sets;
        // Half the time one Byzantine validator that the schedule drops at some point turns
        // into a stale voter instead (its power was counted as faulty either way).
        let liars: Vec<usize> = (0..self.genesis_n)
            .filter(|i| !matches!(self.roles[*i], Role::Honest | Role::Silent))
            .filter(|i| self.sets.iter().any(|set| !set.contains(i)))
            .collect();
        if !liars.is_empty() && rng.gen_bool(0.5) {
            let node = liars[rng.gen_range(0..liars.len())];
            self.roles[node] = Role::StaleVoter;
        }
    }

    /// Whether `members` can lose its faulty ones: Byzantine validators, and (after a
    /// whole-network stop) those that never come back, hold at most `f` of its power.
    pub fn tolerates(&self, members: &[usize]) -> bool {
        let total: u64 = members.iter().map(|i| self.powers[*i]).sum();
        if total == 0 {
            return false;
        }
        let faulty: u64 = members
            .iter()
            .filter(|i| self.roles[**i] != Role::Honest || self.stays_down.contains(i))
            .map(|i| self.powers[*i])
            .sum();
        faulty <= (total - 1) / 3
    }

    /// The members of `epoch`'s set.
    pub fn members(&self, epoch: u64) -> &[usize] {
        let index = usize::try_from(epoch)
            .unwrap_or(usize::MAX)
            .min(self.sets.len().saturating_sub(1));
        &self.sets[index]
    }

    /// Whether the set changes at some boundary.
    pub fn reconfigures(&self) -> bool {
        self.sets.windows(2).any(|pair| pair[0] != pair[1])
    }

    /// One line describing the fault mix, for failure reports.
    pub fn describe(&self) -> String {
        format!(
            "n={} powers={:?} roles={:?} latency={}±{}ms loss={:.2} dup={:.2} partitions={} \
             crashes={} faults_end={}ms batches={} epoch_blocks={}{}{}",
            self.n(),
            self.powers,
            self.roles,
            self.latency_ms,
            self.jitter_ms,
            self.loss,
            self.duplication,
            self.partitions.len(),
            self.crashes.len(),
            self.faults_end_ms,
            self.batch_delivery,
            self.epoch_blocks,
            if self.reconfigures() {
                let changes = self
                    .sets
                    .windows(2)
                    .filter(|pair| pair[0] != pair[1])
                    .count();
                format!(
                    " reconfigure: {} nodes, genesis set {:?}, {changes} changes, last set {:?}",
                    self.n(),
                    self.sets[0],
                    self.sets.last().cloned().unwrap_or_default()
                )
            } else {
                String::new()
            },
            match &self.whole_stop {
                Some(stop) => format!(
                    " whole-stop={}..{}ms down, last restart {}ms{}",
                    stop.stop_ms,
                    stop.down_ms,
                    stop.last_restart_ms,
                    if self.stays_down.is_empty() {
                        String::new()
                    } else {
                        format!(", never back: {:?}", self.stays_down)
                    }
                ),
                None => String::new(),
            }
        )
    }
}
