-- Finding a room's event nearest a point in time (`timestamp_to_event`).
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);
