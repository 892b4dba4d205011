//! MUC nicknames of Matrix members (the resource of their occupant JID).

use jid::ResourcePart;
use ruma::UserId;

use super::AddressError;

/// The longest nickname given, in characters.
const MAX_NICK: usize = 64;

/// Keeps what a resource may hold: control characters go, whitespace runs become one space,
/// characters the resourceprep of the jid crate refuses (such as emoji, which RFC 7622 allows
/// but its Unicode 3.2 tables do not know) go.
fn clean(name: &str) -> String {
    let mut cleaned = String::new();
    for character in name.chars() {
        if character.is_whitespace() {
            if !cleaned.is_empty() && !cleaned.ends_with(' ') {
                cleaned.push(' ');
            }
        } else if !character.is_control()
            && ResourcePart::new(character.encode_utf8(&mut [0; 4])).is_ok()
        {
            cleaned.push(character);
        }
    }
    let cleaned: String = cleaned.trim().chars().take(MAX_NICK).collect();
    cleaned.trim_end().to_owned()
}

/// The nickname of a Matrix member in a MUC: their display name, or else their localpart; when
/// another occupant has it (`taken`), followed by their user id, and then by a number.
pub fn occupant_nick(
    display_name: Option<&str>,
    user: &UserId,
    taken: impl Fn(&str) -> bool,
) -> Result<String, AddressError> {
    let base = display_name
        .map(clean)
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| clean(user.localpart()));
    let base = if base.is_empty() {
        clean(user.as_str())
    } else {
        base
    };
    let valid = |nick: &str| {
        ResourcePart::new(nick)
            .ok()
            .is_some_and(|part| part.as_str() == nick)
    };
    let with_id = format!("{base} ({})", clean(user.as_str()));
    let candidates = [base.clone(), with_id.clone()].into_iter();
    let numbered = (2..1000).map(|n| format!("{with_id} {n}"));
    candidates
        .chain(numbered)
        .find(|nick| valid(nick) && !taken(nick))
        .ok_or_else(|| AddressError::NotJidSafe(user.as_str().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::owned_user_id;

    #[test]
    fn nicknames() {
        let alice = owned_user_id!("@alice:example.org");
        let free = |_: &str| false;
        assert_eq!(occupant_nick(Some("Alice"), &alice, free).unwrap(), "Alice");
        assert_eq!(occupant_nick(None, &alice, free).unwrap(), "alice");
        assert_eq!(
            occupant_nick(Some("  \u{7}\t"), &alice, free).unwrap(),
            "alice"
        );
        assert_eq!(
            occupant_nick(Some("Alice\n  in   Wonderland"), &alice, free).unwrap(),
            "Alice in Wonderland"
        );
        // Emoji go (see `clean`), the rest stays.
        assert_eq!(
            occupant_nick(Some("Alice 🐢"), &alice, free).unwrap(),
            "Alice"
        );
        assert_eq!(occupant_nick(Some("Ålice"), &alice, free).unwrap(), "Ålice");
        // Taken names are made unique with the user id, then a number.
        let taken = |nick: &str| nick == "Alice";
        assert_eq!(
            occupant_nick(Some("Alice"), &alice, taken).unwrap(),
            "Alice (@alice:example.org)"
        );
        let taken = |nick: &str| nick.starts_with("Alice") && !nick.ends_with(" 3");
        assert_eq!(
            occupant_nick(Some("Alice"), &alice, taken).unwrap(),
            "Alice (@alice:example.org) 3"
        );
        let long = "x".repeat(500);
        assert_eq!(
            occupant_nick(Some(&long), &alice, free).unwrap().len(),
            MAX_NICK
        );
    }
}
