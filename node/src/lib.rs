//! # mesh-node
//!
//! The `meshd` node: everything with I/O around the pure ledger and consensus crates. Today it
//! holds the mempool; the libp2p swarm, consensus driver, block sync, config, keys, metrics and
//! CLI arrive with issue 4.
//!
//! It must never let bad bytes from a peer or client crash the process: input is bounded and
//! validated, and rejected with a reason. A failed storage write, by contrast, is fatal: the
//! node stops rather than run on a state that may differ from what is on disk.

pub mod config;
pub mod home;
pub mod keys;
pub mod mempool;
pub mod network;
