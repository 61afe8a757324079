//! HTTP request bounds applied before jsonrpsee sees a request: framing the body (no
//! `Content-Length` with `Transfer-Encoding`, no declared length over the limit), reading it
//! whole within `body_timeout_ms`, and refusing request ids JSON-RPC cannot answer.
//!
//! Each refusal is a JSON-RPC error object with `id: null` — never a 5xx, never silence:
//!
//! | request | HTTP status | code |
//! |---|---|---|
//! | a body that does not decode (`Content-Length` with `Transfer-Encoding: chunked` and a body that is not chunked) | 400 | -32600 |
//! | `Content-Length` not a number | 400 | -32600 |
//! | `Content-Length` or body over `request_body_bytes_max` | 413 | -32007 |
//! | body not complete within `body_timeout_ms` | 408 | -32600 |
//! | an `id` that is an object, array, boolean, fraction, negative or beyond `u64` | 200 | -32600 |
//!
//! The framing refusals close the connection (`Connection: close`): the rest of the body is
//! not read.
//!
//! A body of more than [`LARGE_REQUEST_BYTES`] is handled (ids checked, parsed by jsonrpsee,
//! its calls run) only while it holds one of the server's `large_requests_max` permits; when
//! none is free it is answered at once `503` with `busy` (1203, `what: "large_requests"`).
//! Parsing megabytes of JSON is CPU on the async workers that also serve every other client
//! and the node's consensus driver: a few clients sending 4 MB bodies in a loop must not take
//! all of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use jsonrpsee_server::{HttpBody, HttpRequest, HttpResponse};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

use crate::error::{ApiError, INVALID_REQUEST, OVERSIZED_REQUEST};
use crate::socket::Connection;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bodies longer than this are large: handled only with a permit of `large_requests_max`.
/// A normal call, a transaction of the chain's default 16,896-byte limit (34 KB of hex) or a
/// bench's batch of a hundred transfers is far below it.
pub(crate) const LARGE_REQUEST_BYTES: usize = 256 * 1024;

/// Reads and checks every JSON-RPC POST body before passing it on.
#[derive(Debug, Clone)]
pub(crate) struct RequestLimitsLayer {
    body_bytes_max: u32,
    body_timeout: Duration,
    large: Arc<Semaphore>,
    large_max: u32,
}

impl RequestLimitsLayer {
    pub(crate) fn new(
        body_bytes_max: u32,
        body_timeout: Duration,
        large_requests_max: u32,
    ) -> RequestLimitsLayer {
        RequestLimitsLayer {
            body_bytes_max,
            body_timeout,
            large: Arc::new(Semaphore::new(large_requests_max as usize)),
            large_max: large_requests_max,
        }
    }
}

impl<S> Layer<S> for RequestLimitsLayer {
    type Service = RequestLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLimits {
            limits: self.clone(),
            inner,
        }
    }
}

/// The service [`RequestLimitsLayer`] makes.
#[derive(Debug, Clone)]
pub(crate) struct RequestLimits<S> {
    limits: RequestLimitsLayer,
    inner: S,
}

impl<S> Service<HttpRequest> for RequestLimits<S>
where
    S: Service<HttpRequest, Response = HttpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        // The request counts as work on its connection until answered: a long wait is not
        // idleness.
        let guard = request
            .extensions()
            .get::<Connection>()
            .map(|connection| connection.0.start_request());
        // Take the service that was driven to readiness, leave a clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        Box::pin(async move {
            let response = if request.method() == Method::POST {
                match read_checked(request, &limits).await {
                    // Held until the answer is made: parsing and running a large body.
                    Ok((request, _large_permit)) => inner.oneshot(request).await,
                    Err(refusal) => Ok(refusal),
                }
            } else {
                // WebSocket upgrades (their messages are bounded by jsonrpsee and the
                // socket, and their ids checked by the socket's `WsInspector`), health
                // checks, CORS preflights: nothing to read.
                if jsonrpsee_server::ws::is_upgrade_request(&request) {
                    if let Some(connection) = request.extensions().get::<Connection>() {
                        connection.0.upgrading_to_websocket();
                    }
                }
                inner.oneshot(request).await
            };
            drop(guard);
            response
        })
    }
}

/// The request with its body read whole and checked (and, for a large body, the permit it
/// holds while it is handled), or the answer refusing it.
async fn read_checked(
    request: HttpRequest,
    limits: &RequestLimitsLayer,
) -> Result<(HttpRequest, Option<tokio::sync::OwnedSemaphorePermit>), HttpResponse> {
    let max = limits.body_bytes_max;
    // With `Transfer-Encoding` hyper has already dropped `Content-Length` (RFC 9112 §6.3: the
    // chunked coding wins) and will close the connection after this request; a body that is
    // then not validly chunked fails below as a malformed body.
    if let Some(value) = request.headers().get(header::CONTENT_LENGTH) {
        let Some(len) = value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
        else {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "Content-Length is not a number",
                true,
            ));
        };
        if len > u64::from(max) {
            return Err(too_large(max));
        }
    }
    let (parts, body) = request.into_parts();
    let limited = Limited::new(body, max as usize);
    let bytes = match tokio::time::timeout(limits.body_timeout, limited.collect()).await {
        Err(_) => {
            return Err(refusal(
                StatusCode::REQUEST_TIMEOUT,
                INVALID_REQUEST,
                &format!(
                    "request body not complete within {} ms",
                    limits.body_timeout.as_millis()
                ),
                true,
            ))
        }
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => return Err(too_large(max)),
        Ok(Err(_)) => {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "malformed request body",
                true,
            ))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let permit = if bytes.len() > LARGE_REQUEST_BYTES {
        match Arc::clone(&limits.large).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => return Err(busy_large(limits.large_max)),
        }
    } else {
        None
    };
    if let Err(reason) = check_ids(&bytes) {
        return Err(refusal(StatusCode::OK, INVALID_REQUEST, &reason, false));
    }
    Ok((
        HttpRequest::from_parts(parts, HttpBody::new(Full::new(bytes))),
        permit,
    ))
}

/// `503` with `busy` (`large_requests`): every permit for large bodies is taken.
fn busy_large(max: u32) -> HttpResponse {
    let error = ApiError::Busy {
        what: "large_requests".into(),
        limit: u64::from(max),
    };
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "error": jsonrpsee_types::ErrorObjectOwned::from(error),
        "id": null,
    })
    .to_string();
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn too_large(max: u32) -> HttpResponse {
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        OVERSIZED_REQUEST,
        &format!("Request is too big: the limit is {max} bytes"),
        true,
    )
}

/// A JSON-RPC error answer with `id: null`.
fn refusal(status: StatusCode, code: i32, message: &str, close: bool) -> HttpResponse {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "error": { "code": code, "message": message },
        "id": null,
    })
    .to_string();
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Checks the `id` of the request object, or of each object of a batch, without building a
/// `serde_json::Value` of the body. Bodies that are not JSON, or not objects, pass: jsonrpsee
/// answers them (-32700, -32600).
pub(crate) fn check_ids(body: &[u8]) -> Result<(), String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match de::Deserializer::deserialize_any(&mut deserializer, Body) {
        Ok(verdict) => verdict,
        Err(_) => Ok(()),
    }
}

pub(crate) const ID_RULE: &str =
    "id must be a string, an integer in 0..=18446744073709551615 or null";

/// A whole body: a request object or a batch.
struct Body;

impl<'de> Visitor<'de> for Body {
    type Value = Result<(), String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON-RPC request or batch")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        request_ids(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut verdict = Ok(());
        let mut index = 0usize;
        while let Some(entry) = seq.next_element_seed(Entry)? {
            if let (Ok(()), Err(reason)) = (&verdict, entry) {
                verdict = Err(format!("batch entry {index}: {reason}"));
            }
            index += 1;
        }
        Ok(verdict)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
}

/// One entry of a batch: an object is checked, anything else passes (jsonrpsee refuses it).
struct Entry;

impl<'de> DeserializeSeed<'de> for Entry {
    type Value = Result<(), String>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(Body)
    }
}

fn request_ids<'de, A: MapAccess<'de>>(mut map: A) -> Result<Result<(), String>, A::Error> {
    let mut verdict = Ok(());
    while let Some(is_id) = map.next_key_seed(IdKey)? {
        if is_id {
            let id = map.next_value_seed(Id)?;
            if verdict.is_ok() {
                verdict = id;
            }
        } else {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(verdict)
}

/// A key of a request object: is it `id`?
struct IdKey;

impl<'de> DeserializeSeed<'de> for IdKey {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IdKey {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == "id")
    }
}

/// The value of `id`.
struct Id;

impl<'de> DeserializeSeed<'de> for Id {
    type Value = Result<(), String>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Id {
    type Value = Result<(), String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an id")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_i64<E>(self, id: i64) -> Result<Self::Value, E> {
        Ok(if id >= 0 {
            Ok(())
        } else {
            Err(format!("{ID_RULE}, not {id}"))
        })
    }
    fn visit_f64<E>(self, id: f64) -> Result<Self::Value, E> {
        Ok(Err(format!("{ID_RULE}, not {id}")))
    }
    fn visit_bool<E>(self, id: bool) -> Result<Self::Value, E> {
        Ok(Err(format!("{ID_RULE}, not {id}")))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(format!("{ID_RULE}, not an object")))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(format!("{ID_RULE}, not an array")))
    }
}

#[cfg(test)]
mod tests {
    use super::check_ids;

    #[test]
    fn ids_json_rpc_can_answer_pass_and_others_are_named() {
        for good in [
            r#"{"jsonrpc":"2.0","id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","method":"m","params":[{"id":{}}]}"#,
            r#"{"id":18446744073709551615}"#,
            r#"[{"id":1},{"id":"x"},3]"#,
            "not json",
            "42",
        ] {
            assert_eq!(check_ids(good.as_bytes()), Ok(()), "{good}");
        }
        for bad in [
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":true,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":-1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"m"}"#,
            r#"[{"id":1},{"id":false}]"#,
        ] {
            let verdict = check_ids(bad.as_bytes());
            assert!(
                verdict
                    .as_ref()
                    .is_err_and(|reason| reason.contains("id must be")),
                "{bad}: {verdict:?}"
            );
        }
    }
}
