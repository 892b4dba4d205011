//! The three escapings addresses are built from.
//!
//! - XEP-0106 JID escaping: the characters a JID localpart cannot hold, as `\xx`.
//! - The Matrix specification's mapping from other character sets (appendix "Mapping from
//!   other character sets"): every byte outside `a-z 0-9 . _ - /` as `=xx`, in lower-case hex.
//! - Case escaping for Matrix names that are case-sensitive (room ids, aliases) on their way
//!   into a JID localpart, which XMPP folds to lower case: an upper-case letter becomes `^`
//!   and its lower-case form, and `^` itself `^^`.
//!
//! Every decoder is strict: it accepts only what its encoder produces, so that two different
//! inputs never decode to the same name.

/// The characters XEP-0106 escapes, with their escape sequences.
const JID_ESCAPES: [(char, &str); 10] = [
    (' ', "\\20"),
    ('"', "\\22"),
    ('&', "\\26"),
    ('\'', "\\27"),
    ('/', "\\2f"),
    (':', "\\3a"),
    ('<', "\\3c"),
    ('>', "\\3e"),
    ('@', "\\40"),
    ('\\', "\\5c"),
];

/// The escaped character a sequence `\xx` at the start of `rest` stands for.
fn jid_sequence(rest: &str) -> Option<char> {
    let sequence = rest.get(..3)?;
    JID_ESCAPES
        .iter()
        .find(|(_, escape)| escape.eq_ignore_ascii_case(sequence))
        .map(|(character, _)| *character)
}

/// XEP-0106 escaping of a localpart. A backslash is escaped only where it would otherwise
/// start an escape sequence, as the XEP says. `None` when the result cannot be a localpart:
/// it would start or end with an escaped space.
pub fn jid_escape(text: &str) -> Option<String> {
    if text.starts_with(' ') || text.ends_with(' ') {
        return None;
    }
    let mut escaped = String::with_capacity(text.len());
    for (at, character) in text.char_indices() {
        match JID_ESCAPES.iter().find(|(c, _)| *c == character) {
            Some(('\\', sequence)) => {
                if jid_sequence(&text[at..]).is_some() {
                    escaped.push_str(sequence);
                } else {
                    escaped.push('\\');
                }
            }
            Some((_, sequence)) => escaped.push_str(sequence),
            None => escaped.push(character),
        }
    }
    Some(escaped)
}

/// Undoes [`jid_escape`]. A backslash that starts no escape sequence stands for itself.
pub fn jid_unescape(text: &str) -> String {
    let mut unescaped = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(character) = text[at..].chars().next() {
        if character == '\\'
            && let Some(original) = jid_sequence(&text[at..])
        {
            unescaped.push(original);
            at += 3;
            continue;
        }
        unescaped.push(character);
        at += character.len_utf8();
    }
    unescaped
}

/// Whether a byte stands for itself in the Matrix mapping.
fn matrix_plain(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'.' | b'_' | b'-' | b'/')
}

/// The Matrix specification's `=xx` mapping of a string into localpart characters.
pub fn matrix_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if matrix_plain(byte) {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("={byte:02x}"));
        }
    }
    escaped
}

/// Undoes [`matrix_escape`]. `None` for anything it does not produce: other characters, `=`
/// not followed by two lower-case hex digits, an escaped byte that stands for itself, or bytes
/// that are not UTF-8.
pub fn matrix_unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte == b'=' {
            let hex = bytes.get(at + 1..at + 3)?;
            if !hex
                .iter()
                .all(|digit| digit.is_ascii_digit() || (b'a'..=b'f').contains(digit))
            {
                return None;
            }
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if matrix_plain(value) {
                return None;
            }
            decoded.push(value);
            at += 3;
        } else if matrix_plain(byte) {
            decoded.push(byte);
            at += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(decoded).ok()
}

/// Case escaping: `^` becomes `^^`, an upper-case letter `^` and its lower-case form. `None`
/// for a letter whose case does not map one to one (such as `İ` or title-case letters).
pub fn case_escape(text: &str) -> Option<String> {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if character == '^' {
            escaped.push_str("^^");
        } else if character.is_uppercase() {
            let lower = single(character.to_lowercase())?;
            if lower == character || single(lower.to_uppercase()) != Some(character) {
                return None;
            }
            escaped.push('^');
            escaped.push(lower);
        } else if single(character.to_lowercase()) != Some(character) {
            // Title case and other letters that change when folded.
            return None;
        } else {
            escaped.push(character);
        }
    }
    Some(escaped)
}

/// Undoes [`case_escape`]; `None` for `^` before anything but `^` or a lower-case letter with
/// a single upper-case form, and for upper-case letters left as they are.
pub fn case_unescape(text: &str) -> Option<String> {
    let mut unescaped = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character == '^' {
            match characters.next()? {
                '^' => unescaped.push('^'),
                lower => {
                    let upper = single(lower.to_uppercase())?;
                    if upper == lower || single(upper.to_lowercase()) != Some(lower) {
                        return None;
                    }
                    unescaped.push(upper);
                }
            }
        } else if character.is_uppercase() {
            return None;
        } else {
            unescaped.push(character);
        }
    }
    Some(unescaped)
}

/// The only character of an iterator of one.
fn single(mut characters: impl Iterator<Item = char>) -> Option<char> {
    let first = characters.next()?;
    characters.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn jid_escaping_examples_of_the_xep() {
        // XEP-0106 §5.1 (its table of examples).
        for (unescaped, escaped) in [
            ("space cadet", "space\\20cadet"),
            ("call me \"ishmael\"", "call\\20me\\20\\22ishmael\\22"),
            ("at&t guy", "at\\26t\\20guy"),
            ("d'artagnan", "d\\27artagnan"),
            ("/.fanboy", "\\2f.fanboy"),
            ("::foo::", "\\3a\\3afoo\\3a\\3a"),
            ("<foo>", "\\3cfoo\\3e"),
            ("user@host", "user\\40host"),
            ("c:\\net", "c\\3a\\net"),
            ("c:\\\\net", "c\\3a\\\\net"),
            ("c:\\cool stuff", "c\\3a\\cool\\20stuff"),
            ("c:\\5commas", "c\\3a\\5c5commas"),
        ] {
            assert_eq!(
                jid_escape(unescaped).as_deref(),
                Some(escaped),
                "{unescaped}"
            );
            assert_eq!(jid_unescape(escaped), unescaped, "{escaped}");
        }
        assert_eq!(jid_escape(" lead"), None);
        assert_eq!(jid_escape("trail "), None);
    }

    #[test]
    fn matrix_mapping_examples() {
        assert_eq!(matrix_escape("bob@jabber.de"), "bob=40jabber.de");
        assert_eq!(matrix_escape("ünïcode"), "=c3=bcn=c3=afcode");
        assert_eq!(matrix_escape("a=b"), "a=3db");
        assert_eq!(matrix_escape("Room/Nick"), "=52oom/=4eick");
        for bad in ["=4", "=4G", "=4A", "=61", "a b", "A", "=ff", "=c3"] {
            assert_eq!(matrix_unescape(bad), None, "{bad}");
        }
    }

    #[test]
    fn case_escaping_examples() {
        assert_eq!(case_escape("Lobby^2").as_deref(), Some("^lobby^^2"));
        assert_eq!(case_escape("ÄrgerÖ").as_deref(), Some("^ärger^ö"));
        assert_eq!(case_escape("İstanbul"), None);
        assert_eq!(case_escape("ǅ"), None);
        assert_eq!(case_unescape("^lobby^^2").as_deref(), Some("Lobby^2"));
        for bad in ["^", "^1", "^-", "Lobby", "^ß"] {
            assert_eq!(case_unescape(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn jid_escaping_round_trips(text in "\\PC{0,40}") {
            if let Some(escaped) = jid_escape(&text) {
                prop_assert_eq!(jid_unescape(&escaped), text);
                for (character, _) in JID_ESCAPES.iter().filter(|(c, _)| *c != '\\') {
                    prop_assert!(!escaped.contains(*character));
                }
            }
        }

        #[test]
        fn matrix_mapping_round_trips(text in "\\PC{0,40}") {
            let escaped = matrix_escape(&text);
            prop_assert!(escaped.bytes().all(|b| matrix_plain(b) || b == b'='));
            prop_assert_eq!(matrix_unescape(&escaped), Some(text));
        }

        /// Whatever decodes, encodes back to itself: no two encodings of one string.
        #[test]
        fn matrix_decoding_is_strict(text in "[a-z0-9=._/-]{0,24}") {
            if let Some(decoded) = matrix_unescape(&text) {
                prop_assert_eq!(matrix_escape(&decoded), text);
            }
        }

        #[test]
        fn case_escaping_round_trips_and_survives_folding(text in "\\PC{0,40}") {
            if let Some(escaped) = case_escape(&text) {
                prop_assert_eq!(escaped.to_lowercase(), escaped.clone());
                prop_assert_eq!(case_unescape(&escaped), Some(text));
            }
        }

        #[test]
        fn case_decoding_is_strict(text in "[a-zA-Z^0-9äÄ]{0,24}") {
            if let Some(decoded) = case_unescape(&text) {
                prop_assert_eq!(case_escape(&decoded), Some(text));
            }
        }
    }
}
