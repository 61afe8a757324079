//! Log output: `tracing` events to stderr, filtered by `RUST_LOG` (default `info`), as text
//! for people or JSON lines for log pipelines.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, every field (height, view, peer, block…) a key.
    Json,
}

/// Installs the global subscriber. Calling it twice keeps the first.
pub fn init(format: LogFormat) {
    // libp2p's internals are chatty at info; our own crates speak at info. Gossipsub warns once
    // per message it cannot queue for a slow peer, formatting the whole message each time: the
    // network task counts those (`mesh_network_gossip_send_dropped_total`) and warns per peer.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,libp2p_gossipsub=error,libp2p_kad=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
