-- Postgres translation of migrations/sqlite/0009_webhooks.sql (BYTEA for BLOB).

-- Webhooks (engine/src/webhooks.rs): one URL per user, and the events sent to it.
-- The signing secret is kept sealed (AES-GCM bound to the user, crypto.rs): signing needs it
-- back, so it cannot be a hash, and a copy of the database must not be able to sign.
CREATE TABLE webhook_endpoints (
    user_id       BIGINT  PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    url           TEXT    NOT NULL,
    secret_sealed BYTEA   NOT NULL,
    created_at    BIGINT  NOT NULL
);

-- One row per event sent (or to send) to a user's URL. `status` is pending, delivered or
-- failed (retries used up, or the URL removed); a pending row is sent at `next_attempt_at` by
-- whoever leases it first (`lease_until`/`lease_owner`), so two instances never send one
-- delivery at the same time.
CREATE TABLE webhook_deliveries (
    id              TEXT    PRIMARY KEY,
    -- SQLite's implicit rowid, spelled out: the delivery log's tie-break for equal created_at.
    rowid           BIGINT  GENERATED ALWAYS AS IDENTITY,
    user_id         BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    event_type      TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending',
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    delivered_at    BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    lease_until     BIGINT,
    lease_owner     TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_user ON webhook_deliveries(user_id, created_at);
