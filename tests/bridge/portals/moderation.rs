//! Power in portals both ways: affiliations and roles as power levels, the MUC's kicks and
//! bans as the MUC ghost's, a member's kicks and bans as their requests to the MUC (undone
//! when it says no); and MUC invitations as invitations to portals.

use serde_json::Value;

use super::*;

const CAROL_HERE: &str = "@_xmpp_lobby=40prosody.test/=43arol:gw.test";
const DAVE_HERE: &str = "@_xmpp_lobby=40prosody.test/=44ave:gw.test";
const MUC_GHOST: &str = "@_xmpp_lobby=40prosody.test:gw.test";

fn presence_of(nick: &str, item: &str, statuses: &str, unavailable: bool) -> Stanza {
    let kind = if unavailable {
        " type='unavailable'"
    } else {
        ""
    };
    stanza(&format!(
        "<presence xmlns='jabber:server'{kind} from='lobby@prosody.test/{nick}' \
         to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
         {item}{statuses}</x></presence>"
    ))
}

/// Carol, a participant whose JID the room shows, and Dave, one whose JID it does not.
fn carol_and_dave() -> Vec<Stanza> {
    vec![
        presence_of(
            "Carol",
            "<item affiliation='none' role='participant' jid='carol@prosody.test/pc'/>",
            "",
            false,
        ),
        presence_of(
            "Dave",
            "<item affiliation='none' role='participant'/>",
            "",
            false,
        ),
    ]
}

/// The portal's power levels once `check` accepts them.
async fn power_levels(
    world: &World,
    token: &str,
    room: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..100 {
        let levels = world
            .server
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
                token,
            )
            .await
            .assert_ok();
        if check(&levels) {
            return levels;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the power levels never became what was expected");
}

/// The next muc#admin request the peer gets: its id, sender and item.
async fn admin_request(world: &mut World) -> (String, String, minidom::Element) {
    let Stanza::Iq(Iq::Set {
        id, from, payload, ..
    }) = next_that(&mut world.seen, |s| {
        matches!(s, Stanza::Iq(Iq::Set { payload, .. })
            if payload.is("query", "http://jabber.org/protocol/muc#admin"))
            && to_room("lobby@prosody.test")(s)
    })
    .await
    else {
        unreachable!()
    };
    let item = payload.children().next().expect("an item").clone();
    (id, from.unwrap().to_string(), item)
}

/// The notice of the MUC's ghost that says `text`.
async fn muc_notice(world: &World, token: &str, room: &str, text: &str) -> Value {
    world
        .wait_for(token, room, |events| {
            messages(events, MUC_GHOST)
                .into_iter()
                .find(|e| {
                    e["content"]["body"]
                        .as_str()
                        .is_some_and(|body| body.contains(text))
                })
                .cloned()
        })
        .await
}

/// The membership event of `user` that `check` accepts.
async fn member_event(
    world: &World,
    token: &str,
    room: &str,
    user: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    world
        .wait_for(token, room, |events| {
            events
                .iter()
                .rev()
                .find(|e| e["state_key"] == user && check(e))
                .cloned()
        })
        .await
}

#[tokio::test]
async fn power_kicks_and_bans_go_both_ways() {
    let mut world = world().await;
    let token = world.token().await;
    let mut others = vec![presence_of(
        "Bob",
        "<item affiliation='admin' role='moderator' jid='bob@prosody.test/phone'/>",
        "",
        false,
    )];
    others.extend(carol_and_dave());
    let room = join_lobby(
        &mut world,
        &token,
        others,
        "<item affiliation='owner' role='moderator'/>",
    )
    .await;
    let alice = world.alice.clone();
    // Affiliations and roles are power levels: Alice owns the MUC, Bob administers it.
    power_levels(&world, &token, &room, |levels| {
        levels["users"][alice.as_str()] == 100 && levels["users"][BOB_HERE] == 50
    })
    .await;
    // Alice redacts a message of Bob's: the MUC is asked to retract it (XEP-0425), by its
    // stanza id; it says no, and she is told the message stays there.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' id='b1' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><body>rude words</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-b1'/></message>",
    ));
    let rude = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB_HERE)
                .first()
                .map(|e| e["event_id"].as_str().unwrap().to_owned())
        })
        .await;
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{rude}/m1"),
            &token,
            json!({ "reason": "rude" }),
        )
        .await
        .assert_ok();
    let Stanza::Iq(Iq::Set {
        id, from, payload, ..
    }) = next_that(&mut world.seen, |s| {
        matches!(s, Stanza::Iq(Iq::Set { payload, .. })
            if payload.is("moderate", "urn:xmpp:message-moderate:1"))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(from.unwrap().to_string(), "alice@gw.test/causeway");
    assert_eq!(payload.attr("id"), Some("s-b1"));
    assert!(payload.has_child("retract", "urn:xmpp:message-retract:1"));
    assert_eq!(
        payload
            .get_child("reason", "urn:xmpp:message-moderate:1")
            .map(|r| r.text()),
        Some("rude".to_owned())
    );
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='error' id='{id}' from='lobby@prosody.test' \
         to='alice@gw.test/causeway'><error type='cancel'>\
         <feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    )));
    muc_notice(&world, &token, &room, "did not retract the message").await;
    // Carol is made a moderator, and then no longer: her level follows.
    world.peer.send(presence_of(
        "Carol",
        "<item affiliation='none' role='moderator' jid='carol@prosody.test/pc'/>",
        "",
        false,
    ));
    power_levels(&world, &token, &room, |levels| {
        levels["users"][CAROL_HERE] == 50
    })
    .await;
    world.peer.send(presence_of(
        "Carol",
        "<item affiliation='none' role='participant' jid='carol@prosody.test/pc'/>",
        "",
        false,
    ));
    power_levels(&world, &token, &room, |levels| {
        levels["users"].get(CAROL_HERE).is_none()
    })
    .await;
    // Alice kicks Carol in the portal: the MUC is asked, by nickname, as Alice's occupant.
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            &token,
            json!({ "user_id": CAROL_HERE, "reason": "off topic" }),
        )
        .await
        .assert_ok();
    let (id, from, item) = admin_request(&mut world).await;
    assert_eq!(from, "alice@gw.test/causeway");
    assert_eq!(
        (item.attr("nick"), item.attr("role")),
        (Some("Carol"), Some("none"))
    );
    assert_eq!(
        item.get_child("reason", "http://jabber.org/protocol/muc#admin")
            .map(|r| r.text()),
        Some("off topic".to_owned())
    );
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='result' id='{id}' from='lobby@prosody.test' \
         to='alice@gw.test/causeway'/>"
    )));
    world.peer.send(presence_of(
        "Carol",
        "<item affiliation='none' role='none'><reason>off topic</reason></item>",
        "<status code='307'/>",
        true,
    ));
    let kicked = member_event(&world, &token, &room, CAROL_HERE, |e| {
        e["content"]["membership"] == "leave"
    })
    .await;
    assert_eq!(kicked["sender"], alice.as_str());
    // Alice bans Bob: the MUC is asked to ban his JID, and says no. Bob is back in the
    // portal as he still is in the MUC, and Alice is told why.
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            &token,
            json!({ "user_id": BOB_HERE }),
        )
        .await
        .assert_ok();
    let (id, _, item) = admin_request(&mut world).await;
    assert_eq!(
        (item.attr("affiliation"), item.attr("jid")),
        (Some("outcast"), Some("bob@prosody.test"))
    );
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='error' id='{id}' from='lobby@prosody.test' \
         to='alice@gw.test/causeway'><error type='cancel'>\
         <not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Bob is an admin</text></error></iq>"
    )));
    let back = member_event(&world, &token, &room, BOB_HERE, |e| {
        e["content"]["membership"] == "join" && e["sender"] == BOB_HERE
    })
    .await;
    assert_eq!(back["content"]["displayname"], "Bob");
    let told = muc_notice(&world, &token, &room, "Bob is an admin").await;
    assert_eq!(told["content"]["msgtype"], "m.notice");
    // Dave cannot be banned: the MUC does not show his JID. Nothing is asked; he is back.
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            &token,
            json!({ "user_id": DAVE_HERE }),
        )
        .await
        .assert_ok();
    muc_notice(&world, &token, &room, "does not show who Dave is").await;
    member_event(&world, &token, &room, DAVE_HERE, |e| {
        e["content"]["membership"] == "join" && e["sender"] == DAVE_HERE
    })
    .await;
    // The MUC kicks Bob and bans Dave: the MUC's ghost does it in the portal, with why.
    world.peer.send(presence_of(
        "Bob",
        "<item affiliation='admin' role='none'><actor nick='alice'/><reason>spam</reason></item>",
        "<status code='307'/>",
        true,
    ));
    let kicked = member_event(&world, &token, &room, BOB_HERE, |e| {
        e["content"]["membership"] == "leave"
            && e["sender"] != alice.as_str()
            && e["content"]["reason"] != "lobby@prosody.test did not ban them"
    })
    .await;
    assert_eq!(kicked["sender"], MUC_GHOST);
    assert_eq!(
        kicked["content"]["reason"],
        "spam (lobby@prosody.test by alice)"
    );
    world.peer.send(presence_of(
        "Dave",
        "<item affiliation='outcast' role='none'/>",
        "<status code='301'/>",
        true,
    ));
    member_event(&world, &token, &room, DAVE_HERE, |e| {
        e["content"]["membership"] == "ban" && e["sender"] == MUC_GHOST
    })
    .await;
}

/// Alice sets `user`'s power level in the portal.
async fn set_level(world: &World, token: &str, room: &str, user: &str, level: i64) {
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/");
    let mut levels = world.server.get(&path, token).await.assert_ok();
    levels["users"][user] = json!(level);
    world.server.put(&path, token, levels).await.assert_ok();
}

#[tokio::test]
async fn power_changes_in_the_portal_are_asked_of_the_muc() {
    let (mut world, token, room) = in_lobby(
        carol_and_dave(),
        "<item affiliation='owner' role='moderator'/>",
    )
    .await;
    let alice = world.alice.clone();
    power_levels(&world, &token, &room, |levels| {
        levels["users"][alice.as_str()] == 100
    })
    .await;
    // Alice makes Carol a moderator: the MUC is asked for the role, by nickname, as Alice's
    // occupant; it agrees, and its presence keeps the level.
    set_level(&world, &token, &room, CAROL_HERE, 50).await;
    let (id, from, item) = admin_request(&mut world).await;
    assert_eq!(from, "alice@gw.test/causeway");
    assert_eq!(
        (
            item.attr("nick"),
            item.attr("role"),
            item.attr("affiliation")
        ),
        (Some("Carol"), Some("moderator"), None)
    );
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='result' id='{id}' from='lobby@prosody.test' \
         to='alice@gw.test/causeway'/>"
    )));
    world.peer.send(presence_of(
        "Carol",
        "<item affiliation='none' role='moderator' jid='carol@prosody.test/pc'/>",
        "",
        false,
    ));
    // She makes Carol an owner: an affiliation, asked for Carol's JID. The MUC says no:
    // Carol's level is back to the moderator's, and Alice is told why.
    set_level(&world, &token, &room, CAROL_HERE, 100).await;
    let (id, _, item) = admin_request(&mut world).await;
    assert_eq!(
        (
            item.attr("affiliation"),
            item.attr("jid"),
            item.attr("nick")
        ),
        (Some("owner"), Some("carol@prosody.test"), None)
    );
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='error' id='{id}' from='lobby@prosody.test' \
         to='alice@gw.test/causeway'><error type='auth'>\
         <forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Owners only</text></error></iq>"
    )));
    let told = muc_notice(&world, &token, &room, "Owners only").await;
    assert_eq!(told["content"]["msgtype"], "m.notice");
    power_levels(&world, &token, &room, |levels| {
        levels["users"][CAROL_HERE] == 50
    })
    .await;
    // Dave, whom the MUC does not show, cannot be given an affiliation: nothing is asked,
    // his level is back, and Alice is told. Silencing him is a role: that is asked.
    set_level(&world, &token, &room, DAVE_HERE, 100).await;
    muc_notice(&world, &token, &room, "does not show who Dave is").await;
    power_levels(&world, &token, &room, |levels| {
        levels["users"].get(DAVE_HERE).is_none()
    })
    .await;
    set_level(&world, &token, &room, DAVE_HERE, -1).await;
    let (id, _, item) = admin_request(&mut world).await;
    assert_eq!(
        (item.attr("nick"), item.attr("role")),
        (Some("Dave"), Some("visitor"))
    );
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='result' id='{id}' from='lobby@prosody.test' \
         to='alice@gw.test/causeway'/>"
    )));
    // A level that means the same to the MUC asks nothing: the next request is the next
    // change that matters.
    set_level(&world, &token, &room, CAROL_HERE, 60).await;
    set_level(&world, &token, &room, CAROL_HERE, 0).await;
    let (_, _, item) = admin_request(&mut world).await;
    assert_eq!(
        (item.attr("nick"), item.attr("role")),
        (Some("Carol"), Some("participant"))
    );
}

/// The invitation of Alice to a room, with its reason, once there is one for `room`.
async fn invitation_reason(world: &World, token: &str, alias: &str) -> String {
    for _ in 0..100 {
        let resolved = world
            .server
            .get(
                &format!(
                    "/_matrix/client/v3/directory/room/{}",
                    common::encode(alias)
                ),
                token,
            )
            .await;
        if resolved.status.as_u16() == 200 {
            let room = resolved.json()["room_id"].as_str().unwrap().to_owned();
            let sync = world.server.sync(token, "timeout=0").await;
            if let Some(events) =
                sync["rooms"]["invite"][room.as_str()]["invite_state"]["events"].as_array()
                && let Some(invite) = events.iter().find(|e| {
                    e["type"] == "m.room.member" && e["content"]["membership"] == "invite"
                })
            {
                return invite["content"]["reason"].as_str().unwrap().to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no invitation to {alias}");
}

#[tokio::test]
async fn invitations_to_mucs_are_invitations_to_their_portals() {
    let mut world = world().await;
    let token = world.token().await;
    // A direct invitation (XEP-0249) to something that is no MUC: nothing comes of it.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' from='bob@prosody.test/phone' to='alice@gw.test'>\
         <x xmlns='jabber:x:conference' jid='nothere@prosody.test'/></message>",
    ));
    answer_disco(
        &world.peer.clone(),
        &mut world.seen,
        "nothere@prosody.test",
        false,
    )
    .await;
    // One to the lobby: the portal is made and Alice invited to it by the MUC's ghost.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' from='bob@prosody.test/phone' to='alice@gw.test'>\
         <x xmlns='jabber:x:conference' jid='lobby@prosody.test' reason='come in'/></message>",
    ));
    answer_disco(
        &world.peer.clone(),
        &mut world.seen,
        "lobby@prosody.test",
        true,
    )
    .await;
    let reason = invitation_reason(&world, &token, "#_xmpp_lobby=40prosody.test:gw.test").await;
    assert_eq!(reason, "bob@prosody.test invites you: come in");
    // A mediated invitation, sent by the MUC for Carol.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' from='den@prosody.test' to='alice@gw.test'>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <invite from='carol@prosody.test/pc'><reason>tea?</reason></invite>\
         <password>tea-time</password></x></message>",
    ));
    answer_disco(
        &world.peer.clone(),
        &mut world.seen,
        "den@prosody.test",
        true,
    )
    .await;
    let reason = invitation_reason(&world, &token, "#_xmpp_den=40prosody.test:gw.test").await;
    assert_eq!(reason, "carol@prosody.test invites you: tea?");
    // Accepting is joining the portal, which joins the MUC.
    let portal = world
        .server
        .get(
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                common::encode("#_xmpp_den=40prosody.test:gw.test")
            ),
            &token,
        )
        .await
        .assert_ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let World {
        server, peer, seen, ..
    } = &mut world;
    let play = async {
        // The MUC is password-protected: the join gives the invitation's password.
        let Stanza::Presence(join) = next_that(seen, |s| {
            matches!(s, Stanza::Presence(_)) && to_room("den@prosody.test")(s)
        })
        .await
        else {
            unreachable!()
        };
        assert_eq!(join.to.unwrap().to_string(), "den@prosody.test/alice");
        let password = join
            .payloads
            .iter()
            .find(|p| p.is("x", "http://jabber.org/protocol/muc"))
            .and_then(|x| x.get_child("password", "http://jabber.org/protocol/muc"))
            .map(|password| password.text());
        assert_eq!(password.as_deref(), Some("tea-time"));
        peer.send(stanza(
            "<presence xmlns='jabber:server' from='den@prosody.test/alice' \
             to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='member' role='participant'/><status code='110'/></x></presence>",
        ));
    };
    let path = format!("/_matrix/client/v3/rooms/{portal}/join");
    let (joined, ()) = tokio::join!(server.post(&path, &token, json!({})), play);
    joined.assert_ok();
    // What was no MUC gave no invitation: the only one left is the lobby's.
    let sync = world.server.sync(&token, "timeout=0").await;
    let invited: Vec<&String> = sync["rooms"]["invite"]
        .as_object()
        .map(|rooms| rooms.keys().collect())
        .unwrap_or_default();
    assert_eq!(invited.len(), 1, "{invited:?}");
}

#[tokio::test]
async fn inviting_xmpp_users_into_a_portal_asks_the_muc() {
    let (mut world, token, room) =
        in_lobby(vec![], "<item affiliation='owner' role='moderator'/>").await;
    // Alice invites Bob's ghost: the MUC is asked to invite Bob, from her occupant, with her
    // reason; his ghost leaves the invitation, saying so.
    const BOB: &str = "@_xmpp_bob=40prosody.test:gw.test";
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &token,
            json!({ "user_id": BOB, "reason": "we talk here" }),
        )
        .await
        .assert_ok();
    let Stanza::Message(invitation) = next_that(&mut world.seen, |s| {
        matches!(s, Stanza::Message(m) if m.payloads.iter().any(|p| p.is("x", "http://jabber.org/protocol/muc#user")))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(
        invitation.from.as_ref().map(|jid| jid.to_string()),
        Some("alice@gw.test/causeway".to_owned())
    );
    assert_eq!(
        invitation.to.as_ref().map(|jid| jid.to_string()),
        Some("lobby@prosody.test".to_owned())
    );
    // A mediated invitation is a normal message (XEP-0045 §7.8.2).
    assert_eq!(invitation.type_, xmpp_parsers::message::MessageType::Normal);
    let invite = invitation.payloads[0]
        .get_child("invite", "http://jabber.org/protocol/muc#user")
        .expect("an invite");
    assert_eq!(invite.attr("to"), Some("bob@prosody.test"));
    assert_eq!(
        invite
            .get_child("reason", "http://jabber.org/protocol/muc#user")
            .map(|r| r.text()),
        Some("we talk here".to_owned())
    );
    let declined = member_event(&world, &token, &room, BOB, |e| {
        e["content"]["membership"] == "leave"
    })
    .await;
    assert_eq!(declined["sender"], BOB);
    assert!(
        declined["content"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("invites bob@prosody.test")),
        "{declined}"
    );
    // An occupant the MUC does not show cannot be invited: nothing is asked.
    const EVE_HERE: &str = "@_xmpp_lobby=40prosody.test/=45ve:gw.test";
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &token,
            json!({ "user_id": EVE_HERE }),
        )
        .await
        .assert_ok();
    let declined = member_event(&world, &token, &room, EVE_HERE, |e| {
        e["content"]["membership"] == "leave"
    })
    .await;
    assert!(
        declined["content"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("does not show who")),
        "{declined}"
    );
    // Nothing more went to the MUC: no invitation without a JID to invite.
    while let Ok(Some(stanza)) =
        tokio::time::timeout(Duration::from_millis(300), world.seen.recv()).await
    {
        assert!(
            !matches!(&stanza, Stanza::Message(m) if m.payloads.iter().any(|p| p.is("x", "http://jabber.org/protocol/muc#user"))),
            "{stanza:?}"
        );
    }
}

#[tokio::test]
async fn malformed_muc_payloads_change_nothing_else() {
    let (world, token, room) =
        in_lobby(vec![], "<item affiliation='owner' role='moderator'/>").await;
    // Carol comes in with an affiliation no MUC has and status codes that are no numbers; a
    // nobody leaves; a message has a stanza id without an id, a reply without a target.
    world.peer.send(presence_of(
        "Carol",
        "<item affiliation='emperor' role='overlord' jid='not a jid'/>",
        "<status code='abc'/><status/>",
        false,
    ));
    world.peer.send(presence_of(
        "Nobody",
        "<item affiliation='none' role='none'/>",
        "<status code='307'/>",
        true,
    ));
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' id='x1' from='lobby@prosody.test/Carol' \
         to='alice@gw.test/causeway'><body>odd one</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test'/>\
         <reply xmlns='urn:xmpp:reply:0'/></message>",
    ));
    // Then Carol as she should be, and a message: the portal goes on.
    world.peer.send(presence_of(
        "Carol",
        "<item affiliation='none' role='moderator' jid='carol@prosody.test/pc'/>",
        "",
        false,
    ));
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' id='x2' from='lobby@prosody.test/Carol' \
         to='alice@gw.test/causeway'><body>all well</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-x2'/></message>",
    ));
    let bodies = world
        .wait_for(&token, &room, |events| {
            let said: Vec<String> = messages(events, CAROL_HERE)
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect();
            said.iter().any(|body| body == "all well").then_some(said)
        })
        .await;
    assert_eq!(bodies, ["odd one", "all well"]);
    // The malformed item set no power; the good one did.
    let levels = power_levels(&world, &token, &room, |levels| {
        levels["users"][CAROL_HERE] == 50
    })
    .await;
    assert!(
        levels["users"]
            .get("@_xmpp_lobby=40prosody.test/=4eobody:gw.test")
            .is_none()
    );
    // The one who left without having come is no member.
    let nobody = member_state(
        &world,
        &token,
        &room,
        "@_xmpp_lobby=40prosody.test/=4eobody:gw.test",
    )
    .await;
    assert_eq!(nobody.status.as_u16(), 404);
}
