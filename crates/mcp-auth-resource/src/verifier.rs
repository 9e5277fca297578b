//! The verifier abstraction: JWT, introspection, or anything an application plugs in.

use std::time::Duration;

use crate::{Claims, VerifyError};

/// Turns a bearer token into verified [`Claims`].
///
/// The built-in JWT and introspection verifiers implement it; an authorization server in the
/// same process can implement it to look its tokens up without a network round trip
/// ([`crate::Verifier::Custom`]).
///
/// Whatever the implementation, [`crate::ResourceServer`] checks again, after it, that the
/// claims' `audience` names this resource (when not empty), that the `issuer` is one of the
/// configured authorization servers and that `expires_at` has not passed; and it caches the
/// result. An implementation that returns an empty `audience` vouches itself that the token
/// was issued for this resource.
#[async_trait::async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies one token. Errors other than [`VerifyError::Unavailable`] and
    /// [`VerifyError::Backend`] mean the token is not acceptable here.
    async fn verify(&self, token: &str) -> Result<Claims, VerifyError>;

    /// How long a successful result may be reused without calling [`Self::verify`] again,
    /// at most (the token's `exp` and [`crate::ResourceConfig::token_cache_ttl`] bound it
    /// too). `Duration::ZERO` disables caching, for a verifier that must see revocations at
    /// once and is cheap enough to call on every request.
    fn cache_ttl(&self) -> Duration {
        Duration::MAX
    }
}
