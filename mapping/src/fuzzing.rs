//! The entry points of the fuzz targets (`mapping/fuzz`): each takes arbitrary bytes, runs a
//! parser of this crate on them and checks what must hold whatever the input. Plain
//! `cargo test` replays the stored corpus through them (`mapping/tests/fuzz_corpus.rs`).

use crate::address::{Gateway, MatrixRoom, RoomRef};
use crate::content::{html, message, styling};

fn gateway() -> Gateway {
    // A fixed, valid configuration.
    let server = ruma::OwnedServerName::try_from("example.org").ok();
    match server.map(|server| Gateway::new(server, "muc.example.org")) {
        Some(Ok(gateway)) => gateway,
        _ => unreachable!("the fuzzing gateway is valid"),
    }
}

/// JIDs and Matrix ids through the address mappings: whatever is accepted maps back.
pub fn addresses(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let gateway = gateway();
    // What people type: answered, whatever it is.
    let _ = gateway.parse_user(text);
    let _ = gateway.parse_room(text);
    if let Ok(jid) = jid::Jid::new(text) {
        if let Ok(user) = gateway.jid_to_user(&jid) {
            let expected = if jid.domain().as_str() == gateway.domain() {
                jid::Jid::from(jid.to_bare())
            } else {
                jid.clone()
            };
            assert_eq!(gateway.user_to_jid(&user), Ok(expected));
        }
        let bare = jid.to_bare();
        match gateway.muc_to_room(&bare) {
            Ok(MatrixRoom::Alias(alias) | MatrixRoom::Portal(alias)) => {
                assert_eq!(gateway.room_to_muc(RoomRef::Alias(&alias)), Ok(bare));
            }
            Ok(MatrixRoom::Id(id)) => {
                assert_eq!(gateway.room_to_muc(RoomRef::Id(&id)), Ok(bare));
            }
            Err(_) => {}
        }
    }
    if let Ok(user) = ruma::UserId::parse(text)
        && let Ok(jid) = gateway.user_to_jid(&user)
    {
        assert_eq!(gateway.jid_to_user(&jid), Ok(user));
    }
    if let Ok(alias) = ruma::RoomAliasId::parse(text)
        && let Ok(muc) = gateway.room_to_muc(RoomRef::Alias(&alias))
        && muc.domain().as_str() == gateway.muc_domain()
    {
        assert_eq!(gateway.muc_to_room(&muc), Ok(MatrixRoom::Alias(alias)));
    }
    if let Ok(id) = ruma::RoomId::parse(text)
        && let Ok(muc) = gateway.room_to_muc(RoomRef::Id(&id))
    {
        assert_eq!(gateway.muc_to_room(&muc), Ok(MatrixRoom::Id(id)));
    }
}

/// HTML through the sanitiser (a fixed point, nothing executable left) and into styled text.
pub fn html(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let clean = html::sanitize(&text);
    assert_eq!(html::sanitize(&clean), clean);
    // Inside tags: no scripts, styles, frames, event handlers or script links.
    let lower = clean.to_ascii_lowercase();
    for tag in lower
        .split('<')
        .skip(1)
        .map(|rest| rest.split('>').next().unwrap_or_default())
    {
        // Names only: what is between quotes is a value.
        let names: String = tag.split('"').step_by(2).collect();
        for forbidden in ["script", "style", "iframe", " on"] {
            assert!(
                !names.contains(forbidden),
                "{forbidden} in <{tag}> of {clean}"
            );
        }
        for scheme in ["href=\"javascript:", "src=\"javascript:", "href=\"data:"] {
            assert!(!tag.contains(scheme), "{scheme} in <{tag}> of {clean}");
        }
    }
    let styled = html::to_styled(&text);
    let length = styled.text.chars().count();
    for mention in styled.mentions {
        assert!(mention.begin <= mention.end && mention.end <= length);
    }
}

/// Styled text into HTML, which the sanitiser leaves as it is.
pub fn styling(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(html) = styling::to_html(&text) {
        assert_eq!(html::sanitize(&html), html);
    }
}

/// An XMPP message stanza read for Matrix, and the result written back.
pub fn xmpp_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(element) = text.parse::<minidom::Element>() else {
        return;
    };
    let Ok(stanza) = xmpp_parsers::message::Message::try_from(element) else {
        return;
    };
    let gateway = gateway();
    let read = message::from_xmpp(&stanza, &gateway);
    let _ = crate::content::media::shared_files(&stanza);
    if let Some(content) = read.content {
        let content = message::matrix_content(content, None, None);
        let _ = message::to_xmpp(&content, &message::ToXmppRefs::default(), &gateway);
    }
}
