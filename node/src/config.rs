//! `config.toml`: every setting of a node, with its default and what it bounds.
//!
//! Unknown keys are refused and every error names the offending field, so a typo never
//! silently falls back to a default.

use std::net::SocketAddr;
use std::path::Path;

use mesh_rpc::{CorsPolicy, RpcServerConfig, StartError};
use serde::{Deserialize, Serialize};

use crate::mempool::MempoolConfig;

/// Default TCP port of the peer-to-peer listener.
pub const DEFAULT_P2P_PORT: u16 = 30400;
/// Default port of JSON-RPC (HTTP and WebSocket on one port).
pub use mesh_rpc::DEFAULT_RPC_PORT;
/// Default port of the Prometheus metrics endpoint.
pub const DEFAULT_METRICS_PORT: u16 = 30402;
/// Largest config file read.
const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A human-readable name for this node, shown in logs and status.
    pub moniker: String,
    pub p2p: P2pConfig,
    /// The JSON-RPC server: where it listens and every bound it enforces (`docs/rpc.md`,
    /// "Limits"); the `[rpc]` section maps onto it field by field.
    pub rpc: RpcServerConfig,
    pub metrics: MetricsConfig,
    pub mempool: MempoolSettings,
    pub consensus: ConsensusSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            moniker: "mesh-node".into(),
            p2p: P2pConfig::default(),
            rpc: RpcServerConfig::default(),
            metrics: MetricsConfig::default(),
            mempool: MempoolSettings::default(),
            consensus: ConsensusSettings::default(),
        }
    }
}

/// Peer-to-peer networking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    /// libp2p multiaddress to listen on.
    pub listen_addr: String,
    /// Peers to dial at start (`/ip4/…/tcp/…/p2p/<peer id>`); the rest are discovered.
    pub bootnodes: Vec<String>,
    /// Most connected peers.
    pub max_peers: u32,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen_addr: format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"),
            bootnodes: Vec::new(),
            max_peers: 50,
        }
    }
}

/// `(server setting, config key)` of every `[rpc]` limit, for error messages.
const RPC_FIELDS: &[(&str, &str)] = &[
    ("request_body_bytes_max", "rpc.request_body_bytes_max"),
    ("response_body_bytes_max", "rpc.response_body_bytes_max"),
    ("batch_len_max", "rpc.batch_len_max"),
    ("connections_max", "rpc.connections_max"),
    ("connections_per_ip_max", "rpc.connections_per_ip_max"),
    ("calls_per_ip_per_second", "rpc.calls_per_ip_per_second"),
    ("calls_per_ip_burst", "rpc.calls_per_ip_burst"),
    ("calls_per_connection_max", "rpc.calls_per_connection_max"),
    ("header_timeout_ms", "rpc.header_timeout_ms"),
    ("body_timeout_ms", "rpc.body_timeout_ms"),
    ("idle_timeout_ms", "rpc.idle_timeout_ms"),
    ("write_stall_timeout_ms", "rpc.write_stall_timeout_ms"),
    ("large_requests_max", "rpc.large_requests_max"),
    ("admission_threads", "rpc.admission_threads"),
    ("admission_queue_max", "rpc.admission_queue_max"),
    ("storage_reads_max", "rpc.storage_reads_max"),
    ("storage_queue_max", "rpc.storage_queue_max"),
    (
        "subscriptions_per_connection_max",
        "rpc.subscriptions_per_connection_max",
    ),
    (
        "connection_buffer_messages",
        "rpc.connection_buffer_messages",
    ),
    (
        "connection_unwritten_bytes_max",
        "rpc.connection_unwritten_bytes_max",
    ),
    ("cors", "rpc.cors"),
    ("tx_bytes_max", "rpc.tx_bytes_max"),
    ("wait_default_ms", "rpc.wait_default_ms"),
    ("wait_max_ms", "rpc.wait_max_ms"),
    ("list_keys_default", "rpc.list_keys_default"),
    ("list_keys_max", "rpc.list_keys_max"),
    ("replay_blocks_max", "rpc.replay_blocks_max"),
    ("headers_per_read", "rpc.headers_per_read"),
    (
        "subscription_send_timeout_ms",
        "rpc.subscription_send_timeout_ms",
    ),
    ("ready_peers_min", "rpc.ready_peers_min"),
    ("ready_block_age_max_ms", "rpc.ready_block_age_max_ms"),
];

/// The TOML value of `[rpc] cors`.
fn cors_toml(cors: &CorsPolicy) -> String {
    match cors {
        CorsPolicy::Disabled => "\"disabled\"".into(),
        CorsPolicy::AnyOrigin => "\"any_origin\"".into(),
        CorsPolicy::Origins(origins) => {
            let list = origins
                .iter()
                .map(|origin| format!("{origin:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{{ origins = [{list}] }}")
        }
    }
}

/// Prometheus metrics endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the `/metrics` HTTP listener. Loopback by default.
    pub listen_addr: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT)),
        }
    }
}

/// Mempool bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolSettings {
    /// Most pending transactions.
    pub max_txs: usize,
    /// Most pending bytes.
    pub max_bytes: usize,
    /// How far ahead of an account's nonce a pending transaction may be.
    pub future_nonce_window: u64,
    /// Recently seen transaction hashes remembered for deduplication.
    pub seen_cache_size: usize,
}

impl Default for MempoolSettings {
    fn default() -> Self {
        let defaults = MempoolConfig::default();
        MempoolSettings {
            max_txs: defaults.max_txs,
            max_bytes: defaults.max_bytes,
            future_nonce_window: defaults.future_nonce_window,
            seen_cache_size: defaults.seen_cache_size,
        }
    }
}

impl From<&MempoolSettings> for MempoolConfig {
    fn from(settings: &MempoolSettings) -> MempoolConfig {
        MempoolConfig {
            max_txs: settings.max_txs,
            max_bytes: settings.max_bytes,
            future_nonce_window: settings.future_nonce_window,
            seen_cache_size: settings.seen_cache_size,
        }
    }
}

/// Block production and consensus timing. Every validator of a chain should use the same
/// values: a leader slower than its peers' view timeout loses its views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusSettings {
    /// Least time between a block's timestamp and its child's: the leader waits this long
    /// before building, so an idle chain makes a few blocks per second, not hundreds.
    pub block_interval_ms: u64,
    /// With no transaction to include, the leader proposes an empty block only this long after
    /// the parent (CometBFT's `create_empty_blocks_interval`); a transaction that arrives
    /// meanwhile goes into a block at the block interval. At most `block_interval_ms` turns
    /// the wait off. Unset (configs written before it existed): see
    /// [`ConsensusSettings::empty_block_interval`]. (The field's own `default` makes a missing
    /// key `None`; the struct's would make it `Default::default()`'s `Some(1000)`, which an
    /// old testnet config's 1 s view timeout refuses.)
    #[serde(default)]
    pub empty_block_interval_ms: Option<u64>,
    /// How long a view waits for a block before validators vote to skip it; doubles on each
    /// consecutive skipped view.
    pub view_timeout_ms: u64,
    /// Ceiling of the doubled view timeout.
    pub view_timeout_max_ms: u64,
    /// A proposal stamped further than this ahead of our clock is refused.
    pub max_clock_drift_ms: u64,
}

impl Default for ConsensusSettings {
    fn default() -> Self {
        ConsensusSettings {
            block_interval_ms: 500,
            empty_block_interval_ms: Some(1_000),
            view_timeout_ms: 2_000,
            view_timeout_max_ms: 30_000,
            max_clock_drift_ms: 10_000,
        }
    }
}

impl ConsensusSettings {
    /// The empty-block interval in force: the configured one, or for a config that predates
    /// the setting 1 s capped at half the view timeout, so an old config stays valid.
    pub fn empty_block_interval(&self) -> u64 {
        self.empty_block_interval_ms
            .unwrap_or_else(|| (self.view_timeout_ms / 2).min(1_000))
    }
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than {CONFIG_BYTES_MAX} bytes")]
    TooLarge { path: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: field `{field}` is invalid: {reason}")]
    Invalid {
        path: String,
        field: &'static str,
        reason: String,
    },
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let len = std::fs::metadata(path)
            .map_err(|source| ConfigError::Io {
                path: shown.clone(),
                source,
            })?
            .len();
        if len > CONFIG_BYTES_MAX {
            return Err(ConfigError::TooLarge { path: shown });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: shown.clone(),
            source,
        })?;
        Config::parse(&text, &shown)
    }

    /// Parses and checks config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // toml's messages name the key and show the offending line.
        let config: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: origin.to_owned(),
            message: err.to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks relations serde cannot.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                path: origin.to_owned(),
                field,
                reason: reason.to_owned(),
            })
        };
        if self.p2p.max_peers == 0 {
            return invalid("p2p.max_peers", "must be at least 1");
        }
        if !self.p2p.listen_addr.starts_with('/') {
            return invalid(
                "p2p.listen_addr",
                "must be a multiaddress such as /ip4/0.0.0.0/tcp/30400",
            );
        }
        if let Some(bad) = self.p2p.bootnodes.iter().find(|b| !b.starts_with('/')) {
            return Err(ConfigError::Invalid {
                path: origin.to_owned(),
                field: "p2p.bootnodes",
                reason: format!(
                    "{bad:?} is not a multiaddress such as /ip4/10.0.0.1/tcp/30400/p2p/<peer id>"
                ),
            });
        }
        if self.mempool.max_txs == 0 || self.mempool.max_bytes == 0 {
            return invalid("mempool", "max_txs and max_bytes must be at least 1");
        }
        let consensus = &self.consensus;
        if consensus.view_timeout_ms < consensus.block_interval_ms.saturating_mul(2).max(100) {
            return invalid(
                "consensus.view_timeout_ms",
                "must be at least twice consensus.block_interval_ms (and at least 100)",
            );
        }
        // The leader of an idle chain holds its view this long before proposing: the others
        // must not give up on the view first.
        if consensus.view_timeout_ms < consensus.empty_block_interval().saturating_mul(2) {
            return invalid(
                "consensus.view_timeout_ms",
                "must be at least twice consensus.empty_block_interval_ms",
            );
        }
        if consensus.view_timeout_max_ms < consensus.view_timeout_ms {
            return invalid(
                "consensus.view_timeout_max_ms",
                "must be at least consensus.view_timeout_ms",
            );
        }
        if consensus.block_interval_ms > 60_000 {
            return invalid("consensus.block_interval_ms", "must be at most 60000");
        }
        if let Err(StartError::InvalidConfig { field, reason }) = self.rpc.validate() {
            let field = RPC_FIELDS
                .iter()
                .find(|(name, _)| *name == field)
                .map_or("rpc", |(_, key)| *key);
            return invalid(field, &reason);
        }
        Ok(())
    }

    /// The TOML written by `meshd init`: every setting, each with a comment.
    pub fn to_documented_toml(&self) -> String {
        let bootnodes = self
            .p2p
            .bootnodes
            .iter()
            .map(|b| format!("{b:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            r#"# Mesh Ledger node configuration. Every setting is listed with its meaning; see
# docs/operators.md for the full reference. Unknown keys are refused.

# Name of this node in logs and status.
moniker = {moniker:?}

[p2p]
# libp2p listen address (TCP). Default port {p2p_port}.
listen_addr = {p2p_listen:?}
# Peers dialled at start, as /ip4/<ip>/tcp/<port>/p2p/<peer id>; others are discovered.
bootnodes = [{bootnodes}]
# Most connected peers.
max_peers = {max_peers}

[rpc]
# JSON-RPC over HTTP and WebSocket on one port (default {rpc_port}). Loopback only unless you
# change it. Every limit below is enforced by the server; docs/rpc.md "Limits" has the details.
listen_addr = "{rpc_listen}"
# Largest request body (HTTP) or WebSocket message, bytes; at least 2 x tx_bytes_max.
request_body_bytes_max = {rpc_request_max}
# Largest response body or WebSocket message, bytes (larger answers fail with -32008).
response_body_bytes_max = {rpc_response_max}
# Most calls in one JSON-RPC batch; 0 disables batches. Longer batches are refused whole.
batch_len_max = {rpc_batch_max}
# Most open sockets, HTTP and WebSocket together, idle keep-alive ones included; more are
# answered 503 and closed.
connections_max = {rpc_connections_max}
# Most open sockets from one IP address (never more than connections_max); more are answered
# 503 and closed. Unset: {per_ip_loopback} when listen_addr is a loopback address (local clients
# share it), {per_ip_exposed} anywhere else.
{rpc_per_ip_max}
# Calls one IP address may make per second, all its connections together (a token bucket);
# more are answered at once with code 1203 "busy" (what: "call_rate"). Unset:
# {call_rate_loopback} when listen_addr is a loopback address, {call_rate_exposed} anywhere else.
{rpc_call_rate}
# Calls one address may make at once above that rate (the bucket's size; each call of a batch
# counts). Unset: one second of the rate. At least batch_len_max.
{rpc_call_burst}
# Most calls running at once on one connection (pipelined WebSocket calls, HTTP/2 streams);
# more are answered at once with code 1203 "busy". A batch's calls run concurrently within it.
calls_per_connection_max = {rpc_calls_max}
# Most subscriptions one WebSocket connection may hold.
subscriptions_per_connection_max = {rpc_subscriptions_max}
# Messages buffered per WebSocket connection before sends wait.
connection_buffer_messages = {rpc_buffer}
# Most bytes of answers one connection may have waiting to be written; past it the client is
# taken not to read and is closed. At least response_body_bytes_max.
connection_unwritten_bytes_max = {rpc_unwritten_bytes}
# Longest wait for a request's headers (ms).
header_timeout_ms = {rpc_header_timeout}
# Longest wait for a whole request body (ms); a body that never ends is answered 408.
body_timeout_ms = {rpc_body_timeout}
# A connection silent this long while none of its calls runs is closed (ms); WebSockets are
# pinged every half of it and closed when no pong comes.
idle_timeout_ms = {rpc_idle_timeout}
# A connection that reads nothing the server writes for this long is closed (ms); while a
# write waits, nothing more is read from it.
write_stall_timeout_ms = {rpc_write_stall}
# Request bodies over 256 KiB handled at once, server-wide (parsing megabytes of JSON takes
# the async workers); one arriving while all are taken is answered 503 with 1203 "busy".
large_requests_max = {rpc_large_requests}
# Threads checking submitted transactions (size, chain, fee, signature) off the consensus
# path, and submissions that may wait for them; more are answered 1203 "busy".
admission_threads = {rpc_admission_threads}
admission_queue_max = {rpc_admission_queue}
# Storage reads running at once, and reads that may wait; more are answered 1203 "busy".
storage_reads_max = {rpc_storage_reads}
storage_queue_max = {rpc_storage_queue}
# Browser origins allowed (CORS): "disabled", "any_origin" or {{ origins = ["https://app.example"] }}.
cors = {rpc_cors}
# Largest transaction the API accepts, encoded bytes, checked before decoding (the chain's own
# params.tx_bytes_max applies too).
tx_bytes_max = {rpc_tx_max}
# mesh_sendTransactionAndWait: wait when the call names none, and the longest it may ask (ms).
wait_default_ms = {rpc_wait_default}
wait_max_ms = {rpc_wait_max}
# mesh_listKeys: page size when the call names none, and the largest page.
list_keys_default = {rpc_keys_default}
list_keys_max = {rpc_keys_max}
# mesh_subscribeBlocks: most blocks replayed from from_height.
replay_blocks_max = {rpc_replay_max}
# Headers read from the database at once (replay, finality links of proofs).
headers_per_read = {rpc_headers_per_read}
# A subscriber slower than this to take one notification gets a "lagged" notice and is
# closed (ms).
subscription_send_timeout_ms = {rpc_send_timeout}
# GET /readyz: fewest connected peers to be ready (0 for a single-node chain), and the oldest
# newest-finalized block to be ready (ms).
ready_peers_min = {rpc_ready_peers}
ready_block_age_max_ms = {rpc_ready_age}

[metrics]
# Prometheus metrics at http://<listen_addr>/metrics. Loopback only unless you change it.
listen_addr = "{metrics_listen}"

[mempool]
# Most pending transactions.
max_txs = {max_txs}
# Most pending bytes (encoded transactions).
max_bytes = {max_bytes}
# How far ahead of its account's nonce a pending transaction may be.
future_nonce_window = {window}
# Recently seen transaction hashes remembered to drop repeated gossip cheaply.
seen_cache_size = {seen}

[consensus]
# Least time between consecutive blocks (ms).
block_interval_ms = {block_interval}
# With no transaction to include, the leader proposes an empty block only this long after the
# previous block (ms); a transaction that arrives meanwhile is proposed at block_interval_ms.
# At most block_interval_ms: empty blocks at the block interval.
empty_block_interval_ms = {empty_block_interval}
# How long a view waits for its block before validators vote to skip it (ms); doubles on each
# consecutive skipped view. At least twice block_interval_ms and twice
# empty_block_interval_ms. Use the same value on every validator.
view_timeout_ms = {view_timeout}
# Ceiling of the doubled view timeout (ms).
view_timeout_max_ms = {view_timeout_max}
# Proposals stamped further ahead of this node's clock are refused (ms).
max_clock_drift_ms = {drift}
"#,
            moniker = self.moniker,
            p2p_port = DEFAULT_P2P_PORT,
            p2p_listen = self.p2p.listen_addr,
            max_peers = self.p2p.max_peers,
            rpc_port = DEFAULT_RPC_PORT,
            rpc_listen = self.rpc.listen_addr,
            rpc_request_max = self.rpc.request_body_bytes_max,
            rpc_response_max = self.rpc.response_body_bytes_max,
            rpc_batch_max = self.rpc.batch_len_max,
            rpc_connections_max = self.rpc.connections_max,
            rpc_per_ip_max = match self.rpc.connections_per_ip_max {
                Some(max) => format!("connections_per_ip_max = {max}"),
                None => format!(
                    "# connections_per_ip_max = {}",
                    self.rpc.effective_connections_per_ip_max()
                ),
            },
            rpc_call_rate = match self.rpc.calls_per_ip_per_second {
                Some(rate) => format!("calls_per_ip_per_second = {rate}"),
                None => format!(
                    "# calls_per_ip_per_second = {}",
                    self.rpc.effective_calls_per_ip_per_second()
                ),
            },
            rpc_call_burst = match self.rpc.calls_per_ip_burst {
                Some(burst) => format!("calls_per_ip_burst = {burst}"),
                None => format!(
                    "# calls_per_ip_burst = {}",
                    self.rpc.effective_calls_per_ip_burst()
                ),
            },
            call_rate_loopback = mesh_rpc::CALL_RATE_PER_IP_LOOPBACK,
            call_rate_exposed = mesh_rpc::CALL_RATE_PER_IP_EXPOSED,
            per_ip_loopback = mesh_rpc::PER_IP_MAX_LOOPBACK,
            per_ip_exposed = mesh_rpc::PER_IP_MAX_EXPOSED,
            rpc_calls_max = self.rpc.calls_per_connection_max,
            rpc_header_timeout = self.rpc.header_timeout_ms,
            rpc_body_timeout = self.rpc.body_timeout_ms,
            rpc_idle_timeout = self.rpc.idle_timeout_ms,
            rpc_write_stall = self.rpc.write_stall_timeout_ms,
            rpc_large_requests = self.rpc.large_requests_max,
            rpc_admission_threads = self.rpc.admission_threads,
            rpc_admission_queue = self.rpc.admission_queue_max,
            rpc_storage_reads = self.rpc.storage_reads_max,
            rpc_storage_queue = self.rpc.storage_queue_max,
            rpc_subscriptions_max = self.rpc.subscriptions_per_connection_max,
            rpc_buffer = self.rpc.connection_buffer_messages,
            rpc_unwritten_bytes = self.rpc.connection_unwritten_bytes_max,
            rpc_cors = cors_toml(&self.rpc.cors),
            rpc_tx_max = self.rpc.tx_bytes_max,
            rpc_wait_default = self.rpc.wait_default_ms,
            rpc_wait_max = self.rpc.wait_max_ms,
            rpc_keys_default = self.rpc.list_keys_default,
            rpc_keys_max = self.rpc.list_keys_max,
            rpc_replay_max = self.rpc.replay_blocks_max,
            rpc_headers_per_read = self.rpc.headers_per_read,
            rpc_send_timeout = self.rpc.subscription_send_timeout_ms,
            rpc_ready_peers = self.rpc.ready_peers_min,
            rpc_ready_age = self.rpc.ready_block_age_max_ms,
            metrics_listen = self.metrics.listen_addr,
            max_txs = self.mempool.max_txs,
            max_bytes = self.mempool.max_bytes,
            window = self.mempool.future_nonce_window,
            seen = self.mempool.seen_cache_size,
            block_interval = self.consensus.block_interval_ms,
            empty_block_interval = self.consensus.empty_block_interval(),
            view_timeout = self.consensus.view_timeout_ms,
            view_timeout_max = self.consensus.view_timeout_max_ms,
            drift = self.consensus.max_clock_drift_ms,
        )
    }
}
