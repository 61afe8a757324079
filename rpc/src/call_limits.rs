//! Per-connection call bounds, as jsonrpsee RPC middleware: at most `calls_per_connection_max`
//! calls run at once on one connection (more are answered at once with code 1203 `busy`, so a
//! pipelining client learns to slow down and nothing waits in memory), and the calls of a
//! batch run concurrently within that bound rather than one after another. Every call, and
//! each call of a batch, also takes a token of its address's bucket ([`CallRate`]); without
//! one it is answered `busy` (`what: "call_rate"`) and not run.

use std::future::Future;
use std::sync::Arc;

use futures::future::Either;
use futures::StreamExt;
use jsonrpsee_core::server::{BatchResponseBuilder, MethodResponse};
use jsonrpsee_server::middleware::rpc::{Batch, BatchEntry, Notification, Request, RpcServiceT};
use jsonrpsee_types::ErrorObjectOwned;

use crate::call_rate::CallRate;
use crate::error::{ApiError, INVALID_REQUEST};
use crate::http_limits::ID_RULE;
use crate::socket::{CallGuard, Connection};

/// Wraps jsonrpsee's RPC service.
#[derive(Debug, Clone)]
pub(crate) struct CallLimits<S> {
    inner: Arc<S>,
    response_bytes_max: usize,
    rate: Arc<CallRate>,
}

impl<S> CallLimits<S> {
    pub(crate) fn new(inner: S, response_bytes_max: usize, rate: Arc<CallRate>) -> CallLimits<S> {
        CallLimits {
            inner: Arc::new(inner),
            response_bytes_max,
            rate,
        }
    }
}

fn over_rate(per_second: u32) -> ErrorObjectOwned {
    ErrorObjectOwned::from(ApiError::Busy {
        what: "call_rate".into(),
        limit: u64::from(per_second),
    })
}

/// Takes `calls` tokens of the connection's address; `Err` with the error when there are
/// not enough. In-process calls (no connection) are not counted.
fn take_rate(
    rate: &CallRate,
    extensions: &http::Extensions,
    calls: usize,
) -> Result<(), ErrorObjectOwned> {
    match extensions.get::<Connection>() {
        None => Ok(()),
        Some(connection) => rate.take(connection.0.ip(), calls).map_err(over_rate),
    }
}

/// The answer to a WebSocket request, or batch, whose `id` JSON-RPC cannot answer (the
/// socket's `WsInspector` counted it), as HTTP gives it.
fn invalid_id() -> MethodResponse {
    MethodResponse::error(
        jsonrpsee_types::Id::Null,
        ErrorObjectOwned::owned(INVALID_REQUEST, ID_RULE, None::<()>),
    )
}

fn busy(limit: u32) -> ErrorObjectOwned {
    ErrorObjectOwned::from(ApiError::Busy {
        what: "calls_per_connection".into(),
        limit: u64::from(limit),
    })
}

/// Starts a call on the request's connection: `Ok(None)` when the request has no connection
/// (called in-process), `Err` with the limit when the connection is at it.
fn start_call(extensions: &http::Extensions) -> Result<Option<CallGuard>, u32> {
    match extensions.get::<Connection>() {
        None => Ok(None),
        Some(connection) => connection
            .0
            .try_start_call()
            .map(Some)
            .ok_or(connection.0.calls_max()),
    }
}

impl<S> RpcServiceT for CallLimits<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, request: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let closed = request
            .extensions()
            .get::<Connection>()
            .filter(|connection| connection.0.answer_produced())
            .map(|connection| connection.0.calls_max());
        if let Some(limit) = closed {
            // Closed: the answer has no one to go to, and the call is not run.
            return Either::Left(std::future::ready(MethodResponse::error(
                request.id,
                busy(limit),
            )));
        }
        if let Err(error) = take_rate(&self.rate, request.extensions(), 1) {
            return Either::Left(std::future::ready(MethodResponse::error(request.id, error)));
        }
        match start_call(request.extensions()) {
            Err(limit) => Either::Left(std::future::ready(MethodResponse::error(
                request.id,
                busy(limit),
            ))),
            Ok(guard) => {
                let inner = Arc::clone(&self.inner);
                let connection = request.extensions().get::<Connection>().cloned();
                Either::Right(async move {
                    let response = inner.call(request).await;
                    drop(guard);
                    // The answer now waits for its connection to write it: counted until then.
                    if let Some(connection) = connection {
                        connection.0.answer_bytes(response.as_json().get().len());
                    }
                    response
                })
            }
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        // A batch is one answer of its connection, counted like a call: a client that
        // pipelines batches and reads none of their answers is closed just the same.
        let closed = batch
            .iter()
            .find_map(|entry| entry.as_ref().ok())
            .and_then(|entry| entry.extensions().get::<Connection>())
            .filter(|connection| connection.0.answer_produced())
            .map(|connection| connection.0.calls_max());
        // A batch the socket found an unanswerable `id` in: refused whole, as over HTTP. Such
        // an entry reached us as a notification (or an invalid entry), so only a batch holding
        // one may be the one counted.
        let refused = batch
            .iter()
            .any(|entry| matches!(entry, Err(_) | Ok(BatchEntry::Notification(_))))
            && batch
                .iter()
                .find_map(|entry| entry.as_ref().ok())
                .and_then(|entry| entry.extensions().get::<Connection>())
                .is_some_and(|connection| connection.0.take_bad_batch());
        let inner = Arc::clone(&self.inner);
        let response_bytes_max = self.response_bytes_max;
        let rate = Arc::clone(&self.rate);
        async move {
            if refused {
                return invalid_id();
            }
            if let Some(limit) = closed {
                return MethodResponse::error(jsonrpsee_types::Id::Null, busy(limit));
            }
            let entries: Vec<_> = batch.into_iter().collect();
            // The batch as a whole is one call of its connection; its entries share the
            // connection's bound.
            let extensions = entries
                .iter()
                .find_map(|entry| entry.as_ref().ok().map(|entry| entry.extensions().clone()))
                .unwrap_or_default();
            let concurrency = match extensions.get::<Connection>() {
                Some(connection) => connection.0.calls_max() as usize,
                None => 1,
            };
            // Each call of the batch takes a token; short of them the batch is refused whole.
            let call_count = entries
                .iter()
                .filter(|entry| matches!(entry, Ok(BatchEntry::Call(_))))
                .count();
            if let Err(error) = take_rate(&rate, &extensions, call_count) {
                return MethodResponse::error(jsonrpsee_types::Id::Null, error);
            }
            let _guard = match start_call(&extensions) {
                Ok(guard) => guard,
                Err(limit) => return MethodResponse::error(jsonrpsee_types::Id::Null, busy(limit)),
            };
            let mut got_notification = false;
            let mut calls = Vec::with_capacity(entries.len());
            for entry in entries {
                match entry {
                    Ok(BatchEntry::Call(request)) => {
                        calls.push(Either::Left(inner.call(request)));
                    }
                    Ok(BatchEntry::Notification(notification)) => {
                        got_notification = true;
                        let _ = inner.notification(notification).await;
                    }
                    Err(err) => {
                        let (err, id) = err.into_parts();
                        calls.push(Either::Right(std::future::ready(MethodResponse::error(
                            id, err,
                        ))));
                    }
                }
            }
            let mut responses = futures::stream::iter(calls).buffered(concurrency.max(1));
            let mut builder = BatchResponseBuilder::new_with_limit(response_bytes_max);
            while let Some(response) = responses.next().await {
                if let Err(too_big) = builder.append(response) {
                    return too_big;
                }
            }
            if builder.is_empty() && got_notification {
                MethodResponse::notification()
            } else {
                let response = MethodResponse::from_batch(builder.finish());
                if let Some(connection) = extensions.get::<Connection>() {
                    connection.0.answer_bytes(response.as_json().get().len());
                }
                response
            }
        }
    }

    fn notification<'a>(
        &self,
        notification: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        // A WebSocket request whose `id` cannot be answered reaches us as a notification;
        // the socket counted it, and it gets -32600 with `id: null` instead of silence.
        let bad_id = notification
            .extensions()
            .get::<Connection>()
            .filter(|connection| connection.0.take_bad_id());
        match bad_id {
            Some(connection) => {
                connection.0.answer_produced();
                Either::Left(std::future::ready(invalid_id()))
            }
            None => Either::Right(self.inner.notification(notification)),
        }
    }
}
