//! Hostile clients against the server's socket, connection and call bounds (issue 21): idle
//! connections past the caps, a never-ending chunked body, a half-open WebSocket, a pipelined
//! flood on one WebSocket, a client that never reads (small answers, batches, large answers),
//! calls past an address's rate, large bodies, oversized params and client mistakes over HTTP
//! and WebSocket.
//! Each asserts what the attacker gets and that a normal client on another connection (from
//! another address: 127.0.0.1, while attackers use 127.0.0.2 and 127.0.0.3) is still served.
//! Every loop is bounded in count and time; no assertion is on a duration.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use mesh_rpc::error::*;
use mesh_rpc::RpcServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const ATTACKER_2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// Small bounds, so each can be reached in a test.
fn hostile_config() -> RpcServerConfig {
    RpcServerConfig {
        connections_max: 16,
        connections_per_ip_max: Some(8),
        calls_per_connection_max: 4,
        header_timeout_ms: 1_000,
        body_timeout_ms: 500,
        idle_timeout_ms: 1_000,
        write_stall_timeout_ms: 1_000,
        ..test_config()
    }
}

async fn connect_from(source: Ipv4Addr, addr: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
        socket.set_send_buffer_size(size).unwrap();
    }
    socket.connect(addr).await.unwrap()
}

/// Everything the server sends until it closes, or until `timeout`; `closed` says whether it
/// closed (EOF or reset).
async fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> (String, bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One raw HTTP/1.1 request from 127.0.0.1 on a fresh connection; `None` when the connection
/// failed (refused or reset), else the status and body.
async fn exchange(addr: SocketAddr, request: String) -> Option<(u16, String)> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let (text, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn post(body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: mesh\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The normal client: `mesh_status` on a fresh connection from 127.0.0.1 is answered.
async fn served(addr: SocketAddr) -> bool {
    match exchange(
        addr,
        post(r#"{"jsonrpc":"2.0","id":7,"method":"mesh_status","params":[]}"#),
    )
    .await
    {
        Some((200, body)) => body.contains("finalized_height"),
        _ => false,
    }
}

/// Retries [`served`] for up to 10 s (slots free up as the server notices closed sockets).
async fn served_again(addr: SocketAddr) -> bool {
    for _ in 0..50 {
        if served(addr).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A WebSocket from `source`, handshake done.
async fn websocket(source: Ipv4Addr, addr: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let mut stream = connect_from(source, addr, recv_buffer).await;
    websocket_handshake(&mut stream, addr).await;
    stream
}

/// Reads server frames (unmasked) and returns the text ones, until `count` texts arrived, the
/// connection closed, or `timeout`.
async fn read_texts(stream: &mut TcpStream, count: usize, timeout: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut texts = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while texts.len() < count {
        // Parse every complete frame in `pending`.
        loop {
            if pending.len() < 2 {
                break;
            }
            let opcode = pending[0] & 0x0f;
            let (len, header) = match pending[1] & 0x7f {
                126 if pending.len() >= 4 => {
                    (usize::from(u16::from_be_bytes([pending[2], pending[3]])), 4)
                }
                127 if pending.len() >= 10 => {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(&pending[2..10]);
                    (u64::from_be_bytes(bytes) as usize, 10)
                }
                126 | 127 => break,
                len => (usize::from(len), 2),
            };
            if pending.len() < header + len {
                break;
            }
            if opcode == 1 {
                texts.push(String::from_utf8_lossy(&pending[header..header + len]).into_owned());
            }
            pending.drain(..header + len);
        }
        if texts.len() >= count {
            break;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_counted_capped_per_address_and_closed_when_idle() {
    let node = MockNode::new();
    // Long timeouts first: the caps alone are tested.
    let patient = RpcServerConfig {
        header_timeout_ms: 60_000,
        idle_timeout_ms: 60_000,
        ..hostile_config()
    };
    let (server, addr) = serve(&node, patient).await;

    // Eight idle connections from one address: its share.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect_from(ATTACKER, addr, None).await);
    }
    // A ninth from it is answered 503 with a JSON-RPC `busy` error, and closed.
    let mut ninth = connect_from(ATTACKER, addr, None).await;
    let (text, closed) = read_until_closed(&mut ninth, Duration::from_secs(10)).await;
    assert!(
        closed,
        "the ninth connection from one address must be closed"
    );
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains(&BUSY.to_string()), "{text}");
    // Another address is served meanwhile.
    assert!(served(addr).await, "a normal client must be served");

    // Eight more from a second address fill the server (16): a ninth address is refused too.
    for _ in 0..8 {
        idle.push(connect_from(ATTACKER_2, addr, None).await);
    }
    match exchange(
        addr,
        post(r#"{"jsonrpc":"2.0","id":1,"method":"mesh_status","params":[]}"#),
    )
    .await
    {
        None => {}
        Some((status, body)) => assert_eq!(status, 503, "{body}"),
    }

    // Slots come back when the attackers leave.
    drop(idle);
    assert!(served_again(addr).await, "slots must come back");
    server.stop();

    // With a short idle timeout, idle connections are closed by the server.
    let (_server, addr) = serve(&node, hostile_config()).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect_from(ATTACKER, addr, None).await);
    }
    for stream in &mut idle {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(15)).await;
        assert!(closed, "an idle connection must be closed");
    }
    assert!(served_again(addr).await, "slots must come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ending_bodies_and_half_open_websockets_do_not_hold_slots() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, hostile_config()).await;

    // Eight chunked bodies that never end, from one address.
    let mut bodies = Vec::new();
    for _ in 0..8 {
        let mut stream = connect_from(ATTACKER, addr, None).await;
        stream
            .write_all(
                b"POST / HTTP/1.1\r\nHost: mesh\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"jso\r\n",
            )
            .await
            .unwrap();
        bodies.push(stream);
    }
    // Eight WebSockets that go silent (and never answer pings), from another.
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(websocket(ATTACKER_2, addr, None).await);
    }
    // The server is full; each body is answered 408 with a JSON-RPC error and closed.
    for stream in &mut bodies {
        let (text, closed) = read_until_closed(stream, Duration::from_secs(15)).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains(&INVALID_REQUEST.to_string()), "{text}");
        assert!(
            closed,
            "the connection of an unfinished body must be closed"
        );
    }
    // Each silent WebSocket is closed.
    for stream in &mut sockets {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(15)).await;
        assert!(closed, "a silent WebSocket must be closed");
    }
    assert!(served_again(addr).await, "slots must come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_get_the_json_rpc_error_the_spec_names() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, hostile_config()).await;

    // Content-Length with Transfer-Encoding and a body that is not chunked: 400 and -32600,
    // never a 5xx.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"mesh_status","params":[]}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: mesh\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = exchange(addr, request).await.expect("an answer");
    assert_eq!(status, 400, "{text}");
    let response: serde_json::Value = serde_json::from_str(&text).unwrap();
    expect_error(&response, i64::from(INVALID_REQUEST));
    assert!(response["id"].is_null(), "{response}");
    // With a chunked body the chunked coding wins (RFC 9112): served, then closed.
    let request = format!(
        "POST / HTTP/1.1\r\nHost: mesh\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len(),
        body.len()
    );
    let (status, text) = exchange(addr, request).await.expect("an answer");
    assert_eq!(status, 200, "{text}");

    // A declared length far over the limit: 413 and -32007 at once, the body never read.
    let request = "POST / HTTP/1.1\r\nHost: mesh\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{".to_owned();
    let (status, text) = exchange(addr, request).await.expect("an answer");
    assert_eq!(status, 413, "{text}");
    let response: serde_json::Value = serde_json::from_str(&text).unwrap();
    expect_error(&response, i64::from(OVERSIZED_REQUEST));

    // Ids JSON-RPC cannot answer: -32600 with id null, never a silent `null`.
    for id in [
        r#"{"a":1}"#,
        "[1]",
        "1.5",
        "18446744073709551616",
        "true",
        "-3",
    ] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"mesh_status","params":[]}}"#);
        let (status, text) = exchange(addr, post(&body)).await.expect("an answer");
        assert_eq!(status, 200, "id {id}: {text}");
        let response: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("id {id}: not JSON ({err}): {text}"));
        expect_error(&response, i64::from(INVALID_REQUEST));
        assert!(response["id"].is_null(), "{response}");
    }
    // In a batch too.
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"mesh_status"},{"jsonrpc":"2.0","id":false,"method":"mesh_status"}]"#;
    let (_, text) = exchange(addr, post(batch)).await.expect("an answer");
    let response: serde_json::Value = serde_json::from_str(&text).unwrap();
    expect_error(&response, i64::from(INVALID_REQUEST));

    // Ids it can answer still work.
    for id in ["0", r#""x""#, "18446744073709551615"] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"mesh_status","params":[]}}"#);
        let (status, text) = exchange(addr, post(&body)).await.expect("an answer");
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("finalized_height"), "id {id}: {text}");
    }
    assert!(served(addr).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_over_websocket_get_the_same_errors_as_over_http() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, hostile_config()).await;
    let mut ws = websocket(ATTACKER, addr, None).await;

    // Ids JSON-RPC cannot answer: -32600 with id null, one answer per request, never silence
    // (jsonrpsee alone takes them for notifications and says nothing).
    let ids = [
        r#"{"a":1}"#,
        "[1]",
        "1.5",
        "18446744073709551616",
        "true",
        "-3",
    ];
    let mut requests = Vec::new();
    for id in ids {
        requests.extend(ws_text_frame(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"mesh_status","params":[]}}"#
        )));
    }
    ws.write_all(&requests).await.unwrap();
    let answers = read_texts(&mut ws, ids.len(), Duration::from_secs(20)).await;
    assert_eq!(answers.len(), ids.len(), "{answers:?}");
    for answer in &answers {
        let response: serde_json::Value = serde_json::from_str(answer).unwrap();
        let error = expect_error(&response, i64::from(INVALID_REQUEST));
        assert!(response["id"].is_null(), "{response}");
        assert!(
            error["message"].as_str().unwrap().contains("id must be"),
            "{error}"
        );
    }

    // A batch with one such entry is refused whole, with one error.
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"mesh_status"},{"jsonrpc":"2.0","id":false,"method":"mesh_status"}]"#;
    ws.write_all(&ws_text_frame(batch)).await.unwrap();
    let answers = read_texts(&mut ws, 1, Duration::from_secs(20)).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    let response: serde_json::Value = serde_json::from_str(&answers[0]).unwrap();
    expect_error(&response, i64::from(INVALID_REQUEST));
    assert!(response["id"].is_null(), "{response}");

    // The same mistake split over several frames, with a ping between them.
    let message = r#"{"jsonrpc":"2.0","method":"mesh_status","params":[],"id":{"x":[]}}"#;
    let mut split = Vec::new();
    split.extend(ws_frame(0x1, false, &message.as_bytes()[..20]));
    split.extend(ws_frame(0x9, true, b"hi"));
    split.extend(ws_frame(0x0, true, &message.as_bytes()[20..]));
    ws.write_all(&split).await.unwrap();
    // The pong comes first (not a text), then the error.
    let answers = read_texts(&mut ws, 1, Duration::from_secs(20)).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    let response: serde_json::Value = serde_json::from_str(&answers[0]).unwrap();
    expect_error(&response, i64::from(INVALID_REQUEST));

    // A true notification (no id) is still not answered, and good ids still work: the next
    // two answers are the two calls'.
    let mut requests = ws_text_frame(r#"{"jsonrpc":"2.0","method":"mesh_status","params":[]}"#);
    for id in [99, 100] {
        requests.extend(ws_text_frame(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"mesh_status","params":[]}}"#
        )));
    }
    ws.write_all(&requests).await.unwrap();
    let answers = read_texts(&mut ws, 2, Duration::from_secs(20)).await;
    let mut ids: Vec<u64> = answers
        .iter()
        .map(|answer| {
            let response: serde_json::Value = serde_json::from_str(answer).unwrap();
            assert!(response["result"].is_object(), "{response}");
            response["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [99, 100], "{answers:?}");
    assert!(served(addr).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_params_are_refused_before_they_are_parsed() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, test_config()).await;

    // A million parameters where one is taken.
    let many = vec!["1"; 1_000_000].join(",");
    let response = call(addr, "mesh_getReceipt", &format!("[{many}]")).await;
    let error = expect_error(&response, i64::from(INVALID_PARAMS));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("1000000 parameters, at most 1"),
        "{error}"
    );
    // A block reference that is a 3 MB array.
    let nested = format!("[[{}]]", vec!["1"; 1_500_000].join(","));
    let response = call(addr, "mesh_getBlock", &nested).await;
    let error = expect_error(&response, i64::from(INVALID_PARAMS));
    assert_eq!(error["data"]["param"], "block", "{error}");
    // A transaction over the server's limit: too large, before decoding.
    let big = format!(r#"["0x{}"]"#, "00".repeat(1_100_000));
    let response = call(addr, "mesh_sendTransaction", &big).await;
    let error = expect_error(&response, i64::from(TOO_LARGE));
    assert_eq!(error["data"]["what"], "transaction");
    assert!(served(addr).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_flood_on_one_websocket_is_answered_busy_past_its_calls() {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, hostile_config()).await;
    let tx = hex_of(&transfer(&alice(), 0, &bob(), 1));

    // 200 waits pipelined on one connection: 4 run (the per-connection bound), 196 are
    // answered `busy` at once.
    let mut ws = websocket(ATTACKER, addr, None).await;
    let mut flood = Vec::new();
    for id in 0..200 {
        flood.extend(ws_text_frame(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"mesh_sendTransactionAndWait","params":["{tx}",30000]}}"#
        )));
    }
    ws.write_all(&flood).await.unwrap();
    let answers = read_texts(&mut ws, 196, Duration::from_secs(20)).await;
    assert_eq!(answers.len(), 196, "{answers:?}");
    for answer in &answers {
        let response: serde_json::Value = serde_json::from_str(answer).unwrap();
        let error = expect_error(&response, i64::from(BUSY));
        assert_eq!(error["data"]["what"], "calls_per_connection", "{error}");
    }
    // Another client is served while the four wait.
    assert!(served(addr).await);
    // The block comes: the four get their receipt.
    node.finalize();
    let receipts = read_texts(&mut ws, 4, Duration::from_secs(20)).await;
    assert_eq!(receipts.len(), 4, "{receipts:?}");
    for receipt in &receipts {
        assert!(receipt.contains("\"result\""), "{receipt}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_an_address_rate_are_answered_busy_and_other_addresses_are_served() {
    let node = MockNode::new();
    let config = RpcServerConfig {
        // One call a second, five at once; the per-connection bound out of the way.
        calls_per_ip_per_second: Some(1),
        calls_per_ip_burst: Some(5),
        batch_len_max: 5,
        calls_per_connection_max: 100,
        ..hostile_config()
    };
    let (_server, addr) = serve(&node, config).await;

    // 40 calls pipelined on one WebSocket: the burst is served, the rest answered `busy`
    // (`call_rate`) at once. Up to 10 may pass should the machine stall for 5 s meanwhile.
    let mut ws = websocket(ATTACKER, addr, None).await;
    let mut flood = Vec::new();
    for id in 0..40 {
        flood.extend(ws_text_frame(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"mesh_status","params":[]}}"#
        )));
    }
    ws.write_all(&flood).await.unwrap();
    let answers = read_texts(&mut ws, 40, Duration::from_secs(20)).await;
    assert_eq!(answers.len(), 40, "{answers:?}");
    let mut served_calls = 0;
    for answer in &answers {
        let response: serde_json::Value = serde_json::from_str(answer).unwrap();
        if response["result"].is_object() {
            served_calls += 1;
        } else {
            let error = expect_error(&response, i64::from(BUSY));
            assert_eq!(error["data"]["what"], "call_rate", "{error}");
            assert_eq!(error["data"]["limit"], 1, "{error}");
        }
    }
    assert!((5..=10).contains(&served_calls), "{served_calls} served");

    // A batch from the same address takes one token per call: refused whole, one error.
    let batch = format!(
        "[{}]",
        [r#"{"jsonrpc":"2.0","id":1,"method":"mesh_status","params":[]}"#; 5].join(",")
    );
    ws.write_all(&ws_text_frame(&batch)).await.unwrap();
    let answers = read_texts(&mut ws, 1, Duration::from_secs(20)).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    let response: serde_json::Value = serde_json::from_str(&answers[0]).unwrap();
    let error = expect_error(&response, i64::from(BUSY));
    assert_eq!(error["data"]["what"], "call_rate", "{error}");

    // Another address has its own bucket.
    assert!(served(addr).await, "a normal client must be served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_handled_one_at_a_time_and_small_ones_meanwhile() {
    let node = MockNode::new();
    let config = RpcServerConfig {
        large_requests_max: 1,
        ..test_config()
    };
    let (_server, addr) = serve(&node, config).await;
    // JSON may carry any amount of whitespace: 300 KB of it makes a body large.
    let padding = " ".repeat(300_000);
    let tx = hex_of(&transfer(&alice(), 0, &bob(), 1));

    // A large body whose call waits (until the next block) holds the one permit: once its
    // transaction is in the pool, its call runs (bounded: 100 looks, 50 ms apart).
    let waiting = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"mesh_sendTransactionAndWait","params":["{tx}",30000]}}{padding}"#
    );
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(post(&waiting).as_bytes()).await.unwrap();
    for _ in 0..100 {
        if !node.chain.lock().unwrap().mempool.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        node.chain.lock().unwrap().mempool.len(),
        1,
        "the first call must run"
    );
    // So another large body is answered 503 `busy` at once (`large_requests`).
    let status =
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"mesh_status","params":[]}}{padding}"#);
    let (code, body) = exchange(addr, post(&status)).await.expect("an answer");
    assert_eq!(code, 503, "{body}");
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = expect_error(&response, i64::from(BUSY));
    assert_eq!(error["data"]["what"], "large_requests", "{error}");
    assert!(response["id"].is_null(), "{response}");
    // A small body is served meanwhile.
    assert!(served(addr).await, "a normal client must be served");

    // The block comes: the first gets its receipt, and large bodies are served again.
    node.finalize();
    let (text, _) = read_until_closed(&mut first, Duration::from_secs(30)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"result\""), "{text}");
    let (status_code, text) = exchange(addr, post(&status)).await.expect("an answer");
    assert_eq!(status_code, 200, "{text}");
    assert!(text.contains("finalized_height"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_and_others_are_served() {
    never_reading_client_is_closed(
        r#"{"jsonrpc":"2.0","id":1,"method":"mesh_status","params":[]}"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pipelines_batches_and_never_reads_is_closed() {
    never_reading_client_is_closed(
        r#"[{"jsonrpc":"2.0","id":1,"method":"mesh_status","params":[]}]"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pipelines_large_reads_and_never_reads_is_closed() {
    // A block of 32 puts of 16 KiB values: about 1 MiB of JSON with `full_txs`.
    let node = MockNode::new();
    {
        let mut chain = node.chain.lock().unwrap();
        for nonce in 0..32u64 {
            let stx = put(&alice(), nonce, &nonce.to_be_bytes(), &[7u8; 16 * 1024]);
            chain.mempool.insert(stx.hash(), stx);
        }
    }
    let height = node.finalize();
    assert_eq!(
        node.chain.lock().unwrap().blocks[height as usize].txs.len(),
        32
    );
    let config = RpcServerConfig {
        // Every call runs, and the count of unwritten answers (64 + 1000 + 1024) and the
        // write-stall timeout are far off: only the byte bound can close this client.
        calls_per_connection_max: 1000,
        write_stall_timeout_ms: 600_000,
        idle_timeout_ms: 600_000,
        response_body_bytes_max: 2 << 20,
        connection_unwritten_bytes_max: 4 << 20,
        ..hostile_config()
    };
    let (_server, addr) = serve(&node, config).await;

    // 100 calls, 100 MiB of answers, pipelined on a WebSocket that reads none.
    let mut ws = websocket(ATTACKER, addr, Some(4096)).await;
    let request = ws_text_frame(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"mesh_getBlock","params":[{height},true]}}"#
    ));
    let flood = request.repeat(100);
    // The server may stop reading (back-pressure) or close before taking them all.
    let _ = tokio::time::timeout(Duration::from_secs(10), ws.write_all(&flood)).await;
    assert!(served(addr).await, "a normal client must be served");
    // Still reading nothing, the client finds its connection closed by the server (a write
    // fails). Bounded: 60 tries, one every 500 ms; without the byte bound nothing closes it
    // for ten minutes.
    let mut closed = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let write = tokio::time::timeout(Duration::from_secs(1), ws.write_all(&request)).await;
        if let Ok(Err(_)) = write {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a client holding more than connection_unwritten_bytes_max of unread answers must be closed"
    );
    assert!(served(addr).await);
}

/// Pipelines up to 200,000 copies of `message` (one call or one batch) on a WebSocket with
/// small buffers and reads no answer: the server must stop taking them long before (it stops
/// reading, or closes the connection once more than its buffer and a burst of answers wait
/// unwritten), since each one it takes holds memory until its answer is written.
async fn never_reading_client_is_closed(message: &str) {
    let node = MockNode::new();
    let (_server, addr) = serve(&node, hostile_config()).await;

    let mut ws = websocket(ATTACKER, addr, Some(4096)).await;
    let request = ws_text_frame(message);
    let chunk: Vec<u8> = request.repeat(1000);
    let mut refused = false;
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_secs(5), ws.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            // The server stopped reading (back-pressure), or closed the connection.
            Ok(Err(_)) | Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(
        refused,
        "the server took 200,000 calls whose answers were never read"
    );
    // Another client is served meanwhile.
    assert!(served(addr).await);
    // Still reading nothing, the client finds its connection closed by the server: once the
    // server closed it, a write fails (reset). Bounded: 120 tries, one every 500 ms.
    let mut closed = false;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A timed-out write only means the socket buffer is full; a failed one means closed.
        let write = tokio::time::timeout(Duration::from_secs(1), ws.write_all(&request)).await;
        if let Ok(Err(_)) = write {
            closed = true;
            break;
        }
    }
    assert!(closed, "a client that never reads must be closed");
    assert!(served(addr).await);
}
