//! The error table: every way a call can fail, its JSON-RPC code and its machine-readable
//! `data` object.
//!
//! Malformed requests use the JSON-RPC standard codes (`-32700` parse error, `-32600` invalid
//! request, `-32601` method not found, `-32602` invalid params, `-32603` internal error).
//! Domain errors use our own range, `1000..=1999`, grouped by hundreds: `10xx` transaction
//! rejections, `11xx` reads, `12xx` waiting and subscriptions. The `data` object of every
//! error we raise is the serde form of [`ApiError`]: a `reason` string naming the variant plus
//! its fields (`{"reason":"nonce_too_low","expected_nonce":5,"got":3}`), so a client can match
//! on `reason` and never parses the message.

use jsonrpsee_types::{ErrorObject, ErrorObjectOwned};
use mesh_ledger::tx::TxError;
use mesh_ledger::{Address, FailureReason, Hash, TxHash};
use serde::{Deserialize, Serialize};

use crate::types::TxStatus;

/// JSON-RPC: invalid JSON was received.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC: the JSON is not a valid request object.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC: the method does not exist.
pub const METHOD_NOT_FOUND: i32 = -32601;
/// JSON-RPC: invalid method parameters (wrong type, bad hex, undecodable transaction…).
pub const INVALID_PARAMS: i32 = -32602;
/// JSON-RPC: internal error of the node.
pub const INTERNAL_ERROR: i32 = -32603;

/// jsonrpsee: too many subscriptions on this connection
/// (`RpcServerConfig::subscriptions_per_connection_max`).
pub const TOO_MANY_SUBSCRIPTIONS: i32 = jsonrpsee_types::error::TOO_MANY_SUBSCRIPTIONS_CODE;
/// jsonrpsee: a WebSocket message over `request_body_bytes_max` (HTTP answers status 413).
pub const OVERSIZED_REQUEST: i32 = jsonrpsee_types::error::OVERSIZED_REQUEST_CODE;
/// jsonrpsee: the answer would exceed `response_body_bytes_max`.
pub const OVERSIZED_RESPONSE: i32 = jsonrpsee_types::error::OVERSIZED_RESPONSE_CODE;
/// jsonrpsee: a batch longer than `batch_len_max` (refused whole).
pub const TOO_BIG_BATCH: i32 = jsonrpsee_types::error::TOO_BIG_BATCH_REQUEST_CODE;
/// jsonrpsee: a batch whose answers together exceed `response_body_bytes_max`.
pub const TOO_BIG_BATCH_RESPONSE: i32 = jsonrpsee_types::error::TOO_BIG_BATCH_RESPONSE_CODE;

/// The transaction's signature (or its sender's public key) is invalid.
pub const INVALID_SIGNATURE: i32 = 1001;
/// The transaction names another chain.
pub const WRONG_CHAIN: i32 = 1002;
/// The nonce was already used by the sender.
pub const NONCE_TOO_LOW: i32 = 1003;
/// The nonce is further ahead of the sender's than the mempool holds.
pub const NONCE_TOO_HIGH: i32 = 1004;
/// Another transaction with this nonce is pending; replace it only with a higher fee.
pub const NONCE_ALREADY_PENDING: i32 = 1005;
/// The sender's balance does not cover the fee.
pub const INSUFFICIENT_BALANCE: i32 = 1006;
/// The fee is below the chain's minimum.
pub const FEE_TOO_LOW: i32 = 1007;
/// The transaction, or a key or value in it, is too large.
pub const TOO_LARGE: i32 = 1008;
/// Another field of the transaction is invalid (empty key, exhausted nonce).
pub const INVALID_TRANSACTION: i32 = 1009;
/// The mempool is full and the fee does not beat the cheapest pending transaction.
pub const MEMPOOL_FULL: i32 = 1010;
/// The transaction was dropped from the mempool before it became final.
pub const TRANSACTION_DROPPED: i32 = 1011;
/// No finalized block has this height or hash.
pub const UNKNOWN_BLOCK: i32 = 1101;
/// The height is outside the range the node retains (or above its finalized height).
pub const HEIGHT_NOT_RETAINED: i32 = 1102;
/// The request's range or page is larger than the server allows.
pub const RANGE_TOO_LARGE: i32 = 1103;
/// `mesh_sendTransactionAndWait` ran out of time; `data.status` is the current status.
pub const TIMEOUT: i32 = 1201;
/// The node cannot serve the request now (starting, shutting down, catching up).
pub const UNAVAILABLE: i32 = 1202;
/// A bound of the server is reached (calls running on this connection, transactions waiting
/// for admission, storage reads waiting, connections); `data.what` names it. Retry later, or
/// send fewer requests at once.
pub const BUSY: i32 = 1203;

/// A delegation or unbond names a key that is not a candidate.
pub const UNKNOWN_VALIDATOR: i32 = 1301;
/// A registration below `min_bond`, or an unbond leaving a total in `(0, min_bond)`.
pub const BELOW_MINIMUM_BOND: i32 = 1302;
/// A registration while the stake table is full.
pub const VALIDATOR_SET_FULL: i32 = 1303;
/// Unbonding more than the sender bonded to that key.
pub const INSUFFICIENT_BOND: i32 = 1304;
/// The unbond would leave the next cut empty.
pub const WOULD_EMPTY_SET: i32 = 1305;
/// The unbond would leave fewer than `min_validators` in the cut.
pub const BELOW_SAFE_SIZE: i32 = 1306;
/// The unbonding queue of the release epoch is full.
pub const UNBONDING_QUEUE_FULL: i32 = 1307;

/// Every error the API raises itself (jsonrpsee raises the transport-level ones: parse error,
/// invalid request, method not found, oversized body or batch, too many subscriptions).
///
/// The node's [`crate::Backend`] answers with these too, so the mapping from its own errors
/// (mempool, storage) to wire codes happens in the node, against this one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiError {
    /// A parameter is missing, has the wrong type, is not valid hex, or does not decode.
    #[error("invalid parameter `{param}`: {detail}")]
    InvalidParams {
        /// Name of the parameter, as in `docs/rpc.md`.
        param: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The signature does not verify, or the sender is not a valid public key.
    #[error("invalid signature")]
    InvalidSignature,
    /// The transaction's chain id is not this chain's.
    #[error("wrong chain id: expected {expected:?}, got {got:?}")]
    WrongChain {
        /// This node's chain id.
        expected: String,
        /// The transaction's.
        got: String,
    },
    /// The nonce was already used.
    #[error("nonce {got} is too low: the account expects {expected_nonce}")]
    NonceTooLow {
        /// The nonce the sender's next transaction must carry.
        expected_nonce: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The nonce is too far ahead of the sender's.
    #[error("nonce {got} is too far ahead: the account expects {expected_nonce}, the pool holds up to {max_nonce}")]
    NonceTooHigh {
        /// The nonce the sender's next transaction must carry.
        expected_nonce: u64,
        /// The transaction's nonce.
        got: u64,
        /// The highest nonce the mempool accepts now.
        max_nonce: u64,
    },
    /// Another transaction with this nonce from this sender is pending.
    #[error("a transaction with nonce {nonce} is already pending with fee {pending_fee}")]
    NonceAlreadyPending {
        /// The contested nonce.
        nonce: u64,
        /// Fee of the pending transaction; a replacement must pay more.
        pending_fee: u64,
    },
    /// The balance does not cover the fee.
    #[error("insufficient balance: balance {balance}, fee {fee}")]
    InsufficientBalance {
        /// The sender's balance.
        balance: u64,
        /// The fee offered.
        fee: u64,
    },
    /// The fee is below the chain's minimum.
    #[error("fee {fee} is below the minimum of {fee_min}")]
    FeeTooLow {
        /// The fee offered.
        fee: u64,
        /// The chain's minimum.
        fee_min: u64,
    },
    /// The transaction, its key or its value is over a limit.
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// `transaction`, `key` or `value`.
        what: String,
        /// Its size in bytes.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Another field is invalid.
    #[error("invalid transaction: {detail}")]
    InvalidTransaction {
        /// What is wrong.
        detail: String,
    },
    /// The mempool is full.
    #[error("mempool is full: fee {fee} does not beat the lowest pending fee {lowest_fee}")]
    MempoolFull {
        /// The fee offered.
        fee: u64,
        /// The lowest fee pending; pay more to evict it.
        lowest_fee: u64,
    },
    /// The transaction left the mempool without becoming final.
    #[error("transaction {hash} was dropped: {detail}")]
    TransactionDropped {
        /// Its hash.
        hash: TxHash,
        /// Why (replaced, evicted, invalidated by a newer block).
        detail: String,
    },
    /// No finalized block matches.
    #[error("unknown block {block}")]
    UnknownBlock {
        /// The height or hash asked for, as given.
        block: String,
    },
    /// The height is not retained, or not finalized yet.
    #[error("height {height} is not retained (retained: {oldest}..={newest})")]
    HeightNotRetained {
        /// The height asked for.
        height: u64,
        /// Oldest height the node serves.
        oldest: u64,
        /// Newest finalized height.
        newest: u64,
    },
    /// A range, page or replay is larger than the server allows.
    #[error("{what} of {requested} exceeds the limit of {max}")]
    RangeTooLarge {
        /// What was too large (`limit`, `replay`).
        what: String,
        /// What was asked for.
        requested: u64,
        /// The limit.
        max: u64,
    },
    /// Waiting for a transaction timed out.
    #[error("timed out after {timeout_ms} ms waiting for transaction {hash}")]
    Timeout {
        /// The transaction.
        hash: TxHash,
        /// How long the server waited.
        timeout_ms: u64,
        /// Its status when the wait ended.
        status: TxStatus,
    },
    /// The node cannot serve this now.
    #[error("node unavailable: {detail}")]
    Unavailable {
        /// Why.
        detail: String,
    },
    /// A bound of the server is reached; nothing was done. Retry later or send fewer at once.
    #[error("server busy: {what} is at its limit of {limit}")]
    Busy {
        /// Which bound: `calls_per_connection`, `call_rate` (calls per second of the client's
        /// address; `limit` is the rate), `admission_queue`, `storage_queue`.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// The staking operation names a key that is not a candidate.
    #[error("validator {validator} is not a candidate")]
    UnknownValidator {
        /// The key named.
        validator: Address,
    },
    /// The candidate's total bond would be in `(0, min_bond)`.
    #[error("a candidate's total bond of {bonded} would be below the minimum of {min_bond}")]
    BelowMinimumBond {
        /// The total it would have.
        bonded: u64,
        /// The chain's `min_bond`.
        min_bond: u64,
    },
    /// The stake table is full.
    #[error("the stake table is full ({candidates_max} candidates)")]
    ValidatorSetFull {
        /// Most candidates the table holds.
        candidates_max: u64,
    },
    /// Unbonding more than the sender bonded to that key.
    #[error("unbonding {requested} but only {bonded} is bonded by the sender")]
    InsufficientBond {
        /// What the sender has bonded to the key.
        bonded: u64,
        /// What it asked to unbond.
        requested: u64,
    },
    /// The unbond would leave the next cut empty.
    #[error("the unbond would leave the validator set empty")]
    WouldEmptySet {},
    /// The unbond would leave fewer than `min_validators` in the next cut.
    #[error(
        "the unbond would leave {size} validators, fewer than the minimum of {min_validators}"
    )]
    BelowSafeSize {
        /// The cut's size after the unbond.
        size: u64,
        /// The chain's `min_validators`.
        min_validators: u64,
    },
    /// The unbonding queue of the release epoch is full.
    #[error("the unbonding queue released at the end of epoch {release_epoch} is full")]
    UnbondingQueueFull {
        /// The epoch whose end releases the queue.
        release_epoch: u64,
    },
    /// The node failed internally (storage error…). Reported, never hidden.
    #[error("internal error: {detail}")]
    Internal {
        /// What failed.
        detail: String,
    },
}

impl ApiError {
    /// The JSON-RPC error code of this error.
    pub fn code(&self) -> i32 {
        match self {
            ApiError::InvalidParams { .. } => INVALID_PARAMS,
            ApiError::InvalidSignature => INVALID_SIGNATURE,
            ApiError::WrongChain { .. } => WRONG_CHAIN,
            ApiError::NonceTooLow { .. } => NONCE_TOO_LOW,
            ApiError::NonceTooHigh { .. } => NONCE_TOO_HIGH,
            ApiError::NonceAlreadyPending { .. } => NONCE_ALREADY_PENDING,
            ApiError::InsufficientBalance { .. } => INSUFFICIENT_BALANCE,
            ApiError::FeeTooLow { .. } => FEE_TOO_LOW,
            ApiError::TooLarge { .. } => TOO_LARGE,
            ApiError::InvalidTransaction { .. } => INVALID_TRANSACTION,
            ApiError::MempoolFull { .. } => MEMPOOL_FULL,
            ApiError::TransactionDropped { .. } => TRANSACTION_DROPPED,
            ApiError::UnknownBlock { .. } => UNKNOWN_BLOCK,
            ApiError::HeightNotRetained { .. } => HEIGHT_NOT_RETAINED,
            ApiError::RangeTooLarge { .. } => RANGE_TOO_LARGE,
            ApiError::Timeout { .. } => TIMEOUT,
            ApiError::Unavailable { .. } => UNAVAILABLE,
            ApiError::Busy { .. } => BUSY,
            ApiError::UnknownValidator { .. } => UNKNOWN_VALIDATOR,
            ApiError::BelowMinimumBond { .. } => BELOW_MINIMUM_BOND,
            ApiError::ValidatorSetFull { .. } => VALIDATOR_SET_FULL,
            ApiError::InsufficientBond { .. } => INSUFFICIENT_BOND,
            ApiError::WouldEmptySet {} => WOULD_EMPTY_SET,
            ApiError::BelowSafeSize { .. } => BELOW_SAFE_SIZE,
            ApiError::UnbondingQueueFull { .. } => UNBONDING_QUEUE_FULL,
            ApiError::Internal { .. } => INTERNAL_ERROR,
        }
    }

    /// Shorthand for [`ApiError::InvalidParams`].
    pub fn invalid_param(param: &str, detail: impl std::fmt::Display) -> ApiError {
        ApiError::InvalidParams {
            param: param.to_owned(),
            detail: detail.to_string(),
        }
    }

    /// Shorthand for [`ApiError::Internal`].
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        ApiError::Internal {
            detail: detail.to_string(),
        }
    }

    /// Reads our error back from a JSON-RPC error object; `None` for codes we do not raise
    /// ourselves (jsonrpsee's transport errors) or a `data` object we do not recognise.
    pub fn from_error_object(error: &ErrorObject<'_>) -> Option<ApiError> {
        let data = error.data()?;
        let parsed: ApiError = serde_json::from_str(data.get()).ok()?;
        (parsed.code() == error.code()).then_some(parsed)
    }
}

impl From<ApiError> for ErrorObjectOwned {
    fn from(error: ApiError) -> ErrorObjectOwned {
        // Serialising a plain enum of strings and integers into a Value cannot fail; should it,
        // the error still goes out with its code and message.
        let data = serde_json::to_value(&error).ok();
        ErrorObject::owned(error.code(), error.to_string(), data)
    }
}

/// The stateless-check errors of the ledger, as the node would report them; the node maps its
/// mempool's other errors (nonce, balance, full) itself.
impl From<TxError> for ApiError {
    fn from(error: TxError) -> ApiError {
        match error {
            TxError::Decode(err) => ApiError::invalid_param("tx", err),
            TxError::TooLarge { len, max } => ApiError::TooLarge {
                what: "transaction".into(),
                len: len as u64,
                max: max as u64,
            },
            TxError::WrongChain { expected, got } => ApiError::WrongChain { expected, got },
            TxError::FeeTooLow { fee, min } => ApiError::FeeTooLow { fee, fee_min: min },
            TxError::KeySize { len, max } if len > max => ApiError::TooLarge {
                what: "key".into(),
                len: len as u64,
                max: max as u64,
            },
            TxError::KeySize { .. } => ApiError::InvalidTransaction {
                detail: "key is empty".into(),
            },
            TxError::ValueTooLarge { len, max } => ApiError::TooLarge {
                what: "value".into(),
                len: len as u64,
                max: max as u64,
            },
            TxError::NonceExhausted => ApiError::InvalidTransaction {
                detail: "nonce is u64::MAX".into(),
            },
            TxError::InvalidSignature | TxError::InvalidSender => ApiError::InvalidSignature,
            TxError::ZeroAmount => ApiError::InvalidTransaction {
                detail: "a bond or unbond of zero".into(),
            },
            TxError::InvalidValidatorKey { validator } => ApiError::InvalidTransaction {
                detail: format!("validator {validator} is not a valid ed25519 public key"),
            },
        }
    }
}

/// A staking operation the admission check refused, with the code its receipt reason has
/// (`FailureReason::code`). `fee` is the transaction's: a bond the balance cannot cover is
/// reported as `insufficient_balance` with `fee` counting the fee and the amount together.
pub fn staking_refusal(reason: FailureReason, fee: u64) -> ApiError {
    match reason {
        // `available` is what is left after the fee.
        FailureReason::InsufficientBalance { needed, available } => ApiError::InsufficientBalance {
            balance: available.saturating_add(fee),
            fee: fee.saturating_add(needed),
        },
        FailureReason::UnknownValidator { validator } => ApiError::UnknownValidator { validator },
        FailureReason::BelowMinimumBond { bonded, min_bond } => {
            ApiError::BelowMinimumBond { bonded, min_bond }
        }
        FailureReason::ValidatorSetFull { candidates_max } => {
            ApiError::ValidatorSetFull { candidates_max }
        }
        FailureReason::InsufficientBond { bonded, requested } => {
            ApiError::InsufficientBond { bonded, requested }
        }
        FailureReason::WouldEmptySet => ApiError::WouldEmptySet {},
        FailureReason::BelowSafeSize {
            size,
            min_validators,
        } => ApiError::BelowSafeSize {
            size,
            min_validators,
        },
        FailureReason::UnbondingQueueFull { release_epoch } => {
            ApiError::UnbondingQueueFull { release_epoch }
        }
        // Neither can come from a staking operation's check; reported, not hidden.
        other @ (FailureReason::BalanceOverflow | FailureReason::KeyNotFound) => {
            ApiError::InvalidTransaction {
                detail: other.to_string(),
            }
        }
    }
}

/// What a block was asked by, for error messages.
pub(crate) fn block_label(hash: Option<&Hash>, height: Option<u64>) -> String {
    match (hash, height) {
        (Some(hash), _) => hash.to_string(),
        (None, Some(height)) => height.to_string(),
        (None, None) => "latest".into(),
    }
}
