//! The device authorization grant (RFC 8628) end to end, over real HTTP on 127.0.0.1: the
//! device (a client polling `/token`) and the person (a browser with its cookies, on the
//! verification, login and consent pages) in one test each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mcp_auth_server::ratelimit::{Lockout, Quota, RateLimits};
use mcp_auth_server::store::{MemoryStore, Store};
use mcp_auth_server::{AuthorizationServer, LocalAccounts, ServerConfig};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::{Value, json};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const PASSWORD: &str = "correct horse battery staple";

struct Server {
    issuer: String,
    auth: AuthorizationServer,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server on 127.0.0.1:0 with local account `alice`, serving peers' addresses to the
/// rate limiters.
async fn start(configure: impl FnOnce(&mut ServerConfig)) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let local = LocalAccounts::new(store.clone());
    local.add("default", "alice", PASSWORD).await.unwrap();
    let mut config = ServerConfig::new(&issuer);
    config.rate_limits = RateLimits::off();
    configure(&mut config);
    let auth = AuthorizationServer::with_identity_provider(config, store, Arc::new(local))
        .await
        .unwrap();
    let app = auth
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Server {
        issuer,
        auth,
        http,
        task,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Registers a client (RFC 7591) with `metadata`; returns the registration response.
    async fn register(&self, metadata: Value) -> Value {
        let r = self
            .http
            .post(self.url("/register"))
            .json(&metadata)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    /// A public client allowed the device grant and refresh tokens.
    async fn device_client(&self) -> String {
        let reg = self
            .register(json!({
                "client_name": "Device CLI",
                "grant_types": [DEVICE_GRANT, "refresh_token"],
                "token_endpoint_auth_method": "none",
            }))
            .await;
        reg["client_id"].as_str().unwrap().to_owned()
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
        let r = self
            .http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        (status, headers, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST /device_authorization` for a public client; the JSON answer.
    async fn start_device(&self, client_id: &str) -> Value {
        let (status, headers, body) = self
            .post_form(
                "/device_authorization",
                &[
                    ("client_id", client_id),
                    ("scope", "files:read"),
                    ("resource", RESOURCE),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        body
    }

    /// One poll of `/token` with the device code.
    async fn poll(&self, client_id: &str, device_code: &str) -> (StatusCode, Value) {
        let (status, headers, body) = self
            .post_form(
                "/token",
                &[
                    ("grant_type", DEVICE_GRANT),
                    ("client_id", client_id),
                    ("device_code", device_code),
                ],
            )
            .await;
        assert_eq!(headers[header::CACHE_CONTROL], "no-store", "{body}");
        (status, body)
    }

    async fn poll_error(&self, client_id: &str, device_code: &str) -> String {
        let (status, body) = self.poll(client_id, device_code).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        body["error"].as_str().unwrap().to_owned()
    }

    fn browser(&self) -> Browser<'_> {
        Browser {
            server: self,
            cookies: HashMap::new(),
        }
    }
}

/// A browser: keeps its cookies, follows nothing by itself.
struct Browser<'a> {
    server: &'a Server,
    cookies: HashMap<String, String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    /// The value of the first `name="…"`/`name=…` hidden input.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name={name} value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} field in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }
}

impl Browser<'_> {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, r: reqwest::Response) -> Page {
        for v in r.headers().get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            if v.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), val.to_owned());
            }
        }
        let (status, headers) = (r.status(), r.headers().clone());
        Page {
            status,
            headers,
            body: r.text().await.unwrap(),
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        let r = self
            .server
            .http
            .get(url)
            .header(header::COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self
            .server
            .http
            .post(self.server.url(path))
            .header(header::COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    /// Opens the verification page and submits `code` with the page's CSRF token.
    async fn enter_code(&mut self, code: &str) -> Page {
        let form = self.get(&self.server.url("/device")).await;
        assert_eq!(form.status, StatusCode::OK);
        let csrf = form.hidden("csrf");
        self.post("/device", &[("csrf", &csrf), ("user_code", code)])
            .await
    }
}

fn assert_protected(page: &Page) {
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn device_flow_pending_slow_down_approve_then_single_use() {
    let server = start(|_| {}).await;
    let client_id = server.device_client().await;
    let started = server.start_device(&client_id).await;
    let device_code = started["device_code"].as_str().unwrap();
    let user_code = started["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9, "{user_code}");
    assert_eq!(&user_code[4..5], "-");
    assert!(
        user_code
            .bytes()
            .filter(|b| *b != b'-')
            .all(|b| b"BCDFGHJKLMNPQRSTVWXZ".contains(&b)),
        "{user_code}"
    );
    assert!(device_code.len() >= 43);
    assert_eq!(started["verification_uri"], server.url("/device"));
    let complete = started["verification_uri_complete"].as_str().unwrap();
    assert_eq!(
        complete,
        format!("{}?user_code={user_code}", server.url("/device"))
    );
    assert_eq!(started["expires_in"], 600);
    assert_eq!(started["interval"], 5);

    // The device polls before the person has done anything, then too fast.
    assert_eq!(
        server.poll_error(&client_id, device_code).await,
        "authorization_pending"
    );
    assert_eq!(
        server.poll_error(&client_id, device_code).await,
        "slow_down"
    );

    // The person opens the link the device shows: the code is prefilled.
    let mut person = server.browser();
    let form = person.get(complete).await;
    assert_eq!(form.status, StatusCode::OK);
    assert_protected(&form);
    assert!(form.body.contains("<html lang=en>"));
    assert!(form.body.contains("<label for=code>"));
    assert!(form.body.contains(&format!("value=\"{user_code}\"")));
    let csrf = form.hidden("csrf");
    // Typed in lower case without the dash: the same code.
    let typed = user_code.replace('-', " ").to_lowercase();
    let consent = person
        .post("/device", &[("csrf", &csrf), ("user_code", &typed)])
        .await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    assert_protected(&consent);
    assert!(consent.body.contains("Device CLI"), "{}", consent.body);
    assert!(consent.body.contains("registered itself dynamically"));
    assert!(consent.body.contains("<code>files:read</code>"));
    assert!(
        consent
            .body
            .contains("Only allow this if you started signing in"),
        "phishing warning (RFC 8628 §5.4): {}",
        consent.body
    );
    assert!(consent.body.contains("name=password"), "a login is needed");
    let pending = consent.hidden("pending");
    let csrf = consent.hidden("csrf");

    // A wrong password shows the page again, a right one approves.
    let again = person
        .post(
            "/authorize",
            &[
                ("pending", pending.as_str()),
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", "wrong"),
                ("decision", "approve"),
            ],
        )
        .await;
    assert!(again.body.contains("Wrong username or password"));
    let csrf = again.hidden("csrf");
    let done = person
        .post(
            "/authorize",
            &[
                ("pending", pending.as_str()),
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body.contains("You may return to your device"),
        "{}",
        done.body
    );

    // The next poll gets the tokens, for alice, bound to the resource.
    let (status, tokens) = server.poll(&client_id, device_code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "files:read");
    let at = tokens["access_token"].as_str().unwrap();
    let claims = server
        .auth
        .keys()
        .verify(at, &server.issuer, Some(RESOURCE))
        .await
        .expect("a valid access token for the resource");
    assert_eq!(claims.sub, "local:alice");
    assert_eq!(claims.aud, RESOURCE);
    assert_eq!(claims.scope, "files:read");
    assert_eq!(claims.client_id, client_id);
    let rt = tokens["refresh_token"].as_str().unwrap();

    // Single use.
    assert_eq!(
        server.poll_error(&client_id, device_code).await,
        "invalid_grant"
    );
    // The same form cannot approve again either.
    let replay = person
        .post(
            "/authorize",
            &[
                ("pending", pending.as_str()),
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);

    // The refresh token works like the code grant's.
    let (status, _, refreshed) = server
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &client_id),
                ("refresh_token", rt),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["scope"], "files:read");
}

#[tokio::test]
async fn denied_by_a_signed_in_user_is_access_denied_and_consent_is_always_asked() {
    let server = start(|_| {}).await;
    let client_id = server.device_client().await;
    let mut person = server.browser();

    // First approval: logs alice in (a session) and remembers her consent.
    let first = server.start_device(&client_id).await;
    let consent = person
        .enter_code(first["user_code"].as_str().unwrap())
        .await;
    let done = person
        .post(
            "/authorize",
            &[
                ("pending", &consent.hidden("pending")),
                ("csrf", &consent.hidden("csrf")),
                ("username", "alice"),
                ("password", PASSWORD),
                ("decision", "approve"),
            ],
        )
        .await;
    assert!(done.body.contains("You may return to your device"));

    // Second request: signed in, consent remembered, yet the page is shown (no silent
    // approval of a code someone else may have started), without a password.
    let second = server.start_device(&client_id).await;
    let device_code = second["device_code"].as_str().unwrap();
    let consent = person
        .enter_code(second["user_code"].as_str().unwrap())
        .await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    assert!(
        consent
            .body
            .contains("Signed in as <strong>local:alice</strong>")
    );
    assert!(!consent.body.contains("name=password"));
    assert!(
        consent
            .body
            .contains("Only allow this if you started signing in")
    );
    let denied = person
        .post(
            "/authorize",
            &[
                ("pending", &consent.hidden("pending")),
                ("csrf", &consent.hidden("csrf")),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(denied.status, StatusCode::OK);
    assert!(denied.body.contains("Access denied"), "{}", denied.body);
    assert_eq!(
        server.poll_error(&client_id, device_code).await,
        "access_denied"
    );
    assert_eq!(
        server.poll_error(&client_id, device_code).await,
        "access_denied"
    );

    // A decided code cannot be entered again.
    let used = person
        .enter_code(second["user_code"].as_str().unwrap())
        .await;
    assert_eq!(used.status, StatusCode::BAD_REQUEST);
    assert!(used.body.contains("already used"), "{}", used.body);
}

#[tokio::test]
async fn expired_device_code_is_expired_token() {
    let server = start(|c| c.ttls.device_code = Duration::from_secs(1)).await;
    let client_id = server.device_client().await;
    let started = server.start_device(&client_id).await;
    assert_eq!(started["expires_in"], 1);
    let device_code = started["device_code"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        server.poll_error(&client_id, device_code).await,
        "expired_token"
    );
    let mut person = server.browser();
    let page = person
        .enter_code(started["user_code"].as_str().unwrap())
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("not valid or has expired"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn another_clients_device_code_is_refused_and_left_alone() {
    let server = start(|_| {}).await;
    let owner = server.device_client().await;
    let thief = server.device_client().await;
    let started = server.start_device(&owner).await;
    let device_code = started["device_code"].as_str().unwrap();
    assert_eq!(
        server.poll_error(&thief, device_code).await,
        "invalid_grant"
    );
    // The thief's poll recorded nothing: the owner's first poll is not "too fast".
    assert_eq!(
        server.poll_error(&owner, device_code).await,
        "authorization_pending"
    );
    assert_eq!(
        server.poll_error(&owner, "not-a-device-code").await,
        "invalid_grant"
    );
}

#[tokio::test]
async fn device_authorization_authenticates_clients_like_the_token_endpoint() {
    let server = start(|_| {}).await;
    // A confidential client must authenticate.
    let reg = server
        .register(json!({
            "client_name": "Confidential TV",
            "grant_types": [DEVICE_GRANT],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .await;
    let id = reg["client_id"].as_str().unwrap();
    let secret = reg["client_secret"].as_str().unwrap();
    let (status, _, body) = server
        .post_form("/device_authorization", &[("client_id", id)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    let r = server
        .http
        .post(server.url("/device_authorization"))
        .basic_auth(id, Some(secret))
        .form(&[("scope", "files:read")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let started: Value = r.json().await.unwrap();
    // Without its secret it cannot poll either.
    let (status, _, _) = server
        .post_form(
            "/token",
            &[
                ("grant_type", DEVICE_GRANT),
                ("client_id", id),
                ("device_code", started["device_code"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A client that did not register the grant may not start it.
    let code_client = server
        .register(json!({
            "redirect_uris": ["http://127.0.0.1:4242/callback"],
            "token_endpoint_auth_method": "none",
        }))
        .await;
    let (status, _, body) = server
        .post_form(
            "/device_authorization",
            &[("client_id", code_client["client_id"].as_str().unwrap())],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unauthorized_client");

    // Unknown resources and scopes are refused as at /authorize.
    let client_id = server.device_client().await;
    let (status, _, body) = server
        .post_form(
            "/device_authorization",
            &[("client_id", &client_id), ("resource", "not a uri")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_target");

    // RFC 6749 §3.1 (RFC 8628 §3.1 defers to it): a parameter sent twice is refused.
    let (status, _, body) = server
        .post_form(
            "/device_authorization",
            &[
                ("client_id", &client_id),
                ("scope", "files:read"),
                ("scope", "files:write"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("scope appears more than once")),
        "{body}"
    );
}

#[tokio::test]
async fn wrong_user_codes_lock_the_address_out() {
    let server = start(|c| {
        c.rate_limits.device_lockout = Some(Lockout {
            failures: 3,
            duration: Duration::from_secs(600),
        });
    })
    .await;
    let client_id = server.device_client().await;
    let started = server.start_device(&client_id).await;
    let mut guesser = server.browser();
    for guess in ["BCDF-BCDF", "not a code"] {
        let page = guesser.enter_code(guess).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
        assert!(page.body.contains("not valid or has expired"));
    }
    let locked = guesser.enter_code("BCDF-BCDG").await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers.contains_key(header::RETRY_AFTER));
    // Even the right code is refused now.
    let right = guesser
        .enter_code(started["user_code"].as_str().unwrap())
        .await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn user_code_entries_are_rate_limited_per_address() {
    let server = start(|c| {
        c.rate_limits.device_verification = Some(Quota {
            per_minute: 1,
            burst: 2,
        });
    })
    .await;
    let mut person = server.browser();
    for _ in 0..2 {
        let page = person.enter_code("BCDF-BCDF").await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
    }
    let limited = person.enter_code("BCDF-BCDF").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_protected(&limited);
}

#[tokio::test]
async fn user_code_entries_are_rate_limited_for_the_whole_tenant() {
    let server = start(|c| {
        c.rate_limits.device_verification_global = Some(Quota {
            per_minute: 1,
            burst: 3,
        });
    })
    .await;
    // Two browsers (as if from two addresses) share the tenant's budget.
    let mut a = server.browser();
    let mut b = server.browser();
    for first in [true, false, true] {
        let browser = if first { &mut a } else { &mut b };
        let page = browser.enter_code("BCDF-BCDF").await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
    }
    let limited = b.enter_code("BCDF-BCDF").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn code_entry_without_its_csrf_token_is_refused() {
    let server = start(|_| {}).await;
    let client_id = server.device_client().await;
    let started = server.start_device(&client_id).await;
    let code = started["user_code"].as_str().unwrap();
    let mut person = server.browser();
    let form = person.get(&server.url("/device")).await;
    let csrf = form.hidden("csrf");
    // No token in the form.
    let page = person.post("/device", &[("user_code", code)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // A token, but not the cookie's (a forged cross-site post).
    let mut other = server.browser();
    let page = other
        .post("/device", &[("csrf", &csrf), ("user_code", code)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Nothing happened to the request.
    assert_eq!(
        server
            .poll_error(&client_id, started["device_code"].as_str().unwrap())
            .await,
        "authorization_pending"
    );
    // The consent form checks its own token too.
    let consent = person
        .post("/device", &[("csrf", &csrf), ("user_code", code)])
        .await;
    assert_eq!(consent.status, StatusCode::OK);
    let page = person
        .post(
            "/authorize",
            &[
                ("pending", &consent.hidden("pending")),
                ("csrf", "forged"),
                ("username", "alice"),
                ("password", PASSWORD),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn metadata_advertises_the_device_endpoint_and_grant() {
    let server = start(|_| {}).await;
    let meta: Value = server
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            server.issuer
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["device_authorization_endpoint"],
        server.url("/device_authorization")
    );
    let grants = meta["grant_types_supported"].as_array().unwrap();
    assert!(grants.iter().any(|g| g == DEVICE_GRANT), "{grants:?}");
}
