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
    // A key the server does not have, or one asked valid beyond what it says: unknown.
    let unknown = services
        .server_keys
        .key(&services.federation, &server("b.test"), "ed25519:nope", now)
        .await;
    assert!(matches!(unknown, Err(KeyError::Unknown(..))), "{unknown:?}");
    let far = services
        .server_keys
        .key(&services.federation, &server("b.test"), &key_id, i64::MAX)
        .await;
    assert!(matches!(far, Err(KeyError::Unknown(..))), "{far:?}");
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
