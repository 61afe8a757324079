//! `meshd init`, `meshd keys` and config/genesis loading, through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::Path;
use std::process::{Command, Output};

use mesh_ledger::Genesis;
use mesh_node::config::{Config, ConfigError};
use mesh_node::home::Home;
use mesh_node::keys;

fn meshd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshd"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn init_writes_a_complete_home_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let home_dir = dir.path().join("node0");
    let home_arg = home_dir.to_str().unwrap();
    let first = meshd(&[
        "init",
        "--home",
        home_arg,
        "--chain-id",
        "test-1",
        "--moniker",
        "alpha",
    ]);
    assert!(first.status.success(), "{}", text(&first));

    let home = Home::new(&home_dir);
    let config = Config::load(&home.config()).unwrap();
    assert_eq!(config.moniker, "alpha");
    assert_eq!(config.rpc.listen_addr.to_string(), "127.0.0.1:30401");
    assert_eq!(config.metrics.listen_addr.to_string(), "127.0.0.1:30402");
    assert!(config.p2p.listen_addr.ends_with("/tcp/30400"));
    let genesis = Genesis::load(&home.genesis()).unwrap();
    assert_eq!(genesis.chain_id, "test-1");
    let validator = keys::read_key(&home.validator_key()).unwrap();
    assert_eq!(genesis.validators.len(), 1);
    assert_eq!(genesis.validators[0].address, validator.address());
    let account = keys::read_key(&home.account_key()).unwrap();
    assert_eq!(genesis.balances[0].address, account.address());
    keys::read_node_key(&home.node_key()).unwrap();
    #[cfg(unix)]
    for path in [home.validator_key(), home.node_key(), home.account_key()] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode,
            0o600,
            "{} must be readable by the owner only",
            path.display()
        );
    }

    let second = meshd(&["init", "--home", home_arg]);
    assert!(!second.status.success());
    assert!(text(&second).contains("pass --force"), "{}", text(&second));
    assert_eq!(
        keys::read_key(&home.validator_key()).unwrap().address(),
        validator.address(),
        "nothing was overwritten"
    );

    let forced = meshd(&["init", "--home", home_arg, "--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_ne!(
        keys::read_key(&home.validator_key()).unwrap().address(),
        validator.address()
    );
}

#[test]
fn keys_new_and_show_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.json");
    let created = meshd(&["keys", "new", "--out", path.to_str().unwrap()]);
    assert!(created.status.success(), "{}", text(&created));
    let shown = meshd(&["keys", "show", "--key", path.to_str().unwrap()]);
    assert!(shown.status.success());
    assert_eq!(
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&shown.stdout)
    );
    assert!(String::from_utf8_lossy(&shown.stdout)
        .trim()
        .starts_with("0x"));

    let again = meshd(&["keys", "new", "--out", path.to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "an existing key is never overwritten without --force"
    );

    std::fs::write(&path, r#"{"address": "0x00", "secret": "zz"}"#).unwrap();
    let broken = meshd(&["keys", "show", "--key", path.to_str().unwrap()]);
    assert!(!broken.status.success());
    assert!(text(&broken).contains("malformed"), "{}", text(&broken));
    let missing = meshd(&["keys", "show", "--key", "/nonexistent/key.json"]);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("/nonexistent/key.json"));
}

#[test]
fn a_config_written_before_the_empty_block_interval_still_starts() {
    // The consensus section of a testnet home written before `empty_block_interval_ms`
    // existed (the 16-validator fixture's): a 1 s view timeout, which the 1 s default of new
    // homes would not allow.
    let old = "[consensus]\nblock_interval_ms = 200\nview_timeout_ms = 1000\nview_timeout_max_ms = 30000\n";
    let config = Config::parse(old, "config.toml").expect("an old config stays valid");
    assert_eq!(config.consensus.empty_block_interval_ms, None);
    assert_eq!(config.consensus.empty_block_interval(), 500);
    // Written back, the value in force is spelled out.
    let again = Config::parse(&config.to_documented_toml(), "generated").unwrap();
    assert_eq!(again.consensus.empty_block_interval(), 500);
}

#[test]
fn bad_config_names_the_field() {
    let err = |toml: &str| Config::parse(toml, "config.toml").unwrap_err().to_string();
    assert!(
        err("moniker = 5").contains("moniker"),
        "{}",
        err("moniker = 5")
    );
    assert!(err("[p2p]\nmax_peers = \"many\"").contains("max_peers"));
    assert!(err("[p2p]\nmax_peers = 0").contains("p2p.max_peers"));
    assert!(err("[rpc]\nlisten_addr = \"not an address\"").contains("listen_addr"));
    assert!(err("[p2p]\nbootnodes = [\"example.com\"]").contains("p2p.bootnodes"));
    assert!(err("surprise = true").contains("surprise"));
    assert!(err("[mempool]\nmax_txs = 0").contains("mempool"));
    assert!(matches!(
        Config::load(Path::new("/nonexistent/config.toml")),
        Err(ConfigError::Io { .. })
    ));
    // The documented file written by init parses back to the same config.
    let config = Config::default();
    assert_eq!(
        Config::parse(&config.to_documented_toml(), "generated").unwrap(),
        config
    );
}

#[test]
fn bad_genesis_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let home_dir = dir.path().join("n");
    assert!(meshd(&["init", "--home", home_dir.to_str().unwrap()])
        .status
        .success());
    let home = Home::new(&home_dir);
    let text = std::fs::read_to_string(home.genesis()).unwrap();
    std::fs::write(
        home.genesis(),
        text.replace("\"chain_id\"", "\"chain_idx\""),
    )
    .unwrap();
    let err = Genesis::load(&home.genesis()).unwrap_err().to_string();
    assert!(
        err.contains("chain_idx") || err.contains("chain_id"),
        "{err}"
    );
}
