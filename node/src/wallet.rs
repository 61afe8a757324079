//! `meshd tx …` and `meshd query …`: a command-line wallet over the JSON-RPC API
//! (`mesh_rpc::Client`).
//!
//! Output is human-readable by default and JSON with `--json` (the API's own shapes). Exit
//! codes: 0 success; 1 an error (the node's refusal with its reason and code, an unreachable
//! node, a bad key file); 2 a malformed command line; 3 a transaction that became final but
//! whose operation failed (it still paid its fee and used its nonce).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use mesh_ledger::bytes::to_hex;
use mesh_ledger::{
    Address, FailureReason, Genesis, Hash, Op, Receipt, ReceiptStatus, SignedTransaction,
    Transaction, TxHash,
};
use mesh_node::keys;
use mesh_rpc::types::{
    AccountInfo, BlockInfo, KeysPage, NodeRole, NodeStatus, ReadOptions, TxInfo, TxStatus,
    ValueInfo,
};
use mesh_rpc::{ApiError, BlockRef, Client, ClientConfig, ClientError, HttpTransport, TrustAnchor};
use serde::Serialize;
use serde_json::json;

/// Default JSON-RPC endpoint of a local node.
pub(crate) const DEFAULT_RPC_URL: &str = "http://127.0.0.1:30401";
/// Default fee: the default chain's minimum.
const DEFAULT_FEE: u64 = 1;
/// How many nonces past the account's a send tries when they are taken by pending transactions
/// (the mempool's default `future_nonce_window`).
const NONCE_ATTEMPTS: u64 = 64;
/// Time allowed for one call without `--wait`.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the node is and how to print.
#[derive(Args, Debug)]
pub(crate) struct Connection {
    /// JSON-RPC endpoint of a node (HTTP).
    #[arg(long, global = true, default_value = DEFAULT_RPC_URL)]
    rpc: String,
    /// Print the API's JSON instead of text (errors too, as {"error": {...}}).
    #[arg(long, global = true)]
    json: bool,
}

/// A key of the key-value repository, given as hex or as a UTF-8 string.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct DataKey {
    /// The key as hex (0x…).
    #[arg(long = "key-hex", value_name = "HEX")]
    key_hex: Option<String>,
    /// The key as a UTF-8 string.
    #[arg(long = "key-str", value_name = "TEXT")]
    key_str: Option<String>,
}

/// A value of the key-value repository, given as hex or as a UTF-8 string.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct DataValue {
    /// The value as hex (0x…).
    #[arg(long = "value-hex", value_name = "HEX")]
    value_hex: Option<String>,
    /// The value as a UTF-8 string.
    #[arg(long = "value-str", value_name = "TEXT")]
    value_str: Option<String>,
}

/// A key prefix, as hex or as a UTF-8 string; empty when neither is given.
#[derive(Args, Debug)]
#[group(required = false, multiple = false)]
pub(crate) struct Prefix {
    /// The prefix as hex (0x…).
    #[arg(long = "prefix-hex", value_name = "HEX")]
    prefix_hex: Option<String>,
    /// The prefix as a UTF-8 string.
    #[arg(long = "prefix-str", value_name = "TEXT")]
    prefix_str: Option<String>,
}

/// What every transaction command takes.
#[derive(Args, Debug)]
pub(crate) struct Sending {
    /// Key file of the sender (`meshd keys new`).
    #[arg(long = "key", value_name = "FILE")]
    key_file: PathBuf,
    /// Fee offered (at least the chain's `fee_min`).
    #[arg(long, default_value_t = DEFAULT_FEE)]
    fee: u64,
    /// Nonce to use; by default the account's next one, skipping nonces already pending.
    #[arg(long)]
    nonce: Option<u64>,
    /// Wait until the transaction is final and print its receipt.
    #[arg(long)]
    wait: bool,
    /// With --wait: how long to wait, ms (the node caps it at its `wait_max_ms`).
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

/// `meshd tx …`.
#[derive(Subcommand, Debug)]
pub(crate) enum TxCommand {
    /// Move an amount to another account.
    Transfer {
        #[command(flatten)]
        sending: Sending,
        /// Recipient address (0x…, 32 bytes).
        #[arg(long)]
        to: Address,
        /// Amount to move.
        #[arg(long)]
        amount: u64,
    },
    /// Set a key in the sender's namespace of the key-value repository.
    Put {
        #[command(flatten)]
        sending: Sending,
        #[command(flatten)]
        key: DataKey,
        #[command(flatten)]
        value: DataValue,
    },
    /// Remove a key from the sender's namespace.
    Delete {
        #[command(flatten)]
        sending: Sending,
        #[command(flatten)]
        key: DataKey,
    },
    /// Bond part of the sender's balance to a validator key. Bonding to the sender's own key
    /// registers it as a candidate (at least the chain's `min_bond`); bonding to a candidate
    /// delegates. The set changes two epochs after the block that includes it.
    Bond {
        #[command(flatten)]
        sending: Sending,
        /// The validator key (0x…, its address).
        #[arg(long)]
        validator: Address,
        /// Amount to bond, in base units; it becomes voting power.
        #[arg(long)]
        amount: u64,
    },
    /// Unbond what the sender bonded to a validator key. The amount returns to the balance at
    /// the end of the epoch after the one that includes it, once the set without it is in force.
    Unbond {
        #[command(flatten)]
        sending: Sending,
        /// The validator key (0x…).
        #[arg(long)]
        validator: Address,
        /// Amount to unbond, in base units.
        #[arg(long)]
        amount: u64,
    },
}

/// `meshd query …`.
#[derive(Subcommand, Debug)]
pub(crate) enum QueryCommand {
    /// The node and its chain tip.
    Status,
    /// An account's balance and nonce.
    Account {
        /// The address (0x…).
        address: Address,
        /// Height to read at; the newest finalized by default.
        #[arg(long)]
        height: Option<u64>,
        /// Verify the answer: its Merkle proof against the header's state root and the
        /// header's finality certificate against this genesis file's validator set.
        #[arg(long, value_name = "GENESIS_FILE")]
        verify_genesis: Option<PathBuf>,
    },
    /// A value of the key-value repository.
    Value {
        /// Owner of the namespace (0x…).
        owner: Address,
        #[command(flatten)]
        key: DataKey,
        /// Height to read at; the newest finalized by default.
        #[arg(long)]
        height: Option<u64>,
        /// Verify the answer against this genesis file's validator set.
        #[arg(long, value_name = "GENESIS_FILE")]
        verify_genesis: Option<PathBuf>,
    },
    /// One page of the keys of an owner's namespace, in key order.
    Keys {
        /// Owner of the namespace (0x…).
        owner: Address,
        #[command(flatten)]
        prefix: Prefix,
        /// Continue after this key (the previous page's `next cursor`), hex.
        #[arg(long, value_name = "HEX")]
        cursor: Option<String>,
        /// Page size (the node's `list_keys_default` when absent).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// A finalized block: `latest` (default), a height, or a block hash (0x…).
    Block {
        #[arg(default_value = "latest")]
        block: String,
        /// Include the transactions themselves.
        #[arg(long)]
        full: bool,
    },
    /// A transaction's status and, once final, its receipt.
    Tx {
        /// The transaction hash (0x…).
        hash: Hash,
    },
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
struct Failure {
    message: String,
    /// The error object printed with `--json`.
    json: serde_json::Value,
    code: u8,
}

impl Failure {
    fn local(message: impl Into<String>) -> Failure {
        let message = message.into();
        Failure {
            json: json!({ "message": message }),
            message,
            code: 1,
        }
    }
}

fn client_failure(url: &str, err: ClientError) -> Failure {
    match err {
        ClientError::Api(api) => {
            let data = serde_json::to_value(&api).unwrap_or_default();
            let reason = data
                .get("reason")
                .and_then(|reason| reason.as_str())
                .unwrap_or("unknown")
                .to_owned();
            Failure {
                message: format!("{api} [{reason}, code {}]", api.code()),
                json: json!({ "code": api.code(), "message": api.to_string(), "data": data }),
                code: 1,
            }
        }
        ClientError::Rpc { code, message } => Failure {
            message: format!("the node refused the call: {message} [code {code}]"),
            json: json!({ "code": code, "message": message }),
            code: 1,
        },
        ClientError::Transport(detail) => {
            Failure::local(format!("cannot talk to the node at {url}: {detail}"))
        }
        ClientError::Verify(err) => Failure::local(format!(
            "the node's answer did not verify, do not trust it: {err}"
        )),
    }
}

/// Runs `meshd tx …`.
pub(crate) fn run_tx(connection: Connection, command: TxCommand) -> ExitCode {
    let json = connection.json;
    finish(json, block_on(tx(connection, command)))
}

/// Runs `meshd query …`.
pub(crate) fn run_query(connection: Connection, command: QueryCommand) -> ExitCode {
    let json = connection.json;
    finish(json, block_on(query(connection, command)))
}

fn finish(json: bool, outcome: Result<u8, Failure>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "error": failure.json }))
                        .unwrap_or_default()
                );
            }
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn block_on<F: std::future::Future<Output = Result<u8, Failure>>>(
    future: F,
) -> Result<u8, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::local(format!("cannot start the async runtime: {err}")))?;
    runtime.block_on(future)
}

/// `http://` is assumed when the URL names no scheme.
fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

fn connect(url: &str, request_timeout: Duration) -> Result<Client<HttpTransport>, Failure> {
    let config = ClientConfig {
        request_timeout,
        ..ClientConfig::default()
    };
    Client::http(url, &config).map_err(|err| client_failure(url, err))
}

fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|err| Failure::local(format!("cannot print the answer as JSON: {err}")))?;
    println!("{text}");
    Ok(())
}

fn bytes_arg(name: &str, hex: Option<&str>, text: Option<&str>) -> Result<Vec<u8>, Failure> {
    match (hex, text) {
        (Some(hex), _) => mesh_ledger::bytes::parse_hex(hex)
            .map_err(|err| Failure::local(format!("--{name}-hex {hex:?}: {err}"))),
        (None, Some(text)) => Ok(text.as_bytes().to_vec()),
        (None, None) => Ok(Vec::new()),
    }
}

impl DataKey {
    fn bytes(&self) -> Result<Vec<u8>, Failure> {
        bytes_arg("key", self.key_hex.as_deref(), self.key_str.as_deref())
    }
}

impl DataValue {
    fn bytes(&self) -> Result<Vec<u8>, Failure> {
        bytes_arg(
            "value",
            self.value_hex.as_deref(),
            self.value_str.as_deref(),
        )
    }
}

impl Prefix {
    fn bytes(&self) -> Result<Vec<u8>, Failure> {
        bytes_arg(
            "prefix",
            self.prefix_hex.as_deref(),
            self.prefix_str.as_deref(),
        )
    }
}

/// Bytes shown as text when they are printable UTF-8, as hex otherwise (and always as hex).
fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.is_empty() && !text.chars().any(char::is_control) => {
            format!("{} ({text:?})", to_hex(bytes))
        }
        _ => to_hex(bytes),
    }
}

fn show_failure(reason: &FailureReason) -> String {
    match reason.code() {
        Some(code) => format!("{reason} ({code})"),
        None => reason.to_string(),
    }
}

fn show_status(status: &TxStatus) -> String {
    match status {
        TxStatus::Pending => "pending (in the mempool)".into(),
        TxStatus::Final { height, index } => format!("final at height {height}, index {index}"),
        TxStatus::Dropped { detail } => format!("dropped: {detail}"),
        TxStatus::Unknown => "unknown to this node".into(),
    }
}

/// Prints a receipt; exit code 3 when the operation failed.
fn print_receipt(receipt: &Receipt) -> u8 {
    println!("transaction {}", receipt.tx_hash);
    println!(
        "  final at height {}, index {}, fee charged {}",
        receipt.height, receipt.index, receipt.fee_charged
    );
    match &receipt.status {
        ReceiptStatus::Success => {
            println!("  status success");
            0
        }
        ReceiptStatus::Failed { reason } => {
            println!("  status FAILED: {}", show_failure(reason));
            3
        }
    }
}

fn receipt_code(receipt: &Receipt) -> u8 {
    match receipt.status {
        ReceiptStatus::Success => 0,
        ReceiptStatus::Failed { .. } => 3,
    }
}

// ---------------------------------------------------------------------------------------------
// Transactions

/// What a send produced.
enum Sent {
    Hash(TxHash),
    Receipt(Receipt),
}

async fn tx(connection: Connection, command: TxCommand) -> Result<u8, Failure> {
    let (sending, op) = match command {
        TxCommand::Transfer {
            sending,
            to,
            amount,
        } => (sending, Op::Transfer { to, amount }),
        TxCommand::Put {
            sending,
            key,
            value,
        } => {
            let op = Op::Put {
                key: key.bytes()?,
                value: value.bytes()?,
            };
            (sending, op)
        }
        TxCommand::Delete { sending, key } => (sending, Op::Delete { key: key.bytes()? }),
        TxCommand::Bond {
            sending,
            validator,
            amount,
        } => (sending, Op::Bond { validator, amount }),
        TxCommand::Unbond {
            sending,
            validator,
            amount,
        } => (sending, Op::Unbond { validator, amount }),
    };
    let secret =
        keys::read_key(&sending.key_file).map_err(|err| Failure::local(err.to_string()))?;
    let sender = secret.address();
    let url = normalize_url(&connection.rpc);
    let timeout = if sending.wait {
        Duration::from_millis(sending.timeout_ms).saturating_add(Duration::from_secs(15))
    } else {
        CALL_TIMEOUT
    };
    let client = connect(&url, timeout)?;
    let failed = |err| client_failure(&url, err);

    let status = client.status().await.map_err(failed)?;
    let explicit_nonce = sending.nonce.is_some();
    let mut nonce = match sending.nonce {
        Some(nonce) => nonce,
        None => {
            client
                .account(&sender, ReadOptions::default())
                .await
                .map_err(failed)?
                .nonce
        }
    };
    let mut attempts = 0;
    let (signed, sent) = loop {
        attempts += 1;
        let signed: SignedTransaction = Transaction {
            chain_id: status.chain_id.clone(),
            sender,
            nonce,
            fee: sending.fee,
            op: op.clone(),
        }
        .sign(&secret);
        // A new transaction is meant: when these exact bytes are already known (an identical
        // send a moment ago), the nonce is taken — take the next one rather than be answered
        // with the earlier transaction's hash. With an explicit --nonce, resending is a retry.
        if !explicit_nonce && attempts < NONCE_ATTEMPTS {
            let known = client.transaction(&signed.hash()).await.map_err(failed)?;
            if known.status != TxStatus::Unknown {
                nonce = nonce.saturating_add(1);
                continue;
            }
        }
        let result = if sending.wait {
            client
                .send_transaction_and_wait(&signed, sending.timeout_ms)
                .await
                .map(Sent::Receipt)
        } else {
            client.send_transaction(&signed).await.map(Sent::Hash)
        };
        match result {
            // Our own earlier transactions hold this nonce: take the next one.
            Err(ClientError::Api(ApiError::NonceAlreadyPending { .. }))
                if !explicit_nonce && attempts < NONCE_ATTEMPTS =>
            {
                nonce = nonce.saturating_add(1);
            }
            // The account moved on since we read it.
            Err(ClientError::Api(ApiError::NonceTooLow { expected_nonce, .. }))
                if !explicit_nonce && expected_nonce > nonce && attempts < NONCE_ATTEMPTS =>
            {
                nonce = expected_nonce;
            }
            Err(err) => return Err(failed(err)),
            Ok(sent) => break (signed, sent),
        }
    };
    let hash = signed.hash();
    match sent {
        Sent::Hash(hash) => {
            if connection.json {
                print_json(&json!({
                    "hash": hash,
                    "sender": sender,
                    "nonce": nonce,
                    "fee": sending.fee,
                    "status": TxStatus::Pending,
                }))?;
            } else {
                println!("submitted {hash}");
                println!(
                    "  sender {sender}, nonce {nonce}, fee {}; pending (query it with `meshd query tx {hash}`)",
                    sending.fee
                );
            }
            Ok(0)
        }
        Sent::Receipt(receipt) => {
            if receipt.tx_hash != hash {
                return Err(Failure::local(format!(
                    "the node answered with the receipt of {} for {hash}",
                    receipt.tx_hash
                )));
            }
            if connection.json {
                print_json(&receipt)?;
                Ok(receipt_code(&receipt))
            } else {
                Ok(print_receipt(&receipt))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queries

fn trust_anchor(path: &Path) -> Result<TrustAnchor, Failure> {
    let shown = path.display();
    let genesis =
        Genesis::load(path).map_err(|err| Failure::local(format!("genesis {shown}: {err}")))?;
    TrustAnchor::from_genesis(&genesis)
        .map_err(|err| Failure::local(format!("genesis {shown}: {err}")))
}

fn parse_block_ref(text: &str) -> Result<BlockRef, Failure> {
    if text == "latest" {
        return Ok(BlockRef::Latest);
    }
    if let Ok(height) = text.parse::<u64>() {
        return Ok(BlockRef::Height(height));
    }
    if text.starts_with("0x") {
        return text
            .parse::<Hash>()
            .map(BlockRef::Hash)
            .map_err(|err| Failure::local(format!("block {text:?}: {err}")));
    }
    Err(Failure::local(format!(
        "block {text:?} is not `latest`, a height or a 0x block hash"
    )))
}

async fn query(connection: Connection, command: QueryCommand) -> Result<u8, Failure> {
    let url = normalize_url(&connection.rpc);
    let client = connect(&url, CALL_TIMEOUT)?;
    let failed = |err| client_failure(&url, err);
    let json = connection.json;
    match command {
        QueryCommand::Status => {
            let status = client.status().await.map_err(failed)?;
            if json {
                print_json(&status)?;
            } else {
                print_status(&status);
            }
        }
        QueryCommand::Account {
            address,
            height,
            verify_genesis,
        } => {
            let (info, verified) = match verify_genesis {
                Some(path) => {
                    let mut anchor = trust_anchor(&path)?;
                    let info = client
                        .verified_account(&mut anchor, &address, height)
                        .await
                        .map_err(failed)?;
                    (info, true)
                }
                None => {
                    let options = ReadOptions {
                        height,
                        prove: false,
                    };
                    (
                        client.account(&address, options).await.map_err(failed)?,
                        false,
                    )
                }
            };
            if json {
                print_json(&info)?;
            } else {
                print_account(&info, verified);
            }
        }
        QueryCommand::Value {
            owner,
            key,
            height,
            verify_genesis,
        } => {
            let key = key.bytes()?;
            let (info, verified) = match verify_genesis {
                Some(path) => {
                    let mut anchor = trust_anchor(&path)?;
                    let info = client
                        .verified_value(&mut anchor, &owner, &key, height)
                        .await
                        .map_err(failed)?;
                    (info, true)
                }
                None => {
                    let options = ReadOptions {
                        height,
                        prove: false,
                    };
                    let info = client.value(&owner, &key, options).await.map_err(failed)?;
                    (info, false)
                }
            };
            if json {
                print_json(&info)?;
            } else {
                print_value(&info, verified);
            }
        }
        QueryCommand::Keys {
            owner,
            prefix,
            cursor,
            limit,
        } => {
            let prefix = prefix.bytes()?;
            let cursor = cursor
                .map(|cursor| {
                    mesh_ledger::bytes::parse_hex(&cursor)
                        .map_err(|err| Failure::local(format!("--cursor {cursor:?}: {err}")))
                })
                .transpose()?;
            let page = client
                .list_keys(&owner, &prefix, cursor.as_deref(), limit)
                .await
                .map_err(failed)?;
            if json {
                print_json(&page)?;
            } else {
                print_keys(&page);
            }
        }
        QueryCommand::Block { block, full } => {
            let at = parse_block_ref(&block)?;
            let info = client.block(at, full).await.map_err(failed)?;
            if json {
                print_json(&info)?;
            } else {
                print_block(&info);
            }
        }
        QueryCommand::Tx { hash } => {
            let info = client.transaction(&hash).await.map_err(failed)?;
            let receipt = match info.status {
                TxStatus::Final { .. } => client.receipt(&hash).await.map_err(failed)?,
                _ => None,
            };
            if json {
                print_json(&json!({ "transaction": info, "receipt": receipt }))?;
            } else {
                print_tx(&info, receipt.as_ref());
            }
        }
    }
    Ok(0)
}

fn print_status(status: &NodeStatus) {
    println!("chain       {}", status.chain_id);
    println!("node id     {}", status.node_id);
    println!("version     {}", status.version);
    match (status.role, status.validator_address) {
        (NodeRole::Validator, Some(address)) => println!("role        validator {address}"),
        (NodeRole::Validator, None) => println!("role        validator"),
        (NodeRole::FullNode, _) => println!("role        full node"),
    }
    println!(
        "finalized   height {}, hash {}, time {} ms",
        status.finalized_height, status.finalized_hash, status.finalized_time_ms
    );
    println!("retained    from height {}", status.retained_from_height);
    println!("syncing     {}", if status.syncing { "yes" } else { "no" });
    println!("peers       {}", status.peer_count);
}

fn verified_line(verified: bool) {
    if verified {
        println!(
            "verified    yes: Merkle proof against the state root, certificate against the genesis validators"
        );
    }
}

fn print_account(info: &AccountInfo, verified: bool) {
    println!("address     {}", info.address);
    println!("height      {}", info.height);
    if !info.exists {
        println!("exists      no (never funded)");
    }
    println!("balance     {}", info.balance);
    println!("nonce       {}", info.nonce);
    verified_line(verified);
}

fn print_value(info: &ValueInfo, verified: bool) {
    println!("owner       {}", info.owner);
    println!("key         {}", show_bytes(&info.key.0));
    println!("height      {}", info.height);
    match &info.value {
        Some(value) => println!("value       {}", show_bytes(&value.0)),
        None => println!("value       (not set)"),
    }
    verified_line(verified);
}

fn print_keys(page: &KeysPage) {
    println!("owner       {}", page.owner);
    if page.entries.is_empty() {
        println!("(no keys)");
    }
    for entry in &page.entries {
        println!(
            "{} = {}",
            show_bytes(&entry.key.0),
            show_bytes(&entry.value.0)
        );
    }
    if let Some(cursor) = &page.next_cursor {
        println!("more: --cursor {}", to_hex(&cursor.0));
    }
}

fn print_block(info: &BlockInfo) {
    let header = &info.header;
    println!("height      {}", header.height);
    println!("hash        {}", info.hash);
    println!("parent      {}", header.parent_hash);
    println!("proposer    {}", header.proposer);
    println!("time        {} ms", header.timestamp_ms);
    println!("state root  {}", header.state_root);
    println!("txs         {}", header.tx_count);
    for hash in &info.tx_hashes {
        println!("  {hash}");
    }
    if let Some(txs) = &info.transactions {
        for tx in txs {
            println!("  {}", show_tx_body(tx));
        }
    }
}

fn show_op(op: &Op) -> String {
    match op {
        Op::Transfer { to, amount } => format!("transfer {amount} to {to}"),
        Op::Put { key, value } => format!("put {} = {}", show_bytes(key), show_bytes(value)),
        Op::Delete { key } => format!("delete {}", show_bytes(key)),
        Op::Bond { validator, amount } => format!("bond {amount} to {validator}"),
        Op::Unbond { validator, amount } => format!("unbond {amount} from {validator}"),
    }
}

fn show_tx_body(tx: &SignedTransaction) -> String {
    format!(
        "{} from {} nonce {} fee {}",
        show_op(&tx.tx.op),
        tx.tx.sender,
        tx.tx.nonce,
        tx.tx.fee
    )
}

fn print_tx(info: &TxInfo, receipt: Option<&Receipt>) {
    println!("hash        {}", info.hash);
    println!("status      {}", show_status(&info.status));
    if let Some(tx) = &info.transaction {
        println!("chain       {}", tx.tx.chain_id);
        println!("sender      {}", tx.tx.sender);
        println!("nonce       {}", tx.tx.nonce);
        println!("fee         {}", tx.tx.fee);
        println!("operation   {}", show_op(&tx.tx.op));
    }
    if let Some(receipt) = receipt {
        match &receipt.status {
            ReceiptStatus::Success => println!("result      success"),
            ReceiptStatus::Failed { reason } => {
                println!("result      FAILED: {}", show_failure(reason))
            }
        }
        println!("fee charged {}", receipt.fee_charged);
    }
}
