//! Wire types: views, heights, blocks, votes, certificates, and the bytes each vote signs.
//!
//! Everything here is borsh-encoded with `mesh_ledger::encoding`, so one value has exactly one
//! encoding; heights and views are `u64` newtypes, never `usize`.

use borsh::{BorshDeserialize, BorshSerialize};
use mesh_ledger::crypto::{self, Domain, SignedMessage};
use mesh_ledger::{encoding, Address, Hash, SecretKey, Signature, ValidatorSet};

use crate::keys::KeyCache;

/// Signing domain of notarize votes (and of a leader's proposal, which is its notarize vote).
/// `v2`: every subject names its epoch (ADR 003), so a vote counts only in the epoch it names.
pub const NOTARIZE_DOMAIN: Domain = Domain(b"mesh/vote/notarize/v2");
/// Signing domain of finalize votes.
pub const FINALIZE_DOMAIN: Domain = Domain(b"mesh/vote/finalize/v2");
/// Signing domain of nullify votes.
pub const NULLIFY_DOMAIN: Domain = Domain(b"mesh/vote/nullify/v2");

/// An epoch: the run of heights one validator set signs (`mesh_ledger::EpochSchedule`). Each
/// epoch is its own Simplex instance, with views numbered from 1.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one (saturating).
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A round of consensus: a view of one epoch. What a nullify vote is about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, BorshSerialize, BorshDeserialize,
)]
pub struct Round {
    pub epoch: Epoch,
    pub view: View,
}

/// A consensus view (round). View 0 belongs to the genesis block; voting starts at view 1.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct View(pub u64);

/// A block height. Height 0 is genesis.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, BorshSerialize, BorshDeserialize,
)]
pub struct Height(pub u64);

impl View {
    /// The view after this one (saturating: view numbers never wrap).
    pub fn next(self) -> View {
        View(self.0.saturating_add(1))
    }
}

impl Height {
    /// The height after this one (saturating).
    pub fn next(self) -> Height {
        Height(self.0.saturating_add(1))
    }
}

impl std::fmt::Display for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::fmt::Display for Height {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a finalize vote and a finality certificate are about: one block in one view of one
/// epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct BlockId {
    pub epoch: Epoch,
    pub view: View,
    pub height: Height,
    pub hash: Hash,
}

/// What a notarize vote is about: a block and the parent it extends. Signing the parent lets a
/// notarization vouch for the link, which the parent-validity rule relies on.
///
/// A **re-proposal** names its parent as its own block (`hash == parent`, same height): at an
/// epoch's last height no new block may be built, so leaders propose the certified boundary
/// block again until it is final (ADR 003 §3). It carries no payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Header {
    pub epoch: Epoch,
    pub view: View,
    pub height: Height,
    pub parent_view: View,
    pub parent: Hash,
    pub hash: Hash,
}

impl Header {
    /// The block this header names.
    pub fn id(&self) -> BlockId {
        BlockId {
            epoch: self.epoch,
            view: self.view,
            height: self.height,
            hash: self.hash,
        }
    }

    /// Whether this header re-proposes its parent (see [`Header`]).
    pub fn is_reproposal(&self) -> bool {
        self.hash == self.parent
    }
}

impl BlockId {
    /// The round the block was certified in.
    pub fn round(&self) -> Round {
        Round {
            epoch: self.epoch,
            view: self.view,
        }
    }
}

/// A block as consensus sees it: a header and an opaque payload. The application computes
/// `hash` from the payload and the parent; consensus never interprets the payload.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    pub header: Header,
    pub payload: Vec<u8>,
}

/// A leader's proposal: the block and the leader's notarize signature over its header.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Proposal {
    pub block: Block,
    pub signature: Signature,
}

/// The three votes of Simplex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Vote {
    /// "This block is a valid extension of a certified chain; I saw it first in its view."
    Notarize(Header),
    /// "I saw this block notarized before my timer for its view fired."
    Finalize(BlockId),
    /// "Nothing was notarized in time in this view; move on."
    Nullify(Round),
}

impl Vote {
    /// The view the vote belongs to.
    pub fn view(&self) -> View {
        match self {
            Vote::Notarize(header) => header.view,
            Vote::Finalize(id) => id.view,
            Vote::Nullify(round) => round.view,
        }
    }

    /// The epoch the vote belongs to: it counts in no other.
    pub fn epoch(&self) -> Epoch {
        match self {
            Vote::Notarize(header) => header.epoch,
            Vote::Finalize(id) => id.epoch,
            Vote::Nullify(round) => round.epoch,
        }
    }

    /// The signing domain of this kind of vote.
    pub fn domain(&self) -> Domain {
        match self {
            Vote::Notarize(_) => NOTARIZE_DOMAIN,
            Vote::Finalize(_) => FINALIZE_DOMAIN,
            Vote::Nullify(_) => NULLIFY_DOMAIN,
        }
    }

    /// The payload signed under [`Vote::domain`]: the borsh encoding of the subject.
    pub fn signed_payload(&self) -> Vec<u8> {
        match self {
            Vote::Notarize(header) => encoding::encode(header),
            Vote::Finalize(id) => encoding::encode(id),
            Vote::Nullify(round) => encoding::encode(round),
        }
    }

    /// Signs this vote.
    pub fn sign(self, key: &SecretKey, chain_id: &str) -> SignedVote {
        let signature = key.sign(self.domain(), chain_id, &self.signed_payload());
        SignedVote {
            vote: self,
            signer: key.address(),
            signature,
        }
    }
}

/// A vote with its signer and signature. The signer, not the sending peer, is who voted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedVote {
    pub vote: Vote,
    pub signer: Address,
    pub signature: Signature,
}

impl SignedVote {
    /// Checks the signature alone (membership is the caller's business).
    pub fn verify(&self, chain_id: &str) -> Result<(), crypto::CryptoError> {
        crypto::verify(
            &self.signer,
            self.vote.domain(),
            chain_id,
            &self.vote.signed_payload(),
            &self.signature,
        )
    }
}

/// One validator's signature inside a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ValidatorSignature {
    pub signer: Address,
    pub signature: Signature,
}

/// What a certificate can be about; fixes the domain its signatures are checked under.
pub trait CertificateSubject: BorshSerialize {
    /// The vote a single signature in the certificate stands for.
    fn as_vote(&self) -> Vote;
}

impl CertificateSubject for Header {
    fn as_vote(&self) -> Vote {
        Vote::Notarize(*self)
    }
}

impl CertificateSubject for BlockId {
    fn as_vote(&self) -> Vote {
        Vote::Finalize(*self)
    }
}

impl CertificateSubject for Round {
    fn as_vote(&self) -> Vote {
        Vote::Nullify(*self)
    }
}

/// Votes of at least a quorum of voting power for one subject.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Certificate<S> {
    pub subject: S,
    /// Sorted by signer address, each signer once.
    pub signatures: Vec<ValidatorSignature>,
}

/// A quorum of notarize votes: the block may be built upon and finalize votes may follow.
pub type Notarization = Certificate<Header>;
/// A quorum of nullify votes: the view may be skipped.
pub type Nullification = Certificate<Round>;
/// A quorum of finalize votes: the block, and every ancestor, is final.
pub type FinalityCertificate = Certificate<BlockId>;

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("certificate has {count} signatures, more than the {max} validators")]
    TooManySignatures { count: usize, max: usize },
    #[error("signer {signer} is not a validator")]
    NotValidator { signer: Address },
    #[error("signatures are not sorted by signer or {signer} appears twice")]
    UnsortedOrDuplicate { signer: Address },
    #[error("certificate carries power {power}, below the quorum of {quorum}")]
    InsufficientPower { power: u64, quorum: u64 },
    #[error("signature of {signer} is invalid")]
    InvalidSignature { signer: Address },
}

impl<S: CertificateSubject> Certificate<S> {
    /// Checks the certificate against the validator set: members only, each once, at least a
    /// quorum of power, every signature valid (checked as one batch).
    pub fn verify(&self, chain_id: &str, validators: &ValidatorSet) -> Result<(), CertError> {
        self.verify_with_quorum(chain_id, validators, validators.quorum_power(), None)
    }

    /// [`Certificate::verify`] with an explicit quorum; the state machine passes its own so a
    /// test-only weakened quorum applies to certificates too.
    pub(crate) fn verify_with_quorum(
        &self,
        chain_id: &str,
        validators: &ValidatorSet,
        quorum: u64,
        keys: Option<&KeyCache>,
    ) -> Result<(), CertError> {
        if self.signatures.len() > validators.len() {
            return Err(CertError::TooManySignatures {
                count: self.signatures.len(),
                max: validators.len(),
            });
        }
        let mut power: u64 = 0;
        for (i, item) in self.signatures.iter().enumerate() {
            if i > 0 && self.signatures[i - 1].signer >= item.signer {
                return Err(CertError::UnsortedOrDuplicate {
                    signer: item.signer,
                });
            }
            let member_power = validators.power_of(&item.signer);
            if member_power == 0 {
                return Err(CertError::NotValidator {
                    signer: item.signer,
                });
            }
            power = power.saturating_add(member_power);
        }
        if power < quorum {
            return Err(CertError::InsufficientPower { power, quorum });
        }
        let vote = self.subject.as_vote();
        let message = crypto::signing_bytes(vote.domain(), chain_id, &vote.signed_payload());
        let batch: Vec<SignedMessage<'_>> = self
            .signatures
            .iter()
            .map(|item| SignedMessage {
                signer: &item.signer,
                message: &message,
                signature: &item.signature,
            })
            .collect();
        let Some(keys) = keys else {
            return crypto::verify_batch(&batch).map_err(|err| {
                let index = match err {
                    crypto::CryptoError::InvalidSignatureAt { index } => index,
                    _ => 0,
                };
                let signer = self
                    .signatures
                    .get(index)
                    .map_or(Address::ZERO, |item| item.signer);
                CertError::InvalidSignature { signer }
            });
        };
        let indices: Vec<usize> = self
            .signatures
            .iter()
            .map(|item| validators.index_of(&item.signer).unwrap_or(usize::MAX))
            .collect();
        if keys.verify_batch(&batch, &indices) {
            return Ok(());
        }
        // Name the culprit; if every signature passes alone, still refuse (as the ledger does).
        let culprit = self
            .signatures
            .iter()
            .zip(&indices)
            .find(|(item, index)| !keys.verify(**index, &message, &item.signature))
            .map_or(Address::ZERO, |(item, _)| item.signer);
        Err(CertError::InvalidSignature { signer: culprit })
    }

    /// The view the certificate belongs to.
    pub fn view(&self) -> View {
        self.subject.as_vote().view()
    }

    /// The epoch the certificate belongs to, whose set must have signed it.
    pub fn epoch(&self) -> Epoch {
        self.subject.as_vote().epoch()
    }
}

impl FinalityCertificate {
    /// The finalized block's id.
    pub fn block(&self) -> BlockId {
        self.subject
    }
}

/// Everything validators send each other.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Message {
    Propose(Proposal),
    Vote(SignedVote),
    Notarization(Notarization),
    Nullification(Nullification),
    Finalization(FinalityCertificate),
}

impl Message {
    /// The view the message is about.
    pub fn view(&self) -> View {
        match self {
            Message::Propose(proposal) => proposal.block.header.view,
            Message::Vote(vote) => vote.vote.view(),
            Message::Notarization(cert) => cert.subject.view,
            Message::Nullification(cert) => cert.subject.view,
            Message::Finalization(cert) => cert.subject.view,
        }
    }

    /// The epoch the message is about.
    pub fn epoch(&self) -> Epoch {
        match self {
            Message::Propose(proposal) => proposal.block.header.epoch,
            Message::Vote(vote) => vote.vote.epoch(),
            Message::Notarization(cert) => cert.subject.epoch,
            Message::Nullification(cert) => cert.subject.epoch,
            Message::Finalization(cert) => cert.subject.epoch,
        }
    }
}

/// A finalized block with the certificate that proves it final, as stored and served by sync.
///
/// The certificate is over this block itself; or over a re-proposal of it in a later view of
/// its epoch (same height and hash, see [`Header`]); or over a descendant that was finalized in
/// the same step (Simplex finalizes ancestors implicitly): then `certificate.block().height`
/// is greater than the block's and the parent hashes link the two. Always by the set of the
/// block's own epoch.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CertifiedBlock {
    pub block: Block,
    pub certificate: FinalityCertificate,
}

impl CertifiedBlock {
    /// Whether the certificate is over this very block (its own view's, or a re-proposal's),
    /// rather than over a descendant.
    pub fn certifies_itself(&self) -> bool {
        let subject = self.certificate.subject;
        subject.height == self.block.header.height && subject.hash == self.block.header.hash
    }
}

/// Proof that a validator broke the protocol: two validly signed votes that no honest
/// validator would both sign (two notarize or two finalize votes for different blocks in one
/// view, or a finalize and a nullify vote in one view).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Evidence {
    pub first: SignedVote,
    pub second: SignedVote,
}

impl Evidence {
    /// The validator both votes came from.
    pub fn signer(&self) -> Address {
        self.first.signer
    }
}
