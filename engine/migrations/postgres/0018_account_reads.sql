-- Apps' credential reads, counted instead of logged one by one (engine/src/apps/read_counts.rs):
-- one row per account, API key and minute, added to in batches by a background writer, so a
-- read writes no commit of its own. Kept when the account is removed, like its audit log.
CREATE TABLE account_reads (
    user_id    BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    account_id BIGINT  NOT NULL,
    api_key    TEXT    NOT NULL, -- the public part of the API key (sgk_<id>)
    minute     BIGINT  NOT NULL, -- unix seconds / 60
    reads      BIGINT  NOT NULL,
    last_at    BIGINT  NOT NULL, -- the minute's last read, unix seconds
    PRIMARY KEY (account_id, api_key, minute)
);
