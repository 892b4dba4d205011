//! Server-side key backup: a user's backup versions and the encrypted room keys in them.
//!
//! Versions are numbered per user and never reused; the current version is the newest that is
//! not deleted. Each room key is kept once per version, and an upload replaces it only with a
//! better copy (see [`BackedUpKey::better_than`]). Every change of a version's keys raises its
//! `etag`.

use sqlx::Row;

use super::{Store, StoreError};

/// A backup version as clients read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    /// The algorithm's `auth_data`, a JSON object.
    pub auth_data: String,
    pub etag: i64,
    /// How many room keys the version holds.
    pub count: i64,
}

/// One backed-up room key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackedUpKey {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    /// The encrypted session, a JSON object.
    pub session_data: String,
}

impl BackedUpKey {
    /// Whether this copy should replace `current`, as the specification orders them: a
    /// verified key over an unverified one, then the lower first message index (it decrypts
    /// more), then the lower forwarded count (fewer hands it passed through).
    pub fn better_than(&self, current: &BackedUpKey) -> bool {
        (
            !self.is_verified,
            self.first_message_index,
            self.forwarded_count,
        ) < (
            !current.is_verified,
            current.first_message_index,
            current.forwarded_count,
        )
    }
}

/// Which keys of a version a read or deletion covers.
#[derive(Debug, Clone, Copy)]
pub enum KeyScope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

impl KeyScope<'_> {
    /// The condition on `room_id` and `session_id`, its parameters numbered from `$3`.
    fn condition(&self) -> &'static str {
        match self {
            KeyScope::All => "",
            KeyScope::Room(_) => " AND room_id = $3",
            KeyScope::Session(..) => " AND room_id = $3 AND session_id = $4",
        }
    }

    fn bind<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        match *self {
            KeyScope::All => query,
            KeyScope::Room(room) => query.bind(room.to_owned()),
            KeyScope::Session(room, session) => {
                query.bind(room.to_owned()).bind(session.to_owned())
            }
        }
    }
}

fn key_from_row(row: &sqlx::any::AnyRow) -> Result<BackedUpKey, StoreError> {
    Ok(BackedUpKey {
        room_id: row.try_get("room_id")?,
        session_id: row.try_get("session_id")?,
        first_message_index: row.try_get("first_message_index")?,
        forwarded_count: row.try_get("forwarded_count")?,
        is_verified: row.try_get::<i64, _>("is_verified")? != 0,
        session_data: row.try_get("session_data")?,
    })
}

impl Store {
    /// Creates a backup version, which becomes the current one; returns its number.
    pub async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<i64, StoreError> {
        let mut transaction = self.begin_write().await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM key_backup_versions WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&mut *transaction)
                .await?;
        let version = last.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(version)
        .bind(algorithm)
        .bind(auth_data)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(version)
    }

    /// A backup version that is not deleted: the one named, or the current one.
    pub async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<BackupVersion>, StoreError> {
        let row = match version {
            Some(version) => {
                sqlx::query(
                    "SELECT version, algorithm, auth_data, etag FROM key_backup_versions \
                     WHERE user_id = $1 AND version = $2 AND deleted = 0",
                )
                .bind(user_id)
                .bind(version)
                .fetch_optional(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT version, algorithm, auth_data, etag FROM key_backup_versions \
                     WHERE user_id = $1 AND deleted = 0 ORDER BY version DESC LIMIT 1",
                )
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?
            }
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let version: i64 = row.try_get("version")?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM key_backup_keys WHERE user_id = $1 AND version = $2",
        )
        .bind(user_id)
        .bind(version)
        .fetch_one(self.pool())
        .await?;
        Ok(Some(BackupVersion {
            version,
            algorithm: row.try_get("algorithm")?,
            auth_data: row.try_get("auth_data")?,
            etag: row.try_get("etag")?,
            count,
        }))
    }

    /// Replaces the `auth_data` of a version that is not deleted; false if there is none.
    pub async fn update_backup_version(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &str,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE key_backup_versions SET auth_data = $1 \
             WHERE user_id = $2 AND version = $3 AND deleted = 0",
        )
        .bind(auth_data)
        .bind(user_id)
        .bind(version)
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() > 0)
    }

    /// Deletes a version and its keys; false if there was no such version.
    pub async fn delete_backup_version(
        &self,
        user_id: &str,
        version: i64,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let deleted = sqlx::query(
            "UPDATE key_backup_versions SET deleted = 1 \
             WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut *transaction)
        .await?;
        sqlx::query("DELETE FROM key_backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Stores room keys in a version, each only where it is better than the copy held. The
    /// version must be the current one: otherwise nothing is stored and the current version
    /// (if any) is returned as the error's value. Returns the version's etag and key count.
    pub async fn put_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[BackedUpKey],
    ) -> Result<Result<(i64, i64), Option<i64>>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM key_backup_versions WHERE user_id = $1 AND deleted = 0",
        )
        .bind(user_id)
        .fetch_one(&mut *transaction)
        .await?;
        if current != Some(version) {
            return Ok(Err(current));
        }
        let mut changed = false;
        for key in keys {
            let held = sqlx::query(
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, \
                 session_data FROM key_backup_keys \
                 WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .fetch_optional(&mut *transaction)
            .await?;
            if let Some(held) = held
                && !key.better_than(&key_from_row(&held)?)
            {
                continue;
            }
            changed = true;
            sqlx::query(
                "INSERT INTO key_backup_keys (user_id, version, room_id, session_id, \
                 first_message_index, forwarded_count, is_verified, session_data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET \
                 first_message_index = excluded.first_message_index, \
                 forwarded_count = excluded.forwarded_count, \
                 is_verified = excluded.is_verified, session_data = excluded.session_data",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .bind(key.first_message_index)
            .bind(key.forwarded_count)
            .bind(i64::from(key.is_verified))
            .bind(&key.session_data)
            .execute(&mut *transaction)
            .await?;
        }
        if changed {
            Self::raise_backup_etag(&mut transaction, user_id, version).await?;
        }
        let etag_and_count =
            Self::backup_etag_and_count(&mut transaction, user_id, version).await?;
        transaction.commit().await?;
        Ok(Ok(etag_and_count))
    }

    /// The keys of a version that `scope` covers, ordered by room and session.
    pub async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: KeyScope<'_>,
    ) -> Result<Vec<BackedUpKey>, StoreError> {
        let statement = format!(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, \
             session_data FROM key_backup_keys WHERE user_id = $1 AND version = $2{} \
             ORDER BY room_id, session_id",
            scope.condition()
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(user_id.to_owned())
            .bind(version);
        let rows = scope.bind(query).fetch_all(self.pool()).await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Deletes the keys of a version that `scope` covers; returns the version's etag and the
    /// count of keys left.
    pub async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: KeyScope<'_>,
    ) -> Result<(i64, i64), StoreError> {
        let mut transaction = self.begin_write().await?;
        let statement = format!(
            "DELETE FROM key_backup_keys WHERE user_id = $1 AND version = $2{}",
            scope.condition()
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(user_id.to_owned())
            .bind(version);
        let deleted = scope.bind(query).execute(&mut *transaction).await?;
        if deleted.rows_affected() > 0 {
            Self::raise_backup_etag(&mut transaction, user_id, version).await?;
        }
        let etag_and_count =
            Self::backup_etag_and_count(&mut transaction, user_id, version).await?;
        transaction.commit().await?;
        Ok(etag_and_count)
    }

    async fn raise_backup_etag(
        transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
        user_id: &str,
        version: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut **transaction)
        .await?;
        Ok(())
    }

    async fn backup_etag_and_count(
        transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
        user_id: &str,
        version: i64,
    ) -> Result<(i64, i64), StoreError> {
        let etag: Option<i64> = sqlx::query_scalar(
            "SELECT etag FROM key_backup_versions WHERE user_id = $1 AND version = $2",
        )
        .bind(user_id)
        .bind(version)
        .fetch_optional(&mut **transaction)
        .await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM key_backup_keys WHERE user_id = $1 AND version = $2",
        )
        .bind(user_id)
        .bind(version)
        .fetch_one(&mut **transaction)
        .await?;
        Ok((etag.unwrap_or(0), count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    fn key(session: &str, verified: bool, index: i64, forwarded: i64, data: &str) -> BackedUpKey {
        BackedUpKey {
            room_id: "!r:x".into(),
            session_id: session.into(),
            first_message_index: index,
            forwarded_count: forwarded,
            is_verified: verified,
            session_data: data.into(),
        }
    }

    #[test]
    fn the_better_copy_wins() {
        let held = key("s", false, 5, 1, "{}");
        assert!(key("s", true, 9, 9, "{}").better_than(&held));
        assert!(key("s", false, 4, 9, "{}").better_than(&held));
        assert!(key("s", false, 5, 0, "{}").better_than(&held));
        assert!(!key("s", false, 5, 1, "{}").better_than(&held));
        assert!(!key("s", false, 6, 0, "{}").better_than(&held));
        let verified = key("s", true, 5, 1, "{}");
        assert!(!key("s", false, 0, 0, "{}").better_than(&verified));
    }

    both_backends!(versions_and_keys, |store: Store| async move {
        let user = "@a:x";
        assert_eq!(store.backup_version(user, None).await.unwrap(), None);
        let first = store
            .create_backup_version(user, "alg", "{\"k\":1}")
            .await
            .unwrap();
        let second = store
            .create_backup_version(user, "alg", "{\"k\":2}")
            .await
            .unwrap();
        assert_eq!((first, second), (1, 2));
        // Another user's versions are numbered on their own.
        assert_eq!(
            store
                .create_backup_version("@b:x", "alg", "{}")
                .await
                .unwrap(),
            1
        );
        let current = store.backup_version(user, None).await.unwrap().unwrap();
        assert_eq!((current.version, current.etag, current.count), (2, 0, 0));
        // Only the current version takes keys.
        assert_eq!(
            store
                .put_backup_keys(user, 1, &[key("s", false, 3, 0, "{\"v\":1}")])
                .await
                .unwrap(),
            Err(Some(2))
        );
        let stored = store
            .put_backup_keys(user, 2, &[key("s", false, 3, 0, "{\"v\":1}")])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, (1, 1));
        // A worse copy changes nothing, not even the etag; a better one replaces it.
        let worse = store
            .put_backup_keys(user, 2, &[key("s", false, 4, 0, "{\"v\":2}")])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(worse, (1, 1));
        let better = store
            .put_backup_keys(user, 2, &[key("s", false, 0, 0, "{\"v\":3}")])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(better, (2, 1));
        let mut other_room = key("t", false, 0, 0, "{\"v\":4}");
        other_room.room_id = "!q:x".into();
        store
            .put_backup_keys(user, 2, &[other_room])
            .await
            .unwrap()
            .unwrap();
        let all = store.backup_keys(user, 2, KeyScope::All).await.unwrap();
        assert_eq!(
            all.iter()
                .map(|k| k.session_data.as_str())
                .collect::<Vec<_>>(),
            ["{\"v\":4}", "{\"v\":3}"]
        );
        assert_eq!(
            store
                .backup_keys(user, 2, KeyScope::Room("!r:x"))
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .backup_keys(user, 2, KeyScope::Session("!r:x", "t"))
                .await
                .unwrap(),
            []
        );
        assert_eq!(
            store
                .delete_backup_keys(user, 2, KeyScope::Session("!q:x", "t"))
                .await
                .unwrap(),
            (4, 1)
        );
        // Deleting nothing leaves the etag.
        assert_eq!(
            store
                .delete_backup_keys(user, 2, KeyScope::Room("!q:x"))
                .await
                .unwrap(),
            (4, 1)
        );
        store
            .update_backup_version(user, 2, "{\"k\":3}")
            .await
            .unwrap();
        assert_eq!(
            store
                .backup_version(user, Some(2))
                .await
                .unwrap()
                .unwrap()
                .auth_data,
            "{\"k\":3}"
        );
        // Deleting the current version makes the one before current; its number is not reused.
        assert!(store.delete_backup_version(user, 2).await.unwrap());
        assert!(!store.delete_backup_version(user, 2).await.unwrap());
        assert_eq!(store.backup_version(user, Some(2)).await.unwrap(), None);
        assert!(
            store
                .backup_keys(user, 2, KeyScope::All)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .backup_version(user, None)
                .await
                .unwrap()
                .unwrap()
                .version,
            1
        );
        assert_eq!(
            store
                .create_backup_version(user, "alg", "{}")
                .await
                .unwrap(),
            3
        );
        assert!(!store.update_backup_version(user, 2, "{}").await.unwrap());
    });
}
