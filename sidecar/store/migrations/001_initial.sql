-- Sessions, their messages and token usage. Rows are scoped by tenant everywhere.
CREATE TABLE IF NOT EXISTS sessions (
    tenant        text        NOT NULL,
    session_id    text        NOT NULL,
    context       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    tokens_used   bigint      NOT NULL DEFAULT 0,
    message_count integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, session_id)
);

CREATE TABLE IF NOT EXISTS messages (
    id          uuid        PRIMARY KEY,
    tenant      text        NOT NULL,
    session_id  text        NOT NULL,
    seq         bigint      NOT NULL,
    role        text        NOT NULL CHECK (role IN ('user', 'assistant')),
    content     text        NOT NULL,
    tokens      integer,
    turn_id     uuid        NOT NULL,
    partial     boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session_seq ON messages (tenant, session_id, seq);

CREATE TABLE IF NOT EXISTS token_usage (
    id                uuid        PRIMARY KEY,
    tenant            text        NOT NULL,
    session_id        text        NOT NULL,
    model             text        NOT NULL DEFAULT '',
    prompt_tokens     integer     NOT NULL DEFAULT 0,
    completion_tokens integer     NOT NULL DEFAULT 0,
    total_tokens      integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS token_usage_session ON token_usage (tenant, session_id);
