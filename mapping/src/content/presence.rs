//! Presence and room roles: XMPP presence ↔ `m.presence`, MUC affiliations and roles ↔ power
//! levels.

use ruma::presence::PresenceState;
use xmpp_parsers::muc::user::{Affiliation, Role};
use xmpp_parsers::presence::{Presence, Show, Type};

/// A presence as Matrix says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixPresence {
    pub state: PresenceState,
    pub status: Option<String>,
}

/// XMPP presence as Matrix presence: available (or free for chat) is `online`, away, extended
/// away and do not disturb are `unavailable`, unavailable is `offline`; the status text is the
/// status message. `None` for presences that say nothing about availability (subscriptions,
/// probes, errors).
pub fn presence_to_matrix(presence: &Presence) -> Option<MatrixPresence> {
    let state = match presence.type_ {
        Type::None => match presence.show {
            None | Some(Show::Chat) => PresenceState::Online,
            Some(Show::Away | Show::Xa | Show::Dnd) => PresenceState::Unavailable,
        },
        Type::Unavailable => PresenceState::Offline,
        _ => return None,
    };
    let status = presence
        .statuses
        .values()
        .next()
        .filter(|status| !status.trim().is_empty())
        .cloned();
    Some(MatrixPresence { state, status })
}

/// Matrix presence as an XMPP presence (without addresses): `online` is available,
/// `unavailable` away, `offline` unavailable; the status message is the status text.
pub fn presence_to_xmpp(presence: &MatrixPresence) -> Presence {
    let mut out = match presence.state {
        PresenceState::Offline => Presence::new(Type::Unavailable),
        PresenceState::Unavailable => Presence::new(Type::None).with_show(Show::Away),
        _ => Presence::new(Type::None),
    };
    if let Some(status) = presence.status.as_ref().filter(|s| !s.trim().is_empty()) {
        out.set_status(String::new(), status.clone());
    }
    out
}

/// A Matrix member's presence as shown on their occupant in a MUC, where being there is being
/// available: `online` shows nothing, `unavailable` away, `offline` extended away (they are
/// still a member); the status message is the status text.
pub fn occupant_availability(presence: &MatrixPresence) -> (Option<Show>, Option<String>) {
    let show = match presence.state {
        PresenceState::Offline => Some(Show::Xa),
        PresenceState::Unavailable => Some(Show::Away),
        _ => None,
    };
    let status = presence
        .status
        .as_ref()
        .filter(|status| !status.trim().is_empty())
        .cloned();
    (show, status)
}

/// The power level of an affiliation and role (owner 100, admin or moderator 50, member and
/// participant 0, visitor -1: below the default level of sending messages). Outcasts are
/// banned, which power levels do not say: `None`.
pub fn power_level(affiliation: &Affiliation, role: &Role) -> Option<i64> {
    match affiliation {
        Affiliation::Outcast => None,
        Affiliation::Owner => Some(100),
        Affiliation::Admin => Some(50),
        _ if *role == Role::Moderator => Some(50),
        _ if *role == Role::Visitor => Some(-1),
        _ => Some(0),
    }
}

/// The affiliation and role of a power level, with `events_default` the level needed to send
/// messages in the room.
pub fn affiliation_and_role(level: i64, events_default: i64) -> (Affiliation, Role) {
    match level {
        level if level >= 100 => (Affiliation::Owner, Role::Moderator),
        level if level >= 50 => (Affiliation::Admin, Role::Moderator),
        level if level < events_default => (Affiliation::Member, Role::Visitor),
        _ => (Affiliation::Member, Role::Participant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minidom::Element;

    fn presence(xml: &str) -> Presence {
        Presence::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    #[test]
    fn members_presence_on_their_occupants() {
        let of = |state, status: Option<&str>| {
            occupant_availability(&MatrixPresence {
                state,
                status: status.map(str::to_owned),
            })
        };
        assert_eq!(of(PresenceState::Online, None), (None, None));
        assert_eq!(
            of(PresenceState::Unavailable, Some("lunch")),
            (Some(Show::Away), Some("lunch".to_owned()))
        );
        assert_eq!(
            of(PresenceState::Offline, Some(" ")),
            (Some(Show::Xa), None)
        );
    }

    #[test]
    fn presence_both_ways() {
        for (xml, state, status) in [
            (
                "<presence xmlns='jabber:client'/>",
                PresenceState::Online,
                None,
            ),
            (
                "<presence xmlns='jabber:client'><show>chat</show><status>hi</status></presence>",
                PresenceState::Online,
                Some("hi"),
            ),
            (
                "<presence xmlns='jabber:client'><show>away</show></presence>",
                PresenceState::Unavailable,
                None,
            ),
            (
                "<presence xmlns='jabber:client'><show>xa</show></presence>",
                PresenceState::Unavailable,
                None,
            ),
            (
                "<presence xmlns='jabber:client'><show>dnd</show><status>busy</status></presence>",
                PresenceState::Unavailable,
                Some("busy"),
            ),
            (
                "<presence xmlns='jabber:client' type='unavailable'/>",
                PresenceState::Offline,
                None,
            ),
        ] {
            assert_eq!(
                presence_to_matrix(&presence(xml)),
                Some(MatrixPresence {
                    state,
                    status: status.map(str::to_owned)
                }),
                "{xml}"
            );
        }
        for xml in [
            "<presence xmlns='jabber:client' type='subscribe'/>",
            "<presence xmlns='jabber:client' type='probe'/>",
        ] {
            assert_eq!(presence_to_matrix(&presence(xml)), None, "{xml}");
        }
        for state in [
            PresenceState::Online,
            PresenceState::Unavailable,
            PresenceState::Offline,
        ] {
            for status in [None, Some("at lunch".to_owned())] {
                let matrix = MatrixPresence {
                    state: state.clone(),
                    status,
                };
                let back = presence_to_matrix(&presence_to_xmpp(&matrix)).unwrap();
                assert_eq!(back, matrix);
            }
        }
    }

    #[test]
    fn roles_and_power_levels() {
        assert_eq!(
            power_level(&Affiliation::Owner, &Role::Moderator),
            Some(100)
        );
        assert_eq!(power_level(&Affiliation::Admin, &Role::Moderator), Some(50));
        assert_eq!(
            power_level(&Affiliation::Member, &Role::Moderator),
            Some(50)
        );
        assert_eq!(
            power_level(&Affiliation::Member, &Role::Participant),
            Some(0)
        );
        assert_eq!(power_level(&Affiliation::None, &Role::Visitor), Some(-1));
        assert_eq!(power_level(&Affiliation::Outcast, &Role::None), None);
        for level in [-5, -1, 0, 10, 50, 75, 100, 150] {
            let (affiliation, role) = affiliation_and_role(level, 0);
            let back = power_level(&affiliation, &role).unwrap();
            // Levels come back as the step they fall on.
            let step = match level {
                l if l >= 100 => 100,
                l if l >= 50 => 50,
                l if l < 0 => -1,
                _ => 0,
            };
            assert_eq!(back, step, "{level}");
        }
    }
}
