//! Token endpoint calls with client authentication (RFC 6749 §2.3, RFC 7523 §2.2), and
//! revocation (RFC 7009).

use mcp_auth_types::token::basic_auth_header;
use mcp_auth_types::{AuthMethod, ClientId, ClientSecret, TokenRequest, TokenResponse, TokenType};
use serde::Serialize;

use crate::dpop::Dpop;
use crate::error::{Error, Result, Step};
use crate::http::Http;
use crate::store::{ClientRecord, TokenRecord, now_secs};

/// Adds the client's authentication to a token-endpoint style request: a Basic header, form
/// fields, or a signed assertion. `audience` is the authorization server's issuer, which
/// RFC 7523 §3 lets identify the AS in a client assertion's `aud`.
pub(crate) fn authenticate(
    req: reqwest::RequestBuilder,
    form: &mut Vec<(&'static str, String)>,
    client: &ClientRecord,
    audience: &str,
) -> Result<reqwest::RequestBuilder> {
    let id = ClientId::new(client.client_id.clone())
        .map_err(|e| Error::Config(format!("stored client id: {e}")))?;
    let secret = || {
        client.client_secret.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "token endpoint auth method {} needs a client secret, and none is known",
                client.auth_method
            ))
        })
    };
    Ok(match &client.auth_method {
        AuthMethod::ClientSecretBasic => req.header(
            http::header::AUTHORIZATION,
            basic_auth_header(&id, secret()?),
        ),
        AuthMethod::ClientSecretPost => {
            form.push(("client_id", id.as_str().to_owned()));
            form.push(("client_secret", secret()?.secret().to_owned()));
            req
        }
        AuthMethod::PrivateKeyJwt => {
            let assertion = client_assertion(client, audience)?;
            form.push(("client_id", id.as_str().to_owned()));
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ));
            form.push(("client_assertion", assertion.secret().to_owned()));
            req
        }
        // `none` (public clients) and anything unknown: identify, don't authenticate.
        _ => {
            form.push(("client_id", id.as_str().to_owned()));
            req
        }
    })
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

/// RFC 7523 §2.2 / §3 client assertion: `iss` = `sub` = client id, `aud` = the AS, short
/// lifetime, unique `jti`.
fn client_assertion(client: &ClientRecord, audience: &str) -> Result<ClientSecret> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let pem = client
        .private_key_pem
        .as_ref()
        .ok_or_else(|| Error::Config("private_key_jwt needs a private key".into()))?;
    let alg_name = client.signing_alg.as_deref().unwrap_or("ES256");
    let alg: Algorithm = alg_name
        .parse()
        .map_err(|_| Error::Config(format!("unsupported signing algorithm {alg_name:?}")))?;
    let pem = pem.secret().as_bytes();
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => {
            return Err(Error::Config(format!(
                "signing algorithm {alg_name} is not an asymmetric algorithm"
            )));
        }
    }
    .map_err(|e| Error::Config(format!("private key for {alg_name}: {}", e.kind_name())))?;
    let now = now_secs();
    let claims = AssertionClaims {
        iss: &client.client_id,
        sub: &client.client_id,
        aud: audience,
        iat: now,
        exp: now + 300,
        jti: crate::random_id(),
    };
    let jwt = jsonwebtoken::encode(&Header::new(alg), &claims, &key)
        .map_err(|e| Error::Config(format!("signing the client assertion: {}", e.kind_name())))?;
    Ok(ClientSecret::new(jwt))
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    fn kind_name(&self) -> String {
        // The kind, never the key material.
        format!("{:?}", self.kind())
            .split('(')
            .next()
            .unwrap_or("error")
            .to_owned()
    }
}

/// Sends a token request and checks the response can be used.
pub async fn request_token(
    http: &Http,
    step: Step,
    token_endpoint: &str,
    audience: &str,
    client: &ClientRecord,
    grant: &TokenRequest<'_>,
) -> Result<TokenResponse> {
    request_token_with(http, step, token_endpoint, audience, client, grant, None).await
}

/// [`request_token`], with a DPoP proof when `dpop` is given (RFC 9449 §5): a fresh proof
/// per attempt, the server's nonce once when it answers `use_dpop_nonce` (§8), and a
/// `DPoP` or `Bearer` token accepted back.
pub(crate) async fn request_token_with(
    http: &Http,
    step: Step,
    token_endpoint: &str,
    audience: &str,
    client: &ClientRecord,
    grant: &TokenRequest<'_>,
    dpop: Option<Dpop<'_>>,
) -> Result<TokenResponse> {
    let mut nonce_retried = false;
    let resp: TokenResponse = loop {
        let mut form = grant.form();
        let mut req = authenticate(http.post(token_endpoint)?, &mut form, client, audience)?;
        if let Some(d) = &dpop {
            req = req.header("DPoP", d.proof("POST", token_endpoint, None)?);
        }
        let (result, headers) = http
            .send_oauth_with_headers(step, req.form(&form), token_endpoint)
            .await;
        let fresh_nonce = dpop.is_some_and(|d| d.nonces.update(token_endpoint, &headers));
        match result {
            Err(e)
                if dpop.is_some()
                    && !nonce_retried
                    && fresh_nonce
                    && e.oauth_code().map(|c| c.as_str()) == Some("use_dpop_nonce") =>
            {
                tracing::debug!(step = %step, "the authorization server asked for a DPoP nonce; retrying once with it");
                nonce_retried = true;
            }
            other => break other?,
        }
    };
    // Use a token only with a type this client knows how to present (RFC 6749 §7.1): a
    // DPoP-bound token needs the key its proof was made with; an AS that does not bind
    // answers `Bearer` to a proof, which is fine (RFC 9449 §5).
    let usable = match resp.token_type {
        TokenType::Bearer => true,
        TokenType::DPoP => dpop.is_some(),
        _ => false,
    };
    if !usable {
        return Err(Error::UnsupportedTokenType {
            step,
            token_type: resp.token_type.as_str().to_owned(),
        });
    }
    if resp.access_token.secret().is_empty()
        || resp
            .access_token
            .secret()
            .chars()
            .any(|c| c.is_control() || c == ' ')
    {
        return Err(Error::InvalidResponse {
            step,
            url: token_endpoint.to_owned(),
            message: "the access token is empty or contains characters not allowed in a bearer token (RFC 6750 §2.1)".into(),
        });
    }
    Ok(resp)
}

/// Turns a token response into what is stored. A refresh response without a new refresh
/// token keeps the old one (RFC 6749 §6: the server MAY issue a new one).
pub fn to_record(
    resp: TokenResponse,
    previous: Option<&TokenRecord>,
    requested_scope: Option<&str>,
) -> TokenRecord {
    let now = now_secs();
    TokenRecord {
        token_type: resp.token_type.as_str().to_owned(),
        expires_at: resp.expires_in.map(|s| now.saturating_add(s)),
        refresh_token: resp
            .refresh_token
            .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
        scope: resp
            .scope
            .map(|s| s.to_string())
            .or_else(|| requested_scope.map(str::to_owned))
            .or_else(|| previous.and_then(|p| p.scope.clone())),
        access_token: resp.access_token,
        obtained_at: now,
    }
}

/// RFC 7009 revocation of one token. The AS answers 200 for unknown tokens too; errors are
/// reported but callers usually forget the token anyway.
pub async fn revoke(
    http: &Http,
    endpoint: &str,
    audience: &str,
    client: &ClientRecord,
    token: &str,
    hint: &str,
) -> Result<()> {
    let mut form: Vec<(&'static str, String)> = vec![
        ("token", token.to_owned()),
        ("token_type_hint", hint.to_owned()),
    ];
    let req = authenticate(http.post(endpoint)?, &mut form, client, audience)?;
    let resp = req
        .form(&form)
        .send()
        .await
        .map_err(|source| Error::Network {
            step: Step::Revocation,
            url: endpoint.to_owned(),
            source,
        })?;
    let status = resp.status();
    let body = http.read_body(Step::Revocation, endpoint, resp).await?;
    if status.is_success() {
        return Ok(());
    }
    match serde_json::from_slice(&body) {
        Ok(error) => Err(Error::OAuth {
            step: Step::Revocation,
            error: Box::new(error),
        }),
        Err(_) => Err(Error::Status {
            step: Step::Revocation,
            url: endpoint.to_owned(),
            status: status.as_u16(),
            body: crate::error::sanitize(&String::from_utf8_lossy(&body), 200),
        }),
    }
}
