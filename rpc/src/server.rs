//! The jsonrpsee server: one port for HTTP and WebSocket, explicit limits, CORS, `GET /livez`
//! and `GET /readyz`, and every method of the API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee_server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee_server::{
    stop_channel, BatchRequestConfig, Methods, PingConfig, RpcModule, ServerBuilder, ServerConfig,
    ServerHandle, StopHandle,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::backend::Backend;
use crate::call_limits::CallLimits;
use crate::call_rate::{CallRate, FORGET_EVERY};
use crate::health::HealthLayer;
use crate::http_limits::RequestLimitsLayer;
use crate::methods;
use crate::socket::{self, SocketLimits};

/// Which browser origins may call the API (CORS). In TOML: `cors = "disabled"`,
/// `cors = "any_origin"` or `cors = { origins = ["https://app.example"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorsPolicy {
    /// No CORS headers: browsers on other origins are refused. The default.
    #[default]
    Disabled,
    /// Any origin (`Access-Control-Allow-Origin: *`). For public read-only endpoints.
    AnyOrigin,
    /// Exactly these origins (`https://app.example`).
    Origins(Vec<String>),
}

/// Default port of the server (HTTP and WebSocket on one port).
pub const DEFAULT_RPC_PORT: u16 = 30401;

/// Pipelined calls a connection may start beyond its buffer and its running calls before a
/// byte of their answers is written; more, and the client is taken not to read (see
/// `socket::ConnectionLoad`). Each waiting call holds its request.
const UNWRITTEN_ANSWERS_BURST: u32 = 1024;

/// Default of `connections_per_ip_max` on a loopback address: every local client (a wallet, a
/// bench, an explorer) shares 127.0.0.1.
pub const PER_IP_MAX_LOOPBACK: u32 = 64;
/// Default of `connections_per_ip_max` on any other address: one remote host gets a sixteenth
/// of the default `connections_max`, so sixteen hosts are needed to fill the server.
pub const PER_IP_MAX_EXPOSED: u32 = 16;

/// Default of `calls_per_ip_per_second` on a loopback address: every local client (a bench, a
/// wallet, an indexer) shares 127.0.0.1, and local load tests submit tens of thousands of
/// calls a second.
pub const CALL_RATE_PER_IP_LOOPBACK: u32 = 100_000;
/// Default of `calls_per_ip_per_second` on any other address: one remote host may make a
/// thousand calls a second (an explorer or a busy wallet backend stays well below).
pub const CALL_RATE_PER_IP_EXPOSED: u32 = 1_000;

/// Where the server listens and every bound it enforces, each with its default. It is the
/// node's `config.toml` `[rpc]` section as it stands (serde defaults for missing fields,
/// unknown fields refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcServerConfig {
    /// Address of the HTTP + WebSocket listener. Default `127.0.0.1:30401`: loopback, so
    /// exposing the API is a deliberate act; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// Largest request body (HTTP) or message (WebSocket), bytes. Default 4 MiB: a transaction
    /// of the ledger's 1 MiB ceiling is 2 MiB of hex.
    pub request_body_bytes_max: u32,
    /// Largest response body or message, bytes. Default 32 MiB: a full 8 MiB block with
    /// `full_txs` is about 17 MiB of JSON. Larger answers fail with code -32008.
    pub response_body_bytes_max: u32,
    /// Most calls in one batch; 0 disables batches. Default 100. Larger batches are refused
    /// whole with code -32010. (jsonrpsee's own default is unlimited.)
    pub batch_len_max: u32,
    /// Most open sockets, HTTP and WebSocket together, idle keep-alive ones included: counted
    /// from accept to close. A connection over the limit is answered `503` and closed.
    /// Default 256.
    pub connections_max: u32,
    /// Most open sockets from one IP address (at most `connections_max` whatever this says). A
    /// connection over the limit is answered `503` and closed. Unset, it depends on where the
    /// server listens: [`PER_IP_MAX_LOOPBACK`] on a loopback address, where every local client
    /// shares one address, and the stricter [`PER_IP_MAX_EXPOSED`] anywhere else; see
    /// [`RpcServerConfig::effective_connections_per_ip_max`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections_per_ip_max: Option<u32>,
    /// Calls one IP address may make per second, all its connections together: a token bucket
    /// refilled at this rate; a call without a token is answered at once with code 1203 `busy`
    /// (`what: "call_rate"`). Unset, it depends on where the server listens:
    /// [`CALL_RATE_PER_IP_LOOPBACK`] on a loopback address and the stricter
    /// [`CALL_RATE_PER_IP_EXPOSED`] anywhere else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_per_ip_per_second: Option<u32>,
    /// The size of that bucket: calls one address may make at once above the rate (each call
    /// of a batch counts). Unset: one second's worth of the rate. At least `batch_len_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_per_ip_burst: Option<u32>,
    /// Most calls running at once on one connection (a WebSocket's pipelined calls, an HTTP/2
    /// connection's streams); more are answered at once with code 1203 `busy`. Default 64.
    pub calls_per_connection_max: u32,
    /// Most subscriptions one WebSocket connection may hold. Default 64; more fail with code
    /// -32006.
    pub subscriptions_per_connection_max: u32,
    /// Messages buffered per WebSocket connection before sends wait. Default 64.
    pub connection_buffer_messages: u32,
    /// Most bytes of answers one connection may have waiting to be written (produced, not yet
    /// taken by the client); past it the client is taken not to read and the connection is
    /// closed. Bounds the memory a pipelining client that reads nothing holds with large
    /// answers (full blocks, long key pages), where the count of unwritten answers alone lets
    /// a thousand of them wait. Default 64 MiB; at least `response_body_bytes_max`, so one
    /// answer of the largest size always fits.
    pub connection_unwritten_bytes_max: u32,
    /// Longest wait for a request's headers, ms, from the connection's first byte or the end
    /// of the previous request. Default 10 s.
    pub header_timeout_ms: u64,
    /// Longest wait for a whole request body, ms, from the end of its headers: a body that
    /// never ends is answered `408` and the connection closed. Default 30 s.
    pub body_timeout_ms: u64,
    /// A connection that sends nothing for this long while none of its calls runs is closed,
    /// ms. WebSocket connections are pinged every half of it and closed when the pong does not
    /// come. Default 60 s.
    pub idle_timeout_ms: u64,
    /// A connection that takes none of the bytes the server writes for this long is closed,
    /// ms; while a write waits, nothing more is read from it. Default 20 s.
    pub write_stall_timeout_ms: u64,
    /// Request bodies of more than 256 KiB (`LARGE_REQUEST_BYTES`) handled at once, server-wide:
    /// parsing megabytes of JSON runs on the async workers every client and the consensus
    /// driver share. A large body arriving while all are taken is answered `503` with code 1203
    /// `busy` (`what: "large_requests"`). Default 1.
    pub large_requests_max: u32,
    /// Threads checking submitted transactions (stateless checks and signature) off the
    /// consensus path. Default 2.
    pub admission_threads: u32,
    /// Submissions waiting for an admission thread; more are answered with code 1203 `busy`.
    /// Default 1024.
    pub admission_queue_max: u32,
    /// Storage reads running at once on the blocking pool. Default 16.
    pub storage_reads_max: u32,
    /// Storage reads waiting for a slot; more are answered with code 1203 `busy`.
    /// Default 1024.
    pub storage_queue_max: u32,
    /// Browser origins allowed. Default: none.
    pub cors: CorsPolicy,
    /// Largest transaction accepted, encoded bytes, checked before decoding. Default: the
    /// ledger's ceiling (1 MiB); the node checks its chain's smaller `tx_bytes_max` too.
    pub tx_bytes_max: u32,
    /// `mesh_sendTransactionAndWait`: wait used when the call gives none, ms. Default 30 s.
    pub wait_default_ms: u64,
    /// `mesh_sendTransactionAndWait`: longest wait a call may ask for, ms. Default 120 s.
    pub wait_max_ms: u64,
    /// `mesh_listKeys`: page size when the call gives none. Default 100.
    pub list_keys_default: u32,
    /// `mesh_listKeys`: largest page. Default 1000.
    pub list_keys_max: u32,
    /// `mesh_subscribeBlocks`: most blocks replayed from `from_height`. Default 10,000.
    pub replay_blocks_max: u64,
    /// Headers asked of the backend at once (replay, finality links). Default 256.
    pub headers_per_read: u64,
    /// A subscriber that takes longer than this to accept one notification is slow: it gets a
    /// `lagged` notice and its subscription closes. Default 10 s.
    pub subscription_send_timeout_ms: u64,
    /// `/readyz` `has_peers`: fewest peers to be ready. Default 1; 0 for a single-node chain.
    pub ready_peers_min: u32,
    /// `/readyz` `recent_block`: oldest newest-finalized block to be ready, ms. Default 60 s.
    pub ready_block_age_max_ms: u64,
}

impl Default for RpcServerConfig {
    fn default() -> Self {
        RpcServerConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_RPC_PORT)),
            request_body_bytes_max: 4 << 20,
            response_body_bytes_max: 32 << 20,
            batch_len_max: 100,
            connections_max: 256,
            connections_per_ip_max: None,
            calls_per_ip_per_second: None,
            calls_per_ip_burst: None,
            calls_per_connection_max: 64,
            subscriptions_per_connection_max: 64,
            connection_buffer_messages: 64,
            connection_unwritten_bytes_max: 64 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            write_stall_timeout_ms: 20_000,
            large_requests_max: 1,
            admission_threads: 2,
            admission_queue_max: 1024,
            storage_reads_max: 16,
            storage_queue_max: 1024,
            cors: CorsPolicy::Disabled,
            tx_bytes_max: mesh_ledger::limits::TX_BYTES_CEILING,
            wait_default_ms: 30_000,
            wait_max_ms: 120_000,
            list_keys_default: 100,
            list_keys_max: 1000,
            replay_blocks_max: 10_000,
            headers_per_read: 256,
            subscription_send_timeout_ms: 10_000,
            ready_peers_min: 1,
            ready_block_age_max_ms: 60_000,
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is out of range.
    #[error("invalid RPC config `{field}`: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A method name was registered twice (a bug in this crate).
    #[error("cannot register methods: {0}")]
    Register(String),
}

impl RpcServerConfig {
    /// The per-address socket cap in force: the configured one, or the default for where the
    /// server listens (loopback or exposed).
    pub fn effective_connections_per_ip_max(&self) -> u32 {
        self.connections_per_ip_max
            .unwrap_or(if self.listen_addr.ip().is_loopback() {
                PER_IP_MAX_LOOPBACK
            } else {
                PER_IP_MAX_EXPOSED
            })
    }

    /// The per-address call rate in force, calls per second: the configured one, or the
    /// default for where the server listens (loopback or exposed).
    pub fn effective_calls_per_ip_per_second(&self) -> u32 {
        self.calls_per_ip_per_second
            .unwrap_or(if self.listen_addr.ip().is_loopback() {
                CALL_RATE_PER_IP_LOOPBACK
            } else {
                CALL_RATE_PER_IP_EXPOSED
            })
    }

    /// The per-address burst in force: the configured one, or one second of the rate.
    pub fn effective_calls_per_ip_burst(&self) -> u32 {
        self.calls_per_ip_burst
            .unwrap_or_else(|| self.effective_calls_per_ip_per_second())
    }

    /// Checks the relations between settings.
    pub fn validate(&self) -> Result<(), StartError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(StartError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.request_body_bytes_max < 1024 {
            return invalid("request_body_bytes_max", "must be at least 1024");
        }
        if u64::from(self.request_body_bytes_max) < 2 * u64::from(self.tx_bytes_max) {
            return invalid(
                "request_body_bytes_max",
                "must hold the hex of the largest transaction (2 × tx_bytes_max)",
            );
        }
        if self.response_body_bytes_max < 1024 {
            return invalid("response_body_bytes_max", "must be at least 1024");
        }
        if self.connections_max == 0 {
            return invalid("connections_max", "must be at least 1");
        }
        if self.connections_per_ip_max == Some(0) {
            return invalid("connections_per_ip_max", "must be at least 1");
        }
        if self.calls_per_ip_per_second == Some(0) {
            return invalid("calls_per_ip_per_second", "must be at least 1");
        }
        if self.effective_calls_per_ip_burst() < self.batch_len_max.max(1) {
            return invalid(
                "calls_per_ip_burst",
                "must be at least batch_len_max (and 1), or a full batch could never pass",
            );
        }
        if self.calls_per_connection_max == 0 {
            return invalid("calls_per_connection_max", "must be at least 1");
        }
        if self.connection_buffer_messages == 0 {
            return invalid("connection_buffer_messages", "must be at least 1");
        }
        if self.connection_unwritten_bytes_max < self.response_body_bytes_max {
            return invalid(
                "connection_unwritten_bytes_max",
                "must be at least response_body_bytes_max",
            );
        }
        for (field, ms) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("write_stall_timeout_ms", self.write_stall_timeout_ms),
        ] {
            if ms == 0 {
                return invalid(field, "must be at least 1");
            }
        }
        // Pings go out every half of it: shorter than a second would be mostly pings.
        if self.idle_timeout_ms < 1000 {
            return invalid("idle_timeout_ms", "must be at least 1000");
        }
        for (field, count) in [
            ("large_requests_max", self.large_requests_max),
            ("admission_threads", self.admission_threads),
            ("admission_queue_max", self.admission_queue_max),
            ("storage_reads_max", self.storage_reads_max),
            ("storage_queue_max", self.storage_queue_max),
        ] {
            if count == 0 {
                return invalid(field, "must be at least 1");
            }
        }
        if self.list_keys_default == 0 || self.list_keys_default > self.list_keys_max {
            return invalid("list_keys_default", "must be in 1..=list_keys_max");
        }
        if self.wait_default_ms > self.wait_max_ms {
            return invalid("wait_default_ms", "must be at most wait_max_ms");
        }
        if self.headers_per_read == 0 {
            return invalid("headers_per_read", "must be at least 1");
        }
        if self.subscription_send_timeout_ms == 0 {
            return invalid("subscription_send_timeout_ms", "must be at least 1");
        }
        Ok(())
    }

    fn cors_layer(&self) -> Result<CorsLayer, StartError> {
        use http::{header, HeaderValue, Method};
        let base = CorsLayer::new()
            .allow_methods([Method::POST, Method::GET, Method::OPTIONS])
            .allow_headers([header::CONTENT_TYPE]);
        Ok(match &self.cors {
            // A layer with no allowed origin adds no allow headers: browsers refuse.
            CorsPolicy::Disabled => CorsLayer::new(),
            CorsPolicy::AnyOrigin => base.allow_origin(AllowOrigin::any()),
            CorsPolicy::Origins(origins) => {
                let values = origins
                    .iter()
                    .map(|origin| {
                        HeaderValue::from_str(origin).map_err(|err| StartError::InvalidConfig {
                            field: "cors",
                            reason: format!("origin {origin:?}: {err}"),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                base.allow_origin(AllowOrigin::list(values))
            }
        })
    }
}

/// A running server. Dropping it does not stop the server; call [`RpcServerHandle::stop`].
#[derive(Debug, Clone)]
pub struct RpcServerHandle {
    handle: ServerHandle,
    local_addr: SocketAddr,
}

impl RpcServerHandle {
    /// The address the server listens on (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Asks the server to stop; open connections are closed. Idempotent.
    pub fn stop(&self) {
        // An error only says it was already stopped.
        let _ = self.handle.stop();
    }

    /// Completes when the server has stopped.
    pub async fn stopped(self) {
        self.handle.stopped().await;
    }
}

/// Starts the server on `addr` (use `127.0.0.1:0` for a free port) with `config`, answering
/// from `backend`. Must be called within a tokio runtime; the server runs on it until stopped.
///
/// The accept loop is ours ([`crate::socket`]): it counts sockets, not requests, per server
/// and per address, and times out idle and stalled connections; each connection is then
/// jsonrpsee's, with our HTTP middleware (CORS, health, body and id checks) and RPC middleware
/// (calls per connection, concurrent batches).
pub async fn start<B: Backend>(
    config: RpcServerConfig,
    backend: Arc<B>,
) -> Result<RpcServerHandle, StartError> {
    config.validate()?;
    let addr = config.listen_addr;
    let cors = config.cors_layer()?;
    let api = methods::Api::new(backend, config.clone());
    let module =
        methods::module(api.clone()).map_err(|err| StartError::Register(err.to_string()))?;
    let batch = match config.batch_len_max {
        0 => BatchRequestConfig::Disabled,
        len => BatchRequestConfig::Limit(len),
    };
    let idle_timeout = millis(config.idle_timeout_ms);
    // A WebSocket is pinged every half idle timeout, so a live one is never idle, and closed
    // when no pong came within the idle timeout (a half-open connection).
    let ping = PingConfig::new()
        .ping_interval(idle_timeout / 2)
        .inactive_limit(idle_timeout)
        .max_failures(1);
    let server_config = ServerConfig::builder()
        .max_request_body_size(config.request_body_bytes_max)
        .max_response_body_size(config.response_body_bytes_max)
        // jsonrpsee counts HTTP requests in flight and WebSocket connections against this;
        // sockets are bounded by our accept loop, so this never binds before it does.
        .max_connections(
            config
                .connections_max
                .saturating_mul(config.calls_per_connection_max),
        )
        .max_subscriptions_per_connection(config.subscriptions_per_connection_max)
        .set_batch_request_config(batch)
        .set_message_buffer_capacity(config.connection_buffer_messages)
        .enable_ws_ping(ping)
        .build();
    let http_middleware = tower::ServiceBuilder::new()
        .layer(cors)
        .layer(HealthLayer::new(api))
        .layer(RequestLimitsLayer::new(
            config.request_body_bytes_max,
            millis(config.body_timeout_ms),
            config.large_requests_max,
        ));
    let response_bytes_max = config.response_body_bytes_max as usize;
    let rate = Arc::new(CallRate::new(
        config.effective_calls_per_ip_per_second(),
        config.effective_calls_per_ip_burst(),
    ));
    let middleware_rate = Arc::clone(&rate);
    let rpc_middleware = RpcServiceBuilder::new().layer_fn(move |service| {
        CallLimits::new(service, response_bytes_max, Arc::clone(&middleware_rate))
    });
    let service_builder = ServerBuilder::with_config(server_config)
        .set_http_middleware(http_middleware)
        .set_rpc_middleware(rpc_middleware)
        .to_service_builder();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let (stop, handle) = stop_channel();
    let methods: Methods = module.into();
    let limits = SocketLimits {
        connections_max: config.connections_max,
        connections_per_ip_max: config.effective_connections_per_ip_max(),
        calls_per_connection_max: config.calls_per_connection_max,
        // What the connection's buffer holds, one answer per call that may run, and a burst
        // of pipelined calls read before the first answer could be written.
        unwritten_answers_max: config
            .connection_buffer_messages
            .saturating_add(config.calls_per_connection_max)
            .saturating_add(UNWRITTEN_ANSWERS_BURST),
        unwritten_bytes_max: u64::from(config.connection_unwritten_bytes_max),
        header_timeout: millis(config.header_timeout_ms),
        idle_timeout,
        write_stall_timeout: millis(config.write_stall_timeout_ms),
        ws_message_bytes_max: config.request_body_bytes_max,
        batch_len_max: config.batch_len_max,
    };
    let connection_stop = stop.clone();
    let make_service = move || {
        service_builder
            .clone()
            .build(methods.clone(), connection_stop.clone())
    };
    tokio::spawn(forget_idle_addresses(rate, stop.clone()));
    tokio::spawn(socket::serve(listener, make_service, stop, limits));
    tracing::info!(%local_addr, "JSON-RPC server listening (HTTP and WebSocket)");
    Ok(RpcServerHandle { handle, local_addr })
}

/// Drops the addresses whose call bucket is full again, every [`FORGET_EVERY`], until the
/// server stops: the limiter's memory follows the active clients, not all clients ever seen.
async fn forget_idle_addresses(rate: Arc<CallRate>, stop: StopHandle) {
    let stopped = stop.shutdown();
    tokio::pin!(stopped);
    let mut every = tokio::time::interval(FORGET_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            _ = every.tick() => rate.forget_idle(),
        }
    }
}

/// The API as a jsonrpsee module, for embedding in another server or calling in-process.
pub fn rpc_module<B: Backend>(
    config: RpcServerConfig,
    backend: Arc<B>,
) -> Result<RpcModule<methods::Api<B>>, StartError> {
    config.validate()?;
    methods::module(methods::Api::new(backend, config))
        .map_err(|err| StartError::Register(err.to_string()))
}

/// `Duration` of a millisecond setting.
pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
