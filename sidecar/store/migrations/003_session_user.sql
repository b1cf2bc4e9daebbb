-- The user a session belongs to (jwt user_claim, X-User-ID); null when the identity has none.
-- Such a session is stored under the tenant '<tenant>/<user>', so the key stays (tenant, session_id).
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS user_id text;
