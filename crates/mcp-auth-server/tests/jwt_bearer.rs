//! The RFC 7523 jwt-bearer grant end to end: a fake enterprise identity provider and a fake
//! workload platform on 127.0.0.1:0 publish their keys (one by `jwks_uri`, one by discovery)
//! and sign assertions with generated ES256 keys; the authorization server, also on
//! 127.0.0.1:0, trusts them and is called over HTTP.

use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_auth_server::jwt_bearer::GRANT_TYPE;
use mcp_auth_server::store::{
    ClientRow, MemoryStore, RegistrationKind, Store, hash_secret, unix_now,
};
use mcp_auth_server::{AuthorizationServer, ServerConfig, TrustKind, TrustedIssuer};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const SECRET: &str = "s3cret-of-the-enterprise-client";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Key {
    kid: String,
    pair: EcdsaKeyPair,
}

impl Key {
    fn new(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
               "x": b64(&p[1..33]), "y": b64(&p[33..])})
    }

    fn sign(&self, typ: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": "ES256", "kid": self.kid});
        if let Some(t) = typ {
            header["typ"] = json!(t);
        }
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(claims).unwrap())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// The fake identity providers: `/idp/jwks` (enterprise, configured `jwks_uri`) and
/// `/k8s/.well-known/openid-configuration` + `/k8s/keys` (workload, found by discovery).
struct Providers {
    base: String,
    idp_key: Key,
    k8s_key: Key,
}

impl Providers {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let idp_key = Key::new("idp-1");
        let k8s_key = Key::new("k8s-1");
        #[derive(Clone)]
        struct Docs {
            idp_jwks: Value,
            k8s_jwks: Value,
            k8s_discovery: Value,
        }
        let docs = Arc::new(Mutex::new(Docs {
            idp_jwks: json!({"keys": [idp_key.jwk()]}),
            k8s_jwks: json!({"keys": [k8s_key.jwk()]}),
            k8s_discovery: json!({"issuer": format!("{base}/k8s"), "jwks_uri": format!("{base}/k8s/keys")}),
        }));
        type S = State<Arc<Mutex<Docs>>>;
        let app = axum::Router::new()
            .route(
                "/idp/jwks",
                get(|State(d): S| async move { Json(d.lock().unwrap().idp_jwks.clone()) }),
            )
            .route(
                "/k8s/keys",
                get(|State(d): S| async move { Json(d.lock().unwrap().k8s_jwks.clone()) }),
            )
            .route(
                "/k8s/.well-known/openid-configuration",
                get(|State(d): S| async move { Json(d.lock().unwrap().k8s_discovery.clone()) }),
            )
            .with_state(docs);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base,
            idp_key,
            k8s_key,
        }
    }

    fn idp(&self) -> String {
        format!("{}/idp", self.base)
    }

    fn k8s(&self) -> String {
        format!("{}/k8s", self.base)
    }
}

struct Harness {
    issuer: String,
    providers: Providers,
    server: AuthorizationServer,
    http: reqwest::Client,
}

async fn put_client(store: &MemoryStore, id: &str, secret: Option<&str>, grants: &[&str]) {
    let method = if secret.is_some() {
        "client_secret_basic"
    } else {
        "none"
    };
    store
        .put_client(&ClientRow {
            tenant: "default".into(),
            client_id: id.into(),
            secret_hash: secret.map(hash_secret),
            metadata: json!({"grant_types": grants, "token_endpoint_auth_method": method,
                             "client_name": id}),
            registration_kind: RegistrationKind::Static,
            registration_token_hash: None,
            created_at: unix_now(),
            expires_at: None,
        })
        .await
        .unwrap();
}

impl Harness {
    async fn start() -> Self {
        let providers = Providers::start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let mut config = ServerConfig::new(&issuer);
        config.resources = vec![RESOURCE.into()];
        let mut idp = TrustedIssuer::new("acme", TrustKind::Enterprise, providers.idp());
        idp.jwks_uri = Some(format!("{}/jwks", providers.idp()));
        idp.allowed_clients = vec!["ent-client".into()];
        idp.scopes = Some("files:read files:write".parse().unwrap());
        idp.allow_http = true;
        let mut k8s = TrustedIssuer::new("k8s", TrustKind::Workload, providers.k8s());
        k8s.allowed_subjects = vec!["system:serviceaccount:tools:*".into()];
        k8s.required_claims
            .insert("cluster".into(), json!("prod-eu"));
        k8s.allow_http = true;
        k8s.issue_refresh_tokens = true;
        config.trusted_issuers = vec![idp, k8s];
        let store = Arc::new(MemoryStore::new());
        put_client(&store, "ent-client", Some(SECRET), &[GRANT_TYPE]).await;
        put_client(&store, "other-client", Some(SECRET), &[GRANT_TYPE]).await;
        put_client(&store, "code-client", Some(SECRET), &["authorization_code"]).await;
        put_client(
            &store,
            "workload-client",
            None,
            &[GRANT_TYPE, "refresh_token"],
        )
        .await;
        let server = AuthorizationServer::new(config, store).await.unwrap();
        let router = server.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            issuer,
            providers,
            server,
            http: reqwest::Client::new(),
        }
    }

    fn id_jag(&self, client_id: &str, jti: &str) -> Value {
        let now = unix_now();
        json!({"iss": self.providers.idp(), "sub": "00u-alice", "aud": self.issuer,
               "client_id": client_id, "resource": RESOURCE, "scope": "files:read",
               "exp": now + 300, "iat": now, "jti": jti, "email": "alice@acme.example"})
    }

    fn workload(&self, sub: &str, jti: &str) -> Value {
        let now = unix_now();
        json!({"iss": self.providers.k8s(), "sub": sub, "aud": [format!("{}/", self.issuer)],
               "exp": now + 600, "iat": now, "nbf": now, "jti": jti, "cluster": "prod-eu"})
    }

    /// POSTs the grant; `secret` authenticates `client_id` with HTTP Basic, else the client
    /// only names itself (public client).
    async fn grant(
        &self,
        client_id: &str,
        secret: Option<&str>,
        assertion: &str,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut form = vec![("grant_type", GRANT_TYPE), ("assertion", assertion)];
        form.extend_from_slice(extra);
        let mut req = self.http.post(format!("{}/token", self.issuer));
        match secret {
            Some(s) => req = req.basic_auth(client_id, Some(s)),
            None => form.push(("client_id", client_id)),
        }
        let resp = req.form(&form).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

fn assert_error(answer: &(u16, Value), status: u16, code: &str, description: &str) {
    assert_eq!(answer.0, status, "{answer:?}");
    assert_eq!(answer.1["error"], code, "{answer:?}");
    let d = answer.1["error_description"].as_str().unwrap_or("");
    assert!(d.contains(description), "{answer:?}");
}

#[tokio::test]
async fn an_enterprise_id_jag_is_exchanged_once_for_an_audience_bound_token() {
    let h = Harness::start().await;
    let jag = h
        .providers
        .idp_key
        .sign(Some("oauth-id-jag+jwt"), &h.id_jag("ent-client", "jti-1"));
    let (status, body) = h.grant("ent-client", Some(SECRET), &jag, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "files:read");
    // RFC 7523 §3.1 does not call for refresh tokens, and this issuer is not set to give them.
    assert!(body.get("refresh_token").is_none(), "{body}");
    let at = body["access_token"].as_str().unwrap();
    // What the protected resource checks: signature, issuer, its own audience.
    let claims = h
        .server
        .keys()
        .verify(at, &h.issuer, Some(RESOURCE))
        .await
        .expect("the resource accepts the token");
    assert_eq!(claims.sub, "enterprise:acme:00u-alice");
    assert_eq!(claims.aud, RESOURCE);
    assert_eq!(claims.client_id, "ent-client");
    assert_eq!(claims.scope, "files:read");
    assert!(
        h.server
            .keys()
            .verify(at, &h.issuer, Some("https://other.example.com/mcp"))
            .await
            .is_none()
    );

    // The same assertion again: single use.
    let replay = h.grant("ent-client", Some(SECRET), &jag, &[]).await;
    assert_error(&replay, 400, "invalid_grant", "already used");
    // The description names the check, never the assertion.
    assert!(!replay.1.to_string().contains(&jag));

    // A scope beyond the issuer's ceiling.
    let jag = h
        .providers
        .idp_key
        .sign(Some("oauth-id-jag+jwt"), &h.id_jag("ent-client", "jti-2"));
    let r = h
        .grant("ent-client", Some(SECRET), &jag, &[("scope", "admin")])
        .await;
    assert_error(&r, 400, "invalid_scope", "assertion's scope");
    // A resource other than the assertion's.
    let r = h
        .grant(
            "ent-client",
            Some(SECRET),
            &jag,
            &[("resource", "https://other.example.com/mcp")],
        )
        .await;
    assert_error(&r, 400, "invalid_target", "");
    // Wrong typ.
    let jwt = h
        .providers
        .idp_key
        .sign(Some("JWT"), &h.id_jag("ent-client", "jti-3"));
    let r = h.grant("ent-client", Some(SECRET), &jwt, &[]).await;
    assert_error(&r, 400, "invalid_grant", "typ");
    // The refused attempts did not spend jti-2.
    let (status, body) = h.grant("ent-client", Some(SECRET), &jag, &[]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn assertions_from_untrusted_issuers_and_keys_are_refused() {
    let h = Harness::start().await;
    let rogue = Key::new("idp-1");
    // An issuer nobody configured.
    let mut claims = h.id_jag("ent-client", "jti-1");
    claims["iss"] = json!(format!("{}/evil", h.providers.base));
    let jwt = rogue.sign(Some("oauth-id-jag+jwt"), &claims);
    let r = h.grant("ent-client", Some(SECRET), &jwt, &[]).await;
    assert_error(&r, 400, "invalid_grant", "issuer is not trusted");
    // The trusted issuer's name, another key under its kid.
    let jwt = rogue.sign(Some("oauth-id-jag+jwt"), &h.id_jag("ent-client", "jti-2"));
    let r = h.grant("ent-client", Some(SECRET), &jwt, &[]).await;
    assert_error(&r, 400, "invalid_grant", "signature");
    // A kid the issuer never published.
    let stranger = Key::new("idp-unknown");
    let jwt = stranger.sign(Some("oauth-id-jag+jwt"), &h.id_jag("ent-client", "jti-3"));
    let r = h.grant("ent-client", Some(SECRET), &jwt, &[]).await;
    assert_error(&r, 400, "invalid_grant", "no key");
    // The workload platform's key cannot sign for the enterprise issuer.
    let jwt = h
        .providers
        .k8s_key
        .sign(Some("oauth-id-jag+jwt"), &h.id_jag("ent-client", "jti-4"));
    let r = h.grant("ent-client", Some(SECRET), &jwt, &[]).await;
    assert_error(&r, 400, "invalid_grant", "no key");
    // Not a JWT at all.
    let r = h.grant("ent-client", Some(SECRET), "not-a-jwt", &[]).await;
    assert_error(&r, 400, "invalid_grant", "well-formed");
}

#[tokio::test]
async fn the_wrong_client_is_refused() {
    let h = Harness::start().await;
    let jag = h
        .providers
        .idp_key
        .sign(Some("oauth-id-jag+jwt"), &h.id_jag("ent-client", "jti-1"));
    // Another (authenticated) client presenting ent-client's assertion.
    let r = h.grant("other-client", Some(SECRET), &jag, &[]).await;
    assert_error(&r, 400, "invalid_grant", "another client");
    // Its own assertion, but the issuer does not grant to it.
    let own = h
        .providers
        .idp_key
        .sign(Some("oauth-id-jag+jwt"), &h.id_jag("other-client", "jti-2"));
    let r = h.grant("other-client", Some(SECRET), &own, &[]).await;
    assert_error(&r, 400, "unauthorized_client", "this issuer");
    // A client that did not register the grant type.
    let r = h.grant("code-client", Some(SECRET), &jag, &[]).await;
    assert_error(&r, 400, "unauthorized_client", "");
    // A bad secret.
    let r = h.grant("ent-client", Some("wrong"), &jag, &[]).await;
    assert_error(&r, 401, "invalid_client", "");
    // None of that spent the assertion.
    let (status, body) = h.grant("ent-client", Some(SECRET), &jag, &[]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_workload_token_is_accepted_from_a_public_client() {
    let h = Harness::start().await;
    let sub = "system:serviceaccount:tools:deployer";
    let jwt = h.providers.k8s_key.sign(None, &h.workload(sub, "w-1"));
    let (status, body) = h
        .grant("workload-client", None, &jwt, &[("resource", RESOURCE)])
        .await;
    assert_eq!(status, 200, "{body}");
    let at = body["access_token"].as_str().unwrap();
    let claims = h
        .server
        .keys()
        .verify(at, &h.issuer, Some(RESOURCE))
        .await
        .unwrap();
    assert_eq!(claims.sub, format!("workload:k8s:{sub}"));
    assert_eq!(claims.client_id, "workload-client");
    // This issuer is configured to issue refresh tokens, and the client may use them.
    let rt = body["refresh_token"].as_str().expect("a refresh token");
    let resp = h
        .http
        .post(format!("{}/token", h.issuer))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", "workload-client"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Replayed.
    let r = h
        .grant("workload-client", None, &jwt, &[("resource", RESOURCE)])
        .await;
    assert_error(&r, 400, "invalid_grant", "already used");
}

#[tokio::test]
async fn a_workload_outside_the_allowed_subjects_or_claims_is_refused() {
    let h = Harness::start().await;
    let jwt = h.providers.k8s_key.sign(
        None,
        &h.workload("system:serviceaccount:prod:deployer", "w-1"),
    );
    let r = h.grant("workload-client", None, &jwt, &[]).await;
    assert_error(&r, 400, "invalid_grant", "subject is not allowed");
    let mut claims = h.workload("system:serviceaccount:tools:deployer", "w-2");
    claims["cluster"] = json!("staging");
    let jwt = h.providers.k8s_key.sign(None, &claims);
    let r = h.grant("workload-client", None, &jwt, &[]).await;
    assert_error(&r, 400, "invalid_grant", "cluster claim");
    let mut claims = h.workload("system:serviceaccount:tools:deployer", "w-3");
    claims["exp"] = json!(unix_now() - 120);
    claims["iat"] = json!(unix_now() - 400);
    let jwt = h.providers.k8s_key.sign(None, &claims);
    let r = h.grant("workload-client", None, &jwt, &[]).await;
    assert_error(&r, 400, "invalid_grant", "expired");
    let mut claims = h.workload("system:serviceaccount:tools:deployer", "w-4");
    claims["exp"] = json!(unix_now() + 7200);
    let jwt = h.providers.k8s_key.sign(None, &claims);
    let r = h.grant("workload-client", None, &jwt, &[]).await;
    assert_error(&r, 400, "invalid_grant", "lifetime");
    let mut claims = h.workload("system:serviceaccount:tools:deployer", "w-5");
    claims["aud"] = json!("https://auth.other.example.com");
    let jwt = h.providers.k8s_key.sign(None, &claims);
    let r = h.grant("workload-client", None, &jwt, &[]).await;
    assert_error(&r, 400, "invalid_grant", "audience");
}

#[tokio::test]
async fn metadata_and_registration_offer_the_grant() {
    let h = Harness::start().await;
    let meta: Value = h
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            h.issuer
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(GRANT_TYPE)),
        "{meta}"
    );
    let resp = h
        .http
        .post(format!("{}/register", h.issuer))
        .json(&json!({"client_name": "agent", "grant_types": [GRANT_TYPE],
                      "token_endpoint_auth_method": "client_secret_basic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
}

#[tokio::test]
async fn without_trusted_issuers_the_grant_is_unsupported() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let store = Arc::new(MemoryStore::new());
    put_client(&store, "c", Some(SECRET), &[GRANT_TYPE]).await;
    let server = AuthorizationServer::new(ServerConfig::new(&issuer), store)
        .await
        .unwrap();
    let meta = mcp_auth_server::handlers::metadata_document(&server.state().config, false);
    assert!(!meta.to_string().contains(GRANT_TYPE));
    let router = server.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let resp = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth("c", Some(SECRET))
        .form(&[("grant_type", GRANT_TYPE), ("assertion", "a.b.c")])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type", "{body}");
}

#[tokio::test]
async fn a_misconfigured_issuer_stops_the_server() {
    let mut config = ServerConfig::new("https://auth.example.com");
    config.trusted_issuers = vec![TrustedIssuer::new(
        "gha",
        TrustKind::Workload,
        "https://token.actions.githubusercontent.com",
    )];
    let err = AuthorizationServer::new(config, Arc::new(MemoryStore::new()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("allowed_subjects"), "{err}");
}
