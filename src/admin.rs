//! Account administration from the command line (`causeway user …`).
//!
//! One process writes a database. When no server runs on it, the command takes the right to
//! write it (as a server would) and does the work itself, through the same code as the admin
//! API (`causeway_matrix::admin`). When a server runs, the command goes through that server's
//! admin API on the client listener, authenticated by the secret the server wrote into its data
//! directory ([`ADMIN_SECRET_FILE`]), so that the server's stream positions and cached room
//! state stay its own.

use std::sync::Arc;

use anyhow::{Context, bail};
use causeway_config::Config;
use causeway_mapping::address::Gateway;
use causeway_matrix::Services;
use causeway_matrix::admin::{self, UserChange};
use causeway_matrix::api::client::account::validate_localpart;
use causeway_matrix::error::Error as MatrixError;
use causeway_matrix::store::StoreError;
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};
use xmpp_parsers::jid::{BareJid, Jid};

use crate::bridge::Bridge;

/// The file in the data directory that holds the running server's administration secret.
pub const ADMIN_SECRET_FILE: &str = "admin.token";

/// An account as `user list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: String,
    pub admin: bool,
    pub deactivated: bool,
    pub erased: bool,
}

/// Where the commands are carried out.
enum Via {
    /// No server runs: this process holds the database.
    Store {
        services: Arc<Services>,
        /// Keeps the bridge's hooks (what an erased ghost leaves) in place.
        _bridge: Option<Arc<Bridge>>,
    },
    /// A server runs: its admin API.
    Server {
        http: reqwest::Client,
        base: String,
        secret: String,
    },
}

/// The administration commands.
pub struct Admin {
    via: Via,
    gateway: Gateway,
    server_name: ruma::OwnedServerName,
}

impl Admin {
    /// Opens the database, or finds the server that holds it.
    pub async fn open(config: Config) -> anyhow::Result<Admin> {
        let server_name =
            ruma::ServerName::parse(config.server.name.as_str()).context("server.name")?;
        let domains = crate::xmpp::domains(&config);
        let gateway = Gateway::new(server_name.clone(), &domains.muc)
            .context("the XMPP addresses of the server")?;
        let via = match Services::serve(config.clone()).await {
            Ok(services) => {
                let bridge = if config.xmpp.enabled {
                    Some(Bridge::new(services.clone(), domains, env!("CARGO_PKG_VERSION")).await?)
                } else {
                    None
                };
                Via::Store {
                    services,
                    _bridge: bridge,
                }
            }
            Err(MatrixError::Store(StoreError::InUse(_))) => {
                let path = config.server.data_dir.join(ADMIN_SECRET_FILE);
                let secret = std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "a server runs on this database; reading its administration secret \
                             {}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned();
                let bind = config.client_api.bind;
                let host = match bind.ip() {
                    std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
                    std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
                    std::net::IpAddr::V4(ip) => ip.to_string(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                };
                Via::Server {
                    http: reqwest::Client::new(),
                    base: format!("http://{host}:{}", bind.port()),
                    secret,
                }
            }
            Err(error) => return Err(error).context("opening the server's storage"),
        };
        Ok(Admin {
            via,
            gateway,
            server_name,
        })
    }

    /// Whether the commands go through a running server.
    pub fn through_server(&self) -> bool {
        matches!(self.via, Via::Server { .. })
    }

    fn user_id(&self, name: &str) -> anyhow::Result<OwnedUserId> {
        let localpart = name
            .strip_prefix('@')
            .map(|rest| rest.split(':').next().unwrap_or(rest))
            .unwrap_or(name)
            .to_lowercase();
        Ok(validate_localpart(&self.server_name, &localpart)?)
    }

    /// Calls the running server's admin API; fails with its error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let Via::Server { http, base, secret } = &self.via else {
            bail!("no server to call");
        };
        let mut request = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(secret);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling the running server at {base}"))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            bail!(
                "the server refused: {} ({})",
                body["error"].as_str().unwrap_or("no reason given"),
                body["errcode"].as_str().unwrap_or("no errcode")
            );
        }
        Ok((status, body))
    }

    fn user_path(user_id: &UserId) -> String {
        format!("/_synapse/admin/v2/users/{}", encode_user(user_id))
    }

    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        is_admin: bool,
    ) -> anyhow::Result<OwnedUserId> {
        let user_id = self.user_id(name)?;
        let exists = match &self.via {
            Via::Store { services, .. } => services.store.user(user_id.as_str()).await?.is_some(),
            Via::Server { .. } => self
                .call(reqwest::Method::GET, &Self::user_path(&user_id), None)
                .await
                .is_ok(),
        };
        if exists {
            bail!("{user_id} already exists");
        }
        match &self.via {
            Via::Store { services, .. } => {
                let change = UserChange {
                    password: Some(password.to_owned()),
                    admin: Some(is_admin),
                    ..UserChange::default()
                };
                admin::create_or_modify(services, &user_id, change).await?;
            }
            Via::Server { .. } => {
                self.call(
                    reqwest::Method::PUT,
                    &Self::user_path(&user_id),
                    Some(json!({"password": password, "admin": is_admin})),
                )
                .await?;
            }
        }
        Ok(user_id)
    }

    pub async fn reset_password(&self, name: &str, password: &str) -> anyhow::Result<OwnedUserId> {
        let user_id = self.user_id(name)?;
        match &self.via {
            Via::Store { services, .. } => {
                admin::reset_password(services, &user_id, password, true).await?;
            }
            Via::Server { .. } => {
                self.call(
                    reqwest::Method::POST,
                    &format!(
                        "/_synapse/admin/v1/reset_password/{}",
                        encode_user(&user_id)
                    ),
                    Some(json!({"new_password": password, "logout_devices": true})),
                )
                .await?;
            }
        }
        Ok(user_id)
    }

    pub async fn deactivate(&self, name: &str, erase: bool) -> anyhow::Result<OwnedUserId> {
        let user_id = self.user_id(name)?;
        self.deactivate_id(&user_id, erase).await?;
        Ok(user_id)
    }

    /// Erases the ghost of an XMPP user: its profile and avatar, the messages still queued for
    /// them, the subscriptions with them; the ghost leaves its rooms and is bridged no more.
    pub async fn erase_xmpp_user(&self, jid: &str) -> anyhow::Result<OwnedUserId> {
        let jid = BareJid::new(jid).with_context(|| format!("{jid} is not an XMPP address"))?;
        let ghost = self.gateway.jid_to_user(&Jid::from(jid.clone()))?;
        if !self.gateway.is_ghost(&ghost) {
            bail!("{jid} is an address of this server, not of an XMPP user elsewhere");
        }
        self.deactivate_id(&ghost, true).await?;
        Ok(ghost)
    }

    async fn deactivate_id(&self, user_id: &UserId, erase: bool) -> anyhow::Result<()> {
        match &self.via {
            Via::Store { services, .. } => admin::deactivate(services, user_id, erase).await?,
            Via::Server { .. } => {
                self.call(
                    reqwest::Method::POST,
                    &format!("/_synapse/admin/v1/deactivate/{}", encode_user(user_id)),
                    Some(json!({"erase": erase})),
                )
                .await?;
            }
        }
        Ok(())
    }

    pub async fn list(&self) -> anyhow::Result<Vec<Account>> {
        match &self.via {
            Via::Store { services, .. } => Ok(services
                .store
                .users()
                .await?
                .into_iter()
                .map(|user| Account {
                    user_id: user.user_id,
                    admin: user.is_admin,
                    deactivated: user.deactivated,
                    erased: user.erased,
                })
                .collect()),
            Via::Server { .. } => {
                let mut accounts = Vec::new();
                let mut from = "0".to_owned();
                loop {
                    let (_, page) = self
                        .call(
                            reqwest::Method::GET,
                            &format!(
                                "/_synapse/admin/v2/users?deactivated=true&limit=500&from={from}"
                            ),
                            None,
                        )
                        .await?;
                    for user in page["users"].as_array().into_iter().flatten() {
                        accounts.push(Account {
                            user_id: user["name"].as_str().unwrap_or_default().to_owned(),
                            admin: user["admin"] == true,
                            deactivated: user["deactivated"] == true,
                            erased: user["erased"] == true,
                        });
                    }
                    match page["next_token"].as_str() {
                        Some(next) => from = next.to_owned(),
                        None => return Ok(accounts),
                    }
                }
            }
        }
    }
}

/// A user id as one segment of a path: everything but unreserved characters percent-encoded.
fn encode_user(user_id: &UserId) -> String {
    user_id
        .as_str()
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
