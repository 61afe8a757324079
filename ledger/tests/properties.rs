//! Property tests: encodings round-trip, execution is deterministic, proofs verify exactly
//! when they should, and nonce rules hold.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)] // tests: a panic is a failure

mod support;

use mesh_ledger::encoding::{decode, encode};
use mesh_ledger::execution::{apply_block, BlockError};
use mesh_ledger::memory::MemoryState;
use mesh_ledger::state::{
    self, verify_account_proof, verify_value_proof, StateChanges, StateKey, StateProof,
};
use mesh_ledger::{
    Account, Address, Block, BlockHeader, FailureReason, Genesis, Hash, Op, Receipt, ReceiptStatus,
    Signature, SignedTransaction, Transaction, Validator, ValidatorSet,
};
use proptest::prelude::*;
use support::{key, transfer, tx, MemChain};

fn address() -> impl Strategy<Value = Address> {
    any::<[u8; 32]>().prop_map(Address)
}

fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (address(), any::<u64>()).prop_map(|(to, amount)| Op::Transfer { to, amount }),
        (
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 0..256)
        )
            .prop_map(|(key, value)| Op::Put { key, value }),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|key| Op::Delete { key }),
        (address(), any::<u64>()).prop_map(|(validator, amount)| Op::Bond { validator, amount }),
        (address(), any::<u64>()).prop_map(|(validator, amount)| Op::Unbond { validator, amount }),
    ]
}

fn signed_tx() -> impl Strategy<Value = SignedTransaction> {
    (
        "[a-z0-9-]{1,20}",
        address(),
        any::<u64>(),
        any::<u64>(),
        op(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(chain_id, sender, nonce, fee, op, sig_a, sig_b)| {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&sig_a);
            signature[32..].copy_from_slice(&sig_b);
            SignedTransaction {
                tx: Transaction {
                    chain_id,
                    sender,
                    nonce,
                    fee,
                    op,
                },
                signature: Signature(signature),
            }
        })
}

fn header() -> impl Strategy<Value = BlockHeader> {
    (
        any::<u32>(),
        "[a-z0-9-]{1,20}",
        any::<u64>(),
        hash(),
        address(),
        any::<u64>(),
        any::<u32>(),
        hash(),
        hash(),
        hash(),
        hash(),
        hash(),
    )
        .prop_map(
            |(
                version,
                chain_id,
                height,
                parent_hash,
                proposer,
                timestamp_ms,
                tx_count,
                tx_root,
                receipts_root,
                state_root,
                validator_set_hash,
                next_validator_set_hash,
            )| {
                BlockHeader {
                    version,
                    chain_id,
                    height,
                    parent_hash,
                    proposer,
                    timestamp_ms,
                    tx_count,
                    tx_root,
                    receipts_root,
                    state_root,
                    validator_set_hash,
                    next_validator_set_hash,
                }
            },
        )
}

fn receipt() -> impl Strategy<Value = Receipt> {
    let status = prop_oneof![
        Just(ReceiptStatus::Success),
        (any::<u64>(), any::<u64>()).prop_map(|(needed, available)| ReceiptStatus::Failed {
            reason: FailureReason::InsufficientBalance { needed, available }
        }),
        Just(ReceiptStatus::Failed {
            reason: FailureReason::KeyNotFound
        }),
        Just(ReceiptStatus::Failed {
            reason: FailureReason::BalanceOverflow
        }),
        address().prop_map(|validator| ReceiptStatus::Failed {
            reason: FailureReason::UnknownValidator { validator }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(bonded, min_bond)| ReceiptStatus::Failed {
            reason: FailureReason::BelowMinimumBond { bonded, min_bond }
        }),
        any::<u64>().prop_map(|candidates_max| ReceiptStatus::Failed {
            reason: FailureReason::ValidatorSetFull { candidates_max }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(bonded, requested)| ReceiptStatus::Failed {
            reason: FailureReason::InsufficientBond { bonded, requested }
        }),
        Just(ReceiptStatus::Failed {
            reason: FailureReason::WouldEmptySet
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(size, min_validators)| ReceiptStatus::Failed {
            reason: FailureReason::BelowSafeSize {
                size,
                min_validators
            }
        }),
        any::<u64>().prop_map(|release_epoch| ReceiptStatus::Failed {
            reason: FailureReason::UnbondingQueueFull { release_epoch }
        }),
    ];
    (hash(), any::<u64>(), any::<u32>(), status, any::<u64>()).prop_map(
        |(tx_hash, height, index, status, fee_charged)| Receipt {
            tx_hash,
            height,
            index,
            status,
            fee_charged,
        },
    )
}

fn round_trip<T>(value: &T)
where
    T: borsh::BorshSerialize + borsh::BorshDeserialize + PartialEq + std::fmt::Debug,
{
    let bytes = encode(value);
    let back: T = decode("value", &bytes, usize::MAX).expect("decodes");
    assert_eq!(&back, value);
    // Canonical: one value, one encoding; trailing bytes are refused.
    assert_eq!(encode(&back), bytes);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode::<T>("value", &longer, usize::MAX).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn transactions_round_trip(stx in signed_tx()) {
        round_trip(&stx);
        round_trip(&stx.tx);
        let json = serde_json::to_string(&stx).unwrap();
        prop_assert_eq!(serde_json::from_str::<SignedTransaction>(&json).unwrap(), stx);
    }

    #[test]
    fn headers_and_blocks_round_trip(header in header(), txs in prop::collection::vec(signed_tx(), 0..4)) {
        round_trip(&header);
        round_trip(&Block { header: header.clone(), txs });
        let json = serde_json::to_string(&header).unwrap();
        prop_assert_eq!(serde_json::from_str::<BlockHeader>(&json).unwrap(), header);
    }

    #[test]
    fn receipts_and_accounts_round_trip(receipt in receipt(), balance in any::<u64>(), nonce in any::<u64>()) {
        round_trip(&receipt);
        round_trip(&Account { balance, nonce });
        let json = serde_json::to_string(&receipt).unwrap();
        prop_assert_eq!(serde_json::from_str::<Receipt>(&json).unwrap(), receipt);
    }

    #[test]
    fn validator_sets_round_trip(seeds in prop::collection::btree_set(0u64..1000, 1..10), power in 1u64..1000) {
        let set = ValidatorSet::new(seeds.iter().map(|s| Validator { address: key(*s).address(), power: power + s }).collect()).unwrap();
        let bytes = encode(&set);
        let back: ValidatorSet = decode("set", &bytes, usize::MAX).unwrap();
        prop_assert_eq!(&back, &set);
        prop_assert_eq!(back.total_power(), set.total_power());
        prop_assert!(set.quorum_power() * 3 > set.total_power() * 2);
        prop_assert!((set.quorum_power() - 1) * 3 <= set.total_power() * 2);
    }

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = SignedTransaction::decode(&bytes, 1024);
        let _ = decode::<Block>("block", &bytes, 1024);
        let _ = decode::<ValidatorSet>("set", &bytes, 1024);
        let _ = StateProof::decode(&bytes);
    }

    /// Replaying the same blocks from genesis gives the same state root, every time.
    #[test]
    fn replay_from_genesis_is_deterministic(seed in any::<u64>()) {
        let (genesis, blocks) = support::workload(seed, 6, 5, 12);
        let built = replay(&genesis, &blocks);
        let again = replay(&genesis, &blocks);
        prop_assert_eq!(built, again);
    }

    /// The root depends on the final set of entries, not on how writes were split into
    /// versions or ordered.
    #[test]
    fn state_root_is_independent_of_write_order(
        entries in prop::collection::btree_map(prop::collection::vec(any::<u8>(), 1..8), prop::collection::vec(any::<u8>(), 0..8), 1..40),
        split in any::<prop::sample::Index>(),
    ) {
        let all: Vec<(Vec<u8>, Vec<u8>)> = entries.into_iter().collect();
        let one_shot = root_after(std::slice::from_ref(&all));
        let cut = split.index(all.len() + 1);
        let mut reversed_tail = all[cut..].to_vec();
        reversed_tail.reverse();
        let two_steps = root_after(&[reversed_tail, all[..cut].to_vec()]);
        prop_assert_eq!(one_shot, two_steps);
    }

    /// Proofs verify for present and absent keys, and fail for any tampering.
    #[test]
    fn proofs_verify_and_detect_tampering(
        present in prop::collection::btree_map(prop::collection::vec(any::<u8>(), 1..6), prop::collection::vec(any::<u8>(), 1..6), 1..30),
        absent in prop::collection::vec(any::<u8>(), 7..9),
        flip in any::<prop::sample::Index>(),
    ) {
        let owner = key(7).address();
        let mut state = MemoryState::new();
        let mut changes = StateChanges::new();
        for (k, v) in &present {
            changes.insert(StateKey::Value { owner, key: k.clone() }.encode(), Some(v.clone()));
        }
        changes.insert(StateKey::Account(owner).encode(), Some(Account { balance: 5, nonce: 1 }.encode()));
        let (root, nodes) = state::compute_state_root(&state, 0, &changes).unwrap();
        state.commit(&executed_with(changes, nodes));

        for (k, v) in &present {
            let (value, proof) = state::prove(&state, 0, &StateKey::Value { owner, key: k.clone() }.encode()).unwrap();
            prop_assert_eq!(value.as_ref(), Some(v));
            prop_assert!(verify_value_proof(&root, &owner, k, Some(v), &proof).is_ok());
            // A different value, an absence claim, another key or another root: all refused.
            let mut other = v.clone();
            other[0] ^= 1;
            prop_assert!(verify_value_proof(&root, &owner, k, Some(&other), &proof).is_err());
            prop_assert!(verify_value_proof(&root, &owner, k, None, &proof).is_err());
            prop_assert!(verify_value_proof(&root, &owner, &absent, Some(v), &proof).is_err());
            let mut bad_root = root;
            bad_root.0[flip.index(32)] ^= 1;
            prop_assert!(verify_value_proof(&bad_root, &owner, k, Some(v), &proof).is_err());
            // Any flipped byte of the encoded proof either fails to decode or fails to verify.
            let mut bytes = proof.encode();
            let at = flip.index(bytes.len());
            bytes[at] ^= 0x01;
            if let Ok(tampered) = StateProof::decode(&bytes) {
                prop_assert!(verify_value_proof(&root, &owner, k, Some(v), &tampered).is_err());
            }
        }
        let (value, proof) = state::prove(&state, 0, &StateKey::Value { owner, key: absent.clone() }.encode()).unwrap();
        prop_assert!(value.is_none());
        prop_assert!(verify_value_proof(&root, &owner, &absent, None, &proof).is_ok());
        prop_assert!(verify_value_proof(&root, &owner, &absent, Some(b"x"), &proof).is_err());
        let (account, proof) = state::prove(&state, 0, &StateKey::Account(owner).encode()).unwrap();
        let account = Account::decode(&account.unwrap()).unwrap();
        prop_assert!(verify_account_proof(&root, &owner, Some(&account), &proof).is_ok());
        assert!(verify_account_proof(&root, &owner, Some(&Account { balance: 6, nonce: 1 }), &proof).is_err());
    }

    /// Nonces: a replayed transaction, a gap, or a reordering can never be included.
    #[test]
    fn nonce_rules_hold(amount in 1u64..100, gap in 2u64..10) {
        let genesis = support::genesis_with(2, 1_000);
        let mut chain = MemChain::new(&genesis);
        let alice = key(0);
        let bob = key(1).address();
        let first = transfer(&alice, 0, bob, amount);
        chain.push(vec![first.clone()]);
        // Replay: the same bytes again.
        assert!(matches!(block_with(&chain, vec![first.clone()]), Err(BlockError::WrongNonce { index: 0, expected: 1, got: 0 })));
        // Duplicate within one block.
        let second = transfer(&alice, 1, bob, amount);
        assert!(matches!(block_with(&chain, vec![second.clone(), second.clone()]), Err(BlockError::WrongNonce { index: 1, expected: 2, got: 1 })));
        // Gap.
        let future = transfer(&alice, gap, bob, amount);
        assert!(matches!(block_with(&chain, vec![future]), Err(BlockError::WrongNonce { index: 0, expected: 1, .. })));
        // Reorder: nonce 2 before nonce 1.
        let third = transfer(&alice, 2, bob, amount);
        assert!(matches!(block_with(&chain, vec![third.clone(), second.clone()]), Err(BlockError::WrongNonce { index: 0, expected: 1, got: 2 })));
        // In order: fine, and the nonce ends at 3.
        chain.push(vec![second, third]);
        prop_assert_eq!(chain.nonce(&alice), 3);
    }
}

/// Applies `blocks` on a fresh memory state with `apply_block` (the validator's path) and
/// returns each header hash and state root.
fn replay(genesis: &Genesis, blocks: &[Vec<SignedTransaction>]) -> Vec<(Hash, Hash)> {
    let mut builder = MemChain::new(genesis);
    let mut validator = MemChain::new(genesis);
    let mut out = Vec::new();
    for txs in blocks {
        let block = builder.push(txs.clone()).block.clone();
        let executed =
            apply_block(&validator.state, &validator.head, &block, &validator.ctx).unwrap();
        validator.state.commit(&executed);
        validator.head = block.header.clone();
        out.push((block.hash(), block.header.state_root));
    }
    assert_eq!(builder.head, validator.head);
    out
}

fn block_with(chain: &MemChain, txs: Vec<SignedTransaction>) -> Result<(), BlockError> {
    // Build a header by hand around txs the builder would refuse, then validate it.
    let (mut executed, _) = mesh_ledger::build_block(
        &chain.state,
        &chain.head,
        key(1000).address(),
        chain.head.timestamp_ms,
        vec![],
        &chain.ctx,
    )?;
    let hashes: Vec<Hash> = txs.iter().map(SignedTransaction::hash).collect();
    executed.block.header.tx_count = txs.len() as u32;
    executed.block.header.tx_root = mesh_ledger::block::tx_root(&hashes);
    executed.block.txs = txs;
    apply_block(&chain.state, &chain.head, &executed.block, &chain.ctx).map(|_| ())
}

fn root_after(steps: &[Vec<(Vec<u8>, Vec<u8>)>]) -> Hash {
    let mut state = MemoryState::new();
    let mut root = Hash::ZERO;
    for (version, step) in steps.iter().enumerate() {
        let mut changes = StateChanges::new();
        for (k, v) in step {
            changes.insert(k.clone(), Some(v.clone()));
        }
        let (new_root, nodes) =
            state::compute_state_root(&state, version as u64, &changes).unwrap();
        state.commit(&executed_with(changes, nodes));
        root = new_root;
    }
    root
}

fn executed_with(
    changes: StateChanges,
    nodes: jmt::storage::NodeBatch,
) -> mesh_ledger::ExecutedBlock {
    let genesis = support::genesis_with(0, 0);
    let mut executed = mesh_ledger::genesis_block(&MemoryState::new(), &genesis).unwrap();
    executed.changes = changes;
    executed.tree_nodes = nodes;
    executed
}

#[test]
fn put_and_delete_change_the_repository() {
    let genesis = support::genesis_with(2, 1_000);
    let mut chain = MemChain::new(&genesis);
    let alice = key(0);
    chain.push(vec![tx(
        &alice,
        0,
        1,
        Op::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        },
    )]);
    use mesh_ledger::state::StateReader;
    assert_eq!(
        chain.state.value(&alice.address(), b"k").unwrap(),
        Some(b"v".to_vec())
    );
    let executed = chain.push(vec![
        tx(&alice, 1, 1, Op::Delete { key: b"k".to_vec() }),
        tx(&alice, 2, 1, Op::Delete { key: b"k".to_vec() }),
    ]);
    assert_eq!(executed.receipts[0].status, ReceiptStatus::Success);
    assert_eq!(
        executed.receipts[1].status,
        ReceiptStatus::Failed {
            reason: FailureReason::KeyNotFound
        }
    );
    assert_eq!(chain.state.value(&alice.address(), b"k").unwrap(), None);
}
