-- Sessions you can see and end (engine/src/sessions.rs): when each was last used (NULL: not
-- since it was opened; the idle timeout counts from there), which browser and address opened
-- it, and until when its user confirmed who they are ("sudo mode", engine/src/sudo.rs).
ALTER TABLE sessions ADD COLUMN last_used_at INTEGER;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN client_address TEXT;
ALTER TABLE sessions ADD COLUMN confirmed_until INTEGER;

-- An API key may expire (engine/src/api_keys.rs); NULL: never.
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
