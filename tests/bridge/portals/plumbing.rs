//! Plumbing: an existing room linked to a MUC by the state event `org.causeway.portal`, and
//! unlinked by it again.

use super::*;

const MUC_GHOST: &str = "@_xmpp_lobby=40prosody.test:gw.test";

async fn set_link(world: &World, token: &str, room: &str, content: serde_json::Value) {
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/org.causeway.portal/"),
            token,
            content,
        )
        .await
        .assert_ok();
}

#[tokio::test]
async fn a_room_is_linked_to_a_muc_and_unlinked() {
    let mut world = world().await;
    let token = world.token().await;
    // A private room of Alice's.
    let room = world
        .server
        .create_room(
            &token,
            json!({ "preset": "private_chat", "name": "Our room" }),
        )
        .await;
    // Linking it to what is no MUC: the address's ghost says so, and goes.
    set_link(
        &world,
        &token,
        &room,
        json!({ "muc": "nothere@prosody.test" }),
    )
    .await;
    answer_disco(
        &world.peer.clone(),
        &mut world.seen,
        "nothere@prosody.test",
        false,
    )
    .await;
    world
        .wait_for(&token, &room, |events| {
            messages(events, "@_xmpp_nothere=40prosody.test:gw.test")
                .into_iter()
                .any(|e| {
                    e["content"]["body"]
                        .as_str()
                        .is_some_and(|b| b.contains("is not a group chat"))
                })
                .then_some(())
        })
        .await;
    // Linked to the lobby: its ghost comes in (invited by Alice), she is an occupant of her
    // own, and the MUC's occupants are ghosts in the room.
    set_link(
        &world,
        &token,
        &room,
        json!({ "muc": "lobby@prosody.test" }),
    )
    .await;
    {
        let World { peer, seen, .. } = &mut world;
        answer_disco(&peer.clone(), seen, "lobby@prosody.test", true).await;
        assert_eq!(join_request(seen, "lobby@prosody.test").await, "alice");
        peer.send(occupant_presence(
            "lobby@prosody.test",
            "Bob",
            "bob@prosody.test/phone",
            false,
        ));
        peer.send(occupant_presence(
            "lobby@prosody.test",
            "alice",
            "alice@gw.test/causeway",
            true,
        ));
    }
    world.wait_member(&token, &room, MUC_GHOST, "join").await;
    world.wait_member(&token, &room, BOB_HERE, "join").await;
    world
        .wait_for(&token, &room, |events| {
            messages(events, MUC_GHOST)
                .into_iter()
                .any(|e| {
                    e["content"]["body"]
                        .as_str()
                        .is_some_and(|b| b.starts_with("Linked to lobby@prosody.test"))
                })
                .then_some(())
        })
        .await;
    // One conversation: the MUC's alias names the room, messages go both ways.
    let alias = world
        .server
        .get(
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                common::encode("#_xmpp_lobby=40prosody.test:gw.test")
            ),
            &token,
        )
        .await
        .assert_ok();
    assert_eq!(alias["room_id"], room.as_str());
    world
        .server
        .send_text(&token, &room, "l1", "hello lobby")
        .await
        .assert_ok();
    let out = next_from_alice(&mut world, MessageType::Groupchat, "lobby@prosody.test").await;
    assert_eq!(body(&out), "hello lobby");
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' id='m1' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><body>hello room</body></message>",
    ));
    world
        .wait_for(&token, &room, |events| {
            (!messages(events, BOB_HERE).is_empty()).then_some(())
        })
        .await;
    // Unlinked: Alice leaves the MUC, the ghosts leave the room.
    set_link(&world, &token, &room, json!({})).await;
    let Stanza::Presence(left) = next_that(&mut world.seen, |s| {
        matches!(s, Stanza::Presence(p) if p.type_ == xmpp_parsers::presence::Type::Unavailable)
            && to_room("lobby@prosody.test")(s)
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(left.to.unwrap().to_string(), "lobby@prosody.test/alice");
    world.wait_member(&token, &room, BOB_HERE, "leave").await;
    world.wait_member(&token, &room, MUC_GHOST, "leave").await;
    // The alias no longer names the room: asked for, it names a new portal.
    let path = format!(
        "/_matrix/client/v3/directory/room/{}",
        common::encode("#_xmpp_lobby=40prosody.test:gw.test")
    );
    let World {
        server, peer, seen, ..
    } = &mut world;
    let peer = peer.clone();
    let (found, ()) = tokio::join!(
        server.get(&path, &token),
        answer_disco(&peer, seen, "lobby@prosody.test", true)
    );
    assert_ne!(found.assert_ok()["room_id"], room.as_str());
}
