-- OpenID tokens: a user's proof of who they are for a third party (an integration manager,
-- say), which checks it with `/_matrix/federation/v1/openid/userinfo`. Kept as their SHA-256,
-- like access tokens, until they expire.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
