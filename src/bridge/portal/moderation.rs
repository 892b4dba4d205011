//! Power in portals, both ways:
//! - the MUC's affiliations and roles are power levels in the portal (`docs/mapping.md`: owner
//!   100, admin or moderator 50, member and participant 0, visitor -1), set by the MUC's ghost
//!   for occupants' ghosts and for our own members alike;
//! - the MUC's kicks (307) and bans (301) of an occupant are its ghost's kick and ban, by the
//!   MUC's ghost, with the MUC's reason;
//! - a member kicking or banning an occupant's ghost in the portal asks the MUC (`muc#admin`)
//!   as their own occupant; when the MUC says no, the portal is put back as the MUC has it
//!   (the ghost joins again) and the member is told why, in reply to their event;
//! - a member changing power levels in the portal asks the MUC for the matching role or
//!   affiliation of each occupant whose level changed; when the MUC says no, the level is put
//!   back as the MUC has it and the member is told why.

use causeway_mapping::content::presence::power_level;
use causeway_matrix::api::client::membership::leave_as;
use causeway_matrix::store::EventRow;
use minidom::Element;
use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::muc::user::{Item, MucUser};

use super::{MUC_USER, describe};
use crate::bridge::{Bridge, BridgeError};

const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// XEP-0425 and the retraction it asks for (XEP-0424).
const MODERATE: &str = "urn:xmpp:message-moderate:1";
const RETRACT: &str = "urn:xmpp:message-retract:1";

/// What a MUC presence says of an occupant: their item (affiliation, role, real JID when the
/// room shows it), its reason, and the status codes.
pub(super) struct OccupantInfo {
    pub item: Option<Item>,
    pub reason: Option<String>,
    pub actor: Option<String>,
    pub statuses: Vec<u16>,
}

impl OccupantInfo {
    pub(super) fn of(payloads: &[Element]) -> OccupantInfo {
        let x = payloads.iter().find(|p| p.is("x", MUC_USER));
        let item_element = x.and_then(|x| x.get_child("item", MUC_USER));
        let statuses = x
            .into_iter()
            .flat_map(|x| x.children().filter(|c| c.is("status", MUC_USER)))
            .filter_map(|status| status.attr("code")?.parse().ok())
            .collect();
        OccupantInfo {
            item: x
                .and_then(|x| MucUser::try_from(x.clone()).ok())
                .and_then(|user| user.items.into_iter().next()),
            reason: item_element
                .and_then(|item| item.get_child("reason", MUC_USER))
                .map(Element::text)
                .filter(|text| !text.trim().is_empty()),
            actor: item_element
                .and_then(|item| item.get_child("actor", MUC_USER))
                .and_then(|actor| actor.attr("nick"))
                .map(str::to_owned),
            statuses,
        }
    }

    pub(super) fn has(&self, code: u16) -> bool {
        self.statuses.contains(&code)
    }

    /// The reason as the portal shows it: the MUC's words, and who acted.
    fn reason_text(&self, muc: &BareJid) -> String {
        let by = self
            .actor
            .as_deref()
            .map(|nick| format!(" by {nick}"))
            .unwrap_or_default();
        match &self.reason {
            Some(reason) => format!("{reason} ({muc}{by})"),
            None => format!("{muc}{by}"),
        }
    }
}

/// The notice of a MUC's refusal of what a member did in its portal.
fn did_not(muc: &BareJid, why: &str) -> String {
    format!("⚠ {muc} did not do this: {why}")
}

/// A `muc#admin` request of `item` to a MUC, from a member's occupant.
fn admin_request(own: Jid, muc: &BareJid, item: minidom::ElementBuilder) -> Iq {
    Iq::Set {
        from: Some(own),
        to: Some(Jid::from(muc.clone())),
        id: format!("portal-admin-{}", crate::bridge::random_id()),
        payload: Element::builder("query", MUC_ADMIN).append(item).build(),
    }
}

/// What the MUC is asked for when a member sets an occupant's power level from `old` to `new`
/// (the inverse of `power_level`): owner at 100, moderator at 50 (an owner stepping down
/// becomes an admin), participant at 0 (a former owner a member), visitor below 0.
#[derive(Debug, PartialEq)]
enum PowerRequest {
    Role(&'static str),
    Affiliation(&'static str),
}

impl PowerRequest {
    fn of(old: i64, new: i64) -> Option<PowerRequest> {
        let request = match new {
            new if new >= 100 => PowerRequest::Affiliation("owner"),
            new if new >= 50 && old >= 100 => PowerRequest::Affiliation("admin"),
            new if new >= 50 => PowerRequest::Role("moderator"),
            new if new >= 0 && old >= 100 => PowerRequest::Affiliation("member"),
            new if new >= 0 => PowerRequest::Role("participant"),
            _ => PowerRequest::Role("visitor"),
        };
        // Levels that mean the same to the MUC ask for nothing.
        (Self::rank(old) != Self::rank(new)).then_some(request)
    }

    fn rank(level: i64) -> i8 {
        match level {
            level if level >= 100 => 3,
            level if level >= 50 => 2,
            level if level >= 0 => 1,
            _ => 0,
        }
    }
}

/// The users whose level differs between two `m.room.power_levels` contents: (user, old, new).
fn changed_levels(before: &Value, after: &Value) -> Vec<(ruma::OwnedUserId, i64, i64)> {
    let default = |content: &Value| {
        content
            .get("users_default")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let level = |content: &Value, user: &str| {
        content
            .get("users")
            .and_then(|users| users.get(user))
            .and_then(Value::as_i64)
            .unwrap_or_else(|| default(content))
    };
    let mut users: Vec<&String> = [before, after]
        .iter()
        .filter_map(|content| content.get("users").and_then(Value::as_object))
        .flat_map(|users| users.keys())
        .collect();
    users.sort();
    users.dedup();
    users
        .into_iter()
        .filter_map(|user| {
            let (old, new) = (level(before, user), level(after, user));
            let user = UserId::parse(user.as_str()).ok()?;
            (old != new).then_some((user, old, new))
        })
        .collect()
}

impl Bridge {
    /// An occupant's affiliation and role as their power level in the portal.
    pub(super) async fn portal_power(
        &self,
        room: &RoomId,
        muc: &BareJid,
        user: &UserId,
        info: &OccupantInfo,
    ) -> Result<(), BridgeError> {
        let Some(item) = &info.item else {
            return Ok(());
        };
        let Some(level) = power_level(&item.affiliation, &item.role) else {
            return Ok(());
        };
        // One change of the power levels at a time: each is read, changed and written whole.
        let _one = self.portals.power.lock().await;
        let levels = self.services.rooms.power_levels(room).await?;
        if levels.user(user) == level {
            return Ok(());
        }
        let ghost = self.muc_ghost(muc).await?;
        // In a room linked to the MUC, its ghost may not have the power to.
        if levels.user(&ghost) < levels.event("m.room.power_levels", true) {
            return Ok(());
        }
        self.set_power(room, &ghost, user, level).await?;
        Ok(())
    }

    /// An occupant other than ours left the MUC: kicked (307, or removed by a change of
    /// affiliation or of the room's rules: 321, 322) or banned (301) by the MUC's ghost, or
    /// their ghost leaves.
    pub(super) async fn occupant_gone(
        &self,
        room: &RoomId,
        muc: &BareJid,
        occupant: &Jid,
        info: &OccupantInfo,
    ) -> Result<(), BridgeError> {
        let ghost = self.gateway.jid_to_user(occupant)?;
        self.portals.forget_real_jid(occupant);
        let membership = self.services.rooms.membership(room, &ghost).await?;
        let banned = info.has(301);
        let kicked = info.has(307) || info.has(321) || info.has(322);
        if banned && membership.as_deref() != Some("ban") {
            self.muc_sets_membership(room, muc, &ghost, "ban", &info.reason_text(muc))
                .await?;
        } else if membership.as_deref() != Some("join") {
        } else if kicked {
            self.muc_sets_membership(room, muc, &ghost, "leave", &info.reason_text(muc))
                .await?;
        } else {
            leave_as(&self.services, room, &ghost, None).await?;
        }
        Ok(())
    }

    /// The MUC's ghost sets someone's membership in the portal, saying why.
    pub(super) async fn muc_sets_membership(
        &self,
        room: &RoomId,
        muc: &BareJid,
        user: &UserId,
        membership: &str,
        reason: &str,
    ) -> Result<(), BridgeError> {
        let muc_ghost = self.muc_ghost(muc).await?;
        self.append(
            room,
            &muc_ghost,
            "m.room.member",
            Some(user.as_str()),
            json!({ "membership": membership, "reason": reason }),
        )
        .await?;
        Ok(())
    }

    /// A member kicked or banned an occupant's ghost in the portal: the MUC is asked to do
    /// the same, as the member's occupant. The answer is waited for apart from the event
    /// stream.
    pub(super) async fn portal_removal(
        &self,
        row: &EventRow,
        muc: BareJid,
        own: FullJid,
        target: &UserId,
        ban: bool,
        reason: Option<String>,
    ) -> Result<(), BridgeError> {
        let Some(occupant) = self.occupant_of_ghost(target, &muc) else {
            return Ok(());
        };
        let Some(nick) = occupant.resource().map(|nick| nick.as_str().to_owned()) else {
            return Ok(());
        };
        let room = RoomId::parse(&row.room_id).map_err(super::internal)?;
        let event = EventId::parse(&row.event_id).map_err(super::internal)?;
        let mut item = Element::builder("item", MUC_ADMIN);
        if ban {
            // A MUC bans JIDs, not nicknames: only a room that shows who its occupants are
            // can be asked.
            let Some(real) = self.portals.real_jid(&occupant) else {
                let why = format!("{muc} does not show who {nick} is, so they cannot be banned");
                self.removal_refused(&room, &muc, &occupant, &event, &why)
                    .await?;
                return Ok(());
            };
            item = item
                .attr(rxml::xml_ncname!("affiliation").to_owned(), "outcast")
                .attr(rxml::xml_ncname!("jid").to_owned(), real.as_str());
        } else {
            item = item
                .attr(rxml::xml_ncname!("nick").to_owned(), nick.as_str())
                .attr(rxml::xml_ncname!("role").to_owned(), "none");
        }
        if let Some(reason) = reason.filter(|reason| !reason.is_empty()) {
            item = item.append(Element::builder("reason", MUC_ADMIN).append(reason));
        }
        let iq = admin_request(Jid::from(own), &muc, item);
        self.ask_muc(iq, muc.clone(), move |bridge, why| async move {
            bridge
                .removal_refused(&room, &muc, &occupant, &event, &why)
                .await
        });
        Ok(())
    }

    /// Sends a request to a MUC and waits for its answer apart from the event stream; when
    /// the MUC says no (or does not answer), `refused` gets the reason in words.
    fn ask_muc<Refused>(
        &self,
        iq: Iq,
        muc: BareJid,
        refused: impl FnOnce(std::sync::Arc<Bridge>, String) -> Refused + Send + 'static,
    ) where
        Refused: std::future::Future<Output = Result<(), BridgeError>> + Send,
    {
        let Some(bridge) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let why = match bridge.request(iq).await {
                Some(Iq::Result { .. }) => return,
                Some(Iq::Error { error, .. }) => describe(&error),
                _ => format!("{muc} did not answer"),
            };
            if let Err(error) = refused(bridge, why).await {
                tracing::warn!(%error, %muc, "a MUC's refusal was not taken back or told");
            }
        });
    }

    /// A member changed the portal's power levels: for each occupant whose level changed (an
    /// occupant's ghost, or a member's own occupant), the MUC is asked for the role or
    /// affiliation of the new level, as the member's occupant. Its answers are waited for
    /// apart from the event stream.
    pub(super) async fn portal_power_change(
        &self,
        row: &EventRow,
        muc: BareJid,
        own: FullJid,
        content: &Value,
    ) -> Result<(), BridgeError> {
        let before = self
            .services
            .store
            .replaced_state(&row.room_id, "m.room.power_levels", "", row.stream_ordering)
            .await?
            .map(|(_, _, previous)| previous)
            .unwrap_or_default();
        let room = RoomId::parse(&row.room_id).map_err(super::internal)?;
        let event = EventId::parse(&row.event_id).map_err(super::internal)?;
        for (user, old, new) in changed_levels(&before, content) {
            let Some((occupant, real)) = self.occupant_of_user(&room, &muc, &user).await? else {
                continue;
            };
            let Some(nick) = occupant.resource().map(|nick| nick.as_str().to_owned()) else {
                continue;
            };
            let Some(request) = PowerRequest::of(old, new) else {
                continue;
            };
            let mut item = Element::builder("item", MUC_ADMIN);
            item = match request {
                PowerRequest::Role(role) => item
                    .attr(rxml::xml_ncname!("nick").to_owned(), nick.as_str())
                    .attr(rxml::xml_ncname!("role").to_owned(), role),
                PowerRequest::Affiliation(affiliation) => {
                    // Affiliations are a JID's: only a room that shows who its occupants
                    // are can be asked.
                    let Some(real) = real else {
                        let why = format!("{muc} does not show who {nick} is");
                        self.power_refused(&room, &muc, &user, old, &event, &why)
                            .await?;
                        continue;
                    };
                    item.attr(rxml::xml_ncname!("affiliation").to_owned(), affiliation)
                        .attr(rxml::xml_ncname!("jid").to_owned(), real.as_str())
                }
            };
            let iq = admin_request(Jid::from(own.clone()), &muc, item);
            let (room, muc, event) = (room.clone(), muc.clone(), event.clone());
            self.ask_muc(iq, muc.clone(), move |bridge, why| async move {
                bridge
                    .power_refused(&room, &muc, &user, old, &event, &why)
                    .await
            });
        }
        Ok(())
    }

    /// The occupant of `muc` whose ghost `user` is, if it is one.
    pub(super) fn occupant_of_ghost(&self, user: &UserId, muc: &BareJid) -> Option<Jid> {
        if !self.gateway.is_ghost(user) {
            return None;
        }
        let occupant = self.gateway.user_to_jid(user).ok()?;
        (occupant.resource().is_some() && occupant.to_bare() == *muc).then_some(occupant)
    }

    /// The occupant a user of the portal stands for in its MUC, and their real JID when
    /// known: an occupant's ghost, or a member (their own occupant).
    async fn occupant_of_user(
        &self,
        room: &RoomId,
        muc: &BareJid,
        user: &UserId,
    ) -> Result<Option<(Jid, Option<BareJid>)>, BridgeError> {
        if self.gateway.is_ghost(user) {
            return Ok(self.occupant_of_ghost(user, muc).map(|occupant| {
                let real = self.portals.real_jid(&occupant);
                (occupant, real)
            }));
        }
        let Some(session) = self.store.session(room.as_str(), user.as_str()).await? else {
            return Ok(None);
        };
        let occupant = muc
            .with_resource_str(&session.nick)
            .map_err(super::internal)?;
        let real = self.gateway.user_to_jid(user)?.to_bare();
        Ok(Some((Jid::from(occupant), Some(real))))
    }

    /// The MUC did not give an occupant the role or affiliation of the level a member set:
    /// the level is put back (if the MUC's ghost may), and the member is told why.
    async fn power_refused(
        &self,
        room: &RoomId,
        muc: &BareJid,
        user: &UserId,
        old: i64,
        event: &EventId,
        why: &str,
    ) -> Result<(), BridgeError> {
        {
            let _one = self.portals.power.lock().await;
            let levels = self.services.rooms.power_levels(room).await?;
            let ghost = self.muc_ghost(muc).await?;
            let (mine, theirs) = (levels.user(&ghost), levels.user(user));
            // The rules of power levels: above their level now, and not above its own.
            if theirs != old
                && mine >= levels.event("m.room.power_levels", true)
                && mine > theirs
                && mine >= old
            {
                self.set_power(room, &ghost, user, old).await?;
            }
        }
        self.muc_notice(room, muc, Some(event), did_not(muc, why))
            .await?;
        tracing::info!(room_id = %room, %muc, %user, %why, "a MUC refused a member's power change");
        Ok(())
    }

    /// A member redacted an occupant's message in the portal: the MUC is asked to retract it
    /// (XEP-0425), as the member's occupant; when it says no, the member is told, in reply to
    /// the redaction.
    pub(in crate::bridge) fn portal_moderate(
        &self,
        room: &RoomId,
        muc: &BareJid,
        own: &Jid,
        redaction: &causeway_matrix::pdu::Pdu,
        stanza_id: &str,
        reason: Option<String>,
    ) {
        let mut moderate = Element::builder("moderate", MODERATE)
            .attr(rxml::xml_ncname!("id").to_owned(), stanza_id)
            .append(Element::bare("retract", RETRACT));
        if let Some(reason) = reason.filter(|reason| !reason.is_empty()) {
            moderate = moderate.append(Element::builder("reason", MODERATE).append(reason));
        }
        let iq = Iq::Set {
            from: Some(own.clone()),
            to: Some(Jid::from(muc.clone())),
            id: format!("portal-moderate-{}", crate::bridge::random_id()),
            payload: moderate.build(),
        };
        let (room, muc, event) = (room.to_owned(), muc.clone(), redaction.event_id.clone());
        self.ask_muc(iq, muc.clone(), move |bridge, why| async move {
            let text = format!("⚠ {muc} did not retract the message: {why}; it stays there");
            bridge.muc_notice(&room, &muc, Some(&event), text).await
        });
    }

    /// A notice of the MUC's ghost in the portal, in reply to an event if there is one.
    pub(super) async fn muc_notice(
        &self,
        room: &RoomId,
        muc: &BareJid,
        event: Option<&EventId>,
        text: String,
    ) -> Result<(), BridgeError> {
        let muc_ghost = self.muc_ghost(muc).await?;
        match event {
            Some(event) => self.notice_replying(room, &muc_ghost, event, text).await?,
            None => self.notice_in(room, &muc_ghost, text).await?,
        };
        Ok(())
    }

    /// The MUC did not remove an occupant a member removed in the portal: the occupant's
    /// ghost is back as the MUC has it, and the member is told why.
    async fn removal_refused(
        &self,
        room: &OwnedRoomId,
        muc: &BareJid,
        occupant: &Jid,
        event: &EventId,
        why: &str,
    ) -> Result<(), BridgeError> {
        let ghost = self.gateway.jid_to_user(occupant)?;
        if self.membership_is(room, &ghost, "ban").await? {
            let reason = format!("{muc} did not ban them");
            self.muc_sets_membership(room, muc, &ghost, "leave", &reason)
                .await?;
        }
        if let Some(nick) = occupant.resource() {
            self.occupant_ghost(room, occupant, nick.as_str()).await?;
        }
        self.muc_notice(room, muc, Some(event), did_not(muc, why))
            .await?;
        tracing::info!(room_id = %room, %muc, %occupant, %why, "a MUC refused a member's removal of an occupant");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_ask_for_roles_and_affiliations() {
        use PowerRequest::{Affiliation, Role};
        let cases = [
            ((0, 100), Some(Affiliation("owner"))),
            ((0, 50), Some(Role("moderator"))),
            ((100, 50), Some(Affiliation("admin"))),
            ((50, 0), Some(Role("participant"))),
            ((100, 0), Some(Affiliation("member"))),
            ((0, -1), Some(Role("visitor"))),
            ((-1, 10), Some(Role("participant"))),
            // The same to the MUC: nothing to ask.
            ((0, 10), None),
            ((50, 75), None),
        ];
        for ((old, new), expected) in cases {
            assert_eq!(PowerRequest::of(old, new), expected, "{old} → {new}");
        }
    }

    #[test]
    fn changed_levels_count_defaults() {
        let before = json!({ "users": { "@a:x": 100, "@b:x": 50 }, "users_default": 0 });
        let after = json!({ "users": { "@a:x": 100, "@c:x": -1 }, "users_default": 0 });
        let changed: Vec<(String, i64, i64)> = changed_levels(&before, &after)
            .into_iter()
            .map(|(user, old, new)| (user.to_string(), old, new))
            .collect();
        assert_eq!(
            changed,
            vec![("@b:x".to_owned(), 50, 0), ("@c:x".to_owned(), 0, -1)]
        );
        // Without earlier power levels, everyone stood at the default.
        let changed = changed_levels(&Value::Null, &json!({ "users": { "@a:x": 50 } }));
        assert_eq!(changed.len(), 1);
    }
}
