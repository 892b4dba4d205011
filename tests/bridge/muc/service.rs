//! The service around the rooms: discovery, archives, administration, moderation, rooms made
//! from XMPP.

use super::*;

#[tokio::test]
async fn the_service_and_its_rooms_are_discoverable() {
    let mut world = world().await;
    let token = world.token().await;
    lobby(&world, &token).await;
    for name in ["alpha", "beta", "gamma"] {
        world
            .server
            .create_room(
                &token,
                json!({"preset": "public_chat", "room_alias_name": name, "visibility": "public"}),
            )
            .await;
    }
    // A room not in the directory is not listed.
    world
        .server
        .create_room(
            &token,
            json!({"preset": "public_chat", "room_alias_name": "unlisted"}),
        )
        .await;
    let ask = |id: &str, to: &str, query: &str| {
        stanza(&format!(
            "<iq xmlns='jabber:server' type='get' id='{id}' from='bob@prosody.test/a' \
             to='{to}'>{query}</iq>"
        ))
    };
    world.peer.send(ask(
        "d1",
        "muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    ));
    let Stanza::Iq(xmpp_parsers::iq::Iq::Result {
        payload: Some(info),
        ..
    }) = from_rooms(&mut world).await
    else {
        panic!("no disco#info");
    };
    let identity = info
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(identity.attr("category"), Some("conference"));
    assert!(
        info.children()
            .any(|f| f.attr("var") == Some("http://jabber.org/protocol/muc"))
    );

    // Two pages of two.
    world.peer.send(ask(
        "d2",
        "muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#items'>\
         <set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set></query>",
    ));
    let page = |stanza: Stanza| -> (Vec<String>, Element) {
        let Stanza::Iq(xmpp_parsers::iq::Iq::Result {
            payload: Some(items),
            ..
        }) = stanza
        else {
            panic!("no disco#items: {stanza:?}");
        };
        let jids = items
            .children()
            .filter(|c| c.name() == "item")
            .map(|c| c.attr("jid").unwrap().to_owned())
            .collect();
        let set = items
            .get_child("set", "http://jabber.org/protocol/rsm")
            .unwrap()
            .clone();
        (jids, set)
    };
    let (first, set) = page(from_rooms(&mut world).await);
    assert_eq!(first, ["alpha@muc.gw.test", "beta@muc.gw.test"]);
    assert_eq!(
        set.get_child("count", "http://jabber.org/protocol/rsm")
            .unwrap()
            .text(),
        "4"
    );
    let last = set
        .get_child("last", "http://jabber.org/protocol/rsm")
        .unwrap()
        .text();
    world.peer.send(ask(
        "d3",
        "muc.gw.test",
        &format!(
            "<query xmlns='http://jabber.org/protocol/disco#items'>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>2</max><after>{last}</after></set></query>"
        ),
    ));
    let (second, _) = page(from_rooms(&mut world).await);
    assert_eq!(second, ["gamma@muc.gw.test", "lobby@muc.gw.test"]);

    // The room's own information.
    world.peer.send(ask(
        "d4",
        "lobby@muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    ));
    let Stanza::Iq(xmpp_parsers::iq::Iq::Result {
        payload: Some(info),
        ..
    }) = from_rooms(&mut world).await
    else {
        panic!("no disco#info of the room");
    };
    let features: Vec<&str> = info
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    for feature in [
        "muc_public",
        "muc_open",
        "muc_nonanonymous",
        "muc_persistent",
        "urn:xmpp:occupant-id:0",
        "urn:xmpp:mam:2",
        "urn:xmpp:message-moderate:1",
    ] {
        assert!(
            features.contains(&feature),
            "{feature} missing: {features:?}"
        );
    }
    let identity = info
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(identity.attr("name"), Some("Lobby"));
    let form = info.get_child("x", "jabber:x:data").unwrap();
    let field = |var: &str| {
        form.children()
            .find(|f| f.attr("var") == Some(var))
            .and_then(|f| f.children().next())
            .map(|v| v.text())
    };
    assert_eq!(
        field("muc#roominfo_description").as_deref(),
        Some("Welcome")
    );
    assert_eq!(field("muc#roominfo_occupants").as_deref(), Some("1"));
    assert_eq!(field("muc#roominfo_avatarhash"), None, "no avatar yet");
    // With an avatar: its SHA-1 in disco, the picture in the room's vCard (XEP-0486).
    let picture = b"the lobby's picture".to_vec();
    let upload = world
        .server
        .raw(
            http::Method::POST,
            "/_matrix/media/v3/upload?filename=lobby.png",
            Some(&token),
            Some("image/png"),
            picture.clone(),
        )
        .await
        .assert_ok();
    let lobby_id = world
        .server
        .get("/_matrix/client/v3/directory/room/%23lobby:gw.test", &token)
        .await
        .assert_ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{lobby_id}/state/m.room.avatar/"),
            &token,
            json!({"url": upload["content_uri"]}),
        )
        .await
        .assert_ok();
    world.peer.send(ask(
        "d4b",
        "lobby@muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    ));
    let Ok(Some(info)) = iq_outcome(&mut world).await else {
        panic!("no disco#info of the room");
    };
    let hash = info
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .find(|f| f.attr("var") == Some("muc#roominfo_avatarhash"))
        .and_then(|f| f.children().next())
        .map(|v| v.text());
    let expected: String = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &picture)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hash, Some(expected));
    world.peer.send(ask(
        "v1",
        "lobby@muc.gw.test",
        "<vCard xmlns='vcard-temp'/>",
    ));
    let Ok(Some(vcard)) = iq_outcome(&mut world).await else {
        panic!("no vCard of the room");
    };
    let binval = vcard
        .get_child("PHOTO", "vcard-temp")
        .and_then(|photo| photo.get_child("BINVAL", "vcard-temp"))
        .map(|b| b.text())
        .unwrap();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(binval.split_whitespace().collect::<String>())
            .unwrap(),
        picture
    );
    // An unknown room, and a malformed page request.
    world.peer.send(ask(
        "d5",
        "nowhere@muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    ));
    let Stanza::Iq(xmpp_parsers::iq::Iq::Error { error, .. }) = from_rooms(&mut world).await else {
        panic!("no error");
    };
    assert_eq!(
        error.defined_condition,
        xmpp_parsers::stanza_error::DefinedCondition::ItemNotFound
    );
    world.peer.send(ask(
        "d6",
        "muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#items'>\
         <set xmlns='http://jabber.org/protocol/rsm'><max>lots</max></set></query>",
    ));
    let Stanza::Iq(xmpp_parsers::iq::Iq::Error { error, .. }) = from_rooms(&mut world).await else {
        panic!("no error");
    };
    assert_eq!(
        error.defined_condition,
        xmpp_parsers::stanza_error::DefinedCondition::BadRequest
    );
}

/// A MAM query of `lobby@muc.gw.test` from `from`: the results it got (body, id) and its `fin`
/// (or the error condition).
async fn archive(
    world: &mut World,
    from: &str,
    id: &str,
    inner: &str,
) -> Result<(Vec<(String, String)>, Element), String> {
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='set' id='{id}' from='{from}' to='lobby@muc.gw.test'>\
         <query xmlns='urn:xmpp:mam:2' queryid='q-{id}'>{inner}</query></iq>"
    )));
    let mut results = Vec::new();
    loop {
        match from_rooms(world).await {
            Stanza::Message(message) => {
                // What happens in the room meanwhile is not a result.
                if !message
                    .payloads
                    .iter()
                    .any(|p| p.is("result", "urn:xmpp:mam:2"))
                {
                    continue;
                }
                let result = payload(&message, "result", "urn:xmpp:mam:2");
                assert_eq!(result.attr("queryid"), Some(format!("q-{id}").as_str()));
                let forwarded = result.get_child("forwarded", "urn:xmpp:forward:0").unwrap();
                assert!(forwarded.get_child("delay", "urn:xmpp:delay").is_some());
                let inner = forwarded.get_child("message", "jabber:client").unwrap();
                assert_eq!(inner.attr("type"), Some("groupchat"));
                let text = inner.get_child("body", "jabber:client").unwrap().text();
                results.push((text, result.attr("id").unwrap().to_owned()));
            }
            Stanza::Iq(xmpp_parsers::iq::Iq::Result {
                payload: Some(fin), ..
            }) => {
                return Ok((results, fin));
            }
            Stanza::Iq(xmpp_parsers::iq::Iq::Error { error, .. }) => {
                return Err(format!("{:?}", error.defined_condition));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn rsm_text(fin: &Element, name: &str) -> Option<String> {
    fin.get_child("set", "http://jabber.org/protocol/rsm")
        .and_then(|set| set.get_child(name, "http://jabber.org/protocol/rsm"))
        .map(Element::text)
}

#[tokio::test]
async fn the_archive_of_a_room_pages_by_id_and_time() {
    let mut world = world().await;
    let token = world.token().await;
    let room = lobby(&world, &token).await;
    let mut events = Vec::new();
    for (n, text) in ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]
        .iter()
        .enumerate()
    {
        let sent = world
            .server
            .send_text(&token, &room, &format!("t{n}"), text)
            .await
            .assert_ok();
        events.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    // Carol has never been in the room: its shared history is not hers to read.
    let (none, fin) = archive(&mut world, "carol@prosody.test/pc", "c1", "")
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(fin.attr("complete"), Some("true"));
    bob_joins_lobby(&mut world).await;
    let page = "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max></set>";
    let (first, fin) = archive(&mut world, "bob@prosody.test/phone", "a1", page)
        .await
        .unwrap();
    let texts =
        |results: &[(String, String)]| results.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&first), ["m1", "m2", "m3"]);
    assert_eq!(
        first[0].1, events[0],
        "the result id is the event (the stanza id)"
    );
    assert_ne!(fin.attr("complete"), Some("true"), "more to come: {fin:?}");
    assert_eq!(rsm_text(&fin, "last"), Some(events[2].clone()));
    let next = format!(
        "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max><after>{}</after></set>",
        events[2]
    );
    let (second, _) = archive(&mut world, "bob@prosody.test/phone", "a2", &next)
        .await
        .unwrap();
    assert_eq!(texts(&second), ["m4", "m5", "m6"]);
    let last = format!(
        "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max><after>{}</after></set>",
        events[5]
    );
    let (third, fin) = archive(&mut world, "bob@prosody.test/phone", "a3", &last)
        .await
        .unwrap();
    assert_eq!(texts(&third), ["m7"]);
    assert_eq!(fin.attr("complete"), Some("true"));
    // The last page, and the page before a message.
    let (newest, _) = archive(
        &mut world,
        "bob@prosody.test/phone",
        "a4",
        "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set>",
    )
    .await
    .unwrap();
    assert_eq!(texts(&newest), ["m6", "m7"]);
    let before = format!(
        "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before>{}</before></set>",
        events[5]
    );
    let (earlier, _) = archive(&mut world, "bob@prosody.test/phone", "a5", &before)
        .await
        .unwrap();
    assert_eq!(texts(&earlier), ["m4", "m5"]);
    // By ids, and from a time on.
    let form = |fields: &str| {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>urn:xmpp:mam:2</value></field>{fields}</x>"
        )
    };
    let (picked, _) = archive(
        &mut world,
        "bob@prosody.test/phone",
        "a6",
        &form(&format!(
            "<field var='ids'><value>{}</value><value>{}</value></field>",
            events[1], events[4]
        )),
    )
    .await
    .unwrap();
    assert_eq!(texts(&picked), ["m2", "m5"]);
    let future = form("<field var='start'><value>2999-01-01T00:00:00Z</value></field>");
    let (nothing, fin) = archive(&mut world, "bob@prosody.test/phone", "a7", &future)
        .await
        .unwrap();
    assert!(nothing.is_empty());
    assert_eq!(fin.attr("complete"), Some("true"));
    let past = form("<field var='start'><value>2000-01-01T00:00:00Z</value></field>");
    let (all, _) = archive(&mut world, "bob@prosody.test/phone", "a8", &past)
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    // What cannot be answered gets its error.
    for (inner, condition) in [
        (
            "<set xmlns='http://jabber.org/protocol/rsm'><after>$nothing</after></set>".to_owned(),
            "ItemNotFound",
        ),
        (
            form("<field var='start'><value>yesterday</value></field>"),
            "BadRequest",
        ),
        (
            form("<field var='with'><value>bob@prosody.test</value></field>"),
            "FeatureNotImplemented",
        ),
        (
            form("<field var='colour'><value>red</value></field>"),
            "BadRequest",
        ),
    ] {
        let error = archive(&mut world, "bob@prosody.test/phone", "bad", &inner)
            .await
            .unwrap_err();
        assert_eq!(error, condition, "{inner}");
    }
    // A redacted message is not in the archive.
    world.redact(&token, &room, &events[0], "r1").await;
    let (after_redaction, _) = archive(&mut world, "bob@prosody.test/phone", "a9", page)
        .await
        .unwrap();
    assert_eq!(texts(&after_redaction), ["m2", "m3", "m4"]);
}

#[tokio::test]
async fn users_of_allowed_domains_make_rooms_by_joining() {
    let mut world = world_with(|config| {
        config.xmpp.muc_create_domains = vec!["prosody.test".into()];
    })
    .await;
    let token = world.token().await;
    // other.test may not.
    world
        .peer
        .send(join("dave@other.test/x", "theirs@muc.gw.test/Dave", ""));
    let refused = next_room_presence(&mut world).await;
    assert_eq!(condition(&refused.payloads), "item-not-found");
    // Bob's join makes the room: he is told with 201, and owns it.
    world
        .peer
        .send(join("bob@prosody.test/phone", "made@muc.gw.test/Bob", ""));
    let me = next_room_presence(&mut world).await;
    let mut codes = statuses(&me);
    codes.sort();
    assert_eq!(codes, ["100", "110", "170", "201"]);
    assert_eq!(item(&me).attr("affiliation"), Some("owner"));
    let subject = next_room_message(&mut world).await;
    assert!(!subject.subjects.is_empty());
    let found = world
        .server
        .get("/_matrix/client/v3/directory/room/%23made:gw.test", &token)
        .await
        .assert_ok();
    let room = found["room_id"].as_str().unwrap().to_owned();
    // He reads the configuration form and names the room; a malformed form is refused.
    let owner = |id: &str, kind: &str, inner: &str| {
        stanza(&format!(
            "<iq xmlns='jabber:server' type='{kind}' id='{id}' from='bob@prosody.test/phone' \
             to='made@muc.gw.test'><query xmlns='http://jabber.org/protocol/muc#owner'>{inner}</query></iq>"
        ))
    };
    world.peer.send(owner("o1", "get", ""));
    let Stanza::Iq(xmpp_parsers::iq::Iq::Result {
        payload: Some(form),
        ..
    }) = from_rooms(&mut world).await
    else {
        panic!("no configuration form");
    };
    let vars: Vec<&str> = form
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert!(vars.contains(&"muc#roomconfig_roomname"), "{vars:?}");
    world.peer.send(owner(
        "o2",
        "set",
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
         <field var='muc#roomconfig_roomname'><value>Made on XMPP</value></field>\
         <field var='muc#roomconfig_publicroom'><value>1</value></field></x>",
    ));
    let answer = loop {
        if let Stanza::Iq(iq) = from_rooms(&mut world).await {
            break iq;
        }
    };
    assert!(
        matches!(answer, xmpp_parsers::iq::Iq::Result { .. }),
        "{answer:?}"
    );
    world.peer.send(owner(
        "o3",
        "set",
        "<x xmlns='jabber:x:data' type='nonsense'/>",
    ));
    let answer = loop {
        if let Stanza::Iq(iq) = from_rooms(&mut world).await {
            break iq;
        }
    };
    assert!(
        matches!(answer, xmpp_parsers::iq::Iq::Error { .. }),
        "{answer:?}"
    );
    // Listed in the directory now, under its new name.
    let directory = world
        .server
        .get("/_matrix/client/v3/publicRooms", &token)
        .await
        .assert_ok();
    let listed = directory["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == room.as_str())
        .cloned()
        .expect("the room in the directory");
    assert_eq!(listed["name"], "Made on XMPP");
}
