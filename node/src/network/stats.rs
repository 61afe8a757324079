//! Counters of the network task, read by the metrics exporter.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! network_stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Live counters, shared between the network task and readers (`Arc<NetworkStats>`).
        /// Every field only grows, except `peers_connected`, a gauge.
        #[derive(Debug, Default)]
        pub struct NetworkStats {
            $($(#[doc = $doc])* pub(crate) $name: AtomicU64,)*
        }

        /// A copy of [`NetworkStats`] at one instant.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct NetworkStatsSnapshot {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl NetworkStats {
            /// Reads every counter (each read is atomic, the set is not).
            pub fn snapshot(&self) -> NetworkStatsSnapshot {
                NetworkStatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }

            /// Every counter as `(name, help, value)`, for the metrics exporter.
            pub fn entries(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((
                    stringify!($name),
                    concat!($($doc),*),
                    self.$name.load(Ordering::Relaxed),
                ),)*]
            }
        }
    };
}

network_stats! {
    /// Gossip messages received from peers (after gossipsub's de-duplication).
    gossip_received,
    /// Gossip messages dropped for exceeding `max_message_bytes` (sender penalised).
    gossip_oversized,
    /// Gossip messages on a topic we do not know (dropped, not penalised).
    gossip_unknown_topic,
    /// Gossip messages the application accepted.
    gossip_accepted,
    /// Gossip messages the application rejected (sender penalised).
    gossip_rejected,
    /// Gossip messages the application ignored.
    gossip_ignored,
    /// Gossip messages published by this node.
    gossip_published,
    /// Gossip messages (ours or forwarded) gossipsub could not queue for a peer because that
    /// peer's send queue was full: the peer reads slower than we send.
    gossip_send_dropped,
    /// Inbound sync requests delivered to the application.
    sync_requests_received,
    /// Inbound sync requests dropped because `max_pending_sync_requests` were waiting.
    sync_requests_dropped,
    /// Inbound sync failures (oversized or malformed request, timeout, connection closed).
    sync_inbound_failures,
    /// Sync responses received for our requests.
    sync_responses_received,
    /// Our sync requests that failed (timeout, oversized response, dial failure…).
    sync_outbound_failures,
    /// Events dropped because the application's event channel was full.
    events_dropped,
    /// Incoming or outgoing connection attempts that failed or were denied.
    connection_failures,
    /// Peers currently connected (gauge).
    peers_connected,
}

/// Adds one to a counter of a `NetworkStats`.
macro_rules! count {
    ($stats:expr, $name:ident) => {
        $stats
            .$name
            .fetch_add(1, ::std::sync::atomic::Ordering::Relaxed)
    };
}
pub(crate) use count;

impl NetworkStats {
    pub(crate) fn set_peers_connected(&self, value: usize) {
        self.peers_connected
            .store(u64::try_from(value).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}
