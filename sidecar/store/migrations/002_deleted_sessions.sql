-- Sessions deleted through the admin API: writes of turns made before the deletion are dropped,
-- so a late outbox entry or journal replay never brings a deleted session back.
CREATE TABLE IF NOT EXISTS deleted_sessions (
    tenant      text        NOT NULL,
    session_id  text        NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, session_id)
);
