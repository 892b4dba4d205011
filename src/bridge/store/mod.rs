//! The bridge's own storage: its tables live in the homeserver's database (one process writes
//! it), read and written only here; the homeserver's store knows nothing of them. Tables made
//! since the bridge has migrations of its own (`src/bridge/migrations`, their own migration
//! table) are created by them; the first ones (direct rooms, messages, subscriptions, the
//! outbox) were created by the homeserver's early migrations, which stay as they were.
//!
//! - `chats.rs`: direct rooms, which event each XMPP message is, subscriptions.
//! - `outbox.rs`: messages to XMPP under way or waiting for another attempt.
//! - `portals.rs`: the portal room of each XMPP MUC, and the Matrix members in the MUC.
//! - here: the occupants of rooms (`muc_occupants`).

mod chats;
mod outbox;
mod portals;

use sqlx::{AnyPool, AssertSqlSafe, Row};

use causeway_matrix::store::{Store, now_ms};

pub use chats::{BridgedMessage, Subscription};
pub use outbox::OutboxEntry;
pub use portals::Session;

const OCCUPANT_COLUMNS: &str =
    "SELECT room_id, occupant_jid, room_jid, nick, since_position FROM muc_occupants";

/// The table where the bridge's applied migrations are recorded.
const MIGRATIONS_TABLE: &str = "_causeway_bridge_migrations";

/// A failure of the bridge's storage.
#[derive(Debug, thiserror::Error)]
pub enum BridgeStoreError {
    #[error("bridge database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("bridge database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Store(#[from] causeway_matrix::store::StoreError),
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// An XMPP resource in a Matrix room through the MUC service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupant {
    pub room_id: String,
    /// The occupant's real (full) JID.
    pub jid: String,
    /// The room's address as the occupant joined it.
    pub room_jid: String,
    pub nick: String,
    /// The stream position up to which the room was given to it when it joined.
    pub since_position: i64,
}

/// The handle to the bridge's tables.
#[derive(Clone)]
pub struct BridgeStore {
    /// The homeserver's store, for its connections and its write transactions.
    store: Store,
    session_nicks: std::sync::Arc<portals::SessionNicks>,
}

impl BridgeStore {
    /// Applies the bridge's pending migrations.
    pub async fn open(store: Store) -> Result<BridgeStore, BridgeStoreError> {
        let mut migrator = sqlx::migrate!("src/bridge/migrations");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(store.pool()).await?;
        Ok(BridgeStore {
            store,
            session_nicks: std::sync::Arc::default(),
        })
    }

    fn pool(&self) -> &AnyPool {
        self.store.pool()
    }

    /// Forgets what is kept of an XMPP user whose ghost was erased, in one transaction: the
    /// messages still queued for them (in their direct rooms) and the presence subscriptions
    /// with them. Returns how many queued messages were dropped.
    pub async fn forget_remote_user(&self, jid: &str) -> Result<u64, BridgeStoreError> {
        let mut transaction = self.store.begin_write().await?;
        let dropped = sqlx::query(
            "DELETE FROM xmpp_outbox WHERE room_id IN \
             (SELECT room_id FROM xmpp_direct_rooms WHERE remote_jid = $1)",
        )
        .bind(jid)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM xmpp_subscriptions WHERE remote_jid = $1")
            .bind(jid)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(dropped)
    }

    /// Forgets the messages of an erased local account still queued for XMPP.
    pub async fn forget_local_user(&self, user_id: &str) -> Result<u64, BridgeStoreError> {
        Ok(sqlx::query(
            "DELETE FROM xmpp_outbox WHERE event_id IN \
             (SELECT event_id FROM events WHERE sender = $1)",
        )
        .bind(user_id)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// Records (or updates) an occupant.
    pub async fn set_occupant(&self, occupant: &Occupant) -> Result<(), BridgeStoreError> {
        sqlx::query(
            "INSERT INTO muc_occupants (room_id, occupant_jid, room_jid, nick, since_position, \
             joined_ts) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_id, occupant_jid) \
             DO UPDATE SET room_jid = excluded.room_jid, nick = excluded.nick, \
             since_position = excluded.since_position",
        )
        .bind(&occupant.room_id)
        .bind(&occupant.jid)
        .bind(&occupant.room_jid)
        .bind(&occupant.nick)
        .bind(occupant.since_position)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether a user (by bare JID) is an occupant of any room, from any resource.
    pub async fn is_occupant_anywhere(&self, bare: &str) -> Result<bool, BridgeStoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM muc_occupants \
             WHERE substr(occupant_jid, 1, length($1)) = $1",
        )
        .bind(format!("{bare}/"))
        .fetch_one(self.pool())
        .await?;
        Ok(count > 0)
    }

    /// Changes the nickname of every occupant of a room whose real JID is of `bare`.
    pub async fn rename_occupants_of(
        &self,
        room_id: &str,
        bare: &str,
        nick: &str,
    ) -> Result<(), BridgeStoreError> {
        for occupant in self.occupants(room_id).await? {
            if bare_of(&occupant.jid) == bare {
                sqlx::query(
                    "UPDATE muc_occupants SET nick = $1 WHERE room_id = $2 AND occupant_jid = $3",
                )
                .bind(nick)
                .bind(room_id)
                .bind(&occupant.jid)
                .execute(self.pool())
                .await?;
            }
        }
        Ok(())
    }

    /// Forgets an occupant; says whether it was one.
    pub async fn remove_occupant(
        &self,
        room_id: &str,
        jid: &str,
    ) -> Result<bool, BridgeStoreError> {
        let done =
            sqlx::query("DELETE FROM muc_occupants WHERE room_id = $1 AND occupant_jid = $2")
                .bind(room_id)
                .bind(jid)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The occupants of a room, in the order they joined.
    pub async fn occupants(&self, room_id: &str) -> Result<Vec<Occupant>, BridgeStoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{OCCUPANT_COLUMNS} WHERE room_id = $1 ORDER BY joined_ts, occupant_jid"
        )))
        .bind(room_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(occupant_from_row).collect()
    }

    /// One occupant, by room and real JID.
    pub async fn occupant(
        &self,
        room_id: &str,
        jid: &str,
    ) -> Result<Option<Occupant>, BridgeStoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{OCCUPANT_COLUMNS} WHERE room_id = $1 AND occupant_jid = $2"
        )))
        .bind(room_id)
        .bind(jid)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(occupant_from_row).transpose()
    }

    /// An occupant by the room's address it joined at and its real JID.
    pub async fn occupant_at(
        &self,
        room_jid: &str,
        jid: &str,
    ) -> Result<Option<Occupant>, BridgeStoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{OCCUPANT_COLUMNS} WHERE occupant_jid = $1 AND room_jid = $2"
        )))
        .bind(jid)
        .bind(room_jid)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(occupant_from_row).transpose()
    }

    /// The rooms that have occupants (read once at start-up: the sender to XMPP keeps them).
    pub async fn rooms_with_occupants(&self) -> Result<Vec<String>, BridgeStoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT room_id FROM muc_occupants")
                .fetch_all(self.pool())
                .await?,
        )
    }
}

fn occupant_from_row(row: &sqlx::any::AnyRow) -> Result<Occupant, BridgeStoreError> {
    Ok(Occupant {
        room_id: row.try_get(0)?,
        jid: row.try_get(1)?,
        room_jid: row.try_get(2)?,
        nick: row.try_get(3)?,
        since_position: row.try_get(4)?,
    })
}

/// The bare part of a JID as text.
pub fn bare_of(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}

#[cfg(test)]
pub(crate) mod testing {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The homeserver's store on SQLite and, when `CAUSEWAY_TEST_POSTGRES_URL` names a server,
    /// on PostgreSQL in a schema of its own.
    pub async fn stores(dir: &std::path::Path) -> Vec<Store> {
        let mut stores = vec![
            Store::connect(
                &format!("sqlite://{}/test.sqlite3?mode=rwc", dir.display()),
                4,
            )
            .await
            .unwrap(),
        ];
        if let Ok(base) = std::env::var("CAUSEWAY_TEST_POSTGRES_URL") {
            use sqlx::Executor;
            sqlx::any::install_default_drivers();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let schema = format!("causeway_bridge_test_{}_{nanos}", std::process::id());
            let admin = AnyPool::connect(&base).await.unwrap();
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .await
                .unwrap();
            admin.close().await;
            let separator = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
            stores.push(Store::connect(&url, 4).await.unwrap());
        } else {
            eprintln!("CAUSEWAY_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
        }
        stores
    }

    /// Runs a storage test of the bridge's tables against SQLite and, when configured,
    /// PostgreSQL.
    macro_rules! both_backends {
        ($name:ident, $body:expr) => {
            #[tokio::test]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                for store in $crate::bridge::store::testing::stores(dir.path()).await {
                    let bridge = $crate::bridge::store::BridgeStore::open(store)
                        .await
                        .unwrap();
                    ($body)(bridge).await;
                }
            }
        };
    }
    pub(crate) use both_backends;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::testing::stores;
    use super::*;

    fn occupant(room: &str, jid: &str, nick: &str, since: i64) -> Occupant {
        Occupant {
            room_id: room.into(),
            jid: jid.into(),
            room_jid: format!("{}@muc.gw.test", &room[1..2]),
            nick: nick.into(),
            since_position: since,
        }
    }

    #[tokio::test]
    async fn occupants_on_both_backends() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()).await {
            let bridge = BridgeStore::open(store.clone()).await.unwrap();
            // Opening again applies nothing twice.
            let bridge_again = BridgeStore::open(store.clone()).await.unwrap();
            let bob = occupant("!a:gw.test", "bob@prosody.test/phone", "Bob", 5);
            bridge.set_occupant(&bob).await.unwrap();
            bridge
                .set_occupant(&occupant("!a:gw.test", "bob@prosody.test/laptop", "Bob", 6))
                .await
                .unwrap();
            bridge
                .set_occupant(&occupant("!a:gw.test", "carol@prosody.test/pc", "Carol", 7))
                .await
                .unwrap();
            bridge
                .set_occupant(&occupant(
                    "!b:gw.test",
                    "bob@prosody.test/phone",
                    "Bobby",
                    8,
                ))
                .await
                .unwrap();
            assert_eq!(
                bridge_again
                    .occupant("!a:gw.test", "bob@prosody.test/phone")
                    .await
                    .unwrap(),
                Some(bob.clone())
            );
            assert_eq!(
                bridge
                    .occupant("!a:gw.test", "bob@prosody.test/tv")
                    .await
                    .unwrap(),
                None
            );
            let mut rooms = bridge.rooms_with_occupants().await.unwrap();
            rooms.sort();
            assert_eq!(rooms, ["!a:gw.test", "!b:gw.test"]);
            // A new nickname for every resource of Bob in one room, not in the other.
            bridge
                .rename_occupants_of("!a:gw.test", "bob@prosody.test", "Robert")
                .await
                .unwrap();
            let nicks: Vec<(String, String)> = bridge
                .occupants("!a:gw.test")
                .await
                .unwrap()
                .into_iter()
                .map(|o| (o.jid, o.nick))
                .collect();
            assert_eq!(nicks.len(), 3);
            assert!(nicks.contains(&("bob@prosody.test/phone".into(), "Robert".into())));
            assert!(nicks.contains(&("bob@prosody.test/laptop".into(), "Robert".into())));
            assert!(nicks.contains(&("carol@prosody.test/pc".into(), "Carol".into())));
            assert_eq!(
                bridge.occupants("!b:gw.test").await.unwrap()[0].nick,
                "Bobby"
            );
            // Joining again updates the row.
            bridge
                .set_occupant(&occupant("!a:gw.test", "carol@prosody.test/pc", "C", 9))
                .await
                .unwrap();
            let carol = bridge
                .occupant("!a:gw.test", "carol@prosody.test/pc")
                .await
                .unwrap()
                .unwrap();
            assert_eq!((carol.nick.as_str(), carol.since_position), ("C", 9));
            for resource in ["phone", "laptop"] {
                assert!(
                    bridge
                        .remove_occupant("!a:gw.test", &format!("bob@prosody.test/{resource}"))
                        .await
                        .unwrap()
                );
            }
            assert!(
                bridge
                    .remove_occupant("!a:gw.test", "carol@prosody.test/pc")
                    .await
                    .unwrap()
            );
            assert!(
                !bridge
                    .remove_occupant("!a:gw.test", "carol@prosody.test/pc")
                    .await
                    .unwrap()
            );
            assert_eq!(bridge.rooms_with_occupants().await.unwrap(), ["!b:gw.test"]);
        }
    }
}

#[cfg(test)]
mod occupant_tests {
    #![allow(clippy::unwrap_used)]

    use super::testing::both_backends;
    use super::*;

    both_backends!(occupants_anywhere, |store: BridgeStore| async move {
        let occupant = |room: &str, jid: &str| Occupant {
            room_id: room.into(),
            jid: jid.into(),
            room_jid: "lobby@muc.x".into(),
            nick: "Bob".into(),
            since_position: 1,
        };
        assert!(!store.is_occupant_anywhere("bob@y").await.unwrap());
        store
            .set_occupant(&occupant("!a:x", "bob@y/phone"))
            .await
            .unwrap();
        store
            .set_occupant(&occupant("!b:x", "bob@y/pc"))
            .await
            .unwrap();
        // Another user whose JID begins the same is someone else.
        store
            .set_occupant(&occupant("!a:x", "bob@y.z/pc"))
            .await
            .unwrap();
        assert!(store.is_occupant_anywhere("bob@y").await.unwrap());
        assert!(!store.is_occupant_anywhere("bo@y").await.unwrap());
        store.remove_occupant("!a:x", "bob@y/phone").await.unwrap();
        assert!(store.is_occupant_anywhere("bob@y").await.unwrap());
        store.remove_occupant("!b:x", "bob@y/pc").await.unwrap();
        assert!(!store.is_occupant_anywhere("bob@y").await.unwrap());
        assert!(store.is_occupant_anywhere("bob@y.z").await.unwrap());
    });
}

#[cfg(test)]
mod erasure_tests {
    #![allow(clippy::unwrap_used)]

    use super::testing::both_backends;
    use super::*;

    both_backends!(
        what_erased_users_leave_goes,
        |store: BridgeStore| async move {
            store
                .record_outgoing(
                    &BridgedMessage {
                        room_id: "!r:x".into(),
                        sender_jid: "k@x".into(),
                        xmpp_id: "$queued".into(),
                        event_id: "$queued".into(),
                    },
                    0,
                )
                .await
                .unwrap();
            // An erased local account with no events here: nothing of another's goes.
            assert_eq!(store.forget_local_user("@e:x").await.unwrap(), 0);
            assert!(store.outbox_entry("$queued").await.unwrap().is_some());
            // The XMPP user of that room is erased: what was queued for them goes.
            store
                .set_xmpp_direct_room("@k:x", "bob@y", "!r:x")
                .await
                .unwrap();
            assert_eq!(store.forget_remote_user("carol@y").await.unwrap(), 0);
            assert_eq!(store.forget_remote_user("bob@y").await.unwrap(), 1);
            assert!(store.outbox_entry("$queued").await.unwrap().is_none());
        }
    );
}
