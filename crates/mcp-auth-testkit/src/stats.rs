//! What the server saw: counters and request logs, for assertions.

/// A snapshot of what the server has seen since it started (or since
/// [`TestServer::reset_stats`](crate::TestServer::reset_stats)).
///
/// Counters count successes unless their documentation says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Authorization codes issued by `/authorize`.
    pub authorizations: u64,
    /// Authorization codes exchanged for tokens.
    pub code_exchanges: u64,
    /// Successful `refresh_token` grants.
    pub refreshes: u64,
    /// Rotated (or otherwise spent) refresh tokens presented again: each one revoked its
    /// token family (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2).
    pub refresh_reuse_detected: u64,
    /// Successful `client_credentials` grants.
    pub client_credentials: u64,
    /// Successful dynamic registrations (RFC 7591).
    pub registrations: u64,
    /// Revocation requests answered `200` (RFC 7009).
    pub revocations: u64,
    /// Every HTTP request to the MCP endpoint, authorized or not.
    pub mcp_requests: u64,
    /// `401` answers of the MCP endpoint.
    pub unauthorized_responses: u64,
    /// `403 insufficient_scope` answers of the MCP endpoint.
    pub insufficient_scope_responses: u64,
    /// MCP sessions currently open.
    pub active_sessions: usize,
    /// JSON-RPC methods of authorized MCP requests, in order (`initialize`, `tools/call`, …).
    pub mcp_methods: Vec<String>,
    /// Every token endpoint request, in order, secrets redacted.
    pub token_requests: Vec<RecordedTokenRequest>,
    /// The query parameters of every `/authorize` request, in order (nothing in them is
    /// secret: the PKCE challenge is public).
    pub authorization_requests: Vec<Vec<(String, String)>>,
    /// Every registration request body, in order, as JSON (or the raw text when it was not
    /// JSON).
    pub registration_requests: Vec<String>,
    /// Every HTTP request the server answered, in order.
    pub requests: Vec<RecordedRequest>,
}

impl Stats {
    /// The paths requested with `GET` under `/.well-known/`, in order, with their status:
    /// what a client's discovery tried.
    pub fn discovery_requests(&self) -> Vec<(String, u16)> {
        self.requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/.well-known/"))
            .map(|r| (r.path.clone(), r.status))
            .collect()
    }

    /// The token requests of one grant type.
    pub fn token_requests_for(&self, grant_type: &str) -> Vec<&RecordedTokenRequest> {
        self.token_requests
            .iter()
            .filter(|r| r.grant_type.as_deref() == Some(grant_type))
            .collect()
    }
}

/// One token endpoint request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedTokenRequest {
    /// `grant_type`, when sent.
    pub grant_type: Option<String>,
    /// The client id, from the `Authorization` header or the body.
    pub client_id: Option<String>,
    /// How the client authenticated: `none`, `client_secret_basic` or `client_secret_post`.
    pub auth_method: String,
    /// The form parameters in order; `code`, `code_verifier`, `refresh_token`,
    /// `client_secret` and `client_assertion` are replaced by `[redacted]`.
    pub params: Vec<(String, String)>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The OAuth `error` of the answer, when it failed.
    pub error: Option<String>,
}

impl RecordedTokenRequest {
    /// The first value of a parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method (`GET`, `POST`, …).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The status of the answer.
    pub status: u16,
}
