//! Verified reads: honest answers verify; a tampered value, proof, header, link or certificate
//! does not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mesh_ledger::{Address, ValidatorSet};
use mesh_rpc::types::{AccountInfo, HexBytes, ReadOptions, ValueInfo};
use mesh_rpc::verify::{verify_account, verify_value, VerifyError};
use mesh_rpc::{Client, ClientConfig, ClientError, HttpTransport, TrustAnchor};

async fn setup() -> (
    std::sync::Arc<MockNode>,
    Client<HttpTransport>,
    mesh_rpc::RpcServerHandle,
) {
    let node = MockNode::new();
    let (server, addr) = serve(&node, test_config()).await;
    let client = Client::http(&format!("http://{addr}"), &ClientConfig::default()).unwrap();
    client
        .send_transaction(&transfer(&alice(), 0, &bob(), 100))
        .await
        .unwrap();
    client
        .send_transaction(&put(&alice(), 1, b"greeting", b"hello"))
        .await
        .unwrap();
    node.finalize();
    (node, client, server)
}

async fn proven_account(client: &Client<HttpTransport>, address: &Address) -> AccountInfo {
    client
        .account(
            address,
            ReadOptions {
                height: None,
                prove: true,
            },
        )
        .await
        .unwrap()
}

async fn proven_value(client: &Client<HttpTransport>, key: &[u8]) -> ValueInfo {
    client
        .value(
            &alice().address(),
            key,
            ReadOptions {
                height: None,
                prove: true,
            },
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn honest_answers_verify() {
    let (node, client, _server) = setup().await;
    let mut anchor = anchor();

    let bob_info = client
        .verified_account(&mut anchor, &bob().address(), None)
        .await
        .unwrap();
    assert_eq!(bob_info.balance, 600);
    // Absence proof.
    let nobody = client
        .verified_account(&mut anchor, &key(99).address(), None)
        .await
        .unwrap();
    assert!(!nobody.exists);
    let value = client
        .verified_value(&mut anchor, &alice().address(), b"greeting", None)
        .await
        .unwrap();
    assert_eq!(value.value.unwrap().0, b"hello");
    let absent = client
        .verified_value(&mut anchor, &alice().address(), b"nothing", None)
        .await
        .unwrap();
    assert!(absent.value.is_none());

    // Three blocks finalized by one certificate: the lower two verify through links.
    node.finalize_with(3);
    for height in 2..=4 {
        let info = client
            .verified_account(&mut anchor, &alice().address(), Some(height))
            .await
            .unwrap();
        let links = info.proof.unwrap().finality.unwrap().links.len();
        assert_eq!(links as u64, 4 - height);
    }
    // A historical height verifies against its own header.
    let old = client
        .verified_account(&mut anchor, &bob().address(), Some(1))
        .await
        .unwrap();
    assert_eq!(old.height, 1);
    // Genesis has no certificate: a verified read there is refused, not trusted.
    let genesis = client
        .verified_account(&mut anchor, &bob().address(), Some(0))
        .await;
    assert!(matches!(
        genesis,
        Err(ClientError::Verify(VerifyError::Missing(_)))
    ));
}

#[tokio::test]
async fn a_lying_node_is_caught() {
    let (node, client, _server) = setup().await;
    node.chain.lock().unwrap().lie = true;
    let result = client
        .verified_account(&mut anchor(), &bob().address(), None)
        .await;
    assert!(
        matches!(result, Err(ClientError::Verify(VerifyError::Proof(_)))),
        "{result:?}"
    );
}

#[tokio::test]
async fn tampered_account_answers_fail() {
    let (node, client, _server) = setup().await;
    let anchor = anchor();
    let bob_addr = bob().address();
    let honest = proven_account(&client, &bob_addr).await;
    verify_account(&anchor, &bob_addr, &honest).unwrap();

    let fails = |info: &AccountInfo| verify_account(&anchor, &bob_addr, info).unwrap_err();

    // Value.
    let mut t = honest.clone();
    t.balance += 1;
    assert!(matches!(fails(&t), VerifyError::Proof(_)));
    let mut t = honest.clone();
    t.nonce = 5;
    assert!(matches!(fails(&t), VerifyError::Proof(_)));
    let mut t = honest.clone();
    t.exists = false;
    assert!(matches!(fails(&t), VerifyError::Proof(_)));
    // Answer about another account.
    assert!(matches!(
        verify_account(&anchor, &alice().address(), &honest).unwrap_err(),
        VerifyError::Proof(_)
    ));

    // Proof: a flipped byte, garbage, another account's proof.
    let mut t = honest.clone();
    let proof = &mut t.proof.as_mut().unwrap().proof.0;
    let last = proof.len() - 1;
    proof[last] ^= 1;
    assert!(matches!(fails(&t), VerifyError::Proof(_)));
    let mut t = honest.clone();
    t.proof.as_mut().unwrap().proof = HexBytes(vec![1, 2, 3]);
    assert!(matches!(fails(&t), VerifyError::Proof(_)));
    let alice_info = proven_account(&client, &alice().address()).await;
    let mut t = honest.clone();
    t.proof.as_mut().unwrap().proof = alice_info.proof.unwrap().proof;
    assert!(matches!(fails(&t), VerifyError::Proof(_)));
    // No proof at all.
    let mut t = honest.clone();
    t.proof = None;
    assert!(matches!(fails(&t), VerifyError::Missing(_)));

    // Header: a forged state root breaks the link to the certificate.
    let mut t = honest.clone();
    t.proof.as_mut().unwrap().header.state_root.0[0] ^= 1;
    assert!(matches!(fails(&t), VerifyError::BrokenLinks(_)));
    let mut t = honest.clone();
    t.proof.as_mut().unwrap().header.height += 1;
    assert!(matches!(fails(&t), VerifyError::HeightMismatch { .. }));
    let mut t = honest.clone();
    t.proof.as_mut().unwrap().header.chain_id = "other".into();
    assert!(matches!(fails(&t), VerifyError::WrongChain { .. }));

    // Certificate: too few signatures, a bad signature, a signer outside the set, another
    // block, none at all.
    let mut t = honest.clone();
    let cert = &mut t
        .proof
        .as_mut()
        .unwrap()
        .finality
        .as_mut()
        .unwrap()
        .certificate;
    cert.signatures.truncate(2);
    assert!(matches!(fails(&t), VerifyError::Certificate(_)));
    let mut t = honest.clone();
    let cert = &mut t
        .proof
        .as_mut()
        .unwrap()
        .finality
        .as_mut()
        .unwrap()
        .certificate;
    cert.signatures[0].signature.0[5] ^= 1;
    assert!(matches!(fails(&t), VerifyError::Certificate(_)));
    let mut t = honest.clone();
    let cert = &mut t
        .proof
        .as_mut()
        .unwrap()
        .finality
        .as_mut()
        .unwrap()
        .certificate;
    cert.signatures[0].signer = key(200).address();
    assert!(matches!(fails(&t), VerifyError::Certificate(_)));
    let mut t = honest.clone();
    let cert = &mut t
        .proof
        .as_mut()
        .unwrap()
        .finality
        .as_mut()
        .unwrap()
        .certificate;
    cert.view += 1; // signatures were over another view
    assert!(matches!(fails(&t), VerifyError::Certificate(_)));
    let mut t = honest.clone();
    let cert = &mut t
        .proof
        .as_mut()
        .unwrap()
        .finality
        .as_mut()
        .unwrap()
        .certificate;
    cert.block_hash.0[0] ^= 1;
    assert!(matches!(fails(&t), VerifyError::BrokenLinks(_)));
    let mut t = honest.clone();
    t.proof.as_mut().unwrap().finality = None;
    assert!(matches!(fails(&t), VerifyError::Missing(_)));

    // Trust anchors: another chain, another validator set.
    let other_chain = TrustAnchor::new(
        "other".into(),
        anchor.schedule.epoch_blocks(),
        anchor.set(0).unwrap().clone(),
    );
    assert!(matches!(
        verify_account(&other_chain, &bob_addr, &honest).unwrap_err(),
        VerifyError::WrongChain { .. }
    ));
    let other_set = TrustAnchor::new(
        CHAIN.into(),
        anchor.schedule.epoch_blocks(),
        ValidatorSet::new(vec![mesh_ledger::Validator {
            address: key(200).address(),
            power: 1,
        }])
        .unwrap(),
    );
    assert!(matches!(
        verify_account(&other_set, &bob_addr, &honest).unwrap_err(),
        VerifyError::WrongValidatorSet
    ));

    // Links: a descendant certificate with a link removed or altered.
    node.finalize_with(3); // heights 2..=4, certified at 4
    let linked = client
        .account(
            &bob_addr,
            ReadOptions {
                height: Some(2),
                prove: true,
            },
        )
        .await
        .unwrap();
    verify_account(&anchor, &bob_addr, &linked).unwrap();
    let mut t = linked.clone();
    t.proof
        .as_mut()
        .unwrap()
        .finality
        .as_mut()
        .unwrap()
        .links
        .pop();
    assert!(matches!(fails(&t), VerifyError::BrokenLinks(_)));
    let mut t = linked.clone();
    t.proof.as_mut().unwrap().finality.as_mut().unwrap().links[0].timestamp_ms += 1;
    assert!(matches!(fails(&t), VerifyError::BrokenLinks(_)));
    let mut t = linked;
    t.proof.as_mut().unwrap().finality.as_mut().unwrap().links[0]
        .parent_hash
        .0[0] ^= 1;
    assert!(matches!(fails(&t), VerifyError::BrokenLinks(_)));
}

#[tokio::test]
async fn tampered_value_answers_fail() {
    let (_node, client, _server) = setup().await;
    let anchor = anchor();
    let owner = alice().address();
    let honest = proven_value(&client, b"greeting").await;
    verify_value(&anchor, &owner, b"greeting", &honest).unwrap();

    let mut t = honest.clone();
    t.value = Some(HexBytes(b"hellp".to_vec()));
    assert!(matches!(
        verify_value(&anchor, &owner, b"greeting", &t).unwrap_err(),
        VerifyError::Proof(_)
    ));
    let mut t = honest.clone();
    t.value = None;
    assert!(matches!(
        verify_value(&anchor, &owner, b"greeting", &t).unwrap_err(),
        VerifyError::Proof(_)
    ));
    // The right value under another key.
    let mut t = honest.clone();
    t.key = HexBytes(b"other".to_vec());
    assert!(verify_value(&anchor, &owner, b"greeting", &t).is_err());
    assert!(verify_value(&anchor, &owner, b"other", &t).is_err());
    // An absence proof passed off as a value. (Passing it off for "greeting" may legitimately
    // verify: a sparse tree proves X absent by exhibiting the leaf that sits on X's path.)
    let absent = proven_value(&client, b"nothing").await;
    verify_value(&anchor, &owner, b"nothing", &absent).unwrap();
    let mut t = absent;
    t.value = Some(HexBytes(b"invented".to_vec()));
    assert!(matches!(
        verify_value(&anchor, &owner, b"nothing", &t).unwrap_err(),
        VerifyError::Proof(_)
    ));
    // Header.
    let mut t = honest;
    t.proof.as_mut().unwrap().header.state_root.0[31] ^= 1;
    assert!(verify_value(&anchor, &owner, b"greeting", &t).is_err());
}
