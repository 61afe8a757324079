//! Key files: account and validator keys (ed25519 seeds) and the node's libp2p identity seed.
//!
//! Files are created readable by the owner only (0600) and never overwritten silently.

use std::io::Write as _;
use std::path::Path;

use mesh_ledger::bytes::{parse_hex_fixed, to_hex};
use mesh_ledger::{Address, SecretKey};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists { path: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
}

/// An ed25519 signing key from the operating system's entropy.
pub fn generate_secret() -> SecretKey {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SecretKey::from_seed(seed)
}

/// Fresh 32 random bytes (for the libp2p identity).
pub fn generate_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    seed
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    address: Address,
    secret: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeKeyFile {
    ed25519_seed: String,
}

/// Writes `contents` to a new file readable by the owner only.
pub fn write_private(path: &Path, contents: &[u8], force: bool) -> Result<(), KeyError> {
    let shown = path.display().to_string();
    if path.exists() && !force {
        return Err(KeyError::Exists { path: shown });
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut file = options.open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    write().map_err(|source| KeyError::Write {
        path: shown,
        source,
    })
}

/// Writes an account or validator key file: `{"address": "0x…", "secret": "0x…"}`.
pub fn write_key(path: &Path, key: &SecretKey, force: bool) -> Result<(), KeyError> {
    let file = KeyFile {
        address: key.address(),
        secret: to_hex(&key.seed()),
    };
    let json = serde_json::to_string_pretty(&file).unwrap_or_default();
    write_private(path, format!("{json}\n").as_bytes(), force)
}

/// Reads a key file written by [`write_key`], checking that the address matches the secret.
pub fn read_key(path: &Path) -> Result<SecretKey, KeyError> {
    let shown = path.display().to_string();
    let text = read_small(path)?;
    let malformed = |reason: String| KeyError::Malformed {
        path: shown.clone(),
        reason,
    };
    let file: KeyFile = serde_json::from_str(&text).map_err(|err| malformed(err.to_string()))?;
    let seed: [u8; 32] =
        parse_hex_fixed(&file.secret).map_err(|err| malformed(format!("field `secret`: {err}")))?;
    let key = SecretKey::from_seed(seed);
    if key.address() != file.address {
        return Err(malformed(format!(
            "field `address` is {} but the secret belongs to {}",
            file.address,
            key.address()
        )));
    }
    Ok(key)
}

/// Writes the node's libp2p identity seed.
pub fn write_node_key(path: &Path, seed: &[u8; 32], force: bool) -> Result<(), KeyError> {
    let json = serde_json::to_string_pretty(&NodeKeyFile {
        ed25519_seed: to_hex(seed),
    })
    .unwrap_or_default();
    write_private(path, format!("{json}\n").as_bytes(), force)
}

/// Reads the node's libp2p identity seed.
pub fn read_node_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let shown = path.display().to_string();
    let text = read_small(path)?;
    let file: NodeKeyFile = serde_json::from_str(&text).map_err(|err| KeyError::Malformed {
        path: shown.clone(),
        reason: err.to_string(),
    })?;
    parse_hex_fixed(&file.ed25519_seed).map_err(|err| KeyError::Malformed {
        path: shown,
        reason: format!("field `ed25519_seed`: {err}"),
    })
}

fn read_small(path: &Path) -> Result<String, KeyError> {
    let shown = path.display().to_string();
    let len = std::fs::metadata(path)
        .map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?
        .len();
    if len > 64 * 1024 {
        return Err(KeyError::Malformed {
            path: shown,
            reason: "larger than 64 KiB".into(),
        });
    }
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: shown,
        source,
    })
}
