//! What clients probe and rely on: versions and capabilities, CORS, room tags, the empty
//! third-party endpoints, invites the authorization rules refuse, state set to what it is.

#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use http::Method;
use serde_json::json;

#[tokio::test]
async fn versions_capabilities_and_cors() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let versions = server
        .call(Method::GET, "/_matrix/client/versions", None, None)
        .await
        .assert_ok();
    assert_eq!(
        versions["unstable_features"]["org.matrix.e2e_cross_signing"],
        true
    );
    assert_eq!(
        versions["unstable_features"]["org.matrix.msc3916.stable"],
        true
    );
    let capabilities = server
        .get("/_matrix/client/v3/capabilities", &alice)
        .await
        .assert_ok();
    let capabilities = &capabilities["capabilities"];
    assert_eq!(capabilities["m.change_password"]["enabled"], true);
    assert_eq!(capabilities["m.set_displayname"]["enabled"], true);
    assert_eq!(capabilities["m.set_avatar_url"]["enabled"], true);
    assert_eq!(capabilities["m.3pid_changes"]["enabled"], false);
    // The token may come as a query parameter too (deprecated, still sent by some clients).
    server
        .call(
            Method::GET,
            &format!("/_matrix/client/v3/capabilities?access_token={alice}"),
            None,
            None,
        )
        .await
        .assert_ok();
    server
        .call(
            Method::GET,
            "/_matrix/client/v3/capabilities?access_token=forged",
            None,
            None,
        )
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    // A browser's preflight for an authenticated request: Authorization is named.
    let preflight = server
        .raw_with_headers(
            Method::OPTIONS,
            "/_matrix/client/v3/sync",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ],
        )
        .await;
    let allowed = preflight.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert_eq!(preflight.headers["access-control-allow-origin"], "*");
    // The read endpoints of features this server does not have answer empty.
    assert_eq!(
        server
            .get("/_matrix/client/v3/thirdparty/protocols", &alice)
            .await
            .assert_ok(),
        json!({})
    );
    let threepids = server
        .get("/_matrix/client/v3/account/3pid", &alice)
        .await
        .assert_ok();
    assert!(
        threepids
            .get("threepids")
            .is_none_or(|list| list == &json!([])),
        "{threepids}"
    );
}

#[tokio::test]
async fn room_tags() {
    let server = TestServer::new().await;
    let (alice, token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let room = server.create_room(&token, json!({})).await;
    let tags = format!("/_matrix/client/v3/user/{alice}/rooms/{room}/tags");
    assert_eq!(
        server.get(&tags, &token).await.assert_ok(),
        json!({"tags": {}})
    );
    server
        .put(
            &format!("{tags}/m.favourite"),
            &token,
            json!({"order": 0.25}),
        )
        .await
        .assert_ok();
    server
        .put(&format!("{tags}/u.work"), &token, json!({}))
        .await
        .assert_ok();
    assert_eq!(
        server.get(&tags, &token).await.assert_ok(),
        json!({"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}})
    );
    // Sync carries them as the room's m.tag account data.
    let sync = server.sync(&token, "").await;
    let data = sync["rooms"]["join"][room.as_str()]["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.tag")
        .cloned()
        .unwrap();
    assert_eq!(data["content"]["tags"]["m.favourite"]["order"], 0.25);
    server
        .call(
            Method::DELETE,
            &format!("{tags}/u.work"),
            Some(&token),
            None,
        )
        .await
        .assert_ok();
    assert_eq!(
        server.get(&tags, &token).await.assert_ok(),
        json!({"tags": {"m.favourite": {"order": 0.25}}})
    );
    // Someone else's tags, and an unknown room.
    server
        .get(&tags, &bob_token)
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .put(
            &format!("/_matrix/client/v3/user/{bob}/rooms/!nowhere:test.example/tags/u.x"),
            &bob_token,
            json!({}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn invites_the_rules_refuse_and_state_set_to_what_it_is() {
    let server = TestServer::new().await;
    let (alice, token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let (carol, _) = server.register("carol").await;
    let (dave, _) = server.register("dave").await;
    let room = server
        .create_room(&token, json!({"preset": "public_chat"}))
        .await;
    server.join(&bob_token, &room).await;
    let invite = |user: &str| {
        let path = format!("/_matrix/client/v3/rooms/{room}/invite");
        let body = json!({"user_id": user});
        let server = &server;
        let token = token.clone();
        async move { server.post(&path, &token, body).await }
    };
    invite(&alice).await.assert_error(403, "M_FORBIDDEN");
    invite(&bob).await.assert_error(403, "M_FORBIDDEN");
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            &token,
            json!({"user_id": dave}),
        )
        .await
        .assert_ok();
    invite(&dave).await.assert_error(403, "M_FORBIDDEN");
    invite(&carol).await.assert_ok();
    invite(&carol).await.assert_ok();

    // The same topic again is no new event; another topic is.
    let topic = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
    let first = server
        .put(&topic, &token, json!({"topic": "plans"}))
        .await
        .assert_ok();
    let again = server
        .put(&topic, &token, json!({"topic": "plans"}))
        .await
        .assert_ok();
    assert_eq!(first["event_id"], again["event_id"]);
    let other = server
        .put(&topic, &token, json!({"topic": "other plans"}))
        .await
        .assert_ok();
    assert_ne!(first["event_id"], other["event_id"]);
}

/// A state event carries the state it replaced in `unsigned` (`prev_content`, `prev_sender`,
/// `replaces_state`): Element reads the join's `prev_content` to know that the invite it
/// accepted was to a direct chat.
#[tokio::test]
async fn state_events_carry_what_they_replaced() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"is_direct": true, "invite": [bob]}))
        .await;
    server.join(&bob_token, &room).await;
    let sync = server.sync(&bob_token, "").await;
    let timeline = sync["rooms"]["join"][room.as_str()]["timeline"]["events"]
        .as_array()
        .unwrap();
    let invite = timeline
        .iter()
        .find(|e| e["state_key"] == bob && e["content"]["membership"] == "invite")
        .unwrap();
    let join = timeline
        .iter()
        .find(|e| e["state_key"] == bob && e["content"]["membership"] == "join")
        .unwrap();
    assert_eq!(
        join["unsigned"]["prev_content"]["membership"], "invite",
        "{join}"
    );
    assert_eq!(join["unsigned"]["prev_content"]["is_direct"], true);
    assert_eq!(join["unsigned"]["prev_sender"], invite["sender"]);
    assert_eq!(join["unsigned"]["replaces_state"], invite["event_id"]);
    // The first of its kind replaced nothing; a message is no state.
    assert!(invite["unsigned"].get("prev_content").is_none(), "{invite}");
    let sent = server
        .send_text(&alice, &room, "t1", "hello")
        .await
        .assert_ok();
    let event = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/event/{}",
                common::encode(sent["event_id"].as_str().unwrap())
            ),
            &bob_token,
        )
        .await
        .assert_ok();
    assert!(event["unsigned"].get("prev_content").is_none());
    // /messages shows it too.
    let messages = server.messages(&bob_token, &room).await;
    let join = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["state_key"] == bob && e["content"]["membership"] == "join")
        .unwrap();
    assert_eq!(join["unsigned"]["prev_content"]["membership"], "invite");
}

/// Typing without a timeout is accepted (the specification does not require one) and lasts;
/// a timeout that is not a number is still refused.
#[tokio::test]
async fn typing_without_a_timeout() {
    let server = TestServer::new().await;
    let (alice, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    let typing = format!("/_matrix/client/v3/rooms/{room}/typing/{alice}");
    server
        .put(&typing, &token, json!({"typing": true}))
        .await
        .assert_ok();
    let sync = server.sync(&token, "").await;
    let events = sync["rooms"]["join"][room.as_str()]["ephemeral"]["events"]
        .as_array()
        .unwrap();
    let typing_event = events.iter().find(|e| e["type"] == "m.typing").unwrap();
    assert_eq!(typing_event["content"]["user_ids"], json!([alice]));
    server
        .put(&typing, &token, json!({"typing": true, "timeout": "soon"}))
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .put(&typing, &token, json!({"typing": false}))
        .await
        .assert_ok();
}

/// `m.ignored_user_list`: what an ignored user sends (not their state) and their invites are
/// not shown.
#[tokio::test]
async fn ignored_users_are_not_shown() {
    let server = TestServer::new().await;
    let (alice, token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let (_, carol_token) = server.register("carol").await;
    let room = server
        .create_room(&token, json!({"preset": "public_chat"}))
        .await;
    server.join(&bob_token, &room).await;
    server.join(&carol_token, &room).await;
    server
        .put(
            &format!("/_matrix/client/v3/user/{alice}/account_data/m.ignored_user_list"),
            &token,
            json!({"ignored_users": {bob.clone(): {}}}),
        )
        .await
        .assert_ok();
    server
        .send_text(&bob_token, &room, "b1", "from bob")
        .await
        .assert_ok();
    server
        .send_text(&carol_token, &room, "c1", "from carol")
        .await
        .assert_ok();
    let other = server
        .create_room(&bob_token, json!({"invite": [alice.clone()]}))
        .await;
    let sync = server.sync(&token, "").await;
    let timeline = &sync["rooms"]["join"][room.as_str()]["timeline"]["events"];
    assert_eq!(common::bodies(timeline), ["from carol"]);
    assert!(
        timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["state_key"] == bob && e["content"]["membership"] == "join"),
        "his state is still shown"
    );
    assert!(sync["rooms"]["invite"][other.as_str()].is_null(), "{sync}");
    let messages = server.messages(&token, &room).await;
    assert_eq!(common::bodies(&messages["chunk"]), ["from carol"]);
    // Carol ignores nobody and sees both.
    let messages = server.messages(&carol_token, &room).await;
    assert_eq!(
        common::bodies(&messages["chunk"]),
        ["from carol", "from bob"]
    );
}

/// `/voip/turnServer`: credentials of the caller's own for the configured TURN servers (the
/// TURN REST API, as coturn checks them), `{}` without any.
#[tokio::test]
async fn turn_server_credentials() {
    use base64::Engine as _;
    let server = TestServer::new().await;
    let (_, token) = server.register("alice").await;
    let path = "/_matrix/client/v3/voip/turnServer";
    assert_eq!(server.get(path, &token).await.assert_ok(), json!({}));
    server
        .call(Method::GET, path, None, None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");

    let server = TestServer::with_config(|config| {
        config.voip.turn_uris = vec!["turn:turn.test.example:3478?transport=udp".into()];
        config.voip.turn_shared_secret = Some("shared with coturn".into());
        config.voip.turn_user_lifetime_secs = 3600;
    })
    .await;
    let (alice, token) = server.register("alice").await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let before = now();
    let turn = server.get(path, &token).await.assert_ok();
    let after = now();
    assert_eq!(turn["ttl"], 3600);
    assert_eq!(
        turn["uris"],
        json!(["turn:turn.test.example:3478?transport=udp"])
    );
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, alice);
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (before + 3600..=after + 3600).contains(&expiry),
        "{expiry} not an hour after {before}..{after}"
    );
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        b"shared with coturn",
    );
    let expected = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, username.as_bytes()).as_ref());
    assert_eq!(turn["password"], expected);
}

/// `/join` keeps what the client adds to its member event (a name for this room, say).
#[tokio::test]
async fn join_keeps_custom_member_content() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            &bob_token,
            json!({"reason": "curious", "displayname": "Bobby", "org.example.flag": true}),
        )
        .await
        .assert_ok();
    let member = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{bob}"),
            &bob_token,
        )
        .await
        .assert_ok();
    assert_eq!(
        member,
        json!({"membership": "join", "reason": "curious", "displayname": "Bobby",
               "org.example.flag": true})
    );
}

/// A profile field that is not set is `{}` (the account exists); an unknown account is 404.
#[tokio::test]
async fn unset_profile_fields() {
    let server = TestServer::new().await;
    let (alice, token) = server.register("alice").await;
    assert_eq!(
        server
            .get(
                &format!("/_matrix/client/v3/profile/{alice}/avatar_url"),
                &token
            )
            .await
            .assert_ok(),
        json!({})
    );
    assert_eq!(
        server
            .get(
                &format!("/_matrix/client/v3/profile/{alice}/displayname"),
                &token
            )
            .await
            .assert_ok(),
        json!({"displayname": "alice"})
    );
    server
        .get(
            "/_matrix/client/v3/profile/@nobody:test.example/avatar_url",
            &token,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
}

/// User-interactive authentication: a probe gets the flows and a session; the session serves
/// the operation and the user it was opened for only; a session never opened is refused; the
/// cross-signing upload answers an empty probe with the flows.
#[tokio::test]
async fn interactive_authentication_sessions() {
    let server = TestServer::new().await;
    let (_, token) = server.register("alice").await;
    let (_, bob_token) = server.register("bob").await;
    let devices = server
        .get("/_matrix/client/v3/devices", &token)
        .await
        .assert_ok();
    let device = devices["devices"][0]["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let delete = format!("/_matrix/client/v3/devices/{device}");
    let probe = server
        .call(Method::DELETE, &delete, Some(&token), Some(json!({})))
        .await;
    assert_eq!(probe.status, 401);
    let probe = probe.json();
    assert_eq!(probe["flows"], json!([{"stages": ["m.login.password"]}]));
    assert_eq!(probe["completed"], json!([]));
    let session = probe["session"].as_str().unwrap().to_owned();
    let password = |session: &str, user: &str| {
        json!({"auth": {"type": "m.login.password", "session": session,
            "identifier": {"type": "m.id.user", "user": user}, "password": "secret-pw"}})
    };
    // Not for another operation, nor for another user.
    server
        .post(
            "/_matrix/client/v3/account/deactivate",
            &token,
            password(&session, "alice"),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    let bobs_devices = server
        .get("/_matrix/client/v3/devices", &bob_token)
        .await
        .assert_ok();
    let bobs = bobs_devices["devices"][0]["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .call(
            Method::DELETE,
            &format!("/_matrix/client/v3/devices/{bobs}"),
            Some(&bob_token),
            Some(password(&session, "bob")),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    // A session this server never opened.
    server
        .call(
            Method::DELETE,
            &delete,
            Some(&token),
            Some(password("made-up", "alice")),
        )
        .await
        .assert_error(400, "M_UNKNOWN");
    // The right session and password: done, and the session is gone.
    server
        .call(
            Method::DELETE,
            &delete,
            Some(&token),
            Some(password(&session, "alice")),
        )
        .await
        .assert_ok();
    server
        .get("/_matrix/client/v3/account/whoami", &token)
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");

    // The cross-signing upload: an empty probe gets the flows.
    let probe = server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            &bob_token,
            json!({}),
        )
        .await;
    assert_eq!(probe.status, 401);
    assert_eq!(
        probe.json()["flows"],
        json!([{"stages": ["m.login.password"]}])
    );
    assert!(probe.json()["session"].is_string());
}

/// A left or banned room carries its state in sync (as the user last saw it), not the state
/// that came after.
#[tokio::test]
async fn left_rooms_carry_their_state() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"preset": "public_chat", "name": "Before"}))
        .await;
    server.join(&bob_token, &room).await;
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            &alice,
            json!({"user_id": bob}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            &alice,
            json!({"name": "After"}),
        )
        .await
        .assert_ok();
    // A short timeline: the rest is state.
    let filter = common::query_encode(
        &json!({"room": {"include_leave": true, "timeline": {"limit": 2}}}).to_string(),
    );
    let sync = server.sync(&bob_token, &format!("filter={filter}")).await;
    let left = &sync["rooms"]["leave"][room.as_str()];
    let mut seen: Vec<&serde_json::Value> = left["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(left["timeline"]["events"].as_array().unwrap())
        .collect();
    seen.retain(|e| e["type"] == "m.room.name");
    assert_eq!(seen.len(), 1, "{left}");
    assert_eq!(seen[0]["content"]["name"], "Before");
    assert!(
        left["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create"),
        "{left}"
    );
}

/// Room summaries: member counts, and heroes (the first five joined or invited members in the
/// order they came, never the viewer; without any, those who left).
#[tokio::test]
async fn room_summaries() {
    let server = TestServer::new().await;
    let (alice, alice_token) = server.register("alice").await;
    let mut others = Vec::new();
    for name in ["zed", "yan", "xia", "wim", "vic", "uma"] {
        others.push(server.register(name).await);
    }
    let room = server
        .create_room(&alice_token, json!({"preset": "public_chat"}))
        .await;
    for (_, token) in &others[..5] {
        server.join(token, &room).await;
    }
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &alice_token,
            json!({"user_id": others[5].0}),
        )
        .await
        .assert_ok();
    let sync = server.sync(&others[0].1, "").await;
    let summary = &sync["rooms"]["join"][room.as_str()]["summary"];
    assert_eq!(summary["m.joined_member_count"], 6);
    assert_eq!(summary["m.invited_member_count"], 1);
    // In the order they came: Alice first; the viewer (zed) never.
    let expected: Vec<&str> = [alice.as_str()]
        .into_iter()
        .chain(others[1..5].iter().map(|(id, _)| id.as_str()))
        .collect();
    assert_eq!(summary["m.heroes"], json!(expected));
    // Alone in a room the others left: they are the heroes.
    let quiet = server
        .create_room(&alice_token, json!({"preset": "public_chat"}))
        .await;
    server.join(&others[0].1, &quiet).await;
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{quiet}/leave"),
            &others[0].1,
            json!({}),
        )
        .await
        .assert_ok();
    let sync = server.sync(&alice_token, "").await;
    assert_eq!(
        sync["rooms"]["join"][quiet.as_str()]["summary"]["m.heroes"],
        json!([others[0].0])
    );
}

/// The deprecated `POST /rooms/{roomId}/send/{eventType}` (no transaction id) still sends, as
/// older clients and bots use it; its bad input gets the same errors.
#[tokio::test]
async fn send_without_a_transaction_id() {
    let server = TestServer::new().await;
    let (_, token) = server.register("alice").await;
    let (_, bob_token) = server.register("bob").await;
    let room = server.create_room(&token, json!({})).await;
    for version in ["r0", "v3"] {
        let path = format!("/_matrix/client/{version}/rooms/{room}/send/m.room.message");
        let sent = server
            .post(&path, &token, json!({"msgtype": "m.text", "body": version}))
            .await
            .assert_ok();
        assert!(sent["event_id"].as_str().unwrap().starts_with('$'));
        server
            .post(
                &path,
                &bob_token,
                json!({"msgtype": "m.text", "body": "hi"}),
            )
            .await
            .assert_error(403, "M_FORBIDDEN");
        server
            .raw(
                Method::POST,
                &path,
                Some(&token),
                Some("application/json"),
                b"not json".to_vec(),
            )
            .await
            .assert_error(400, "M_NOT_JSON");
    }
    let messages = server.messages(&token, &room).await;
    assert_eq!(common::bodies(&messages["chunk"]), ["v3", "r0"]);
}
