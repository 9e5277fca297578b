//! The handler's view: [`Authenticated`], an axum extractor carrying the verified claims.

use std::convert::Infallible;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use mcp_auth_types::ScopeSet;

use crate::{AuthError, Claims, Rejection, ResourceServer};

/// A request that passed a [`crate::ProtectedLayer`]: the verified claims (also reachable
/// through `Deref`), and what is needed to refuse a further operation properly.
///
/// As an extractor it reads what the layer put into the request's extensions. On a route
/// without the layer there is nothing to read, and the request is refused with `401` (the
/// route is misconfigured; this fails closed and logs an error).
///
/// ```no_run
/// use mcp_auth_resource::Authenticated;
///
/// async fn whoami(auth: Authenticated) -> String {
///     format!("{} via {:?} with {}", auth.subject, auth.client_id, auth.scopes)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Authenticated {
    claims: Arc<Claims>,
    route: Arc<RouteContext>,
}

/// A protected route: its resource server and required scopes, built once per
/// [`crate::ProtectedLayer`] and shared by its services and every request's
/// [`Authenticated`]. One `Arc` for all of it, because axum clones a route's service for every
/// request: each `Arc` in it is a reference count that both server threads bump and drop.
pub(crate) struct RouteContext {
    pub(crate) server: ResourceServer,
    /// The scopes the route requires, so a handler's own check names them too.
    pub(crate) required: ScopeSet,
    /// The `resource_metadata` URL of this resource's challenges.
    pub(crate) resource_metadata: Arc<str>,
}

impl fmt::Debug for RouteContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteContext")
            .field("required", &self.required)
            .field("resource_metadata", &self.resource_metadata)
            .finish_non_exhaustive()
    }
}

impl Authenticated {
    pub(crate) fn new(claims: Arc<Claims>, route: Arc<RouteContext>) -> Self {
        Self { claims, route }
    }

    /// The verified claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The verified claims, shared (no copy).
    pub fn shared_claims(&self) -> Arc<Claims> {
        self.claims.clone()
    }

    /// For checks inside a handler (an MCP server serves every tool on one route, and tools
    /// need different scopes): `Ok` when the token grants `needed`, else a `403
    /// insufficient_scope` rejection whose `scope` names everything the operation needs,
    /// the route's scopes and `needed` (RFC 6750 §3.1), so one step-up authorization suffices.
    pub fn ensure_scopes(&self, needed: &ScopeSet) -> Result<(), Rejection> {
        if self.claims.has_scopes(needed) {
            return Ok(());
        }
        let all = self.route.required.union(needed);
        Err(Rejection::new(
            AuthError::InsufficientScope {
                required: all.clone(),
                granted: self.claims.scopes.clone(),
            },
            all,
            Some(self.route.resource_metadata.clone()),
        ))
    }
}

impl Deref for Authenticated {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.claims
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!(
                    path = %parts.uri.path(),
                    "Authenticated extractor on a route without ProtectedLayer; refusing"
                );
                Rejection::new(AuthError::MissingToken, ScopeSet::new(), None)
            })
    }
}

/// `Option<Authenticated>`: `None` on routes without the layer.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Authenticated {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<Authenticated>().cloned())
    }
}
