//! Who is typing where.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::watch;

/// Typing notifications: in memory only, as the specification intends.
pub struct Typing {
    rooms: std::sync::Mutex<HashMap<OwnedRoomId, BTreeMap<OwnedUserId, Instant>>>,
    /// Changes whenever someone starts or stops typing; the value is a serial number.
    serial: watch::Sender<u64>,
    last_change: std::sync::Mutex<HashMap<OwnedRoomId, u64>>,
}

impl Typing {
    pub(super) fn new() -> Typing {
        // Serials start at the clock so that tokens given out before a restart stay behind.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Typing {
            rooms: std::sync::Mutex::new(HashMap::new()),
            serial: watch::channel(start).0,
            last_change: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn bump(&self, room_id: &RoomId) {
        let mut serial = 0;
        self.serial.send_modify(|value| {
            *value += 1;
            serial = *value;
        });
        self.last_change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(room_id.to_owned(), serial);
    }

    /// Marks a user typing for `timeout`, or not typing.
    pub fn set(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) {
        let changed = {
            let mut rooms = self
                .rooms
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let room = rooms.entry(room_id.to_owned()).or_default();
            match timeout {
                Some(timeout) => room
                    .insert(user_id.to_owned(), Instant::now() + timeout)
                    .is_none(),
                None => room.remove(user_id).is_some(),
            }
        };
        if changed || timeout.is_some() {
            self.bump(room_id);
        }
    }

    /// Drops expired typing notifications, announcing the change.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut rooms = self
                .rooms
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (room_id, users) in rooms.iter_mut() {
                let before = users.len();
                users.retain(|_, until| *until > now);
                if users.len() != before {
                    expired.push(room_id.clone());
                }
            }
        }
        for room_id in expired {
            self.bump(&room_id);
        }
    }

    /// The users typing in a room.
    pub fn users(&self, room_id: &RoomId) -> Vec<OwnedUserId> {
        let now = Instant::now();
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(room_id)
            .map(|users| {
                users
                    .iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(user, _)| user.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The serial of the last change in a room.
    pub fn last_change(&self, room_id: &RoomId) -> u64 {
        self.last_change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(room_id)
            .copied()
            .unwrap_or(0)
    }

    /// The rooms whose typing changed after the serial `since`.
    pub fn changed_since(&self, since: u64) -> Vec<OwnedRoomId> {
        self.last_change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, serial)| **serial > since)
            .map(|(room, _)| room.clone())
            .collect()
    }

    pub fn current(&self) -> u64 {
        *self.serial.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.serial.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_changes_bump_the_serial() {
        let typing = Typing::new();
        let room = RoomId::parse("!r:x").unwrap();
        let user = UserId::parse("@a:x").unwrap();
        let start = typing.current();
        typing.set(&room, &user, Some(Duration::from_secs(30)));
        assert_eq!(typing.users(&room), vec![user.clone()]);
        assert!(typing.last_change(&room) > start);
        assert_eq!(typing.changed_since(start), vec![room.clone()]);
        assert!(typing.changed_since(typing.current()).is_empty());
        typing.set(&room, &user, None);
        assert!(typing.users(&room).is_empty());
        typing.set(&room, &user, Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        let before = typing.current();
        typing.expire();
        assert!(typing.current() > before);
        assert!(typing.users(&room).is_empty());
    }
}
