//! Tests of the message mappings.

use super::*;
use proptest::prelude::*;
use ruma::owned_event_id;

fn gateway() -> Gateway {
    Gateway::new(
        ruma::OwnedServerName::try_from("gw.test").unwrap(),
        "muc.gw.test",
    )
    .unwrap()
}

fn from_xmpp_of(message: Message) -> FromXmpp {
    from_xmpp(&message, &gateway())
}

fn xmpp(xml: &str) -> Message {
    let element: Element = xml.parse().unwrap();
    Message::try_from(element).unwrap()
}

fn message(inner: &str) -> Message {
    xmpp(&format!(
        "<message xmlns='jabber:client' type='chat' id='m1' from='bob@prosody.test/phone' \
         to='alice@gw.test'>{inner}</message>"
    ))
}

/// The plain and HTML text of content read from XMPP.
fn text(read: &FromXmpp) -> (String, Option<String>) {
    let msgtype = &read.content.as_ref().expect("content").msgtype;
    let (body, html) = text_of(msgtype);
    (body.to_owned(), html.map(str::to_owned))
}

#[test]
fn plain_styled_and_xhtml_text() {
    let read = from_xmpp_of(message("<body>hello</body>"));
    assert_eq!(text(&read), ("hello".into(), None));
    assert!(matches!(
        read.content.unwrap().msgtype,
        MessageType::Text(_)
    ));

    let read = from_xmpp_of(message("<body>a *b* c</body>"));
    assert_eq!(
        text(&read),
        ("a *b* c".into(), Some("a <strong>b</strong> c".into()))
    );
    // The sender says the asterisks are not styling.
    let read = from_xmpp_of(message(
        "<body>a *b* c</body><unstyled xmlns='urn:xmpp:styling:0'/>",
    ));
    assert_eq!(text(&read), ("a *b* c".into(), None));
    // XHTML-IM comes before styling.
    let read = from_xmpp_of(message(
        "<body>hi *there*</body><html xmlns='http://jabber.org/protocol/xhtml-im'>\
         <body xmlns='http://www.w3.org/1999/xhtml'><p>hi <em>there</em></p></body></html>",
    ));
    assert_eq!(
        text(&read),
        ("hi *there*".into(), Some("<p>hi <em>there</em></p>".into()))
    );
    // Empty bodies carry no text.
    assert!(from_xmpp_of(message("<body>  </body>")).content.is_none());
}

#[test]
fn headlines_are_notices() {
    let read = from_xmpp_of(xmpp(
        "<message xmlns='jabber:client' type='headline' from='news.prosody.test' to='alice@gw.test'>\
         <body>Service *maintenance* tonight</body></message>",
    ));
    let content = read.content.unwrap();
    let MessageType::Notice(notice) = &content.msgtype else {
        panic!("{content:?}");
    };
    assert_eq!(notice.body, "Service *maintenance* tonight");
    assert!(notice.formatted.is_some());
    // A Matrix notice is sent as text.
    let matrix = RoomMessageEventContent::notice_plain("beep");
    let out = to_xmpp(&matrix, &ToXmppRefs::default(), &gateway())
        .unwrap()
        .value;
    assert_eq!(body(&out), Some("beep"));
}

#[test]
fn me_is_an_emote_both_ways() {
    let read = from_xmpp_of(message("<body>/me waves</body>"));
    let content = read.content.unwrap();
    assert!(matches!(&content.msgtype, MessageType::Emote(_)));
    assert_eq!(content.msgtype.body(), "waves");
    let matrix = RoomMessageEventContent::emote_plain("waves back");
    let out = to_xmpp(&matrix, &ToXmppRefs::default(), &gateway())
        .unwrap()
        .value;
    assert_eq!(body(&out), Some("/me waves back"));
}

#[test]
fn replies_both_ways() {
    // XEP-0461 with an XEP-0428 fallback: the quotation goes, the reference stays.
    let read = from_xmpp_of(message(
        "<body>&gt; Alice:\n&gt; lunch?\nyes</body>\
         <reply xmlns='urn:xmpp:reply:0' to='alice@gw.test/x' id='orig'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
         <body start='0' end='18'/></fallback>",
    ));
    assert_eq!(read.reply_to.as_deref(), Some("orig"));
    assert_eq!(text(&read), ("yes".into(), None));
    let content = matrix_content(
        read.content.unwrap(),
        Some(owned_event_id!("$orig:gw.test")),
        None,
    );
    let Some(Relation::Reply(reply)) = &content.relates_to else {
        panic!("{content:?}");
    };
    assert_eq!(reply.in_reply_to.event_id, "$orig:gw.test");

    // A Matrix reply: its fallback goes, XEP-0461 and a quotation of the original by name
    // come, and no Matrix id leaks into the body.
    let mut matrix = RoomMessageEventContent::text_plain(
        "> <@alice:gw.test> lunch?\n> > <@bob:gw.test> nested\n\nyes, at noon",
    );
    matrix.relates_to = Some(Relation::Reply(
        ruma::events::relation::Reply::with_event_id(owned_event_id!("$orig:gw.test")),
    ));
    let refs = ToXmppRefs {
        reply: Some(ReplyRef {
            id: "orig".into(),
            to: Some(jid::Jid::new("bob@prosody.test/phone").unwrap()),
            author: "Bob".into(),
            text: "lunch?".into(),
        }),
        replaces: None,
    };
    let out = to_xmpp(&matrix, &refs, &gateway()).unwrap().value;
    assert_eq!(body(&out), Some("> Bob:\n> lunch?\nyes, at noon"));
    assert!(!body(&out).unwrap().contains('@'));
    let reply = out
        .payloads
        .iter()
        .find(|p| p.is("reply", ns::REPLY))
        .unwrap();
    assert_eq!(reply.attr("id"), Some("orig"));
    assert_eq!(reply.attr("to"), Some("bob@prosody.test/phone"));
    // And read back, it is the same reply.
    let read = from_xmpp(&out, &gateway());
    assert_eq!(read.reply_to.as_deref(), Some("orig"));
    assert_eq!(text(&read).0, "yes, at noon");
}

#[test]
fn matrix_reply_fallbacks_are_stripped() {
    assert_eq!(
        strip_matrix_reply_fallback("> <@a:b> x\n> y\n\nreply"),
        "reply"
    );
    assert_eq!(
        strip_matrix_reply_fallback("> quote without reply"),
        "> quote without reply"
    );
    assert_eq!(
        strip_matrix_reply_fallback("> a\nnot a fallback"),
        "> a\nnot a fallback"
    );
    assert_eq!(strip_matrix_reply_fallback("plain"), "plain");
}

#[test]
fn corrections_both_ways() {
    let read = from_xmpp_of(message(
        "<body>fixed *text*</body><replace xmlns='urn:xmpp:message-correct:0' id='m0'/>",
    ));
    assert_eq!(read.replaces.as_deref(), Some("m0"));
    let content = matrix_content(
        read.content.unwrap(),
        None,
        Some(owned_event_id!("$original:gw.test")),
    );
    assert_eq!(content.body(), "* fixed *text*");
    let Some(Relation::Replacement(replacement)) = &content.relates_to else {
        panic!("{content:?}");
    };
    assert_eq!(replacement.event_id, "$original:gw.test");
    assert_eq!(replacement.new_content.msgtype.body(), "fixed *text*");
    // The edit's new content goes to XMPP, as a correction of the original's id.
    let refs = ToXmppRefs {
        reply: None,
        replaces: Some("m0".into()),
    };
    let out = to_xmpp(&content, &refs, &gateway()).unwrap().value;
    assert_eq!(body(&out), Some("fixed *text*"));
    let replace = out
        .payloads
        .iter()
        .find(|p| p.is("replace", ns::CORRECT))
        .unwrap();
    assert_eq!(replace.attr("id"), Some("m0"));
}

#[test]
fn retractions_reactions_states_and_markers() {
    let read = from_xmpp_of(message(
        "<body>This person attempted to retract a previous message</body>\
         <retract xmlns='urn:xmpp:message-retract:1' id='m0'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>",
    ));
    assert_eq!(read.retracts.as_deref(), Some("m0"));
    assert!(read.content.is_none(), "the fallback body is no message");
    let read = from_xmpp_of(message(
        "<apply-to xmlns='urn:xmpp:fasten:0' id='m9'><retract xmlns='urn:xmpp:message-retract:0'/></apply-to>",
    ));
    assert_eq!(read.retracts.as_deref(), Some("m9"));
    let out = retraction("m0");
    let read = from_xmpp(&out, &gateway());
    assert_eq!(read.retracts.as_deref(), Some("m0"));

    let read = from_xmpp_of(message(
        "<reactions xmlns='urn:xmpp:reactions:0' id='m0'><reaction>👍</reaction>\
         <reaction>🐢</reaction><reaction>👍</reaction></reactions>",
    ));
    assert_eq!(
        read.reactions,
        Some(("m0".into(), vec!["👍".into(), "🐢".into()]))
    );
    let keys = vec!["👋".to_owned(), "👨‍👩‍👧".to_owned()];
    let mut out = Message::new(None);
    out.payloads.push(reactions("m1", &keys));
    assert_eq!(
        from_xmpp(&out, &gateway()).reactions,
        Some(("m1".into(), keys))
    );

    let read = from_xmpp_of(message(
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
    ));
    assert_eq!(read.typing, Some(true));
    let read = from_xmpp_of(message(
        "<body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/>\
         <request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>",
    ));
    assert_eq!(read.typing, Some(false));
    assert!(read.wants_receipt);
    let mut out = Message::new(None);
    out.payloads.push(chat_state(true));
    out.payloads.push(displayed("m5"));
    out.payloads.push(received("m4"));
    let read = from_xmpp(&out, &gateway());
    assert_eq!(read.typing, Some(true));
    assert_eq!(read.displayed.as_deref(), Some("m5"));
    assert_eq!(read.received.as_deref(), Some("m4"));
    let mut out = Message::new(None);
    out.payloads.push(chat_state(false));
    assert_eq!(from_xmpp(&out, &gateway()).typing, Some(false));
}

#[test]
fn reaction_sets_become_annotations_and_redactions() {
    let current = vec![
        ("👍".to_owned(), owned_event_id!("$a:gw.test")),
        ("🐢".to_owned(), owned_event_id!("$b:gw.test")),
    ];
    assert_eq!(
        reaction_changes(&current, &["🐢".into(), "🎉".into(), "🎉".into()]),
        ReactionChanges {
            add: vec!["🎉".into()],
            remove: vec![owned_event_id!("$a:gw.test")],
        }
    );
    // The empty set removes them all.
    assert_eq!(reaction_changes(&current, &[]).remove.len(), 2);
}

#[test]
fn formatted_matrix_text_becomes_styling() {
    let matrix = RoomMessageEventContent::text_html(
        "**bold** and <u>under</u>",
        "<strong>bold</strong> and <u>under</u>",
    );
    let out = to_xmpp(&matrix, &ToXmppRefs::default(), &gateway()).unwrap();
    assert_eq!(body(&out.value), Some("*bold* and under"));
    assert_eq!(out.dropped, vec![Dropped::Underline]);
    // A plain body with characters that would read as styling is marked unstyled.
    let matrix = RoomMessageEventContent::text_plain("use *ptr and *other* here");
    let out = to_xmpp(&matrix, &ToXmppRefs::default(), &gateway())
        .unwrap()
        .value;
    assert!(out.payloads.iter().any(|p| p.is("unstyled", ns::STYLING)));
    // Not a text message: nothing to send as text.
    let matrix = RoomMessageEventContent::new(MessageType::Image(
        ruma::events::room::message::ImageMessageEventContent::plain(
            "cat.png".into(),
            ruma::owned_mxc_uri!("mxc://gw.test/cat"),
        ),
    ));
    assert!(to_xmpp(&matrix, &ToXmppRefs::default(), &gateway()).is_none());
}

#[test]
fn mentions_both_ways() {
    // Pills become XEP-0372 references to the users' JIDs, at their names.
    let mut matrix = RoomMessageEventContent::text_html(
        "Alice, Carol and Bob: lunch?",
        "<a href=\"https://matrix.to/#/@alice:gw.test\">Alice</a>, \
         <a href=\"https://matrix.to/#/%40carol%3Amatrix.org\">Carol</a> and \
         <a href=\"https://matrix.to/#/@_xmpp_bob=40prosody.test:gw.test\">Bob</a>: <em>lunch?</em>",
    );
    matrix.mentions = Some(ruma::events::Mentions::with_user_ids([
        ruma::owned_user_id!("@alice:gw.test"),
        ruma::owned_user_id!("@dave:gw.test"),
    ]));
    let out = to_xmpp(&matrix, &ToXmppRefs::default(), &gateway())
        .unwrap()
        .value;
    assert_eq!(body(&out), Some("Alice, Carol and Bob: _lunch?_"));
    let references: Vec<(Option<&str>, Option<&str>, Option<&str>)> = out
        .payloads
        .iter()
        .filter(|p| p.is("reference", ns::REFERENCE))
        .map(|r| (r.attr("uri"), r.attr("begin"), r.attr("end")))
        .collect();
    assert_eq!(
        references,
        vec![
            (Some("xmpp:alice@gw.test"), Some("0"), Some("5")),
            (Some("xmpp:carol%matrix.org@gw.test"), Some("7"), Some("12")),
            (Some("xmpp:bob@prosody.test"), Some("17"), Some("20")),
            // Mentioned without a pill.
            (Some("xmpp:dave@gw.test"), None, None),
        ]
    );
    // And back: m.mentions, with pills where the text has no formatting of its own.
    let read = from_xmpp_of(message(
        "<body>hi Alice and Bob</body>\
         <reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:alice@gw.test' begin='3' end='8'/>\
         <reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:bob@prosody.test' begin='13' end='16'/>\
         <reference xmlns='urn:xmpp:reference:0' type='mention' uri='https://not.xmpp/' begin='0' end='2'/>",
    ));
    let content = read.content.unwrap();
    let users: Vec<String> = content
        .mentions
        .as_ref()
        .unwrap()
        .user_ids
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        users,
        vec!["@_xmpp_bob=40prosody.test:gw.test", "@alice:gw.test"]
    );
    assert_eq!(
        text_of(&content.msgtype).1,
        Some(
            "hi <a href=\"https://matrix.to/#/@alice:gw.test\">Alice</a> and \
             <a href=\"https://matrix.to/#/@_xmpp_bob=40prosody.test:gw.test\">Bob</a>"
        )
    );
}

#[test]
fn mentions_by_name() {
    let alice = ruma::owned_user_id!("@alice:gw.test");
    let bob = ruma::owned_user_id!("@_xmpp_bob=40prosody.test:gw.test");
    let occupants = [("Alice", alice.as_ref()), ("Bob Builder", bob.as_ref())];
    let found = name_mentions(
        "Alice: did Bob Builder call? Alicex no, Bob Builder's yes",
        &occupants,
    );
    let spans: Vec<(usize, usize, String)> = found
        .iter()
        .map(|m| (m.begin, m.end, m.user.to_string()))
        .collect();
    assert_eq!(
        spans,
        vec![
            (0, 5, alice.to_string()),
            (11, 22, bob.to_string()),
            (40, 51, bob.to_string()),
        ]
    );
    assert!(name_mentions("nobody here", &occupants).is_empty());
}

#[test]
fn room_messages_mention_occupants_by_name() {
    let alice = ruma::owned_user_id!("@alice:gw.test");
    let carol = ruma::owned_user_id!("@_xmpp_carol=40prosody.test:gw.test");
    let occupants = [("alice", alice.as_ref()), ("Carol", carol.as_ref())];
    let read = from_xmpp_in_room(
        &message("<body>alice: ask Carol &amp; alice</body>"),
        &gateway(),
        &occupants,
    );
    let (body, html) = text(&read);
    assert_eq!(body, "alice: ask Carol & alice");
    assert_eq!(
        html.as_deref(),
        Some(
            "<a href=\"https://matrix.to/#/@alice:gw.test\">alice</a>: ask \
             <a href=\"https://matrix.to/#/@_xmpp_carol=40prosody.test:gw.test\">Carol</a> \
             &amp; <a href=\"https://matrix.to/#/@alice:gw.test\">alice</a>"
        )
    );
    let mentions = read.content.unwrap().mentions.unwrap();
    assert_eq!(
        mentions.user_ids.into_iter().collect::<Vec<_>>(),
        vec![carol.clone(), alice.clone()]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    // References, when the message has them, are the mentions; names are not looked for.
    let read = from_xmpp_in_room(
        &message(
            "<body>Carol, alice</body><reference xmlns='urn:xmpp:reference:0' type='mention' \
             uri='xmpp:alice@gw.test' begin='7' end='12'/>",
        ),
        &gateway(),
        &occupants,
    );
    let mentions = read.content.unwrap().mentions.unwrap();
    assert_eq!(
        mentions.user_ids.into_iter().collect::<Vec<_>>(),
        vec![alice]
    );
    // Outside rooms, nothing is read as a name.
    let read = from_xmpp_of(message("<body>alice: hi</body>"));
    assert!(read.content.unwrap().mentions.is_none());
}

#[test]
fn fallback_offsets_count_characters() {
    let read = from_xmpp_of(message(
        "<body>&gt; 🐢 wrote\nok</body><reply xmlns='urn:xmpp:reply:0' id='r'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
         <body start='0' end='10'/></fallback>",
    ));
    assert_eq!(text(&read).0, "ok");
    // A fallback for another extension leaves the body alone; a bad range is ignored.
    let read = from_xmpp_of(message(
        "<body>keep</body><reply xmlns='urn:xmpp:reply:0' id='r'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:other'><body/></fallback>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
         <body start='9' end='2'/></fallback>",
    ));
    assert_eq!(text(&read).0, "keep");
}

proptest! {
    /// Matrix text → XMPP → Matrix keeps the text, styled or not.
    #[test]
    fn plain_text_round_trips(text in "[^\\r]{1,60}") {
        prop_assume!(!text.trim().is_empty() && !text.starts_with("/me ") && !text.starts_with('>'));
        let matrix = RoomMessageEventContent::text_plain(text.clone());
        let out = to_xmpp(&matrix, &ToXmppRefs::default(), &gateway()).unwrap().value;
        let read = from_xmpp(&out, &gateway());
        let content = read.content.unwrap();
        prop_assert_eq!(content.msgtype.body(), text.as_str());
        prop_assert_eq!(text_of(&content.msgtype).1, None);
    }

    /// A Matrix reply → XMPP → Matrix keeps its text and what it replies to, whatever the
    /// quoted message says.
    #[test]
    fn replies_round_trip(reply in "[a-zA-Z0-9 .,!?🐢]{1,40}", quoted in "[a-zA-Z0-9 \n>*🐢]{0,60}") {
        prop_assume!(!reply.trim().is_empty() && !reply.starts_with('>'));
        let mut matrix = RoomMessageEventContent::text_plain(reply.clone());
        matrix.relates_to = Some(Relation::Reply(ruma::events::relation::Reply::with_event_id(
            owned_event_id!("$orig:gw.test"),
        )));
        let refs = ToXmppRefs {
            reply: Some(ReplyRef { id: "orig".into(), to: None, author: "Bob".into(), text: quoted }),
            replaces: None,
        };
        let out = to_xmpp(&matrix, &refs, &gateway()).unwrap().value;
        let read = from_xmpp(&out, &gateway());
        prop_assert_eq!(read.reply_to.as_deref(), Some("orig"));
        let content = read.content.unwrap();
        prop_assert_eq!(content.msgtype.body(), reply.as_str());
    }
}

#[test]
fn delayed_messages_keep_when_they_were_sent() {
    let read = from_xmpp_of(message(
        "<body>old news</body>\
         <delay xmlns='urn:xmpp:delay' from='coven@chat.shakespeare.lit' \
         stamp='2002-10-13T23:58:37Z'/>",
    ));
    assert_eq!(read.sent_at, Some(1_034_553_517_000));
    assert_eq!(text(&read).0, "old news");
    // Two delays (a MUC's and a server's on the way): the earliest is when it was sent.
    let read = from_xmpp_of(message(
        "<body>x</body>\
         <delay xmlns='urn:xmpp:delay' stamp='2002-10-13T23:58:40+00:00'/>\
         <delay xmlns='urn:xmpp:delay' stamp='2002-10-13T23:58:37.250Z'/>",
    ));
    assert_eq!(read.sent_at, Some(1_034_553_517_250));
    // Without a delay, or with one that is not a date: now.
    assert_eq!(from_xmpp_of(message("<body>x</body>")).sent_at, None);
    let read = from_xmpp_of(message(
        "<body>x</body><delay xmlns='urn:xmpp:delay' stamp='yesterday'/>",
    ));
    assert_eq!(read.sent_at, None);
}
