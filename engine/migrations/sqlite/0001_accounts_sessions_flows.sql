-- Local accounts. The email is stored normalised (trimmed, lower case) so UNIQUE catches
-- "A@x.org" vs "a@x.org".
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

-- Signed-in sessions. Only a SHA-256 of the cookie value is stored, so a copy of the database
-- cannot be replayed as cookies.
CREATE TABLE sessions (
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- Flows under way (see engine/src/flow.rs). `state` is the provider's private JSON.
CREATE TABLE flows (
    id         TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    provider   TEXT    NOT NULL,
    step       TEXT    NOT NULL,
    owner      TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    state      TEXT    NOT NULL
);
CREATE INDEX flows_by_expiry ON flows(expires_at);
