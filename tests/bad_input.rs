//! Bad input for every endpoint group: no token, a foreign token, malformed JSON and JSON of the
//! wrong shape each get their precise error, and the server keeps serving afterwards.

mod common;

use common::TestServer;
use http::Method;
use serde_json::{Value, json};

/// `(method, path, a body of the wrong shape)` for endpoints that need an access token and read
/// a JSON body. `{room}`, `{user}` and `{event}` are filled in.
const JSON_ENDPOINTS: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/_matrix/client/v3/createRoom",
        r#"{"invite": "not a list"}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/rooms/{room}/invite",
        r#"{"user_id": 5}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/rooms/{room}/kick",
        r#"{"user_id": ["x"]}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/rooms/{room}/ban",
        r#"{"user_id": {}}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/rooms/{room}/unban",
        r#"{"user_id": true}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/rooms/{room}/leave",
        r#"{"reason": 7}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/rooms/{room}/join",
        r#"{"reason": []}"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/rooms/{room}/send/m.room.message/t1",
        r#"[1, 2]"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/rooms/{room}/state/m.room.name/",
        r#""text""#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/rooms/{room}/redact/{event}/t2",
        r#"{"reason": 1}"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/rooms/{room}/typing/{user}",
        r#"{"typing": "yes"}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/rooms/{room}/read_markers",
        r#"{"m.fully_read": 3}"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/profile/{user}/displayname",
        r#"{"displayname": 3}"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/presence/{user}/status",
        r#"{"presence": "dancing"}"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/user/{user}/account_data/org.example.x",
        r#"[]"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/user/{user}/filter",
        r#"{"room": {"timeline": {"limit": "ten"}}}"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/pushrules/global/room/{room}",
        r#"{"actions": "notify"}"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/devices/DEVICE",
        r#"{"display_name": 1}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/keys/upload",
        r#"{"one_time_keys": []}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/keys/query",
        r#"{"device_keys": []}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/keys/claim",
        r#"{"one_time_keys": 1}"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/sendToDevice/m.x/t3",
        r#"{"messages": []}"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/directory/room/%23alias:test.example",
        r#"{"room_id": 1}"#,
    ),
    (
        "PUT",
        "/_matrix/client/v3/directory/list/room/{room}",
        r#"{"visibility": 1}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/user_directory/search",
        r#"{"search_term": 1}"#,
    ),
    (
        "POST",
        "/_matrix/client/v3/account/password",
        r#"{"new_password": 1}"#,
    ),
];

/// `(method, path)` of endpoints that need an access token and read no body.
const TOKEN_ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/_matrix/client/v3/sync"),
    ("GET", "/_matrix/client/v3/joined_rooms"),
    ("GET", "/_matrix/client/v3/rooms/{room}/messages"),
    ("GET", "/_matrix/client/v3/rooms/{room}/state"),
    ("GET", "/_matrix/client/v3/rooms/{room}/members"),
    ("GET", "/_matrix/client/v3/rooms/{room}/event/{event}"),
    ("GET", "/_matrix/client/v3/rooms/{room}/context/{event}"),
    ("GET", "/_matrix/client/v3/devices"),
    ("GET", "/_matrix/client/v3/pushrules/"),
    ("GET", "/_matrix/client/v3/capabilities"),
    ("GET", "/_matrix/client/v3/account/whoami"),
    ("GET", "/_matrix/client/v1/media/config"),
    ("GET", "/_matrix/client/v1/media/download/test.example/abc"),
    ("GET", "/_matrix/client/v3/keys/changes?from=s0&to=s1"),
    ("GET", "/_matrix/client/v3/presence/{user}/status"),
    ("POST", "/_matrix/media/v3/upload"),
];

struct Fixture {
    server: TestServer,
    token: String,
    user: String,
    room: String,
    event: String,
}

async fn fixture() -> Fixture {
    let server = TestServer::new().await;
    let (user, token) = server.register("tester").await;
    let room = server.create_room(&token, json!({})).await;
    let event = server
        .send_text(&token, &room, "seed", "seed")
        .await
        .assert_ok()["event_id"]
        .as_str()
        .expect("an event id")
        .to_owned();
    Fixture {
        server,
        token,
        user,
        room,
        event,
    }
}

impl Fixture {
    fn path(&self, template: &str) -> String {
        template
            .replace("{room}", &self.room)
            .replace("{user}", &self.user)
            .replace("{event}", &common::encode(&self.event))
    }

    async fn alive(&self) {
        self.server
            .get("/_matrix/client/v3/account/whoami", &self.token)
            .await
            .assert_ok();
    }
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("a method name")
}

#[tokio::test]
async fn every_authenticated_endpoint_refuses_missing_and_unknown_tokens() {
    let fixture = fixture().await;
    let endpoints = JSON_ENDPOINTS
        .iter()
        .map(|(m, p, _)| (*m, *p))
        .chain(TOKEN_ENDPOINTS.iter().copied());
    for (name, template) in endpoints {
        let path = fixture.path(template);
        let missing = fixture
            .server
            .raw(
                method(name),
                &path,
                None,
                Some("application/json"),
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(
            (missing.status.as_u16(), missing.json()["errcode"].clone()),
            (401, json!("M_MISSING_TOKEN")),
            "{name} {path}"
        );
        let unknown = fixture
            .server
            .raw(
                method(name),
                &path,
                Some("forged-token"),
                Some("application/json"),
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(
            (unknown.status.as_u16(), unknown.json()["errcode"].clone()),
            (401, json!("M_UNKNOWN_TOKEN")),
            "{name} {path}"
        );
        // An Authorization header of another scheme is refused as a token, not a crash.
        let malformed = fixture
            .server
            .with_authorization(method(name), &path, "Basic dXNlcjpwdw==")
            .await;
        assert_eq!(
            (
                malformed.status.as_u16(),
                malformed.json()["errcode"].clone()
            ),
            (401, json!("M_UNKNOWN_TOKEN")),
            "{name} {path}"
        );
    }
    fixture.alive().await;
}

#[tokio::test]
async fn every_json_endpoint_refuses_malformed_and_misshapen_bodies() {
    let fixture = fixture().await;
    for (name, template, misshapen) in JSON_ENDPOINTS {
        let path = fixture.path(template);
        let not_json = fixture
            .server
            .raw(
                method(name),
                &path,
                Some(&fixture.token),
                Some("application/json"),
                b"{\"unterminated".to_vec(),
            )
            .await;
        assert_eq!(
            (not_json.status.as_u16(), not_json.json()["errcode"].clone()),
            (400, json!("M_NOT_JSON")),
            "{name} {path}: {}",
            String::from_utf8_lossy(&not_json.body)
        );
        let bad = fixture
            .server
            .raw(
                method(name),
                &path,
                Some(&fixture.token),
                Some("application/json"),
                misshapen.as_bytes().to_vec(),
            )
            .await;
        let errcode = bad.json()["errcode"].clone();
        assert_eq!(bad.status.as_u16(), 400, "{name} {path}: {errcode}");
        assert!(
            errcode == json!("M_BAD_JSON") || errcode == json!("M_INVALID_PARAM"),
            "{name} {path}: {}",
            String::from_utf8_lossy(&bad.body)
        );
    }
    fixture.alive().await;
}

#[tokio::test]
async fn oversize_bodies_are_refused_everywhere() {
    let fixture = fixture().await;
    let huge = format!("{{\"body\": \"{}\"}}", "x".repeat(70 * 1024));
    for (name, template, _) in JSON_ENDPOINTS {
        let path = fixture.path(template);
        let response = fixture
            .server
            .raw(
                method(name),
                &path,
                Some(&fixture.token),
                Some("application/json"),
                huge.clone().into_bytes(),
            )
            .await;
        assert_eq!(
            (response.status.as_u16(), response.json()["errcode"].clone()),
            (413, json!("M_TOO_LARGE")),
            "{name} {path}"
        );
    }
    fixture.alive().await;
}

#[tokio::test]
async fn rooms_of_others_are_out_of_reach() {
    let fixture = fixture().await;
    let (_, stranger) = fixture.server.register("stranger").await;
    let room = &fixture.room;
    let event = common::encode(&fixture.event);
    let forbidden: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::GET,
            format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
            None,
        ),
        (
            Method::GET,
            format!("/_matrix/client/v3/rooms/{room}/state"),
            None,
        ),
        (
            Method::GET,
            format!("/_matrix/client/v3/rooms/{room}/members"),
            None,
        ),
        (
            Method::GET,
            format!("/_matrix/client/v3/rooms/{room}/context/{event}"),
            None,
        ),
        (
            Method::GET,
            format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            None,
        ),
        (
            Method::GET,
            format!("/_matrix/client/v3/rooms/{room}/aliases"),
            None,
        ),
        (
            Method::PUT,
            format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/x"),
            Some(json!({"body": "x"})),
        ),
        (
            Method::PUT,
            format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            Some(json!({"topic": "x"})),
        ),
        (
            Method::PUT,
            format!("/_matrix/client/v3/rooms/{room}/redact/{event}/r"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(json!({"user_id": fixture.user})),
        ),
        (
            Method::POST,
            format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(json!({"user_id": fixture.user})),
        ),
        (
            Method::POST,
            format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"),
            Some(json!({})),
        ),
        (
            Method::PUT,
            format!("/_matrix/client/v3/rooms/{room}/typing/@stranger:test.example"),
            Some(json!({"typing": true, "timeout": 1000})),
        ),
    ];
    for (method, path, body) in forbidden {
        let response = fixture
            .server
            .call(method.clone(), &path, Some(&stranger), body)
            .await;
        assert_eq!(
            (response.status.as_u16(), response.json()["errcode"].clone()),
            (403, json!("M_FORBIDDEN")),
            "{method} {path}: {}",
            String::from_utf8_lossy(&response.body)
        );
    }
    // The event itself is not disclosed either.
    fixture
        .server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{event}"),
            &stranger,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    fixture.alive().await;
}
