//! Shared by the `meshd testnet` end-to-end tests: the binary under test and a guard that
//! leaves no node running, pass or fail.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use mesh_testnet::{node_alive, TestnetCommand, TestnetFile};

/// The `meshd` binary built for these tests.
pub fn meshd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_meshd"))
}

/// Stops the testnet in `dir` when dropped: SIGCONT (a paused node handles nothing), `down`,
/// then SIGKILL to any pid still running.
pub struct Guard {
    pub dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let signal = |name: &str| {
            if let Ok(file) = TestnetFile::load(&self.dir) {
                for node in file.nodes.iter().filter(|node| node_alive(node)) {
                    let _ = std::process::Command::new("kill")
                        .arg(format!("-{name}"))
                        .arg(node.pid.to_string())
                        .status();
                }
            }
        };
        signal("CONT");
        let _ = mesh_testnet::run(
            TestnetCommand::Down {
                dir: self.dir.clone(),
            },
            meshd(),
        );
        signal("KILL");
    }
}
