-- No two messages of a session under one seq. Rows stored twice under one (tenant, session_id,
-- seq) before this key existed are all kept: the first written (then the smallest id) keeps its
-- seq, the others move after the session's highest seq, in the order they were written.
WITH ranked AS (
    SELECT id, tenant, session_id, created_at,
           row_number() OVER (PARTITION BY tenant, session_id, seq ORDER BY created_at, id) AS rn
    FROM messages
), clashing AS (
    SELECT * FROM ranked WHERE rn > 1
), tops AS (
    SELECT m.tenant, m.session_id, max(m.seq) AS top
    FROM messages m
    JOIN (SELECT DISTINCT tenant, session_id FROM clashing) c USING (tenant, session_id)
    GROUP BY 1, 2
), moved AS (
    SELECT c.id,
           t.top + row_number() OVER (PARTITION BY c.tenant, c.session_id
                                      ORDER BY c.created_at, c.id) AS new_seq
    FROM clashing c JOIN tops t USING (tenant, session_id)
)
UPDATE messages SET seq = moved.new_seq FROM moved WHERE messages.id = moved.id;

-- The unique index also serves the restore query (last N messages of a session by seq).
CREATE UNIQUE INDEX IF NOT EXISTS messages_session_seq_key ON messages (tenant, session_id, seq);
DROP INDEX IF EXISTS messages_session_seq;

-- Sessions whose Redis copy is stale: a turn was written straight to PostgreSQL (Redis away,
-- a journal replay) or renumbered on a seq conflict, or the session was deleted while Redis was
-- away (deleted_at_ms, Redis's clock). Kept here, not in one process's memory, so every replica
-- drops such a copy (it is then restored from PostgreSQL) once Redis answers.
CREATE TABLE IF NOT EXISTS redis_stale (
    tenant         text        NOT NULL,
    session_id     text        NOT NULL,
    marked_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at_ms  bigint,
    PRIMARY KEY (tenant, session_id)
);

-- Retention (postgres.retention_days) deletes old rows in batches chosen by these.
CREATE INDEX IF NOT EXISTS messages_created_at ON messages (created_at);
CREATE INDEX IF NOT EXISTS token_usage_created_at ON token_usage (created_at);
CREATE INDEX IF NOT EXISTS deleted_sessions_deleted_at ON deleted_sessions (deleted_at);
CREATE INDEX IF NOT EXISTS sessions_updated_at ON sessions (updated_at);
