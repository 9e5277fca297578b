//! The OAuth 2.0 Device Authorization Grant (RFC 8628), server side.
//!
//! - `POST {issuer}/device_authorization` ([`device_authorization`], §3.1-3.2): an
//!   authenticated client (as at `/token`) that registered the grant
//!   [`DEVICE_CODE_GRANT`] gets a `device_code` (256 random bits), a `user_code` (§6.1: 8
//!   letters from a 20-consonant alphabet, about 34.6 bits, shown as `XXXX-XXXX`), the
//!   verification URIs, `expires_in` ([`Ttls::device_code`](crate::Ttls::device_code),
//!   `OAUTH_DEVICE_CODE_TTL`) and `interval`. Both codes are stored only hashed.
//! - `GET/POST {issuer}/device` ([`verification_form`], [`verification_submit`], §3.3): the
//!   user enters the code (prefilled from `verification_uri_complete`); a valid one continues
//!   on the pages of [`crate::flow`] (provider choice, login, upstream round trip, session,
//!   consent), whose last step calls [`approve`] or [`deny`] here. Guesses are limited per
//!   address and per tenant, and an address that enters too many wrong codes is locked out
//!   (§5.1, [`crate::ratelimit`]).
//! - `/token` with `grant_type` [`DEVICE_CODE_GRANT`] ([`token_grant`], §3.4-3.5): one
//!   atomic [`Store::poll_device`](crate::store::Store::poll_device) step answers
//!   `authorization_pending`, `slow_down`, `access_denied`, `expired_token` or
//!   `invalid_grant`, or, once, the tokens (minted like the code grant's).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcp_auth_types::ErrorCode;
use serde_json::{Value, json};

use crate::error::OAuthError;
use crate::flow::{CSRF_COOKIE, cookie, cookie_name, ct_eq, forged, with_csrf_cookie};
use crate::handlers::{
    AppState, authenticate_client, check_resource, check_scope, client_allows_grant,
    client_error_page, find_client, mint, random_token, tenant,
};
use crate::pages::{device_done_page, device_entry_page, error_page};
use crate::ratelimit::{Limiter, Lockouts, RateLimits};
use crate::store::{
    ClientRow, DeviceAuthRow, DeviceDecision, DevicePoll, DeviceStatus, PendingAuthRow, StoreError,
    hash_secret, unix_now,
};

/// The grant type of RFC 8628 §3.4.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The user code alphabet (RFC 8628 §6.1): consonants only, so no code spells a word, and
/// none of the letters is easily confused with a digit or another letter.
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Characters in a user code: 20^8, about 2^34.6 codes (RFC 8628 §6.1's example).
pub const USER_CODE_LEN: usize = 8;

/// The polling interval handed out, in seconds (RFC 8628 §3.2: default 5).
pub const DEFAULT_INTERVAL: u64 = 5;

/// How many fresh user codes [`device_authorization`] draws when one is taken.
const USER_CODE_ATTEMPTS: usize = 5;

/// The `extra` key of a pending request that marks it as a device verification; the value
/// is the device authorization's key (the hash of its device code).
const DEVICE_MARK: &str = "device";

/// Why a device code poll gets no tokens (RFC 8628 §3.5), each mapped to its error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The user has not decided yet.
    #[error("the user has not yet approved or denied the request")]
    AuthorizationPending,
    /// Polled too fast; the interval grew by 5 s.
    #[error("polling too fast; wait {interval} seconds between requests")]
    SlowDown {
        /// The interval now in force.
        interval: u64,
    },
    /// The user denied.
    #[error("the user denied the request")]
    AccessDenied,
    /// The device code expired.
    #[error("the device code has expired; start a new device authorization")]
    ExpiredToken,
    /// Unknown, used, or another client's device code.
    #[error("{0}")]
    InvalidGrant(&'static str),
}

impl From<DeviceError> for OAuthError {
    fn from(e: DeviceError) -> Self {
        let code = match e {
            DeviceError::AuthorizationPending => ErrorCode::AuthorizationPending,
            DeviceError::SlowDown { .. } => ErrorCode::SlowDown,
            DeviceError::AccessDenied => ErrorCode::AccessDenied,
            DeviceError::ExpiredToken => ErrorCode::ExpiredToken,
            DeviceError::InvalidGrant(_) => ErrorCode::InvalidGrant,
        };
        OAuthError::new(code, e.to_string())
    }
}

// ---------------------------------------------------------------- user codes

/// A new user code, normalized (8 letters of [`USER_CODE_ALPHABET`], no dash), drawn
/// uniformly from the operating system's randomness.
pub fn generate_user_code() -> String {
    let mut out = String::with_capacity(USER_CODE_LEN);
    // 256 = 12 * 20 + 16: bytes of 240 and above are dropped, so every letter is equally
    // likely.
    let limit = 256 - 256 % USER_CODE_ALPHABET.len();
    while out.len() < USER_CODE_LEN {
        let mut buf = [0u8; 16];
        // No safe way to continue without the OS's randomness.
        getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
        for b in buf {
            if usize::from(b) < limit && out.len() < USER_CODE_LEN {
                out.push(char::from(
                    USER_CODE_ALPHABET[usize::from(b) % USER_CODE_ALPHABET.len()],
                ));
            }
        }
    }
    out
}

/// The user code as typed, normalized (RFC 8628 §6.1): case-insensitive, dashes and white
/// space ignored. `None` unless that leaves exactly [`USER_CODE_LEN`] letters of
/// [`USER_CODE_ALPHABET`].
pub fn normalize_user_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ok = code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b));
    ok.then_some(code)
}

/// A normalized user code as shown to the user: `XXXX-XXXX`.
pub fn format_user_code(code: &str) -> String {
    match (code.get(..4), code.get(4..)) {
        (Some(a), Some(b)) if !b.is_empty() => format!("{a}-{b}"),
        _ => code.to_owned(),
    }
}

// ---------------------------------------------------------------- POST /device_authorization

/// `POST /device_authorization` (RFC 8628 §3.1-3.2).
pub async fn device_authorization(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawForm(body): axum::extract::RawForm,
) -> Response {
    match authorization_inner(&s, &headers, &body).await {
        Ok(v) => {
            let mut r = axum::Json(v).into_response();
            let h = r.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => e.into_response(),
    }
}

async fn authorization_inner(
    s: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthError> {
    let form = crate::handlers::unique_params(body).map_err(|k| {
        OAuthError::invalid_request(format!("the parameter {k} appears more than once"))
    })?;
    let (client, _) = authenticate_client(s, headers, &form).await?;
    if !client_allows_grant(&client, DEVICE_CODE_GRANT) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client did not register the device_code grant",
        ));
    }
    let scope = check_scope(s, &client, form.get("scope").map(String::as_str))
        .map_err(|(c, d)| OAuthError::new(c, d))?;
    let resource = check_resource(s, form.get("resource").map(String::as_str))
        .map_err(|(c, d)| OAuthError::new(c, d))?;
    let ttl = s.config.ttls.device_code.as_secs();
    for _ in 0..USER_CODE_ATTEMPTS {
        let device_code = random_token();
        let user_code = generate_user_code();
        let now = unix_now();
        let row = DeviceAuthRow {
            tenant: tenant(s).to_owned(),
            device_code_hash: hash_secret(&device_code),
            user_code_hash: hash_secret(&user_code),
            client_id: client.client_id.clone(),
            scope: scope.to_string(),
            resource: resource.clone(),
            interval: DEFAULT_INTERVAL,
            status: DeviceStatus::Pending,
            subject: None,
            granted_scope: None,
            last_poll: None,
            created_at: now,
            expires_at: now + ttl,
        };
        match s.store.put_device(&row).await {
            Ok(()) => {}
            // Another live request holds this user code: draw again.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
        let shown = format_user_code(&user_code);
        let uri = s.config.endpoint("/device");
        let complete = url::Url::parse_with_params(&uri, [("user_code", shown.as_str())])
            .map_err(|e| OAuthError::internal(&e))?;
        tracing::info!(client = %client.client_id, "device authorization started");
        return Ok(json!({
            "device_code": device_code,
            "user_code": shown,
            "verification_uri": uri,
            "verification_uri_complete": complete.as_str(),
            "expires_in": ttl,
            "interval": DEFAULT_INTERVAL,
        }));
    }
    Err(OAuthError::new(
        ErrorCode::TemporarilyUnavailable,
        "no free user code could be drawn; try again",
    ))
}

// ---------------------------------------------------------------- /token

/// The `/token` step of the device grant (RFC 8628 §3.4-3.5) for an authenticated `client`
/// that may use it: one atomic poll, then, on approval, tokens minted like the code grant's
/// (an access token bound to the request's `resource`, a new refresh token family).
pub(crate) async fn token_grant(
    s: &AppState,
    client: &ClientRow,
    form: &HashMap<String, String>,
    dpop: Option<&crate::handlers::DpopBinding>,
) -> Result<Value, OAuthError> {
    let code = form
        .get("device_code")
        .ok_or_else(|| OAuthError::invalid_request("device_code is missing"))?;
    let now = unix_now();
    let poll = s
        .store
        .poll_device(tenant(s), &hash_secret(code), &client.client_id, now)
        .await?;
    let row = match poll {
        DevicePoll::Approved(row) => row,
        DevicePoll::Pending { .. } => return Err(DeviceError::AuthorizationPending.into()),
        DevicePoll::SlowDown { interval } => {
            return Err(DeviceError::SlowDown { interval }.into());
        }
        DevicePoll::Denied => return Err(DeviceError::AccessDenied.into()),
        DevicePoll::Expired => return Err(DeviceError::ExpiredToken.into()),
        DevicePoll::Consumed => {
            tracing::warn!(client = %client.client_id, "device code used again");
            return Err(DeviceError::InvalidGrant("the device code was already used").into());
        }
        DevicePoll::WrongClient => {
            tracing::warn!(client = %client.client_id, "device code of another client presented");
            return Err(
                DeviceError::InvalidGrant("the device code was issued to another client").into(),
            );
        }
        DevicePoll::Missing => {
            return Err(DeviceError::InvalidGrant("the device code is invalid or expired").into());
        }
    };
    let Some(subject) = row.subject.as_deref() else {
        return Err(OAuthError::internal(
            &"approved device authorization without a subject",
        ));
    };
    let scope = row.granted_scope.as_deref().unwrap_or(&row.scope);
    let with_refresh =
        s.config.issue_refresh_tokens && client_allows_grant(client, "refresh_token");
    let family = random_token();
    let mut out = mint(
        s,
        &client.client_id,
        subject,
        scope,
        row.resource.as_deref(),
        Some(&family),
        with_refresh,
        dpop,
    )
    .await?;
    if crate::oidc::wants_id_token(scope) {
        crate::oidc::add_id_token(s, &mut out, &client.client_id, subject, None).await?;
    }
    tracing::info!(client = %client.client_id, subject = %subject, "device authorization redeemed");
    Ok(out)
}

// ---------------------------------------------------------------- /device

/// The guards of the verification page against user code guessing (RFC 8628 §5.1), from
/// [`RateLimits`]: a bucket per address, one for the whole tenant, and the lockout.
#[derive(Debug, Clone)]
pub struct VerificationGuard {
    per_address: Option<Limiter>,
    global: Option<Limiter>,
    lockouts: Option<Lockouts>,
}

impl VerificationGuard {
    /// The guard `limits` configure.
    pub fn new(limits: &RateLimits) -> Self {
        Self {
            per_address: limits.device_verification.map(Limiter::new),
            global: limits.device_verification_global.map(Limiter::new),
            lockouts: limits.device_lockout.map(Lockouts::new),
        }
    }

    /// The refusal, when the entry must be refused before looking at it.
    fn refuse(&self, ip: Option<IpAddr>, now: Instant) -> Option<Response> {
        if let (Some(l), Some(ip)) = (&self.lockouts, ip)
            && let Err(wait) = l.check(ip, now)
        {
            return Some(too_many(wait, LOCKED_OUT));
        }
        if let (Some(l), Some(ip)) = (&self.per_address, ip)
            && let Err(wait) = l.check(ip, now)
        {
            return Some(too_many(
                wait,
                "Too many attempts. Wait a moment, then try again.",
            ));
        }
        if let Some(l) = &self.global
            && let Err(wait) = l.check_all(now)
        {
            tracing::warn!("device verification: global user code rate limit reached");
            return Some(too_many(
                wait,
                "Too many attempts. Wait a moment, then try again.",
            ));
        }
        None
    }

    /// Records a wrong code; the refusal if the address is now locked out.
    fn fail(&self, ip: Option<IpAddr>, now: Instant) -> Option<Response> {
        let (Some(l), Some(ip)) = (&self.lockouts, ip) else {
            return None;
        };
        if !l.fail(ip, now) {
            return None;
        }
        tracing::warn!(%ip, "device verification: address locked out after wrong codes");
        let wait = l.check(ip, now).err().unwrap_or_default();
        Some(too_many(wait, LOCKED_OUT))
    }
}

const LOCKED_OUT: &str =
    "Too many wrong codes were entered from your network. Wait, then try again.";

fn too_many(wait: std::time::Duration, message: &str) -> Response {
    let mut r = error_page(StatusCode::TOO_MANY_REQUESTS, message);
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The code entry form with a fresh CSRF token (double-submit: the form's token must equal
/// the `mcp_auth_csrf` cookie's).
fn entry_form(s: &AppState, status: StatusCode, code: &str, error: Option<&str>) -> Response {
    let csrf = random_token();
    let page = device_entry_page(status, &s.config.endpoint("/device"), &csrf, code, error);
    with_csrf_cookie(s, page, &csrf)
}

/// `GET /device`: the code entry form, prefilled from `?user_code=`.
pub async fn verification_form(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let code = q
        .get("user_code")
        .map(|c| c.chars().take(32).collect::<String>())
        .unwrap_or_default();
    entry_form(&s, StatusCode::OK, &code, None)
}

/// The form posted by the code entry page.
#[derive(serde::Deserialize)]
pub struct Entry {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_code: String,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").finish_non_exhaustive()
    }
}

/// `POST /device`: checks the CSRF token, the guessing limits and the code; a valid,
/// undecided code continues to the login and consent pages of [`crate::flow`].
pub async fn verification_submit(
    State(s): State<AppState>,
    guard: VerificationGuard,
    req: Request,
) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let headers = req.headers().clone();
    let entry = match axum::extract::Form::<Entry>::from_request(req, &s).await {
        Ok(axum::extract::Form(e)) => e,
        Err(_) => return error_page(StatusCode::BAD_REQUEST, "the form could not be read"),
    };
    let csrf_ok = !entry.csrf.is_empty()
        && cookie(&headers, &cookie_name(&s.config.issuer, CSRF_COOKIE))
            .is_some_and(|c| ct_eq(&c, &entry.csrf));
    if !csrf_ok {
        return forged();
    }
    let started = Instant::now();
    if let Some(refused) = guard.refuse(ip, started) {
        return refused;
    }
    let now = unix_now();
    let found = match normalize_user_code(&entry.user_code) {
        Some(code) => {
            match s
                .store
                .get_device_by_user_code(tenant(&s), &hash_secret(&code), now)
                .await
            {
                Ok(row) => row,
                Err(e) => return OAuthError::from(e).into_response(),
            }
        }
        None => None,
    };
    let Some(row) = found else {
        if let Some(locked) = guard.fail(ip, started) {
            return locked;
        }
        return entry_form(
            &s,
            StatusCode::BAD_REQUEST,
            &entry.user_code.chars().take(32).collect::<String>(),
            Some("That code is not valid or has expired. Check the code on your device."),
        );
    };
    if row.status != DeviceStatus::Pending {
        return error_page(
            StatusCode::BAD_REQUEST,
            "this code was already used; start again on your device",
        );
    }
    let client = match find_client(&s, &row.client_id, now).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "the application is no longer registered",
            );
        }
        Err(e) => return client_error_page(&row.client_id, e),
    };
    let pending = PendingAuthRow {
        id: random_token(),
        tenant: tenant(&s).to_owned(),
        client_id: client.client_id.clone(),
        // Nothing is redirected anywhere: the answer goes to the polling device.
        redirect_uri: String::new(),
        response_type: DEVICE_CODE_GRANT.to_owned(),
        scope: Some(row.scope.clone()).filter(|x| !x.is_empty()),
        state: None,
        code_challenge: String::new(),
        code_challenge_method: String::new(),
        resource: row.resource.clone(),
        nonce: None,
        prompt: None,
        login_hint: None,
        extra: [(DEVICE_MARK.to_owned(), json!(row.device_code_hash))]
            .into_iter()
            .collect(),
        subject: None,
        csrf_hash: String::new(),
        created_at: now,
        expires_at: (now + s.config.ttls.pending_authorization.as_secs()).min(row.expires_at),
    };
    crate::flow::begin(&s, &headers, &client, pending).await
}

// ---------------------------------------------------------------- decisions

/// Whether the pending request is a device verification.
pub(crate) fn is_device_request(p: &PendingAuthRow) -> bool {
    p.extra.get(DEVICE_MARK).and_then(Value::as_str).is_some()
}

async fn decide(s: &AppState, p: &PendingAuthRow, decision: DeviceDecision) -> Response {
    let Some(device) = p.extra.get(DEVICE_MARK).and_then(Value::as_str) else {
        return error_page(StatusCode::BAD_REQUEST, "this is not a device request");
    };
    let approved = matches!(decision, DeviceDecision::Approve { .. });
    match s
        .store
        .decide_device(tenant(s), device, &decision, unix_now())
        .await
    {
        Ok(true) => {
            tracing::info!(client = %p.client_id, approved, "device authorization decided");
            device_done_page(approved)
        }
        Ok(false) => error_page(
            StatusCode::BAD_REQUEST,
            "this code has expired or was already used; start again on your device",
        ),
        Err(e) => OAuthError::from(e).into_response(),
    }
}

/// Approves the device authorization of the (consumed) pending request for `subject`, with
/// the scope the consent page showed: the device's next poll gets the tokens.
pub(crate) async fn approve(s: &AppState, p: &PendingAuthRow, subject: &str) -> Response {
    let scope = p.scope.clone().unwrap_or_default();
    let decision = DeviceDecision::Approve {
        subject: subject.to_owned(),
        scope,
    };
    decide(s, p, decision).await
}

/// Denies the device authorization of the pending request: the device's next poll gets
/// `access_denied`.
pub(crate) async fn deny(s: &AppState, p: &PendingAuthRow) -> Response {
    decide(s, p, DeviceDecision::Deny).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_8_consonants() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let c = generate_user_code();
            assert_eq!(c.len(), USER_CODE_LEN);
            assert!(c.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)), "{c}");
            assert_eq!(normalize_user_code(&c).as_deref(), Some(c.as_str()));
            seen.insert(c);
        }
        assert!(seen.len() > 190, "codes repeat too often: {}", seen.len());
    }

    #[test]
    fn every_letter_of_the_alphabet_is_drawn() {
        let mut counts = [0usize; 20];
        for _ in 0..500 {
            for b in generate_user_code().bytes() {
                let i = USER_CODE_ALPHABET.iter().position(|x| *x == b).unwrap();
                counts[i] += 1;
            }
        }
        // 4000 letters, 200 expected each: far from 0 for every letter.
        assert!(counts.iter().all(|c| *c > 100), "{counts:?}");
    }

    #[test]
    fn normalization_ignores_case_dashes_and_spaces() {
        assert_eq!(
            normalize_user_code("bcdf-ghjk").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(
            normalize_user_code(" BCDF GHJK\n").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(
            normalize_user_code("b-c-d-f-g-h-j-k").as_deref(),
            Some("BCDFGHJK")
        );
        // Vowels, digits, wrong lengths and non-ASCII are never codes.
        for bad in [
            "BCDF-GHJA",
            "BCDF-GHJ1",
            "BCDF-GHJ",
            "BCDF-GHJKL",
            "",
            "BCDF-GHJ\u{212A}",
        ] {
            assert_eq!(normalize_user_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn format_groups_by_four() {
        assert_eq!(format_user_code("BCDFGHJK"), "BCDF-GHJK");
        assert_eq!(
            normalize_user_code(&format_user_code("LMNPQRST")).as_deref(),
            Some("LMNPQRST")
        );
    }

    #[test]
    fn errors_map_to_rfc_8628_codes() {
        let cases = [
            (DeviceError::AuthorizationPending, "authorization_pending"),
            (DeviceError::SlowDown { interval: 10 }, "slow_down"),
            (DeviceError::AccessDenied, "access_denied"),
            (DeviceError::ExpiredToken, "expired_token"),
            (DeviceError::InvalidGrant("used"), "invalid_grant"),
        ];
        for (e, code) in cases {
            let o = OAuthError::from(e);
            assert_eq!(o.code.as_str(), code);
            assert_eq!(o.status, StatusCode::BAD_REQUEST);
        }
    }

    fn pending_row(interval: u64, last_poll: Option<u64>) -> DeviceAuthRow {
        DeviceAuthRow {
            tenant: "t".into(),
            device_code_hash: hash_secret("dc"),
            user_code_hash: hash_secret("BCDFGHJK"),
            client_id: "c".into(),
            scope: "read".into(),
            resource: None,
            interval,
            status: DeviceStatus::Pending,
            subject: None,
            granted_scope: None,
            last_poll,
            created_at: 1_000,
            expires_at: 1_600,
        }
    }

    #[test]
    fn poll_step_state_machine() {
        use crate::store::{device_decide_step, device_poll_step};
        let row = pending_row(5, None);
        let (a, next) = device_poll_step(&row, "c", 1_000);
        assert_eq!(a, DevicePoll::Pending { interval: 5 });
        let next = next.unwrap();
        assert_eq!(next.last_poll, Some(1_000));
        // Exactly at the interval is allowed; one second early is not.
        let (a, _) = device_poll_step(&next, "c", 1_005);
        assert_eq!(a, DevicePoll::Pending { interval: 5 });
        let (a, slowed) = device_poll_step(&next, "c", 1_004);
        assert_eq!(a, DevicePoll::SlowDown { interval: 10 });
        assert_eq!(slowed.unwrap().interval, 10);
        assert_eq!(
            device_poll_step(&next, "other", 1_010),
            (DevicePoll::WrongClient, None)
        );
        assert_eq!(
            device_poll_step(&next, "c", 1_600),
            (DevicePoll::Expired, None)
        );

        let approved = device_decide_step(
            &row,
            &DeviceDecision::Approve {
                subject: "alice".into(),
                scope: "read".into(),
            },
            1_001,
        )
        .unwrap();
        assert_eq!(
            device_decide_step(&approved, &DeviceDecision::Deny, 1_002),
            None
        );
        let (a, consumed) = device_poll_step(&approved, "c", 1_001);
        assert!(matches!(a, DevicePoll::Approved(ref r) if r.subject.as_deref() == Some("alice")));
        let consumed = consumed.unwrap();
        assert_eq!(consumed.status, DeviceStatus::Consumed);
        assert_eq!(
            device_poll_step(&consumed, "c", 1_100),
            (DevicePoll::Consumed, None)
        );

        let denied = device_decide_step(&row, &DeviceDecision::Deny, 1_001).unwrap();
        assert_eq!(
            device_poll_step(&denied, "c", 1_100),
            (DevicePoll::Denied, None)
        );
        assert_eq!(device_decide_step(&row, &DeviceDecision::Deny, 1_600), None);
    }
}
