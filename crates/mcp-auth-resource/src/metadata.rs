//! Serving the protected resource metadata (RFC 9728 §3).

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use mcp_auth_types::{HttpUrl, ProtectedResourceMetadata};

use crate::ResourceConfig;

/// A router serving the metadata document at the path-inserted well-known URL
/// (`/.well-known/oauth-protected-resource/mcp` for `https://host/mcp`) and at the root one
/// (`/.well-known/oauth-protected-resource`), as the MCP specification has clients try them
/// in that order. `resource` is exactly the configured identifier (RFC 9728 §3.3: clients
/// compare it with the URL they used).
///
/// Responses carry `Cache-Control: public, max-age=…` and `Access-Control-Allow-Origin: *`
/// (the document is public, and browser-based clients fetch it cross-origin).
///
/// Merge it into the application's router. Its routes are built with
/// `without_v07_checks`, so a resource path segment starting with `:` or `*` works;
/// merging such a router into one that keeps those checks panics at startup.
pub fn prm_router<S>(config: &ResourceConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router_for(
        &config.metadata(),
        &config.metadata_urls(),
        config.metadata_max_age,
    )
}

pub(crate) fn router_for<S>(
    doc: &ProtectedResourceMetadata,
    urls: &[HttpUrl],
    max_age: Duration,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let body = match serde_json::to_vec(doc) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            // Unreachable: the document is strings and a JSON map.
            tracing::error!(error = %e, "cannot serialize protected resource metadata");
            Bytes::new()
        }
    };
    let cache_control = HeaderValue::try_from(format!("public, max-age={}", max_age.as_secs()))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"));
    let handler = move || {
        let body = body.clone();
        let cache_control = cache_control.clone();
        async move { document(body, cache_control) }
    };
    let mut paths: Vec<&str> = urls.iter().map(|u| u.url().path()).collect();
    paths.dedup();
    let mut router = Router::new().without_v07_checks();
    for path in paths {
        router = router.route(path, get(handler.clone()));
    }
    router
}

fn document(body: Bytes, cache_control: HeaderValue) -> Response {
    if body.is_empty() {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return resp;
    }
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, cache_control);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}
