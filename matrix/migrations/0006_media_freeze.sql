-- The unauthenticated media endpoints are frozen (Matrix 1.11): media stored before this
-- migration stays available on them, media uploaded after it only on the authenticated ones.
ALTER TABLE media ADD COLUMN unauthenticated BIGINT NOT NULL DEFAULT 1;
