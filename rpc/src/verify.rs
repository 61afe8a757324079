//! Checking an answer without trusting the node that gave it.
//!
//! A read is trusted when: its Merkle proof verifies against the state root of the header it
//! came with; that header belongs to the trusted chain and validator set; and a finality
//! certificate signed by more than two thirds of the trusted validators' power covers the
//! header — directly, or through a short chain of descendant headers linked by parent hash.
//!
//! The set is trusted per epoch. Genesis gives the sets of epochs 0 and 1; each later set is
//! learned from an [`EpochChange`]: the boundary header of the epoch before, certified by
//! that epoch's (already trusted) set and committing to the next set's hash. A client that
//! trusts only genesis so follows every change of the set, each one signed by the set before.

use std::collections::BTreeMap;

use mesh_consensus::FinalityCertificate;
use mesh_ledger::genesis::GenesisError;
use mesh_ledger::state::{self, StateProof};
use mesh_ledger::{Account, Address, BlockHeader, EpochSchedule, Genesis, ValidatorSet};

use crate::types::{AccountInfo, EpochChange, FinalityProof, ProofBundle, ValueInfo};

/// Most descendant headers accepted between a header and its certificate.
pub const FINALITY_LINKS_MAX: usize = 256;

/// What a client trusts: the chain id, its epoch length and the validator set of each epoch
/// it has verified so far — seeded from `genesis.json` (obtained out of band, never from the
/// node being checked) and extended only by [`TrustAnchor::advance`].
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    /// The chain id.
    pub chain_id: String,
    /// The chain's epochs (genesis `params.epoch_blocks`).
    pub schedule: EpochSchedule,
    /// `set(e)` for every epoch trusted so far: `0..=newest`, without gaps.
    sets: BTreeMap<u64, ValidatorSet>,
}

impl TrustAnchor {
    /// Trusts `genesis_set` for epochs 0 and 1, as genesis does.
    pub fn new(chain_id: String, epoch_blocks: u64, genesis_set: ValidatorSet) -> TrustAnchor {
        let sets = BTreeMap::from([(0, genesis_set.clone()), (1, genesis_set)]);
        TrustAnchor {
            chain_id,
            schedule: EpochSchedule::new(epoch_blocks),
            sets,
        }
    }

    /// The anchor of a genesis document.
    pub fn from_genesis(genesis: &Genesis) -> Result<TrustAnchor, GenesisError> {
        Ok(TrustAnchor::new(
            genesis.chain_id.clone(),
            genesis.params.epoch_blocks,
            genesis.validator_set()?,
        ))
    }

    /// The trusted set of `epoch`, if the anchor has reached it.
    pub fn set(&self, epoch: u64) -> Option<&ValidatorSet> {
        self.sets.get(&epoch)
    }

    /// The newest epoch whose set is trusted.
    pub fn newest_epoch(&self) -> u64 {
        self.sets.keys().next_back().copied().unwrap_or(0)
    }

    /// The trusted set in force at `height`.
    fn set_at(&self, height: u64) -> Result<&ValidatorSet, VerifyError> {
        let epoch = self.schedule.epoch_of(height);
        self.set(epoch).ok_or(VerifyError::UnknownEpoch {
            epoch,
            newest_trusted: self.newest_epoch(),
        })
    }

    /// Learns `set(change.epoch + 1)` from the certified boundary of `change.epoch`, whose set
    /// must be trusted already. Checks: the boundary is `last(epoch)` of this chain and names
    /// the trusted set; the certificate is by that set, for that epoch, over that very header;
    /// and the next set hashes to the header's `next_validator_set_hash`. A change for an epoch
    /// whose successor is trusted already is checked the same way and changes nothing.
    pub fn advance(&mut self, change: &EpochChange) -> Result<(), VerifyError> {
        let epoch = change.epoch;
        let refuse = |reason: String| Err(VerifyError::EpochChange { epoch, reason });
        let Some(set) = self.set(epoch) else {
            return Err(VerifyError::UnknownEpoch {
                epoch,
                newest_trusted: self.newest_epoch(),
            });
        };
        let boundary = &change.boundary;
        if boundary.chain_id != self.chain_id {
            return Err(VerifyError::WrongChain {
                expected: self.chain_id.clone(),
                got: boundary.chain_id.clone(),
            });
        }
        if boundary.height != self.schedule.last(epoch) {
            return refuse(format!(
                "boundary header is at height {}, epoch {epoch} ends at {}",
                boundary.height,
                self.schedule.last(epoch)
            ));
        }
        if boundary.validator_set_hash != set.hash() {
            return Err(VerifyError::WrongValidatorSet);
        }
        let certificate = FinalityCertificate::from(&change.certificate);
        let subject = certificate.subject;
        if subject.epoch.0 != epoch
            || subject.height.0 != boundary.height
            || subject.hash != boundary.hash()
        {
            return refuse(format!(
                "certificate is for block {} at height {} in epoch {}, not the boundary",
                subject.hash, subject.height.0, subject.epoch.0
            ));
        }
        certificate
            .verify(&self.chain_id, set)
            .map_err(|err| VerifyError::Certificate(err.to_string()))?;
        let next = ValidatorSet::new(change.next_validators.clone()).map_err(|err| {
            VerifyError::EpochChange {
                epoch,
                reason: format!("next set is invalid: {err}"),
            }
        })?;
        if next.hash() != boundary.next_validator_set_hash {
            return refuse(
                "next set does not hash to the boundary's next_validator_set_hash".into(),
            );
        }
        let next_epoch = epoch.saturating_add(1);
        match self.sets.get(&next_epoch) {
            Some(known) if *known != next => refuse(format!(
                "a certified boundary names another set for epoch {next_epoch} than the one trusted"
            )),
            Some(_) => Ok(()),
            None => {
                self.sets.insert(next_epoch, next);
                Ok(())
            }
        }
    }
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
    /// The height is in an epoch whose set the anchor does not trust yet: advance it with the
    /// epoch changes up to there (`mesh_getEpochProof`).
    #[error("epoch {epoch} is not trusted yet (trusted up to epoch {newest_trusted})")]
    UnknownEpoch {
        /// The epoch needed.
        epoch: u64,
        /// The newest epoch the anchor trusts.
        newest_trusted: u64,
    },
    /// An epoch change does not prove the next set.
    #[error("epoch change of epoch {epoch} refused: {reason}")]
    EpochChange {
        /// The epoch that ends.
        epoch: u64,
        /// What is wrong.
        reason: String,
    },
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
    // Each epoch's set certifies only its own heights: a certificate naming another epoch than
    // its height's, or signed by a set not in force there, is refused.
    let epoch = anchor.schedule.epoch_of(certified.height.0);
    if certified.epoch.0 != epoch {
        return Err(VerifyError::Certificate(format!(
            "signed for epoch {}, but height {} is in epoch {epoch}",
            certified.epoch.0, certified.height.0
        )));
    }
    certificate
        .verify(&anchor.chain_id, anchor.set_at(certified.height.0)?)
        .map_err(|err| VerifyError::Certificate(err.to_string()))
}

fn check_header_identity(anchor: &TrustAnchor, header: &BlockHeader) -> Result<(), VerifyError> {
    if header.chain_id != anchor.chain_id {
        return Err(VerifyError::WrongChain {
            expected: anchor.chain_id.clone(),
            got: header.chain_id.clone(),
        });
    }
    if header.validator_set_hash != anchor.set_at(header.height)?.hash() {
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
