//! Checking an answer without trusting the node that gave it.
//!
//! A read is trusted when: its Merkle proof verifies against the state root of the header it
//! came with; that header belongs to the trusted chain and validator set; and a finality
//! certificate signed by more than two thirds of the trusted validators' power covers the
//! header — directly, or through a short chain of descendant headers linked by parent hash.

use mesh_consensus::FinalityCertificate;
use mesh_ledger::state::{self, StateProof};
use mesh_ledger::{Account, Address, BlockHeader, ValidatorSet};

use crate::types::{AccountInfo, FinalityProof, ProofBundle, ValueInfo};

/// Most descendant headers accepted between a header and its certificate.
pub const FINALITY_LINKS_MAX: usize = 256;

/// What a client trusts: the chain id and the validator set (from `genesis.json`, obtained out
/// of band — never from the node being checked).
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    /// The chain id.
    pub chain_id: String,
    /// The validator set whose signatures make a block final.
    pub validators: ValidatorSet,
}

/// Why an answer was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The answer carries no proof bundle (or no finality evidence).
    #[error("the answer carries no {0}")]
    Missing(&'static str),
    /// The header is for another chain.
    #[error("header is for chain {got:?}, not {expected:?}")]
    WrongChain {
        /// The trusted chain id.
        expected: String,
        /// The header's.
        got: String,
    },
    /// The header names another validator set.
    #[error("header names a validator set other than the trusted one")]
    WrongValidatorSet,
    /// The answer's height and its header's disagree.
    #[error("answer is for height {answer} but the header is for height {header}")]
    HeightMismatch {
        /// The answer's height.
        answer: u64,
        /// The header's.
        header: u64,
    },
    /// The descendant headers do not link the header to the certified block.
    #[error("finality links are broken: {0}")]
    BrokenLinks(String),
    /// The certificate does not verify against the trusted validators.
    #[error("certificate does not verify: {0}")]
    Certificate(String),
    /// The Merkle proof does not decode or does not verify against the state root.
    #[error("{0}")]
    Proof(String),
}

/// Checks that `header` is final under `anchor` according to `finality`.
pub fn verify_header_final(
    anchor: &TrustAnchor,
    header: &BlockHeader,
    finality: &FinalityProof,
) -> Result<(), VerifyError> {
    check_header_identity(anchor, header)?;
    let certificate = FinalityCertificate::from(&finality.certificate);
    let certified = certificate.subject;
    if finality.links.len() > FINALITY_LINKS_MAX {
        return Err(VerifyError::BrokenLinks(format!(
            "{} links, more than {FINALITY_LINKS_MAX}",
            finality.links.len()
        )));
    }
    let expected_links = certified
        .height
        .0
        .checked_sub(header.height)
        .ok_or_else(|| {
            VerifyError::BrokenLinks(format!(
                "certificate is for height {}, below the header's {}",
                certified.height.0, header.height
            ))
        })?;
    if expected_links != finality.links.len() as u64 {
        return Err(VerifyError::BrokenLinks(format!(
            "expected {expected_links} links, got {}",
            finality.links.len()
        )));
    }
    let mut tip_hash = header.hash();
    let mut tip_height = header.height;
    for link in &finality.links {
        check_header_identity(anchor, link)?;
        if link.parent_hash != tip_hash || Some(link.height) != tip_height.checked_add(1) {
            return Err(VerifyError::BrokenLinks(format!(
                "header at height {} does not extend {tip_hash}",
                link.height
            )));
        }
        tip_hash = link.hash();
        tip_height = link.height;
    }
    if tip_hash != certified.hash {
        return Err(VerifyError::BrokenLinks(format!(
            "certificate is for block {}, the links end at {tip_hash}",
            certified.hash
        )));
    }
    certificate
        .verify(&anchor.chain_id, &anchor.validators)
        .map_err(|err| VerifyError::Certificate(err.to_string()))
}

fn check_header_identity(anchor: &TrustAnchor, header: &BlockHeader) -> Result<(), VerifyError> {
    if header.chain_id != anchor.chain_id {
        return Err(VerifyError::WrongChain {
            expected: anchor.chain_id.clone(),
            got: header.chain_id.clone(),
        });
    }
    if header.validator_set_hash != anchor.validators.hash() {
        return Err(VerifyError::WrongValidatorSet);
    }
    Ok(())
}

/// Checks a bundle's header and finality, decodes its proof, and returns it.
fn verify_bundle<'a>(
    anchor: &TrustAnchor,
    height: u64,
    bundle: Option<&'a ProofBundle>,
) -> Result<(&'a BlockHeader, StateProof), VerifyError> {
    let bundle = bundle.ok_or(VerifyError::Missing("proof bundle"))?;
    if bundle.header.height != height {
        return Err(VerifyError::HeightMismatch {
            answer: height,
            header: bundle.header.height,
        });
    }
    let finality = bundle
        .finality
        .as_ref()
        .ok_or(VerifyError::Missing("finality certificate"))?;
    verify_header_final(anchor, &bundle.header, finality)?;
    let proof =
        StateProof::decode(&bundle.proof.0).map_err(|err| VerifyError::Proof(err.to_string()))?;
    Ok((&bundle.header, proof))
}

/// Verifies a `mesh_getAccount` answer made with `prove: true` for `address`.
pub fn verify_account(
    anchor: &TrustAnchor,
    address: &Address,
    info: &AccountInfo,
) -> Result<(), VerifyError> {
    if info.address != *address {
        return Err(VerifyError::Proof(format!(
            "answer is about {}, not {address}",
            info.address
        )));
    }
    let (header, proof) = verify_bundle(anchor, info.height, info.proof.as_ref())?;
    let account = info.exists.then_some(Account {
        balance: info.balance,
        nonce: info.nonce,
    });
    if !info.exists && (info.balance != 0 || info.nonce != 0) {
        return Err(VerifyError::Proof(
            "an absent account must read balance 0, nonce 0".into(),
        ));
    }
    state::verify_account_proof(&header.state_root, address, account.as_ref(), &proof)
        .map_err(|err| VerifyError::Proof(err.to_string()))
}

/// Verifies a `mesh_getValue` answer made with `prove: true` for `owner`'s `key`.
pub fn verify_value(
    anchor: &TrustAnchor,
    owner: &Address,
    key: &[u8],
    info: &ValueInfo,
) -> Result<(), VerifyError> {
    if info.owner != *owner || info.key.0 != key {
        return Err(VerifyError::Proof(
            "answer is about another owner or key".into(),
        ));
    }
    let (header, proof) = verify_bundle(anchor, info.height, info.proof.as_ref())?;
    let value = info.value.as_ref().map(|value| value.0.as_slice());
    state::verify_value_proof(&header.state_root, owner, key, value, &proof)
        .map_err(|err| VerifyError::Proof(err.to_string()))
}
