//! The listener and every socket it accepts: counted from accept to close, per server and per
//! IP address, with an idle timeout and a write-stall timeout, and read no further while the
//! peer does not take what the server writes.
//!
//! jsonrpsee's own accept loop counts requests in flight rather than sockets (an idle
//! keep-alive connection costs a file descriptor and counts for nothing) and has no idle or
//! stall timeout; this module replaces it and hands each connection to jsonrpsee's tower
//! service, so JSON-RPC handling, WebSocket upgrades and HTTP/2 stay jsonrpsee's and hyper's.
//!
//! *Invariant:* an open socket holds one server slot and one slot of its IP address, released
//! when the socket is dropped — also when a WebSocket outlives the HTTP connection it was
//! upgraded from, since the slots live in the socket wrapper ([`GuardedIo`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use jsonrpsee_server::{HttpBody, HttpRequest, HttpResponse, StopHandle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::ws_inspect::{Verdict, WsInspector};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The socket-level bounds, from [`crate::RpcServerConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketLimits {
    pub(crate) connections_max: u32,
    pub(crate) connections_per_ip_max: u32,
    pub(crate) calls_per_connection_max: u32,
    /// Most answers a connection may have produced and not yet begun to write; past it the
    /// client is not reading and the connection is closed.
    pub(crate) unwritten_answers_max: u32,
    /// Most bytes of answers a connection may have produced and the socket not yet written;
    /// past it the client is not reading and the connection is closed.
    pub(crate) unwritten_bytes_max: u64,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) write_stall_timeout: Duration,
    /// Longest WebSocket message whose request ids are checked (`request_body_bytes_max`).
    pub(crate) ws_message_bytes_max: u32,
    /// `batch_len_max` (0: batches disabled), to tell which batches jsonrpsee refuses itself.
    pub(crate) batch_len_max: u32,
}

/// What one connection is doing, shared by its socket, its HTTP requests and its calls: the
/// socket is idle only when neither runs.
///
/// It also counts the answers produced since the socket last wrote a byte. jsonrpsee reads a
/// WebSocket in a loop that spawns a task per message and never waits for one, so a client
/// that pipelines calls and reads no answer would leave an unbounded number of tasks waiting
/// to hand their answer to the connection's bounded buffer. Past `unwritten_answers_max` such
/// answers the connection is closed: every waiting task then ends.
#[derive(Debug)]
pub(crate) struct ConnectionLoad {
    ip: IpAddr,
    requests: AtomicU32,
    calls: AtomicU32,
    calls_max: u32,
    unwritten_answers: AtomicU32,
    unwritten_answers_max: u32,
    unwritten_bytes: AtomicU64,
    unwritten_bytes_max: u64,
    closed: AtomicBool,
    reader: Mutex<Option<Waker>>,
    /// Set when the connection asked to become a WebSocket: from then on its socket inspects
    /// the frames it reads ([`WsInspector`]).
    websocket: AtomicBool,
    /// WebSocket messages whose `id` cannot be answered, not yet answered with -32600.
    bad_ids: AtomicU32,
    /// WebSocket batches holding such an `id`, not yet refused with -32600.
    bad_batches: AtomicU32,
}

/// The request extension through which HTTP middleware and RPC middleware find their
/// connection's [`ConnectionLoad`].
#[derive(Debug, Clone)]
pub(crate) struct Connection(pub(crate) Arc<ConnectionLoad>);

impl ConnectionLoad {
    fn new(ip: IpAddr, limits: &SocketLimits) -> ConnectionLoad {
        ConnectionLoad {
            ip,
            requests: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            calls_max: limits.calls_per_connection_max,
            unwritten_answers: AtomicU32::new(0),
            unwritten_answers_max: limits.unwritten_answers_max,
            unwritten_bytes: AtomicU64::new(0),
            unwritten_bytes_max: limits.unwritten_bytes_max,
            closed: AtomicBool::new(false),
            reader: Mutex::new(None),
            websocket: AtomicBool::new(false),
            bad_ids: AtomicU32::new(0),
            bad_batches: AtomicU32::new(0),
        }
    }

    /// The connection's request asks for a WebSocket upgrade: what it reads next are frames.
    pub(crate) fn upgrading_to_websocket(&self) {
        self.websocket.store(true, Ordering::Release);
    }

    fn found(&self, verdict: Verdict) {
        let counter = match verdict {
            Verdict::Fine => return,
            Verdict::BadId => &self.bad_ids,
            Verdict::BadBatch => &self.bad_batches,
        };
        let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            Some(n.saturating_add(1))
        });
    }

    /// True (once per message counted) when a notification the middleware sees is in fact a
    /// WebSocket request with an `id` JSON-RPC cannot answer: it is to be answered -32600.
    pub(crate) fn take_bad_id(&self) -> bool {
        take_one(&self.bad_ids)
    }

    /// Like [`ConnectionLoad::take_bad_id`], for a batch holding such an entry.
    pub(crate) fn take_bad_batch(&self) -> bool {
        take_one(&self.bad_batches)
    }

    /// Counts an answer about to be handed to the connection; closes the connection when too
    /// many wait unwritten (the client does not read). True when the connection is closed.
    pub(crate) fn answer_produced(&self) -> bool {
        let unwritten = self.unwritten_answers.fetch_add(1, Ordering::AcqRel) + 1;
        if unwritten > self.unwritten_answers_max {
            self.close_unread("answers", u64::from(unwritten));
        }
        self.closed.load(Ordering::Acquire)
    }

    /// Counts the bytes of an answer just produced, before it is handed to the connection;
    /// closes the connection when more than `unwritten_bytes_max` of them wait unwritten (the
    /// client does not read, and each waiting answer holds its bytes in memory).
    pub(crate) fn answer_bytes(&self, len: usize) {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        let unwritten = self
            .unwritten_bytes
            .fetch_add(len, Ordering::AcqRel)
            .saturating_add(len);
        if unwritten > self.unwritten_bytes_max {
            self.close_unread("bytes", unwritten);
        }
    }

    /// Closes the connection of a client that does not read: its reader is woken and fails.
    fn close_unread(&self, what: &'static str, unwritten: u64) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(
            what,
            unwritten,
            "closing an RPC connection: the client does not read its answers"
        );
        let reader = self
            .reader
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    fn wrote_bytes(&self, written: usize) {
        self.unwritten_answers.store(0, Ordering::Release);
        let written = u64::try_from(written).unwrap_or(u64::MAX);
        let _ =
            self.unwritten_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |unwritten| {
                    Some(unwritten.saturating_sub(written))
                });
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn park_reader(&self, waker: &Waker) {
        *self
            .reader
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(waker.clone());
    }

    fn busy(&self) -> bool {
        self.requests.load(Ordering::Acquire) > 0 || self.calls.load(Ordering::Acquire) > 0
    }

    /// Counts an HTTP request until the guard drops.
    pub(crate) fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(self))
    }

    /// Counts a call until the guard drops; `None` when `calls_max` already run.
    pub(crate) fn try_start_call(self: &Arc<Self>) -> Option<CallGuard> {
        let max = self.calls_max;
        self.calls
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (running < max).then_some(running + 1)
            })
            .ok()
            .map(|_| CallGuard(Arc::clone(self)))
    }

    /// The most calls that may run at once.
    pub(crate) fn calls_max(&self) -> u32 {
        self.calls_max
    }

    /// The client's IP address.
    pub(crate) fn ip(&self) -> IpAddr {
        self.ip
    }
}

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

/// An HTTP request being handled.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<ConnectionLoad>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A call running.
#[derive(Debug)]
pub(crate) struct CallGuard(Arc<ConnectionLoad>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Open sockets per IP address.
type PerIp = Arc<Mutex<HashMap<IpAddr, u32>>>;

/// One server slot and one slot of the peer's address, released on drop.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: PerIp,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A poisoned lock only means another thread panicked while counting; the map is
        // still a map.
        let mut counts = self
            .per_ip
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    ServerFull(u32),
    AddressFull(u32),
}

fn acquire_slot(
    connections: &Arc<Semaphore>,
    per_ip: &PerIp,
    ip: IpAddr,
    limits: &SocketLimits,
) -> Result<Slot, Refusal> {
    let permit = Arc::clone(connections)
        .try_acquire_owned()
        .map_err(|_| Refusal::ServerFull(limits.connections_max))?;
    let per_ip_max = limits.connections_per_ip_max.min(limits.connections_max);
    let mut counts = per_ip.lock().unwrap_or_else(|poison| poison.into_inner());
    let count = counts.entry(ip).or_insert(0);
    if *count >= per_ip_max {
        return Err(Refusal::AddressFull(per_ip_max));
    }
    *count += 1;
    drop(counts);
    Ok(Slot {
        _permit: permit,
        ip,
        per_ip: Arc::clone(per_ip),
    })
}

/// Answers a refused connection `503` with a JSON-RPC error, without waiting: one
/// non-blocking write, then the socket closes. A flood of refusals costs no task and no
/// buffer.
fn refuse(socket: TcpStream, refusal: Refusal) {
    let message = match refusal {
        Refusal::ServerFull(max) => format!("server at its limit of {max} connections"),
        Refusal::AddressFull(max) => {
            format!("too many connections from this address (at most {max})")
        }
    };
    let body = format!(
        r#"{{"jsonrpc":"2.0","error":{{"code":{},"message":"{message}","data":{{"reason":"busy","what":"connections"}}}},"id":null}}"#,
        crate::error::BUSY
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.try_write(response.as_bytes());
}

/// A socket with the connection's slots, an idle timeout and a write-stall timeout.
///
/// - Idle: when no byte has arrived for `idle_timeout` and none of the connection's requests
///   or calls runs, reads fail with `TimedOut` and the connection closes.
/// - Stall: while a write cannot proceed (the peer's receive window is full: it does not
///   read), nothing more is read from the peer — its requests wait in the kernel, not in
///   memory — and when no byte could be written for `write_stall_timeout` the socket fails.
#[derive(Debug)]
pub(crate) struct GuardedIo {
    stream: TcpStream,
    load: Arc<ConnectionLoad>,
    _slot: Slot,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    write_stall_timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    paused_reader: Option<Waker>,
    failed: Option<&'static str>,
    ws_message_bytes_max: usize,
    batch_len_max: usize,
    inspector: Option<WsInspector>,
}

impl GuardedIo {
    fn new(
        stream: TcpStream,
        load: Arc<ConnectionLoad>,
        slot: Slot,
        limits: &SocketLimits,
    ) -> GuardedIo {
        GuardedIo {
            stream,
            load,
            _slot: slot,
            idle_timeout: limits.idle_timeout,
            idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            write_stall_timeout: limits.write_stall_timeout,
            stall: None,
            paused_reader: None,
            failed: None,
            ws_message_bytes_max: limits.ws_message_bytes_max as usize,
            batch_len_max: limits.batch_len_max as usize,
            inspector: None,
        }
    }

    /// Passes bytes just read from an upgraded connection through its [`WsInspector`].
    fn inspect(&mut self, read: &[u8]) {
        if self.inspector.is_none() {
            if !self.load.websocket.load(Ordering::Acquire) {
                return;
            }
            // The upgrade request was the last thing read: these are the first frames.
            self.inspector = Some(WsInspector::new(
                self.ws_message_bytes_max,
                self.batch_len_max,
            ));
        }
        if let Some(inspector) = self.inspector.as_mut() {
            let load = &self.load;
            inspector.feed(read, |verdict| load.found(verdict));
        }
    }

    fn fail(&mut self, reason: &'static str) -> io::Error {
        self.failed = Some(reason);
        if let Some(reader) = self.paused_reader.take() {
            reader.wake();
        }
        tracing::debug!(reason, "closing an RPC connection");
        io::Error::new(io::ErrorKind::TimedOut, reason)
    }

    fn wrote(&mut self) {
        self.stall = None;
        if let Some(reader) = self.paused_reader.take() {
            reader.wake();
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(reason) = this.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)));
        }
        if this.load.is_closed() {
            return Poll::Ready(Err(this.fail("the client does not read its answers")));
        }
        if this.stall.is_some() {
            // The peer does not read: read nothing more from it until it does (back-pressure),
            // or until the stall timeout closes it.
            this.paused_reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let deadline = Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    this.inspect(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => loop {
                match this.idle.as_mut().poll(cx) {
                    Poll::Pending => {
                        // Woken by a close for unread answers as well as by the socket.
                        this.load.park_reader(cx.waker());
                        return Poll::Pending;
                    }
                    Poll::Ready(()) if this.load.busy() => {
                        // A call or request runs: silence is the client waiting for it.
                        let deadline = Instant::now() + this.idle_timeout;
                        this.idle.as_mut().reset(deadline);
                    }
                    Poll::Ready(()) => return Poll::Ready(Err(this.fail("idle timeout"))),
                }
            },
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(reason) = this.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)));
        }
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if let Ok(written @ 1..) = result {
                    this.load.wrote_bytes(written);
                }
                this.wrote();
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = this.write_stall_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stall.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Err(this.fail("the peer does not read"))),
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` until `stop` fires, serving each with a fresh service
/// from `make_service` (jsonrpsee's tower service with our middleware).
pub(crate) async fn serve<S, F>(
    listener: TcpListener,
    make_service: F,
    stop: StopHandle,
    limits: SocketLimits,
) where
    F: Fn() -> S + Send + 'static,
    S: tower::Service<HttpRequest, Response = HttpResponse, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connections = Arc::new(Semaphore::new(limits.connections_max as usize));
    let per_ip: PerIp = Arc::default();
    let stopped = stop.clone().shutdown();
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, or a connection reset before accept: wait a
                // moment rather than spin.
                tracing::debug!(error = %err, "RPC accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let slot = match acquire_slot(&connections, &per_ip, remote.ip(), &limits) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::debug!(%remote, ?refusal, "RPC connection refused");
                refuse(socket, refusal);
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let load = Arc::new(ConnectionLoad::new(remote.ip(), &limits));
        let io = GuardedIo::new(socket, Arc::clone(&load), slot, &limits);
        tokio::spawn(serve_connection(
            io,
            make_service(),
            Connection(load),
            stop.clone(),
            remote,
            limits,
        ));
    }
}

async fn serve_connection<S>(
    io: GuardedIo,
    service: S,
    connection: Connection,
    stop: StopHandle,
    remote: SocketAddr,
    limits: SocketLimits,
) where
    S: tower::Service<HttpRequest, Response = HttpResponse, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let hyper_service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let mut request = request.map(HttpBody::new);
        request.extensions_mut().insert(connection.clone());
        tower::ServiceExt::oneshot(service.clone(), request)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.calls_per_connection_max);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
    let stopped = stop.shutdown();
    tokio::pin!(conn, stopped);
    let result = tokio::select! {
        result = &mut conn => result,
        () = &mut stopped => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%remote, error = %err, "RPC connection ended");
    }
}
