-- Postgres translation of migrations/sqlite/0017_key_check.sql.
CREATE TABLE key_check (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    sealed     BYTEA  NOT NULL,
    created_at BIGINT NOT NULL
);
