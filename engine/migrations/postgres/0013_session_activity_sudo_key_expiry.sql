-- Postgres translation of migrations/sqlite/0013_session_activity_sudo_key_expiry.sql.
ALTER TABLE sessions ADD COLUMN last_used_at BIGINT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN client_address TEXT;
ALTER TABLE sessions ADD COLUMN confirmed_until BIGINT;

ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
