//! The resource server's own cost on a request, without a network: one axum router with the
//! same handler on an unprotected route, a route behind `ProtectedLayer` and a route whose
//! handler is wrapped by `ProtectedLayer::protect`, called in process
//! (`tower::ServiceExt::oneshot`) with 256 distinct ~600-byte bearer tokens in turn, all
//! already in the verified-token cache. Prints nanoseconds per call for each route and what
//! each protection adds on a cache hit: the keyed hash of the token, the cache lookup, the
//! claims put into the request and, for the layer, the extra route axum puts around it.
//!
//! `cargo bench -p mcp-auth-resource --bench layer [-- TOKENS]`; `LAYER_ONLY=/mcp` (or
//! `/unprotected`, `/mcp-handler`) calls one route only, for a profiler; `LAYER_THREADS=2`
//! shares the calls (and the tokens) between two runtime threads, as a server's are, which
//! shows what memory both threads write to costs: ns per call is then CPU time per call. A benchmark, not a
//! test: it asserts only that every call is answered 200.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use mcp_auth_resource::{
    Claims, ResourceConfig, ResourceServer, TokenVerifier, Verifier, VerifyError,
};
use mcp_auth_types::{Issuer, ResourceUrl};
use tower::ServiceExt;

// The allocator `mcp-auth serve` and `mcp-auth-bench` use, so the figures compare.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ISSUER: &str = "http://127.0.0.1:9/";
const RESOURCE: &str = "http://127.0.0.1:9/mcp";
const CALLS: usize = 2_000_000;

/// Accepts any token: the benchmark measures the cache hit, not the verification.
struct AnyToken;

#[async_trait::async_trait]
impl TokenVerifier for AnyToken {
    async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        Ok(Claims {
            subject: format!("user-{}", token.get(..8).unwrap_or(token)),
            client_id: Some("bench-client".into()),
            scopes: Default::default(),
            issuer: ISSUER.trim_end_matches('/').into(),
            audience: vec![RESOURCE.into()],
            expires_at: Some(u64::from(u32::MAX)),
            jti: None,
            extra: Default::default(),
        })
    }
}

async fn handler() -> &'static str {
    "ok"
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens: usize = match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        Some(n) => n.parse()?,
        None => 256,
    };
    let threads = std::env::var("LAYER_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .build()?;
    runtime.block_on(run(tokens.max(1), threads))
}

async fn run(tokens: usize, threads: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ResourceConfig::new(
        ResourceUrl::parse_exact(RESOURCE)?,
        vec![Issuer::parse(ISSUER.trim_end_matches('/'))?],
        Verifier::Custom(Arc::new(AnyToken)),
    );
    config.danger_allow_insecure_http = true;
    let rs = ResourceServer::new(config)?;
    // `with_state` as `axum::serve` does once per connection: without it axum would apply
    // the route's layers again on every call.
    let app = axum::Router::new()
        .route("/mcp", post(handler))
        .layer(rs.layer())
        .merge(axum::Router::new().route("/unprotected", post(handler)))
        .merge(axum::Router::new().route("/mcp-handler", post(rs.layer().protect(handler))))
        .with_state(());
    // Shaped as the JWTs `mcp-auth serve` issues: `header.payload.signature`, 600 bytes,
    // an ES256 signature's 86 characters, distinct in payload and signature.
    let filler = |n: usize, seed: usize| -> String {
        (0..n)
            .map(|j| char::from(b'a' + ((j * 7 + seed * 13) % 26) as u8))
            .collect()
    };
    let bearers: Vec<String> = (0..tokens)
        .map(|i| {
            let header = filler(100, 0);
            let payload = format!("{i:08}{}", filler(404, i));
            let signature = format!("{i:08}{}", filler(78, i + 1));
            format!("Bearer {header}.{payload}.{signature}")
        })
        .collect();
    let bearers = Arc::new(bearers);
    // Every token verified once, so that every measured call is a cache hit.
    calls(&app, &bearers, "/mcp", 0..tokens)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "{tokens} tokens of 600 bytes, {CALLS} calls per route and round, {threads} thread(s)"
    );
    let only = std::env::var("LAYER_ONLY").ok();
    for round in 1..=3 {
        let mut ns = [0.0; 3];
        for (i, path) in ["/unprotected", "/mcp", "/mcp-handler"]
            .into_iter()
            .enumerate()
        {
            if only.as_deref().is_some_and(|o| o != path) {
                continue;
            }
            let start = Instant::now();
            // Each thread its own share of the calls and of the tokens, as connections are.
            let tasks: Vec<_> = (0..threads)
                .map(|t| {
                    let (app, bearers) = (app.clone(), bearers.clone());
                    let share = CALLS / threads;
                    tokio::spawn(async move {
                        let mine = (t * share..(t + 1) * share).map(move |n| {
                            let per = (tokens / threads).max(1);
                            (t * per + n % per) % tokens
                        });
                        calls(&app, &bearers, path, mine)
                            .await
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
            ns[i] = start.elapsed().as_nanos() as f64 * threads as f64 / CALLS as f64;
        }
        if let Some(o) = &only {
            println!("round {round}: {o} {:.0} ns/call", ns.iter().sum::<f64>());
            continue;
        }
        println!(
            "round {round}: unprotected {:.0} ns/call; layer {:.0} ns/call (+{:.0} ns); \
             wrapped handler {:.0} ns/call (+{:.0} ns)",
            ns[0],
            ns[1],
            ns[1] - ns[0],
            ns[2],
            ns[2] - ns[0]
        );
    }
    Ok(())
}

/// Calls `path` once with each of the tokens `which` names, in turn.
async fn calls(
    app: &axum::Router,
    bearers: &[String],
    path: &'static str,
    which: impl Iterator<Item = usize>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for i in which {
        let req = Request::post(path)
            .header("authorization", &bearers[i])
            .body(Body::empty())?;
        let status = app.clone().oneshot(req).await?.status();
        if status != StatusCode::OK {
            return Err(format!("{path} answered {status}").into());
        }
    }
    Ok(())
}
