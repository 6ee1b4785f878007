-- Who may sign up, and the admin who decides (engine/src/registration.rs, engine/src/admin.rs).
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
-- Set while an admin has the account disabled: it cannot sign in, its API keys are refused.
ALTER TABLE users ADD COLUMN disabled_at INTEGER;
ALTER TABLE users ADD COLUMN last_sign_in_at INTEGER;

-- The first admin: one row at most (the key can only be 1). The registration that inserts it
-- is the admin, in the same transaction as its user, so two first registrations at once cannot
-- both become admin.
CREATE TABLE first_admin (
    slot    INTEGER PRIMARY KEY CHECK (slot = 1),
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE
);
-- An installation that had accounts before admins existed: its oldest account (never the demo
-- account) is the admin, so no stranger can claim the slot by registering next.
INSERT INTO first_admin (slot, user_id)
    SELECT 1, id FROM users WHERE email <> 'demo@stepgate.test' ORDER BY id LIMIT 1;
UPDATE users SET is_admin = 1 WHERE id IN (SELECT user_id FROM first_admin);

-- Invite links made by admins: single use, 7 days. Only the SHA-256 of the token is kept (the
-- link is shown once), so a copy of the database cannot be replayed as invites.
CREATE TABLE invites (
    digest     TEXT    PRIMARY KEY,
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    used_by    INTEGER REFERENCES users(id) ON DELETE SET NULL
);
CREATE INDEX invites_by_creation ON invites(created_at);

-- Every admin act: who, what, whom, when. Emails are copied in, so the log still reads right
-- after an account is gone.
CREATE TABLE admin_audit (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    admin_id     INTEGER REFERENCES users(id) ON DELETE SET NULL,
    admin_email  TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    target_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    target_email TEXT
);
CREATE INDEX admin_audit_by_time ON admin_audit(at, id);
