//! Message content between XMPP and Matrix (`docs/mapping.md`, "Content").
//!
//! A translation that cannot carry everything returns its result with what it dropped
//! ([`Lossy`]), so that the caller can tell the sender or log it.

pub mod html;
pub mod media;
pub mod message;
pub mod presence;
pub mod room;
pub mod styling;

/// Something a translation could not carry to the other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// Underlined text (XEP-0393 has no underline).
    Underline,
    /// Text colours.
    Colour,
    /// Superscript or subscript.
    Script,
    /// An inline image (its description stays).
    Image,
    /// The layout of a table (its cells stay, one row per line).
    Table,
    /// An inline spoiler: its text is shown.
    Spoiler,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dropped::Underline => "underline",
            Dropped::Colour => "text colour",
            Dropped::Script => "superscript or subscript",
            Dropped::Image => "inline image",
            Dropped::Table => "table layout",
            Dropped::Spoiler => "spoiler",
        })
    }
}

/// A translation's result, with what it could not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lossy<T> {
    pub value: T,
    pub dropped: Vec<Dropped>,
}

impl<T> Lossy<T> {
    /// A translation that lost nothing.
    pub fn exact(value: T) -> Lossy<T> {
        Lossy {
            value,
            dropped: Vec::new(),
        }
    }
}

/// Decodes `%xx` escapes (of URLs); invalid UTF-8 is replaced.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && let Some(value) = text
                .get(at + 1..at + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            decoded.push(value);
            at += 3;
            continue;
        }
        decoded.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
