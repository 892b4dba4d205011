-- End-to-end encryption: device keys, one-time and fallback keys, cross-signing keys,
-- device-list changes and to-device messages. The server stores and relays these; it cannot
-- read what they protect.

CREATE TABLE device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id)
);
CREATE INDEX one_time_keys_algorithm ON one_time_keys (user_id, device_id, algorithm);

CREATE TABLE fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    json TEXT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- key_type: master, self_signing or user_signing.
CREATE TABLE cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- The last stream position at which a user's devices or keys changed.
CREATE TABLE device_list_updates (
    user_id TEXT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX device_list_updates_stream ON device_list_updates (stream_ordering);

CREATE TABLE to_device_messages (
    stream_ordering BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX to_device_messages_device ON to_device_messages (user_id, device_id, stream_ordering);

CREATE TABLE to_device_transactions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
