-- First-factor throttling (OWASP ASVS V2.2.1), per account and per client address, kept across
-- flows and restarts (engine/src/sign_in_throttle.rs). `key` is a SHA-256, never the typed email
-- or the address itself.
CREATE TABLE sign_in_throttle (
    scope        TEXT    NOT NULL, -- 'account' or 'address'
    key          TEXT    NOT NULL,
    failures     INTEGER NOT NULL, -- password checks in this window not (yet) followed by success
    window_start INTEGER NOT NULL, -- the counters start over an hour after this
    next_try_at  INTEGER NOT NULL, -- no check before this (unix seconds)
    PRIMARY KEY (scope, key)
);
