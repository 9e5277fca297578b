//! GitHub (github.com or GitHub Enterprise Server) as an OAuth 2.0 identity provider: the
//! web application flow with PKCE, the user API, expiring user tokens with refresh (GitHub
//! Apps), and "delete an app authorization" for revocation.
//!
//! GitHub is not OpenID Connect for users: there is no `id_token`, and who the user is comes
//! from `GET /user` with their token. The subject is the numeric user id, which never
//! changes, unlike the login (users can rename themselves, and a freed login can be taken
//! by someone else).

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mcp_auth_types::SecretString;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::{Map, Value, json};
use url::Url;

use crate::http::{self, check_endpoint, expect_success, token_reply};
use crate::{
    AuthorizationRequest, Completion, DEFAULT_TIMEOUT, Upstream, UpstreamError, UpstreamLogin,
    UpstreamTokens, check_id,
};

/// The REST API version the requests are written against.
const API_VERSION: &str = "2022-11-28";

/// The configuration of a GitHub provider. Start from [`GithubConfig::new`] (github.com) or
/// [`GithubConfig::enterprise`].
///
/// `Debug` redacts the client secret.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// Provider id, the account prefix (`"github"` by default).
    pub id: String,
    /// Label for the login button (`"GitHub"`).
    pub label: String,
    /// The OAuth app's (or GitHub App's) client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretString,
    /// Where the browser logs in and the token endpoint lives: `https://github.com`, or the
    /// Enterprise Server host (`https://ghe.example.com`).
    pub web_base: Url,
    /// The REST API: `https://api.github.com`, or `https://ghe.example.com/api/v3`.
    pub api_base: Url,
    /// Scopes to request (OAuth apps; GitHub Apps ignore them). Default `read:user`.
    pub scopes: Vec<String>,
    /// Allow plain `http` base URLs: for tests against a loopback fake. Default `false`.
    pub allow_http: bool,
    /// Deadline of each request to GitHub.
    pub timeout: Duration,
}

impl GithubConfig {
    /// github.com with the defaults: id `github`, label `GitHub`, scope `read:user`.
    pub fn new(client_id: impl Into<String>, client_secret: SecretString) -> Self {
        Self {
            id: "github".to_owned(),
            label: "GitHub".to_owned(),
            client_id: client_id.into(),
            client_secret,
            web_base: constant_url("https://github.com"),
            api_base: constant_url("https://api.github.com"),
            scopes: vec!["read:user".to_owned()],
            allow_http: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// GitHub Enterprise Server at `web_base` (`https://ghe.example.com`), whose REST API is
    /// under `/api/v3`.
    pub fn enterprise(
        web_base: Url,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Result<Self, UpstreamError> {
        let api_base = join(&web_base, &["api", "v3"])?;
        Ok(Self {
            web_base,
            api_base,
            ..Self::new(client_id, client_secret)
        })
    }
}

/// A URL from a constant known to parse.
fn constant_url(s: &'static str) -> Url {
    Url::parse(s).unwrap_or_else(|e| unreachable!("the constant URL {s} does not parse: {e}"))
}

/// `base` with `segments` appended to its path (each percent-encoded), query dropped.
fn join(base: &Url, segments: &[&str]) -> Result<Url, UpstreamError> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| UpstreamError::config(format!("{base} cannot be a base URL")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// GitHub as an upstream identity provider.
pub struct GithubProvider {
    config: GithubConfig,
    http: reqwest::Client,
    authorize_url: Url,
    token_url: Url,
    user_url: Url,
    grant_url: Url,
}

impl std::fmt::Debug for GithubProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubProvider")
            .field("id", &self.config.id)
            .field("web_base", &self.config.web_base.as_str())
            .field("api_base", &self.config.api_base.as_str())
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl GithubProvider {
    /// Checks `config` and makes the provider. `http` should not follow redirects (see
    /// [`crate::http_client`]).
    pub fn new(config: GithubConfig, http: reqwest::Client) -> Result<Self, UpstreamError> {
        check_id(&config.id)?;
        if config.label.trim().is_empty() {
            return Err(UpstreamError::config("the label is empty"));
        }
        if config.client_id.is_empty() || config.client_secret.secret().is_empty() {
            return Err(UpstreamError::config(
                "GitHub needs a client id and a client secret",
            ));
        }
        if config.timeout.is_zero() {
            return Err(UpstreamError::config("the timeout is zero"));
        }
        check_endpoint(config.web_base.as_str(), "web_base", config.allow_http)
            .map_err(UpstreamError::Config)?;
        check_endpoint(config.api_base.as_str(), "api_base", config.allow_http)
            .map_err(UpstreamError::Config)?;
        Ok(Self {
            authorize_url: join(&config.web_base, &["login", "oauth", "authorize"])?,
            token_url: join(&config.web_base, &["login", "oauth", "access_token"])?,
            user_url: join(&config.api_base, &["user"])?,
            grant_url: join(
                &config.api_base,
                &["applications", &config.client_id, "grant"],
            )?,
            config,
            http,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GithubConfig {
        &self.config
    }

    /// A request to the REST API with the headers GitHub asks for.
    fn api(&self, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
        self.http
            .request(method, url.clone())
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
    }

    async fn user(&self, access_token: &str) -> Result<Map<String, Value>, UpstreamError> {
        let reply = http::send(
            "user API",
            self.api(reqwest::Method::GET, &self.user_url)
                .bearer_auth(access_token),
            self.config.timeout,
        )
        .await?;
        expect_success("user API", &reply, false)?;
        reply.json_object("the user API response")
    }

    async fn token(
        &self,
        form: &[(&str, &str)],
        previous_refresh: Option<&str>,
    ) -> Result<UpstreamTokens, UpstreamError> {
        let mut body = vec![
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.secret()),
        ];
        body.extend_from_slice(form);
        let reply = http::send(
            "token endpoint",
            self.http
                .post(self.token_url.clone())
                .header(ACCEPT, "application/json")
                .form(&body),
            self.config.timeout,
        )
        .await?;
        // GitHub answers form-encoded bodies unless it honours the Accept header, and
        // errors with HTTP 200 and an `error` member: `token_reply` handles both.
        Ok(token_reply(&reply, true, previous_refresh)?.tokens)
    }
}

/// The subject: GitHub's numeric user id as a decimal string.
fn subject(user: &Map<String, Value>) -> Result<String, UpstreamError> {
    match user.get("id") {
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|id| *id > 0)
            .map(|id| id.to_string())
            .ok_or_else(|| UpstreamError::invalid("the GitHub user id is not a positive integer")),
        _ => Err(UpstreamError::invalid("the GitHub user has no numeric id")),
    }
}

/// The profile: `login`, `name`, `email` (when public), `picture` (the avatar).
fn profile_from(user: &Map<String, Value>) -> Value {
    let mut p = Map::new();
    for (ours, theirs) in [
        ("login", "login"),
        ("name", "name"),
        ("email", "email"),
        ("picture", "avatar_url"),
    ] {
        if let Some(v) = user.get(theirs).filter(|v| v.is_string()) {
            p.insert(ours.to_owned(), v.clone());
        }
    }
    Value::Object(p)
}

#[async_trait]
impl Upstream for GithubProvider {
    fn id(&self) -> &str {
        &self.config.id
    }

    fn label(&self) -> &str {
        &self.config.label
    }

    async fn authorization_url(
        &self,
        req: &AuthorizationRequest<'_>,
    ) -> Result<Url, UpstreamError> {
        let mut url = self.authorize_url.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", req.redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", req.state)
            .append_pair("code_challenge", req.code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url)
    }

    async fn complete(&self, req: &Completion<'_>) -> Result<UpstreamLogin, UpstreamError> {
        let tokens = self
            .token(
                &[
                    ("code", req.code),
                    ("redirect_uri", req.redirect_uri),
                    ("code_verifier", req.code_verifier),
                ],
                None,
            )
            .await?;
        let user = self.user(tokens.access_token.secret()).await?;
        Ok(UpstreamLogin {
            subject: subject(&user)?,
            profile: profile_from(&user),
            tokens,
        })
    }

    async fn refresh(&self, refresh_token: &str) -> Result<UpstreamTokens, UpstreamError> {
        // Only expiring user tokens (GitHub Apps) come with refresh tokens.
        self.token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            Some(refresh_token),
        )
        .await
    }

    async fn revoke(&self, tokens: &UpstreamTokens) -> Result<bool, UpstreamError> {
        // "Delete an app authorization": revokes the grant and every token of it. Basic
        // auth with the client id and secret, as GitHub documents it (not form-encoded).
        let basic = STANDARD.encode(format!(
            "{}:{}",
            self.config.client_id,
            self.config.client_secret.secret()
        ));
        let reply = http::send(
            "grant API",
            self.api(reqwest::Method::DELETE, &self.grant_url)
                .header(AUTHORIZATION, format!("Basic {basic}"))
                .json(&json!({"access_token": tokens.access_token.secret()})),
            self.config.timeout,
        )
        .await?;
        // 404: GitHub knows no such token any more, so there is nothing left to revoke.
        if reply.status == reqwest::StatusCode::NOT_FOUND {
            tracing::debug!(provider = %self.config.id, "grant already gone upstream");
            return Ok(true);
        }
        expect_success("grant API", &reply, false)?;
        Ok(true)
    }

    async fn profile(&self, access_token: &str) -> Result<Value, UpstreamError> {
        self.user(access_token).await.map(Value::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_for_github_com_and_enterprise() {
        let http = reqwest::Client::new();
        let gh = GithubProvider::new(
            GithubConfig::new("cid", SecretString::new("s")),
            http.clone(),
        )
        .unwrap();
        assert_eq!(
            gh.authorize_url.as_str(),
            "https://github.com/login/oauth/authorize"
        );
        assert_eq!(
            gh.token_url.as_str(),
            "https://github.com/login/oauth/access_token"
        );
        assert_eq!(gh.user_url.as_str(), "https://api.github.com/user");
        assert_eq!(
            gh.grant_url.as_str(),
            "https://api.github.com/applications/cid/grant"
        );
        let ghe = GithubConfig::enterprise(
            Url::parse("https://ghe.example.com").unwrap(),
            "Iv1.a b",
            SecretString::new("s"),
        )
        .unwrap();
        assert_eq!(ghe.api_base.as_str(), "https://ghe.example.com/api/v3");
        let ghe = GithubProvider::new(ghe, http).unwrap();
        assert_eq!(
            ghe.authorize_url.as_str(),
            "https://ghe.example.com/login/oauth/authorize"
        );
        assert_eq!(ghe.user_url.as_str(), "https://ghe.example.com/api/v3/user");
        assert_eq!(
            ghe.grant_url.as_str(),
            "https://ghe.example.com/api/v3/applications/Iv1.a%20b/grant"
        );
    }

    #[test]
    fn config_checks() {
        let http = reqwest::Client::new();
        let mut c = GithubConfig::new("cid", SecretString::new("s"));
        c.web_base = Url::parse("http://127.0.0.1:1").unwrap();
        assert!(GithubProvider::new(c.clone(), http.clone()).is_err());
        c.allow_http = true;
        assert!(GithubProvider::new(c.clone(), http.clone()).is_ok());
        c.client_secret = SecretString::new("");
        assert!(GithubProvider::new(c, http).is_err());
        let d = format!(
            "{:?}",
            GithubConfig::new("cid", SecretString::new("gh-secret-value"))
        );
        assert!(!d.contains("gh-secret-value"), "{d}");
    }

    #[test]
    fn subject_is_the_numeric_id() {
        let user = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            subject(&user(json!({"id": 583231, "login": "octocat"}))).unwrap(),
            "583231"
        );
        assert!(subject(&user(json!({"login": "octocat"}))).is_err());
        assert!(subject(&user(json!({"id": "583231"}))).is_err());
        assert!(subject(&user(json!({"id": -1}))).is_err());
        assert!(subject(&user(json!({"id": 0}))).is_err());
    }
}
