//! Staking and epochs (ADR 003 §1–2): every rejection reason with its code, the cut's tie rule,
//! the release height of unbonded funds, `set(e + 2)` computed at `last(e)`, the headers' set
//! hashes, and conservation of value across random operation sequences.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)] // tests: a panic is a failure

mod support;

use std::collections::BTreeMap;

use mesh_ledger::execution::{apply_block, BlockError};
use mesh_ledger::staking::{
    self, bond_of, cut, epoch_set, stake_table, unbonding_of, Candidate, StakeTable, StakingState,
    UnbondingQueue,
};
use mesh_ledger::state::{StateError, StateReader};
use mesh_ledger::tx::TxError;
use mesh_ledger::{
    Account, Address, FailureReason, Genesis, GenesisAccount, Op, Params, ReceiptStatus, SecretKey,
    Validator, ValidatorSet,
};
use proptest::prelude::*;
use support::{key, tx, MemChain, CHAIN};

const ACCOUNTS: u64 = 12;
const BALANCE: u64 = 1_000;
const POWER: u64 = 10;

/// Epochs of 3 blocks, bonds of at least 5, at most 4 validators (8 candidates), at least 2.
fn params() -> Params {
    Params {
        epoch_blocks: 3,
        min_bond: 5,
        max_validators: 4,
        min_validators: 2,
        ..Params::default()
    }
}

fn validator(i: u64) -> SecretKey {
    key(1000 + i)
}

/// `validators` genesis validators of power 10 (funded too, to pay fees) and 12 accounts.
fn genesis(validators: u64, params: Params) -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 1_700_000_000_000,
        validators: (0..validators)
            .map(|i| Validator {
                address: validator(i).address(),
                power: POWER,
            })
            .collect(),
        balances: (0..ACCOUNTS)
            .map(key)
            .chain((0..validators).map(validator))
            .map(|k| GenesisAccount {
                address: k.address(),
                balance: BALANCE,
            })
            .collect(),
        params,
    }
}

fn op_tx(
    chain: &MemChain,
    from: &SecretKey,
    nonce_offset: u64,
    op: Op,
) -> mesh_ledger::SignedTransaction {
    tx(from, chain.nonce(from) + nonce_offset, 1, op)
}

/// Runs `ops` (each from its own sender, or the same sender in order) as the next block and
/// returns the receipts' statuses.
fn block(chain: &mut MemChain, ops: Vec<(&SecretKey, Op)>) -> Vec<ReceiptStatus> {
    let mut offsets: BTreeMap<Address, u64> = BTreeMap::new();
    let txs = ops
        .into_iter()
        .map(|(from, op)| {
            let offset = offsets.entry(from.address()).or_insert(0);
            let stx = op_tx(chain, from, *offset, op);
            *offset += 1;
            stx
        })
        .collect();
    chain
        .push(txs)
        .receipts
        .iter()
        .map(|r| r.status.clone())
        .collect()
}

fn one(chain: &mut MemChain, from: &SecretKey, op: Op) -> ReceiptStatus {
    block(chain, vec![(from, op)]).remove(0)
}

fn failure(status: &ReceiptStatus) -> (&FailureReason, Option<i32>) {
    match status {
        ReceiptStatus::Failed { reason } => (reason, reason.code()),
        ReceiptStatus::Success => panic!("the operation succeeded"),
    }
}

fn bond(to: &SecretKey, amount: u64) -> Op {
    Op::Bond {
        validator: to.address(),
        amount,
    }
}

fn unbond(from: &SecretKey, amount: u64) -> Op {
    Op::Unbond {
        validator: from.address(),
        amount,
    }
}

fn balance(chain: &MemChain, who: &SecretKey) -> u64 {
    chain
        .state
        .account(&who.address())
        .unwrap()
        .unwrap_or_default()
        .balance
}

fn power_in(set: &ValidatorSet, who: &SecretKey) -> u64 {
    set.power_of(&who.address())
}

#[test]
fn delegating_or_unbonding_from_a_key_that_is_not_a_candidate_is_unknown_validator() {
    let mut chain = MemChain::new(&genesis(4, params()));
    let stranger = key(500);
    let status = one(&mut chain, &key(0), bond(&stranger, 5));
    assert_eq!(
        failure(&status),
        (
            &FailureReason::UnknownValidator {
                validator: stranger.address()
            },
            Some(1301)
        )
    );
    assert_eq!(
        balance(&chain, &key(0)),
        BALANCE - 1,
        "only the fee is paid"
    );
    let status = one(&mut chain, &key(0), unbond(&stranger, 5));
    assert_eq!(failure(&status).1, Some(1301));
    assert_eq!(stake_table(&chain.state).unwrap().candidates().len(), 4);
}

#[test]
fn a_small_registration_or_a_small_remainder_is_below_minimum_bond() {
    let mut chain = MemChain::new(&genesis(4, params()));
    let status = one(&mut chain, &key(0), bond(&key(0), 4));
    assert_eq!(
        failure(&status),
        (
            &FailureReason::BelowMinimumBond {
                bonded: 4,
                min_bond: 5
            },
            Some(1302)
        )
    );
    assert!(stake_table(&chain.state)
        .unwrap()
        .get(&key(0).address())
        .is_none());
    // A genesis validator (10) may go down to 5, not to 4.
    let status = one(&mut chain, &validator(0), unbond(&validator(0), 6));
    assert_eq!(
        failure(&status),
        (
            &FailureReason::BelowMinimumBond {
                bonded: 4,
                min_bond: 5
            },
            Some(1302)
        )
    );
    assert_eq!(
        one(&mut chain, &validator(0), unbond(&validator(0), 5)),
        ReceiptStatus::Success
    );
    // Registering with exactly the minimum works.
    assert_eq!(
        one(&mut chain, &key(0), bond(&key(0), 5)),
        ReceiptStatus::Success
    );
}

#[test]
fn registering_into_a_full_table_is_validator_set_full() {
    let mut chain = MemChain::new(&genesis(4, params()));
    // 4 genesis validators; the table holds 2 × max_validators = 8.
    let keys: Vec<SecretKey> = (0..5).map(key).collect();
    let statuses = block(&mut chain, keys.iter().map(|k| (k, bond(k, 5))).collect());
    assert!(statuses[..4].iter().all(|s| *s == ReceiptStatus::Success));
    assert_eq!(
        failure(&statuses[4]),
        (
            &FailureReason::ValidatorSetFull { candidates_max: 8 },
            Some(1303)
        )
    );
    assert_eq!(stake_table(&chain.state).unwrap().candidates().len(), 8);
    // Bonding more to an existing candidate is not a registration.
    assert_eq!(
        one(&mut chain, &key(0), bond(&key(0), 5)),
        ReceiptStatus::Success
    );
    assert_eq!(
        one(&mut chain, &key(9), bond(&key(1), 5)),
        ReceiptStatus::Success
    );
}

#[test]
fn unbonding_more_than_bonded_is_insufficient_bond() {
    let mut chain = MemChain::new(&genesis(4, params()));
    assert_eq!(
        one(&mut chain, &key(0), bond(&validator(0), 5)),
        ReceiptStatus::Success
    );
    let status = one(&mut chain, &key(0), unbond(&validator(0), 6));
    assert_eq!(
        failure(&status),
        (
            &FailureReason::InsufficientBond {
                bonded: 5,
                requested: 6
            },
            Some(1304)
        )
    );
    // The validator's other bonds do not count: key(1) bonded nothing.
    let status = one(&mut chain, &key(1), unbond(&validator(0), 1));
    assert_eq!(
        failure(&status).0,
        &FailureReason::InsufficientBond {
            bonded: 0,
            requested: 1
        }
    );
    assert_eq!(
        bond_of(&chain.state, &validator(0).address(), &key(0).address()).unwrap(),
        5
    );
}

#[test]
fn unbonding_the_last_validator_is_would_empty_set() {
    let params = Params {
        min_validators: 1,
        ..params()
    };
    let mut chain = MemChain::new(&genesis(1, params));
    let status = one(&mut chain, &validator(0), unbond(&validator(0), POWER));
    assert_eq!(
        failure(&status),
        (&FailureReason::WouldEmptySet, Some(1305))
    );
    assert_eq!(
        stake_table(&chain.state)
            .unwrap()
            .get(&validator(0).address())
            .unwrap()
            .bonded,
        POWER
    );
}

#[test]
fn a_cut_below_min_validators_is_below_safe_size_until_a_candidate_replaces_the_leaver() {
    let params = Params {
        min_validators: 4,
        ..params()
    };
    let mut chain = MemChain::new(&genesis(4, params));
    let status = one(&mut chain, &validator(0), unbond(&validator(0), POWER));
    assert_eq!(
        failure(&status),
        (
            &FailureReason::BelowSafeSize {
                size: 3,
                min_validators: 4
            },
            Some(1306)
        )
    );
    // The check is on the cut, not the table: with a fifth candidate the leaver may go.
    assert_eq!(
        one(&mut chain, &key(0), bond(&key(0), 5)),
        ReceiptStatus::Success
    );
    assert_eq!(
        one(&mut chain, &validator(0), unbond(&validator(0), POWER)),
        ReceiptStatus::Success
    );
    assert!(stake_table(&chain.state)
        .unwrap()
        .get(&validator(0).address())
        .is_none());
}

/// Staking state in maps: the pure functions of `staking` without execution around them.
#[derive(Default, Clone, PartialEq, Debug)]
struct Maps {
    accounts: BTreeMap<Address, Account>,
    table: StakeTable,
    bonds: BTreeMap<(Address, Address), u64>,
    queues: BTreeMap<u64, UnbondingQueue>,
    sets: BTreeMap<u64, ValidatorSet>,
}

impl StakingState for Maps {
    fn account(&mut self, address: &Address) -> Result<Account, StateError> {
        Ok(self.accounts.get(address).copied().unwrap_or_default())
    }
    fn set_account(&mut self, address: Address, account: Account) {
        self.accounts.insert(address, account);
    }
    fn stake_table(&mut self) -> Result<&StakeTable, StateError> {
        Ok(&self.table)
    }
    fn stake_table_mut(&mut self) -> Result<&mut StakeTable, StateError> {
        Ok(&mut self.table)
    }
    fn bond(&mut self, validator: &Address, owner: &Address) -> Result<u64, StateError> {
        Ok(self.bonds.get(&(*validator, *owner)).copied().unwrap_or(0))
    }
    fn set_bond(
        &mut self,
        validator: Address,
        owner: Address,
        amount: u64,
    ) -> Result<(), StateError> {
        if amount == 0 {
            self.bonds.remove(&(validator, owner));
        } else {
            self.bonds.insert((validator, owner), amount);
        }
        Ok(())
    }
    fn unbonding(&mut self, release_epoch: u64) -> Result<&UnbondingQueue, StateError> {
        Ok(self.queues.entry(release_epoch).or_default())
    }
    fn unbonding_mut(&mut self, release_epoch: u64) -> Result<&mut UnbondingQueue, StateError> {
        Ok(self.queues.entry(release_epoch).or_default())
    }
    fn set_epoch_set(&mut self, epoch: u64, set: Option<&ValidatorSet>) -> Result<(), StateError> {
        match set {
            Some(set) => self.sets.insert(epoch, set.clone()),
            None => self.sets.remove(&epoch),
        };
        Ok(())
    }
}

#[test]
fn an_unbond_into_a_full_queue_is_unbonding_queue_full_unless_its_owner_is_queued() {
    let params = params();
    let set = ValidatorSet::new(
        (0..4)
            .map(|i| Validator {
                address: validator(i).address(),
                power: 100,
            })
            .collect(),
    )
    .unwrap();
    let mut maps = Maps {
        table: StakeTable::from_genesis(&set),
        ..Maps::default()
    };
    for i in 0..4 {
        let v = validator(i).address();
        maps.bonds.insert((v, v), 100);
    }
    // Height 1 is in epoch 0: its unbonds are released at the end of epoch 1.
    let queued = key(0).address();
    let mut entries = vec![(queued, 1)];
    entries.extend(
        (1..mesh_ledger::limits::UNBONDS_PER_EPOCH_MAX as u64).map(|i| {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&i.to_le_bytes());
            (Address(bytes), 1)
        }),
    );
    maps.queues.insert(1, UnbondingQueue { entries });
    let v = validator(0).address();
    let before = maps.clone();
    let outcome = staking::unbond(&mut maps, &params, 1, v, v, 10).unwrap();
    assert_eq!(
        outcome,
        Err(FailureReason::UnbondingQueueFull { release_epoch: 1 })
    );
    assert_eq!(outcome.unwrap_err().code(), Some(1307));
    assert_eq!(maps, before, "a refused unbond changes nothing");
    // An owner already queued adds to its entry.
    maps.bonds.insert((v, queued), 7);
    maps.table = StakeTable::from_candidates(
        maps.table
            .candidates()
            .iter()
            .cloned()
            .map(|mut c| {
                if c.key == v {
                    c.bonded += 7;
                }
                c
            })
            .collect(),
    )
    .unwrap();
    assert_eq!(
        staking::unbond(&mut maps, &params, 1, queued, v, 7).unwrap(),
        Ok(())
    );
    assert_eq!(maps.queues[&1].entries[0], (queued, 8));
    assert_eq!(
        maps.queues[&1].entries.len(),
        mesh_ledger::limits::UNBONDS_PER_EPOCH_MAX
    );
}

fn candidate(seed: u64, bonded: u64, registered_height: u64) -> Candidate {
    Candidate {
        key: key(seed).address(),
        bonded,
        registered_height,
    }
}

#[test]
fn the_cut_ranks_by_bond_then_earlier_registration_then_lower_key() {
    let params = Params {
        max_validators: 3,
        ..params()
    };
    let mut same_height: Vec<Candidate> = (10..12).map(|s| candidate(s, 10, 1)).collect();
    same_height.sort_by_key(|c| c.key);
    let (lower, higher) = (same_height[0].clone(), same_height[1].clone());
    let richest = candidate(1, 20, 5);
    let earliest = candidate(2, 10, 0);
    let too_small = candidate(3, 4, 0);
    let table = StakeTable::from_candidates(vec![
        higher.clone(),
        too_small,
        richest.clone(),
        lower.clone(),
        earliest.clone(),
    ])
    .unwrap();
    let chosen: Vec<Address> = cut(&table, &params).iter().map(|v| v.address).collect();
    assert_eq!(chosen, vec![richest.key, earliest.key, lower.key]);
    assert!(!chosen.contains(&higher.key));
    let powers: Vec<u64> = cut(&table, &params).iter().map(|v| v.power).collect();
    assert_eq!(powers, vec![20, 10, 10], "power is the bonded amount");
}

proptest! {
    /// Whatever the table, the cut is ordered by the rule, and no candidate left out ranks
    /// above one taken; the eligible ones are taken up to max_validators.
    #[test]
    fn the_cut_takes_the_best_ranked_eligible_candidates(
        raw in prop::collection::btree_map(0u64..64, (0u64..20, 0u64..4), 0..16),
        max_validators in 1u32..6,
    ) {
        let params = Params { max_validators, min_validators: 1, ..params() };
        let candidates: Vec<Candidate> =
            raw.iter().map(|(seed, (bonded, height))| candidate(*seed, *bonded, *height)).collect();
        let table = StakeTable::from_candidates(candidates.clone()).unwrap();
        let chosen = cut(&table, &params);
        let rank = |c: &Candidate| (std::cmp::Reverse(c.bonded), c.registered_height, c.key);
        let by_key: BTreeMap<Address, &Candidate> = candidates.iter().map(|c| (c.key, c)).collect();
        let eligible = candidates.iter().filter(|c| c.bonded >= params.min_bond).count();
        prop_assert_eq!(chosen.len(), eligible.min(max_validators as usize));
        for pair in chosen.windows(2) {
            prop_assert!(rank(by_key[&pair[0].address]) < rank(by_key[&pair[1].address]));
        }
        if let Some(worst) = chosen.last() {
            let worst = rank(by_key[&worst.address]);
            for c in &candidates {
                if c.bonded >= params.min_bond && !chosen.iter().any(|v| v.address == c.key) {
                    prop_assert!(rank(c) > worst);
                }
            }
        }
    }
}

#[test]
fn unbonded_funds_are_released_at_the_end_of_the_next_epoch_never_earlier() {
    // Epochs of 3: epoch 0 = 1..=3, epoch 1 = 4..=6, epoch 2 = 7..=9.
    let mut chain = MemChain::new(&genesis(4, params()));
    let who = key(0);
    let v = validator(0);
    let expected: [(u64, Vec<Op>, u64); 10] = [
        (1, vec![bond(&v, 100)], BALANCE - 1 - 100),
        (2, vec![unbond(&v, 30)], 898), // epoch 0: released at 6
        (3, vec![unbond(&v, 20)], 897), // the boundary of epoch 0: also at 6
        (4, vec![unbond(&v, 10)], 896), // epoch 1: released at 9
        (5, vec![], 896),
        (6, vec![], 896 + 30 + 20),
        (7, vec![], 946),
        (8, vec![], 946),
        (9, vec![], 946 + 10),
        (10, vec![], 956),
    ];
    for (height, ops, balance_after) in expected {
        let statuses = block(&mut chain, ops.into_iter().map(|op| (&who, op)).collect());
        assert!(statuses.iter().all(|s| *s == ReceiptStatus::Success));
        assert_eq!(chain.head.height, height);
        assert_eq!(
            balance(&chain, &who),
            balance_after,
            "balance after height {height}"
        );
        if height == 3 {
            assert_eq!(
                unbonding_of(&chain.state, 1).unwrap().entries,
                vec![(who.address(), 50)]
            );
        }
        if height == 6 {
            assert!(
                chain
                    .state
                    .raw(&mesh_ledger::StateKey::Unbonding { release_epoch: 1 }.encode())
                    .unwrap()
                    .is_none(),
                "a released queue is deleted"
            );
        }
    }
    assert_eq!(
        bond_of(&chain.state, &v.address(), &who.address()).unwrap(),
        40
    );
}

#[test]
fn set_of_e_plus_2_is_computed_at_last_of_e_and_named_by_the_headers() {
    let mut chain = MemChain::new(&genesis(4, params()));
    let genesis_set = epoch_set(&chain.state, 0).unwrap().unwrap();
    assert_eq!(
        epoch_set(&chain.state, 1).unwrap().as_ref(),
        Some(&genesis_set)
    );
    assert_eq!(chain.head.validator_set_hash, genesis_set.hash());
    assert_eq!(chain.head.next_validator_set_hash, genesis_set.hash());

    one(
        &mut chain,
        &key(0),
        Op::Transfer {
            to: key(1).address(),
            amount: 1,
        },
    ); // 1
    assert_eq!(
        one(&mut chain, &key(0), bond(&validator(1), 7)),
        ReceiptStatus::Success
    ); // 2
    assert!(
        epoch_set(&chain.state, 2).unwrap().is_none(),
        "only a boundary computes a set"
    );
    // A change in the boundary block itself counts for the same epoch.
    assert_eq!(
        one(&mut chain, &key(1), bond(&validator(2), 3)),
        ReceiptStatus::Success
    ); // 3
    let set2 = epoch_set(&chain.state, 2)
        .unwrap()
        .expect("set(2) stored at last(0)");
    assert_eq!(power_in(&set2, &validator(1)), POWER + 7);
    assert_eq!(power_in(&set2, &validator(2)), POWER + 3);
    assert!(
        epoch_set(&chain.state, 0).unwrap().is_none(),
        "set(0) is deleted at last(0)"
    );
    assert_eq!(
        epoch_set(&chain.state, 1).unwrap().as_ref(),
        Some(&genesis_set)
    );

    // Epoch 1 is still signed by the genesis set, and announces set(2).
    assert_eq!(
        one(&mut chain, &key(2), bond(&validator(3), 5)),
        ReceiptStatus::Success
    ); // 4
    assert_eq!(chain.head.validator_set_hash, genesis_set.hash());
    assert_eq!(chain.head.next_validator_set_hash, set2.hash());
    block(&mut chain, vec![]); // 5
    block(&mut chain, vec![]); // 6 = last(1): set(3) includes the bond of height 4
    let set3 = epoch_set(&chain.state, 3).unwrap().unwrap();
    assert_eq!(power_in(&set3, &validator(3)), POWER + 5);
    assert_eq!(
        power_in(&set2, &validator(3)),
        POWER,
        "set(2) was fixed at last(0)"
    );
    block(&mut chain, vec![]); // 7 = first(2)
    assert_eq!(chain.head.validator_set_hash, set2.hash());
    assert_eq!(chain.head.next_validator_set_hash, set3.hash());
}

#[test]
fn a_header_naming_another_next_set_is_refused() {
    let mut chain = MemChain::new(&genesis(4, params()));
    block(&mut chain, vec![]);
    let parent = chain.head.clone();
    let state = chain.state.clone();
    let mut next = chain.push(vec![]).block.clone();
    next.header.next_validator_set_hash.0[0] ^= 1;
    assert!(matches!(
        apply_block(&state, &parent, &next, &chain.ctx),
        Err(BlockError::WrongNextValidatorSet { .. })
    ));
}

#[test]
fn zero_amounts_and_invalid_validator_keys_fail_the_stateless_checks() {
    let params = params();
    let zero = tx(&key(0), 0, 1, bond(&validator(0), 0));
    assert_eq!(
        zero.check_stateless(CHAIN, &params),
        Err(TxError::ZeroAmount)
    );
    let zero = tx(&key(0), 0, 1, unbond(&validator(0), 0));
    assert_eq!(
        zero.check_stateless(CHAIN, &params),
        Err(TxError::ZeroAmount)
    );
    let not_a_key = Address([0xff; 32]);
    let bad = tx(
        &key(0),
        0,
        1,
        Op::Bond {
            validator: not_a_key,
            amount: 5,
        },
    );
    assert_eq!(
        bad.check_stateless(CHAIN, &params),
        Err(TxError::InvalidValidatorKey {
            validator: not_a_key
        })
    );
    // A builder leaves both out; a block carrying one is invalid.
    let chain = MemChain::new(&genesis(4, params));
    let (executed, excluded) = mesh_ledger::build_block(
        &chain.state,
        &chain.head,
        validator(0).address(),
        chain.head.timestamp_ms,
        vec![zero, bad],
        &chain.ctx,
    )
    .unwrap();
    assert!(executed.block.txs.is_empty());
    assert_eq!(excluded.len(), 2);
}

#[test]
fn genesis_refuses_bad_staking_params_and_sets() {
    let reason = |edit: &dyn Fn(&mut Genesis)| {
        let mut g = genesis(4, params());
        edit(&mut g);
        g.validate().unwrap_err().to_string()
    };
    assert!(genesis(4, params()).validate().is_ok());
    assert!(reason(&|g| g.params.epoch_blocks = 0).contains("params.epoch_blocks"));
    assert!(reason(&|g| g.params.epoch_blocks = 1_000_001).contains("params.epoch_blocks"));
    assert!(reason(&|g| g.params.min_bond = 0).contains("params.min_bond"));
    assert!(reason(&|g| g.params.max_validators = 0).contains("params.max_validators"));
    assert!(reason(&|g| g.params.max_validators = 1025).contains("params.max_validators"));
    assert!(reason(&|g| g.params.min_validators = 0).contains("params.min_validators"));
    assert!(reason(&|g| g.params.min_validators = 5).contains("params.min_validators"));
    let small = reason(&|g| {
        g.validators.truncate(1);
    });
    assert!(small.contains("outside params.min_validators"), "{small}");
    let weak = reason(&|g| g.validators[0].power = 4);
    assert!(weak.contains("below params.min_bond"), "{weak}");
    let rich = reason(&|g| g.balances[0].balance = u64::MAX - 39);
    assert!(
        rich.contains("overflows"),
        "bonds count in the supply: {rich}"
    );
    let mut fits = genesis(4, params());
    fits.balances[0].balance = u64::MAX - 40 - (fits.balances.len() as u64 - 1) * BALANCE;
    assert!(fits.validate().is_ok());
}

/// Everything an account can hold: balances + bonds + unbonding queues, over the known keys.
fn total_value(chain: &MemChain, owners: &[Address], validators: &[Address]) -> u128 {
    let mut total = 0u128;
    for owner in owners {
        total += u128::from(
            chain
                .state
                .account(owner)
                .unwrap()
                .unwrap_or_default()
                .balance,
        );
        for v in validators {
            total += u128::from(bond_of(&chain.state, v, owner).unwrap());
        }
    }
    let last_epoch = chain.ctx.params.schedule().epoch_of(chain.head.height) + 2;
    for epoch in 0..=last_epoch {
        total += unbonding_of(&chain.state, epoch).unwrap().total();
    }
    total
}

#[derive(Debug, Clone)]
enum Step {
    Transfer { from: u64, to: u64, amount: u64 },
    Bond { from: u64, to: u64, amount: u64 },
    Unbond { from: u64, to: u64, amount: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    // Keys 0..6 are accounts (and may register), 1000..1004 genesis validators; `to` below 6
    // is an account key, otherwise a validator.
    let who = 0u64..10;
    prop_oneof![
        (who.clone(), who.clone(), 0u64..400).prop_map(|(from, to, amount)| Step::Transfer {
            from,
            to,
            amount
        }),
        (who.clone(), who.clone(), 1u64..300).prop_map(|(from, to, amount)| Step::Bond {
            from,
            to,
            amount
        }),
        (who.clone(), who, 1u64..60).prop_map(|(from, to, amount)| Step::Unbond {
            from,
            to,
            amount
        }),
    ]
}

/// Builds the next block from `ops` in order (nonces counted per sender) and commits it; the
/// builder may leave out a transaction whose sender can no longer pay its fee.
fn push_lenient(chain: &mut MemChain, ops: &[(SecretKey, Op)]) {
    let mut offsets: BTreeMap<Address, u64> = BTreeMap::new();
    let txs = ops
        .iter()
        .map(|(from, op)| {
            let offset = offsets.entry(from.address()).or_insert(0);
            let stx = op_tx(chain, from, *offset, op.clone());
            *offset += 1;
            stx
        })
        .collect();
    let (executed, _) = mesh_ledger::build_block(
        &chain.state,
        &chain.head,
        validator(chain.head.height % 4).address(),
        chain.head.timestamp_ms + 1,
        txs,
        &chain.ctx,
    )
    .unwrap();
    // What the builder made, a validator accepts.
    apply_block(&chain.state, &chain.head, &executed.block, &chain.ctx).unwrap();
    chain.state.commit(&executed);
    chain.head = executed.block.header.clone();
}

fn nth(i: u64) -> SecretKey {
    if i < 6 {
        key(i)
    } else {
        validator(i - 6)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Conservation: balances + bonds + unbonding stay equal to the genesis supply across
    /// random sequences of transfers, bonds and unbonds over several epochs, and every
    /// boundary stores the cut of the table, at least min_validators strong.
    #[test]
    fn balances_bonds_and_unbonding_are_conserved(
        blocks in prop::collection::vec(prop::collection::vec(step(), 0..6), 1..14),
    ) {
        let params = Params { epoch_blocks: 2, min_validators: 3, ..params() };
        let g = genesis(4, params.clone());
        let supply: u128 = g.balances.iter().map(|b| u128::from(b.balance)).sum::<u128>()
            + g.validators.iter().map(|v| u128::from(v.power)).sum::<u128>();
        // Every key that can hold value: the genesis accounts and validators.
        let owners: Vec<Address> =
            (0..ACCOUNTS).map(key).chain((0..4).map(validator)).map(|k| k.address()).collect();
        let mut chain = MemChain::new(&g);
        prop_assert_eq!(total_value(&chain, &owners, &owners), supply);
        for steps in blocks {
            let ops: Vec<(SecretKey, Op)> = steps.into_iter().map(|s| match s {
                Step::Transfer { from, to, amount } => (nth(from), Op::Transfer { to: nth(to).address(), amount }),
                Step::Bond { from, to, amount } => (nth(from), Op::Bond { validator: nth(to).address(), amount }),
                Step::Unbond { from, to, amount } => (nth(from), Op::Unbond { validator: nth(to).address(), amount }),
            }).collect();
            push_lenient(&mut chain, &ops);
            prop_assert_eq!(total_value(&chain, &owners, &owners), supply);
            let height = chain.head.height;
            if params.schedule().is_boundary(height) {
                let epoch = params.schedule().epoch_of(height);
                let set = epoch_set(&chain.state, epoch + 2).unwrap().unwrap();
                let expected = ValidatorSet::new(cut(&stake_table(&chain.state).unwrap(), &params)).unwrap();
                prop_assert_eq!(&set, &expected);
                prop_assert!(set.len() >= params.min_validators as usize);
            }
        }
    }
}
