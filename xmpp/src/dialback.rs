//! Server Dialback (XEP-0220) with keys generated as XEP-0185 recommends.
//!
//! Dialback authenticates a domain pair (sender domain, target domain) on a stream through the
//! DNS: the receiving server asks the sender domain's authoritative server whether the key it
//! was given is genuine. This module holds the keys and the `<db:result/>` and `<db:verify/>`
//! elements; the negotiation and the service use them.

use minidom::Element;
use ring::{digest, hmac};

use crate::error::{StreamError, StreamErrorCondition};
use crate::ns;

/// The secret dialback keys are derived from. It is made at start-up and never leaves the
/// process: a key is checked by the process that made it (XEP-0185 §3).
pub struct Secret {
    key: hmac::Key,
}

impl Secret {
    /// A fresh random secret.
    pub fn random() -> Secret {
        Secret::new(&rand::random::<[u8; 32]>())
    }

    /// A secret from given bytes (for tests and known answers).
    pub fn new(secret: &[u8]) -> Secret {
        // XEP-0185: the HMAC key is the hex representation of SHA-256 of the secret.
        let hashed = hex(digest::digest(&digest::SHA256, secret).as_ref());
        Secret {
            key: hmac::Key::new(hmac::HMAC_SHA256, hashed.as_bytes()),
        }
    }

    fn message(receiving: &str, originating: &str, stream_id: &str) -> String {
        format!(
            "{} {} {stream_id}",
            receiving.to_ascii_lowercase(),
            originating.to_ascii_lowercase()
        )
    }

    /// The key with which `originating` proves itself to `receiving` on the stream `stream_id`.
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        let message = Self::message(receiving, originating, stream_id);
        hex(hmac::sign(&self.key, message.as_bytes()).as_ref())
    }

    /// Whether `key` is the one this secret gives, compared in constant time.
    pub fn verifies(&self, key: &str, receiving: &str, originating: &str, stream_id: &str) -> bool {
        let Some(tag) = unhex(key.trim()) else {
            return false;
        };
        let message = Self::message(receiving, originating, stream_id);
        hmac::verify(&self.key, message.as_bytes(), &tag).is_ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

/// The two dialback elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<db:result/>`: from the initiating server (a key) and back (the outcome).
    Result,
    /// `<db:verify/>`: from the receiving server to the authoritative one and back.
    Verify,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Result => "result",
            Kind::Verify => "verify",
        }
    }
}

/// The dialback error conditions of XEP-0220 §2.4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialbackError {
    /// The target domain is not served there.
    ItemNotFound,
    /// The authoritative server could not be connected to.
    RemoteConnectionFailed,
    /// The authoritative server's domain could not be resolved, or it does not serve it.
    RemoteServerNotFound,
    /// The authoritative server did not answer in time, or closed the stream.
    RemoteServerTimeout,
    /// TLS is required before dialback.
    PolicyViolation,
    /// A certificate (not dialback) is required.
    NotAuthorized,
    /// The authoritative server said the key is invalid, or the domain may not federate.
    Forbidden,
    /// Too many domain pairs on one stream.
    ResourceConstraint,
    /// Any other condition a peer sent.
    Other(String),
}

impl DialbackError {
    pub fn condition(&self) -> &str {
        match self {
            DialbackError::ItemNotFound => "item-not-found",
            DialbackError::RemoteConnectionFailed => "remote-connection-failed",
            DialbackError::RemoteServerNotFound => "remote-server-not-found",
            DialbackError::RemoteServerTimeout => "remote-server-timeout",
            DialbackError::PolicyViolation => "policy-violation",
            DialbackError::NotAuthorized => "not-authorized",
            DialbackError::Forbidden => "forbidden",
            DialbackError::ResourceConstraint => "resource-constraint",
            DialbackError::Other(condition) => condition,
        }
    }

    /// The stanza error type that goes with the condition (RFC 6120 §8.3.3).
    fn error_type(&self) -> &'static str {
        match self {
            DialbackError::RemoteServerTimeout | DialbackError::ResourceConstraint => "wait",
            DialbackError::NotAuthorized | DialbackError::Forbidden => "auth",
            DialbackError::PolicyViolation => "modify",
            _ => "cancel",
        }
    }

    fn from_condition(condition: &str) -> DialbackError {
        match condition {
            "item-not-found" => DialbackError::ItemNotFound,
            "remote-connection-failed" => DialbackError::RemoteConnectionFailed,
            "remote-server-not-found" => DialbackError::RemoteServerNotFound,
            "remote-server-timeout" => DialbackError::RemoteServerTimeout,
            "policy-violation" => DialbackError::PolicyViolation,
            "not-authorized" => DialbackError::NotAuthorized,
            "forbidden" => DialbackError::Forbidden,
            "resource-constraint" => DialbackError::ResourceConstraint,
            other => DialbackError::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for DialbackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.condition())
    }
}

/// The answer to a dialback request: its `type` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    Invalid,
    Error(DialbackError),
}

/// A `<db:result/>` or `<db:verify/>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialback {
    pub kind: Kind,
    /// Lower-case domains.
    pub from: String,
    pub to: String,
    /// The stream id being verified (`<db:verify/>` only).
    pub id: Option<String>,
    /// A request carries a key and no outcome; an answer an outcome.
    pub key: Option<String>,
    pub outcome: Option<Outcome>,
}

/// A domain as it appears in dialback attributes: a JID with a domain part only.
fn domain(value: Option<&str>) -> Option<String> {
    let value = value?;
    match value.parse::<jid::Jid>() {
        Ok(jid) if jid.node().is_none() && jid.resource().is_none() => {
            Some(jid.domain().as_str().to_ascii_lowercase())
        }
        _ => None,
    }
}

impl Dialback {
    /// A request carrying a key.
    pub fn request(kind: Kind, from: &str, to: &str, id: Option<&str>, key: String) -> Dialback {
        Dialback {
            kind,
            from: from.to_ascii_lowercase(),
            to: to.to_ascii_lowercase(),
            id: id.map(str::to_owned),
            key: Some(key),
            outcome: None,
        }
    }

    /// The answer to this request: from its target back to its sender.
    pub fn answer(&self, outcome: Outcome) -> Dialback {
        Dialback {
            kind: self.kind,
            from: self.to.clone(),
            to: self.from.clone(),
            id: self.id.clone(),
            key: None,
            outcome: Some(outcome),
        }
    }

    /// Reads a dialback element. A missing or malformed address, a `<db:verify/>` without an
    /// id, or an unknown type is a stream error (`improper-addressing`, `bad-format`).
    pub fn parse(element: &Element) -> Result<Dialback, StreamError> {
        let bad = |condition, text: &str| Err(StreamError::new(condition, text));
        let kind = match element.name() {
            "result" if element.ns() == ns::DIALBACK => Kind::Result,
            "verify" if element.ns() == ns::DIALBACK => Kind::Verify,
            _ => {
                return bad(
                    StreamErrorCondition::UnsupportedStanzaType,
                    "not a dialback element",
                );
            }
        };
        let (Some(from), Some(to)) = (domain(element.attr("from")), domain(element.attr("to")))
        else {
            return bad(
                StreamErrorCondition::ImproperAddressing,
                "dialback needs 'from' and 'to' domains",
            );
        };
        let id = element.attr("id").map(str::to_owned);
        if kind == Kind::Verify && id.is_none() {
            return bad(
                StreamErrorCondition::BadFormat,
                "<db:verify/> needs an 'id'",
            );
        }
        let outcome = match element.attr("type") {
            None => None,
            Some("valid") => Some(Outcome::Valid),
            Some("invalid") => Some(Outcome::Invalid),
            Some("error") => {
                let condition = element
                    .children()
                    .filter(|child| child.name() == "error")
                    .flat_map(|error| error.children())
                    .find(|condition| condition.ns() == ns::STANZA_ERRORS)
                    .map(|condition| condition.name().to_owned())
                    .unwrap_or_else(|| "undefined-condition".to_owned());
                Some(Outcome::Error(DialbackError::from_condition(&condition)))
            }
            Some(_) => {
                return bad(
                    StreamErrorCondition::BadFormat,
                    "a dialback type is valid, invalid or error",
                );
            }
        };
        let key = if outcome.is_none() {
            let text = element.text();
            let text = text.trim();
            if text.is_empty() {
                return bad(
                    StreamErrorCondition::BadFormat,
                    "a dialback request needs a key",
                );
            }
            Some(text.to_owned())
        } else {
            None
        };
        Ok(Dialback {
            kind,
            from,
            to,
            id,
            key,
            outcome,
        })
    }

    /// The element, with the conventional `db` prefix (declared on every stream header this
    /// server sends), which some servers insist on.
    pub fn to_bytes(&self) -> Vec<u8> {
        use crate::writer::escape_attribute as esc;
        let name = self.kind.name();
        let mut out = format!(
            "<db:{name} from='{}' to='{}'",
            esc(&self.from),
            esc(&self.to)
        );
        if let Some(id) = &self.id {
            out.push_str(&format!(" id='{}'", esc(id)));
        }
        match &self.outcome {
            None => {
                let key = self.key.as_deref().unwrap_or_default();
                out.push_str(&format!(">{}</db:{name}>", esc(key)));
            }
            Some(Outcome::Valid) => out.push_str(" type='valid'/>"),
            Some(Outcome::Invalid) => out.push_str(" type='invalid'/>"),
            Some(Outcome::Error(error)) => out.push_str(&format!(
                " type='error'><error type='{}'><{} xmlns='{}'/></error></db:{name}>",
                error.error_type(),
                esc(error.condition()),
                ns::STANZA_ERRORS
            )),
        }
        out.into_bytes()
    }
}

/// The stream feature announcing dialback with error handling (XEP-0220 §2.4).
pub fn feature() -> Element {
    Element::builder("dialback", ns::DIALBACK_FEATURE)
        .append(Element::bare("errors", ns::DIALBACK_FEATURE))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Limits, StreamItem, StreamParser};

    /// The example of XEP-0185 §3.
    #[test]
    fn the_key_of_the_specification_example() {
        let secret = Secret::new(b"s3cr3tf0rd14lb4ck");
        let key = secret.key("xmpp.example.com", "example.org", "D60000229F");
        assert_eq!(
            key,
            "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
        );
        assert!(secret.verifies(&key, "xmpp.example.com", "example.org", "D60000229F"));
        assert!(secret.verifies(
            &key.to_ascii_uppercase(),
            "XMPP.example.com",
            "example.org",
            "D60000229F"
        ));
        // Any other stream, pair, secret or a garbled key does not verify.
        assert!(!secret.verifies(&key, "xmpp.example.com", "example.org", "D60000229G"));
        assert!(!secret.verifies(&key, "example.org", "xmpp.example.com", "D60000229F"));
        assert!(!Secret::new(b"other").verifies(
            &key,
            "xmpp.example.com",
            "example.org",
            "D60000229F"
        ));
        assert!(!secret.verifies("zz", "xmpp.example.com", "example.org", "D60000229F"));
        assert!(!secret.verifies(&key[1..], "xmpp.example.com", "example.org", "D60000229F"));
        assert!(!secret.verifies("é", "xmpp.example.com", "example.org", "D60000229F"));
        assert_ne!(
            Secret::random().key("a", "b", "c"),
            Secret::random().key("a", "b", "c")
        );
    }

    fn read(bytes: &[u8]) -> Element {
        let mut parser = StreamParser::new(Limits::default());
        let mut stream = b"<stream:stream xmlns='jabber:server' \
            xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
            version='1.0'>"
            .to_vec();
        stream.extend_from_slice(bytes);
        parser.feed(&stream, false).unwrap();
        assert!(matches!(parser.next_item(), Some(StreamItem::Header(_))));
        match parser.next_item() {
            Some(StreamItem::Element(element)) => element,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn elements_round_trip() {
        let request = Dialback::request(
            Kind::Verify,
            "GW.test",
            "prosody.test",
            Some("s1"),
            "ab12".into(),
        );
        let cases = [
            request.clone(),
            Dialback::request(Kind::Result, "gw.test", "prosody.test", None, "ab12".into()),
            request.answer(Outcome::Valid),
            request.answer(Outcome::Invalid),
            request.answer(Outcome::Error(DialbackError::ItemNotFound)),
            request.answer(Outcome::Error(DialbackError::RemoteServerTimeout)),
        ];
        for case in cases {
            let bytes = case.to_bytes();
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(text.starts_with("<db:"), "{text}");
            assert_eq!(Dialback::parse(&read(&bytes)).unwrap(), case, "{text}");
        }
        assert_eq!(request.from, "gw.test");
        let answer = request.answer(Outcome::Valid);
        assert_eq!(
            (answer.from.as_str(), answer.to.as_str()),
            ("prosody.test", "gw.test")
        );
        assert_eq!(answer.id.as_deref(), Some("s1"));
    }

    #[test]
    fn malformed_elements_are_stream_errors() {
        for (xml, condition) in [
            (
                "<db:result to='gw.test'>k</db:result>",
                StreamErrorCondition::ImproperAddressing,
            ),
            (
                "<db:result from='a@b.test' to='gw.test'>k</db:result>",
                StreamErrorCondition::ImproperAddressing,
            ),
            (
                "<db:result from='b.test/r' to='gw.test'>k</db:result>",
                StreamErrorCondition::ImproperAddressing,
            ),
            (
                "<db:result from='b.test' to='gw.test'/>",
                StreamErrorCondition::BadFormat,
            ),
            (
                "<db:verify from='b.test' to='gw.test'>k</db:verify>",
                StreamErrorCondition::BadFormat,
            ),
            (
                "<db:result from='b.test' to='gw.test' type='maybe'/>",
                StreamErrorCondition::BadFormat,
            ),
            (
                "<db:other from='b.test' to='gw.test'>k</db:other>",
                StreamErrorCondition::UnsupportedStanzaType,
            ),
        ] {
            let error = Dialback::parse(&read(xml.as_bytes())).unwrap_err();
            assert_eq!(error.condition, condition, "{xml}");
        }
        // An error answer without a condition is still an error.
        let parsed = Dialback::parse(&read(
            b"<db:result from='b.test' to='gw.test' type='error'/>",
        ))
        .unwrap();
        assert_eq!(
            parsed.outcome,
            Some(Outcome::Error(DialbackError::Other(
                "undefined-condition".into()
            )))
        );
    }
}
