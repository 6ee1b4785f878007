-- Account health (engine/src/account_health.rs): when a check of the account's kept secrets was
-- last started and finished, and what the last unreachable check answered. `status` is 'active',
-- 'needs_sign_in' (the upstream refused the secrets) or 'degraded' (it could not be asked).
ALTER TABLE connected_accounts ADD COLUMN checked_at INTEGER;
ALTER TABLE connected_accounts ADD COLUMN check_finished_at INTEGER;
ALTER TABLE connected_accounts ADD COLUMN last_error TEXT;
