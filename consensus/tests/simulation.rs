//! Seeded fault simulation of the consensus state machine.
//!
//! * `simulation_seeds`: `MESH_SIM_SEEDS` seeds (default 1,000), every invariant checked.
//! * `whole_network_restarts_large_committees`: a fixed number of whole-network stops with
//!   10 and 16 validators every run, whatever the main draw gives.
//! * `replay_one_seed`: replays `MESH_SIM_SEED` with a trace (`-- --nocapture`).
//! * `same_seed_same_trace`: determinism.
//! * `weak_quorum_mutation_is_caught`, `forgotten_safety_state_is_caught`,
//!   `forgotten_blocks_are_caught`, `forgotten_certificates_are_caught`: the simulator can
//!   fail, each by the invariant meant to.
//! * `issue_20_lost_notarized_block`: the seed that reproduces issue 20 without the journal.
//! * `stale_set_mutation_is_caught`: machines that keep the old set after `EnterEpoch` are
//!   caught by `no-certificate-from-a-set-not-in-force`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use std::collections::BTreeMap;

use sim::scenario::Role;
use sim::scenario::{Draw, Scenario};
use sim::{run_scenario, run_seed, RunReport};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// What a run forces instead of drawing from the seed; read from the environment by
/// `simulation_seeds` and `replay_one_seed` (`MESH_SIM_N`, `MESH_SIM_WHOLE_STOP=0|1`,
/// `MESH_SIM_STAYS_DOWN=0|1`, `MESH_SIM_RECONFIG=0|1`, `MESH_SIM_MUTATION` for the weak quorum,
/// `MESH_SIM_FORGET_BLOCKS`, `MESH_SIM_FORGET_CERTIFICATES`), and printed back in replay
/// commands.
#[derive(Debug, Clone, Copy, Default)]
struct Options {
    draw: Draw,
    forget_blocks: bool,
    forget_certificates: bool,
}

impl Options {
    fn from_env() -> Options {
        Options {
            draw: Draw {
                n: env_u64("MESH_SIM_N").and_then(|n| usize::try_from(n).ok()),
                whole_stop: env_u64("MESH_SIM_WHOLE_STOP").map(|flag| flag != 0),
                stays_down: env_u64("MESH_SIM_STAYS_DOWN").map(|flag| flag != 0),
                mutation_weak_quorum: std::env::var("MESH_SIM_MUTATION").is_ok(),
                reconfigure: env_u64("MESH_SIM_RECONFIG").map(|flag| flag != 0),
            },
            forget_blocks: std::env::var("MESH_SIM_FORGET_BLOCKS").is_ok(),
            forget_certificates: std::env::var("MESH_SIM_FORGET_CERTIFICATES").is_ok(),
        }
    }

    fn scenario(&self, seed: u64) -> Scenario {
        let mut scenario = Scenario::draw(seed, self.draw);
        scenario.mutation_forget_blocks = self.forget_blocks;
        scenario.mutation_forget_certificates = self.forget_certificates;
        scenario
    }

    fn env_prefix(&self) -> String {
        let mut prefix = String::new();
        if let Some(n) = self.draw.n {
            prefix.push_str(&format!("MESH_SIM_N={n} "));
        }
        if let Some(whole_stop) = self.draw.whole_stop {
            prefix.push_str(&format!("MESH_SIM_WHOLE_STOP={} ", u8::from(whole_stop)));
        }
        if let Some(stays_down) = self.draw.stays_down {
            prefix.push_str(&format!("MESH_SIM_STAYS_DOWN={} ", u8::from(stays_down)));
        }
        if self.draw.mutation_weak_quorum {
            prefix.push_str("MESH_SIM_MUTATION=1 ");
        }
        if let Some(reconfigure) = self.draw.reconfigure {
            prefix.push_str(&format!("MESH_SIM_RECONFIG={} ", u8::from(reconfigure)));
        }
        if self.forget_blocks {
            prefix.push_str("MESH_SIM_FORGET_BLOCKS=1 ");
        }
        if self.forget_certificates {
            prefix.push_str("MESH_SIM_FORGET_CERTIFICATES=1 ");
        }
        prefix
    }
}

fn replay_command(seed: u64, options: &Options) -> String {
    format!(
        "{}MESH_SIM_SEED={seed} cargo test -p mesh-consensus --test simulation replay_one_seed \
         -- --nocapture",
        options.env_prefix()
    )
}

/// Runs `seeds` on two threads (the machine has two cores), in seed order.
fn run_seeds(seeds: &[u64], options: Options) -> Vec<RunReport> {
    let threads = 2usize;
    let mut reports: Vec<RunReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    seeds
                        .iter()
                        .skip(thread)
                        .step_by(threads)
                        .map(|seed| run_scenario(options.scenario(*seed), false))
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

/// Prints every failing seed with its violations and replay command; returns how many
/// violations there were.
fn print_failures(reports: &[RunReport], options: &Options) -> usize {
    let mut violations = 0;
    for report in reports {
        if report.violations.is_empty() {
            continue;
        }
        violations += report.violations.len();
        println!(
            "seed {} FAILED: {}",
            report.seed,
            report.scenario.describe()
        );
        for violation in &report.violations {
            println!("  {violation}");
        }
        println!("  replay: {}", replay_command(report.seed, options));
    }
    violations
}

#[test]
fn simulation_seeds() {
    let count = env_u64("MESH_SIM_SEEDS").unwrap_or(1_000);
    let first = env_u64("MESH_SIM_FIRST_SEED").unwrap_or(0);
    let options = Options::from_env();
    let started = std::time::Instant::now();
    let seeds: Vec<u64> = (first..first + count).collect();
    let reports = run_seeds(&seeds, options);
    let violations = print_failures(&reports, &options);
    let mut blocks = 0;
    let mut mix: BTreeMap<String, u64> = BTreeMap::new();
    for report in &reports {
        blocks += report.blocks_finalized;
        *mix.entry(format!("n={}", report.scenario.genesis_n))
            .or_default() += 1;
        for role in &report.scenario.roles {
            if *role != Role::Honest {
                *mix.entry(format!("{role:?}")).or_default() += 1;
            }
        }
        *mix.entry("crashes".into()).or_default() += report.scenario.crashes.len() as u64;
        if report.scenario.whole_stop.is_some() {
            *mix.entry(format!("whole-stop n={}", report.scenario.genesis_n))
                .or_default() += 1;
        }
        if !report.scenario.stays_down.is_empty() {
            *mix.entry("whole-stop left down".into()).or_default() += 1;
        }
        *mix.entry("certificates-from-journal".into()).or_default() +=
            report.certificates_from_journal;
        *mix.entry("fetches".into()).or_default() += report.fetches_sent;
        *mix.entry(format!("ms n={}", report.scenario.genesis_n))
            .or_default() += report.wall_ms;
        if report.scenario.whole_stop.is_some() {
            *mix.entry(format!("ms whole-stop n={}", report.scenario.genesis_n))
                .or_default() += report.wall_ms;
        }
        *mix.entry("blocks-fetched".into()).or_default() += report.blocks_fetched;
        *mix.entry("blocks-from-journal".into()).or_default() += report.blocks_from_journal;
        *mix.entry("partitions".into()).or_default() += report.scenario.partitions.len() as u64;
        *mix.entry("evidence".into()).or_default() += report.evidence_reported;
        *mix.entry("batches".into()).or_default() += report.batches_delivered;
        if report.scenario.loss > 0.0 {
            *mix.entry("lossy".into()).or_default() += 1;
        }
        if report.scenario.reconfigures() {
            *mix.entry("reconfiguring".into()).or_default() += 1;
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

/// Whole-network stops with 10 and 16 validators are costly (votes and certificates grow with
/// n²), so the main draw has few of them; this many of each run every time.
const LARGE_WHOLE_STOP_SEEDS: u64 = 8;

/// Every validator of a 10- or 16-validator network crashes (mid-batch or between batches)
/// and restarts in some order: with the block journal and fetching by hash, every invariant
/// holds, liveness-after-restart included.
#[test]
fn whole_network_restarts_large_committees() {
    let count = env_u64("MESH_SIM_LARGE_SEEDS").unwrap_or(LARGE_WHOLE_STOP_SEEDS);
    let seeds: Vec<u64> = (0..count).collect();
    let mut violations = 0;
    for n in [10, 16] {
        let options = Options {
            draw: Draw {
                n: Some(n),
                whole_stop: Some(true),
                ..Draw::default()
            },
            forget_blocks: false,
            forget_certificates: false,
        };
        let reports = run_seeds(&seeds, options);
        violations += print_failures(&reports, &options);
        assert!(reports
            .iter()
            .all(|report| report.scenario.genesis_n == n && report.scenario.whole_stop.is_some()));
        let from_journal: u64 = reports.iter().map(|r| r.blocks_from_journal).sum();
        let fetched: u64 = reports.iter().map(|r| r.blocks_fetched).sum();
        println!(
            "whole-network stop, n={n}: {count} seeds, {from_journal} blocks recovered from \
             journals, {fetched} fetched by hash"
        );
    }
    assert_eq!(
        violations, 0,
        "whole-network restarts found violations; see the replay commands above"
    );
}

#[test]
fn replay_one_seed() {
    let Some(seed) = env_u64("MESH_SIM_SEED") else {
        return;
    };
    let options = Options::from_env();
    let report = run_scenario(options.scenario(seed), true);
    println!("seed {seed}: {}", report.scenario.describe());
    println!("trace hash {}", report.trace_hash);
    println!("blocks finalized {}", report.blocks_finalized);
    println!(
        "fetches {} (blocks fetched {}), from journals {} blocks and {} certificates, parents no \
         node holds {:?}",
        report.fetches_sent,
        report.blocks_fetched,
        report.blocks_from_journal,
        report.certificates_from_journal,
        report.lost_parents
    );
    println!("view outcomes {:?}", report.view_outcomes);
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
    // A whole-network stop, with fetches and journal recovery, replays the same way too.
    let whole_stop = Draw {
        n: Some(7),
        whole_stop: Some(true),
        stays_down: Some(true),
        reconfigure: Some(false),
        ..Draw::default()
    };
    let first = run_scenario(Scenario::draw(3, whole_stop), false);
    let second = run_scenario(Scenario::draw(3, whole_stop), false);
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.fetches_sent, second.fetches_sent);
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

/// Without the block journal (blocks in memory only: the application before issue 20's fix),
/// a network stopped as a whole loses notarized blocks nobody finalized; when such a block's
/// view can be neither finalized nor nullified, every later block must extend it and nobody
/// can build one. Across a fixed set of whole-network stops with 4 and 7 validators the
/// liveness-after-restart invariant must report it, naming a parent no node holds, and the
/// same seeds must pass with the journal.
#[test]
fn forgotten_blocks_are_caught() {
    let seeds: Vec<u64> = (0..16).collect();
    let mut caught = Vec::new();
    for n in [4, 7] {
        let draw = Draw {
            n: Some(n),
            whole_stop: Some(true),
            stays_down: Some(false),
            reconfigure: Some(false),
            ..Draw::default()
        };
        let mutated = Options {
            draw,
            forget_blocks: true,
            forget_certificates: false,
        };
        for report in run_seeds(&seeds, mutated) {
            for violation in &report.violations {
                assert!(
                    violation.starts_with("liveness-after-restart")
                        && !report.lost_parents.is_empty(),
                    "without the journal, seed {} (n={n}) failed otherwise than by a lost \
                     parent: {violation}\n  replay: {}",
                    report.seed,
                    replay_command(report.seed, &mutated)
                );
            }
            if !report.violations.is_empty() {
                caught.push((n, report.seed, report.lost_parents.clone()));
            }
        }
    }
    println!(
        "mutation-forget-blocks: caught in {} of {} whole-network stops: {caught:?}",
        caught.len(),
        2 * seeds.len()
    );
    assert!(
        !caught.is_empty(),
        "the simulator did not catch an application without a block journal"
    );
    for (n, seed, _) in &caught {
        let draw = Draw {
            n: Some(*n),
            whole_stop: Some(true),
            stays_down: Some(false),
            reconfigure: Some(false),
            ..Draw::default()
        };
        let report = run_scenario(Scenario::draw(*seed, draw), false);
        assert!(
            report.violations.is_empty(),
            "seed {seed} (n={n}) fails with the journal too: {:?}",
            report.violations
        );
    }
}

/// Issue 20, as the simulator reproduces it: seed 80, 16 validators of equal power, all honest,
/// whole-network stop between 762 and 1,124 ms, restarts until 3,598 ms. Before the stop the
/// block of view 8 (height 8) was notarized and 9 validators had voted finalize in view 8, but
/// no finality certificate formed; after the restart the other 7 nullified view 8. View 8 can
/// now be neither finalized (9 < 11) nor nullified (7 < 11), so every later proposal must
/// extend its block. Without the journal no node holds that block after the restart: every
/// view times out with no proposal from the leader and nothing is finalized again (the
/// fixture's stall). With the journal the block comes back (`BlocksRecovered`, fetched by
/// hash where missing) and the chain goes on.
#[test]
fn issue_20_lost_notarized_block() {
    const SEED: u64 = 80;
    let draw = Draw {
        n: Some(16),
        whole_stop: Some(true),
        stays_down: Some(false),
        reconfigure: Some(false),
        ..Draw::default()
    };
    let scenario = Scenario::draw(SEED, draw);
    assert!(
        scenario.powers.iter().all(|power| *power == 1)
            && scenario.roles.iter().all(|role| *role == Role::Honest),
        "the scenario generator changed: seed {SEED} no longer draws the fixture's committee"
    );

    let mut without_journal = scenario.clone();
    without_journal.mutation_forget_blocks = true;
    let broken = run_scenario(without_journal, false);
    println!("without the journal: {:?}", broken.violations);
    assert!(
        broken
            .violations
            .iter()
            .any(|v| v.starts_with("liveness-after-restart")),
        "seed {SEED} no longer stalls without the journal: {:?}",
        broken.violations
    );
    assert!(
        !broken.lost_parents.is_empty(),
        "the stall is not the lost notarized parent of issue 20"
    );

    let fixed = run_scenario(scenario, false);
    println!(
        "with the journal: {} blocks recovered from journals, {} fetched, views {:?}",
        fixed.blocks_from_journal, fixed.blocks_fetched, fixed.view_outcomes
    );
    assert!(
        fixed.violations.is_empty(),
        "seed {SEED} fails with the journal: {:?}",
        fixed.violations
    );
    assert!(fixed.blocks_from_journal > 0);
}

/// Without the driver's certificate journal (notarizations and nullifications in memory only:
/// the node before issue 20's fix), a network stopped as a whole can lose a view's
/// certificate for good: validators with more than `P − quorum` power finalize-voted in the
/// view (so it can never be nullified), but the notarize votes re-sent after the restart fall
/// short of a quorum because a signer does not re-send its vote. Likewise a validator that
/// restarts in view `w` (the last it voted in) cannot bring peers stuck in `w − 1` along when
/// the nullification of `w − 1` needs a vote from a validator that stays down. Every validator
/// then waits forever though a quorum is up. The simulator must notice, and the same seeds
/// must pass with the journal:
///
/// * seed 6, 4 honest validators of powers [2, 4, 4, 4] (quorum 10), node 0 never comes back:
///   view 7 was notarized with node 0's vote; 3 voted finalize, 1 and 2 nullified. After the
///   restart view 7 can be neither nullified (power 8) nor notarized again, so every later
///   view is nullified for want of a certified parent.
/// * seed 21, 4 validators, every one restarts, node 0 an equivocating leader of view 3: 1 and
///   3 held the notarization of block 3f1d… and voted finalize; 0 and 2 notarized the other
///   block (ed9f…) and nullified. After the restart only 2 votes exist for either outcome.
///
/// In both, the validators that moved on had assembled the notarization themselves and, not
/// leading the next two views, never relayed it (docs/consensus.md, "Relaying certificates"):
/// only their journal kept it. (Seed 89 played this part before that rule.)
/// * a fixed set of whole-network stops with validators left down (seeds 0–47 with 4
///   validators, 0–7 with 10).
#[test]
fn forgotten_certificates_are_caught() {
    let options = |n: usize, stays_down: bool, forget_certificates: bool| Options {
        draw: Draw {
            n: Some(n),
            whole_stop: Some(true),
            stays_down: Some(stays_down),
            reconfigure: Some(false),
            ..Draw::default()
        },
        forget_blocks: false,
        forget_certificates,
    };
    for (seed, stays_down) in [(6, true), (21, false)] {
        let mutated = options(4, stays_down, true);
        let broken = run_scenario(mutated.scenario(seed), false);
        assert!(
            broken
                .violations
                .iter()
                .any(|v| v.starts_with("liveness-after-restart")),
            "seed {seed} no longer stalls without the certificate journal: {:?}\n  replay: {}",
            broken.violations,
            replay_command(seed, &mutated)
        );
        let fixed = run_scenario(options(4, stays_down, false).scenario(seed), false);
        assert!(
            fixed.violations.is_empty(),
            "seed {seed} fails with the certificate journal: {:?}",
            fixed.violations
        );
        assert!(fixed.certificates_from_journal > 0);
    }

    let mut caught = Vec::new();
    let mut runs = 0;
    for (n, count) in [(4, 48), (10, 8)] {
        let seeds: Vec<u64> = (0..count).collect();
        runs += seeds.len();
        let mutated = options(n, true, true);
        for report in run_seeds(&seeds, mutated) {
            for violation in &report.violations {
                assert!(
                    violation.starts_with("liveness-after-restart"),
                    "without the certificate journal, seed {} (n={n}) failed otherwise: \
                     {violation}\n  replay: {}",
                    report.seed,
                    replay_command(report.seed, &mutated)
                );
            }
            if !report.violations.is_empty() {
                caught.push((n, report.seed));
            }
        }
    }
    println!(
        "mutation-forget-certificates: caught in {} of {} whole-network stops with validators \
         left down: {caught:?}",
        caught.len(),
        runs
    );
    assert!(
        !caught.is_empty(),
        "the simulator did not catch a driver without a certificate journal"
    );
    for (n, seed) in &caught {
        let report = run_scenario(options(*n, true, false).scenario(*seed), false);
        assert!(
            report.violations.is_empty(),
            "seed {seed} (n={n}) fails with the certificate journal too: {:?}",
            report.violations
        );
    }
}

/// Machines that keep tallying and verifying with the previous set after `EnterEpoch` sign
/// certificates the set in force never signed: `no-certificate-from-a-set-not-in-force` must
/// notice, within a bounded number of reconfiguring seeds, and the same seeds must pass
/// without the mutation.
#[test]
fn stale_set_mutation_is_caught() {
    let budget = 200;
    let draw = Draw {
        reconfigure: Some(true),
        whole_stop: Some(false),
        ..Draw::default()
    };
    for seed in 0..budget {
        let mut scenario = Scenario::draw(seed, draw);
        scenario.mutation_stale_set = true;
        let report = run_scenario(scenario, false);
        let Some(caught) = report
            .violations
            .iter()
            .find(|v| v.starts_with("no-certificate-from-a-set-not-in-force"))
        else {
            continue;
        };
        println!("mutation-stale-set: caught at seed {seed}: {caught}");
        let honest = run_scenario(Scenario::draw(seed, draw), false);
        assert!(
            honest.violations.is_empty(),
            "seed {seed} fails without the mutation too: {:?}",
            honest.violations
        );
        return;
    }
    panic!("the simulator did not catch a machine keeping a stale set in {budget} seeds");
}
