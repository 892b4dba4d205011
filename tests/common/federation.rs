//! Causeway servers that federate with each other on loopback: certificates from a private
//! authority, federation listeners over TLS, and destinations pointing at them.

use std::net::SocketAddr;
use std::sync::Arc;

use causeway_config::ServerName;
use causeway_matrix::Services;
use causeway_matrix::federation::client::FederationError;

use std::time::Duration;

use causeway_matrix::pdu::{EventDraft, build_event, canonical_content};
use ruma::{MilliSecondsSinceUnixEpoch, RoomId, RoomVersionId, UserId};
use serde_json::{Value, json};

use super::{TestServer, bodies};

/// A certificate authority and a certificate it issued for `name`, as PEM.
pub struct Certificates {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

pub fn certificates(name: &str) -> Certificates {
    certificates_for(&[name]).remove(0)
}

/// Certificates for several names, issued by one authority.
pub fn certificates_for(names: &[&str]) -> Vec<Certificates> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Causeway test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    names.iter().map(|name| issue(&ca, &ca_key, name)).collect()
}

pub fn issue(ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair, name: &str) -> Certificates {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&key, ca, ca_key)
        .unwrap();
    Certificates {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Serves a server's federation API over TLS on a loopback port.
pub async fn serve_federation(services: Arc<Services>, certificates: &Certificates) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    serve_on(listener, services, certificates).await
}

/// Serves a server's federation API over TLS on a listener bound beforehand.
pub async fn serve_on(
    listener: std::net::TcpListener,
    services: Arc<Services>,
    certificates: &Certificates,
) -> SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        certificates.cert.clone().into_bytes(),
        certificates.key.clone().into_bytes(),
    )
    .await
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let app = causeway::federation_listener::router(services);
    tokio::spawn(async move {
        let _ = axum_server::from_tcp_rustls(listener, tls)
            .serve(app.into_make_service())
            .await;
    });
    address
}

/// Checks that another server answered with this status and `errcode`.
pub fn assert_refused(
    result: Result<serde_json::Value, FederationError>,
    expected: (u16, &str),
    what: &str,
) {
    match result {
        Err(FederationError::Status(_, status, body)) => {
            assert_eq!(
                (status, body["errcode"].as_str().unwrap()),
                expected,
                "{what}"
            );
        }
        other => panic!("{what}: {other:?}"),
    }
}

pub fn server(name: &str) -> ruma::OwnedServerName {
    ruma::ServerName::parse(name).unwrap()
}

/// Two servers that know where the other is and trust its certificate.
pub async fn two_servers() -> (
    TestServer,
    TestServer,
    SocketAddr,
    Certificates,
    tempfile::TempDir,
) {
    two_servers_with(|_, _| {}).await
}

/// The same, each configuration changed by `change` (given the server's name) beforehand.
pub async fn two_servers_with(
    change: impl Fn(&str, &mut causeway_config::Config) + Clone,
) -> (
    TestServer,
    TestServer,
    SocketAddr,
    Certificates,
    tempfile::TempDir,
) {
    let mut issued = certificates_for(&["a.test", "b.test"]);
    let b_certificates = issued.remove(1);
    let a_certificates = issued.remove(0);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &a_certificates.ca).unwrap();
    let a_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a_address, b_address) = (
        a_listener.local_addr().unwrap(),
        b_listener.local_addr().unwrap(),
    );
    let configure = |name: &'static str| {
        let ca_file = ca_file.clone();
        let change = change.clone();
        move |config: &mut causeway_config::Config| {
            config.server.name = ServerName::try_from(name).unwrap();
            config.federation.ca_files = vec![ca_file];
            let destinations = &mut config.federation.destinations;
            destinations.insert("a.test".into(), a_address.to_string());
            destinations.insert("b.test".into(), b_address.to_string());
            change(name, config);
        }
    };
    let a = TestServer::with_config(configure("a.test")).await;
    let b = TestServer::with_config(configure("b.test")).await;
    serve_on(a_listener, a.services.clone(), &a_certificates).await;
    serve_on(b_listener, b.services.clone(), &b_certificates).await;
    (a, b, b_address, b_certificates, dir)
}

/// Waits until `check` holds, for at most 20 seconds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

pub async fn membership(server: &TestServer, room: &str, user: &str) -> Option<String> {
    let room = RoomId::parse(room).unwrap();
    let user = UserId::parse(user).unwrap();
    server
        .services
        .rooms
        .membership(&room, &user)
        .await
        .unwrap()
}

/// A user says `text` in a room; it reaches the other server's user (`to`).
pub async fn say(
    from: &TestServer,
    token: &str,
    room: &str,
    txn: &str,
    text: &str,
    to: (&TestServer, &str),
) {
    from.send_text(token, room, txn, text).await.assert_ok();
    eventually(&format!("{text:?} on the other server"), || async {
        texts(to.0, to.1, room).await.contains(&text.to_owned())
    })
    .await;
}

/// A user of b.test joins a room of a.test through it.
pub async fn join_via_a(b: &TestServer, token: &str, room: &str) -> super::Response {
    b.post(
        &format!("/_matrix/client/v3/join/{room}?via=a.test"),
        token,
        json!({}),
    )
    .await
}

/// Alice of a.test in a public room of hers (of room version `version`), which bob of b.test
/// joined through a.test.
pub struct Shared {
    pub a: TestServer,
    pub b: TestServer,
    pub alice_id: String,
    pub alice: String,
    pub bob_id: String,
    pub bob: String,
    pub room: String,
    pub _dir: tempfile::TempDir,
}

pub async fn shared_room(version: &str) -> Shared {
    let (a, b, _, _, dir) = two_servers().await;
    let (alice_id, alice) = a.register("alice").await;
    let (bob_id, bob) = b.register("bob").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_version": version}),
        )
        .await;
    join_via_a(&b, &bob, &room).await.assert_ok();
    Shared {
        a,
        b,
        alice_id,
        alice,
        bob_id,
        bob,
        room,
        _dir: dir,
    }
}

pub async fn texts(server: &TestServer, token: &str, room: &str) -> Vec<String> {
    bodies(&server.messages(token, room).await["chunk"])
}

/// Sends a transaction from b.test to a.test: its answer.
pub async fn transaction_from_b(b: &TestServer, txn: &str, body: Value) -> Value {
    b.services
        .federation
        .request(
            &server("a.test"),
            http::Method::PUT,
            &format!("/_matrix/federation/v1/send/{txn}"),
            Some(&body),
            true,
        )
        .await
        .unwrap()
}

/// A signed `GET` of b.test to a.test.
pub async fn get_from_b(b: &TestServer, path: &str) -> Result<Value, FederationError> {
    b.services
        .federation
        .request(&server("a.test"), http::Method::GET, path, None, true)
        .await
}

/// Sends `edus` from b.test to a.test in a transaction of their own.
pub async fn edus_from_b(b: &TestServer, txn: &str, edus: Value) {
    let answer = transaction_from_b(b, txn, json!({"pdus": [], "edus": edus})).await;
    assert_eq!(answer["pdus"], json!({}));
}

/// The id of the event a client request made.
pub fn event_id_of(response: super::Response) -> String {
    response.assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Device keys as a client uploads them, with made-up keys named after the device.
pub fn device_keys(user_id: &str, device_id: &str) -> serde_json::Value {
    json!({
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device_id}"): format!("curve-of-{device_id}"),
            format!("ed25519:{device_id}"): format!("ed-of-{device_id}"),
        },
        "signatures": {user_id: {format!("ed25519:{device_id}"): "self-signature"}},
    })
}

/// The device of an access token.
pub async fn device_of(server: &TestServer, token: &str) -> String {
    server
        .get("/_matrix/client/v3/account/whoami", token)
        .await
        .assert_ok()["device_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An event of `sender` as b.test would make and sign it, in a room of version `room.1`.
pub fn event_of_b(
    b: &TestServer,
    room: (&str, &RoomVersionId),
    sender: &str,
    (event_type, content): (&str, Value),
    prev_and_auth: (Vec<ruma::OwnedEventId>, Vec<ruma::OwnedEventId>),
    depth: i64,
) -> causeway_matrix::pdu::Pdu {
    let room_id = RoomId::parse(room.0).unwrap();
    let sender = UserId::parse(sender).unwrap();
    build_event(
        EventDraft {
            room_id: Some(&room_id),
            sender: &sender,
            event_type,
            state_key: None,
            content: canonical_content(content).unwrap(),
            prev_events: prev_and_auth.0,
            auth_events: prev_and_auth.1,
            depth,
            origin_server_ts: MilliSecondsSinceUnixEpoch::now(),
        },
        &causeway_matrix::pdu::rules(room.1).unwrap(),
        "b.test",
        &b.services.key,
    )
    .unwrap()
}

/// The forward extremities of a room on `server` and the auth events of `sender`'s next event
/// there (create, power levels, their membership), with a depth beyond the room's.
pub async fn next_event_edges(
    server: &TestServer,
    room: &str,
    sender: &str,
) -> ((Vec<ruma::OwnedEventId>, Vec<ruma::OwnedEventId>), i64) {
    let room_id = RoomId::parse(room).unwrap();
    let prev = server
        .services
        .store
        .forward_extremities(room)
        .await
        .unwrap()
        .iter()
        .map(|id| ruma::EventId::parse(id).unwrap())
        .collect();
    let state = server.services.rooms.current_state(&room_id).await.unwrap();
    let auth = state
        .iter()
        .filter(|pdu| {
            let kind = pdu.event_type.to_string();
            // From room version 12 the create event is the room id, not an auth event.
            (kind == "m.room.create" && pdu.room_id.is_some())
                || kind == "m.room.power_levels"
                || (kind == "m.room.member" && pdu.state_key.as_deref() == Some(sender))
        })
        .map(|pdu| pdu.event_id.clone())
        .collect();
    let depth = state.iter().map(|pdu| pdu.depth).max().unwrap() + 5;
    ((prev, auth), depth)
}
