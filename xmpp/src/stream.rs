//! XML stream framing (RFC 6120 §4): the stream header, the stanzas (first-level children of
//! the stream), and the end of the stream, read incrementally from bytes as they arrive.
//!
//! [`StreamParser`] is sans-I/O: bytes go in with [`StreamParser::feed`], items come out. It
//! enforces the restricted XML of RFC 6120 §11 (no comments, processing instructions, DTDs or
//! undeclared entities; rxml refuses them) and this server's limits on stanza size and depth.
//! Stanzas keep their namespaces as received; [`crate::ns`] normalises `jabber:server`.

use minidom::Element;
use rxml::{Event, Parse, Parser, WithOptions};

use crate::error::{StreamError, StreamErrorCondition};
use crate::ns;

/// Limits applied to every stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes one stanza may take on the wire.
    pub max_stanza_bytes: usize,
    /// The deepest nesting of elements inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// The most bytes of whitespace between stanzas before the next stanza starts.
    pub max_whitespace_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_whitespace_bytes: 64 * 1024,
        }
    }
}

/// The attributes of a stream header (RFC 6120 §4.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamHeader {
    pub from: Option<String>,
    pub to: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
}

impl StreamHeader {
    /// Whether the header announces XMPP 1.0 or later (features and SASL).
    pub fn is_version_1(&self) -> bool {
        self.version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse::<u32>().ok())
            .is_some_and(|major| major >= 1)
    }
}

/// What a stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The opening `<stream:stream>` tag.
    Header(StreamHeader),
    /// A complete first-level element: a stanza or a negotiation element.
    Element(Element),
    /// The closing `</stream:stream>` tag.
    End,
}

#[derive(Debug)]
enum State {
    /// Before the stream header.
    Start,
    /// Inside the stream, between or within stanzas.
    Open,
    /// After the closing tag.
    Closed,
}

/// The incremental reader of one XML stream.
#[derive(Debug)]
pub struct StreamParser {
    parser: Parser,
    limits: Limits,
    state: State,
    /// The elements of the stanza being read, outermost first.
    stack: Vec<Element>,
    /// Bytes of the stanza being read so far.
    stanza_bytes: usize,
    /// Bytes of whitespace since the last stanza.
    whitespace_bytes: usize,
    /// Input not yet consumed by the parser.
    pending: Vec<u8>,
    items: std::collections::VecDeque<StreamItem>,
}

impl StreamParser {
    pub fn new(limits: Limits) -> StreamParser {
        // No single token (a name, an attribute value, a run of text) may exceed a stanza.
        let options = rxml::parser::Options {
            max_token_length: limits.max_stanza_bytes,
            ..Default::default()
        };
        StreamParser {
            parser: Parser::with_options(options),
            limits,
            state: State::Start,
            stack: Vec::new(),
            stanza_bytes: 0,
            whitespace_bytes: 0,
            pending: Vec::new(),
            items: std::collections::VecDeque::new(),
        }
    }

    /// Starts a new stream on the same connection, as after STARTTLS or SASL (RFC 6120 §4.3.3).
    pub fn reset(&mut self) {
        *self = StreamParser::new(self.limits);
    }

    /// The next complete item, if any.
    pub fn next_item(&mut self) -> Option<StreamItem> {
        self.items.pop_front()
    }

    /// Feeds bytes from the connection; `at_eof` when the connection has closed. Fails with
    /// the stream error to send before closing.
    pub fn feed(&mut self, data: &[u8], at_eof: bool) -> Result<(), StreamError> {
        self.pending.extend_from_slice(data);
        let mut buffer = std::mem::take(&mut self.pending);
        let mut input: &[u8] = &buffer;
        let result = loop {
            if matches!(self.state, State::Closed) {
                if input.iter().any(|b| !b.is_ascii_whitespace()) {
                    break Err(StreamError::new(
                        StreamErrorCondition::NotWellFormed,
                        "data after the end of the stream",
                    ));
                }
                input = &[];
                break Ok(());
            }
            let before = input.len();
            match self.parser.parse(&mut input, at_eof) {
                Ok(Some(event)) => {
                    if let Err(error) = self.handle(event) {
                        break Err(error);
                    }
                }
                Ok(None) => {
                    // The document ended: the stream was closed.
                    if !matches!(self.state, State::Closed) {
                        self.state = State::Closed;
                        self.items.push_back(StreamItem::End);
                    }
                    break Ok(());
                }
                Err(rxml::error::EndOrError::NeedMoreData) => {
                    // A token still incomplete counts towards the stanza limit.
                    let unconsumed = input.len();
                    if self.stanza_bytes + unconsumed > self.limits.max_stanza_bytes
                        && unconsumed == before
                    {
                        break Err(StreamError::new(
                            StreamErrorCondition::PolicyViolation,
                            "stanza too large",
                        ));
                    }
                    break Ok(());
                }
                Err(rxml::error::EndOrError::Error(error)) => {
                    break Err(xml_error(&error));
                }
            }
        };
        let consumed = buffer.len() - input.len();
        buffer.drain(..consumed);
        self.pending = buffer;
        if self.pending.len() > self.limits.max_stanza_bytes {
            return Err(StreamError::new(
                StreamErrorCondition::PolicyViolation,
                "stanza too large",
            ));
        }
        result
    }

    fn handle(&mut self, event: Event) -> Result<(), StreamError> {
        let length = event.metrics().len();
        match (&self.state, event) {
            (State::Start, Event::XmlDeclaration(..)) => Ok(()),
            (State::Start, Event::StartElement(_, (namespace, name), attributes)) => {
                if name.as_str() != "stream" || namespace.as_str() != ns::STREAM {
                    return Err(StreamError::new(
                        StreamErrorCondition::InvalidNamespace,
                        "the stream must open with <stream:stream> in the streams namespace",
                    ));
                }
                let attribute = |key: &str| {
                    attributes
                        .get(&rxml::Namespace::NONE, key)
                        .map(|value| value.to_owned())
                };
                let lang = attributes
                    .get(rxml::Namespace::xml(), "lang")
                    .map(|value| value.to_owned());
                let header = StreamHeader {
                    from: attribute("from"),
                    to: attribute("to"),
                    id: attribute("id"),
                    version: attribute("version"),
                    lang,
                };
                self.state = State::Open;
                self.items.push_back(StreamItem::Header(header));
                Ok(())
            }
            (State::Start, Event::Text(..)) => Ok(()),
            (State::Start, _) => Err(StreamError::new(
                StreamErrorCondition::NotWellFormed,
                "the stream must start with <stream:stream>",
            )),
            (State::Open, Event::StartElement(_, (namespace, name), attributes)) => {
                if self.stack.is_empty() {
                    self.stanza_bytes = 0;
                    self.whitespace_bytes = 0;
                }
                self.count(length)?;
                if self.stack.len() >= self.limits.max_depth {
                    return Err(StreamError::new(
                        StreamErrorCondition::PolicyViolation,
                        "elements nested too deeply",
                    ));
                }
                let mut element = Element::bare(name.as_str(), namespace.as_str());
                *element.attrs_mut() = attributes;
                self.stack.push(element);
                Ok(())
            }
            (State::Open, Event::Text(_, text)) => {
                if !self.stack.is_empty() {
                    self.count(length)?;
                }
                match self.stack.last_mut() {
                    Some(top) => top.append_text(text),
                    None => {
                        // Between stanzas only whitespace (keep-alives) is allowed.
                        if !text.chars().all(|c| c.is_ascii_whitespace()) {
                            return Err(StreamError::new(
                                StreamErrorCondition::BadFormat,
                                "text between stanzas",
                            ));
                        }
                        self.whitespace_bytes += length;
                        if self.whitespace_bytes > self.limits.max_whitespace_bytes {
                            return Err(StreamError::new(
                                StreamErrorCondition::PolicyViolation,
                                "too much whitespace",
                            ));
                        }
                    }
                }
                Ok(())
            }
            (State::Open, Event::EndElement(_)) => {
                match self.stack.pop() {
                    Some(element) => {
                        self.count(length)?;
                        match self.stack.last_mut() {
                            Some(parent) => {
                                parent.append_child(element);
                            }
                            None => self.items.push_back(StreamItem::Element(element)),
                        }
                    }
                    None => {
                        self.state = State::Closed;
                        self.items.push_back(StreamItem::End);
                    }
                }
                Ok(())
            }
            (State::Open, Event::XmlDeclaration(..)) => Err(StreamError::new(
                StreamErrorCondition::NotWellFormed,
                "an XML declaration inside the stream",
            )),
            (State::Closed, _) => Err(StreamError::new(
                StreamErrorCondition::NotWellFormed,
                "data after the end of the stream",
            )),
        }
    }

    fn count(&mut self, length: usize) -> Result<(), StreamError> {
        self.stanza_bytes += length;
        if self.stanza_bytes > self.limits.max_stanza_bytes {
            return Err(StreamError::new(
                StreamErrorCondition::PolicyViolation,
                "stanza too large",
            ));
        }
        Ok(())
    }
}

/// The stream error for XML the parser refused.
fn xml_error(error: &rxml::Error) -> StreamError {
    use rxml::Error as E;
    let condition = match error {
        E::UndeclaredNamespacePrefix(_) | E::ReservedNamespacePrefix => {
            StreamErrorCondition::BadNamespacePrefix
        }
        // Tokens longer than the parser's limit are over this server's limits.
        E::RestrictedXml("event too long" | "long name or reference") => {
            StreamErrorCondition::PolicyViolation
        }
        E::RestrictedXml(_) => StreamErrorCondition::RestrictedXml,
        _ => StreamErrorCondition::NotWellFormed,
    };
    StreamError::new(condition, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
        from='prosody.test' to='gw.test' version='1.0' xml:lang='en'>";

    fn items(parser: &mut StreamParser) -> Vec<StreamItem> {
        std::iter::from_fn(|| parser.next_item()).collect()
    }

    #[test]
    fn header_stanzas_and_end() {
        let mut parser = StreamParser::new(Limits::default());
        let input = format!(
            "{HEADER} <message to='a@gw.test' from='b@prosody.test' type='chat'><body>hi &amp; \
             bye</body><x xmlns='urn:example' attr='1'/></message>\n<db:result to='gw.test' \
             from='prosody.test'>key</db:result></stream:stream>"
        );
        parser.feed(input.as_bytes(), false).unwrap();
        let items = items(&mut parser);
        assert_eq!(items.len(), 4, "{items:?}");
        let StreamItem::Header(header) = &items[0] else {
            panic!("{:?}", items[0]);
        };
        assert_eq!(header.from.as_deref(), Some("prosody.test"));
        assert_eq!(header.to.as_deref(), Some("gw.test"));
        assert_eq!(header.lang.as_deref(), Some("en"));
        assert!(header.is_version_1());
        let StreamItem::Element(message) = &items[1] else {
            panic!("{:?}", items[1]);
        };
        assert!(message.is("message", ns::JABBER_SERVER));
        assert_eq!(message.attr("type"), Some("chat"));
        let body = message.get_child("body", ns::JABBER_SERVER).unwrap();
        assert_eq!(body.text(), "hi & bye");
        assert!(message.has_child("x", "urn:example"));
        let StreamItem::Element(dialback) = &items[2] else {
            panic!("{:?}", items[2]);
        };
        assert!(dialback.is("result", ns::DIALBACK));
        assert_eq!(dialback.text(), "key");
        assert_eq!(items[3], StreamItem::End);
    }

    #[test]
    fn bytes_may_arrive_one_at_a_time() {
        let input = format!(
            "{HEADER}<iq type='get' id='1' to='gw.test' from='prosody.test'><ping \
             xmlns='urn:xmpp:ping'/></iq> <presence/>"
        );
        let mut whole = StreamParser::new(Limits::default());
        whole.feed(input.as_bytes(), false).unwrap();
        let expected = items(&mut whole);
        let mut split = StreamParser::new(Limits::default());
        let mut got = Vec::new();
        for byte in input.as_bytes() {
            split.feed(std::slice::from_ref(byte), false).unwrap();
            got.extend(items(&mut split));
        }
        assert_eq!(got, expected);
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn reset_starts_a_new_stream() {
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(HEADER.as_bytes(), false).unwrap();
        assert!(matches!(parser.next_item(), Some(StreamItem::Header(_))));
        parser.reset();
        parser.feed(HEADER.as_bytes(), false).unwrap();
        assert!(matches!(parser.next_item(), Some(StreamItem::Header(_))));
    }

    fn error_of(input: &str, limits: Limits) -> StreamErrorCondition {
        let mut parser = StreamParser::new(limits);
        match parser.feed(input.as_bytes(), true) {
            Err(error) => error.condition,
            Ok(()) => panic!("accepted: {input}"),
        }
    }

    #[test]
    fn violations_are_stream_errors() {
        let limits = Limits::default();
        assert_eq!(
            error_of("<foo/>", limits),
            StreamErrorCondition::InvalidNamespace
        );
        assert_eq!(
            error_of("<stream:stream xmlns:stream='urn:wrong'>", limits),
            StreamErrorCondition::InvalidNamespace
        );
        assert_eq!(
            error_of(&format!("{HEADER}<message><body></message>"), limits),
            StreamErrorCondition::NotWellFormed
        );
        assert_eq!(
            error_of(&format!("{HEADER}<x:message/>"), limits),
            StreamErrorCondition::BadNamespacePrefix
        );
        assert_eq!(
            error_of(&format!("{HEADER}<!-- comment --><message/>"), limits),
            StreamErrorCondition::RestrictedXml
        );
        assert_eq!(
            error_of(&format!("{HEADER}<message>&custom;</message>"), limits),
            StreamErrorCondition::NotWellFormed
        );
        assert_eq!(
            error_of(&format!("{HEADER}stray text"), limits),
            StreamErrorCondition::BadFormat
        );
        assert_eq!(
            error_of(&format!("{HEADER}</stream:stream><message/>"), limits),
            StreamErrorCondition::NotWellFormed
        );
    }

    #[test]
    fn limits_are_enforced() {
        let small = Limits {
            max_stanza_bytes: 200,
            max_depth: 3,
            max_whitespace_bytes: 10,
        };
        let big = format!(
            "{HEADER}<message><body>{}</body></message>",
            "x".repeat(300)
        );
        assert_eq!(error_of(&big, small), StreamErrorCondition::PolicyViolation);
        let deep = format!("{HEADER}<a><b><c><d/></c></b></a>");
        assert_eq!(
            error_of(&deep, small),
            StreamErrorCondition::PolicyViolation
        );
        let spaces = format!("{HEADER}{}", " ".repeat(20));
        assert_eq!(
            error_of(&spaces, small),
            StreamErrorCondition::PolicyViolation
        );
        // A stanza that never ends is cut off when its bytes pass the limit, even unparsed.
        let mut parser = StreamParser::new(small);
        parser.feed(HEADER.as_bytes(), false).unwrap();
        parser.feed(b"<message attr='", false).unwrap();
        let mut failed = None;
        for _ in 0..100 {
            if let Err(error) = parser.feed(b"xxxxxxxxxx", false) {
                failed = Some(error.condition);
                break;
            }
        }
        assert_eq!(failed, Some(StreamErrorCondition::PolicyViolation));
        // The same stanzas within the limits pass.
        let mut parser = StreamParser::new(small);
        parser
            .feed(format!("{HEADER}<a><b><c/></b></a>   ").as_bytes(), false)
            .unwrap();
        assert_eq!(items(&mut parser).len(), 2);
    }
}
