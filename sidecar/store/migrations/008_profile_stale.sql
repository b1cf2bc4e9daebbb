-- Users whose profile's Redis copy is stale: a fact was written straight to PostgreSQL while
-- Redis was away (or by a journal replay). Kept here, not in one process's memory, so every
-- replica drops that copy once Redis answers; the next load restores it from user_profiles.
CREATE TABLE IF NOT EXISTS redis_stale_profiles (
    tenant     text        NOT NULL,
    user_id    text        NOT NULL,
    marked_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, user_id)
);
