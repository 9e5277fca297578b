//! The tower layer: refuse requests without a valid token, pass the others on with their
//! [`Authenticated`] claims in the request extensions.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::Request;
use mcp_auth_types::ScopeSet;
use tower::{Layer, Service};

use crate::ResourceServer;

/// A tower [`Layer`] that protects the services (axum routes) it wraps.
///
/// ```no_run
/// # use mcp_auth_resource::{ProtectedLayer, ResourceServer};
/// # fn demo(server: ResourceServer) {
/// use axum::{Router, routing::post};
///
/// async fn call() -> &'static str { "ok" }
///
/// let app: Router = Router::new()
///     .route("/mcp", post(call).layer(ProtectedLayer::new(server.clone()).require_scopes(["mcp:read"])))
///     .merge(server.metadata_router());
/// # }
/// ```
#[derive(Clone)]
pub struct ProtectedLayer {
    server: ResourceServer,
    required: Arc<ScopeSet>,
}

impl fmt::Debug for ProtectedLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectedLayer")
            .field("resource", &self.server.resource())
            .field("required", &self.required)
            .finish()
    }
}

impl ProtectedLayer {
    /// A layer requiring a valid token and no particular scope.
    pub fn new(server: ResourceServer) -> Self {
        Self {
            server,
            required: Arc::new(ScopeSet::new()),
        }
    }

    /// Also requires these scopes (added to any required already). Without them the request
    /// gets `403 insufficient_scope` naming all required scopes.
    ///
    /// # Panics
    ///
    /// When a string is not a valid scope token (RFC 6749 §3.3: empty, or containing a
    /// space, `"` or `\`). Scopes here are the program's constants, so this is a
    /// programming error found at startup, like an invalid path in `Router::route`. Use
    /// [`ProtectedLayer::require_scope_set`] to handle scopes from elsewhere.
    pub fn require_scopes<I, S>(self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        match ScopeSet::from_strs(scopes) {
            Ok(set) => self.require_scope_set(set),
            Err(e) => panic!("ProtectedLayer::require_scopes: {e}"),
        }
    }

    /// Also requires these scopes (added to any required already).
    pub fn require_scope_set(mut self, scopes: ScopeSet) -> Self {
        self.required = Arc::new(self.required.union(&scopes));
        self
    }

    /// The scopes this layer requires.
    pub fn required_scopes(&self) -> &ScopeSet {
        &self.required
    }
}

impl<S> Layer<S> for ProtectedLayer {
    type Service = Protected<S>;

    fn layer(&self, inner: S) -> Protected<S> {
        Protected {
            inner,
            server: self.server.clone(),
            required: self.required.clone(),
        }
    }
}

/// The service [`ProtectedLayer`] wraps around another.
#[derive(Clone)]
pub struct Protected<S> {
    inner: S,
    server: ResourceServer,
    required: Arc<ScopeSet>,
}

impl<S> fmt::Debug for Protected<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Protected")
            .field("resource", &self.server.resource())
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for Protected<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The service that was polled ready is the one to call; leave a fresh clone behind
        // (tower's documented pattern for services that call their inner one later).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let server = self.server.clone();
        let required = self.required.clone();
        ResponseFuture(Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            match server
                .authenticate_shared(&parts.headers, &parts.uri, &required)
                .await
            {
                Ok(auth) => {
                    parts.extensions.insert(auth);
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        }))
    }
}

/// The future of [`Protected`].
pub struct ResponseFuture<E>(Pin<Box<dyn Future<Output = Result<Response, E>> + Send + 'static>>);

impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<E> fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}
