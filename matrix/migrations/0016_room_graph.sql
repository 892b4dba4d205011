-- The room graph: each event's edges to the events it follows (`prev_events`) and to those that
-- authorise it (`auth_events`), the state before it, and whether it is an outlier (known
-- without its place in the room), soft-failed (accepted in the graph, shown to nobody) or
-- rejected (with the reason).
CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
);

ALTER TABLE events ADD COLUMN state_group_before BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN outlier BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN soft_failed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN rejected_reason TEXT;

-- A room's events in topological order: depth, then arrival.
CREATE INDEX events_room_topological ON events (room_id, depth, stream_ordering);
