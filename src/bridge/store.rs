//! The bridge's own storage: its tables live in the homeserver's database (one process writes
//! it), created by the bridge's migrations (`src/bridge/migrations`, their own migration
//! table), read and written only here. The homeserver's store knows nothing of them.

use sqlx::{AnyPool, Row};

use causeway_matrix::store::now_ms;

/// The table where the bridge's applied migrations are recorded.
const MIGRATIONS_TABLE: &str = "_causeway_bridge_migrations";

/// A failure of the bridge's storage.
#[derive(Debug, thiserror::Error)]
pub enum BridgeStoreError {
    #[error("bridge database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("bridge database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
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
    pool: AnyPool,
}

impl BridgeStore {
    /// Applies the bridge's pending migrations.
    pub async fn open(pool: AnyPool) -> Result<BridgeStore, BridgeStoreError> {
        let mut migrator = sqlx::migrate!("src/bridge/migrations");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&pool).await?;
        Ok(BridgeStore { pool })
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
        .execute(&self.pool)
        .await?;
        Ok(())
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
                .execute(&self.pool)
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
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The occupants of a room, in the order they joined.
    pub async fn occupants(&self, room_id: &str) -> Result<Vec<Occupant>, BridgeStoreError> {
        let rows = sqlx::query(
            "SELECT room_id, occupant_jid, room_jid, nick, since_position FROM muc_occupants \
             WHERE room_id = $1 ORDER BY joined_ts, occupant_jid",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(occupant_from_row).collect()
    }

    /// One occupant, by room and real JID.
    pub async fn occupant(
        &self,
        room_id: &str,
        jid: &str,
    ) -> Result<Option<Occupant>, BridgeStoreError> {
        let row = sqlx::query(
            "SELECT room_id, occupant_jid, room_jid, nick, since_position FROM muc_occupants \
             WHERE room_id = $1 AND occupant_jid = $2",
        )
        .bind(room_id)
        .bind(jid)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(occupant_from_row).transpose()
    }

    /// An occupant by the room's address it joined at and its real JID.
    pub async fn occupant_at(
        &self,
        room_jid: &str,
        jid: &str,
    ) -> Result<Option<Occupant>, BridgeStoreError> {
        let row = sqlx::query(
            "SELECT room_id, occupant_jid, room_jid, nick, since_position FROM muc_occupants \
             WHERE occupant_jid = $1 AND room_jid = $2",
        )
        .bind(jid)
        .bind(room_jid)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(occupant_from_row).transpose()
    }

    /// The rooms that have occupants (read once at start-up: the sender to XMPP keeps them).
    pub async fn rooms_with_occupants(&self) -> Result<Vec<String>, BridgeStoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT room_id FROM muc_occupants")
                .fetch_all(&self.pool)
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
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use causeway_matrix::store::Store;

    /// The homeserver's store on SQLite and, when `CAUSEWAY_TEST_POSTGRES_URL` names a server,
    /// on PostgreSQL in a schema of its own.
    async fn stores(dir: &std::path::Path) -> Vec<Store> {
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
            let bridge = BridgeStore::open(store.pool().clone()).await.unwrap();
            // Opening again applies nothing twice.
            let bridge_again = BridgeStore::open(store.pool().clone()).await.unwrap();
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
