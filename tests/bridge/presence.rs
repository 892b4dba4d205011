//! Presence and subscriptions.

use std::time::Duration;

use serde_json::{Value, json};

use crate::world::*;

#[tokio::test]
async fn presence_and_subscriptions() {
    use xmpp_parsers::presence::{Show, Type};
    let mut world = world().await;
    let token = world.token().await;
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='subscribe' from='bob@prosody.test' \
         to='alice@gw.test'/>",
    ));
    let room = world.invited_room(&token).await;
    world.server.join(&token, &room).await;
    let request = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| e["content"]["msgtype"] == "m.notice")
                .cloned()
        })
        .await;
    assert_eq!(request["sender"], BOB);
    assert_eq!(
        request["content"]["body"],
        "bob@prosody.test asks to see when you are online. \
         React with 👍 to allow it or with 👎 to decline."
    );
    // Joining the chat asked for Bob's presence.
    let presences = world
        .presences_until(|found| found.iter().any(|p| p.type_ == Type::Subscribe))
        .await;
    assert!(
        presences.iter().any(|p| p.type_ == Type::Subscribe
            && p.from.as_ref().unwrap().to_string() == "alice@gw.test"
            && p.to.as_ref().unwrap().to_string() == "bob@prosody.test"),
        "{presences:?}"
    );
    // The same request again makes no second notice.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='subscribe' from='bob@prosody.test' \
         to='alice@gw.test'/>",
    ));
    assert!(world.presences(Duration::from_millis(300)).await.is_empty());
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/r1"),
            &token,
            json!({"m.relates_to": {"rel_type": "m.annotation",
                   "event_id": request["event_id"], "key": "👍"}}),
        )
        .await
        .assert_ok();
    let presences = world.presences_until(|found| found.len() >= 2).await;
    let kinds: Vec<Type> = presences.iter().map(|p| p.type_.clone()).collect();
    // Allowed once, and Bob learns her presence (online: her client syncs).
    assert_eq!(kinds, [Type::Subscribed, Type::None], "{presences:?}");
    let answered = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| {
                    e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                        && e["content"]["m.relates_to"]["event_id"] == request["event_id"]
                })
                .cloned()
        })
        .await;
    assert_eq!(
        answered["content"]["m.new_content"]["body"],
        "bob@prosody.test now sees when you are online."
    );
    let notices = world
        .wait_for(&token, &room, |events| Some(events.to_vec()))
        .await
        .into_iter()
        .filter(|e| e["content"]["msgtype"] == "m.notice" && e["content"]["m.relates_to"].is_null())
        .count();
    assert_eq!(notices, 1, "one request, one notice");

    // Bob accepts Alice's request and is away on his phone, online on his laptop. (An
    // approval nobody asked for would be ignored: Alice asked when she joined.)
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='subscribed' from='bob@prosody.test' \
         to='alice@gw.test'/>",
    ));
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' from='bob@prosody.test/phone' to='alice@gw.test'>\
         <show>away</show><status>lunch</status></presence>",
    ));
    let mut presence = Value::Null;
    for _ in 0..100 {
        presence = world.ghost_presence(&token, BOB).await;
        if presence["presence"] == "unavailable" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(presence["presence"], "unavailable", "{presence}");
    assert_eq!(presence["status_msg"], "lunch");
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' from='bob@prosody.test/laptop' to='alice@gw.test'/>",
    ));
    for _ in 0..100 {
        presence = world.ghost_presence(&token, BOB).await;
        if presence["presence"] == "online" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        presence["presence"], "online",
        "the most available resource counts"
    );
    for resource in ["phone", "laptop"] {
        world.peer.send(stanza(&format!(
            "<presence xmlns='jabber:server' type='unavailable' from='bob@prosody.test/{resource}' \
             to='alice@gw.test'/>"
        )));
    }
    for _ in 0..100 {
        presence = world.ghost_presence(&token, BOB).await;
        if presence["presence"] == "offline" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(presence["presence"], "offline");

    // Alice's presence reaches Bob, who may see it.
    world
        .server
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", world.alice),
            &token,
            json!({"presence": "unavailable", "status_msg": "in a meeting"}),
        )
        .await
        .assert_ok();
    let presences = world
        .presences_until(|found| found.iter().any(|p| p.type_ == Type::None))
        .await;
    let away = presences
        .iter()
        .find(|p| p.type_ == Type::None)
        .unwrap_or_else(|| panic!("{presences:?}"));
    assert_eq!(away.show, Some(Show::Away));
    assert_eq!(
        away.statuses.values().next().map(String::as_str),
        Some("in a meeting")
    );
    // A probe gets her presence; Bob's unsubscribe is confirmed, and he hears no more.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='probe' from='bob@prosody.test' to='alice@gw.test'/>",
    ));
    let presences = world
        .presences_until(|found| found.iter().any(|p| p.show == Some(Show::Away)))
        .await;
    assert!(
        presences.iter().any(|p| p.show == Some(Show::Away)),
        "{presences:?}"
    );
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='unsubscribe' from='bob@prosody.test' \
         to='alice@gw.test'/>",
    ));
    let presences = world
        .presences_until(|found| found.iter().any(|p| p.type_ == Type::Unsubscribed))
        .await;
    assert!(
        presences.iter().any(|p| p.type_ == Type::Unsubscribed),
        "{presences:?}"
    );
    world
        .server
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", world.alice),
            &token,
            json!({"presence": "online"}),
        )
        .await
        .assert_ok();
    let presences = world.presences(Duration::from_millis(500)).await;
    assert!(presences.is_empty(), "{presences:?}");
}
