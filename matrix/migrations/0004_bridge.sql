-- The bridge between XMPP and Matrix.

-- The direct room of a local account and an XMPP user, created once and used from then on.
CREATE TABLE xmpp_direct_rooms (
    local_user TEXT NOT NULL,
    remote_jid TEXT NOT NULL,
    room_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (local_user, remote_jid)
);

-- Which Matrix event a message of an XMPP sender is, and the other way: ids of XMPP
-- messages are chosen by their senders, so they are unique per sender only.
CREATE TABLE xmpp_messages (
    room_id TEXT NOT NULL,
    sender_jid TEXT NOT NULL,
    xmpp_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, sender_jid, xmpp_id)
);
CREATE INDEX xmpp_messages_event ON xmpp_messages (event_id);
