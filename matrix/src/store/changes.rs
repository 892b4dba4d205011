//! Which things changed at which stream position, so that a sync can skip the queries for
//! everything that did not change since its token.
//!
//! Each writer records the position of its change under a key (a user's account data, a room's
//! receipts, …) before it publishes the position. Readers ask whether a key changed after a
//! position. Before the position the server started at, the tracker knows nothing, and says
//! that everything may have changed.

use std::collections::HashMap;

/// A key of the tracker: what changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// A user's account data, global or of a room.
    AccountData(String),
    /// The receipts of a room.
    Receipts(String),
    /// Anyone's presence.
    Presence,
    /// Anyone's devices or keys.
    DeviceLists,
    /// The memberships of a room.
    Members(String),
    /// Messages queued for a device: `(user, device)`.
    ToDevice(String, String),
    /// How far a user has read a room: `(room, user)`.
    ReadPosition(String, String),
    /// A room's current state, changed by state resolution beyond the events of the stream.
    ResolvedState(String),
    /// A new event in a room (of its stream, not its past).
    Room(String),
    /// A user's membership of any room.
    Membership(String),
}

/// The last position at which each key changed.
pub struct ChangeTracker {
    floor: i64,
    latest: std::sync::Mutex<HashMap<Change, i64>>,
}

impl ChangeTracker {
    pub fn new(floor: i64) -> ChangeTracker {
        ChangeTracker {
            floor,
            latest: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn record(&self, change: Change, position: i64) {
        let mut latest = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = latest.entry(change).or_insert(position);
        *entry = (*entry).max(position);
    }

    /// The position the tracker started at.
    pub fn floor(&self) -> i64 {
        self.floor
    }

    /// The last position `change` was recorded at since the tracker started.
    pub fn latest(&self, change: &Change) -> Option<i64> {
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(change)
            .copied()
    }

    /// Whether `change` may have happened after `since`.
    pub fn changed_since(&self, change: &Change, since: i64) -> bool {
        if since < self.floor {
            return true;
        }
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(change)
            .is_some_and(|position| *position > since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_the_floor_everything_may_have_changed() {
        let tracker = ChangeTracker::new(10);
        assert!(tracker.changed_since(&Change::Presence, 5));
        assert!(!tracker.changed_since(&Change::Presence, 10));
        tracker.record(Change::Presence, 12);
        assert!(tracker.changed_since(&Change::Presence, 11));
        assert!(!tracker.changed_since(&Change::Presence, 12));
        tracker.record(Change::Presence, 11);
        assert!(tracker.changed_since(&Change::Presence, 11));
        let key = Change::Receipts("!r".into());
        assert!(!tracker.changed_since(&key, 10));
        tracker.record(key.clone(), 13);
        assert!(tracker.changed_since(&key, 12));
        assert!(!tracker.changed_since(&Change::Receipts("!other".into()), 12));
    }
}
