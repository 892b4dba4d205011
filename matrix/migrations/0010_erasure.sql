-- Accounts deactivated with erasure: their profile and data are gone, and the content of
-- their events is served redacted to whoever was not in the room when they were sent.
ALTER TABLE users ADD COLUMN erased BIGINT NOT NULL DEFAULT 0;
