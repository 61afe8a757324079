//! Seeded fault simulation of the consensus state machine.
//!
//! * `simulation_seeds`: `MESH_SIM_SEEDS` seeds (default 1,000), every invariant checked.
//! * `replay_one_seed`: replays `MESH_SIM_SEED` with a trace (`-- --nocapture`).
//! * `same_seed_same_trace`: determinism.
//! * `weak_quorum_mutation_is_caught`: the simulator can fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use std::collections::BTreeMap;

use sim::scenario::Role;
use sim::scenario::Scenario;
use sim::{run_scenario, run_seed, RunReport};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

fn replay_command(seed: u64) -> String {
    format!(
        "MESH_SIM_SEED={seed} cargo test -p mesh-consensus --test simulation replay_one_seed \
         -- --nocapture"
    )
}

/// Runs seeds `first..first + count` on two threads (the machine has two cores).
fn run_seeds(first: u64, count: u64, mutation: bool) -> Vec<RunReport> {
    let threads = 2u64;
    let mut reports: Vec<RunReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    (first..first + count)
                        .filter(|seed| seed % threads == thread)
                        .map(|seed| run_seed(seed, mutation, false))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap())
            .collect()
    });
    reports.sort_by_key(|report| report.seed);
    reports
}

#[test]
fn simulation_seeds() {
    let count = env_u64("MESH_SIM_SEEDS").unwrap_or(1_000);
    let first = env_u64("MESH_SIM_FIRST_SEED").unwrap_or(0);
    let started = std::time::Instant::now();
    let reports = run_seeds(first, count, false);
    let mut violations = 0;
    let mut blocks = 0;
    let mut mix: BTreeMap<String, u64> = BTreeMap::new();
    for report in &reports {
        blocks += report.blocks_finalized;
        *mix.entry(format!("n={}", report.scenario.n())).or_default() += 1;
        for role in &report.scenario.roles {
            if *role != Role::Honest {
                *mix.entry(format!("{role:?}")).or_default() += 1;
            }
        }
        *mix.entry("crashes".into()).or_default() += report.scenario.crashes.len() as u64;
        *mix.entry("partitions".into()).or_default() += report.scenario.partitions.len() as u64;
        *mix.entry("evidence".into()).or_default() += report.evidence_reported;
        *mix.entry("batches".into()).or_default() += report.batches_delivered;
        if report.scenario.loss > 0.0 {
            *mix.entry("lossy".into()).or_default() += 1;
        }
        if !report.violations.is_empty() {
            violations += report.violations.len();
            println!(
                "seed {} FAILED: {}",
                report.seed,
                report.scenario.describe()
            );
            for violation in &report.violations {
                println!("  {violation}");
            }
            println!("  replay: {}", replay_command(report.seed));
        }
    }
    println!(
        "simulation: {count} seeds, {violations} violations, {blocks} blocks finalized \
         ({:.1}s; mix {mix:?})",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        violations, 0,
        "simulation found violations; see the replay commands above"
    );
}

#[test]
fn replay_one_seed() {
    let Some(seed) = env_u64("MESH_SIM_SEED") else {
        return;
    };
    let mutation = std::env::var("MESH_SIM_MUTATION").is_ok();
    let report = run_seed(seed, mutation, true);
    println!("seed {seed}: {}", report.scenario.describe());
    println!("trace hash {}", report.trace_hash);
    println!("blocks finalized {}", report.blocks_finalized);
    for violation in &report.violations {
        println!("  {violation}");
    }
    assert!(report.violations.is_empty());
}

#[test]
fn same_seed_same_trace() {
    for seed in [7, 42, 1234] {
        let first = run_seed(seed, false, false);
        let second = run_seed(seed, false, false);
        assert_eq!(
            first.trace_hash, second.trace_hash,
            "seed {seed} is not deterministic"
        );
        assert_eq!(first.blocks_finalized, second.blocks_finalized);
    }
    assert_ne!(
        run_seed(1, false, false).trace_hash,
        run_seed(2, false, false).trace_hash
    );
}

/// With a quorum of f+1 instead of 2f+1 two sides of a partition, or the two halves an
/// equivocating leader addresses, can finalize different blocks: the simulator must notice,
/// and by the agreement invariant specifically, within the default seed budget.
#[test]
fn weak_quorum_mutation_is_caught() {
    let budget = 1_000;
    let mut with_violations = 0;
    for seed in 0..budget {
        let report = run_seed(seed, true, false);
        if report.violations.is_empty() {
            continue;
        }
        with_violations += 1;
        if let Some(agreement) = report
            .violations
            .iter()
            .find(|v| v.starts_with("agreement"))
        {
            println!(
                "mutation-weak-quorum: caught at seed {seed} ({with_violations} of {} seeds so \
                 far had violations): {agreement}",
                seed + 1
            );
            return;
        }
    }
    panic!("the simulator did not catch a weakened quorum in {budget} seeds");
}

/// A driver that restarts validators without their persisted safety state lets them sign
/// votes that contradict their earlier ones: the no-self-equivocation invariant must notice.
#[test]
fn forgotten_safety_state_is_caught() {
    let budget = 1_000;
    for seed in 0..budget {
        let mut scenario = Scenario::from_seed(seed, false);
        if scenario.crashes.is_empty() {
            continue;
        }
        scenario.mutation_forget_safety = true;
        let report = run_scenario(scenario, false);
        let caught = report
            .violations
            .iter()
            .find(|v| v.starts_with("no-self-equivocation"));
        if let Some(violation) = caught {
            println!("mutation-forget-safety: caught at seed {seed}: {violation}");
            return;
        }
    }
    panic!("the simulator did not catch restarts without the safety state in {budget} seeds");
}
