-- Postgres translation of migrations/sqlite/0016_sign_in_links.sql (BIGINT for INTEGER, BYTEA
-- for BLOB).

-- Sign-in links (engine/src/accounts/sign_in_links.rs): a single-use link that opens one
-- connected account's sign-in steps for whoever holds the phone, 24 hours. The token is never
-- stored: `digest` is its SHA-256, and `id` its public half, so a copy of the database opens
-- no link. `made_for` is `owner` (made on the account's page, shown once) or `apps` (for the
-- owner's apps: the `account.needs_sign_in` webhook and the API). A link ends when its account
-- is signed in through it (`used_at`), when the owner revokes it (`revoked_at`), when it
-- expires, or with its account.
CREATE TABLE sign_in_links (
    id         TEXT    PRIMARY KEY,
    user_id    BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    account_id BIGINT  NOT NULL REFERENCES connected_accounts(id) ON DELETE CASCADE,
    digest     TEXT    NOT NULL,
    made_for   TEXT    NOT NULL CHECK (made_for IN ('owner', 'apps')),
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX sign_in_links_by_account ON sign_in_links(account_id, created_at);
CREATE INDEX sign_in_links_by_expiry ON sign_in_links(expires_at);
-- At most one open apps' link per account, so two instances asked at once hand out the same
-- one (an expired one is closed before another is made).
CREATE UNIQUE INDEX sign_in_links_one_for_apps ON sign_in_links(account_id)
    WHERE made_for = 'apps' AND used_at IS NULL AND revoked_at IS NULL;

-- The owner's opt-in: their apps get sign-in links (webhook and API). Off by default.
ALTER TABLE users ADD COLUMN sign_in_links_for_apps BIGINT NOT NULL DEFAULT 0;

-- What a delivery carries that the database must not hold in clear (a sign-in link), sealed
-- bound to the delivery's id and put into the body's `data` only when it is sent.
ALTER TABLE webhook_deliveries ADD COLUMN sealed_data BYTEA;
