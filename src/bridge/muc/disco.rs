//! Service discovery of the MUC service (its identity, the public rooms with XEP-0059 paging)
//! and of each room (XEP-0045 §6.4: its kind, name, description, occupant count).

use std::collections::BTreeSet;

use causeway_mapping::address::RoomRef;
use minidom::Element;
use ruma::{RoomAliasId, RoomId};
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item};
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::rsm::{SetQuery, SetResult};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::{MUC, OCCUPANT_ID, SID, refused};
use crate::bridge::{Bridge, BridgeError};

pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const PING: &str = "urn:xmpp:ping";
const RSM: &str = "http://jabber.org/protocol/rsm";
const ROOM_INFO: &str = "http://jabber.org/protocol/muc#roominfo";

/// The most rooms listed at once.
const MAX_ITEMS: usize = 100;
/// The largest room avatar sent in a vCard (the XMPP servers' stanza limits are near).
const MAX_AVATAR_BYTES: usize = 128 * 1024;

/// Nodes are not served: a query for one is `item-not-found`.
pub fn query_node(query: &Element) -> Result<(), BridgeError> {
    match query.attr("node") {
        Some(_) => Err(refused(
            ErrorType::Cancel,
            DefinedCondition::ItemNotFound,
            "no such node",
        )),
        None => Ok(()),
    }
}

fn features(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|f| (*f).to_owned()).collect()
}

impl Bridge {
    /// The MUC service's identity and features.
    pub(super) fn service_info(&self) -> DiscoInfoResult {
        DiscoInfoResult {
            node: None,
            identities: vec![Identity {
                category: "conference".to_owned(),
                type_: "text".to_owned(),
                lang: None,
                name: Some("Matrix rooms".to_owned()),
            }],
            features: features(&[DISCO_INFO, DISCO_ITEMS, MUC, PING, RSM, OCCUPANT_ID, SID]),
            extensions: vec![],
        }
    }

    /// The public rooms, by address, a page at a time (XEP-0059).
    pub(super) async fn service_items(&self, query: &Element) -> Result<Element, BridgeError> {
        let paging = match query.get_child("set", RSM) {
            Some(set) => Some(SetQuery::try_from(set.clone()).map_err(|error| {
                refused(
                    ErrorType::Modify,
                    DefinedCondition::BadRequest,
                    format!("the paging request is malformed: {error}"),
                )
            })?),
            None => None,
        };
        let mut rooms: Vec<(String, Option<String>)> = Vec::new();
        for room in self.services.store.public_rooms().await? {
            let Ok(room) = RoomId::parse(&room) else {
                continue;
            };
            let Some(address) = self.room_jid_of(&room).await? else {
                continue;
            };
            rooms.push((address.to_string(), self.room_name(&room).await?));
        }
        rooms.sort();
        let count = rooms.len();
        let max = paging
            .as_ref()
            .and_then(|paging| paging.max)
            .unwrap_or(MAX_ITEMS)
            .min(MAX_ITEMS);
        let start = match paging.as_ref().and_then(|paging| paging.after.as_deref()) {
            Some(after) => rooms.partition_point(|(address, _)| address.as_str() <= after),
            None => 0,
        };
        let end = match paging.as_ref().and_then(|paging| paging.before.as_deref()) {
            Some("") => count,
            Some(before) => rooms.partition_point(|(address, _)| address.as_str() < before),
            None => count,
        };
        let (start, end) = match paging.as_ref().and_then(|paging| paging.before.as_deref()) {
            // A page before a point: the last `max` items before it.
            Some(_) => (end.saturating_sub(max), end),
            None => (start, (start + max).min(end)),
        };
        let page = rooms.get(start..end).unwrap_or(&[]);
        let mut items = Vec::new();
        for (address, name) in page {
            let Ok(jid) = Jid::new(address) else {
                continue;
            };
            items.push(Item {
                jid,
                node: None,
                name: name.clone(),
            });
        }
        let rsm = paging.map(|_| SetResult {
            first: page.first().map(|(address, _)| xmpp_parsers::rsm::First {
                index: Some(start),
                item: address.clone(),
            }),
            last: page.last().map(|(address, _)| address.clone()),
            count: Some(count),
        });
        Ok(DiscoItemsResult {
            node: None,
            items,
            rsm,
        }
        .into())
    }

    /// A room's address: its canonical alias's when it has a local one, else its id's.
    pub(super) async fn room_jid_of(&self, room: &RoomId) -> Result<Option<BareJid>, BridgeError> {
        let alias = self
            .state_text(room, "m.room.canonical_alias", "alias")
            .await?
            .and_then(|alias| RoomAliasId::parse(alias).ok())
            .filter(|alias| alias.server_name() == self.services.server_name);
        if let Some(alias) = alias
            && let Ok(jid) = self.gateway.room_to_muc(RoomRef::Alias(&alias))
        {
            return Ok(Some(jid));
        }
        Ok(self.gateway.room_to_muc(RoomRef::Id(room)).ok())
    }

    async fn room_name(&self, room: &RoomId) -> Result<Option<String>, BridgeError> {
        Ok(self
            .state_text(room, "m.room.name", "name")
            .await?
            .filter(|name| !name.is_empty()))
    }

    /// A room's identity, features and information form.
    pub(super) async fn room_info(
        &self,
        room_jid: &BareJid,
    ) -> Result<DiscoInfoResult, BridgeError> {
        let room = self.known_room(room_jid).await?;
        let rooms = &self.services.rooms;
        let name = self.room_name(&room).await?;
        let topic = self
            .state_text(&room, "m.room.topic", "topic")
            .await?
            .unwrap_or_default();
        let join_rule = self
            .state_text(&room, "m.room.join_rules", "join_rule")
            .await?
            .unwrap_or_else(|| "invite".to_owned());
        let public = self
            .services
            .store
            .room(room.as_str())
            .await?
            .is_some_and(|record| record.is_public);
        let levels = rooms.power_levels(&room).await?;
        let roster = self.roster(&room).await?;
        let mut list = vec![
            DISCO_INFO,
            MUC,
            OCCUPANT_ID,
            SID,
            super::archive::MAM,
            super::archive::MAM_EXTENDED,
            super::admin::MODERATE,
            "vcard-temp",
            "muc_persistent",
            "muc_nonanonymous",
            "muc_unsecured",
        ];
        list.push(if public { "muc_public" } else { "muc_hidden" });
        list.push(if join_rule == "public" {
            "muc_open"
        } else {
            "muc_membersonly"
        });
        list.push(if levels.events_default > levels.users_default() {
            "muc_moderated"
        } else {
            "muc_unmoderated"
        });
        let form = DataForm::new(
            DataFormType::Result_,
            ROOM_INFO,
            vec![
                Field::text_single("muc#roomconfig_roomname", name.as_deref().unwrap_or("")),
                Field::text_single("muc#roominfo_description", &topic),
                Field::text_single(
                    "muc#roominfo_occupants",
                    &roster.members().len().to_string(),
                ),
                Field::text_single("muc#roominfo_subject", &topic),
                // XEP-0486: the SHA-1 of the avatar; no value for none.
                {
                    let field = Field::new(
                        "muc#roominfo_avatarhash",
                        xmpp_parsers::data_forms::FieldType::TextMulti,
                    );
                    match self.room_avatar(&room).await? {
                        Some(avatar) => {
                            field.with_value(&causeway_mapping::content::room::avatar_hash(&avatar))
                        }
                        None => field,
                    }
                },
            ],
        );
        Ok(DiscoInfoResult {
            node: None,
            identities: vec![Identity {
                category: "conference".to_owned(),
                type_: "text".to_owned(),
                lang: None,
                name: Some(
                    name.unwrap_or_else(|| {
                        room_jid.node().map(|n| n.to_string()).unwrap_or_default()
                    }),
                ),
            }],
            features: features(&list),
            extensions: vec![form],
        })
    }

    /// A room's avatar (XEP-0486), when it is a file small enough to send: this server's, or
    /// the copy of another server's. One not copied yet is fetched apart from the request, for
    /// the requests after it.
    pub(super) async fn room_avatar(
        &self,
        room: &RoomId,
    ) -> Result<Option<causeway_mapping::content::room::Avatar>, BridgeError> {
        let Some(url) = self.state_text(room, "m.room.avatar", "url").await? else {
            return Ok(None);
        };
        let uri = ruma::OwnedMxcUri::from(url);
        let read = self.services.read_any_media(&uri).await?;
        if read.is_none()
            && let Ok((server, media_id)) = uri.parts()
            && server != self.services.server_name
        {
            let (services, server, media_id) = (
                self.services.clone(),
                server.to_owned(),
                media_id.to_owned(),
            );
            tokio::spawn(async move {
                if let Err(error) =
                    causeway_matrix::federation::media::remote(&services, &server, &media_id).await
                {
                    tracing::info!(%error, %server, %media_id, "a room's avatar could not be fetched");
                }
            });
        }
        Ok(read
            .filter(|(bytes, _)| bytes.len() <= MAX_AVATAR_BYTES)
            .map(
                |(bytes, media_type)| causeway_mapping::content::room::Avatar {
                    media_type: media_type.unwrap_or_else(|| "image/png".to_owned()),
                    bytes,
                },
            ))
    }

    /// A room's vCard: its avatar as the photo (XEP-0486).
    pub(super) async fn room_vcard(&self, room_jid: &BareJid) -> Result<Element, BridgeError> {
        let room = self.known_room(room_jid).await?;
        Ok(match self.room_avatar(&room).await? {
            Some(avatar) => causeway_mapping::content::room::vcard_with_avatar(&avatar),
            None => Element::bare("vCard", "vcard-temp"),
        })
    }

    /// A room's items: none are listed (its occupants are in its presence).
    pub(super) async fn room_items(&self, room_jid: &BareJid) -> Result<Element, BridgeError> {
        self.known_room(room_jid).await?;
        Ok(DiscoItemsResult {
            node: None,
            items: vec![],
            rsm: None,
        }
        .into())
    }
}
