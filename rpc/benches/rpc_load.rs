//! Load benchmark: `mesh_getAccount` requests per second and latency percentiles over HTTP,
//! next to a bare jsonrpsee server answering a constant (the ceiling), measured in the same run
//! on the same machine with the same load generator.
//!
//! `cargo bench -p mesh-rpc --bench rpc_load` measures (5 s per target, 32 concurrent callers);
//! under `cargo test --benches` each target runs for a moment, to keep it compiling and working.
//! Against a real node: `MESH_RPC_URL=http://127.0.0.1:30401 MESH_RPC_ADDRESS=0x… cargo bench -p
//! mesh-rpc --bench rpc_load` (the in-memory node is then not started).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    missing_docs,
    unreachable_pub
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonrpsee_core::client::ClientT;
use jsonrpsee_core::rpc_params;
use jsonrpsee_http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee_server::{RpcModule, ServerBuilder};

struct Figures {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn load(
    client: Arc<HttpClient>,
    method: &'static str,
    param: Option<String>,
    callers: usize,
    duration: Duration,
) -> Figures {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let client = client.clone();
        let param = param.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let result: Result<serde_json::Value, _> = match &param {
                    Some(p) => client.request(method, rpc_params![p]).await,
                    None => client.request(method, rpc_params![]).await,
                };
                latencies.push(t0.elapsed());
                if result.is_err() {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, task_errors) = task.await.unwrap();
        all.extend(latencies);
        errors += task_errors;
    }
    let elapsed = started.elapsed();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        requests: all.len(),
        errors,
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn report(name: &str, figures: &Figures) {
    println!(
        "{name:<28} {:>9.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms   ({} requests, {} errors)",
        figures.requests as f64 / figures.elapsed.as_secs_f64(),
        figures.p50.as_secs_f64() * 1e3,
        figures.p99.as_secs_f64() * 1e3,
        figures.max.as_secs_f64() * 1e3,
        figures.requests,
        figures.errors,
    );
}

fn http_client(url: &str) -> Arc<HttpClient> {
    Arc::new(
        HttpClientBuilder::default()
            .max_concurrent_requests(1024)
            .build(url)
            .unwrap(),
    )
}

fn main() {
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let (duration, callers) = if measuring {
        (Duration::from_secs(5), 32)
    } else {
        (Duration::from_millis(200), 4)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        // The ceiling: a bare jsonrpsee server with one constant method.
        let mut module = RpcModule::new(());
        module
            .register_method("bare_constant", |_, _, _| 42u64)
            .unwrap();
        let bare = ServerBuilder::default().build("127.0.0.1:0").await.unwrap();
        let bare_addr = bare.local_addr().unwrap();
        let bare_handle = bare.start(module);

        let (target_url, address, _node_server) = match std::env::var("MESH_RPC_URL") {
            Ok(url) => {
                let address = std::env::var("MESH_RPC_ADDRESS")
                    .expect("MESH_RPC_ADDRESS: the account to read");
                (url, address, None)
            }
            Err(_) => {
                let node = common::MockNode::new();
                let (server, addr) = common::serve(&node, common::test_config()).await;
                (
                    format!("http://{addr}"),
                    common::alice().address().to_string(),
                    Some((node, server)),
                )
            }
        };

        println!(
            "{callers} concurrent callers, {} s per target, HTTP keep-alive",
            duration.as_secs_f64()
        );
        let bare_figures = load(
            http_client(&format!("http://{bare_addr}")),
            "bare_constant",
            None,
            callers,
            duration,
        )
        .await;
        report("bare jsonrpsee constant", &bare_figures);
        let account_figures = load(
            http_client(&target_url),
            "mesh_getAccount",
            Some(address),
            callers,
            duration,
        )
        .await;
        report("mesh_getAccount", &account_figures);
        assert_eq!(bare_figures.errors + account_figures.errors, 0);
        bare_handle.stop().unwrap();
    });
}
