//! Golden tests: they pin the exact bytes and hashes of sample values, so any change to the
//! canonical encoding, the signing domain or a hash breaks a test on purpose. If one fails
//! after a deliberate format change, bump the version concerned, record it in docs/storage.md
//! or docs/architecture.md, and only then update the pinned values.
//!
//! Last deliberate change: protocol version 3 (ADR 003) — genesis params gained the staking
//! fields (genesis hash), genesis state holds the stake table, self-bonds and epoch sets
//! (state root), and headers carry `next_validator_set_hash` (block hash).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)] // tests: a panic is a failure

mod support;

use mesh_ledger::block::{merkle_root, receipts_root, tx_root};
use mesh_ledger::crypto::{signing_bytes, TX_DOMAIN};
use mesh_ledger::encoding::encode;
use mesh_ledger::memory::MemoryState;
use mesh_ledger::{genesis_block, Account, FailureReason, Hash, Op, Receipt, ReceiptStatus};
use support::{key, tx};

fn sample_transfer() -> mesh_ledger::SignedTransaction {
    tx(
        &key(1),
        7,
        3,
        Op::Transfer {
            to: key(2).address(),
            amount: 1_000,
        },
    )
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[test]
fn signing_bytes_layout() {
    let bytes = signing_bytes(TX_DOMAIN, "c", b"\x01\x02");
    assert_eq!(hex(&bytes), "6d6573682f74782f76310001000000630102");
}

#[test]
fn transaction_bytes_and_hash() {
    let stx = sample_transfer();
    assert_eq!(
        hex(&stx.tx.encode()),
        GOLDEN_TX_BODY,
        "the body layout: chain id (u32 len + utf8), sender, nonce, fee, op tag, fields"
    );
    assert_eq!(stx.signature.to_string(), GOLDEN_TX_SIGNATURE);
    assert_eq!(stx.hash().to_string(), GOLDEN_TX_HASH);
    assert!(stx.verify_signature().is_ok());
}

#[test]
fn genesis_header_and_roots() {
    let genesis = support::genesis_with(3, 500);
    assert_eq!(genesis.hash().to_string(), GOLDEN_GENESIS_HASH);
    assert_eq!(
        genesis.validator_set().unwrap().hash().to_string(),
        GOLDEN_VALIDATOR_SET_HASH
    );
    let executed = genesis_block(&MemoryState::new(), &genesis).unwrap();
    assert_eq!(
        executed.block.header.state_root.to_string(),
        GOLDEN_GENESIS_STATE_ROOT
    );
    assert_eq!(executed.block_hash.to_string(), GOLDEN_GENESIS_BLOCK_HASH);
}

#[test]
fn merkle_roots() {
    assert_eq!(merkle_root(&[]), Hash::ZERO);
    let leaves: Vec<Hash> = (0u8..5).map(|i| Hash::of(&[i])).collect();
    assert_eq!(merkle_root(&leaves).to_string(), GOLDEN_MERKLE_ROOT_5);
    assert_eq!(
        tx_root(&[sample_transfer().hash()]).to_string(),
        GOLDEN_TX_ROOT_1
    );
    let receipt = Receipt {
        tx_hash: sample_transfer().hash(),
        height: 9,
        index: 0,
        status: ReceiptStatus::Failed {
            reason: FailureReason::InsufficientBalance {
                needed: 5,
                available: 4,
            },
        },
        fee_charged: 3,
    };
    assert_eq!(
        hex(&encode(&receipt)[32..]),
        "0900000000000000000000000100050000000000000004000000000000000300000000000000"
    );
    assert_eq!(
        receipts_root(&[receipt]).to_string(),
        GOLDEN_RECEIPTS_ROOT_1
    );
}

#[test]
fn staking_state_keys_and_op_tags() {
    use mesh_ledger::{Address, StateKey};
    let a = Address([0xaa; 32]);
    let b = Address([0xbb; 32]);
    assert_eq!(hex(&StateKey::StakeTable.encode()), "03");
    assert_eq!(
        hex(&StateKey::Bond {
            validator: a,
            owner: b
        }
        .encode()),
        format!("04{}{}", "aa".repeat(32), "bb".repeat(32))
    );
    assert_eq!(
        hex(&StateKey::Unbonding { release_epoch: 258 }.encode()),
        "050000000000000102"
    );
    assert_eq!(hex(&StateKey::EpochSet(3).encode()), "060000000000000003");
    // Appended ops: tags 3 and 4, then the validator and the amount (u64 LE).
    assert_eq!(
        hex(&encode(&Op::Bond {
            validator: a,
            amount: 5
        })),
        format!("03{}0500000000000000", "aa".repeat(32))
    );
    assert_eq!(
        hex(&encode(&Op::Unbond {
            validator: a,
            amount: 5
        })),
        format!("04{}0500000000000000", "aa".repeat(32))
    );
}

#[test]
fn account_bytes() {
    assert_eq!(
        hex(&Account {
            balance: 258,
            nonce: 1
        }
        .encode()),
        "02010000000000000100000000000000"
    );
}

const GOLDEN_TX_BODY: &str = "0a000000746573742d636861696e3f07ddec98f77249108b514a3dd4a095a9987df8437a7c82e6e80bbba0aee11f0700000000000000030000000000000000cecacaefde3cef21eb6d433cfe132b8ce43ea8723d331ab8ab9cdf59a8f65161e803000000000000";
const GOLDEN_TX_SIGNATURE: &str = "0x6ac4614b0c3e00077206c20671a289c465ec1973646b21961c0c52e90af22625d22bdcba2096f0c97568175b435c029cc154a4fecc990638afe0764a22845807";
const GOLDEN_TX_HASH: &str = "0x37183c2749aa6258e700dc3821d6b533103b1f7add2cff65bd0772ae8f8ab10f";
const GOLDEN_GENESIS_HASH: &str =
    "0x4256a7f14fba45c488bc3409fbf18ef9a4f13b2262ea9a91d3dbcbcc43b70fb4";
const GOLDEN_VALIDATOR_SET_HASH: &str =
    "0x7341994c462625fc076f62cd0936dcfe565161a7bc60db427e91e032a6319686";
const GOLDEN_GENESIS_STATE_ROOT: &str =
    "0xbdcfd2c8763945c91ea6a9c88ad504a8e8c576b15f904ea3e984a8149dbce31d";
const GOLDEN_GENESIS_BLOCK_HASH: &str =
    "0x65612919f3982f93645cb7ebd05a4623525a8169129ec88ecc4306388557730b";
const GOLDEN_MERKLE_ROOT_5: &str =
    "0x3d42510c8a033d8191c69083b13fd8f3ff2b71c7188d690c940cfca866353d32";
const GOLDEN_TX_ROOT_1: &str = "0xd16a3cf6db3be53611ac60512a0163655b99b742b84ac0e4fd333722c9f5cc2b";
const GOLDEN_RECEIPTS_ROOT_1: &str =
    "0x61a45436b719df3c64a053a1437466255e8650c6ac1dfe51f753a242ed724f5d";
