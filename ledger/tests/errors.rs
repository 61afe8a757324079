//! One test per rejection reason: each asserts the exact error, never a panic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)] // tests: a panic is a failure

mod support;

use mesh_ledger::block::PROTOCOL_VERSION;
use mesh_ledger::execution::{apply_block, check_stateful, BlockError, StatefulError};
use mesh_ledger::genesis::GenesisError;
use mesh_ledger::tx::{verify_signatures, TxError};
use mesh_ledger::{
    Account, Block, FailureReason, Genesis, Op, Params, ReceiptStatus, SignedTransaction,
    Transaction,
};
use support::{key, transfer, tx, MemChain, CHAIN};

fn params() -> Params {
    Params::default()
}

fn check(stx: &SignedTransaction) -> Result<(), TxError> {
    stx.check_stateless(CHAIN, &params())
}

#[test]
fn malformed_and_trailing_bytes_are_refused() {
    let bytes = transfer(&key(0), 0, key(1).address(), 5).encode();
    assert!(matches!(
        SignedTransaction::decode(&bytes[..bytes.len() - 1], 4096),
        Err(TxError::Decode(_))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        SignedTransaction::decode(&longer, 4096),
        Err(TxError::Decode(_))
    ));
    assert!(matches!(
        SignedTransaction::decode(&bytes, 10),
        Err(TxError::TooLarge { max: 10, .. })
    ));
    assert!(SignedTransaction::decode(&bytes, 4096).is_ok());
}

#[test]
fn stateless_rejections() {
    let alice = key(0);
    let too_big = tx(
        &alice,
        0,
        1,
        Op::Put {
            key: b"k".to_vec(),
            value: vec![0; params().tx_bytes_max as usize],
        },
    );
    assert!(matches!(check(&too_big), Err(TxError::TooLarge { .. })));

    let other_chain = Transaction {
        chain_id: "other".into(),
        sender: alice.address(),
        nonce: 0,
        fee: 1,
        op: Op::Delete { key: b"k".to_vec() },
    }
    .sign(&alice);
    assert!(matches!(
        check(&other_chain),
        Err(TxError::WrongChain { .. })
    ));

    assert!(matches!(
        check(&tx(&alice, 0, 0, Op::Delete { key: b"k".to_vec() })),
        Err(TxError::FeeTooLow { fee: 0, min: 1 })
    ));
    assert!(matches!(
        check(&tx(&alice, 0, 1, Op::Delete { key: vec![] })),
        Err(TxError::KeySize { len: 0, .. })
    ));
    let long_key = vec![1; params().key_bytes_max as usize + 1];
    assert!(matches!(
        check(&tx(
            &alice,
            0,
            1,
            Op::Put {
                key: long_key,
                value: vec![]
            }
        )),
        Err(TxError::KeySize { .. })
    ));
    let big_value = vec![1; params().value_bytes_max as usize + 1];
    assert!(matches!(
        check(&tx(
            &alice,
            0,
            1,
            Op::Put {
                key: b"k".to_vec(),
                value: big_value
            }
        )),
        Err(TxError::ValueTooLarge { .. })
    ));
    assert!(matches!(
        check(&tx(&alice, u64::MAX, 1, Op::Delete { key: b"k".to_vec() })),
        Err(TxError::NonceExhausted)
    ));
    // The largest value that the limits allow still fits in a transaction.
    let max_value = vec![1; params().value_bytes_max as usize];
    let max_key = vec![1; params().key_bytes_max as usize];
    assert_eq!(
        check(&tx(
            &alice,
            0,
            1,
            Op::Put {
                key: max_key,
                value: max_value
            }
        )),
        Ok(())
    );
}

#[test]
fn signature_rejections() {
    let alice = key(0);
    let mut forged = transfer(&alice, 0, key(1).address(), 5);
    forged.tx.fee = 2; // body changed after signing
    assert_eq!(forged.verify_signature(), Err(TxError::InvalidSignature));

    let mut wrong_signer = transfer(&alice, 0, key(1).address(), 5);
    wrong_signer.signature = transfer(&key(1), 0, key(1).address(), 5).signature;
    assert_eq!(
        wrong_signer.verify_signature(),
        Err(TxError::InvalidSignature)
    );

    let mut bad_sender = transfer(&alice, 0, key(1).address(), 5);
    let mut identity = [0u8; 32];
    identity[0] = 1; // the identity point: a weak key no honest signer has
    bad_sender.tx.sender = mesh_ledger::Address(identity);
    assert_eq!(bad_sender.verify_signature(), Err(TxError::InvalidSender));

    // Batch verification names the culprit.
    let mut batch: Vec<SignedTransaction> = (0..8)
        .map(|i| transfer(&key(i), 0, key(1).address(), 5))
        .collect();
    assert_eq!(verify_signatures(&batch), Ok(()));
    batch[5] = forged;
    assert_eq!(
        verify_signatures(&batch),
        Err((5, TxError::InvalidSignature))
    );
}

#[test]
fn stateful_rejections() {
    let alice = key(0);
    let account = Account {
        balance: 10,
        nonce: 3,
    };
    let at = |nonce, fee| tx(&alice, nonce, fee, Op::Delete { key: b"k".to_vec() }).tx;
    assert_eq!(
        check_stateful(&account, &at(2, 1)),
        Err(StatefulError::NonceTooLow {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        check_stateful(&account, &at(4, 1)),
        Err(StatefulError::NonceTooHigh {
            expected: 3,
            got: 4
        })
    );
    assert_eq!(
        check_stateful(&account, &at(3, 11)),
        Err(StatefulError::InsufficientFee {
            balance: 10,
            fee: 11
        })
    );
    assert_eq!(check_stateful(&account, &at(3, 10)), Ok(()));
}

#[test]
fn failed_operations_pay_the_fee_and_do_not_abort_the_block() {
    let genesis = support::genesis_with(2, 100);
    let mut chain = MemChain::new(&genesis);
    let (alice, bob) = (key(0), key(1));
    let executed = chain.push(vec![
        transfer(&alice, 0, bob.address(), 1_000),
        tx(
            &alice,
            1,
            1,
            Op::Delete {
                key: b"missing".to_vec(),
            },
        ),
        transfer(&alice, 2, bob.address(), 10),
    ]);
    let statuses: Vec<_> = executed.receipts.iter().map(|r| r.status.clone()).collect();
    assert_eq!(
        statuses,
        vec![
            ReceiptStatus::Failed {
                reason: FailureReason::InsufficientBalance {
                    needed: 1_000,
                    available: 99
                }
            },
            ReceiptStatus::Failed {
                reason: FailureReason::KeyNotFound
            },
            ReceiptStatus::Success,
        ]
    );
    use mesh_ledger::state::StateReader;
    let alice_now = chain.state.account(&alice.address()).unwrap().unwrap();
    assert_eq!(
        alice_now,
        Account {
            balance: 100 - 3 - 10,
            nonce: 3
        }
    );
    assert_eq!(
        chain
            .state
            .account(&bob.address())
            .unwrap()
            .unwrap()
            .balance,
        110
    );
}

/// Builds a valid next block, lets `mutate` break it, and returns apply_block's verdict.
fn apply_mutated(mutate: impl FnOnce(&mut Block)) -> BlockError {
    let genesis = support::genesis_with(3, 100);
    let chain = MemChain::new(&genesis);
    let txs = vec![
        transfer(&key(0), 0, key(1).address(), 5),
        transfer(&key(1), 0, key(2).address(), 5),
    ];
    let (executed, _) = mesh_ledger::build_block(
        &chain.state,
        &chain.head,
        key(1000).address(),
        chain.head.timestamp_ms + 5,
        txs,
        &chain.ctx,
    )
    .unwrap();
    let mut block = executed.block;
    assert!(apply_block(&chain.state, &chain.head, &block, &chain.ctx).is_ok());
    mutate(&mut block);
    apply_block(&chain.state, &chain.head, &block, &chain.ctx).unwrap_err()
}

#[test]
fn block_rejections() {
    assert!(matches!(
        apply_mutated(|b| b.header.version = PROTOCOL_VERSION - 1),
        BlockError::WrongVersion { .. }
    ));
    assert!(matches!(
        apply_mutated(|b| b.header.chain_id = "x".into()),
        BlockError::WrongChain { .. }
    ));
    assert!(matches!(
        apply_mutated(|b| b.header.height = 5),
        BlockError::WrongHeight { parent: 0, got: 5 }
    ));
    assert!(matches!(
        apply_mutated(|b| b.header.parent_hash.0[0] ^= 1),
        BlockError::WrongParent { .. }
    ));
    assert!(matches!(
        apply_mutated(|b| b.header.timestamp_ms = 0),
        BlockError::TimestampBeforeParent { .. }
    ));
    assert!(matches!(
        apply_mutated(|b| b.header.validator_set_hash.0[0] ^= 1),
        BlockError::WrongValidatorSet { .. }
    ));
    assert!(matches!(
        apply_mutated(|b| b.header.tx_count = 3),
        BlockError::TxCountMismatch {
            header: 3,
            actual: 2
        }
    ));
    assert!(matches!(
        apply_mutated(|b| b.txs.swap(0, 1)),
        BlockError::TxRootMismatch { .. }
    ));
    assert!(matches!(
        apply_mutated(|b| b.header.receipts_root.0[0] ^= 1),
        BlockError::ReceiptsRootMismatch { .. }
    ));
    assert!(matches!(
        apply_mutated(|b| b.header.state_root.0[0] ^= 1),
        BlockError::StateRootMismatch { .. }
    ));
    let with_txs = |txs: Vec<SignedTransaction>| {
        move |b: &mut Block| {
            let hashes: Vec<_> = txs.iter().map(SignedTransaction::hash).collect();
            b.header.tx_count = txs.len() as u32;
            b.header.tx_root = mesh_ledger::block::tx_root(&hashes);
            b.txs = txs;
        }
    };
    let mut forged = transfer(&key(0), 0, key(1).address(), 5);
    forged.tx.fee = 3;
    assert!(matches!(
        apply_mutated(with_txs(vec![forged])),
        BlockError::InvalidTx {
            index: 0,
            reason: TxError::InvalidSignature
        }
    ));
    assert!(matches!(
        apply_mutated(with_txs(vec![transfer(&key(0), 1, key(1).address(), 5)])),
        BlockError::WrongNonce {
            index: 0,
            expected: 0,
            got: 1
        }
    ));
    let rich_fee = tx(&key(0), 0, 1_000, Op::Delete { key: b"k".to_vec() });
    assert!(matches!(
        apply_mutated(with_txs(vec![rich_fee])),
        BlockError::CannotPayFee {
            index: 0,
            fee: 1_000,
            balance: 100
        }
    ));
}

#[test]
fn block_limit_rejections() {
    let mut genesis = support::genesis_with(3, 100);
    genesis.params.block_txs_max = 1;
    let chain = MemChain::new(&genesis);
    let (mut executed, excluded) = mesh_ledger::build_block(
        &chain.state,
        &chain.head,
        key(1000).address(),
        chain.head.timestamp_ms,
        vec![
            transfer(&key(0), 0, key(1).address(), 5),
            transfer(&key(1), 0, key(1).address(), 5),
        ],
        &chain.ctx,
    )
    .unwrap();
    assert_eq!(
        executed.block.txs.len(),
        1,
        "the builder stops at the limit"
    );
    assert!(excluded.is_empty());
    executed
        .block
        .txs
        .push(transfer(&key(1), 0, key(1).address(), 5));
    assert!(matches!(
        apply_block(&chain.state, &chain.head, &executed.block, &chain.ctx),
        Err(BlockError::TooManyTxs { count: 2, max: 1 })
    ));

    let mut genesis = support::genesis_with(3, 100);
    genesis.params.block_bytes_max = genesis.params.tx_bytes_max as u64;
    let chain = MemChain::new(&genesis);
    let big = |i: u64| {
        tx(
            &key(i),
            0,
            1,
            Op::Put {
                key: b"k".to_vec(),
                value: vec![7; 10_000],
            },
        )
    };
    let (mut executed, _) = mesh_ledger::build_block(
        &chain.state,
        &chain.head,
        key(1000).address(),
        chain.head.timestamp_ms,
        vec![big(0), big(1)],
        &chain.ctx,
    )
    .unwrap();
    assert_eq!(
        executed.block.txs.len(),
        1,
        "the builder stops at the byte limit"
    );
    executed.block.txs.push(big(1));
    executed.block.header.tx_count = 2;
    assert!(matches!(
        apply_block(&chain.state, &chain.head, &executed.block, &chain.ctx),
        Err(BlockError::TooManyBytes { .. })
    ));
}

#[test]
fn builder_leaves_out_what_would_invalidate_the_block() {
    let genesis = support::genesis_with(3, 100);
    let chain = MemChain::new(&genesis);
    let good = transfer(&key(0), 0, key(1).address(), 5);
    let replay = good.clone();
    let gap = transfer(&key(1), 4, key(0).address(), 5);
    let (executed, excluded) = mesh_ledger::build_block(
        &chain.state,
        &chain.head,
        key(1000).address(),
        chain.head.timestamp_ms,
        vec![good.clone(), replay, gap],
        &chain.ctx,
    )
    .unwrap();
    assert_eq!(executed.block.txs, vec![good]);
    assert_eq!(excluded.len(), 2);
}

fn genesis_error(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value = serde_json::to_value(support::genesis_with(2, 100)).unwrap();
    edit(&mut value);
    match Genesis::from_json(&value.to_string()) {
        Ok(_) => panic!("genesis accepted: {value}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn genesis_errors_name_the_field() {
    assert!(Genesis::from_json(&support::genesis_with(2, 1).to_json()).is_ok());
    assert!(genesis_error(|v| {
        v.as_object_mut().unwrap().remove("chain_id");
    })
    .contains("missing field `chain_id`"));
    assert!(genesis_error(|v| {
        v["surprise"] = 1.into();
    })
    .contains("unknown field `surprise`"));
    assert!(genesis_error(|v| {
        v["chain_id"] = "has space".into();
    })
    .contains("`chain_id`"));
    assert!(genesis_error(|v| {
        v["validators"] = serde_json::json!([]);
    })
    .contains("`validators`"));
    assert!(genesis_error(|v| {
        v["validators"][0]["power"] = 0.into();
    })
    .contains("zero voting power"));
    assert!(genesis_error(|v| {
        let first = v["validators"][0].clone();
        v["validators"][1] = first;
    })
    .contains("more than once"));
    assert!(genesis_error(|v| {
        v["validators"][0]["address"] = format!("0x{}", "ff".repeat(32)).into();
    })
    .contains("not a valid ed25519 public key"));
    assert!(genesis_error(|v| {
        v["validators"][0]["address"] = "0x1234".into();
    })
    .contains("expected 32 bytes"));
    assert!(genesis_error(|v| {
        let first = v["balances"][0].clone();
        v["balances"][1] = first;
    })
    .contains("`balances`"));
    assert!(genesis_error(|v| {
        v["balances"][0]["balance"] = u64::MAX.into();
    })
    .contains("overflows"));
    assert!(genesis_error(|v| {
        v["params"]["tx_bytes_max"] = 100.into();
    })
    .contains("`params.tx_bytes_max`"));
    assert!(genesis_error(|v| {
        v["params"]["block_bytes_max"] = 1000.into();
    })
    .contains("`params.block_bytes_max`"));
    assert!(genesis_error(|v| {
        v["params"]["block_txs_max"] = 0.into();
    })
    .contains("`params.block_txs_max`"));
    assert!(genesis_error(|v| {
        v["params"]["key_bytes_max"] = 0.into();
    })
    .contains("`params.key_bytes_max`"));
    let missing = Genesis::load(std::path::Path::new("/nonexistent/genesis.json")).unwrap_err();
    assert!(matches!(missing, GenesisError::Io { .. }));
    assert!(missing.to_string().contains("/nonexistent/genesis.json"));
}

/// A node skips the signatures it verified at admission (`SignaturesVerified`, by hash) and
/// checks the rest in one batch; a bad one is still found and named by its index in the block.
#[test]
fn vouched_signatures_are_skipped_and_the_rest_still_checked() {
    let genesis = support::genesis_with(3, 100);
    let chain = MemChain::new(&genesis);
    let mut forged = transfer(&key(1), 0, key(2).address(), 5);
    forged.tx.fee = 3;
    let txs = vec![
        transfer(&key(0), 0, key(1).address(), 5),
        forged.clone(),
        transfer(&key(2), 0, key(0).address(), 5),
    ];
    let hashes: Vec<_> = txs.iter().map(SignedTransaction::hash).collect();
    let build = |txs: Vec<SignedTransaction>, verified: mesh_ledger::SignaturesVerified<'_>| {
        mesh_ledger::build_block_with(
            &chain.state,
            &chain.head,
            key(1000).address(),
            chain.head.timestamp_ms + 5,
            txs,
            &chain.ctx,
            verified,
        )
        .unwrap()
    };

    // The builder trusts what it is told (the mempool verified its candidates) ...
    let (built, excluded) = build(txs.clone(), &|hash| hashes.contains(hash));
    assert!(excluded.is_empty());
    // ... and checks what it is not told about.
    let (_, excluded) = build(txs, mesh_ledger::NONE_VERIFIED);
    assert_eq!(excluded.len(), 1);
    assert_eq!(excluded[0].tx_hash, forged.hash());

    // A validator that verified only the first and last still finds the forgery in the middle.
    let vouched = [hashes[0], hashes[2]];
    for verified in [mesh_ledger::NONE_VERIFIED, &|hash: &mesh_ledger::TxHash| {
        vouched.contains(hash)
    }] {
        let verdict = mesh_ledger::apply_block_with(
            &chain.state,
            &chain.head,
            &built.block,
            &chain.ctx,
            verified,
        );
        assert!(
            matches!(
                verdict,
                Err(BlockError::InvalidTx {
                    index: 1,
                    reason: TxError::InvalidSignature
                })
            ),
            "{verdict:?}"
        );
    }

    // A valid block gives the same execution whatever was vouched for.
    let valid = vec![
        transfer(&key(0), 0, key(1).address(), 5),
        transfer(&key(2), 0, key(0).address(), 5),
    ];
    let (valid, _) = build(valid, mesh_ledger::NONE_VERIFIED);
    let all = valid.tx_hashes.clone();
    let checked = apply_block(&chain.state, &chain.head, &valid.block, &chain.ctx).unwrap();
    let skipped = mesh_ledger::apply_block_with(
        &chain.state,
        &chain.head,
        &valid.block,
        &chain.ctx,
        &|hash| all.contains(hash),
    )
    .unwrap();
    assert_eq!(checked.receipts, skipped.receipts);
    assert_eq!(checked.changes, skipped.changes);
    assert_eq!(checked.block_hash, skipped.block_hash);
}
