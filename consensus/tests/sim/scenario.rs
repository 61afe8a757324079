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
    pub at_ms: u64,
    pub restart_ms: u64,
}

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
}

impl Scenario {
    pub fn from_seed(seed: u64, mutation_weak_quorum: bool) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed);
        let n: usize = if rng.gen_bool(0.65) { 4 } else { 7 };
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
            if !overlaps {
                crashes.push(Crash {
                    node,
                    at_ms,
                    restart_ms,
                });
            }
        }

        Scenario {
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
            mutation_weak_quorum,
            batch_delivery: rng.gen_bool(0.5),
            mutation_forget_safety: false,
        }
    }

    pub fn n(&self) -> usize {
        self.powers.len()
    }

    /// One line describing the fault mix, for failure reports.
    pub fn describe(&self) -> String {
        format!(
            "n={} powers={:?} roles={:?} latency={}±{}ms loss={:.2} dup={:.2} partitions={} \
             crashes={} faults_end={}ms batches={}",
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
            self.batch_delivery
        )
    }
}
