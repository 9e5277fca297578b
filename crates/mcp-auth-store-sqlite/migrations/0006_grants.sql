-- One row per grant (token family) instead of family and client indexes on every refresh
-- token, and no client index on codes. A code or refresh token is inserted at the end of its
-- table (its key begins with the time), but each entry of an index by family or by client
-- went to that family's or client's own place in the index: a page of its own written to
-- the log per insert, every rotation. A grant row is written once, when the code is
-- redeemed; rotations only move its expiry forward when it would run out (see
-- `grant_keep_until`).
--
-- A refresh token is usable only while its grant row exists and is not revoked: revoking a
-- family sets `revoked_at`, deleting a client deletes its grant rows. The token rows so cut
-- off stay, unusable, until their expiry sweep. `expires_at` is at or after the expiry of
-- every token of the grant, so the row outlives them and no cut-off token can come back.
CREATE TABLE grants (
    tenant     TEXT    NOT NULL,
    family_id  TEXT    NOT NULL,
    client_id  TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    PRIMARY KEY (tenant, family_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX grants_client ON grants (tenant, client_id, subject);
CREATE INDEX grants_expiry ON grants (expires_at);

INSERT INTO grants (tenant, family_id, client_id, subject, expires_at)
SELECT tenant, family_id, client_id, subject, max(expires_at)
FROM refresh_tokens
GROUP BY tenant, family_id;

UPDATE grants SET revoked_at = (
    SELECT max(0, r.expires_at - 86400) FROM revoked_families r
    WHERE r.tenant = grants.tenant AND r.family_id = grants.family_id
)
WHERE EXISTS (
    SELECT 1 FROM revoked_families r
    WHERE r.tenant = grants.tenant AND r.family_id = grants.family_id
);

-- A deleted client's codes are refused while this record lasts: until the last code stored
-- before the deletion has expired. Registering the same client id again removes it.
CREATE TABLE deleted_clients (
    tenant     TEXT    NOT NULL,
    client_id  TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, client_id)
) STRICT, WITHOUT ROWID;

-- Codes and refresh tokens are rebuilt as WITHOUT ROWID tables, without the family and
-- client indexes: a row is stored once, in its key's order, rather than in a rowid table
-- plus an index of its key (one page less to write per insert). Their only other index is
-- the expiry sweep's.
CREATE TABLE codes_by_key (
    tenant         TEXT    NOT NULL,
    code_hash      TEXT    NOT NULL,
    client_id      TEXT    NOT NULL,
    redirect_uri   TEXT    NOT NULL,
    code_challenge TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    resource       TEXT,
    subject        TEXT    NOT NULL,
    nonce          TEXT,
    expires_at     INTEGER NOT NULL,
    family_id      TEXT    NOT NULL,
    spent_at       INTEGER,
    PRIMARY KEY (tenant, code_hash)
) STRICT, WITHOUT ROWID;
INSERT INTO codes_by_key (tenant, code_hash, client_id, redirect_uri, code_challenge, scope,
                          resource, subject, nonce, expires_at, family_id, spent_at)
SELECT tenant, code_hash, client_id, redirect_uri, code_challenge, scope, resource, subject,
       nonce, expires_at, family_id, spent_at
FROM codes;
DROP TABLE codes;
ALTER TABLE codes_by_key RENAME TO codes;
CREATE INDEX codes_expiry ON codes (expires_at);

CREATE TABLE refresh_tokens_by_key (
    tenant     TEXT    NOT NULL,
    token_hash TEXT    NOT NULL,
    family_id  TEXT    NOT NULL,
    client_id  TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    resource   TEXT,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    rotated_at INTEGER,
    PRIMARY KEY (tenant, token_hash)
) STRICT, WITHOUT ROWID;
INSERT INTO refresh_tokens_by_key (tenant, token_hash, family_id, client_id, subject, scope,
                                   resource, expires_at, created_at, rotated_at)
SELECT tenant, token_hash, family_id, client_id, subject, scope, resource, expires_at,
       created_at, rotated_at
FROM refresh_tokens;
DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_by_key RENAME TO refresh_tokens;
CREATE INDEX refresh_expiry ON refresh_tokens (expires_at);
