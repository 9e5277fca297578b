//! How `/authorize`, `/token`, `/revoke` and `/introspect` read their parameters, over HTTP
//! on 127.0.0.1:0: a parameter sent twice is refused (RFC 6749 §3.1), form encoding is decoded (`+`, `%XX`),
//! and `resource` (RFC 8707) is accepted as configured, refused when it names another
//! resource or carries a fragment, whether or not it is spelled like the configured one.

use std::sync::Arc;

use mcp_auth_server::store::{
    ClientRow, MemoryStore, RegistrationKind, Store, hash_secret, unix_now,
};
use mcp_auth_server::{AuthorizationServer, ServerConfig};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const REDIRECT: &str = "http://127.0.0.1:4242/callback";
const SECRET: &str = "s3cret-of-the-test-client";
// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Harness {
    issuer: String,
    http: reqwest::Client,
    store: Arc<MemoryStore>,
    config: ServerConfig,
}

impl Harness {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let mut config = ServerConfig::new(&issuer);
        config.resources = vec![RESOURCE.into()];
        config.dev_auto_approve = true;
        let store = Arc::new(MemoryStore::new());
        store
            .put_client(&ClientRow {
                tenant: config.tenant.clone(),
                client_id: "client-1".into(),
                secret_hash: Some(hash_secret(SECRET)),
                metadata: json!({"redirect_uris": [REDIRECT],
                                 "grant_types": ["authorization_code", "refresh_token"],
                                 "token_endpoint_auth_method": "client_secret_post",
                                 "client_name": "client-1"}),
                registration_kind: RegistrationKind::Static,
                registration_token_hash: None,
                created_at: unix_now(),
                expires_at: None,
            })
            .await
            .unwrap();
        let server = AuthorizationServer::new(config.clone(), store.clone())
            .await
            .unwrap();
        let router = server.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            store,
            config,
            issuer,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// `GET /authorize` with this raw query: the status and the `Location`, if any.
    async fn authorize(&self, query: &str) -> (u16, Option<url::Url>) {
        let r = self
            .http
            .get(format!("{}/authorize?{query}", self.issuer))
            .send()
            .await
            .unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|l| url::Url::parse(l.to_str().unwrap()).unwrap());
        (r.status().as_u16(), location)
    }

    /// `POST /token` with this raw form body.
    async fn token(&self, body: String) -> (u16, Value) {
        self.post("token", body).await
    }

    /// Redeems `code` as the confidential `client-1` with the flow's verifier, and the
    /// `resource` parameter when given.
    async fn redeem(&self, code: &str, resource: Option<&str>) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", "client-1"),
            ("client_secret", SECRET),
        ];
        form.extend(resource.map(|r| ("resource", r)));
        self.token(encode(&form)).await
    }

    /// `POST /{endpoint}` with this raw form body; the answer's JSON (`null` when empty).
    async fn post(&self, endpoint: &str, body: String) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/{endpoint}", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, body)
    }
}

fn encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn authorize_query(resource: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", "client-1".into()),
        ("redirect_uri", REDIRECT.into()),
        ("code_challenge", CHALLENGE.into()),
        ("code_challenge_method", "S256".into()),
        ("state", "a state+with spaces/&=".into()),
        ("resource", resource.into()),
    ]
}

fn query_of(pairs: &[(&'static str, String)]) -> String {
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    encode(&refs)
}

fn param(u: &url::Url, name: &str) -> Option<String> {
    u.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn a_parameter_sent_twice_is_refused_at_both_endpoints() {
    let h = Harness::start().await;
    let mut pairs = authorize_query(RESOURCE);
    pairs.push(("scope", "files:read".into()));
    pairs.push(("scope", "files:write".into()));
    let (status, location) = h.authorize(&query_of(&pairs)).await;
    assert_eq!(status, 400, "{location:?}");
    // Shown on a page, not sent to the redirect URI.
    assert_eq!(location, None);

    let (status, body) = h
        .token(encode(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("code", "y"),
            ("client_id", "client-1"),
            ("client_secret", SECRET),
        ]))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("code appears more than once"),
        "{body}"
    );
}

/// `/revoke` and `/introspect` read their forms the same way: `token` twice is refused
/// before anything is revoked or described, and a single one still works.
#[tokio::test]
async fn revoke_and_introspect_refuse_a_parameter_sent_twice() {
    let h = Harness::start().await;
    let client = [("client_id", "client-1"), ("client_secret", SECRET)];
    for endpoint in ["revoke", "introspect"] {
        let mut twice = client.to_vec();
        twice.extend([("token", "a"), ("token", "b")]);
        let (status, body) = h.post(endpoint, encode(&twice)).await;
        assert_eq!(status, 400, "{endpoint}: {body}");
        assert_eq!(body["error"], "invalid_request", "{endpoint}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("token appears more than once"),
            "{endpoint}: {body}"
        );
        let mut once = client.to_vec();
        once.push(("token", "unknown-token"));
        let (status, body) = h.post(endpoint, encode(&once)).await;
        assert_eq!(status, 200, "{endpoint}: {body}");
    }
    // An unknown token is inactive (RFC 7662 §2.2).
    let mut once = client.to_vec();
    once.push(("token", "unknown-token"));
    assert_eq!(
        h.post("introspect", encode(&once)).await.1,
        json!({"active": false})
    );
}

#[tokio::test]
async fn encoded_parameters_are_decoded_and_a_flow_completes() {
    let h = Harness::start().await;
    let (status, location) = h.authorize(&query_of(&authorize_query(RESOURCE))).await;
    assert_eq!(status, 303, "{location:?}");
    let location = location.unwrap();
    // `state` came back exactly, `+`, spaces, `/`, `&` and `=` included.
    assert_eq!(
        param(&location, "state").as_deref(),
        Some("a state+with spaces/&=")
    );
    let code = param(&location, "code").unwrap();
    let (status, body) = h.redeem(&code, Some(RESOURCE)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());
    assert!(body["refresh_token"].is_string());
}

#[tokio::test]
async fn resources_are_checked_however_they_are_spelled() {
    let h = Harness::start().await;
    // The configured resource spelled differently (host case, default port) is the same
    // resource (RFC 8707 §2 compares canonical forms).
    let (status, location) = h
        .authorize(&query_of(&authorize_query(
            "https://MCP.example.com:443/mcp",
        )))
        .await;
    assert_eq!(status, 303);
    assert!(param(&location.unwrap(), "code").is_some());

    for (resource, why) in [
        ("https://other.example.com/mcp", "another resource"),
        ("https://mcp.example.com/mcp#frag", "a fragment"),
        ("/mcp", "a relative reference"),
    ] {
        let (status, location) = h.authorize(&query_of(&authorize_query(resource))).await;
        assert_eq!(status, 303, "{why}");
        let location = location.unwrap();
        assert_eq!(
            param(&location, "error").as_deref(),
            Some("invalid_target"),
            "{why}: {location}"
        );
        assert_eq!(param(&location, "code"), None, "{why}");
    }
}

/// A code issued before the user withdraws consent for the client (`mcp-auth consents
/// revoke`) cannot be redeemed after it: `/token` answers `invalid_grant` (RFC 6749 §5.2).
#[tokio::test]
async fn a_code_issued_before_consent_is_withdrawn_is_refused_after() {
    let h = Harness::start().await;
    let (status, location) = h.authorize(&query_of(&authorize_query(RESOURCE))).await;
    assert_eq!(status, 303, "{location:?}");
    let code = param(&location.unwrap(), "code").unwrap();
    let (_, grants) = mcp_auth_server::handlers::withdraw_consent(
        h.store.as_ref(),
        &h.config.tenant,
        &h.config.dev_subject,
        "client-1",
        h.config.ttls.access_token,
        unix_now(),
    )
    .await
    .unwrap();
    assert_eq!(grants, 1, "the code's grant");
    let (status, body) = h.redeem(&code, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
}
