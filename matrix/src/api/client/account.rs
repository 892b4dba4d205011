//! Registration, login, logout, whoami, passwords, deactivation and devices.

use std::sync::Arc;

use causeway_config::RegistrationMode;
use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, change_password, deactivate, get_username_availability, register,
    whoami,
};
use ruma::api::client::device::{self, delete_device, get_device, get_devices, update_device};
use ruma::api::client::session::{get_login_types, login, logout, logout_all};
use ruma::api::client::uiaa::{AuthData, UserIdentifier};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedUserId, UInt, UserId};
use serde_json::json;

use crate::Services;
use crate::api::ruma_wrapper::Ruma;
use crate::error::Error;
use crate::services::RegistrationParams;
use crate::services::{hash_password, random_string, verify_password};
use crate::store::DeviceRecord;

/// Localparts of this namespace are reserved for users of the XMPP side (ghosts).
pub const RESERVED_PREFIX: &str = "_xmpp_";

/// Checks a localpart asked for at registration.
pub fn validate_localpart(
    server_name: &ruma::ServerName,
    localpart: &str,
) -> Result<OwnedUserId, Error> {
    if localpart.is_empty() {
        return Err(Error::InvalidUsername(
            "the user name must not be empty".into(),
        ));
    }
    if let Some(bad) = localpart
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+'))
    {
        return Err(Error::InvalidUsername(format!(
            "the user name may only contain a-z, 0-9, and . _ = - / +; found {bad:?}"
        )));
    }
    if localpart.starts_with(RESERVED_PREFIX) {
        return Err(Error::Exclusive(format!(
            "user names starting with {RESERVED_PREFIX} are reserved for XMPP users"
        )));
    }
    let user_id = UserId::parse(format!("@{localpart}:{server_name}"))
        .map_err(|e| Error::InvalidUsername(e.to_string()))?;
    if user_id.as_str().len() > 255 {
        return Err(Error::InvalidUsername(
            "the user id is longer than 255 bytes".into(),
        ));
    }
    Ok(user_id)
}

fn uiaa_flows(services: &Services) -> Vec<&'static str> {
    match services.config.registration.mode {
        RegistrationMode::Token => vec!["m.login.registration_token"],
        _ => vec!["m.login.dummy"],
    }
}

/// Whether two secrets are equal, in a time that depends on neither: their SHA-256 digests
/// (of fixed length, whatever the secrets' lengths) compared byte by byte without stopping.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

/// Where a registration's user-interactive authentication stands once a flow is complete.
enum RegistrationStep {
    /// The flow is complete: register with these parameters, then record the account in the
    /// session.
    Complete {
        session: String,
        params: RegistrationParams,
    },
    /// The session registered an account already: the same answer again.
    Registered {
        user_id: OwnedUserId,
        params: RegistrationParams,
    },
}

/// Asks for (or checks) user-interactive authentication of a registration, remembering the
/// parameters its requests gave; `Ok` once a flow is complete or the session is done.
fn registration_uiaa(
    services: &Services,
    auth: Option<&AuthData>,
    given: RegistrationParams,
) -> Result<RegistrationStep, Error> {
    let flows = uiaa_flows(services);
    let mut sessions = services
        .uiaa
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let session_id = open_session(&mut sessions, auth, None)?;
    let session = sessions.entry(session_id.clone()).or_default();
    let params = session
        .registration
        .clone()
        .unwrap_or_default()
        .updated_by(given);
    if let Some(user_id) = &session.registered {
        return Ok(RegistrationStep::Registered {
            user_id: user_id.clone(),
            params,
        });
    }
    session.registration = Some(params.clone());
    let mut auth_error = None;
    match auth {
        Some(AuthData::Dummy(_)) if flows.contains(&"m.login.dummy") => {
            session.completed.push("m.login.dummy".into());
        }
        Some(AuthData::RegistrationToken(token))
            if flows.contains(&"m.login.registration_token") =>
        {
            // Every configured token is compared, each in constant time: how long the check
            // takes says nothing about how close a guess came.
            let given = token.token.as_str();
            if services
                .config
                .registration
                .tokens
                .iter()
                .fold(false, |found, valid| found | same_secret(valid, given))
            {
                session.completed.push("m.login.registration_token".into());
            } else {
                auth_error = Some(("M_FORBIDDEN", "invalid registration token"));
            }
        }
        Some(_) => auth_error = Some(("M_UNRECOGNIZED", "unsupported authentication type")),
        None => {}
    }
    if flows
        .iter()
        .all(|stage| session.completed.iter().any(|done| done == stage))
    {
        return Ok(RegistrationStep::Complete {
            session: session_id,
            params,
        });
    }
    let completed = session.completed.clone();
    let mut body = json!({
        "flows": flows.iter().map(|stage| json!({"stages": [stage]})).collect::<Vec<_>>(),
        "params": {},
        "session": session_id,
        "completed": completed,
    });
    if let Some((errcode, error)) = auth_error {
        body["errcode"] = json!(errcode);
        body["error"] = json!(error);
    }
    Err(Error::Uiaa(Box::new(body)))
}

/// Whether a registration session has made its account already.
fn session_registered(services: &Services, auth: Option<&AuthData>) -> bool {
    let Some(id) = auth.and_then(AuthData::session) else {
        return false;
    };
    services
        .uiaa
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(id)
        .is_some_and(|session| session.bound.is_none() && session.registered.is_some())
}

/// The session a user-interactive authentication request continues (one this server opened,
/// for the same user and operation), or a new one bound to them.
fn open_session(
    sessions: &mut std::collections::HashMap<String, crate::services::UiaaSession>,
    auth: Option<&AuthData>,
    bound: Option<(String, String)>,
) -> Result<String, Error> {
    if let Some(id) = auth.and_then(AuthData::session) {
        return match sessions.get(id) {
            None => Err(Error::UnknownSession(id.to_owned())),
            Some(session) if session.bound != bound => Err(Error::Forbidden(
                "this authentication session was opened for another operation".into(),
            )),
            Some(_) => Ok(id.to_owned()),
        };
    }
    // Abandoned sessions stay behind: keep their number bounded.
    if sessions.len() >= 10_000 {
        sessions.clear();
    }
    let id = random_string(24);
    sessions.insert(
        id.clone(),
        crate::services::UiaaSession {
            completed: Vec::new(),
            bound,
            ..Default::default()
        },
    );
    Ok(id)
}

/// Asks for the user's password through user-interactive authentication, in a session bound
/// to the user and to `operation`.
pub(crate) async fn password_uiaa(
    services: &Services,
    user_id: &UserId,
    operation: &str,
    auth: Option<&AuthData>,
) -> Result<(), Error> {
    let user = services
        .store
        .user(user_id.as_str())
        .await?
        .ok_or(Error::UnknownToken)?;
    let session_id = {
        let mut sessions = services
            .uiaa
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open_session(
            &mut sessions,
            auth,
            Some((user_id.to_string(), operation.to_owned())),
        )?
    };
    let password_hash = user.password_hash.as_deref();
    let mut auth_error = None;
    if let Some(AuthData::Password(password)) = auth {
        let claimed = match &password.identifier {
            UserIdentifier::Matrix(id) => Some(id.user.as_str()),
            _ => None,
        };
        let same_user = claimed
            .is_some_and(|claimed| claimed == user_id.as_str() || claimed == user_id.localpart());
        if let (true, Some(hash)) = (same_user, password_hash)
            && verify_password(&password.password, hash).await
        {
            services
                .uiaa
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&session_id);
            return Ok(());
        }
        auth_error = Some("invalid password");
    }
    let mut body = json!({
        "flows": [{"stages": ["m.login.password"]}],
        "params": {},
        "session": session_id,
        "completed": [],
    });
    if let Some(error) = auth_error {
        body["errcode"] = json!("M_FORBIDDEN");
        body["error"] = json!(error);
    }
    Err(Error::Uiaa(Box::new(body)))
}

/// # `POST /_matrix/client/v3/register`
pub async fn register_route(
    services: Arc<Services>,
    request: Ruma<register::v3::Request>,
) -> Result<register::v3::Response, Error> {
    let body = &request.body;
    let ip = request.client_ip.map(|ip| ip.to_string());
    // Guests are allowed or not on their own, whatever the registration mode.
    if body.kind == register::RegistrationKind::Guest {
        return register_guest(&services, body, ip).await;
    }
    if services.config.registration.mode == RegistrationMode::Disabled {
        return Err(Error::Forbidden(
            "registration is disabled on this server".into(),
        ));
    }
    // A name given is checked first, so that a taken one is known before any stage (unless
    // the session registered it already: then the request is answered again).
    let localpart = body.username.as_deref().map(str::to_lowercase);
    if let Some(localpart) = &localpart
        && !session_registered(&services, body.auth.as_ref())
    {
        let user_id = validate_localpart(&services.server_name, localpart)?;
        if services.store.user(user_id.as_str()).await?.is_some() {
            return Err(Error::UserInUse);
        }
    }
    if body.auth.is_some() {
        // Every attempt at a stage (a registration token above all) is limited before it is
        // checked, so that tokens cannot be guessed at the speed of the network.
        services
            .limits
            .registration
            .check(ip.as_deref().unwrap_or("unknown"))?;
    }
    let password_hash = match body.password.as_deref() {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let given = RegistrationParams {
        localpart,
        password_hash,
        device_id: body.device_id.clone(),
        initial_device_display_name: body.initial_device_display_name.clone(),
        inhibit_login: body.inhibit_login,
    };
    let (user_id, params) = match registration_uiaa(&services, body.auth.as_ref(), given)? {
        RegistrationStep::Registered { user_id, params } => (user_id, params),
        RegistrationStep::Complete { session, params } => {
            let localpart = params
                .localpart
                .clone()
                .unwrap_or_else(|| random_string(12).to_lowercase());
            let user_id = validate_localpart(&services.server_name, &localpart)?;
            let hash = params
                .password_hash
                .as_deref()
                .ok_or_else(|| Error::MissingParam("a password is required".into()))?;
            if !services
                .store
                .create_user(user_id.as_str(), Some(hash), Some(&localpart), false)
                .await?
            {
                return Err(Error::UserInUse);
            }
            tracing::info!(user_id = %user_id, "registered a new account");
            if let Some(session) = services
                .uiaa
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_mut(&session)
            {
                session.registered = Some(user_id.clone());
            }
            (user_id, params)
        }
    };
    let mut response = register::v3::Response::new(user_id.clone());
    if !params.inhibit_login {
        let (token, device_id) = services
            .login_device(
                &user_id,
                params.device_id.as_deref(),
                params.initial_device_display_name.as_deref(),
                ip,
            )
            .await?;
        response.access_token = Some(token);
        response.device_id = Some(device_id);
    }
    Ok(response)
}

/// A guest account (`kind=guest`): a numeric name, no password, a device.
async fn register_guest(
    services: &Services,
    body: &register::v3::Request,
    ip: Option<String>,
) -> Result<register::v3::Response, Error> {
    if !services.config.registration.guests {
        return Err(Error::GuestAccessForbidden);
    }
    services
        .limits
        .registration
        .check(ip.as_deref().unwrap_or("unknown"))?;
    let user_id = loop {
        let number: u64 = rand::random::<u64>() % 10_000_000_000;
        let user_id = validate_localpart(&services.server_name, &number.to_string())?;
        if services.store.create_guest(user_id.as_str()).await? {
            break user_id;
        }
    };
    tracing::info!(user_id = %user_id, "registered a guest");
    let (token, device_id) = services
        .login_device(
            &user_id,
            body.device_id.as_deref(),
            body.initial_device_display_name.as_deref(),
            ip,
        )
        .await?;
    let mut response = register::v3::Response::new(user_id);
    response.access_token = Some(token);
    response.device_id = Some(device_id);
    Ok(response)
}

/// # `GET /_matrix/client/v3/register/available`
pub async fn get_username_availability_route(
    services: Arc<Services>,
    request: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response, Error> {
    let user_id = validate_localpart(&services.server_name, &request.body.username.to_lowercase())?;
    if services.store.user(user_id.as_str()).await?.is_some() {
        return Err(Error::UserInUse);
    }
    Ok(get_username_availability::v3::Response::new(true))
}

/// # `GET /_matrix/client/v3/login`
pub async fn get_login_types_route(
    _services: Arc<Services>,
    _request: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response, Error> {
    Ok(get_login_types::v3::Response::new(vec![
        get_login_types::v3::LoginType::Password(get_login_types::v3::PasswordLoginType::new()),
    ]))
}

/// # `POST /_matrix/client/v3/login`
pub async fn login_route(
    services: Arc<Services>,
    request: Ruma<login::v3::Request>,
) -> Result<login::v3::Response, Error> {
    let ip = request.client_ip.map(|ip| ip.to_string());
    services
        .limits
        .login
        .check(ip.as_deref().unwrap_or("unknown"))?;
    let login::v3::LoginInfo::Password(password) = &request.body.login_info else {
        return Err(Error::Unsupported(
            "only m.login.password is supported".into(),
        ));
    };
    #[allow(deprecated)]
    let claimed = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (None, Some(user)) => user.clone(),
        (Some(_), _) => {
            return Err(Error::Unsupported(
                "only user identifiers are supported".into(),
            ));
        }
        (None, None) => return Err(Error::MissingParam("no user identifier given".into())),
    };
    let user_id = if claimed.starts_with('@') {
        UserId::parse(claimed.to_lowercase()).map_err(|e| Error::InvalidParam(e.to_string()))?
    } else {
        UserId::parse(format!(
            "@{}:{}",
            claimed.to_lowercase(),
            services.server_name
        ))
        .map_err(|_| Error::Forbidden("invalid user name or password".into()))?
    };
    let forbidden = || Error::Forbidden("invalid user name or password".into());
    if !services.is_local(&user_id) {
        return Err(forbidden());
    }
    let user = services
        .store
        .user(user_id.as_str())
        .await?
        .ok_or_else(forbidden)?;
    if user.deactivated {
        return Err(Error::UserDeactivated(
            "this account has been deactivated".into(),
        ));
    }
    let hash = user.password_hash.as_deref().ok_or_else(forbidden)?;
    if !verify_password(&password.password, hash).await {
        return Err(forbidden());
    }
    let (token, device_id) = services
        .login_device(
            &user_id,
            request.body.device_id.as_deref(),
            request.body.initial_device_display_name.as_deref(),
            ip,
        )
        .await?;
    tracing::info!(user_id = %user_id, device_id = %device_id, "logged in");
    Ok(login::v3::Response::new(user_id, token, device_id))
}

/// # `POST /_matrix/client/v3/logout`
pub async fn logout_route(
    services: Arc<Services>,
    request: Ruma<logout::v3::Request>,
) -> Result<logout::v3::Response, Error> {
    let sender = request.sender()?;
    delete_devices(&services, &sender.user_id, &[sender.device_id.to_string()]).await?;
    Ok(logout::v3::Response::new())
}

/// # `POST /_matrix/client/v3/logout/all`
pub async fn logout_all_route(
    services: Arc<Services>,
    request: Ruma<logout_all::v3::Request>,
) -> Result<logout_all::v3::Response, Error> {
    let sender = request.sender()?;
    let all = device_ids(&services, &sender.user_id, None).await?;
    delete_devices(&services, &sender.user_id, &all).await?;
    Ok(logout_all::v3::Response::new())
}

/// # `GET /_matrix/client/v3/account/whoami`
pub async fn whoami_route(
    _services: Arc<Services>,
    request: Ruma<whoami::v3::Request>,
) -> Result<whoami::v3::Response, Error> {
    let sender = request.sender()?;
    let mut response = whoami::v3::Response::new(sender.user_id.clone(), false);
    response.device_id = Some(sender.device_id.clone());
    Ok(response)
}

/// # `POST /_matrix/client/v3/account/password`
pub async fn change_password_route(
    services: Arc<Services>,
    request: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response, Error> {
    let sender = request.sender()?;
    password_uiaa(
        &services,
        &sender.user_id,
        "change_password",
        request.body.auth.as_ref(),
    )
    .await?;
    if request.body.new_password.is_empty() {
        return Err(Error::WeakPassword(
            "the new password must not be empty".into(),
        ));
    }
    let hash = hash_password(&request.body.new_password).await?;
    services
        .store
        .set_password_hash(sender.user_id.as_str(), &hash)
        .await?;
    // Notifications stop going to the devices the old password let in, as the specification
    // asks: only the pushers of the device that changed it stay.
    services
        .store
        .delete_pushers_except(sender.user_id.as_str(), Some(sender.device_id.as_str()))
        .await?;
    if request.body.logout_devices {
        let others =
            device_ids(&services, &sender.user_id, Some(sender.device_id.as_str())).await?;
        delete_devices(&services, &sender.user_id, &others).await?;
    }
    Ok(change_password::v3::Response::new())
}

/// # `POST /_matrix/client/v3/account/deactivate`
pub async fn deactivate_route(
    services: Arc<Services>,
    request: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response, Error> {
    let sender = request.sender()?.clone();
    password_uiaa(
        &services,
        &sender.user_id,
        "deactivate",
        request.body.auth.as_ref(),
    )
    .await?;
    crate::admin::deactivate(&services, &sender.user_id, request.body.erase).await?;
    Ok(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}

/// # `GET /_matrix/client/v3/account/3pid`: accounts have no third-party identifiers (no
/// e-mail or phone binding) on this server.
pub async fn get_3pids_route(
    _services: Arc<Services>,
    request: Ruma<ruma::api::client::account::get_3pids::v3::Request>,
) -> Result<ruma::api::client::account::get_3pids::v3::Response, Error> {
    request.sender()?;
    Ok(ruma::api::client::account::get_3pids::v3::Response::new(
        Vec::new(),
    ))
}

/// The ids of a user's devices, but `except`.
pub async fn device_ids(
    services: &Services,
    user_id: &UserId,
    except: Option<&str>,
) -> Result<Vec<String>, Error> {
    Ok(services
        .store
        .devices(user_id.as_str())
        .await?
        .into_iter()
        .map(|device| device.device_id)
        .filter(|device| Some(device.as_str()) != except)
        .collect())
}

/// Deletes devices with their tokens, keys, pushers and undelivered messages.
pub async fn delete_devices(
    services: &Services,
    user_id: &UserId,
    device_ids: &[String],
) -> Result<(), Error> {
    for device_id in device_ids {
        services
            .store
            .delete_device(user_id.as_str(), device_id)
            .await?;
        services
            .store
            .delete_device_keys(user_id.as_str(), device_id)
            .await?;
        services
            .store
            .delete_device_pushers(user_id.as_str(), device_id)
            .await?;
    }
    Ok(())
}

fn device_response(record: DeviceRecord) -> device::Device {
    let mut device = device::Device::new(record.device_id.as_str().into());
    device.display_name = record.display_name;
    device.last_seen_ip = record.last_seen_ip;
    device.last_seen_ts = record
        .last_seen_ts
        .and_then(|ts| UInt::try_from(ts).ok())
        .map(MilliSecondsSinceUnixEpoch);
    device
}

/// # `GET /_matrix/client/v3/devices`
pub async fn get_devices_route(
    services: Arc<Services>,
    request: Ruma<get_devices::v3::Request>,
) -> Result<get_devices::v3::Response, Error> {
    let sender = request.sender()?;
    let devices = services.store.devices(sender.user_id.as_str()).await?;
    Ok(get_devices::v3::Response::new(
        devices.into_iter().map(device_response).collect(),
    ))
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get_device_route(
    services: Arc<Services>,
    request: Ruma<get_device::v3::Request>,
) -> Result<get_device::v3::Response, Error> {
    let sender = request.sender()?;
    let device = services
        .store
        .device(sender.user_id.as_str(), request.body.device_id.as_str())
        .await?
        .ok_or_else(|| Error::NotFound("no such device".into()))?;
    Ok(get_device::v3::Response::new(device_response(device)))
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn update_device_route(
    services: Arc<Services>,
    request: Ruma<update_device::v3::Request>,
) -> Result<update_device::v3::Response, Error> {
    let sender = request.sender()?;
    if !services
        .store
        .set_device_display_name(
            sender.user_id.as_str(),
            request.body.device_id.as_str(),
            request.body.display_name.as_deref(),
        )
        .await?
    {
        return Err(Error::NotFound("no such device".into()));
    }
    Ok(update_device::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/devices/{deviceId}`
pub async fn delete_device_route(
    services: Arc<Services>,
    request: Ruma<delete_device::v3::Request>,
) -> Result<delete_device::v3::Response, Error> {
    let sender = request.sender()?;
    if services
        .store
        .device(sender.user_id.as_str(), request.body.device_id.as_str())
        .await?
        .is_none()
    {
        return Err(Error::NotFound("no such device".into()));
    }
    let operation = format!("delete_device {}", request.body.device_id);
    password_uiaa(
        &services,
        &sender.user_id,
        &operation,
        request.body.auth.as_ref(),
    )
    .await?;
    delete_devices(
        &services,
        &sender.user_id,
        &[request.body.device_id.to_string()],
    )
    .await?;
    Ok(delete_device::v3::Response::new())
}

/// # `POST /_matrix/client/v3/delete_devices`: several devices at once, with the password.
/// Devices that do not exist are passed over, as the specification allows.
pub async fn delete_devices_route(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::device::delete_devices::v3::Request>,
) -> Result<ruma::api::client::device::delete_devices::v3::Response, Error> {
    let sender = request.sender()?;
    let mut devices: Vec<String> = request
        .body
        .devices
        .iter()
        .map(ToString::to_string)
        .collect();
    devices.sort();
    devices.dedup();
    // The session is bound to this set of devices: it cannot delete others.
    let operation = format!("delete_devices {}", devices.join(" "));
    password_uiaa(
        &services,
        &sender.user_id,
        &operation,
        request.body.auth.as_ref(),
    )
    .await?;
    delete_devices(&services, &sender.user_id, &devices).await?;
    Ok(ruma::api::client::device::delete_devices::v3::Response::new())
}
