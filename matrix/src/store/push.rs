//! Pushers (where a user's notifications go) and notifications (the events their push rules
//! said notify, which `/notifications` lists and pushers deliver).

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// A pusher as clients set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pusher {
    pub user_id: String,
    pub device_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The `data` object, JSON.
    pub data: String,
    pub pushkey_ts: i64,
    /// The position of the last notification this pusher has dealt with.
    pub last_sent: i64,
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    pub user_id: String,
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    /// The push rule actions, a JSON array.
    pub actions: String,
    pub highlight: bool,
    pub ts: i64,
}

const PUSHER_COLUMNS: &str = "user_id, device_id, app_id, pushkey, kind, app_display_name, \
    device_display_name, profile_tag, lang, data, pushkey_ts, last_sent";

fn pusher_from_row(row: &sqlx::any::AnyRow) -> Result<Pusher, StoreError> {
    Ok(Pusher {
        user_id: row.try_get("user_id")?,
        device_id: row.try_get("device_id")?,
        app_id: row.try_get("app_id")?,
        pushkey: row.try_get("pushkey")?,
        kind: row.try_get("kind")?,
        app_display_name: row.try_get("app_display_name")?,
        device_display_name: row.try_get("device_display_name")?,
        profile_tag: row.try_get("profile_tag")?,
        lang: row.try_get("lang")?,
        data: row.try_get("data")?,
        pushkey_ts: row.try_get("pushkey_ts")?,
        last_sent: row.try_get("last_sent")?,
    })
}

/// The actions most notifications have, stored as NULL.
const PLAIN_ACTIONS: &str = r#"["notify"]"#;

/// The columns of a notification (`notifications n JOIN events e`).
const NOTIFICATION_COLUMNS: &str =
    "n.user_id, n.stream_ordering, e.event_id, e.room_id, n.actions, n.highlight, n.ts";

fn notification_from_row(row: &sqlx::any::AnyRow) -> Result<NotificationRow, StoreError> {
    Ok(NotificationRow {
        user_id: row.try_get("user_id")?,
        stream_ordering: row.try_get("stream_ordering")?,
        event_id: row.try_get("event_id")?,
        room_id: row.try_get("room_id")?,
        actions: row
            .try_get::<Option<String>, _>("actions")?
            .unwrap_or_else(|| PLAIN_ACTIONS.to_owned()),
        highlight: row.try_get::<i64, _>("highlight")? != 0,
        ts: row.try_get("ts")?,
    })
}

impl Store {
    /// Adds or replaces a user's pusher (by app id and pushkey). A pusher already there keeps
    /// what it has delivered; a new one starts with what comes next. Unless `append`, the same
    /// app id and pushkey of other users are removed (the device changed hands).
    pub async fn set_pusher(&self, pusher: &Pusher, append: bool) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        if !append {
            sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
                .bind(&pusher.app_id)
                .bind(&pusher.pushkey)
                .bind(&pusher.user_id)
                .execute(&mut *transaction)
                .await?;
        }
        sqlx::query(
            "INSERT INTO pushers (user_id, device_id, app_id, pushkey, kind, app_display_name, \
             device_display_name, profile_tag, lang, data, pushkey_ts, last_sent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET device_id = excluded.device_id, \
             kind = excluded.kind, app_display_name = excluded.app_display_name, \
             device_display_name = excluded.device_display_name, \
             profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data, \
             pushkey_ts = excluded.pushkey_ts",
        )
        .bind(&pusher.user_id)
        .bind(&pusher.device_id)
        .bind(&pusher.app_id)
        .bind(&pusher.pushkey)
        .bind(&pusher.kind)
        .bind(&pusher.app_display_name)
        .bind(&pusher.device_display_name)
        .bind(pusher.profile_tag.as_deref())
        .bind(&pusher.lang)
        .bind(&pusher.data)
        .bind(pusher.pushkey_ts)
        .bind(self.current_position())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Removes a user's pusher; false if there was none.
    pub async fn delete_pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> Result<bool, StoreError> {
        let deleted =
            sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                .bind(user_id)
                .bind(app_id)
                .bind(pushkey)
                .execute(self.pool())
                .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Removes the pushers a device set (the device is deleted or logged out).
    pub async fn delete_device_pushers(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes a user's pushers but those of one device (a password change keeps the pushers
    /// of the device that changed it); with `None`, all of them.
    pub async fn delete_pushers_except(
        &self,
        user_id: &str,
        keep_device: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND device_id <> $2")
            .bind(user_id)
            .bind(keep_device.unwrap_or(""))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A user's pushers, by app id and pushkey.
    pub async fn pushers(&self, user_id: &str) -> Result<Vec<Pusher>, StoreError> {
        let statement = format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(user_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(pusher_from_row).collect()
    }

    /// Every pusher of every user.
    pub async fn all_pushers(&self) -> Result<Vec<Pusher>, StoreError> {
        let statement =
            format!("SELECT {PUSHER_COLUMNS} FROM pushers ORDER BY user_id, app_id, pushkey");
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(pusher_from_row).collect()
    }

    /// One pusher, if it is still there.
    pub async fn pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> Result<Option<Pusher>, StoreError> {
        let statement = format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 AND app_id = $2 \
             AND pushkey = $3"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(user_id)
            .bind(app_id)
            .bind(pushkey)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(pusher_from_row).transpose()
    }

    /// Records that a pusher has dealt with the notifications up to `position`.
    pub async fn advance_pusher(&self, pusher: &Pusher, position: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pushers SET last_sent = $1 WHERE user_id = $2 AND app_id = $3 \
             AND pushkey = $4 AND last_sent < $1",
        )
        .bind(position)
        .bind(&pusher.user_id)
        .bind(&pusher.app_id)
        .bind(&pusher.pushkey)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Stores notifications (one per user and event; a repeated one is ignored), in
    /// statements of up to 10 (SQLite looks bound parameters up one by one: a statement of
    /// hundreds costs more than several small ones).
    pub async fn add_notifications(
        &self,
        notifications: &[NotificationRow],
    ) -> Result<(), StoreError> {
        if notifications.is_empty() {
            return Ok(());
        }
        let mut transaction = self.begin_write().await?;
        for chunk in notifications.chunks(10) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let base = 1 + i * 5;
                    let numbers: Vec<String> = (base..base + 5).map(|n| format!("${n}")).collect();
                    format!("({})", numbers.join(", "))
                })
                .collect();
            let statement = format!(
                "INSERT INTO notifications (user_id, stream_ordering, actions, highlight, ts) \
                 VALUES {} ON CONFLICT (user_id, stream_ordering) DO NOTHING",
                rows.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
            for notification in chunk {
                query = query
                    .bind(notification.user_id.clone())
                    .bind(notification.stream_ordering)
                    .bind(
                        (notification.actions != PLAIN_ACTIONS)
                            .then(|| notification.actions.clone()),
                    )
                    .bind(i64::from(notification.highlight))
                    .bind(notification.ts);
            }
            query.execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// A user's notifications after position `after`, oldest first.
    pub async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let statement = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications n \
             JOIN events e ON e.stream_ordering = n.stream_ordering \
             WHERE n.user_id = $1 AND n.stream_ordering > $2 \
             ORDER BY n.stream_ordering LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(user_id)
            .bind(after)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// The users among `users` that have a pusher (someone to push to).
    pub async fn users_with_pushers(&self, users: &[String]) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        for chunk in users.chunks(200) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let statement = format!(
                "SELECT DISTINCT user_id FROM pushers WHERE user_id IN ({}) ORDER BY user_id",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(statement));
            for user in chunk {
                query = query.bind(user);
            }
            let users: Vec<String> = query.fetch_all(self.pool()).await?;
            found.extend(users);
        }
        Ok(found)
    }

    /// Forgets notifications older than `max_age_ms`.
    pub async fn prune_notifications(&self, max_age_ms: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM notifications WHERE ts < $1")
            .bind(now_ms() - max_age_ms)
            .execute(self.pool())
            .await?;
        Ok(deleted.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    fn pusher(user: &str, device: &str, pushkey: &str) -> Pusher {
        Pusher {
            user_id: user.into(),
            device_id: device.into(),
            app_id: "app".into(),
            pushkey: pushkey.into(),
            kind: "http".into(),
            app_display_name: "App".into(),
            device_display_name: "Phone".into(),
            profile_tag: None,
            lang: "en".into(),
            data: "{\"url\":\"https://push.example/_matrix/push/v1/notify\"}".into(),
            pushkey_ts: 1,
            last_sent: 0,
        }
    }

    fn notification(user: &str, position: i64, highlight: bool) -> NotificationRow {
        NotificationRow {
            user_id: user.into(),
            stream_ordering: position,
            event_id: format!("$e{position}"),
            room_id: if position % 2 == 0 { "!a:x" } else { "!b:x" }.into(),
            actions: if highlight {
                r#"["notify",{"set_tweak":"highlight"}]"#
            } else {
                PLAIN_ACTIONS
            }
            .into(),
            highlight,
            ts: now_ms(),
        }
    }

    both_backends!(pushers_and_notifications, |store: Store| async move {
        store
            .set_pusher(&pusher("@a:x", "A", "k1"), false)
            .await
            .unwrap();
        store
            .set_pusher(&pusher("@a:x", "B", "k2"), false)
            .await
            .unwrap();
        // The same pushkey taken by another user: Alice's goes, unless appended.
        store
            .set_pusher(&pusher("@b:x", "C", "k1"), false)
            .await
            .unwrap();
        assert_eq!(
            store
                .pushers("@a:x")
                .await
                .unwrap()
                .iter()
                .map(|p| p.pushkey.as_str())
                .collect::<Vec<_>>(),
            ["k2"]
        );
        store
            .set_pusher(&pusher("@a:x", "A", "k1"), true)
            .await
            .unwrap();
        assert_eq!(store.all_pushers().await.unwrap().len(), 3);
        // Setting it again updates it and keeps its progress.
        let first = store.pusher("@a:x", "app", "k1").await.unwrap().unwrap();
        store.advance_pusher(&first, 40).await.unwrap();
        store.advance_pusher(&first, 30).await.unwrap();
        let mut renamed = pusher("@a:x", "A", "k1");
        renamed.device_display_name = "New phone".into();
        store.set_pusher(&renamed, true).await.unwrap();
        let again = store.pusher("@a:x", "app", "k1").await.unwrap().unwrap();
        assert_eq!(
            (again.device_display_name.as_str(), again.last_sent),
            ("New phone", 40)
        );
        // A password change from device B keeps B's pushers only.
        store
            .delete_pushers_except("@a:x", Some("B"))
            .await
            .unwrap();
        assert_eq!(store.pushers("@a:x").await.unwrap().len(), 1);
        store.delete_device_pushers("@a:x", "B").await.unwrap();
        assert!(store.pushers("@a:x").await.unwrap().is_empty());
        assert!(store.delete_pusher("@b:x", "app", "k1").await.unwrap());
        assert!(!store.delete_pusher("@b:x", "app", "k1").await.unwrap());

        // The events notified of, at positions 1 to 3 (rooms as `notification` names them).
        for position in 1..=3 {
            let new = crate::store::NewEvent {
                event_id: format!("$e{position}"),
                room_id: if position % 2 == 0 { "!a:x" } else { "!b:x" }.into(),
                sender: "@c:x".into(),
                event_type: "m.room.message".into(),
                state_key: None,
                depth: position,
                origin_server_ts: 0,
                json: "{}".into(),
                prev_events: vec![],
                state_group_before: 0,
                membership: None,
                transaction: None,
                relation: None,
                redacts: None,
                redacts_later: None,
                redacted_by: None,
                standing: crate::store::Standing::Accepted,
                resolved: None,
            };
            let mut writer = store.stream_writer().await;
            let persisted = store.persist_event(&mut writer, &new).await.unwrap();
            writer.publish();
            assert_eq!(persisted.stream_ordering, position);
        }
        store
            .add_notifications(&[
                notification("@a:x", 1, false),
                notification("@a:x", 2, true),
                notification("@a:x", 3, false),
                notification("@b:x", 3, false),
            ])
            .await
            .unwrap();
        // Again: nothing doubles.
        store
            .add_notifications(&[notification("@a:x", 3, false)])
            .await
            .unwrap();
        let positions = |rows: Vec<NotificationRow>| {
            rows.iter()
                .map(|row| row.stream_ordering)
                .collect::<Vec<_>>()
        };
        // The event and room come from the event; the actions are kept, the plain ones too.
        let listed = store.notifications_after("@a:x", 0, 10).await.unwrap();
        assert_eq!(positions(listed.clone()), [1, 2, 3]);
        assert_eq!(
            (listed[2].event_id.as_str(), listed[2].room_id.as_str()),
            ("$e3", "!b:x")
        );
        assert_eq!(listed[2].actions, PLAIN_ACTIONS);
        assert_eq!(listed[1].actions, r#"["notify",{"set_tweak":"highlight"}]"#);
        assert_eq!(
            positions(store.notifications_after("@a:x", 1, 10).await.unwrap()),
            [2, 3]
        );

        assert_eq!(store.prune_notifications(60_000).await.unwrap(), 0);
        assert_eq!(store.prune_notifications(-60_000).await.unwrap(), 4);
    });
}
