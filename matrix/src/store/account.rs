//! Accounts, devices and access tokens.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError, now_ms};

/// How long a looked-up access token is trusted without asking the database again. Tokens
/// revoked by this process are forgotten at once; revocations by another process (the
/// `causeway user` commands) take effect within this time.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// Recently used access tokens, so that a request does not cost a query to authenticate.
#[derive(Default)]
pub(super) struct TokenCache {
    entries: std::sync::Mutex<HashMap<String, (AccessTokenInfo, Instant)>>,
}

impl TokenCache {
    fn get(&self, token: &str) -> Option<AccessTokenInfo> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(token)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(info, _)| info.clone())
    }

    fn insert(&self, token: &str, info: &AccessTokenInfo) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= 50_000 {
            entries.retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE_TTL);
        }
        entries.insert(token.to_owned(), (info.clone(), Instant::now()));
    }

    /// Forgets every cached token of a user.
    fn forget_user(&self, user_id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (info, _)| info.user_id != user_id);
    }
}

/// What is stored of an access token: its SHA-256, in hex. Tokens are long random strings, so
/// the hash cannot be reversed by guessing.
pub(super) fn token_hash(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Hashes the access tokens stored in the clear by earlier versions.
pub(super) async fn hash_stored_tokens(pool: &sqlx::AnyPool) -> Result<u64, StoreError> {
    let clear: Vec<String> = sqlx::query_scalar("SELECT token FROM access_tokens WHERE hashed = 0")
        .fetch_all(pool)
        .await?;
    let mut transaction = pool.begin().await?;
    for token in &clear {
        sqlx::query("UPDATE access_tokens SET token = $1, hashed = 1 WHERE token = $2")
            .bind(token_hash(token))
            .bind(token)
            .execute(&mut *transaction)
            .await?;
    }
    transaction.commit().await?;
    Ok(clear.len() as u64)
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    /// Deactivated with erasure.
    pub erased: bool,
    pub created_ts: i64,
}

/// A stored device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

/// Who an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenInfo {
    pub user_id: String,
    pub device_id: String,
    pub deactivated: bool,
    pub is_guest: bool,
}

fn user_from_row(row: &AnyRow) -> Result<UserRecord, sqlx::Error> {
    Ok(UserRecord {
        user_id: row.try_get("user_id")?,
        password_hash: row.try_get("password_hash")?,
        displayname: row.try_get("displayname")?,
        avatar_url: row.try_get("avatar_url")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        deactivated: row.try_get::<i64, _>("deactivated")? != 0,
        erased: row.try_get::<i64, _>("erased")? != 0,
        created_ts: row.try_get("created_ts")?,
    })
}

fn device_from_row(row: &AnyRow) -> Result<DeviceRecord, sqlx::Error> {
    Ok(DeviceRecord {
        user_id: row.try_get("user_id")?,
        device_id: row.try_get("device_id")?,
        display_name: row.try_get("display_name")?,
        last_seen_ts: row.try_get("last_seen_ts")?,
        last_seen_ip: row.try_get("last_seen_ip")?,
    })
}

const USER_COLUMNS: &str =
    "user_id, password_hash, displayname, avatar_url, is_admin, deactivated, erased, created_ts";

impl Store {
    /// Creates an account; returns `false` when the id is taken.
    pub async fn create_user(
        &self,
        user_id: &str,
        password_hash: Option<&str>,
        displayname: Option<&str>,
        is_admin: bool,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO users (user_id, password_hash, displayname, is_admin, created_ts) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(password_hash)
        .bind(displayname)
        .bind(i64::from(is_admin))
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Makes a guest account (no password); false if the id is taken.
    pub async fn create_guest(&self, user_id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO users (user_id, password_hash, displayname, is_admin, created_ts, \
             is_guest) VALUES ($1, NULL, NULL, 0, $2, 1) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// The guests among a room's joined members.
    pub async fn joined_guests(&self, room_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT m.user_id FROM room_memberships m JOIN users u ON u.user_id = m.user_id \
             WHERE m.room_id = $1 AND m.membership = 'join' AND u.is_guest = 1 \
             ORDER BY m.user_id",
        )
        .bind(room_id)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        let query = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1");
        let row = sqlx::query(AssertSqlSafe(query))
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    pub async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let query = format!("SELECT {USER_COLUMNS} FROM users ORDER BY user_id");
        let rows = sqlx::query(AssertSqlSafe(query))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// Active accounts whose id or display name contains `term` (case-insensitive), by id.
    pub async fn search_users(
        &self,
        term: &str,
        limit: i64,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let escaped = term
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        let query = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE deactivated = 0 AND \
             (LOWER(user_id) LIKE $1 ESCAPE '\\' OR LOWER(COALESCE(displayname, '')) LIKE $1 ESCAPE '\\') \
             ORDER BY user_id LIMIT $2"
        );
        let rows = sqlx::query(AssertSqlSafe(query))
            .bind(pattern)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn set_displayname(
        &self,
        user_id: &str,
        displayname: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET displayname = $1 WHERE user_id = $2")
            .bind(displayname)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_avatar_url(
        &self,
        user_id: &str,
        avatar_url: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET avatar_url = $1 WHERE user_id = $2")
            .bind(avatar_url)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Marks the account deactivated, removes its password, devices and tokens.
    pub async fn deactivate_user(&self, user_id: &str) -> Result<bool, StoreError> {
        self.tokens.forget_user(user_id);
        let mut transaction = self.begin_write().await?;
        let result = sqlx::query(
            "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1",
        )
        .bind(user_id)
        .execute(&mut *transaction)
        .await?;
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *transaction)
            .await?;
        let devices: Vec<String> =
            sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&mut *transaction)
                .await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        // A lookup racing the deletion may have cached a token again.
        self.tokens.forget_user(user_id);
        self.devices_deleted(user_id, &devices).await?;
        Ok(result.rows_affected() == 1)
    }

    /// Creates (or refreshes the name of) a device and issues an access token for it.
    pub async fn create_device_and_token(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        token: &str,
        ip: Option<&str>,
    ) -> Result<(), StoreError> {
        self.tokens.forget_user(user_id);
        let mut transaction = self.begin_write().await?;
        // Logging in again with an existing device id replaces the device's old tokens.
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device_id) DO UPDATE SET \
             display_name = COALESCE(excluded.display_name, devices.display_name), \
             last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(display_name)
        .bind(now_ms())
        .bind(ip)
        .execute(&mut *transaction)
        .await?;
        sqlx::query(
            "INSERT INTO access_tokens (token, user_id, device_id, hashed) VALUES ($1, $2, $3, 1)",
        )
        .bind(token_hash(token))
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        // A lookup racing the deletion may have cached a token again.
        self.tokens.forget_user(user_id);
        Ok(())
    }

    pub async fn access_token(&self, token: &str) -> Result<Option<AccessTokenInfo>, StoreError> {
        let token = &token_hash(token);
        if let Some(info) = self.tokens.get(token) {
            return Ok(Some(info));
        }
        let row = sqlx::query(
            "SELECT t.user_id, t.device_id, u.deactivated, u.is_guest FROM access_tokens t \
             JOIN users u ON u.user_id = t.user_id WHERE t.token = $1",
        )
        .bind(token)
        .fetch_optional(self.pool())
        .await?;
        let info = row
            .map(|row| -> Result<AccessTokenInfo, StoreError> {
                Ok(AccessTokenInfo {
                    user_id: row.try_get("user_id")?,
                    device_id: row.try_get("device_id")?,
                    deactivated: row.try_get::<i64, _>("deactivated")? != 0,
                    is_guest: row.try_get::<i64, _>("is_guest")? != 0,
                })
            })
            .transpose()?;
        if let Some(info) = &info {
            self.tokens.insert(token, info);
        }
        Ok(info)
    }

    /// Deletes a device and every token of it.
    pub async fn delete_device(&self, user_id: &str, device_id: &str) -> Result<bool, StoreError> {
        self.tokens.forget_user(user_id);
        let mut transaction = self.begin_write().await?;
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *transaction)
            .await?;
        let result = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        // A lookup racing the deletion may have cached a token again.
        self.tokens.forget_user(user_id);
        Ok(result.rows_affected() == 1)
    }

    /// Deletes every device of a user except `keep`, with their tokens.
    pub async fn delete_devices_except(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<(), StoreError> {
        let keep = keep.unwrap_or("");
        self.tokens.forget_user(user_id);
        let mut transaction = self.begin_write().await?;
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2")
            .bind(user_id)
            .bind(keep)
            .execute(&mut *transaction)
            .await?;
        let devices: Vec<String> = sqlx::query_scalar(
            "SELECT device_id FROM devices WHERE user_id = $1 AND device_id <> $2",
        )
        .bind(user_id)
        .bind(keep)
        .fetch_all(&mut *transaction)
        .await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id <> $2")
            .bind(user_id)
            .bind(keep)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        self.devices_deleted(user_id, &devices).await?;
        // A lookup racing the deletion may have cached a token again.
        self.tokens.forget_user(user_id);
        Ok(())
    }

    pub async fn devices(&self, user_id: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices \
             WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(device_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn device(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices \
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(device_from_row).transpose()?)
    }

    pub async fn set_device_display_name(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3",
        )
        .bind(display_name)
        .bind(user_id)
        .bind(device_id)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::testing::both_backends;

    both_backends!(tokens_are_stored_as_hashes, |store: Store| async move {
        store.create_user("@a:x", None, None, false).await.unwrap();
        store
            .create_device_and_token("@a:x", "DEV1", None, "secret-token", None)
            .await
            .unwrap();
        let stored: Vec<String> = sqlx::query_scalar("SELECT token FROM access_tokens")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert_ne!(stored[0], "secret-token");
        assert_eq!(stored[0].len(), 64);
        // A token stored in the clear by an earlier version is hashed when the store opens.
        sqlx::query(
            "INSERT INTO access_tokens (token, user_id, device_id, hashed) \
             VALUES ('old-token', '@a:x', 'DEV2', 0)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        assert_eq!(
            crate::store::account::hash_stored_tokens(store.pool())
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            crate::store::account::hash_stored_tokens(store.pool())
                .await
                .unwrap(),
            0
        );
        let info = store.access_token("old-token").await.unwrap().unwrap();
        assert_eq!(info.device_id, "DEV2");
        let clear: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM access_tokens WHERE token = 'old-token'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(clear, 0);
        assert!(store.access_token("secret-token").await.unwrap().is_some());
    });

    both_backends!(accounts_devices_tokens, |store: Store| async move {
        assert!(
            store
                .create_user("@a:x", Some("hash"), None, false)
                .await
                .unwrap()
        );
        assert!(!store.create_user("@a:x", None, None, false).await.unwrap());
        let user = store.user("@a:x").await.unwrap().unwrap();
        assert_eq!(user.password_hash.as_deref(), Some("hash"));
        assert!(!user.deactivated);
        store
            .create_device_and_token("@a:x", "DEV1", Some("phone"), "tok1", None)
            .await
            .unwrap();
        store
            .create_device_and_token("@a:x", "DEV2", None, "tok2", Some("127.0.0.1"))
            .await
            .unwrap();
        let info = store.access_token("tok1").await.unwrap().unwrap();
        assert_eq!(
            (info.user_id.as_str(), info.device_id.as_str()),
            ("@a:x", "DEV1")
        );
        // A new login on the same device replaces its token but keeps its name.
        store
            .create_device_and_token("@a:x", "DEV1", None, "tok3", None)
            .await
            .unwrap();
        assert!(store.access_token("tok1").await.unwrap().is_none());
        let device = store.device("@a:x", "DEV1").await.unwrap().unwrap();
        assert_eq!(device.display_name.as_deref(), Some("phone"));
        assert_eq!(store.devices("@a:x").await.unwrap().len(), 2);
        store
            .delete_devices_except("@a:x", Some("DEV2"))
            .await
            .unwrap();
        assert!(store.access_token("tok3").await.unwrap().is_none());
        assert!(store.access_token("tok2").await.unwrap().is_some());
        assert!(store.deactivate_user("@a:x").await.unwrap());
        assert!(store.access_token("tok2").await.unwrap().is_none());
        let user = store.user("@a:x").await.unwrap().unwrap();
        assert!(user.deactivated);
        assert!(user.password_hash.is_none());
    });
}
