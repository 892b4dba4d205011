//! Quotas per remote domain: what one XMPP server's users may make here. Past a quota, that
//! domain's stanzas are refused with `resource-constraint` (type `wait`); other domains go on.

use causeway_config::RateLimit;

use crate::world::*;

/// A quota that does not refill during a test.
fn quota(burst: u32) -> RateLimit {
    RateLimit {
        per_second: 0.0001,
        burst,
    }
}

fn refused(id: &str) -> (String, String, String) {
    (id.into(), "resource-constraint".into(), "wait".into())
}

/// The rooms Alice is invited to, once there are `count`.
async fn invites(world: &World, token: &str, count: usize) -> usize {
    for _ in 0..100 {
        let sync = world.server.sync(token, "timeout=0").await;
        let invited = sync["rooms"]["invite"]
            .as_object()
            .map_or(0, |rooms| rooms.len());
        if invited >= count {
            return invited;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    0
}

#[tokio::test]
async fn messages_of_a_domain_past_its_quota_are_refused_and_other_domains_go_on() {
    let mut world = world_with(|config| config.rate_limits.remote_events = quota(3)).await;
    let token = world.token().await;
    for i in 0..5 {
        world.peer.send(chat(
            "bob@prosody.test/phone",
            &format!("m{i}"),
            &format!("<body>flood {i}</body>"),
        ));
    }
    let answers = [world.next_message().await, world.next_message().await];
    let mut errors: Vec<_> = answers.iter().map(error_of).collect();
    errors.sort();
    assert_eq!(errors, [refused("m3"), refused("m4")]);
    let room = world.invited_room(&token).await;
    world.server.join(&token, &room).await;
    let bodies = world
        .wait_for(&token, &room, |events| {
            let bodies: Vec<String> = messages(events, BOB)
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect();
            (bodies.len() >= 3).then_some(bodies)
        })
        .await;
    assert_eq!(bodies, ["flood 0", "flood 1", "flood 2"]);
    // Another domain has its own quota: Dave's message arrives.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='chat' id='d1' from='dave@other.test/pc' \
         to='alice@gw.test'><body>hello from elsewhere</body></message>",
    ));
    assert_eq!(invites(&world, &token, 1).await, 1);
}

#[tokio::test]
async fn rooms_and_accounts_of_a_domain_past_their_quotas_are_refused() {
    // One room, then one account, per domain: Bob gets his, Carol (same domain) does not; Dave
    // (elsewhere) does.
    for accounts in [false, true] {
        let mut world = world_with(|config| {
            if accounts {
                config.rate_limits.remote_accounts = quota(1);
            } else {
                config.rate_limits.remote_rooms = quota(1);
            }
        })
        .await;
        let token = world.token().await;
        world
            .peer
            .send(chat("bob@prosody.test/a", "b1", "<body>hi</body>"));
        world.invited_room(&token).await;
        world
            .peer
            .send(chat("carol@prosody.test/a", "c1", "<body>hi</body>"));
        assert_eq!(error_of(&world.next_message().await), refused("c1"));
        let carol = world
            .server
            .services
            .store
            .user("@_xmpp_carol=40prosody.test:gw.test")
            .await
            .unwrap();
        assert!(carol.is_none(), "no account was made for Carol");
        world.peer.send(stanza(
            "<message xmlns='jabber:server' type='chat' id='d1' from='dave@other.test/pc' \
             to='alice@gw.test'><body>hi</body></message>",
        ));
        assert_eq!(invites(&world, &token, 2).await, 2, "accounts: {accounts}");
    }
}

#[tokio::test]
async fn a_flood_of_joins_from_one_domain_is_refused_and_other_domains_go_on() {
    let mut world = world_with(|config| config.rate_limits.remote_events = quota(3)).await;
    let token = world.token().await;
    world
        .server
        .create_room(
            &token,
            serde_json::json!({"preset": "public_chat", "room_alias_name": "lobby"}),
        )
        .await;
    // Joins (and nickname changes) of one domain's users count against its quota.
    for i in 0..5 {
        world.peer.send(stanza(&format!(
            "<presence xmlns='jabber:server' id='j{i}' from='user{i}@prosody.test/x' \
             to='lobby@muc.gw.test/User{i}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        )));
    }
    let mut refusals = Vec::new();
    while refusals.len() < 2 {
        if let causeway_xmpp::stanza::Stanza::Presence(presence) = world.next().await
            && presence.type_ == xmpp_parsers::presence::Type::Error
        {
            let error = presence
                .payloads
                .iter()
                .find(|p| p.name() == "error")
                .unwrap();
            assert!(error.has_child("resource-constraint", "urn:ietf:params:xml:ns:xmpp-stanzas"));
            assert_eq!(error.attr("type"), Some("wait"));
            refusals.push(presence.id.clone().unwrap());
        }
    }
    refusals.sort();
    assert_eq!(refusals, ["j3", "j4"]);
    // other.test is not held up.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' id='d1' from='dave@other.test/x' \
         to='lobby@muc.gw.test/Dave'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
    ));
    world
        .wait_member(
            &token,
            &room_of(&world, &token).await,
            "@_xmpp_dave=40other.test:gw.test",
            "join",
        )
        .await;
}

async fn room_of(world: &World, token: &str) -> String {
    world
        .server
        .get("/_matrix/client/v3/directory/room/%23lobby:gw.test", token)
        .await
        .assert_ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned()
}
