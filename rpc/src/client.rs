//! The typed Rust client: one method per API method, errors decoded back into [`ApiError`],
//! and verified reads that trust no single node.

use std::time::Duration;

use jsonrpsee_core::client::{ClientT, Error as RpcClientError, Subscription, SubscriptionClientT};
use jsonrpsee_core::params::BatchRequestBuilder;
use jsonrpsee_core::traits::ToRpcParams;
use mesh_ledger::{Address, Receipt, SignedTransaction, TxHash};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::backend::BlockRef;
use crate::error::ApiError;
use crate::types::{
    AccountEvent, AccountInfo, BlockEvent, BlockInfo, EpochProof, EpochStatus, FinalityRecordJson,
    HexBytes, KeysPage, MempoolStats, MethodList, NodeStatus, PeerInfo, ReadOptions,
    SubscribeBlocksOptions, TxEvent, TxInfo, ValidatorsInfo, ValueInfo,
};
use crate::verify::{self, TrustAnchor, VerifyError};

/// The HTTP transport (no subscriptions).
pub type HttpTransport = jsonrpsee_http_client::HttpClient;
/// The WebSocket transport (calls and subscriptions).
pub type WsTransport = jsonrpsee_ws_client::WsClient;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node refused the call with one of the API's errors (`docs/rpc.md`).
    #[error("{0}")]
    Api(ApiError),
    /// Another JSON-RPC error (transport limits such as an oversized request or too many
    /// subscriptions, or a node speaking another API version).
    #[error("JSON-RPC error {code}: {message}")]
    Rpc {
        /// Its code.
        code: i32,
        /// Its message.
        message: String,
    },
    /// The connection failed, timed out, or the answer did not parse.
    #[error("transport: {0}")]
    Transport(String),
    /// A verified read's answer did not verify: the node lied or is broken.
    #[error("verification failed: {0}")]
    Verify(#[from] VerifyError),
}

impl From<RpcClientError> for ClientError {
    fn from(error: RpcClientError) -> ClientError {
        match error {
            RpcClientError::Call(object) => match ApiError::from_error_object(&object) {
                Some(api) => ClientError::Api(api),
                None => ClientError::Rpc {
                    code: object.code(),
                    message: object.message().to_owned(),
                },
            },
            other => ClientError::Transport(other.to_string()),
        }
    }
}

/// Positional parameters.
struct Positional(Vec<Value>);

impl ToRpcParams for Positional {
    fn to_rpc_params(self) -> Result<Option<Box<RawValue>>, serde_json::Error> {
        serde_json::value::to_raw_value(&self.0).map(Some)
    }
}

fn arg<T: Serialize>(value: &T) -> Result<Value, ClientError> {
    serde_json::to_value(value).map_err(|err| ClientError::Transport(err.to_string()))
}

/// What [`Client::send_transactions`] returns: one result per transaction, in order.
pub type SendBatch<'c> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Vec<Result<TxHash, ClientError>>, ClientError>>
            + Send
            + 'c,
    >,
>;

/// A client of one node over one transport: [`HttpTransport`] or [`WsTransport`].
#[derive(Debug)]
pub struct Client<C> {
    transport: C,
}

/// Bounds of a client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Longest wait for one answer. Default 60 s; raise it above the `timeout_ms` of
    /// `send_transaction_and_wait` calls.
    pub request_timeout: Duration,
    /// Largest request, bytes. Default 4 MiB.
    pub request_bytes_max: u32,
    /// Largest answer, bytes. Default 32 MiB.
    pub response_bytes_max: u32,
    /// Most HTTP requests in flight at once; more wait for a free slot. Each in-flight request
    /// holds a socket, and a node refuses sockets past its per-address cap
    /// (`connections_per_ip_max`, 64 on loopback) with `503`. Default 16, so a few clients on
    /// one host (a bench, a checker, a wallet) fit under a node's cap together.
    pub concurrent_requests_max: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(60),
            request_bytes_max: 4 << 20,
            response_bytes_max: 32 << 20,
            concurrent_requests_max: 16,
        }
    }
}

impl Client<HttpTransport> {
    /// A client over HTTP (`http://127.0.0.1:30401`).
    pub fn http(url: &str, config: &ClientConfig) -> Result<Self, ClientError> {
        let transport = jsonrpsee_http_client::HttpClientBuilder::default()
            .request_timeout(config.request_timeout)
            .max_request_size(config.request_bytes_max)
            .max_response_size(config.response_bytes_max)
            .max_concurrent_requests(config.concurrent_requests_max.max(1))
            .build(url)?;
        Ok(Client { transport })
    }
}

impl Client<WsTransport> {
    /// A client over WebSocket (`ws://127.0.0.1:30401`), which can also subscribe.
    pub async fn ws(url: &str, config: &ClientConfig) -> Result<Self, ClientError> {
        let transport = jsonrpsee_ws_client::WsClientBuilder::default()
            .request_timeout(config.request_timeout)
            .max_request_size(config.request_bytes_max)
            .max_response_size(config.response_bytes_max)
            .build(url)
            .await?;
        Ok(Client { transport })
    }
}

impl<C: ClientT + Sync> Client<C> {
    /// The underlying jsonrpsee client, for calls this type does not wrap.
    pub fn transport(&self) -> &C {
        &self.transport
    }

    async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        args: Vec<Value>,
    ) -> Result<R, ClientError> {
        Ok(self.transport.request(method, Positional(args)).await?)
    }

    /// `mesh_status`.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.call("mesh_status", vec![]).await
    }

    /// `mesh_sendTransaction`: the hash once the transaction is in the mempool.
    pub async fn send_transaction(&self, tx: &SignedTransaction) -> Result<TxHash, ClientError> {
        let hex = mesh_ledger::bytes::to_hex(&tx.encode());
        self.call("mesh_sendTransaction", vec![Value::String(hex)])
            .await
    }

    /// `mesh_sendTransaction` for each of `txs`, as one JSON-RPC batch: one HTTP request (or
    /// WebSocket message) instead of one per transaction. At most the node's `batch_len_max`
    /// calls (100 by default; a longer batch is refused whole). One result per transaction, in
    /// the order given; the outer error is the batch's own (transport, or the batch refused).
    ///
    /// The future is boxed: jsonrpsee's batch future is generic over a lifetime that the
    /// compiler cannot yet prove `Send` for inside `tokio::spawn` (rust-lang/rust#100013).
    pub fn send_transactions<'c>(&'c self, txs: &[SignedTransaction]) -> SendBatch<'c> {
        let mut batch: BatchRequestBuilder<'static> = BatchRequestBuilder::new();
        for tx in txs {
            let hex = mesh_ledger::bytes::to_hex(&tx.encode());
            if let Err(err) =
                batch.insert("mesh_sendTransaction", Positional(vec![Value::String(hex)]))
            {
                return Box::pin(std::future::ready(Err(ClientError::Transport(
                    err.to_string(),
                ))));
            }
        }
        let empty = txs.is_empty();
        Box::pin(async move {
            if empty {
                return Ok(Vec::new());
            }
            let response = self.transport.batch_request::<TxHash>(batch).await?;
            Ok(response
                .into_iter()
                .map(|entry| {
                    entry.map_err(|object| {
                        ClientError::from(RpcClientError::Call(object.into_owned()))
                    })
                })
                .collect())
        })
    }

    /// `mesh_sendTransactionAndWait`: the receipt once final.
    pub async fn send_transaction_and_wait(
        &self,
        tx: &SignedTransaction,
        timeout_ms: u64,
    ) -> Result<Receipt, ClientError> {
        let hex = mesh_ledger::bytes::to_hex(&tx.encode());
        self.call(
            "mesh_sendTransactionAndWait",
            vec![Value::String(hex), Value::from(timeout_ms)],
        )
        .await
    }

    /// `mesh_getTransaction`.
    pub async fn transaction(&self, hash: &TxHash) -> Result<TxInfo, ClientError> {
        self.call("mesh_getTransaction", vec![arg(hash)?]).await
    }

    /// `mesh_getReceipt`: `None` until the transaction is final.
    pub async fn receipt(&self, hash: &TxHash) -> Result<Option<Receipt>, ClientError> {
        self.call("mesh_getReceipt", vec![arg(hash)?]).await
    }

    /// `mesh_getBlock`.
    pub async fn block(&self, at: BlockRef, full_txs: bool) -> Result<BlockInfo, ClientError> {
        let at = match at {
            BlockRef::Latest => Value::from("latest"),
            BlockRef::Height(height) => Value::from(height),
            BlockRef::Hash(hash) => arg(&hash)?,
        };
        self.call("mesh_getBlock", vec![at, Value::Bool(full_txs)])
            .await
    }

    /// `mesh_getCertificate`: `None` for genesis.
    pub async fn certificate(
        &self,
        height: u64,
    ) -> Result<Option<FinalityRecordJson>, ClientError> {
        self.call("mesh_getCertificate", vec![Value::from(height)])
            .await
    }

    /// `mesh_getAccount`, unverified.
    pub async fn account(
        &self,
        address: &Address,
        options: ReadOptions,
    ) -> Result<AccountInfo, ClientError> {
        self.call("mesh_getAccount", vec![arg(address)?, arg(&options)?])
            .await
    }

    /// `mesh_getValue`, unverified.
    pub async fn value(
        &self,
        owner: &Address,
        key: &[u8],
        options: ReadOptions,
    ) -> Result<ValueInfo, ClientError> {
        let key = arg(&HexBytes(key.to_vec()))?;
        self.call("mesh_getValue", vec![arg(owner)?, key, arg(&options)?])
            .await
    }

    /// `mesh_getEpoch`: the epoch in progress and the pending set changes.
    pub async fn epoch(&self) -> Result<EpochStatus, ClientError> {
        self.call("mesh_getEpoch", Vec::new()).await
    }

    /// `mesh_getEpochProof`: up to `count` epoch changes from `from_epoch`.
    pub async fn epoch_proof(
        &self,
        from_epoch: u64,
        count: u64,
    ) -> Result<EpochProof, ClientError> {
        self.call(
            "mesh_getEpochProof",
            vec![Value::from(from_epoch), Value::from(count)],
        )
        .await
    }

    /// Advances `anchor` until it trusts the set of `epoch`, checking every epoch change on
    /// the way (each signed by the set before it). Fails if the node cannot prove one.
    pub async fn advance_anchor(
        &self,
        anchor: &mut TrustAnchor,
        epoch: u64,
    ) -> Result<(), ClientError> {
        while anchor.newest_epoch() < epoch {
            // The boundary of the newest trusted epoch proves the set after it.
            let from = anchor.newest_epoch();
            let wanted = (epoch - from).min(crate::EPOCH_CHANGES_MAX);
            let proof = self.epoch_proof(from, wanted).await?;
            if proof.changes.is_empty() {
                return Err(ClientError::Verify(VerifyError::UnknownEpoch {
                    epoch,
                    newest_trusted: from,
                }));
            }
            for change in &proof.changes {
                anchor.advance(change)?;
            }
        }
        Ok(())
    }

    /// Runs `check` against `anchor`; while it fails for want of an epoch's set, advances the
    /// anchor there (at most a few times: a header, its links and its certificate span at most
    /// two epochs).
    async fn verify_with(
        &self,
        anchor: &mut TrustAnchor,
        check: impl Fn(&TrustAnchor) -> Result<(), VerifyError>,
    ) -> Result<(), ClientError> {
        for _ in 0..3 {
            match check(anchor) {
                Err(VerifyError::UnknownEpoch { epoch, .. }) => {
                    self.advance_anchor(anchor, epoch).await?;
                }
                other => return Ok(other?),
            }
        }
        Ok(check(anchor)?)
    }

    /// `mesh_getAccount` with a proof, checked against `anchor`: the proof against the header's
    /// state root, the header against the trusted chain and the validator set in force at its
    /// height, and the finality certificate's signatures. The anchor is advanced through the
    /// epoch changes it needs (`mesh_getEpochProof`), each verified. `height` `None` reads the
    /// newest finalized state.
    pub async fn verified_account(
        &self,
        anchor: &mut TrustAnchor,
        address: &Address,
        height: Option<u64>,
    ) -> Result<AccountInfo, ClientError> {
        let info = self
            .account(
                address,
                ReadOptions {
                    height,
                    prove: true,
                },
            )
            .await?;
        self.verify_with(anchor, |anchor| {
            verify::verify_account(anchor, address, &info)
        })
        .await?;
        Ok(info)
    }

    /// `mesh_getValue` with a proof, checked like [`Client::verified_account`].
    pub async fn verified_value(
        &self,
        anchor: &mut TrustAnchor,
        owner: &Address,
        key: &[u8],
        height: Option<u64>,
    ) -> Result<ValueInfo, ClientError> {
        let info = self
            .value(
                owner,
                key,
                ReadOptions {
                    height,
                    prove: true,
                },
            )
            .await?;
        self.verify_with(anchor, |anchor| {
            verify::verify_value(anchor, owner, key, &info)
        })
        .await?;
        Ok(info)
    }

    /// `mesh_listKeys`: one page; pass the page's `next_cursor` for the next.
    pub async fn list_keys(
        &self,
        owner: &Address,
        prefix: &[u8],
        cursor: Option<&[u8]>,
        limit: Option<u32>,
    ) -> Result<KeysPage, ClientError> {
        let cursor = match cursor {
            Some(cursor) => arg(&HexBytes(cursor.to_vec()))?,
            None => Value::Null,
        };
        self.call(
            "mesh_listKeys",
            vec![
                arg(owner)?,
                arg(&HexBytes(prefix.to_vec()))?,
                cursor,
                limit.map_or(Value::Null, Value::from),
            ],
        )
        .await
    }

    /// `mesh_peers`.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, ClientError> {
        self.call("mesh_peers", vec![]).await
    }

    /// `mesh_validators`; `None` for the newest finalized height.
    pub async fn validators(&self, height: Option<u64>) -> Result<ValidatorsInfo, ClientError> {
        let height = height.map_or(Value::Null, Value::from);
        self.call("mesh_validators", vec![height]).await
    }

    /// `mesh_mempool`.
    pub async fn mempool(&self) -> Result<MempoolStats, ClientError> {
        self.call("mesh_mempool", vec![]).await
    }

    /// `rpc_methods`.
    pub async fn methods(&self) -> Result<MethodList, ClientError> {
        self.call("rpc_methods", vec![]).await
    }
}

impl<C: SubscriptionClientT + Sync> Client<C> {
    /// `mesh_subscribeBlocks`: finalized headers, replayed from `from_height` first when given.
    pub async fn subscribe_blocks(
        &self,
        from_height: Option<u64>,
    ) -> Result<Subscription<BlockEvent>, ClientError> {
        let options = arg(&SubscribeBlocksOptions { from_height })?;
        Ok(self
            .transport
            .subscribe(
                "mesh_subscribeBlocks",
                Positional(vec![options]),
                "mesh_unsubscribeBlocks",
            )
            .await?)
    }

    /// `mesh_subscribeTransaction`: status changes until final or dropped.
    pub async fn subscribe_transaction(
        &self,
        hash: &TxHash,
    ) -> Result<Subscription<TxEvent>, ClientError> {
        Ok(self
            .transport
            .subscribe(
                "mesh_subscribeTransaction",
                Positional(vec![arg(hash)?]),
                "mesh_unsubscribeTransaction",
            )
            .await?)
    }

    /// `mesh_subscribeAccount`: the account now, then after each block that changes it.
    pub async fn subscribe_account(
        &self,
        address: &Address,
    ) -> Result<Subscription<AccountEvent>, ClientError> {
        Ok(self
            .transport
            .subscribe(
                "mesh_subscribeAccount",
                Positional(vec![arg(address)?]),
                "mesh_unsubscribeAccount",
            )
            .await?)
    }
}
