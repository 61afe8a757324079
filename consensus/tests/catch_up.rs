//! Scripts for catching up, finality, sync and restart (see `scripts.rs` for the format).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod script;

use script::*;

#[test]
fn certificate_beyond_our_height_requests_sync_then_accepts_synced_blocks() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let mut parent = genesis_id();
    let mut blocks = Vec::new();
    for view in 1..=3u64 {
        let payload = vec![u8::try_from(view).unwrap()];
        let (header, _) = s.proposal(view, parent, &payload);
        blocks.push(Block { header, payload });
        parent = header.id();
    }
    let cert: FinalityCertificate = s.certificate(parent, &[1, 2, 3]);
    s.step(
        50,
        s.from(2, Message::Finalization(cert.clone())),
        &[
            Got::Finalization(View(3)),
            Got::Timeout(View(4), 50 + BASE_MS),
            // We lead view 4: the parent is certified even though its block is still missing.
            Got::Build(View(4), Height(4)),
            Got::Sync(1, 3),
        ],
    );
    // A batch that does not link to our finalized block is refused whole.
    let broken: Vec<CertifiedBlock> = blocks[1..]
        .iter()
        .map(|block| CertifiedBlock {
            block: block.clone(),
            certificate: cert.clone(),
        })
        .collect();
    s.step(60, Input::BlocksSynced { blocks: broken }, &[]);
    assert!(matches!(
        s.machine.last_rejection(),
        Some(Rejection::InvalidSync { .. })
    ));
    let synced: Vec<CertifiedBlock> = blocks
        .iter()
        .map(|block| CertifiedBlock {
            block: block.clone(),
            certificate: cert.clone(),
        })
        .collect();
    s.step(
        70,
        Input::BlocksSynced { blocks: synced },
        &[
            Got::Finalize(Height(1)),
            Got::Finalize(Height(2)),
            Got::Finalize(Height(3)),
        ],
    );
    assert_eq!(s.machine.finalized(), parent);
}

#[test]
fn restored_validator_never_votes_for_a_conflicting_block() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, proposal) = s.proposal(1, genesis_id(), b"first");
    s.step(10, s.from(1, proposal), &[Got::Verify(View(1))]);
    let outputs = s.step(
        11,
        Input::PayloadVerified {
            view: View(1),
            block_hash: header.hash,
            valid: true,
        },
        &[Got::Persist, Got::Vote(Vote::Notarize(header))],
    );
    let Output::PersistSafetyState(persisted) = &outputs[0] else {
        panic!("persist first")
    };
    // Crash and restart from what was persisted; the leader equivocates.
    let mut restored = Consensus::restore(
        s.config.clone(),
        s.keys[0].clone(),
        genesis_epoch(&s.keys),
        persisted.clone(),
        genesis_id(),
        None,
    )
    .unwrap();
    restored.start(20);
    s.machine = restored;
    let (other, proposal) = s.proposal(1, genesis_id(), b"second");
    s.step(30, s.from(1, proposal), &[Got::Verify(View(1))]);
    s.step(
        31,
        Input::PayloadVerified {
            view: View(1),
            block_hash: other.hash,
            valid: true,
        },
        &[],
    );
}

#[test]
fn notarization_of_a_later_view_jumps_ahead_and_still_finalize_votes() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let nullified = s.certificate(s.round(1), &[1, 2, 3]);
    s.step(
        10,
        s.from(1, Message::Nullification(nullified)),
        &[
            Got::Nullification(View(1)),
            Got::Timeout(View(2), 10 + 2 * BASE_MS),
        ],
    );
    // We missed view 2's proposal; its notarization arrives: finalize-vote it, enter view 3.
    let (header, _) = s.proposal(2, genesis_id(), b"two");
    let cert = s.certificate(header, &[1, 2, 3]);
    s.step(
        20,
        s.from(2, Message::Notarization(cert)),
        &[
            Got::Notarization(View(2)),
            Got::Persist,
            Got::Vote(Vote::Finalize(header.id())),
            Got::Timeout(View(3), 20 + BASE_MS),
        ],
    );
}

#[test]
fn a_peer_voting_in_a_closed_view_gets_the_closing_certificate() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let nullified = s.certificate(s.round(1), &[1, 2, 3]);
    s.step(
        10,
        s.from(1, Message::Nullification(nullified)),
        &[
            Got::Nullification(View(1)),
            Got::Timeout(View(2), 10 + 2 * BASE_MS),
        ],
    );
    let laggard = s.keys[3].address();
    s.step(20, s.vote(3, nullify(1)), &[Got::SendTo(laggard)]);
    // Not again within one timeout period.
    s.step(21, s.vote(3, nullify(1)), &[]);
}

#[test]
fn stragglers_of_a_reached_quorum_get_no_certificate_but_a_timed_out_peer_does() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (header, proposal) = s.proposal(1, genesis_id(), b"one");
    s.step(5, s.from(1, proposal), &[Got::Verify(View(1))]);
    s.step(
        6,
        Input::PayloadVerified {
            view: View(1),
            block_hash: header.hash,
            valid: true,
        },
        &[Got::Persist, Got::Vote(Vote::Notarize(header))],
    );
    s.step(
        10,
        s.vote(2, Vote::Notarize(header)),
        &[
            Got::Persist,
            Got::Vote(Vote::Finalize(header.id())),
            Got::Timeout(View(2), 10 + BASE_MS),
        ],
    );
    let laggard = s.keys[3].address();
    // A notarize vote arriving after the view closed is a straggler, not a stuck peer.
    s.step(20, s.vote(3, Vote::Notarize(header)), &[]);
    s.step(30, s.vote(1, Vote::Finalize(header.id())), &[]);
    s.step(
        31,
        s.vote(2, Vote::Finalize(header.id())),
        &[Got::Finalize(Height(1))],
    );
    // Likewise a finalize vote for the finalized view.
    s.step(40, s.vote(3, Vote::Finalize(header.id())), &[]);
    // A nullify vote there means the sender timed out without our progress: help it once.
    s.step(41, s.vote(3, nullify(1)), &[Got::SendTo(laggard)]);
    s.step(42, s.vote(3, nullify(1)), &[]);
}

#[test]
fn finality_of_a_descendant_finalizes_ancestors_with_its_certificate() {
    let mut s = Script::new(0);
    s.start(&[Got::Timeout(View(1), BASE_MS)]);
    let (first, proposal) = s.proposal(1, genesis_id(), b"one");
    s.step(10, s.from(1, proposal), &[Got::Verify(View(1))]);
    s.step(
        11,
        Input::PayloadVerified {
            view: View(1),
            block_hash: first.hash,
            valid: true,
        },
        &[Got::Persist, Got::Vote(Vote::Notarize(first))],
    );
    let cert = s.certificate(first, &[1, 2, 3]);
    s.step(
        12,
        s.from(1, Message::Notarization(cert)),
        &[
            Got::Notarization(View(1)),
            Got::Persist,
            Got::Vote(Vote::Finalize(first.id())),
            Got::Timeout(View(2), 12 + BASE_MS),
        ],
    );
    let (second, proposal) = s.proposal(2, first.id(), b"two");
    s.step(20, s.from(2, proposal), &[Got::Verify(View(2))]);
    s.step(
        21,
        Input::PayloadVerified {
            view: View(2),
            block_hash: second.hash,
            valid: true,
        },
        &[Got::Persist, Got::Vote(Vote::Notarize(second))],
    );
    // View 1 never gathers finalize votes; view 2's finality certificate covers both.
    let finality: FinalityCertificate = s.certificate(second.id(), &[1, 2, 3]);
    let outputs = s.step(
        30,
        s.from(2, Message::Finalization(finality.clone())),
        &[
            Got::Finalization(View(2)),
            Got::Timeout(View(3), 30 + BASE_MS),
            Got::Finalize(Height(1)),
            Got::Finalize(Height(2)),
        ],
    );
    for output in &outputs {
        if let Output::Finalize { certificate, .. } = output {
            assert_eq!(*certificate, finality);
        }
    }
}
