//! A MUC sends each groupchat message once to every one of our members in it: the first copy
//! is taken, the others are known by the MUC's stanza id (or by sender and id) and left
//! before anything is read or written for them.

use std::collections::{HashSet, VecDeque};

use xmpp_parsers::jid::BareJid;

/// How many messages are remembered (all MUCs together): far more than arrive while the
/// copies of one are on their way.
const KEEP: usize = 4096;

#[derive(Default)]
pub(super) struct Copies {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Copies {
    /// Whether a message of `muc` known by `key` arrives for the first time.
    pub(super) fn first(&mut self, muc: &BareJid, key: &str) -> bool {
        let key = format!("{muc}\u{0}{key}");
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > KEEP
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_copy_is_taken_and_the_oldest_forgotten() {
        let mut copies = Copies::default();
        let lobby = BareJid::new("lobby@conference.example.net").unwrap();
        let den = BareJid::new("den@conference.example.net").unwrap();
        assert!(copies.first(&lobby, "s1"));
        assert!(!copies.first(&lobby, "s1"));
        // The same id in another MUC is another message.
        assert!(copies.first(&den, "s1"));
        for n in 0..KEEP {
            assert!(copies.first(&lobby, &format!("n{n}")));
        }
        // Only the last KEEP are remembered.
        assert!(copies.first(&lobby, "s1"));
        assert!(!copies.first(&lobby, &format!("n{}", KEEP - 1)));
    }
}
