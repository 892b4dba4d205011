-- An event's edges are read from the event itself (its `prev_events` and `auth_events`), so
-- that storing an event writes nothing beside it to keep in step.
DROP TABLE event_edges;
DROP TABLE event_auth;
