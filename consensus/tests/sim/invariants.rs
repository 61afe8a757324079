//! The invariants every run must keep, each reported by name.

use std::collections::BTreeMap;

use mesh_consensus::{CertifiedBlock, FinalityCertificate, Message, Vote};
use mesh_ledger::{Address, EpochSchedule, Hash, ValidatorSet};

use super::scenario::{Role, Scenario};
use super::CHAIN_ID;

pub struct Checker {
    /// The scheduled set of each epoch (later epochs keep the last).
    sets: Vec<ValidatorSet>,
    schedule: EpochSchedule,
    /// Height → the one block final there, across all nodes and restarts.
    final_blocks: BTreeMap<u64, Hash>,
    /// (honest node, epoch, view, kind) → the vote it sent, across restarts.
    sent_votes: BTreeMap<(usize, u64, u64, u8), Vote>,
    pub violations: Vec<String>,
}

impl Checker {
    pub fn new(_scenario: &Scenario, sets: Vec<ValidatorSet>, schedule: EpochSchedule) -> Checker {
        Checker {
            sets,
            schedule,
            final_blocks: BTreeMap::new(),
            sent_votes: BTreeMap::new(),
            violations: Vec::new(),
        }
    }

    pub fn violation(&mut self, text: String) {
        if self.violations.len() < 20 || text.starts_with("agreement") {
            self.violations.push(text);
        }
    }

    pub fn final_heights(&self) -> u64 {
        self.final_blocks.len() as u64
    }

    /// agreement, validity and gap-free order, as each block becomes final on a node.
    /// `sound_machine` is false for a node whose state machine itself is modified (a stale
    /// voter keeps an old set on purpose): its certificates are not judged.
    pub fn on_finalize(
        &mut self,
        node: usize,
        honest: bool,
        sound_machine: bool,
        chain: &[CertifiedBlock],
        item: &CertifiedBlock,
    ) {
        let header = item.block.header;
        let expected_height = chain.len() as u64 + 1;
        if header.height.0 != expected_height {
            self.violation(format!(
                "order: node {node} finalized height {} after {}",
                header.height.0,
                expected_height - 1
            ));
        }
        if let Some(previous) = chain.last() {
            if previous.block.header.hash != header.parent {
                self.violation(format!(
                    "validity: node {node} height {} does not extend its parent",
                    header.height.0
                ));
            }
        }
        let in_force = if sound_machine {
            self.in_force(&item.certificate)
        } else {
            Ok(())
        };
        if let Err(why) = in_force {
            self.violation(format!(
                "no-certificate-from-a-set-not-in-force: node {node} height {}: {why}",
                header.height.0
            ));
        }
        let certified = item.certificate.block();
        // Over the block itself, in its own view or a re-proposal's.
        let covers = if certified.height == header.height {
            certified.hash == header.hash && certified.epoch == header.epoch
        } else {
            certified.height > header.height
        };
        if !covers {
            self.violation(format!(
                "validity: node {node} height {} certificate is for {certified:?}",
                header.height.0
            ));
        }
        if !honest {
            return;
        }
        match self.final_blocks.get(&header.height.0) {
            Some(hash) if *hash != header.hash => self.violation(format!(
                "agreement: node {node} finalized {} at height {} where {} is final",
                header.hash, header.height.0, hash
            )),
            Some(_) => {}
            None => {
                self.final_blocks.insert(header.height.0, header.hash);
            }
        }
    }

    /// Checks that `certificate` names the epoch of its height and verifies against the set
    /// scheduled for that epoch.
    fn in_force(&self, certificate: &FinalityCertificate) -> Result<(), String> {
        let subject = certificate.subject;
        let epoch = self.schedule.epoch_of(subject.height.0);
        if subject.epoch.0 != epoch {
            return Err(format!(
                "certificate of epoch {} for height {} of epoch {epoch}",
                subject.epoch, subject.height
            ));
        }
        let index = usize::try_from(epoch)
            .unwrap_or(usize::MAX)
            .min(self.sets.len() - 1);
        certificate
            .verify(CHAIN_ID, &self.sets[index])
            .map_err(|err| format!("does not verify against the set of epoch {epoch}: {err}"))
    }

    /// Certificates an honest node obtained (formed or received, `Output::Certified`) must
    /// be by the set in force for their epoch.
    pub fn on_certified(&mut self, node: usize, message: &Message) {
        let Message::Finalization(certificate) = message else {
            return;
        };
        if let Err(why) = self.in_force(certificate) {
            self.violation(format!(
                "no-certificate-from-a-set-not-in-force: node {node} holds a finality \
                 certificate for height {}: {why}",
                certificate.subject.height
            ));
        }
    }

    /// Descendant certificates must name a block of the same chain.
    pub fn check_chains(&mut self, chains: &[(bool, &[CertifiedBlock])]) {
        for (node, (_, chain)) in chains.iter().enumerate() {
            for item in chain.iter() {
                let certified = item.certificate.block();
                if certified.height <= item.block.header.height {
                    continue;
                }
                let index = usize::try_from(certified.height.0 - 1).unwrap();
                // The certified block itself, named in its own view or a re-proposal's.
                let linked = chain.get(index).is_some_and(|b| {
                    let header = b.block.header;
                    header.hash == certified.hash && header.epoch == certified.epoch
                });
                if !linked && chain.len() > index {
                    self.violation(format!(
                        "validity: node {node} height {} is covered by a certificate for a \
                         block not in its chain",
                        item.block.header.height.0
                    ));
                }
            }
        }
    }

    /// no-self-equivocation: an honest node never sends two conflicting votes, even across
    /// crashes and restarts.
    pub fn on_sent(&mut self, node: usize, message: &Message, addresses: &[Address]) {
        let vote = match message {
            Message::Vote(signed) if signed.signer == addresses[node] => signed.vote,
            Message::Propose(proposal) => Vote::Notarize(proposal.block.header),
            _ => return,
        };
        let epoch = vote.epoch().0;
        let (view, kind) = match vote {
            Vote::Notarize(header) => (header.view.0, 0u8),
            Vote::Finalize(id) => (id.view.0, 1),
            Vote::Nullify(round) => (round.view.0, 2),
        };
        if let Some(previous) = self.sent_votes.get(&(node, epoch, view, kind)) {
            if *previous != vote {
                self.violation(format!(
                    "no-self-equivocation: node {node} sent {previous:?} and {vote:?}"
                ));
            }
            return;
        }
        let opposite = match kind {
            1 => Some(2),
            2 => Some(1),
            _ => None,
        };
        if let Some(opposite) = opposite {
            if self.sent_votes.contains_key(&(node, epoch, view, opposite)) {
                self.violation(format!(
                    "no-self-equivocation: node {node} sent finalize and nullify in view {view}"
                ));
            }
        }
        self.sent_votes.insert((node, epoch, view, kind), vote);
    }

    /// Honest validators accuse only Byzantine ones.
    pub fn on_evidence(&mut self, reporter_honest: bool, accused: Option<Role>) {
        if reporter_honest && accused == Some(Role::Honest) {
            self.violation("evidence: an honest validator was accused".to_string());
        }
    }
}
