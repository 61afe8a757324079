//! `meshd`, the Mesh Ledger node and its command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use mesh_node::home::{self, Home, InitOptions};
use mesh_node::keys;

#[derive(Parser, Debug)]
#[command(name = "meshd", version, about = "Mesh Ledger node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a new node home: config.toml, genesis.json (this node as the only validator plus a
    /// funded account), node key and validator key.
    Init {
        #[arg(long)]
        home: PathBuf,
        #[arg(long, default_value = "mesh-local")]
        chain_id: String,
        #[arg(long, default_value = "mesh-node")]
        moniker: String,
        /// Overwrite an existing home's config, genesis and keys.
        #[arg(long)]
        force: bool,
    },
    /// Manage key files.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a new account key file and print its address.
    New {
        /// Where to write the key (created readable by the owner only).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Print the address of a key file.
    Show {
        #[arg(long)]
        key: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Init {
            home,
            chain_id,
            moniker,
            force,
        } => {
            let genesis_time_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .map_err(|err| format!("the system clock is before 1970: {err}"))?;
            let options = InitOptions {
                chain_id,
                moniker,
                force,
                genesis_time_ms,
            };
            let home = Home::new(home);
            let report = home::init(&home, &options).map_err(|err| err.to_string())?;
            println!("initialised {}", home.root().display());
            println!("  validator  {}", report.validator);
            println!(
                "  account    {} (balance {}, key in {})",
                report.account,
                home::INIT_ACCOUNT_BALANCE,
                home.account_key().display()
            );
            if report.data_exists {
                println!("  note: {} already exists; it belongs to the previous genesis and will be refused", home.data().display());
            }
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::New { out, force },
        } => {
            let key = keys::generate_secret();
            keys::write_key(&out, &key, force).map_err(|err| err.to_string())?;
            println!("{}", key.address());
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Show { key },
        } => {
            let key = keys::read_key(&key).map_err(|err| err.to_string())?;
            println!("{}", key.address());
            Ok(())
        }
    }
}
