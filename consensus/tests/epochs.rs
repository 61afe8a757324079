//! Scripts for epochs (ADR 003 §3), one per branch: the boundary ends the epoch, a leader
//! re-proposes a boundary block that its own view could not finalize, nothing is notarized
//! above the boundary, messages of other epochs are refused or kept, a finality certificate
//! of the next epoch is checked early, keys join and leave the voting set by input alone, and
//! a restart between the boundary's commit and `EnterEpoch` resumes in the right epoch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod script;

use script::*;

/// Drives view 1 of epoch 0 to finality of the block at height 1 (with `epoch_blocks = 1`
/// the boundary): returns the block's header and the outputs of the final step.
fn finalize_boundary(s: &mut Script) -> (Header, Vec<Output>) {
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, proposal) = s.proposal(1, genesis_id(), b"one");
    s.step(10, s.from(1, proposal), &[Got::Verify(View(1))]);
    s.step(
        11,
        Input::PayloadVerified {
            view: View(1),
            block_hash: header.hash,
            valid: true,
        },
        &[Got::Persist, Got::Vote(Vote::Notarize(header))],
    );
    s.step(
        20,
        s.vote(2, Vote::Notarize(header)),
        &[
            Got::Persist,
            Got::Vote(Vote::Finalize(header.id())),
            Got::Timeout(View(2), 20 + BASE_MS),
        ],
    );
    s.step(30, s.vote(1, Vote::Finalize(header.id())), &[]);
    let outputs = s.step(
        31,
        s.vote(2, Vote::Finalize(header.id())),
        &[Got::Finalize(Height(1)), Got::EpochEnded(0, Height(1))],
    );
    (header, outputs)
}

/// The next epoch's info with the four script validators in force and next.
fn next_epoch(s: &Script, epoch: u64, base: BlockId) -> EpochInfo {
    EpochInfo {
        epoch: Epoch(epoch),
        validators: four_validators(&s.keys),
        next_validators: four_validators(&s.keys),
        base,
    }
}

#[test]
fn the_boundary_ends_the_epoch_and_nothing_is_voted_until_the_next_is_entered() {
    let mut s = Script::with_epochs(0, 1);
    let (header, _) = finalize_boundary(&mut s);
    assert!(s.machine.epoch_ended());
    // Still in epoch 0: a proposal above the boundary gets no verification and no vote; a
    // timeout nullifies nothing but re-sends the boundary's certificate.
    let (_, above) = s.proposal(2, header.id(), b"two");
    s.step(40, s.from(2, above), &[]);
    s.step(
        31 + BASE_MS,
        Input::Timeout { view: View(2) },
        &[
            Got::Finalization(View(1)),
            Got::Timeout(View(2), 31 + 2 * BASE_MS),
        ],
    );
    // Entering epoch 1: a fresh safety state is persisted first, then view 1 starts; the
    // leader of view 1 (validator 1) builds at height 2 on the boundary block as view 0.
    let info = next_epoch(&s, 1, header.id());
    s.step(
        2_000,
        Input::EnterEpoch(info),
        &[Got::Persist, Got::Timeout(View(1), 2_000 + BASE_MS)],
    );
    assert_eq!(s.machine.epoch(), Epoch(1));
    assert!(!s.machine.epoch_ended());
    assert_eq!(s.machine.safety_state(), &SafetyState::of_epoch(Epoch(1)));
    s.epoch = Epoch(1);
    let base = BlockId {
        epoch: Epoch(1),
        view: View(0),
        ..header.id()
    };
    let (next, proposal) = s.proposal(1, base, b"two");
    assert_eq!(next.height, Height(2));
    s.step(2_010, s.from(1, proposal), &[Got::Verify(View(1))]);
    s.step(
        2_011,
        Input::PayloadVerified {
            view: View(1),
            block_hash: next.hash,
            valid: true,
        },
        &[Got::Persist, Got::Vote(Vote::Notarize(next))],
    );
}

#[test]
fn enter_epoch_is_ignored_before_the_boundary_is_final_or_with_another_base() {
    let mut s = Script::with_epochs(0, 1);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let early = next_epoch(&s, 1, genesis_id());
    s.step(5, Input::EnterEpoch(early), &[]);
    assert_eq!(s.machine.epoch(), Epoch(0));
    let mut s = Script::with_epochs(0, 1);
    let (header, _) = finalize_boundary(&mut s);
    let wrong_base = next_epoch(&s, 1, genesis_id());
    s.step(100, Input::EnterEpoch(wrong_base), &[]);
    let skipped = next_epoch(&s, 2, header.id());
    s.step(101, Input::EnterEpoch(skipped), &[]);
    assert_eq!(s.machine.epoch(), Epoch(0));
    assert!(s.machine.epoch_ended());
}

#[test]
fn a_boundary_block_its_view_could_not_finalize_is_re_proposed_until_final() {
    // Validator 2 leads view 2. It nullifies view 1 (timeout), then sees the boundary block
    // of view 1 notarized: it may not finalize-vote it, and nothing may be built above it,
    // so as leader of view 2 it proposes the same block again.
    let mut s = Script::with_epochs(2, 1);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    s.step(
        BASE_MS,
        Input::Timeout { view: View(1) },
        &[
            Got::Persist,
            Got::Vote(s.nullify(1)),
            Got::Timeout(View(1), 2 * BASE_MS),
        ],
    );
    let (header, proposal) = s.proposal(1, genesis_id(), b"one");
    s.step(1_010, s.from(1, proposal), &[Got::Verify(View(1))]);
    s.step(
        1_011,
        Input::PayloadVerified {
            view: View(1),
            block_hash: header.hash,
            valid: true,
        },
        &[],
    );
    let notarized = s.certificate(header, &[0, 1, 3]);
    let outputs = s.step(
        1_020,
        s.from(1, Message::Notarization(notarized)),
        &[
            Got::Notarization(View(1)),
            Got::Timeout(View(2), 1_020 + BASE_MS),
            Got::Persist,
            Got::Propose(View(2)),
        ],
    );
    let reproposal = outputs
        .iter()
        .find_map(|output| match output {
            Output::Broadcast(Message::Propose(proposal)) => Some(proposal.block.clone()),
            _ => None,
        })
        .unwrap();
    let again = reproposal.header;
    assert!(again.is_reproposal());
    assert_eq!(
        (again.height, again.hash, again.parent_view, again.epoch),
        (Height(1), header.hash, View(1), Epoch(0))
    );
    assert!(reproposal.payload.is_empty());
    assert_eq!(s.machine.stats().reproposals, 1);
    // The others notarize the re-proposal; a quorum makes us finalize-vote it; a quorum of
    // finalize votes finalizes the original block (with its payload) by the re-proposal's
    // certificate, and ends the epoch.
    s.step(1_030, s.vote(0, Vote::Notarize(again)), &[]);
    s.step(
        1_031,
        s.vote(1, Vote::Notarize(again)),
        &[
            Got::Persist,
            Got::Vote(Vote::Finalize(again.id())),
            Got::Timeout(View(3), 1_031 + BASE_MS),
        ],
    );
    s.step(1_040, s.vote(0, Vote::Finalize(again.id())), &[]);
    let outputs = s.step(
        1_041,
        s.vote(1, Vote::Finalize(again.id())),
        &[Got::Finalize(Height(1)), Got::EpochEnded(0, Height(1))],
    );
    let Some(Output::Finalize { block, certificate }) = outputs
        .iter()
        .find(|output| matches!(output, Output::Finalize { .. }))
    else {
        panic!("finalize")
    };
    assert_eq!(block.header, header);
    assert_eq!(block.payload, b"one");
    assert_eq!(certificate.subject, again.id());
    let item = CertifiedBlock {
        block: block.clone(),
        certificate: certificate.clone(),
    };
    assert!(item.certifies_itself());
}

#[test]
fn nothing_is_notarized_above_the_boundary_and_re_proposals_carry_no_payload() {
    let mut s = Script::with_epochs(0, 1);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, _) = s.proposal(1, genesis_id(), b"one");
    let notarized = s.certificate(header, &[1, 2, 3]);
    s.step(
        10,
        s.from(1, Message::Notarization(notarized)),
        &[
            Got::Notarization(View(1)),
            Got::Persist,
            Got::Vote(Vote::Finalize(header.id())),
            Got::Timeout(View(2), 10 + BASE_MS),
        ],
    );
    // A block at height 2 on the notarized boundary: verified by the application, but never
    // voted for.
    let (above, proposal) = s.proposal(2, header.id(), b"two");
    s.step(20, s.from(2, proposal), &[Got::Verify(View(2))]);
    s.step(
        21,
        Input::PayloadVerified {
            view: View(2),
            block_hash: above.hash,
            valid: true,
        },
        &[],
    );
    // A re-proposal with a payload is refused outright.
    let mut s = Script::with_epochs(0, 1);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let notarized = s.certificate(header, &[1, 2, 3]);
    s.step(
        10,
        s.from(1, Message::Notarization(notarized)),
        &[
            Got::Notarization(View(1)),
            Got::Persist,
            Got::Vote(Vote::Finalize(header.id())),
            Got::Timeout(View(2), 10 + BASE_MS),
        ],
    );
    let stuffed = Header {
        epoch: Epoch(0),
        view: View(2),
        height: Height(1),
        parent_view: View(1),
        parent: header.hash,
        hash: header.hash,
    };
    let (_, proposal) = s.signed_proposal(stuffed, b"extra");
    s.step(20, s.from(2, proposal), &[]);
    assert!(matches!(
        s.machine.last_rejection(),
        Some(Rejection::InvalidProposal { .. })
    ));
}

#[test]
fn votes_of_a_past_epoch_are_refused_and_counted_and_a_stuck_peer_is_helped() {
    let mut s = Script::with_epochs(0, 1);
    let (header, _) = finalize_boundary(&mut s);
    s.step(
        100,
        Input::EnterEpoch(next_epoch(&s, 1, header.id())),
        &[Got::Persist, Got::Timeout(View(1), 100 + BASE_MS)],
    );
    // An epoch-0 notarize vote: signed by a member, but of an epoch this machine left.
    let (stale, _) = s.proposal(2, header.id(), b"late");
    s.step(110, s.vote(3, Vote::Notarize(stale)), &[]);
    assert!(matches!(
        s.machine.last_rejection(),
        Some(Rejection::WrongEpoch {
            epoch: Epoch(0),
            current: Epoch(1),
            ..
        })
    ));
    assert_eq!(s.machine.stats().wrong_epoch_messages, 1);
    // An epoch-0 nullify vote says its signer is stuck there: it gets our certificate.
    let laggard = s.keys[3].address();
    s.step(120, s.vote(3, nullify(2)), &[Got::SendTo(laggard)]);
    assert_eq!(s.machine.stats().wrong_epoch_messages, 1);
}

#[test]
fn a_next_epoch_finality_certificate_is_checked_with_the_announced_set_and_fetches_the_epoch() {
    let mut s = Script::with_epochs(0, 2);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let ahead = BlockId {
        epoch: Epoch(1),
        view: View(4),
        height: Height(3),
        hash: Hash::of(b"three"),
    };
    // Too few signers: refused.
    let short = s.certificate(ahead, &[1, 2]);
    s.step(10, s.from(1, Message::Finalization(short)), &[]);
    assert!(matches!(
        s.machine.last_rejection(),
        Some(Rejection::Certificate(_))
    ));
    // A quorum of the next set: kept, and our epoch's blocks are fetched up to its boundary.
    let cert = s.certificate(ahead, &[1, 2, 3]);
    s.step(
        20,
        s.from(1, Message::Finalization(cert)),
        &[Got::Sync(1, 2)],
    );
    assert_eq!(s.machine.last_rejection(), None);
}

#[test]
fn a_message_from_an_epoch_further_ahead_is_refused_but_fetches_our_epoch() {
    let mut s = Script::with_epochs(0, 2);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    s.epoch = Epoch(5);
    s.step(10, s.vote(1, s.nullify(1)), &[Got::Sync(1, 2)]);
    assert!(matches!(
        s.machine.last_rejection(),
        Some(Rejection::WrongEpoch {
            epoch: Epoch(5),
            ..
        })
    ));
    // Asked once; not again for every such message.
    s.step(11, s.vote(2, s.nullify(1)), &[]);
}

#[test]
fn a_joining_key_votes_from_view_one_of_its_first_epoch() {
    let joiner = SecretKey::from_seed([99; 32]);
    let mut s = Script::with_epochs(0, 1);
    s.machine = Consensus::new(s.config.clone(), joiner.clone(), genesis_epoch(&s.keys));
    // A follower in epoch 0: it finalizes the boundary without voting.
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    assert!(!s.machine.is_voter());
    let (header, proposal) = s.proposal(1, genesis_id(), b"one");
    s.step(10, s.from(1, proposal), &[Got::Verify(View(1))]);
    s.step(
        11,
        Input::PayloadVerified {
            view: View(1),
            block_hash: header.hash,
            valid: true,
        },
        &[],
    );
    let final_cert = s.certificate(header.id(), &[0, 1, 2]);
    s.step(
        20,
        s.from(1, Message::Finalization(final_cert)),
        &[
            Got::Finalization(View(1)),
            Got::Timeout(View(2), 20 + BASE_MS),
            Got::Finalize(Height(1)),
            Got::EpochEnded(0, Height(1)),
        ],
    );
    // Epoch 1's set adds the joiner.
    let mut members: Vec<Validator> = four_validators(&s.keys).validators().to_vec();
    members.push(Validator {
        address: joiner.address(),
        power: 1,
    });
    let grown = ValidatorSet::new(members).unwrap();
    let info = EpochInfo {
        epoch: Epoch(1),
        validators: grown.clone(),
        next_validators: grown.clone(),
        base: header.id(),
    };
    // The joiner may lead view 1 of the grown set (round-robin by address): then it builds.
    let leads = grown.get(1).map(|v| v.address) == Some(joiner.address());
    let mut expect = vec![Got::Persist, Got::Timeout(View(1), 30 + BASE_MS)];
    if leads {
        expect.push(Got::Build(View(1), Height(2)));
    }
    s.step(30, Input::EnterEpoch(info), &expect);
    assert!(s.machine.is_voter());
    if leads {
        s.step(
            31,
            Input::PayloadBuilt {
                view: View(1),
                block_hash: block_hash(&header.hash, b"two"),
                payload: b"two".to_vec(),
            },
            &[Got::Persist, Got::Propose(View(1))],
        );
        return;
    }
    // The leader of view 1 in the grown set proposes; the joiner votes for it.
    let leader = s.machine.leader(View(1));
    let mut keys = s.keys.clone();
    keys.push(joiner);
    let leader_key = keys.iter().find(|key| key.address() == leader).unwrap();
    let next = Header {
        epoch: Epoch(1),
        view: View(1),
        height: Height(2),
        parent_view: View(0),
        parent: header.hash,
        hash: block_hash(&header.hash, b"two"),
    };
    let signature = Vote::Notarize(next).sign(leader_key, CHAIN).signature;
    let proposal = Proposal {
        block: Block {
            header: next,
            payload: b"two".to_vec(),
        },
        signature,
    };
    s.step(
        40,
        Input::Message {
            from: leader,
            message: Message::Propose(proposal),
        },
        &[Got::Verify(View(1))],
    );
    s.step(
        41,
        Input::PayloadVerified {
            view: View(1),
            block_hash: next.hash,
            valid: true,
        },
        &[Got::Persist, Got::Vote(Vote::Notarize(next))],
    );
}

#[test]
fn a_leaving_key_stops_voting_at_the_boundary() {
    let mut s = Script::with_epochs(0, 1);
    let (header, _) = finalize_boundary(&mut s);
    assert!(s.machine.is_voter());
    // Epoch 1's set is validators 1..=3: validator 0 left.
    let members: Vec<Validator> = s.keys[1..]
        .iter()
        .map(|key| Validator {
            address: key.address(),
            power: 1,
        })
        .collect();
    let shrunk = ValidatorSet::new(members).unwrap();
    let info = EpochInfo {
        epoch: Epoch(1),
        validators: shrunk.clone(),
        next_validators: shrunk,
        base: header.id(),
    };
    s.step(
        100,
        Input::EnterEpoch(info),
        &[Got::Persist, Got::Timeout(View(1), 100 + BASE_MS)],
    );
    assert!(!s.machine.is_voter());
    // A timeout casts no nullify vote; the machine follows silently.
    s.step(
        100 + BASE_MS,
        Input::Timeout { view: View(1) },
        &[
            Got::Finalization(View(1)),
            Got::Timeout(View(1), 100 + 2 * BASE_MS),
        ],
    );
}

#[test]
fn a_restart_between_the_boundary_commit_and_enter_epoch_resumes_in_the_next_epoch() {
    let mut s = Script::with_epochs(0, 1);
    let (header, _) = finalize_boundary(&mut s);
    let stored = s.machine.safety_state().clone();
    assert_eq!(stored.epoch, Epoch(0));
    let certificate = Some(s.certificate(header.id(), &[0, 1, 2]));
    // The driver derives epoch 1 from its committed head (a boundary block): the epoch-0
    // safety state is void, and the machine starts in view 1 of epoch 1.
    let mut restored = Consensus::restore(
        s.config.clone(),
        s.keys[0].clone(),
        next_epoch(&s, 1, header.id()),
        stored.clone(),
        header.id(),
        certificate.clone(),
    )
    .unwrap();
    let outputs = restored.start(500);
    assert_eq!(protocol(&outputs), [Got::Timeout(View(1), 500 + BASE_MS)]);
    assert_eq!(restored.epoch(), Epoch(1));
    assert_eq!(restored.safety_state(), &SafetyState::of_epoch(Epoch(1)));
    // Restored into epoch 0 with the boundary final (the driver had not read the sets yet):
    // it asks for the next epoch again.
    let mut ended = Consensus::restore(
        s.config.clone(),
        s.keys[0].clone(),
        genesis_epoch(&s.keys),
        stored.clone(),
        header.id(),
        certificate.clone(),
    )
    .unwrap();
    let outputs = ended.start(500);
    assert!(protocol(&outputs).contains(&Got::EpochEnded(0, Height(1))));
    // A safety state of a later epoch than the chain's is damage, not something to vote from.
    let ahead = SafetyState::of_epoch(Epoch(2));
    let refused = Consensus::restore(
        s.config.clone(),
        s.keys[0].clone(),
        next_epoch(&s, 1, header.id()),
        ahead,
        header.id(),
        certificate,
    );
    assert!(matches!(
        refused,
        Err(mesh_consensus::RestoreError::SafetyStateAhead { .. })
    ));
}
