//! Matrix rooms as MUCs: XMPP users of the peer join a room of the server as
//! `room@muc.gw.test/Nick` and take part in it.

use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use serde_json::json;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::presence::Presence;

use crate::world::*;

mod admin;
mod joining;
mod presence;
mod service;

const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// The next stanza from the MUC service (others, such as presence of accounts, are skipped).
async fn from_rooms(world: &mut World) -> Stanza {
    loop {
        let stanza = world.next().await;
        if stanza
            .from()
            .is_some_and(|from| from.domain().as_str() == "muc.gw.test")
        {
            return stanza;
        }
    }
}

async fn next_room_presence(world: &mut World) -> Presence {
    loop {
        if let Stanza::Presence(presence) = from_rooms(world).await {
            return presence;
        }
    }
}

async fn next_room_message(world: &mut World) -> Message {
    loop {
        if let Stanza::Message(message) = from_rooms(world).await {
            return message;
        }
    }
}

/// The status codes of a MUC presence.
fn statuses(presence: &Presence) -> Vec<String> {
    presence
        .payloads
        .iter()
        .filter(|p| p.is("x", MUC_USER))
        .flat_map(|x| x.children().filter(|c| c.name() == "status"))
        .filter_map(|status| status.attr("code").map(str::to_owned))
        .collect()
}

fn item(presence: &Presence) -> Element {
    presence
        .payloads
        .iter()
        .find(|p| p.is("x", MUC_USER))
        .and_then(|x| x.get_child("item", MUC_USER))
        .cloned()
        .unwrap_or_else(|| panic!("no item in {presence:?}"))
}

fn join(from: &str, to: &str, history: &str) -> Stanza {
    stanza(&format!(
        "<presence xmlns='jabber:server' from='{from}' to='{to}'>\
         <x xmlns='http://jabber.org/protocol/muc'>{history}</x></presence>"
    ))
}

fn groupchat(from: &str, to: &str, id: &str, inner: &str) -> Stanza {
    stanza(&format!(
        "<message xmlns='jabber:server' type='groupchat' id='{id}' from='{from}' to='{to}'>\
         {inner}</message>"
    ))
}

/// The condition of an error stanza's payload.
fn condition(payloads: &[Element]) -> String {
    payloads
        .iter()
        .find(|p| p.name() == "error")
        .and_then(|error| {
            error
                .children()
                .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
                .map(|c| c.name().to_owned())
        })
        .unwrap_or_default()
}

/// Bob joins `#lobby:gw.test` without history: he gets Alice, himself and the subject.
async fn bob_joins_lobby(world: &mut World) {
    world.peer.send(join(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test/Bob",
        "<history maxstanzas='0'/>",
    ));
    for _ in 0..2 {
        next_room_presence(world).await;
    }
    next_room_message(world).await;
}

/// Alice's public room `#lobby:gw.test`, with a topic.
async fn lobby(world: &World, token: &str) -> String {
    world
        .server
        .create_room(
            token,
            json!({"preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby",
                   "topic": "Welcome", "visibility": "public"}),
        )
        .await
}

/// The next answer to a request from the MUC service: its payload, or its error's condition.
async fn iq_outcome(world: &mut World) -> Result<Option<Element>, String> {
    loop {
        match from_rooms(world).await {
            Stanza::Iq(xmpp_parsers::iq::Iq::Result { payload, .. }) => return Ok(payload),
            Stanza::Iq(xmpp_parsers::iq::Iq::Error { error, .. }) => {
                return Err(format!("{:?}", error.defined_condition));
            }
            _ => {}
        }
    }
}
