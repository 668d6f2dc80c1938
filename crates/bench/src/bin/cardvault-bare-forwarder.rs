//! `cardvault-bare-forwarder`: the vault's own serving stack with none of the vault's work, as a
//! benchmark target (docs/benchmarks.md, issue 17).
//!
//! It is built from the vault's parts: its runtime and serving threads, its accept loop
//! (`http_server::run`, hyper's HTTP/1 server and axum's router), its processor client
//! (`UpstreamClient`: one HTTP/2 connection per serving thread over rustls, the destination
//! gate's resolver) and its allocator. Every request to `/v1/charges` is sent on to the
//! processor stub as it came (body, `content-type`, `authorization`) and the stub's answer is
//! returned as it came. No key check, JSON, token read, decryption, template, audit record,
//! metrics, rate limit or scrub. Measured beside nginx, its throughput and CPU per call are the
//! most the vault could reach on this stack if all of its own work cost nothing.
//!
//! `cardvault-bare-forwarder --listen 127.0.0.1:PORT --upstream https://127.0.0.1:P/v1/charges --ca-file CA.pem`
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cardvault_core::destination::DestinationRules;
use cardvault_server::config::{LogFormat, LogLevel};
use cardvault_server::destinations::{PolicyResolver, SystemLookup};
use cardvault_server::http_server::{self, ConnectionLimits};
use cardvault_server::upstream::{UpstreamClient, UpstreamSettings};
use clap::Parser;

// The vault's allocator, so that allocation costs the same here as there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "The vault's serving stack with none of its work (a benchmark target)")]
struct Args {
    /// Address to listen on (loopback).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// The processor stub's URL every request is sent to.
    #[arg(long)]
    upstream: reqwest::Url,
    /// The CA the stub's certificate is signed by.
    #[arg(long)]
    ca_file: std::path::PathBuf,
}

struct Forward {
    upstream: UpstreamClient,
    url: reqwest::Url,
}

fn main() {
    let args = Args::parse();
    // The vault's own subscriber and filter, so that the libraries' trace points cost here what
    // they cost in the vault. With none installed, every span of h2's falls back to the `log`
    // crate's checks (`Span::log`): 11 % of this stack's instructions, none of them the vault's.
    cardvault_server::logging::init(LogFormat::Text, LogLevel::Info);
    // Its panic hook logs only where (a vault's panic message could quote a value); this
    // forwarder holds no card data, so its start-up failures keep saying why.
    drop(std::panic::take_hook());
    let runtime = cardvault_server::runtime::build().expect("runtime");
    runtime.block_on(serve(args));
}

async fn serve(args: Args) {
    // The stub listens on loopback: the same test-only relaxation the benchmark gives the vault.
    let rules = DestinationRules {
        allow_private: true,
        allowed_ports: vec![443, args.upstream.port().unwrap_or(443)],
        ..DestinationRules::default()
    };
    let upstream = UpstreamClient::new(UpstreamSettings {
        resolver: Arc::new(PolicyResolver::new(rules, Arc::new(SystemLookup))),
        connect_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(30),
        max_response_bytes: 10 * 1024 * 1024,
        extra_ca_file: Some(&args.ca_file),
    })
    .expect("processor client");
    let forward = Arc::new(Forward {
        upstream,
        url: args.upstream,
    });
    let app = Router::new()
        .route("/v1/charges", post(forward_one))
        .with_state(forward);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .expect("listen");
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 10_000,
        serving_threads: cardvault_server::runtime::serving_threads(),
    };
    http_server::run(listener, app, limits, None, std::future::pending())
        .await
        .expect("serve");
}

async fn forward_one(
    State(forward): State<Arc<Forward>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut sent = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION] {
        if let Some(value) = headers.get(&name) {
            sent.insert(name, value.clone());
        }
    }
    match forward
        .upstream
        .send(None, Method::POST, forward.url.clone(), sent, body.to_vec())
        .await
    {
        Ok(answer) => {
            let mut response = (answer.status, answer.body).into_response();
            if let Some(kind) = answer.headers.get(header::CONTENT_TYPE) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, kind.clone());
            }
            response
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
