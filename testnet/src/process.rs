//! Node processes: starting `meshd run`, telling whether a recorded pid is still that node,
//! and stopping it (SIGTERM, then SIGKILL after a timeout).
//!
//! Signals are sent with the system `kill` utility (the workspace forbids `unsafe`, and this
//! keeps a signal crate out of the build). Whether a pid is still the node is read from
//! `/proc/<pid>/cmdline` on Linux — the command line must name the node's home, so a reused pid
//! or a zombie is never taken for the node; elsewhere `kill -0` is the fallback.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::state::NodeEntry;
use crate::TestnetError;

/// How long a node gets to stop after SIGTERM before it is sent SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node gets to disappear after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll interval while waiting for processes.
const POLL: Duration = Duration::from_millis(100);

/// File in a node's home that receives its stdout and stderr.
pub(crate) const LOG_FILE: &str = "meshd.log";

/// Starts `<meshd> run --home <home> --admin` with its output appended to `<home>/meshd.log`,
/// in its own process group (a Ctrl-C meant for the testnet tool does not reach the nodes; the
/// tool stops them itself). `--admin` serves `POST /admin/partition` and `/admin/heal` on the
/// metrics listener (see `faults`); a `meshd` whose `run --help` does not list `--admin` is
/// started without it (`partition` then reports the 404).
///
/// With `namespace` (`up --netns`), the node runs as `ip netns exec <namespace> <meshd> run …`:
/// `ip` enters the namespace and execs `meshd` in the same process, so the pid recorded is the
/// node's and its command line names its home, as [`node_alive`] requires.
pub(crate) fn spawn_node(
    meshd: &Path,
    home: &Path,
    namespace: Option<&str>,
) -> Result<Child, TestnetError> {
    let log_path = home.join(LOG_FILE);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| TestnetError::io(&log_path, source))?;
    let log_err = log
        .try_clone()
        .map_err(|source| TestnetError::io(&log_path, source))?;
    let mut command = match namespace {
        None => Command::new(meshd),
        Some(namespace) => {
            let mut command = Command::new(crate::netns::ip_program());
            command.args(["netns", "exec", namespace]).arg(meshd);
            command
        }
    };
    command.arg("run").arg("--home").arg(home);
    if supports_admin(meshd) {
        command.arg("--admin");
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0);
    }
    command.spawn().map_err(|source| TestnetError::Spawn {
        program: meshd.display().to_string(),
        source,
    })
}

/// Whether `<meshd> run --help` lists the `--admin` flag.
fn supports_admin(meshd: &Path) -> bool {
    Command::new(meshd)
        .args(["run", "--help"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("--admin"))
}

/// Whether the process is stopped (SIGSTOP: state `T` in `/proc/<pid>/stat`); false where
/// there is no `/proc`.
pub(crate) fn is_paused(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S …`: the state follows the last `)` (comm may hold spaces and parentheses).
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "T")
}

/// Whether the node's recorded pid is a live `meshd` running on the node's home.
pub fn node_alive(node: &NodeEntry) -> bool {
    pid_runs_home(node.pid, &node.home)
}

fn pid_runs_home(pid: u32, home: &Path) -> bool {
    if pid == 0 {
        return false;
    }
    let proc_root = Path::new("/proc");
    if proc_root.join("self").exists() {
        // A zombie's cmdline is empty, so it does not match.
        let Ok(cmdline) = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")) else {
            return false;
        };
        let home = home.as_os_str().as_encoded_bytes();
        return cmdline.split(|b| *b == 0).any(|arg| arg == home);
    }
    signal(pid, "0")
}

/// Sends `kill -<name> <pid>`; whether `kill` reported success.
pub(crate) fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Sends SIGKILL to the node if it is still running, and waits until it is gone.
pub(crate) fn kill_node(node: &NodeEntry) -> Result<(), TestnetError> {
    if node_alive(node) {
        signal(node.pid, "KILL");
    }
    wait_gone(std::slice::from_ref(node), KILL_TIMEOUT)
}

/// Stops nodes cleanly: SIGTERM to each one running, up to [`STOP_TIMEOUT`] for all to exit,
/// then SIGKILL to the rest. Returns the names of the nodes that had to be killed.
pub(crate) fn stop_nodes(nodes: &[NodeEntry]) -> Result<Vec<String>, TestnetError> {
    for node in nodes.iter().filter(|node| node_alive(node)) {
        signal(node.pid, "TERM");
        // A paused node handles SIGTERM only once it runs again.
        signal(node.pid, "CONT");
    }
    let _ = wait_gone(nodes, STOP_TIMEOUT);
    let mut killed = Vec::new();
    for node in nodes.iter().filter(|node| node_alive(node)) {
        signal(node.pid, "KILL");
        killed.push(node.name.clone());
    }
    wait_gone(nodes, KILL_TIMEOUT)?;
    Ok(killed)
}

fn wait_gone(nodes: &[NodeEntry], limit: Duration) -> Result<(), TestnetError> {
    let deadline = Instant::now() + limit;
    loop {
        let running: Vec<&NodeEntry> = nodes.iter().filter(|node| node_alive(node)).collect();
        let Some(first) = running.first() else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(TestnetError::StillRunning {
                name: first.name.clone(),
                pid: first.pid,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Stops nodes this process started and still holds: like [`stop_nodes`] but reaping the
/// children, so none is left a zombie.
pub(crate) fn stop_children(children: &mut [(NodeEntry, Child)]) -> Vec<String> {
    for (node, child) in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            signal(node.pid, "TERM");
            signal(node.pid, "CONT");
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline
        && children
            .iter_mut()
            .any(|(_, child)| matches!(child.try_wait(), Ok(None)))
    {
        std::thread::sleep(POLL);
    }
    let mut killed = Vec::new();
    for (node, child) in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
            killed.push(node.name.clone());
        }
    }
    killed
}

/// The last `lines` lines of a node's log, for error messages.
pub(crate) fn log_tail(home: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read_to_string(home.join(LOG_FILE)) else {
        return String::new();
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_pid_counts_only_while_its_command_line_names_the_home() {
        let dir = tempfile::tempdir().unwrap();
        // `sh -c SCRIPT NAME` keeps NAME (here the home) in its command line.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("trap 'exit 0' TERM; while :; do sleep 0.1; done")
            .arg(dir.path())
            .spawn()
            .unwrap();
        let node = NodeEntry {
            name: "node-0".into(),
            pid: child.id(),
            home: dir.path().to_path_buf(),
            rpc: String::new(),
            p2p: String::new(),
            metrics: String::new(),
            validator: true,
        };
        // Between fork and exec the command line is still this test's: poll.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !node_alive(&node) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(node_alive(&node));
        let other = NodeEntry {
            home: dir.path().join("elsewhere"),
            ..node.clone()
        };
        assert!(!node_alive(&other), "another home is another process");
        let killed = stop_nodes(std::slice::from_ref(&node));
        // Not reaped yet: a zombie must not count as running.
        assert!(killed.is_ok());
        assert!(!node_alive(&node));
        let _ = child.wait();
    }
}
