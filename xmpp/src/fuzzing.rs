//! The entry point of the fuzz target of the stream parser (`xmpp/fuzz`): arbitrary bytes,
//! read in reads of arbitrary sizes under small limits, and what must hold whatever the input.
//! Plain `cargo test` replays the stored corpus through it (`xmpp/tests/fuzz_corpus.rs`).

use minidom::Element;

use crate::stream::{Limits, StreamItem, StreamParser};

/// The limits the target runs under: small, so that the fuzzer reaches them.
pub const LIMITS: Limits = Limits {
    max_stanza_bytes: 512,
    max_depth: 6,
    max_whitespace_bytes: 64,
    max_header_bytes: 256,
    max_attributes: 8,
};

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' from='a.test' to='b.test' version='1.0'>";

/// The first byte chooses the size of the reads (1 to 64 bytes) and whether a valid stream
/// header comes first; the rest is what the peer sends. No input makes the parser panic or
/// hand out an element over the limits.
pub fn stream(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let read = usize::from(first & 0x3f) + 1;
    let mut bytes = Vec::new();
    if first & 0x40 != 0 {
        bytes.extend_from_slice(HEADER);
    }
    bytes.extend_from_slice(input);
    let mut parser = StreamParser::new(LIMITS);
    let chunks = bytes.chunks(read);
    let count = chunks.len();
    for (index, chunk) in chunks.enumerate() {
        let result = parser.feed(chunk, index + 1 == count);
        while let Some(item) = parser.next_item() {
            if let StreamItem::Element(element) = item {
                check(&element, 1);
            }
        }
        if result.is_err() {
            return;
        }
    }
}

fn check(element: &Element, depth: usize) {
    assert!(depth <= LIMITS.max_depth, "an element nested too deeply");
    assert!(
        element.attrs().into_iter().count() <= LIMITS.max_attributes,
        "an element with too many attributes"
    );
    for child in element.children() {
        check(child, depth + 1);
    }
}
