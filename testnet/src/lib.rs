//! # mesh-testnet
//!
//! Will own `meshd testnet …`: generating keys and genesis for N nodes, running them as child
//! processes on loopback, fault injection, live status and load generation. It drives real
//! `meshd` processes through the RPC client and must never link the node's internals.
//!
//! Status: not built yet (issue 6).
