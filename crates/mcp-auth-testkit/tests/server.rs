//! Drives the test server with plain HTTP, the way a client would, step by step.

use std::time::Duration;

use mcp_auth_testkit::{ClientConfig, Config, TestServer};
use mcp_auth_types::{
    AuthorizationResponse, AuthorizationServerMetadata, ClientInformation, PkceVerifier,
    ProtectedResourceMetadata, parse_www_authenticate,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:43210/callback";

thread_local! {
    // One client per test (each test has its own thread and runtime): building a client
    // loads TLS roots, which adds up over hundreds of calls.
    static HTTP: reqwest::Client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
}

/// A client that does not follow redirects, the way a test reads the authorization response.
fn http() -> reqwest::Client {
    HTTP.with(Clone::clone)
}

async fn register(server: &TestServer, body: Value) -> Response {
    http()
        .post(format!("{}/register", server.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Registers a public client and returns its id.
async fn register_public(server: &TestServer) -> String {
    let r = register(
        server,
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
               "client_name": "test", "grant_types": ["authorization_code", "refresh_token"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let info: ClientInformation = r.json().await.unwrap();
    assert!(info.client_secret.is_none());
    info.client_id.as_str().to_owned()
}

/// GETs the authorization endpoint like a browser that does not follow the redirect.
async fn authorize_raw(server: &TestServer, params: &[(&str, &str)]) -> Response {
    http()
        .get(format!("{}/authorize", server.base_url()))
        .query(params)
        .send()
        .await
        .unwrap()
}

/// The query of a `302` answer's `Location`, checking it goes to `REDIRECT`.
fn redirect_query(r: &Response) -> String {
    assert_eq!(r.status(), StatusCode::FOUND, "expected a redirect");
    let location = r.headers()["location"].to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    assert_eq!(
        format!("{}{}", url.origin().ascii_serialization(), url.path()),
        REDIRECT
    );
    url.query().unwrap_or_default().to_owned()
}

/// Runs `/authorize` for `client_id` and returns the code.
async fn get_code(
    server: &TestServer,
    client_id: &str,
    verifier: &PkceVerifier,
    extra: &[(&str, &str)],
) -> String {
    let challenge = verifier.challenge();
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", "st4te"),
    ];
    params.extend_from_slice(extra);
    let r = authorize_raw(server, &params).await;
    let response = AuthorizationResponse::from_query(&redirect_query(&r)).unwrap();
    assert_eq!(response.state(), Some("st4te"));
    assert_eq!(response.iss(), Some(server.issuer().as_str()));
    match response {
        AuthorizationResponse::Code { code, .. } => code.secret().to_owned(),
        other => panic!("expected a code, got {other:?}"),
    }
}

async fn token_request(server: &TestServer, form: &[(&str, &str)]) -> Response {
    http()
        .post(format!("{}/token", server.base_url()))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn token_ok(server: &TestServer, form: &[(&str, &str)]) -> Value {
    let r = token_request(server, form).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

async fn token_err(server: &TestServer, form: &[(&str, &str)], status: u16, error: &str) {
    let r = token_request(server, form).await;
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
}

/// Full authorization code flow for a fresh public client: (client_id, token response).
async fn login(server: &TestServer, extra: &[(&str, &str)]) -> (String, Value) {
    let client_id = register_public(server).await;
    let verifier = PkceVerifier::generate();
    let code = get_code(server, &client_id, &verifier, extra).await;
    let mcp = server.mcp_url();
    let tokens = token_ok(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
            ("client_id", &client_id),
            ("resource", &mcp),
        ],
    )
    .await;
    (client_id, tokens)
}

async fn mcp_post(
    server: &TestServer,
    token: Option<&str>,
    session: Option<&str>,
    body: Value,
) -> Response {
    let mut rb = http()
        .post(server.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(s) = session {
        rb = rb.header("mcp-session-id", s);
    }
    rb.send().await.unwrap()
}

async fn initialize(server: &TestServer, token: &str) -> String {
    let r = mcp_post(
        server,
        Some(token),
        None,
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},
            "clientInfo":{"name":"t","version":"0"}}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"]["protocolVersion"], "2025-11-25");
    assert!(body["result"]["capabilities"]["tools"].is_object());
    let r = mcp_post(
        server,
        Some(token),
        Some(&session),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    session
}

async fn call_tool(
    server: &TestServer,
    token: &str,
    session: &str,
    name: &str,
    args: Value,
) -> Response {
    mcp_post(
        server,
        Some(token),
        Some(session),
        json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":name,"arguments":args}}),
    )
    .await
}

fn challenge_of(r: &Response) -> mcp_auth_types::Challenge {
    let h = r.headers()["www-authenticate"].to_str().unwrap();
    let mut all = parse_www_authenticate(h).unwrap();
    assert_eq!(all.len(), 1);
    all.remove(0)
}

// ---------------------------------------------------------------------------------------------
// The whole flow

#[tokio::test]
async fn full_code_flow_then_mcp_tools() {
    let server = TestServer::start(Config::default()).await;

    // 1. Unauthenticated request → 401 pointing at the protected resource metadata.
    let r = mcp_post(
        &server,
        None,
        None,
        json!({"jsonrpc":"2.0","id":1,"method":"ping"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let ch = challenge_of(&r);
    assert!(ch.is_scheme("Bearer"));
    assert_eq!(ch.error(), None);
    assert_eq!(
        ch.resource_metadata(),
        Some(server.resource_metadata_url().as_str())
    );
    assert_eq!(ch.scope().unwrap().to_string(), "mcp:read");

    // 2. Protected resource metadata → issuer.
    let prm: ProtectedResourceMetadata = http()
        .get(server.resource_metadata_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm.resource, server.mcp_url());
    assert_eq!(prm.authorization_servers, vec![server.issuer()]);
    let mcp_resource = mcp_auth_types::ResourceUrl::canonicalize(&server.mcp_url()).unwrap();
    prm.check_resource(&mcp_resource).unwrap();

    // 3. Authorization server metadata.
    let asm: AuthorizationServerMetadata = http()
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            server.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    asm.validate(&server.issuer(), true, false).unwrap();
    assert!(asm.supports_s256());
    assert!(asm.sends_iss());
    assert!(asm.supports_grant("refresh_token"));
    assert_eq!(
        asm.registration_endpoint,
        Some(format!("{}/register", server.base_url()))
    );

    // 4–6. Register, authorize, exchange.
    let (client_id, tokens) = login(&server, &[("scope", "mcp:read mcp:write")]).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "mcp:read mcp:write");
    let access = tokens["access_token"].as_str().unwrap();
    assert!(tokens["refresh_token"].is_string());

    // 7. MCP with the token.
    let session = initialize(&server, access).await;
    let r = mcp_post(
        &server,
        Some(access),
        Some(&session),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "whoami", "admin-op"]);

    let r = call_tool(&server, access, &session, "echo", json!({"text": "hello"})).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], 7);
    assert_eq!(
        body["result"],
        json!({"content":[{"type":"text","text":"hello"}],"isError":false})
    );

    let r = call_tool(&server, access, &session, "whoami", json!({})).await;
    let body: Value = r.json().await.unwrap();
    let who: Value =
        serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(who["client_id"], client_id.as_str());
    assert_eq!(who["scope"], "mcp:read mcp:write");
    assert_eq!(who["resource"], server.mcp_url().as_str());

    // 8. End the session.
    let r = http()
        .delete(server.mcp_url())
        .bearer_auth(access)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = call_tool(&server, access, &session, "echo", json!({"text": "x"})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let stats = server.stats();
    assert_eq!(stats.registrations, 1);
    assert_eq!(stats.authorizations, 1);
    assert_eq!(stats.code_exchanges, 1);
    assert_eq!(stats.unauthorized_responses, 1);
    assert_eq!(stats.active_sessions, 0);
    assert_eq!(
        stats.mcp_methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call",
            "tools/call"
        ]
    );
    let exchange = &stats.token_requests_for("authorization_code")[0];
    assert_eq!(exchange.param("code"), Some("[redacted]"));
    assert_eq!(exchange.param("code_verifier"), Some("[redacted]"));
    assert_eq!(exchange.param("resource"), Some(server.mcp_url().as_str()));
    assert_eq!(exchange.auth_method, "none");
    assert_eq!(exchange.client_id.as_deref(), Some(client_id.as_str()));
    assert_eq!(stats.authorization_requests.len(), 1);
    assert!(
        stats
            .discovery_requests()
            .contains(&("/.well-known/oauth-authorization-server".to_owned(), 200))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn code_is_single_use_and_reuse_revokes_its_tokens() {
    let server = TestServer::start(Config::default()).await;
    let client_id = register_public(&server).await;
    let verifier = PkceVerifier::generate();
    let code = get_code(&server, &client_id, &verifier, &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.secret()),
        ("client_id", client_id.as_str()),
    ];
    let tokens = token_ok(&server, &form).await;
    token_err(&server, &form, 400, "invalid_grant").await;
    // The tokens of the first exchange are gone too.
    let access = tokens["access_token"].as_str().unwrap();
    let r = mcp_post(
        &server,
        Some(access),
        None,
        json!({"jsonrpc":"2.0","id":1,"method":"initialize"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    token_err(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", client_id.as_str()),
        ],
        400,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn code_exchange_checks_pkce_redirect_uri_and_resource() {
    let server = TestServer::start(Config::default()).await;
    let client_id = register_public(&server).await;
    let verifier = PkceVerifier::generate();
    let mcp = server.mcp_url();
    let code = get_code(&server, &client_id, &verifier, &[("resource", &mcp)]).await;
    let other = PkceVerifier::generate();
    let try_with = |v: String, redirect: &str, resource: String| {
        vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), code.clone()),
            ("redirect_uri".to_owned(), redirect.to_owned()),
            ("code_verifier".to_owned(), v),
            ("client_id".to_owned(), client_id.clone()),
            ("resource".to_owned(), resource),
        ]
    };
    let send = |form: Vec<(String, String)>| {
        let server = &server;
        async move {
            let pairs: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            token_request(server, &pairs).await
        }
    };
    let err = |r: Response| async move {
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        (status, v["error"].as_str().unwrap().to_owned())
    };
    let r = send(try_with(other.secret().to_owned(), REDIRECT, mcp.clone())).await;
    assert_eq!(err(r).await, (400, "invalid_grant".to_owned()));
    let r = send(try_with(
        verifier.secret().to_owned(),
        "http://127.0.0.1:43210/other",
        mcp.clone(),
    ))
    .await;
    assert_eq!(err(r).await, (400, "invalid_grant".to_owned()));
    let r = send(try_with(
        verifier.secret().to_owned(),
        REDIRECT,
        "https://evil.example/mcp".into(),
    ))
    .await;
    assert_eq!(err(r).await, (400, "invalid_target".to_owned()));
    // Failed attempts do not spend the code.
    let r = send(try_with(
        verifier.secret().to_owned(),
        REDIRECT,
        mcp.clone(),
    ))
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn expired_code_is_refused() {
    let server = TestServer::start(Config::default()).await;
    let client_id = register_public(&server).await;
    let verifier = PkceVerifier::generate();
    let code = get_code(&server, &client_id, &verifier, &[]).await;
    server.advance_clock(Duration::from_secs(3600));
    token_err(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
            ("client_id", &client_id),
        ],
        400,
        "invalid_grant",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Refresh

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let server = TestServer::start(Config::default()).await;
    let (client_id, tokens) = login(&server, &[]).await;
    let rt1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |rt: String| {
        let client_id = client_id.clone();
        let server = &server;
        async move {
            token_request(
                server,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", &client_id),
                ],
            )
            .await
        }
    };

    let r = refresh(rt1.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let second: Value = r.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    assert_eq!(second["scope"], "mcp:read mcp:write");
    let at2 = second["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        mcp_post(
            &server,
            Some(&at2),
            None,
            json!({"jsonrpc":"2.0","id":1,"method":"initialize"})
        )
        .await
        .status(),
        StatusCode::OK
    );

    // The rotated token comes back: reuse, the whole family dies.
    let r = refresh(rt1).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    let r = refresh(rt2).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = mcp_post(
        &server,
        Some(&at2),
        None,
        json!({"jsonrpc":"2.0","id":1,"method":"initialize"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge_of(&r).error(), Some("invalid_token"));

    let stats = server.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.refresh_reuse_detected, 1);
    let refreshes = stats.token_requests_for("refresh_token");
    assert_eq!(refreshes.len(), 3);
    assert_eq!(refreshes[0].param("refresh_token"), Some("[redacted]"));
    assert_eq!(refreshes[1].error.as_deref(), Some("invalid_grant"));
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_token() {
    let server = TestServer::start(Config {
        rotate_refresh_tokens: false,
        ..Config::default()
    })
    .await;
    let (client_id, tokens) = login(&server, &[]).await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    for _ in 0..2 {
        let v = token_ok(
            &server,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", &client_id),
            ],
        )
        .await;
        assert!(v.get("refresh_token").is_none());
    }
    assert_eq!(server.stats().refreshes, 2);
}

#[tokio::test]
async fn refresh_can_narrow_but_not_widen_scope() {
    let server = TestServer::start(Config::default()).await;
    let (client_id, tokens) = login(&server, &[("scope", "mcp:read mcp:write")]).await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    token_err(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", &client_id),
            ("scope", "mcp:read admin"),
        ],
        400,
        "invalid_scope",
    )
    .await;
    let v = token_ok(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", &client_id),
            ("scope", "mcp:read"),
        ],
    )
    .await;
    assert_eq!(v["scope"], "mcp:read");
    // The new refresh token still carries the whole original grant.
    let v = token_ok(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", v["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(v["scope"], "mcp:read mcp:write");
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_trigger_reuse_detection() {
    let server = TestServer::start(Config {
        refresh_delay: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let (client_id, tokens) = login(&server, &[]).await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("client_id", &client_id),
    ];
    let (a, b) = tokio::join!(token_request(&server, &form), token_request(&server, &form));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
    assert_eq!(server.stats().refresh_reuse_detected, 1);
}

#[tokio::test]
async fn no_refresh_token_without_offline_access_when_required() {
    let server = TestServer::start(Config {
        refresh_requires_offline_access: true,
        ..Config::default()
    })
    .await;
    let (_, tokens) = login(&server, &[("scope", "mcp:read")]).await;
    assert!(tokens.get("refresh_token").is_none());
    let (_, tokens) = login(&server, &[("scope", "mcp:read offline_access")]).await;
    assert!(tokens["refresh_token"].is_string());
}

// ---------------------------------------------------------------------------------------------
// Challenges and tokens at the MCP endpoint

#[tokio::test]
async fn expired_token_gets_invalid_token_challenge() {
    let server = TestServer::start(Config::default()).await;
    let (_, tokens) = login(&server, &[]).await;
    let access = tokens["access_token"].as_str().unwrap();
    let session = initialize(&server, access).await;
    server.expire_access_tokens();
    let r = call_tool(&server, access, &session, "echo", json!({"text":"x"})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let ch = challenge_of(&r);
    assert_eq!(ch.error(), Some("invalid_token"));
    assert_eq!(
        ch.resource_metadata(),
        Some(server.resource_metadata_url().as_str())
    );

    // Advancing the clock expires tokens the same way.
    let (_, tokens) = login(&server, &[]).await;
    let access = tokens["access_token"].as_str().unwrap();
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"initialize"});
    assert_eq!(
        mcp_post(&server, Some(access), None, ping.clone())
            .await
            .status(),
        StatusCode::OK
    );
    server.advance_clock(Duration::from_secs(3601));
    assert_eq!(
        mcp_post(&server, Some(access), None, ping).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn garbage_and_unknown_tokens_are_401() {
    let server = TestServer::start(Config::default()).await;
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    let r = mcp_post(&server, Some("nope"), None, ping.clone()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge_of(&r).error(), Some("invalid_token"));
    let r = http()
        .post(server.mcp_url())
        .header("authorization", "Basic Zm9vOmJhcg==")
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge_of(&r).error(), None);
    assert_eq!(server.stats().unauthorized_responses, 2);
}

#[tokio::test]
async fn step_up_tool_answers_403_insufficient_scope() {
    let server = TestServer::start(Config::default()).await;
    let (_, tokens) = login(&server, &[("scope", "mcp:read")]).await;
    let access = tokens["access_token"].as_str().unwrap();
    let session = initialize(&server, access).await;
    let r = call_tool(&server, access, &session, "admin-op", json!({})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let ch = challenge_of(&r);
    assert_eq!(ch.error(), Some("insufficient_scope"));
    assert_eq!(ch.scope().unwrap().to_string(), "mcp:read admin");
    assert_eq!(
        ch.resource_metadata(),
        Some(server.resource_metadata_url().as_str())
    );
    assert_eq!(server.stats().insufficient_scope_responses, 1);

    // Re-authorize with the challenged scopes: the tool works.
    let (_, tokens) = login(&server, &[("scope", "mcp:read admin")]).await;
    let access = tokens["access_token"].as_str().unwrap();
    let session = initialize(&server, access).await;
    let r = call_tool(&server, access, &session, "admin-op", json!({})).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"]["isError"], false);
}

#[tokio::test]
async fn tokens_without_required_scope_get_403() {
    let server = TestServer::start(Config::default()).await;
    let token = server.issue_access_token("c", "mcp:write", None);
    let r = mcp_post(
        &server,
        Some(&token),
        None,
        json!({"jsonrpc":"2.0","id":1,"method":"initialize"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        challenge_of(&r).scope().unwrap().to_string(),
        "mcp:write mcp:read"
    );
}

#[tokio::test]
async fn audience_is_checked() {
    let server = TestServer::start(Config::default()).await;
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize"});
    let foreign = server.issue_access_token("c", "mcp:read", Some("https://other.example/mcp"));
    let r = mcp_post(&server, Some(&foreign), None, init.clone()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge_of(&r).error(), Some("invalid_token"));
    // The origin (a parent of /mcp) covers the endpoint; unbound tokens pass by default.
    let origin = server.issue_access_token("c", "mcp:read", Some(&server.base_url()));
    assert_eq!(
        mcp_post(&server, Some(&origin), None, init.clone())
            .await
            .status(),
        StatusCode::OK
    );
    let unbound = server.issue_access_token("c", "mcp:read", None);
    assert_eq!(
        mcp_post(&server, Some(&unbound), None, init.clone())
            .await
            .status(),
        StatusCode::OK
    );
    server.configure(|c| c.require_resource = true);
    assert_eq!(
        mcp_post(&server, Some(&unbound), None, init).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn revocation() {
    let server = TestServer::start(Config::default()).await;
    let (client_id, tokens) = login(&server, &[]).await;
    let revoke = |token: String| {
        let client_id = client_id.clone();
        let server = &server;
        async move {
            http()
                .post(format!("{}/revoke", server.base_url()))
                .form(&[("token", token.as_str()), ("client_id", &client_id)])
                .send()
                .await
                .unwrap()
        }
    };
    // Unknown tokens: still 200 (RFC 7009 §2.2).
    assert_eq!(revoke("unknown".into()).await.status(), StatusCode::OK);
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(revoke(rt.clone()).await.status(), StatusCode::OK);
    token_err(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", &client_id),
        ],
        400,
        "invalid_grant",
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap();
    let r = mcp_post(
        &server,
        Some(access),
        None,
        json!({"jsonrpc":"2.0","id":1,"method":"initialize"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.stats().revocations, 2);
    // Reuse of a revoked token is not counted as rotation reuse.
    assert_eq!(server.stats().refresh_reuse_detected, 0);
}

#[tokio::test]
async fn revoke_all_tokens_knob() {
    let server = TestServer::start(Config::default()).await;
    let (client_id, tokens) = login(&server, &[]).await;
    server.revoke_all_tokens();
    token_err(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ],
        400,
        "invalid_grant",
    )
    .await;
    let minted = server.issue_access_token("c", "mcp:read", None);
    server.revoke_all_tokens();
    let r = mcp_post(
        &server,
        Some(&minted),
        None,
        json!({"jsonrpc":"2.0","id":1,"method":"initialize"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------------
// MCP transport details

#[tokio::test]
async fn sessions_are_required_and_sse_is_optional() {
    let server = TestServer::start(Config {
        sse_responses: true,
        ..Config::default()
    })
    .await;
    let token = server.issue_access_token("c", "mcp:read", None);
    let r = mcp_post(
        &server,
        Some(&token),
        None,
        json!({"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"1999-01-01"}}),
    )
    .await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    let data = text
        .strip_prefix("event: message\ndata: ")
        .and_then(|s| s.strip_suffix("\n\n"))
        .unwrap();
    let body: Value = serde_json::from_str(data).unwrap();
    assert_eq!(body["id"], "a");
    assert_eq!(body["result"]["protocolVersion"], "2025-11-25");

    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"});
    assert_eq!(
        mcp_post(&server, Some(&token), None, list.clone())
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        mcp_post(&server, Some(&token), Some("bogus"), list.clone())
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        mcp_post(&server, Some(&token), Some(&session), list)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_json_rpc_is_answered_not_crashed() {
    let server = TestServer::start(Config::default()).await;
    let token = server.issue_access_token("c", "mcp:read", None);
    let session = initialize(&server, &token).await;
    let raw = |body: &'static str| {
        let token = token.clone();
        let session = session.clone();
        let server = &server;
        async move {
            http()
                .post(server.mcp_url())
                .bearer_auth(token)
                .header("mcp-session-id", session)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = raw("{not json").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32700);
    let r = raw(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32600);
    let r = raw(r#"{"jsonrpc":"2.0","id":1,"method":"nope"}"#).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32601);
    let r =
        raw(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"missing"}}"#).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32602);
    let r = raw(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#).await;
    assert_eq!(r.json::<Value>().await.unwrap()["result"]["isError"], true);
    let r = raw(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = http()
        .get(server.mcp_url())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = http()
        .post(server.mcp_url())
        .bearer_auth(&token)
        .header("origin", "https://evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

// ---------------------------------------------------------------------------------------------
// Authorization endpoint errors

#[tokio::test]
async fn authorize_errors_before_redirect_validation_are_pages() {
    let server = TestServer::start(Config::default()).await;
    let client_id = register_public(&server).await;
    let ch = PkceVerifier::generate().challenge();
    let common = [
        ("response_type", "code"),
        ("code_challenge", ch.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for bad in [
        vec![("client_id", "unknown"), ("redirect_uri", REDIRECT)],
        vec![("client_id", client_id.as_str())],
        vec![
            ("client_id", client_id.as_str()),
            ("redirect_uri", "http://127.0.0.1:1/elsewhere"),
        ],
        vec![
            ("client_id", client_id.as_str()),
            ("redirect_uri", "https://evil.example/callback"),
        ],
        vec![
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("redirect_uri", REDIRECT),
        ],
    ] {
        let mut params = common.to_vec();
        params.extend(bad);
        let r = authorize_raw(&server, &params).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get("location").is_none());
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
}

#[tokio::test]
async fn authorize_errors_after_redirect_validation_redirect() {
    let server = TestServer::start(Config::default()).await;
    let client_id = register_public(&server).await;
    let ch = PkceVerifier::generate().challenge();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("response_type", "token"),
                ("code_challenge", ch.as_str()),
                ("code_challenge_method", "S256"),
            ],
            "unsupported_response_type",
        ),
        (vec![("response_type", "code")], "invalid_request"),
        (
            vec![("response_type", "code"), ("code_challenge", ch.as_str())],
            "invalid_request",
        ),
        (
            vec![
                ("response_type", "code"),
                ("code_challenge", ch.as_str()),
                ("code_challenge_method", "plain"),
            ],
            "invalid_request",
        ),
        (
            vec![
                ("response_type", "code"),
                ("code_challenge", "short"),
                ("code_challenge_method", "S256"),
            ],
            "invalid_request",
        ),
        (
            vec![
                ("response_type", "code"),
                ("code_challenge", ch.as_str()),
                ("code_challenge_method", "S256"),
                ("scope", "root"),
            ],
            "invalid_scope",
        ),
        (
            vec![
                ("response_type", "code"),
                ("code_challenge", ch.as_str()),
                ("code_challenge_method", "S256"),
                ("resource", "not a uri"),
            ],
            "invalid_target",
        ),
    ];
    for (params, expected) in cases {
        let mut all = vec![
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("state", "s1"),
        ];
        all.extend(params);
        let r = authorize_raw(&server, &all).await;
        let resp = AuthorizationResponse::from_query(&redirect_query(&r)).unwrap();
        match resp {
            AuthorizationResponse::Error {
                error, state, iss, ..
            } => {
                assert_eq!(error.as_str(), expected);
                assert_eq!(state.as_deref(), Some("s1"));
                assert_eq!(iss, Some(server.issuer()));
            }
            other => panic!("expected {expected}, got {other:?}"),
        }
    }
    server.set_deny_authorization(true);
    let r = authorize_raw(
        &server,
        &[
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("code_challenge", ch.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    assert!(redirect_query(&r).starts_with("error=access_denied"));
    assert_eq!(server.stats().authorizations, 0);
}

#[tokio::test]
async fn loopback_redirect_uri_matches_any_port() {
    let server = TestServer::start(Config {
        clients: vec![ClientConfig::public("pre", &["http://127.0.0.1/callback"])],
        ..Config::default()
    })
    .await;
    let v = PkceVerifier::generate();
    // REDIRECT has port 43210; the registration has none.
    let code = get_code(&server, "pre", &v, &[]).await;
    token_ok(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", v.secret()),
            ("client_id", "pre"),
        ],
    )
    .await;
}

#[tokio::test]
async fn iss_knobs() {
    let server = TestServer::start(Config {
        iss_override: Some("https://attacker.example".into()),
        ..Config::default()
    })
    .await;
    let client_id = register_public(&server).await;
    let ch = PkceVerifier::generate().challenge();
    let params = [
        ("client_id", client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("code_challenge", ch.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let r = authorize_raw(&server, &params).await;
    let resp = AuthorizationResponse::from_query(&redirect_query(&r)).unwrap();
    assert_eq!(resp.iss(), Some("https://attacker.example"));
    server.configure(|c| c.send_iss = false);
    let r = authorize_raw(&server, &params).await;
    assert_eq!(
        AuthorizationResponse::from_query(&redirect_query(&r))
            .unwrap()
            .iss(),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// Registration and client authentication

#[tokio::test]
async fn registration_validates_and_issues_secrets() {
    let server = TestServer::start(Config::default()).await;
    let r = register(&server, json!({"client_name": "no redirect"})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_redirect_uri"
    );
    let r = register(&server, json!({"redirect_uris": ["javascript:alert(1)"]})).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_redirect_uri"
    );
    let r = register(
        &server,
        json!({"redirect_uris": ["http://evil.example/cb"]}),
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_redirect_uri"
    );
    let r = register(
        &server,
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}),
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_client_metadata"
    );
    let r = http()
        .post(format!("{}/register", server.base_url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Omitted method: client_secret_basic (RFC 7591 §2), with a secret.
    let r = register(
        &server,
        json!({"redirect_uris": [REDIRECT], "client_name": "c", "x_vendor": 1}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let info: ClientInformation = r.json().await.unwrap();
    assert_eq!(
        info.metadata
            .token_endpoint_auth_method
            .as_ref()
            .unwrap()
            .as_str(),
        "client_secret_basic"
    );
    assert_eq!(info.metadata.client_name.as_deref(), Some("c"));
    assert_eq!(info.metadata.extra["x_vendor"], 1);
    assert_eq!(info.client_secret_expires_at, Some(0));
    let secret = info.client_secret.unwrap();
    let id = info.client_id;

    let v = PkceVerifier::generate();
    let code = get_code(&server, id.as_str(), &v, &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", v.secret()),
    ];
    // Wrong method: secret in the body.
    let mut post_form = form.to_vec();
    post_form.push(("client_id", id.as_str()));
    post_form.push(("client_secret", secret.secret()));
    token_err(&server, &post_form, 401, "invalid_client").await;
    // Wrong secret in Basic.
    let wrong = mcp_auth_types::ClientSecret::new("wrong");
    let r = http()
        .post(format!("{}/token", server.base_url()))
        .header(
            "authorization",
            mcp_auth_types::token::basic_auth_header(&id, &wrong),
        )
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    // Right.
    let r = http()
        .post(format!("{}/token", server.base_url()))
        .header(
            "authorization",
            mcp_auth_types::token::basic_auth_header(&id, &secret),
        )
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stats = server.stats();
    assert_eq!(stats.registrations, 1);
    assert_eq!(stats.registration_requests.len(), 6);
    let last = stats.token_requests.last().unwrap();
    assert_eq!(last.auth_method, "client_secret_basic");
    assert_eq!(last.client_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        stats.token_requests[0].param("client_secret"),
        Some("[redacted]")
    );
}

#[tokio::test]
async fn client_secret_post_and_forced_method() {
    let server = TestServer::start(Config {
        registration_forced_auth_method: Some(mcp_auth_types::AuthMethod::ClientSecretPost),
        ..Config::default()
    })
    .await;
    let r = register(
        &server,
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    let info: ClientInformation = r.json().await.unwrap();
    assert_eq!(
        info.metadata
            .token_endpoint_auth_method
            .as_ref()
            .unwrap()
            .as_str(),
        "client_secret_post"
    );
    let secret = info.client_secret.unwrap();
    let v = PkceVerifier::generate();
    let code = get_code(&server, info.client_id.as_str(), &v, &[]).await;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", v.secret()),
        ("client_id", info.client_id.as_str()),
    ];
    // As a public client: refused.
    token_err(&server, &form, 401, "invalid_client").await;
    form.push(("client_secret", secret.secret()));
    token_ok(&server, &form).await;
}

#[tokio::test]
async fn client_credentials_for_confidential_clients_only() {
    let server = TestServer::start(Config {
        clients: vec![
            ClientConfig::confidential("svc", "s3cret", &[]),
            ClientConfig::public("pub", &[REDIRECT]),
        ],
        ..Config::default()
    })
    .await;
    let http = http();
    let r = http
        .post(format!("{}/token", server.base_url()))
        .basic_auth("svc", Some("s3cret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "mcp:read"),
            ("resource", &server.mcp_url()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert!(v.get("refresh_token").is_none());
    assert_eq!(v["scope"], "mcp:read");
    let session = initialize(&server, v["access_token"].as_str().unwrap()).await;
    assert!(!session.is_empty());
    // client_secret_post works for pre-registered confidential clients too.
    token_ok(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", "s3cret"),
        ],
    )
    .await;
    token_err(
        &server,
        &[("grant_type", "client_credentials"), ("client_id", "pub")],
        400,
        "unauthorized_client",
    )
    .await;
    token_err(
        &server,
        &[("grant_type", "client_credentials"), ("client_id", "svc")],
        401,
        "invalid_client",
    )
    .await;
    token_err(
        &server,
        &[("grant_type", "password"), ("client_id", "pub")],
        400,
        "unsupported_grant_type",
    )
    .await;
    token_err(&server, &[("client_id", "pub")], 400, "invalid_request").await;
    token_err(
        &server,
        &[("grant_type", "client_credentials")],
        401,
        "invalid_client",
    )
    .await;
    // Both Basic and a body secret: more than one method.
    let r = http
        .post(format!("{}/token", server.base_url()))
        .basic_auth("svc", Some("s3cret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", "s3cret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // JSON instead of a form.
    let r = http
        .post(format!("{}/token", server.base_url()))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.stats().client_credentials, 2);
}

#[tokio::test]
async fn client_id_metadata_documents() {
    let doc_url = "https://app.example/client.json";
    let server = TestServer::start(Config {
        client_id_metadata_document_supported: true,
        client_metadata_documents: vec![(
            doc_url.to_owned(),
            mcp_auth_types::ClientMetadata {
                client_id: Some(doc_url.to_owned()),
                redirect_uris: vec!["http://127.0.0.1/callback".to_owned()],
                token_endpoint_auth_method: Some(mcp_auth_types::AuthMethod::None),
                ..Default::default()
            },
        )],
        ..Config::default()
    })
    .await;
    let asm: Value = http()
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            server.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(asm["client_id_metadata_document_supported"], true);
    let v = PkceVerifier::generate();
    let code = get_code(&server, doc_url, &v, &[]).await;
    token_ok(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", v.secret()),
            ("client_id", doc_url),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Discovery variants

async fn status_of(server: &TestServer, path: &str) -> u16 {
    http()
        .get(format!("{}{path}", server.base_url()))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn metadata_locations_follow_the_config() {
    let server = TestServer::start(Config {
        issuer_path: "/tenant1".into(),
        prm_at_root: true,
        as_metadata_oidc_appended: true,
        ..Config::default()
    })
    .await;
    assert!(server.issuer().ends_with("/tenant1"));
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-authorization-server/tenant1",
        "/.well-known/openid-configuration/tenant1",
        "/tenant1/.well-known/openid-configuration",
    ] {
        assert_eq!(status_of(&server, path).await, 200, "{path}");
    }
    assert_eq!(
        status_of(&server, "/.well-known/oauth-authorization-server").await,
        404
    );
    let asm: AuthorizationServerMetadata = http()
        .get(format!(
            "{}/.well-known/openid-configuration/tenant1",
            server.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    asm.validate(&server.issuer(), true, false).unwrap();

    server.configure(|c| {
        c.prm_at_path = false;
        c.as_metadata_oauth = false;
    });
    assert_eq!(
        status_of(&server, "/.well-known/oauth-protected-resource/mcp").await,
        404
    );
    assert_eq!(
        status_of(&server, "/.well-known/oauth-authorization-server/tenant1").await,
        404
    );
    // The challenge now points at the root document.
    let r = mcp_post(&server, None, None, json!({})).await;
    assert_eq!(
        challenge_of(&r).resource_metadata(),
        Some(format!("{}/.well-known/oauth-protected-resource", server.base_url()).as_str())
    );
    let discovery = server.stats().discovery_requests();
    assert_eq!(
        discovery[0],
        ("/.well-known/oauth-protected-resource/mcp".to_owned(), 200)
    );
}

#[tokio::test]
async fn legacy_and_no_metadata_servers() {
    let server = TestServer::start(Config::legacy_2025_03_26()).await;
    assert_eq!(
        status_of(&server, "/.well-known/oauth-protected-resource/mcp").await,
        404
    );
    assert_eq!(
        status_of(&server, "/.well-known/oauth-protected-resource").await,
        404
    );
    assert_eq!(
        status_of(&server, "/.well-known/oauth-authorization-server").await,
        200
    );
    let r = mcp_post(&server, None, None, json!({})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge_of(&r).resource_metadata(), None);

    server.configure(|c| c.no_as_metadata = true);
    assert_eq!(
        status_of(&server, "/.well-known/oauth-authorization-server").await,
        404
    );
    assert_eq!(
        status_of(&server, "/.well-known/openid-configuration").await,
        404
    );
    // The default endpoints still work.
    let (_, tokens) = login(&server, &[]).await;
    assert!(tokens["access_token"].is_string());
}

#[tokio::test]
async fn malicious_metadata_knobs() {
    let server = TestServer::start(Config {
        metadata_issuer_override: Some("https://other-issuer.example".into()),
        authorization_endpoint_override: Some("javascript:alert(1)".into()),
        prm_resource_override: Some("https://evil.example/mcp".into()),
        code_challenge_methods_supported: None,
        authorization_response_iss_parameter_supported: false,
        registration_enabled: false,
        ..Config::default()
    })
    .await;
    let asm: AuthorizationServerMetadata = http()
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            server.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(asm.validate(&server.issuer(), true, false).is_err());
    assert!(
        asm.validate("https://other-issuer.example", true, false)
            .is_err()
    );
    assert!(!asm.supports_s256());
    assert!(!asm.sends_iss());
    assert_eq!(asm.registration_endpoint, None);
    let prm: ProtectedResourceMetadata = http()
        .get(server.resource_metadata_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mcp_resource = mcp_auth_types::ResourceUrl::canonicalize(&server.mcp_url()).unwrap();
    assert!(prm.check_resource(&mcp_resource).is_err());
    let r = register(&server, json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn custom_paths_and_fixed_port() {
    let server = TestServer::start(Config {
        mcp_path: "/api/v1/mcp".into(),
        ..Config::default()
    })
    .await;
    assert!(server.mcp_url().ends_with("/api/v1/mcp"));
    assert_eq!(
        server.resource_metadata_url(),
        format!(
            "{}/.well-known/oauth-protected-resource/api/v1/mcp",
            server.base_url()
        )
    );
    assert_eq!(
        status_of(&server, "/.well-known/oauth-protected-resource/api/v1/mcp").await,
        200
    );
    let port = server.local_addr().port();
    server.shutdown().await;
    // The port is free again after shutdown.
    let again = TestServer::start(Config {
        port,
        ..Config::default()
    })
    .await;
    assert_eq!(again.local_addr().port(), port);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let server = TestServer::start(Config::default()).await;
    assert_eq!(status_of(&server, "/nope").await, 404);
    assert_eq!(status_of(&server, "/token").await, 405);
    let r = http()
        .post(format!(
            "{}/.well-known/oauth-authorization-server",
            server.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = http()
        .post(format!("{}/token", server.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 2 << 20])
        .send()
        .await;
    // Either refused with 413 or the connection is cut while sending.
    if let Ok(r) = r {
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
