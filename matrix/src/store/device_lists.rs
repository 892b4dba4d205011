//! Device lists across servers: the chain of local users' device changes that other servers
//! follow (`stream_id` and `prev_id` of `m.device_list_update`), and other servers' users'
//! device lists as last learnt from their servers.

use sqlx::Row;

use super::{Store, StoreError};

/// What changed in a user's device list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChange<'a> {
    /// A device was added, or its keys or name changed.
    Device(&'a str),
    /// A device was deleted.
    Deleted(&'a str),
    /// The user's cross-signing keys changed.
    CrossSigning,
    /// Another server's user: nothing of the chain is kept here.
    Remote,
}

/// One link of a local user's chain of device changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceListEntry {
    pub position: i64,
    /// The link before this one of the same user (none: the first one kept).
    pub prev: Option<i64>,
    pub user_id: String,
    /// `None`: the cross-signing keys changed.
    pub device_id: Option<String>,
    pub deleted: bool,
}

/// Another server's user's device list as last learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDeviceList {
    pub user_id: String,
    pub stream_id: i64,
    /// JSON object: device id to keys (as `keys/query` shows them).
    pub devices: String,
    pub master_key: Option<String>,
    pub self_signing_key: Option<String>,
}

impl Store {
    /// Adds a link to a local user's chain at `position` (the position of the change). Links
    /// are kept: a later one names the one before it, which the other servers last heard of.
    pub(super) async fn log_device_change(
        &self,
        position: i64,
        user_id: &str,
        change: DeviceChange<'_>,
    ) -> Result<(), StoreError> {
        let (device_id, deleted) = match change {
            DeviceChange::Device(device) => (Some(device), false),
            DeviceChange::Deleted(device) => (Some(device), true),
            DeviceChange::CrossSigning => (None, false),
            DeviceChange::Remote => return Ok(()),
        };
        sqlx::query(
            "INSERT INTO device_list_stream (stream_ordering, user_id, device_id, deleted) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(position)
        .bind(user_id)
        .bind(device_id)
        .bind(i64::from(deleted))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records that a local user's devices were deleted (with their keys).
    pub async fn devices_deleted(
        &self,
        user_id: &str,
        device_ids: &[String],
    ) -> Result<(), StoreError> {
        if device_ids.is_empty() {
            return Ok(());
        }
        let mut writer = self.stream_writer().await;
        for device_id in device_ids {
            self.forget_device_keys(&mut writer, user_id, device_id)
                .await?;
        }
        writer.publish();
        Ok(())
    }

    /// The links of local users' chains at positions in `(after, until]`, in order.
    pub async fn device_list_entries(
        &self,
        after: i64,
        until: i64,
    ) -> Result<Vec<DeviceListEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.stream_ordering, s.user_id, s.device_id, s.deleted, \
             (SELECT MAX(p.stream_ordering) FROM device_list_stream p \
              WHERE p.user_id = s.user_id AND p.device_id IS NOT NULL \
              AND p.stream_ordering < s.stream_ordering) AS prev \
             FROM device_list_stream s WHERE s.stream_ordering > $1 AND s.stream_ordering <= $2 \
             ORDER BY s.stream_ordering",
        )
        .bind(after)
        .bind(until)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceListEntry {
                    position: row.try_get("stream_ordering")?,
                    prev: row.try_get("prev")?,
                    user_id: row.try_get("user_id")?,
                    device_id: row.try_get("device_id")?,
                    deleted: row.try_get::<i64, _>("deleted")? != 0,
                })
            })
            .collect()
    }

    /// The position of a local user's latest device change (0: none), the `stream_id` other
    /// servers are told with the user's whole device list.
    pub async fn device_list_stream_id(&self, user_id: &str) -> Result<i64, StoreError> {
        let latest: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(stream_ordering) FROM device_list_stream \
             WHERE user_id = $1 AND device_id IS NOT NULL",
        )
        .bind(user_id)
        .fetch_one(self.pool())
        .await?;
        Ok(latest.unwrap_or(0))
    }

    /// The position of a user's latest device-list change (local or not), if any.
    pub async fn device_list_position(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT stream_ordering FROM device_list_updates WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?,
        )
    }

    /// Another server's user's device list as last learnt, if it is kept.
    pub async fn remote_device_list(
        &self,
        user_id: &str,
    ) -> Result<Option<RemoteDeviceList>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, stream_id, devices, master_key, self_signing_key \
             FROM remote_device_lists WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(RemoteDeviceList {
                user_id: row.try_get("user_id")?,
                stream_id: row.try_get("stream_id")?,
                devices: row.try_get("devices")?,
                master_key: row.try_get("master_key")?,
                self_signing_key: row.try_get("self_signing_key")?,
            })
        })
        .transpose()
    }

    /// Keeps (or replaces) another server's user's device list.
    pub async fn set_remote_device_list(&self, list: &RemoteDeviceList) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO remote_device_lists (user_id, stream_id, devices, master_key, \
             self_signing_key) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET \
             stream_id = excluded.stream_id, devices = excluded.devices, \
             master_key = excluded.master_key, self_signing_key = excluded.self_signing_key",
        )
        .bind(&list.user_id)
        .bind(list.stream_id)
        .bind(&list.devices)
        .bind(&list.master_key)
        .bind(&list.self_signing_key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Drops another server's user's device list: it is asked again when next needed.
    pub async fn forget_remote_device_list(&self, user_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM remote_device_lists WHERE user_id = $1")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Whether another server's user is joined to a room a local user is joined to: only then
    /// does their server tell this one of their device changes.
    pub async fn shares_room_with_local_user(&self, user_id: &str) -> Result<bool, StoreError> {
        let shared: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM room_memberships theirs JOIN room_memberships ours \
             ON ours.room_id = theirs.room_id JOIN users u ON u.user_id = ours.user_id \
             WHERE theirs.user_id = $1 AND theirs.membership = 'join' \
             AND ours.membership = 'join' LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(shared.is_some())
    }
}

/// With a membership change in a room: another server's user who joins, or every other
/// server's user of a room a local user joins, starts sharing a room with this server's users
/// (again), and what was kept of their device lists may have missed changes.
pub(super) async fn membership_changed(
    connection: &mut sqlx::AnyConnection,
    room_id: &str,
    user_id: &str,
    membership: &str,
) -> Result<(), StoreError> {
    if membership != "join" {
        return Ok(());
    }
    let local: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(&mut *connection)
        .await?;
    if local.is_some() {
        sqlx::query(
            "DELETE FROM remote_device_lists WHERE user_id IN (SELECT user_id FROM \
             room_memberships WHERE room_id = $1 AND membership = 'join')",
        )
        .bind(room_id)
        .execute(connection)
        .await?;
    } else {
        sqlx::query("DELETE FROM remote_device_lists WHERE user_id = $1")
            .bind(user_id)
            .execute(connection)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    both_backends!(the_chain_and_kept_lists, |store: Store| async move {
        let before = store.current_position();
        store
            .create_device_and_token("@a:x", "D1", None, "t1", None)
            .await
            .unwrap();
        store
            .set_device_keys("@a:x", "D1", "{\"k\":1}")
            .await
            .unwrap();
        store
            .set_cross_signing_key("@a:x", "master", "{\"m\":1}")
            .await
            .unwrap();
        store.delete_device_keys("@a:x", "D1").await.unwrap();
        // Another server's user: nothing of a chain.
        store
            .device_list_changed("@b:y", DeviceChange::Remote)
            .await
            .unwrap();
        let entries = store.device_list_entries(before, i64::MAX).await.unwrap();
        let shape: Vec<(Option<&str>, bool)> = entries
            .iter()
            .map(|entry| (entry.device_id.as_deref(), entry.deleted))
            .collect();
        assert_eq!(
            shape,
            vec![(Some("D1"), false), (None, false), (Some("D1"), true)]
        );
        // Each device link names the one before it; the cross-signing one is not a link.
        assert_eq!(entries[0].prev, None);
        assert_eq!(entries[2].prev, Some(entries[0].position));
        assert_eq!(
            store.device_list_stream_id("@a:x").await.unwrap(),
            entries[2].position
        );
        assert_eq!(store.device_list_stream_id("@b:y").await.unwrap(), 0);
        assert!(store.device_list_position("@b:y").await.unwrap().is_some());
        // Only what is in the range.
        let later = store
            .device_list_entries(entries[1].position, i64::MAX)
            .await
            .unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].prev, Some(entries[0].position));

        let list = RemoteDeviceList {
            user_id: "@b:y".into(),
            stream_id: 7,
            devices: "{\"B\":{}}".into(),
            master_key: Some("{\"m\":2}".into()),
            self_signing_key: None,
        };
        store.set_remote_device_list(&list).await.unwrap();
        assert_eq!(
            store.remote_device_list("@b:y").await.unwrap(),
            Some(list.clone())
        );
        let newer = RemoteDeviceList {
            stream_id: 9,
            ..list
        };
        store.set_remote_device_list(&newer).await.unwrap();
        assert_eq!(store.remote_device_list("@b:y").await.unwrap(), Some(newer));
        store.forget_remote_device_list("@b:y").await.unwrap();
        assert_eq!(store.remote_device_list("@b:y").await.unwrap(), None);
        assert!(!store.shares_room_with_local_user("@b:y").await.unwrap());
    });
}
