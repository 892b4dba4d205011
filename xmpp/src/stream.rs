//! XML stream framing (RFC 6120 §4): the stream header, the stanzas (first-level children of
//! the stream), and the end of the stream, read incrementally from bytes as they arrive.
//!
//! [`StreamParser`] is sans-I/O: bytes go in with [`StreamParser::feed`], items come out. It
//! enforces the restricted XML of RFC 6120 §11 (no comments, processing instructions, DTDs or
//! undeclared entities; rxml refuses them) and this server's limits on stanza size and depth.
//! Stanzas keep their namespaces as received; [`crate::ns`] normalises `jabber:server`.

use minidom::Element;
use rxml::{Event, Parse, Parser, RawEvent, RawParser, WithOptions};

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
    /// The most bytes the stream header (the `<stream:stream>` start tag) may take.
    pub max_header_bytes: usize,
    /// The most attributes (namespace declarations included) one start tag may have.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_whitespace_bytes: 64 * 1024,
            max_header_bytes: 8 * 1024,
            max_attributes: 64,
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
    /// Counts start tags as they arrive, ahead of `parser`.
    guard: HeadGuard,
}

/// The namespace-aware parser keeps a start tag whole, every attribute of it, before it hands
/// the element out, and counts nothing until then. The guard reads the same bytes with a raw
/// parser, which reports each attribute as it is read, and counts each start tag's bytes and
/// attributes against the limits: a peer streaming one endless start tag (or stream header) is
/// cut off at the limit, before the parser has kept more than that.
#[derive(Debug)]
struct HeadGuard {
    raw: RawParser,
    /// Input the raw parser has not consumed yet.
    pending: Vec<u8>,
    /// How deep the raw parser is: 0 before the stream header closes, 1 between stanzas.
    depth: usize,
    /// Bytes and attributes of the start tag being read.
    head_bytes: usize,
    head_attributes: usize,
    /// Set when the raw parser found an error: the namespace-aware parser reports it.
    done: bool,
    /// Bytes given to the guard, and consumed by its events, since the stream started.
    fed: usize,
    consumed: usize,
    /// Where the start tag being read begins in the stream.
    head_start: usize,
}

impl HeadGuard {
    fn new(limits: Limits) -> HeadGuard {
        HeadGuard {
            raw: RawParser::with_options(parser_options(limits)),
            pending: Vec::new(),
            depth: 0,
            head_bytes: 0,
            head_attributes: 0,
            done: false,
            fed: 0,
            consumed: 0,
            head_start: 0,
        }
    }

    /// Reads `data` (after what was left over) and fails on the first start tag over a limit,
    /// with how many bytes of `data` come before that tag (zero if it began in an earlier read).
    fn scan(
        &mut self,
        data: &[u8],
        at_eof: bool,
        limits: &Limits,
    ) -> Result<(), (StreamError, usize)> {
        let data_start = self.fed;
        self.fed += data.len();
        if self.done {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        let buffer = std::mem::take(&mut self.pending);
        // Where `buffer` starts in the whole stream.
        let buffer_start = self.fed - buffer.len();
        let mut input: &[u8] = &buffer;
        let result = loop {
            match self.raw.parse(&mut input, at_eof) {
                Ok(Some(event)) => {
                    if let RawEvent::ElementHeadOpen(..) = event {
                        // Everything read before this event belongs to what came before the tag.
                        self.head_start = self.consumed;
                    }
                    self.consumed = buffer_start + buffer.len() - input.len();
                    if let Err(error) = self.observe(&event, limits) {
                        let before = self.head_start.saturating_sub(data_start).min(data.len());
                        break Err((error, before));
                    }
                }
                Err(rxml::error::EndOrError::NeedMoreData) => break Ok(()),
                // The end of the document, or an error that the namespace-aware parser
                // reports where it finds it.
                Ok(None) | Err(rxml::error::EndOrError::Error(_)) => {
                    self.done = true;
                    input = &[];
                    break Ok(());
                }
            }
        };
        // What is left over is what the parser keeps too, and limits (`StreamParser::feed`).
        self.pending = input.to_vec();
        result
    }

    fn observe(&mut self, event: &RawEvent, limits: &Limits) -> Result<(), StreamError> {
        match event {
            RawEvent::ElementHeadOpen(metrics, _) => {
                self.head_bytes = metrics.len();
                self.head_attributes = 0;
            }
            RawEvent::Attribute(metrics, ..) => {
                self.head_bytes += metrics.len();
                self.head_attributes += 1;
            }
            RawEvent::ElementHeadClose(metrics) => {
                self.head_bytes += metrics.len();
                self.check(limits)?;
                self.depth += 1;
                self.head_bytes = 0;
                self.head_attributes = 0;
                return Ok(());
            }
            RawEvent::ElementFoot(_) => {
                self.depth = self.depth.saturating_sub(1);
                return Ok(());
            }
            RawEvent::XmlDeclaration(..) | RawEvent::Text(..) => return Ok(()),
        }
        self.check(limits)
    }

    fn check(&self, limits: &Limits) -> Result<(), StreamError> {
        let (most, what) = if self.depth == 0 {
            (limits.max_header_bytes, "stream header too large")
        } else {
            (limits.max_stanza_bytes, "start tag too large")
        };
        if self.head_bytes > most {
            return Err(StreamError::new(
                StreamErrorCondition::PolicyViolation,
                what,
            ));
        }
        if self.head_attributes > limits.max_attributes {
            return Err(StreamError::new(
                StreamErrorCondition::PolicyViolation,
                "too many attributes",
            ));
        }
        Ok(())
    }
}

impl StreamParser {
    pub fn new(limits: Limits) -> StreamParser {
        StreamParser {
            parser: Parser::with_options(parser_options(limits)),
            limits,
            state: State::Start,
            stack: Vec::new(),
            stanza_bytes: 0,
            whitespace_bytes: 0,
            pending: Vec::new(),
            items: std::collections::VecDeque::new(),
            guard: HeadGuard::new(limits),
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
        // Start tags are counted first. The parser then reads what comes before one over the
        // limits (items complete before it are handed out), and never that tag itself.
        let (data, violation) = match self.guard.scan(data, at_eof, &self.limits) {
            Ok(()) => (data, None),
            Err((error, before)) => (&data[..before], Some(error)),
        };
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
        result?;
        violation.map_or(Ok(()), Err)
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

/// The options of both parsers: no single token (a name, an attribute value, a run of text)
/// may exceed a stanza.
fn parser_options(limits: Limits) -> rxml::parser::Options {
    rxml::parser::Options {
        max_token_length: limits.max_stanza_bytes,
        ..Default::default()
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

    /// Feeds `head` and then `repeat` again and again in reads of about 1 KiB, as a peer that
    /// never closes a start tag would; returns the error and how many bytes it took.
    fn endless(head: &str, repeat: &str, limits: Limits, most: usize) -> (StreamError, usize) {
        let mut parser = StreamParser::new(limits);
        let mut fed = head.len();
        if let Err(error) = parser.feed(head.as_bytes(), false) {
            return (error, fed);
        }
        let read = repeat.repeat(1024 / repeat.len() + 1);
        while fed < most {
            fed += read.len();
            if let Err(error) = parser.feed(read.as_bytes(), false) {
                return (error, fed);
            }
        }
        panic!("{fed} bytes of one start tag were taken in");
    }

    /// A start tag or stream header is counted as it arrives, attribute by attribute, before
    /// the parser keeps it whole: one that never ends is cut off at the limit.
    #[test]
    fn endless_start_tags_are_cut_off_at_the_limit() {
        let limits = Limits {
            max_stanza_bytes: 16 * 1024,
            ..Limits::default()
        };
        // Many attributes: cut at the count, within the first read.
        let (error, fed) = endless(&format!("{HEADER}<message "), " a='x'", limits, 1 << 20);
        assert_eq!(
            (error.condition, error.text.as_str()),
            (StreamErrorCondition::PolicyViolation, "too many attributes")
        );
        assert!(fed < HEADER.len() + 2048, "{fed}");
        // Long values under the count: cut at the stanza limit.
        let value = "v".repeat(1000);
        let (error, fed) = endless(
            &format!("{HEADER}<message "),
            &format!(" a='{value}' "),
            Limits {
                max_attributes: usize::MAX,
                ..limits
            },
            1 << 20,
        );
        assert_eq!(
            (error.condition, error.text.as_str()),
            (StreamErrorCondition::PolicyViolation, "start tag too large")
        );
        assert!(fed < HEADER.len() + 16 * 1024 + 4096, "{fed}");
        // The stream header itself, before anything else: attributes, then bytes.
        let open = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
            xmlns:stream='http://etherx.jabber.org/streams' ";
        let (error, fed) = endless(open, " x='1'", Limits::default(), 1 << 20);
        assert_eq!(
            (error.condition, error.text.as_str()),
            (StreamErrorCondition::PolicyViolation, "too many attributes")
        );
        assert!(fed < 2048, "{fed}");
        let (error, fed) = endless(
            open,
            &format!(" x='{}'", "y".repeat(500)),
            Limits::default(),
            1 << 20,
        );
        assert_eq!(
            (error.condition, error.text.as_str()),
            (
                StreamErrorCondition::PolicyViolation,
                "stream header too large"
            )
        );
        assert!(fed < 8 * 1024 + 2048, "{fed}");
    }

    /// Stanzas complete before an over-long start tag are still handed out; tags at the limits
    /// and CDATA with markup characters in it are fine.
    #[test]
    fn what_came_before_a_violation_is_kept_and_the_limits_are_exact() {
        let attributes: String = (0..64).map(|i| format!(" a{i}='{i}'")).collect();
        let input = format!(
            "{HEADER}<message{attributes}><body><![CDATA[<a b='c\">]]></body></message>\
             <presence{attributes} a64='64'/>"
        );
        let mut parser = StreamParser::new(Limits::default());
        let error = parser.feed(input.as_bytes(), false).unwrap_err();
        assert_eq!(error.text, "too many attributes");
        let items = items(&mut parser);
        assert!(matches!(items[0], StreamItem::Header(_)), "{items:?}");
        let StreamItem::Element(message) = &items[1] else {
            panic!("{items:?}");
        };
        assert_eq!(message.attrs().into_iter().count(), 64);
        assert_eq!(
            message.get_child("body", ns::JABBER_SERVER).unwrap().text(),
            "<a b='c\">"
        );
        assert_eq!(items.len(), 2, "{items:?}");
    }

    #[test]
    fn limits_are_enforced() {
        let small = Limits {
            max_stanza_bytes: 200,
            max_depth: 3,
            max_whitespace_bytes: 10,
            ..Limits::default()
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
