//! State-machine tests as scripts: each step is an input and the outputs it must produce,
//! written in a compact form. One script per tricky branch of voting and input checking;
//! catch-up, finality and restart scripts are in `catch_up.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod script;

use script::*;

#[test]
fn good_case_notarize_finalize_in_three_steps() {
    let mut s = Script::new(0);
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
    // The leader's proposal counted as its vote: one more makes a quorum of three. Validator 0
    // leads neither view 2 nor view 3, so it keeps the certificates it assembles to itself,
    // and hands them to its journal.
    let outputs = s.step(
        20,
        s.vote(2, Vote::Notarize(header)),
        &[
            Got::Persist,
            Got::Vote(Vote::Finalize(header.id())),
            Got::Timeout(View(2), 20 + BASE_MS),
        ],
    );
    assert_eq!(certified(&outputs), [Got::Notarization(View(1))]);
    s.step(30, s.vote(1, Vote::Finalize(header.id())), &[]);
    let outputs = s.step(
        31,
        s.vote(3, Vote::Finalize(header.id())),
        &[Got::Finalize(Height(1))],
    );
    assert_eq!(certified(&outputs), [Got::Finalization(View(1))]);
    assert_eq!(s.machine.finalized(), header.id());
}

#[test]
fn the_next_two_leaders_relay_the_certificates_they_assemble() {
    // Views 2 and 3 are led by validators 2 and 3: they relay what they assemble for view 1.
    for relayer in [2, 3] {
        let mut s = Script::new(relayer);
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
        let other = if relayer == 2 { 3 } else { 2 };
        let mut expected = vec![
            Got::Notarization(View(1)),
            Got::Persist,
            Got::Vote(Vote::Finalize(header.id())),
            Got::Timeout(View(2), 20 + BASE_MS),
        ];
        if relayer == 2 {
            // The next leader builds its proposal on the notarization right away.
            expected.push(Got::Build(View(2), Height(2)));
        }
        s.step(20, s.vote(other, Vote::Notarize(header)), &expected);
        s.step(30, s.vote(1, Vote::Finalize(header.id())), &[]);
        s.step(
            31,
            s.vote(other, Vote::Finalize(header.id())),
            &[Got::Finalization(View(1)), Got::Finalize(Height(1))],
        );
    }
}

#[test]
fn every_validator_relays_a_certificate_it_received() {
    // Validator 0 leads neither view 2 nor view 3, yet passes on a certificate from a peer.
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, _) = s.proposal(1, genesis_id(), b"one");
    let cert = s.certificate(header, &[1, 2, 3]);
    s.step(
        10,
        s.from(1, Message::Notarization(cert)),
        &[
            Got::Notarization(View(1)),
            Got::Persist,
            Got::Vote(Vote::Finalize(header.id())),
            Got::Timeout(View(2), 10 + BASE_MS),
        ],
    );
}

#[test]
fn leader_builds_then_proposes_after_persisting() {
    let mut s = Script::new(1);
    s.start(&[
        Got::Timeout(View(1), BASE_MS),
        Got::Build(View(1), Height(1)),
    ]);
    let hash = block_hash(&genesis(), b"mine");
    s.step(
        5,
        Input::PayloadBuilt {
            view: View(1),
            block_hash: hash,
            payload: b"mine".to_vec(),
        },
        &[Got::Persist, Got::Propose(View(1))],
    );
    assert!(s.machine.safety_state().notarized_in(View(1)).is_some());
}

#[test]
fn timeout_nullifies_and_backs_off() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    // A timer that fires early (a stale schedule) does nothing.
    s.step(500, Input::Timeout { view: View(1) }, &[]);
    s.step(
        BASE_MS,
        Input::Timeout { view: View(1) },
        &[
            Got::Persist,
            Got::Vote(nullify(1)),
            Got::Timeout(View(1), 2 * BASE_MS),
        ],
    );
    s.step(1_100, s.vote(1, nullify(1)), &[]);
    // Second consecutive failure: the next view waits twice as long.
    s.step(
        1_200,
        s.vote(2, nullify(1)),
        &[
            // Assembled here, and validator 0 leads neither view 2 nor 3: not relayed.
            Got::Timeout(View(2), 1_200 + 2 * BASE_MS),
        ],
    );
}

#[test]
fn no_finalize_vote_after_nullifying_the_view() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    s.step(
        BASE_MS,
        Input::Timeout { view: View(1) },
        &[
            Got::Persist,
            Got::Vote(nullify(1)),
            Got::Timeout(View(1), 2 * BASE_MS),
        ],
    );
    let (header, _) = s.proposal(1, genesis_id(), b"late");
    let cert = s.certificate(header, &[1, 2, 3]);
    // Notarized after all: move on, progress resets the back-off, but no finalize vote.
    s.step(
        1_500,
        s.from(2, Message::Notarization(cert)),
        &[
            Got::Notarization(View(1)),
            Got::Timeout(View(2), 1_500 + BASE_MS),
        ],
    );
}

#[test]
fn duplicate_votes_count_once() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let vote = s.vote(2, nullify(1));
    s.step(10, vote.clone(), &[]);
    s.step(11, vote.clone(), &[]);
    s.step(12, vote, &[]);
    assert_eq!(s.machine.stats().duplicates_ignored, 2);
    assert_eq!(s.machine.view(), View(1));
}

#[test]
fn bad_signature_is_rejected() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let mut signed = nullify(1).sign(&s.keys[2], CHAIN);
    signed.signature = nullify(2).sign(&s.keys[2], CHAIN).signature;
    s.step(10, s.from(2, Message::Vote(signed)), &[]);
    assert_eq!(
        s.machine.last_rejection(),
        Some(&Rejection::InvalidSignature {
            signer: s.keys[2].address(),
            view: View(1)
        })
    );
}

#[test]
fn non_validator_is_rejected() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let outsider = SecretKey::from_seed([9; 32]);
    let signed = nullify(1).sign(&outsider, CHAIN);
    s.step(10, s.from(2, Message::Vote(signed)), &[]);
    assert_eq!(
        s.machine.last_rejection(),
        Some(&Rejection::NotValidator {
            signer: outsider.address()
        })
    );
}

#[test]
fn equivocation_is_reported_once_and_not_counted() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (first, _) = s.proposal(1, genesis_id(), b"a");
    let (second, _) = s.proposal(1, genesis_id(), b"b");
    let culprit = s.keys[3].address();
    s.step(10, s.vote(3, Vote::Notarize(first)), &[]);
    s.step(
        11,
        s.vote(3, Vote::Notarize(second)),
        &[Got::Evidence(culprit)],
    );
    s.step(12, s.vote(3, Vote::Notarize(second)), &[]);
    // Finalize and nullify in one view contradict each other too (reported once per view).
    s.step(13, s.vote(2, nullify(1)), &[]);
    s.step(
        14,
        s.vote(2, Vote::Finalize(first.id())),
        &[Got::Evidence(s.keys[2].address())],
    );
}

#[test]
fn proposal_from_a_non_leader_is_rejected() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, _) = s.proposal(1, genesis_id(), b"x");
    let signature = Vote::Notarize(header).sign(&s.keys[2], CHAIN).signature;
    let block = Block {
        header,
        payload: b"x".to_vec(),
    };
    s.step(
        10,
        s.from(2, Message::Propose(Proposal { block, signature })),
        &[],
    );
    assert!(matches!(
        s.machine.last_rejection(),
        Some(Rejection::InvalidSignature { .. })
    ));
}

#[test]
fn oversized_payload_is_rejected() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (_, proposal) = s.proposal(1, genesis_id(), &[7; 65]);
    s.step(10, s.from(1, proposal), &[]);
    assert_eq!(
        s.machine.last_rejection(),
        Some(&Rejection::PayloadTooLarge { len: 65, max: 64 })
    );
}

#[test]
fn invalid_payload_gets_no_vote() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, proposal) = s.proposal(1, genesis_id(), b"bad");
    s.step(10, s.from(1, proposal), &[Got::Verify(View(1))]);
    s.step(
        11,
        Input::PayloadVerified {
            view: View(1),
            block_hash: header.hash,
            valid: false,
        },
        &[],
    );
}

#[test]
fn proposal_with_uncertified_parent_waits() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    // View 2's leader skips view 1 without a nullification of it: no vote.
    let (header, proposal) = s.proposal(2, genesis_id(), b"skip");
    s.step(10, s.from(2, proposal), &[Got::Verify(View(2))]);
    s.step(
        11,
        Input::PayloadVerified {
            view: View(2),
            block_hash: header.hash,
            valid: true,
        },
        &[],
    );
    // The nullification of view 1 arrives: view 2 begins and the waiting proposal gets a vote.
    let cert = s.certificate(s.round(1), &[1, 2, 3]);
    s.step(
        20,
        s.from(3, Message::Nullification(cert)),
        &[
            Got::Nullification(View(1)),
            Got::Timeout(View(2), 20 + 2 * BASE_MS),
            Got::Persist,
            Got::Vote(Vote::Notarize(header)),
        ],
    );
}

#[test]
fn far_future_messages_wait_in_a_bounded_buffer() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    for view in 1_000..1_005 {
        s.step(10, s.vote(2, nullify(view)), &[]);
    }
    let stats = s.machine.stats();
    assert_eq!(stats.future_messages_buffered, 5);
    assert_eq!(stats.future_messages_dropped, 3, "two per peer are kept");
}

#[test]
fn votes_arriving_together_are_batch_verified_and_a_bad_one_is_singled_out() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let good = |s: &Script, i: usize| {
        (
            s.keys[i].address(),
            Message::Vote(nullify(1).sign(&s.keys[i], CHAIN)),
        )
    };
    let mut bad = nullify(1).sign(&s.keys[3], CHAIN);
    bad.signature = nullify(9).sign(&s.keys[3], CHAIN).signature;
    // The batch fails as a whole, so each vote is checked alone: two count, one is refused.
    let messages = vec![
        good(&s, 1),
        (s.keys[3].address(), Message::Vote(bad)),
        good(&s, 2),
    ];
    s.step(10, Input::Messages { messages }, &[]);
    assert_eq!(s.machine.stats().messages_rejected, 1);
    // A clean batch completes the quorum with our own timeout vote.
    let messages = vec![good(&s, 1), good(&s, 2)];
    s.step(20, Input::Messages { messages }, &[]);
    s.step(
        BASE_MS,
        Input::Timeout { view: View(1) },
        &[
            Got::Persist,
            Got::Vote(nullify(1)),
            Got::Timeout(View(2), BASE_MS + 2 * BASE_MS),
        ],
    );
}

#[test]
fn an_observer_never_votes_and_its_certificates_hold_only_validators() {
    let mut s = Script::observer();
    let mut outputs = s.machine.start(0);
    let (header, proposal) = s.proposal(1, genesis_id(), b"one");
    outputs.extend(s.machine.on_input(10, s.from(1, proposal)));
    outputs.extend(s.machine.on_input(
        11,
        Input::PayloadVerified {
            view: View(1),
            block_hash: header.hash,
            valid: true,
        },
    ));
    for index in [0, 2, 3] {
        outputs.extend(
            s.machine
                .on_input(20, s.vote(index, Vote::Notarize(header))),
        );
    }
    for index in [0, 1, 2] {
        outputs.extend(
            s.machine
                .on_input(30, s.vote(index, Vote::Finalize(header.id()))),
        );
    }
    // A timeout in the next view would make a validator nullify; the observer stays silent.
    outputs.extend(
        s.machine
            .on_input(30 + 10 * BASE_MS, Input::Timeout { view: View(2) }),
    );
    assert!(
        !outputs.iter().any(|o| matches!(
            o,
            Output::Broadcast(Message::Vote(_)) | Output::PersistSafetyState(_)
        )),
        "an observer cast or persisted a vote: {:?}",
        protocol(&outputs)
    );
    let certificate = outputs
        .iter()
        .find_map(|o| match o {
            Output::Finalize { certificate, .. } => Some(certificate.clone()),
            _ => None,
        })
        .expect("the observer finalizes from the validators' votes");
    assert_eq!(certificate.signatures.len(), 3);
    certificate
        .verify(CHAIN, &four_validators(&s.keys))
        .expect("every signer of the observer's certificate is a validator");
    // And its own notarization/finalization broadcasts carry only validators.
    for output in &outputs {
        if let Output::Broadcast(Message::Finalization(cert)) = output {
            cert.verify(CHAIN, &four_validators(&s.keys)).unwrap();
        }
    }
}
