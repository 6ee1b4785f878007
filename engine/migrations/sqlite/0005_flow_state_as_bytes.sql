-- Sealed flow state is stored as bytes (a BLOB) instead of hex text: about 1 KB less per waiting
-- flow. Flows written as hex cannot be read back; they live ten minutes at most.
DELETE FROM flows;
