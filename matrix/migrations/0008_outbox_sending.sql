-- Whether an attempt of an outbox entry is under way (its outcome will be reported), as
-- opposed to waiting for its next attempt.
ALTER TABLE xmpp_outbox ADD COLUMN sending BIGINT NOT NULL DEFAULT 0;
