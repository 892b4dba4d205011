-- The stripped state that came with an invite to a room of another server, which this server
-- has no copy of: what a client is shown of the room until the user joins or rejects.
CREATE TABLE invite_state (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
