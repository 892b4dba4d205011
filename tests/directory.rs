//! Room aliases and the public room directory.

mod common;

use common::{TestServer, encode};
use http::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn aliases_and_the_directory() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"room_alias_name": "Lobby", "visibility": "public", "name": "The Lobby", "topic": "hi"}))
        .await;
    let alias = encode("#Lobby:test.example");
    let resolved = server
        .call(
            Method::GET,
            &format!("/_matrix/client/v3/directory/room/{alias}"),
            None,
            None,
        )
        .await
        .assert_ok();
    assert_eq!(resolved["room_id"], room);
    server
        .create_room_expect_error(
            &alice,
            json!({"room_alias_name": "Lobby"}),
            400,
            "M_ROOM_IN_USE",
        )
        .await;
    // Join by alias, add a second alias, list, delete.
    server
        .post(&format!("/_matrix/client/v3/join/{alias}"), &bob, json!({}))
        .await
        .assert_ok();
    server
        .put(
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                encode("#second:test.example")
            ),
            &alice,
            json!({"room_id": room}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                encode("#second:test.example")
            ),
            &alice,
            json!({"room_id": room}),
        )
        .await
        .assert_error(400, "M_ROOM_IN_USE");
    let aliases = server
        .get(&format!("/_matrix/client/v3/rooms/{room}/aliases"), &alice)
        .await
        .assert_ok();
    assert_eq!(
        aliases["aliases"],
        json!(["#Lobby:test.example", "#second:test.example"])
    );
    server
        .call(
            Method::DELETE,
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                encode("#second:test.example")
            ),
            Some(&bob),
            None,
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .call(
            Method::DELETE,
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                encode("#second:test.example")
            ),
            Some(&alice),
            None,
        )
        .await
        .assert_ok();
    server
        .call(
            Method::GET,
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                encode("#second:test.example")
            ),
            None,
            None,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .post(
            &format!(
                "/_matrix/client/v3/join/{}",
                encode("#missing:test.example")
            ),
            &bob,
            json!({}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");

    // The public directory lists the room with its name and member count.
    let public = server
        .call(Method::GET, "/_matrix/client/v3/publicRooms", None, None)
        .await
        .assert_ok();
    assert_eq!(public["chunk"][0]["room_id"], room);
    assert_eq!(public["chunk"][0]["name"], "The Lobby");
    assert_eq!(public["chunk"][0]["num_joined_members"], 2);
    let searched = server
        .post(
            "/_matrix/client/v3/publicRooms",
            &bob,
            json!({"filter": {"generic_search_term": "nothing-like-it"}}),
        )
        .await
        .assert_ok();
    assert_eq!(searched["chunk"], json!([]));
    server
        .put(
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            &bob,
            json!({"visibility": "private"}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .put(
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            &alice,
            json!({"visibility": "private"}),
        )
        .await
        .assert_ok();
    let visibility = server
        .call(
            Method::GET,
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            None,
            None,
        )
        .await
        .assert_ok();
    assert_eq!(visibility["visibility"], "private");
}

trait CreateRoomError {
    async fn create_room_expect_error(&self, token: &str, body: Value, status: u16, errcode: &str);
}

impl CreateRoomError for TestServer {
    async fn create_room_expect_error(&self, token: &str, body: Value, status: u16, errcode: &str) {
        self.post("/_matrix/client/v3/createRoom", token, body)
            .await
            .assert_error(status, errcode);
    }
}
