-- Redactions taken before the event they redact had arrived (from another server, whose
-- events come in any order): applied when that event arrives, if the redaction may take effect
-- on it.
CREATE TABLE pending_redactions (
    target_event_id TEXT NOT NULL,
    redaction_event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (target_event_id, redaction_event_id)
);
