//! Finality certificates and signed vote layouts: verification against the validator set,
//! each refusal reason, the borsh round trip storage relies on, and golden signing bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_consensus::{
    BlockId, CertError, Certificate, Epoch, FinalityCertificate, Header, Height, Round, SignedVote,
    ValidatorSignature, View, Vote,
};
use mesh_ledger::{encoding, Hash, SecretKey, Validator, ValidatorSet};

const CHAIN: &str = "mesh-script";

struct Committee {
    keys: Vec<SecretKey>,
    validators: ValidatorSet,
}

impl Committee {
    fn new() -> Committee {
        let mut keys: Vec<SecretKey> = (1..=4u8).map(|i| SecretKey::from_seed([i; 32])).collect();
        keys.sort_by_key(SecretKey::address);
        let validators = ValidatorSet::new(
            keys.iter()
                .map(|k| Validator {
                    address: k.address(),
                    power: 1,
                })
                .collect(),
        )
        .unwrap();
        Committee { keys, validators }
    }

    fn certificate(&self, subject: BlockId, signers: &[usize]) -> FinalityCertificate {
        let mut signatures: Vec<ValidatorSignature> = signers
            .iter()
            .map(|i| {
                let signed = Vote::Finalize(subject).sign(&self.keys[*i], CHAIN);
                ValidatorSignature {
                    signer: signed.signer,
                    signature: signed.signature,
                }
            })
            .collect();
        signatures.sort_by_key(|s| s.signer);
        Certificate {
            subject,
            signatures,
        }
    }
}

#[test]
fn finality_certificate_verifies_and_round_trips() {
    let s = Committee::new();
    let id = BlockId {
        epoch: Epoch(0),
        view: View(4),
        height: Height(2),
        hash: Hash::of(b"b"),
    };
    let cert = s.certificate(id, &[0, 1, 3]);
    cert.verify(CHAIN, &s.validators).unwrap();
    let bytes = encoding::encode(&cert);
    let decoded: FinalityCertificate = encoding::decode("certificate", &bytes, 4096).unwrap();
    assert_eq!(decoded, cert);

    let validators = &s.validators;
    let short = s.certificate(id, &[0, 1]);
    assert_eq!(
        short.verify(CHAIN, validators),
        Err(CertError::InsufficientPower {
            power: 2,
            quorum: 3
        })
    );
    assert!(cert.verify("other-chain", validators).is_err());
    let mut doubled = cert.clone();
    doubled.signatures[1] = doubled.signatures[0];
    assert!(matches!(
        doubled.verify(CHAIN, validators),
        Err(CertError::UnsortedOrDuplicate { .. })
    ));
    let mut forged = cert.clone();
    forged.subject.hash = Hash::of(b"other");
    assert!(matches!(
        forged.verify(CHAIN, validators),
        Err(CertError::InvalidSignature { .. })
    ));
    let mut outsider = cert;
    let stranger = SecretKey::from_seed([77; 32]);
    let signed: SignedVote = Vote::Finalize(id).sign(&stranger, CHAIN);
    outsider.signatures.push(ValidatorSignature {
        signer: signed.signer,
        signature: signed.signature,
    });
    outsider.signatures.sort_by_key(|s| s.signer);
    assert!(matches!(
        outsider.verify(CHAIN, validators),
        Err(CertError::NotValidator { .. })
    ));
}

#[test]
fn vote_signing_bytes_are_stable() {
    // Golden: a change to the signed layout of a vote must be deliberate (bump the domain).
    let header = Header {
        epoch: Epoch(3),
        view: View(1),
        height: Height(2),
        parent_view: View(0),
        parent: Hash([1; 32]),
        hash: Hash([2; 32]),
    };
    let bytes = Vote::Notarize(header).signed_payload();
    assert_eq!(bytes.len(), 8 + 8 + 8 + 8 + 32 + 32);
    assert_eq!(&bytes[..8], &3u64.to_le_bytes());
    assert_eq!(&bytes[8..16], &1u64.to_le_bytes());
    let round = Round {
        epoch: Epoch(3),
        view: View(5),
    };
    assert_eq!(
        Vote::Nullify(round).signed_payload(),
        [3u64.to_le_bytes(), 5u64.to_le_bytes()].concat()
    );
    let id = header.id();
    assert_eq!(
        Vote::Finalize(id).signed_payload().len(),
        8 + 8 + 8 + 32,
        "epoch, view, height, hash"
    );
    assert_eq!(mesh_consensus::NOTARIZE_DOMAIN.0, b"mesh/vote/notarize/v2");
    assert_eq!(mesh_consensus::FINALIZE_DOMAIN.0, b"mesh/vote/finalize/v2");
    assert_eq!(mesh_consensus::NULLIFY_DOMAIN.0, b"mesh/vote/nullify/v2");
}
