//! # mesh-node
//!
//! The `meshd` node: everything with I/O around the pure ledger and consensus crates — config
//! and keys ([`config`], [`keys`], [`home`]), the libp2p layer ([`network`]), the mempool, the
//! wire formats ([`wire`]), the ledger seen from consensus ([`chain`]), the consensus driver
//! with block sync ([`driver`]), the JSON-RPC backend ([`rpc_backend`], implementing
//! `mesh_rpc::Backend`), metrics, logging, and starting/stopping it all ([`service`]).
//!
//! It must never let bad bytes from a peer or client crash the process: input is bounded and
//! validated, and rejected with a reason. A failed storage write, by contrast, is fatal: the
//! node stops rather than run on a state that may differ from what is on disk.

pub mod chain;
pub mod config;
pub mod driver;
pub mod home;
pub mod keys;
pub mod logging;
pub mod mempool;
pub mod metrics;
pub mod network;
pub mod rpc_backend;
pub mod service;
pub mod wire;
