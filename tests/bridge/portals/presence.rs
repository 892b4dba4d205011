//! Presence in portals: a member's Matrix presence is their occupant's show and status in
//! the MUC (on joining, on every change, on a nickname change); an occupant's show and status
//! are their ghost's Matrix presence, offline once they have left.

use super::relations::new_nick;
use super::*;

/// Waits until a ghost's stored presence is `state`; its status message then.
async fn ghost_becomes(world: &World, ghost: &str, state: &str) -> Option<String> {
    let store = &world.server.services.store;
    for _ in 0..100 {
        if let Some(record) = store.presence(ghost).await.unwrap()
            && record.state == state
        {
            return record.status_msg;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{ghost} stayed {:?}", store.presence(ghost).await);
}

#[tokio::test]
async fn presence_in_portals_goes_both_ways() {
    let mut world = world().await;
    let token = world.token().await;
    world.alice_is(&token, "unavailable", "lunch").await;
    // Alice joins away at lunch, and her join says so; Bob is there, busy.
    let World {
        server, peer, seen, ..
    } = &mut world;
    let peer = peer.clone();
    let play = async {
        answer_disco(&peer, seen, "lobby@prosody.test", true).await;
        let join = join_presence(seen, "lobby@prosody.test").await;
        peer.send(stanza(
            "<presence xmlns='jabber:server' from='lobby@prosody.test/Bob' \
             to='alice@gw.test/causeway'><show>dnd</show><status>busy</status>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant'/></x></presence>",
        ));
        peer.send(occupant_presence(
            "lobby@prosody.test",
            "alice",
            "alice@gw.test/causeway",
            true,
        ));
        join
    };
    let path = join_path("#_xmpp_lobby=40prosody.test:gw.test");
    let (joined, join) = tokio::join!(server.post(&path, &token, json!({})), play);
    let room = joined.assert_ok()["room_id"].as_str().unwrap().to_owned();
    assert_eq!(
        show_and_status(&join),
        (Some("away".to_owned()), Some("lunch".to_owned()))
    );
    // Bob's show and status are his ghost's presence.
    assert_eq!(
        ghost_becomes(&world, BOB_HERE, "unavailable")
            .await
            .as_deref(),
        Some("busy")
    );
    // Alice sees it as his Matrix presence.
    let bob = world.ghost_presence(&token, BOB_HERE).await;
    assert_eq!(
        (&bob["presence"], &bob["status_msg"]),
        (&json!("unavailable"), &json!("busy"))
    );

    // Alice is back: the MUC is told, by a presence update (no MUC `<x>`, no new join).
    world.alice_is(&token, "online", "back").await;
    let back = presence_to(&mut world.seen, "lobby@prosody.test").await;
    assert_eq!(
        (
            back.from.as_ref().unwrap().to_string(),
            back.to.as_ref().unwrap().to_string(),
            back.type_.clone(),
        ),
        (
            "alice@gw.test/causeway".to_owned(),
            "lobby@prosody.test/alice".to_owned(),
            xmpp_parsers::presence::Type::None,
        )
    );
    assert_eq!(show_and_status(&back), (None, Some("back".to_owned())));
    assert!(
        !back
            .payloads
            .iter()
            .any(|p| p.is("x", "http://jabber.org/protocol/muc")),
        "an update is no join: {back:?}"
    );
    // The same presence again is not told again: the next presence to the MUC is the
    // nickname change, which keeps her status.
    world.alice_is(&token, "online", "back").await;
    let renamed = new_nick(&mut world, &token, &room, "Alicia").await;
    assert_eq!(
        renamed.to.as_ref().unwrap().to_string(),
        "lobby@prosody.test/Alicia"
    );
    assert_eq!(show_and_status(&renamed), (None, Some("back".to_owned())));
    // Offline on Matrix, she stays in the MUC, extended away.
    world.alice_is(&token, "offline", "").await;
    let gone = presence_to(&mut world.seen, "lobby@prosody.test").await;
    assert_eq!(gone.type_, xmpp_parsers::presence::Type::None);
    assert_eq!(show_and_status(&gone), (Some("xa".to_owned()), None));

    // Bob is free, then leaves: his ghost is online, then offline.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><status>free</status>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='participant'/></x></presence>",
    ));
    assert_eq!(
        ghost_becomes(&world, BOB_HERE, "online").await.as_deref(),
        Some("free")
    );
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='unavailable' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='none'/></x></presence>",
    ));
    assert_eq!(ghost_becomes(&world, BOB_HERE, "offline").await, None);
    world.wait_member(&token, &room, BOB_HERE, "leave").await;
}
