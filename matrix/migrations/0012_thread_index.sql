-- Listing a room's threads (`/threads`) reads its thread relations by room.
CREATE INDEX event_relations_room ON event_relations (room_id, rel_type);
