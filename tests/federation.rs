//! Reaching another homeserver over the real network path: the destination from
//! `federation.destinations`, TLS checked against a private certificate authority
//! (`federation.ca_files`) and the name discovery gives, and the other server's signing key
//! fetched from it and checked. Both servers are Causeway, the other one serving its
//! federation API on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use causeway_config::ServerName;
use causeway_matrix::federation::client::FederationError;
use causeway_matrix::federation::keys::KeyError;
use common::TestServer;
use common::federation::*;
use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn another_servers_key_is_fetched_over_checked_tls() {
    let other = TestServer::with_config(|config| {
        config.server.name = ServerName::try_from("b.test").unwrap();
    })
    .await;
    let certificates = certificates("b.test");
    let address = serve_federation(other.services.clone(), &certificates).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &certificates.ca).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_address = closed.local_addr().unwrap();
    drop(closed);
    let here = TestServer::with_config(|config| {
        config.federation.ca_files = vec![ca_file.clone()];
        let destinations = &mut config.federation.destinations;
        destinations.insert("b.test".into(), address.to_string());
        // The same server under a name its certificate does not carry.
        destinations.insert("wrong.test".into(), address.to_string());
        destinations.insert("down.test".into(), closed_address.to_string());
    })
    .await;
    let services = &here.services;
    let key_id = format!("ed25519:{}", other.services.key.version());
    let now = causeway_matrix::store::now_ms();

    let key = services
        .server_keys
        .key(&services.federation, &server("b.test"), &key_id, now)
        .await
        .unwrap();
    assert_eq!(key, other.services.key.public_key());
    // A key the server does not have, or one asked valid beyond what it says: not known, and
    // not asked for again right after the fetch that brought the others.
    let unknown = services
        .server_keys
        .key(&services.federation, &server("b.test"), "ed25519:nope", now)
        .await;
    assert!(
        matches!(unknown, Err(KeyError::Throttled(..))),
        "{unknown:?}"
    );
    let far = services
        .server_keys
        .key(&services.federation, &server("b.test"), &key_id, i64::MAX)
        .await;
    assert!(matches!(far, Err(KeyError::Throttled(..))), "{far:?}");
    // A certificate for another name, or a server that is not there: no key.
    let wrong = services
        .server_keys
        .key(&services.federation, &server("wrong.test"), &key_id, now)
        .await;
    assert!(
        matches!(wrong, Err(KeyError::Fetch(FederationError::Tls(..)))),
        "{wrong:?}"
    );
    let down = services
        .server_keys
        .key(&services.federation, &server("down.test"), &key_id, now)
        .await;
    assert!(
        matches!(down, Err(KeyError::Fetch(FederationError::Unreachable(..)))),
        "{down:?}"
    );

    // Without the authority, the certificate is not trusted.
    let untrusting = TestServer::with_config(|config| {
        config
            .federation
            .destinations
            .insert("b.test".into(), address.to_string());
    })
    .await;
    let refused = untrusting
        .services
        .server_keys
        .key(
            &untrusting.services.federation,
            &server("b.test"),
            &key_id,
            now,
        )
        .await;
    assert!(
        matches!(refused, Err(KeyError::Fetch(FederationError::Tls(..)))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn signed_requests_are_verified_with_the_origins_key() {
    let (a, b, b_address, b_certificates, _dir) = two_servers().await;
    let (bob_id, bob) = b.register("bob").await;
    b.put(
        &format!("/_matrix/client/v3/profile/{bob_id}/displayname"),
        &bob,
        serde_json::json!({"displayname": "Bob of B"}),
    )
    .await
    .assert_ok();
    let path = format!("/_matrix/federation/v1/query/profile?user_id={bob_id}");
    // Signed by A, verified by B with the key it fetches from A.
    let profile = a
        .services
        .federation
        .request(&server("b.test"), http::Method::GET, &path, None, true)
        .await
        .unwrap();
    assert_eq!(profile, serde_json::json!({"displayname": "Bob of B"}));
    let field = a
        .services
        .federation
        .request(
            &server("b.test"),
            http::Method::GET,
            &format!("{path}&field=avatar_url"),
            None,
            true,
        )
        .await
        .unwrap();
    assert_eq!(field, serde_json::json!({}));
    // Not a user of B, or not one at all; unsigned: refused, never anonymous.
    for (uri, signed, expected) in [
        (
            "/_matrix/federation/v1/query/profile?user_id=@x:a.test",
            true,
            (400, "M_INVALID_PARAM"),
        ),
        (
            "/_matrix/federation/v1/query/profile?user_id=@nobody:b.test",
            true,
            (404, "M_NOT_FOUND"),
        ),
        (path.as_str(), false, (401, "M_UNAUTHORIZED")),
    ] {
        let result = a
            .services
            .federation
            .request(&server("b.test"), http::Method::GET, uri, None, signed)
            .await;
        assert_refused(result, expected, uri);
    }

    // Raw requests for what the client would not send.
    let mut roots = rustls::RootCertStore::empty();
    for certificate in
        rustls::pki_types::CertificateDer::pem_slice_iter(b_certificates.ca.as_bytes())
    {
        roots.add(certificate.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve("b.test", b_address)
        .build()
        .unwrap();
    let url = format!("https://b.test:{}{path}", b_address.port());
    let send = |authorization: String| {
        let request = http.get(&url).header("Authorization", authorization);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["errcode"].clone())
        }
    };
    let unauthorized = (401, serde_json::json!("M_UNAUTHORIZED"));
    let a_key = a.services.key.clone();
    let sign = |destination: &str, uri: &str| {
        causeway_matrix::federation::xmatrix::sign_request(
            &a_key,
            &server("a.test"),
            &server(destination),
            "GET",
            uri,
            None,
        )
        .unwrap()
    };
    // Another scheme; a malformed header; meant for another server; for another URI.
    assert_eq!(send("Bearer abc".into()).await, unauthorized);
    assert_eq!(send("X-Matrix origin=a.test".into()).await, unauthorized);
    assert_eq!(send(sign("c.test", &path).to_header()).await, unauthorized);
    assert_eq!(
        send(sign("b.test", "/_matrix/federation/v1/version").to_header()).await,
        unauthorized
    );
    // A forged signature, a key A does not have, an origin that cannot be reached.
    let mut forged = sign("b.test", &path);
    forged.sig = sign("b.test", "/other").sig;
    assert_eq!(send(forged.to_header()).await, unauthorized);
    let mut unknown_key = sign("b.test", &path);
    unknown_key.key = "ed25519:other".into();
    assert_eq!(send(unknown_key.to_header()).await, unauthorized);
    let mut elsewhere = sign("b.test", &path);
    elsewhere.origin = server("nowhere.invalid");
    assert_eq!(send(elsewhere.to_header()).await, unauthorized);
    // And the real one, through the same path.
    assert_eq!(
        send(sign("b.test", &path).to_header()).await,
        (200, serde_json::Value::Null)
    );
}

#[tokio::test]
async fn a_server_serves_keys_as_a_notary() {
    // B must live while A queries it.
    let (a, _b, _, _, _dir) = two_servers().await;
    let query = |body: serde_json::Value| {
        let federation = &a.services.federation;
        async move {
            federation
                .request(
                    &server("b.test"),
                    http::Method::POST,
                    "/_matrix/key/v2/query",
                    Some(&body),
                    false,
                )
                .await
        }
    };
    let answer = query(serde_json::json!({"server_keys": {
        "a.test": {"ed25519:x": {"minimum_valid_until_ts": 0}},
        "b.test": {},
        "nowhere.invalid": {},
    }}))
    .await
    .unwrap();
    let documents = answer["server_keys"].as_array().unwrap();
    // The server that cannot be reached is left out.
    assert_eq!(documents.len(), 2, "{answer}");
    let by_name = |name: &str| {
        documents
            .iter()
            .find(|document| document["server_name"] == name)
            .unwrap()
            .clone()
    };
    // A's own document, as A signed it, with B's signature beside A's.
    let from_a = by_name("a.test");
    let keys =
        causeway_matrix::federation::keys::check_key_document(&server("a.test"), &from_a).unwrap();
    assert_eq!(
        keys[&format!("ed25519:{}", a.services.key.version())].key,
        a.services.key.public_key()
    );
    assert!(from_a["signatures"]["b.test"].is_object(), "{from_a}");
    // B's own.
    let from_b = by_name("b.test");
    assert!(
        causeway_matrix::federation::keys::check_key_document(&server("b.test"), &from_b).is_ok()
    );
    let one = a
        .services
        .federation
        .get_unsigned(&server("b.test"), "/_matrix/key/v2/query/a.test")
        .await
        .unwrap();
    assert_eq!(one["server_keys"][0]["server_name"], "a.test");
    // Bad queries.
    for (body, errcode) in [
        (serde_json::json!({"server_keys": []}), "M_BAD_JSON"),
        (
            serde_json::json!({"server_keys": {"not a name": {}}}),
            "M_BAD_JSON",
        ),
    ] {
        match query(body).await {
            Err(FederationError::Status(_, 400, answer)) => assert_eq!(answer["errcode"], errcode),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_local_alias_is_resolved_for_another_server() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (_, bob) = b.register("bob").await;
    let room = b
        .create_room(&bob, serde_json::json!({"room_alias_name": "lounge"}))
        .await;
    let ask = |alias: &'static str| {
        let federation = &a.services.federation;
        async move {
            federation
                .request(
                    &server("b.test"),
                    http::Method::GET,
                    &format!(
                        "/_matrix/federation/v1/query/directory?room_alias={}",
                        alias.replace('#', "%23")
                    ),
                    None,
                    true,
                )
                .await
        }
    };
    let answer = ask("#lounge:b.test").await.unwrap();
    assert_eq!(answer["room_id"], room.as_str());
    assert_eq!(answer["servers"], serde_json::json!(["b.test"]));
    for (alias, expected) in [
        ("#nothing:b.test", (404, "M_NOT_FOUND")),
        ("#lounge:a.test", (400, "M_INVALID_PARAM")),
        ("lounge", (400, "M_INVALID_PARAM")),
    ] {
        assert_refused(ask(alias).await, expected, alias);
    }
}

/// A listener that takes connections and closes them at once, counting them.
fn counting_listener() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (address, count)
}

#[tokio::test]
async fn keys_are_kept_across_restarts_and_not_fetched_over_and_over() {
    let (a, b, _, _, _dir) = two_servers().await;
    let key_id = format!("ed25519:{}", b.services.key.version());
    let now = causeway_matrix::store::now_ms();
    let fetched = a
        .services
        .server_keys
        .key(&a.services.federation, &server("b.test"), &key_id, now)
        .await
        .unwrap();
    assert_eq!(fetched, b.services.key.public_key());
    // Restarted where B cannot be reached, A still has B's key, and B's document to serve as
    // a notary.
    let (dead, connections) = counting_listener();
    let a = a
        .restart_with(|config| {
            config
                .federation
                .destinations
                .insert("b.test".into(), dead.to_string());
            config
                .federation
                .destinations
                .insert("flaky.test".into(), dead.to_string());
        })
        .await;
    let kept = a
        .services
        .server_keys
        .key(&a.services.federation, &server("b.test"), &key_id, now)
        .await
        .unwrap();
    assert_eq!(kept, b.services.key.public_key());
    let document = a
        .services
        .server_keys
        .document(&a.services.federation, &server("b.test"), 0)
        .await
        .unwrap();
    assert_eq!(document["server_name"], "b.test");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Many requests at once for a server that fails: one fetch; asked again at once: none.
    let mut asks = tokio::task::JoinSet::new();
    for n in 0..8 {
        let services = a.services.clone();
        asks.spawn(async move {
            services
                .server_keys
                .key(
                    &services.federation,
                    &server("flaky.test"),
                    &format!("ed25519:k{n}"),
                    now,
                )
                .await
        });
    }
    let answers = asks.join_all().await;
    assert!(answers.iter().all(Result::is_err), "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|answer| matches!(answer, Err(KeyError::Fetch(..))))
            .count()
            == 1,
        "{answers:?}"
    );
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    let again = a
        .services
        .server_keys
        .key(
            &a.services.federation,
            &server("flaky.test"),
            "ed25519:k0",
            now,
        )
        .await;
    assert!(matches!(again, Err(KeyError::Throttled(..))), "{again:?}");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(b);
}

/// Three servers: `b.test` whose keys are wanted, `n.test` a notary that reaches it, and the
/// asking server's configuration from `change`, where `b.test` cannot be reached.
async fn behind_a_notary(
    change: impl FnOnce(&mut causeway_config::Config, &causeway_matrix::Services),
) -> (TestServer, TestServer, TestServer, tempfile::TempDir) {
    let mut issued = certificates_for(&["b.test", "n.test"]);
    let n_certificates = issued.remove(1);
    let b_certificates = issued.remove(0);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &b_certificates.ca).unwrap();
    let b = TestServer::with_config(|config| {
        config.server.name = ServerName::try_from("b.test").unwrap();
    })
    .await;
    let b_address = serve_federation(b.services.clone(), &b_certificates).await;
    let notary = TestServer::with_config(|config| {
        config.server.name = ServerName::try_from("n.test").unwrap();
        config.federation.ca_files = vec![ca_file.clone()];
        config
            .federation
            .destinations
            .insert("b.test".into(), b_address.to_string());
    })
    .await;
    let n_address = serve_federation(notary.services.clone(), &n_certificates).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_address = closed.local_addr().unwrap();
    drop(closed);
    let here = TestServer::with_config(|config| {
        config.federation.ca_files = vec![ca_file.clone()];
        let destinations = &mut config.federation.destinations;
        destinations.insert("b.test".into(), closed_address.to_string());
        destinations.insert("n.test".into(), n_address.to_string());
        change(config, &notary.services);
    })
    .await;
    (here, b, notary, dir)
}

fn trusting(name: &str, verify_keys: &[(String, String)]) -> causeway_config::TrustedKeyServer {
    causeway_config::TrustedKeyServer {
        server_name: ServerName::try_from(name).unwrap(),
        verify_keys: verify_keys.iter().cloned().collect(),
    }
}

fn public_key_of(key: &ruma::signatures::Ed25519KeyPair) -> (String, String) {
    (
        format!("ed25519:{}", key.version()),
        ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(key.public_key().to_vec())
            .encode(),
    )
}

#[tokio::test]
async fn a_servers_keys_come_from_a_notary_when_it_cannot_be_reached() {
    let now = causeway_matrix::store::now_ms();
    // The notary's keys fetched from it.
    let (here, b, _notary, _dir) = behind_a_notary(|config, _| {
        config.federation.trusted_key_servers = vec![trusting("n.test", &[])];
    })
    .await;
    let key_id = format!("ed25519:{}", b.services.key.version());
    let key = here
        .services
        .server_keys
        .key(&here.services.federation, &server("b.test"), &key_id, now)
        .await
        .unwrap();
    assert_eq!(key, b.services.key.public_key());

    // The notary's keys configured.
    let (here, b, _notary, _dir) = behind_a_notary(|config, notary| {
        config.federation.trusted_key_servers =
            vec![trusting("n.test", &[public_key_of(&notary.key)])];
    })
    .await;
    let key_id = format!("ed25519:{}", b.services.key.version());
    let key = here
        .services
        .server_keys
        .key(&here.services.federation, &server("b.test"), &key_id, now)
        .await
        .unwrap();
    assert_eq!(key, b.services.key.public_key());

    // A notary whose signature is not by the key configured for it is not believed.
    let stranger = ruma::signatures::Ed25519KeyPair::from_der(
        &ruma::signatures::Ed25519KeyPair::generate(),
        "k".into(),
    )
    .unwrap();
    let (here, b, notary, _dir) = behind_a_notary(|config, notary| {
        let (id, _) = public_key_of(&notary.key);
        let (_, wrong) = public_key_of(&stranger);
        config.federation.trusted_key_servers = vec![trusting("n.test", &[(id, wrong)])];
    })
    .await;
    let key_id = format!("ed25519:{}", b.services.key.version());
    let refused = here
        .services
        .server_keys
        .key(&here.services.federation, &server("b.test"), &key_id, now)
        .await;
    assert!(
        matches!(&refused, Err(KeyError::Invalid(name, _)) if name == "n.test"),
        "{refused:?}"
    );
    drop((b, notary));

    // Without notaries, a server that cannot be reached has no keys.
    let (here, b, _notary, _dir) = behind_a_notary(|_, _| {}).await;
    let key_id = format!("ed25519:{}", b.services.key.version());
    let unreachable = here
        .services
        .server_keys
        .key(&here.services.federation, &server("b.test"), &key_id, now)
        .await;
    assert!(
        matches!(
            unreachable,
            Err(KeyError::Fetch(FederationError::Unreachable(..)))
        ),
        "{unreachable:?}"
    );
    drop(b);
}

#[tokio::test]
async fn another_servers_directory_and_profiles_are_asked_of_it() {
    let (a, b, _, _, _dir) = two_servers_with(|name, config| {
        if name == "a.test" {
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = closed.local_addr().unwrap();
            drop(closed);
            config
                .federation
                .destinations
                .insert("down.test".into(), address.to_string());
        }
    })
    .await;
    let (_, alice) = a.register("alice").await;
    let (bob_id, bob) = b.register("bob").await;
    b.put(
        &format!("/_matrix/client/v3/profile/{bob_id}/displayname"),
        &bob,
        serde_json::json!({"displayname": "Bob of B"}),
    )
    .await
    .assert_ok();
    let lobby = b
        .create_room(
            &bob,
            serde_json::json!({"visibility": "public", "preset": "public_chat",
                "name": "Lobby", "topic": "the way in", "room_alias_name": "lobby"}),
        )
        .await;
    let hall = b
        .create_room(
            &bob,
            serde_json::json!({"visibility": "public", "preset": "public_chat", "name": "Hall"}),
        )
        .await;
    b.create_room(
        &bob,
        serde_json::json!({"visibility": "private", "name": "Secret"}),
    )
    .await;

    // The directory of b.test, asked by a client of a.test: both public rooms, not the
    // private one, with what b.test knows of them.
    let all = a
        .get("/_matrix/client/v3/publicRooms?server=b.test", &alice)
        .await
        .assert_ok();
    let rooms: Vec<&str> = all["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|room| room["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(rooms.len(), 2, "{all}");
    assert!(rooms.contains(&lobby.as_str()) && rooms.contains(&hall.as_str()));
    assert_eq!(all["total_room_count_estimate"], 2);
    let listed = all["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|room| room["room_id"] == lobby.as_str())
        .unwrap();
    assert_eq!(listed["name"], "Lobby");
    assert_eq!(listed["topic"], "the way in");
    assert_eq!(listed["canonical_alias"], "#lobby:b.test");
    assert_eq!(listed["num_joined_members"], 1);
    assert_eq!(listed["world_readable"], false);
    // A page at a time, and a search.
    let first = a
        .get(
            "/_matrix/client/v3/publicRooms?server=b.test&limit=1",
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(first["chunk"].as_array().unwrap().len(), 1);
    let next = first["next_batch"].as_str().unwrap();
    let second = a
        .get(
            &format!("/_matrix/client/v3/publicRooms?server=b.test&limit=1&since={next}"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(second["chunk"].as_array().unwrap().len(), 1);
    assert_ne!(second["chunk"][0]["room_id"], first["chunk"][0]["room_id"]);
    let found = a
        .post(
            "/_matrix/client/v3/publicRooms?server=b.test",
            &alice,
            serde_json::json!({"filter": {"generic_search_term": "way IN"}}),
        )
        .await
        .assert_ok();
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["chunk"][0]["room_id"], lobby.as_str());
    let none = a
        .post(
            "/_matrix/client/v3/publicRooms?server=b.test",
            &alice,
            serde_json::json!({"filter": {"generic_search_term": "nothing like it"}}),
        )
        .await
        .assert_ok();
    assert_eq!(none["chunk"], serde_json::json!([]));
    // A server that cannot be reached: 502, and a bad token from b.test is b.test's refusal.
    a.get("/_matrix/client/v3/publicRooms?server=down.test", &alice)
        .await
        .assert_error(502, "M_UNKNOWN");
    a.get(
        "/_matrix/client/v3/publicRooms?server=b.test&since=nonsense",
        &alice,
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");

    // Bad requests to the federation endpoint itself.
    let federation = &a.services.federation;
    for (method, uri, body, expected) in [
        (
            http::Method::GET,
            "/_matrix/federation/v1/publicRooms?limit=many",
            None,
            (400, "M_INVALID_PARAM"),
        ),
        (
            http::Method::POST,
            "/_matrix/federation/v1/publicRooms",
            Some(serde_json::json!({"filter": {"generic_search_term": 5}})),
            (400, "M_BAD_JSON"),
        ),
        (
            http::Method::POST,
            "/_matrix/federation/v1/publicRooms",
            Some(serde_json::json!({"limit": -1})),
            (400, "M_INVALID_PARAM"),
        ),
    ] {
        let answer = federation
            .request(&server("b.test"), method, uri, body.as_ref(), true)
            .await;
        assert_refused(answer, expected, uri);
    }
    let unsigned = federation
        .request(
            &server("b.test"),
            http::Method::GET,
            "/_matrix/federation/v1/publicRooms",
            None,
            false,
        )
        .await;
    assert_refused(unsigned, (401, "M_UNAUTHORIZED"), "unsigned");

    // Profiles of b.test's users, asked of b.test.
    let profile = a
        .get(&format!("/_matrix/client/v3/profile/{bob_id}"), &alice)
        .await
        .assert_ok();
    assert_eq!(profile, serde_json::json!({"displayname": "Bob of B"}));
    let name = a
        .get(
            &format!("/_matrix/client/v3/profile/{bob_id}/displayname"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(name, serde_json::json!({"displayname": "Bob of B"}));
    let avatar = a
        .get(
            &format!("/_matrix/client/v3/profile/{bob_id}/avatar_url"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(avatar, serde_json::json!({}));
    a.get("/_matrix/client/v3/profile/@nobody:b.test", &alice)
        .await
        .assert_error(404, "M_NOT_FOUND");
    a.get("/_matrix/client/v3/profile/@someone:down.test", &alice)
        .await
        .assert_error(502, "M_UNKNOWN");
}

#[tokio::test]
async fn a_directory_not_served_to_other_servers_is_refused() {
    let (a, b, _, _, _dir) = two_servers_with(|name, config| {
        config.federation.serve_public_rooms = name != "b.test";
    })
    .await;
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    b.create_room(
        &bob,
        serde_json::json!({"visibility": "public", "preset": "public_chat"}),
    )
    .await;
    a.get("/_matrix/client/v3/publicRooms?server=b.test", &alice)
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Its own clients still see it.
    let own = b
        .get("/_matrix/client/v3/publicRooms", &bob)
        .await
        .assert_ok();
    assert_eq!(own["chunk"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn other_servers_are_reached_at_public_addresses_only_unless_let_in() {
    let (address, connections) = counting_listener();
    // A server whose name is a loopback address: what an origin claiming that name would make
    // this server connect to when fetching its key.
    let name = format!("127.0.0.1:{}", address.port());
    let now = causeway_matrix::store::now_ms();
    let here = TestServer::new().await;
    let refused = here
        .services
        .server_keys
        .key(&here.services.federation, &server(&name), "ed25519:k", now)
        .await;
    assert!(
        matches!(&refused, Err(KeyError::Fetch(FederationError::Unreachable(_, why)))
            if why.contains("not a public address")),
        "{refused:?}"
    );
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    // A network the configuration lets in is connected to.
    let trusting = TestServer::with_config(|config| {
        config.federation.ip_range_whitelist = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let tried = trusting
        .services
        .server_keys
        .key(
            &trusting.services.federation,
            &server(&name),
            "ed25519:k",
            now,
        )
        .await;
    assert!(tried.is_err());
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}
