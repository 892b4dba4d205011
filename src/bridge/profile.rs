//! Profiles: an XMPP user's vCard (XEP-0054: full name or nickname, and photo) is their
//! ghost's display name and avatar; a local account's display name and avatar are served as
//! its vCard.

use std::collections::HashMap;
use std::time::Duration;

use causeway_matrix::api::client::discovery::propagate_profile;
use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use ruma::{MxcUri, UserId};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::vcard::{Binval, Photo, Type, VCard, VCardQuery};

use super::{Bridge, BridgeError};

const VCARD: &str = "vcard-temp";
/// How long an answer to one of the bridge's requests is waited for.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest photo taken from a vCard.
const MAX_PHOTO_BYTES: usize = 1024 * 1024;
/// The largest photo put in a vCard.
const MAX_SENT_PHOTO_BYTES: usize = 128 * 1024;

/// Requests the bridge sent and waits for answers to, by id.
pub(super) type Pending = HashMap<String, tokio::sync::oneshot::Sender<Iq>>;

fn text_of(vcard: &VCard, name: &str) -> Option<String> {
    vcard
        .payloads
        .iter()
        .find(|element| element.is(name, VCARD))
        .map(|element| element.text().trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// The name a vCard gives: the full name, else the nickname.
pub(super) fn vcard_name(vcard: &VCard) -> Option<String> {
    text_of(vcard, "FN").or_else(|| text_of(vcard, "NICKNAME"))
}

impl Bridge {
    /// Handles an iq to a local account or an answer to one of the bridge's requests; `None`
    /// when it is neither.
    pub(super) async fn iq(&self, iq: Iq) -> Option<Vec<Stanza>> {
        match iq {
            Iq::Result { ref id, .. } | Iq::Error { ref id, .. } => {
                let waiting = self
                    .pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(id);
                match waiting {
                    Some(waiting) => {
                        let _ = waiting.send(iq);
                        Some(vec![])
                    }
                    None => None,
                }
            }
            Iq::Get {
                ref payload,
                ref to,
                ref from,
                ref id,
            } if payload.is("vCard", VCARD) && self.is_an_account(to.as_ref()) => {
                let (Some(to), Some(from)) = (to.clone(), from.clone()) else {
                    return Some(vec![]);
                };
                let answer = match self.local_vcard(&to.to_bare()).await {
                    Ok(vcard) => Iq::from_result(id.clone(), Some(vcard)),
                    Err(error) => Iq::from_error(id.clone(), error.to_stanza_error()),
                };
                Some(vec![Stanza::Iq(answer.with_from(to).with_to(from))])
            }
            _ => None,
        }
    }

    /// A local account's vCard: its display name and avatar.
    async fn local_vcard(&self, jid: &BareJid) -> Result<VCard, BridgeError> {
        let local = self.local_account(jid).await?;
        let Some(user) = self.services.store.user(local.as_str()).await? else {
            return Err(BridgeError::NoSuchUser(jid.to_string()));
        };
        let mut payloads = Vec::new();
        if let Some(name) = &user.displayname {
            for field in ["FN", "NICKNAME"] {
                payloads.push(Element::builder(field, VCARD).append(name.as_str()).build());
            }
        }
        let mut photo = None;
        if let Some(avatar) = user.avatar_url.as_deref() {
            let uri: &MxcUri = avatar.into();
            // A larger photo, base64-encoded, would not fit in the stanza limits of servers
            // (Causeway's own default is 256 KiB).
            if let Some((bytes, content_type)) = self
                .services
                .read_media(uri)
                .await?
                .filter(|(bytes, _)| bytes.len() <= MAX_SENT_PHOTO_BYTES)
            {
                photo = Some(Photo {
                    type_: Type {
                        data: content_type.unwrap_or_else(|| "image/png".to_owned()),
                    },
                    binval: Binval { data: bytes },
                });
            }
        }
        Ok(VCard { photo, payloads })
    }

    /// Sends a request and waits for its answer.
    pub(super) async fn request(&self, iq: Iq) -> Option<Iq> {
        let id = iq.id().to_owned();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone(), sender);
        self.send(Stanza::Iq(iq));
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, receiver).await;
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        answer.ok().and_then(Result::ok)
    }

    /// Reads an XMPP user's vCard and makes it their ghost's profile (in the background).
    pub(super) fn refresh_profile(&self, ghost: &UserId, remote: &BareJid) {
        let Some(bridge) = self.me.upgrade() else {
            return;
        };
        let (ghost, remote) = (ghost.to_owned(), remote.clone());
        tokio::spawn(async move {
            if let Err(error) = bridge.fetch_profile(&ghost, &remote).await {
                tracing::debug!(%error, %remote, "the vCard of an XMPP user was not read");
            }
        });
    }

    /// Asks an XMPP user or a MUC for its vCard (XEP-0054), from our domain: the vCard, if it
    /// answered with one.
    pub(super) async fn request_vcard(&self, to: &BareJid) -> Result<Option<Element>, BridgeError> {
        let from = Jid::from(BareJid::new(self.gateway.domain()).map_err(|e| {
            causeway_matrix::error::Error::Internal(format!("our domain as a JID: {e}"))
        })?);
        let id = format!("vcard-{}", super::random_id());
        let request = Iq::from_get(id, VCardQuery)
            .with_from(from)
            .with_to(Jid::from(to.clone()));
        Ok(match self.request(request).await {
            Some(Iq::Result {
                payload: Some(payload),
                ..
            }) => Some(payload),
            _ => None,
        })
    }

    async fn fetch_profile(&self, ghost: &UserId, remote: &BareJid) -> Result<(), BridgeError> {
        let Some(payload) = self.request_vcard(remote).await? else {
            return Ok(());
        };
        let Ok(vcard) = VCard::try_from(payload) else {
            return Ok(());
        };
        let store = &self.services.store;
        let mut changed = false;
        if let Some(name) = vcard_name(&vcard) {
            let current = store
                .user(ghost.as_str())
                .await?
                .and_then(|u| u.displayname);
            if current.as_deref() != Some(name.as_str()) {
                store.set_displayname(ghost.as_str(), Some(&name)).await?;
                changed = true;
            }
        }
        if let Some(photo) = vcard
            .photo
            .filter(|p| p.binval.data.len() <= MAX_PHOTO_BYTES)
        {
            let uri = self
                .services
                .store_media(&photo.binval.data, Some(&photo.type_.data), None, ghost)
                .await?;
            store
                .set_avatar_url(ghost.as_str(), Some(uri.as_str()))
                .await?;
            changed = true;
        }
        if changed {
            propagate_profile(&self.services, ghost).await?;
            tracing::debug!(%remote, "the profile of an XMPP user was updated from the vCard");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_name_comes_first() {
        let vcard: Element = "<vCard xmlns='vcard-temp'><NICKNAME>bobby</NICKNAME>\
            <FN> Bob Builder </FN></vCard>"
            .parse()
            .unwrap();
        let vcard = VCard::try_from(vcard).unwrap();
        assert_eq!(vcard_name(&vcard).as_deref(), Some("Bob Builder"));
        let nick: Element = "<vCard xmlns='vcard-temp'><NICKNAME>bobby</NICKNAME><FN/></vCard>"
            .parse()
            .unwrap();
        assert_eq!(
            vcard_name(&VCard::try_from(nick).unwrap()).as_deref(),
            Some("bobby")
        );
        let empty: Element = "<vCard xmlns='vcard-temp'/>".parse().unwrap();
        assert_eq!(vcard_name(&VCard::try_from(empty).unwrap()), None);
    }
}
