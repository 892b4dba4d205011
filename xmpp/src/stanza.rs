//! Inbound stanzas: the checks of RFC 6120 §4.9.3 and §8.1 on a first-level element received
//! from an authenticated server, and its conversion to xmpp-parsers types.

use jid::{BareJid, Jid};
use minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::Message;
use xmpp_parsers::presence::Presence;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::error::{StreamError, StreamErrorCondition};
use crate::ns;

/// A stanza, in the `jabber:client` namespace that xmpp-parsers reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Stanza {
    Message(Message),
    Presence(Presence),
    Iq(Iq),
}

impl Stanza {
    pub fn from(&self) -> Option<&Jid> {
        match self {
            Stanza::Message(message) => message.from.as_ref(),
            Stanza::Presence(presence) => presence.from.as_ref(),
            Stanza::Iq(iq) => iq.from(),
        }
    }

    pub fn to(&self) -> Option<&Jid> {
        match self {
            Stanza::Message(message) => message.to.as_ref(),
            Stanza::Presence(presence) => presence.to.as_ref(),
            Stanza::Iq(iq) => iq.to(),
        }
    }

    /// The element to send to another server (`jabber:server`).
    pub fn to_server_element(&self) -> Element {
        let element = match self {
            Stanza::Message(message) => Element::from(message.clone()),
            Stanza::Presence(presence) => Element::from(presence.clone()),
            Stanza::Iq(iq) => Element::from(iq.clone()),
        };
        ns::to_server(element)
    }
}

/// Why an inbound element was not accepted.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// The stream must end with this error (RFC 6120 §4.9.3).
    Stream(StreamError),
    /// The stanza is answered with this error and the stream goes on.
    Stanza(Box<Stanza>),
    /// The stanza is dropped without an answer (errors are never answered with errors).
    Drop,
}

/// Checks the addresses of a stanza received from a server and converts it.
///
/// `authenticated` tells whether a domain was authenticated on the stream (for `from`);
/// `served` whether a domain is one of ours (for `to`).
pub fn accept_inbound(
    element: Element,
    authenticated: impl Fn(&str) -> bool,
    served: impl Fn(&str) -> bool,
) -> Result<Stanza, Rejection> {
    let stream_error =
        |condition, text: &str| Err(Rejection::Stream(StreamError::new(condition, text)));
    let is_stanza = matches!(element.name(), "message" | "presence" | "iq");
    if !is_stanza || element.ns() != ns::JABBER_SERVER {
        return stream_error(
            StreamErrorCondition::UnsupportedStanzaType,
            "only message, presence and iq in jabber:server are stanzas",
        );
    }
    // Between servers both addresses are required (RFC 6120 §8.1.1.2, §8.1.2.2).
    let (Some(from), Some(to)) = (element.attr("from"), element.attr("to")) else {
        return stream_error(
            StreamErrorCondition::ImproperAddressing,
            "a stanza between servers needs both 'from' and 'to'",
        );
    };
    let id = element.attr("id").map(str::to_owned);
    let kind = element.name().to_owned();
    let is_error = element.attr("type") == Some("error");
    let from: Jid = match from.parse() {
        Ok(jid) => jid,
        Err(_) => {
            // RFC 7622 allows characters in resources (emoji, for one) that the stringprep of
            // Unicode 3.2 behind xmpp-parsers refuses. Such a stanza is refused to its sender's
            // bare JID; the stream, and everyone else's stanzas on it, go on.
            let bare = from
                .split('/')
                .next()
                .and_then(|bare| bare.parse::<BareJid>().ok());
            return match bare {
                Some(bare) if from.contains('/') && authenticated(bare.domain().as_str()) => {
                    Err(bounce(
                        &kind,
                        is_error,
                        &Jid::from(bare),
                        to.parse::<Jid>().ok().as_ref(),
                        id,
                        DefinedCondition::NotAcceptable,
                        "this server cannot handle the characters of the sender's resource",
                    ))
                }
                _ => stream_error(StreamErrorCondition::InvalidFrom, "'from' is not a JID"),
            };
        }
    };
    if !authenticated(from.domain().as_str()) {
        return stream_error(
            StreamErrorCondition::InvalidFrom,
            "'from' is not a domain authenticated on this stream",
        );
    }
    let to: Jid = match to.parse() {
        Ok(jid) => jid,
        Err(_) => {
            return Err(bounce(
                &kind,
                is_error,
                &from,
                None,
                id,
                DefinedCondition::JidMalformed,
                "'to' is not a JID",
            ));
        }
    };
    if !served(to.domain().as_str()) {
        return stream_error(
            StreamErrorCondition::HostUnknown,
            "'to' is not a domain served here",
        );
    }
    let client = ns::from_server(element);
    let parsed = match kind.as_str() {
        "message" => Message::try_from(client).map(Stanza::Message),
        "presence" => Presence::try_from(client).map(Stanza::Presence),
        _ => Iq::try_from(client).map(Stanza::Iq),
    };
    parsed.map_err(|error| {
        bounce(
            &kind,
            is_error,
            &from,
            Some(&to),
            id,
            DefinedCondition::BadRequest,
            &error.to_string(),
        )
    })
}

/// The error reply to a stanza that cannot be processed (RFC 6120 §8.3), or nothing for a
/// stanza that is itself an error.
pub fn bounce(
    kind: &str,
    is_error: bool,
    sender: &Jid,
    recipient: Option<&Jid>,
    id: Option<String>,
    condition: DefinedCondition,
    text: &str,
) -> Rejection {
    if is_error {
        return Rejection::Drop;
    }
    let error_type = match condition {
        DefinedCondition::BadRequest | DefinedCondition::JidMalformed => ErrorType::Modify,
        DefinedCondition::RemoteServerTimeout | DefinedCondition::ResourceConstraint => {
            ErrorType::Wait
        }
        _ => ErrorType::Cancel,
    };
    let error = StanzaError::new(error_type, condition, "en", text);
    let stanza = match kind {
        "message" => {
            let mut message = Message::error(Some(sender.clone())).with_payload(error);
            message.from = recipient.cloned();
            message.id = id.map(xmpp_parsers::message::Id);
            Stanza::Message(message)
        }
        "presence" => {
            let mut presence = Presence::error()
                .with_to(sender.clone())
                .with_payload(error);
            presence.from = recipient.cloned();
            presence.id = id;
            Stanza::Presence(presence)
        }
        _ => {
            let mut iq = Iq::from_error(id.unwrap_or_default(), error).with_to(sender.clone());
            if let Some(recipient) = recipient {
                iq = iq.with_from(recipient.clone());
            }
            Stanza::Iq(iq)
        }
    };
    Rejection::Stanza(Box::new(stanza))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().expect("test XML")
    }

    fn check(xml: &str) -> Result<Stanza, Rejection> {
        accept_inbound(
            parse(xml),
            |domain| domain == "prosody.test",
            |domain| domain == "gw.test" || domain == "muc.gw.test",
        )
    }

    fn stream_condition(result: Result<Stanza, Rejection>) -> StreamErrorCondition {
        match result {
            Err(Rejection::Stream(error)) => error.condition,
            other => panic!("expected a stream error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_message_is_accepted_and_normalised() {
        let stanza = check(
            "<message xmlns='jabber:server' from='bob@prosody.test/phone' to='alice@gw.test' \
             type='chat' id='m1'><body>hi</body></message>",
        )
        .unwrap();
        let Stanza::Message(message) = &stanza else {
            panic!("{stanza:?}");
        };
        assert_eq!(message.bodies.get("").map(String::as_str), Some("hi"));
        assert_eq!(stanza.from().unwrap().to_string(), "bob@prosody.test/phone");
        assert_eq!(stanza.to().unwrap().to_string(), "alice@gw.test");
        // Back out it is in jabber:server again.
        assert_eq!(stanza.to_server_element().ns(), ns::JABBER_SERVER);
    }

    #[test]
    fn addressing_violations_are_stream_errors() {
        assert_eq!(
            stream_condition(check("<message xmlns='jabber:server' to='alice@gw.test'/>")),
            StreamErrorCondition::ImproperAddressing
        );
        assert_eq!(
            stream_condition(check(
                "<message xmlns='jabber:server' from='eve@evil.test' to='alice@gw.test'/>"
            )),
            StreamErrorCondition::InvalidFrom
        );
        assert_eq!(
            stream_condition(check(
                "<message xmlns='jabber:server' from='@@' to='alice@gw.test'/>"
            )),
            StreamErrorCondition::InvalidFrom
        );
        assert_eq!(
            stream_condition(check(
                "<message xmlns='jabber:server' from='bob@prosody.test' to='x@elsewhere.test'/>"
            )),
            StreamErrorCondition::HostUnknown
        );
        assert_eq!(
            stream_condition(check(
                "<message xmlns='jabber:client' from='bob@prosody.test' to='alice@gw.test'/>"
            )),
            StreamErrorCondition::UnsupportedStanzaType
        );
        assert_eq!(
            stream_condition(check("<foo xmlns='jabber:server'/>")),
            StreamErrorCondition::UnsupportedStanzaType
        );
    }

    #[test]
    fn malformed_stanzas_are_bounced_not_fatal() {
        // An iq without an id or type is a bad request for its sender.
        let result = check("<iq xmlns='jabber:server' from='bob@prosody.test' to='gw.test'/>");
        let Err(Rejection::Stanza(reply)) = result else {
            panic!("{result:?}");
        };
        let Stanza::Iq(Iq::Error { to, error, .. }) = *reply else {
            panic!("{reply:?}");
        };
        assert_eq!(to.unwrap().to_string(), "bob@prosody.test");
        assert_eq!(error.defined_condition, DefinedCondition::BadRequest);
        // A malformed recipient is jid-malformed.
        let result =
            check("<message xmlns='jabber:server' from='bob@prosody.test' to='a@b@c' id='x'/>");
        let Err(Rejection::Stanza(reply)) = result else {
            panic!("{result:?}");
        };
        let Stanza::Message(message) = *reply else {
            panic!("{reply:?}");
        };
        assert_eq!(message.id.unwrap().0, "x");
        // A sender resource xmpp-parsers cannot represent (an emoji) is refused to the bare
        // JID, without ending the stream.
        let result = check(
            "<message xmlns='jabber:server' from='bob@prosody.test/\u{1f980}' to='alice@gw.test' \
             id='crab'><body>hi</body></message>",
        );
        let Err(Rejection::Stanza(reply)) = result else {
            panic!("{result:?}");
        };
        let Stanza::Message(message) = *reply else {
            panic!("{reply:?}");
        };
        assert_eq!(message.to.unwrap().to_string(), "bob@prosody.test");
        assert_eq!(message.from.unwrap().to_string(), "alice@gw.test");
        assert_eq!(message.id.unwrap().0, "crab");
        // But not for a domain the stream has not authenticated.
        assert_eq!(
            stream_condition(check(
                "<message xmlns='jabber:server' from='eve@evil.test/\u{1f980}' to='alice@gw.test'/>"
            )),
            StreamErrorCondition::InvalidFrom
        );
        // An error stanza that cannot be read is dropped, never answered.
        assert_eq!(
            check(
                "<message xmlns='jabber:server' type='error' from='bob@prosody.test' to='a@b@c'/>"
            ),
            Err(Rejection::Drop)
        );
    }
}
