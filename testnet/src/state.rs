//! `DIR/testnet.json`: what `up` started, read back by `status`, `down`, `kill` and `restart`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::TestnetError;

/// Name of the network description inside the testnet directory.
pub const TESTNET_FILE: &str = "testnet.json";

/// The contents of `DIR/testnet.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestnetFile {
    /// Chain id of the network's genesis.
    pub chain_id: String,
    /// Every node, validators first; `--node I` indexes this list.
    pub nodes: Vec<NodeEntry>,
    /// Directory of the funded development accounts' key files (`account-<i>.json`).
    pub accounts_dir: PathBuf,
}

/// One node of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// `node-<i>`; also the node's moniker.
    pub name: String,
    /// Process id of the node's newest `meshd run` (it may have exited since).
    pub pid: u32,
    /// The node's home (absolute).
    pub home: PathBuf,
    /// JSON-RPC endpoint, `http://127.0.0.1:<port>`.
    pub rpc: String,
    /// libp2p address to dial, `/ip4/127.0.0.1/tcp/<port>/p2p/<peer id>`.
    pub p2p: String,
    /// Metrics listener, `127.0.0.1:<port>` (scraped at `http://<metrics>/metrics`).
    pub metrics: String,
    /// Whether the node's key is in the genesis validator set.
    pub validator: bool,
}

impl TestnetFile {
    /// Path of the description inside `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(TESTNET_FILE)
    }

    /// Reads `DIR/testnet.json`.
    pub fn load(dir: &Path) -> Result<TestnetFile, TestnetError> {
        let path = TestnetFile::path(dir);
        if !path.exists() {
            return Err(TestnetError::NoTestnet {
                dir: dir.display().to_string(),
            });
        }
        let text =
            std::fs::read_to_string(&path).map_err(|source| TestnetError::io(&path, source))?;
        serde_json::from_str(&text).map_err(|err| TestnetError::Malformed {
            path: path.display().to_string(),
            reason: err.to_string(),
        })
    }

    /// Writes `DIR/testnet.json` atomically (a temporary file renamed over it).
    pub fn save(&self, dir: &Path) -> Result<(), TestnetError> {
        let path = TestnetFile::path(dir);
        let temporary = dir.join(format!("{TESTNET_FILE}.tmp"));
        let json = serde_json::to_string_pretty(self).map_err(|err| TestnetError::Malformed {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        std::fs::write(&temporary, format!("{json}\n"))
            .map_err(|source| TestnetError::io(&temporary, source))?;
        std::fs::rename(&temporary, &path).map_err(|source| TestnetError::io(&path, source))
    }

    /// The node `--node index` names.
    pub fn node(&self, index: usize) -> Result<&NodeEntry, TestnetError> {
        self.nodes.get(index).ok_or(TestnetError::NoSuchNode {
            index,
            count: self.nodes.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn testnet_file_round_trips_with_the_documented_field_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = TestnetFile {
            chain_id: "mesh-testnet".into(),
            nodes: vec![NodeEntry {
                name: "node-0".into(),
                pid: 42,
                home: dir.path().join("nodes/node-0"),
                rpc: "http://127.0.0.1:1".into(),
                p2p: "/ip4/127.0.0.1/tcp/2/p2p/x".into(),
                metrics: "127.0.0.1:3".into(),
                validator: true,
            }],
            accounts_dir: dir.path().join("accounts"),
        };
        file.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(TestnetFile::path(dir.path())).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in ["chain_id", "nodes", "accounts_dir"] {
            assert!(value.get(key).is_some(), "{key}");
        }
        for key in ["name", "pid", "home", "rpc", "p2p", "metrics", "validator"] {
            assert!(value["nodes"][0].get(key).is_some(), "{key}");
        }
        assert_eq!(TestnetFile::load(dir.path()).unwrap(), file);
        assert!(matches!(
            file.node(1),
            Err(TestnetError::NoSuchNode { index: 1, count: 1 })
        ));
    }
}
