//! A light client that trusts only genesis follows the validator set through its changes
//! (`TrustAnchor::advance`): grow, shrink, swap and a full rotation in a row, each change
//! certified by the set before it; and a certificate by a set not in force at its height is
//! refused, however it is dressed up.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use mesh_consensus::{BlockId, Epoch, FinalityCertificate, Height, ValidatorSignature, View, Vote};
use mesh_ledger::block::PROTOCOL_VERSION;
use mesh_ledger::{Address, BlockHeader, Hash, SecretKey, Validator, ValidatorSet};
use mesh_rpc::types::{CertificateJson, EpochChange, FinalityProof};
use mesh_rpc::verify::{verify_header_final, VerifyError};
use mesh_rpc::TrustAnchor;

const CHAIN: &str = "epoch-changes";
/// Heights per epoch: epoch `e` is heights `2e + 1..=2e + 2`.
const EPOCH_BLOCKS: u64 = 2;

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

/// The set of the given key seeds, power 10 each.
fn set_of(seeds: &[u8]) -> (ValidatorSet, Vec<SecretKey>) {
    let keys: Vec<SecretKey> = seeds.iter().map(|&s| key(s)).collect();
    let set = ValidatorSet::new(
        keys.iter()
            .map(|k| Validator {
                address: k.address(),
                power: 10,
            })
            .collect(),
    )
    .unwrap();
    (set, keys)
}

/// The sets of epochs 0..=5: genesis (twice), grow by one, shrink by one, swap one, rotate all.
fn schedule_of_sets() -> Vec<(ValidatorSet, Vec<SecretKey>)> {
    vec![
        set_of(&[1, 2, 3, 4]),
        set_of(&[1, 2, 3, 4]),
        set_of(&[1, 2, 3, 4, 5]),
        set_of(&[2, 3, 4, 5]),
        set_of(&[2, 3, 4, 6]),
        set_of(&[7, 8, 9, 10]),
    ]
}

fn header(height: u64, set: &ValidatorSet, next: &ValidatorSet) -> BlockHeader {
    BlockHeader {
        version: PROTOCOL_VERSION,
        chain_id: CHAIN.into(),
        height,
        parent_hash: Hash([height as u8; 32]),
        proposer: Address([1; 32]),
        timestamp_ms: 1_700_000_000_000 + height,
        tx_count: 0,
        tx_root: Hash::ZERO,
        receipts_root: Hash::ZERO,
        state_root: Hash([7; 32]),
        validator_set_hash: set.hash(),
        next_validator_set_hash: next.hash(),
    }
}

/// A certificate over `header`, naming `epoch`, signed by every key of `signers`.
fn certificate(header: &BlockHeader, epoch: u64, signers: &[SecretKey]) -> FinalityCertificate {
    let id = BlockId {
        epoch: Epoch(epoch),
        view: View(1),
        height: Height(header.height),
        hash: header.hash(),
    };
    let mut signatures: Vec<ValidatorSignature> = signers
        .iter()
        .map(|k| {
            let vote = Vote::Finalize(id).sign(k, CHAIN);
            ValidatorSignature {
                signer: vote.signer,
                signature: vote.signature,
            }
        })
        .collect();
    signatures.sort_by_key(|s| s.signer);
    FinalityCertificate {
        subject: id,
        signatures,
    }
}

fn last(epoch: u64) -> u64 {
    mesh_ledger::EpochSchedule::new(EPOCH_BLOCKS).last(epoch)
}

/// The honest change of `epoch`: its boundary, certified by its own set, naming the next.
fn change(sets: &[(ValidatorSet, Vec<SecretKey>)], epoch: u64) -> EpochChange {
    let (set, keys) = &sets[epoch as usize];
    let (next, _) = &sets[epoch as usize + 1];
    let boundary = header(last(epoch), set, next);
    EpochChange {
        epoch,
        certificate: CertificateJson::from(&certificate(&boundary, epoch, keys)),
        boundary,
        next_validators: next.validators().to_vec(),
    }
}

fn genesis_anchor(sets: &[(ValidatorSet, Vec<SecretKey>)]) -> TrustAnchor {
    TrustAnchor::new(CHAIN.into(), EPOCH_BLOCKS, sets[0].0.clone())
}

fn final_proof(certificate: &FinalityCertificate) -> FinalityProof {
    FinalityProof {
        certificate: CertificateJson::from(certificate),
        links: Vec::new(),
    }
}

#[test]
fn a_genesis_anchor_follows_four_set_changes() {
    let sets = schedule_of_sets();
    let mut anchor = genesis_anchor(&sets);
    assert_eq!(anchor.newest_epoch(), 1);

    // A block of epoch 5 cannot be checked before the anchor reaches it.
    let (set_5, keys_5) = &sets[5];
    let block = header(last(5) - 1, set_5, set_5);
    let proof = final_proof(&certificate(&block, 5, keys_5));
    assert_eq!(
        verify_header_final(&anchor, &block, &proof),
        Err(VerifyError::UnknownEpoch {
            epoch: 5,
            newest_trusted: 1
        })
    );

    // Epoch 0's change proves the set of epoch 1 again; epochs 1..=4 prove the four changes.
    for epoch in 0..=4 {
        anchor.advance(&change(&sets, epoch)).unwrap();
        assert_eq!(anchor.set(epoch + 1), Some(&sets[epoch as usize + 1].0));
    }
    assert_eq!(anchor.newest_epoch(), 5);
    verify_header_final(&anchor, &block, &proof).unwrap();
    // Advancing again through a known change is checked and harmless.
    anchor.advance(&change(&sets, 2)).unwrap();
    assert_eq!(anchor.set(3), Some(&sets[3].0));
}

#[test]
fn a_certificate_by_a_set_not_in_force_is_refused() {
    let sets = schedule_of_sets();
    let mut anchor = genesis_anchor(&sets);
    for epoch in 0..=4 {
        anchor.advance(&change(&sets, epoch)).unwrap();
    }
    let (set_4, keys_4) = &sets[4];
    let (set_5, _) = &sets[5];
    let height = last(5) - 1;

    // The old set signs a block of epoch 5 that names it: the header names a set not in force.
    let stale_header = header(height, set_4, set_4);
    let stale = final_proof(&certificate(&stale_header, 5, keys_4));
    assert_eq!(
        verify_header_final(&anchor, &stale_header, &stale),
        Err(VerifyError::WrongValidatorSet)
    );
    // The old set signs an honest-looking header of epoch 5: its signers are not members.
    let honest_header = header(height, set_5, set_5);
    let by_old_set = final_proof(&certificate(&honest_header, 5, keys_4));
    assert!(matches!(
        verify_header_final(&anchor, &honest_header, &by_old_set),
        Err(VerifyError::Certificate(_))
    ));
    // The old set's certificate naming its own epoch, for a height of the next one.
    let old_epoch = final_proof(&certificate(&honest_header, 4, keys_4));
    match verify_header_final(&anchor, &honest_header, &old_epoch) {
        Err(VerifyError::Certificate(why)) => assert!(why.contains("epoch 4"), "{why}"),
        other => panic!("expected a refused certificate, got {other:?}"),
    }
}

#[test]
fn a_forged_epoch_change_teaches_the_anchor_nothing() {
    let sets = schedule_of_sets();
    let mut anchor = genesis_anchor(&sets);
    anchor.advance(&change(&sets, 0)).unwrap();

    // A change from an epoch the anchor does not trust yet.
    assert!(matches!(
        anchor.advance(&change(&sets, 3)),
        Err(VerifyError::UnknownEpoch { epoch: 3, .. })
    ));
    // The next set swapped for the attacker's: it does not hash to the certified header's.
    let (attackers, attacker_keys) = set_of(&[200, 201, 202, 203]);
    let mut swapped = change(&sets, 1);
    swapped.next_validators = attackers.validators().to_vec();
    assert!(matches!(
        anchor.advance(&swapped),
        Err(VerifyError::EpochChange { epoch: 1, .. })
    ));
    // A boundary naming the attacker's set, signed by the attacker: not the trusted set.
    let forged_boundary = header(last(1), &attackers, &attackers);
    let forged = EpochChange {
        epoch: 1,
        certificate: CertificateJson::from(&certificate(&forged_boundary, 1, &attacker_keys)),
        boundary: forged_boundary,
        next_validators: attackers.validators().to_vec(),
    };
    assert_eq!(anchor.advance(&forged), Err(VerifyError::WrongValidatorSet));
    // The right boundary certified by too few of the trusted set.
    let mut weak = change(&sets, 1);
    let (_, keys_1) = &sets[1];
    weak.certificate = CertificateJson::from(&certificate(&weak.boundary, 1, &keys_1[..2]));
    assert!(matches!(
        anchor.advance(&weak),
        Err(VerifyError::Certificate(_))
    ));
    // A certified header that is not the epoch's last.
    let (set_1, _) = &sets[1];
    let (set_2, _) = &sets[2];
    let early = header(last(1) - 1, set_1, set_2);
    let not_boundary = EpochChange {
        epoch: 1,
        certificate: CertificateJson::from(&certificate(&early, 1, keys_1)),
        boundary: early,
        next_validators: set_2.validators().to_vec(),
    };
    assert!(matches!(
        anchor.advance(&not_boundary),
        Err(VerifyError::EpochChange { epoch: 1, .. })
    ));
    assert_eq!(anchor.newest_epoch(), 1, "nothing was learned");
    anchor.advance(&change(&sets, 1)).unwrap();
    assert_eq!(anchor.newest_epoch(), 2);
}
