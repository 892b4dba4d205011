//! Account administration from the command line (`causeway user …`).

use std::sync::Arc;

use anyhow::{Context, bail};
use causeway_config::Config;
use causeway_matrix::Services;
use causeway_matrix::api::client::account::validate_localpart;
use causeway_matrix::api::client::membership::leave_all_rooms;
use causeway_matrix::services::hash_password;
use causeway_matrix::store::UserRecord;
use ruma::OwnedUserId;

/// The administration commands, on the server's own storage.
pub struct Admin {
    services: Arc<Services>,
}

impl Admin {
    pub async fn open(config: Config) -> anyhow::Result<Admin> {
        let services = Services::start(config)
            .await
            .context("opening the server's storage")?;
        Ok(Admin { services })
    }

    fn user_id(&self, name: &str) -> anyhow::Result<OwnedUserId> {
        let localpart = name
            .strip_prefix('@')
            .map(|rest| rest.split(':').next().unwrap_or(rest))
            .unwrap_or(name)
            .to_lowercase();
        Ok(validate_localpart(&self.services.server_name, &localpart)?)
    }

    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        is_admin: bool,
    ) -> anyhow::Result<OwnedUserId> {
        let user_id = self.user_id(name)?;
        let hash = hash_password(password).await?;
        let created = self
            .services
            .store
            .create_user(
                user_id.as_str(),
                Some(&hash),
                Some(user_id.localpart()),
                is_admin,
            )
            .await?;
        if !created {
            bail!("{user_id} already exists");
        }
        Ok(user_id)
    }

    pub async fn reset_password(&self, name: &str, password: &str) -> anyhow::Result<OwnedUserId> {
        let user_id = self.user_id(name)?;
        let hash = hash_password(password).await?;
        if !self
            .services
            .store
            .set_password_hash(user_id.as_str(), &hash)
            .await?
        {
            bail!("{user_id} does not exist");
        }
        self.services
            .store
            .delete_devices_except(user_id.as_str(), None)
            .await?;
        Ok(user_id)
    }

    pub async fn deactivate(&self, name: &str) -> anyhow::Result<OwnedUserId> {
        let user_id = self.user_id(name)?;
        if self.services.store.user(user_id.as_str()).await?.is_none() {
            bail!("{user_id} does not exist");
        }
        leave_all_rooms(&self.services, &user_id).await?;
        self.services
            .store
            .deactivate_user(user_id.as_str())
            .await?;
        Ok(user_id)
    }

    pub async fn list(&self) -> anyhow::Result<Vec<UserRecord>> {
        Ok(self.services.store.users().await?)
    }
}
