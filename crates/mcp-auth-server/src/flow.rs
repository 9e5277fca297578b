//! The interactive part of `/authorize`: provider choice, login, consent, the round trip to
//! an upstream identity provider (`/oauth/callback`), login sessions and sign-out.
//!
//! A request that passed the authorization endpoint's checks is kept as a pending request
//! ([`PendingAuthRow`]) whose id travels in the pages' forms, never in a URL. Every form
//! carries a CSRF token that must match both the pending request's (stored hashed) and the
//! `mcp_auth_csrf` cookie set with the page.
//!
//! **Consent comes first.** A user is asked before anything is sent upstream (the MCP
//! specification's confused-deputy rule for proxies): approving the consent page is what
//! sends the browser to the upstream provider. The answer is remembered per user and client
//! ([`ConsentRow`]); a browser with a login session (`mcp_auth_session`) that already
//! approved the client for these scopes is not asked again, except for clients whose
//! redirect URI is a loopback one that any local program could claim (the page is shown
//! again, without a new login).
//!
//! **The upstream round trip.** Approving stores a second pending row under the hash of a
//! fresh `state` sent upstream, with the upstream PKCE verifier (sealed), the `nonce`, and the
//! hash of a random value set as the `mcp_auth_upstream` cookie. The callback accepts only
//! that browser (a `state` from another browser session is refused before anything is
//! consumed), consumes the row once (a replayed callback finds nothing), verifies the login
//! upstream, stores the upstream tokens sealed, and answers the MCP client with our own code.
//!
//! **Device verification** (RFC 8628, [`crate::device`]) goes through the same pages: once
//! the user has entered a valid user code, a pending request marked with the device
//! authorization it belongs to runs the same provider choice, login, upstream round trip,
//! session and consent steps. At the end it approves (or denies) the device authorization
//! instead of redirecting with a code. Its consent page is always shown, remembered consent
//! or not, with a phishing warning (§5.4).

use std::collections::HashMap;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_auth_types::{ErrorCode, ScopeSet};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::OAuthError;
use crate::handlers::{
    AppState, client_error_page, error_redirect, find_client, is_loopback_host, issue_code,
    random_token, redirect_to, tenant,
};
use crate::login::IdentityProvider;
use crate::pages::{
    Consent, ConsentLogin, consent_page, error_page, logged_out_page, logout_page,
    provider_choice_page,
};
use crate::store::{
    ClientRow, ConsentRow, PendingAuthRow, RegistrationKind, SessionRow, hash_secret, unix_now,
};

pub(crate) const CSRF_COOKIE: &str = "mcp_auth_csrf";
const SESSION_COOKIE: &str = "mcp_auth_session";
const UPSTREAM_COOKIE: &str = "mcp_auth_upstream";

/// The cookie `base` of this issuer: browsers share cookies between ports and paths of one
/// host, so two servers on one host (a chain of two instances on loopback, tenants under
/// one origin) would otherwise overwrite each other's. The suffix is a short hash of the
/// issuer.
pub fn cookie_name(issuer: &str, base: &str) -> String {
    let h = Sha256::digest(issuer.as_bytes());
    format!("{base}_{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
}
/// How long a login session lasts.
const SESSION_TTL_SECS: u64 = 24 * 60 * 60;

// ---------------------------------------------------------------- helpers

/// The value of the cookie `name`.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(s: &AppState, resp: &mut Response, base: &str, value: &str, max_age: u64) {
    let name = cookie_name(&s.config.issuer, base);
    let secure = if s.config.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn clear_cookie(s: &AppState, resp: &mut Response, name: &str) {
    set_cookie(s, resp, name, "", 0);
}

pub(crate) fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn extra_str<'a>(p: &'a PendingAuthRow, key: &str) -> Option<&'a str> {
    p.extra.get(key).and_then(Value::as_str)
}

fn provider<'a>(s: &'a AppState, id: &str) -> Option<&'a std::sync::Arc<dyn IdentityProvider>> {
    s.idps.iter().find(|p| p.id() == id)
}

fn prompt_has(p: &PendingAuthRow, value: &str) -> bool {
    p.prompt
        .as_deref()
        .is_some_and(|x| x.split(' ').any(|v| v == value))
}

fn scopes_of(p: &PendingAuthRow) -> ScopeSet {
    p.scope.as_deref().unwrap_or("").parse().unwrap_or_default()
}

/// The browser's login session, if it has a current one for a provider still offered.
async fn current_session(s: &AppState, headers: &HeaderMap) -> Option<SessionRow> {
    let value = cookie(headers, &cookie_name(&s.config.issuer, SESSION_COOKIE))?;
    let row = s
        .store
        .get_session(tenant(s), &hash_secret(&value), unix_now())
        .await
        .ok()
        .flatten()?;
    provider(s, &row.provider).map(|_| row)
}

/// Starts a login session for `subject`, setting its cookie on `resp`.
async fn start_session(s: &AppState, resp: &mut Response, subject: &str, provider: &str) {
    let value = random_token();
    let now = unix_now();
    let row = SessionRow {
        tenant: tenant(s).to_owned(),
        session_hash: hash_secret(&value),
        subject: subject.to_owned(),
        provider: provider.to_owned(),
        created_at: now,
        expires_at: now + SESSION_TTL_SECS,
    };
    match s.store.put_session(&row).await {
        Ok(()) => set_cookie(s, resp, SESSION_COOKIE, &value, SESSION_TTL_SECS),
        Err(e) => tracing::warn!(error = %e, "could not store a login session"),
    }
}

/// Whether the stored consent of `subject` covers this request.
async fn consented(s: &AppState, subject: &str, p: &PendingAuthRow) -> bool {
    match s.store.get_consent(tenant(s), subject, &p.client_id).await {
        Ok(Some(c)) => c
            .scope
            .parse::<ScopeSet>()
            .is_ok_and(|held| held.is_superset(&scopes_of(p))),
        _ => false,
    }
}

async fn remember_consent(s: &AppState, subject: &str, p: &PendingAuthRow) {
    // Widen, never narrow, what was approved before.
    let mut scope = scopes_of(p);
    if let Ok(Some(prev)) = s.store.get_consent(tenant(s), subject, &p.client_id).await
        && let Ok(held) = prev.scope.parse::<ScopeSet>()
    {
        scope = scope.union(&held);
    }
    let row = ConsentRow {
        tenant: tenant(s).to_owned(),
        subject: subject.to_owned(),
        client_id: p.client_id.clone(),
        scope: scope.to_string(),
        granted_at: unix_now(),
    };
    if let Err(e) = s.store.put_consent(&row).await {
        tracing::warn!(error = %e, "could not remember a consent");
    }
}

/// A remembered consent is used silently only when the redirect URI cannot be claimed by
/// any local program: not a loopback one of a dynamically registered client. Never for a
/// device verification: whoever started it may not be the user (RFC 8628 §5.4).
fn may_skip_consent(client: &ClientRow, p: &PendingAuthRow) -> bool {
    if crate::device::is_device_request(p) {
        return false;
    }
    let loopback = url::Url::parse(&p.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(is_loopback_host))
        .unwrap_or(true);
    !(loopback && client.registration_kind == RegistrationKind::Dynamic)
}

/// Our authorization code for the pending request, issued to `subject` (for a device
/// verification: the device authorization approved for `subject`).
async fn issue_for(s: &AppState, p: &PendingAuthRow, subject: &str) -> Response {
    if crate::device::is_device_request(p) {
        return crate::device::approve(s, p, subject).await;
    }
    let redirect_sent = p
        .extra
        .get("redirect_uri_sent")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    issue_code(
        s,
        &p.client_id,
        &p.redirect_uri,
        redirect_sent,
        p.state.as_deref(),
        &p.code_challenge,
        &scopes_of(p),
        p.resource.clone(),
        subject,
        p.nonce.as_deref(),
    )
    .await
}

/// The user (or the upstream provider) refused: an error redirect to the client, or, for
/// a device verification, the device authorization denied.
async fn refuse(s: &AppState, p: &PendingAuthRow, code: ErrorCode, desc: &str) -> Response {
    if crate::device::is_device_request(p) {
        return crate::device::deny(s, p).await;
    }
    error_redirect(&s.config, &p.redirect_uri, p.state.as_deref(), code, desc)
}

fn store_error(e: crate::store::StoreError) -> Response {
    OAuthError::from(e).into_response()
}

// ---------------------------------------------------------------- begin

/// Continues a validated `GET /authorize`: a silent approval for a signed-in user who already
/// consented, else the provider-choice page or the consent page.
pub(crate) async fn begin(
    s: &AppState,
    headers: &HeaderMap,
    client: &ClientRow,
    mut pending: PendingAuthRow,
) -> Response {
    let session = if prompt_has(&pending, "login") {
        None
    } else {
        current_session(s, headers).await
    };
    if let Some(sess) = &session {
        pending.subject = Some(sess.subject.clone());
        pending
            .extra
            .insert("provider".into(), json!(sess.provider));
        let connected = match s
            .vault
            .as_ref()
            .filter(|v| v.provider_of(&sess.subject).is_some())
        {
            Some(v) => v.is_connected(&sess.subject).await.unwrap_or(false),
            None => true,
        };
        if !prompt_has(&pending, "consent")
            && connected
            && may_skip_consent(client, &pending)
            && consented(s, &sess.subject, &pending).await
        {
            return issue_for(s, &pending, &sess.subject).await;
        }
    }
    if prompt_has(&pending, "none") {
        let code = if session.is_none() {
            ErrorCode::Extension("login_required".into())
        } else {
            ErrorCode::Extension("consent_required".into())
        };
        return error_redirect(
            &s.config,
            &pending.redirect_uri,
            pending.state.as_deref(),
            code,
            "the user must interact with the authorization server",
        );
    }
    if session.is_none() && s.idps.len() == 1 {
        let only = s.idps[0].id().to_owned();
        pending.extra.insert("provider".into(), json!(only));
    }
    let csrf = random_token();
    pending.csrf_hash = hash_secret(&csrf);
    if let Err(e) = s.store.put_pending(&pending).await {
        return store_error(e);
    }
    if pending.extra.contains_key("provider") {
        render_consent(s, client, &pending, &csrf, None)
    } else {
        render_choice(s, client, &pending, &csrf)
    }
}

fn client_name(client: &ClientRow) -> &str {
    client
        .metadata
        .get("client_name")
        .and_then(Value::as_str)
        .unwrap_or(&client.client_id)
}

pub(crate) fn with_csrf_cookie(s: &AppState, mut resp: Response, csrf: &str) -> Response {
    set_cookie(s, &mut resp, CSRF_COOKIE, csrf, 600);
    resp
}

fn render_choice(s: &AppState, client: &ClientRow, p: &PendingAuthRow, csrf: &str) -> Response {
    let providers: Vec<(&str, &str)> = s.idps.iter().map(|i| (i.id(), i.label())).collect();
    let action = s.config.endpoint("/authorize/provider");
    let resp = provider_choice_page(&action, &p.id, csrf, client_name(client), &providers);
    with_csrf_cookie(s, resp, csrf)
}

pub(crate) fn render_consent(
    s: &AppState,
    client: &ClientRow,
    p: &PendingAuthRow,
    csrf: &str,
    error: Option<&str>,
) -> Response {
    let device = crate::device::is_device_request(p);
    let host = url::Url::parse(&p.redirect_uri)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(port) => format!("{h}:{port}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| p.redirect_uri.clone());
    let registration = match client.registration_kind {
        RegistrationKind::Dynamic => {
            "registered itself dynamically; its name is not verified".to_owned()
        }
        RegistrationKind::MetadataDocument => format!(
            "is identified by the metadata document at {}",
            client.client_id
        ),
        RegistrationKind::Static => "is registered with this server".to_owned(),
    };
    let scopes: Vec<String> = scopes_of(p).iter().map(|x| x.as_str().to_owned()).collect();
    let label = extra_str(p, "provider")
        .and_then(|id| provider(s, id))
        .map(|i| i.label().to_owned())
        .unwrap_or_default();
    let is_upstream = extra_str(p, "provider")
        .and_then(|id| provider(s, id))
        .is_some_and(|i| i.upstream().is_some());
    let login = match (&p.subject, is_upstream) {
        (Some(sub), _) => ConsentLogin::SignedIn(sub),
        (None, true) => ConsentLogin::Upstream(&label),
        (None, false) => ConsentLogin::Password,
    };
    let action = s.config.endpoint("/authorize");
    let logout = s.config.endpoint("/logout");
    let resp = consent_page(&Consent {
        action: &action,
        pending_id: &p.id,
        csrf,
        client_name: client_name(client),
        client_id: &client.client_id,
        redirect_host: &host,
        registration: &registration,
        scopes: &scopes,
        resource: p.resource.as_deref(),
        login,
        logout: &logout,
        error,
        device,
    });
    with_csrf_cookie(s, resp, csrf)
}

/// Checks a form's CSRF token against the pending request and the cookie.
fn csrf_ok(s: &AppState, headers: &HeaderMap, p: &PendingAuthRow, csrf: &str) -> bool {
    let form_ok = ct_eq(&hash_secret(csrf), &p.csrf_hash);
    let cookie_ok = cookie(headers, &cookie_name(&s.config.issuer, CSRF_COOKIE))
        .is_some_and(|c| ct_eq(&c, csrf));
    form_ok && cookie_ok && !p.csrf_hash.is_empty()
}

pub(crate) fn forged() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "the form could not be verified (cookies disabled, or a forged request); start again from the application",
    )
}

fn expired() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "this authorization request has expired or was already used; start again from the application",
    )
}

/// Loads the pending request a form names and checks its CSRF token and client.
async fn form_request(
    s: &AppState,
    headers: &HeaderMap,
    pending_id: &str,
    csrf: &str,
) -> Result<(PendingAuthRow, std::sync::Arc<ClientRow>), Response> {
    let now = unix_now();
    let pending = match s.store.get_pending(tenant(s), pending_id, now).await {
        Ok(Some(p)) if extra_str(&p, "stage").is_none() => p,
        Ok(_) => return Err(expired()),
        Err(e) => return Err(store_error(e)),
    };
    if !csrf_ok(s, headers, &pending, csrf) {
        return Err(forged());
    }
    match find_client(s, &pending.client_id, now).await {
        Ok(Some(c)) => Ok((pending, c)),
        Ok(None) => Err(error_page(
            StatusCode::BAD_REQUEST,
            "the client is no longer registered",
        )),
        Err(e) => Err(client_error_page(&pending.client_id, e)),
    }
}

// ---------------------------------------------------------------- provider choice

/// The provider-choice form.
#[derive(Debug, serde::Deserialize)]
pub struct Choice {
    pending: String,
    csrf: String,
    provider: String,
}

/// `POST /authorize/provider`: the user picked a provider; the consent page follows.
pub async fn choose_provider(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(c): Form<Choice>,
) -> Response {
    let (mut pending, client) = match form_request(&s, &headers, &c.pending, &c.csrf).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if provider(&s, &c.provider).is_none() {
        return error_page(StatusCode::BAD_REQUEST, "unknown sign-in option");
    }
    pending.extra.insert("provider".into(), json!(c.provider));
    if let Err(e) = s.store.put_pending(&pending).await {
        return store_error(e);
    }
    render_consent(&s, &client, &pending, &c.csrf, None)
}

// ---------------------------------------------------------------- decision

/// The form posted by the consent page.
#[derive(Debug, serde::Deserialize)]
pub struct Decision {
    pending: String,
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    decision: String,
}

/// `POST /authorize`: the user's login and decision.
pub async fn decide(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(d): Form<Decision>,
) -> Response {
    let now = unix_now();
    let (pending, client) = match form_request(&s, &headers, &d.pending, &d.csrf).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if d.decision != "approve" {
        let _ = s.store.take_pending(tenant(&s), &pending.id, now).await;
        return refuse(
            &s,
            &pending,
            ErrorCode::AccessDenied,
            "the user denied the request",
        )
        .await;
    }
    let Some(idp) = extra_str(&pending, "provider")
        .and_then(|id| provider(&s, id))
        .cloned()
    else {
        return error_page(StatusCode::BAD_REQUEST, "no sign-in option was chosen");
    };
    // A signed-in user: the session must still be there, for the same account.
    if let Some(sub) = &pending.subject {
        let still = current_session(&s, &headers)
            .await
            .is_some_and(|sess| sess.subject == *sub);
        if !still {
            let _ = s.store.take_pending(tenant(&s), &pending.id, now).await;
            return error_page(
                StatusCode::FORBIDDEN,
                "your sign-in session ended; start again from the application",
            );
        }
    }
    if let Some(up) = idp.upstream() {
        let connected = match (&pending.subject, &s.vault) {
            (Some(sub), Some(v)) => v.is_connected(sub).await.unwrap_or(false),
            _ => false,
        };
        let Some(pending) = take(&s, &pending.id).await else {
            return expired();
        };
        if connected && let Some(sub) = &pending.subject {
            remember_consent(&s, sub, &pending).await;
            return issue_for(&s, &pending, sub).await;
        }
        return go_upstream(&s, pending, up.as_ref()).await;
    }
    let subject = match &pending.subject {
        Some(sub) => sub.clone(),
        None => match idp.authenticate(tenant(&s), &d.username, &d.password).await {
            Ok(Some(sub)) => sub,
            Ok(None) => {
                return render_consent(
                    &s,
                    &client,
                    &pending,
                    &d.csrf,
                    Some("Wrong username or password."),
                );
            }
            Err(e) => return store_error(e),
        },
    };
    // Single use: a second submission of the same form finds nothing.
    let Some(pending) = take(&s, &pending.id).await else {
        return expired();
    };
    remember_consent(&s, &subject, &pending).await;
    let mut resp = issue_for(&s, &pending, &subject).await;
    if pending.subject.is_none() {
        start_session(&s, &mut resp, &subject, idp.id()).await;
    }
    resp
}

async fn take(s: &AppState, id: &str) -> Option<PendingAuthRow> {
    s.store
        .take_pending(tenant(s), id, unix_now())
        .await
        .ok()
        .flatten()
}

fn callback_uri(s: &AppState) -> String {
    s.config.endpoint("/oauth/callback")
}

/// Sends the browser to the upstream provider for the (consumed) pending request.
async fn go_upstream(
    s: &AppState,
    pending: PendingAuthRow,
    up: &dyn mcp_auth_upstream::Upstream,
) -> Response {
    let Some(vault) = &s.vault else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "upstream sign-in is not configured",
        );
    };
    let state = random_token();
    let binding = random_token();
    let verifier = random_token();
    let nonce = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let sealed_verifier = match vault.seal_value(&state, &verifier) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "cannot seal the upstream PKCE verifier");
            return error_page(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let now = unix_now();
    let mut row = pending;
    row.id = hash_secret(&state);
    row.extra.insert("stage".into(), json!("upstream"));
    row.extra.insert("upstream_nonce".into(), json!(nonce));
    row.extra
        .insert("upstream_verifier".into(), json!(sealed_verifier));
    row.extra
        .insert("browser".into(), json!(hash_secret(&binding)));
    row.csrf_hash = String::new();
    row.created_at = now;
    row.expires_at = now + s.config.ttls.pending_authorization.as_secs();
    let url = match up
        .authorization_url(&mcp_auth_upstream::AuthorizationRequest {
            redirect_uri: &callback_uri(s),
            state: &state,
            code_challenge: &challenge,
            nonce: &nonce,
        })
        .await
    {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(provider = %up.id(), error = %e, "upstream authorization URL failed");
            return error_page(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "{} cannot be reached right now; try again later",
                    up.label()
                ),
            );
        }
    };
    if let Err(e) = s.store.put_pending(&row).await {
        return store_error(e);
    }
    let mut resp = redirect_to(Some(url.to_string()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    set_cookie(
        s,
        &mut resp,
        UPSTREAM_COOKIE,
        &binding,
        s.config.ttls.pending_authorization.as_secs(),
    );
    resp
}

// ---------------------------------------------------------------- upstream callback

/// `GET /oauth/callback`: the upstream provider sends the browser back here.
pub async fn upstream_callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(state) = q.get("state") else {
        return error_page(StatusCode::BAD_REQUEST, "the sign-in response has no state");
    };
    let id = hash_secret(state);
    let now = unix_now();
    let row = match s.store.get_pending(tenant(&s), &id, now).await {
        Ok(Some(r)) if extra_str(&r, "stage") == Some("upstream") => r,
        Ok(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "this sign-in response was already used or has expired; start again from the application",
            );
        }
        Err(e) => return store_error(e),
    };
    // The browser that started this login, and only it, may finish it.
    let same_browser = match (
        cookie(&headers, &cookie_name(&s.config.issuer, UPSTREAM_COOKIE)),
        extra_str(&row, "browser"),
    ) {
        (Some(b), Some(h)) => ct_eq(&hash_secret(&b), h),
        _ => false,
    };
    if !same_browser {
        tracing::warn!("upstream callback from another browser refused");
        return error_page(
            StatusCode::FORBIDDEN,
            "this sign-in was started in another browser session; start again from the application",
        );
    }
    let Some(row) = take(&s, &id).await else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "this sign-in response was already used; start again from the application",
        );
    };
    let finish = |mut r: Response| {
        clear_cookie(&s, &mut r, UPSTREAM_COOKIE);
        r
    };
    if let Some(err) = q.get("error") {
        tracing::info!(error = %err, "the upstream provider refused the sign-in");
        return finish(
            refuse(
                &s,
                &row,
                ErrorCode::AccessDenied,
                "the sign-in at the identity provider was not completed",
            )
            .await,
        );
    }
    let Some(code) = q.get("code") else {
        return finish(error_page(
            StatusCode::BAD_REQUEST,
            "the sign-in response has no code",
        ));
    };
    let (Some(vault), Some(idp)) = (
        s.vault.as_ref(),
        extra_str(&row, "provider").and_then(|p| provider(&s, p)),
    ) else {
        return finish(error_page(
            StatusCode::BAD_REQUEST,
            "this sign-in option is no longer offered",
        ));
    };
    let Some(up) = idp.upstream() else {
        return finish(error_page(
            StatusCode::BAD_REQUEST,
            "this sign-in option is no longer offered",
        ));
    };
    let verifier = match extra_str(&row, "upstream_verifier").map(|v| vault.open_value(state, v)) {
        Some(Ok(v)) => v,
        _ => {
            return finish(error_page(
                StatusCode::BAD_REQUEST,
                "the sign-in response cannot be verified",
            ));
        }
    };
    let nonce = extra_str(&row, "upstream_nonce").unwrap_or_default();
    let login = match up
        .complete(&mcp_auth_upstream::Completion {
            redirect_uri: &callback_uri(&s),
            code,
            code_verifier: &verifier,
            nonce,
        })
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(provider = %up.id(), error = %e, "upstream sign-in refused");
            return finish(error_page(
                StatusCode::BAD_REQUEST,
                &format!("signing in with {} failed: {e}", up.label()),
            ));
        }
    };
    let account = format!("{}:{}", up.id(), login.subject);
    if let Err(e) = vault.save(&account, up.id(), &login.tokens).await {
        tracing::error!(error = %e, "cannot store upstream tokens");
        return finish(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the sign-in could not be completed; try again",
        ));
    }
    tracing::info!(account = %account, client = %row.client_id, "upstream sign-in completed");
    remember_consent(&s, &account, &row).await;
    let mut resp = issue_for(&s, &row, &account).await;
    start_session(&s, &mut resp, &account, up.id()).await;
    finish(resp)
}

// ---------------------------------------------------------------- sign-out

/// `GET /logout`: a sign-out form.
pub async fn logout_form(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let session = current_session(&s, &headers).await;
    let csrf = random_token();
    let resp = logout_page(
        &s.config.endpoint("/logout"),
        &csrf,
        session.as_ref().map(|x| x.subject.as_str()),
    );
    with_csrf_cookie(&s, resp, &csrf)
}

/// The sign-out form.
#[derive(Debug, serde::Deserialize)]
pub struct Logout {
    csrf: String,
}

/// `POST /logout`: ends the login session and revokes the user's upstream grant.
pub async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<Logout>,
) -> Response {
    if !cookie(&headers, &cookie_name(&s.config.issuer, CSRF_COOKIE))
        .is_some_and(|c| !f.csrf.is_empty() && ct_eq(&c, &f.csrf))
    {
        return forged();
    }
    if let Some(value) = cookie(&headers, &cookie_name(&s.config.issuer, SESSION_COOKIE)) {
        let hash = hash_secret(&value);
        if let Ok(Some(sess)) = s.store.get_session(tenant(&s), &hash, unix_now()).await {
            if let Some(v) = &s.vault
                && v.provider_of(&sess.subject).is_some()
                && let Err(e) = v.revoke(&sess.subject).await
            {
                tracing::warn!(error = %e, "revoking upstream tokens at sign-out failed");
            }
            tracing::info!(account = %sess.subject, "signed out");
        }
        let _ = s.store.delete_session(tenant(&s), &hash).await;
    }
    let mut resp = logged_out_page();
    clear_cookie(&s, &mut resp, SESSION_COOKIE);
    clear_cookie(&s, &mut resp, CSRF_COOKIE);
    resp
}
