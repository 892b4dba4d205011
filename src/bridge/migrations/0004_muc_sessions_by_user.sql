-- The sessions of one Matrix user, found when their presence changes (it goes to every MUC
-- where they are an occupant).
CREATE INDEX muc_sessions_user ON muc_sessions (user_id);
