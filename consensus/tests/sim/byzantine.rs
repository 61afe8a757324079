//! Byzantine doubles: they run the honest state machine and rewrite or add to what it sends,
//! signing with their real keys, so every lie is one a real attacker could tell.

use mesh_consensus::{
    Block, BlockId, Certificate, Config, Epoch, Header, Height, Message, Proposal, Round,
    SignedVote, ValidatorSignature, View, Vote,
};
use mesh_ledger::{Hash, SecretKey, Signature, ValidatorSet};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::scenario::Role;
use super::{toy_block_hash, CHAIN_ID};

/// What a node of `role` actually sends to `to` when its state machine sends `message`.
pub fn rewrite(
    role: Role,
    key: &SecretKey,
    config: &Config,
    _from: usize,
    to: usize,
    message: Message,
    rng: &mut ChaCha8Rng,
) -> Vec<Message> {
    match role {
        // A stale voter's lie is in its machine (it keeps the old set), not in rewriting.
        Role::Honest | Role::GarbageFlood | Role::StaleVoter => vec![message],
        Role::Silent => Vec::new(),
        Role::EquivocatingLeader => match message {
            // Odd-numbered peers get a different, equally well-formed block.
            Message::Propose(proposal) if to % 2 == 1 => {
                let mut block = proposal.block.clone();
                block.payload.push(0x42);
                let header = block.header;
                block.header.hash = toy_block_hash(&header.parent, header.height, &block.payload);
                let signed = Vote::Notarize(block.header).sign(key, CHAIN_ID);
                vec![Message::Propose(Proposal {
                    block,
                    signature: signed.signature,
                })]
            }
            Message::Vote(SignedVote {
                vote: Vote::Notarize(header),
                ..
            }) if to % 2 == 1 => {
                let _ = config;
                vec![
                    message,
                    Message::Vote(Vote::Notarize(header).sign(key, CHAIN_ID)),
                ]
            }
            other => vec![other],
        },
        Role::DoubleVoter => match message {
            Message::Vote(SignedVote { vote, .. }) => {
                let conflicting = match vote {
                    Vote::Notarize(mut header) => {
                        header.hash = Hash::of(&rng.gen::<[u8; 8]>());
                        Vote::Notarize(header)
                    }
                    Vote::Finalize(id) => Vote::Nullify(id.round()),
                    Vote::Nullify(round) => Vote::Finalize(BlockId {
                        epoch: round.epoch,
                        view: round.view,
                        height: Height(1),
                        hash: Hash::of(&rng.gen::<[u8; 8]>()),
                    }),
                };
                let extra = Message::Vote(conflicting.sign(key, CHAIN_ID));
                if rng.gen_bool(0.5) {
                    vec![extra, message]
                } else {
                    vec![message, extra]
                }
            }
            other => vec![other],
        },
    }
}

/// A burst of hostile messages: bad signatures, non-validators, far-future views, oversized
/// payloads, votes for unknown blocks, forged certificates.
pub fn garbage(
    rng: &mut ChaCha8Rng,
    config: &Config,
    validators: &ValidatorSet,
    _now_ms: u64,
) -> Vec<Message> {
    let validators = validators.validators();
    let member = validators[rng.gen_range(0..validators.len())].address;
    let outsider = SecretKey::from_seed(rng.gen());
    let view = View(rng.gen_range(1..60));
    // Mostly early epochs, where a run spends its time: current, past and next ones.
    let epoch = Epoch(rng.gen_range(0..4));
    let round = Round { epoch, view };
    let header = Header {
        epoch,
        view,
        height: Height(rng.gen_range(1..30)),
        parent_view: View(view.0 - 1),
        parent: Hash::of(&rng.gen::<[u8; 8]>()),
        hash: Hash::of(&rng.gen::<[u8; 8]>()),
    };
    let random_signature = Signature([rng.gen(); 64]);
    match rng.gen_range(0..7) {
        // A validator's name on a signature it never made.
        0 => vec![Message::Vote(SignedVote {
            vote: Vote::Notarize(header),
            signer: member,
            signature: random_signature,
        })],
        // A well-signed vote from a non-validator.
        1 => vec![Message::Vote(
            Vote::Nullify(round).sign(&outsider, CHAIN_ID),
        )],
        // Far-future views.
        2 => (0..4)
            .map(|i| {
                Message::Vote(SignedVote {
                    vote: Vote::Nullify(Round {
                        epoch,
                        view: View(1_000_000 + i),
                    }),
                    signer: member,
                    signature: random_signature,
                })
            })
            .collect(),
        // An oversized proposal.
        3 => vec![Message::Propose(Proposal {
            block: Block {
                header,
                payload: vec![0xff; config.limits.payload_bytes_max + 1],
            },
            signature: random_signature,
        })],
        // Certificates that fall short or are forged.
        4 => vec![Message::Notarization(Certificate {
            subject: header,
            signatures: vec![ValidatorSignature {
                signer: member,
                signature: random_signature,
            }],
        })],
        5 => vec![Message::Finalization(Certificate {
            subject: header.id(),
            signatures: validators
                .iter()
                .map(|v| ValidatorSignature {
                    signer: v.address,
                    signature: random_signature,
                })
                .collect(),
        })],
        // A proposal from someone who is not the leader (signature will not match).
        _ => vec![Message::Propose(Proposal {
            block: Block {
                header,
                payload: vec![1, 2, 3],
            },
            signature: Vote::Notarize(header).sign(&outsider, CHAIN_ID).signature,
        })],
    }
}
