-- Postgres translation of migrations/sqlite/0005_flow_state_as_bytes.sql. SQLite keeps the
-- bytes in the TEXT column as they are; Postgres needs the column to become BYTEA.

-- Sealed flow state is stored as bytes (a BLOB) instead of hex text: about 1 KB less per waiting
-- flow. Flows written as hex cannot be read back; they live ten minutes at most.
DELETE FROM flows;
ALTER TABLE flows ALTER COLUMN state TYPE BYTEA USING convert_to(state, 'UTF8');
