-- One index instead of two for the refresh tokens of a client: (tenant, client_id) served
-- deleting a client, (tenant, subject, client_id) withdrawing a user's consent; with the
-- client first, one index serves both (the second query compares both columns for
-- equality). Every refresh token written touched each index at its own place: one less
-- index page to write per token.
DROP INDEX refresh_client;
DROP INDEX refresh_subject;
CREATE INDEX refresh_client_subject ON refresh_tokens (tenant, client_id, subject);
