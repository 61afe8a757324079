//! Until consensus can change validator sets (ADR 003 §10, step 5), the node refuses a chain
//! whose set for some epoch differs from genesis: when it builds or checks the boundary block
//! that computes the set, and at start if the database already holds one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::sync::Arc;

use mesh_consensus::Height;
use mesh_ledger::memory::MemoryState;
use mesh_ledger::storage::Store;
use mesh_ledger::{
    build_block, genesis_block, ChainContext, ExecutedBlock, Genesis, GenesisAccount, Op, Params,
    SecretKey, SignedTransaction, Transaction, Validator,
};
use mesh_node::chain::{Chain, ChainError};

const CHAIN: &str = "fixed-set";

fn validator(i: u8) -> SecretKey {
    SecretKey::from_seed([i + 1; 32])
}

fn account() -> SecretKey {
    SecretKey::from_seed([200; 32])
}

/// Four validators, epochs of two blocks: block 2 is the boundary that computes set(2).
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
        balances: vec![GenesisAccount {
            address: account().address(),
            balance: 1_000,
        }],
        params: Params {
            epoch_blocks: 2,
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

#[test]
fn a_boundary_block_that_changes_the_set_is_refused_and_one_that_keeps_it_is_not() {
    let genesis = genesis();
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir, &genesis).unwrap();

    // Without staking every boundary copies the genesis set forward.
    let quiet = ledger_blocks(&genesis, Vec::new());
    verify(&mut chain, &quiet[0]).unwrap();
    verify(&mut chain, &quiet[1]).unwrap();

    // A delegation in block 1 changes set(2) at block 2.
    let staking = ledger_blocks(&genesis, vec![delegation()]);
    verify(&mut chain, &staking[0]).unwrap();
    let refused = verify(&mut chain, &staking[1]).unwrap_err();
    assert!(
        matches!(refused, ChainError::SetChanged { epoch: 2, .. }),
        "{refused}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("epoch 2") && message.contains("step 5"),
        "{message}"
    );

    // The proposer's side refuses to build it too.
    let built = chain.build(
        &staking[0].block_hash,
        validator(0).address(),
        staking[0].block.header.timestamp_ms + 1,
        Vec::new(),
        mesh_ledger::NONE_VERIFIED,
    );
    assert!(matches!(
        built,
        Err(ChainError::SetChanged { epoch: 2, .. })
    ));
}

#[test]
fn a_database_whose_state_holds_a_changed_set_is_refused_at_start() {
    let genesis = genesis();
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.init_genesis(&genesis).unwrap();
        for executed in ledger_blocks(&genesis, vec![delegation()]) {
            store.commit_block(&executed, b"record").unwrap();
        }
    }
    let refused = open(&dir, &genesis).unwrap_err();
    assert!(
        matches!(refused, ChainError::SetChanged { epoch: 2, .. }),
        "{refused}"
    );
}
