-- Passkeys (engine/src/second_factor/passkeys.rs): each row is one WebAuthn credential's
-- public key and counters, never private material (that stays in the authenticator).
-- `credential_id` is the credential's id (base64url); `user_handle` is the account's WebAuthn
-- user id (a random UUID, the same on all of a user's passkeys), which a discoverable sign-in
-- names; `passkey` is webauthn-rs's record (public key, counter, backup flags) as JSON, and
-- `counter` its signature counter, kept apart so that a counter going back is refused in the
-- same UPDATE that records a use.
CREATE TABLE passkeys (
    credential_id TEXT    PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    user_handle   TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    passkey       TEXT    NOT NULL,
    counter       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX passkeys_by_user ON passkeys(user_id);
