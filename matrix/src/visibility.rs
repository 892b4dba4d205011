//! Who may see which event of a room.
//!
//! The rule is the Matrix specification's ("History visibility", client-server API): for each
//! event, the room's `m.room.history_visibility` and the viewer's membership *at that event*
//! decide. An event is visible when
//!
//! 1. the visibility was `world_readable`; or
//! 2. the viewer was joined; or
//! 3. the visibility was `shared` and the viewer joined at some point after the event; or
//! 4. the visibility was `invited` and the viewer was invited.
//!
//! A change of the visibility is itself visible when the rule allows it under the old or the
//! new value; a viewer's own member event when the rule allows it under their membership before
//! or after it.
//!
//! Every reader of room events asks here: the client API (`/messages`, `/context`, `/event`,
//! state, members, sync) and, later, federation and MUC history. Events of a room form one line
//! in stream order, so what a viewer may see is a set of ranges of stream positions, computed
//! from the changes of their membership and of the visibility ([`Visible::compute`]).

use std::ops::RangeInclusive;

use ruma::{RoomId, UserId};
use serde_json::Value;

use crate::store::{Store, StoreError};

/// The values of `m.room.history_visibility`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryVisibility {
    WorldReadable,
    Shared,
    Invited,
    Joined,
}

impl HistoryVisibility {
    /// The visibility an event's content sets; a missing or unknown value counts as `shared`,
    /// the specification's default.
    pub fn from_content(content: &Value) -> HistoryVisibility {
        match content["history_visibility"].as_str() {
            Some("world_readable") => HistoryVisibility::WorldReadable,
            Some("invited") => HistoryVisibility::Invited,
            Some("joined") => HistoryVisibility::Joined,
            _ => HistoryVisibility::Shared,
        }
    }
}

/// A viewer's membership, as far as visibility cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Join,
    Invite,
    /// Anything else: never a member, left, knocked, banned.
    Other,
}

impl Membership {
    pub fn from_content(content: &Value) -> Membership {
        match content["membership"].as_str() {
            Some("join") => Membership::Join,
            Some("invite") => Membership::Invite,
            _ => Membership::Other,
        }
    }
}

/// The specification's rule for one event.
pub fn allowed(visibility: HistoryVisibility, membership: Membership, joins_later: bool) -> bool {
    visibility == HistoryVisibility::WorldReadable
        || membership == Membership::Join
        || (visibility == HistoryVisibility::Shared && joins_later)
        || (visibility == HistoryVisibility::Invited && membership == Membership::Invite)
}

/// The stream positions of one room that one viewer may see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Visible {
    /// Sorted, disjoint and not adjacent; the last may end at `i64::MAX` (what comes next
    /// will be visible too).
    ranges: Vec<RangeInclusive<i64>>,
    /// Where the viewer was joined when the event was sent (their own join included): the
    /// events of an erased account are shown whole only there.
    joined: Vec<RangeInclusive<i64>>,
}

/// One change in the line of a room.
#[derive(Clone, Copy)]
enum Change {
    Membership(Membership),
    Visibility(HistoryVisibility),
}

impl Visible {
    /// What a viewer may see, from the changes of their membership and of the room's history
    /// visibility, each as `(stream position, new value)` in stream order.
    pub fn compute(
        memberships: &[(i64, Membership)],
        visibilities: &[(i64, HistoryVisibility)],
    ) -> Visible {
        let mut changes: Vec<(i64, Change)> = memberships
            .iter()
            .map(|&(at, m)| (at, Change::Membership(m)))
            .chain(
                visibilities
                    .iter()
                    .map(|&(at, v)| (at, Change::Visibility(v))),
            )
            .collect();
        changes.sort_by_key(|&(at, _)| at);
        let last_join = memberships
            .iter()
            .filter(|(_, m)| *m == Membership::Join)
            .map(|&(at, _)| at)
            .max();
        let joins_after = |position: i64| last_join.is_some_and(|join| join > position);

        let mut visible = Visible::default();
        let mut membership = Membership::Other;
        let mut visibility = HistoryVisibility::Shared;
        // Events stored out of the stream's order (backfilled from other servers) have
        // negative positions, before every event of the stream.
        let mut previous = i64::MIN;
        for &(at, change) in &changes {
            // The events strictly between two changes share their inputs.
            if previous + 1 < at {
                if allowed(visibility, membership, joins_after(at - 1)) {
                    push(&mut visible.ranges, previous + 1..=at - 1);
                }
                if membership == Membership::Join {
                    push(&mut visible.joined, previous + 1..=at - 1);
                }
            }
            let joins_later = joins_after(at);
            let before = allowed(visibility, membership, joins_later);
            let joined_before = membership == Membership::Join;
            match change {
                Change::Membership(new) => membership = new,
                Change::Visibility(new) => visibility = new,
            }
            if before || allowed(visibility, membership, joins_later) {
                push(&mut visible.ranges, at..=at);
            }
            if joined_before || membership == Membership::Join {
                push(&mut visible.joined, at..=at);
            }
            previous = at;
        }
        if previous < i64::MAX {
            if allowed(visibility, membership, false) {
                push(&mut visible.ranges, previous + 1..=i64::MAX);
            }
            if membership == Membership::Join {
                push(&mut visible.joined, previous + 1..=i64::MAX);
            }
        }
        visible
    }

    /// Whether the viewer was joined when the event at a stream position was sent.
    pub fn was_joined(&self, position: i64) -> bool {
        within(&self.joined, position)
    }

    /// Whether the event at a stream position may be seen.
    pub fn contains(&self, position: i64) -> bool {
        within(&self.ranges, position)
    }

    /// Whether nothing may be seen.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether what comes next will be visible.
    pub fn is_open(&self) -> bool {
        self.ranges.last().is_some_and(|r| *r.end() == i64::MAX)
    }

    /// The visible ranges, latest first.
    pub fn latest_first(&self) -> impl Iterator<Item = &RangeInclusive<i64>> {
        self.ranges.iter().rev()
    }

    /// The first and last visible positions.
    pub fn bounds(&self) -> Option<(i64, i64)> {
        Some((*self.ranges.first()?.start(), *self.ranges.last()?.end()))
    }
}

/// Adds a range after the others, merged with the last when they touch.
fn push(ranges: &mut Vec<RangeInclusive<i64>>, range: RangeInclusive<i64>) {
    if let Some(last) = ranges.last_mut()
        && last.end().saturating_add(1) >= *range.start()
    {
        *last = *last.start()..=(*last.end()).max(*range.end());
        return;
    }
    ranges.push(range);
}

fn within(ranges: &[RangeInclusive<i64>], position: i64) -> bool {
    let index = ranges.partition_point(|r| *r.end() < position);
    ranges
        .get(index)
        .is_some_and(|range| range.contains(&position))
}

/// What `user` may see of `room`.
pub async fn for_user(store: &Store, room: &RoomId, user: &UserId) -> Result<Visible, StoreError> {
    let memberships: Vec<(i64, Membership)> = store
        .state_changes(room.as_str(), "m.room.member", user.as_str())
        .await?
        .iter()
        .map(|(at, content)| (*at, Membership::from_content(content)))
        .collect();
    let visibilities: Vec<(i64, HistoryVisibility)> = store
        .state_changes(room.as_str(), "m.room.history_visibility", "")
        .await?
        .iter()
        .map(|(at, content)| (*at, HistoryVisibility::from_content(content)))
        .collect();
    Ok(Visible::compute(&memberships, &visibilities))
}

/// What other servers may see of a room's events, decided from the state after each event
/// (the event itself counts: a server sees its own user's join): `world_readable` and
/// `shared` history is visible to every server; `invited` history to a server with a user
/// invited or joined then; `joined` history to a server with a user joined then. The state of
/// each group is read once.
#[derive(Default)]
pub struct ForServers {
    groups: std::collections::HashMap<i64, GroupView>,
}

/// One state group, as far as servers' visibility cares.
struct GroupView {
    visibility: HistoryVisibility,
    /// `(server, membership)` of the members of that state.
    members: Vec<(String, Membership)>,
}

impl ForServers {
    /// Whether `server` may see `event`.
    pub async fn allows(
        &mut self,
        store: &Store,
        server: &str,
        event: &crate::store::EventRow,
    ) -> Result<bool, StoreError> {
        let view = match self.groups.entry(event.state_group) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(group_view(store, event.state_group).await?)
            }
        };
        let membership = view
            .members
            .iter()
            .filter(|(member_server, _)| member_server == server)
            .map(|(_, membership)| *membership)
            .fold(Membership::Other, |best, next| match (best, next) {
                (Membership::Join, _) | (_, Membership::Join) => Membership::Join,
                (Membership::Invite, _) | (_, Membership::Invite) => Membership::Invite,
                _ => Membership::Other,
            });
        Ok(view.visibility == HistoryVisibility::Shared
            || allowed(view.visibility, membership, false))
    }
}

async fn group_view(store: &Store, group: i64) -> Result<GroupView, StoreError> {
    let state = store.state_group(group).await?;
    let ids: Vec<String> = state
        .iter()
        .filter(|((kind, _), _)| kind == "m.room.member" || kind == "m.room.history_visibility")
        .map(|(_, id)| id.clone())
        .collect();
    let mut view = GroupView {
        visibility: HistoryVisibility::Shared,
        members: Vec::new(),
    };
    for row in store.events(&ids).await? {
        let content = serde_json::from_str::<Value>(&row.json)
            .ok()
            .and_then(|json| json.get("content").cloned())
            .unwrap_or(Value::Null);
        if row.event_type == "m.room.history_visibility" {
            view.visibility = HistoryVisibility::from_content(&content);
        } else if let Some(server) = row
            .state_key
            .as_deref()
            .and_then(|user| user.split_once(':'))
            .map(|(_, server)| server.to_owned())
        {
            view.members
                .push((server, Membership::from_content(&content)));
        }
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::HistoryVisibility::*;
    use super::Membership::*;
    use super::*;

    fn positions(visible: &Visible, upto: i64) -> Vec<i64> {
        (1..=upto).filter(|p| visible.contains(*p)).collect()
    }

    #[test]
    fn the_rule() {
        for visibility in [WorldReadable, Shared, Invited, Joined] {
            assert!(allowed(visibility, Join, false));
        }
        assert!(allowed(WorldReadable, Other, false));
        assert!(allowed(Shared, Other, true));
        assert!(!allowed(Shared, Other, false));
        assert!(!allowed(Shared, Invite, false));
        assert!(allowed(Invited, Invite, false));
        assert!(!allowed(Invited, Other, true));
        assert!(!allowed(Joined, Invite, true));
    }

    #[test]
    fn joined_sees_from_the_join_to_the_leave() {
        // 2 visibility, 4 join, 8 leave. What came before the first visibility event (the
        // room's creation) was under the default, `shared`, and so was the change itself.
        let visible = Visible::compute(&[(4, Join), (8, Other)], &[(2, Joined)]);
        assert_eq!(positions(&visible, 10), [1, 2, 4, 5, 6, 7, 8]);
        assert!(!visible.is_open());
    }

    #[test]
    fn joined_at_the_time_of_each_event() {
        // Shared history: Bob sees everything up to his leave, but was there from 4 to 8 only.
        let visible = Visible::compute(&[(4, Join), (8, Other), (10, Join)], &[(1, Shared)]);
        let joined: Vec<i64> = (1..=12).filter(|p| visible.was_joined(*p)).collect();
        assert_eq!(joined, [4, 5, 6, 7, 8, 10, 11, 12]);
        assert!(
            Visible::compute(&[], &[(1, WorldReadable)])
                .joined
                .is_empty()
        );
    }

    #[test]
    fn shared_shows_earlier_history_to_whoever_joins() {
        let visible = Visible::compute(&[(4, Join)], &[(1, Shared)]);
        assert_eq!(positions(&visible, 6), [1, 2, 3, 4, 5, 6]);
        assert!(visible.is_open());
        // Never joined: nothing; invited, not yet joined: nothing either.
        assert!(Visible::compute(&[], &[(1, Shared)]).is_empty());
        assert!(Visible::compute(&[(4, Invite)], &[(1, Shared)]).is_empty());
        // Invited, then rejected: nothing.
        assert!(Visible::compute(&[(4, Invite), (6, Other)], &[(1, Shared)]).is_empty());
        // Joined and left: up to the leave, history before the join included.
        let left = Visible::compute(&[(4, Join), (6, Other)], &[(1, Shared)]);
        assert_eq!(positions(&left, 9), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn invited_shows_from_the_invite() {
        let visible = Visible::compute(&[(4, Invite), (6, Join)], &[(1, Invited)]);
        // 1 is the change to `invited`, visible under the default `shared` to a later member.
        assert_eq!(positions(&visible, 8), [1, 4, 5, 6, 7, 8]);
        // Invited, then rejected: the invitation's time and the rejection itself.
        let rejected = Visible::compute(&[(4, Invite), (6, Other)], &[(1, Invited)]);
        assert_eq!(positions(&rejected, 8), [4, 5, 6]);
        assert_eq!(rejected.bounds(), Some((4, 6)));
        // Banned before joining: nothing.
        assert!(Visible::compute(&[(4, Other)], &[(1, Invited)]).is_empty());
    }

    #[test]
    fn world_readable_shows_everything_while_it_holds() {
        let visible = Visible::compute(&[], &[(1, WorldReadable), (5, Joined)]);
        // The change away from world_readable is itself visible (the old value allows it).
        assert_eq!(positions(&visible, 8), [1, 2, 3, 4, 5]);
        let back = Visible::compute(&[], &[(1, Joined), (5, WorldReadable)]);
        assert_eq!(positions(&back, 8), [5, 6, 7, 8]);
        assert!(back.is_open());
    }

    #[test]
    fn visibility_applies_at_the_time_of_each_event() {
        // Shared until 5, joined from then on; Bob joins at 9.
        let visible = Visible::compute(&[(9, Join)], &[(1, Shared), (5, Joined)]);
        assert_eq!(positions(&visible, 11), [1, 2, 3, 4, 5, 9, 10, 11]);
        // Events backfilled from other servers come before every change, under the default.
        assert!(visible.contains(-3));
        assert_eq!(visible.bounds(), Some((i64::MIN + 1, i64::MAX)));
    }

    #[test]
    fn no_visibility_event_means_shared() {
        let visible = Visible::compute(&[(3, Join)], &[]);
        assert_eq!(positions(&visible, 4), [1, 2, 3, 4]);
        assert_eq!(
            HistoryVisibility::from_content(&serde_json::json!({"history_visibility": "odd"})),
            Shared
        );
    }
}
