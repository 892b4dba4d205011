//! Account administration, in one place for the admin API (`api/admin.rs`), the client API's
//! deactivation and the command line when no server runs.

use ruma::UserId;

use crate::Services;
use crate::api::client::account::{delete_devices, device_ids, validate_localpart};
use crate::api::client::membership::leave_all_rooms;
use crate::error::Error;
use crate::services::hash_password;

/// What the admin API's `PUT /_synapse/admin/v2/users/{userId}` may set.
#[derive(Debug, Default, Clone)]
pub struct UserChange {
    pub password: Option<String>,
    pub admin: Option<bool>,
    pub displayname: Option<String>,
    pub deactivated: Option<bool>,
    /// With a new password: log out every device (the default).
    pub logout_devices: bool,
}

fn local(services: &Services, user_id: &UserId) -> Result<(), Error> {
    if !services.is_local(user_id) {
        return Err(Error::InvalidParam(
            "only users of this server can be administered here".into(),
        ));
    }
    Ok(())
}

/// Creates the account or changes it; says whether it was created.
pub async fn create_or_modify(
    services: &Services,
    user_id: &UserId,
    change: UserChange,
) -> Result<bool, Error> {
    local(services, user_id)?;
    let Some(existing) = services.store.user(user_id.as_str()).await? else {
        if change.deactivated == Some(true) {
            return Err(Error::InvalidParam(
                "a new account cannot be deactivated".into(),
            ));
        }
        validate_localpart(&services.server_name, user_id.localpart())?;
        let hash = match &change.password {
            Some(password) => Some(hash_password(password).await?),
            None => None,
        };
        let name = change.displayname.as_deref().unwrap_or(user_id.localpart());
        let created = services
            .store
            .create_user(
                user_id.as_str(),
                hash.as_deref(),
                Some(name),
                change.admin.unwrap_or(false),
            )
            .await?;
        if created {
            tracing::info!(%user_id, admin = change.admin.unwrap_or(false), "an administrator created an account");
        }
        return Ok(created);
    };
    if existing.deactivated && change.deactivated != Some(true) && change.password.is_some() {
        return Err(Error::InvalidParam(
            "a deactivated account cannot be given a password".into(),
        ));
    }
    if let Some(password) = &change.password {
        reset_password(services, user_id, password, change.logout_devices).await?;
    }
    if let Some(admin) = change.admin {
        services.store.set_admin(user_id.as_str(), admin).await?;
    }
    if let Some(name) = &change.displayname {
        services
            .store
            .set_displayname(user_id.as_str(), Some(name))
            .await?;
    }
    match change.deactivated {
        Some(true) if !existing.deactivated => deactivate(services, user_id, false).await?,
        Some(false) if existing.deactivated => {
            return Err(Error::InvalidParam(
                "deactivated accounts cannot be reactivated".into(),
            ));
        }
        _ => {}
    }
    Ok(false)
}

/// Sets a new password; with `logout_devices`, every device of the account is logged out.
pub async fn reset_password(
    services: &Services,
    user_id: &UserId,
    password: &str,
    logout_devices: bool,
) -> Result<(), Error> {
    local(services, user_id)?;
    let hash = hash_password(password).await?;
    if !services
        .store
        .set_password_hash(user_id.as_str(), &hash)
        .await?
    {
        return Err(Error::NotFound(format!("{user_id} does not exist")));
    }
    if logout_devices {
        let devices = device_ids(services, user_id, None).await?;
        delete_devices(services, user_id, &devices).await?;
    }
    tracing::info!(%user_id, logout_devices, "a new password was set");
    Ok(())
}

/// Deactivates an account: it leaves its rooms, its devices are deleted and it cannot log in
/// again. With `erase`, what it leaves behind is erased too ([`erase`]).
pub async fn deactivate(services: &Services, user_id: &UserId, erase: bool) -> Result<(), Error> {
    local(services, user_id)?;
    if services.store.user(user_id.as_str()).await?.is_none() {
        return Err(Error::NotFound(format!("{user_id} does not exist")));
    }
    if erase {
        // The leave events carry no name or avatar.
        services
            .store
            .set_displayname(user_id.as_str(), None)
            .await?;
        services
            .store
            .set_avatar_url(user_id.as_str(), None)
            .await?;
    }
    leave_all_rooms(services, user_id).await?;
    let devices = device_ids(services, user_id, None).await?;
    delete_devices(services, user_id, &devices).await?;
    services.store.deactivate_user(user_id.as_str()).await?;
    tracing::info!(%user_id, erase, "deactivated an account");
    if erase {
        self::erase(services, user_id).await?;
    }
    Ok(())
}

/// Erases what a deactivated account leaves behind: profile, account data, presence, receipts,
/// keys, uploaded media (files and thumbnails), its messages still queued for XMPP; the content
/// of its events is served redacted to whoever was not in the room when they were sent.
pub async fn erase(services: &Services, user_id: &UserId) -> Result<(), Error> {
    let media = services.store.erase_user(user_id.as_str()).await?;
    for media_id in &media {
        // Media ids were checked when stored; the paths stay inside the media directories.
        for path in [
            services.media_dir.join(media_id),
            services.thumbnails.dir_of(media_id),
        ] {
            let removed = if path.is_dir() {
                tokio::fs::remove_dir_all(&path).await
            } else {
                tokio::fs::remove_file(&path).await
            };
            if let Err(error) = removed
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(%error, path = %path.display(), "erased media was not deleted");
            }
        }
    }
    services.user_erased(user_id).await?;
    tracing::info!(%user_id, media = media.len(), "erased an account");
    Ok(())
}
