//! Transactions: what a client signs, its hash, and the stateless checks the mempool and block
//! validation share.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::crypto::{self, Address, CryptoError, Hash, SecretKey, Signature, SignedMessage};
use crate::encoding::{self, DecodeError};
use crate::genesis::Params;
use crate::limits::CHAIN_ID_BYTES_MAX;

/// The hash of a signed transaction: blake3 of its canonical signed bytes.
pub type TxHash = Hash;

/// One operation. The key-value namespace of each account is the shared repository: anyone
/// reads it, only its owner (the sender) writes it.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Moves `amount` from the sender to `to`.
    Transfer { to: Address, amount: u64 },
    /// Sets `key` to `value` in the sender's namespace.
    Put {
        #[serde(with = "hex_bytes")]
        key: Vec<u8>,
        #[serde(with = "hex_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key` from the sender's namespace.
    Delete {
        #[serde(with = "hex_bytes")]
        key: Vec<u8>,
    },
    /// Moves `amount` from the sender's balance into its bond to `validator`, adding that much
    /// voting power from the epoch after next (ADR 003 §2). A self-bond (`validator ==
    /// sender`) registers the key as a candidate; any other bond delegates to a candidate.
    Bond { validator: Address, amount: u64 },
    /// Takes `amount` out of the sender's bond to `validator`; it returns to the balance at the
    /// end of the next epoch, after the last block the old power can sign.
    Unbond { validator: Address, amount: u64 },
}

/// The unsigned body of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    pub chain_id: String,
    pub sender: Address,
    /// Must equal the sender's account nonce when executed; increments by one each time.
    pub nonce: u64,
    /// Paid to the block's proposer whether or not the operation succeeds.
    pub fee: u64,
    pub op: Op,
}

/// A transaction with its sender's signature: the unit clients submit and blocks carry.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTransaction {
    pub tx: Transaction,
    pub signature: Signature,
}

/// Why a transaction failed its stateless checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("transaction is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("wrong chain id: expected {expected:?}, got {got:?}")]
    WrongChain { expected: String, got: String },
    #[error("fee {fee} is below the minimum of {min}")]
    FeeTooLow { fee: u64, min: u64 },
    #[error("key is {len} bytes, outside 1..={max}")]
    KeySize { len: usize, max: usize },
    #[error("value is {len} bytes, more than the limit of {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("nonce is u64::MAX; the account can never advance past it")]
    NonceExhausted,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("sender is not a valid ed25519 public key")]
    InvalidSender,
    #[error("a bond or unbond of zero")]
    ZeroAmount,
    #[error("validator {validator} is not a valid ed25519 public key")]
    InvalidValidatorKey { validator: Address },
}

impl Transaction {
    /// Canonical bytes of the unsigned body.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// The bytes the sender signs: the `mesh/tx/v1` domain, the chain id, then the body.
    pub fn signing_bytes(&self) -> Vec<u8> {
        crypto::signing_bytes(crypto::TX_DOMAIN, &self.chain_id, &self.encode())
    }

    /// Signs this body. `key` should belong to `self.sender`; if not, verification fails later.
    pub fn sign(self, key: &SecretKey) -> SignedTransaction {
        let signature = key.sign(crypto::TX_DOMAIN, &self.chain_id, &self.encode());
        SignedTransaction {
            tx: self,
            signature,
        }
    }
}

impl SignedTransaction {
    /// Canonical signed bytes: what travels over the wire and what the hash covers.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes untrusted bytes, bounded by `max_len`, refusing trailing bytes.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<SignedTransaction, TxError> {
        if bytes.len() > max_len {
            return Err(TxError::TooLarge {
                len: bytes.len(),
                max: max_len,
            });
        }
        Ok(encoding::decode("transaction", bytes, max_len)?)
    }

    /// blake3 of the signed bytes.
    pub fn hash(&self) -> TxHash {
        Hash::of(&self.encode())
    }

    /// Length of the signed bytes.
    pub fn encoded_len(&self) -> usize {
        self.encode().len()
    }

    /// Checks everything that needs no state and no signature work: sizes, chain id, fee floor,
    /// nonce range. Cheap; run it before [`SignedTransaction::verify_signature`].
    pub fn check_stateless(&self, chain_id: &str, params: &Params) -> Result<(), TxError> {
        self.check_stateless_sized(self.encoded_len(), chain_id, params)
    }

    /// [`SignedTransaction::check_stateless`] for callers that already hold the encoded bytes
    /// (to hash them), so the hot paths encode each transaction once.
    pub fn check_stateless_sized(
        &self,
        len: usize,
        chain_id: &str,
        params: &Params,
    ) -> Result<(), TxError> {
        let max = params.tx_bytes_max as usize;
        if len > max {
            return Err(TxError::TooLarge { len, max });
        }
        let tx = &self.tx;
        if tx.chain_id != chain_id || tx.chain_id.len() > CHAIN_ID_BYTES_MAX {
            return Err(TxError::WrongChain {
                expected: chain_id.to_owned(),
                got: tx.chain_id.clone(),
            });
        }
        if tx.fee < params.fee_min {
            return Err(TxError::FeeTooLow {
                fee: tx.fee,
                min: params.fee_min,
            });
        }
        if tx.nonce == u64::MAX {
            return Err(TxError::NonceExhausted);
        }
        let key_max = params.key_bytes_max as usize;
        let check_key = |key: &[u8]| {
            if key.is_empty() || key.len() > key_max {
                Err(TxError::KeySize {
                    len: key.len(),
                    max: key_max,
                })
            } else {
                Ok(())
            }
        };
        match &tx.op {
            Op::Transfer { .. } => {}
            Op::Put { key, value } => {
                check_key(key)?;
                let value_max = params.value_bytes_max as usize;
                if value.len() > value_max {
                    return Err(TxError::ValueTooLarge {
                        len: value.len(),
                        max: value_max,
                    });
                }
            }
            Op::Delete { key } => check_key(key)?,
            Op::Bond { validator, amount } | Op::Unbond { validator, amount } => {
                if *amount == 0 {
                    return Err(TxError::ZeroAmount);
                }
                if validator.verifying_key().is_err() {
                    return Err(TxError::InvalidValidatorKey {
                        validator: *validator,
                    });
                }
            }
        }
        Ok(())
    }

    /// Verifies the sender's signature (one at a time; see [`verify_signatures`] for many).
    pub fn verify_signature(&self) -> Result<(), TxError> {
        let key = self
            .tx
            .sender
            .verifying_key()
            .map_err(|_| TxError::InvalidSender)?;
        crypto::verify_with_key(&key, &self.tx.signing_bytes(), &self.signature)
            .map_err(|_| TxError::InvalidSignature)
    }
}

/// Verifies the signatures of many transactions with one batch. On failure names the index of
/// the first bad transaction (in iteration order).
pub fn verify_signatures<'a>(
    txs: impl IntoIterator<Item = &'a SignedTransaction>,
) -> Result<(), (usize, TxError)> {
    let txs: Vec<&SignedTransaction> = txs.into_iter().collect();
    let messages: Vec<Vec<u8>> = txs.iter().map(|stx| stx.tx.signing_bytes()).collect();
    let items: Vec<SignedMessage<'_>> = txs
        .iter()
        .zip(&messages)
        .map(|(stx, message)| SignedMessage {
            signer: &stx.tx.sender,
            message,
            signature: &stx.signature,
        })
        .collect();
    crypto::verify_batch(&items).map_err(|err| match err {
        CryptoError::InvalidSignatureAt { index } => {
            let reason = match txs[index].tx.sender.verifying_key() {
                Ok(_) => TxError::InvalidSignature,
                Err(_) => TxError::InvalidSender,
            };
            (index, reason)
        }
        _ => (0, TxError::InvalidSignature),
    })
}

/// `0x`-hex serde for byte vectors in JSON.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&crate::bytes::to_hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        crate::bytes::parse_hex(&text).map_err(serde::de::Error::custom)
    }
}
