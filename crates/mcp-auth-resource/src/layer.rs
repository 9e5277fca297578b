//! The tower layer: refuse requests without a valid token, pass the others on with their
//! [`Authenticated`] claims in the request extensions.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use http::Request;
use mcp_auth_types::ScopeSet;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::ResourceServer;
use crate::extract::RouteContext;

/// A tower [`Layer`] that protects the services (axum routes) it wraps; or, through
/// [`ProtectedLayer::protect`], one handler.
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
        debug_route(f, "ProtectedLayer", &self.route)
    }
}

/// What the layer, its services and wrapped handlers show of their route: the resource and
/// the required scopes (never a token: there is none in them).
fn debug_route(f: &mut fmt::Formatter<'_>, name: &str, route: &RouteContext) -> fmt::Result {
    f.debug_struct(name)
        .field("resource", &route.server.resource())
        .field("required", &route.required)
        .finish_non_exhaustive()
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
        debug_route(f, "Protected", &self.route)
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
        if let Some(claims) = route.server.cached_claims(req.headers(), req.uri()) {
            return match ResourceServer::admit(claims, route.clone(), false) {
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
        ResponseFuture::verifying(Box::pin(verify_then(route, req, move |req| {
            inner.call(req)
        })))
    }
}

/// The slow path of the layer and of wrapped handlers: the full check of the request (a
/// signature check, an introspection call, DPoP), then `next` with the [`Authenticated`]
/// in the request's extensions, or the refusal.
///
/// [`Authenticated`]: crate::Authenticated
async fn verify_then<B, O, Fut>(
    route: Arc<RouteContext>,
    req: Request<B>,
    next: impl FnOnce(Request<B>) -> Fut,
) -> O
where
    Fut: Future<Output = O>,
    O: FromRefusal,
{
    let (mut parts, body) = req.into_parts();
    match route
        .server
        .authenticate_shared(&parts.method, &parts.headers, &parts.uri, &route)
        .await
    {
        Ok(auth) => {
            parts.extensions.insert(auth);
            next(Request::from_parts(parts, body)).await
        }
        Err(rejection) => O::from_refusal(rejection.into_response()),
    }
}

/// A handler wrapped by [`ProtectedLayer::protect`]: the same checks as the layer, inside the
/// handler's own call.
///
/// axum turns every tower layer into another boxed route around the one it wraps, so each
/// request through [`ProtectedLayer`] costs two more boxed service clones, one more boxed
/// future and the moves of the request between them. Wrapping the handler itself keeps the
/// one route an unprotected handler has: on a cached token the check is the only extra work
/// (`cargo bench -p mcp-auth-resource --bench layer` measures both).
#[derive(Clone)]
pub struct ProtectedHandler<H> {
    handler: H,
    route: Arc<RouteContext>,
}

impl<H> fmt::Debug for ProtectedHandler<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_route(f, "ProtectedHandler", &self.route)
    }
}

impl ProtectedLayer {
    /// Protects one handler with this layer's server and scopes, as `.layer(self)` on its
    /// route would, but without the extra route axum puts around a layer:
    /// `post(server.layer().require_scopes(["mcp:read"]).protect(mcp))`. Same refusals,
    /// same [`Authenticated`](crate::Authenticated) in the handler; the cheaper way to
    /// protect a single endpoint such as an MCP server's.
    pub fn protect<H>(self, handler: H) -> ProtectedHandler<H> {
        ProtectedHandler {
            handler,
            route: self.route,
        }
    }
}

impl<H, T, S> Handler<T, S> for ProtectedHandler<H>
where
    H: Handler<T, S>,
    S: Send + 'static,
{
    type Future = HandlerFuture<H::Future>;

    fn call(self, mut req: axum::extract::Request, state: S) -> Self::Future {
        let Self { handler, route } = self;
        // axum cloned this handler for the request: its reference to the route goes on into
        // the `Authenticated` rather than being counted again.
        if let Some(claims) = route.server.cached_claims(req.headers(), req.uri()) {
            let state = match ResourceServer::admit(claims, route, false) {
                Ok(auth) => {
                    req.extensions_mut().insert(auth);
                    Admission::inner(handler.call(req, state))
                }
                Err(rejection) => Admission::refused(rejection.into_response()),
            };
            return HandlerFuture { state };
        }
        let verifying = Admission::verifying(Box::pin(verify_then(route, req, move |req| {
            handler.call(req, state)
        })));
        HandlerFuture { state: verifying }
    }
}

pin_project! {
    /// The future of [`Protected`]: the inner service's own future when the token was found
    /// in the cache, a refusal, or the boxed verification followed by the inner call.
    pub struct ResponseFuture<F, E> {
        #[pin]
        state: Admission<F, Result<Response, E>>,
    }
}

impl<F, E> ResponseFuture<F, E> {
    fn inner(future: F) -> Self {
        Self {
            state: Admission::inner(future),
        }
    }

    fn refused(response: Response) -> Self {
        Self {
            state: Admission::refused(response),
        }
    }

    fn verifying(future: Boxed<Result<Response, E>>) -> Self {
        Self {
            state: Admission::verifying(future),
        }
    }
}

impl<F, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().state.poll(cx)
    }
}

impl<F, E> fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

pin_project! {
    /// The future of [`ProtectedHandler`]: the handler's own future when the token was found
    /// in the cache, a refusal, or the boxed verification followed by the handler.
    pub struct HandlerFuture<F> {
        #[pin]
        state: Admission<F, Response>,
    }
}

impl<F> Future for HandlerFuture<F>
where
    F: Future<Output = Response>,
{
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        self.project().state.poll(cx)
    }
}

impl<F> fmt::Debug for HandlerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFuture")
    }
}

type Boxed<O> = Pin<Box<dyn Future<Output = O> + Send + 'static>>;

/// What a refusal becomes in a future's output: the response itself for a handler, `Ok` of
/// it for a service.
trait FromRefusal {
    fn from_refusal(response: Response) -> Self;
}

impl FromRefusal for Response {
    fn from_refusal(response: Response) -> Self {
        response
    }
}

impl<E> FromRefusal for Result<Response, E> {
    fn from_refusal(response: Response) -> Self {
        Ok(response)
    }
}

pin_project! {
    /// Where a protected request is: passed on to the wrapped future (its token was cached),
    /// refused, or being verified in a boxed future that then calls the wrapped one.
    #[project = AdmissionProj]
    enum Admission<F, O> {
        Inner { #[pin] future: F },
        // Boxed: a refusal is the rare case, and a `Response` inline would make every
        // request's future several times larger, to be moved at each step.
        Refused { response: Option<Box<Response>> },
        Verifying { future: Boxed<O> },
    }
}

impl<F, O> Admission<F, O> {
    fn inner(future: F) -> Self {
        Self::Inner { future }
    }

    fn refused(response: Response) -> Self {
        Self::Refused {
            response: Some(Box::new(response)),
        }
    }

    fn verifying(future: Boxed<O>) -> Self {
        Self::Verifying { future }
    }
}

impl<F, O> Future for Admission<F, O>
where
    F: Future<Output = O>,
    O: FromRefusal,
{
    type Output = O;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        match self.project() {
            AdmissionProj::Inner { future } => future.poll(cx),
            AdmissionProj::Refused { response } => Poll::Ready(O::from_refusal(
                *response
                    .take()
                    .expect("a protected request's future polled after completion"),
            )),
            AdmissionProj::Verifying { future } => future.as_mut().poll(cx),
        }
    }
}
