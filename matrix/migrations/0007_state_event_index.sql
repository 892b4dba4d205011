-- The changes of one piece of state in a room (a user's membership, the history visibility),
-- in stream order: who may see which event is read from them.
CREATE INDEX events_room_state ON events (room_id, event_type, state_key, stream_ordering);
