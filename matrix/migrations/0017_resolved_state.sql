-- A room's current state group: the resolution of the states after its forward extremities.
-- It is the state after the last accepted event while the room has one extremity; a group
-- made by state resolution (numbered by the negated stream position of the event whose
-- arrival caused it) when the room forked.
ALTER TABLE rooms ADD COLUMN current_state_group BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET current_state_group = COALESCE((
    SELECT e.state_group FROM events e WHERE e.room_id = rooms.room_id
    ORDER BY e.stream_ordering DESC LIMIT 1), 0);

-- Changes of a room's current state that no new event of the stream shows: an entry that
-- state resolution put back or replaced, at the stream position of the event that made the
-- room resolve. Sync reports them with the state changes of that position.
CREATE TABLE current_state_delta (
    stream_ordering BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL
);
CREATE INDEX current_state_delta_room ON current_state_delta (room_id, stream_ordering);
