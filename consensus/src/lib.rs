//! # mesh-consensus
//!
//! Simplex BFT consensus (Chan & Pass 2023, in the form Commonware uses) as a pure,
//! deterministic state machine. `n` validators weighted by voting power agree on one chain of
//! blocks while validators holding less than a third of the power crash or lie and the network
//! drops, delays, duplicates and reorders messages.
//!
//! ## What this crate owns
//! The protocol rules, vote and certificate checking, the safety state that must survive a
//! crash, the finality certificate format, and every bound on what peers can make us buffer.
//!
//! ## What it must never do
//! Perform I/O, read a clock, draw randomness, spawn threads or interpret block payloads. Its
//! dependency tree has no tokio, libp2p or rocksdb. The driver (the `node` crate, or the
//! simulator in `tests/`) feeds [`Input`]s with the current time into
//! [`Consensus::on_input`] and carries out the returned [`Output`]s in order; see [`Output`]
//! for the one ordering rule (persist, then speak).
//!
//! ## The protocol, step by step
//! 0. Heights are grouped in **epochs** of `epoch_blocks` (ADR 003); each epoch is its own
//!    instance of the steps below with the set in force for it, told to the machine as an
//!    [`EpochInfo`]. Every vote names its epoch and counts in no other.
//! 1. Views are numbered from 1 in each epoch; the leader of view `v` is validator `v mod n`
//!    in address order. Entering a view arms a timer (`ScheduleTimeout`).
//! 2. The leader picks the parent: the block of the newest earlier view that is notarized (or
//!    finalized) such that every view after it was nullified. It asks the application for a
//!    payload (`BuildPayload`), then broadcasts a `Propose` carrying the block and its own
//!    notarize signature over (view, height, parent view, parent, block hash).
//! 3. A validator that receives the leader's first proposal asks the application to check it
//!    (`VerifyPayload`). If valid, if the parent rule of step 2 holds by the certificates it
//!    has, and if it has neither voted notarize nor nullify in the view, it persists that fact
//!    and broadcasts a **notarize** vote.
//! 4. A quorum (more than 2/3 of the power) of notarize votes for one block is a
//!    **notarization**. On seeing one for view `v` (or a later view), a validator relays it,
//!    and — unless it nullified `v` — persists and broadcasts a **finalize** vote for the
//!    block, then enters `v + 1`.
//! 5. If the timer fires first, the validator persists and broadcasts a **nullify** vote for
//!    the view (it may have voted notarize already, but will never finalize this view). A
//!    quorum of nullify votes is a **nullification**: relay it and enter `v + 1`. While stuck
//!    the timer re-fires and re-sends the vote and the certificates that justify the view.
//! 6. A quorum of finalize votes is a **finality certificate**: the block and all its
//!    ancestors are final (`Finalize`, ascending heights). Missing blocks are fetched with
//!    `RequestSync` and come back as `BlocksSynced`, whose certificates are checked.
//! 7. Timeouts double on consecutive nullified views (capped) and reset on a notarization.
//! 8. Nothing is built above the epoch's last height: there, leaders **re-propose** the
//!    certified boundary block (same height and hash, no payload) until it is final. Then the
//!    machine emits `EpochEnded` and waits for `Input::EnterEpoch` with the next set, which the
//!    driver reads from the committed boundary block's state.
//!
//! Good case: propose, notarize, finalize — three message delays to finality.
//!
//! Signatures: every vote is ed25519 over domain-separated bytes (`mesh/vote/notarize/v2`,
//! `mesh/vote/finalize/v2`, `mesh/vote/nullify/v2`); certificates and votes that arrive
//! together (`Input::Messages`) are checked as one batch.
//!
//! ## Deviations from the paper
//! Certificates are relayed and re-sent on timeouts rather than assumed to reach everyone;
//! a validator that jumps ahead on a later view's notarization still finalize-votes it (it
//! never nullified that view); and votes are tallied only within a bounded window of views.
//! `docs/consensus.md` has the safety and liveness arguments.

mod config;
mod epoch;
mod finality;
mod io;
mod keys;
mod machine;
mod report;
mod tally;
mod types;
mod votes;

pub use config::{Config, Limits, Timeouts};
pub use epoch::EpochInfo;
pub use io::{Input, Output, SafetyState};
pub use machine::{Consensus, RestoreError, Stats};
pub use report::{NoBlockReason, ViewOutcome, ViewReport};
pub use types::{
    Block, BlockId, CertError, Certificate, CertificateSubject, CertifiedBlock, Epoch, Evidence,
    FinalityCertificate, Header, Height, Message, Notarization, Nullification, Proposal, Round,
    SignedVote, ValidatorSignature, View, Vote, FINALIZE_DOMAIN, NOTARIZE_DOMAIN, NULLIFY_DOMAIN,
};

use mesh_ledger::Address;

/// Why an input was refused. Refusals never stall the machine; the driver may penalise the
/// sending peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{signer} is not a validator")]
    NotValidator { signer: Address },
    #[error("invalid signature from {signer} in view {view}")]
    InvalidSignature { signer: Address, view: View },
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("far-future buffer is full; dropped a message from {peer}")]
    FutureBufferFull { peer: Address },
    #[error("invalid certificate: {0}")]
    Certificate(#[from] CertError),
    #[error("more than {max} messages in one batch; the rest were dropped")]
    BatchTooLarge { max: usize },
    #[error("invalid synced blocks: {reason}")]
    InvalidSync { reason: &'static str },
    /// A message of an epoch this machine is not in: an earlier one (an honest laggard sends
    /// these), or one too far ahead to verify. Dropped and counted, never tallied.
    #[error("message from {signer} for epoch {epoch}, but this validator is in epoch {current}")]
    WrongEpoch {
        signer: Address,
        epoch: Epoch,
        current: Epoch,
    },
    #[error("invalid proposal from {signer} in view {view}: {reason}")]
    InvalidProposal {
        signer: Address,
        view: View,
        reason: &'static str,
    },
}
