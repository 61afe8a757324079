//! `GET /livez` and `GET /readyz`: plain HTTP on the RPC port, for load balancers and
//! orchestrators that do not speak JSON-RPC.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, Method, StatusCode};
use jsonrpsee_server::{HttpBody, HttpRequest, HttpResponse};
use tower::{Layer, Service};

use crate::backend::Backend;
use crate::methods::Api;
use crate::server::RpcServerConfig;
use crate::types::{NodeStatus, ReadinessCheck, ReadinessReport};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Answers the two health paths itself and passes everything else on.
#[derive(Debug)]
pub(crate) struct HealthLayer<B> {
    api: Api<B>,
}

impl<B> Clone for HealthLayer<B> {
    fn clone(&self) -> Self {
        HealthLayer {
            api: self.api.clone(),
        }
    }
}

impl<B> HealthLayer<B> {
    pub(crate) fn new(api: Api<B>) -> HealthLayer<B> {
        HealthLayer { api }
    }
}

impl<B, S> Layer<S> for HealthLayer<B> {
    type Service = Health<B, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Health {
            api: self.api.clone(),
            inner,
        }
    }
}

/// The service [`HealthLayer`] makes.
#[derive(Debug)]
pub(crate) struct Health<B, S> {
    api: Api<B>,
    inner: S,
}

impl<B, S: Clone> Clone for Health<B, S> {
    fn clone(&self) -> Self {
        Health {
            api: self.api.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<B, S> Service<HttpRequest> for Health<B, S>
where
    B: Backend,
    S: Service<HttpRequest, Response = HttpResponse, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        if request.method() == Method::GET {
            match request.uri().path() {
                "/livez" => {
                    return Box::pin(async {
                        Ok(json_response(StatusCode::OK, "{\"live\":true}".into()))
                    })
                }
                "/readyz" => {
                    let api = self.api.clone();
                    return Box::pin(async move {
                        let status = api.backend().status().await;
                        let report = readiness(api.config(), status.as_ref().ok(), now_ms());
                        let code = if report.ready {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        let body = serde_json::to_string(&report).unwrap_or_default();
                        Ok(json_response(code, body))
                    });
                }
                _ => {}
            }
        }
        Box::pin(self.inner.call(request))
    }
}

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The readiness checks: the backend answers, enough peers, not syncing, a recent finalized
/// block. `status` is `None` when the backend failed to answer.
pub(crate) fn readiness(
    config: &RpcServerConfig,
    status: Option<&NodeStatus>,
    now_ms: u64,
) -> ReadinessReport {
    let mut checks = Vec::new();
    match status {
        None => checks.push(ReadinessCheck {
            name: "backend".into(),
            ok: false,
            detail: "the node did not report its status".into(),
        }),
        Some(status) => {
            checks.push(ReadinessCheck {
                name: "has_peers".into(),
                ok: status.peer_count >= config.ready_peers_min,
                detail: format!(
                    "{} peers, at least {} required",
                    status.peer_count, config.ready_peers_min
                ),
            });
            checks.push(ReadinessCheck {
                name: "not_syncing".into(),
                ok: !status.syncing,
                detail: if status.syncing {
                    "catching up with peers".into()
                } else {
                    "in sync".into()
                },
            });
            let age_ms = now_ms.saturating_sub(status.finalized_time_ms);
            checks.push(ReadinessCheck {
                name: "recent_block".into(),
                ok: age_ms <= config.ready_block_age_max_ms,
                detail: format!(
                    "newest finalized block (height {}) is {age_ms} ms old, at most {} allowed",
                    status.finalized_height, config.ready_block_age_max_ms
                ),
            });
        }
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|check| !check.ok)
        .map(|check| check.name.clone())
        .collect();
    ReadinessReport {
        ready: failed.is_empty(),
        checks,
        failed,
    }
}
