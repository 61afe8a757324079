//! Mempool admission, ordering, bounds, eviction and re-checks after a block.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)] // tests: a panic is a failure

use mesh_ledger::tx::TxError;
use mesh_ledger::{Account, Address, Op, Params, SecretKey, SignedTransaction, Transaction};
use mesh_node::mempool::{Admitted, CheckedTx, Mempool, MempoolConfig, MempoolError};

const CHAIN: &str = "pool-test";

fn key(n: u64) -> SecretKey {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    SecretKey::from_seed(seed)
}

fn tx(from: u64, nonce: u64, fee: u64) -> SignedTransaction {
    let from = key(from);
    Transaction {
        chain_id: CHAIN.into(),
        sender: from.address(),
        nonce,
        fee,
        op: Op::Transfer {
            to: key(99).address(),
            amount: 1,
        },
    }
    .sign(&from)
}

fn pool(config: MempoolConfig) -> Mempool {
    Mempool::new(config, CHAIN.into(), Params::default())
}

fn rich() -> Account {
    Account {
        balance: 1_000_000,
        nonce: 0,
    }
}

#[test]
fn admits_once_and_knows_repeats() {
    let mut pool = pool(MempoolConfig::default());
    let t = tx(1, 0, 5);
    let hash = t.hash();
    assert_eq!(pool.insert(t.clone(), &rich()), Ok(Admitted::New(hash)));
    assert_eq!(
        pool.insert(t, &rich()),
        Ok(Admitted::Known(hash)),
        "same bytes: same hash, no error, no second entry"
    );
    assert_eq!(pool.len(), 1);
    assert!(pool.recently_seen(&hash));
}

#[test]
fn a_checked_transaction_is_admitted_with_the_stateful_checks_alone() {
    let params = Params::default();
    let mut forged = tx(1, 0, 5);
    forged.tx.fee = 6;
    assert_eq!(
        CheckedTx::check(forged, CHAIN, &params).map(|c| c.hash()),
        Err(TxError::InvalidSignature),
        "no CheckedTx exists for a bad signature"
    );
    assert!(matches!(
        CheckedTx::check(tx(1, 0, 5), "other-chain", &params),
        Err(TxError::WrongChain { .. })
    ));

    let mut pool = pool(MempoolConfig::default());
    let checked = CheckedTx::check(tx(1, 0, 5), CHAIN, &params).unwrap();
    let hash = checked.hash();
    assert_eq!(hash, tx(1, 0, 5).hash());
    assert_eq!(
        pool.insert_checked(checked.clone(), &rich()),
        Ok(Admitted::New(hash))
    );
    assert_eq!(
        pool.insert_checked(checked, &rich()),
        Ok(Admitted::Known(hash))
    );
    assert!(pool.recently_seen(&hash));
    // Staking operations are pooled like any other: the node runs their admission check
    // against the committed state before the pool (`Chain::check_staking`).
    let bond = {
        let from = key(3);
        Transaction {
            chain_id: CHAIN.into(),
            sender: from.address(),
            nonce: 0,
            fee: 5,
            op: Op::Bond {
                validator: from.address(),
                amount: 10,
            },
        }
        .sign(&from)
    };
    let bond_hash = bond.hash();
    assert_eq!(
        pool.insert_checked(
            CheckedTx::check(bond.clone(), CHAIN, &params).unwrap(),
            &rich()
        ),
        Ok(Admitted::New(bond_hash))
    );
    assert_eq!(pool.insert(bond, &rich()), Ok(Admitted::Known(bond_hash)));
    // The stateful checks still apply.
    let broke = Account {
        balance: 1,
        nonce: 0,
    };
    assert!(matches!(
        pool.insert_checked(
            CheckedTx::check(tx(2, 0, 5), CHAIN, &params).unwrap(),
            &broke
        ),
        Err(MempoolError::InsufficientBalance { .. })
    ));
}

#[test]
fn rejections_carry_reasons() {
    let mut pool = pool(MempoolConfig {
        future_nonce_window: 4,
        ..MempoolConfig::default()
    });
    let mut forged = tx(1, 0, 5);
    forged.tx.fee = 6;
    assert_eq!(
        pool.insert(forged, &rich()),
        Err(MempoolError::Invalid(TxError::InvalidSignature))
    );
    assert!(matches!(
        pool.insert(tx(1, 0, 0), &rich()),
        Err(MempoolError::Invalid(TxError::FeeTooLow { .. }))
    ));
    let at_three = Account {
        balance: 100,
        nonce: 3,
    };
    assert_eq!(
        pool.insert(tx(1, 2, 5), &at_three),
        Err(MempoolError::NonceTooLow {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        pool.insert(tx(1, 8, 5), &at_three),
        Err(MempoolError::NonceTooHigh {
            expected: 3,
            got: 8,
            max: 7
        })
    );
    assert_eq!(
        pool.insert(tx(1, 3, 500), &at_three),
        Err(MempoolError::InsufficientBalance {
            balance: 100,
            fee: 500
        })
    );
    assert!(
        pool.insert(tx(1, 7, 5), &at_three).is_ok(),
        "inside the window"
    );
    assert_eq!(
        pool.insert(tx(1, 7, 5), &at_three)
            .map(|a| matches!(a, Admitted::Known(_))),
        Ok(true)
    );
}

#[test]
fn same_nonce_needs_a_higher_fee() {
    let mut pool = pool(MempoolConfig::default());
    pool.insert(tx(1, 0, 5), &rich()).unwrap();
    let other = {
        let k = key(1);
        Transaction {
            chain_id: CHAIN.into(),
            sender: k.address(),
            nonce: 0,
            fee: 5,
            op: Op::Delete { key: b"k".to_vec() },
        }
        .sign(&k)
    };
    assert_eq!(
        pool.insert(other, &rich()),
        Err(MempoolError::NonceAlreadyPending {
            nonce: 0,
            pending_fee: 5
        })
    );
    let bumped = tx(1, 0, 9);
    assert!(matches!(
        pool.insert(bumped.clone(), &rich()),
        Ok(Admitted::New(_))
    ));
    assert_eq!(pool.len(), 1);
    assert!(pool.contains(&bumped.hash()));
}

#[test]
fn batch_admission_finds_every_bad_signature() {
    let mut pool = pool(MempoolConfig::default());
    let mut txs: Vec<SignedTransaction> = (0..10).map(|i| tx(i, 0, 5)).collect();
    txs[3].tx.fee = 6;
    txs[8].tx.fee = 6;
    let results = pool.insert_batch(txs, |_| rich());
    let bad: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(bad, vec![3, 8]);
    assert_eq!(pool.len(), 8);
}

#[test]
fn bounded_by_count_and_bytes_with_fee_eviction() {
    let mut pool = pool(MempoolConfig {
        max_txs: 3,
        ..MempoolConfig::default()
    });
    for (i, fee) in [(1, 5), (2, 3), (3, 7)] {
        pool.insert(tx(i, 0, fee), &rich()).unwrap();
    }
    assert_eq!(
        pool.insert(tx(4, 0, 3), &rich()),
        Err(MempoolError::Full { fee: 3, lowest: 3 })
    );
    assert!(
        pool.insert(tx(4, 0, 4), &rich()).is_ok(),
        "a higher fee evicts the lowest"
    );
    assert!(!pool.contains(&tx(2, 0, 3).hash()));
    assert_eq!(pool.len(), 3);

    let one = tx(1, 0, 5).encoded_len();
    let mut pool = pool_with_bytes(one * 2);
    pool.insert(tx(1, 0, 5), &rich()).unwrap();
    pool.insert(tx(2, 0, 5), &rich()).unwrap();
    assert!(matches!(
        pool.insert(tx(3, 0, 5), &rich()),
        Err(MempoolError::Full { .. })
    ));
    assert!(pool.bytes() <= one * 2);
}

fn pool_with_bytes(max_bytes: usize) -> Mempool {
    pool(MempoolConfig {
        max_bytes,
        ..MempoolConfig::default()
    })
}

#[test]
fn eviction_takes_later_nonces_along() {
    let mut pool = pool(MempoolConfig {
        max_txs: 3,
        ..MempoolConfig::default()
    });
    pool.insert(tx(1, 0, 2), &rich()).unwrap();
    pool.insert(tx(1, 1, 9), &rich()).unwrap();
    pool.insert(tx(2, 0, 9), &rich()).unwrap();
    pool.insert(tx(3, 0, 5), &rich()).unwrap();
    assert!(!pool.contains(&tx(1, 0, 2).hash()));
    assert!(
        !pool.contains(&tx(1, 1, 9).hash()),
        "nonce 1 cannot run without nonce 0"
    );
    assert_eq!(pool.len(), 2);
}

#[test]
fn selection_keeps_nonce_order_and_prefers_fees() {
    let mut pool = pool(MempoolConfig::default());
    pool.insert(tx(1, 1, 50), &rich()).unwrap();
    pool.insert(tx(1, 0, 1), &rich()).unwrap();
    pool.insert(tx(2, 0, 10), &rich()).unwrap();
    pool.insert(tx(3, 2, 100), &rich()).unwrap(); // gapped: sender 3 is at nonce 0
    let picked: Vec<(Address, u64)> = pool
        .select(10, u64::MAX, |_| 0)
        .iter()
        .map(|t| (t.tx.sender, t.tx.nonce))
        .collect();
    assert_eq!(
        picked,
        vec![
            (key(2).address(), 0),
            (key(1).address(), 0),
            (key(1).address(), 1)
        ]
    );
    assert_eq!(pool.select(2, u64::MAX, |_| 0).len(), 2);
    let one = tx(1, 0, 1).encoded_len() as u64;
    assert_eq!(pool.select(10, one, |_| 0).len(), 1, "byte limit");
}

#[test]
fn committed_blocks_remove_and_recheck() {
    let mut pool = pool(MempoolConfig::default());
    for nonce in 0..4 {
        pool.insert(tx(1, nonce, 5), &rich()).unwrap();
    }
    pool.insert(tx(2, 0, 5), &rich()).unwrap();
    let included = [tx(1, 0, 5).hash()];
    // Sender 1 is now at nonce 2 (another node's transaction took nonce 1); sender 2 is broke.
    pool.on_block_committed(&included, |address| {
        if *address == key(1).address() {
            Account {
                balance: 100,
                nonce: 2,
            }
        } else {
            Account {
                balance: 0,
                nonce: 0,
            }
        }
    });
    let left: Vec<u64> = pool
        .select(10, u64::MAX, |_| 2)
        .iter()
        .map(|t| t.tx.nonce)
        .collect();
    assert_eq!(left, vec![2, 3]);
    assert_eq!(pool.len(), 2);
    assert!(pool.recently_seen(&included[0]));
}

#[test]
fn every_transaction_that_leaves_unincluded_is_reported_once() {
    use mesh_node::mempool::{DROP_EVICTED, DROP_REPLACED, DROP_STALE};
    let mut pool = pool(MempoolConfig {
        max_txs: 2,
        ..MempoolConfig::default()
    });
    let low = tx(1, 0, 5);
    let bumped = tx(1, 0, 6);
    pool.insert(low.clone(), &rich()).unwrap();
    pool.insert(bumped.clone(), &rich()).unwrap();
    assert_eq!(pool.take_dropped(), vec![(low.hash(), DROP_REPLACED)]);
    assert!(pool.take_dropped().is_empty(), "reported once");

    // Full (2 txs): a higher fee evicts the lowest.
    let cheap = tx(2, 0, 1);
    pool.insert(cheap.clone(), &rich()).unwrap();
    pool.insert(tx(3, 0, 50), &rich()).unwrap();
    assert_eq!(pool.take_dropped(), vec![(cheap.hash(), DROP_EVICTED)]);

    // A block used sender 1's nonce 0 with another transaction: the pending one is stale.
    pool.on_block_committed(&[], |address| {
        if *address == key(1).address() {
            Account {
                balance: 1_000_000,
                nonce: 1,
            }
        } else {
            rich()
        }
    });
    assert_eq!(pool.take_dropped(), vec![(bumped.hash(), DROP_STALE)]);
    // Included transactions are not "dropped".
    let included = tx(3, 0, 50).hash();
    pool.on_block_committed(&[included], |_| rich());
    assert!(pool.take_dropped().is_empty());

    // Each dropped transaction stays answerable, with its reason, after the report was taken.
    assert_eq!(pool.dropped(&low.hash()), Some((&low, DROP_REPLACED)));
    assert_eq!(pool.dropped(&cheap.hash()), Some((&cheap, DROP_EVICTED)));
    assert_eq!(pool.dropped(&bumped.hash()), Some((&bumped, DROP_STALE)));
    assert_eq!(pool.dropped(&included), None);
}

#[test]
fn pending_transactions_are_announced_again_after_some_blocks_within_a_byte_budget() {
    let mut pool = pool(MempoolConfig::default());
    for nonce in 0..3 {
        pool.insert(tx(1, nonce, 5), &rich()).unwrap();
    }
    pool.insert(tx(2, 0, 5), &rich()).unwrap();
    // Just admitted (and gossiped then): nothing is due.
    assert!(pool.take_reannouncements(2, usize::MAX).is_empty());
    pool.on_block_committed(&[], |_| rich());
    assert!(pool.take_reannouncements(2, usize::MAX).is_empty());
    pool.on_block_committed(&[], |_| rich());
    // Two blocks later: everything, each sender in nonce order.
    let one_len = mesh_ledger::encoding::encode(&tx(1, 0, 5)).len();
    let limited = pool.take_reannouncements(2, 2 * one_len);
    assert_eq!(limited.len(), 2, "the byte budget caps one round");
    let rest = pool.take_reannouncements(2, usize::MAX);
    assert_eq!(rest.len(), 2, "the others are still due");
    let nonces: Vec<u64> = limited.iter().map(|t| t.tx.nonce).collect();
    assert_eq!(nonces, vec![0, 1], "oldest first, in nonce order");
    // Announced now: not due again until two more blocks pass.
    assert!(pool.take_reannouncements(2, usize::MAX).is_empty());
    pool.on_block_committed(&[tx(1, 0, 5).hash()], |address| Account {
        balance: 1_000_000,
        nonce: u64::from(*address == key(1).address()),
    });
    pool.on_block_committed(&[], |address| Account {
        balance: 1_000_000,
        nonce: u64::from(*address == key(1).address()),
    });
    let again = pool.take_reannouncements(2, usize::MAX);
    assert_eq!(
        again.len(),
        3,
        "an included transaction is never announced again"
    );
}
