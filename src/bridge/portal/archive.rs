//! History from a MUC's archive (XEP-0313), when it keeps one: a member joins asking for no
//! history in presence (`maxstanzas='0'`) and then queries the archive as their occupant, for
//! the last messages on a first join, or everything since the last message seen (less a
//! minute, for clocks that differ) when joining again; page by page (XEP-0059). What comes back
//! is taken only for a query of ours, from that MUC, to that member, and is applied as the
//! groupchat message it was, with the archive's id as its stanza id and its time; messages
//! received live as well are one event (their stanza ids are the archive's ids).

use std::time::Duration;

use minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::message::{Message, MessageType};

use super::{FIRST_HISTORY, SID};
use crate::bridge::Bridge;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const FORWARD: &str = "urn:xmpp:forward:0";
const DELAY: &str = "urn:xmpp:delay";
const DATA: &str = "jabber:x:data";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Messages asked for at once when catching up.
const PAGE: usize = 50;
/// At most this many pages are fetched in one catch-up.
const MAX_PAGES: usize = 20;
/// How far before the last message seen a catch-up starts (servers' clocks differ).
const SKEW: Duration = Duration::from_secs(60);

impl Bridge {
    /// Whether a MUC keeps an archive, as it said last (asked if it never did).
    pub(super) async fn muc_has_archive(&self, muc: &BareJid) -> bool {
        if let Some(kept) = self.portals.archive_known(muc) {
            return kept;
        }
        let kept = matches!(
            self.ask_disco_info(muc).await,
            Ok(Some(Iq::Result { payload: Some(info), .. })) if keeps_archive(&info)
        );
        self.portals.note_archive(muc, kept);
        kept
    }

    /// Fetches what a member missed from the MUC's archive, apart from the stream that brings
    /// it: the last messages (`since` none), or all since `since` (milliseconds).
    pub(super) fn catch_up(&self, muc: BareJid, own: FullJid, since: Option<i64>) {
        let Some(bridge) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let mut after: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let query = crate::bridge::random_id();
                let max = if since.is_none() {
                    FIRST_HISTORY as usize
                } else {
                    PAGE
                };
                let mut set = Element::builder("set", RSM)
                    .append(Element::builder("max", RSM).append(max.to_string()));
                match (since, &after) {
                    // The last messages: the page before the end.
                    (None, _) => set = set.append(Element::bare("before", RSM)),
                    (Some(_), Some(after)) => {
                        set = set.append(Element::builder("after", RSM).append(after.as_str()));
                    }
                    (Some(_), None) => {}
                }
                let mut form = Element::builder("x", DATA)
                    .attr(rxml::xml_ncname!("type").to_owned(), "submit")
                    .append(field("FORM_TYPE", MAM));
                if let Some(since) = since {
                    let skew = i64::try_from(SKEW.as_millis()).unwrap_or(0);
                    let start = u64::try_from(since - skew).unwrap_or(0);
                    form = form.append(field("start", &crate::bridge::muc::stamp_text(start)));
                }
                let payload = Element::builder("query", MAM)
                    .attr(rxml::xml_ncname!("queryid").to_owned(), query.as_str())
                    .append(form)
                    .append(set)
                    .build();
                bridge.portals.start_query(&query, &muc, &own);
                let iq = Iq::Set {
                    from: Some(Jid::from(own.clone())),
                    to: Some(Jid::from(muc.clone())),
                    id: format!("portal-mam-{query}"),
                    payload,
                };
                let answer = bridge.request(iq).await;
                bridge.portals.end_query(&query);
                let Some(Iq::Result {
                    payload: Some(fin), ..
                }) = answer
                else {
                    tracing::info!(%muc, "a MUC's archive did not answer a catch-up");
                    return;
                };
                let last = fin
                    .get_child("set", RSM)
                    .and_then(|set| set.get_child("last", RSM))
                    .map(Element::text);
                if since.is_none() || fin.attr("complete") == Some("true") || last.is_none() {
                    return;
                }
                after = last;
            }
            tracing::info!(%muc, "a catch-up from a MUC's archive stopped after its last page");
        });
    }

    /// The archived message a MUC's answer to one of our queries carries, as the groupchat
    /// message it was (its stanza id the archive's id, its time kept); `None` for anything
    /// else.
    pub(super) fn archived(&self, message: &Message, muc: &BareJid) -> Option<Message> {
        let result = message.payloads.iter().find(|p| p.is("result", MAM))?;
        let to = message.to.as_ref()?;
        if !self.portals.is_query(result.attr("queryid")?, muc, to) {
            return None;
        }
        let id = result.attr("id")?;
        let forwarded = result.get_child("forwarded", FORWARD)?;
        let inner = forwarded.children().find(|c| c.name() == "message")?;
        let mut archived = Message::try_from(inner.clone()).ok()?;
        let from = archived.from.as_ref()?;
        if from.to_bare() != *muc || archived.type_ != MessageType::Groupchat {
            return None;
        }
        archived.to = Some(to.clone());
        archived
            .payloads
            .retain(|p| !(p.is("stanza-id", SID) && p.attr("by") == Some(muc.as_str())));
        archived.payloads.push(
            Element::builder("stanza-id", SID)
                .attr(rxml::xml_ncname!("id").to_owned(), id)
                .attr(rxml::xml_ncname!("by").to_owned(), muc.as_str())
                .build(),
        );
        if !archived.payloads.iter().any(|p| p.is("delay", DELAY))
            && let Some(delay) = forwarded.get_child("delay", DELAY)
        {
            archived.payloads.push(delay.clone());
        }
        Some(archived)
    }
}

/// Whether a disco#info says `urn:xmpp:mam:2`.
pub(super) fn keeps_archive(info: &Element) -> bool {
    info.children()
        .any(|c| c.is("feature", DISCO_INFO) && c.attr("var") == Some(MAM))
}

fn field(var: &str, value: &str) -> Element {
    Element::builder("field", DATA)
        .attr(rxml::xml_ncname!("var").to_owned(), var)
        .append(Element::builder("value", DATA).append(value))
        .build()
}
