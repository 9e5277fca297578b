//! `server.toml`: the authorization server's configuration file. Precedence: command-line
//! flags, then the `OAUTH_*_TTL` environment variables, then this file, then defaults.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use mcp_auth_server::ratelimit::{Quota, RateLimits};
use mcp_auth_server::{ServerConfig, TrustedIssuer, Ttls};
use mcp_auth_types::ScopeSet;
use serde::Deserialize;
use sha2::Digest as _;

/// The file, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// `listen = "127.0.0.1:8700"`
    pub listen: Option<SocketAddr>,
    /// `issuer = "https://auth.example.com"`
    pub issuer: Option<String>,
    /// `store = "sqlite:/var/lib/mcp-auth/server.db"`
    pub store: Option<String>,
    /// `dev_auto_approve = false`
    pub dev_auto_approve: Option<bool>,
    /// `tenants = ["acme", "beta"]`
    pub tenants: Option<Vec<String>>,
    /// `scopes_supported = ["mcp:read", "mcp:write"]` (absent: any scope)
    pub scopes_supported: Option<Vec<String>>,
    /// `default_scopes = ["mcp:read"]`, granted when a client asks for none
    pub default_scopes: Option<Vec<String>>,
    /// `allow_dynamic_registration = true`
    pub allow_dynamic_registration: Option<bool>,
    /// `issue_refresh_tokens = true`
    pub issue_refresh_tokens: Option<bool>,
    /// `[ttl]` in seconds.
    pub ttl: Option<TtlFile>,
    /// `[rate_limits]`.
    pub rate_limits: Option<RateFile>,
    /// `[client_id_metadata_documents]`.
    pub client_id_metadata_documents: Option<CimdFile>,
    /// `local_accounts = true`: offer the local accounts (`mcp-auth users add`) at the login
    /// page. Default: on when no `[[upstream]]` is configured, off otherwise.
    pub local_accounts: Option<bool>,
    /// `[[upstream]]`: identity providers users log in with (proxy-provider mode).
    #[serde(default)]
    pub upstream: Vec<UpstreamFile>,
    /// `[upstream_tokens]`: how the users' upstream tokens are sealed.
    pub upstream_tokens: Option<UpstreamTokensFile>,
    /// `[[trusted_issuer]]`: enterprise identity providers (ID-JAG) and workload platforms
    /// whose JWTs the token endpoint accepts as RFC 7523 jwt-bearer grants. Fields:
    /// `id`, `kind = "enterprise" | "workload"`, `issuer`, `jwks_uri`, `audience`,
    /// `subject_claim`, `subject_mapping = "prefixed" | "local_account"`,
    /// `allowed_subjects`, `allowed_clients`, `required_claims = { … }`, `scopes`,
    /// `algorithms`, `max_assertion_lifetime`, `leeway`, `allow_http`,
    /// `issue_refresh_tokens` (see `mcp_auth_server::TrustedIssuer`).
    #[serde(default)]
    pub trusted_issuer: Vec<TrustedIssuer>,
    /// `[dpop]`: sender-constrained tokens (RFC 9449).
    pub dpop: Option<DpopFile>,
}

/// `[dpop]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopFile {
    /// Accept DPoP proofs at /token and bind tokens to the client's key; the MCP endpoint
    /// then checks the proof of every request with a bound token (default false).
    pub enabled: Option<bool>,
    /// Require a fresh server nonce in every proof (RFC 9449 §8, §9; default false).
    pub require_nonce: Option<bool>,
    /// The MCP endpoint accepts only DPoP-bound tokens (default false).
    pub required: Option<bool>,
    /// An environment variable whose value keys the nonces, so that several instances accept
    /// each other's (default: a random key per process).
    pub nonce_secret_env: Option<String>,
}

/// The kind of an upstream identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// Any OpenID Connect provider (`issuer` required).
    Oidc,
    /// Google (an OpenID Connect preset).
    Google,
    /// A GitHub OAuth app (github.com, or GitHub Enterprise with `web_base` and `api_base`).
    Github,
}

/// One `[[upstream]]` table. Secrets never sit in the file: `client_secret_env` names an
/// environment variable, `client_secret_file` a file holding the secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// `kind = "oidc" | "google" | "github"`
    pub kind: UpstreamKind,
    /// The provider id and account prefix (default: the kind).
    pub id: Option<String>,
    /// The label on the login page (default: the provider's name).
    pub label: Option<String>,
    /// OpenID Connect issuer (`kind = "oidc"`).
    pub issuer: Option<String>,
    /// The client id registered at the provider.
    pub client_id: String,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// File holding the client secret (trailing newline ignored).
    pub client_secret_file: Option<std::path::PathBuf>,
    /// Scopes to ask the provider for (default per kind).
    pub scopes: Option<Vec<String>>,
    /// Call the OIDC userinfo endpoint at login (default false).
    pub userinfo: Option<bool>,
    /// Extra authorization request parameters (`{ prompt = "consent" }`).
    pub extra_authorize_params: Option<std::collections::BTreeMap<String, String>>,
    /// Allow plain-http provider URLs (loopback tests only; default false).
    pub allow_http: Option<bool>,
    /// GitHub web base (default `https://github.com`).
    pub web_base: Option<String>,
    /// GitHub API base (default `https://api.github.com`).
    pub api_base: Option<String>,
}

impl UpstreamFile {
    /// The client secret from `client_secret_env` or `client_secret_file`; errors name the
    /// variable or file, never the value.
    pub fn client_secret(&self) -> Result<Option<String>> {
        match (&self.client_secret_env, &self.client_secret_file) {
            (Some(_), Some(_)) => Err(anyhow!(
                "[[upstream]] {}: set client_secret_env or client_secret_file, not both",
                self.client_id
            )),
            (Some(var), None) => std::env::var(var)
                .map(Some)
                .map_err(|_| anyhow!("[[upstream]] client_secret_env: {var} is not set")),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
                .with_context(|| format!("[[upstream]] client_secret_file {}", path.display())),
            (None, None) => Ok(None),
        }
    }
}

/// `[upstream_tokens]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTokensFile {
    /// Environment variable holding `kid:base64key[,kid:base64key…]` (default
    /// `MCP_AUTH_UPSTREAM_TOKEN_KEYS`); the first key seals, all open.
    pub keys_env: Option<String>,
    /// File holding the same (default `upstream-token.keys` in the data directory, created
    /// with a new random key, mode 0600, when missing).
    pub keys_file: Option<std::path::PathBuf>,
}

/// `[ttl]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlFile {
    /// Authorization codes (default 300).
    pub auth_code: Option<u64>,
    /// Access tokens (default 900).
    pub access_token: Option<u64>,
    /// Refresh tokens (default 86400).
    pub refresh_token: Option<u64>,
    /// Dynamic client registrations (default 31536000).
    pub client_registration: Option<u64>,
    /// Users' upstream tokens kept by the server (default 86400).
    pub external_token: Option<u64>,
    /// How long a client read from the store is answered from memory (default 5; 0 turns
    /// the cache off). Another process sharing the store sees a client's update or
    /// deletion within this time; this one sees its own at once.
    pub client_cache: Option<u64>,
}

/// `[rate_limits]`: each `{ per_minute = N, burst = M }`, or `false` to turn it off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateFile {
    /// `/register`
    pub register: Option<QuotaFile>,
    /// `/token`
    pub token: Option<QuotaFile>,
    /// the login form
    pub login: Option<QuotaFile>,
    /// user codes entered on the device verification page, per address
    pub device: Option<QuotaFile>,
    /// user codes entered on the device verification page, all addresses together
    pub device_all: Option<QuotaFile>,
}

/// A quota or `false`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum QuotaFile {
    /// `false` turns the limit off (`true` keeps the default).
    Switch(bool),
    /// `{ per_minute, burst }`
    Quota {
        /// Sustained requests per minute per address.
        per_minute: u32,
        /// Requests at once.
        burst: u32,
    },
}

/// `[client_id_metadata_documents]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CimdFile {
    /// Accept client ID metadata documents (default true).
    pub enabled: Option<bool>,
    /// Fetch documents from private, loopback and link-local addresses (default false).
    pub allow_private_addresses: Option<bool>,
    /// Fetch documents over plain http (default false).
    pub allow_http: Option<bool>,
}

impl ServerFile {
    /// Reads `path`; a missing file is `None`, a malformed one an error naming the key.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    /// The server configuration for `issuer` (a tenant sets `tenant` itself).
    pub fn server_config(&self, issuer: &str, dev_auto_approve: bool) -> Result<ServerConfig> {
        let mut c = ServerConfig::new(issuer);
        let mut ttls = Ttls::default();
        if let Some(t) = &self.ttl {
            for (v, slot) in [
                (t.auth_code, &mut ttls.auth_code),
                (t.access_token, &mut ttls.access_token),
                (t.refresh_token, &mut ttls.refresh_token),
                (t.client_registration, &mut ttls.client_registration),
                (t.external_token, &mut ttls.external_token),
            ] {
                if let Some(secs) = v {
                    if secs == 0 {
                        return Err(anyhow!("[ttl] values must be positive"));
                    }
                    *slot = Duration::from_secs(secs);
                }
            }
        }
        // The environment overrides the file.
        let env = Ttls::from_env().map_err(|e| anyhow!(e))?;
        let defaults = Ttls::default();
        for (e, d, slot) in [
            (env.auth_code, defaults.auth_code, &mut ttls.auth_code),
            (
                env.access_token,
                defaults.access_token,
                &mut ttls.access_token,
            ),
            (
                env.refresh_token,
                defaults.refresh_token,
                &mut ttls.refresh_token,
            ),
            (
                env.client_registration,
                defaults.client_registration,
                &mut ttls.client_registration,
            ),
            (
                env.external_token,
                defaults.external_token,
                &mut ttls.external_token,
            ),
        ] {
            if e != d {
                *slot = e;
            }
        }
        c.ttls = ttls;
        if let Some(secs) = self.ttl.as_ref().and_then(|t| t.client_cache) {
            c.client_cache_ttl = Duration::from_secs(secs);
        }
        let scopes = |v: &Option<Vec<String>>, key: &str| -> Result<Option<ScopeSet>> {
            v.as_ref()
                .map(|v| ScopeSet::from_strs(v).map_err(|e| anyhow!("{key}: {e}")))
                .transpose()
        };
        c.scopes_supported = scopes(&self.scopes_supported, "scopes_supported")?;
        c.default_scopes = scopes(&self.default_scopes, "default_scopes")?.unwrap_or_default();
        if let Some(v) = self.allow_dynamic_registration {
            c.allow_dynamic_registration = v;
        }
        if let Some(v) = self.issue_refresh_tokens {
            c.issue_refresh_tokens = v;
        }
        if let Some(r) = &self.rate_limits {
            let mut limits = RateLimits::default();
            for (q, slot) in [
                (&r.register, &mut limits.register),
                (&r.token, &mut limits.token),
                (&r.login, &mut limits.login),
                (&r.device, &mut limits.device_verification),
                (&r.device_all, &mut limits.device_verification_global),
            ] {
                match q {
                    None | Some(QuotaFile::Switch(true)) => {}
                    Some(QuotaFile::Switch(false)) => *slot = None,
                    Some(QuotaFile::Quota { per_minute, burst }) => {
                        *slot = Some(Quota {
                            per_minute: *per_minute,
                            burst: *burst,
                        });
                    }
                }
            }
            c.rate_limits = limits;
        }
        if let Some(m) = &self.client_id_metadata_documents {
            let d = &mut c.client_id_metadata_documents;
            if let Some(v) = m.enabled {
                d.enabled = v;
            }
            if let Some(v) = m.allow_private_addresses {
                d.allow_private_addresses = v;
            }
            if let Some(v) = m.allow_http {
                d.allow_http = v;
            }
        }
        if let Some(d) = self.dpop.as_ref().filter(|d| {
            d.enabled == Some(true) || d.require_nonce == Some(true) || d.required == Some(true)
        }) {
            let nonce_secret = match &d.nonce_secret_env {
                Some(var) => {
                    let v = std::env::var(var).map_err(|_| {
                        anyhow!(
                            "[dpop] nonce_secret_env: the environment variable {var} is not set"
                        )
                    })?;
                    if v.len() < 32 {
                        bail!("[dpop] nonce_secret_env: {var} must hold at least 32 characters");
                    }
                    Some(<[u8; 32]>::from(sha2::Sha256::digest(v.as_bytes())))
                }
                None => None,
            };
            c.dpop = Some(mcp_auth_resource::dpop::DpopOptions {
                require_nonce: d.require_nonce == Some(true),
                required: d.required == Some(true),
                nonce_secret,
                ..Default::default()
            });
        }
        c.trusted_issuers = self.trusted_issuer.clone();
        c.check_trusted_issuers()
            .map_err(|e| anyhow!("[[trusted_issuer]]: {e}"))?;
        c.dev_auto_approve = dev_auto_approve;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let f: ServerFile = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            issuer = "http://127.0.0.1:9000"
            store = "sqlite:/tmp/x.db"
            dev_auto_approve = false
            tenants = ["acme"]
            scopes_supported = ["mcp:read", "mcp:write"]
            default_scopes = ["mcp:read"]
            allow_dynamic_registration = true
            issue_refresh_tokens = true
            [ttl]
            auth_code = 60
            access_token = 300
            refresh_token = 3600
            client_registration = 86400
            external_token = 7200
            client_cache = 0
            [rate_limits]
            register = false
            token = { per_minute = 100, burst = 10 }
            [client_id_metadata_documents]
            enabled = true
            allow_private_addresses = false
            allow_http = false
            [[upstream]]
            kind = "oidc"
            id = "corp"
            label = "Corp SSO"
            issuer = "https://login.example.com"
            client_id = "mcp"
            client_secret_env = "CORP_SECRET"
            scopes = ["openid", "email"]
            userinfo = true
            extra_authorize_params = { prompt = "consent" }
            allow_http = false
            [[upstream]]
            kind = "github"
            client_id = "Iv1.abc"
            client_secret_file = "/run/secrets/github"
            web_base = "https://ghe.example.com"
            api_base = "https://ghe.example.com/api/v3"
            [upstream_tokens]
            keys_env = "KEYS"
            keys_file = "/etc/mcp-auth/upstream.keys"
            "#,
        )
        .unwrap();
        assert_eq!(f.upstream.len(), 2);
        assert_eq!(f.upstream[1].kind, UpstreamKind::Github);
        let c = f.server_config("http://127.0.0.1:9000", false).unwrap();
        assert_eq!(c.ttls.external_token, Duration::from_secs(7200));
        assert_eq!(c.client_cache_ttl, Duration::ZERO);
        assert_eq!(c.ttls.auth_code, Duration::from_secs(60));
        assert_eq!(c.ttls.access_token, Duration::from_secs(300));
        assert_eq!(c.rate_limits.register, None);
        assert_eq!(
            c.rate_limits.token,
            Some(Quota {
                per_minute: 100,
                burst: 10
            })
        );
        assert!(c.rate_limits.login.is_some());
        assert_eq!(
            c.scopes_supported.unwrap().to_string(),
            "mcp:read mcp:write"
        );
        assert_eq!(c.default_scopes.to_string(), "mcp:read");
    }

    #[test]
    fn parses_trusted_issuers() {
        let f: ServerFile = toml::from_str(
            r#"
            [[trusted_issuer]]
            id = "acme"
            kind = "enterprise"
            issuer = "https://acme.okta.com"
            allowed_clients = ["agent-1"]
            subject_claim = "email"
            subject_mapping = "local_account"
            scopes = ["files:read"]
            algorithms = ["RS256", "ES256"]
            max_assertion_lifetime = 600
            [[trusted_issuer]]
            id = "gha"
            kind = "workload"
            issuer = "https://token.actions.githubusercontent.com"
            jwks_uri = "https://token.actions.githubusercontent.com/.well-known/jwks"
            audience = "https://auth.example.com"
            allowed_subjects = ["repo:acme/*:ref:refs/heads/main"]
            required_claims = { repository_owner = "acme" }
            leeway = 30
            issue_refresh_tokens = true
            "#,
        )
        .unwrap();
        let c = f.server_config("https://auth.example.com", false).unwrap();
        let [acme, gha] = c.trusted_issuers.as_slice() else {
            panic!("two issuers expected");
        };
        assert_eq!(acme.kind, mcp_auth_server::TrustKind::Enterprise);
        assert_eq!(
            acme.subject_mapping,
            mcp_auth_server::SubjectMapping::LocalAccount
        );
        assert_eq!(acme.max_assertion_lifetime_secs, 600);
        assert_eq!(acme.algorithms.len(), 2);
        assert_eq!(acme.scopes.as_ref().unwrap().to_string(), "files:read");
        assert!(!acme.issue_refresh_tokens);
        assert_eq!(gha.leeway_secs, 30);
        assert_eq!(gha.max_assertion_lifetime_secs, 3600);
        assert_eq!(gha.required_claims["repository_owner"], "acme");
        assert!(gha.issue_refresh_tokens);
    }

    #[test]
    fn unusable_trusted_issuers_are_errors() {
        // HS256 and none cannot be named.
        for alg in ["HS256", "none"] {
            let text = format!(
                "[[trusted_issuer]]\nid = \"a\"\nkind = \"enterprise\"\n\
                 issuer = \"https://idp.example.com\"\nalgorithms = [\"{alg}\"]"
            );
            let err = toml::from_str::<ServerFile>(&text).unwrap_err();
            assert!(err.to_string().contains("not allowed"), "{err}");
        }
        // A workload issuer that would accept every workload of the platform.
        let f: ServerFile = toml::from_str(
            "[[trusted_issuer]]\nid = \"gha\"\nkind = \"workload\"\n\
             issuer = \"https://token.actions.githubusercontent.com\"",
        )
        .unwrap();
        let err = f
            .server_config("https://auth.example.com", false)
            .unwrap_err();
        assert!(err.to_string().contains("allowed_subjects"), "{err}");
        // Plain http off loopback.
        let f: ServerFile = toml::from_str(
            "[[trusted_issuer]]\nid = \"a\"\nkind = \"enterprise\"\n\
             issuer = \"http://idp.example.com\"\nallowed_clients = [\"c\"]\nallow_http = true",
        )
        .unwrap();
        assert!(f.server_config("https://auth.example.com", false).is_err());
        assert!(
            toml::from_str::<ServerFile>(
                "[[trusted_issuer]]\nid = \"a\"\nkind = \"enterprise\"\nissuer = \"x\"\nissur = 1"
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<ServerFile>("isuer = \"x\"").is_err());
        assert!(toml::from_str::<ServerFile>("[ttl]\naccess = 3").is_err());
        // A secret inline in the file is refused: it must come from the environment or a file.
        assert!(
            toml::from_str::<ServerFile>(
                "[[upstream]]\nkind = \"github\"\nclient_id = \"x\"\nclient_secret = \"s3cret\""
            )
            .is_err()
        );
    }
}
