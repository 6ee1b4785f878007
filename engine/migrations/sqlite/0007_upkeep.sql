-- Token upkeep (engine/src/upkeep.rs): when each account is next renewed (a margin before its
-- tokens expire, at least daily), when it last was, how many renewals in a row could not reach
-- the provider (for the back-off), and the lease that keeps two workers (or two instances) from
-- renewing one account at once.
ALTER TABLE connected_accounts ADD COLUMN renew_due_at INTEGER;
ALTER TABLE connected_accounts ADD COLUMN renewed_at INTEGER;
ALTER TABLE connected_accounts ADD COLUMN renew_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connected_accounts ADD COLUMN lease_until INTEGER;
ALTER TABLE connected_accounts ADD COLUMN lease_owner TEXT;
CREATE INDEX connected_accounts_by_due ON connected_accounts(renew_due_at);
