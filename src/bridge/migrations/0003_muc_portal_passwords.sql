-- The password of a password-protected MUC (XEP-0045 §7.2.6), as an invitation to it gave
-- it or the room linked to it names it: sent with every join of the MUC through its portal.
ALTER TABLE muc_portals ADD COLUMN password TEXT;
