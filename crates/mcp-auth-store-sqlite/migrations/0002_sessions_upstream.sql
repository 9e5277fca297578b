-- Browser login sessions and upstream identity provider tokens (proxy-provider mode).

-- Login sessions, by the hash of the cookie's value; missing once expires_at <= now.
CREATE TABLE sessions (
    tenant       TEXT    NOT NULL,
    session_hash TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    provider     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, session_hash)
) STRICT;
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- An account's upstream tokens, sealed by the server (the store never sees them in the
-- clear). version is compared and replaced in one UPDATE by swap_upstream.
CREATE TABLE upstream_tokens (
    tenant     TEXT    NOT NULL,
    account    TEXT    NOT NULL,
    provider   TEXT    NOT NULL,
    sealed     TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, account)
) STRICT;
CREATE INDEX upstream_tokens_expiry ON upstream_tokens (expires_at);

-- revoke_client_grants looks up a user's refresh tokens for a client.
CREATE INDEX refresh_subject ON refresh_tokens (tenant, subject, client_id);
