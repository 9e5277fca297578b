//! `diagnose` against small axum servers on 127.0.0.1:0: one compliant protected resource
//! and authorization server, and variants broken on purpose. Each test names the finding the
//! breakage must produce, its status, and the verdict.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mcp_auth_client::http::{Http, HttpOptions};
use mcp_auth_doctor::{Options, Report, Severity, Status, diagnose};
use serde_json::{Value, json};

/// What is broken on purpose.
#[derive(Clone, Copy, Default)]
struct Breakage {
    wrong_issuer: bool,
    no_prm: bool,
    no_s256: bool,
    resource_mismatch: bool,
    registration_refused: bool,
    no_registration: bool,
    no_cimd: bool,
    /// No authorization at all: the MCP endpoint answers 200, no metadata anywhere.
    open: bool,
}

#[derive(Clone)]
struct App {
    base: String,
    broken: Breakage,
}

fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate, Mcp-Session-Id"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    r
}

async fn mcp(State(app): State<App>, headers: HeaderMap) -> Response {
    assert!(headers.get(header::AUTHORIZATION).is_none());
    if app.broken.open {
        return axum::Json(json!({"jsonrpc": "2.0", "id": 0, "result": {}})).into_response();
    }
    let challenge = if app.broken.no_prm {
        "Bearer realm=\"mcp\"".to_owned()
    } else {
        format!(
            "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            app.base
        )
    };
    cors(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
        )
            .into_response(),
    )
}

async fn preflight() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

async fn prm(State(app): State<App>) -> Response {
    if app.broken.no_prm || app.broken.open {
        return StatusCode::NOT_FOUND.into_response();
    }
    let resource = if app.broken.resource_mismatch {
        "https://other.example.com/mcp".to_owned()
    } else {
        format!("{}/mcp", app.base)
    };
    cors(
        axum::Json(json!({
            "resource": resource,
            "authorization_servers": [app.base],
            "scopes_supported": ["tools"],
        }))
        .into_response(),
    )
}

async fn as_metadata(State(app): State<App>) -> Response {
    let b = &app.base;
    let mut m = json!({
        "issuer": if app.broken.wrong_issuer { "https://evil.example.com".to_owned() } else { b.clone() },
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "registration_endpoint": format!("{b}/register"),
        "revocation_endpoint": format!("{b}/revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": if app.broken.no_s256 { json!(["plain"]) } else { json!(["S256"]) },
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": !app.broken.no_cimd,
    });
    if app.broken.no_registration {
        m.as_object_mut().map(|o| o.remove("registration_endpoint"));
    }
    cors(axum::Json(m).into_response())
}

async fn register(State(app): State<App>, axum::Json(req): axum::Json<Value>) -> Response {
    if app.broken.registration_refused {
        return cors(
            (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"error": "access_denied"})),
            )
                .into_response(),
        );
    }
    let mut out = req.clone();
    out["client_id"] = json!("doctor-test-client");
    out["client_secret"] = json!("must-not-appear-in-the-report");
    cors((StatusCode::CREATED, axum::Json(out)).into_response())
}

/// Starts the server; returns its MCP URL.
async fn start(broken: Breakage) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let app = App {
        base: base.clone(),
        broken,
    };
    let router = Router::new()
        .route("/mcp", post(mcp).options(preflight))
        .route("/.well-known/oauth-protected-resource/mcp", get(prm))
        .route("/.well-known/oauth-authorization-server", get(as_metadata))
        .route("/register", post(register).options(preflight))
        .route("/token", post(preflight).options(preflight))
        .with_state(app);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("{base}/mcp")
}

async fn doctor(broken: Breakage) -> Report {
    let url = start(broken).await;
    let opts = Options::new(Http::new(HttpOptions::default()).unwrap());
    diagnose(&url, &opts).await.unwrap()
}

#[track_caller]
fn assert_finding(r: &Report, id: &str, status: Status) -> String {
    let f = r
        .finding(id)
        .unwrap_or_else(|| panic!("no finding {id}:\n{}", r.render()));
    assert_eq!(f.status, status, "{id}:\n{}", r.render());
    f.summary.clone()
}

#[track_caller]
fn assert_only_must_violation(r: &Report, id: &str) {
    let violations: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.is_must_violation())
        .map(|f| f.id)
        .collect();
    assert_eq!(violations, [id], "{}", r.render());
    assert!(!r.verdict.ok);
    assert_eq!(r.verdict.must_violations, 1);
}

#[tokio::test]
async fn compliant_server_passes_every_check() {
    let r = doctor(Breakage::default()).await;
    let not_passed: Vec<_> = r
        .findings
        .iter()
        .filter(|f| matches!(f.status, Status::Fail | Status::Warn))
        .map(|f| (f.id, f.status))
        .collect();
    assert_eq!(not_passed, [], "{}", r.render());
    assert!(r.verdict.ok);
    assert_eq!((r.verdict.must_violations, r.verdict.warnings), (0, 0));
    for id in [
        "challenge.status",
        "challenge.resource-metadata",
        "prm.found",
        "prm.resource-match",
        "as.found",
        "as.issuer-match",
        "as.pkce-s256",
        "registration.dcr",
        "cors.mcp-expose",
    ] {
        assert_finding(&r, id, Status::Pass);
    }
    let text = r.render();
    assert!(
        text.contains("Verdict: 0 MUST violations, 0 warnings"),
        "{text}"
    );
    // The registration answer's client secret is redacted, in both renderings.
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("must-not-appear-in-the-report"), "{json}");
    assert!(!text.contains("must-not-appear-in-the-report"), "{text}");
}

#[tokio::test]
async fn wrong_issuer_is_named() {
    let r = doctor(Breakage {
        wrong_issuer: true,
        ..Default::default()
    })
    .await;
    let s = assert_finding(&r, "as.issuer-match", Status::Fail);
    assert!(s.contains("https://evil.example.com"), "{s}");
    assert_only_must_violation(&r, "as.issuer-match");
}

#[tokio::test]
async fn missing_prm_is_named_and_the_legacy_fallback_is_a_warning() {
    let r = doctor(Breakage {
        no_prm: true,
        ..Default::default()
    })
    .await;
    assert_finding(&r, "challenge.resource-metadata", Status::Warn);
    let s = assert_finding(&r, "prm.found", Status::Fail);
    assert!(
        s.contains("/.well-known/oauth-protected-resource/mcp"),
        "{s}"
    );
    assert!(s.ends_with("/.well-known/oauth-protected-resource"), "{s}");
    assert_finding(&r, "as.legacy-fallback", Status::Warn);
    assert_finding(&r, "as.issuer-match", Status::Skip);
    assert_only_must_violation(&r, "prm.found");
}

#[tokio::test]
async fn missing_s256_is_named() {
    let r = doctor(Breakage {
        no_s256: true,
        ..Default::default()
    })
    .await;
    let s = assert_finding(&r, "as.pkce-s256", Status::Fail);
    assert!(s.contains("plain"), "{s}");
    assert_only_must_violation(&r, "as.pkce-s256");
}

#[tokio::test]
async fn resource_mismatch_is_named() {
    let r = doctor(Breakage {
        resource_mismatch: true,
        ..Default::default()
    })
    .await;
    let s = assert_finding(&r, "prm.resource-match", Status::Fail);
    assert!(s.contains("https://other.example.com/mcp"), "{s}");
    assert_only_must_violation(&r, "prm.resource-match");
}

#[tokio::test]
async fn refused_registration_with_no_alternative_is_a_must_violation() {
    let r = doctor(Breakage {
        registration_refused: true,
        no_cimd: true,
        ..Default::default()
    })
    .await;
    let s = assert_finding(&r, "registration.dcr", Status::Fail);
    assert!(
        s.starts_with("registration refused: HTTP 403, error access_denied"),
        "{s}"
    );
    assert_only_must_violation(&r, "registration.dcr");
}

#[tokio::test]
async fn refused_registration_with_cimd_available_is_a_should_failure() {
    let r = doctor(Breakage {
        registration_refused: true,
        ..Default::default()
    })
    .await;
    assert_finding(&r, "registration.dcr", Status::Fail);
    let f = r.finding("registration.dcr").unwrap();
    assert_eq!(f.severity, Severity::Should);
    assert!(r.verdict.ok, "{}", r.render());
    assert_eq!(r.verdict.warnings, 1);
}

#[tokio::test]
async fn no_registration_path_at_all_is_named() {
    let r = doctor(Breakage {
        no_registration: true,
        no_cimd: true,
        ..Default::default()
    })
    .await;
    let s = assert_finding(&r, "registration.options", Status::Warn);
    assert!(s.contains("only clients registered out of band"), "{s}");
    assert!(r.finding("registration.dcr").is_none());
    assert!(r.verdict.ok);
}

#[tokio::test]
async fn open_server_is_not_a_violation() {
    let r = doctor(Breakage {
        open: true,
        ..Default::default()
    })
    .await;
    assert_finding(&r, "challenge.status", Status::Warn);
    assert_finding(&r, "prm.found", Status::Skip);
    assert!(r.verdict.ok, "{}", r.render());
}

#[tokio::test]
async fn unreachable_server_is_a_must_violation() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = Options::new(Http::new(HttpOptions::default()).unwrap());
    let r = diagnose(&format!("http://127.0.0.1:{port}/mcp"), &opts)
        .await
        .unwrap();
    assert_finding(&r, "challenge.status", Status::Fail);
    assert_eq!(r.findings.len(), 1);
    assert!(!r.verdict.ok);
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused_before_any_request() {
    let opts = Options::new(Http::new(HttpOptions::default()).unwrap());
    assert!(diagnose("http://mcp.example.com/mcp", &opts).await.is_err());
}
