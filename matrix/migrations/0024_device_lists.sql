-- Local users' device changes in stream order, one row per change of one device (added, keys
-- changed, deleted) or of a user's cross-signing keys (no device): the chain of
-- `stream_id`/`prev_id` that `m.device_list_update` EDUs carry to other servers.
CREATE TABLE device_list_stream (
    stream_ordering BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT,
    deleted INTEGER NOT NULL
);
CREATE INDEX device_list_stream_user ON device_list_stream (user_id, stream_ordering);

-- Other servers' users' device lists as last learnt from their servers (`user/devices`), kept
-- up to date by their `m.device_list_update` EDUs while the chain of `prev_id`s holds, dropped
-- (to be asked again) when it breaks or when the user starts sharing a room with a local user
-- again. `devices` is a JSON object: device id to the device's keys as `keys/query` shows them.
CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    devices TEXT NOT NULL,
    master_key TEXT,
    self_signing_key TEXT
);
