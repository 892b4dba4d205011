-- Other servers' signing keys, kept across restarts: each key by id with until when it
-- verifies (the lesser of the document's `valid_until_ts` and a week after it was fetched, or
-- an old key's `expired_ts`), and the latest key document of each server as it came (served
-- again to servers asking this one as a notary).
CREATE TABLE remote_server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key TEXT NOT NULL,
    valid_until BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

CREATE TABLE remote_key_documents (
    server_name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    valid_until BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
