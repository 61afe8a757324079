//! A node's home directory and `meshd init`.
//!
//! ```text
//! <home>/config.toml          settings (docs/operators.md)
//! <home>/genesis.json         the chain's genesis
//! <home>/node_key.json        libp2p identity (0600)
//! <home>/validator_key.json   consensus signing key (0600)
//! <home>/account_key.json     the funded account of a fresh single-node chain (0600)
//! <home>/data/                RocksDB
//! ```

use std::path::{Path, PathBuf};

use mesh_ledger::{Address, Genesis, GenesisAccount, Params, Validator};

use crate::config::Config;
use crate::keys::{self, KeyError};

/// Balance of the account funded by `meshd init`.
pub const INIT_ACCOUNT_BALANCE: u64 = 1_000_000_000_000;
/// Voting power of the validator written by `meshd init`.
pub const INIT_VALIDATOR_POWER: u64 = 10;

/// Paths inside a home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn genesis(&self) -> PathBuf {
        self.root.join("genesis.json")
    }
    pub fn node_key(&self) -> PathBuf {
        self.root.join("node_key.json")
    }
    pub fn validator_key(&self) -> PathBuf {
        self.root.join("validator_key.json")
    }
    pub fn account_key(&self) -> PathBuf {
        self.root.join("account_key.json")
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
}

/// What `meshd init` needs besides the home.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chain_id: String,
    pub moniker: String,
    pub force: bool,
    /// The genesis timestamp; the caller reads the clock.
    pub genesis_time_ms: u64,
}

/// What `meshd init` wrote.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub validator: Address,
    pub account: Address,
    pub data_exists: bool,
}

/// Why `meshd init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{path} already holds a node home ({file} exists); pass --force to overwrite its config, genesis and keys")]
    Exists { path: String, file: String },
    #[error("cannot create {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid genesis: {0}")]
    Genesis(#[from] mesh_ledger::genesis::GenesisError),
}

/// Writes a complete home for a single-validator chain.
pub fn init(home: &Home, options: &InitOptions) -> Result<InitReport, InitError> {
    let shown = home.root().display().to_string();
    if !options.force {
        for path in [
            home.config(),
            home.genesis(),
            home.node_key(),
            home.validator_key(),
        ] {
            if path.exists() {
                return Err(InitError::Exists {
                    path: shown,
                    file: path.display().to_string(),
                });
            }
        }
    }
    std::fs::create_dir_all(home.root()).map_err(|source| InitError::Create {
        path: shown.clone(),
        source,
    })?;
    let validator = keys::generate_secret();
    let account = keys::generate_secret();
    let genesis = Genesis {
        chain_id: options.chain_id.clone(),
        genesis_time_ms: options.genesis_time_ms,
        validators: vec![Validator {
            address: validator.address(),
            power: INIT_VALIDATOR_POWER,
        }],
        balances: vec![GenesisAccount {
            address: account.address(),
            balance: INIT_ACCOUNT_BALANCE,
        }],
        // A one-validator chain: the set can never shrink below its one member.
        params: Params {
            min_validators: 1,
            ..Params::default()
        },
    };
    genesis.validate()?;
    let config = Config {
        moniker: options.moniker.clone(),
        ..Config::default()
    };
    keys::write_private(&home.config(), config.to_documented_toml().as_bytes(), true)?;
    keys::write_private(
        &home.genesis(),
        format!("{}\n", genesis.to_json()).as_bytes(),
        true,
    )?;
    keys::write_node_key(&home.node_key(), &keys::generate_seed(), true)?;
    keys::write_key(&home.validator_key(), &validator, true)?;
    keys::write_key(&home.account_key(), &account, true)?;
    Ok(InitReport {
        validator: validator.address(),
        account: account.address(),
        data_exists: home.data().exists(),
    })
}
