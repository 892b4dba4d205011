//! An XML stream over any byte stream (TCP, TLS, or an in-memory pipe in tests): reading items
//! as they complete, writing headers and elements, and failing with a stream error.

use minidom::Element;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::StreamError;
use crate::stream::{Limits, StreamHeader, StreamItem, StreamParser};
use crate::writer;

/// How reading or writing a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the rules; this error was sent to it and the stream closed.
    #[error("{0}")]
    Violation(StreamError),
    /// The peer sent a stream error and closed its stream.
    #[error("the peer sent a stream error: {0}")]
    PeerError(String),
    /// The peer closed the stream or the connection.
    #[error("the peer closed the stream")]
    Closed,
    #[error("cannot serialise an element: {0}")]
    Serialise(String),
}

/// One XML stream on a byte stream.
pub struct XmlStream<S> {
    io: S,
    parser: StreamParser,
    buffer: Vec<u8>,
    /// A violation found after items that were complete before it: they are handed out first.
    violation: Option<StreamError>,
    /// An element read during negotiation and handed back to be read again.
    unread: Option<Element>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> XmlStream<S> {
    pub fn new(io: S, limits: Limits) -> XmlStream<S> {
        XmlStream {
            io,
            parser: StreamParser::new(limits),
            buffer: vec![0; 8192],
            violation: None,
            unread: None,
        }
    }

    /// The next item from the peer. A violation is answered with its stream error before this
    /// returns [`ConnectionError::Violation`]; a stream error from the peer ends the stream.
    pub async fn next(&mut self) -> Result<StreamItem, ConnectionError> {
        if let Some(element) = self.unread.take() {
            return Ok(StreamItem::Element(element));
        }
        loop {
            if let Some(item) = self.parser.next_item() {
                if let StreamItem::Element(element) = &item
                    && element.is("error", crate::ns::STREAM)
                {
                    let condition = element
                        .children()
                        .find(|child| {
                            child.ns() == crate::ns::STREAM_ERRORS && child.name() != "text"
                        })
                        .map(|child| child.name().to_owned())
                        .unwrap_or_else(|| "undefined-condition".to_owned());
                    let _ = self.io.write_all(writer::STREAM_END).await;
                    let _ = self.io.shutdown().await;
                    return Err(ConnectionError::PeerError(condition));
                }
                if item == StreamItem::End {
                    return Err(ConnectionError::Closed);
                }
                return Ok(item);
            }
            if let Some(error) = self.violation.take() {
                self.fail(&error).await;
                return Err(ConnectionError::Violation(error));
            }
            let read = self.io.read(&mut self.buffer).await?;
            if read == 0 {
                // The connection ended; whatever was complete has been handed out already.
                return Err(ConnectionError::Closed);
            }
            if let Err(error) = self.parser.feed(&self.buffer[..read], false) {
                self.violation = Some(error);
            }
        }
    }

    /// Waits for the peer's stream header.
    pub async fn read_header(&mut self) -> Result<StreamHeader, ConnectionError> {
        match self.next().await? {
            StreamItem::Header(header) => Ok(header),
            _ => Err(ConnectionError::Closed),
        }
    }

    pub async fn send_header(
        &mut self,
        header: &StreamHeader,
        dialback: bool,
    ) -> Result<(), ConnectionError> {
        self.io
            .write_all(&writer::stream_header(header, dialback))
            .await?;
        self.io.flush().await?;
        Ok(())
    }

    pub async fn send_element(&mut self, element: &Element) -> Result<(), ConnectionError> {
        let bytes =
            writer::element(element).map_err(|e| ConnectionError::Serialise(e.to_string()))?;
        self.io.write_all(&bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Sends bytes already serialised (a dialback element with its conventional prefix).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Hands an element back: the next [`XmlStream::next`] returns it.
    pub fn unread(&mut self, element: Element) {
        self.unread = Some(element);
    }

    /// Sends a stream error and the end of the stream, then shuts the connection down.
    pub async fn fail(&mut self, error: &StreamError) {
        tracing::debug!(condition = error.condition.as_str(), text = %error.text, "stream error");
        if let Ok(bytes) = writer::stream_error(error) {
            let _ = self.io.write_all(&bytes).await;
        }
        let _ = self.io.shutdown().await;
    }

    /// Ends the stream politely.
    pub async fn close(&mut self) -> Result<(), ConnectionError> {
        self.io.write_all(writer::STREAM_END).await?;
        self.io.shutdown().await?;
        Ok(())
    }

    /// Starts a new stream on the same connection (after STARTTLS or SASL).
    pub fn reset(&mut self) {
        self.parser.reset();
    }

    /// The underlying byte stream, to wrap it in TLS. Bytes the peer sent after the element
    /// that asked for the upgrade would be lost; a peer must not send any (RFC 6120 §5.4.3.3).
    pub fn into_inner(self) -> S {
        self.io
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StreamErrorCondition;
    use tokio::io::duplex;

    const HEADER: &str = "<stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' from='prosody.test' to='gw.test' \
        version='1.0'>";

    #[tokio::test]
    async fn items_arrive_across_writes() {
        let (ours, mut theirs) = duplex(64);
        let mut stream = XmlStream::new(ours, Limits::default());
        let peer = tokio::spawn(async move {
            theirs.write_all(HEADER.as_bytes()).await.unwrap();
            theirs
                .write_all(b"<presence from='a@prosody.test' to='b@gw.test'/> ")
                .await
                .unwrap();
            theirs.write_all(b"</stream:stream>").await.unwrap();
            let mut reply = Vec::new();
            theirs.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let header = stream.read_header().await.unwrap();
        assert_eq!(header.from.as_deref(), Some("prosody.test"));
        let StreamItem::Element(presence) = stream.next().await.unwrap() else {
            panic!("expected an element");
        };
        assert_eq!(presence.name(), "presence");
        assert!(matches!(stream.next().await, Err(ConnectionError::Closed)));
        stream.close().await.unwrap();
        assert_eq!(peer.await.unwrap(), writer::STREAM_END);
    }

    #[tokio::test]
    async fn garbage_gets_a_stream_error() {
        let (ours, mut theirs) = duplex(1024);
        let mut stream = XmlStream::new(ours, Limits::default());
        let peer = tokio::spawn(async move {
            theirs.write_all(HEADER.as_bytes()).await.unwrap();
            theirs.write_all(b"<message><<<>").await.unwrap();
            let mut reply = Vec::new();
            theirs.read_to_end(&mut reply).await.unwrap();
            String::from_utf8(reply).unwrap()
        });
        stream.read_header().await.unwrap();
        match stream.next().await {
            Err(ConnectionError::Violation(error)) => {
                assert_eq!(error.condition, StreamErrorCondition::NotWellFormed);
            }
            other => panic!("expected a violation, got {other:?}"),
        }
        let reply = peer.await.unwrap();
        assert!(reply.contains("not-well-formed"), "{reply}");
        assert!(reply.ends_with("</stream:stream>"), "{reply}");
    }

    #[tokio::test]
    async fn a_stream_error_from_the_peer_ends_the_stream() {
        let (ours, mut theirs) = duplex(1024);
        let mut stream = XmlStream::new(ours, Limits::default());
        tokio::spawn(async move {
            theirs.write_all(HEADER.as_bytes()).await.unwrap();
            theirs
                .write_all(
                    b"<stream:error><host-unknown \
                      xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                )
                .await
                .unwrap();
            let mut sink = Vec::new();
            let _ = theirs.read_to_end(&mut sink).await;
        });
        stream.read_header().await.unwrap();
        match stream.next().await {
            Err(ConnectionError::PeerError(condition)) => assert_eq!(condition, "host-unknown"),
            other => panic!("expected the peer's error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_dropped_connection_is_closed() {
        let (ours, theirs) = duplex(1024);
        let mut stream = XmlStream::new(ours, Limits::default());
        drop(theirs);
        assert!(matches!(stream.next().await, Err(ConnectionError::Closed)));
    }
}
