-- Pushers: where to send a user's notifications (push gateways of mobile apps), and the
-- notifications themselves, which `/notifications` lists and pushers deliver.

CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    -- The device whose access token set the pusher: it goes with the device.
    device_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    -- The pusher's `data` object (`url`, `format`, anything else the app put there).
    data TEXT NOT NULL,
    pushkey_ts BIGINT NOT NULL,
    -- The stream position of the last notification the pusher has dealt with.
    last_sent BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);

CREATE TABLE notifications (
    user_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    -- The push rule actions, a JSON array.
    actions TEXT NOT NULL,
    highlight BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
CREATE INDEX notifications_ts ON notifications (ts);
