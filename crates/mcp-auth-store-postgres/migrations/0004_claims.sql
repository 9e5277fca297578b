-- Single-use claims (Store::claim_once): the jti of each jwt-bearer grant assertion (RFC 7523
-- §3), held until the assertion expires; missing once expires_at <= now. key_hash is the
-- hash of the claimed value, never the value.
CREATE TABLE claims (
    tenant     TEXT   NOT NULL,
    namespace  TEXT   NOT NULL,
    key_hash   TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, namespace, key_hash)
);
CREATE INDEX claims_expiry ON claims (expires_at);
