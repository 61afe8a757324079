//! # mesh-testnet
//!
//! Owns `meshd testnet …`: a local multi-node Mesh Ledger network on loopback from one command.
//! It writes one home per node (running `meshd init`, then rewriting `genesis.json` with the
//! shared genesis and `config.toml` with free ports, bootnodes and fast consensus timing), the
//! funded development accounts' key files, and `DIR/testnet.json`; it starts every node as a
//! `meshd run --home … --admin` child process, waits until a block is final, shows a live status
//! table scraped from each node's `/metrics`, and stops, kills, restarts, pauses and resumes
//! nodes by pid. `partition`/`heal` go through the admin endpoint `--admin` enables on each
//! node's metrics listener, or, when `up --netns` put each node in its own network namespace
//! (`netns`), through routes there; `bench` loads the network through its JSON-RPC API
//! (`mesh_rpc`).
//!
//! It must never link the node's internals (`mesh_node`): it drives real `meshd` processes
//! through their command line, files, metrics and RPC endpoints only, so what it tests is what
//! operators run. The nodes it starts must never bind anything but loopback (or, with `up
//! --netns`, private addresses inside the namespaces it creates on its own bridge; the homes
//! `init` writes for other machines are the operator's to start), never signal a pid that is
//! not the recorded node (the command line must name its home), and never leave a node it
//! started running, or a namespace it created, after a failed `up` or a Ctrl-C of a
//! foreground `up`.
//!
//! The entry point is [`run`] with a [`TestnetCommand`] (a `clap` subcommand that `meshd` embeds
//! as `meshd testnet …`); docs/testnet.md is the user guide.
//!
//! Status (issue 6): `up` (foreground and `--detach`), `status`, `down`, `kill`, `restart`,
//! `pause`/`resume`, `partition`/`heal` (admin endpoint on loopback, routes in network
//! namespaces with `up --netns`), `join`, `bench`, `scenario` (named invariant checks in
//! `invariants.rs`), and `init --hosts` (homes for a network on several machines, started by the
//! operator: docs/operators.md).

mod bench;
mod deploy;
mod faults;
mod invariants;
mod membership;
mod metrics;
mod netns;
mod process;
mod scenario;
mod setup;
mod state;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use bench::{
    bench, BenchOp, BenchOptions, BenchRate, BenchReport, BenchRun, Latency, LoadPoint, NodeUsage,
    SecondSample, DRAIN_TIMEOUT, IN_FLIGHT_MAX, LOAD_FRACTIONS, MAX_P99, MAX_START_RATE, MAX_STEPS,
};
pub use faults::{parse_groups, peer_id_of, Partition, PARTITION_FILE};
pub use invariants::{check_durability, Invariant, Passed};
pub use metrics::{scrape_metrics, NodeMetrics};
pub use netns::{NetnsFile, NetnsNode, NETNS_FILE};
pub use process::{node_alive, STOP_TIMEOUT};
pub use scenario::{
    scenario, Scenario, ScenarioOptions, ScenarioReport, CATCH_UP_BLOCKS, DEFAULT_LOAD_RATE,
    FAULT_WINDOW, JOIN_AFTER, LOAD_SECONDS_MAX, PAUSE_FOR, STALL_MAX,
};
pub use setup::{
    ACCOUNT_BALANCE, BLOCK_INTERVAL_MS, CHAIN_ID, EMPTY_BLOCK_INTERVAL_MS, VALIDATOR_POWER,
    VIEW_TIMEOUT_MS,
};
pub use state::{NodeEntry, TestnetFile, TESTNET_FILE};

/// Directory used when `--dir` is not given (relative to the current directory).
pub const DEFAULT_DIR: &str = "mesh-testnet";
/// Default number of validators.
pub const DEFAULT_VALIDATORS: u32 = 4;
/// Default number of development accounts.
pub const DEFAULT_ACCOUNTS: u32 = 100;
/// Most nodes (validators plus full nodes) in one testnet.
pub const NODES_MAX: u32 = 64;
/// Most development accounts.
pub const ACCOUNTS_MAX: u32 = 10_000;
/// How long `up` waits for the network to finalize a block before it gives up.
pub const UP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `restart` waits for the node's metrics endpoint to answer.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

/// `meshd testnet …`.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum TestnetCommand {
    /// Write the homes, shared genesis and DIR/network.json of a network spread over several
    /// machines, with production settings, and start nothing: copy each home to its host and
    /// run `meshd run --home …` there (docs/operators.md, "Deploy a network on several
    /// machines").
    Init {
        /// Number of validators.
        #[arg(long, value_name = "N")]
        validators: u32,
        /// Comma-separated hosts (IPv4, IPv6 or DNS names) the nodes run on and are dialled
        /// at; node i (validators first) runs on host i mod the number of hosts.
        #[arg(long, value_name = "H1,H2,…")]
        hosts: String,
        /// New (absent or empty) directory to write: nodes/<name>/, accounts/, genesis.json,
        /// network.json.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Number of full nodes (same genesis, no validator key), placed after the validators.
        #[arg(long, value_name = "M", default_value_t = 0)]
        full_nodes: u32,
        /// Number of funded accounts, one key file each in DIR/accounts/.
        #[arg(long, value_name = "K", default_value_t = deploy::DEFAULT_ACCOUNTS)]
        accounts: u32,
        /// Chain id of the genesis.
        #[arg(long, value_name = "ID", default_value = deploy::DEFAULT_CHAIN_ID)]
        chain_id: String,
        /// The j-th node on a host listens on P+3j (p2p), P+3j+1 (RPC), P+3j+2 (metrics).
        #[arg(long, value_name = "P", default_value_t = deploy::DEFAULT_BASE_PORT)]
        base_port: u16,
    },
    /// Create and start a local network (or restart the one already in DIR, with its data),
    /// wait until a block is final, write DIR/testnet.json and show a live status table until
    /// Ctrl-C, which stops every node. With --detach, return once the network is up.
    Up {
        /// Number of validators [default: 4; on an existing DIR: as it was created].
        #[arg(long, value_name = "N")]
        validators: Option<u32>,
        /// Number of full nodes (same genesis, no validator key) [default: 0].
        #[arg(long, value_name = "N")]
        full_nodes: Option<u32>,
        /// Directory of the network: homes, account keys, testnet.json.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Node i listens on P+3i (p2p), P+3i+1 (RPC), P+3i+2 (metrics) [default: free ports].
        #[arg(long, value_name = "P")]
        base_port: Option<u16>,
        /// Number of funded development accounts, one key file each in DIR/accounts/
        /// [default: 100].
        #[arg(long, value_name = "N")]
        accounts: Option<u32>,
        /// Return once the network is up and leave it running (stop it with `testnet down`).
        #[arg(long)]
        detach: bool,
        /// Run each node in its own network namespace with its own address on a private
        /// bridge, so `partition` cuts the network itself (Linux, root, iproute2). Only for a
        /// new testnet; an existing one keeps the mode it was created with.
        #[arg(long)]
        netns: bool,
    },
    /// Print the status table of the network in DIR once (takes a second, to measure tx/s).
    Status {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Stop every node of the network in DIR: SIGTERM, then SIGKILL after 20 s.
    Down {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// SIGKILL one node (a crash: nothing is flushed on its way out).
    Kill {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Index of the node in testnet.json (validators first, from 0).
        #[arg(long, value_name = "I")]
        node: usize,
    },
    /// Start one node again on its home (stopping it first if it runs) and record its new pid.
    Restart {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Index of the node in testnet.json (validators first, from 0).
        #[arg(long, value_name = "I")]
        node: usize,
    },
    /// Freeze one node (SIGSTOP): it neither sends nor answers until `resume`.
    Pause {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Index of the node in testnet.json (validators first, from 0).
        #[arg(long, value_name = "I")]
        node: usize,
    },
    /// Continue a paused node (SIGCONT).
    Resume {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Index of the node in testnet.json (validators first, from 0).
        #[arg(long, value_name = "I")]
        node: usize,
    },
    /// Cut the network into groups: each node in a group drops and refuses every node outside
    /// it (through the nodes' admin endpoint). Replaces any earlier partition.
    Partition {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Groups of node indexes, `/` between groups, `,` within one: `0,1/2,3`. Nodes named
        /// in no group are left alone.
        #[arg(long, value_name = "GROUPS")]
        groups: String,
    },
    /// Lift the partition: every node accepts every peer again.
    Heal {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Add a full node to the running network (new home, same genesis, every node a bootnode);
    /// it syncs the chain from its peers. Prints its index. With `--validator` it gets a
    /// validator key, is funded from the first development account, self-bonds and becomes a
    /// validator two epochs later; the command waits until the set in force holds it.
    Join {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Join as a validator (by bond, at an epoch boundary).
        #[arg(long)]
        validator: bool,
        /// With --validator: the self-bond, which is its voting power [default: the smallest
        /// power in the set now].
        #[arg(long, value_name = "AMOUNT", requires = "validator")]
        bond: Option<u64>,
    },
    /// Retire node I from the validator set: unbond its self-bond and wait until the set in
    /// force no longer holds it. The node keeps running as a full node.
    Leave {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Index of the node in testnet.json.
        #[arg(long, value_name = "I")]
        node: usize,
    },
    /// Run a fault scenario against the running network and check the invariants the mesh
    /// promises after it (agreement, state agreement, liveness, durability, …); exits ≠ 0 at
    /// the first violation. Needs at least 4 validators and 2 development accounts.
    Scenario {
        /// Which scenario (`all`: every one in order under one load, then durability).
        #[arg(value_enum)]
        name: Scenario,
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Rate of the background load (scenarios `crash-restart` and `all`), tx/s.
        #[arg(long, value_name = "R", default_value_t = DEFAULT_LOAD_RATE)]
        load_rate: u32,
    },
    /// Load the running network: pre-signed transactions from the development accounts at a
    /// target rate, finality followed by subscription; writes DIR/bench-<time>.json and .svg.
    Bench {
        /// Directory of the network.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Target transactions per second, or `max` to find the saturation point.
        #[arg(long, default_value = "100")]
        rate: String,
        /// Seconds of submission (of each step with `--rate max`).
        #[arg(long, value_name = "S", default_value_t = 10)]
        duration: u64,
        /// Number of sending accounts (the first K of DIR/accounts/) [default: all].
        #[arg(long, value_name = "K")]
        accounts: Option<usize>,
        /// What each transaction does.
        #[arg(long, value_enum, default_value = "transfer")]
        op: BenchOp,
        /// Value size of `--op put`, bytes.
        #[arg(long, value_name = "B", default_value_t = 100)]
        value_bytes: usize,
        /// Submit only to these nodes (indexes, `0,1`); finality is followed on the first
        /// [default: every running node].
        #[arg(long, value_name = "I,J,…", value_delimiter = ',')]
        nodes: Option<Vec<usize>>,
    },
}

/// Why a testnet command failed.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    /// A bad combination of arguments.
    #[error("{0}")]
    Usage(String),
    /// A file or socket operation failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being read, written or bound.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file the tool reads is not what it wrote.
    #[error("{path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// There is no testnet.json in the directory.
    #[error(
        "no testnet in {dir} (no testnet.json); create one with `meshd testnet up --dir {dir}`"
    )]
    NoTestnet {
        /// The directory.
        dir: String,
    },
    /// The directory exists, is not empty and holds no testnet.
    #[error("{dir} exists and is not a testnet directory (no testnet.json); pick another --dir or remove it")]
    NotATestnet {
        /// The directory.
        dir: String,
    },
    /// `up` on a network whose nodes still run.
    #[error("the testnet in {dir} is already running ({name}, pid {pid}, is up); use `meshd testnet status --dir {dir}`, or stop it with `meshd testnet down --dir {dir}` first")]
    AlreadyRunning {
        /// The directory.
        dir: String,
        /// The first running node.
        name: String,
        /// Its pid.
        pid: u32,
    },
    /// The bench saw transactions accepted that never became final.
    #[error("{count} accepted transaction(s) never became final (hashes in {report}); every accepted transaction must be final or reported dropped")]
    AcceptedNeverFinal {
        /// How many.
        count: u64,
        /// The bench report holding `accepted_hashes` and `finalized_hashes`.
        report: String,
    },
    /// `--node I` past the end of the node list.
    #[error("there is no node {index}: the testnet has {count} nodes (0..{count})")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// How many nodes there are.
        count: usize,
    },
    /// `kill` on a node that is not running.
    #[error("{name} is not running")]
    NotRunning {
        /// The node.
        name: String,
    },
    /// `meshd` could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The meshd path.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `meshd init` failed.
    #[error("`meshd init --home {home}` failed: {output}")]
    Init {
        /// The home.
        home: String,
        /// Its stderr.
        output: String,
    },
    /// The genesis built from the homes was refused.
    #[error("the testnet genesis is invalid: {0}")]
    Genesis(String),
    /// A node exited while the network was starting.
    #[error("{name} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    NodeExited {
        /// The node.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: String,
        /// The end of its log.
        tail: String,
    },
    /// The network did not become live in time.
    #[error("{0}")]
    Timeout(String),
    /// A node did not go away after SIGKILL.
    #[error("{name} (pid {pid}) is still running after SIGKILL")]
    StillRunning {
        /// The node.
        name: String,
        /// Its pid.
        pid: u32,
    },
    /// A node's admin endpoint refused or did not answer (`partition`, `heal`).
    #[error("admin request failed: {0}")]
    Admin(String),
    /// The bench could not run (a node refused a setup call, the runtime failed).
    #[error("bench: {0}")]
    Bench(String),
    /// A scenario check failed: the named invariant does not hold.
    #[error("invariant violated: {invariant}: {detail}")]
    Violated {
        /// The invariant's name ([`Invariant::name`]).
        invariant: &'static str,
        /// What was observed.
        detail: String,
    },
    /// `--netns` cannot work here, or an `ip` command failed.
    #[error("network namespaces: {0}")]
    Netns(String),
    /// The signal handler for the foreground loop could not be installed.
    #[error("cannot watch for Ctrl-C: {0}")]
    Signal(std::io::Error),
}

impl TestnetError {
    /// `node` exited with `status`: names its log and quotes the log's last lines.
    fn exited(node: &NodeEntry, status: std::process::ExitStatus) -> TestnetError {
        TestnetError::NodeExited {
            name: node.name.clone(),
            status: status.to_string(),
            log: node.home.join(process::LOG_FILE).display().to_string(),
            tail: process::log_tail(&node.home, 20),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> TestnetError {
        TestnetError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Runs one `meshd testnet …` command, starting nodes as `<meshd> run --home …` (`meshd` is
/// the node binary: `std::env::current_exe()` when called from `meshd` itself).
///
/// Synchronous: `up` without `--detach` blocks until SIGINT or SIGTERM (watched with
/// `tokio::signal` on a one-worker runtime from before the first node starts; the loops poll a
/// flag), then stops every node. `--detach` installs no signal handler.
pub fn run(command: TestnetCommand, meshd: &Path) -> Result<(), TestnetError> {
    match command {
        TestnetCommand::Init {
            validators,
            hosts,
            out,
            full_nodes,
            accounts,
            chain_id,
            base_port,
        } => deploy::init(
            meshd,
            &deploy::InitRequest {
                validators,
                full_nodes,
                hosts,
                out,
                accounts,
                chain_id,
                base_port,
            },
        ),
        TestnetCommand::Up {
            validators,
            full_nodes,
            dir,
            base_port,
            accounts,
            detach,
            netns,
        } => {
            let request = UpRequest {
                validators,
                full_nodes,
                base_port,
                accounts,
            };
            up(meshd, &setup::absolute(&dir)?, request, detach, netns)
        }
        TestnetCommand::Status { dir } => {
            let file = TestnetFile::load(&dir)?;
            let first = sample(&file.nodes);
            std::thread::sleep(Duration::from_secs(1));
            let second = sample(&file.nodes);
            let members = membership::membership(&file);
            print!(
                "{}",
                status_table(&file, &first, &second, 1.0, members.as_ref())
            );
            println!("{}", netns::mode_line(&dir)?);
            if let Some(partition) = Partition::load(&dir) {
                println!(
                    "partitioned: {} (`meshd testnet heal` reconnects)",
                    partition.describe()
                );
            }
            Ok(())
        }
        TestnetCommand::Down { dir } => {
            let file = TestnetFile::load(&dir)?;
            let running = file.nodes.iter().filter(|node| node_alive(node)).count();
            let killed = process::stop_nodes(&file.nodes)?;
            let removed = netns::bring_down(&dir)?;
            println!(
                "stopped {running} node(s) of {}{}{removed}",
                dir.display(),
                killed_note(&killed)
            );
            Ok(())
        }
        TestnetCommand::Kill { dir, node } => {
            let file = TestnetFile::load(&dir)?;
            let entry = file.node(node)?;
            if !node_alive(entry) {
                return Err(TestnetError::NotRunning {
                    name: entry.name.clone(),
                });
            }
            process::kill_node(entry)?;
            println!("killed {} (pid {}, SIGKILL)", entry.name, entry.pid);
            Ok(())
        }
        TestnetCommand::Restart { dir, node } => restart(meshd, &setup::absolute(&dir)?, node),
        TestnetCommand::Pause { dir, node } => faults::pause(&dir, node),
        TestnetCommand::Resume { dir, node } => faults::resume(&dir, node),
        TestnetCommand::Partition { dir, groups } => faults::partition(&dir, &groups),
        TestnetCommand::Heal { dir } => faults::heal(&dir),
        TestnetCommand::Join {
            dir,
            validator,
            bond,
        } => {
            let dir = setup::absolute(&dir)?;
            if !validator {
                return join(meshd, &dir, None).map(|_| ());
            }
            let key = mesh_ledger::SecretKey::from_seed(setup::random_seed());
            let index = join(meshd, &dir, Some(&key))?;
            membership::become_validator(&dir, index, &key, bond, None)
        }
        TestnetCommand::Leave { dir, node } => {
            membership::leave(&setup::absolute(&dir)?, node, None)
        }
        TestnetCommand::Scenario {
            name,
            dir,
            load_rate,
        } => scenario::scenario(
            meshd,
            &ScenarioOptions {
                dir,
                scenario: name,
                load_rate: f64::from(load_rate),
            },
        )
        .map(|_| ()),
        TestnetCommand::Bench {
            dir,
            rate,
            duration,
            accounts,
            op,
            value_bytes,
            nodes,
        } => {
            let rate = rate.parse::<BenchRate>().map_err(TestnetError::Usage)?;
            if duration == 0 || duration > 3_600 {
                return Err(TestnetError::Usage(
                    "--duration must be 1 to 3600 seconds".into(),
                ));
            }
            let options = BenchOptions {
                dir,
                rate,
                duration: Duration::from_secs(duration),
                accounts,
                op,
                value_bytes,
                nodes,
                stop: None,
            };
            let (report, path) = bench::bench(&options)?;
            let never_final: u64 = report.runs.iter().map(bench::accepted_never_final).sum();
            if never_final > 0 {
                return Err(TestnetError::AcceptedNeverFinal {
                    count: never_final,
                    report: path.display().to_string(),
                });
            }
            Ok(())
        }
    }
}

/// The `up` flags that shape a new network (`None`: not given).
#[derive(Debug, Clone, Copy)]
struct UpRequest {
    validators: Option<u32>,
    full_nodes: Option<u32>,
    base_port: Option<u16>,
    accounts: Option<u32>,
}

fn up(
    meshd: &Path,
    dir: &Path,
    request: UpRequest,
    detach: bool,
    netns: bool,
) -> Result<(), TestnetError> {
    let shown = dir.display().to_string();
    let mut file = if TestnetFile::path(dir).exists() {
        let file = TestnetFile::load(dir)?;
        if let Some(node) = file.nodes.iter().find(|node| node_alive(node)) {
            return Err(TestnetError::AlreadyRunning {
                dir: shown,
                name: node.name.clone(),
                pid: node.pid,
            });
        }
        check_same_shape(&file, request)?;
        netns::check_mode(dir, netns)?;
        println!("restarting the testnet in {shown} with its data");
        file
    } else {
        if dir.exists() {
            let empty = std::fs::read_dir(dir)
                .map_err(|source| TestnetError::io(dir, source))?
                .next()
                .is_none();
            if !empty {
                return Err(TestnetError::NotATestnet { dir: shown });
            }
        }
        let shape = new_shape(request)?;
        if netns {
            netns::preflight()?;
        }
        std::fs::create_dir_all(dir).map_err(|source| TestnetError::io(dir, source))?;
        println!(
            "creating a testnet in {shown}: {} validator(s), {} full node(s), {} account(s)",
            shape.validators, shape.full_nodes, shape.accounts
        );
        match netns::create_testnet(meshd, dir, shape, netns) {
            Ok(file) => file,
            Err(err) => {
                // The directory was absent or empty: leave it so, not half written.
                let _ = std::fs::remove_dir_all(dir);
                return Err(err);
            }
        }
    };

    // Freshly started nodes hold no admin blocks (and fresh namespaces no partition routes).
    faults::Partition::clear(dir)?;
    let namespaces = netns::bring_up(dir)?;
    // In the foreground, SIGINT/SIGTERM are watched before the first node starts, so an
    // interrupt at any point stops every node.
    let stop = if detach {
        None
    } else {
        Some(StopSignal::watch()?)
    };
    let mut children: Vec<(NodeEntry, Child)> = Vec::with_capacity(file.nodes.len());
    let started = start_all(meshd, dir, &mut file, &mut children, namespaces.as_ref())
        .and_then(|()| wait_live(&file, &mut children, stop.as_ref()));
    match started {
        Ok(true) => {}
        Ok(false) => {
            let killed = process::stop_children(&mut children);
            let removed = netns::bring_down(dir)?;
            println!(
                "interrupted during start-up; stopped every node{}{removed}",
                killed_note(&killed)
            );
            return Ok(());
        }
        Err(err) => {
            let killed = process::stop_children(&mut children);
            if !killed.is_empty() {
                eprintln!("killed {} after the failed start", killed.join(", "));
            }
            if let Err(teardown) = netns::bring_down(dir) {
                eprintln!("{teardown}");
            }
            return Err(err);
        }
    }

    print!("{}", endpoint_table(&file));
    if detach {
        println!(
            "the testnet runs in the background: `meshd testnet status --dir {shown}`, `meshd testnet down --dir {shown}`"
        );
        // Dropping a `Child` neither waits for nor kills it.
        return Ok(());
    }
    if let Some(stop) = &stop {
        foreground(&file, &mut children, stop);
    }
    println!("stopping {} node(s)…", children.len());
    let killed = process::stop_children(&mut children);
    let removed = netns::bring_down(dir)?;
    println!("stopped{}{removed}", killed_note(&killed));
    Ok(())
}

/// Set once SIGINT or SIGTERM arrives. A one-worker tokio runtime listens (`tokio::signal`);
/// the synchronous loops poll the flag.
#[derive(Debug)]
struct StopSignal {
    _runtime: tokio::runtime::Runtime,
    raised: Arc<AtomicBool>,
}

impl StopSignal {
    /// Installs the handlers now (from here on SIGINT/SIGTERM no longer end the process).
    fn watch() -> Result<StopSignal, TestnetError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(TestnetError::Signal)?;
        let raised = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&raised);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let _context = runtime.enter();
            let mut interrupt = signal(SignalKind::interrupt()).map_err(TestnetError::Signal)?;
            let mut terminate = signal(SignalKind::terminate()).map_err(TestnetError::Signal)?;
            runtime.spawn(async move {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                flag.store(true, Ordering::SeqCst);
            });
        }
        #[cfg(not(unix))]
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
        Ok(StopSignal {
            _runtime: runtime,
            raised,
        })
    }

    fn raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Sleeps up to `duration`; whether the signal came.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            if self.raised() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.raised()
    }
}

fn killed_note(killed: &[String]) -> String {
    if killed.is_empty() {
        String::new()
    } else {
        format!(
            " ({} did not stop within {} s of SIGTERM and got SIGKILL)",
            killed.join(", "),
            STOP_TIMEOUT.as_secs()
        )
    }
}

fn new_shape(request: UpRequest) -> Result<setup::Shape, TestnetError> {
    let shape = setup::Shape {
        validators: request.validators.unwrap_or(DEFAULT_VALIDATORS),
        full_nodes: request.full_nodes.unwrap_or(0),
        accounts: request.accounts.unwrap_or(DEFAULT_ACCOUNTS),
        base_port: request.base_port,
    };
    if shape.validators == 0 {
        return Err(TestnetError::Usage(
            "--validators must be at least 1".into(),
        ));
    }
    if shape.validators.saturating_add(shape.full_nodes) > NODES_MAX {
        return Err(TestnetError::Usage(format!(
            "--validators plus --full-nodes must be at most {NODES_MAX}"
        )));
    }
    if shape.accounts > ACCOUNTS_MAX {
        return Err(TestnetError::Usage(format!(
            "--accounts must be at most {ACCOUNTS_MAX}"
        )));
    }
    Ok(shape)
}

/// On an existing network, shape flags may only repeat what it already is.
fn check_same_shape(file: &TestnetFile, request: UpRequest) -> Result<(), TestnetError> {
    let validators = file.nodes.iter().filter(|node| node.validator).count();
    let full_nodes = file.nodes.len() - validators;
    let differs = |given: Option<u32>, actual: usize| {
        given.is_some_and(|given| usize::try_from(given).ok() != Some(actual))
    };
    if differs(request.validators, validators) || differs(request.full_nodes, full_nodes) {
        return Err(TestnetError::Usage(format!(
            "this directory holds a testnet of {validators} validator(s) and {full_nodes} full node(s); \
             re-running `up` restarts it as it is: leave out --validators/--full-nodes, or use another --dir"
        )));
    }
    if request.base_port.is_some() || request.accounts.is_some() {
        return Err(TestnetError::Usage(
            "--base-port and --accounts only apply to a new testnet; this directory already holds one \
             (it restarts with its own ports and accounts): leave them out, or use another --dir"
                .into(),
        ));
    }
    Ok(())
}

/// Starts every node, recording each pid in testnet.json as soon as it exists.
fn start_all(
    meshd: &Path,
    dir: &Path,
    file: &mut TestnetFile,
    children: &mut Vec<(NodeEntry, Child)>,
    namespaces: Option<&NetnsFile>,
) -> Result<(), TestnetError> {
    for index in 0..file.nodes.len() {
        let namespace = namespaces.map(|n| n.namespace(index)).transpose()?;
        let child = process::spawn_node(meshd, &file.nodes[index].home, namespace)?;
        file.nodes[index].pid = child.id();
        children.push((file.nodes[index].clone(), child));
        file.save(dir)?;
    }
    Ok(())
}

/// Waits until every node answers on its metrics endpoint and has finalized a block above the
/// height it first reported (at least height 1): the network is up and making progress.
/// `Ok(false)`: interrupted by `stop`.
fn wait_live(
    file: &TestnetFile,
    children: &mut [(NodeEntry, Child)],
    stop: Option<&StopSignal>,
) -> Result<bool, TestnetError> {
    let deadline = Instant::now() + UP_TIMEOUT;
    let mut baseline: Vec<Option<u64>> = vec![None; file.nodes.len()];
    let mut latest: Vec<Option<NodeMetrics>> = vec![None; file.nodes.len()];
    loop {
        for (index, (node, child)) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(TestnetError::exited(node, status));
            }
            if let Some(metrics) = scrape_metrics(&node.metrics) {
                baseline[index].get_or_insert(metrics.finalized_height);
                latest[index] = Some(metrics);
            }
        }
        let live = baseline
            .iter()
            .zip(&latest)
            .all(|(first, now)| match (first, now) {
                (Some(first), Some(now)) => {
                    now.finalized_height > *first && now.finalized_height >= 1
                }
                _ => false,
            });
        if live {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            let waiting = describe_stalled(file, &latest);
            return Err(TestnetError::Timeout(format!(
                "the testnet did not finalize a block within {} s ({waiting}); see each node's {} in its home",
                UP_TIMEOUT.as_secs(),
                process::LOG_FILE
            )));
        }
        match stop {
            Some(stop) if stop.sleep(Duration::from_millis(200)) => return Ok(false),
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Each node's height and view, then the validators that are not voting: those whose newest
/// vote is more than two views behind the highest view any node reached.
fn describe_stalled(file: &TestnetFile, latest: &[Option<NodeMetrics>]) -> String {
    let top_view = latest.iter().flatten().map(|m| m.view).max().unwrap_or(0);
    let mut not_voting = Vec::new();
    let mut parts: Vec<String> = file
        .nodes
        .iter()
        .zip(latest)
        .map(|(node, metrics)| match metrics {
            Some(m) => {
                if node.validator && m.voted_view.saturating_add(2) < top_view {
                    not_voting.push(format!(
                        "{} (last vote in view {})",
                        node.name, m.voted_view
                    ));
                }
                format!(
                    "{} at height {} view {}",
                    node.name, m.finalized_height, m.view
                )
            }
            None => {
                not_voting.push(format!("{} (not answering)", node.name));
                format!("{} not answering on {}", node.name, node.metrics)
            }
        })
        .collect();
    if not_voting.is_empty() {
        parts.push(format!(
            "every validator voted within two views of view {top_view}"
        ));
    } else {
        parts.push(format!("not voting: {}", not_voting.join(", ")));
    }
    parts.join(", ")
}

/// The live table, refreshed every second until SIGINT/SIGTERM or until every node has exited.
fn foreground(file: &TestnetFile, children: &mut [(NodeEntry, Child)], stop: &StopSignal) {
    let terminal = std::io::stdout().is_terminal();
    let mut previous = sample(&file.nodes);
    let mut previous_at = Instant::now();
    loop {
        if stop.sleep(Duration::from_secs(1)) {
            return;
        }
        let current = sample(&file.nodes);
        let seconds = previous_at.elapsed().as_secs_f64();
        previous_at = Instant::now();
        if terminal {
            print!("\x1b[H\x1b[2J");
        }
        let members = membership::membership(file);
        print!(
            "{}",
            status_table(file, &previous, &current, seconds, members.as_ref())
        );
        println!("Ctrl-C stops every node");
        previous = current;
        let exited = children
            .iter_mut()
            .all(|(_, child)| matches!(child.try_wait(), Ok(Some(_))));
        if exited {
            println!("every node has exited");
            return;
        }
    }
}

/// `join`: writes a full node's home (with `validator_key`, if given: it runs as a full node
/// until a bond puts the key in the set), records it in testnet.json and starts it; returns
/// its index.
pub(crate) fn join(
    meshd: &Path,
    dir: &Path,
    validator_key: Option<&mesh_ledger::SecretKey>,
) -> Result<usize, TestnetError> {
    let mut file = TestnetFile::load(dir)?;
    if u32::try_from(file.nodes.len()).map_or(true, |count| count >= NODES_MAX) {
        return Err(TestnetError::Usage(format!(
            "the testnet already has {} nodes, the most one testnet holds ({NODES_MAX})",
            file.nodes.len()
        )));
    }
    if netns::NetnsFile::load(dir)?.is_some() {
        return Err(TestnetError::Usage(
            "`join` works on loopback testnets only: a --netns testnet has a namespace per node \
             fixed when it was created (create it with --full-nodes instead)"
                .into(),
        ));
    }
    if !file.nodes.iter().any(node_alive) {
        return Err(TestnetError::Usage(format!(
            "no node of the testnet in {} is running: a joining node needs peers; start it with `meshd testnet up --detach --dir {}`",
            dir.display(),
            dir.display()
        )));
    }
    let entry = setup::add_full_node(meshd, dir, &file)?;
    if let Some(key) = validator_key {
        if let Err(err) = setup::write_key(&entry.home.join("validator_key.json"), key) {
            let _ = std::fs::remove_dir_all(&entry.home);
            return Err(err);
        }
    }
    let index = file.nodes.len();
    println!(
        "joining {} as a full node: {}",
        entry.name,
        entry.home.display()
    );
    file.nodes.push(entry);
    file.save(dir)?;
    start_node(meshd, dir, index, "started")?;
    Ok(index)
}

pub(crate) fn restart(meshd: &Path, dir: &Path, index: usize) -> Result<(), TestnetError> {
    let entry = TestnetFile::load(dir)?.node(index)?.clone();
    if node_alive(&entry) {
        println!("stopping {} (pid {})", entry.name, entry.pid);
        process::stop_nodes(std::slice::from_ref(&entry))?;
    }
    start_node(meshd, dir, index, "restarted")
}

/// Starts node `index` (not running) on its home (in its namespace with `up --netns`), records
/// its pid, waits until it answers on its metrics endpoint and re-applies a recorded partition
/// to it.
fn start_node(meshd: &Path, dir: &Path, index: usize, verb: &str) -> Result<(), TestnetError> {
    let mut file = TestnetFile::load(dir)?;
    let entry = file.node(index)?.clone();
    let namespace = netns::for_restart(dir, index)?;
    let mut child = process::spawn_node(meshd, &entry.home, namespace.as_deref())?;
    file.nodes[index].pid = child.id();
    file.save(dir)?;
    let deadline = Instant::now() + RESTART_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(TestnetError::exited(&entry, status));
        }
        // Answering is enough: a node serves metrics before it has restored its chain.
        if scrape_metrics(&entry.metrics).is_some() {
            println!(
                "{verb} {} (pid {}); it syncs what it misses from its peers",
                entry.name,
                child.id()
            );
            // The restarted process forgot the partition; the record says it still holds.
            return faults::reapply(dir, &file, index);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestnetError::Timeout(format!(
                "{} did not answer on {} within {} s after it was {verb}; last lines of its log:\n{}",
                entry.name,
                entry.metrics,
                RESTART_TIMEOUT.as_secs(),
                process::log_tail(&entry.home, 20)
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One scrape of every node (`None`: not running or not answering).
fn sample(nodes: &[NodeEntry]) -> Vec<Option<NodeMetrics>> {
    nodes
        .iter()
        .map(|node| {
            if node_alive(node) {
                scrape_metrics(&node.metrics)
            } else {
                None
            }
        })
        .collect()
}

fn role(node: &NodeEntry) -> &'static str {
    if node.validator {
        "validator"
    } else {
        "full"
    }
}

fn endpoint_table(file: &TestnetFile) -> String {
    let mut out = format!(
        "\nchain {}  accounts {}\n{:<8} {:<9} {:>8}  {:<24} {:<17} p2p\n",
        file.chain_id,
        file.accounts_dir.display(),
        "node",
        "role",
        "pid",
        "rpc",
        "metrics"
    );
    for node in &file.nodes {
        out.push_str(&format!(
            "{:<8} {:<9} {:>8}  {:<24} {:<17} {}\n",
            node.name,
            role(node),
            node.pid,
            node.rpc,
            node.metrics,
            node.p2p
        ));
    }
    out
}

/// The table `status` and `up` print. Role and power come from the chain (`members`, the
/// epoch in progress as a running node sees it); without an answer, from how each node was
/// created, with no power.
fn status_table(
    file: &TestnetFile,
    previous: &[Option<NodeMetrics>],
    current: &[Option<NodeMetrics>],
    seconds: f64,
    members: Option<&membership::Membership>,
) -> String {
    let epoch = members.map_or_else(|| "-".to_owned(), |m| m.epoch.to_string());
    let mut out = format!(
        "chain {}  epoch {epoch}\n{:<8} {:<9} {:>6} {:>8} {:>8} {:>8} {:>6} {:>8} {:>8}  rpc\n",
        file.chain_id, "node", "role", "power", "pid", "height", "view", "peers", "mempool", "tx/s"
    );
    for (index, node) in file.nodes.iter().enumerate() {
        let (role, power) = match members {
            Some(members) => {
                let key = membership::validator_key(node).map(|k| k.address());
                let (role, power) = members.of(key.as_ref());
                (role.name(), power.to_string())
            }
            None => (role(node), "-".to_owned()),
        };
        let now = current.get(index).copied().flatten();
        let before = previous.get(index).copied().flatten();
        let line = match now {
            None if !node_alive(node) => format!(
                "{:<8} {:<9} {:>6} {:>8} {:>8}",
                node.name, role, power, "-", "stopped"
            ),
            None => format!(
                "{:<8} {:<9} {:>6} {:>8} {:>8}",
                node.name,
                role,
                power,
                node.pid,
                if process::is_paused(node.pid) {
                    "paused"
                } else {
                    "no answer"
                }
            ),
            Some(m) => {
                let rate = match before {
                    Some(b) if seconds > 0.0 => {
                        let delta = m.txs_finalized.saturating_sub(b.txs_finalized);
                        format!("{:.1}", delta as f64 / seconds)
                    }
                    _ => "-".into(),
                };
                format!(
                    "{:<8} {:<9} {:>6} {:>8} {:>8} {:>8} {:>6} {:>8} {:>8}  {}",
                    node.name,
                    role,
                    power,
                    node.pid,
                    m.finalized_height,
                    m.view,
                    m.peers,
                    m.mempool_txs,
                    rate,
                    node.rpc
                )
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: TestnetCommand,
    }

    #[test]
    fn the_command_line_matches_the_documented_interface() {
        let cli = Cli::try_parse_from([
            "meshd",
            "up",
            "--validators",
            "4",
            "--full-nodes",
            "1",
            "--dir",
            "/tmp/x",
            "--base-port",
            "40000",
            "--accounts",
            "7",
            "--detach",
            "--netns",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            TestnetCommand::Up {
                validators: Some(4),
                full_nodes: Some(1),
                dir: "/tmp/x".into(),
                base_port: Some(40_000),
                accounts: Some(7),
                detach: true,
                netns: true,
            }
        );
        let cli = Cli::try_parse_from(["meshd", "status"]).unwrap();
        assert_eq!(
            cli.command,
            TestnetCommand::Status {
                dir: DEFAULT_DIR.into()
            }
        );
        let cli = Cli::try_parse_from(["meshd", "kill", "--node", "3"]).unwrap();
        assert_eq!(
            cli.command,
            TestnetCommand::Kill {
                dir: DEFAULT_DIR.into(),
                node: 3
            }
        );
        assert!(Cli::try_parse_from(["meshd", "restart", "--node", "x"]).is_err());
        let cli = Cli::try_parse_from(["meshd", "partition", "--groups", "0,1/2,3"]).unwrap();
        assert_eq!(
            cli.command,
            TestnetCommand::Partition {
                dir: DEFAULT_DIR.into(),
                groups: "0,1/2,3".into()
            }
        );
        for words in [
            &["meshd", "pause", "--node", "1"][..],
            &["meshd", "resume", "--node", "1"],
            &["meshd", "heal", "--dir", "d"],
        ] {
            assert!(Cli::try_parse_from(words).is_ok(), "{words:?}");
        }
        assert!(Cli::try_parse_from(["meshd", "partition"]).is_err());
        assert!(Cli::try_parse_from(["meshd", "down", "--dir", "d"]).is_ok());
    }

    #[test]
    fn new_shapes_are_bounded_and_existing_shapes_are_kept() {
        let request = UpRequest {
            validators: Some(0),
            full_nodes: None,
            base_port: None,
            accounts: None,
        };
        assert!(new_shape(request).is_err());
        let file = TestnetFile {
            chain_id: CHAIN_ID.into(),
            nodes: vec![],
            accounts_dir: PathBuf::new(),
        };
        let same = UpRequest {
            validators: Some(0),
            full_nodes: Some(0),
            base_port: None,
            accounts: None,
        };
        assert!(check_same_shape(&file, same).is_ok());
        let more = UpRequest {
            validators: Some(2),
            ..same
        };
        assert!(check_same_shape(&file, more).is_err());
    }

    #[test]
    fn up_refuses_a_foreign_non_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("something"), "x").unwrap();
        let err = run(
            TestnetCommand::Up {
                validators: None,
                full_nodes: None,
                dir: dir.path().to_path_buf(),
                base_port: None,
                accounts: None,
                detach: true,
                netns: false,
            },
            Path::new("/nonexistent/meshd"),
        )
        .unwrap_err();
        assert!(matches!(err, TestnetError::NotATestnet { .. }), "{err}");
        let err = run(
            TestnetCommand::Status {
                dir: dir.path().to_path_buf(),
            },
            Path::new("/nonexistent/meshd"),
        )
        .unwrap_err();
        assert!(matches!(err, TestnetError::NoTestnet { .. }), "{err}");
    }
}
