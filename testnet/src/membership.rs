//! Validators joining and leaving a running testnet by transaction (`join --validator`,
//! `leave`), and the live roles `status` shows — all read from the chain (`mesh_getEpoch`,
//! `mesh_validators`), never from `testnet.json`, whose `validator` field records only how a
//! node was created.
//!
//! The testnet pays for these from a funding account — its first development account
//! (`accounts/account-0.json`) unless the caller names another: a joining key gets its bond
//! plus fees, a leaving validator the fee of its unbond.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mesh_ledger::{Address, EpochSchedule, Op, ReceiptStatus, SecretKey, Transaction};
use mesh_rpc::types::{EpochStatus, ReadOptions};
use mesh_rpc::{Client, ClientError, HttpTransport};

use crate::bench::{fee_min, load_keys, read_key};
use crate::invariants::{client, rpc_failed};
use crate::process::node_alive;
use crate::state::{NodeEntry, TestnetFile};
use crate::TestnetError;

/// How long `join --validator` and `leave` wait for the set to change: two epochs at the
/// slowest block rate a loaded testnet shows, and then some.
const SET_CHANGE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a funding, bond or unbond transaction may take to become final.
const RECEIPT_TIMEOUT_MS: u64 = 60_000;

/// A node's part in the validator set, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// In the set in force and in the next ones.
    Validator,
    /// Not in force yet, but in the next set or the projected cut.
    Joining,
    /// In force, but missing from the next set or the projected cut.
    Leaving,
    /// None of the above.
    Full,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Validator => "validator",
            Role::Joining => "joining",
            Role::Leaving => "leaving",
            Role::Full => "full",
        }
    }
}

/// The epoch in progress and each key's role and power in it.
pub(crate) struct Membership {
    pub(crate) epoch: u64,
    roles: HashMap<Address, (Role, u64)>,
}

impl Membership {
    /// The role and power of `key` (`Full`, 0 when it is in no set).
    pub(crate) fn of(&self, key: Option<&Address>) -> (Role, u64) {
        key.and_then(|key| self.roles.get(key).copied())
            .unwrap_or((Role::Full, 0))
    }

    fn from_status(status: &EpochStatus) -> Membership {
        let power_in = |set: &[mesh_ledger::Validator], key: &Address| {
            set.iter().find(|v| v.address == *key).map(|v| v.power)
        };
        let mut roles = HashMap::new();
        let keys = status
            .validators
            .iter()
            .chain(&status.next_validators)
            .chain(&status.projected_validators)
            .map(|v| v.address);
        for key in keys {
            let now = power_in(&status.validators, &key);
            let stays = power_in(&status.next_validators, &key).is_some()
                && power_in(&status.projected_validators, &key).is_some();
            let role = match now {
                Some(_) if stays => Role::Validator,
                Some(_) => Role::Leaving,
                None => Role::Joining,
            };
            roles.insert(key, (role, now.unwrap_or(0)));
        }
        Membership {
            epoch: status.epoch,
            roles,
        }
    }
}

/// The validator key of a node's home (`None` for a full node without one).
pub(crate) fn validator_key(node: &NodeEntry) -> Option<SecretKey> {
    let path = node.home.join("validator_key.json");
    path.exists().then(|| read_key(&path).ok()).flatten()
}

/// Membership as the first answering node sees it (`None` when no node answers).
pub(crate) fn membership(file: &TestnetFile) -> Option<Membership> {
    let runtime = runtime().ok()?;
    file.nodes
        .iter()
        .filter(|n| node_alive(n))
        .find_map(|node| {
            let client = client(node).ok()?;
            let status = runtime.block_on(client.epoch()).ok()?;
            Some(Membership::from_status(&status))
        })
}

fn runtime() -> Result<tokio::runtime::Runtime, TestnetError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| TestnetError::Bench(format!("cannot start the async runtime: {err}")))
}

/// `funder`, or the testnet's first development account.
fn funding_account(
    file: &TestnetFile,
    funder: Option<&SecretKey>,
) -> Result<SecretKey, TestnetError> {
    match funder {
        Some(funder) => Ok(funder.clone()),
        None => load_keys(&file.accounts_dir, Some(1))?
            .pop()
            .ok_or_else(|| TestnetError::Usage("no development account to pay with".into())),
    }
}

/// A running node to submit through: the first one whose RPC answers and that is not syncing
/// (a node catching up checks nonces and balances against an old state).
async fn submitter(
    file: &TestnetFile,
) -> Result<(&NodeEntry, Client<HttpTransport>), TestnetError> {
    for node in file.nodes.iter().filter(|n| node_alive(n)) {
        let Ok(client) = client(node) else { continue };
        if let Ok(status) = client.status().await {
            if !status.syncing {
                return Ok((node, client));
            }
        }
    }
    Err(TestnetError::Usage(
        "no running node of the testnet answers on its RPC port; start it with `meshd testnet up --detach`".into(),
    ))
}

/// Signs `op` from `sender` with its next nonce and waits for the receipt; a failed
/// operation is an error naming its reason.
async fn execute(
    node: &NodeEntry,
    rpc: &Client<HttpTransport>,
    chain_id: &str,
    sender: &SecretKey,
    fee: u64,
    op: Op,
) -> Result<u64, TestnetError> {
    let what = format!("{op:?}");
    let nonce = rpc
        .account(&sender.address(), ReadOptions::default())
        .await
        .map_err(|err| rpc_failed(node, "sender account", &err))?
        .nonce;
    let tx = Transaction {
        chain_id: chain_id.to_owned(),
        sender: sender.address(),
        nonce,
        fee,
        op,
    }
    .sign(sender);
    let receipt = rpc
        .send_transaction_and_wait(&tx, RECEIPT_TIMEOUT_MS)
        .await
        .map_err(|err| refused(&what, err))?;
    match receipt.status {
        ReceiptStatus::Success => Ok(receipt.height),
        ReceiptStatus::Failed { reason } => Err(TestnetError::Usage(format!(
            "{what} failed in block {}: {reason}",
            receipt.height
        ))),
    }
}

fn refused(what: &str, err: ClientError) -> TestnetError {
    match err {
        ClientError::Api(api) => {
            TestnetError::Usage(format!("{what} was refused: {api} (code {})", api.code()))
        }
        other => TestnetError::Bench(format!("{what}: {other}")),
    }
}

fn epoch_schedule(node: &NodeEntry) -> EpochSchedule {
    let epoch_blocks = std::fs::read_to_string(node.home.join("genesis.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|genesis| genesis["params"]["epoch_blocks"].as_u64())
        .unwrap_or(1);
    EpochSchedule::new(epoch_blocks)
}

/// Waits until the set in force at some finalized height from `from` on does (`member`) or
/// does not hold `key`; returns that height.
async fn wait_for_set(
    node: &NodeEntry,
    rpc: &Client<HttpTransport>,
    key: &Address,
    from: u64,
    member: bool,
) -> Result<u64, TestnetError> {
    let deadline = Instant::now() + SET_CHANGE_TIMEOUT;
    loop {
        let head = rpc
            .status()
            .await
            .map_err(|err| rpc_failed(node, "status", &err))?
            .finalized_height;
        if head >= from {
            let set = rpc
                .validators(Some(from))
                .await
                .map_err(|err| rpc_failed(node, "validators", &err))?;
            let found = set.validators.iter().any(|v| v.address == *key);
            if found == member {
                return Ok(from);
            }
            return Err(TestnetError::Usage(format!(
                "the set in force at height {from} {} {key}, against the staking rules",
                if member { "lacks" } else { "still holds" }
            )));
        }
        if Instant::now() >= deadline {
            return Err(TestnetError::Timeout(format!(
                "the chain did not reach height {from}, where the set changes, within {} s (at {head})",
                SET_CHANGE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// After `join` started node `index` with `key`: funds the key, self-bonds `bond` (default:
/// the smallest power in the set now, so that the newcomer never dominates) and waits until
/// it is in the set in force.
pub(crate) fn become_validator(
    dir: &Path,
    index: usize,
    key: &SecretKey,
    bond: Option<u64>,
    funder: Option<&SecretKey>,
) -> Result<(), TestnetError> {
    let file = TestnetFile::load(dir)?;
    let joined = file.node(index)?.clone();
    let funder = funding_account(&file, funder)?;
    let fee = fee_min(&joined.home);
    let schedule = epoch_schedule(&joined);
    runtime()?.block_on(async {
        let (node, rpc) = submitter(&file).await?;
        let status = rpc
            .epoch()
            .await
            .map_err(|err| rpc_failed(node, "mesh_getEpoch", &err))?;
        let bond = match bond {
            Some(0) => return Err(TestnetError::Usage("--bond must be at least 1".into())),
            Some(bond) => bond,
            None => status.validators.iter().map(|v| v.power).min().unwrap_or(1),
        };
        let address = key.address();
        let funding = bond.saturating_add(fee.saturating_mul(2));
        let pay = Op::Transfer {
            to: address,
            amount: funding,
        };
        execute(node, &rpc, &file.chain_id, &funder, fee, pay).await?;
        println!("funded {} ({address}) with {funding}", joined.name);
        let bonded_at = execute(
            node,
            &rpc,
            &file.chain_id,
            key,
            fee,
            Op::Bond {
                validator: address,
                amount: bond,
            },
        )
        .await?;
        let from = schedule.first(schedule.epoch_of(bonded_at).saturating_add(2));
        println!(
            "{} bonded {bond} at height {bonded_at}; it joins the set at height {from} (epoch {})",
            joined.name,
            schedule.epoch_of(from)
        );
        wait_for_set(node, &rpc, &address, from, true).await?;
        println!(
            "{} is a validator from height {from}, power {bond}",
            joined.name
        );
        Ok(())
    })
}

/// `leave --node I`: unbonds node I's self-bond and waits until the set in force no longer
/// holds its key. The process keeps running, as a full node.
pub(crate) fn leave(
    dir: &Path,
    index: usize,
    funder: Option<&SecretKey>,
) -> Result<(), TestnetError> {
    let file = TestnetFile::load(dir)?;
    let leaving = file.node(index)?.clone();
    let key = validator_key(&leaving).ok_or_else(|| {
        TestnetError::Usage(format!(
            "{} has no validator key ({}): it is a full node already",
            leaving.name,
            leaving.home.join("validator_key.json").display()
        ))
    })?;
    let address = key.address();
    let funder = funding_account(&file, funder)?;
    let fee = fee_min(&leaving.home);
    let schedule = epoch_schedule(&leaving);
    runtime()?.block_on(async {
        let (node, rpc) = submitter(&file).await?;
        let status = rpc.epoch().await.map_err(|err| rpc_failed(node, "mesh_getEpoch", &err))?;
        let Some(candidate) = status.candidates.iter().find(|c| c.key == address) else {
            return Err(TestnetError::Usage(format!(
                "{} ({address}) has no bond: it is not a validator or candidate",
                leaving.name
            )));
        };
        let pay = Op::Transfer {
            to: address,
            amount: fee,
        };
        execute(node, &rpc, &file.chain_id, &funder, fee, pay).await?;
        // The whole bond, which is the key's own unless others delegated to it: then the
        // refusal (insufficient_bond) names what it bonded itself, and the delegators must
        // unbond theirs too for it to leave.
        let unbond = Op::Unbond {
            validator: address,
            amount: candidate.bonded,
        };
        let unbonded_at = execute(node, &rpc, &file.chain_id, &key, fee, unbond).await?;
        let from = schedule.first(schedule.epoch_of(unbonded_at).saturating_add(2));
        println!(
            "{} unbonded at height {unbonded_at}; it leaves the set at height {from} (epoch {})",
            leaving.name,
            schedule.epoch_of(from)
        );
        wait_for_set(node, &rpc, &address, from, false).await?;
        println!(
            "{} left the set at height {from} and runs on as a full node; its bond returns at height {}",
            leaving.name,
            schedule.last(schedule.epoch_of(unbonded_at).saturating_add(1))
        );
        Ok(())
    })
}
