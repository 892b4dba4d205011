//! Rooms, aliases, memberships and the public room directory.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// A stored room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub is_public: bool,
    /// The room's current state: the resolution of the states after its forward extremities.
    pub current_state_group: i64,
}

/// One row of `room_memberships`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRow {
    pub room_id: String,
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_ordering: i64,
}

impl Store {
    pub async fn create_room(
        &self,
        room_id: &str,
        room_version: &str,
        creator: &str,
        is_public: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(room_id)
        .bind(room_version)
        .bind(creator)
        .bind(i64::from(is_public))
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn room(&self, room_id: &str) -> Result<Option<RoomRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT room_id, room_version, creator, is_public, current_state_group FROM rooms \
             WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| -> Result<RoomRecord, StoreError> {
            Ok(RoomRecord {
                room_id: row.try_get("room_id")?,
                room_version: row.try_get("room_version")?,
                creator: row.try_get("creator")?,
                is_public: row.try_get::<i64, _>("is_public")? != 0,
                current_state_group: row.try_get("current_state_group")?,
            })
        })
        .transpose()
    }

    pub async fn set_room_public(&self, room_id: &str, is_public: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE rooms SET is_public = $1 WHERE room_id = $2")
            .bind(i64::from(is_public))
            .bind(room_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The rooms published in the directory, ordered by id.
    pub async fn public_rooms(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY room_id")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Creates an alias; returns `false` when it is taken.
    pub async fn create_alias(
        &self,
        alias: &str,
        room_id: &str,
        creator: &str,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO room_aliases (room_alias, room_id, creator) VALUES ($1, $2, $3) \
             ON CONFLICT (room_alias) DO NOTHING",
        )
        .bind(alias)
        .bind(room_id)
        .bind(creator)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// The room and creator of an alias.
    pub async fn alias(&self, alias: &str) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE room_alias = $1")
            .bind(alias)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| -> Result<(String, String), StoreError> {
            Ok((row.try_get("room_id")?, row.try_get("creator")?))
        })
        .transpose()
    }

    pub async fn delete_alias(&self, alias: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM room_aliases WHERE room_alias = $1")
            .bind(alias)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn room_aliases(&self, room_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT room_alias FROM room_aliases WHERE room_id = $1 ORDER BY room_alias",
        )
        .bind(room_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// The rooms in which a user has one of the memberships given, forgotten rooms left out.
    pub async fn user_memberships(&self, user_id: &str) -> Result<Vec<MembershipRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, membership, event_id, stream_ordering FROM \
             room_memberships WHERE user_id = $1 AND forgotten = 0 ORDER BY room_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| -> Result<MembershipRow, StoreError> {
                Ok(MembershipRow {
                    room_id: row.try_get("room_id")?,
                    user_id: row.try_get("user_id")?,
                    membership: row.try_get("membership")?,
                    event_id: row.try_get("event_id")?,
                    stream_ordering: row.try_get("stream_ordering")?,
                })
            })
            .collect()
    }

    /// The current membership of one user in one room.
    pub async fn membership(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT membership FROM room_memberships WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// The current membership of one user in one room, with the event that gave it.
    pub async fn membership_event(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT membership, event_id FROM room_memberships WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// A user's membership in a room as of a stream position (their last member event at or
    /// before it), if they had one.
    pub async fn membership_at(
        &self,
        room_id: &str,
        user_id: &str,
        position: i64,
    ) -> Result<Option<String>, StoreError> {
        let json: Option<String> = sqlx::query_scalar(
            "SELECT json FROM events WHERE room_id = $1 AND event_type = 'm.room.member' \
             AND state_key = $2 AND stream_ordering <= $3 ORDER BY stream_ordering DESC LIMIT 1",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(position)
        .fetch_optional(self.pool())
        .await?;
        Ok(json.and_then(|json| {
            let value: serde_json::Value = serde_json::from_str(&json).ok()?;
            value["content"]["membership"].as_str().map(str::to_owned)
        }))
    }

    /// Every change of one piece of state in a room, in stream order: `(position, content)`.
    pub async fn state_changes(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Vec<(i64, serde_json::Value)>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream_ordering, json FROM events WHERE room_id = $1 AND event_type = $2 \
             AND state_key = $3 ORDER BY stream_ordering",
        )
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let json: String = row.try_get("json")?;
                let mut event: serde_json::Value = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("stored event: {e}")))?;
                Ok((row.try_get("stream_ordering")?, event["content"].take()))
            })
            .collect()
    }

    /// The state event that a state event at `position` replaced (the last before it with the
    /// same type and state key), if any: `(event id, sender, content)`.
    pub async fn replaced_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        position: i64,
    ) -> Result<Option<(String, String, serde_json::Value)>, StoreError> {
        let row = sqlx::query(
            "SELECT event_id, sender, json FROM events WHERE room_id = $1 AND event_type = $2 \
             AND state_key = $3 AND stream_ordering < $4 ORDER BY stream_ordering DESC LIMIT 1",
        )
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .bind(position)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            let json: String = row.try_get("json")?;
            let mut event: serde_json::Value = serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("stored event: {e}")))?;
            Ok((
                row.try_get("event_id")?,
                row.try_get("sender")?,
                event["content"].take(),
            ))
        })
        .transpose()
    }

    /// The users whose membership in a room is one of `memberships`, in the order of their
    /// member events (for room summaries' heroes).
    pub async fn room_members_in_order(
        &self,
        room_id: &str,
        memberships: [&str; 2],
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM room_memberships WHERE room_id = $1 \
             AND membership IN ($2, $3) ORDER BY stream_ordering LIMIT $4",
        )
        .bind(room_id)
        .bind(memberships[0])
        .bind(memberships[1])
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn room_members(
        &self,
        room_id: &str,
        membership: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM room_memberships WHERE room_id = $1 AND membership = $2 \
             ORDER BY user_id",
        )
        .bind(room_id)
        .bind(membership)
        .fetch_all(self.pool())
        .await?)
    }

    /// Members of a room whose membership changed in `(after, until]`: `(user, membership)`.
    pub async fn membership_changes_since(
        &self,
        room_id: &str,
        after: i64,
        until: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, membership FROM room_memberships WHERE room_id = $1 \
             AND stream_ordering > $2 AND stream_ordering <= $3 ORDER BY user_id",
        )
        .bind(room_id)
        .bind(after)
        .bind(until)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("user_id")?, row.try_get("membership")?)))
            .collect()
    }

    /// Whether two users share a room in which both are joined.
    pub async fn share_a_room(&self, first: &str, second: &str) -> Result<bool, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM room_memberships a JOIN room_memberships b \
             ON a.room_id = b.room_id WHERE a.user_id = $1 AND b.user_id = $2 \
             AND a.membership = 'join' AND b.membership = 'join'",
        )
        .bind(first)
        .bind(second)
        .fetch_one(self.pool())
        .await?;
        Ok(count > 0)
    }

    /// Hides a room the user has left from their room lists.
    pub async fn forget_room(&self, room_id: &str, user_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE room_memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::testing::both_backends;

    both_backends!(rooms_and_aliases, |store: Store| async move {
        store
            .create_room("!r:x", "12", "@a:x", false)
            .await
            .unwrap();
        assert!(
            store
                .create_room("!r:x", "12", "@a:x", false)
                .await
                .is_err()
        );
        let room = store.room("!r:x").await.unwrap().unwrap();
        assert_eq!(room.room_version, "12");
        assert!(store.public_rooms().await.unwrap().is_empty());
        store.set_room_public("!r:x", true).await.unwrap();
        assert_eq!(store.public_rooms().await.unwrap(), vec!["!r:x".to_owned()]);
        assert!(store.create_alias("#a:x", "!r:x", "@a:x").await.unwrap());
        assert!(
            !store
                .create_alias("#a:x", "!other:x", "@a:x")
                .await
                .unwrap()
        );
        assert_eq!(
            store.alias("#a:x").await.unwrap(),
            Some(("!r:x".to_owned(), "@a:x".to_owned()))
        );
        assert_eq!(store.room_aliases("!r:x").await.unwrap(), vec!["#a:x"]);
        assert!(store.delete_alias("#a:x").await.unwrap());
        assert!(!store.delete_alias("#a:x").await.unwrap());
    });
}
