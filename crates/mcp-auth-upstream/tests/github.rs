//! `GithubProvider` against a fake GitHub on 127.0.0.1:0, laid out like GitHub Enterprise
//! Server (web at `/`, REST API at `/api/v3`): a token endpoint that answers JSON or
//! form-encoded bodies and errors with HTTP 200, the user API with GitHub's real response
//! shape, expiring user tokens with refresh, and "delete an app authorization".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mcp_auth_types::{PkceChallenge, PkceVerifier, SecretString};
use mcp_auth_upstream::{
    AuthorizationRequest, Completion, GithubConfig, GithubProvider, Upstream, UpstreamConfig,
    UpstreamError, UpstreamLogin, http_client,
};
use serde_json::{Value, json};
use url::Url;

const CLIENT_ID: &str = "Iv1.8a61f9b3a7aba766";
const CLIENT_SECRET: &str = "1234567890abcdef1234567890abcdef12345678";
const REDIRECT: &str = "https://as.example.com/upstream/github/callback";

struct Grant {
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct Inner {
    /// Answer form-encoded bodies whatever the Accept header says (GitHub's default).
    form_bodies: bool,
    /// Issue expiring user tokens with refresh tokens (GitHub Apps).
    expiring: bool,
    codes: HashMap<String, Grant>,
    access: HashMap<String, u64>,
    refresh: HashMap<String, u64>,
    revoked: Vec<String>,
    token_accept: Vec<String>,
    counter: u64,
}

#[derive(Clone)]
struct Fake {
    inner: Arc<Mutex<Inner>>,
    base: String,
}

impl Fake {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = Self {
            inner: Arc::default(),
            base,
        };
        let app = Router::new()
            .route("/login/oauth/access_token", post(token))
            .route("/api/v3/user", get(user))
            .route("/api/v3/applications/{client_id}/grant", delete(grant))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap())
    }

    fn config(&self) -> GithubConfig {
        let mut c = GithubConfig::enterprise(
            Url::parse(&self.base).unwrap(),
            CLIENT_ID,
            SecretString::new(CLIENT_SECRET),
        )
        .unwrap();
        c.allow_http = true;
        c
    }

    fn provider(&self) -> GithubProvider {
        GithubProvider::new(self.config(), http_client().unwrap()).unwrap()
    }

    /// The user approves at `/login/oauth/authorize`; GitHub redirects back with a code.
    fn authorize(&self, url: &Url) -> String {
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(url.path(), "/login/oauth/authorize");
        assert_eq!(q["client_id"], CLIENT_ID);
        assert_eq!(q["code_challenge_method"], "S256");
        self.with(|s| {
            s.counter += 1;
            let code = format!("{:020x}", s.counter);
            s.codes.insert(
                code.clone(),
                Grant {
                    challenge: q["code_challenge"].clone(),
                    redirect_uri: q["redirect_uri"].clone(),
                },
            );
            code
        })
    }
}

/// GitHub's token endpoint: HTTP 200 for errors too, JSON only when asked for.
async fn token(
    State(f): State<Fake>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut s = f.inner.lock().unwrap();
    s.token_accept.push(accept.clone());
    let as_json = accept.contains("application/json") && !s.form_bodies;
    let answer = |fields: Vec<(&str, String)>| -> Response {
        if as_json {
            let obj: serde_json::Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_owned(), json!(v)))
                .collect();
            Json(Value::Object(obj)).into_response()
        } else {
            let body = serde_urlencoded::to_string(&fields).unwrap();
            (
                [(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                body,
            )
                .into_response()
        }
    };
    let error = |code: &str, description: &str| {
        answer(vec![
            ("error", code.to_owned()),
            ("error_description", description.to_owned()),
            (
                "error_uri",
                "https://docs.github.com/apps/troubleshooting".to_owned(),
            ),
        ])
    };
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return error(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        );
    }
    let user_id = match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            let old = form.get("refresh_token").cloned().unwrap_or_default();
            match s.refresh.remove(&old) {
                Some(id) => id,
                None => {
                    return error(
                        "bad_refresh_token",
                        "The refresh token passed is incorrect or expired.",
                    );
                }
            }
        }
        _ => {
            let bad = || {
                error(
                    "bad_verification_code",
                    "The code passed is incorrect or expired.",
                )
            };
            let Some(g) = form.get("code").and_then(|c| s.codes.remove(c)) else {
                return bad();
            };
            if form.get("redirect_uri") != Some(&g.redirect_uri) {
                return error(
                    "redirect_uri_mismatch",
                    "The redirect_uri MUST match the registered callback URL for this application.",
                );
            }
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            if !PkceChallenge::from_string(g.challenge).verify(&verifier) {
                return bad();
            }
            583231
        }
    };
    s.counter += 1;
    let n = s.counter;
    let at = format!("ghu_{n:036}");
    s.access.insert(at.clone(), user_id);
    let mut fields = vec![("access_token", at)];
    if s.expiring {
        let rt = format!("ghr_{n:076}");
        s.refresh.insert(rt.clone(), user_id);
        fields.push(("expires_in", "28800".into()));
        fields.push(("refresh_token", rt));
        fields.push(("refresh_token_expires_in", "15811200".into()));
        fields.push(("scope", String::new()));
    } else {
        fields.push(("scope", "read:user".into()));
    }
    fields.push(("token_type", "bearer".into()));
    answer(fields)
}

fn github_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(
            json!({"message": message, "documentation_url": "https://docs.github.com/rest",
                    "status": status.as_u16().to_string()}),
        ),
    )
        .into_response()
}

/// `GET /user`, with the headers GitHub's REST API asks for.
async fn user(State(f): State<Fake>, headers: HeaderMap) -> Response {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if h("user-agent").is_empty() {
        return github_error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        );
    }
    assert_eq!(h("accept"), "application/vnd.github+json");
    assert_eq!(h("x-github-api-version"), "2022-11-28");
    let s = f.inner.lock().unwrap();
    let Some(id) = h("authorization")
        .strip_prefix("Bearer ")
        .and_then(|t| s.access.get(t))
    else {
        return github_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    };
    Json(json!({
        "login": "octocat",
        "id": id,
        "node_id": "MDQ6VXNlcjU4MzIzMQ==",
        "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
        "gravatar_id": "",
        "url": "https://api.github.com/users/octocat",
        "html_url": "https://github.com/octocat",
        "followers_url": "https://api.github.com/users/octocat/followers",
        "repos_url": "https://api.github.com/users/octocat/repos",
        "type": "User",
        "user_view_type": "public",
        "site_admin": false,
        "name": "The Octocat",
        "company": "@github",
        "blog": "https://github.blog",
        "location": "San Francisco",
        "email": "octocat@github.com",
        "hireable": null,
        "bio": null,
        "twitter_username": null,
        "public_repos": 8,
        "public_gists": 8,
        "followers": 20000,
        "following": 9,
        "created_at": "2011-01-25T18:44:36Z",
        "updated_at": "2025-01-22T12:19:01Z"
    }))
    .into_response()
}

/// `DELETE /applications/{client_id}/grant` with Basic client authentication.
async fn grant(
    State(f): State<Fake>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if client_id != CLIENT_ID || auth != Some(expected.as_str()) {
        return github_error(StatusCode::UNAUTHORIZED, "Requires authentication");
    }
    let token = body["access_token"].as_str().unwrap_or_default().to_owned();
    let mut s = f.inner.lock().unwrap();
    if s.access.remove(&token).is_none() {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    s.refresh.clear();
    s.revoked.push(token);
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------------------------------

struct Login {
    verifier: PkceVerifier,
    code: String,
}

async fn start_login(fake: &Fake, p: &dyn Upstream) -> Login {
    let verifier = PkceVerifier::generate();
    let url = p
        .authorization_url(&AuthorizationRequest {
            redirect_uri: REDIRECT,
            state: "state-1",
            code_challenge: verifier.challenge().as_str(),
            nonce: "unused-by-github",
        })
        .await
        .unwrap();
    let code = fake.authorize(&url);
    Login { verifier, code }
}

async fn finish(p: &dyn Upstream, l: &Login) -> Result<UpstreamLogin, UpstreamError> {
    p.complete(&Completion {
        redirect_uri: REDIRECT,
        code: &l.code,
        code_verifier: l.verifier.secret(),
        nonce: "unused-by-github",
    })
    .await
}

async fn login(fake: &Fake, p: &dyn Upstream) -> Result<UpstreamLogin, UpstreamError> {
    let l = start_login(fake, p).await;
    finish(p, &l).await
}

#[tokio::test]
async fn authorization_url_has_every_parameter() {
    let fake = Fake::start().await;
    let mut config = fake.config();
    config.scopes = vec!["read:user".into(), "user:email".into()];
    let p = GithubProvider::new(config, http_client().unwrap()).unwrap();
    assert_eq!((p.id(), p.label()), ("github", "GitHub"));
    let url = p
        .authorization_url(&AuthorizationRequest {
            redirect_uri: REDIRECT,
            state: "xyz",
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            nonce: "ignored",
        })
        .await
        .unwrap();
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        format!("{}/login/oauth/authorize", fake.base)
    );
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], REDIRECT);
    assert_eq!(q["scope"], "read:user user:email");
    assert_eq!(q["state"], "xyz");
    assert_eq!(
        q["code_challenge"],
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(!q.contains_key("nonce"));
}

#[tokio::test]
async fn login_with_json_token_response() {
    let fake = Fake::start().await;
    let p = fake.provider();
    let login = login(&fake, &p).await.unwrap();
    assert_eq!(login.subject, "583231");
    assert_eq!(
        login.profile,
        json!({"login": "octocat", "name": "The Octocat", "email": "octocat@github.com",
               "picture": "https://avatars.githubusercontent.com/u/583231?v=4"})
    );
    let t = &login.tokens;
    assert!(t.access_token.secret().starts_with("ghu_"));
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.scope.as_deref(), Some("read:user"));
    // Classic OAuth-app tokens do not expire and come without refresh token.
    assert!(t.refresh_token.is_none() && t.expires_at.is_none());
    assert_eq!(fake.with(|s| s.token_accept.clone()), ["application/json"]);
}

#[tokio::test]
async fn login_with_form_encoded_token_response() {
    let fake = Fake::start().await;
    fake.with(|s| s.form_bodies = true);
    let p = fake.provider();
    let login = login(&fake, &p).await.unwrap();
    assert_eq!(login.subject, "583231");
    assert_eq!(login.tokens.scope.as_deref(), Some("read:user"));
}

#[tokio::test]
async fn errors_sent_with_http_200_are_provider_errors() {
    for form_bodies in [false, true] {
        let fake = Fake::start().await;
        fake.with(|s| s.form_bodies = form_bodies);
        let p = fake.provider();
        let l = start_login(&fake, &p).await;
        finish(&p, &l).await.unwrap();
        // The code again: bad_verification_code, which means invalid_grant.
        let e = finish(&p, &l).await.unwrap_err();
        assert!(
            matches!(&e, UpstreamError::Provider { error, description: Some(d) }
                if error == "bad_verification_code" && d.contains("incorrect or expired")),
            "{e:?}"
        );
        assert!(e.is_invalid_grant());
        // A wrong PKCE verifier.
        let l = start_login(&fake, &p).await;
        let e = p
            .complete(&Completion {
                redirect_uri: REDIRECT,
                code: &l.code,
                code_verifier: PkceVerifier::generate().secret(),
                nonce: "",
            })
            .await
            .unwrap_err();
        assert!(e.is_invalid_grant(), "{e:?}");
        // Wrong client credentials: a provider error, not invalid_grant.
        let mut config = fake.config();
        config.client_secret = SecretString::new("wrong");
        let p = GithubProvider::new(config, http_client().unwrap()).unwrap();
        let e = login(&fake, &p).await.unwrap_err();
        assert!(
            matches!(&e, UpstreamError::Provider { error, .. } if error == "incorrect_client_credentials")
        );
        assert!(!e.is_invalid_grant());
    }
}

#[tokio::test]
async fn expiring_user_tokens_refresh() {
    let fake = Fake::start().await;
    fake.with(|s| {
        s.expiring = true;
        s.form_bodies = true;
    });
    let p = fake.provider();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = login(&fake, &p).await.unwrap().tokens;
    let rt = t.refresh_token.as_ref().unwrap().secret().to_owned();
    assert!(rt.starts_with("ghr_"));
    let exp = t.expires_at.unwrap();
    assert!((now + 28800..now + 28810).contains(&exp));
    let rexp = t.refresh_token_expires_at.unwrap();
    assert!((now + 15811200..now + 15811210).contains(&rexp));
    // An empty `scope` is kept as GitHub sent it.
    assert_eq!(t.scope.as_deref(), Some(""));

    let r = p.refresh(&rt).await.unwrap();
    let new_rt = r.refresh_token.as_ref().unwrap().secret().to_owned();
    assert_ne!(new_rt, rt);
    assert_ne!(r.access_token.secret(), t.access_token.secret());
    assert_eq!(
        p.profile(r.access_token.secret()).await.unwrap()["id"],
        583231
    );
    // GitHub rotates: the old refresh token is gone.
    let e = p.refresh(&rt).await.unwrap_err();
    assert!(matches!(&e, UpstreamError::Provider { error, .. } if error == "bad_refresh_token"));
    assert!(e.is_invalid_grant());
}

#[tokio::test]
async fn profile_is_the_user_api_response() {
    let fake = Fake::start().await;
    let p = fake.provider();
    let t = login(&fake, &p).await.unwrap().tokens;
    let profile = p.profile(t.access_token.secret()).await.unwrap();
    assert_eq!(profile["login"], "octocat");
    assert_eq!(profile["node_id"], "MDQ6VXNlcjU4MzIzMQ==");
    assert_eq!(profile["public_repos"], 8);
    let e = p.profile("ghu_unknown").await.unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
}

#[tokio::test]
async fn revoke_deletes_the_grant() {
    let fake = Fake::start().await;
    let p = fake.provider();
    let t = login(&fake, &p).await.unwrap().tokens;
    assert!(p.revoke(&t).await.unwrap());
    assert_eq!(
        fake.with(|s| s.revoked.clone()),
        [t.access_token.secret().to_owned()]
    );
    assert!(
        p.profile(t.access_token.secret())
            .await
            .unwrap_err()
            .is_unauthorized()
    );
    // Revoking again: GitHub answers 404, the grant is gone either way.
    assert!(p.revoke(&t).await.unwrap());
    // Wrong client credentials are an error.
    let mut config = fake.config();
    config.client_secret = SecretString::new("wrong");
    let bad = GithubProvider::new(config, http_client().unwrap()).unwrap();
    let t = login(&fake, &p).await.unwrap().tokens;
    assert!(matches!(
        bad.revoke(&t).await,
        Err(UpstreamError::Status { status: 401, .. })
    ));
}

#[tokio::test]
async fn built_through_upstream_config() {
    let fake = Fake::start().await;
    let upstream = UpstreamConfig::from(fake.config())
        .build(http_client().unwrap())
        .unwrap();
    assert_eq!(upstream.id(), "github");
    assert_eq!(
        login(&fake, upstream.as_ref()).await.unwrap().subject,
        "583231"
    );
}

#[tokio::test]
async fn nothing_secret_in_debug_or_errors() {
    let fake = Fake::start().await;
    fake.with(|s| s.expiring = true);
    let p = fake.provider();
    let ok = login(&fake, &p).await.unwrap();
    let shown = format!("{:?} {p:?} {ok:?}", fake.config());
    assert!(!shown.contains(CLIENT_SECRET), "{shown}");
    assert!(!shown.contains(ok.tokens.access_token.secret()), "{shown}");
    assert!(!shown.contains(ok.tokens.refresh_token.as_ref().unwrap().secret()));
    let l = start_login(&fake, &p).await;
    finish(&p, &l).await.unwrap();
    let e = finish(&p, &l).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains(&l.code) && !shown.contains(l.verifier.secret()),
        "{shown}"
    );
}
