//! What one load-generator worker sends: a kept-alive HTTP/1.1 connection and the
//! protocol steps of each scenario, each checking the answer it gets.

use std::net::SocketAddr;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use mcp_auth_types::PkceVerifier;
use serde::Deserialize;
use serde_json::json;

/// The redirect URI the benchmark's clients register. Nothing listens there: the load
/// generator reads the code from the `Location` header instead of following it.
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

/// Why an operation failed. Every one counts as an error in the results.
#[derive(Debug)]
pub enum OpError {
    /// Connecting, sending or reading failed.
    Transport(String),
    /// A status outside 2xx/3xx, with the start of the body.
    Status(StatusCode, String),
    /// A 2xx/3xx answer without what the protocol step needs.
    Protocol(String),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "transport: {e}"),
            Self::Status(s, body) => write!(f, "HTTP {s}: {body}"),
            Self::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

/// The server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// The socket to connect to.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: HeaderValue,
    /// The issuer's path (empty, or `/tenant` without a trailing slash): endpoints are below it.
    pub base_path: String,
    /// The resource tokens are asked for (RFC 8707), `{origin}/mcp` as `mcp-auth serve` has it.
    pub resource: String,
}

impl Target {
    /// `{issuer path}{endpoint}`: the request target of an authorization server endpoint.
    pub fn endpoint(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.base_path)
    }

    /// The target of issuer `issuer` (`http://host:port[/path]`).
    pub fn from_issuer(issuer: &str) -> Result<Self, String> {
        let u = url::Url::parse(issuer).map_err(|e| format!("--url {issuer:?}: {e}"))?;
        if u.scheme() != "http" {
            return Err(format!(
                "--url {issuer:?}: only http:// is supported (the benchmark speaks plain HTTP/1.1)"
            ));
        }
        let addr = u
            .socket_addrs(|| Some(80))
            .map_err(|e| format!("--url {issuer:?}: {e}"))?
            .into_iter()
            .next()
            .ok_or_else(|| format!("--url {issuer:?}: the host resolves to nothing"))?;
        let host_port = match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
            None => u.host_str().unwrap_or_default().to_owned(),
        };
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&host_port).map_err(|e| e.to_string())?,
            base_path: u.path().trim_end_matches('/').to_owned(),
            resource: format!("{}/mcp", u.origin().ascii_serialization()),
        })
    }
}

/// One connection, opened on first use and opened again after a failure.
pub struct Conn {
    target: Target,
    send: Option<SendRequest<Full<Bytes>>>,
}

/// A response read in full.
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: Bytes,
}

impl Conn {
    pub fn new(target: Target) -> Self {
        Self { target, send: None }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, OpError> {
        let tcp = tokio::net::TcpStream::connect(self.target.addr)
            .await
            .map_err(|e| OpError::Transport(format!("connect {}: {e}", self.target.addr)))?;
        // The request goes out in one write; no delayed ACK interplay to measure.
        let _ = tcp.set_nodelay(true);
        let (send, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| OpError::Transport(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// Sends one request to `path` (absolute, query included) and reads the whole answer; a
    /// status outside 2xx/3xx is an error.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, OpError> {
        let result = self.send_inner(method, path, headers, body).await;
        if matches!(result, Err(OpError::Transport(_))) {
            self.send = None;
        }
        let answer = result?;
        if !(answer.status.is_success() || answer.status.is_redirection()) {
            let text = String::from_utf8_lossy(&answer.body);
            return Err(OpError::Status(
                answer.status,
                text.chars().take(200).collect(),
            ));
        }
        Ok(answer)
    }

    async fn send_inner(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, OpError> {
        let transport = |e: hyper::Error| OpError::Transport(e.to_string());
        let mut send = match self.send.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.target.host.clone());
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| OpError::Protocol(format!("building the request: {e}")))?;
        send.ready().await.map_err(transport)?;
        let resp = send.send_request(req).await.map_err(transport)?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(transport)?.to_bytes();
        self.send = Some(send);
        Ok(Answer {
            status: parts.status,
            location: parts
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
        })
    }
}

const FORM: (header::HeaderName, &str) =
    (header::CONTENT_TYPE, "application/x-www-form-urlencoded");
const JSON: (header::HeaderName, &str) = (header::CONTENT_TYPE, "application/json");
const ACCEPT_JSON: (header::HeaderName, &str) = (header::ACCEPT, "application/json");

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[derive(Deserialize)]
struct Registered {
    client_id: String,
}

/// The parts of a token response (RFC 6749 §5.1) the benchmark uses.
#[derive(Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, OpError> {
    serde_json::from_slice(body).map_err(|e| OpError::Protocol(format!("{what}: {e}")))
}

/// `POST /register` (RFC 7591 §3.1): a public client for the code grant with refresh
/// tokens, as an MCP client registers itself. Returns its `client_id`.
pub async fn register(conn: &mut Conn) -> Result<String, OpError> {
    let body = json!({
        "client_name": "mcp-auth-bench",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let a = conn
        .send(
            Method::POST,
            &conn.target().endpoint("/register"),
            &[JSON, ACCEPT_JSON],
            body.to_string().into_bytes(),
        )
        .await?;
    if a.status != StatusCode::CREATED {
        return Err(OpError::Protocol(format!(
            "/register answered {}",
            a.status
        )));
    }
    Ok(parse::<Registered>(&a.body, "registration response")?.client_id)
}

/// A complete authorization code flow with PKCE S256 (OAuth 2.1 §4.1): `GET /authorize`,
/// the code and `state` read from the redirect, then `POST /token` with the verifier.
pub async fn code_flow(conn: &mut Conn, client_id: &str) -> Result<Tokens, OpError> {
    let verifier = PkceVerifier::generate();
    let challenge = verifier.challenge();
    let state = mcp_auth_server::handlers::random_token();
    let resource = conn.target().resource.clone();
    let query = form(&[
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT_URI),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", &state),
        ("resource", &resource),
    ]);
    let path = format!("{}?{query}", conn.target().endpoint("/authorize"));
    let a = conn.send(Method::GET, &path, &[], Vec::new()).await?;
    if !a.status.is_redirection() {
        return Err(OpError::Protocol(format!(
            "/authorize answered {} instead of a redirect (is the server run with --dev-auto-approve?)",
            a.status
        )));
    }
    let location = a
        .location
        .ok_or_else(|| OpError::Protocol("/authorize redirect without Location".into()))?;
    let redirect = url::Url::parse(&location)
        .map_err(|e| OpError::Protocol(format!("Location {location:?}: {e}")))?;
    let (mut code, mut returned_state) = (None, None);
    for (k, v) in redirect.query_pairs() {
        match &*k {
            "code" => code = Some(v.into_owned()),
            "state" => returned_state = Some(v.into_owned()),
            "error" => return Err(OpError::Protocol(format!("/authorize refused: {v}"))),
            _ => {}
        }
    }
    if returned_state.as_deref() != Some(state.as_str()) {
        return Err(OpError::Protocol(
            "state did not come back unchanged".into(),
        ));
    }
    let code = code.ok_or_else(|| OpError::Protocol("redirect without a code".into()))?;
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", client_id),
        ("code_verifier", verifier.secret()),
        ("resource", &resource),
    ]);
    token_request(conn, body).await
}

/// One refresh (OAuth 2.1 §4.3): returns the tokens, the rotated refresh token among them.
pub async fn refresh(
    conn: &mut Conn,
    client_id: &str,
    refresh_token: &str,
) -> Result<Tokens, OpError> {
    let body = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client_id),
    ]);
    let tokens = token_request(conn, body).await?;
    if tokens.refresh_token.is_none() {
        return Err(OpError::Protocol(
            "the refresh answer carries no rotated refresh token".into(),
        ));
    }
    Ok(tokens)
}

async fn token_request(conn: &mut Conn, body: String) -> Result<Tokens, OpError> {
    let a = conn
        .send(
            Method::POST,
            &conn.target().endpoint("/token"),
            &[FORM, ACCEPT_JSON],
            body.into_bytes(),
        )
        .await?;
    if a.status != StatusCode::OK {
        return Err(OpError::Protocol(format!("/token answered {}", a.status)));
    }
    parse(&a.body, "token response")
}

/// A JSON-RPC `tools/call` of `echo` on `path` (an absolute path, not under the issuer's),
/// with the bearer token in every case: the two MCP scenarios send the same bytes.
pub async fn mcp_call(conn: &mut Conn, path: &str, bearer: &str) -> Result<(), OpError> {
    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}"#;
    let authorization = format!("Bearer {bearer}");
    let a = conn
        .send(
            Method::POST,
            path,
            &[
                JSON,
                (header::ACCEPT, "application/json, text/event-stream"),
                (header::AUTHORIZATION, &authorization),
            ],
            CALL.as_bytes().to_vec(),
        )
        .await?;
    #[derive(Deserialize)]
    struct Reply {
        result: Option<serde_json::Value>,
    }
    if a.status != StatusCode::OK
        || parse::<Reply>(&a.body, "tools/call answer")?
            .result
            .is_none()
    {
        return Err(OpError::Protocol(format!(
            "tools/call answered {} without a result",
            a.status
        )));
    }
    Ok(())
}
