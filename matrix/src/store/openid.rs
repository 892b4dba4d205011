//! OpenID tokens: short-lived proofs of a user's identity for third parties.

use super::{Store, StoreError};

impl Store {
    /// Keeps an OpenID token of `user_id` until `expires_ts`, and forgets expired ones.
    pub async fn add_openid_token(
        &self,
        token: &str,
        user_id: &str,
        expires_ts: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query("DELETE FROM openid_tokens WHERE expires_ts <= $1")
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
        )
        .bind(super::account::token_hash(token))
        .bind(user_id)
        .bind(expires_ts)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The user an OpenID token stands for, if it is known and has not expired at `now`.
    pub async fn openid_user(&self, token: &str, now: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2",
        )
        .bind(super::account::token_hash(token))
        .bind(now)
        .fetch_optional(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::testing::both_backends;

    both_backends!(openid_tokens_expire, |store: Store| async move {
        store
            .add_openid_token("live", "@a:x", 2_000, 1_000)
            .await
            .unwrap();
        store
            .add_openid_token("short", "@b:x", 1_500, 1_000)
            .await
            .unwrap();
        assert_eq!(
            store.openid_user("live", 1_200).await.unwrap().as_deref(),
            Some("@a:x")
        );
        assert_eq!(store.openid_user("short", 1_500).await.unwrap(), None);
        assert_eq!(store.openid_user("unknown", 1_200).await.unwrap(), None);
        // Expired tokens go when the next one is made.
        store
            .add_openid_token("later", "@a:x", 9_000, 1_600)
            .await
            .unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM openid_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(left, 2);
    });
}
