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
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::ResourceServer;
use crate::extract::RouteContext;

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
    // Built here rather than in `layer`: axum applies a router's layers to a handler's route
    // again for every request until the router gets its state (`with_state`).
    route: Arc<RouteContext>,
}

impl fmt::Debug for ProtectedLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectedLayer")
            .field("resource", &self.route.server.resource())
            .field("required", &self.route.required)
            .finish()
    }
}

impl ProtectedLayer {
    /// A layer requiring a valid token and no particular scope.
    pub fn new(server: ResourceServer) -> Self {
        Self {
            route: server.route_context(ScopeSet::new()),
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
        self.route = self
            .route
            .server
            .route_context(self.route.required.union(&scopes));
        self
    }

    /// The scopes this layer requires.
    pub fn required_scopes(&self) -> &ScopeSet {
        &self.route.required
    }
}

impl<S> Layer<S> for ProtectedLayer {
    type Service = Protected<S>;

    fn layer(&self, inner: S) -> Protected<S> {
        Protected {
            inner,
            route: self.route.clone(),
        }
    }
}

/// The service [`ProtectedLayer`] wraps around another.
#[derive(Clone)]
pub struct Protected<S> {
    inner: S,
    route: Arc<RouteContext>,
}

impl<S> fmt::Debug for Protected<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Protected")
            .field("resource", &self.route.server.resource())
            .field("required", &self.route.required)
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
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Nearly every request carries a token verified moments ago: answered from the cache
        // here, synchronously, the request goes straight to the service that was polled
        // ready, with no boxed future and no clones.
        let route = &self.route;
        if let Some(checked) = route
            .server
            .authenticate_cached(req.headers(), req.uri(), route)
        {
            return match checked {
                Ok(auth) => {
                    req.extensions_mut().insert(auth);
                    ResponseFuture::inner(self.inner.call(req))
                }
                Err(rejection) => ResponseFuture::refused(rejection.into_response()),
            };
        }
        // Otherwise the token is verified first (a signature check, an introspection call),
        // and the inner service is called later: the service that was polled ready is the
        // one to call; leave a fresh clone behind (tower's documented pattern for services
        // that call their inner one later).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let route = self.route.clone();
        ResponseFuture::verifying(Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            match route
                .server
                .authenticate_shared(&parts.method, &parts.headers, &parts.uri, &route)
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

type BoxedResponse<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send + 'static>>;

pin_project! {
    /// The future of [`Protected`]: the inner service's own future when the token was found
    /// in the cache, a refusal, or the boxed verification followed by the inner call.
    pub struct ResponseFuture<F, E> {
        #[pin]
        state: State<F, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, E> {
        Inner { #[pin] future: F },
        Refused { response: Option<Response> },
        Verifying { future: BoxedResponse<E> },
    }
}

impl<F, E> ResponseFuture<F, E> {
    fn inner(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    fn refused(response: Response) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    fn verifying(future: BoxedResponse<E>) -> Self {
        Self {
            state: State::Verifying { future },
        }
    }
}

impl<F, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx),
            StateProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            StateProj::Verifying { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, E> fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}
