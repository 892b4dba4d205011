//! Erasure of an account's data, and who is erased.

use std::collections::HashSet;

use super::{Store, StoreError};

impl Store {
    /// Erases what an account leaves behind, in one transaction: its profile, account data,
    /// filters, push rules, presence, receipts, keys and key backups, pending to-device messages,
    /// and the records of its media (whose ids are returned, for the files to be deleted). The
    /// account is marked erased. Its devices and tokens are deleted by deactivation; what the
    /// bridge keeps of it, by the bridge (`UserProvisioner::erased`).
    pub async fn erase_user(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let media: Vec<String> =
            sqlx::query_scalar("SELECT media_id FROM media WHERE uploader = $1 ORDER BY media_id")
                .bind(user_id)
                .fetch_all(&mut *transaction)
                .await?;
        for statement in [
            "DELETE FROM media WHERE uploader = $1",
            "DELETE FROM account_data WHERE user_id = $1",
            "DELETE FROM filters WHERE user_id = $1",
            "DELETE FROM push_rules WHERE user_id = $1",
            "DELETE FROM presence WHERE user_id = $1",
            "DELETE FROM receipts WHERE user_id = $1",
            "DELETE FROM device_keys WHERE user_id = $1",
            "DELETE FROM one_time_keys WHERE user_id = $1",
            "DELETE FROM fallback_keys WHERE user_id = $1",
            "DELETE FROM cross_signing_keys WHERE user_id = $1",
            "DELETE FROM to_device_messages WHERE user_id = $1",
            "DELETE FROM key_backup_keys WHERE user_id = $1",
            "DELETE FROM pushers WHERE user_id = $1",
            "DELETE FROM event_search WHERE event_id IN \
             (SELECT event_id FROM events WHERE sender = $1)",
            "DELETE FROM notifications WHERE user_id = $1",
            "DELETE FROM key_backup_versions WHERE user_id = $1",
            "UPDATE users SET displayname = NULL, avatar_url = NULL, erased = 1 \
             WHERE user_id = $1",
        ] {
            sqlx::query(statement)
                .bind(user_id)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        if let Some(erased) = self.erased.get() {
            erased
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(user_id.to_owned());
        }
        Ok(media)
    }

    /// The erased accounts among `user_ids` (from memory once read: erasures are rare, and
    /// every reader of events asks).
    pub async fn erased_among(&self, user_ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        let erased = self
            .erased
            .get_or_try_init(|| async {
                let all: Vec<String> =
                    sqlx::query_scalar("SELECT user_id FROM users WHERE erased = 1")
                        .fetch_all(self.pool())
                        .await?;
                Ok::<_, StoreError>(std::sync::RwLock::new(all.into_iter().collect()))
            })
            .await?
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(user_ids
            .iter()
            .filter(|user| erased.contains(**user))
            .map(|user| (*user).to_owned())
            .collect())
    }

    /// Makes an account a server administrator, or not; false when there is no such account.
    pub async fn set_admin(&self, user_id: &str, is_admin: bool) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("UPDATE users SET is_admin = $1 WHERE user_id = $2")
                .bind(i64::from(is_admin))
                .bind(user_id)
                .execute(self.pool())
                .await?
                .rows_affected()
                == 1,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::both_backends;
    use crate::store::{MediaRecord, Store};

    both_backends!(erasure, |store: Store| async move {
        store
            .create_user("@e:x", Some("hash"), Some("Eve"), false)
            .await
            .unwrap();
        store
            .create_user("@k:x", None, Some("Kept"), false)
            .await
            .unwrap();
        for user in ["@e:x", "@k:x"] {
            store
                .set_account_data(user, "", "m.direct", "{}")
                .await
                .unwrap();
            store
                .create_media(&MediaRecord {
                    media_id: format!("m-{}", &user[1..2]),
                    content_type: Some("image/png".into()),
                    filename: None,
                    size: 3,
                    uploader: user.into(),
                    unauthenticated: false,
                })
                .await
                .unwrap();
        }
        assert!(
            store
                .erased_among(&["@e:x", "@k:x"])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.erase_user("@e:x").await.unwrap(), ["m-e"]);
        let erased = store.user("@e:x").await.unwrap().unwrap();
        assert!(erased.erased);
        assert_eq!((erased.displayname, erased.avatar_url), (None, None));
        assert_eq!(
            store.account_data("@e:x", "", "m.direct").await.unwrap(),
            None
        );
        assert!(store.media("m-e").await.unwrap().is_none());
        let kept = store.user("@k:x").await.unwrap().unwrap();
        assert_eq!(kept.displayname.as_deref(), Some("Kept"));
        assert!(store.media("m-k").await.unwrap().is_some());
        assert!(
            store
                .account_data("@k:x", "", "m.direct")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            store.erased_among(&["@e:x", "@k:x", "@n:x"]).await.unwrap(),
            ["@e:x".to_owned()].into()
        );
        assert!(store.set_admin("@k:x", true).await.unwrap());
        assert!(store.user("@k:x").await.unwrap().unwrap().is_admin);
        assert!(!store.set_admin("@n:x", true).await.unwrap());
    });
}
