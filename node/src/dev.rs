//! `meshd dev`: a single-validator chain for application developers, in one command.

use std::path::PathBuf;

use mesh_ledger::{Genesis, GenesisAccount, Params, Validator};
use mesh_node::config::Config;
use mesh_node::home::{Home, INIT_ACCOUNT_BALANCE, INIT_VALIDATOR_POWER};
use mesh_node::keys;
use mesh_node::service::{driver_config, NodeOptions};

/// Chain id of development chains.
const DEV_CHAIN_ID: &str = "mesh-dev";
/// Most development accounts (each is a key file and a genesis entry).
const DEV_ACCOUNTS_MAX: u32 = 10_000;

/// Writes (or reuses) a development home and returns the options to run it.
pub(crate) fn prepare(
    home: Option<PathBuf>,
    accounts: u32,
    block_interval_ms: u64,
) -> Result<NodeOptions, String> {
    if accounts > DEV_ACCOUNTS_MAX {
        return Err(format!("--accounts must be at most {DEV_ACCOUNTS_MAX}"));
    }
    if !(10..=60_000).contains(&block_interval_ms) {
        return Err("--block-interval-ms must be between 10 and 60000".into());
    }
    let root = match home {
        Some(root) => root,
        None => {
            let dir = std::env::temp_dir().join(format!(
                "meshd-dev-{}",
                hex_suffix(&keys::generate_seed()[..6])
            ));
            eprintln!("dev home: {} (delete it when done)", dir.display());
            dir
        }
    };
    let home = Home::new(root);
    if home.config().exists() {
        eprintln!("reusing the dev chain in {}", home.root().display());
    } else {
        write_dev_home(&home, accounts)?;
    }
    let mut options = NodeOptions::from_home(home).map_err(|err| err.to_string())?;
    options.config.consensus.block_interval_ms = block_interval_ms;
    let empty_block_interval_ms = options.config.consensus.empty_block_interval();
    options.config.consensus.view_timeout_ms = block_interval_ms
        .saturating_mul(4)
        .max(empty_block_interval_ms.saturating_mul(2))
        .max(1_000);
    options.config.consensus.view_timeout_max_ms = options
        .config
        .consensus
        .view_timeout_max_ms
        .max(options.config.consensus.view_timeout_ms);
    // One validator, no peers: `/readyz` must not wait for any.
    options.config.rpc.ready_peers_min = 0;
    options.driver = driver_config(&options.config);
    Ok(options)
}

fn hex_suffix(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_dev_home(home: &Home, accounts: u32) -> Result<(), String> {
    let accounts_dir = home.root().join("accounts");
    std::fs::create_dir_all(&accounts_dir)
        .map_err(|err| format!("cannot create {}: {err}", accounts_dir.display()))?;
    let validator = keys::generate_secret();
    let mut balances = Vec::new();
    println!("development accounts (balance {INIT_ACCOUNT_BALANCE} each):");
    for index in 0..accounts {
        let key = keys::generate_secret();
        let path = accounts_dir.join(format!("account-{index}.json"));
        keys::write_key(&path, &key, false).map_err(|err| err.to_string())?;
        println!(
            "  ({index}) {}  secret 0x{}",
            key.address(),
            hex_suffix(&key.seed())
        );
        balances.push(GenesisAccount {
            address: key.address(),
            balance: INIT_ACCOUNT_BALANCE,
        });
    }
    println!("key files: {}", accounts_dir.display());
    let genesis = Genesis {
        chain_id: DEV_CHAIN_ID.into(),
        genesis_time_ms: mesh_node::driver::wall_ms(),
        validators: vec![Validator {
            address: validator.address(),
            power: INIT_VALIDATOR_POWER,
        }],
        balances,
        // A one-validator chain: the set can never shrink below its one member.
        params: Params {
            min_validators: 1,
            ..Params::default()
        },
    };
    genesis.validate().map_err(|err| err.to_string())?;
    let config = Config {
        moniker: "mesh-dev".into(),
        p2p: mesh_node::config::P2pConfig {
            listen_addr: "/ip4/127.0.0.1/tcp/0".into(),
            ..Default::default()
        },
        ..Config::default()
    };
    keys::write_private(&home.config(), config.to_documented_toml().as_bytes(), true)
        .map_err(|err| err.to_string())?;
    keys::write_private(
        &home.genesis(),
        format!("{}\n", genesis.to_json()).as_bytes(),
        true,
    )
    .map_err(|err| err.to_string())?;
    keys::write_node_key(&home.node_key(), &keys::generate_seed(), true)
        .map_err(|err| err.to_string())?;
    keys::write_key(&home.validator_key(), &validator, true).map_err(|err| err.to_string())?;
    Ok(())
}
