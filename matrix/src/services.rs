//! The homeserver's services, shared by every request handler through `Arc<Services>`.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use causeway_config::{Config, RateLimit};
use rand::Rng;
use rand::distributions::Alphanumeric;
use ruma::signatures::Ed25519KeyPair;
use ruma::{DeviceId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, ServerName, UserId};

use crate::api::ruma_wrapper::Sender;
use crate::error::Error;
use crate::rooms::Rooms;
use crate::store::Store;

mod media;
mod typing;
pub use typing::Typing;

/// Everything a request handler may use.
pub struct Services {
    pub config: Config,
    pub server_name: OwnedServerName,
    pub store: Store,
    pub rooms: Rooms,
    pub key: Arc<Ed25519KeyPair>,
    pub typing: Typing,
    pub notification_counts: crate::push::NotificationCounts,
    /// Which member events each device was sent, for lazy-loading members in sync.
    pub lazy_members: crate::api::client::lazy_members::LazyMembers,
    /// The push gateway client and the workers of the pushers.
    pub pushers: crate::push::notifier::Pushers,
    /// Requests to other homeservers (found through `federation.destinations`,
    /// `.well-known` and DNS).
    pub federation: crate::federation::client::FederationClient,
    /// Other homeservers' signing keys.
    pub server_keys: crate::federation::keys::ServerKeys,
    /// The queue of what goes to other servers (see [`crate::federation::sender`]).
    pub federation_sender: crate::federation::sender::FederationSender,
    /// Per device, how far to-device messages were delivered and deleted.
    to_device: std::sync::Mutex<HashMap<(String, String), ToDeviceProgress>>,
    pub limits: RateLimiters,
    pub media_dir: PathBuf,
    /// Thumbnails of stored images, made a few at a time and kept.
    pub thumbnails: crate::thumbnails::Thumbnailer,
    pub uiaa: std::sync::Mutex<HashMap<String, UiaaSession>>,
    /// Makes the accounts of users of other networks on demand (see [`UserProvisioner`]).
    provisioner: std::sync::OnceLock<Arc<dyn UserProvisioner>>,
    /// The secret of the local administration (the command line while the server runs).
    admin_secret: std::sync::OnceLock<String>,
    /// True once the server is shutting down: waiting requests (sync long-polls) answer at once.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The exclusive right to write the database, for a server (see [`Services::serve`]).
    _writer: Option<crate::store::WriterLock>,
}

/// Makes local accounts on demand for users the server stands in for, such as the users of
/// another network who appear here as local users. Asked when a local user id without an
/// account is invited or looked up.
pub trait UserProvisioner: Send + Sync + 'static {
    /// Makes the account of `user_id` if this provisioner stands for it; says whether it did.
    fn provision<'a>(
        &'a self,
        user_id: &'a UserId,
    ) -> Pin<Box<dyn Future<Output = Result<bool, Error>> + Send + 'a>>;

    /// An account was erased: what the provisioner keeps of it goes too (for a user it stands
    /// for, the messages still queued for them).
    fn erased<'a>(
        &'a self,
        user_id: &'a UserId,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>> {
        let _ = user_id;
        Box::pin(async { Ok(()) })
    }

    /// A local alias no room has: the provisioner makes its room if it stands for it (the
    /// portal of an XMPP MUC), and says which; `None` when it does not.
    fn room_for_alias<'a>(
        &'a self,
        alias: &'a ruma::RoomAliasId,
    ) -> Pin<Box<dyn Future<Output = Result<Option<OwnedRoomId>, Error>> + Send + 'a>> {
        let _ = alias;
        Box::pin(async { Ok(None) })
    }

    /// A local user is about to join a local room: the provisioner may refuse (the MUC of a
    /// portal refused them) with the error the join fails with.
    fn joining<'a>(
        &'a self,
        room_id: &'a RoomId,
        user_id: &'a UserId,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>> {
        let _ = (room_id, user_id);
        Box::pin(async { Ok(()) })
    }

    /// Another server's user (`inviter`) invited `user_id`, a user this provisioner may stand
    /// for, to a room this server has no copy of; `is_direct` as the invite says. Called once
    /// the invite is kept; what follows is for the provisioner to do in the background.
    fn invited_remotely(
        &self,
        room_id: OwnedRoomId,
        user_id: OwnedUserId,
        inviter: OwnedUserId,
        is_direct: bool,
    ) {
        let _ = (room_id, user_id, inviter, is_direct);
    }
}

/// The progress of one user-interactive authentication: the stages done, and what the session
/// was opened for (`(user, operation)`; `None` for a registration). A session serves only the
/// operation and the user it was opened for.
#[derive(Debug, Clone, Default)]
pub struct UiaaSession {
    pub completed: Vec<String>,
    pub bound: Option<(String, String)>,
    /// For a registration: what its requests asked for, so that a later request of the session
    /// need not repeat it.
    pub registration: Option<RegistrationParams>,
    /// For a registration: the account it made, so that a repeated request answers the same.
    pub registered: Option<OwnedUserId>,
}

/// What a registration asks for, remembered by its authentication session.
#[derive(Debug, Clone, Default)]
pub struct RegistrationParams {
    pub localpart: Option<String>,
    pub password_hash: Option<String>,
    pub device_id: Option<ruma::OwnedDeviceId>,
    pub initial_device_display_name: Option<String>,
    pub inhibit_login: bool,
}

impl RegistrationParams {
    /// These parameters, with those of a later request where it gives them.
    pub fn updated_by(&self, later: RegistrationParams) -> RegistrationParams {
        RegistrationParams {
            localpart: later.localpart.or_else(|| self.localpart.clone()),
            password_hash: later.password_hash.or_else(|| self.password_hash.clone()),
            device_id: later.device_id.or_else(|| self.device_id.clone()),
            initial_device_display_name: later
                .initial_device_display_name
                .or_else(|| self.initial_device_display_name.clone()),
            inhibit_login: later.inhibit_login || self.inhibit_login,
        }
    }
}

impl Services {
    /// The room version of new rooms whose creator asks for none (`server.default_room_version`,
    /// checked when the configuration was read).
    pub fn default_room_version(&self) -> ruma::RoomVersionId {
        ruma::RoomVersionId::try_from(self.config.server.default_room_version.as_str())
            .unwrap_or(ruma::RoomVersionId::V12)
    }

    /// Opens the store and builds the services for a configuration.
    pub async fn start(config: Config) -> Result<Arc<Services>, Error> {
        Services::start_with(config, false).await
    }

    /// The same for the server itself: it first takes the exclusive right to write the
    /// database, so that a second server on the same database refuses to start
    /// ([`crate::store::StoreError::InUse`]) before it writes anything.
    pub async fn serve(config: Config) -> Result<Arc<Services>, Error> {
        Services::start_with(config, true).await
    }

    async fn start_with(config: Config, exclusive: bool) -> Result<Arc<Services>, Error> {
        let server_name = ServerName::parse(config.server.name.as_str())
            .map_err(|e| Error::Internal(format!("server.name: {e}")))?;
        let store = Store::connect(&config.database_url(), config.database.max_connections).await?;
        let writer = if exclusive {
            Some(store.lock_writer().await?)
        } else {
            None
        };
        let key = Arc::new(crate::keys::load_or_generate(&store).await?);
        // Events stored before the room graph was kept get their edges, once.
        let graphed = store.build_room_graph().await?;
        if graphed > 0 {
            tracing::info!(
                events = graphed,
                "existing events given their place in the room graph"
            );
        }
        // What was stored but not yet indexed for search (before the index existed, or
        // just before the server stopped) is indexed now.
        let indexed = store.index_pending().await?;
        if indexed > 0 {
            tracing::info!(events = indexed, "events indexed for search");
        }
        let media_dir = config.server.data_dir.join("media");
        std::fs::create_dir_all(&media_dir)
            .map_err(|e| Error::Internal(format!("creating {}: {e}", media_dir.display())))?;
        let limits = RateLimiters {
            login: Limiter::new(&config.rate_limits.login),
            registration: Limiter::new(&config.rate_limits.registration),
            message: Limiter::new(&config.rate_limits.message),
            remote_events: Limiter::new(&config.rate_limits.remote_events),
            remote_accounts: Limiter::new(&config.rate_limits.remote_accounts),
            remote_rooms: Limiter::new(&config.rate_limits.remote_rooms),
        };
        let federation = crate::federation::client::FederationClient::from_config(
            &config.federation,
            crate::federation::client::Signer {
                server_name: server_name.clone(),
                key: key.clone(),
            },
        )?;
        Ok(Arc::new(Services {
            rooms: Rooms::new(store.clone(), server_name.clone(), key.clone()),
            federation_sender: crate::federation::sender::FederationSender::new(store.clone()),
            server_keys: crate::federation::keys::ServerKeys::new(
                store.clone(),
                &config.federation.trusted_key_servers,
            ),
            server_name,
            store,
            key,
            typing: Typing::new(),
            notification_counts: crate::push::NotificationCounts::default(),
            lazy_members: Default::default(),
            pushers: crate::push::notifier::Pushers::new(
                crate::push::gateway::Gateway::new(config.push.allowed_gateway_addresses.clone())
                    .map_err(|e| Error::Internal(e.to_string()))?,
            ),
            federation,
            to_device: std::sync::Mutex::new(HashMap::new()),
            limits,
            thumbnails: crate::thumbnails::Thumbnailer::new(
                config.server.data_dir.join("thumbnails"),
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            media_dir,
            uiaa: std::sync::Mutex::new(HashMap::new()),
            provisioner: std::sync::OnceLock::new(),
            shutdown: tokio::sync::watch::Sender::new(false),
            admin_secret: std::sync::OnceLock::new(),
            _writer: writer,
            config,
        }))
    }

    /// Starts the shutdown: every request that waits for something to happen (a sync
    /// long-poll) answers at once with what it has.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once the server is shutting down (at once if it already is).
    pub async fn shutting_down(&self) {
        let mut receiver = self.shutdown.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail while we are borrowed.
        let _ = receiver.wait_for(|down| *down).await;
    }

    /// Resolves an access token to its user and device.
    pub async fn authenticate(&self, token: &str) -> Result<Sender, Error> {
        let info = self
            .store
            .access_token(token)
            .await?
            .ok_or(Error::UnknownToken)?;
        if info.deactivated {
            return Err(Error::UnknownToken);
        }
        Ok(Sender {
            user_id: UserId::parse(&info.user_id)
                .map_err(|e| Error::Internal(format!("stored user id: {e}")))?,
            device_id: info.device_id.as_str().into(),
            access_token: token.to_owned(),
            is_guest: info.is_guest,
        })
    }

    /// Sets the provisioner of accounts made on demand; only the first one set counts.
    pub fn set_provisioner(&self, provisioner: Arc<dyn UserProvisioner>) {
        let _ = self.provisioner.set(provisioner);
    }

    /// Sets the secret that authenticates the local administration; only the first counts.
    pub fn set_admin_secret(&self, secret: String) {
        let _ = self.admin_secret.set(secret);
    }

    /// The secret of the local administration, once set.
    pub fn admin_secret(&self) -> Option<&str> {
        self.admin_secret.get().map(String::as_str)
    }

    /// Tells the provisioner that another server's user invited a local user to a room of
    /// theirs (see [`UserProvisioner::invited_remotely`]).
    pub fn invited_remotely(
        &self,
        room_id: OwnedRoomId,
        user_id: OwnedUserId,
        inviter: OwnedUserId,
        is_direct: bool,
    ) {
        if let Some(provisioner) = self.provisioner.get() {
            provisioner.invited_remotely(room_id, user_id, inviter, is_direct);
        }
    }

    /// The room of a local alias: the one stored, or the one the provisioner makes for it.
    pub async fn local_alias(
        &self,
        alias: &ruma::RoomAliasId,
    ) -> Result<Option<OwnedRoomId>, Error> {
        if let Some((room_id, _)) = self.store.alias(alias.as_str()).await? {
            return Ok(Some(crate::api::client::events::stored_room_id(&room_id)?));
        }
        match self.provisioner.get() {
            Some(provisioner) => provisioner.room_for_alias(alias).await,
            None => Ok(None),
        }
    }

    /// Asks the provisioner whether a local user may join a local room now.
    pub async fn joining(&self, room_id: &RoomId, user_id: &UserId) -> Result<(), Error> {
        match self.provisioner.get() {
            Some(provisioner) => provisioner.joining(room_id, user_id).await,
            None => Ok(()),
        }
    }

    /// Tells the provisioner that an account was erased.
    pub async fn user_erased(&self, user_id: &UserId) -> Result<(), Error> {
        match self.provisioner.get() {
            Some(provisioner) => provisioner.erased(user_id).await,
            None => Ok(()),
        }
    }

    /// Makes sure a local user's account exists when the provisioner stands for the user;
    /// returns whether the account exists.
    pub async fn provision_user(&self, user_id: &UserId) -> Result<bool, Error> {
        if !self.is_local(user_id) {
            return Ok(false);
        }
        if self.store.user(user_id.as_str()).await?.is_some() {
            return Ok(true);
        }
        match self.provisioner.get() {
            Some(provisioner) => provisioner.provision(user_id).await,
            None => Ok(false),
        }
    }

    /// Whether a user id belongs to this server.
    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name
    }

    /// Issues a new device (or reuses `device_id`) with a fresh access token.
    pub async fn login_device(
        &self,
        user_id: &UserId,
        device_id: Option<&DeviceId>,
        display_name: Option<&str>,
        ip: Option<String>,
    ) -> Result<(String, ruma::OwnedDeviceId), Error> {
        let device_id = match device_id {
            Some(id) => id.to_owned(),
            None => random_string(10).to_uppercase().as_str().into(),
        };
        let token = random_string(32);
        self.store
            .create_device_and_token(
                user_id.as_str(),
                device_id.as_str(),
                display_name,
                &token,
                ip.as_deref(),
            )
            .await?;
        // A new device is news to everyone who shares a room with the user (they are to
        // fetch its keys), and to the user's other devices.
        self.store
            .device_list_changed(
                user_id.as_str(),
                crate::store::DeviceChange::Device(device_id.as_str()),
            )
            .await?;
        Ok((token, device_id))
    }

    /// The rooms a user is joined to.
    pub async fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>, Error> {
        Ok(self
            .store
            .user_memberships(user_id.as_str())
            .await?
            .into_iter()
            .filter(|row| row.membership == "join")
            .filter_map(|row| RoomId::parse(&row.room_id).ok())
            .collect())
    }
}

/// How far a device has received and acknowledged its to-device messages in this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToDeviceProgress {
    /// The position of the last message handed to the device.
    pub delivered: i64,
    /// The sync token up to which delivered messages were deleted.
    pub acknowledged: i64,
}

impl Services {
    pub fn to_device_progress(&self, user_id: &UserId, device_id: &str) -> ToDeviceProgress {
        self.to_device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(user_id.to_string(), device_id.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    pub fn set_to_device_progress(
        &self,
        user_id: &UserId,
        device_id: &str,
        change: impl FnOnce(&mut ToDeviceProgress),
    ) {
        let mut progress = self
            .to_device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(
            progress
                .entry((user_id.to_string(), device_id.to_owned()))
                .or_default(),
        );
    }
}

/// A random alphanumeric string.
pub fn random_string(length: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

/// Password hashing is memory-hard (argon2id needs 19 MiB per hash): at most this many run at
/// once, off the async threads, so that a burst of logins cannot exhaust memory.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

async fn run_hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| Error::Internal(format!("password hashing: {e}")))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("password hashing: {e}")))
}

/// Hashes a password with argon2id.
pub async fn hash_password(password: &str) -> Result<String, Error> {
    let password = password.to_owned();
    run_hashing(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
    })
    .await?
}

/// Checks a password against its stored hash.
pub async fn verify_password(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_owned(), hash.to_owned());
    run_hashing(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// The token-bucket rate limiters of the client API.
pub struct RateLimiters {
    pub login: Limiter,
    pub registration: Limiter,
    pub message: Limiter,
    /// Keyed by remote domain: its users' messages, the accounts and rooms made for them.
    pub remote_events: Limiter,
    pub remote_accounts: Limiter,
    pub remote_rooms: Limiter,
}

/// Token buckets keyed by client address or user.
pub struct Limiter {
    per_second: f64,
    burst: f64,
    buckets: std::sync::Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    fn new(limit: &RateLimit) -> Limiter {
        Limiter {
            per_second: limit.per_second,
            burst: f64::from(limit.burst),
            buckets: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Takes one action from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 100_000 {
            // Forget full buckets so that the map cannot grow without bound.
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_second < burst
            });
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second;
            Err(Error::LimitExceeded {
                retry_after_ms: (wait * 1000.0).ceil() as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn limiter_refuses_past_the_burst_then_refills() {
        let limiter = Limiter::new(&RateLimit {
            per_second: 1000.0,
            burst: 2,
        });
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        match limiter.check("a") {
            Err(Error::LimitExceeded { retry_after_ms }) => assert!(retry_after_ms <= 1),
            other => panic!("expected a limit, got {other:?}"),
        }
        assert!(limiter.check("b").is_ok());
        std::thread::sleep(Duration::from_millis(5));
        assert!(limiter.check("a").is_ok());
    }

    #[tokio::test]
    async fn passwords() {
        let hash = hash_password("correct horse").await.unwrap();
        assert!(verify_password("correct horse", &hash).await);
        assert!(!verify_password("wrong", &hash).await);
        assert!(!verify_password("x", "not a hash").await);
    }
}
