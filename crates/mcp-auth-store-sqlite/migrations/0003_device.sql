-- Device authorization requests (RFC 8628). Keyed by the hash of the device code; found by
-- the hash of the normalized user code, unique per tenant (an expired row holding a user
-- code is deleted by put_device before another takes it). status is pending, approved,
-- denied or consumed; poll_device and decide_device change it under the write lock.
CREATE TABLE device_authorizations (
    tenant           TEXT    NOT NULL,
    device_code_hash TEXT    NOT NULL,
    user_code_hash   TEXT    NOT NULL,
    client_id        TEXT    NOT NULL,
    scope            TEXT    NOT NULL,
    resource         TEXT,
    interval_secs    INTEGER NOT NULL,
    status           TEXT    NOT NULL,
    subject          TEXT,
    granted_scope    TEXT,
    last_poll        INTEGER,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant, device_code_hash)
) STRICT;
CREATE UNIQUE INDEX device_authorizations_user_code
    ON device_authorizations (tenant, user_code_hash);
CREATE INDEX device_authorizations_client ON device_authorizations (tenant, client_id);
CREATE INDEX device_authorizations_expiry ON device_authorizations (expires_at);
