//! Room metadata between MUCs and Matrix rooms: the subject and the topic, the name, the
//! avatar (XEP-0486: the MUC's vCard photo, announced by its hash in disco#info).

use minidom::Element;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Lang, Message, MessageType};
use xmpp_parsers::vcard::{Binval, Photo, Type, VCard};

/// Namespaces of room metadata.
pub mod ns {
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    pub const DATA_FORMS: &str = "jabber:x:data";
}

/// The topic a MUC subject message sets (XEP-0045 §8.1): the subject's text, empty when it is
/// cleared. `None` for messages that set no subject (or carry a body, which makes them
/// ordinary messages that happen to have a subject).
pub fn subject_to_topic(message: &Message) -> Option<String> {
    if message.type_ != MessageType::Groupchat || !message.bodies.is_empty() {
        return None;
    }
    let subject = message
        .subjects
        .get(&Lang::default())
        .or_else(|| message.subjects.values().next())?;
    Some(subject.trim().to_owned())
}

/// The MUC message that sets the subject to a Matrix room's topic (an empty topic clears it).
pub fn topic_to_subject(topic: &str) -> Message {
    let mut message = Message::new(None);
    message.type_ = MessageType::Groupchat;
    message.subjects.insert(Lang::default(), topic.to_owned());
    message
}

/// The name of a MUC from its disco#info answer: the room information form's
/// `muc#roomconfig_roomname`, or else the name of its conference identity.
pub fn room_name(disco_info: &Element) -> Option<String> {
    let from_form = disco_info
        .children()
        .filter(|child| child.is("x", ns::DATA_FORMS))
        .flat_map(|form| form.children())
        .filter(|field| field.attr("var") == Some("muc#roomconfig_roomname"))
        .find_map(|field| {
            field
                .children()
                .find(|c| c.name() == "value")
                .map(Element::text)
        });
    let from_identity = || {
        disco_info
            .children()
            .filter(|child| child.is("identity", ns::DISCO_INFO))
            .find(|identity| identity.attr("category") == Some("conference"))
            .and_then(|identity| identity.attr("name"))
            .map(str::to_owned)
    };
    from_form
        .or_else(from_identity)
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// An image: its media type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avatar {
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// The avatar in a MUC's (or a user's) vCard, if it has one.
pub fn avatar_from_vcard(vcard: &Element) -> Option<Avatar> {
    let vcard = VCard::try_from(vcard.clone()).ok()?;
    let photo = vcard.photo?;
    if photo.binval.data.is_empty() {
        return None;
    }
    Some(Avatar {
        media_type: photo.type_.data,
        bytes: photo.binval.data,
    })
}

/// The vCard publishing an avatar.
pub fn vcard_with_avatar(avatar: &Avatar) -> Element {
    Element::from(VCard {
        photo: Some(Photo {
            type_: Type {
                data: avatar.media_type.clone(),
            },
            binval: Binval {
                data: avatar.bytes.clone(),
            },
        }),
        payloads: Vec::new(),
    })
}

/// The hash that announces an avatar (`muc#roominfo_avatarhash`, XEP-0153 `<photo/>`): SHA-1
/// of its bytes, in lower-case hex.
pub fn avatar_hash(avatar: &Avatar) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(&avatar.bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The avatar hash a MUC's disco#info announces; an empty value says it has none.
pub fn announced_avatar_hash(disco_info: &Element) -> Option<String> {
    disco_info
        .children()
        .filter(|child| child.is("x", ns::DATA_FORMS))
        .flat_map(|form| form.children())
        .filter(|field| field.attr("var") == Some("muc#roominfo_avatarhash"))
        .find_map(|field| {
            field
                .children()
                .find(|c| c.name() == "value")
                .map(Element::text)
        })
        .map(|hash| hash.trim().to_ascii_lowercase())
}

/// An invitation to a MUC: XEP-0249 (`jabber:x:conference`, from the inviter) or mediated by
/// the MUC (XEP-0045 §7.8.2, `<invite/>` in `muc#user`, from the room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub room: BareJid,
    /// Who invites: the sender of a direct invitation, the `from` of a mediated one.
    pub inviter: Option<Jid>,
    pub reason: Option<String>,
    pub password: Option<String>,
}

const CONFERENCE: &str = "jabber:x:conference";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// The invitation a message carries, if any. A mediated one counts only from the room's bare
/// JID; a direct one names the room in `jid`.
pub fn invitation(message: &Message) -> Option<Invitation> {
    if matches!(message.type_, MessageType::Groupchat | MessageType::Error) {
        return None;
    }
    let text = |value: Option<&str>| {
        value
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    // A mediated invitation first: a MUC may add a direct one to it (naming itself as the
    // inviter), which says less.
    let from_room = message
        .from
        .as_ref()
        .filter(|from| from.resource().is_none() && from.node().is_some());
    let mediated = message
        .payloads
        .iter()
        .filter(|p| p.is("x", MUC_USER))
        .find_map(|x| Some((x, x.get_child("invite", MUC_USER)?)));
    if let (Some(from), Some((x, invite))) = (from_room, mediated) {
        return Some(Invitation {
            room: from.to_bare(),
            inviter: invite.attr("from").and_then(|from| Jid::new(from).ok()),
            reason: text(
                invite
                    .get_child("reason", MUC_USER)
                    .map(Element::text)
                    .as_deref(),
            ),
            password: text(
                x.get_child("password", MUC_USER)
                    .map(Element::text)
                    .as_deref(),
            ),
        });
    }
    let x = message.payloads.iter().find(|p| p.is("x", CONFERENCE))?;
    let room = BareJid::new(x.attr("jid")?).ok()?;
    room.node()?;
    Some(Invitation {
        room,
        inviter: message.from.clone(),
        reason: text(x.attr("reason")),
        password: text(x.attr("password")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avatars() {
        let avatar = Avatar {
            media_type: "image/png".into(),
            bytes: b"\x89PNG not really".to_vec(),
        };
        let vcard = vcard_with_avatar(&avatar);
        assert!(vcard.is("vCard", "vcard-temp"));
        assert_eq!(avatar_from_vcard(&vcard), Some(avatar.clone()));
        assert_eq!(avatar_hash(&avatar).len(), 40);
        // The hash of the empty string, as everyone computes it.
        let empty = Avatar {
            media_type: "image/png".into(),
            bytes: vec![],
        };
        assert_eq!(
            avatar_hash(&empty),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        let none: Element = "<vCard xmlns='vcard-temp'/>".parse().unwrap();
        assert_eq!(avatar_from_vcard(&none), None);
        let info: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <x xmlns='jabber:x:data' type='result'>\
            <field var='muc#roominfo_avatarhash'><value>DA39A3EE5E6B4B0D3255BFEF95601890AFD80709</value></field>\
            </x></query>"
            .parse()
            .unwrap();
        assert_eq!(
            announced_avatar_hash(&info).as_deref(),
            Some("da39a3ee5e6b4b0d3255bfef95601890afd80709")
        );
    }

    fn message(xml: &str) -> Message {
        Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    #[test]
    fn subjects_and_topics() {
        let set = message(
            "<message xmlns='jabber:client' type='groupchat' from='room@conference.jabber.de/owner'>\
             <subject>Fire Burn and Cauldron Bubble!</subject></message>",
        );
        assert_eq!(
            subject_to_topic(&set).as_deref(),
            Some("Fire Burn and Cauldron Bubble!")
        );
        let cleared = message(
            "<message xmlns='jabber:client' type='groupchat' from='room@conference.jabber.de'>\
             <subject/></message>",
        );
        assert_eq!(subject_to_topic(&cleared).as_deref(), Some(""));
        // A message with a body and a subject is a message; a chat subject is no topic.
        let with_body = message(
            "<message xmlns='jabber:client' type='groupchat'><subject>s</subject><body>b</body></message>",
        );
        assert_eq!(subject_to_topic(&with_body), None);
        let chat =
            message("<message xmlns='jabber:client' type='chat'><subject>s</subject></message>");
        assert_eq!(subject_to_topic(&chat), None);
        for topic in ["A topic", ""] {
            assert_eq!(
                subject_to_topic(&topic_to_subject(topic)).as_deref(),
                Some(topic)
            );
        }
    }

    #[test]
    fn names_from_disco() {
        let info: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity category='conference' type='text' name='Identity Name'/>\
            <x xmlns='jabber:x:data' type='result'>\
            <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roominfo</value></field>\
            <field var='muc#roomconfig_roomname'><value>The Coven</value></field></x></query>"
            .parse()
            .unwrap();
        assert_eq!(room_name(&info).as_deref(), Some("The Coven"));
        let info: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity category='conference' type='text' name='Identity Name'/></query>"
            .parse()
            .unwrap();
        assert_eq!(room_name(&info).as_deref(), Some("Identity Name"));
        let info: Element = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
            .parse()
            .unwrap();
        assert_eq!(room_name(&info), None);
    }

    #[test]
    fn direct_invitations_name_the_room_and_the_inviter() {
        let invitation = invitation(&message(
            "<message xmlns='jabber:client' from='crone@shakespeare.lit/desktop' \
             to='hecate@example.org'><x xmlns='jabber:x:conference' \
             jid='darkcave@macbeth.shakespeare.lit' password='cauldronburn' \
             reason='Hey Hecate, this is the place for all good witches!'/></message>",
        ))
        .expect("an invitation");
        assert_eq!(invitation.room.as_str(), "darkcave@macbeth.shakespeare.lit");
        assert_eq!(
            invitation.inviter.as_ref().map(Jid::as_str),
            Some("crone@shakespeare.lit/desktop")
        );
        assert_eq!(
            invitation.reason.as_deref(),
            Some("Hey Hecate, this is the place for all good witches!")
        );
        assert_eq!(invitation.password.as_deref(), Some("cauldronburn"));
    }

    #[test]
    fn mediated_invitations_count_only_from_the_room() {
        let mediated = "<message xmlns='jabber:client' from='coven@chat.shakespeare.lit' \
             to='hecate@example.org'><x xmlns='http://jabber.org/protocol/muc#user'>\
             <invite from='crone@shakespeare.lit/desktop'><reason>Hey Hecate, \
             this is the place for all good witches!</reason></invite>\
             <password>cauldronburn</password></x></message>";
        let invitation = invitation(&message(mediated)).expect("an invitation");
        assert_eq!(invitation.room.as_str(), "coven@chat.shakespeare.lit");
        assert_eq!(
            invitation.inviter.as_ref().map(Jid::as_str),
            Some("crone@shakespeare.lit/desktop")
        );
        assert_eq!(
            invitation.reason.as_deref(),
            Some("Hey Hecate, this is the place for all good witches!")
        );
        assert_eq!(invitation.password.as_deref(), Some("cauldronburn"));
        // With a direct invitation added by the room (as Prosody does): the mediated one.
        let both = mediated.replace(
            "</x></message>",
            "</x><x xmlns='jabber:x:conference' jid='coven@chat.shakespeare.lit'/></message>",
        );
        assert_eq!(super::invitation(&message(&both)), Some(invitation));
        // From an occupant, or a server: not the room's invitation.
        let occupant = mediated.replace(
            "from='coven@chat.shakespeare.lit'",
            "from='coven@chat.shakespeare.lit/thirdwitch'",
        );
        assert_eq!(super::invitation(&message(&occupant)), None);
        let server = mediated.replace(
            "from='coven@chat.shakespeare.lit'",
            "from='chat.shakespeare.lit'",
        );
        assert_eq!(super::invitation(&message(&server)), None);
    }

    #[test]
    fn what_is_not_an_invitation_is_none() {
        // No room, a room without a node, a groupchat message, a decline.
        for xml in [
            "<message xmlns='jabber:client' from='a@b/c'><x xmlns='jabber:x:conference'/></message>",
            "<message xmlns='jabber:client' from='a@b/c'><x xmlns='jabber:x:conference' jid='muc.b'/></message>",
            "<message xmlns='jabber:client' from='a@b/c' type='groupchat'><x xmlns='jabber:x:conference' jid='r@muc.b'/></message>",
            "<message xmlns='jabber:client' from='r@muc.b'><x xmlns='http://jabber.org/protocol/muc#user'><decline from='a@b'/></x></message>",
            "<message xmlns='jabber:client' from='a@b/c'><body>hi</body></message>",
        ] {
            assert_eq!(invitation(&message(xml)), None, "{xml}");
        }
    }
}
