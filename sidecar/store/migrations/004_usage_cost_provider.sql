-- What a backend says a turn cost and which provider served it, per usage row. A turn answered by
-- several models (a task's per-model breakdown) has one row per model. Nullable: most backends
-- report no cost, and rows written before this migration have neither.
ALTER TABLE token_usage ADD COLUMN IF NOT EXISTS cost double precision;
ALTER TABLE token_usage ADD COLUMN IF NOT EXISTS provider text;
