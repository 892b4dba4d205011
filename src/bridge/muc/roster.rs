//! The occupants of a Matrix room as a MUC: every joined member, with a nickname
//! (`docs/mapping.md`, "Occupants"), an affiliation and a role from power levels, and a real
//! JID (the room is not anonymous), and their Matrix presence as show and status
//! (`occupant_availability`), told again whenever it changes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use causeway_mapping::address::occupant_nick;
use causeway_mapping::content::presence::{
    MatrixPresence, affiliation_and_role, occupant_availability,
};
use causeway_matrix::pdu::Pdu;
use causeway_matrix::rooms::PowerLevels;
use causeway_matrix::store::PresenceRecord;
use minidom::Element;
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::Value;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::muc::user::{Affiliation, Role};
use xmpp_parsers::presence::{Presence, Show, Type as PresenceType};

use super::{MUC_USER, OCCUPANT_ID};
use crate::bridge::store::bare_of;
use crate::bridge::{Bridge, BridgeError};

/// A member as an occupant.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user: OwnedUserId,
    pub nick: String,
    pub affiliation: Affiliation,
    pub role: Role,
    /// The JID shown as the occupant's real one: an XMPP user's own, a Matrix user's address.
    pub real_jid: Option<String>,
    /// Their presence as shown on the occupant: show and status.
    pub availability: (Option<Show>, Option<String>),
}

/// The occupants of a room at one moment.
#[derive(Debug, Default)]
pub struct Roster {
    members: Vec<Member>,
    by_user: HashMap<OwnedUserId, usize>,
    by_nick: HashMap<String, usize>,
}

impl Roster {
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, user: &UserId) -> Option<&Member> {
        self.by_user.get(user).map(|&index| &self.members[index])
    }

    pub fn by_nick(&self, nick: &str) -> Option<&Member> {
        self.by_nick.get(nick).map(|&index| &self.members[index])
    }

    /// The same occupants with one member's availability changed; `None` if they are not
    /// among them or it is the same.
    pub fn with_availability(
        &self,
        user: &UserId,
        availability: (Option<Show>, Option<String>),
    ) -> Option<Roster> {
        let index = *self.by_user.get(user)?;
        if self.members[index].availability == availability {
            return None;
        }
        let mut members = self.members.clone();
        members[index].availability = availability;
        Some(Roster {
            members,
            by_user: self.by_user.clone(),
            by_nick: self.by_nick.clone(),
        })
    }

    /// The same occupants without one member.
    pub fn without(&self, user: &UserId) -> Roster {
        let mut roster = Roster::default();
        for member in self.members.iter().filter(|member| member.user != user) {
            roster
                .by_user
                .insert(member.user.clone(), roster.members.len());
            roster
                .by_nick
                .insert(member.nick.clone(), roster.members.len());
            roster.members.push(member.clone());
        }
        roster
    }
}

impl Bridge {
    /// The occupants of a room as its current state has them. XMPP users keep the nickname
    /// they joined with (it was free then); the other members get theirs in the order of
    /// their member events.
    pub(super) async fn roster(&self, room: &RoomId) -> Result<Roster, BridgeError> {
        let state = self.services.rooms.current_state(room).await?;
        let levels = self.services.rooms.power_levels(room).await?;
        self.roster_of(room, &state, &levels).await
    }

    /// The occupants of a room as its state was at a stream position (what its occupants
    /// were told by then).
    pub(super) async fn roster_at(
        &self,
        room: &RoomId,
        position: i64,
    ) -> Result<Roster, BridgeError> {
        let group = self
            .services
            .store
            .state_group_at_position(room.as_str(), position)
            .await?;
        let state =
            causeway_matrix::api::client::events::state_at_group(&self.services, group).await?;
        let rules = self.services.rooms.rules(room).await?;
        let levels = PowerLevels::from_events(&rules, &state);
        self.roster_of(room, &state, &levels).await
    }

    /// The occupants of a room in a state given as its events, with its power levels.
    async fn roster_of(
        &self,
        room: &RoomId,
        state: &[Arc<Pdu>],
        levels: &PowerLevels,
    ) -> Result<Roster, BridgeError> {
        let occupants = self.store.occupants(room.as_str()).await?;
        let mut joined: Vec<(u64, OwnedUserId, Option<String>)> = state
            .iter()
            .filter(|pdu| pdu.event_type == ruma::events::TimelineEventType::RoomMember)
            .filter_map(|pdu| {
                let content = pdu.content_value();
                if content.get("membership").and_then(Value::as_str) != Some("join") {
                    return None;
                }
                let user = UserId::parse(pdu.state_key.as_deref()?).ok()?;
                let name = content
                    .get("displayname")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Some((pdu.origin_server_ts.get().into(), user, name))
            })
            .collect();
        joined.sort();
        let mut taken: HashSet<String> = HashSet::new();
        let mut nicks: HashMap<OwnedUserId, String> = HashMap::new();
        let mut real: HashMap<OwnedUserId, String> = HashMap::new();
        for (_, user, _) in &joined {
            if !self.gateway.is_ghost(user) {
                continue;
            }
            let Ok(jid) = self.gateway.user_to_jid(user) else {
                continue;
            };
            let bare = jid.to_bare().to_string();
            if let Some(occupant) = occupants.iter().find(|o| bare_of(&o.jid) == bare)
                && taken.insert(occupant.nick.clone())
            {
                nicks.insert(user.clone(), occupant.nick.clone());
                real.insert(user.clone(), occupant.jid.clone());
            }
        }
        let users: Vec<String> = joined.iter().map(|(_, user, _)| user.to_string()).collect();
        let mut presences: HashMap<String, MatrixPresence> = self
            .services
            .store
            .presences(&users)
            .await?
            .into_iter()
            .map(|record| (record.user_id.clone(), matrix_presence(&record)))
            .collect();
        let mut roster = Roster::default();
        for (_, user, name) in joined {
            let nick = match nicks.remove(&user) {
                Some(nick) => nick,
                None => {
                    let Ok(nick) = occupant_nick(name.as_deref(), &user, |n| taken.contains(n))
                    else {
                        continue;
                    };
                    taken.insert(nick.clone());
                    nick
                }
            };
            let (affiliation, role) =
                affiliation_and_role(levels.user(&user), levels.events_default);
            let real_jid = real.remove(&user).or_else(|| {
                self.gateway
                    .user_to_jid(&user)
                    .ok()
                    .map(|jid| jid.to_bare().to_string())
            });
            let index = roster.members.len();
            roster.by_user.insert(user.clone(), index);
            roster.by_nick.insert(nick.clone(), index);
            let availability = presences
                .remove(user.as_str())
                .map(|presence| occupant_availability(&presence))
                .unwrap_or_default();
            roster.members.push(Member {
                user,
                nick,
                affiliation,
                role,
                real_jid,
                availability,
            });
        }
        Ok(roster)
    }

    /// The presence of a member (as `room_jid/nick`) for one occupant: available, or gone
    /// (`unavailable`); with the status codes given and, for a nickname change, the new one.
    pub(super) fn member_presence(
        &self,
        room: &RoomId,
        room_jid: &BareJid,
        member: &Member,
        to: &Jid,
        presence: MemberPresence<'_>,
    ) -> Presence {
        let mut stanza = Presence::new(if presence.unavailable {
            PresenceType::Unavailable
        } else {
            PresenceType::None
        });
        stanza.from = room_jid.with_resource_str(&member.nick).ok().map(Jid::from);
        stanza.to = Some(to.clone());
        if !presence.unavailable {
            let (show, status) = &member.availability;
            stanza.show = show.clone();
            if let Some(status) = status {
                stanza.set_status(String::new(), status.clone());
            }
        }
        let (affiliation, role) = if presence.unavailable && presence.new_nick.is_none() {
            match presence.statuses.contains(&301) {
                true => (Affiliation::Outcast, Role::None),
                false => (member.affiliation.clone(), Role::None),
            }
        } else {
            (member.affiliation.clone(), member.role.clone())
        };
        let mut item = Element::builder("item", MUC_USER)
            .attr(
                rxml::xml_ncname!("affiliation").to_owned(),
                affiliation_text(&affiliation),
            )
            .attr(rxml::xml_ncname!("role").to_owned(), role_text(&role));
        if let Some(jid) = &member.real_jid {
            item = item.attr(rxml::xml_ncname!("jid").to_owned(), jid.as_str());
        }
        if let Some(nick) = presence.new_nick {
            item = item.attr(rxml::xml_ncname!("nick").to_owned(), nick);
        }
        if let Some(reason) = presence.reason {
            item = item.append(
                Element::builder("reason", MUC_USER)
                    .append(reason.to_owned())
                    .build(),
            );
        }
        let mut x = Element::builder("x", MUC_USER).append(item.build());
        for code in presence.statuses {
            x = x.append(
                Element::builder("status", MUC_USER)
                    .attr(rxml::xml_ncname!("code").to_owned(), code.to_string())
                    .build(),
            );
        }
        stanza.payloads.push(x.build());
        stanza.payloads.push(
            Element::builder("occupant-id", OCCUPANT_ID)
                .attr(
                    rxml::xml_ncname!("id").to_owned(),
                    self.occupant_id(room, &member.user),
                )
                .build(),
        );
        stanza
    }
}

/// What a member's presence says.
#[derive(Default)]
pub(super) struct MemberPresence<'a> {
    pub unavailable: bool,
    pub statuses: &'a [u16],
    pub new_nick: Option<&'a str>,
    pub reason: Option<&'a str>,
}

fn affiliation_text(affiliation: &Affiliation) -> &'static str {
    match affiliation {
        Affiliation::Owner => "owner",
        Affiliation::Admin => "admin",
        Affiliation::Member => "member",
        Affiliation::Outcast => "outcast",
        Affiliation::None => "none",
    }
}

fn role_text(role: &Role) -> &'static str {
    match role {
        Role::Moderator => "moderator",
        Role::Participant => "participant",
        Role::Visitor => "visitor",
        Role::None => "none",
    }
}

/// A stored presence as Matrix says it.
pub(in crate::bridge) fn matrix_presence(record: &PresenceRecord) -> MatrixPresence {
    MatrixPresence {
        state: ruma::presence::PresenceState::from(record.state.as_str()),
        status: record.status_msg.clone(),
    }
}

impl Bridge {
    /// A user's presence changed: every room with occupants where they are a member tells its
    /// occupants their new show and status.
    pub(in crate::bridge) async fn muc_member_presence(
        &self,
        record: &PresenceRecord,
    ) -> Result<(), BridgeError> {
        let Ok(user) = UserId::parse(&record.user_id) else {
            return Ok(());
        };
        let availability = occupant_availability(&matrix_presence(record));
        for (room, lock) in self.muc_rooms() {
            let mut view = lock.lock().await;
            let Some(roster) = view
                .roster
                .as_ref()
                .and_then(|roster| roster.with_availability(&user, availability.clone()))
            else {
                continue;
            };
            self.tell_changes(&room, &mut view, Arc::new(roster), None)
                .await?;
        }
        Ok(())
    }
}
