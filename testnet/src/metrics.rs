//! A node's status from its Prometheus endpoint: one plain HTTP/1.0 GET of `/metrics` over a
//! `TcpStream` (HTTP/1.0 so the body is never chunked), with short timeouts.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

/// Largest metrics page read.
const BODY_BYTES_MAX: u64 = 4 << 20;
/// Connect / read / write timeout of one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// The figures the testnet table shows, from one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// `mesh_finalized_height`.
    pub finalized_height: u64,
    /// `mesh_consensus_view`.
    pub view: u64,
    /// `mesh_consensus_voted_view`: the highest view this validator voted in.
    pub voted_view: u64,
    /// `mesh_peers`.
    pub peers: u64,
    /// `mesh_mempool_txs`.
    pub mempool_txs: u64,
    /// `mesh_txs_finalized_total`.
    pub txs_finalized: u64,
    /// `mesh_evidence_reported_total`: equivocations this node has seen (0 in a healthy net).
    pub evidence_reported: u64,
}

/// Scrapes `http://<addr>/metrics` (`addr` as in testnet.json, `127.0.0.1:<port>`); `None` when
/// the node does not answer in time or answers something else than a metrics page.
pub fn scrape_metrics(addr: &str) -> Option<NodeMetrics> {
    let text = fetch(addr)?;
    Some(parse(&text))
}

fn fetch(addr: &str) -> Option<String> {
    let socket: SocketAddr = addr.to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&socket, SCRAPE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    stream.take(BODY_BYTES_MAX).read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    if status_line.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    Some(body.to_owned())
}

/// Reads the wanted samples out of an OpenMetrics page; missing ones stay 0.
fn parse(text: &str) -> NodeMetrics {
    let mut metrics = NodeMetrics::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let slot = match name {
            "mesh_finalized_height" => &mut metrics.finalized_height,
            "mesh_consensus_view" => &mut metrics.view,
            "mesh_consensus_voted_view" => &mut metrics.voted_view,
            "mesh_peers" => &mut metrics.peers,
            "mesh_mempool_txs" => &mut metrics.mempool_txs,
            "mesh_txs_finalized_total" => &mut metrics.txs_finalized,
            "mesh_evidence_reported_total" => &mut metrics.evidence_reported,
            _ => continue,
        };
        if let Some(number) = parse_count(value) {
            *slot = number;
        }
    }
    metrics
}

/// A sample value as a count: integers as they are, floats (`12.0`) truncated toward zero.
fn parse_count(value: &str) -> Option<u64> {
    if let Ok(number) = value.parse::<u64>() {
        return Some(number);
    }
    let float = value.parse::<f64>().ok()?;
    if !float.is_finite() || float < 0.0 {
        return None;
    }
    // A float sample of a count: whole and in range by construction.
    format!("{:.0}", float.trunc()).parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_the_samples_of_an_openmetrics_page() {
        let page = "# HELP mesh_finalized_height Newest finalized height.\n\
            # TYPE mesh_finalized_height gauge\n\
            mesh_finalized_height 17\n\
            mesh_consensus_view 21\n\
            mesh_consensus_voted_view 20\n\
            mesh_peers 3\n\
            mesh_mempool_txs 0\n\
            # TYPE mesh_txs_finalized counter\n\
            mesh_txs_finalized_total 250.0\n\
            mesh_txs_finalized_created 1.7e9\n\
            mesh_evidence_reported_total 1\n\
            mesh_rejected_messages_total{source=\"tx\",reason=\"malformed\"} 2\n\
            # EOF\n";
        assert_eq!(
            parse(page),
            NodeMetrics {
                finalized_height: 17,
                view: 21,
                voted_view: 20,
                peers: 3,
                mempool_txs: 0,
                txs_finalized: 250,
                evidence_reported: 1,
            }
        );
    }

    #[test]
    fn scrapes_over_http_and_refuses_other_statuses() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            for reply in [
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nmesh_finalized_height 5\n",
                "HTTP/1.1 404 Not Found\r\n\r\ntry GET /metrics\n",
            ] {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 512];
                let _ = stream.read(&mut request).unwrap();
                stream.write_all(reply.as_bytes()).unwrap();
            }
        });
        assert_eq!(scrape_metrics(&addr).unwrap().finalized_height, 5);
        assert_eq!(scrape_metrics(&addr), None);
        server.join().unwrap();
    }
}
