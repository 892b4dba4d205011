//! Presence in rooms as MUCs: members' Matrix presence is their occupants' show and status,
//! told again when it changes; an occupant's show and status are their ghost's presence.

use super::*;

const BOB_GHOST: &str = "@_xmpp_bob=40prosody.test:gw.test";

#[tokio::test]
async fn presence_of_members_and_occupants_goes_both_ways() {
    let mut world = world().await;
    let token = world.token().await;
    lobby(&world, &token).await;
    world.alice_is(&token, "unavailable", "lunch").await;
    // Bob joins busy: he gets Alice away at lunch, then himself.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' from='bob@prosody.test/phone' \
         to='lobby@muc.gw.test/Bob'><x xmlns='http://jabber.org/protocol/muc'>\
         <history maxstanzas='0'/></x><show>dnd</show><status>busy</status></presence>",
    ));
    let alice = next_room_presence(&mut world).await;
    assert_eq!(
        alice.from.as_ref().unwrap().to_string(),
        "lobby@muc.gw.test/alice"
    );
    assert_eq!(
        show_and_status(&alice),
        (Some("away".to_owned()), Some("lunch".to_owned()))
    );
    next_room_presence(&mut world).await;
    // His show and status are his ghost's presence in Matrix.
    for _ in 0..100 {
        if world.ghost_presence(&token, BOB_GHOST).await["presence"] == "unavailable" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ghost = world.ghost_presence(&token, BOB_GHOST).await;
    assert_eq!(
        (&ghost["presence"], &ghost["status_msg"]),
        (&json!("unavailable"), &json!("busy"))
    );
    // Alice is back: Bob is told, on her occupant.
    world.alice_is(&token, "online", "back").await;
    let back = loop {
        let presence = next_room_presence(&mut world).await;
        if presence.from.as_ref().unwrap().to_string() == "lobby@muc.gw.test/alice" {
            break presence;
        }
    };
    assert_eq!(show_and_status(&back), (None, Some("back".to_owned())));
    assert_eq!(item(&back).attr("affiliation"), Some("owner"));
    // Bob is free again: his own presence in the room says so (110), and his ghost is online.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' from='bob@prosody.test/phone' \
         to='lobby@muc.gw.test/Bob'/>",
    ));
    let own = loop {
        let presence = next_room_presence(&mut world).await;
        if presence.from.as_ref().unwrap().to_string() == "lobby@muc.gw.test/Bob" {
            break presence;
        }
    };
    assert_eq!(show_and_status(&own), (None, None));
    assert!(statuses(&own).contains(&"110".to_owned()), "{own:?}");
    assert_eq!(
        world.ghost_presence(&token, BOB_GHOST).await["presence"],
        "online"
    );
    // Bob leaves, and is in no other room: his ghost is offline (as stored: Alice shares no
    // room with it any more, so she may not ask).
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='unavailable' from='bob@prosody.test/phone' \
         to='lobby@muc.gw.test/Bob'/>",
    ));
    let store = &world.server.services.store;
    for _ in 0..100 {
        let stored = store.presence(BOB_GHOST).await.unwrap();
        if stored.as_ref().is_some_and(|p| p.state == "offline") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("Bob's ghost stayed {:?}", store.presence(BOB_GHOST).await);
}
