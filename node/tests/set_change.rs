//! The node follows a changing validator set (ADR 003 §10, step 5): a boundary block whose
//! end-of-epoch step computes a new set is built and verified like any other, and staking
//! operations go through an admission check that names the reason their receipt would carry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::sync::Arc;

use mesh_consensus::Height;
use mesh_ledger::memory::MemoryState;
use mesh_ledger::storage::Store;
use mesh_ledger::{
    build_block, genesis_block, ChainContext, ExecutedBlock, FailureReason, Genesis,
    GenesisAccount, Op, Params, SecretKey, SignedTransaction, StateKey, Transaction, Validator,
    ValidatorSet,
};
use mesh_node::chain::{Chain, ChainError};

const CHAIN: &str = "fixed-set";

fn validator(i: u8) -> SecretKey {
    SecretKey::from_seed([i + 1; 32])
}

fn account() -> SecretKey {
    SecretKey::from_seed([200; 32])
}

/// Four validators of power 10 (at least four must stay), epochs of two blocks: block 2 is
/// the boundary that computes set(2).
fn genesis() -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 1_700_000_000_000,
        validators: (0..4)
            .map(|i| Validator {
                address: validator(i).address(),
                power: 10,
            })
            .collect(),
        balances: vec![
            GenesisAccount {
                address: account().address(),
                balance: 1_000,
            },
            GenesisAccount {
                address: validator(0).address(),
                balance: 100,
            },
        ],
        params: Params {
            epoch_blocks: 2,
            min_bond: 5,
            ..Params::default()
        },
    }
}

fn delegation() -> SignedTransaction {
    Transaction {
        chain_id: CHAIN.into(),
        sender: account().address(),
        nonce: 0,
        fee: 1,
        op: Op::Bond {
            validator: validator(0).address(),
            amount: 5,
        },
    }
    .sign(&account())
}

/// Blocks 1 and 2 built by the ledger alone, with `txs` in block 1.
fn ledger_blocks(genesis: &Genesis, txs: Vec<SignedTransaction>) -> Vec<ExecutedBlock> {
    let ctx = ChainContext::from_genesis(genesis).unwrap();
    let mut state = MemoryState::new();
    let first = genesis_block(&state, genesis).unwrap();
    state.commit(&first);
    let mut head = first.block.header.clone();
    let mut blocks = Vec::new();
    for batch in [txs, Vec::new()] {
        let (executed, excluded) = build_block(
            &state,
            &head,
            validator(0).address(),
            head.timestamp_ms + 1,
            batch,
            &ctx,
        )
        .unwrap();
        assert!(excluded.is_empty());
        state.commit(&executed);
        head = executed.block.header.clone();
        blocks.push(executed);
    }
    blocks
}

fn open(dir: &tempfile::TempDir, genesis: &Genesis) -> Result<Chain, ChainError> {
    Chain::open(Arc::new(Store::open(dir.path()).unwrap()), genesis)
}

fn verify(chain: &mut Chain, executed: &ExecutedBlock) -> Result<(), ChainError> {
    let header = &executed.block.header;
    chain.verify(
        &header.parent_hash,
        Height(header.height),
        &executed.block_hash,
        &executed.block.encode(),
        header.proposer,
        u64::MAX / 2,
        0,
        mesh_ledger::NONE_VERIFIED,
    )
}

fn staking(sender: &SecretKey, op: Op) -> Transaction {
    Transaction {
        chain_id: CHAIN.into(),
        sender: sender.address(),
        nonce: 0,
        fee: 1,
        op,
    }
}

#[test]
fn a_boundary_block_that_changes_the_set_is_built_and_verified() {
    let genesis = genesis();
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir, &genesis).unwrap();

    // A delegation in block 1 raises validator 0's power in set(2), computed by block 2.
    let staking = ledger_blocks(&genesis, vec![delegation()]);
    let boundary = &staking[1];
    let set_2 = boundary
        .changes
        .iter()
        .find_map(|(key, value)| match (StateKey::decode(key), value) {
            (Some(StateKey::EpochSet(2)), Some(bytes)) => Some(
                mesh_ledger::encoding::decode::<ValidatorSet>("set", bytes, bytes.len()).unwrap(),
            ),
            _ => None,
        })
        .expect("the boundary block stores set(2)");
    assert_eq!(set_2.power_of(&validator(0).address()), 15);
    assert_eq!(set_2.power_of(&validator(1).address()), 10);

    verify(&mut chain, &staking[0]).unwrap();
    verify(&mut chain, boundary).unwrap();
    // The proposer's side builds the same block.
    let (hash, _, _) = chain
        .build(
            &staking[0].block_hash,
            validator(0).address(),
            staking[0].block.header.timestamp_ms + 1,
            Vec::new(),
            mesh_ledger::NONE_VERIFIED,
        )
        .unwrap();
    assert_eq!(hash, boundary.block_hash);
}

#[test]
fn the_staking_admission_check_names_the_reason_a_receipt_would_carry() {
    let genesis = genesis();
    let dir = tempfile::tempdir().unwrap();
    let chain = open(&dir, &genesis).unwrap();
    let newcomer = SecretKey::from_seed([150; 32]);
    let check = |tx: Transaction| chain.check_staking(&tx).unwrap();

    // Other operations are not staking.
    let transfer = Op::Transfer {
        to: newcomer.address(),
        amount: 1,
    };
    assert_eq!(check(staking(&account(), transfer)), None);
    // A delegation to a candidate, and a registration at the minimum, would succeed.
    assert_eq!(check(delegation().tx), Some(Ok(())));
    let unknown = Op::Bond {
        validator: newcomer.address(),
        amount: 5,
    };
    assert_eq!(
        check(staking(&account(), unknown)),
        Some(Err(FailureReason::UnknownValidator {
            validator: newcomer.address()
        }))
    );
    let small = Op::Bond {
        validator: validator(0).address(),
        amount: 4,
    };
    assert_eq!(
        check(staking(&validator(0), small)),
        Some(Ok(())),
        "a top-up of a candidate has no minimum"
    );
    let register_small = Op::Bond {
        validator: account().address(),
        amount: 4,
    };
    assert_eq!(
        check(staking(&account(), register_small)),
        Some(Err(FailureReason::BelowMinimumBond {
            bonded: 4,
            min_bond: 5
        }))
    );
    // The fee is paid first: 1,000 − 1 is left to bond.
    let too_much = Op::Bond {
        validator: account().address(),
        amount: 1_000,
    };
    assert_eq!(
        check(staking(&account(), too_much)),
        Some(Err(FailureReason::InsufficientBalance {
            needed: 1_000,
            available: 999
        }))
    );
    let not_bonded = Op::Unbond {
        validator: validator(0).address(),
        amount: 1,
    };
    assert_eq!(
        check(staking(&account(), not_bonded)),
        Some(Err(FailureReason::InsufficientBond {
            bonded: 0,
            requested: 1
        }))
    );
    // Validator 0 leaving would leave three of the four that must stay.
    let leave = Op::Unbond {
        validator: validator(0).address(),
        amount: 10,
    };
    assert_eq!(
        check(staking(&validator(0), leave)),
        Some(Err(FailureReason::BelowSafeSize {
            size: 3,
            min_validators: 4
        }))
    );
    let partial = Op::Unbond {
        validator: validator(0).address(),
        amount: 5,
    };
    assert_eq!(check(staking(&validator(0), partial)), Some(Ok(())));
}
