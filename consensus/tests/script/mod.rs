//! The harness of the script tests: a machine under test, helpers that sign as the other
//! validators, and outputs reduced to what a script asserts on.

// Shared by two test crates that each use a subset: unused items are expected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    unused_imports,
    unreachable_pub
)]

pub use mesh_consensus::{
    Block, BlockId, Certificate, CertifiedBlock, Config, Consensus, Epoch, EpochInfo,
    FinalityCertificate, Header, Height, Input, Message, NoBlockReason, Output, Proposal,
    Rejection, Round, SafetyState, ValidatorSignature, View, ViewOutcome, ViewReport, Vote,
};
pub use mesh_ledger::{Address, EpochSchedule, Hash, SecretKey, Validator, ValidatorSet};

pub const CHAIN: &str = "mesh-script";
pub const BASE_MS: u64 = 1_000;

/// An output, reduced to what a script asserts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Persist,
    Vote(Vote),
    Propose(View),
    Notarization(View),
    Nullification(View),
    Finalization(View),
    Timeout(View, u64),
    Build(View, Height),
    Verify(View),
    Finalize(Height),
    Sync(u64, u64),
    Evidence(Address),
    SendTo(Address),
    /// `EpochEnded` with the epoch and the boundary's height.
    EpochEnded(u64, Height),
}

/// The outputs a script asserts on in order: everything but the diagnostic view reports
/// (`reports` checks them) and the certificates held for the journal (`certified`).
pub fn protocol(outputs: &[Output]) -> Vec<Got> {
    outputs
        .iter()
        .filter(|output| !matches!(output, Output::ViewReport(_) | Output::Certified(_)))
        .map(reduce)
        .collect()
}

/// The certificates among `outputs` handed to the journal, as `Got`.
pub fn certified(outputs: &[Output]) -> Vec<Got> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Certified(message) => Some(reduce(&Output::Broadcast(message.clone()))),
            _ => None,
        })
        .collect()
}

/// The view reports among `outputs`.
pub fn reports(outputs: &[Output]) -> Vec<ViewReport> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::ViewReport(report) => Some(report.clone()),
            _ => None,
        })
        .collect()
}

fn reduce(output: &Output) -> Got {
    match output {
        Output::PersistSafetyState(_) => Got::Persist,
        Output::Broadcast(Message::Vote(signed)) => Got::Vote(signed.vote),
        Output::Broadcast(Message::Propose(p)) => Got::Propose(p.block.header.view),
        Output::Broadcast(Message::Notarization(c)) => Got::Notarization(c.subject.view),
        Output::Broadcast(Message::Nullification(c)) => Got::Nullification(c.subject.view),
        Output::Broadcast(Message::Finalization(c)) => Got::Finalization(c.subject.view),
        Output::SendTo { peer, .. } => Got::SendTo(*peer),
        Output::ScheduleTimeout { view, at_ms } => Got::Timeout(*view, *at_ms),
        Output::BuildPayload { view, height, .. } => Got::Build(*view, *height),
        Output::VerifyPayload { view, .. } => Got::Verify(*view),
        Output::Finalize { block, .. } => Got::Finalize(block.header.height),
        Output::RequestSync { from, to } => Got::Sync(from.0, to.0),
        Output::ReportEvidence(evidence) => Got::Evidence(evidence.signer()),
        Output::EpochEnded { epoch, boundary } => Got::EpochEnded(epoch.0, boundary.height),
        Output::ViewReport(_) | Output::Certified(_) => {
            unreachable!("view reports and certificates held are filtered out by `protocol`")
        }
    }
}

/// Four validators of power 1 (quorum 3); the machine under test is `keys[me]`.
pub struct Script {
    pub keys: Vec<SecretKey>,
    pub config: Config,
    /// The epoch the script's messages are signed for (the machine's, unless a test says).
    pub epoch: Epoch,
    pub machine: Consensus,
    pub now_ms: u64,
}

/// Heights per epoch in scripts that do not test epochs: far beyond any script.
pub const LONG_EPOCH: u64 = 1_000_000;

/// The four script validators (power 1 each) as a set.
pub fn four_validators(keys: &[SecretKey]) -> ValidatorSet {
    ValidatorSet::new(
        keys.iter()
            .map(|k| Validator {
                address: k.address(),
                power: 1,
            })
            .collect(),
    )
    .unwrap()
}

pub fn sorted_keys() -> Vec<SecretKey> {
    let mut keys: Vec<SecretKey> = (1..=4u8).map(|i| SecretKey::from_seed([i; 32])).collect();
    keys.sort_by_key(SecretKey::address);
    keys
}

impl Script {
    /// `me` is an index in address order; the leader of view v is index v mod 4.
    pub fn new(me: usize) -> Script {
        Script::with_epochs(me, LONG_EPOCH)
    }

    /// [`Script::new`] on a chain whose epochs are `epoch_blocks` heights long.
    pub fn with_epochs(me: usize, epoch_blocks: u64) -> Script {
        let keys = sorted_keys();
        let mut config = Config::new(CHAIN, EpochSchedule::new(epoch_blocks));
        config.timeouts.view_timeout_base_ms = BASE_MS;
        config.limits.payload_bytes_max = 64;
        config.limits.future_messages_per_peer_max = 2;
        let machine = Consensus::new(config.clone(), keys[me].clone(), genesis_epoch(&keys));
        Script {
            keys,
            config,
            epoch: Epoch(0),
            machine,
            now_ms: 0,
        }
    }

    /// A machine following the four validators with a key outside the set (a full node).
    pub fn observer() -> Script {
        let mut script = Script::new(0);
        let info = genesis_epoch(&script.keys);
        script.machine =
            Consensus::new(script.config.clone(), SecretKey::from_seed([99; 32]), info);
        script
    }

    /// A nullify vote of the script's epoch.
    pub fn nullify(&self, view: u64) -> Vote {
        Vote::Nullify(self.round(view))
    }

    /// A round of the script's epoch.
    pub fn round(&self, view: u64) -> Round {
        Round {
            epoch: self.epoch,
            view: View(view),
        }
    }

    pub fn start(&mut self, expect: &[Got]) {
        let outputs = self.machine.start(self.now_ms);
        assert_eq!(protocol(&outputs), expect, "start");
    }

    /// Feeds `input` at `now_ms` and checks the outputs exactly, in order.
    pub fn step(&mut self, now_ms: u64, input: Input, expect: &[Got]) -> Vec<Output> {
        self.now_ms = now_ms;
        let outputs = self.machine.on_input(now_ms, input);
        assert_eq!(protocol(&outputs), expect, "at {now_ms} ms");
        outputs
    }

    pub fn from(&self, index: usize, message: Message) -> Input {
        Input::Message {
            from: self.keys[index].address(),
            message,
        }
    }

    pub fn vote(&self, index: usize, vote: Vote) -> Input {
        self.from(index, Message::Vote(vote.sign(&self.keys[index], CHAIN)))
    }

    pub fn proposal(&self, view: u64, parent: BlockId, payload: &[u8]) -> (Header, Message) {
        let header = Header {
            epoch: self.epoch,
            view: View(view),
            height: parent.height.next(),
            parent_view: parent.view,
            parent: parent.hash,
            hash: block_hash(&parent.hash, payload),
        };
        self.signed_proposal(header, payload)
    }

    /// The leader's proposal of `header` (leader of view v: index v mod 4).
    pub fn signed_proposal(&self, header: Header, payload: &[u8]) -> (Header, Message) {
        let leader = usize::try_from(header.view.0 % 4).unwrap();
        let signature = Vote::Notarize(header)
            .sign(&self.keys[leader], CHAIN)
            .signature;
        let block = Block {
            header,
            payload: payload.to_vec(),
        };
        (header, Message::Propose(Proposal { block, signature }))
    }

    pub fn certificate<S: mesh_consensus::CertificateSubject + Copy>(
        &self,
        subject: S,
        signers: &[usize],
    ) -> Certificate<S> {
        let mut signatures: Vec<ValidatorSignature> = signers
            .iter()
            .map(|i| {
                let signed = subject.as_vote().sign(&self.keys[*i], CHAIN);
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

pub fn genesis() -> Hash {
    Hash::of(b"script genesis")
}

/// Epoch 0 of the script chain: the four validators in force for epochs 0 and 1.
pub fn genesis_epoch(keys: &[SecretKey]) -> EpochInfo {
    EpochInfo::genesis(four_validators(keys), genesis())
}

/// A nullify vote of epoch 0.
pub fn nullify(view: u64) -> Vote {
    Vote::Nullify(Round {
        epoch: Epoch(0),
        view: View(view),
    })
}

pub fn genesis_id() -> BlockId {
    BlockId {
        epoch: Epoch(0),
        view: View(0),
        height: Height(0),
        hash: genesis(),
    }
}

pub fn block_hash(parent: &Hash, payload: &[u8]) -> Hash {
    Hash::of(&[parent.as_bytes().as_slice(), payload].concat())
}
