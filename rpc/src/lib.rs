//! # mesh-rpc
//!
//! Mesh Ledger's JSON-RPC API, built on jsonrpsee.
//!
//! ## What this crate owns
//! - The wire shapes of every method, parameter, result and notification ([`types`]), and the
//!   conventions they follow: `0x` lowercase hex for bytes, JSON numbers for every `u64`.
//! - The error table ([`error`]): JSON-RPC standard codes for malformed requests, our own
//!   documented codes `1000..=1999` for domain errors, each with a machine-readable `data`
//!   object.
//! - The boundary to the node ([`Backend`]): typed questions the node answers; this crate
//!   composes them into answers (proof bundles, replay then live streams, waits).
//! - The server ([`start`]): one port for HTTP and WebSocket, every limit explicit in
//!   [`RpcServerConfig`], CORS, `GET /livez` and `GET /readyz`.
//! - The typed client ([`Client`]) and the checks that let a client trust no single node
//!   ([`verify`]).
//!
//! `docs/rpc.md` is the reference for API users.
//!
//! ## What it must never do
//! - Reach into the node's internals or link RocksDB: it depends on `mesh-ledger` with default
//!   features off and on `mesh-consensus` for types only. The node implements [`Backend`].
//! - Trust client input: every parameter is parsed into a typed value with a bounded size
//!   before anything acts on it, and a malformed one is an error answer, never a panic.
//! - Drop an event silently: a subscriber that falls behind gets a `lagged` notice naming where
//!   to resume, then its subscription closes.
//! - Accept an unbounded request, batch, page, replay, wait or number of connections.
//!
//! ## Starting the server (what `meshd run` does)
//! ```ignore
//! let backend: Arc<MyNodeBackend> = ...; // impl mesh_rpc::Backend
//! let handle = mesh_rpc::start(config.rpc.clone(), backend).await?;
//! // ... on shutdown:
//! handle.stop();
//! handle.stopped().await;
//! ```

pub mod backend;
mod call_limits;
mod call_rate;
pub mod client;
pub mod error;
mod health;
mod http_limits;
mod methods;
pub mod server;
mod socket;
pub mod types;
pub mod verify;
mod ws_inspect;

pub use backend::{
    Backend, BlockRef, DroppedTx, EpochValidators, FinalizedEvent, KeyValue, StateRead, TxLookup,
};
pub use client::{Client, ClientConfig, ClientError, HttpTransport, WsTransport};
pub use error::ApiError;
pub use methods::{Api, EPOCH_CHANGES_MAX};
pub use server::{
    rpc_module, start, CorsPolicy, RpcServerConfig, RpcServerHandle, StartError,
    CALL_RATE_PER_IP_EXPOSED, CALL_RATE_PER_IP_LOOPBACK, DEFAULT_RPC_PORT, PER_IP_MAX_EXPOSED,
    PER_IP_MAX_LOOPBACK,
};
pub use types::FinalityRecord;
pub use verify::{TrustAnchor, VerifyError};
