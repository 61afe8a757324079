//! Why a view ended the way it did, for operators: a view that ends without a block costs a
//! timeout, and a network that keeps doing so (issue 20: a restarted 16-validator network that
//! nullified view after view) must say what was missing — the proposal, the block's parent or
//! payload, or whose votes.

use borsh::{BorshDeserialize, BorshSerialize};
use mesh_ledger::{Address, Hash};

use crate::machine::Consensus;
use crate::types::{Height, View, Vote};

/// What one view came to, emitted as [`crate::Output::ViewReport`] when the view is left and
/// each time its timer fires while it is still open.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ViewReport {
    pub view: View,
    pub leader: Address,
    /// False while the view is still open (reported from a timeout).
    pub ended: bool,
    pub outcome: ViewOutcome,
}

/// How a view ended, or why it has not produced a block yet.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ViewOutcome {
    /// A quorum notarized the view's block.
    Notarized,
    /// Left on a finality certificate for the view (its notarization was not seen here).
    Finalized,
    /// No block this view (nullified, or still open), and why.
    NoBlock(NoBlockReason),
}

/// Why a view has no notarized block, as far as this validator can tell.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum NoBlockReason {
    /// No valid proposal from the leader arrived.
    NoProposal,
    /// A proposal arrived but the application has not judged it: it usually waits for its
    /// parent block (named here), which must be fetched first.
    ProposalNotVerified { height: Height, parent: Hash },
    /// The application found the proposed payload invalid.
    ProposalInvalid,
    /// The proposal does not extend a parent this validator holds a certificate for (the
    /// parent view's notarization or a skipped view's nullification is missing).
    ParentNotCertified { parent_view: View },
    /// The proposal was acceptable but too few validators notarized it: their power, the
    /// quorum, and the validators whose notarize vote did not arrive.
    TooFewVotes {
        power: u64,
        quorum: u64,
        missing: Vec<Address>,
    },
}

impl ViewOutcome {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ViewOutcome::Notarized => "notarized",
            ViewOutcome::Finalized => "finalized",
            ViewOutcome::NoBlock(NoBlockReason::NoProposal) => "no_proposal",
            ViewOutcome::NoBlock(NoBlockReason::ProposalNotVerified { .. }) => {
                "proposal_not_verified"
            }
            ViewOutcome::NoBlock(NoBlockReason::ProposalInvalid) => "proposal_invalid",
            ViewOutcome::NoBlock(NoBlockReason::ParentNotCertified { .. }) => {
                "parent_not_certified"
            }
            ViewOutcome::NoBlock(NoBlockReason::TooFewVotes { .. }) => "too_few_votes",
        }
    }
}

impl std::fmt::Display for ViewOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViewOutcome::Notarized => write!(f, "notarized"),
            ViewOutcome::Finalized => write!(f, "finalized"),
            ViewOutcome::NoBlock(NoBlockReason::NoProposal) => {
                write!(f, "no proposal from the leader")
            }
            ViewOutcome::NoBlock(NoBlockReason::ProposalNotVerified { height, parent }) => write!(
                f,
                "proposal at height {} not verified yet (waits for parent {parent})",
                height.0
            ),
            ViewOutcome::NoBlock(NoBlockReason::ProposalInvalid) => {
                write!(f, "proposal invalid")
            }
            ViewOutcome::NoBlock(NoBlockReason::ParentNotCertified { parent_view }) => write!(
                f,
                "proposal's parent (view {}) or a skipped view is not certified here",
                parent_view.0
            ),
            ViewOutcome::NoBlock(NoBlockReason::TooFewVotes {
                power,
                quorum,
                missing,
            }) => {
                write!(
                    f,
                    "notarize votes {power} of {quorum} needed; missing from "
                )?;
                for (index, address) in missing.iter().enumerate() {
                    if index > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{address}")?;
                }
                Ok(())
            }
        }
    }
}

impl Consensus {
    /// What `view` amounts to now: its certificates first, else the first missing piece.
    pub(crate) fn view_outcome(&self, view: View) -> ViewOutcome {
        let Some(state) = self.views.get(&view) else {
            return ViewOutcome::NoBlock(NoBlockReason::NoProposal);
        };
        if state.notarization.is_some() {
            return ViewOutcome::Notarized;
        }
        if state.finalization.is_some() {
            return ViewOutcome::Finalized;
        }
        let Some(proposal) = &state.proposal else {
            return ViewOutcome::NoBlock(NoBlockReason::NoProposal);
        };
        let header = proposal.block.header;
        let reason = match state.verdict {
            None => NoBlockReason::ProposalNotVerified {
                height: header.height,
                parent: header.parent,
            },
            Some(false) => NoBlockReason::ProposalInvalid,
            Some(true) if !self.parent_is_certified(&header) => NoBlockReason::ParentNotCertified {
                parent_view: header.parent_view,
            },
            Some(true) => {
                let voters = state.voters(&Vote::Notarize(header));
                let power = voters
                    .iter()
                    .map(|signer| self.committee.set.power_of(signer))
                    .fold(0u64, u64::saturating_add);
                let missing = self
                    .committee
                    .set
                    .validators()
                    .iter()
                    .map(|validator| validator.address)
                    .filter(|address| !voters.contains(address))
                    .collect();
                NoBlockReason::TooFewVotes {
                    power,
                    quorum: self.committee.quorum,
                    missing,
                }
            }
        };
        ViewOutcome::NoBlock(reason)
    }

    /// Emits the report for `view`.
    pub(crate) fn report_view(&mut self, view: View, ended: bool) {
        let outcome = self.view_outcome(view);
        if ended && matches!(outcome, ViewOutcome::NoBlock(_)) {
            self.stats.views_without_block += 1;
        }
        self.outputs.push(crate::Output::ViewReport(ViewReport {
            view,
            leader: self.committee.leader(view),
            ended,
            outcome,
        }));
    }
}
