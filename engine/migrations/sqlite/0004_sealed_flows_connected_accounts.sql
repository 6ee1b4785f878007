-- Flow state is sealed from now on (AES-256-GCM, bound to the flow id; hex in `state`): flows
-- stored in the old clear form cannot go on. They live ten minutes at most.
DELETE FROM flows;

-- Third-party accounts connected by a user. The provider's tokens and cookies are sealed
-- (AES-256-GCM) with the user id, provider and account key as associated data.
CREATE TABLE connected_accounts (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider       TEXT    NOT NULL,
    -- The provider's stable id for the account (a login, a user id): one connection per user.
    account_key    TEXT    NOT NULL,
    display_name   TEXT    NOT NULL,
    secrets_sealed BLOB    NOT NULL,
    status         TEXT    NOT NULL DEFAULT 'active',
    connected_at   INTEGER NOT NULL,
    UNIQUE (user_id, provider, account_key)
);
CREATE INDEX connected_accounts_by_user ON connected_accounts(user_id);
