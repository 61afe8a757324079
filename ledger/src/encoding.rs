//! The canonical binary encoding (borsh) of everything hashed, signed or stored.
//!
//! Borsh is canonical by construction for the types we use (fixed-width little-endian integers,
//! length-prefixed vectors and strings, enum tags, no maps or floats), so one value has exactly
//! one encoding and hashes agree on every machine. See `docs/adr/001-encoding-and-state-tree.md`.

use borsh::{BorshDeserialize, BorshSerialize};

/// Encodes a value. Writing into a `Vec` cannot fail.
pub fn encode<T: BorshSerialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Serialising into memory only fails on an I/O error, which a Vec never raises.
    if value.serialize(&mut out).is_err() {
        out.clear();
    }
    out
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// Decodes untrusted bytes: refuses input over `max_len` before looking at it, and refuses
/// trailing bytes, so an accepted value re-encodes to exactly the input.
pub fn decode<T: BorshDeserialize>(
    what: &'static str,
    bytes: &[u8],
    max_len: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge {
            what,
            len: bytes.len(),
            max: max_len,
        });
    }
    borsh::from_slice(bytes).map_err(|err| DecodeError::Malformed {
        what,
        reason: err.to_string(),
    })
}
