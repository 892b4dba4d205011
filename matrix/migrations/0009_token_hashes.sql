-- Access tokens are stored as their SHA-256 (hex): a copy of the database lets nobody act as
-- a user. Tokens stored before are hashed when the store opens (`hashed` = 0 until then).
ALTER TABLE access_tokens ADD COLUMN hashed BIGINT NOT NULL DEFAULT 0;
