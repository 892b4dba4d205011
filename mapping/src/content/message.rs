//! Messages between XMPP and Matrix: text with its formatting, `/me`, replies, corrections,
//! retractions, reactions, chat states and markers.
//!
//! Messages refer to other messages by id: XMPP by the id a client gave (or a server's
//! stanza-id), Matrix by event id. This module does not know which is which; it says which XMPP
//! id a message refers to ([`FromXmpp`]) and takes the event ids it refers to once the caller
//! has looked them up ([`matrix_content`]), and the other way round ([`ToXmppRefs`]).

use minidom::Element;
use ruma::OwnedEventId;
use ruma::events::relation::Replacement;
use ruma::events::room::message::{
    MessageType, Relation, RoomMessageEventContent, RoomMessageEventContentWithoutRelation,
};
use xmpp_parsers::chatstates::ChatState;
use xmpp_parsers::message::{Lang, Message};

use super::html::{self, Mention};
use super::{Dropped, Lossy, styling};
use crate::address::Gateway;

/// Namespaces of the extensions read and written here that xmpp-parsers does not know.
pub mod ns {
    pub const REPLY: &str = "urn:xmpp:reply:0";
    pub const DELAY: &str = "urn:xmpp:delay";
    pub const FALLBACK: &str = "urn:xmpp:fallback:0";
    pub const RETRACT: &str = "urn:xmpp:message-retract:1";
    pub const RETRACT_0: &str = "urn:xmpp:message-retract:0";
    pub const FASTEN: &str = "urn:xmpp:fasten:0";
    pub const STYLING: &str = "urn:xmpp:styling:0";
    pub const XHTML_IM: &str = "http://jabber.org/protocol/xhtml-im";
    pub const CORRECT: &str = "urn:xmpp:message-correct:0";
    pub const REACTIONS: &str = "urn:xmpp:reactions:0";
    pub const CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";
    pub const RECEIPTS: &str = "urn:xmpp:receipts";
    pub const MARKERS: &str = "urn:xmpp:chat-markers:0";
    pub const REFERENCE: &str = "urn:xmpp:reference:0";
}

/// What an XMPP message says, in the terms of Matrix.
#[derive(Debug, Clone, Default)]
pub struct FromXmpp {
    /// The text: of a new message, or the new text of a correction.
    pub content: Option<RoomMessageEventContentWithoutRelation>,
    /// XEP-0308: the id of the message this one corrects.
    pub replaces: Option<String>,
    /// XEP-0461: the id of the message this one replies to.
    pub reply_to: Option<String>,
    /// XEP-0424: the id of the message the sender retracts.
    pub retracts: Option<String>,
    /// XEP-0444: the id of a message, and the sender's whole set of reactions to it.
    pub reactions: Option<(String, Vec<String>)>,
    /// XEP-0085: whether the sender is typing (`None` without a chat state).
    pub typing: Option<bool>,
    /// XEP-0333: the id of the last message the recipient displayed.
    pub displayed: Option<String>,
    /// XEP-0184: the id of a message whose receipt this acknowledges.
    pub received: Option<String>,
    /// XEP-0184: the sender asks for a receipt.
    pub wants_receipt: bool,
    /// XEP-0203: when the message was first sent (milliseconds since the epoch), for one
    /// delivered late (history, offline storage).
    pub sent_at: Option<i64>,
    /// What could not be carried over.
    pub dropped: Vec<Dropped>,
}

fn payload<'a>(message: &'a Message, name: &str, namespace: &str) -> Option<&'a Element> {
    message
        .payloads
        .iter()
        .find(|payload| payload.is(name, namespace))
}

/// The text of the message's body in its default language (or the first there is).
fn body(message: &Message) -> Option<&str> {
    message
        .bodies
        .get(&Lang::default())
        .or_else(|| message.bodies.values().next())
        .map(String::as_str)
}

/// The body without the parts XEP-0428 marks as a fallback for `namespace` (offsets count
/// characters, Unicode scalar values; a `<body/>` without offsets covers the whole body), and
/// for each character of the whole body its position in what is kept (`None` for a character
/// of the fallback).
fn kept_body(message: &Message, namespace: &str) -> Option<(String, Vec<Option<usize>>)> {
    let text = body(message)?;
    let characters: Vec<char> = text.chars().collect();
    let mut keep = vec![true; characters.len()];
    let mut found = false;
    for fallback in message
        .payloads
        .iter()
        .filter(|payload| payload.is("fallback", ns::FALLBACK))
        .filter(|fallback| fallback.attr("for") == Some(namespace))
    {
        found = true;
        let ranges: Vec<&Element> = fallback
            .children()
            .filter(|child| child.name() == "body")
            .collect();
        if ranges.is_empty() {
            keep.iter_mut().for_each(|k| *k = false);
        }
        for range in ranges {
            let start = range.attr("start").and_then(|s| s.parse::<usize>().ok());
            let end = range.attr("end").and_then(|e| e.parse::<usize>().ok());
            let (start, end) = match (start, end) {
                (Some(start), Some(end)) if start <= end => (start, end.min(keep.len())),
                (None, None) => (0, keep.len()),
                _ => continue,
            };
            for k in keep.iter_mut().take(end).skip(start) {
                *k = false;
            }
        }
    }
    if !found {
        return Some((text.to_owned(), (0..characters.len()).map(Some).collect()));
    }
    let mut kept = String::new();
    let mut positions = Vec::with_capacity(characters.len());
    let mut count = 0;
    for (character, keep) in characters.iter().zip(keep) {
        if keep {
            kept.push(*character);
            positions.push(Some(count));
            count += 1;
        } else {
            positions.push(None);
        }
    }
    Some((kept, positions))
}

/// A user mentioned in an XMPP message, and where in the body.
type Mentioned = (ruma::OwnedUserId, Option<(usize, usize)>);

/// The users an XMPP message mentions (XEP-0372 references of type `mention` to `xmpp:`
/// addresses), with where in the body, as Matrix users.
fn mentions(message: &Message, gateway: &Gateway) -> Vec<Mentioned> {
    let mut found = Vec::new();
    for reference in message
        .payloads
        .iter()
        .filter(|payload| payload.is("reference", ns::REFERENCE))
        .filter(|reference| reference.attr("type") == Some("mention"))
    {
        let Some(address) = reference
            .attr("uri")
            .and_then(|uri| uri.strip_prefix("xmpp:"))
        else {
            continue;
        };
        let address = super::percent_decode(address.split('?').next().unwrap_or_default());
        let Ok(jid) = jid::Jid::new(&address) else {
            continue;
        };
        let Ok(user) = gateway.jid_to_user(&jid.to_bare().into()) else {
            continue;
        };
        let range = reference
            .attr("begin")
            .and_then(|begin| begin.parse::<usize>().ok())
            .zip(
                reference
                    .attr("end")
                    .and_then(|end| end.parse::<usize>().ok()),
            )
            .filter(|(begin, end)| begin < end);
        found.push((user, range));
    }
    found
}

/// The Matrix content of a message's text: `/me` (XEP-0245) becomes an emote; XHTML-IM, or
/// else XEP-0393 styling (unless the sender marked the body unstyled), the formatted body.
pub fn text_to_matrix(text: &str, xhtml: Option<&Element>, unstyled: bool) -> MessageType {
    let (emote, text) = match text.strip_prefix("/me ") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let html = xhtml
        .and_then(html::xhtml_im_to_html)
        .map(|html| match emote {
            // The XHTML starts with "/me " too.
            true => html.replacen("/me ", "", 1),
            false => html,
        })
        .or_else(|| (!unstyled).then(|| styling::to_html(text)).flatten());
    let content = match (emote, html) {
        (true, Some(html)) => RoomMessageEventContentWithoutRelation::emote_html(text, html),
        (true, None) => RoomMessageEventContentWithoutRelation::emote_plain(text),
        (false, Some(html)) => RoomMessageEventContentWithoutRelation::text_html(text, html),
        (false, None) => RoomMessageEventContentWithoutRelation::text_plain(text),
    };
    content.msgtype
}

/// Reads an XMPP message; `gateway` maps the addresses of mentioned users.
pub fn from_xmpp(message: &Message, gateway: &Gateway) -> FromXmpp {
    from_xmpp_in_room(message, gateway, &[])
}

/// Reads a message to a room whose `occupants` (nicknames and the users they stand for) may be
/// mentioned by name: when the message has no mention references, names in its text are
/// mentions (`name_mentions`).
pub fn from_xmpp_in_room(
    message: &Message,
    gateway: &Gateway,
    occupants: &[(&str, &ruma::UserId)],
) -> FromXmpp {
    let mut read = FromXmpp {
        sent_at: message
            .payloads
            .iter()
            .filter(|p| p.is("delay", ns::DELAY))
            .filter_map(|delay| xmpp_parsers::delay::Delay::try_from(delay.clone()).ok())
            .map(|delay| delay.stamp.0.timestamp_millis())
            .min(),
        ..FromXmpp::default()
    };
    let reply = payload(message, "reply", ns::REPLY);
    read.reply_to = reply.and_then(|reply| reply.attr("id")).map(str::to_owned);
    read.replaces = payload(message, "replace", ns::CORRECT)
        .and_then(|replace| replace.attr("id"))
        .map(str::to_owned);
    read.retracts = payload(message, "retract", ns::RETRACT)
        .and_then(|retract| retract.attr("id"))
        .or_else(|| {
            // The first version: <apply-to id='…'><retract/></apply-to> (XEP-0422).
            payload(message, "apply-to", ns::FASTEN)
                .filter(|apply| apply.has_child("retract", ns::RETRACT_0))
                .and_then(|apply| apply.attr("id"))
        })
        .map(str::to_owned);
    read.reactions = payload(message, "reactions", ns::REACTIONS).and_then(|reactions| {
        let id = reactions.attr("id")?;
        let mut keys: Vec<String> = Vec::new();
        for reaction in reactions.children().filter(|c| c.name() == "reaction") {
            let key = reaction.text();
            if !key.is_empty() && !keys.contains(&key) {
                keys.push(key);
            }
        }
        Some((id.to_owned(), keys))
    });
    read.typing = message
        .payloads
        .iter()
        .find_map(|payload| ChatState::try_from(payload.clone()).ok())
        .map(|state| state == ChatState::Composing);
    read.displayed = payload(message, "displayed", ns::MARKERS)
        .and_then(|displayed| displayed.attr("id"))
        .map(str::to_owned);
    read.received = payload(message, "received", ns::RECEIPTS)
        .and_then(|received| received.attr("id"))
        .map(str::to_owned);
    read.wants_receipt = payload(message, "request", ns::RECEIPTS).is_some();
    // A retraction's body is a fallback for clients that do not know XEP-0424.
    if read.retracts.is_some() || read.reactions.is_some() {
        return read;
    }
    let namespace = if read.reply_to.is_some() {
        ns::REPLY
    } else {
        ""
    };
    let Some((text, positions)) = kept_body(message, namespace) else {
        return read;
    };
    if text.trim().is_empty() {
        return read;
    }
    let unstyled = payload(message, "unstyled", ns::STYLING).is_some();
    // XHTML-IM of a reply would repeat the quoted fallback: only plain replies use it.
    let xhtml = payload(message, "html", ns::XHTML_IM).filter(|_| read.reply_to.is_none());
    let mut msgtype = text_to_matrix(&text, xhtml, unstyled);
    let mut mentioned = mentions(message, gateway);
    // Where the text has no formatting of its own, mentions become pills.
    let mut ranges: Vec<Mention> = mentioned
        .iter()
        .filter_map(|(user, range)| {
            let (begin, end) = (*range)?;
            let begin = positions.get(begin).copied().flatten()?;
            let end = positions.get(end - 1).copied().flatten()? + 1;
            Some(Mention {
                begin,
                end,
                user: user.clone(),
            })
        })
        .collect();
    if mentioned.is_empty() && !occupants.is_empty() {
        // Offsets in the text as kept.
        ranges = name_mentions(&text, occupants);
        for mention in &ranges {
            if !mentioned.iter().any(|(user, _)| *user == mention.user) {
                mentioned.push((mention.user.clone(), None));
            }
        }
    }
    if matches!(&msgtype, MessageType::Text(t) if t.formatted.is_none()) && !ranges.is_empty() {
        msgtype = MessageType::Text(ruma::events::room::message::TextMessageEventContent::html(
            text.clone(),
            pills(&text, &ranges),
        ));
    }
    // Headlines (alerts, news, automated messages) are notices.
    if message.type_ == xmpp_parsers::message::MessageType::Headline
        && let MessageType::Text(text) = msgtype
    {
        let mut notice = ruma::events::room::message::NoticeMessageEventContent::plain(text.body);
        notice.formatted = text.formatted;
        msgtype = MessageType::Notice(notice);
    }
    let mut content = RoomMessageEventContentWithoutRelation::new(msgtype);
    if !mentioned.is_empty() {
        let users = mentioned.into_iter().map(|(user, _)| user);
        content.mentions = Some(ruma::events::Mentions::with_user_ids(users));
    }
    read.content = Some(content);
    read
}

/// Mentions by name, for XMPP clients that send no references: an occupant's nickname at the
/// start of the body followed by `:` or `,` (how MUC clients address someone), or standing
/// as a whole word elsewhere. `occupants` are nicknames and the Matrix users they stand for;
/// the offsets are in characters.
pub fn name_mentions(body: &str, occupants: &[(&str, &ruma::UserId)]) -> Vec<Mention> {
    let characters: Vec<char> = body.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut found: Vec<Mention> = Vec::new();
    for (nick, user) in occupants {
        let nick: Vec<char> = nick.chars().collect();
        if nick.is_empty() {
            continue;
        }
        let mut at = 0;
        while at + nick.len() <= characters.len() {
            let end = at + nick.len();
            let matches = characters[at..end] == nick[..];
            let starts_word = at == 0 || !word(characters[at - 1]);
            let ends_word = characters.get(end).is_none_or(|c| !word(*c));
            let addressed = at == 0 && matches!(characters.get(end), Some(':' | ','));
            if matches && starts_word && (ends_word || addressed) {
                if !found.iter().any(|m| m.begin < end && at < m.end) {
                    found.push(Mention {
                        begin: at,
                        end,
                        user: (*user).to_owned(),
                    });
                }
                at = end;
            } else {
                at += 1;
            }
        }
    }
    found.sort_by_key(|mention| mention.begin);
    found
}

/// HTML of plain text with the mentioned ranges as pills (`matrix.to` links).
fn pills(text: &str, mentions: &[Mention]) -> String {
    let characters: Vec<char> = text.chars().collect();
    let mut sorted: Vec<&Mention> = mentions.iter().collect();
    sorted.sort_by_key(|mention| mention.begin);
    let mut html = String::new();
    let mut at = 0;
    for mention in sorted {
        if mention.begin < at || mention.end > characters.len() {
            continue;
        }
        let before: String = characters[at..mention.begin].iter().collect();
        let name: String = characters[mention.begin..mention.end].iter().collect();
        html.push_str(&html::escape_text(&before).replace('\n', "<br>"));
        html.push_str(&format!(
            "<a href=\"https://matrix.to/#/{}\">{}</a>",
            html::escape_attribute(mention.user.as_str()),
            html::escape_text(&name)
        ));
        at = mention.end;
    }
    let rest: String = characters[at..].iter().collect();
    html.push_str(&html::escape_text(&rest).replace('\n', "<br>"));
    html
}

/// The Matrix event content of a message's text, with the events it replies to or replaces
/// looked up. A replacement carries the new content in `m.new_content` and, for clients that
/// do not know replacements, a body starting with `* `.
pub fn matrix_content(
    content: RoomMessageEventContentWithoutRelation,
    reply_to: Option<OwnedEventId>,
    replaces: Option<OwnedEventId>,
) -> RoomMessageEventContent {
    if let Some(original) = replaces {
        let fallback = starred(&content.msgtype);
        let mut outer = RoomMessageEventContent::new(fallback);
        outer.relates_to = Some(Relation::Replacement(Replacement::new(original, content)));
        return outer;
    }
    let mut message = content.with_relation(None);
    if let Some(event_id) = reply_to {
        message.relates_to = Some(Relation::Reply(
            ruma::events::relation::Reply::with_event_id(event_id),
        ));
    }
    message
}

/// The fallback of a replacement: the new text after `* `.
fn starred(msgtype: &MessageType) -> MessageType {
    let (body, html) = text_of(msgtype);
    let body = format!("* {body}");
    let html = html.map(|html| format!("* {html}"));
    let content = match (msgtype, html) {
        (MessageType::Emote(_), Some(html)) => RoomMessageEventContent::emote_html(body, html),
        (MessageType::Emote(_), None) => RoomMessageEventContent::emote_plain(body),
        (MessageType::Notice(_), Some(html)) => RoomMessageEventContent::notice_html(body, html),
        (MessageType::Notice(_), None) => RoomMessageEventContent::notice_plain(body),
        (_, Some(html)) => RoomMessageEventContent::text_html(body, html),
        (_, None) => RoomMessageEventContent::text_plain(body),
    };
    content.msgtype
}

/// The plain and HTML text of a text message type.
fn text_of(msgtype: &MessageType) -> (&str, Option<&str>) {
    let formatted = match msgtype {
        MessageType::Text(text) => text.formatted.as_ref(),
        MessageType::Emote(emote) => emote.formatted.as_ref(),
        MessageType::Notice(notice) => notice.formatted.as_ref(),
        _ => None,
    };
    let html = formatted
        .filter(|formatted| formatted.format == ruma::events::room::message::MessageFormat::Html)
        .map(|formatted| formatted.body.as_str());
    (msgtype.body(), html)
}

/// Removes a Matrix reply fallback from a plain body: its leading lines quoted with `> ` and
/// the empty line after them.
pub fn strip_matrix_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    let mut rest = body;
    while rest.starts_with("> ") || rest.starts_with(">\n") {
        match rest.find('\n') {
            Some(end) => rest = &rest[end + 1..],
            None => return body,
        }
    }
    match rest.strip_prefix('\n') {
        Some(after) => after,
        None => body,
    }
}

/// The message a Matrix message's text becomes on XMPP: styled text, `/me` for emotes, and the
/// hint that the body is not styled where its characters would read as styling.
pub fn text_to_xmpp(msgtype: &MessageType, is_reply: bool) -> Option<Lossy<XmppText>> {
    if !matches!(
        msgtype,
        MessageType::Text(_) | MessageType::Emote(_) | MessageType::Notice(_)
    ) {
        return None;
    }
    let (body, html) = text_of(msgtype);
    let (text, dropped, unstyled, mut mentions) = match html {
        Some(html) => {
            let styled = html::to_styled(html);
            (styled.text, styled.dropped, false, styled.mentions)
        }
        None => {
            let body = if is_reply {
                strip_matrix_reply_fallback(body)
            } else {
                body
            };
            (body.to_owned(), vec![], styling::has_styling(body), vec![])
        }
    };
    let text = match msgtype {
        MessageType::Emote(_) => {
            for mention in &mut mentions {
                mention.begin += 4;
                mention.end += 4;
            }
            format!("/me {text}")
        }
        _ => text,
    };
    Some(Lossy {
        value: XmppText {
            body: text,
            unstyled,
            mentions,
        },
        dropped,
    })
}

/// A Matrix message's text for XMPP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppText {
    pub body: String,
    /// The body has characters that would read as styling but are not.
    pub unstyled: bool,
    /// The pills, by where their names are in the body.
    pub mentions: Vec<Mention>,
}

/// What a Matrix message refers to, as the caller found it on the XMPP side.
#[derive(Debug, Clone, Default)]
pub struct ToXmppRefs {
    /// The message replied to: its XMPP id, the full JID of its author where known, and a
    /// quotation for clients without XEP-0461 (the author's name and the text).
    pub reply: Option<ReplyRef>,
    /// The XMPP id of the message this one corrects.
    pub replaces: Option<String>,
}

/// The message a reply answers.
#[derive(Debug, Clone)]
pub struct ReplyRef {
    pub id: String,
    pub to: Option<jid::Jid>,
    pub author: String,
    pub text: String,
}

/// The body and payloads of the XMPP message for a Matrix message event; the caller sets the
/// addresses, type and id. `None` for messages that are not text.
pub fn to_xmpp(
    content: &RoomMessageEventContent,
    refs: &ToXmppRefs,
    gateway: &Gateway,
) -> Option<Lossy<Message>> {
    // A replacement's text is its new content.
    let msgtype = match &content.relates_to {
        Some(Relation::Replacement(replacement)) => &replacement.new_content.msgtype,
        _ => &content.msgtype,
    };
    let is_reply = matches!(content.relates_to, Some(Relation::Reply(_)));
    let text = text_to_xmpp(msgtype, is_reply)?;
    let XmppText {
        mut body,
        unstyled,
        mut mentions,
    } = text.value;
    let mut message = Message::new(None);
    let mut shift = 0;
    if let Some(reply) = refs.reply.as_ref().filter(|_| is_reply) {
        // XEP-0461 with an XEP-0428 fallback quoting the original, never a Matrix id.
        let mut quote = format!("> {}:\n", reply.author);
        for line in reply.text.lines() {
            quote.push_str("> ");
            quote.push_str(line);
            quote.push('\n');
        }
        let end = quote.chars().count();
        shift = end;
        body = format!("{quote}{body}");
        let mut reply_element = Element::builder("reply", ns::REPLY)
            .attr(rxml::xml_ncname!("id").to_owned(), reply.id.as_str());
        if let Some(to) = &reply.to {
            reply_element = reply_element.attr(rxml::xml_ncname!("to").to_owned(), to.to_string());
        }
        message.payloads.push(reply_element.build());
        message.payloads.push(
            Element::builder("fallback", ns::FALLBACK)
                .attr(rxml::xml_ncname!("for").to_owned(), ns::REPLY)
                .append(
                    Element::builder("body", ns::FALLBACK)
                        .attr(rxml::xml_ncname!("start").to_owned(), "0")
                        .attr(rxml::xml_ncname!("end").to_owned(), end.to_string())
                        .build(),
                )
                .build(),
        );
    }
    if let Some(id) = &refs.replaces {
        message.payloads.push(
            Element::builder("replace", ns::CORRECT)
                .attr(rxml::xml_ncname!("id").to_owned(), id.as_str())
                .build(),
        );
    }
    if unstyled {
        message
            .payloads
            .push(Element::bare("unstyled", ns::STYLING));
    }
    // XEP-0372 references for the pills, and for users mentioned without one.
    for mention in &mut mentions {
        mention.begin += shift;
        mention.end += shift;
    }
    let mut referenced: Vec<ruma::OwnedUserId> = Vec::new();
    let intentional = content
        .mentions
        .iter()
        .flat_map(|mentions| mentions.user_ids.iter())
        .map(|user| (user.clone(), None));
    let placed = mentions
        .iter()
        .map(|mention| (mention.user.clone(), Some((mention.begin, mention.end))));
    for (user, range) in placed.chain(intentional) {
        if range.is_none() && referenced.contains(&user) {
            continue;
        }
        let Ok(jid) = gateway.user_to_jid(&user) else {
            continue;
        };
        referenced.push(user);
        let mut reference = Element::builder("reference", ns::REFERENCE)
            .attr(rxml::xml_ncname!("type").to_owned(), "mention")
            .attr(rxml::xml_ncname!("uri").to_owned(), format!("xmpp:{jid}"));
        if let Some((begin, end)) = range {
            reference = reference
                .attr(rxml::xml_ncname!("begin").to_owned(), begin.to_string())
                .attr(rxml::xml_ncname!("end").to_owned(), end.to_string());
        }
        message.payloads.push(reference.build());
    }
    message.bodies.insert(Lang::default(), body);
    Some(Lossy {
        value: message,
        dropped: text.dropped,
    })
}

/// XEP-0444: the element stating a sender's whole set of reactions to a message.
pub fn reactions(id: &str, keys: &[String]) -> Element {
    let mut reactions = Element::builder("reactions", ns::REACTIONS)
        .attr(rxml::xml_ncname!("id").to_owned(), id)
        .build();
    for key in keys {
        reactions.append_child(
            Element::builder("reaction", ns::REACTIONS)
                .append(key.as_str())
                .build(),
        );
    }
    reactions
}

/// How a sender's Matrix reactions to one event change to match a new whole set from XMPP:
/// the keys to annotate anew, and the reaction events to redact.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReactionChanges {
    pub add: Vec<String>,
    pub remove: Vec<OwnedEventId>,
}

/// The changes from the sender's `current` reactions (key and reaction event) to `wanted`.
pub fn reaction_changes(current: &[(String, OwnedEventId)], wanted: &[String]) -> ReactionChanges {
    let mut changes = ReactionChanges::default();
    for key in wanted {
        if !current.iter().any(|(have, _)| have == key) && !changes.add.contains(key) {
            changes.add.push(key.clone());
        }
    }
    for (key, event) in current {
        if !wanted.contains(key) {
            changes.remove.push(event.clone());
        }
    }
    changes
}

/// XEP-0424: the retraction of a message by its XMPP id, with a body for clients that do not
/// know retractions.
pub fn retraction(id: &str) -> Message {
    let mut message = Message::new(None);
    message.payloads.push(
        Element::builder("retract", ns::RETRACT)
            .attr(rxml::xml_ncname!("id").to_owned(), id)
            .build(),
    );
    message.payloads.push(
        Element::builder("fallback", ns::FALLBACK)
            .attr(rxml::xml_ncname!("for").to_owned(), ns::RETRACT)
            .build(),
    );
    message.bodies.insert(
        Lang::default(),
        "This person attempted to retract a previous message, but it's unsupported by your client."
            .to_owned(),
    );
    message
}

/// XEP-0085: the chat state for Matrix typing.
pub fn chat_state(typing: bool) -> Element {
    let state = if typing { "composing" } else { "active" };
    Element::bare(state, ns::CHAT_STATES)
}

/// XEP-0333: the marker that a message was displayed (a Matrix read receipt).
pub fn displayed(id: &str) -> Element {
    Element::builder("displayed", ns::MARKERS)
        .attr(rxml::xml_ncname!("id").to_owned(), id)
        .build()
}

/// XEP-0184: the receipt of a message.
pub fn received(id: &str) -> Element {
    Element::builder("received", ns::RECEIPTS)
        .attr(rxml::xml_ncname!("id").to_owned(), id)
        .build()
}

#[cfg(test)]
mod tests;
