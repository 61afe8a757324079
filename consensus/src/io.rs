//! The state machine's interface: what the driver feeds in, what it must carry out, and the
//! safety state it must keep durable.

use borsh::{BorshDeserialize, BorshSerialize};
use mesh_ledger::{Address, Hash};

use crate::epoch::EpochInfo;
use crate::types::{
    Block, BlockId, CertifiedBlock, Epoch, Evidence, Header, Height, Message, Round, View, Vote,
};

/// Something that happened to this validator.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Input {
    /// A message from a peer, already decoded. `from` is the transport's peer id and is only a
    /// hint (for replies and buffer accounting): votes are attributed to their signer.
    Message { from: Address, message: Message },
    /// Messages that arrived together (e.g. drained from a socket at once): vote signatures
    /// among them are verified as one batch. At most `Limits::message_batch_max` are taken.
    Messages { messages: Vec<(Address, Message)> },
    /// The timer scheduled for `view` fired.
    Timeout { view: View },
    /// The payload asked for with [`Output::BuildPayload`], and the block hash the
    /// application computed for it.
    PayloadBuilt {
        view: View,
        block_hash: Hash,
        payload: Vec<u8>,
    },
    /// The application's verdict on a payload sent with [`Output::VerifyPayload`]: it is
    /// valid on top of its parent and hashes to `block_hash`.
    PayloadVerified {
        view: View,
        block_hash: Hash,
        valid: bool,
    },
    /// Finalized blocks fetched after [`Output::RequestSync`], in ascending height. The driver
    /// must have checked that each block's hash is what the application computes from its
    /// parent, height and payload; consensus checks the certificates and the parent links.
    BlocksSynced { blocks: Vec<CertifiedBlock> },
    /// Blocks above the finalized one that the application holds and has found valid on top
    /// of their parents: from its own journal after a restart, or fetched from a peer by hash
    /// because a proposal or a leader needed them as parent. Consensus keeps them so that a
    /// finality certificate over a descendant can finalize them. Blocks at or below the
    /// finalized height, oversized ones and any beyond `Limits::sync_blocks_max` are ignored.
    BlocksRecovered { blocks: Vec<Block> },
    /// The next epoch, after [`Output::EpochEnded`]: the driver has committed (and synced) the
    /// boundary block and read the sets from its state. Ignored unless it is the epoch after
    /// the current one and its base is the boundary block this machine finalized.
    EnterEpoch(EpochInfo),
}

/// Work for the driver, in the order it must be done.
///
/// **Ordering contract:** a [`Output::PersistSafetyState`] must be durable (written and
/// synced) before any later [`Output::Broadcast`] or [`Output::SendTo`] of the same batch
/// leaves the node: it records the vote that the following messages carry, and a validator
/// that restarts from an older safety state could sign a conflicting vote. Other outputs may
/// be carried out in any order, but `Finalize` outputs come in ascending height and should be
/// applied in that order.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Output {
    /// Make this safety state durable before sending anything that follows.
    PersistSafetyState(SafetyState),
    /// Send to every other validator.
    Broadcast(Message),
    /// Send to one peer.
    SendTo { peer: Address, message: Message },
    /// Feed back `Input::Timeout { view }` at `at_ms` (on the clock `now_ms` comes from).
    /// A later schedule for the same view replaces the earlier one.
    ScheduleTimeout { view: View, at_ms: u64 },
    /// Build a payload on top of `parent`; answer with `Input::PayloadBuilt`. The parent may
    /// still be on its way through sync; answering late (or never) only costs this view.
    BuildPayload {
        view: View,
        height: Height,
        parent: Hash,
    },
    /// Check this proposed payload; answer with `Input::PayloadVerified`.
    VerifyPayload {
        view: View,
        height: Height,
        parent: Hash,
        block_hash: Hash,
        payload: Vec<u8>,
    },
    /// The block is final; store it with the certificate (see [`CertifiedBlock`] for when the
    /// certificate is over a descendant). Comes in ascending height without gaps.
    Finalize {
        block: Block,
        certificate: crate::types::FinalityCertificate,
    },
    /// Fetch the finalized blocks `from..=to` (with certificates) from peers and answer with
    /// `Input::BlocksSynced`.
    RequestSync { from: Height, to: Height },
    /// A validator signed conflicting votes; here is the proof.
    ReportEvidence(Evidence),
    /// Why a view ended (or, from a timeout, why it has no block yet): for logs and metrics
    /// only; nothing needs to be done.
    ViewReport(crate::report::ViewReport),
    /// A certificate this validator now holds, assembled from votes or received (always a
    /// `Notarization`, `Nullification` or `Finalization`). Journal the first two and feed them
    /// back after a restart: only the next two leaders relay a certificate they assemble, so
    /// after every validator restarted this copy may be the only one left
    /// (docs/consensus.md, "Relaying certificates"). Nothing has to be sent.
    Certified(Message),
    /// The epoch's boundary block is final (its `Finalize` came just before): the machine no
    /// longer proposes or votes in `epoch`. Once the block is committed, answer with
    /// `Input::EnterEpoch` for the next epoch (after a restart between the two, start the
    /// machine in the next epoch directly).
    EpochEnded { epoch: Epoch, boundary: BlockId },
}

/// The votes this validator has signed that constrain what it may sign next, kept so a
/// restarted validator neither contradicts itself nor forgets a vote its peers still need.
///
/// *Invariant:* the driver has made this durable before any vote it records leaves the node.
#[derive(Debug, Clone, PartialEq, Eq, Default, BorshSerialize, BorshDeserialize)]
pub struct SafetyState {
    /// The epoch the votes below belong to. A state of an earlier epoch than the one a
    /// restarted machine enters is void (that epoch's boundary is committed, so none of its
    /// votes can be signed again); one of a later epoch means the store is damaged.
    pub epoch: Epoch,
    /// Highest view this validator voted in.
    pub view: View,
    /// Views at or below this one are closed: no vote may be signed in them. Raised when a
    /// view is finalized or falls out of the retained window.
    pub floor: View,
    /// Every vote signed in views above `floor`, in the order signed (at most three per view).
    pub votes: Vec<Vote>,
}

impl SafetyState {
    /// The block this validator notarized in `view`.
    pub fn notarized_in(&self, view: View) -> Option<Header> {
        self.votes.iter().find_map(|vote| match vote {
            Vote::Notarize(header) if header.view == view => Some(*header),
            _ => None,
        })
    }

    /// The block this validator finalize-voted in `view`.
    pub fn finalized_in(&self, view: View) -> Option<BlockId> {
        self.votes.iter().find_map(|vote| match vote {
            Vote::Finalize(id) if id.view == view => Some(*id),
            _ => None,
        })
    }

    /// The empty state of a new epoch.
    pub fn of_epoch(epoch: Epoch) -> SafetyState {
        SafetyState {
            epoch,
            ..SafetyState::default()
        }
    }

    /// Did this validator nullify `view`?
    pub fn nullified(&self, view: View) -> bool {
        self.votes.contains(&Vote::Nullify(Round {
            epoch: self.epoch,
            view,
        }))
    }

    /// May it sign a notarize vote for `hash` in `view`? (Re-signing the same vote is
    /// harmless: ed25519 signatures are deterministic.)
    pub fn may_notarize(&self, view: View, hash: Hash) -> bool {
        view > self.floor
            && self
                .notarized_in(view)
                .is_none_or(|header| header.hash == hash)
    }

    /// May it finalize `id`? Never after nullifying the view, never two blocks.
    pub fn may_finalize(&self, id: BlockId) -> bool {
        id.view > self.floor
            && !self.nullified(id.view)
            && self.finalized_in(id.view).is_none_or(|voted| voted == id)
    }

    /// May it nullify `view`? Never after a finalize vote in the view.
    pub fn may_nullify(&self, view: View) -> bool {
        view > self.floor && self.finalized_in(view).is_none()
    }

    /// Records a vote of this state's epoch; false when it was already recorded.
    pub(crate) fn record(&mut self, vote: Vote) -> bool {
        if vote.epoch() != self.epoch || self.votes.contains(&vote) {
            return false;
        }
        self.view = self.view.max(vote.view());
        self.votes.push(vote);
        true
    }

    /// Closes views at or below `floor`, and views more than `views_max` behind the newest.
    pub(crate) fn close_views(&mut self, floor: View, views_max: u64) {
        let window_floor = View(self.view.0.saturating_sub(views_max));
        self.floor = self.floor.max(floor).max(window_floor);
        let floor = self.floor;
        self.votes.retain(|vote| vote.view() > floor);
    }
}
