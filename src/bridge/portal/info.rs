//! What a MUC says of itself is the portal's: its name (disco#info) as `m.room.name`, its
//! avatar (XEP-0486: the hash in disco#info, the image in the room's vCard) as
//! `m.room.avatar`, set by the MUC's ghost when they change. They are read when the portal is
//! made and whenever the MUC says its configuration changed (status 104).

use causeway_mapping::content::room::{
    announced_avatar_hash, avatar_from_vcard, avatar_hash, room_name,
};
use minidom::Element;
use ruma::{MxcUri, RoomId};
use serde_json::{Value, json};
use xmpp_parsers::disco::DiscoInfoQuery;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};

use crate::bridge::{Bridge, BridgeError};

/// The largest room avatar taken from a MUC's vCard.
const MAX_AVATAR_BYTES: usize = 1024 * 1024;

impl Bridge {
    /// Asks a MUC (or anything) what it is: disco#info, from our domain.
    pub(super) async fn ask_disco_info(&self, muc: &BareJid) -> Result<Option<Iq>, BridgeError> {
        let from = Jid::from(BareJid::new(self.gateway.domain()).map_err(super::internal)?);
        let id = format!("portal-{}", crate::bridge::random_id());
        let request = Iq::from_get(id, DiscoInfoQuery { node: None })
            .with_from(from)
            .with_to(Jid::from(muc.clone()));
        Ok(self.request(request).await)
    }

    /// Reads a MUC's name and avatar again, apart from the stream that said they changed.
    pub(super) fn refresh_portal_info(&self, room: &RoomId, muc: &BareJid) {
        let Some(bridge) = self.me.upgrade() else {
            return;
        };
        let (room, muc) = (room.to_owned(), muc.clone());
        tokio::spawn(async move {
            let outcome = match bridge.ask_disco_info(&muc).await {
                Ok(Some(Iq::Result {
                    payload: Some(info),
                    ..
                })) => bridge.portal_info(&room, &muc, &info).await,
                Ok(_) => Ok(()),
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                tracing::info!(%error, %muc, "the name and avatar of a MUC were not read");
            }
        });
    }

    /// Makes the portal's name and avatar what the MUC's disco#info says.
    pub(super) async fn portal_info(
        &self,
        room: &RoomId,
        muc: &BareJid,
        info: &Element,
    ) -> Result<(), BridgeError> {
        self.portals
            .note_archive(muc, super::archive::keeps_archive(info));
        let ghost = self.muc_ghost(muc).await?;
        if let Some(name) = room_name(info)
            && self
                .state_text(room, "m.room.name", "name")
                .await?
                .as_deref()
                != Some(&name)
        {
            self.append(
                room,
                &ghost,
                "m.room.name",
                Some(""),
                json!({ "name": name }),
            )
            .await?;
        }
        let Some(hash) = announced_avatar_hash(info) else {
            return Ok(());
        };
        let current = self.state_text(room, "m.room.avatar", "url").await?;
        if hash.is_empty() {
            if current.is_some() {
                self.append(room, &ghost, "m.room.avatar", Some(""), json!({}))
                    .await?;
            }
            return Ok(());
        }
        if let Some(url) = &current {
            let uri: &MxcUri = url.as_str().into();
            let same = self
                .services
                .read_media(uri)
                .await?
                .is_some_and(|(bytes, _)| {
                    avatar_hash(&causeway_mapping::content::room::Avatar {
                        media_type: String::new(),
                        bytes,
                    }) == hash
                });
            if same {
                return Ok(());
            }
        }
        let Some(vcard) = self.request_vcard(muc).await? else {
            return Ok(());
        };
        let Some(avatar) = avatar_from_vcard(&vcard)
            .filter(|avatar| avatar.bytes.len() <= MAX_AVATAR_BYTES && avatar_hash(avatar) == hash)
        else {
            tracing::info!(%muc, "a MUC's vCard does not hold the avatar its disco#info announces");
            return Ok(());
        };
        let uri = self
            .services
            .store_media(&avatar.bytes, Some(&avatar.media_type), None, &ghost)
            .await?;
        let content: Value = json!({
            "url": uri.to_string(),
            "info": { "mimetype": avatar.media_type, "size": avatar.bytes.len() },
        });
        self.append(room, &ghost, "m.room.avatar", Some(""), content)
            .await?;
        Ok(())
    }
}
