//! Hashing (blake3), keys and signatures (ed25519), and the domain-separated bytes every
//! signature covers.
//!
//! Validity of a signature is defined once, here: the public key is a canonical, non-weak
//! ed25519 point and the signature passes `verify_strict`. Batch verification is a faster way to
//! reach the same verdict for honestly made signatures; when a batch fails, each signature is
//! checked alone so the caller learns which one is bad.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::bytes::fixed_bytes;

fixed_bytes!(
    /// A blake3 digest.
    Hash,
    32
);
fixed_bytes!(
    /// An account or validator identity: an ed25519 public key (compressed point).
    Address,
    32
);
fixed_bytes!(
    /// An ed25519 signature.
    Signature,
    64
);

impl Hash {
    /// The all-zero hash: the parent of the genesis header.
    pub const ZERO: Hash = Hash([0; 32]);

    /// blake3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }
}

impl Address {
    /// The all-zero address; proposer of the genesis header. Not a valid public key.
    pub const ZERO: Address = Address([0; 32]);

    /// Decompresses the public key, refusing weak and non-canonical ones. Costs about 5 µs:
    /// callers on hot paths should cache it.
    pub fn verifying_key(&self) -> Result<VerifyingKey, CryptoError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| CryptoError::InvalidPublicKey)?;
        // Refuse small-order keys, and non-canonical encodings: one key must have exactly one
        // address, or two accounts could share a signer.
        if key.is_weak() || key.to_edwards().compress().to_bytes() != self.0 {
            return Err(CryptoError::InvalidPublicKey);
        }
        Ok(key)
    }
}

/// A domain-separation tag: every signed message begins with one, so a signature made for one
/// purpose (a transaction) can never be replayed as another (a vote).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Domain(pub &'static [u8]);

/// Tag of transaction signatures.
pub const TX_DOMAIN: Domain = Domain(b"mesh/tx/v1");

/// The bytes a signature covers: `tag ‖ 0x00 ‖ u32-le(len(chain_id)) ‖ chain_id ‖ payload`.
///
/// The tag never contains 0x00, so the separator makes the layout unambiguous; the chain id
/// stops a signature on one chain from being valid on another.
pub fn signing_bytes(domain: Domain, chain_id: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.0.len() + 5 + chain_id.len() + payload.len());
    out.extend_from_slice(domain.0);
    out.push(0);
    let chain_len = u32::try_from(chain_id.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&chain_len.to_le_bytes());
    out.extend_from_slice(chain_id.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// A private signing key. Key generation needs entropy and so lives outside this crate:
/// callers build keys from 32 random bytes.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Builds a key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed, for writing key files.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// This key's public address.
    pub fn address(&self) -> Address {
        Address(self.0.verifying_key().to_bytes())
    }

    /// Signs `payload` under `domain` and `chain_id` (see [`signing_bytes`]).
    pub fn sign(&self, domain: Domain, chain_id: &str, payload: &[u8]) -> Signature {
        Signature(
            self.0
                .sign(&signing_bytes(domain, chain_id, payload))
                .to_bytes(),
        )
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({:?})", self.address())
    }
}

impl Clone for SecretKey {
    fn clone(&self) -> Self {
        SecretKey::from_seed(self.seed())
    }
}

/// Why a signature or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("invalid public key")]
    InvalidPublicKey,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("invalid signature at index {index} of the batch")]
    InvalidSignatureAt { index: usize },
}

/// Verifies one signature over `signing_bytes(domain, chain_id, payload)`.
pub fn verify(
    signer: &Address,
    domain: Domain,
    chain_id: &str,
    payload: &[u8],
    signature: &Signature,
) -> Result<(), CryptoError> {
    let key = signer.verifying_key()?;
    verify_with_key(&key, &signing_bytes(domain, chain_id, payload), signature)
}

/// Verifies one signature over already assembled signing bytes with an already decoded key.
pub fn verify_with_key(
    key: &VerifyingKey,
    message: &[u8],
    signature: &Signature,
) -> Result<(), CryptoError> {
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(message, &signature)
        .map_err(|_| CryptoError::InvalidSignature)
}

/// One item of a batch: who signed, the exact signed bytes, and the signature.
#[derive(Debug, Clone)]
pub struct SignedMessage<'a> {
    pub signer: &'a Address,
    pub message: &'a [u8],
    pub signature: &'a Signature,
}

/// Verifies many signatures at once (≈ half the cost of one by one). On failure reports the
/// first bad item. Deterministic: the same items always give the same verdict.
pub fn verify_batch(items: &[SignedMessage<'_>]) -> Result<(), CryptoError> {
    let mut keys = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        keys.push(
            item.signer
                .verifying_key()
                .map_err(|_| CryptoError::InvalidSignatureAt { index })?,
        );
    }
    verify_batch_with_keys(items, &keys)
}

/// [`verify_batch`] with public keys already decoded (`keys[i]` belongs to `items[i]`).
pub fn verify_batch_with_keys(
    items: &[SignedMessage<'_>],
    keys: &[VerifyingKey],
) -> Result<(), CryptoError> {
    if items.len() != keys.len() {
        return Err(CryptoError::InvalidSignature);
    }
    match items.len() {
        0 => return Ok(()),
        1 => {
            return verify_with_key(&keys[0], items[0].message, items[0].signature)
                .map_err(|_| CryptoError::InvalidSignatureAt { index: 0 })
        }
        _ => {}
    }
    let messages: Vec<&[u8]> = items.iter().map(|item| item.message).collect();
    let signatures: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|item| ed25519_dalek::Signature::from_bytes(&item.signature.0))
        .collect();
    let batch_ok = ed25519_dalek::verify_batch(&messages, &signatures, keys).is_ok();
    // Individual checks run when the batch fails (to name the culprit) and, to keep one
    // definition of validity, whenever the batch passed but strict rules could still differ:
    // strict verification rejects small-order R, which batch verification does not.
    for (index, item) in items.iter().enumerate() {
        let small_order_r = !batch_ok || signature_r_is_small_order(item.signature);
        if small_order_r {
            verify_with_key(&keys[index], item.message, item.signature)
                .map_err(|_| CryptoError::InvalidSignatureAt { index })?;
        }
    }
    if batch_ok {
        Ok(())
    } else {
        // Every signature passed alone but the batch failed: refuse rather than disagree with
        // peers whose batches are split differently.
        Err(CryptoError::InvalidSignature)
    }
}

/// True when the R half of the signature decodes to a point of small order (or does not
/// decode): such signatures pass batch equations but fail `verify_strict`.
fn signature_r_is_small_order(signature: &Signature) -> bool {
    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&signature.0[..32]);
    match VerifyingKey::from_bytes(&r_bytes) {
        Ok(point) => point.is_weak(),
        Err(_) => true,
    }
}
