-- Single-use recovery codes (engine/src/second_factor/recovery_codes.rs): only each code's
-- SHA-256 digest, bound to its user; using a code deletes its row, a new set replaces the old.
CREATE TABLE recovery_codes (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    digest     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, digest)
);
