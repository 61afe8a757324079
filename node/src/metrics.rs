//! Prometheus metrics of a node and the HTTP endpoint that serves them (`GET /metrics`).
//!
//! Every metric is named `mesh_…`; `docs/operators.md` lists them with their meaning. The
//! driver updates them as it works; scraping never touches the driver.
//!
//! When the node runs with `--admin` (only the local testnet tool starts it so), the same
//! listener also takes `POST /admin/partition` (body: peer ids, one per line, to disconnect
//! and refuse) and `POST /admin/heal` (lift every block set that way), so the testnet tool
//! can cut a network into groups for real. Without `--admin` both are 404.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use crate::network::{NetworkHandle, NetworkStats, PeerId};

/// Largest admin request body (a few hundred peer ids).
const ADMIN_BODY_BYTES_MAX: usize = 64 * 1024;

/// The testnet-only admin surface: the network to block peers on, and who it blocked.
#[derive(Debug)]
pub struct Admin {
    network: NetworkHandle,
    blocked: Mutex<Vec<PeerId>>,
}

impl Admin {
    /// Admin over `network`.
    pub fn new(network: NetworkHandle) -> Admin {
        Admin {
            network,
            blocked: Mutex::new(Vec::new()),
        }
    }

    async fn partition(&self, body: &str) -> Result<String, String> {
        let mut peers = Vec::new();
        for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let peer: PeerId = line
                .parse()
                .map_err(|err| format!("{line:?} is not a peer id: {err}"))?;
            peers.push(peer);
        }
        let mut blocked = self.blocked.lock().await;
        for peer in &peers {
            self.network
                .block_peer(*peer)
                .await
                .map_err(|err| err.to_string())?;
            if !blocked.contains(peer) {
                blocked.push(*peer);
            }
        }
        tracing::warn!(peers = peers.len(), "admin: partitioned from peers");
        Ok(format!("blocked {} peers\n", peers.len()))
    }

    async fn heal(&self) -> Result<String, String> {
        let mut blocked = self.blocked.lock().await;
        for peer in blocked.iter() {
            self.network
                .unblock_peer(*peer)
                .await
                .map_err(|err| err.to_string())?;
        }
        let count = blocked.len();
        blocked.clear();
        tracing::warn!(peers = count, "admin: partition healed");
        Ok(format!("unblocked {count} peers\n"))
    }
}

/// Label of `mesh_rejected_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Where it came from: `consensus`, `tx` or `sync`.
    pub source: &'static str,
    /// Why: `malformed`, `unknown_kind`, `invalid_signature`, …
    pub reason: &'static str,
}

/// Label of `mesh_views_ended_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewOutcomeLabels {
    /// `notarized`, `finalized`, or why there was no block: `no_proposal`,
    /// `proposal_not_verified`, `proposal_invalid`, `parent_not_certified`, `too_few_votes`.
    pub outcome: &'static str,
}

/// Every metric the node exports.
#[derive(Debug)]
pub struct Metrics {
    pub finalized_height: Gauge,
    pub view: Gauge,
    pub voted_view: Gauge,
    pub blocks_finalized: Counter,
    pub txs_finalized: Counter,
    pub txs_failed: Counter,
    pub finality_latency: Histogram,
    pub mempool_txs: Gauge,
    pub mempool_bytes: Gauge,
    pub peers: Gauge,
    pub sync_lag: Gauge,
    pub block_commit_duration: Histogram,
    pub safety_persist_duration: Histogram,
    pub payload_verify_duration: Histogram,
    pub blocks_proposed: Counter,
    pub views_nullified: Gauge,
    pub epoch: Gauge,
    pub views_ended: Family<ViewOutcomeLabels, Counter>,
    pub blocks_fetched: Counter,
    pub rejected_messages: Family<RejectLabels, Counter>,
    pub txs_submitted: Counter,
    pub txs_reannounced: Counter,
    pub evidence_reported: Counter,
}

impl Metrics {
    /// The metrics, registered in a new registry.
    pub fn new() -> (Arc<Metrics>, Registry) {
        let seconds = || Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let metrics = Metrics {
            finalized_height: Gauge::default(),
            view: Gauge::default(),
            voted_view: Gauge::default(),
            blocks_finalized: Counter::default(),
            txs_finalized: Counter::default(),
            txs_failed: Counter::default(),
            finality_latency: Histogram::new(exponential_buckets(0.01, 1.6, 16)),
            mempool_txs: Gauge::default(),
            mempool_bytes: Gauge::default(),
            peers: Gauge::default(),
            sync_lag: Gauge::default(),
            block_commit_duration: seconds(),
            safety_persist_duration: seconds(),
            payload_verify_duration: seconds(),
            blocks_proposed: Counter::default(),
            views_nullified: Gauge::default(),
            epoch: Gauge::default(),
            views_ended: Family::default(),
            blocks_fetched: Counter::default(),
            rejected_messages: Family::default(),
            txs_submitted: Counter::default(),
            txs_reannounced: Counter::default(),
            evidence_reported: Counter::default(),
        };
        let mut registry = Registry::with_prefix("mesh");
        let r = &mut registry;
        r.register(
            "finalized_height",
            "Height of the newest finalized block",
            metrics.finalized_height.clone(),
        );
        r.register(
            "consensus_view",
            "Current consensus view",
            metrics.view.clone(),
        );
        r.register(
            "blocks_finalized",
            "Blocks finalized and committed by this node",
            metrics.blocks_finalized.clone(),
        );
        r.register(
            "txs_finalized",
            "Transactions in finalized blocks",
            metrics.txs_finalized.clone(),
        );
        r.register(
            "txs_failed",
            "Finalized transactions whose operation failed (fee paid)",
            metrics.txs_failed.clone(),
        );
        r.register(
            "finality_latency_seconds",
            "From first seeing a block (built or proposed to us) to committing it as final",
            metrics.finality_latency.clone(),
        );
        r.register(
            "mempool_txs",
            "Pending transactions",
            metrics.mempool_txs.clone(),
        );
        r.register(
            "mempool_bytes",
            "Pending transaction bytes",
            metrics.mempool_bytes.clone(),
        );
        r.register("peers", "Connected peers", metrics.peers.clone());
        r.register(
            "sync_lag_blocks",
            "Finalized blocks known to exist above our head",
            metrics.sync_lag.clone(),
        );
        r.register(
            "block_commit_duration_seconds",
            "Executing (if needed) and durably writing one finalized block",
            metrics.block_commit_duration.clone(),
        );
        r.register(
            "safety_persist_duration_seconds",
            "Durably writing the consensus safety state before a vote leaves",
            metrics.safety_persist_duration.clone(),
        );
        r.register(
            "payload_verify_duration_seconds",
            "Checking and executing a proposed block",
            metrics.payload_verify_duration.clone(),
        );
        r.register(
            "consensus_voted_view",
            "Highest view this validator has voted in (0 on a full node): a validator far behind the others' view is not voting",
            metrics.voted_view.clone(),
        );
        r.register(
            "blocks_proposed",
            "Blocks this validator built as leader",
            metrics.blocks_proposed.clone(),
        );
        r.register(
            "views_nullified",
            "Views that ended without a block (timeouts)",
            metrics.views_nullified.clone(),
        );
        r.register(
            "consensus_epoch",
            "The epoch consensus is in: each epoch has its own validator set and views from 1",
            metrics.epoch.clone(),
        );
        r.register(
            "views_ended",
            "Views this node left, by outcome: notarized, finalized, or why there was no block",
            metrics.views_ended.clone(),
        );
        r.register(
            "blocks_fetched",
            "Unfinalized blocks fetched from peers by hash (a parent this node lacked)",
            metrics.blocks_fetched.clone(),
        );
        r.register(
            "rejected_messages",
            "Messages from peers refused, by source and reason",
            metrics.rejected_messages.clone(),
        );
        r.register(
            "txs_submitted",
            "Transactions admitted to the mempool from clients or gossip",
            metrics.txs_submitted.clone(),
        );
        r.register(
            "txs_reannounced",
            "Pending transactions gossiped again because they stayed pending for a few blocks",
            metrics.txs_reannounced.clone(),
        );
        r.register(
            "evidence_reported",
            "Proofs of validator equivocation observed",
            metrics.evidence_reported.clone(),
        );
        (Arc::new(metrics), registry)
    }

    /// Counts a view left with `outcome`.
    pub fn view_ended(&self, outcome: &'static str) {
        self.views_ended
            .get_or_create(&ViewOutcomeLabels { outcome })
            .inc();
    }

    /// Counts a refused message.
    pub fn reject(&self, source: &'static str, reason: &'static str) {
        self.rejected_messages
            .get_or_create(&RejectLabels { source, reason })
            .inc();
    }
}

/// The network task's counters ([`NetworkStats`]), read at each scrape as
/// `mesh_network_<counter>_total` (the registry adds the `mesh_` prefix): the network task
/// counts with atomics and never waits for the exporter. Its `peers_connected` gauge is left
/// out: `mesh_peers` already reports it.
#[derive(Debug)]
pub struct NetworkCollector(pub Arc<NetworkStats>);

impl Collector for NetworkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, value) in self.0.entries() {
            if name == "peers_connected" {
                continue;
            }
            let counter = ConstCounter::new(value);
            let name = format!("network_{name}");
            let metric =
                encoder.encode_descriptor(&name, help.trim(), None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// Binds `addr` and serves `GET /metrics` until `shutdown` turns true. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    admin: Option<Arc<Admin>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(registry);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => break,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let registry = Arc::clone(&registry);
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let registry = Arc::clone(&registry);
                    let admin = admin.clone();
                    async move {
                        let response = if request.uri().path().starts_with("/admin/") {
                            respond_admin(admin.as_deref(), request).await
                        } else {
                            respond(&registry, &request)
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                // A scrape that takes longer than this is a stuck client.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), connection).await;
            });
        }
    });
    Ok(bound)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn respond_admin(admin: Option<&Admin>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt as _;
    let Some(admin) = admin else {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    };
    if request.method() != hyper::Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST\n".into(),
        );
    }
    let path = request.uri().path().to_owned();
    let limited = http_body_util::Limited::new(request.into_body(), ADMIN_BODY_BYTES_MAX);
    let body = match limited.collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("body over {ADMIN_BODY_BYTES_MAX} bytes\n"),
            )
        }
    };
    let result = match path.as_str() {
        "/admin/partition" => admin.partition(&body).await,
        "/admin/heal" => admin.heal().await,
        _ => return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    match result {
        Ok(text) => reply(StatusCode::OK, "text/plain", text),
        Err(reason) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{reason}\n")),
    }
}

fn respond(registry: &Registry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != hyper::Method::GET || request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try GET /metrics\n".into(),
        );
    }
    let mut body = String::new();
    match encode(&mut body, registry) {
        Ok(()) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "encoding failed\n".into(),
        ),
    }
}
