//! Which member events each device has been sent, for lazy-loading members in sync: with
//! `lazy_load_members` a sync carries the member events of the timeline's senders, and
//! (unless `include_redundant_members`) only those the device does not have yet.
//!
//! Kept in memory, per device and room: after a restart (or when the table is full and
//! cleared) a device is sent its senders' member events again, which the specification
//! allows (clients must accept redundant member events).

use std::collections::HashMap;
use std::sync::Mutex;

/// The most devices remembered at once.
const MAX_DEVICES: usize = 50_000;

/// Per device, per room, per member: the member event sent.
type Sent = HashMap<(String, String), HashMap<String, HashMap<String, String>>>;

#[derive(Default)]
pub struct LazyMembers {
    sent: Mutex<Sent>,
}

impl LazyMembers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sent> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A device starts over (an initial sync): it has nothing.
    pub fn reset(&self, user: &str, device: &str) {
        self.lock().remove(&(user.to_owned(), device.to_owned()));
    }

    /// Whether the device has been sent this member event of the room.
    pub fn has(
        &self,
        (user, device): (&str, &str),
        room: &str,
        member: &str,
        event_id: &str,
    ) -> bool {
        self.lock()
            .get(&(user.to_owned(), device.to_owned()))
            .and_then(|rooms| rooms.get(room))
            .and_then(|members| members.get(member))
            .is_some_and(|sent| sent == event_id)
    }

    /// Records member events sent to a device.
    pub fn record<'a>(
        &self,
        (user, device): (&str, &str),
        room: &str,
        sent: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut table = self.lock();
        if table.len() >= MAX_DEVICES && !table.contains_key(&(user.to_owned(), device.to_owned()))
        {
            table.clear();
        }
        let members = table
            .entry((user.to_owned(), device.to_owned()))
            .or_default()
            .entry(room.to_owned())
            .or_default();
        for (member, event_id) in sent {
            members.insert(member.to_owned(), event_id.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_device_and_room() {
        let lazy = LazyMembers::default();
        let alice_phone = ("@a:x", "PHONE");
        lazy.record(alice_phone, "!r:x", [("@b:x", "$1")]);
        assert!(lazy.has(alice_phone, "!r:x", "@b:x", "$1"));
        // Another event of the member, another room, another device: not sent.
        assert!(!lazy.has(alice_phone, "!r:x", "@b:x", "$2"));
        assert!(!lazy.has(alice_phone, "!q:x", "@b:x", "$1"));
        assert!(!lazy.has(("@a:x", "LAPTOP"), "!r:x", "@b:x", "$1"));
        lazy.reset("@a:x", "PHONE");
        assert!(!lazy.has(alice_phone, "!r:x", "@b:x", "$1"));
    }
}
