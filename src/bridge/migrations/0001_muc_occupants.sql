-- The bridge's own tables, beside the homeserver's in the same database: the homeserver
-- knows nothing of XMPP. Applied by the bridge at start-up (its own migration table).

-- XMPP users in Matrix rooms through the MUC service (`room@muc.example.org/Nick`): each
-- resource that joined, with the nickname it has there. The Matrix side of an occupant is its
-- ghost's membership; this is where the XMPP side's presence goes.
CREATE TABLE muc_occupants (
    room_id TEXT NOT NULL,
    occupant_jid TEXT NOT NULL,
    -- The room's address as the occupant joined it (an alias's or the room id's): what it is
    -- sent from.
    room_jid TEXT NOT NULL,
    nick TEXT NOT NULL,
    -- The stream position up to which the occupant was given the room on joining: later
    -- events reach it live.
    since_position BIGINT NOT NULL,
    joined_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, occupant_jid)
);
CREATE INDEX muc_occupants_jid ON muc_occupants (occupant_jid);
