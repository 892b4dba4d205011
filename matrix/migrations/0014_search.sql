-- Full-text search (`/search`): the words of each searchable field of an event (`content.body`,
-- `content.name`, `content.topic`), lowercased, with the first three characters of each word
-- indexed so that words are found by their beginning.
CREATE TABLE event_search (
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    field TEXT NOT NULL,
    term TEXT NOT NULL,
    term_prefix TEXT NOT NULL,
    occurrences BIGINT NOT NULL,
    PRIMARY KEY (event_id, field, term)
);
CREATE INDEX event_search_prefix ON event_search (term_prefix, room_id);
