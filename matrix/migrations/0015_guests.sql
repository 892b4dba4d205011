-- Guest accounts: made without a password, allowed a few endpoints only.
ALTER TABLE users ADD COLUMN is_guest BIGINT NOT NULL DEFAULT 0;
