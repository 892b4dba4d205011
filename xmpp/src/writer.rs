//! Serialising what a server sends: the stream header, first-level elements, and the end of
//! the stream (with a stream error before it when there is one).

use minidom::{Element, Node};

use crate::error::StreamError;
use crate::ns;
use crate::stream::StreamHeader;

/// Escapes text for an attribute value in single quotes (or for character data).
pub(crate) fn escape_attribute(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '\'' => escaped.push_str("&apos;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The XML declaration and opening tag of a server-to-server stream. `dialback` declares the
/// `db` prefix of XEP-0220, which peers expect on streams that may use dialback.
pub fn stream_header(header: &StreamHeader, dialback: bool) -> Vec<u8> {
    let mut out = String::from("<?xml version='1.0'?><stream:stream xmlns='");
    out.push_str(ns::JABBER_SERVER);
    out.push_str("' xmlns:stream='");
    out.push_str(ns::STREAM);
    out.push('\'');
    if dialback {
        out.push_str(" xmlns:db='");
        out.push_str(ns::DIALBACK);
        out.push('\'');
    }
    for (name, value) in [
        ("from", &header.from),
        ("to", &header.to),
        ("id", &header.id),
        ("version", &header.version),
        ("xml:lang", &header.lang),
    ] {
        if let Some(value) = value {
            out.push(' ');
            out.push_str(name);
            out.push_str("='");
            out.push_str(&escape_attribute(value));
            out.push('\'');
        }
    }
    out.push('>');
    out.into_bytes()
}

/// The prefix a first-level element of `namespace` is written with: the ones declared on every
/// stream header this server sends. RFC 6120 writes stream-level elements as `<stream:features>`
/// and `<stream:error>`, XEP-0220 its elements as `<db:result>` and `<db:verify>`, and some
/// servers (ejabberd) recognise them only in that form, by their prefixed names.
fn declared_prefix(namespace: &str) -> Option<&'static str> {
    match namespace {
        ns::STREAM => Some("stream"),
        ns::DIALBACK => Some("db"),
        _ => None,
    }
}

/// One first-level element. An element of the streams or dialback namespace is written with
/// the prefix the stream header declares (`<stream:features>`); any other declares its
/// namespace on itself, so that it stands alone in the stream whatever the stream's default
/// namespace. Children always declare their own namespace.
pub fn element(element: &Element) -> Result<Vec<u8>, minidom::Error> {
    let mut out = Vec::new();
    let Some(prefix) = declared_prefix(&element.ns()) else {
        element.write_to(&mut out)?;
        return Ok(out);
    };
    let name = element.name();
    out.extend_from_slice(format!("<{prefix}:{name}").as_bytes());
    for ((namespace, attribute), value) in element.attrs() {
        // Only unqualified attributes and those of the `xml` prefix need no declaration.
        let qualifier = if namespace.is_none() {
            ""
        } else if namespace.as_str() == XML_NAMESPACE {
            "xml:"
        } else {
            return Err(minidom::Error::InvalidPrefix);
        };
        out.extend_from_slice(
            format!(" {qualifier}{attribute}='{}'", escape_attribute(value)).as_bytes(),
        );
    }
    if element.nodes().next().is_none() {
        out.extend_from_slice(b"/>");
        return Ok(out);
    }
    out.push(b'>');
    for node in element.nodes() {
        match node {
            Node::Element(child) => child.write_to(&mut out)?,
            // Escaped as attributes are: quotes as entities are valid in text too.
            Node::Text(text) => out.extend_from_slice(escape_attribute(text).as_bytes()),
        }
    }
    out.extend_from_slice(format!("</{prefix}:{name}>").as_bytes());
    Ok(out)
}

/// The namespace bound to the `xml` prefix.
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

/// The closing tag of the stream.
pub const STREAM_END: &[u8] = b"</stream:stream>";

/// A stream error followed by the closing tag.
pub fn stream_error(error: &StreamError) -> Result<Vec<u8>, minidom::Error> {
    let mut out = self::element(&error.to_element())?;
    out.extend_from_slice(STREAM_END);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StreamErrorCondition;
    use crate::stream::{Limits, StreamItem, StreamParser};

    /// Stream-level elements are written as RFC 6120 writes them, which is the only form
    /// prefix-strict servers (ejabberd) recognise.
    #[test]
    fn stream_level_elements_carry_the_declared_prefixes() {
        let header = StreamHeader {
            from: Some("gw.test".into()),
            to: Some("ejabberd.test".into()),
            id: Some("s1".into()),
            version: Some("1.0".into()),
            lang: None,
        };
        let features = Element::builder("features", ns::STREAM)
            .append(
                Element::builder("starttls", ns::TLS)
                    .append(Element::bare("required", ns::TLS))
                    .build(),
            )
            .append(crate::dialback::feature())
            .build();
        let mut bytes = stream_header(&header, true);
        bytes.extend(element(&features).unwrap());
        bytes.extend(
            element(
                &Element::builder("verify", ns::DIALBACK)
                    .attr(rxml::xml_ncname!("id").to_owned(), "s1")
                    .append("k&y")
                    .build(),
            )
            .unwrap(),
        );
        bytes.extend(
            stream_error(&StreamError::new(
                StreamErrorCondition::HostUnknown,
                "no <such> host",
            ))
            .unwrap(),
        );
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("<stream:features><starttls "), "{text}");
        assert!(text.contains("</stream:features>"), "{text}");
        assert!(
            text.contains("<db:verify id='s1'>k&amp;y</db:verify>"),
            "{text}"
        );
        assert!(text.contains("<stream:error><host-unknown "), "{text}");
        assert!(text.ends_with("</stream:error></stream:stream>"), "{text}");
        assert_eq!(
            crate::testing::strict_first_level_names(&bytes),
            Ok(vec![
                "stream:features".to_owned(),
                "db:verify".to_owned(),
                "stream:error".to_owned()
            ])
        );
        // And the namespace-aware parser reads the same elements back.
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(&bytes, true).unwrap();
        let items: Vec<StreamItem> = std::iter::from_fn(|| parser.next_item()).collect();
        assert_eq!(items[1], StreamItem::Element(features));
        let StreamItem::Element(verify) = &items[2] else {
            panic!("{items:?}");
        };
        assert_eq!((verify.name(), verify.text().as_str()), ("verify", "k&y"));
        assert!(verify.is("verify", ns::DIALBACK));
        let StreamItem::Element(error) = &items[3] else {
            panic!("{items:?}");
        };
        assert_eq!(
            error.get_child("text", ns::STREAM_ERRORS).unwrap().text(),
            "no <such> host"
        );
    }

    /// A namespaced attribute other than `xml:` cannot be written on a prefixed element.
    #[test]
    fn foreign_attributes_on_stream_elements_are_refused() {
        let mut error = Element::bare("error", ns::STREAM);
        error.attrs_mut().insert(
            rxml::Namespace::from("urn:example"),
            rxml::xml_ncname!("x").to_owned(),
            "1".into(),
        );
        assert!(element(&error).is_err());
    }

    /// What the writer produces, the parser reads back.
    #[test]
    fn round_trip_through_the_parser() {
        let header = StreamHeader {
            from: Some("gw.test".into()),
            to: Some("prosody.test".into()),
            id: Some("a'b<c".into()),
            version: Some("1.0".into()),
            lang: Some("en".into()),
        };
        let stanza: Element =
            "<message xmlns='jabber:server' to='x@prosody.test'><body>a &lt; b</body>\
            <reply xmlns='urn:xmpp:reply:0' id='r1'/></message>"
                .parse()
                .unwrap();
        let mut bytes = stream_header(&header, true);
        bytes.extend(element(&stanza).unwrap());
        bytes.extend(
            element(
                &Element::builder("result", ns::DIALBACK)
                    .attr(rxml::xml_ncname!("to").to_owned(), "gw.test")
                    .build(),
            )
            .unwrap(),
        );
        bytes.extend(
            stream_error(&StreamError::new(
                StreamErrorCondition::HostUnknown,
                "no such host",
            ))
            .unwrap(),
        );
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(&bytes, true).unwrap();
        let items: Vec<StreamItem> = std::iter::from_fn(|| parser.next_item()).collect();
        let StreamItem::Header(read) = &items[0] else {
            panic!("{items:?}");
        };
        assert_eq!(read.id.as_deref(), Some("a'b<c"));
        assert_eq!(read.lang.as_deref(), Some("en"));
        assert_eq!(read.to.as_deref(), Some("prosody.test"));
        assert_eq!(items[1], StreamItem::Element(stanza));
        let StreamItem::Element(dialback) = &items[2] else {
            panic!("{items:?}");
        };
        assert!(dialback.is("result", ns::DIALBACK));
        let StreamItem::Element(error) = &items[3] else {
            panic!("{items:?}");
        };
        assert!(error.has_child("host-unknown", ns::STREAM_ERRORS));
        assert_eq!(items[4], StreamItem::End);
    }
}
