-- What happened to each connected account (engine/src/events.rs): connected, signed in again,
-- renewed, failures with their codes, reads by the user's apps (which API key), removed. Never a
-- secret. Kept when the account is removed (its last entry says so); gone with its user.
CREATE TABLE account_audit (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    code       TEXT,
    api_key    TEXT -- the public part of the API key (sgk_<id>), for reads
);
CREATE INDEX account_audit_by_account ON account_audit(account_id, id);
