//! The device authorization grant (RFC 8628), the client's side: for a machine without a
//! browser (an SSH session, a container), the user approves on another device by opening a
//! URL and entering a short code while this client polls the token endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_auth_types::{ScopeSet, SecretString, TokenRequest, TokenResponse};
use serde::Deserialize;

use crate::dpop::Dpop;
use crate::error::{Error, Result, Step};
use crate::http::Http;
use crate::store::ClientRecord;
use crate::token::{authenticate, request_token_with};

/// The grant type URN.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// RFC 8628 §3.2 default polling interval.
const DEFAULT_INTERVAL: u64 = 5;
/// RFC 8628 §3.5: `slow_down` adds five seconds to the interval.
const SLOW_DOWN_STEP: u64 = 5;

/// The device authorization response (RFC 8628 §3.2): what to show the user.
#[derive(Clone, Deserialize)]
pub struct DeviceAuthorization {
    /// The code this client polls with (a secret).
    pub device_code: SecretString,
    /// The code the user enters.
    pub user_code: String,
    /// Where the user enters it. (`verification_url` is a known misspelling some servers
    /// send.)
    #[serde(alias = "verification_url")]
    pub verification_uri: String,
    /// The same with the code filled in, for a QR code or a link.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds between polls (default 5).
    #[serde(default)]
    pub interval: Option<u64>,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("verification_uri_complete", &self.verification_uri_complete)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// Shows the user where to go and which code to enter (a terminal, a GUI, a chat message).
#[derive(Clone)]
pub struct DevicePrompt(pub Arc<dyn Fn(&DeviceAuthorization) + Send + Sync>);

impl std::fmt::Debug for DevicePrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevicePrompt(..)")
    }
}

impl DevicePrompt {
    /// Prints the URL and the code to standard error.
    pub fn stderr() -> Self {
        Self(Arc::new(|a: &DeviceAuthorization| {
            eprintln!(
                "To authorize, open {} on any device and enter the code {}",
                a.verification_uri, a.user_code
            );
            if let Some(c) = &a.verification_uri_complete {
                eprintln!("(or open {c})");
            }
        }))
    }
}

/// Whether this session has no display a browser could be shown on: no X11 or Wayland
/// display on Unix-like systems, or an SSH session without a forwarded display. A set
/// `$BROWSER` means the user said how to open one.
pub fn no_display() -> bool {
    no_display_in(
        |v| std::env::var_os(v).is_some_and(|x| !x.is_empty()),
        cfg!(any(target_os = "macos", target_os = "windows")),
    )
}

/// [`no_display`] for an environment where `set(VAR)` says whether VAR is set and not
/// empty, on a desktop system (macOS, Windows: a display unless reached over SSH) or not.
fn no_display_in(set: impl Fn(&str) -> bool, desktop_os: bool) -> bool {
    if set("BROWSER") {
        return false;
    }
    let display = set("DISPLAY") || set("WAYLAND_DISPLAY");
    let ssh = set("SSH_CONNECTION") || set("SSH_TTY");
    if desktop_os {
        ssh && !display
    } else {
        !display
    }
}

/// A verification URI fit to show a user: http(s), no credentials, nothing that is not
/// printable. A server that sends anything else is not trusted to send people there.
fn check_shown_uri(uri: &str, allow_http: bool) -> Result<()> {
    let ok = url::Url::parse(uri).is_ok_and(|u| {
        (u.scheme() == "https"
            || (u.scheme() == "http" && (allow_http || mcp_auth_types::is_loopback_url(&u))))
            && u.username().is_empty()
            && u.password().is_none()
    }) && !uri.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidResponse {
            step: Step::DeviceAuthorization,
            url: String::new(),
            message: format!(
                "the verification URI {:?} is not an https URL to show a user",
                crate::error::sanitize(uri, 100)
            ),
        })
    }
}

/// Asks the authorization server for a device and a user code (RFC 8628 §3.1).
pub(crate) async fn start(
    http: &Http,
    endpoint: &str,
    audience: &str,
    client: &ClientRecord,
    scope: Option<&ScopeSet>,
    resource: Option<&str>,
    allow_http: bool,
) -> Result<DeviceAuthorization> {
    let mut form: Vec<(&'static str, String)> = Vec::new();
    if let Some(s) = scope.filter(|s| !s.is_empty()) {
        form.push(("scope", s.to_string()));
    }
    if let Some(r) = resource {
        form.push(("resource", r.to_owned()));
    }
    let req = authenticate(http.post(endpoint)?, &mut form, client, audience)?;
    let auth: DeviceAuthorization = http
        .send_oauth(Step::DeviceAuthorization, req.form(&form), endpoint)
        .await?;
    let code_ok = !auth.user_code.is_empty()
        && auth.user_code.len() <= 64
        && !auth.user_code.chars().any(char::is_control);
    if !code_ok || auth.device_code.secret().is_empty() || auth.expires_in == 0 {
        return Err(Error::InvalidResponse {
            step: Step::DeviceAuthorization,
            url: endpoint.to_owned(),
            message:
                "the device authorization response lacks a usable device code, user code or expiry"
                    .into(),
        });
    }
    check_shown_uri(&auth.verification_uri, allow_http)?;
    if let Some(c) = &auth.verification_uri_complete {
        check_shown_uri(c, allow_http)?;
    }
    Ok(auth)
}

/// Polls the token endpoint until the user decides or the codes expire (RFC 8628 §3.4,
/// §3.5): at the server's interval, five seconds slower after each `slow_down`, backing off
/// after a network error, never past `expires_in` (or `deadline`, when sooner).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn poll(
    http: &Http,
    token_endpoint: &str,
    audience: &str,
    client: &ClientRecord,
    auth: &DeviceAuthorization,
    dpop: Option<Dpop<'_>>,
    deadline: Duration,
) -> Result<TokenResponse> {
    let started = Instant::now();
    let lifetime = Duration::from_secs(auth.expires_in).min(deadline);
    let mut interval = auth.interval.unwrap_or(DEFAULT_INTERVAL).clamp(1, 60);
    let grant = TokenRequest::DeviceCode {
        device_code: auth.device_code.secret(),
    };
    loop {
        let wait = Duration::from_secs(interval);
        if started.elapsed() + wait > lifetime {
            return Err(Error::Timeout {
                step: Step::DeviceAuthorization,
                seconds: lifetime.as_secs(),
            });
        }
        tokio::time::sleep(wait).await;
        let result = request_token_with(
            http,
            Step::DeviceAuthorization,
            token_endpoint,
            audience,
            client,
            &grant,
            dpop,
        )
        .await;
        let e = match result {
            Ok(resp) => return Ok(resp),
            Err(e) => e,
        };
        match e.oauth_code().map(|c| c.as_str()) {
            Some("authorization_pending") => {}
            Some("slow_down") => {
                interval = (interval + SLOW_DOWN_STEP).min(120);
                tracing::debug!(interval, "the authorization server asked to poll slower");
            }
            Some("access_denied") => {
                return Err(Error::AuthorizationDenied {
                    error: "access_denied".into(),
                    description: Some(
                        "the user denied the request on the verification page".into(),
                    ),
                });
            }
            Some("expired_token") => {
                return Err(Error::Timeout {
                    step: Step::DeviceAuthorization,
                    seconds: auth.expires_in,
                });
            }
            None if matches!(e, Error::Network { .. }) => {
                // RFC 8628 §3.5: back off on connection timeouts.
                interval = (interval * 2).min(60);
                tracing::debug!(interval, error = %e, "polling failed; backing off");
            }
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_code_never_shows_in_debug() {
        let a: DeviceAuthorization = serde_json::from_value(serde_json::json!({
            "device_code": "SECRET-DEVICE-CODE", "user_code": "BCDF-GHJK",
            "verification_url": "https://as.example/device", "expires_in": 600
        }))
        .unwrap();
        assert_eq!(a.verification_uri, "https://as.example/device");
        assert!(!format!("{a:?}").contains("SECRET"));
    }

    #[test]
    fn no_display_means_no_x11_wayland_or_browser_command() {
        let env = |vars: &'static [&'static str]| move |v: &str| vars.contains(&v);
        // Linux: a container or an SSH box without X forwarding.
        assert!(no_display_in(env(&[]), false));
        assert!(no_display_in(env(&["SSH_CONNECTION"]), false));
        assert!(!no_display_in(env(&["DISPLAY"]), false));
        assert!(!no_display_in(env(&["WAYLAND_DISPLAY"]), false));
        assert!(!no_display_in(env(&["BROWSER"]), false));
        // macOS / Windows: the console has a display; over SSH it is not the user's.
        assert!(!no_display_in(env(&[]), true));
        assert!(no_display_in(env(&["SSH_TTY"]), true));
        assert!(!no_display_in(env(&["SSH_TTY", "DISPLAY"]), true));
    }

    /// A token endpoint answering the polls with `script` in turn (the last one repeats),
    /// recording when each poll came; its URL.
    async fn token_endpoint(
        script: Vec<(u16, serde_json::Value)>,
    ) -> (String, Arc<std::sync::Mutex<Vec<Instant>>>) {
        use axum::http::StatusCode;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| {
                let log = log.clone();
                let script = script.clone();
                async move {
                    assert!(body.contains("device_code=dc-secret"), "{body}");
                    let mut seen = log.lock().unwrap();
                    seen.push(Instant::now());
                    let (status, v) = script[(seen.len() - 1).min(script.len() - 1)].clone();
                    (StatusCode::from_u16(status).unwrap(), axum::Json(v))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn auth(expires_in: u64) -> DeviceAuthorization {
        serde_json::from_value(serde_json::json!({
            "device_code": "dc-secret", "user_code": "BCDF-GHJK",
            "verification_uri": "https://as.example/device", "expires_in": expires_in,
            "interval": 1
        }))
        .unwrap()
    }

    fn public_client() -> ClientRecord {
        ClientRecord {
            issuer: "http://127.0.0.1".into(),
            client_id: "cli".into(),
            client_secret: None,
            client_secret_expires_at: None,
            auth_method: mcp_auth_types::AuthMethod::None,
            private_key_pem: None,
            signing_alg: None,
            redirect_uri: None,
            registration: crate::store::Registration::Dynamic,
            registration_access_token: None,
            registration_client_uri: None,
        }
    }

    async fn run(
        script: Vec<(u16, serde_json::Value)>,
        expires_in: u64,
    ) -> (Result<TokenResponse>, Vec<Instant>) {
        let (url, seen) = token_endpoint(script).await;
        let http = Http::new(crate::HttpOptions::default()).unwrap();
        let r = poll(
            &http,
            &url,
            "http://127.0.0.1",
            &public_client(),
            &auth(expires_in),
            None,
            Duration::from_secs(60),
        )
        .await;
        let seen = seen.lock().unwrap().clone();
        (r, seen)
    }

    #[tokio::test]
    async fn polling_waits_the_interval_and_five_seconds_more_after_slow_down() {
        let pending = (400, serde_json::json!({"error": "authorization_pending"}));
        let slow = (400, serde_json::json!({"error": "slow_down"}));
        let ok = (
            200,
            serde_json::json!({"access_token": "at", "token_type": "Bearer"}),
        );
        let (r, seen) = run(vec![pending.clone(), slow, pending, ok], 600).await;
        assert_eq!(r.unwrap().access_token.secret(), "at");
        assert_eq!(seen.len(), 4);
        let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1] - w[0]).collect();
        let tolerance = Duration::from_millis(50);
        assert!(gaps[0] + tolerance >= Duration::from_secs(1), "{gaps:?}");
        // After slow_down the interval is 1 + 5 seconds, and stays so (RFC 8628 §3.5).
        assert!(gaps[1] + tolerance >= Duration::from_secs(6), "{gaps:?}");
        assert!(gaps[2] + tolerance >= Duration::from_secs(6), "{gaps:?}");
    }

    #[tokio::test]
    async fn a_denial_and_an_expiry_end_the_polling() {
        let denied = (400, serde_json::json!({"error": "access_denied"}));
        let (r, seen) = run(vec![denied], 600).await;
        assert!(matches!(r, Err(Error::AuthorizationDenied { .. })), "{r:?}");
        assert_eq!(seen.len(), 1);
        // Always pending, codes valid for 3 s: two polls, then a timeout without a third.
        let pending = (400, serde_json::json!({"error": "authorization_pending"}));
        let (r, seen) = run(vec![pending], 3).await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        assert_eq!(seen.len(), 2, "no poll after expires_in");
        // Another error is the answer, not a reason to go on polling.
        let (r, seen) = run(
            vec![(400, serde_json::json!({"error": "invalid_grant"}))],
            600,
        )
        .await;
        assert!(r.unwrap_err().is_invalid_grant());
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn only_web_urls_are_shown() {
        assert!(check_shown_uri("https://as.example/device", false).is_ok());
        assert!(check_shown_uri("http://127.0.0.1:8080/device", false).is_ok());
        assert!(check_shown_uri("http://as.example/device", false).is_err());
        assert!(check_shown_uri("http://as.example/device", true).is_ok());
        assert!(check_shown_uri("javascript:alert(1)", true).is_err());
        assert!(check_shown_uri("https://user:pw@as.example/", false).is_err());
        assert!(check_shown_uri("https://as.example/\u{1b}[2J", false).is_err());
    }
}
