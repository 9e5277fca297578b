//! `[[upstream]]` tables and `--upstream-oidc` into upstream identity providers.

use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow, bail};
use mcp_auth_types::SecretString;
use mcp_auth_upstream::{GithubConfig, OidcConfig, Upstream, UpstreamConfig};

use crate::server_config::{UpstreamFile, UpstreamKind};

/// Whether `url` is http(s) on a loopback host.
pub fn is_loopback_url(url: &str) -> bool {
    url::Url::parse(url).ok().is_some_and(|u| match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    })
}

fn base(value: &str, key: &str) -> Result<url::Url> {
    url::Url::parse(value).map_err(|e| anyhow!("[[upstream]] {key} {value:?}: {e}"))
}

/// The provider one `[[upstream]]` table describes, with its client secret.
pub fn provider(u: &UpstreamFile, secret: Option<String>) -> Result<Arc<dyn Upstream>> {
    let secret = secret.map(SecretString::new);
    let config: UpstreamConfig = match u.kind {
        UpstreamKind::Oidc | UpstreamKind::Google => {
            let mut c = if u.kind == UpstreamKind::Google {
                let s = secret.ok_or_else(|| {
                    anyhow!("[[upstream]] kind = \"google\" needs client_secret_env or client_secret_file")
                })?;
                mcp_auth_upstream::google(u.client_id.clone(), s)
            } else {
                let issuer = u
                    .issuer
                    .clone()
                    .ok_or_else(|| anyhow!("[[upstream]] kind = \"oidc\" needs issuer"))?;
                OidcConfig::new(issuer, u.client_id.clone(), secret)
            };
            if u.web_base.is_some() || u.api_base.is_some() {
                bail!("[[upstream]] web_base and api_base are for kind = \"github\"");
            }
            if let Some(id) = &u.id {
                c.id = id.clone();
            }
            if let Some(l) = &u.label {
                c.label = l.clone();
            }
            if let Some(s) = &u.scopes {
                c.scopes = s.clone();
            }
            if let Some(v) = u.userinfo {
                c.use_userinfo = v;
            }
            if let Some(p) = &u.extra_authorize_params {
                c.extra_authorize_params
                    .extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            c.allow_http = u.allow_http.unwrap_or(false);
            c.into()
        }
        UpstreamKind::Github => {
            let s = secret.ok_or_else(|| {
                anyhow!(
                    "[[upstream]] kind = \"github\" needs client_secret_env or client_secret_file"
                )
            })?;
            if u.issuer.is_some() || u.userinfo.is_some() {
                bail!("[[upstream]] issuer and userinfo are for OpenID Connect providers");
            }
            let mut c = GithubConfig::new(u.client_id.clone(), s);
            if let Some(id) = &u.id {
                c.id = id.clone();
            }
            if let Some(l) = &u.label {
                c.label = l.clone();
            }
            if let Some(w) = &u.web_base {
                c.web_base = base(w, "web_base")?;
            }
            if let Some(a) = &u.api_base {
                c.api_base = base(a, "api_base")?;
            }
            if let Some(s) = &u.scopes {
                c.scopes = s.clone();
            }
            if u.extra_authorize_params.is_some() {
                bail!("[[upstream]] extra_authorize_params is for OpenID Connect providers");
            }
            c.allow_http = u.allow_http.unwrap_or(false);
            c.into()
        }
    };
    let http = mcp_auth_upstream::http_client().context("building the upstream HTTP client")?;
    let id = config.id().to_owned();
    config
        .build(http)
        .with_context(|| format!("[[upstream]] {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(kind: &str, extra: &str) -> UpstreamFile {
        toml::from_str(&format!("kind = \"{kind}\"\nclient_id = \"c\"\n{extra}")).unwrap()
    }

    #[test]
    fn builds_each_kind_and_checks_keys() {
        let p = provider(
            &file("oidc", "issuer = \"https://login.example.com\""),
            None,
        )
        .unwrap();
        assert_eq!(p.id(), "oidc");
        let p = provider(&file("google", ""), Some("s".into())).unwrap();
        assert_eq!((p.id(), p.label()), ("google", "Google"));
        let p = provider(
            &file(
                "github",
                "id = \"ghe\"\nlabel = \"Acme GitHub\"\nweb_base = \"https://ghe.example.com\"\napi_base = \"https://ghe.example.com/api/v3\"",
            ),
            Some("s".into()),
        )
        .unwrap();
        assert_eq!((p.id(), p.label()), ("ghe", "Acme GitHub"));
        assert!(provider(&file("github", ""), None).is_err());
        assert!(provider(&file("oidc", ""), None).is_err());
        assert!(provider(&file("oidc", "issuer = \"http://login.example.com\""), None).is_err());
        assert!(provider(&file("github", "issuer = \"https://x\""), Some("s".into())).is_err());
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://127.0.0.1:8700"));
        assert!(is_loopback_url("http://localhost:1"));
        assert!(!is_loopback_url("https://login.example.com"));
    }
}
