-- Storage of the mcp-auth authorization server, on PostgreSQL: the same tables as the SQLite
-- backend. Every table is keyed by tenant first, and every query names the tenant, so no
-- query can return another tenant's row.
-- Times are seconds since the Unix epoch (BIGINT); a row with expires_at <= now is expired.
-- JSON is kept as the text the server wrote (not JSONB), so objects keep their key order
-- when they are served back (registration responses echo the client metadata).
-- Unqualified names: the tables go into the store's schema (first on its search_path).

CREATE TABLE clients (
    tenant                  TEXT   NOT NULL,
    client_id               TEXT   NOT NULL,
    secret_hash             TEXT,
    metadata                TEXT   NOT NULL,  -- RFC 7591 metadata, JSON
    registration_kind       TEXT   NOT NULL,
    registration_token_hash TEXT,
    created_at              BIGINT NOT NULL,
    expires_at              BIGINT,
    PRIMARY KEY (tenant, client_id)
);
CREATE INDEX clients_expiry ON clients (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE users (
    tenant        TEXT   NOT NULL,
    username      TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant, username)
);

-- Authorization codes; spent_at is set by the one redemption and the row stays as a
-- tombstone until expires_at, to recognise replays (RFC 6749 §4.1.2).
CREATE TABLE codes (
    tenant         TEXT   NOT NULL,
    code_hash      TEXT   NOT NULL,
    client_id      TEXT   NOT NULL,
    redirect_uri   TEXT   NOT NULL,
    code_challenge TEXT   NOT NULL,
    scope          TEXT   NOT NULL,
    resource       TEXT,
    subject        TEXT   NOT NULL,
    nonce          TEXT,
    expires_at     BIGINT NOT NULL,
    family_id      TEXT   NOT NULL,
    spent_at       BIGINT,
    PRIMARY KEY (tenant, code_hash)
);
CREATE INDEX codes_client ON codes (tenant, client_id);
CREATE INDEX codes_expiry ON codes (expires_at);

-- Refresh tokens; rotated_at is set by the one rotation and the row stays as a tombstone
-- until expires_at, to recognise reuse (RFC 9700 §4.14.2).
CREATE TABLE refresh_tokens (
    tenant     TEXT   NOT NULL,
    token_hash TEXT   NOT NULL,
    family_id  TEXT   NOT NULL,
    client_id  TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    scope      TEXT   NOT NULL,
    resource   TEXT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT,
    PRIMARY KEY (tenant, token_hash)
);
CREATE INDEX refresh_family ON refresh_tokens (tenant, family_id);
CREATE INDEX refresh_client ON refresh_tokens (tenant, client_id);
CREATE INDEX refresh_expiry ON refresh_tokens (expires_at);

-- Families revoked recently, so a refresh token stored for one afterwards is refused.
CREATE TABLE revoked_families (
    tenant     TEXT   NOT NULL,
    family_id  TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, family_id)
);
CREATE INDEX revoked_families_expiry ON revoked_families (expires_at);

CREATE TABLE revoked_access_tokens (
    tenant     TEXT   NOT NULL,
    jti        TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, jti)
);
CREATE INDEX revoked_access_expiry ON revoked_access_tokens (expires_at);

CREATE TABLE signing_keys (
    tenant      TEXT   NOT NULL,
    kid         TEXT   NOT NULL,
    alg         TEXT   NOT NULL,
    private_pem TEXT   NOT NULL,
    public_jwk  TEXT   NOT NULL,  -- JSON
    created_at  BIGINT NOT NULL,
    not_after   BIGINT,
    PRIMARY KEY (tenant, kid)
);

CREATE TABLE pending_authorizations (
    tenant                TEXT   NOT NULL,
    id                    TEXT   NOT NULL,
    client_id             TEXT   NOT NULL,
    redirect_uri          TEXT   NOT NULL,
    response_type         TEXT   NOT NULL,
    scope                 TEXT,
    state                 TEXT,
    code_challenge        TEXT   NOT NULL,
    code_challenge_method TEXT   NOT NULL,
    resource              TEXT,
    nonce                 TEXT,
    prompt                TEXT,
    login_hint            TEXT,
    extra                 TEXT   NOT NULL,  -- JSON object
    subject               TEXT,
    csrf_hash             TEXT   NOT NULL,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX pending_client ON pending_authorizations (tenant, client_id);
CREATE INDEX pending_expiry ON pending_authorizations (expires_at);

CREATE TABLE consents (
    tenant     TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    client_id  TEXT   NOT NULL,
    scope      TEXT   NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, subject, client_id)
);
CREATE INDEX consents_client ON consents (tenant, client_id);
