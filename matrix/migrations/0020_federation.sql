-- Transactions received from other servers (`PUT /_matrix/federation/v1/send/{txnId}`), with
-- the answer given, so that a transaction sent again is answered the same and applied once.
CREATE TABLE federation_inbound (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- What is to be sent to other servers, in order per destination: PDUs by event id, EDUs as
-- their JSON. Entries leave when the destination acknowledged the transaction with them.
CREATE TABLE federation_outbound (
    id BIGINT PRIMARY KEY,
    destination TEXT NOT NULL,
    event_id TEXT,
    edu TEXT
);
CREATE INDEX federation_outbound_destination ON federation_outbound (destination, id);

-- Destinations that failed: sending waits until `retry_at` (a backoff that grows with the
-- failures in a row), and starts again at once when the destination is heard from.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    retry_at BIGINT NOT NULL
);
