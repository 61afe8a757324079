//! Validators join and leave by transaction while the network runs (ADR 003, steps 5 and 6):
//! a bond makes a running full node a voting validator two epochs later, an unbond turns a
//! running validator into a full node, neither restarts, `mesh_validators` answers the set in
//! force at any height, and a client trusting only genesis verifies reads across the changes. Real nodes in process, RPC on port 0, every wait bounded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use std::time::Duration;

use common::*;
use mesh_ledger::{
    Address, GenesisAccount, Op, ReceiptStatus, SecretKey, Transaction, ValidatorSet,
};
use mesh_node::service::{self, RunningNode};
use mesh_rpc::types::ReadOptions;
use mesh_rpc::{ApiError, Client, ClientConfig, ClientError, HttpTransport};
use tokio::time::{sleep, Instant};

const LIMIT: Duration = Duration::from_secs(90);
const FEE: u64 = 10;
const BALANCE: u64 = 1_000;

fn client(node: &RunningNode) -> Client<HttpTransport> {
    Client::http(
        &format!("http://{}", node.rpc_addr()),
        &ClientConfig::default(),
    )
    .unwrap()
}

async fn start(
    testnet: &Testnet,
    dir: &tempfile::TempDir,
    key: &SecretKey,
    bootnodes: Vec<String>,
) -> RunningNode {
    let config = test_config(0, 0, bootnodes);
    service::start(options(dir.path(), testnet, Some(key), config))
        .await
        .expect("node starts")
}

async fn wait_height(node: &RunningNode, height: u64) {
    let deadline = Instant::now() + LIMIT;
    while node.handle().status().finalized_height < height {
        assert!(
            Instant::now() < deadline,
            "height {height} within {LIMIT:?}, at {}",
            node.handle().status().finalized_height
        );
        sleep(Duration::from_millis(100)).await;
    }
}

fn staking(sender: &SecretKey, nonce: u64, op: Op) -> mesh_ledger::SignedTransaction {
    Transaction {
        chain_id: CHAIN.into(),
        sender: sender.address(),
        nonce,
        fee: FEE,
        op,
    }
    .sign(sender)
}

/// Submits and waits for the receipt; returns the height it was finalized at.
async fn execute(client: &Client<HttpTransport>, tx: &mesh_ledger::SignedTransaction) -> u64 {
    let receipt = client
        .send_transaction_and_wait(tx, 60_000)
        .await
        .expect("final");
    assert_eq!(receipt.status, ReceiptStatus::Success, "{receipt:?}");
    receipt.height
}

fn members(info: &mesh_rpc::types::ValidatorsInfo) -> Vec<Address> {
    info.validators.iter().map(|v| v.address).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_node_becomes_a_validator_by_bond_and_a_validator_leaves_by_unbond() {
    let mut testnet = Testnet::new(4);
    let newcomer = SecretKey::from_seed([150; 32]);
    let leaver = testnet.validators[0].clone();
    for key in [&newcomer, &leaver] {
        testnet.genesis.balances.push(GenesisAccount {
            address: key.address(),
            balance: BALANCE,
        });
    }
    let schedule = testnet.genesis.params.schedule();
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Option<RunningNode>> = Vec::new();
    for (dir, key) in dirs.iter().zip(&testnet.validators) {
        let bootnodes = nodes
            .first()
            .and_then(|n| n.as_ref())
            .and_then(|n| n.p2p_address())
            .map(|a| vec![a.to_string()])
            .unwrap_or_default();
        nodes.push(Some(start(&testnet, dir, key, bootnodes).await));
    }
    let bootnode_addr = nodes[1]
        .as_ref()
        .unwrap()
        .p2p_address()
        .unwrap()
        .to_string();
    let bootnode = || vec![bootnode_addr.clone()];
    // The newcomer holds a validator key the set does not name: it runs as a full node.
    let joiner = start(&testnet, &dirs[4], &newcomer, bootnode()).await;
    assert_eq!(joiner.handle().status().validator, None);
    let rpc = client(&joiner);
    wait_height(&joiner, 2).await;

    // Leaving now would leave three of the four the chain keeps: refused at admission with
    // the receipt reason's code, nothing charged.
    let leave = staking(
        &leaver,
        0,
        Op::Unbond {
            validator: leaver.address(),
            amount: 10,
        },
    );
    match rpc.send_transaction(&leave).await {
        Err(ClientError::Api(err @ ApiError::BelowSafeSize { .. })) => {
            assert_eq!(err.code(), 1306);
            assert_eq!(
                err,
                ApiError::BelowSafeSize {
                    size: 3,
                    min_validators: 4
                }
            );
        }
        other => panic!("expected below_safe_size, got {other:?}"),
    }

    // 1. The newcomer registers with a self-bond: a member from the first height of the
    //    epoch after next, without a restart.
    let bond = staking(
        &newcomer,
        0,
        Op::Bond {
            validator: newcomer.address(),
            amount: 10,
        },
    );
    let bonded_at = execute(&rpc, &bond).await;
    let joined_at = schedule.first(schedule.epoch_of(bonded_at) + 2);
    // `mesh_getEpoch` shows the change pending: a candidate, in the projected cut (or, past
    // the boundary that computed it, the next set), not yet in force.
    let pending = rpc.epoch().await.unwrap();
    let has = |set: &[mesh_ledger::Validator]| set.iter().any(|v| v.address == newcomer.address());
    assert!(pending
        .candidates
        .iter()
        .any(|c| c.key == newcomer.address() && c.bonded == 10));
    if pending.epoch < schedule.epoch_of(joined_at) {
        assert!(!has(&pending.validators), "{pending:?}");
        assert!(
            has(&pending.projected_validators) || has(&pending.next_validators),
            "{pending:?}"
        );
    }
    wait_height(&joiner, joined_at + 1).await;
    let before = rpc.validators(Some(joined_at - 1)).await.unwrap();
    let after = rpc.validators(Some(joined_at)).await.unwrap();
    assert_eq!(before.validators.len(), 4);
    assert!(!members(&before).contains(&newcomer.address()));
    assert_eq!(after.epoch, schedule.epoch_of(joined_at));
    assert_eq!(after.first_height, joined_at);
    assert_eq!(after.validators.len(), 5);
    assert!(members(&after).contains(&newcomer.address()));
    let header = rpc
        .block(mesh_rpc::BlockRef::Height(joined_at), false)
        .await
        .unwrap()
        .header;
    assert_eq!(header.validator_set_hash, after.validator_set_hash);
    let deadline = Instant::now() + LIMIT;
    while joiner.handle().status().validator != Some(newcomer.address()) {
        assert!(Instant::now() < deadline, "the newcomer votes");
        sleep(Duration::from_millis(100)).await;
    }

    // Its votes count: with one of the original four stopped, four of five must vote for a
    // certificate (quorum 34 of 50), so the chain goes on only with the newcomer's.
    let stopped = nodes[3].take().unwrap();
    stopped.stop().await.unwrap();
    let height = joiner.handle().status().finalized_height;
    wait_height(&joiner, height + 3).await;
    nodes[3] = Some(start(&testnet, &dirs[3], &testnet.validators[3], bootnode()).await);

    // 2. Validator 0 leaves: the cut keeps four, so the unbond is admitted now. It stops
    //    voting at the boundary and follows the chain as a full node, without a restart.
    let unbonded_at = execute(&rpc, &leave).await;
    let pending = rpc.epoch().await.unwrap();
    if pending.epoch <= schedule.epoch_of(unbonded_at) + 1 {
        assert!(
            pending.unbonding.iter().any(|u| u.owner == leaver.address()
                && u.amount == 10
                && u.release_epoch == schedule.epoch_of(unbonded_at) + 1),
            "{pending:?}"
        );
    }
    let left_at = schedule.first(schedule.epoch_of(unbonded_at) + 2);
    let released_after = schedule.last(schedule.epoch_of(unbonded_at) + 1);
    for node in nodes.iter().flatten() {
        wait_height(node, left_at + 2).await;
    }
    let set = rpc.validators(Some(left_at)).await.unwrap();
    assert_eq!(set.validators.len(), 4);
    assert!(!members(&set).contains(&leaver.address()));
    assert!(members(&set).contains(&newcomer.address()));
    let former = nodes[0].as_ref().unwrap();
    let deadline = Instant::now() + LIMIT;
    while former.handle().status().validator.is_some() {
        assert!(Instant::now() < deadline, "the leaver stops voting");
        sleep(Duration::from_millis(100)).await;
    }
    let followed = former.handle().status().finalized_height;
    wait_height(former, followed + 2).await;

    // The unbonded amount comes back in the end-of-epoch step of the epoch after the unbond,
    // not before. (The leaver also earns the fees of the blocks it proposed; the release block
    // carries no transaction, so its change is the release alone.)
    let balance_at = |height: u64| {
        let rpc = &rpc;
        let leaver = leaver.address();
        async move {
            let options = ReadOptions {
                height: Some(height),
                prove: false,
            };
            rpc.account(&leaver, options).await.unwrap().balance
        }
    };
    let release_block = rpc
        .block(mesh_rpc::BlockRef::Height(released_after), false)
        .await
        .unwrap();
    assert_eq!(release_block.header.tx_count, 0);
    assert_eq!(
        balance_at(released_after).await,
        balance_at(released_after - 1).await + 10
    );

    // 3. A delegation raises the newcomer's power: the third change of the set. A client that
    //    trusts only genesis verifies a read at the head by following all three, each
    //    certified by the set before it (`mesh_getEpochProof`).
    let delegation = Transaction {
        chain_id: CHAIN.into(),
        sender: testnet.account.address(),
        nonce: 0,
        fee: FEE,
        op: Op::Bond {
            validator: newcomer.address(),
            amount: 5,
        },
    }
    .sign(&testnet.account);
    let delegated_at = execute(&rpc, &delegation).await;
    let raised_at = schedule.first(schedule.epoch_of(delegated_at) + 2);
    wait_height(&joiner, raised_at + 1).await;
    let raised = rpc.validators(Some(raised_at)).await.unwrap();
    let power = |info: &mesh_rpc::types::ValidatorsInfo| {
        info.validators
            .iter()
            .find(|v| v.address == newcomer.address())
            .map(|v| v.power)
    };
    assert_eq!(power(&raised), Some(15));
    let mut anchor = mesh_rpc::TrustAnchor::from_genesis(&testnet.genesis).unwrap();
    let read = rpc
        .verified_account(&mut anchor, &newcomer.address(), None)
        .await
        .expect("a read at the head verifies from genesis");
    let epoch = schedule.epoch_of(read.height);
    assert!(anchor.newest_epoch() >= epoch);
    let in_force = rpc.validators(Some(read.height)).await.unwrap();
    assert_eq!(
        anchor.set(epoch).unwrap().hash(),
        in_force.validator_set_hash
    );
    // Every set the chain had is among those the anchor learned.
    for height in [joined_at - 1, joined_at, left_at, raised_at] {
        let info = rpc.validators(Some(height)).await.unwrap();
        assert_eq!(
            anchor.set(info.epoch).map(ValidatorSet::hash),
            Some(info.validator_set_hash)
        );
    }

    joiner.stop().await.unwrap();
    for node in nodes.into_iter().flatten() {
        node.stop().await.unwrap();
    }
}
