//! Stream errors (RFC 6120 §4.9): the conditions and their XML.

use minidom::Element;

use crate::ns;

/// The defined stream error conditions of RFC 6120 §4.9.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamErrorCondition {
    BadFormat,
    BadNamespacePrefix,
    Conflict,
    ConnectionTimeout,
    HostGone,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    Reset,
    ResourceConstraint,
    RestrictedXml,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedFeature,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamErrorCondition {
    /// The element name of the condition.
    pub fn as_str(self) -> &'static str {
        use StreamErrorCondition as C;
        match self {
            C::BadFormat => "bad-format",
            C::BadNamespacePrefix => "bad-namespace-prefix",
            C::Conflict => "conflict",
            C::ConnectionTimeout => "connection-timeout",
            C::HostGone => "host-gone",
            C::HostUnknown => "host-unknown",
            C::ImproperAddressing => "improper-addressing",
            C::InternalServerError => "internal-server-error",
            C::InvalidFrom => "invalid-from",
            C::InvalidNamespace => "invalid-namespace",
            C::InvalidXml => "invalid-xml",
            C::NotAuthorized => "not-authorized",
            C::NotWellFormed => "not-well-formed",
            C::PolicyViolation => "policy-violation",
            C::RemoteConnectionFailed => "remote-connection-failed",
            C::Reset => "reset",
            C::ResourceConstraint => "resource-constraint",
            C::RestrictedXml => "restricted-xml",
            C::SystemShutdown => "system-shutdown",
            C::UndefinedCondition => "undefined-condition",
            C::UnsupportedEncoding => "unsupported-encoding",
            C::UnsupportedFeature => "unsupported-feature",
            C::UnsupportedStanzaType => "unsupported-stanza-type",
            C::UnsupportedVersion => "unsupported-version",
        }
    }
}

/// A stream error to send to the peer before closing the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream error {}: {text}", condition.as_str())]
pub struct StreamError {
    pub condition: StreamErrorCondition,
    /// A description for people, sent as `<text/>`.
    pub text: String,
}

impl StreamError {
    pub fn new(condition: StreamErrorCondition, text: impl Into<String>) -> StreamError {
        StreamError {
            condition,
            text: text.into(),
        }
    }

    /// The `<stream:error>` element.
    pub fn to_element(&self) -> Element {
        let mut error = Element::builder("error", ns::STREAM)
            .append(Element::bare(self.condition.as_str(), ns::STREAM_ERRORS))
            .build();
        if !self.text.is_empty() {
            error.append_child(
                Element::builder("text", ns::STREAM_ERRORS)
                    .append(self.text.as_str())
                    .build(),
            );
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_error_element() {
        let error = StreamError::new(StreamErrorCondition::PolicyViolation, "too big");
        let element = error.to_element();
        assert!(element.is("error", ns::STREAM));
        assert!(element.has_child("policy-violation", ns::STREAM_ERRORS));
        assert_eq!(
            element.get_child("text", ns::STREAM_ERRORS).unwrap().text(),
            "too big"
        );
        assert_eq!(error.to_string(), "stream error policy-violation: too big");
    }
}
