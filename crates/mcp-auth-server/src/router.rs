//! The authorization server as an axum [`Router`].

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::handler::Handler;
use axum::routing::{MethodRouter, get, post};

use crate::ratelimit::{Limiter, Quota};

use crate::cimd::DocumentFetcher;
use crate::config::ServerConfig;
use crate::device;
use crate::flow;
use crate::handlers::{self, AbortOnDrop, AppState};
use crate::keys::{KeyError, Keys};
use crate::login::{IdentityProvider, LocalAccounts};
use crate::store::Store;
use crate::upstream::UpstreamVault;

/// A ready authorization server: its state and its routes.
#[derive(Clone, Debug)]
pub struct AuthorizationServer {
    state: AppState,
}

impl AuthorizationServer {
    /// Builds the server over `store`, with local accounts for login; loads (or creates) the
    /// signing keys, and reloads them every [`KEY_RELOAD`](crate::keys::KEY_RELOAD) while
    /// the server (any clone of its state or router) lives, so that instances sharing a
    /// store follow each other's key rotations. Call it inside a Tokio runtime.
    pub async fn new(config: ServerConfig, store: Arc<dyn Store>) -> Result<Self, KeyError> {
        let idp: Arc<dyn IdentityProvider> = Arc::new(LocalAccounts::new(store.clone()));
        Self::with_identity_provider(config, store, idp).await
    }

    /// Like [`Self::new`] with another login.
    pub async fn with_identity_provider(
        config: ServerConfig,
        store: Arc<dyn Store>,
        idp: Arc<dyn IdentityProvider>,
    ) -> Result<Self, KeyError> {
        Self::with_identity_providers(config, store, vec![idp], None).await
    }

    /// Like [`Self::new`] with several logins (listed in this order on the provider-choice
    /// page, which is skipped when there is one). Upstream logins
    /// ([`crate::login::UpstreamIdentity`]) need the `vault` their users' upstream tokens
    /// are kept in, with the same providers.
    pub async fn with_identity_providers(
        config: ServerConfig,
        store: Arc<dyn Store>,
        idps: Vec<Arc<dyn IdentityProvider>>,
        vault: Option<UpstreamVault>,
    ) -> Result<Self, KeyError> {
        if idps.is_empty() {
            return Err(KeyError::Config("no identity provider".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for idp in &idps {
            if !seen.insert(idp.id().to_owned()) {
                return Err(KeyError::Config(format!(
                    "two identity providers have the id {:?}",
                    idp.id()
                )));
            }
            if let Some(up) = idp.upstream() {
                match &vault {
                    Some(v) if v.provider(up.id()).is_some() => {}
                    _ => {
                        return Err(KeyError::Config(format!(
                            "the upstream provider {:?} needs an UpstreamVault that knows it",
                            up.id()
                        )));
                    }
                }
            }
        }
        config
            .check_trusted_issuers()
            .map_err(|e| KeyError::Config(e.to_string()))?;
        let issuer_keys = crate::jwt_bearer::IssuerKeys::new()
            .map_err(|e| KeyError::Config(format!("cannot build the HTTP client: {e}")))?;
        let keys = Keys::new(store.clone(), config.tenant.clone());
        keys.ensure(config.ttls.access_token).await?;
        let cimd = DocumentFetcher::new(config.client_id_metadata_documents.clone());
        let reloader = Arc::new(AbortOnDrop(keys.spawn_reloader()));
        let dpop = config.dpop.clone().map(|o| {
            mcp_auth_resource::dpop::DpopGuard::new(o, Arc::new(mcp_auth_resource::SystemClock))
        });
        let clients = Arc::new(crate::client_cache::ClientCache::new(
            config.client_cache_ttl,
            crate::client_cache::CLIENT_CACHE_ENTRIES,
        ));
        let known_resources = config
            .resources
            .iter()
            .filter(|r| crate::handlers::resource_problem(r, &config.resources).is_none())
            .cloned()
            .collect();
        Ok(Self {
            state: AppState {
                known_resources: Arc::new(known_resources),
                dpop,
                config: Arc::new(config),
                store,
                keys,
                idps: idps.into(),
                vault,
                cimd,
                issuer_keys: Arc::new(issuer_keys),
                clients,
                _reloader: reloader,
            },
        })
    }

    /// The shared state (configuration, store, keys).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The signing keys (for a resource server in the same process to verify tokens
    /// without a network round trip).
    pub fn keys(&self) -> &Keys {
        &self.state.keys
    }

    /// The routes. Endpoints sit under the issuer's path (`{issuer}/authorize` …); the
    /// metadata documents at the root well-known locations with the issuer's path inserted
    /// (RFC 8414 §3.1), and OIDC discovery both inserted and appended.
    pub fn router(&self) -> Router {
        let base = url::Url::parse(&self.state.config.issuer)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let p = |s: &str| format!("{base}{s}");
        let limits = self.state.config.rate_limits.clone();
        let mut r = Router::new()
            .route(
                &format!("/.well-known/oauth-authorization-server{base}"),
                get(handlers::metadata).layer(cors()),
            )
            .route(
                &format!("/.well-known/openid-configuration{base}"),
                get(handlers::openid_configuration).layer(cors()),
            )
            .route(
                &p("/authorize"),
                get(handlers::authorize).post(limited(flow::decide, limits.login)),
            )
            .route(&p("/authorize/provider"), post(flow::choose_provider))
            .route(
                &p("/device_authorization"),
                limited(device::device_authorization, limits.token).layer(cors()),
            )
            .route(&p("/device"), {
                let guard = device::VerificationGuard::new(&limits);
                get(device::verification_form).post(
                    move |state: State<AppState>, req: axum::extract::Request| {
                        device::verification_submit(state, guard.clone(), req)
                    },
                )
            })
            .route(&p("/oauth/callback"), get(flow::upstream_callback))
            .route(&p("/logout"), get(flow::logout_form).post(flow::logout))
            .route(
                &p("/token"),
                limited(handlers::token, limits.token).layer(cors()),
            )
            .route(
                &p("/register"),
                limited(handlers::register, limits.register).layer(cors()),
            )
            .route(
                &p("/register/{client_id}"),
                get(handlers::read_registration)
                    .put(handlers::update_registration)
                    .delete(handlers::delete_registration)
                    .layer(cors()),
            )
            .route(&p("/revoke"), post(handlers::revoke).layer(cors()))
            .route(&p("/introspect"), post(handlers::introspect))
            .route(&p("/jwks"), get(handlers::jwks).layer(cors()))
            .route(
                &p("/userinfo"),
                get(crate::oidc::userinfo)
                    .post(crate::oidc::userinfo)
                    .layer(cors()),
            );
        if !base.is_empty() {
            r = r.route(
                &p("/.well-known/openid-configuration"),
                get(handlers::openid_configuration).layer(cors()),
            );
        }
        r.with_state(self.state.clone())
    }
}

/// CORS for the endpoints a browser-based MCP client calls with `fetch` (metadata, token,
/// registration, revocation, JWKS): any origin, no credentials (these endpoints use none:
/// clients authenticate in the request itself), preflights answered. Never on `/authorize`
/// or the login and consent pages, which a browser navigates to and another origin must not
/// read; nor on introspection, which is for resource servers.
pub fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method, header};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("mcp-protocol-version"),
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-method"),
            HeaderName::from_static("mcp-name"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("dpop"),
        ])
        .expose_headers([
            header::WWW_AUTHENTICATE,
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("dpop-nonce"),
        ])
        .max_age(std::time::Duration::from_secs(3600))
}

/// `POST handler`, behind a rate limiter when `quota` is set.
fn limited<H, T>(handler: H, quota: Option<Quota>) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let route = post(handler);
    match quota {
        Some(q) => route.layer(axum::middleware::from_fn_with_state(
            Limiter::new(q),
            crate::ratelimit::limit,
        )),
        None => route,
    }
}
