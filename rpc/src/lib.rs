//! # mesh-rpc
//!
//! Will own the JSON-RPC API (jsonrpsee): method definitions, their JSON types, error codes,
//! server setup with limits, and the typed Rust client. It is the only crate that knows JSON
//! wire shapes. It must never reach into the node's internals; the node implements its traits.
//!
//! Status: not built yet (issue 5).
