-- How far a reader of the event stream (the bridge's sender to XMPP) has handled it, so that
-- it goes on from there after a restart.
CREATE TABLE stream_cursors (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);

-- The relation of each event that has one (`m.relates_to`: annotations, replacements,
-- threads, references), kept when the event is redacted.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    relates_to TEXT NOT NULL,
    aggregation_key TEXT
);
CREATE INDEX event_relations_target ON event_relations (relates_to, rel_type);

-- Receipts of every room by position, for readers of the whole stream.
CREATE INDEX receipts_position ON receipts (stream_ordering);

-- Messages of local accounts that could not be delivered to XMPP yet: retried until they are
-- (or for a day), with the notice that tells the sender.
CREATE TABLE xmpp_outbox (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    first_failure_ts BIGINT NOT NULL,
    next_attempt_ts BIGINT NOT NULL,
    notice_event_id TEXT
);
CREATE INDEX xmpp_outbox_due ON xmpp_outbox (next_attempt_ts);

-- Presence subscriptions between local accounts and XMPP users (RFC 6121 §3).
CREATE TABLE xmpp_subscriptions (
    local_user TEXT NOT NULL,
    remote_jid TEXT NOT NULL,
    -- The local account receives the XMPP user's presence.
    to_remote BIGINT NOT NULL,
    -- The XMPP user receives the local account's presence.
    from_remote BIGINT NOT NULL,
    -- The local account asked for the XMPP user's presence and has no answer yet.
    pending_out BIGINT NOT NULL,
    -- The XMPP user refused or revoked the local account's subscription: not asked again.
    declined BIGINT NOT NULL,
    -- The XMPP user asked for the local account's presence: the notice that asks the account.
    request_event_id TEXT,
    PRIMARY KEY (local_user, remote_jid)
);
CREATE INDEX xmpp_subscriptions_request ON xmpp_subscriptions (request_event_id);
