//! Occupants with power administer the room: kicks, bans, roles and moderation from XMPP.

use super::*;

/// A `muc#admin` request from `from`; its answer (the payload of a result, or the condition).
async fn admin(
    world: &mut World,
    from: &str,
    kind: &str,
    items: &str,
) -> Result<Option<Element>, String> {
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='{kind}' id='adm' from='{from}' to='lobby@muc.gw.test'>\
         <query xmlns='http://jabber.org/protocol/muc#admin'>{items}</query></iq>"
    )));
    iq_outcome(world).await
}

#[tokio::test]
async fn occupants_with_power_administer_the_room() {
    let mut world = world().await;
    let token = world.token().await;
    let room = lobby(&world, &token).await;
    for (from, nick) in [
        ("bob@prosody.test/phone", "Bob"),
        ("carol@prosody.test/pc", "Carol"),
    ] {
        world.peer.send(join(
            from,
            &format!("lobby@muc.gw.test/{nick}"),
            "<history maxstanzas='0'/>",
        ));
        world
            .wait_member(
                &token,
                &room,
                if nick == "Bob" { BOB } else { CAROL },
                "join",
            )
            .await;
    }
    // Carol has no power: she may not kick Bob, nor ban Alice.
    assert_eq!(
        admin(
            &mut world,
            "carol@prosody.test/pc",
            "set",
            "<item nick='Bob' role='none'/>"
        )
        .await,
        Err("Forbidden".into())
    );
    assert_eq!(
        admin(
            &mut world,
            "carol@prosody.test/pc",
            "set",
            "<item jid='alice@gw.test' affiliation='outcast'/>"
        )
        .await,
        Err("Forbidden".into())
    );
    // Someone who is not in the room, nor an occupant at all, gets nothing done.
    assert_eq!(
        admin(
            &mut world,
            "dave@prosody.test/x",
            "set",
            "<item nick='Bob' role='none'/>"
        )
        .await,
        Err("Forbidden".into())
    );
    assert_eq!(
        admin(
            &mut world,
            "bob@prosody.test/phone",
            "set",
            "<item nick='Nobody' role='none'/>"
        )
        .await,
        Err("ItemNotFound".into())
    );
    assert_eq!(
        admin(
            &mut world,
            "bob@prosody.test/phone",
            "set",
            "<item nick='Carol' role='king'/>"
        )
        .await,
        Err("BadRequest".into())
    );
    // Alice makes Bob a moderator in Matrix: the occupants see his new role.
    let mut levels = world
        .server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &token,
        )
        .await
        .assert_ok();
    levels["users"][BOB] = json!(50);
    levels["events"]["m.room.power_levels"] = json!(50);
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &token,
            levels,
        )
        .await
        .assert_ok();
    let promoted = loop {
        let presence = next_room_presence(&mut world).await;
        if presence.from.as_ref().unwrap().to_string() == "lobby@muc.gw.test/Bob"
            && presence.to.as_ref().unwrap().to_string() == "carol@prosody.test/pc"
        {
            break presence;
        }
    };
    assert_eq!(item(&promoted).attr("role"), Some("moderator"));
    assert_eq!(item(&promoted).attr("affiliation"), Some("admin"));
    // A moderator may not ban the owner.
    assert_eq!(
        admin(
            &mut world,
            "bob@prosody.test/phone",
            "set",
            "<item jid='alice@gw.test' affiliation='outcast'/>"
        )
        .await,
        Err("NotAllowed".into())
    );
    // Bob lists the owners, makes Carol a visitor, then kicks her.
    let owners = admin(
        &mut world,
        "bob@prosody.test/phone",
        "get",
        "<item affiliation='owner'/>",
    )
    .await
    .unwrap()
    .unwrap();
    let jids: Vec<&str> = owners.children().filter_map(|i| i.attr("jid")).collect();
    assert_eq!(jids, ["alice@gw.test"]);
    admin(
        &mut world,
        "bob@prosody.test/phone",
        "set",
        "<item nick='Carol' role='visitor'/>",
    )
    .await
    .unwrap();
    world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .any(|e| e["type"] == "m.room.power_levels" && e["content"]["users"][CAROL] == -1)
                .then_some(())
        })
        .await;
    admin(
        &mut world,
        "bob@prosody.test/phone",
        "set",
        "<item nick='Carol' role='none'><reason>too loud</reason></item>",
    )
    .await
    .unwrap();
    let kicked = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| e["state_key"] == CAROL && e["content"]["membership"] == "leave")
                .cloned()
        })
        .await;
    assert_eq!(kicked["sender"], BOB);
    assert_eq!(kicked["content"]["reason"], "too loud");
    // Then bans her by her JID, and she is on the outcast list.
    admin(
        &mut world,
        "bob@prosody.test/phone",
        "set",
        "<item jid='carol@prosody.test' affiliation='outcast'/>",
    )
    .await
    .unwrap();
    world.wait_member(&token, &room, CAROL, "ban").await;
    let outcasts = admin(
        &mut world,
        "bob@prosody.test/phone",
        "get",
        "<item affiliation='outcast'/>",
    )
    .await
    .unwrap()
    .unwrap();
    let jids: Vec<&str> = outcasts.children().filter_map(|i| i.attr("jid")).collect();
    assert_eq!(jids, ["carol@prosody.test"]);
    // And lets her back: no longer banned.
    admin(
        &mut world,
        "bob@prosody.test/phone",
        "set",
        "<item jid='carol@prosody.test' affiliation='none'/>",
    )
    .await
    .unwrap();
    world.wait_member(&token, &room, CAROL, "leave").await;
}

#[tokio::test]
async fn moderators_retract_messages() {
    let mut world = world().await;
    let token = world.token().await;
    let room = lobby(&world, &token).await;
    for (from, nick, user) in [
        ("bob@prosody.test/phone", "Bob", BOB),
        ("carol@prosody.test/pc", "Carol", CAROL),
    ] {
        world.peer.send(join(
            from,
            &format!("lobby@muc.gw.test/{nick}"),
            "<history maxstanzas='0'/>",
        ));
        world.wait_member(&token, &room, user, "join").await;
    }
    let sent = world
        .server
        .send_text(&token, &room, "a1", "a message of Alice")
        .await
        .assert_ok();
    let alices = sent["event_id"].as_str().unwrap().to_owned();
    world.peer.send(groupchat(
        "carol@prosody.test/pc",
        "lobby@muc.gw.test",
        "c1",
        "<body>spam</body>",
    ));
    let carols = world
        .wait_for(&token, &room, |events| {
            messages(events, CAROL)
                .first()
                .map(|e| e["event_id"].as_str().unwrap().to_owned())
        })
        .await;
    let moderate = |id: &str, from: &str, target: &str| {
        stanza(&format!(
            "<iq xmlns='jabber:server' type='set' id='{id}' from='{from}' to='lobby@muc.gw.test'>\
             <moderate xmlns='urn:xmpp:message-moderate:1' id='{target}'>\
             <retract xmlns='urn:xmpp:message-retract:1'/><reason>off topic</reason></moderate></iq>"
        ))
    };
    // Bob has no power to moderate Alice's (nor Carol's) message.
    world
        .peer
        .send(moderate("m1", "bob@prosody.test/phone", &alices));
    assert_eq!(iq_outcome(&mut world).await, Err("Forbidden".into()));
    world
        .peer
        .send(moderate("m2", "bob@prosody.test/phone", "$nothing"));
    assert_eq!(iq_outcome(&mut world).await, Err("ItemNotFound".into()));
    // Made a moderator, he retracts Carol's: a redaction of his ghost, and the occupants get
    // the room's moderation notice.
    let mut levels = world
        .server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &token,
        )
        .await
        .assert_ok();
    levels["users"][BOB] = json!(50);
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &token,
            levels,
        )
        .await
        .assert_ok();
    world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .any(|e| e["type"] == "m.room.power_levels" && e["content"]["users"][BOB] == 50)
                .then_some(())
        })
        .await;
    world
        .peer
        .send(moderate("m3", "bob@prosody.test/phone", &carols));
    assert_eq!(iq_outcome(&mut world).await, Ok(None));
    let redaction = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| e["type"] == "m.room.redaction")
                .cloned()
        })
        .await;
    assert_eq!(redaction["sender"], BOB);
    assert_eq!(redaction["content"]["reason"], "off topic");
    let notice = loop {
        let message = next_room_message(&mut world).await;
        if message
            .payloads
            .iter()
            .any(|p| p.is("retract", "urn:xmpp:message-retract:1"))
        {
            break message;
        }
    };
    assert_eq!(
        notice.from.as_ref().unwrap().to_string(),
        "lobby@muc.gw.test"
    );
    let retract = payload(&notice, "retract", "urn:xmpp:message-retract:1");
    assert_eq!(retract.attr("id"), Some(carols.as_str()));
    let moderated = retract
        .get_child("moderated", "urn:xmpp:message-moderate:1")
        .unwrap();
    assert_eq!(moderated.attr("by"), Some("lobby@muc.gw.test/Bob"));
}
