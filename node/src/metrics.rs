//! Prometheus metrics of a node and the HTTP endpoint that serves them (`GET /metrics`).
//!
//! Every metric is named `mesh_…`; `docs/operators.md` lists them with their meaning. The
//! driver updates them as it works; scraping never touches the driver.

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
use tokio::sync::watch;

/// Label of `mesh_rejected_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Where it came from: `consensus`, `tx` or `sync`.
    pub source: &'static str,
    /// Why: `malformed`, `unknown_kind`, `invalid_signature`, …
    pub reason: &'static str,
}

/// Every metric the node exports.
#[derive(Debug)]
pub struct Metrics {
    pub finalized_height: Gauge,
    pub view: Gauge,
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
    pub rejected_messages: Family<RejectLabels, Counter>,
    pub txs_submitted: Counter,
    pub evidence_reported: Counter,
}

impl Metrics {
    /// The metrics, registered in a new registry.
    pub fn new() -> (Arc<Metrics>, Registry) {
        let seconds = || Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let metrics = Metrics {
            finalized_height: Gauge::default(),
            view: Gauge::default(),
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
            rejected_messages: Family::default(),
            txs_submitted: Counter::default(),
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
            "evidence_reported",
            "Proofs of validator equivocation observed",
            metrics.evidence_reported.clone(),
        );
        (Arc::new(metrics), registry)
    }

    /// Counts a refused message.
    pub fn reject(&self, source: &'static str, reason: &'static str) {
        self.rejected_messages
            .get_or_create(&RejectLabels { source, reason })
            .inc();
    }
}

/// Binds `addr` and serves `GET /metrics` until `shutdown` turns true. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
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
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let registry = Arc::clone(&registry);
                    async move { Ok::<_, std::convert::Infallible>(respond(&registry, &request)) }
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

fn respond(registry: &Registry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
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
