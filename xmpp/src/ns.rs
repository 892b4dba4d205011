//! Namespaces of the protocols this crate speaks, and the normalisation of stanzas between
//! `jabber:server` (on the wire between servers) and `jabber:client` (what xmpp-parsers reads).

use minidom::{Element, Node};

pub const STREAM: &str = "http://etherx.jabber.org/streams";
pub const JABBER_SERVER: &str = "jabber:server";
pub const JABBER_CLIENT: &str = "jabber:client";
pub const DIALBACK: &str = "jabber:server:dialback";
pub const DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// Moves an element and its descendants from namespace `from` to `to`; elements and attributes
/// of every other namespace are kept exactly as they are.
pub fn rename_namespace(element: Element, from: &str, to: &str) -> Element {
    let namespace = element.ns();
    let target = if namespace == from {
        to
    } else {
        namespace.as_str()
    };
    let mut renamed = Element::bare(element.name(), target);
    *renamed.attrs_mut() = element.attrs().clone();
    let mut element = element;
    for node in element.take_nodes() {
        match node {
            Node::Element(child) => {
                renamed.append_child(rename_namespace(child, from, to));
            }
            Node::Text(text) => renamed.append_text_node(text),
        }
    }
    renamed
}

/// A stanza received from a server, in the namespace xmpp-parsers reads.
pub fn from_server(element: Element) -> Element {
    rename_namespace(element, JABBER_SERVER, JABBER_CLIENT)
}

/// A stanza built with xmpp-parsers, in the namespace servers speak to each other.
pub fn to_server(element: Element) -> Element {
    rename_namespace(element, JABBER_CLIENT, JABBER_SERVER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stanza_namespace_moves() {
        let stanza: Element = "<message xmlns='jabber:server' to='a@b' type='chat'><body>hi</body>\
            <x xmlns='urn:example' k='v'><y/></x><error type='cancel'><item-not-found \
            xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
            .parse()
            .unwrap();
        let client = from_server(stanza.clone());
        assert!(client.is("message", JABBER_CLIENT));
        assert_eq!(client.attr("to"), Some("a@b"));
        assert_eq!(
            client.get_child("body", JABBER_CLIENT).unwrap().text(),
            "hi"
        );
        let x = client.get_child("x", "urn:example").unwrap();
        assert_eq!(x.attr("k"), Some("v"));
        assert!(x.has_child("y", "urn:example"));
        let error = client.get_child("error", JABBER_CLIENT).unwrap();
        assert!(error.has_child("item-not-found", STANZA_ERRORS));
        // xmpp-parsers reads the normalised stanza.
        let message = xmpp_parsers::message::Message::try_from(client.clone()).unwrap();
        assert_eq!(message.to.unwrap().to_string(), "a@b");
        // And the way back gives the original.
        assert_eq!(to_server(client), stanza);
    }
}
