-- TOTP second factor. The secret is sealed with AES-256-GCM (engine/src/crypto.rs), bound to
-- its user id as associated data; it is never stored in clear.
CREATE TABLE totp_credentials (
    user_id       INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret_sealed BLOB    NOT NULL,
    digits        INTEGER NOT NULL,
    -- The web TOTP provider's id for this seed; NULL when enrolled with an authenticator app.
    seed_id       TEXT,
    enabled_at    INTEGER NOT NULL
);

-- The last accepted time step per user (RFC 6238 §5.2: a code is accepted once). Kept when 2FA
-- is turned off and on again, so an old code never becomes valid a second time.
CREATE TABLE totp_used_steps (
    user_id   INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    last_step INTEGER NOT NULL
);

-- Single-use registration tokens for enrolment through the web TOTP provider (hash only).
CREATE TABLE totp_registrations (
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
);

-- Authenticator-app enrolment waiting for its first code.
CREATE TABLE totp_pending (
    user_id       INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret_sealed BLOB    NOT NULL,
    expires_at    INTEGER NOT NULL
);

-- Wrong second-factor codes per account, across flows (RFC 4226 §7.3).
CREATE TABLE second_factor_failures (
    user_id         INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    failures        INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL
);

-- What the browser is shown at a flow's current step (engine/src/view.rs), as JSON.
ALTER TABLE flows ADD COLUMN view TEXT;
