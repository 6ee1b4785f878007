-- API keys for the user's own apps (engine/src/api_keys.rs). A key reads `sgk_<id>_<secret>`:
-- the id is public and finds the row, only a SHA-256 of the secret is kept, so a copy of the
-- database cannot be replayed as a key. Revoking deletes the row.
CREATE TABLE api_keys (
    id           TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    secret_hash  TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys(user_id);

-- The connected accounts a key may read. A removed account (or key) takes its rows with it.
CREATE TABLE api_key_accounts (
    key_id     TEXT    NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL REFERENCES connected_accounts(id) ON DELETE CASCADE,
    PRIMARY KEY (key_id, account_id)
);
CREATE INDEX api_key_accounts_by_account ON api_key_accounts(account_id);
