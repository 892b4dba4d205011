//! Serialising what a server sends: the stream header, first-level elements, and the end of
//! the stream (with a stream error before it when there is one).

use minidom::Element;

use crate::error::StreamError;
use crate::ns;
use crate::stream::StreamHeader;

/// Escapes text for an attribute value in single quotes.
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

/// One first-level element. Its namespace is declared on it, so that it stands alone in the
/// stream whatever the stream's default namespace.
pub fn element(element: &Element) -> Result<Vec<u8>, minidom::Error> {
    let mut out = Vec::new();
    element.write_to(&mut out)?;
    Ok(out)
}

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
