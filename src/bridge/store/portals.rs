//! Portals: the Matrix room of each XMPP MUC, and the Matrix members who are occupants of the
//! MUC through it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use causeway_matrix::store::now_ms;
use sqlx::{AssertSqlSafe, Row};

use super::{BridgeStore, BridgeStoreError};

/// A Matrix member of a portal as an occupant of its MUC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub room_id: String,
    pub user_id: String,
    pub muc_jid: String,
    pub resource: String,
    pub nick: String,
    pub last_seen: Option<i64>,
}

fn session_from_row(row: &sqlx::any::AnyRow) -> Result<Session, BridgeStoreError> {
    Ok(Session {
        room_id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        muc_jid: row.try_get(2)?,
        resource: row.try_get(3)?,
        nick: row.try_get(4)?,
        last_seen: row.try_get(5)?,
    })
}

/// The nicknames of each portal's sessions, as last read: asked for every presence and
/// message a MUC sends (is it one of ours?), so kept in memory. A write of sessions forgets
/// the portal's; a read that a write overtook is not kept (`written` counts the writes).
#[derive(Default)]
pub(super) struct SessionNicks {
    rooms: std::sync::Mutex<HashMap<String, HashSet<String>>>,
    written: AtomicU64,
}

impl SessionNicks {
    fn forget(&self, room_id: Option<&str>) {
        self.written.fetch_add(1, Ordering::SeqCst);
        let mut rooms = self
            .rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match room_id {
            Some(room_id) => {
                rooms.remove(room_id);
            }
            None => rooms.clear(),
        }
    }
}

const SESSION_COLUMNS: &str =
    "SELECT room_id, user_id, muc_jid, resource, nick, last_seen FROM muc_sessions";

impl BridgeStore {
    /// Records the portal of a MUC, unless one is recorded; returns the portal from then on.
    pub async fn set_portal(
        &self,
        muc_jid: &str,
        room_id: &str,
    ) -> Result<String, BridgeStoreError> {
        sqlx::query(
            "INSERT INTO muc_portals (muc_jid, room_id, created_ts) VALUES ($1, $2, $3) \
             ON CONFLICT (muc_jid) DO NOTHING",
        )
        .bind(muc_jid)
        .bind(room_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.portal_of_muc(muc_jid)
            .await?
            .ok_or_else(|| BridgeStoreError::Corrupt("a portal vanished as it was recorded".into()))
    }

    /// The portal room of a MUC.
    pub async fn portal_of_muc(&self, muc_jid: &str) -> Result<Option<String>, BridgeStoreError> {
        Ok(
            sqlx::query_scalar("SELECT room_id FROM muc_portals WHERE muc_jid = $1")
                .bind(muc_jid)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Keeps (or, with `None`, forgets) the password a MUC with a portal asks for.
    pub async fn set_portal_password(
        &self,
        muc_jid: &str,
        password: Option<&str>,
    ) -> Result<(), BridgeStoreError> {
        sqlx::query("UPDATE muc_portals SET password = $1 WHERE muc_jid = $2")
            .bind(password)
            .bind(muc_jid)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The password a MUC with a portal asks for, if one is known.
    pub async fn portal_password(&self, muc_jid: &str) -> Result<Option<String>, BridgeStoreError> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT password FROM muc_portals WHERE muc_jid = $1",
        )
        .bind(muc_jid)
        .fetch_optional(self.pool())
        .await?
        .flatten())
    }

    /// The MUC a room is the portal of (made, or linked to it).
    pub async fn muc_of_portal(&self, room_id: &str) -> Result<Option<String>, BridgeStoreError> {
        Ok(
            sqlx::query_scalar("SELECT muc_jid FROM muc_portals WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Ends a portal (a room unlinked from its MUC) and the sessions through it.
    pub async fn remove_portal(&self, muc_jid: &str) -> Result<(), BridgeStoreError> {
        let mut transaction = self.store.begin_write().await?;
        if let Some(room_id) =
            sqlx::query_scalar::<_, String>("SELECT room_id FROM muc_portals WHERE muc_jid = $1")
                .bind(muc_jid)
                .fetch_optional(&mut *transaction)
                .await?
        {
            sqlx::query("DELETE FROM muc_sessions WHERE room_id = $1")
                .bind(room_id)
                .execute(&mut *transaction)
                .await?;
        }
        sqlx::query("DELETE FROM muc_portals WHERE muc_jid = $1")
            .bind(muc_jid)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        self.session_nicks.forget(None);
        Ok(())
    }

    /// Every portal: `(MUC, room)`.
    pub async fn portals(&self) -> Result<Vec<(String, String)>, BridgeStoreError> {
        let rows = sqlx::query("SELECT muc_jid, room_id FROM muc_portals")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Records (or updates) a session.
    pub async fn set_session(&self, session: &Session) -> Result<(), BridgeStoreError> {
        sqlx::query(
            "INSERT INTO muc_sessions (room_id, user_id, muc_jid, resource, nick, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_id, user_id) DO UPDATE SET \
             muc_jid = excluded.muc_jid, resource = excluded.resource, nick = excluded.nick, \
             last_seen = COALESCE(excluded.last_seen, muc_sessions.last_seen)",
        )
        .bind(&session.room_id)
        .bind(&session.user_id)
        .bind(&session.muc_jid)
        .bind(&session.resource)
        .bind(&session.nick)
        .bind(session.last_seen)
        .execute(self.pool())
        .await?;
        self.session_nicks.forget(Some(&session.room_id));
        Ok(())
    }

    /// A member's session in a portal.
    pub async fn session(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<Session>, BridgeStoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{SESSION_COLUMNS} WHERE room_id = $1 AND user_id = $2"
        )))
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Whether one of a portal's members is in its MUC under `nick`.
    pub async fn has_session_nick(
        &self,
        room_id: &str,
        nick: &str,
    ) -> Result<bool, BridgeStoreError> {
        let cache = &self.session_nicks;
        if let Some(nicks) = cache
            .rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(room_id)
        {
            return Ok(nicks.contains(nick));
        }
        let written = cache.written.load(Ordering::SeqCst);
        let nicks: HashSet<String> =
            sqlx::query_scalar::<_, String>("SELECT nick FROM muc_sessions WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(self.pool())
                .await?
                .into_iter()
                .collect();
        let found = nicks.contains(nick);
        let mut rooms = cache
            .rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.written.load(Ordering::SeqCst) == written {
            rooms.insert(room_id.to_owned(), nicks);
        }
        Ok(found)
    }

    /// The sessions of a portal.
    pub async fn sessions(&self, room_id: &str) -> Result<Vec<Session>, BridgeStoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SESSION_COLUMNS} WHERE room_id = $1 ORDER BY user_id"
        )))
        .bind(room_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// The sessions of one member, in every portal.
    pub async fn sessions_of_user(&self, user_id: &str) -> Result<Vec<Session>, BridgeStoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SESSION_COLUMNS} WHERE user_id = $1 ORDER BY room_id"
        )))
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Every session (to join again at start-up).
    pub async fn all_sessions(&self) -> Result<Vec<Session>, BridgeStoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!("{SESSION_COLUMNS} ORDER BY room_id")))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Notes that a message of the MUC reached the sessions of a portal at `ts`.
    pub async fn session_seen(&self, room_id: &str, ts: i64) -> Result<(), BridgeStoreError> {
        sqlx::query(
            "UPDATE muc_sessions SET last_seen = $1 WHERE room_id = $2 \
             AND (last_seen IS NULL OR last_seen < $1)",
        )
        .bind(ts)
        .bind(room_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Ends a session; says whether there was one.
    pub async fn remove_session(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<bool, BridgeStoreError> {
        let done = sqlx::query("DELETE FROM muc_sessions WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        self.session_nicks.forget(Some(room_id));
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::bridge::store::testing::both_backends;

    both_backends!(portals_and_sessions, |store: BridgeStore| async move {
        let muc = "room@conference.prosody.test";
        assert_eq!(store.portal_of_muc(muc).await.unwrap(), None);
        assert_eq!(
            store.set_portal(muc, "!p:gw.test").await.unwrap(),
            "!p:gw.test"
        );
        // The first portal recorded stays.
        assert_eq!(
            store.set_portal(muc, "!q:gw.test").await.unwrap(),
            "!p:gw.test"
        );
        assert_eq!(
            store.portals().await.unwrap(),
            [(muc.to_owned(), "!p:gw.test".to_owned())]
        );
        // A password, kept, changed and forgotten.
        assert_eq!(store.portal_password(muc).await.unwrap(), None);
        store.set_portal_password(muc, Some("old")).await.unwrap();
        store
            .set_portal_password(muc, Some("s3cret"))
            .await
            .unwrap();
        assert_eq!(
            store.portal_password(muc).await.unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(store.portal_password("other@x").await.unwrap(), None);
        store.set_portal_password(muc, None).await.unwrap();
        assert_eq!(store.portal_password(muc).await.unwrap(), None);
        store
            .set_portal_password(muc, Some("s3cret"))
            .await
            .unwrap();
        let alice = Session {
            room_id: "!p:gw.test".into(),
            user_id: "@alice:gw.test".into(),
            muc_jid: muc.into(),
            resource: "causeway".into(),
            nick: "Alice".into(),
            last_seen: None,
        };
        store.set_session(&alice).await.unwrap();
        store
            .set_session(&Session {
                user_id: "@dan:gw.test".into(),
                nick: "Dan".into(),
                ..alice.clone()
            })
            .await
            .unwrap();
        assert_eq!(
            store.session("!p:gw.test", "@alice:gw.test").await.unwrap(),
            Some(alice.clone())
        );
        store.session_seen("!p:gw.test", 50).await.unwrap();
        store.session_seen("!p:gw.test", 40).await.unwrap();
        let sessions = store.sessions("!p:gw.test").await.unwrap();
        assert_eq!(sessions.len(), 2);
        assert!(store.has_session_nick("!p:gw.test", "Dan").await.unwrap());
        assert!(!store.has_session_nick("!p:gw.test", "Eve").await.unwrap());
        assert!(!store.has_session_nick("!q:gw.test", "Dan").await.unwrap());
        assert!(sessions.iter().all(|s| s.last_seen == Some(50)));
        // Joining again under another nickname keeps what was seen.
        store
            .set_session(&Session {
                nick: "Alice L".into(),
                ..alice.clone()
            })
            .await
            .unwrap();
        let again = store
            .session("!p:gw.test", "@alice:gw.test")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (again.nick.as_str(), again.last_seen),
            ("Alice L", Some(50))
        );
        // The nicknames read before are not kept past a change.
        assert!(
            store
                .has_session_nick("!p:gw.test", "Alice L")
                .await
                .unwrap()
        );
        assert!(!store.has_session_nick("!p:gw.test", "Alice").await.unwrap());
        // Alice's sessions in every portal, and nobody else's.
        store
            .set_session(&Session {
                room_id: "!other:gw.test".into(),
                muc_jid: "other@conference.prosody.test".into(),
                ..alice.clone()
            })
            .await
            .unwrap();
        let hers = store.sessions_of_user("@alice:gw.test").await.unwrap();
        assert_eq!(
            hers.iter()
                .map(|s| (s.room_id.as_str(), s.nick.as_str()))
                .collect::<Vec<_>>(),
            [("!other:gw.test", "Alice"), ("!p:gw.test", "Alice L")]
        );
        assert!(
            store
                .sessions_of_user("@eve:gw.test")
                .await
                .unwrap()
                .is_empty()
        );
        store
            .remove_session("!other:gw.test", "@alice:gw.test")
            .await
            .unwrap();
        assert_eq!(store.all_sessions().await.unwrap().len(), 2);
        assert!(
            store
                .remove_session("!p:gw.test", "@alice:gw.test")
                .await
                .unwrap()
        );
        assert!(
            !store
                .remove_session("!p:gw.test", "@alice:gw.test")
                .await
                .unwrap()
        );
        assert_eq!(store.sessions("!p:gw.test").await.unwrap().len(), 1);
        assert!(
            !store
                .has_session_nick("!p:gw.test", "Alice L")
                .await
                .unwrap()
        );
        assert!(store.has_session_nick("!p:gw.test", "Dan").await.unwrap());
        assert_eq!(
            store.muc_of_portal("!p:gw.test").await.unwrap().as_deref(),
            Some(muc)
        );
        // Unlinked: no portal, no sessions; the MUC may be linked anew.
        store.remove_portal(muc).await.unwrap();
        assert_eq!(store.portal_of_muc(muc).await.unwrap(), None);
        assert_eq!(store.muc_of_portal("!p:gw.test").await.unwrap(), None);
        assert!(store.sessions("!p:gw.test").await.unwrap().is_empty());
        assert!(!store.has_session_nick("!p:gw.test", "Dan").await.unwrap());
        assert_eq!(
            store.set_portal(muc, "!q:gw.test").await.unwrap(),
            "!q:gw.test"
        );
    });
}
