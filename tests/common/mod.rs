//! A homeserver in the test process, driven through its router without sockets.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use causeway_config::{Config, RateLimit, RegistrationMode, ServerName};
use causeway_matrix::Services;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub mod federation;

pub struct TestServer {
    pub services: Arc<Services>,
    pub router: Router,
    _dir: tempfile::TempDir,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts an error response with the given status and errcode.
    #[track_caller]
    pub fn assert_error(&self, status: u16, errcode: &str) {
        assert_eq!(
            (self.status.as_u16(), self.json()["errcode"].as_str()),
            (status, Some(errcode)),
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
    }

    #[track_caller]
    pub fn assert_ok(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.server.name = ServerName::try_from("test.example").unwrap();
    config.server.data_dir = dir.to_owned();
    config.registration.mode = RegistrationMode::Open;
    let high = RateLimit {
        per_second: 10_000.0,
        burst: 10_000,
    };
    config.rate_limits.login = high.clone();
    config.rate_limits.registration = high.clone();
    config.rate_limits.message = high;
    config.limits.max_json_body = 64 * 1024;
    config.media.max_upload_size = 256 * 1024;
    config
}

impl TestServer {
    pub async fn new() -> TestServer {
        TestServer::with_config(|_| {}).await
    }

    pub async fn with_config(change: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        change(&mut config);
        let services = Services::start(config).await.unwrap();
        causeway_matrix::push::notifier::spawn(services.clone());
        causeway_matrix::indexer::spawn(services.clone());
        causeway_matrix::federation::sender::spawn(services.clone());
        let router = causeway_matrix::api::client_router(services.clone());
        TestServer {
            services,
            router,
            _dir: dir,
        }
    }

    /// Stops this server and starts a new one on the same data, as after a restart.
    pub async fn restart(self) -> TestServer {
        self.restart_with(|_| {}).await
    }

    /// The same, its configuration changed by `change` first.
    pub async fn restart_with(self, change: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = self.services.config.clone();
        change(&mut config);
        let dir = self._dir;
        drop(self.router);
        // Its background tasks (the notifier) end.
        self.services.begin_shutdown();
        drop(self.services);
        let services = Services::start(config).await.unwrap();
        causeway_matrix::push::notifier::spawn(services.clone());
        causeway_matrix::indexer::spawn(services.clone());
        causeway_matrix::federation::sender::spawn(services.clone());
        let router = causeway_matrix::api::client_router(services.clone());
        TestServer {
            services,
            router,
            _dir: dir,
        }
    }

    /// A server on the PostgreSQL named by `CAUSEWAY_TEST_POSTGRES_URL`, in a fresh schema;
    /// `None` when that is not set.
    pub async fn postgres() -> Option<TestServer> {
        let base = std::env::var("CAUSEWAY_TEST_POSTGRES_URL").ok()?;
        sqlx::any::install_default_drivers();
        let schema = format!("causeway_api_{}_{}", std::process::id(), rand_suffix());
        let admin = sqlx::AnyPool::connect(&base)
            .await
            .expect("PostgreSQL reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("creating a schema");
        admin.close().await;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
        Some(TestServer::with_config(move |config| config.database.url = Some(url)).await)
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        self.send(builder.body(Body::from(body)).unwrap()).await
    }

    /// A request without a body, with these headers.
    pub async fn raw_with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(Body::empty()).unwrap()).await
    }

    /// A request with a raw `Authorization` header and an empty JSON object as body.
    pub async fn with_authorization(&self, method: Method, path: &str, value: &str) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", value)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        self.send(request).await
    }

    /// A JSON request that arrives over a connection from `peer`, with these extra headers.
    pub async fn call_from(
        &self,
        peer: std::net::SocketAddr,
        headers: &[(&str, &str)],
        method: Method,
        path: &str,
        body: Value,
    ) -> Response {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(Body::from(body.to_string())).unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        self.send(request).await
    }

    async fn send(&self, request: Request<Body>) -> Response {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, path, token, Some("application/json"), bytes)
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Response {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    /// Logs in with a password: the response (`user_id`, `access_token`, `device_id`).
    pub async fn login(&self, user: &str, password: &str) -> Value {
        self.call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": user},
                        "password": password})),
        )
        .await
        .assert_ok()
    }

    /// Registers a user; returns `(user_id, access_token)`.
    pub async fn register(&self, name: &str) -> (String, String) {
        let response = self
            .call(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(json!({"username": name, "password": "secret-pw", "auth": {"type": "m.login.dummy"}})),
            )
            .await;
        let body = response.assert_ok();
        (
            body["user_id"].as_str().unwrap().to_owned(),
            body["access_token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let response = self
            .post("/_matrix/client/v3/createRoom", token, body)
            .await;
        response.assert_ok()["room_id"].as_str().unwrap().to_owned()
    }

    /// Joins a room; the join must succeed.
    pub async fn join(&self, token: &str, room_id: &str) {
        self.post(
            &format!("/_matrix/client/v3/rooms/{room_id}/join"),
            token,
            json!({}),
        )
        .await
        .assert_ok();
    }

    pub async fn send_text(&self, token: &str, room_id: &str, txn: &str, text: &str) -> Response {
        self.put(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}"),
            token,
            json!({"msgtype": "m.text", "body": text}),
        )
        .await
    }

    /// The latest events of a room (`/messages`, backwards, up to 100), as `token` sees them.
    pub async fn messages(&self, token: &str, room_id: &str) -> Value {
        self.get(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100"),
            token,
        )
        .await
        .assert_ok()
    }

    pub async fn sync(&self, token: &str, query: &str) -> Value {
        self.get(&format!("/_matrix/client/v3/sync?{query}"), token)
            .await
            .assert_ok()
    }
}

/// Room ids contain `!`, which is fine in a path; aliases need `#` encoded.
pub fn encode(value: &str) -> String {
    value.replace('#', "%23").replace('$', "%24")
}

/// The bodies of the `m.room.message` events in a list of client events.
pub fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Percent-encodes everything but ASCII letters and digits, for query strings.
pub fn query_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A peer XMPP server for one domain, recording every stanza that reaches it.
pub mod peer {
    use std::collections::HashMap;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::time::Duration;

    use causeway_xmpp::server::{S2s, S2sConfig, StanzaHandler};
    use causeway_xmpp::stanza::Stanza;
    use causeway_xmpp::stream::Limits;
    use causeway_xmpp::testing::TestCa;
    use causeway_xmpp::tls::TlsSettings;
    use tokio::sync::mpsc;

    struct Recorder(mpsc::UnboundedSender<Stanza>);

    impl StanzaHandler for Recorder {
        fn handle(&self, stanza: Stanza) -> Pin<Box<dyn Future<Output = Vec<Stanza>> + Send + '_>> {
            let _ = self.0.send(stanza);
            Box::pin(async { vec![] })
        }
    }

    /// Starts the peer on a free loopback port with a certificate from `ca`; it trusts `ca`
    /// and requires certificates (no dialback).
    pub async fn start(ca: &TestCa, domain: &str) -> (Arc<S2s>, mpsc::UnboundedReceiver<Stanza>) {
        start_on(ca, domain, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts the peer on a given address.
    pub async fn start_on(
        ca: &TestCa,
        domain: &str,
        address: std::net::SocketAddr,
    ) -> (Arc<S2s>, mpsc::UnboundedReceiver<Stanza>) {
        start_serving(ca, &[domain], address).await
    }

    /// Starts a peer that serves several domains, with one certificate for all.
    pub async fn start_serving(
        ca: &TestCa,
        domains: &[&str],
        address: std::net::SocketAddr,
    ) -> (Arc<S2s>, mpsc::UnboundedReceiver<Stanza>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = TlsSettings::new(vec![ca.identity(domains)], vec![ca.root()], false).unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let peer = S2s::start(
            S2sConfig {
                domains: domains.iter().map(|d| (*d).to_owned()).collect(),
                listen_starttls: vec![address],
                listen_direct_tls: vec![],
                routes: HashMap::new(),
                require_tls: true,
                dialback: false,
                limits: Limits::default(),
                idle_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(5),
                domain_policy: Default::default(),
                max_stanzas_per_second: 1000,
                max_inbound_streams: 64,
                max_inbound_streams_per_address: 64,
                nameservers: vec![],
            },
            Arc::new(tls),
            Arc::new(Recorder(seen_tx)),
        )
        .await
        .unwrap();
        (peer, seen)
    }

    /// A loopback address nothing listens on (yet).
    pub fn free_address() -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }
}
