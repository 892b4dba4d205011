//! Registration, login, tokens, devices, profiles and bad input on those endpoints.

mod common;

use causeway_config::RegistrationMode;
use common::TestServer;
use http::Method;
use serde_json::json;

#[tokio::test]
async fn registration_asks_for_interactive_auth_then_creates_the_account() {
    let server = TestServer::new().await;
    let first = server
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "alice", "password": "pw"})),
        )
        .await;
    assert_eq!(first.status, 401);
    let body = first.json();
    assert_eq!(body["flows"][0]["stages"][0], "m.login.dummy");
    let session = body["session"].as_str().unwrap().to_owned();
    let second = server
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "Alice", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}})),
        )
        .await;
    let body = second.assert_ok();
    assert_eq!(body["user_id"], "@alice:test.example");
    let token = body["access_token"].as_str().unwrap();
    let whoami = server
        .get("/_matrix/client/v3/account/whoami", token)
        .await
        .assert_ok();
    assert_eq!(whoami["user_id"], "@alice:test.example");
    assert_eq!(whoami["device_id"], body["device_id"]);

    // The same name again, in any case.
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "ALICE", "password": "pw", "auth": {"type": "m.login.dummy"}})),
        )
        .await
        .assert_error(400, "M_USER_IN_USE");
    server
        .call(
            Method::GET,
            "/_matrix/client/v3/register/available?username=alice",
            None,
            None,
        )
        .await
        .assert_error(400, "M_USER_IN_USE");
    let free = server
        .call(
            Method::GET,
            "/_matrix/client/v3/register/available?username=bob",
            None,
            None,
        )
        .await
        .assert_ok();
    assert_eq!(free["available"], true);
}

#[tokio::test]
async fn registration_refuses_bad_and_reserved_names() {
    let server = TestServer::new().await;
    for (name, errcode) in [
        ("has space", "M_INVALID_USERNAME"),
        ("ünïcode", "M_INVALID_USERNAME"),
        ("a:b", "M_INVALID_USERNAME"),
        ("", "M_INVALID_USERNAME"),
        ("_xmpp_bob=40jabber.de", "M_EXCLUSIVE"),
    ] {
        server
            .call(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(
                    json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}}),
                ),
            )
            .await
            .assert_error(400, errcode);
    }
    let long = "a".repeat(300);
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": long, "password": "pw", "auth": {"type": "m.login.dummy"}})),
        )
        .await
        .assert_error(400, "M_INVALID_USERNAME");
}

#[tokio::test]
async fn registration_modes() {
    let disabled =
        TestServer::with_config(|c| c.registration.mode = RegistrationMode::Disabled).await;
    disabled
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "x", "password": "pw", "auth": {"type": "m.login.dummy"}})),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");

    let token = TestServer::with_config(|c| {
        c.registration.mode = RegistrationMode::Token;
        c.registration.tokens = vec!["let-me-in".into()];
    })
    .await;
    let ask = token
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "x", "password": "pw", "auth": {"type": "m.login.dummy"}})),
        )
        .await;
    assert_eq!(ask.status, 401);
    assert_eq!(
        ask.json()["flows"][0]["stages"][0],
        "m.login.registration_token"
    );
    let wrong = token
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "x", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "nope"}})),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["errcode"], "M_FORBIDDEN");
    token
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "x", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "let-me-in"}})),
        )
        .await
        .assert_ok();
}

#[tokio::test]
async fn login_logout_and_tokens() {
    let server = TestServer::new().await;
    let (_, first_token) = server.register("carol").await;
    let flows = server
        .call(Method::GET, "/_matrix/client/v3/login", None, None)
        .await
        .assert_ok();
    assert_eq!(flows["flows"][0]["type"], "m.login.password");
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "carol"}, "password": "wrong"})),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "x"})),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    let login = server
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@carol:test.example"}, "password": "secret-pw", "initial_device_display_name": "laptop"})),
        )
        .await
        .assert_ok();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let devices = server
        .get("/_matrix/client/v3/devices", &token)
        .await
        .assert_ok();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2);

    // Missing and unknown tokens.
    server
        .call(Method::GET, "/_matrix/client/v3/account/whoami", None, None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    server
        .get("/_matrix/client/v3/account/whoami", "not-a-token")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    // The query-string form of the token works too.
    server
        .call(
            Method::GET,
            &format!("/_matrix/client/v3/account/whoami?access_token={token}"),
            None,
            None,
        )
        .await
        .assert_ok();

    server
        .post("/_matrix/client/v3/logout", &token, json!({}))
        .await
        .assert_ok();
    server
        .get("/_matrix/client/v3/account/whoami", &token)
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    server
        .get("/_matrix/client/v3/account/whoami", &first_token)
        .await
        .assert_ok();
    server
        .post("/_matrix/client/v3/logout/all", &first_token, json!({}))
        .await
        .assert_ok();
    server
        .get("/_matrix/client/v3/account/whoami", &first_token)
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn login_is_rate_limited() {
    let server = TestServer::with_config(|c| {
        c.rate_limits.login = causeway_config::RateLimit {
            per_second: 0.001,
            burst: 2,
        }
    })
    .await;
    server.register("dave").await;
    let attempt = || {
        server.call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "dave"}, "password": "wrong"})),
        )
    };
    attempt().await.assert_error(403, "M_FORBIDDEN");
    attempt().await.assert_error(403, "M_FORBIDDEN");
    let limited = attempt().await;
    limited.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(limited.json()["retry_after_ms"].as_u64().unwrap() > 1000);
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn password_change_and_device_deletion_need_the_password() {
    let server = TestServer::new().await;
    let (user_id, token) = server.register("erin").await;
    let other = server
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "erin"}, "password": "secret-pw", "device_id": "PHONE"})),
        )
        .await
        .assert_ok();
    assert_eq!(other["device_id"], "PHONE");
    let other_token = other["access_token"].as_str().unwrap().to_owned();

    // Rename and read a device.
    server
        .put(
            "/_matrix/client/v3/devices/PHONE",
            &token,
            json!({"display_name": "my phone"}),
        )
        .await
        .assert_ok();
    let device = server
        .get("/_matrix/client/v3/devices/PHONE", &token)
        .await
        .assert_ok();
    assert_eq!(device["display_name"], "my phone");
    server
        .get("/_matrix/client/v3/devices/NOPE", &token)
        .await
        .assert_error(404, "M_NOT_FOUND");

    // Deleting a device: first a UIA challenge, then a wrong password, then the right one.
    let challenge = server
        .call(
            Method::DELETE,
            "/_matrix/client/v3/devices/PHONE",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(challenge.status, 401);
    assert_eq!(
        challenge.json()["flows"][0]["stages"][0],
        "m.login.password"
    );
    let wrong = server
        .call(
            Method::DELETE,
            "/_matrix/client/v3/devices/PHONE",
            Some(&token),
            Some(json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": "bad"}})),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["errcode"], "M_FORBIDDEN");
    server
        .call(
            Method::DELETE,
            "/_matrix/client/v3/devices/PHONE",
            Some(&token),
            Some(json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": "secret-pw"}})),
        )
        .await
        .assert_ok();
    server
        .get("/_matrix/client/v3/account/whoami", &other_token)
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");

    // Change the password; the old one stops working.
    server
        .post(
            "/_matrix/client/v3/account/password",
            &token,
            json!({"new_password": "new-pw", "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": "secret-pw"}}),
        )
        .await
        .assert_ok();
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "erin"}, "password": "secret-pw"})),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "erin"}, "password": "new-pw"})),
        )
        .await
        .assert_ok();
}

#[tokio::test]
async fn deactivation_leaves_rooms_and_blocks_login() {
    let server = TestServer::new().await;
    let (user_id, token) = server.register("frank").await;
    let (_, other) = server.register("grace").await;
    let room = server
        .create_room(&other, json!({"preset": "public_chat"}))
        .await;
    server.join(&token, &room).await;
    server
        .post(
            "/_matrix/client/v3/account/deactivate",
            &token,
            json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": "secret-pw"}}),
        )
        .await
        .assert_ok();
    let members = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            &other,
        )
        .await
        .assert_ok();
    assert!(members["joined"].get(&user_id).is_none());
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "frank"}, "password": "secret-pw"})),
        )
        .await
        .assert_error(403, "M_USER_DEACTIVATED");
}

#[tokio::test]
async fn profile_changes_reach_member_events() {
    let server = TestServer::new().await;
    let (user_id, token) = server.register("heidi").await;
    let room = server.create_room(&token, json!({"name": "R"})).await;
    server
        .put(
            &format!("/_matrix/client/v3/profile/{user_id}/displayname"),
            &token,
            json!({"displayname": "Heidi H."}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/profile/{user_id}/avatar_url"),
            &token,
            json!({"avatar_url": "mxc://test.example/abc"}),
        )
        .await
        .assert_ok();
    let profile = server
        .call(
            Method::GET,
            &format!("/_matrix/client/v3/profile/{user_id}"),
            None,
            None,
        )
        .await
        .assert_ok();
    assert_eq!(
        profile,
        json!({"displayname": "Heidi H.", "avatar_url": "mxc://test.example/abc"})
    );
    let member = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user_id}"),
            &token,
        )
        .await
        .assert_ok();
    assert_eq!(member["displayname"], "Heidi H.");
    assert_eq!(member["avatar_url"], "mxc://test.example/abc");
    assert_eq!(member["membership"], "join");

    // Someone else's profile cannot be changed; a body without the field is refused.
    let (_, other) = server.register("ivan").await;
    server
        .put(
            &format!("/_matrix/client/v3/profile/{user_id}/displayname"),
            &other,
            json!({"displayname": "hijacked"}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .put(
            &format!("/_matrix/client/v3/profile/{user_id}/displayname"),
            &token,
            json!({"name": "x"}),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .call(
            Method::GET,
            "/_matrix/client/v3/profile/@nobody:test.example",
            None,
            None,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn discovery_endpoints() {
    let server = TestServer::new().await;
    let versions = server
        .call(Method::GET, "/_matrix/client/versions", None, None)
        .await
        .assert_ok();
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "v1.11")
    );
    let well_known = server
        .call(Method::GET, "/.well-known/matrix/client", None, None)
        .await
        .assert_ok();
    assert!(
        well_known["m.homeserver"]["base_url"]
            .as_str()
            .unwrap()
            .starts_with("http")
    );
    let server_wk = server
        .call(Method::GET, "/.well-known/matrix/server", None, None)
        .await
        .assert_ok();
    assert_eq!(server_wk["m.server"], "test.example:8448");
    let (_, token) = server.register("judy").await;
    let caps = server
        .get("/_matrix/client/v3/capabilities", &token)
        .await
        .assert_ok();
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "12");
    assert_eq!(
        caps["capabilities"]["m.room_versions"]["available"]["10"],
        "stable"
    );
}

#[tokio::test]
async fn the_default_room_version_is_configurable() {
    let server = TestServer::with_config(|config| {
        config.server.default_room_version = "10".into();
    })
    .await;
    let (_, token) = server.register("vera").await;
    let caps = server
        .get("/_matrix/client/v3/capabilities", &token)
        .await
        .assert_ok();
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "10");
    // A room created without a version has the configured one; one asked for, that one.
    for (asked, expected) in [(None, "10"), (Some("11"), "11")] {
        let mut body = json!({});
        if let Some(version) = asked {
            body["room_version"] = json!(version);
        }
        let room = server.create_room(&token, body).await;
        let create = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"),
                &token,
            )
            .await
            .assert_ok();
        assert_eq!(create["room_version"], expected);
    }
}

#[tokio::test]
async fn malformed_requests_get_precise_errors() {
    let server = TestServer::new().await;
    let (_, token) = server.register("mallory").await;
    // Not JSON at all.
    server
        .raw(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&token),
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await
        .assert_error(400, "M_NOT_JSON");
    // JSON of the wrong shape.
    server
        .post("/_matrix/client/v3/createRoom", &token, json!({"name": 5}))
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .post("/_matrix/client/v3/createRoom", &token, json!(["a"]))
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .post(
            "/_matrix/client/v3/createRoom",
            &token,
            json!({"room_version": "1"}),
        )
        .await
        .assert_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    // Too large.
    let huge = json!({"name": "x".repeat(100 * 1024)});
    server
        .post("/_matrix/client/v3/createRoom", &token, huge)
        .await
        .assert_error(413, "M_TOO_LARGE");
    // Unknown endpoint and wrong method.
    server
        .get("/_matrix/client/v3/no/such/endpoint", &token)
        .await
        .assert_error(404, "M_UNRECOGNIZED");
    server
        .call(
            Method::DELETE,
            "/_matrix/client/v3/createRoom",
            Some(&token),
            None,
        )
        .await
        .assert_error(405, "M_UNRECOGNIZED");
    // Invalid identifiers in the path.
    server
        .get("/_matrix/client/v3/rooms/not-a-room/state", &token)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    // Bad login body.
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password"})),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    // Account data must be an object; server-managed types are refused.
    server
        .put(
            "/_matrix/client/v3/user/@mallory:test.example/account_data/m.direct",
            &token,
            json!("text"),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .put(
            "/_matrix/client/v3/user/@someone:test.example/account_data/m.direct",
            &token,
            json!({}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    // The server keeps working after all of that.
    server
        .get("/_matrix/client/v3/account/whoami", &token)
        .await
        .assert_ok();
}

#[tokio::test]
async fn the_user_directory_finds_accounts_by_name() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, robert) = server.register("robert_smith").await;
    // Listed: users in a public room, and users who share a room with the searcher.
    let lobby = server
        .create_room(&bob, json!({"preset": "public_chat"}))
        .await;
    server.join(&robert, &lobby).await;
    let (roberta_id, roberta) = server.register("roberta").await;
    server
        .put(
            &format!("/_matrix/client/v3/profile/{bob_id}/displayname"),
            &bob,
            json!({"displayname": "Bobby Tables"}),
        )
        .await
        .assert_ok();
    let found = |body: &serde_json::Value| -> Vec<String> {
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["user_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let search = async |token: &str, term: &str| {
        server
            .post(
                "/_matrix/client/v3/user_directory/search",
                token,
                json!({"search_term": term}),
            )
            .await
            .assert_ok()
    };
    let by_display_name = search(&alice, "TABLES").await;
    assert_eq!(found(&by_display_name), vec![bob_id.clone()]);
    assert_eq!(
        by_display_name["results"][0]["display_name"],
        "Bobby Tables"
    );
    let by_name = search(&alice, "rob").await;
    // Roberta is in no room yet: not listed.
    assert_eq!(found(&by_name), vec!["@robert_smith:test.example"]);
    let private = server
        .create_room(&roberta, json!({"preset": "private_chat"}))
        .await;
    let by_name = search(&alice, "rob").await;
    assert_eq!(found(&by_name), vec!["@robert_smith:test.example"]);
    // Once she shares a room with Alice, Alice finds her.
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/invite"),
            &roberta,
            json!({"user_id": "@alice:test.example"}),
        )
        .await
        .assert_ok();
    server.join(&alice, &private).await;
    let by_name = search(&alice, "rob").await;
    assert_eq!(
        found(&by_name),
        vec!["@robert_smith:test.example".to_owned(), roberta_id.clone()]
    );
    // The server name is not a match for everyone; LIKE wildcards are taken literally.
    for term in ["test.example", "%", "_"] {
        let none = search(&alice, term).await;
        let expected: Vec<String> = if term == "_" {
            vec!["@robert_smith:test.example".into()]
        } else {
            vec![]
        };
        assert_eq!(found(&none), expected, "{term}");
    }
    let limited = server
        .post(
            "/_matrix/client/v3/user_directory/search",
            &alice,
            json!({"search_term": "b", "limit": 1}),
        )
        .await
        .assert_ok();
    assert_eq!(found(&limited).len(), 1);
    assert_eq!(limited["limited"], true);
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/user_directory/search",
            None,
            Some(json!({"search_term": "a"})),
        )
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

/// Registration tokens are checked only after the rate limiter: once a client has used its
/// attempts, even the right token waits, so tokens cannot be guessed at network speed.
#[tokio::test]
async fn registration_token_guesses_are_rate_limited() {
    let server = TestServer::with_config(|c| {
        c.registration.mode = RegistrationMode::Token;
        c.registration.tokens = vec!["first-token".into(), "let-me-in".into()];
        c.rate_limits.registration = causeway_config::RateLimit {
            per_second: 0.001,
            burst: 3,
        };
    })
    .await;
    let attempt = |token: &str| {
        json!({"username": "x", "password": "pw",
               "auth": {"type": "m.login.registration_token", "token": token}})
    };
    // Asking for the flows costs nothing.
    for _ in 0..5 {
        let ask = server
            .call(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(json!({"username": "x", "password": "pw"})),
            )
            .await;
        assert_eq!(ask.status, 401);
    }
    for guess in ["aaaa", "let-me-", "let-me-in-"] {
        let wrong = server
            .call(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(attempt(guess)),
            )
            .await;
        assert_eq!(wrong.status, 401, "{guess}");
        assert_eq!(wrong.json()["errcode"], "M_FORBIDDEN", "{guess}");
    }
    let limited = server
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(attempt("let-me-in")),
        )
        .await;
    limited.assert_error(429, "M_LIMIT_EXCEEDED");
    // Any of the configured tokens is accepted on a server that has not been guessed at.
    let fresh = TestServer::with_config(|c| {
        c.registration.mode = RegistrationMode::Token;
        c.registration.tokens = vec!["first-token".into(), "let-me-in".into()];
    })
    .await;
    fresh
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(attempt("let-me-in")),
        )
        .await
        .assert_ok();
}

/// Behind a trusted reverse proxy, rate limits apply to the client's address from
/// `X-Forwarded-For`; from anyone else that header is ignored.
#[tokio::test]
async fn rate_limits_key_on_the_real_client_address() {
    let server = TestServer::with_config(|c| {
        c.client_api.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.rate_limits.registration = causeway_config::RateLimit {
            per_second: 0.001,
            burst: 1,
        };
    })
    .await;
    let proxy: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let stranger: std::net::SocketAddr = "192.0.2.50:40000".parse().unwrap();
    let register =
        |name: &str| json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}});
    let path = "/_matrix/client/v3/register";
    // Two clients behind the proxy each have their own allowance.
    for (client, name) in [("198.51.100.1", "one"), ("198.51.100.2", "two")] {
        server
            .call_from(
                proxy,
                &[("x-forwarded-for", client)],
                Method::POST,
                path,
                register(name),
            )
            .await
            .assert_ok();
    }
    server
        .call_from(
            proxy,
            &[("x-forwarded-for", "198.51.100.1")],
            Method::POST,
            path,
            register("three"),
        )
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
    // A client that is not a trusted proxy cannot escape its limit by naming other addresses.
    server
        .call_from(
            stranger,
            &[("x-forwarded-for", "198.51.100.7")],
            Method::POST,
            path,
            register("four"),
        )
        .await
        .assert_ok();
    server
        .call_from(
            stranger,
            &[("x-forwarded-for", "198.51.100.8")],
            Method::POST,
            path,
            register("five"),
        )
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
}
