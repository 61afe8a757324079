//! Per-view bookkeeping: the leader's proposal, the votes received (each signer counted once
//! per kind), and the certificates formed or received.

use std::collections::BTreeMap;

use mesh_ledger::{Address, ValidatorSet};

use crate::types::{
    Certificate, CertificateSubject, Evidence, FinalityCertificate, Notarization, Nullification,
    Proposal, SignedVote, ValidatorSignature, Vote,
};

/// What adding a vote did.
#[derive(Debug, Default)]
pub(crate) struct Tallied {
    /// Its subject just reached a quorum.
    pub(crate) quorum: bool,
    /// The signer had signed a vote that contradicts this one.
    pub(crate) evidence: Option<Evidence>,
}

/// Everything known about one view. Bounded: at most one vote per signer per kind.
#[derive(Debug, Default)]
pub(crate) struct ViewState {
    /// The first validly signed proposal from the view's leader.
    pub(crate) proposal: Option<Proposal>,
    /// The application's verdict on `proposal`, once asked and answered.
    pub(crate) verdict: Option<bool>,
    notarize: BTreeMap<Address, SignedVote>,
    finalize: BTreeMap<Address, SignedVote>,
    nullify: BTreeMap<Address, SignedVote>,
    pub(crate) notarization: Option<Notarization>,
    pub(crate) nullification: Option<Nullification>,
    pub(crate) finalization: Option<FinalityCertificate>,
}

impl ViewState {
    fn votes_of_kind(&self, vote: &Vote) -> &BTreeMap<Address, SignedVote> {
        match vote {
            Vote::Notarize(_) => &self.notarize,
            Vote::Finalize(_) => &self.finalize,
            Vote::Nullify(_) => &self.nullify,
        }
    }

    /// True when exactly this vote (same signer, subject and signature) was already counted,
    /// so it can be dropped before paying for signature verification.
    pub(crate) fn has_exact(&self, signed: &SignedVote) -> bool {
        self.votes_of_kind(&signed.vote).get(&signed.signer) == Some(signed)
    }

    /// The certificate (if any) already formed for the kind of `vote`, so duplicates of
    /// decided questions are not verified again.
    pub(crate) fn is_decided(&self, vote: &Vote) -> bool {
        match vote {
            Vote::Notarize(_) => self.notarization.is_some(),
            Vote::Finalize(_) => self.finalization.is_some(),
            Vote::Nullify(_) => self.nullification.is_some(),
        }
    }

    /// Who signed exactly `vote` (same kind and subject) in this view.
    pub(crate) fn voters(&self, vote: &Vote) -> Vec<Address> {
        self.votes_of_kind(vote)
            .values()
            .filter(|other| other.vote == *vote)
            .map(|other| other.signer)
            .collect()
    }

    /// Counts a vote whose signature was checked (or is our own).
    pub(crate) fn add(
        &mut self,
        signed: SignedVote,
        validators: &ValidatorSet,
        quorum: u64,
    ) -> Tallied {
        // Only voting power is counted, and only counted votes go into certificates: a vote
        // without power (checked for peers' votes before this, and our own when we are not a
        // validator) would make every certificate built from this tally invalid.
        if validators.power_of(&signed.signer) == 0 {
            return Tallied {
                quorum: false,
                evidence: None,
            };
        }
        // Finalize and nullify in one view contradict each other (the safety argument rests
        // on honest validators never doing both), so either after the other is evidence.
        let opposite = match signed.vote {
            Vote::Finalize(_) => self.nullify.get(&signed.signer),
            Vote::Nullify(_) => self.finalize.get(&signed.signer),
            Vote::Notarize(_) => None,
        };
        let opposite_evidence = opposite.map(|first| Evidence {
            first: *first,
            second: signed,
        });
        let map = match signed.vote {
            Vote::Notarize(_) => &mut self.notarize,
            Vote::Finalize(_) => &mut self.finalize,
            Vote::Nullify(_) => &mut self.nullify,
        };
        if let Some(first) = map.get(&signed.signer) {
            // A conflicting second vote is evidence and is not counted; the same vote again
            // (even with other signature bytes) is a duplicate.
            let evidence = (first.vote != signed.vote).then_some(Evidence {
                first: *first,
                second: signed,
            });
            return Tallied {
                quorum: false,
                evidence,
            };
        }
        map.insert(signed.signer, signed);
        let power: u64 = map
            .values()
            .filter(|other| other.vote == signed.vote)
            .map(|other| validators.power_of(&other.signer))
            .fold(0u64, u64::saturating_add);
        Tallied {
            quorum: power >= quorum && !self.is_decided(&signed.vote),
            evidence: opposite_evidence,
        }
    }

    /// Builds the certificate for the subject of `vote` from the counted votes.
    pub(crate) fn certificate<S: CertificateSubject + Copy>(
        &self,
        vote: &Vote,
        subject: S,
    ) -> Certificate<S> {
        let signatures = self
            .votes_of_kind(vote)
            .values()
            .filter(|other| other.vote == *vote)
            .map(|other| ValidatorSignature {
                signer: other.signer,
                signature: other.signature,
            })
            .collect();
        Certificate {
            subject,
            signatures,
        }
    }
}
