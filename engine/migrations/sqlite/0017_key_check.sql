-- A value sealed with the master key when the database is first opened with it: opening it
-- again at every start tells a wrong key (another instance's, a lost one) at once, instead of
-- as failed sign-ins and unreadable accounts later.
CREATE TABLE key_check (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    sealed     BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
