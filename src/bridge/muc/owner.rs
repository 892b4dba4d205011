//! Rooms made from XMPP (XEP-0045 §10.1): joining an address of this server's rooms that no
//! room has yet makes a Matrix room there, of the joining user's ghost, when the configuration
//! lets that user's domain (`xmpp.muc_create_domains`); and the owner's configuration form
//! (`muc#owner`): the room's name, description, listing and who may join.

use causeway_matrix::create_room::{RoomOptions, create_room};
use causeway_matrix::error::Error as MatrixError;
use minidom::Element;
use ruma::api::client::room::create_room::v3::RoomPreset;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::json;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::refused;
use crate::bridge::{Bridge, BridgeError};

pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const ROOM_CONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";

impl Bridge {
    /// Whether users of `domain` may make rooms from XMPP.
    fn may_create(&self, domain: &str) -> bool {
        self.services
            .config
            .xmpp
            .muc_create_domains
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(domain))
    }

    /// Makes the room a join asked for at a local alias nobody has, if the joining user may;
    /// `None` when they may not (the join is then `item-not-found`).
    pub(super) async fn create_for_join(
        &self,
        room_jid: &BareJid,
        ghost: &UserId,
    ) -> Result<Option<OwnedRoomId>, BridgeError> {
        if !self.may_create_for(ghost) {
            return Ok(None);
        }
        let Ok(causeway_mapping::address::MatrixRoom::Alias(alias)) =
            self.gateway.muc_to_room(room_jid)
        else {
            return Ok(None);
        };
        if alias.server_name() != self.services.server_name {
            return Ok(None);
        }
        // A domain's users make rooms at a bounded pace.
        if let Ok(jid) = self.gateway.user_to_jid(ghost) {
            self.services
                .limits
                .remote_rooms
                .check(&jid.domain().as_str().to_ascii_lowercase())?;
        }
        let mut options =
            RoomOptions::private(ghost.to_owned(), self.services.default_room_version());
        options.preset = RoomPreset::PublicChat;
        options.alias_name = Some(alias.alias().to_owned());
        let room = create_room(&self.services, options)
            .await
            .map_err(|error| match error {
                MatrixError::RoomInUse => refused(
                    ErrorType::Cancel,
                    DefinedCondition::Conflict,
                    "the room was made by someone else just now: join again",
                ),
                error => BridgeError::Matrix(error),
            })?;
        tracing::info!(room_id = %room, %alias, creator = %ghost, "an XMPP user made a room");
        Ok(Some(room))
    }

    /// Whether the ghost's XMPP domain may make rooms.
    pub(super) fn may_create_for(&self, ghost: &UserId) -> bool {
        self.gateway
            .user_to_jid(ghost)
            .is_ok_and(|jid| self.may_create(jid.domain().as_str()))
    }

    /// A `muc#owner` request: the configuration form (get) or its submission (set).
    pub(super) async fn owner_request(
        &self,
        from: &Jid,
        to: &Jid,
        payload: &Element,
        get: bool,
    ) -> Result<Option<Element>, BridgeError> {
        let (room, _) = self.room_of_address(&to.to_bare()).await?;
        let ghost = self.ghost_id(&from.to_bare())?;
        let levels = self.services.rooms.power_levels(&room).await?;
        if levels.user(&ghost) < levels.event("m.room.power_levels", true) {
            return Err(refused(
                ErrorType::Auth,
                DefinedCondition::Forbidden,
                "only the room's owners configure it",
            ));
        }
        if get {
            return Ok(Some(
                Element::builder("query", MUC_OWNER)
                    .append(Element::from(self.config_form(&room).await?))
                    .build(),
            ));
        }
        if payload.get_child("destroy", MUC_OWNER).is_some() {
            return Err(refused(
                ErrorType::Cancel,
                DefinedCondition::NotAllowed,
                "a Matrix room cannot be destroyed: its members may leave it",
            ));
        }
        let Some(form) = payload.get_child("x", "jabber:x:data") else {
            return Err(refused(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "a configuration is a data form",
            ));
        };
        let form = DataForm::try_from(form.clone()).map_err(|error| {
            refused(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                format!("the configuration form is malformed: {error}"),
            )
        })?;
        match form.type_ {
            // Cancelling keeps the room as it is (it is open from the start).
            DataFormType::Cancel => Ok(None),
            DataFormType::Submit => {
                self.configure(&room, &ghost, &form).await?;
                Ok(None)
            }
            _ => Err(refused(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "a configuration is submitted or cancelled",
            )),
        }
    }

    /// The room's configuration as XEP-0045's form.
    async fn config_form(&self, room: &RoomId) -> Result<DataForm, BridgeError> {
        let text = |event: &'static str, key: &'static str| async move {
            Ok::<_, BridgeError>(self.state_text(room, event, key).await?.unwrap_or_default())
        };
        let name = text("m.room.name", "name").await?;
        let topic = text("m.room.topic", "topic").await?;
        let join_rule = text("m.room.join_rules", "join_rule").await?;
        let public = self
            .services
            .store
            .room(room.as_str())
            .await?
            .is_some_and(|record| record.is_public);
        let boolean = |var: &str, value: bool| {
            Field::new(var, FieldType::Boolean).with_value(if value { "1" } else { "0" })
        };
        Ok(DataForm::new(
            DataFormType::Form,
            ROOM_CONFIG,
            vec![
                Field::text_single("muc#roomconfig_roomname", &name),
                Field::text_single("muc#roomconfig_roomdesc", &topic),
                boolean("muc#roomconfig_publicroom", public),
                boolean("muc#roomconfig_membersonly", join_rule != "public"),
                boolean("muc#roomconfig_persistentroom", true),
            ],
        ))
    }

    /// Applies a submitted configuration, as the owner's ghost: what changed only.
    async fn configure(
        &self,
        room: &RoomId,
        ghost: &UserId,
        form: &DataForm,
    ) -> Result<(), BridgeError> {
        let current = self.config_form(room).await?;
        let value = |form: &DataForm, var: &str| {
            form.fields
                .iter()
                .find(|field| field.var.as_deref() == Some(var))
                .and_then(|field| field.values.first().cloned())
        };
        let truthy = |text: &str| matches!(text, "1" | "true");
        let forbidden = |error: BridgeError| match error {
            BridgeError::Matrix(MatrixError::Forbidden(text)) => {
                refused(ErrorType::Auth, DefinedCondition::Forbidden, text)
            }
            error => error,
        };
        for field in &form.fields {
            let (Some(var), Some(new)) = (field.var.as_deref(), field.values.first()) else {
                continue;
            };
            if value(&current, var).as_deref() == Some(new.as_str()) {
                continue;
            }
            match var {
                "muc#roomconfig_roomname" => {
                    self.append(room, ghost, "m.room.name", Some(""), json!({ "name": new }))
                        .await
                        .map_err(forbidden)?;
                }
                "muc#roomconfig_roomdesc" => {
                    self.append(
                        room,
                        ghost,
                        "m.room.topic",
                        Some(""),
                        json!({ "topic": new }),
                    )
                    .await
                    .map_err(forbidden)?;
                }
                "muc#roomconfig_membersonly" => {
                    let rule = if truthy(new) { "invite" } else { "public" };
                    self.append(
                        room,
                        ghost,
                        "m.room.join_rules",
                        Some(""),
                        json!({ "join_rule": rule }),
                    )
                    .await
                    .map_err(forbidden)?;
                }
                "muc#roomconfig_publicroom" => {
                    self.services
                        .store
                        .set_room_public(room.as_str(), truthy(new))
                        .await?;
                }
                "muc#roomconfig_persistentroom" if !truthy(new) => {
                    return Err(refused(
                        ErrorType::Modify,
                        DefinedCondition::NotAcceptable,
                        "Matrix rooms are persistent",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
