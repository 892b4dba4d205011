-- XMPP MUCs as Matrix rooms: the portal room of each MUC (made once, when a Matrix user first
-- joins its alias `#_xmpp_...`), and the Matrix members who are occupants of the MUC through it.
CREATE TABLE muc_portals (
    muc_jid TEXT PRIMARY KEY,
    room_id TEXT NOT NULL UNIQUE,
    created_ts BIGINT NOT NULL
);

-- A Matrix member of a portal as an occupant of its MUC: from their own JID (the resource
-- `resource`), under `nick`; `last_seen` is the time of the last message from the MUC, for
-- the history asked for when joining again.
CREATE TABLE muc_sessions (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    muc_jid TEXT NOT NULL,
    resource TEXT NOT NULL,
    nick TEXT NOT NULL,
    last_seen BIGINT,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX muc_sessions_muc ON muc_sessions (muc_jid);
