//! Decoded validator public keys, kept for the life of the state machine.
//!
//! `mesh_ledger::crypto::verify` decompresses the public key on every call (about 5 µs, a fifth
//! of a verification); decoding each validator's key once saves that. The ledger does not name
//! the decoded key type publicly, so the keys live inside two closures.

use std::sync::Arc;

use mesh_ledger::crypto::{self, SignedMessage};
use mesh_ledger::{Signature, ValidatorSet};

type VerifyOne = dyn Fn(usize, &[u8], &Signature) -> bool + Send + Sync;
type VerifyMany = dyn Fn(&[SignedMessage<'_>], &[usize]) -> bool + Send + Sync;

/// Signature checks against the validator at a given index of the set.
pub(crate) struct KeyCache {
    verify_one: Box<VerifyOne>,
    verify_many: Box<VerifyMany>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache")
    }
}

impl KeyCache {
    pub(crate) fn new(validators: &ValidatorSet) -> KeyCache {
        // ValidatorSet::new refuses invalid keys, so every entry decodes; None stays safe.
        let keys: Arc<Vec<_>> = Arc::new(
            validators
                .validators()
                .iter()
                .map(|v| v.address.verifying_key().ok())
                .collect(),
        );
        let keys_for_one = Arc::clone(&keys);
        KeyCache {
            verify_one: Box::new(move |index, message, signature| {
                keys_for_one
                    .get(index)
                    .and_then(Option::as_ref)
                    .is_some_and(|key| crypto::verify_with_key(key, message, signature).is_ok())
            }),
            verify_many: Box::new(move |items, indices| {
                let mut batch_keys = Vec::with_capacity(indices.len());
                for index in indices {
                    match keys.get(*index).and_then(Option::as_ref) {
                        Some(key) => batch_keys.push(*key),
                        None => return false,
                    }
                }
                crypto::verify_batch_with_keys(items, &batch_keys).is_ok()
            }),
        }
    }

    /// Checks one signature by the validator at `index` over exact signing bytes.
    pub(crate) fn verify(&self, index: usize, message: &[u8], signature: &Signature) -> bool {
        (self.verify_one)(index, message, signature)
    }

    /// Checks several signatures at once; `indices[i]` is the validator of `items[i]`.
    pub(crate) fn verify_batch(&self, items: &[SignedMessage<'_>], indices: &[usize]) -> bool {
        (self.verify_many)(items, indices)
    }
}
