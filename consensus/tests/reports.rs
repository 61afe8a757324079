//! View reports (why a view ended without a block) and recovered blocks (the application's
//! journal or a fetch by hash handing consensus a block it lost or never saw).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod script;

use script::*;

fn only_report(outputs: &[Output]) -> ViewReport {
    let mut all = reports(outputs);
    assert_eq!(all.len(), 1, "one view report expected: {all:?}");
    all.remove(0)
}

/// Validator 0 at start, given validator 1's proposal for view 1 and the application's
/// verdict on it (valid: it votes notarize). Returns the proposal's header.
fn judged_proposal(s: &mut Script, payload: &[u8], valid: bool) -> Header {
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, proposal) = s.proposal(1, genesis_id(), payload);
    s.step(10, s.from(1, proposal), &[Got::Verify(View(1))]);
    let votes = [Got::Persist, Got::Vote(Vote::Notarize(header))];
    s.step(
        11,
        Input::PayloadVerified {
            view: View(1),
            block_hash: header.hash,
            valid,
        },
        if valid { &votes } else { &[] },
    );
    header
}

#[test]
fn a_view_without_proposal_reports_it_on_timeout_and_when_nullified() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let outputs = s
        .machine
        .on_input(BASE_MS, Input::Timeout { view: View(1) });
    let report = only_report(&outputs);
    assert_eq!(report.view, View(1));
    assert!(!report.ended);
    assert_eq!(report.leader, s.keys[1].address());
    assert_eq!(
        report.outcome,
        ViewOutcome::NoBlock(NoBlockReason::NoProposal)
    );
    s.machine.on_input(BASE_MS + 1, s.vote(2, nullify(1)));
    let outputs = s.machine.on_input(BASE_MS + 2, s.vote(3, nullify(1)));
    let report = only_report(&outputs);
    assert!(report.ended);
    assert_eq!(report.outcome.label(), "no_proposal");
    assert_eq!(s.machine.stats().views_without_block, 1);
}

#[test]
fn a_proposal_waiting_for_its_parent_is_reported_with_that_parent() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (_, proposal) = s.proposal(1, genesis_id(), b"one");
    s.step(10, s.from(1, proposal), &[Got::Verify(View(1))]);
    // The application never answers (its parent is missing): the timeout says so.
    let outputs = s
        .machine
        .on_input(BASE_MS, Input::Timeout { view: View(1) });
    assert_eq!(
        only_report(&outputs).outcome,
        ViewOutcome::NoBlock(NoBlockReason::ProposalNotVerified {
            height: Height(1),
            parent: genesis(),
        })
    );
}

#[test]
fn too_few_votes_names_the_missing_validators() {
    let mut s = Script::new(0);
    judged_proposal(&mut s, b"one", true);
    let outputs = s
        .machine
        .on_input(BASE_MS, Input::Timeout { view: View(1) });
    let ViewOutcome::NoBlock(NoBlockReason::TooFewVotes {
        power,
        quorum,
        missing,
    }) = only_report(&outputs).outcome
    else {
        panic!("expected too few votes");
    };
    // The leader's proposal and our vote: two of the three needed; 2 and 3 did not vote.
    assert_eq!((power, quorum), (2, 3));
    let mut expected = vec![s.keys[2].address(), s.keys[3].address()];
    expected.sort();
    assert_eq!(missing, expected);
}

#[test]
fn an_invalid_proposal_is_reported_as_such() {
    let mut s = Script::new(0);
    judged_proposal(&mut s, b"bad", false);
    let outputs = s
        .machine
        .on_input(BASE_MS, Input::Timeout { view: View(1) });
    assert_eq!(only_report(&outputs).outcome.label(), "proposal_invalid");
}

#[test]
fn a_notarized_view_reports_notarized_when_left() {
    let mut s = Script::new(0);
    let header = judged_proposal(&mut s, b"one", true);
    let outputs = s.machine.on_input(20, s.vote(2, Vote::Notarize(header)));
    let report = only_report(&outputs);
    assert!(report.ended);
    assert_eq!(report.outcome, ViewOutcome::Notarized);
    assert_eq!(s.machine.stats().views_without_block, 0);
}

#[test]
fn a_recovered_block_is_finalized_without_sync() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, proposal) = s.proposal(1, genesis_id(), b"one");
    let Message::Propose(proposal) = proposal else {
        unreachable!()
    };
    // The block comes from the application (journal or fetch), never as a proposal.
    s.step(
        5,
        Input::BlocksRecovered {
            blocks: vec![proposal.block],
        },
        &[],
    );
    assert_eq!(s.machine.stats().blocks_recovered, 1);
    let cert = s.certificate(header.id(), &[1, 2, 3]);
    s.step(
        10,
        s.from(2, Message::Finalization(cert)),
        &[
            Got::Finalization(View(1)),
            Got::Timeout(View(2), 10 + BASE_MS),
            Got::Finalize(Height(1)),
        ],
    );
    assert_eq!(s.machine.finalized(), header.id());
}

#[test]
fn without_the_block_the_same_certificate_asks_for_sync() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, _) = s.proposal(1, genesis_id(), b"one");
    let cert = s.certificate(header.id(), &[1, 2, 3]);
    let outputs = s
        .machine
        .on_input(10, s.from(2, Message::Finalization(cert)));
    assert!(protocol(&outputs).contains(&Got::Sync(1, 1)));
}

#[test]
fn recovered_blocks_at_or_below_the_finalized_height_are_ignored() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let stale = Block {
        header: Header {
            epoch: Epoch(0),
            view: View(0),
            height: Height(0),
            parent_view: View(0),
            parent: genesis(),
            hash: genesis(),
        },
        payload: Vec::new(),
    };
    s.step(
        5,
        Input::BlocksRecovered {
            blocks: vec![stale],
        },
        &[],
    );
    assert_eq!(s.machine.stats().blocks_recovered, 0);
}

#[test]
fn a_recovered_block_answers_the_pending_verification_of_its_proposal() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, proposal_message) = s.proposal(1, genesis_id(), b"one");
    let Message::Propose(proposal) = proposal_message.clone() else {
        unreachable!()
    };
    s.step(10, s.from(1, proposal_message), &[Got::Verify(View(1))]);
    // The application found the block valid by another path (it fetched it as a parent):
    // the waiting proposal counts as verified and we notarize.
    s.step(
        12,
        Input::BlocksRecovered {
            blocks: vec![proposal.block],
        },
        &[Got::Persist, Got::Vote(Vote::Notarize(header))],
    );
}
