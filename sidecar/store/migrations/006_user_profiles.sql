-- What users said about themselves, kept across their sessions. ``fact_times`` holds when each
-- fact was stated, so a write delivered late never replaces a newer statement of the same fact.
CREATE TABLE IF NOT EXISTS user_profiles (
    tenant      text        NOT NULL,
    user_id     text        NOT NULL,
    facts       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    fact_times  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, user_id)
);

-- Users deleted through the admin API: writes of turns asked before the deletion are dropped,
-- for every session stored under the user's scope (``<tenant>/<user>``) and for the profile.
CREATE TABLE IF NOT EXISTS deleted_users (
    tenant      text        NOT NULL,
    user_id     text        NOT NULL,
    scope       text        NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, user_id)
);
CREATE INDEX IF NOT EXISTS deleted_users_scope ON deleted_users (scope);
