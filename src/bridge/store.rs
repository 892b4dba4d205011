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

    /// Forgets every occupant of a room whose real JID is of `bare` (any resource); returns
    /// the JIDs forgotten.
    pub async fn remove_occupants_of(
        &self,
        room_id: &str,
        bare: &str,
    ) -> Result<Vec<String>, BridgeStoreError> {
        let gone: Vec<String> = self
            .occupants(room_id)
            .await?
            .into_iter()
            .filter(|occupant| bare_of(&occupant.jid) == bare)
            .map(|occupant| occupant.jid)
            .collect();
        for jid in &gone {
            self.remove_occupant(room_id, jid).await?;
        }
        Ok(gone)
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
