-- Media of other servers fetched for local clients (`/_matrix/federation/v1/media/download`),
-- kept under a local id in the media directory.
CREATE TABLE remote_media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    local_id TEXT NOT NULL,
    content_type TEXT,
    filename TEXT,
    size BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id)
);
