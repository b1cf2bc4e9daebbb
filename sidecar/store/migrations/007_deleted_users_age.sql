-- Retention prunes user tombstones by age, like session tombstones (deleted_sessions_deleted_at).
CREATE INDEX IF NOT EXISTS deleted_users_deleted_at ON deleted_users (deleted_at);
