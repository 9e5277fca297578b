//! TEMPORARY micro-benchmark (to be deleted): layer cost in-process.
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::Request;
use mcp_auth_resource::{
    Claims, ResourceConfig, ResourceServer, TokenVerifier, Verifier, VerifyError,
};
use mcp_auth_types::{Issuer, ResourceUrl};
use tower::{Service, ServiceExt};

struct Any;
#[async_trait::async_trait]
impl TokenVerifier for Any {
    async fn verify(&self, _t: &str) -> Result<Claims, VerifyError> {
        Ok(Claims {
            subject: "s".into(),
            client_id: Some("c".into()),
            scopes: "mcp".parse().unwrap(),
            issuer: "http://127.0.0.1:1".into(),
            audience: vec!["http://127.0.0.1:1/mcp".into()],
            expires_at: Some(u64::MAX / 2),
            jti: None,
            extra: Default::default(),
        })
    }
    fn cache_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(3600)
    }
}

async fn h() -> &'static str {
    "ok"
}

fn app() -> Router {
    let mut rc = ResourceConfig::new(
        ResourceUrl::parse_exact("http://127.0.0.1:1/mcp").unwrap(),
        vec![Issuer::parse("http://127.0.0.1:1").unwrap()],
        Verifier::Custom(Arc::new(Any)),
    );
    rc.danger_allow_insecure_http = true;
    rc.token_cache_ttl = std::time::Duration::from_secs(3600);
    let rs = ResourceServer::new(rc).unwrap();
    Router::new()
        .merge(Router::new().route("/mcp", post(h)).layer(rs.layer()))
        .route("/u", post(h))
        .merge(
            Router::new()
                .route("/noop", post(h))
                .layer(tower::util::MapRequestLayer::new(|mut r: Request<Body>| {
                    r.extensions_mut().insert(Arc::new(7u32));
                    r
                })),
        )
        .with_state(())
}

fn run(app: Router, path: &str, n: usize, t_idx: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let tok = format!(
        "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6IjEyMyJ9.{}{t_idx}.{}",
        "QUJD".repeat(110),
        "x_-Y".repeat(22)
    );
    let auth = format!("Bearer {tok}");
    rt.block_on(async {
        let mut svc = app;
        for _ in 0..n {
            let req = Request::post(path)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(Body::empty())
                .unwrap();
            let r = <Router as ServiceExt<Request<Body>>>::ready(&mut svc)
                .await
                .unwrap()
                .call(req)
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|a| a.parse().unwrap()).unwrap_or(200_000);
    let threads: usize = args.get(2).map(|a| a.parse().unwrap()).unwrap_or(1);
    let rounds: usize = args.get(3).map(|a| a.parse().unwrap()).unwrap_or(15);
    let paths: Vec<String> = if args.len() > 4 {
        args[4..].to_vec()
    } else {
        vec!["/u".into(), "/noop".into(), "/mcp".into()]
    };
    let app = app();
    let mut best = std::collections::BTreeMap::new();
    for _ in 0..rounds {
        for path in &paths {
            let t = Instant::now();
            let hs: Vec<_> = (0..threads)
                .map(|i| {
                    let app = app.clone();
                    let path = path.clone();
                    std::thread::spawn(move || run(app, &path, n, i))
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            // CPU per op when the threads run in parallel.
            let ns = t.elapsed().as_nanos() as f64 / n as f64;
            let e = best.entry(path.clone()).or_insert(f64::MAX);
            *e = f64::min(*e, ns);
        }
    }
    for (p, ns) in &best {
        println!("best {p}: {ns:.0} ns/op ({threads} threads)");
    }
}
