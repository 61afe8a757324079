//! Helpers shared by the ledger's integration tests: deterministic keys, a sample genesis, and
//! a deterministic workload of blocks.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use mesh_ledger::execution::{build_block, ChainContext, ExecutedBlock};
use mesh_ledger::memory::MemoryState;
use mesh_ledger::state::StateReader;
use mesh_ledger::{
    genesis_block, Address, BlockHeader, Genesis, GenesisAccount, Op, Params, SecretKey,
    SignedTransaction, Transaction, Validator,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const CHAIN: &str = "test-chain";

pub fn key(n: u64) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    seed[31] = 0x5a;
    SecretKey::from_seed(seed)
}

pub fn genesis_with(accounts: usize, balance: u64) -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 1_700_000_000_000,
        validators: (0..4)
            .map(|i| Validator {
                address: key(1000 + i).address(),
                power: 10,
            })
            .collect(),
        balances: (0..accounts as u64)
            .map(|i| GenesisAccount {
                address: key(i).address(),
                balance,
            })
            .collect(),
        params: Params::default(),
    }
}

pub fn tx(from: &SecretKey, nonce: u64, fee: u64, op: Op) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN.into(),
        sender: from.address(),
        nonce,
        fee,
        op,
    }
    .sign(from)
}

pub fn transfer(from: &SecretKey, nonce: u64, to: Address, amount: u64) -> SignedTransaction {
    tx(from, nonce, 1, Op::Transfer { to, amount })
}

/// A chain in memory: state, latest header, context.
pub struct MemChain {
    pub state: MemoryState,
    pub head: BlockHeader,
    pub ctx: ChainContext,
    pub blocks: Vec<ExecutedBlock>,
}

impl MemChain {
    pub fn new(genesis: &Genesis) -> MemChain {
        let mut state = MemoryState::new();
        let executed = genesis_block(&state, genesis).unwrap();
        state.commit(&executed);
        MemChain {
            state,
            head: executed.block.header.clone(),
            ctx: ChainContext::from_genesis(genesis).unwrap(),
            blocks: vec![executed],
        }
    }

    /// Builds, checks nothing was left out, and commits the next block.
    pub fn push(&mut self, txs: Vec<SignedTransaction>) -> &ExecutedBlock {
        let proposer = key(1000 + self.head.height % 4).address();
        let (executed, excluded) = build_block(
            &self.state,
            &self.head,
            proposer,
            self.head.timestamp_ms + 1000,
            txs,
            &self.ctx,
        )
        .unwrap();
        assert!(excluded.is_empty(), "left out: {excluded:?}");
        self.state.commit(&executed);
        self.head = executed.block.header.clone();
        self.blocks.push(executed);
        self.blocks.last().unwrap()
    }

    pub fn nonce(&self, who: &SecretKey) -> u64 {
        self.state
            .account(&who.address())
            .unwrap()
            .unwrap_or_default()
            .nonce
    }
}

/// A deterministic mixed workload: `blocks` blocks of up to `per_block` transactions among the
/// first `accounts` genesis accounts, every one valid when built in order.
pub fn workload(
    seed: u64,
    accounts: u64,
    blocks: usize,
    per_block: usize,
) -> (Genesis, Vec<Vec<SignedTransaction>>) {
    let genesis = genesis_with(accounts as usize, 1_000_000);
    let mut chain = MemChain::new(&genesis);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut all = Vec::new();
    for _ in 0..blocks {
        let mut txs = Vec::new();
        let mut nonces = std::collections::HashMap::new();
        for _ in 0..rng.gen_range(0..=per_block) {
            let from_index = rng.gen_range(0..accounts);
            let from = key(from_index);
            let nonce = *nonces
                .entry(from_index)
                .or_insert_with(|| chain.nonce(&from));
            nonces.insert(from_index, nonce + 1);
            let op = match rng.gen_range(0..4) {
                0 | 1 => Op::Transfer {
                    to: key(rng.gen_range(0..accounts + 2)).address(),
                    amount: rng.gen_range(0..2_000_000),
                },
                2 => Op::Put {
                    key: vec![rng.gen_range(0..8u8)],
                    value: vec![rng.gen(); rng.gen_range(0..40)],
                },
                _ => Op::Delete {
                    key: vec![rng.gen_range(0..8u8)],
                },
            };
            txs.push(tx(&from, nonce, rng.gen_range(1..5), op));
        }
        chain.push(txs.clone());
        all.push(txs);
    }
    (genesis, all)
}
