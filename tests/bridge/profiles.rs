//! vCards both ways.

use std::time::Duration;

use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use serde_json::{Value, json};

use crate::world::*;

#[tokio::test]
async fn profiles_both_ways() {
    use base64::Engine;
    use xmpp_parsers::iq::Iq;
    let mut world = world().await;
    let token = world.token().await;
    world
        .peer
        .send(chat("bob@prosody.test/phone", "p1", "<body>hello</body>"));
    // The gateway asks for Bob's vCard; the peer answers for him.
    let request = loop {
        if let Stanza::Iq(iq @ Iq::Get { .. }) = world.next().await {
            break iq;
        }
    };
    let Iq::Get {
        id, payload, to, ..
    } = &request
    else {
        unreachable!()
    };
    assert!(payload.is("vCard", "vcard-temp"));
    assert_eq!(to.as_ref().unwrap().to_string(), "bob@prosody.test");
    let photo = b"\x89PNG\r\n\x1a\nnot really a picture";
    let encoded = base64::engine::general_purpose::STANDARD.encode(photo);
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='result' id='{id}' from='bob@prosody.test' to='gw.test'>\
         <vCard xmlns='vcard-temp'><FN>Bob Builder</FN><NICKNAME>bob</NICKNAME>\
         <PHOTO><TYPE>image/png</TYPE><BINVAL>{encoded}</BINVAL></PHOTO></vCard></iq>"
    )));
    let mut profile = Value::Null;
    for _ in 0..100 {
        profile = world
            .server
            .get(&format!("/_matrix/client/v3/profile/{BOB}"), &token)
            .await
            .assert_ok();
        if profile["avatar_url"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(profile["displayname"], "Bob Builder", "{profile}");
    let avatar = profile["avatar_url"].as_str().unwrap();
    let media = avatar.strip_prefix("mxc://").unwrap();
    let download = world
        .server
        .get(
            &format!("/_matrix/client/v1/media/download/{media}"),
            &token,
        )
        .await;
    assert_eq!(download.body, photo);

    // Alice's profile is her vCard.
    let upload = world
        .server
        .raw(
            http::Method::POST,
            "/_matrix/media/v3/upload?filename=alice.png",
            Some(&token),
            Some("image/png"),
            b"alice's picture".to_vec(),
        )
        .await
        .assert_ok();
    for (field, value) in [
        ("displayname", json!({"displayname": "Alice Liddell"})),
        ("avatar_url", json!({"avatar_url": upload["content_uri"]})),
    ] {
        world
            .server
            .put(
                &format!("/_matrix/client/v3/profile/{}/{field}", world.alice),
                &token,
                value,
            )
            .await
            .assert_ok();
    }
    world.peer.send(stanza(
        "<iq xmlns='jabber:server' type='get' id='v1' from='bob@prosody.test/phone' \
         to='alice@gw.test'><vCard xmlns='vcard-temp'/></iq>",
    ));
    let answer = loop {
        if let Stanza::Iq(iq @ Iq::Result { .. }) = world.next().await {
            break iq;
        }
    };
    let Iq::Result {
        id,
        payload: Some(payload),
        to,
        ..
    } = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!(id, "v1");
    assert_eq!(to.unwrap().to_string(), "bob@prosody.test/phone");
    let vcard = xmpp_parsers::vcard::VCard::try_from(payload).unwrap();
    let photo = vcard.photo.unwrap();
    assert_eq!(photo.binval.data, b"alice's picture");
    assert_eq!(photo.type_.data, "image/png");
    let name = vcard
        .payloads
        .iter()
        .find(|e| e.name() == "FN")
        .map(Element::text);
    assert_eq!(name.as_deref(), Some("Alice Liddell"));
    // Nobody's vCard: an error, not an empty card.
    world.peer.send(stanza(
        "<iq xmlns='jabber:server' type='get' id='v2' from='bob@prosody.test/phone' \
         to='nobody@gw.test'><vCard xmlns='vcard-temp'/></iq>",
    ));
    let answer = loop {
        if let Stanza::Iq(iq @ (Iq::Error { .. } | Iq::Result { .. })) = world.next().await {
            break iq;
        }
    };
    assert!(
        matches!(&answer, Iq::Error { id, error, .. } if id == "v2"
            && error.defined_condition == xmpp_parsers::stanza_error::DefinedCondition::ServiceUnavailable),
        "{answer:?}"
    );
}
