//! Every method: parameter parsing, composition of backend answers, result shapes.

use std::future::Future;
use std::sync::Arc;

use jsonrpsee_core::server::{
    PendingSubscriptionSink, RpcModule, SendTimeoutError, SubscriptionCloseResponse,
    SubscriptionMessage, SubscriptionSink,
};
use jsonrpsee_core::RegisterMethodError;
use jsonrpsee_types::{ErrorObjectOwned, Params};
use mesh_ledger::state::StateProof;
use mesh_ledger::{Address, Hash, Receipt, SignedTransaction, TxHash};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::backend::{Backend, BlockRef};
use crate::error::{block_label, ApiError};
use crate::server::{millis, RpcServerConfig};
use crate::types::{
    parse_hex_strict, AccountEvent, AccountInfo, BlockEvent, BlockInfo, CertificateJson,
    EpochChange, EpochProof, FinalityProof, FinalityRecordJson, HexBytes, KeyEntry, KeysPage,
    MethodList, NodeStatus, ProofBundle, ReadOptions, SubscribeBlocksOptions, TxEvent, TxInfo,
    TxStatus, ValidatorsInfo, ValueInfo,
};
use crate::verify::FINALITY_LINKS_MAX;

/// Most positional parameters any method takes; longer arrays are refused before parsing.
const PARAMS_MAX: usize = 4;

/// The state every method shares: the backend and the limits. Cheap to clone.
#[derive(Debug)]
pub struct Api<B> {
    backend: Arc<B>,
    config: Arc<RpcServerConfig>,
}

impl<B> Clone for Api<B> {
    fn clone(&self) -> Self {
        Api {
            backend: self.backend.clone(),
            config: self.config.clone(),
        }
    }
}

impl<B: Backend> Api<B> {
    /// The API over `backend` with `config`'s limits.
    pub fn new(backend: Arc<B>, config: RpcServerConfig) -> Api<B> {
        Api {
            backend,
            config: Arc::new(config),
        }
    }

    pub(crate) fn backend(&self) -> &B {
        &self.backend
    }

    pub(crate) fn config(&self) -> &RpcServerConfig {
        &self.config
    }
}

/// Positional parameters (`"params": [...]`). Object-form parameters are refused: one form,
/// documented, is easier to get right than two.
///
/// Each parameter is kept as its JSON text and deserialized into its typed value only when
/// asked for, after its length is checked where a limit applies: a params array is never
/// turned into a `serde_json::Value` tree (several times the size of its text), and an array
/// longer than the method takes is refused at the first extra element.
struct Args(Vec<Box<RawValue>>);

impl Args {
    fn parse(params: &Params<'_>, max: usize) -> Result<Args, ApiError> {
        let Some(text) = params.as_str() else {
            return Ok(Args(Vec::new()));
        };
        let max = max.min(PARAMS_MAX);
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let items = serde::de::Deserializer::deserialize_any(&mut deserializer, Positional { max })
            .map_err(|err| ApiError::invalid_param("params", err))?;
        match items {
            Ok(items) => Ok(Args(items)),
            Err(refusal) => Err(ApiError::invalid_param("params", refusal)),
        }
    }

    fn raw(&self, index: usize) -> Option<&RawValue> {
        self.0
            .get(index)
            .map(|raw| &**raw)
            .filter(|raw| raw.get() != "null")
    }

    /// The parameter at `index`; absent or `null` gives `None`.
    fn optional<T: DeserializeOwned>(
        &self,
        index: usize,
        name: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.raw(index) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|err| ApiError::invalid_param(name, err)),
        }
    }

    fn required<T: DeserializeOwned>(&self, index: usize, name: &str) -> Result<T, ApiError> {
        self.optional(index, name)?
            .ok_or_else(|| ApiError::invalid_param(name, "missing"))
    }

    /// The JSON text length of the parameter at `index` (0 when absent).
    fn text_len(&self, index: usize) -> usize {
        self.raw(index).map_or(0, |raw| raw.get().len())
    }

    /// A `0x`-hex parameter of at most `max` bytes.
    fn hex(&self, index: usize, name: &str, max: usize) -> Result<Option<Vec<u8>>, ApiError> {
        // Quotes and `0x` aside, two digits a byte: refuse before copying the text.
        if self.text_len(index).saturating_sub(4) / 2 > max {
            return Err(ApiError::invalid_param(
                name,
                format!("longer than {max} bytes; no key can be"),
            ));
        }
        let Some(text) = self.optional::<String>(index, name)? else {
            return Ok(None);
        };
        if text.len().saturating_sub(2) / 2 > max {
            return Err(ApiError::invalid_param(
                name,
                format!("longer than {max} bytes; no key can be"),
            ));
        }
        parse_hex_strict(&text)
            .map(Some)
            .map_err(|err| ApiError::invalid_param(name, err))
    }
}

/// Reads a params array element by element, as raw JSON texts, refusing more than `max`.
struct Positional {
    max: usize,
}

impl<'de> serde::de::Visitor<'de> for Positional {
    /// The parameters, or why they are refused.
    type Value = Result<Vec<Box<RawValue>>, String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of parameters")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        let mut count = 0usize;
        while count < self.max {
            match seq.next_element::<Box<RawValue>>()? {
                Some(item) => items.push(item),
                None => return Ok(Ok(items)),
            }
            count += 1;
        }
        // Past the limit: count the rest without keeping (or copying) any of it.
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            count += 1;
        }
        if count > self.max {
            return Ok(Err(format!(
                "{count} parameters, at most {} expected",
                self.max
            )));
        }
        Ok(Ok(items))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Ok(Vec::new()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Err("parameters must be a JSON array (positional)".into()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err("parameters must be a JSON array (positional)".into()))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err("parameters must be a JSON array (positional)".into()))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err("parameters must be a JSON array (positional)".into()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err("parameters must be a JSON array (positional)".into()))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err("parameters must be a JSON array (positional)".into()))
    }
}

/// Registers an async method whose handler takes the positional arguments.
fn add<B, T, F, Fut>(
    module: &mut RpcModule<Api<B>>,
    name: &'static str,
    params_max: usize,
    handler: F,
) -> Result<(), RegisterMethodError>
where
    B: Backend,
    T: Serialize + Clone + 'static,
    F: Fn(Api<B>, Args) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T, ApiError>> + Send,
{
    module.register_async_method(name, move |params, api, _extensions| {
        let handler = handler.clone();
        async move {
            let args = Args::parse(&params, params_max)?;
            handler(Api::clone(&api), args).await
        }
    })?;
    Ok(())
}

/// Builds the module with every method, `rpc_methods` included.
pub(crate) fn module<B: Backend>(api: Api<B>) -> Result<RpcModule<Api<B>>, RegisterMethodError> {
    let mut module = RpcModule::new(api);
    add(&mut module, "mesh_status", 0, |api, _| async move {
        api.backend().status().await
    })?;
    add(&mut module, "mesh_sendTransaction", 1, send_transaction)?;
    add(&mut module, "mesh_sendTransactionAndWait", 2, send_and_wait)?;
    add(&mut module, "mesh_getTransaction", 1, get_transaction)?;
    add(&mut module, "mesh_getReceipt", 1, get_receipt)?;
    add(&mut module, "mesh_getBlock", 2, get_block)?;
    add(&mut module, "mesh_getCertificate", 1, get_certificate)?;
    add(&mut module, "mesh_getAccount", 2, get_account)?;
    add(&mut module, "mesh_getValue", 3, get_value)?;
    add(&mut module, "mesh_listKeys", 4, list_keys)?;
    add(&mut module, "mesh_peers", 0, |api, _| async move {
        api.backend().peers().await
    })?;
    add(&mut module, "mesh_validators", 1, validators)?;
    add(&mut module, "mesh_getEpochProof", 2, epoch_proof)?;
    add(&mut module, "mesh_getEpoch", 0, |api, _| async move {
        api.backend().epoch_status().await
    })?;
    add(&mut module, "mesh_mempool", 0, |api, _| async move {
        api.backend().mempool().await
    })?;
    module.register_subscription(
        "mesh_subscribeBlocks",
        "mesh_block",
        "mesh_unsubscribeBlocks",
        |params, pending, api, _| subscribe_blocks(Api::clone(&api), params, pending),
    )?;
    module.register_subscription(
        "mesh_subscribeTransaction",
        "mesh_transaction",
        "mesh_unsubscribeTransaction",
        |params, pending, api, _| subscribe_transaction(Api::clone(&api), params, pending),
    )?;
    module.register_subscription(
        "mesh_subscribeAccount",
        "mesh_account",
        "mesh_unsubscribeAccount",
        |params, pending, api, _| subscribe_account(Api::clone(&api), params, pending),
    )?;
    let mut names: Vec<String> = module
        .method_names()
        .map(str::to_owned)
        .chain(std::iter::once("rpc_methods".to_owned()))
        .collect();
    names.sort();
    let list = MethodList { methods: names };
    module.register_method("rpc_methods", move |_, _, _| {
        Ok::<MethodList, ApiError>(list.clone())
    })?;
    Ok(module)
}

// ---------------------------------------------------------------------------------------------
// Transactions

fn decode_tx(config: &RpcServerConfig, args: &Args) -> Result<SignedTransaction, ApiError> {
    let max = config.tx_bytes_max as usize;
    // Refuse by the JSON text's length (quotes and `0x` aside) before copying it.
    let digits = args.text_len(0).saturating_sub(4);
    if digits / 2 > max {
        return Err(ApiError::TooLarge {
            what: "transaction".into(),
            len: (digits / 2) as u64,
            max: max as u64,
        });
    }
    let text: String = args.required(0, "tx")?;
    // Refuse oversized hex before decoding it.
    let digits = text.len().saturating_sub(2);
    if digits / 2 > max {
        return Err(ApiError::TooLarge {
            what: "transaction".into(),
            len: (digits / 2) as u64,
            max: max as u64,
        });
    }
    let bytes = parse_hex_strict(&text).map_err(|err| ApiError::invalid_param("tx", err))?;
    SignedTransaction::decode(&bytes, max).map_err(|err| match err {
        mesh_ledger::tx::TxError::Decode(err) => {
            ApiError::invalid_param("tx", format!("not a signed transaction: {err}"))
        }
        other => ApiError::from(other),
    })
}

async fn send_transaction<B: Backend>(api: Api<B>, args: Args) -> Result<TxHash, ApiError> {
    let tx = decode_tx(api.config(), &args)?;
    api.backend().submit(tx).await
}

async fn send_and_wait<B: Backend>(api: Api<B>, args: Args) -> Result<Receipt, ApiError> {
    let tx = decode_tx(api.config(), &args)?;
    let config = api.config();
    let timeout_ms: u64 = args
        .optional(1, "timeout_ms")?
        .unwrap_or(config.wait_default_ms);
    if timeout_ms > config.wait_max_ms {
        return Err(ApiError::RangeTooLarge {
            what: "timeout_ms".into(),
            requested: timeout_ms,
            max: config.wait_max_ms,
        });
    }
    // Listen before submitting, so a block finalized in between is not missed.
    let mut finalized = api.backend().subscribe_finalized();
    let mut dropped = api.backend().subscribe_dropped();
    let hash = api.backend().submit(tx).await?;
    let deadline = tokio::time::Instant::now() + millis(timeout_ms);
    if let Some(receipt) = api.backend().receipt(hash).await? {
        return Ok(receipt);
    }
    loop {
        tokio::select! {
            event = finalized.recv() => match event {
                Ok(event) => {
                    if let Some(receipt) = event.receipts.iter().find(|r| r.tx_hash == hash) {
                        return Ok(receipt.clone());
                    }
                }
                // Fell behind the stream: the store is the truth, ask it.
                Err(RecvError::Lagged(_)) => {
                    if let Some(receipt) = api.backend().receipt(hash).await? {
                        return Ok(receipt);
                    }
                }
                Err(RecvError::Closed) => {
                    return Err(ApiError::Unavailable { detail: "node is shutting down".into() })
                }
            },
            Some(dropped) = next_dropped(&mut dropped) => {
                if dropped.hash == hash {
                    return Err(ApiError::TransactionDropped { hash, detail: dropped.detail.clone() });
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                let status = tx_status(&api, hash).await?;
                if let TxStatus::Final { .. } = status {
                    if let Some(receipt) = api.backend().receipt(hash).await? {
                        return Ok(receipt);
                    }
                }
                return Err(ApiError::Timeout { hash, timeout_ms, status });
            }
        }
    }
}

/// The next dropped transaction; pends forever when the node does not report drops (or the
/// stream ended or lagged — drops are advisory, the wait still ends by finality or timeout).
async fn next_dropped(
    receiver: &mut Option<tokio::sync::broadcast::Receiver<Arc<crate::backend::DroppedTx>>>,
) -> Option<Arc<crate::backend::DroppedTx>> {
    loop {
        match receiver.as_mut() {
            None => return std::future::pending().await,
            Some(rx) => match rx.recv().await {
                Ok(dropped) => return Some(dropped),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => *receiver = None,
            },
        }
    }
}

async fn tx_status<B: Backend>(api: &Api<B>, hash: TxHash) -> Result<TxStatus, ApiError> {
    Ok(api
        .backend()
        .transaction(hash)
        .await?
        .map_or(TxStatus::Unknown, |lookup| lookup.status))
}

async fn get_transaction<B: Backend>(api: Api<B>, args: Args) -> Result<TxInfo, ApiError> {
    let hash: TxHash = args.required(0, "hash")?;
    Ok(match api.backend().transaction(hash).await? {
        Some(lookup) => TxInfo {
            hash,
            status: lookup.status,
            transaction: Some(lookup.transaction),
        },
        None => TxInfo {
            hash,
            status: TxStatus::Unknown,
            transaction: None,
        },
    })
}

async fn get_receipt<B: Backend>(api: Api<B>, args: Args) -> Result<Option<Receipt>, ApiError> {
    let hash: TxHash = args.required(0, "hash")?;
    api.backend().receipt(hash).await
}

// ---------------------------------------------------------------------------------------------
// Blocks

fn parse_block_ref(args: &Args) -> Result<BlockRef, ApiError> {
    // A hash in quotes is 68 characters; anything much longer is no block reference, and is
    // refused before it becomes a `Value`.
    if args.text_len(0) > 80 {
        return Err(ApiError::invalid_param(
            "block",
            "expected a height, \"latest\" or a 0x block hash",
        ));
    }
    let value: Value = args.optional(0, "block")?.unwrap_or(Value::Null);
    match &value {
        Value::Null => Ok(BlockRef::Latest),
        Value::Number(number) => number
            .as_u64()
            .map(BlockRef::Height)
            .ok_or_else(|| ApiError::invalid_param("block", "height must be a u64")),
        Value::String(text) if text == "latest" => Ok(BlockRef::Latest),
        Value::String(text) => text
            .parse::<Hash>()
            .ok()
            .filter(|_| text.starts_with("0x"))
            .map(BlockRef::Hash)
            .ok_or_else(|| {
                ApiError::invalid_param("block", "expected a height, \"latest\" or a 0x block hash")
            }),
        _ => Err(ApiError::invalid_param(
            "block",
            "expected a height, \"latest\" or a 0x block hash",
        )),
    }
}

async fn get_block<B: Backend>(api: Api<B>, args: Args) -> Result<BlockInfo, ApiError> {
    let at = parse_block_ref(&args)?;
    let full_txs: bool = args.optional(1, "full_txs")?.unwrap_or(false);
    let block = api.backend().block(at).await?.ok_or_else(|| {
        let label = match at {
            BlockRef::Latest => block_label(None, None),
            BlockRef::Height(height) => block_label(None, Some(height)),
            BlockRef::Hash(hash) => block_label(Some(&hash), None),
        };
        ApiError::UnknownBlock { block: label }
    })?;
    let tx_hashes = block.txs.iter().map(SignedTransaction::hash).collect();
    Ok(BlockInfo {
        hash: block.hash(),
        header: block.header,
        tx_hashes,
        transactions: full_txs.then_some(block.txs),
    })
}

async fn get_certificate<B: Backend>(
    api: Api<B>,
    args: Args,
) -> Result<Option<FinalityRecordJson>, ApiError> {
    let height: u64 = args.required(0, "height")?;
    let status = api.backend().status().await?;
    if height > status.finalized_height {
        return Err(ApiError::UnknownBlock {
            block: height.to_string(),
        });
    }
    Ok(api
        .backend()
        .finality(height)
        .await?
        .map(|record| FinalityRecordJson::new(height, &record)))
}

// ---------------------------------------------------------------------------------------------
// State

/// The height a read names: the one asked for, checked against what is retained and final,
/// or the newest finalized one.
fn resolve_height(status: &NodeStatus, asked: Option<u64>) -> Result<u64, ApiError> {
    let height = asked.unwrap_or(status.finalized_height);
    if height > status.finalized_height || height < status.retained_from_height {
        return Err(ApiError::HeightNotRetained {
            height,
            oldest: status.retained_from_height,
            newest: status.finalized_height,
        });
    }
    Ok(height)
}

/// Header, certificate and links for a proof at `height`.
async fn proof_bundle<B: Backend>(
    api: &Api<B>,
    height: u64,
    proof: &StateProof,
) -> Result<ProofBundle, ApiError> {
    let header = api
        .backend()
        .headers(height, height)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal(format!("no header stored at height {height}")))?;
    let finality = match api.backend().finality(height).await? {
        None => None,
        Some(record) => {
            let certified = record.certificate.subject.height.0;
            let links = match certified.checked_sub(height) {
                None => {
                    return Err(ApiError::internal(format!(
                        "certificate of height {height} is for the lower height {certified}"
                    )))
                }
                Some(0) => Vec::new(),
                Some(count) if count > FINALITY_LINKS_MAX as u64 => {
                    return Err(ApiError::internal(format!(
                        "certificate of height {height} is {count} blocks ahead"
                    )))
                }
                Some(_) => headers_range(api, height + 1, certified).await?,
            };
            Some(FinalityProof {
                certificate: (&record.certificate).into(),
                links,
            })
        }
    };
    Ok(ProofBundle {
        proof: HexBytes(proof.encode()),
        header,
        finality,
    })
}

/// Headers `from..=to`, read in chunks of `headers_per_read`.
async fn headers_range<B: Backend>(
    api: &Api<B>,
    from: u64,
    to: u64,
) -> Result<Vec<mesh_ledger::BlockHeader>, ApiError> {
    let mut out = Vec::new();
    let mut next = from;
    while next <= to {
        let last = next
            .saturating_add(api.config().headers_per_read - 1)
            .min(to);
        let chunk = api.backend().headers(next, last).await?;
        if chunk.len() as u64 != last - next + 1 {
            return Err(ApiError::internal(format!(
                "backend returned {} headers for {next}..={last}",
                chunk.len()
            )));
        }
        out.extend(chunk);
        next = last + 1;
    }
    Ok(out)
}

async fn get_account<B: Backend>(api: Api<B>, args: Args) -> Result<AccountInfo, ApiError> {
    let address: Address = args.required(0, "address")?;
    let options: ReadOptions = args.optional(1, "options")?.unwrap_or_default();
    let status = api.backend().status().await?;
    let height = resolve_height(&status, options.height)?;
    let read = api
        .backend()
        .account(address, height, options.prove)
        .await?;
    let proof = match (&read.proof, options.prove) {
        (Some(proof), true) => Some(proof_bundle(&api, height, proof).await?),
        (None, true) => return Err(ApiError::internal("backend returned no proof")),
        (_, false) => None,
    };
    let account = read.value.unwrap_or_default();
    Ok(AccountInfo {
        address,
        height,
        exists: read.value.is_some(),
        balance: account.balance,
        nonce: account.nonce,
        proof,
    })
}

async fn get_value<B: Backend>(api: Api<B>, args: Args) -> Result<ValueInfo, ApiError> {
    let owner: Address = args.required(0, "owner")?;
    let key = args
        .hex(1, "key", api.config().tx_bytes_max as usize)?
        .ok_or_else(|| ApiError::invalid_param("key", "missing"))?;
    let options: ReadOptions = args.optional(2, "options")?.unwrap_or_default();
    let status = api.backend().status().await?;
    let height = resolve_height(&status, options.height)?;
    let read = api
        .backend()
        .value(owner, key.clone(), height, options.prove)
        .await?;
    let proof = match (&read.proof, options.prove) {
        (Some(proof), true) => Some(proof_bundle(&api, height, proof).await?),
        (None, true) => return Err(ApiError::internal("backend returned no proof")),
        (_, false) => None,
    };
    Ok(ValueInfo {
        owner,
        key: HexBytes(key),
        height,
        value: read.value.map(HexBytes),
        proof,
    })
}

async fn list_keys<B: Backend>(api: Api<B>, args: Args) -> Result<KeysPage, ApiError> {
    let owner: Address = args.required(0, "owner")?;
    let config = api.config();
    // A key is part of a transaction, so none is longer than the largest transaction.
    let key_max = config.tx_bytes_max as usize;
    let prefix = args.hex(1, "prefix", key_max)?.unwrap_or_default();
    let cursor = args.hex(2, "cursor", key_max)?;
    let limit: u32 = args
        .optional(3, "limit")?
        .unwrap_or(config.list_keys_default);
    if limit == 0 || limit > config.list_keys_max {
        return Err(ApiError::RangeTooLarge {
            what: "limit".into(),
            requested: u64::from(limit),
            max: u64::from(config.list_keys_max),
        });
    }
    let limit = limit as usize;
    // One more than the page tells whether another page follows.
    let mut entries = api.backend().keys(owner, prefix, cursor, limit + 1).await?;
    let more = entries.len() > limit;
    entries.truncate(limit);
    let next_cursor = if more {
        entries.last().map(|(key, _)| HexBytes(key.clone()))
    } else {
        None
    };
    Ok(KeysPage {
        owner,
        entries: entries
            .into_iter()
            .map(|(key, value)| KeyEntry {
                key: HexBytes(key),
                value: HexBytes(value),
            })
            .collect(),
        next_cursor,
    })
}

async fn validators<B: Backend>(api: Api<B>, args: Args) -> Result<ValidatorsInfo, ApiError> {
    let asked: Option<u64> = args.optional(0, "height")?;
    let status = api.backend().status().await?;
    let height = resolve_height(&status, asked)?;
    let epoch = api.backend().validators(height).await?;
    Ok(ValidatorsInfo::new(height, &epoch))
}

/// Most epoch changes one `mesh_getEpochProof` answers.
pub const EPOCH_CHANGES_MAX: u64 = 64;

async fn epoch_proof<B: Backend>(api: Api<B>, args: Args) -> Result<EpochProof, ApiError> {
    let from: u64 = args.required(0, "from_epoch")?;
    let count: u64 = args.optional(1, "count")?.unwrap_or(EPOCH_CHANGES_MAX);
    if count == 0 || count > EPOCH_CHANGES_MAX {
        return Err(ApiError::RangeTooLarge {
            what: "count".into(),
            requested: count,
            max: EPOCH_CHANGES_MAX,
        });
    }
    let schedule = mesh_ledger::EpochSchedule::new(api.backend().epoch_blocks());
    let finalized = api.backend().status().await?.finalized_height;
    let mut changes = Vec::new();
    for epoch in from..from.saturating_add(count) {
        let last = schedule.last(epoch);
        if last > finalized || last == u64::MAX {
            break;
        }
        let boundary = headers_range(&api, last, last)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal(format!("no header stored at height {last}")))?;
        let record =
            api.backend().finality(last).await?.ok_or_else(|| {
                ApiError::internal(format!("no certificate stored at height {last}"))
            })?;
        // Epoch `e` certifies nothing above `last(e)` and `e + 1` starts only once it is final,
        // so the boundary's certificate is its own (maybe a re-proposal's view).
        let subject = record.certificate.subject;
        if subject.epoch.0 != epoch || subject.height.0 != last || subject.hash != boundary.hash() {
            return Err(ApiError::internal(format!(
                "the certificate stored for boundary height {last} is not over that block in epoch {epoch}"
            )));
        }
        let next = api.backend().validators(last.saturating_add(1)).await?;
        changes.push(EpochChange {
            epoch,
            boundary,
            certificate: CertificateJson::from(&record.certificate),
            next_validators: next.set.validators().to_vec(),
        });
    }
    Ok(EpochProof { changes })
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

/// How sending one notification went.
enum Sent {
    Delivered,
    /// The client went away: end quietly.
    Closed,
    /// The client did not take it in time.
    Slow,
}

async fn notify<T: Serialize>(
    sink: &SubscriptionSink,
    event: &T,
    config: &RpcServerConfig,
) -> Sent {
    let Ok(json) = serde_json::value::to_raw_value(event) else {
        return Sent::Closed;
    };
    match sink
        .send_timeout(
            SubscriptionMessage::from(json),
            millis(config.subscription_send_timeout_ms),
        )
        .await
    {
        Ok(()) => Sent::Delivered,
        Err(SendTimeoutError::Timeout(_)) => Sent::Slow,
        Err(SendTimeoutError::Closed(_)) => Sent::Closed,
    }
}

/// The last notification of a subscription that fell behind.
fn close_with<T: Serialize>(event: &T) -> SubscriptionCloseResponse {
    match serde_json::value::to_raw_value(event) {
        Ok(json) => SubscriptionCloseResponse::Notif(SubscriptionMessage::from(json)),
        Err(_) => SubscriptionCloseResponse::None,
    }
}

/// Parses a subscription's parameters; on failure rejects the subscription with the error.
async fn accept_with<T>(
    pending: PendingSubscriptionSink,
    parsed: Result<T, ApiError>,
) -> Option<(SubscriptionSink, T)> {
    match parsed {
        Err(err) => {
            pending.reject(ErrorObjectOwned::from(err)).await;
            None
        }
        Ok(value) => pending.accept().await.ok().map(|sink| (sink, value)),
    }
}

async fn subscribe_blocks<B: Backend>(
    api: Api<B>,
    params: Params<'static>,
    pending: PendingSubscriptionSink,
) -> SubscriptionCloseResponse {
    // Subscribe to the live stream before reading the tip: every block after the tip is then
    // in the stream, and `next` drops what the replay already sent — each block exactly once.
    let mut live = api.backend().subscribe_finalized();
    let setup = async {
        let args = Args::parse(&params, 1)?;
        let options: SubscribeBlocksOptions = args.optional(0, "options")?.unwrap_or_default();
        let status = api.backend().status().await?;
        let tip = status.finalized_height;
        let next = match options.from_height {
            None => tip.saturating_add(1),
            Some(from) => {
                if from < status.retained_from_height {
                    return Err(ApiError::HeightNotRetained {
                        height: from,
                        oldest: status.retained_from_height,
                        newest: tip,
                    });
                }
                let replay = tip.saturating_add(1).saturating_sub(from);
                if replay > api.config().replay_blocks_max {
                    return Err(ApiError::RangeTooLarge {
                        what: "replay".into(),
                        requested: replay,
                        max: api.config().replay_blocks_max,
                    });
                }
                from
            }
        };
        Ok((next, tip))
    };
    let parsed = setup.await;
    let Some((sink, (mut next, tip))) = accept_with(pending, parsed).await else {
        return SubscriptionCloseResponse::None;
    };
    let config = api.config();
    let lagged = |next| BlockEvent::Lagged {
        resume_from_height: next,
    };
    // Replay.
    while next <= tip {
        let last = next.saturating_add(config.headers_per_read - 1).min(tip);
        let Ok(headers) = api.backend().headers(next, last).await else {
            return close_with(&lagged(next));
        };
        for header in headers {
            if header.height != next {
                return close_with(&lagged(next));
            }
            match notify(&sink, &block_event(header), config).await {
                Sent::Delivered => next += 1,
                Sent::Closed => return SubscriptionCloseResponse::None,
                Sent::Slow => return close_with(&lagged(next)),
            }
        }
    }
    // Live.
    loop {
        let event = tokio::select! {
            () = sink.closed() => return SubscriptionCloseResponse::None,
            event = live.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => return close_with(&lagged(next)),
            Err(RecvError::Closed) => return SubscriptionCloseResponse::None,
        };
        let height = event.header.height;
        if height < next {
            continue;
        }
        // A gap means the stream skipped heights (it must not); fill it from storage.
        let mut headers = if height > next {
            match headers_range(&api, next, height - 1).await {
                Ok(headers) => headers,
                Err(_) => return close_with(&lagged(next)),
            }
        } else {
            Vec::new()
        };
        headers.push(event.header.clone());
        for header in headers {
            match notify(&sink, &block_event(header), config).await {
                Sent::Delivered => next += 1,
                Sent::Closed => return SubscriptionCloseResponse::None,
                Sent::Slow => return close_with(&lagged(next)),
            }
        }
    }
}

fn block_event(header: mesh_ledger::BlockHeader) -> BlockEvent {
    BlockEvent::Block {
        height: header.height,
        hash: header.hash(),
        header: Box::new(header),
    }
}

async fn subscribe_transaction<B: Backend>(
    api: Api<B>,
    params: Params<'static>,
    pending: PendingSubscriptionSink,
) -> SubscriptionCloseResponse {
    let mut live = api.backend().subscribe_finalized();
    let mut dropped = api.backend().subscribe_dropped();
    let parsed = Args::parse(&params, 1).and_then(|args| args.required::<TxHash>(0, "hash"));
    let Some((sink, hash)) = accept_with(pending, parsed).await else {
        return SubscriptionCloseResponse::None;
    };
    let config = api.config();
    let status_event = |status, receipt| TxEvent::Status {
        hash,
        status,
        receipt,
    };
    // The status now; then changes.
    let mut last = match tx_status(&api, hash).await {
        Ok(status) => status,
        Err(_) => TxStatus::Unknown,
    };
    let receipt = match last {
        TxStatus::Final { .. } => api.backend().receipt(hash).await.ok().flatten(),
        _ => None,
    };
    // Final and dropped are where a subscription ends, at its start as later.
    let done = matches!(last, TxStatus::Final { .. } | TxStatus::Dropped { .. });
    match notify(&sink, &status_event(last.clone(), receipt), config).await {
        Sent::Delivered if !done => {}
        Sent::Slow => return close_with(&TxEvent::Lagged { hash }),
        _ => return SubscriptionCloseResponse::None,
    }
    loop {
        let next = tokio::select! {
            () = sink.closed() => return SubscriptionCloseResponse::None,
            event = live.recv() => match event {
                Ok(event) => event
                    .receipts
                    .iter()
                    .find(|receipt| receipt.tx_hash == hash)
                    .map(|receipt| (TxStatus::Final { height: receipt.height, index: receipt.index }, Some(receipt.clone()))),
                // Behind the stream: the store knows.
                Err(RecvError::Lagged(_)) => match api.backend().receipt(hash).await {
                    Ok(Some(receipt)) => Some((TxStatus::Final { height: receipt.height, index: receipt.index }, Some(receipt))),
                    _ => None,
                },
                Err(RecvError::Closed) => return SubscriptionCloseResponse::None,
            },
            Some(event) = next_dropped(&mut dropped) => (event.hash == hash)
                .then(|| (TxStatus::Dropped { detail: event.detail.clone() }, None)),
        };
        let Some((status, receipt)) = next else {
            // A block without it: it may have entered the mempool meanwhile.
            if last == TxStatus::Unknown {
                if let Ok(TxStatus::Pending) = tx_status(&api, hash).await {
                    last = TxStatus::Pending;
                    match notify(&sink, &status_event(TxStatus::Pending, None), config).await {
                        Sent::Delivered => {}
                        Sent::Closed => return SubscriptionCloseResponse::None,
                        Sent::Slow => return close_with(&TxEvent::Lagged { hash }),
                    }
                }
            }
            continue;
        };
        return match notify(&sink, &status_event(status, receipt), config).await {
            Sent::Slow => close_with(&TxEvent::Lagged { hash }),
            _ => SubscriptionCloseResponse::None,
        };
    }
}

async fn subscribe_account<B: Backend>(
    api: Api<B>,
    params: Params<'static>,
    pending: PendingSubscriptionSink,
) -> SubscriptionCloseResponse {
    let mut live = api.backend().subscribe_finalized();
    let setup = async {
        let args = Args::parse(&params, 1)?;
        let address: Address = args.required(0, "address")?;
        let status = api.backend().status().await?;
        let height = status.finalized_height;
        let read = api.backend().account(address, height, false).await?;
        Ok((address, height, read.value))
    };
    let parsed = setup.await;
    let Some((sink, (address, height, account))) = accept_with(pending, parsed).await else {
        return SubscriptionCloseResponse::None;
    };
    let config = api.config();
    let event = |height, account: Option<mesh_ledger::Account>| {
        let value = account.unwrap_or_default();
        AccountEvent::Account {
            address,
            height,
            exists: account.is_some(),
            balance: value.balance,
            nonce: value.nonce,
        }
    };
    let mut next = height.saturating_add(1);
    match notify(&sink, &event(height, account), config).await {
        Sent::Delivered => {}
        Sent::Closed => return SubscriptionCloseResponse::None,
        Sent::Slow => {
            return close_with(&AccountEvent::Lagged {
                resume_from_height: next,
            })
        }
    }
    loop {
        let received = tokio::select! {
            () = sink.closed() => return SubscriptionCloseResponse::None,
            received = live.recv() => received,
        };
        let block = match received {
            Ok(block) => block,
            Err(RecvError::Lagged(_)) => {
                return close_with(&AccountEvent::Lagged {
                    resume_from_height: next,
                })
            }
            Err(RecvError::Closed) => return SubscriptionCloseResponse::None,
        };
        let height = block.header.height;
        if height < next {
            continue;
        }
        next = height.saturating_add(1);
        let Some((_, account)) = block
            .accounts
            .iter()
            .find(|(changed, _)| *changed == address)
        else {
            continue;
        };
        match notify(&sink, &event(height, *account), config).await {
            Sent::Delivered => {}
            Sent::Closed => return SubscriptionCloseResponse::None,
            Sent::Slow => {
                return close_with(&AccountEvent::Lagged {
                    resume_from_height: height,
                })
            }
        }
    }
}
