-- Finding a user's latest event in a room, the implicit read marker of notification counts.
CREATE INDEX events_room_sender ON events (room_id, sender, stream_ordering);
