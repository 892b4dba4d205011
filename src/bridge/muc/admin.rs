//! XEP-0045 administration of a room by its XMPP occupants (`muc#admin`): kicks, bans,
//! affiliations and roles become Matrix kicks, bans and power levels, sent by the requester's
//! ghost, so that the room's authorization rules decide; lists of affiliations and roles are
//! read from the room's state.

use causeway_mapping::content::presence::power_level;
use causeway_matrix::error::Error as MatrixError;
use minidom::Element;
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use xmpp_parsers::jid::Jid;
use xmpp_parsers::muc::user::{Affiliation, Role};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::refused;
use crate::bridge::{Bridge, BridgeError};

pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// XEP-0425: moderators retract others' messages.
pub const MODERATE: &str = "urn:xmpp:message-moderate:1";
const RETRACT: &str = "urn:xmpp:message-retract:1";

/// The most items one request may change.
const MAX_ITEMS: usize = 50;

/// One change asked for.
struct Change {
    target: OwnedUserId,
    affiliation: Option<Affiliation>,
    role: Option<Role>,
    reason: Option<String>,
}

impl Bridge {
    /// A `muc#admin` request to a room: a list (get) or changes (set).
    pub(super) async fn admin_request(
        &self,
        from: &Jid,
        to: &Jid,
        payload: &Element,
        get: bool,
    ) -> Result<Option<Element>, BridgeError> {
        let (room, _) = self.room_of_address(&to.to_bare()).await?;
        let ghost = self.ghost_id(&from.to_bare())?;
        let occupant = self.store.occupant(room.as_str(), from.as_str()).await?;
        if occupant.is_none() {
            return Err(refused(
                ErrorType::Auth,
                DefinedCondition::Forbidden,
                "only occupants administer this room",
            ));
        }
        if get {
            return self.admin_list(&room, payload).await.map(Some);
        }
        let roster = self.roster(&room).await?;
        let mut changes = Vec::new();
        for item in payload.children().filter(|c| c.is("item", MUC_ADMIN)) {
            if changes.len() == MAX_ITEMS {
                return Err(bad(format!("at most {MAX_ITEMS} items at once")));
            }
            let target = match (item.attr("nick"), item.attr("jid")) {
                (Some(nick), _) => roster
                    .by_nick(nick)
                    .map(|member| member.user.clone())
                    .ok_or_else(|| {
                        refused(
                            ErrorType::Cancel,
                            DefinedCondition::ItemNotFound,
                            format!("there is no occupant {nick} in this room"),
                        )
                    })?,
                (None, Some(jid)) => {
                    let jid = Jid::new(jid).map_err(|error| bad(format!("{jid}: {error}")))?;
                    self.gateway.jid_to_user(&Jid::from(jid.to_bare()))?
                }
                (None, None) => return Err(bad("an item names a nick or a jid".into())),
            };
            let affiliation = item
                .attr("affiliation")
                .map(|text| text.parse::<Affiliation>())
                .transpose()
                .map_err(|error| bad(format!("affiliation: {error}")))?;
            let role = item
                .attr("role")
                .map(|text| text.parse::<Role>())
                .transpose()
                .map_err(|error| bad(format!("role: {error}")))?;
            if affiliation.is_none() && role.is_none() {
                return Err(bad("an item changes an affiliation or a role".into()));
            }
            changes.push(Change {
                target,
                affiliation,
                role,
                reason: item.get_child("reason", MUC_ADMIN).map(Element::text),
            });
        }
        if changes.is_empty() {
            return Err(bad("the request changes nothing".into()));
        }
        for change in changes {
            self.admin_change(&room, &ghost, change).await?;
        }
        Ok(None)
    }

    /// Applies one change as the requester's ghost.
    async fn admin_change(
        &self,
        room: &RoomId,
        ghost: &UserId,
        change: Change,
    ) -> Result<(), BridgeError> {
        let levels = self.services.rooms.power_levels(room).await?;
        let needed = match (&change.affiliation, &change.role) {
            (_, Some(Role::None)) => levels.kick,
            (Some(Affiliation::Outcast), _) => levels.ban,
            _ => levels.event("m.room.power_levels", true),
        };
        if levels.user(ghost) < needed {
            return Err(refused(
                ErrorType::Auth,
                DefinedCondition::Forbidden,
                "you do not have the power to do this in this room",
            ));
        }
        if change.target != ghost && levels.user(&change.target) >= levels.user(ghost) {
            return Err(refused(
                ErrorType::Cancel,
                DefinedCondition::NotAllowed,
                "that member has at least your power in this room",
            ));
        }
        let member = |membership: &str| {
            let mut content = json!({ "membership": membership });
            if let Some(reason) = &change.reason {
                content["reason"] = json!(reason);
            }
            content
        };
        let target = change.target.as_str();
        let outcome = match (&change.affiliation, &change.role) {
            (_, Some(Role::None)) => {
                self.append(room, ghost, "m.room.member", Some(target), member("leave"))
                    .await
            }
            (Some(Affiliation::Outcast), _) => {
                self.append(room, ghost, "m.room.member", Some(target), member("ban"))
                    .await
            }
            (affiliation, role) => {
                let banned = self
                    .services
                    .rooms
                    .membership(room, &change.target)
                    .await?
                    .as_deref()
                    == Some("ban");
                if banned {
                    self.append(room, ghost, "m.room.member", Some(target), member("leave"))
                        .await?;
                }
                let level = match (affiliation, role) {
                    (Some(affiliation), _) => power_level(affiliation, &Role::Participant),
                    (None, Some(role)) => power_level(&Affiliation::Member, role),
                    (None, None) => None,
                };
                match level {
                    Some(level) => self.set_power(room, ghost, &change.target, level).await,
                    None => return Ok(()),
                }
            }
        };
        outcome.map(|_| ()).map_err(|error| match error {
            BridgeError::Matrix(MatrixError::Forbidden(text)) => {
                refused(ErrorType::Auth, DefinedCondition::Forbidden, text)
            }
            error => error,
        })
    }

    /// Sets a member's power level in the room (the default level is written as no entry).
    pub(in crate::bridge) async fn set_power(
        &self,
        room: &RoomId,
        ghost: &UserId,
        target: &UserId,
        level: i64,
    ) -> Result<ruma::OwnedEventId, BridgeError> {
        let mut content = self
            .services
            .rooms
            .state_event(room, "m.room.power_levels", "")
            .await?
            .map(|pdu| pdu.content_value())
            .unwrap_or_else(|| json!({}));
        let default = content
            .get("users_default")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !content.get("users").is_some_and(Value::is_object) {
            content["users"] = json!({});
        }
        if let Some(users) = content["users"].as_object_mut() {
            if level == default {
                users.remove(target.as_str());
            } else {
                users.insert(target.to_string(), json!(level));
            }
        }
        self.append(room, ghost, "m.room.power_levels", Some(""), content)
            .await
    }

    /// The members with an affiliation or a role (XEP-0045 §9.5, §10.5).
    async fn admin_list(&self, room: &RoomId, payload: &Element) -> Result<Element, BridgeError> {
        let item = payload
            .children()
            .find(|c| c.is("item", MUC_ADMIN))
            .ok_or_else(|| bad("a list request names an affiliation or a role".into()))?;
        let mut answer = Element::builder("query", MUC_ADMIN);
        let text = |affiliation: &Affiliation| match affiliation {
            Affiliation::Owner => "owner",
            Affiliation::Admin => "admin",
            Affiliation::Member => "member",
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
        };
        if let Some(wanted) = item.attr("affiliation") {
            let wanted = wanted
                .parse::<Affiliation>()
                .map_err(|error| bad(format!("affiliation: {error}")))?;
            if wanted == Affiliation::Outcast {
                for pdu in self.services.rooms.current_state(room).await? {
                    let content = pdu.content_value();
                    if pdu.event_type != ruma::events::TimelineEventType::RoomMember
                        || content.get("membership").and_then(Value::as_str) != Some("ban")
                    {
                        continue;
                    }
                    let Some(user) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
                    else {
                        continue;
                    };
                    let Ok(jid) = self.gateway.user_to_jid(&user) else {
                        continue;
                    };
                    let mut entry = Element::builder("item", MUC_ADMIN)
                        .attr(rxml::xml_ncname!("affiliation").to_owned(), "outcast")
                        .attr(
                            rxml::xml_ncname!("jid").to_owned(),
                            jid.to_bare().to_string(),
                        );
                    if let Some(reason) = content.get("reason").and_then(Value::as_str) {
                        entry = entry.append(
                            Element::builder("reason", MUC_ADMIN)
                                .append(reason.to_owned())
                                .build(),
                        );
                    }
                    answer = answer.append(entry.build());
                }
            } else {
                for member in self.roster(room).await?.members() {
                    if member.affiliation == wanted
                        && let Some(jid) = &member.real_jid
                    {
                        answer = answer.append(
                            Element::builder("item", MUC_ADMIN)
                                .attr(rxml::xml_ncname!("affiliation").to_owned(), text(&wanted))
                                .attr(rxml::xml_ncname!("jid").to_owned(), jid.as_str())
                                .attr(rxml::xml_ncname!("nick").to_owned(), member.nick.as_str())
                                .build(),
                        );
                    }
                }
            }
        } else if let Some(wanted) = item.attr("role") {
            let wanted = wanted
                .parse::<Role>()
                .map_err(|error| bad(format!("role: {error}")))?;
            for member in self.roster(room).await?.members() {
                if member.role == wanted {
                    let mut entry = Element::builder("item", MUC_ADMIN)
                        .attr(
                            rxml::xml_ncname!("role").to_owned(),
                            item.attr("role").unwrap_or_default(),
                        )
                        .attr(
                            rxml::xml_ncname!("affiliation").to_owned(),
                            text(&member.affiliation),
                        )
                        .attr(rxml::xml_ncname!("nick").to_owned(), member.nick.as_str());
                    if let Some(jid) = &member.real_jid {
                        entry = entry.attr(rxml::xml_ncname!("jid").to_owned(), jid.as_str());
                    }
                    answer = answer.append(entry.build());
                }
            }
        } else {
            return Err(bad("a list request names an affiliation or a role".into()));
        }
        Ok(answer.build())
    }
}

impl Bridge {
    /// XEP-0425: a moderator retracts a message of the room (named by its stanza id): a
    /// redaction by the moderator's ghost, which the room's rules allow or refuse.
    pub(super) async fn moderate(
        &self,
        from: &Jid,
        to: &Jid,
        payload: &Element,
    ) -> Result<Option<Element>, BridgeError> {
        let Some(id) = payload.attr("id") else {
            return Err(bad("a moderation names a message by its id".into()));
        };
        if payload.get_child("retract", RETRACT).is_none() {
            return Err(refused(
                ErrorType::Cancel,
                DefinedCondition::FeatureNotImplemented,
                "messages are moderated by retracting them",
            ));
        }
        let occupant = self
            .store
            .occupant_at(to.to_bare().as_str(), from.as_str())
            .await?
            .ok_or_else(|| {
                refused(
                    ErrorType::Auth,
                    DefinedCondition::Forbidden,
                    "only occupants moderate this room",
                )
            })?;
        let not_found = || {
            refused(
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                format!("{id} is not a message of this room"),
            )
        };
        let target = self
            .services
            .store
            .event(id)
            .await?
            .filter(|row| row.room_id == occupant.room_id && row.event_type == "m.room.message")
            .ok_or_else(not_found)?;
        let room = RoomId::parse(&occupant.room_id).map_err(|_| not_found())?;
        let ghost = self.ghost_id(&from.to_bare())?;
        // Others' messages take the power to redact (the room engine takes any redaction of
        // this server's users).
        let levels = self.services.rooms.power_levels(&room).await?;
        if target.sender != ghost.as_str() && levels.user(&ghost) < levels.redact {
            return Err(refused(
                ErrorType::Auth,
                DefinedCondition::Forbidden,
                "you do not have the power to moderate messages in this room",
            ));
        }
        let mut content = json!({ "redacts": target.event_id });
        if let Some(reason) = payload.get_child("reason", MODERATE) {
            content["reason"] = json!(reason.text());
        }
        self.append(&room, &ghost, "m.room.redaction", None, content)
            .await
            .map_err(|error| match error {
                BridgeError::Matrix(MatrixError::Forbidden(text)) => {
                    refused(ErrorType::Auth, DefinedCondition::Forbidden, text)
                }
                error => error,
            })?;
        Ok(None)
    }
}

fn bad(text: String) -> BridgeError {
    refused(ErrorType::Modify, DefinedCondition::BadRequest, text)
}
