//! The key layout (see the crate docs).

/// The keys of one store: everything starts with the prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The sorted set of every row with an expiry: score `expires_at`, member the row's key.
    pub(crate) fn expiry(&self) -> String {
        format!("{}expiry", self.prefix)
    }

    /// The keys of one tenant. The tenant is length-prefixed (`t{bytes}:{tenant}:`), so no
    /// tenant name, whatever it contains, can produce another tenant's key.
    pub(crate) fn tenant(&self, tenant: &str) -> TenantKeys {
        TenantKeys(format!("{}t{}:{}:", self.prefix, tenant.len(), tenant))
    }
}

/// The keys of one tenant: `{prefix}t{len}:{tenant}:` followed by a kind and an ID. Every
/// kind ends with `:` (or is a complete name, `keys`), and only the last part is free
/// text, so keys of different kinds or IDs never coincide.
#[derive(Debug, Clone)]
pub(crate) struct TenantKeys(String);

impl TenantKeys {
    /// The common start of the tenant's keys; scripts append `family:` / `revoked:` and a
    /// family ID to it.
    pub(crate) fn base(&self) -> &str {
        &self.0
    }

    fn join(&self, kind: &str, id: &str) -> String {
        let mut key = String::with_capacity(self.0.len() + kind.len() + id.len());
        key.push_str(&self.0);
        key.push_str(kind);
        key.push_str(id);
        key
    }

    pub(crate) fn client(&self, client_id: &str) -> String {
        self.join("client:", client_id)
    }

    /// The set of the keys issued to a client (codes, refresh tokens, pending requests,
    /// consents), for the cascade of `delete_client`.
    pub(crate) fn by_client(&self, client_id: &str) -> String {
        self.join("by-client:", client_id)
    }

    pub(crate) fn user(&self, username: &str) -> String {
        self.join("user:", username)
    }

    pub(crate) fn code(&self, code_hash: &str) -> String {
        self.join("code:", code_hash)
    }

    pub(crate) fn refresh(&self, token_hash: &str) -> String {
        self.join("refresh:", token_hash)
    }

    /// The set of the refresh token keys of a family. Must match `FAMILY` in the scripts.
    pub(crate) fn family(&self, family_id: &str) -> String {
        self.join("family:", family_id)
    }

    /// The record of a revoked family. Must match `REVOKED` in the scripts.
    pub(crate) fn revoked(&self, family_id: &str) -> String {
        self.join("revoked:", family_id)
    }

    pub(crate) fn access(&self, jti: &str) -> String {
        self.join("access:", jti)
    }

    /// A single-use claim; the namespace is length-prefixed: both parts are free text.
    pub(crate) fn claim(&self, namespace: &str, key: &str) -> String {
        self.join("claim:", &format!("{}:{namespace}:{key}", namespace.len()))
    }

    pub(crate) fn signing_key(&self, kid: &str) -> String {
        self.join("key:", kid)
    }

    /// The set of the tenant's signing key keys.
    pub(crate) fn signing_keys(&self) -> String {
        self.join("keys", "")
    }

    pub(crate) fn pending(&self, id: &str) -> String {
        self.join("pending:", id)
    }

    /// The subject is length-prefixed: both parts are free text.
    pub(crate) fn consent(&self, subject: &str, client_id: &str) -> String {
        self.join(
            "consent:",
            &format!("{}:{subject}:{client_id}", subject.len()),
        )
    }

    /// The set of the keys of the tenant's consents, for `list_consents`.
    pub(crate) fn consents(&self) -> String {
        self.join("consents", "")
    }

    /// The set of the keys of one user's consents, for `list_consents` of a subject.
    pub(crate) fn by_subject(&self, subject: &str) -> String {
        self.join("by-subject:", subject)
    }

    pub(crate) fn session(&self, session_hash: &str) -> String {
        self.join("session:", session_hash)
    }

    pub(crate) fn upstream(&self, account: &str) -> String {
        self.join("upstream:", account)
    }

    /// A device authorization (RFC 8628), by the hash of its device code.
    pub(crate) fn device(&self, device_code_hash: &str) -> String {
        self.join("device:", device_code_hash)
    }

    /// The pointer from the hash of a user code to its device authorization's key.
    pub(crate) fn device_user(&self, user_code_hash: &str) -> String {
        self.join("device-user:", user_code_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_cannot_forge_each_others_keys() {
        let keys = Keys::new("p:");
        assert_eq!(keys.tenant("acme").code("h"), "p:t4:acme:code:h");
        // Tenant "a" with client "b:client:c" vs tenant "a:client:b"... all differ.
        let a = keys.tenant("a").client("x:client:y");
        let b = keys.tenant("a:client:x").client("y");
        assert_ne!(a, b);
        assert_ne!(
            keys.tenant("t").consent("a:b", "c"),
            keys.tenant("t").consent("a", "b:c")
        );
        assert!(!keys.tenant("x").base().starts_with(&keys.expiry()));
        // The consent sets never coincide with a consent, nor with each other.
        let t = keys.tenant("t");
        assert_ne!(t.consents(), t.by_subject(""));
        assert!(!t.consents().starts_with(&t.consent("", "")));
        assert_ne!(t.by_subject("a:b"), t.by_subject("a"));
        assert!(!t.device_user("x").starts_with(&t.device("")));
    }
}
