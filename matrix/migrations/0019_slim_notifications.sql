-- Notifications keep only what is theirs: the event's id and room are read from `events` by
-- stream position, and the most common actions (`["notify"]`) are stored as NULL. Pruning by
-- age scans the table (hourly), so `ts` has no index to keep up on every write.
CREATE TABLE notifications_slim (
    user_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    -- The push rule actions, a JSON array; NULL for `["notify"]`.
    actions TEXT,
    highlight BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
INSERT INTO notifications_slim (user_id, stream_ordering, actions, highlight, ts)
    SELECT user_id, stream_ordering,
           CASE WHEN actions = '["notify"]' THEN NULL ELSE actions END, highlight, ts
    FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_slim RENAME TO notifications;
