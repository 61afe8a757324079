//! CPU cost of the consensus state machine alone (signature checks included): a committee of
//! n honest validators on a lossless, instant in-memory network finalizes blocks; the time is
//! the sum over all n validators, so per-validator cost per block is time / blocks / n.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::VecDeque;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mesh_consensus::{Config, Consensus, EpochInfo, Input, Output};
use mesh_ledger::{EpochSchedule, Hash, SecretKey, Validator, ValidatorSet};

const CHAIN: &str = "mesh-bench";

fn committee(n: usize) -> Vec<Consensus> {
    let keys: Vec<SecretKey> = (0..n)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            SecretKey::from_seed(seed)
        })
        .collect();
    let validators = ValidatorSet::new(
        keys.iter()
            .map(|key| Validator {
                address: key.address(),
                power: 1,
            })
            .collect(),
    )
    .unwrap();
    // One epoch longer than any run: the bench measures views, not boundaries.
    let config = Config::new(CHAIN, EpochSchedule::new(1_000_000));
    let epoch = EpochInfo::genesis(validators, Hash::of(b"bench genesis"));
    keys.into_iter()
        .map(|key| Consensus::new(config.clone(), key, epoch.clone()))
        .collect()
}

/// Runs the committee until every validator has finalized `blocks` blocks; returns how many
/// signed messages were delivered.
fn finalize_blocks(nodes: &mut [Consensus], blocks: u64) -> u64 {
    let mut queue: VecDeque<(usize, Input)> = VecDeque::new();
    let mut finalized = vec![0u64; nodes.len()];
    let mut delivered = 0u64;
    let mut pending: Vec<(usize, Vec<Output>)> = nodes
        .iter_mut()
        .enumerate()
        .map(|(i, node)| (i, node.start(0)))
        .collect();
    loop {
        for (from, outputs) in pending.drain(..) {
            let address = nodes[from].address();
            for output in outputs {
                match output {
                    Output::Broadcast(message) => {
                        for to in (0..nodes.len()).filter(|to| *to != from) {
                            let input = Input::Message {
                                from: address,
                                message: message.clone(),
                            };
                            queue.push_back((to, input));
                        }
                    }
                    Output::BuildPayload {
                        view,
                        height,
                        parent,
                    } => {
                        let payload = height.0.to_le_bytes().to_vec();
                        let block_hash = Hash::of(&[parent.as_bytes(), &payload[..]].concat());
                        queue.push_back((
                            from,
                            Input::PayloadBuilt {
                                view,
                                block_hash,
                                payload,
                            },
                        ));
                    }
                    Output::VerifyPayload {
                        view, block_hash, ..
                    } => {
                        queue.push_back((
                            from,
                            Input::PayloadVerified {
                                view,
                                block_hash,
                                valid: true,
                            },
                        ));
                    }
                    Output::Finalize { .. } => finalized[from] += 1,
                    _ => {}
                }
            }
        }
        if finalized.iter().all(|count| *count >= blocks) {
            return delivered;
        }
        let Some((to, input)) = queue.pop_front() else {
            panic!("committee stalled")
        };
        delivered += 1;
        pending.push((to, nodes[to].on_input(1, input)));
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("consensus");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    for (n, blocks, seconds) in [(4usize, 20u64, 3u64), (16, 5, 4), (64, 2, 8)] {
        group.measurement_time(Duration::from_secs(seconds));
        group.throughput(Throughput::Elements(blocks));
        group.bench_function(format!("finalize_{blocks}_blocks_n{n}"), |b| {
            b.iter_batched(
                || committee(n),
                |mut nodes| finalize_blocks(&mut nodes, blocks),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
