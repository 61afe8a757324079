//! `meshd`, the Mesh Ledger node and its command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use mesh_node::home::{self, Home, InitOptions};
use mesh_node::keys;
use mesh_node::logging::{self, LogFormat};
use mesh_node::service::{self, NodeOptions};

mod dev;
mod wallet;

#[derive(Parser, Debug)]
#[command(name = "meshd", version, about = "Mesh Ledger node")]
struct Cli {
    /// Log line format (filter with RUST_LOG, e.g. RUST_LOG=mesh_node=debug).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
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
    /// Run the node in a home written by `meshd init`: a validator when its validator key is
    /// in the genesis validator set, a full node otherwise. Ctrl-C or SIGTERM stops it cleanly.
    Run {
        #[arg(long)]
        home: PathBuf,
        /// Testnet only: serve POST /admin/partition and /admin/heal on the metrics listener,
        /// so `meshd testnet partition` can cut the network for real. Never on a real node.
        #[arg(long)]
        admin: bool,
    },
    /// A single-validator development chain with funded accounts and fast blocks. Keys are
    /// printed and written to `<home>/accounts/`. Without --home, a fresh temporary directory.
    Dev {
        #[arg(long)]
        home: Option<PathBuf>,
        /// Number of funded development accounts.
        #[arg(long, default_value_t = 10)]
        accounts: u32,
        /// Milliseconds between blocks.
        #[arg(long, default_value_t = 200)]
        block_interval_ms: u64,
        /// JSON-RPC listen address (default 127.0.0.1:30401; port 0 picks a free port).
        #[arg(long)]
        rpc_addr: Option<std::net::SocketAddr>,
        /// Metrics listen address (default 127.0.0.1:30402).
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Sign and send transactions through a node's JSON-RPC API (`--rpc`, default
    /// http://127.0.0.1:30401). Exit code 0 success, 1 error, 3 final but the operation failed.
    Tx {
        #[command(flatten)]
        connection: wallet::Connection,
        #[command(subcommand)]
        command: wallet::TxCommand,
    },
    /// Read the chain through a node's JSON-RPC API (`--rpc`, default http://127.0.0.1:30401).
    Query {
        #[command(flatten)]
        connection: wallet::Connection,
        #[command(subcommand)]
        command: wallet::QueryCommand,
    },
    /// Networks of real `meshd run` processes: a local one on loopback (`up`, `status`, `down`,
    /// faults, `join`, `bench`, `scenario`) and homes for several machines (`init`); see
    /// docs/testnet.md.
    Testnet {
        #[command(subcommand)]
        command: mesh_testnet::TestnetCommand,
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
    logging::init(cli.log_format);
    let cli = match cli.command {
        Command::Tx {
            connection,
            command,
        } => return wallet::run_tx(connection, command),
        Command::Query {
            connection,
            command,
        } => return wallet::run_query(connection, command),
        command => Cli { command, ..cli },
    };
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
        Command::Run { home, admin } => {
            let mut options =
                NodeOptions::from_home(Home::new(home)).map_err(|err| err.to_string())?;
            options.admin = admin;
            run_node(options)
        }
        Command::Dev {
            home,
            accounts,
            block_interval_ms,
            rpc_addr,
            metrics_addr,
        } => {
            let mut options = dev::prepare(home, accounts, block_interval_ms)?;
            if let Some(addr) = rpc_addr {
                options.config.rpc.listen_addr = addr;
            }
            if let Some(addr) = metrics_addr {
                options.config.metrics.listen_addr = addr;
            }
            run_node(options)
        }
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
        Command::Testnet { command } => {
            let meshd = std::env::current_exe()
                .map_err(|err| format!("cannot find the meshd executable: {err}"))?;
            mesh_testnet::run(command, &meshd).map_err(|err| err.to_string())
        }
        Command::Tx { .. } | Command::Query { .. } => {
            Err("wallet commands are handled before this point".into())
        }
    }
}

/// Runs a node until Ctrl-C / SIGTERM (clean stop) or a fatal error.
pub(crate) fn run_node(options: NodeOptions) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Idle blocking-pool threads (storage reads, admission checks, `block_in_place`) go
        // after 1 s instead of tokio's 10 s: the driver's few `block_in_place` calls a second
        // wake idle threads in turn, so with 10 s a burst of RPC work left every thread it
        // had started alive for good (issue 21: 9 threads idle, 25-45 after a flood).
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))?;
    runtime.block_on(async move {
        let mut node = service::start(options)
            .await
            .map_err(|err| err.to_string())?;
        if let Some(addr) = node.p2p_address() {
            eprintln!("p2p address: {addr}");
        }
        eprintln!("rpc address: http://{}", node.rpc_addr());
        let outcome = tokio::select! {
            result = node.stopped() => Some(result),
            signal = shutdown_signal() => {
                tracing::info!(signal, "shutting down");
                None
            }
        };
        match outcome {
            Some(result) => result.map_err(|err| err.to_string()),
            None => node.stop().await.map_err(|err| err.to_string()),
        }
    })
}

/// Resolves on the first SIGINT or SIGTERM, naming it.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}
