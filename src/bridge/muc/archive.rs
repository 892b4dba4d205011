//! XEP-0313 (MAM) of a room, served from its timeline: the messages the asker's ghost may see,
//! by time and by id, a page at a time (XEP-0059), oldest first or, with `<before/>`, the
//! last page first.

use causeway_matrix::pdu::Pdu;
use causeway_matrix::store::{Direction, EventRow};
use causeway_matrix::visibility;
use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use ruma::RoomId;
use xmpp_parsers::data_forms::DataForm;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::mam::{Fin, Query, Result_};
use xmpp_parsers::message::Message;
use xmpp_parsers::rsm::{First, SetResult};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::refused;
use crate::bridge::store::Occupant;
use crate::bridge::{Bridge, BridgeError};

pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0313's extended queries: `before-id`, `after-id`, `ids`.
pub const MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";

/// Messages in a page when the asker does not say.
const DEFAULT_PAGE: usize = 50;
/// The most messages in a page.
const MAX_PAGE: usize = 250;
/// The most events read for one page (a page whose events are mostly not messages ends there,
/// `complete` false, and the next page goes on from its last message).
const MAX_SCANNED: usize = 20_000;
/// Events read at once.
const BATCH: i64 = 200;
/// The most ids an `ids` query may name.
const MAX_IDS: usize = 250;

/// What a query asks for, read from its form and paging request.
#[derive(Default)]
struct Asked {
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    after: Option<String>,
    before: Option<String>,
    /// `<before/>` without an id: the last page.
    last_page: bool,
    ids: Vec<String>,
    max: usize,
    flip: bool,
}

impl Bridge {
    /// Answers a MAM query of a room: the results go out as messages, the `fin` is returned.
    pub(super) async fn archive_query(
        &self,
        from: &Jid,
        to: &Jid,
        payload: &Element,
    ) -> Result<Element, BridgeError> {
        let bad = |text: String| refused(ErrorType::Modify, DefinedCondition::BadRequest, text);
        let query = Query::try_from(payload.clone())
            .map_err(|error| bad(format!("the archive query is malformed: {error}")))?;
        if query.node.is_some() {
            return Err(refused(
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                "a room's archive has no nodes",
            ));
        }
        let asked = asked(&query)?;
        let room_jid = to.to_bare();
        let room = self.known_room(&room_jid).await?;
        // Who may read what is decided in one place: by the asker's ghost's membership and the
        // room's history visibility, as for a Matrix client.
        let ghost = self.ghost_id(&from.to_bare())?;
        let visible = visibility::for_user(&self.services.store, &room, &ghost).await?;
        let rows = if asked.ids.is_empty() {
            self.archive_page(&room, &asked, &visible).await?
        } else {
            let mut rows = Vec::new();
            for id in &asked.ids {
                if let Some(row) = self.archive_row(&room, id).await?
                    && is_archived(&row)
                    && visible.contains(row.stream_ordering)
                {
                    rows.push(row);
                }
            }
            Page {
                rows,
                complete: true,
            }
        };
        let roster = self.roster(&room).await?;
        let occupant = Occupant {
            room_id: room.to_string(),
            jid: from.to_string(),
            room_jid: room_jid.to_string(),
            nick: String::new(),
            since_position: 0,
        };
        let mut ids = Vec::new();
        let mut ordered = rows.rows;
        if asked.flip {
            ordered.reverse();
        }
        for row in &ordered {
            let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
            let Some(message) = self.room_message(&room, &pdu, &roster).await? else {
                continue;
            };
            let mut inner = self.addressed(&room, &message, &occupant, false);
            inner.to = None;
            let stamp = super::outbound::stamp(u64::from(pdu.origin_server_ts.get()));
            let result = Result_ {
                id: row.event_id.clone(),
                queryid: query.queryid.clone(),
                forwarded: xmpp_parsers::forwarding::Forwarded {
                    delay: Some(xmpp_parsers::delay::Delay {
                        from: None,
                        stamp: xmpp_parsers::date::DateTime(stamp.fixed_offset()),
                        data: None,
                    }),
                    message: inner,
                },
            };
            let mut wrapper = Message::new(Some(from.clone()));
            wrapper.from = Some(Jid::from(room_jid.clone()));
            wrapper.payloads.push(result.into());
            self.send(Stanza::Message(wrapper));
            ids.push(row.event_id.clone());
        }
        let set = SetResult {
            first: ids.first().map(|id| First {
                index: None,
                item: id.clone(),
            }),
            last: ids.last().cloned(),
            count: None,
        };
        Ok(Fin {
            complete: rows.complete,
            set,
        }
        .into())
    }

    /// An event of the room by its id (the stanza id the room gave it), if it is one.
    async fn archive_row(&self, room: &RoomId, id: &str) -> Result<Option<EventRow>, BridgeError> {
        let Some(row) = self.services.store.event(id).await? else {
            return Ok(None);
        };
        Ok((row.room_id == room.as_str() && row.stream_ordering > 0).then_some(row))
    }

    /// The position an id names in the room, or `item-not-found` (XEP-0313 §4.1.2).
    async fn archive_position(&self, room: &RoomId, id: &str) -> Result<i64, BridgeError> {
        match self.archive_row(room, id).await? {
            Some(row) => Ok(row.stream_ordering),
            None => Err(refused(
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                format!("{id} is not in this room's archive"),
            )),
        }
    }

    /// One page of the archive, in the order of the stream.
    async fn archive_page(
        &self,
        room: &RoomId,
        asked: &Asked,
        visible: &visibility::Visible,
    ) -> Result<Page, BridgeError> {
        let store = &self.services.store;
        // The bounds: (after, until], from the times and the ids asked for.
        let mut after = 0;
        let mut until = store.current_position();
        if let Some(start) = asked.start_ms {
            match store
                .events_near_ts(room.as_str(), start, true, 1)
                .await?
                .first()
            {
                Some(row) => after = after.max(row.stream_ordering - 1),
                None => return Ok(Page::empty()),
            }
        }
        if let Some(end) = asked.end_ms {
            match store
                .events_near_ts(room.as_str(), end, false, 1)
                .await?
                .first()
            {
                Some(row) => until = until.min(row.stream_ordering),
                None => return Ok(Page::empty()),
            }
        }
        if let Some(id) = &asked.after {
            after = after.max(self.archive_position(room, id).await?);
        }
        if let Some(id) = &asked.before {
            until = until.min(self.archive_position(room, id).await? - 1);
        }
        let direction = if asked.last_page || asked.before.is_some() {
            Direction::Backward
        } else {
            Direction::Forward
        };
        let in_time = |ts: i64| {
            asked.start_ms.is_none_or(|start| ts >= start)
                && asked.end_ms.is_none_or(|end| ts <= end)
        };
        let mut rows = Vec::new();
        let mut scanned = 0;
        let mut complete = true;
        while after < until {
            let batch = store
                .room_events(room.as_str(), after, until, direction, BATCH)
                .await?;
            let Some(last) = batch.last().map(|row| row.stream_ordering) else {
                break;
            };
            let exhausted = batch.len() < BATCH as usize;
            for row in batch {
                scanned += 1;
                if !is_archived(&row) || !visible.contains(row.stream_ordering) {
                    continue;
                }
                let ts = serde_json::from_str::<serde_json::Value>(&row.json)
                    .ok()
                    .and_then(|json| json.get("origin_server_ts")?.as_i64())
                    .unwrap_or(0);
                if !in_time(ts) {
                    continue;
                }
                if rows.len() == asked.max {
                    // One more exists beyond the page.
                    complete = false;
                    break;
                }
                rows.push(row);
            }
            if !complete || exhausted {
                break;
            }
            if scanned >= MAX_SCANNED {
                complete = false;
                break;
            }
            match direction {
                Direction::Forward => after = last,
                Direction::Backward => until = last - 1,
            }
        }
        if direction == Direction::Backward {
            rows.reverse();
        }
        Ok(Page { rows, complete })
    }
}

/// A page of archived events, oldest first.
struct Page {
    rows: Vec<EventRow>,
    complete: bool,
}

impl Page {
    fn empty() -> Page {
        Page {
            rows: vec![],
            complete: true,
        }
    }
}

/// Whether an event is in a room's archive: messages not redacted.
fn is_archived(row: &EventRow) -> bool {
    row.event_type == "m.room.message" && row.redacted_by.is_none()
}

/// The query's fields and paging, checked.
fn asked(query: &Query) -> Result<Asked, BridgeError> {
    let bad = |text: String| refused(ErrorType::Modify, DefinedCondition::BadRequest, text);
    let mut asked = Asked {
        max: DEFAULT_PAGE,
        flip: query.flip_page,
        ..Asked::default()
    };
    if let Some(form) = &query.form {
        read_form(form, &mut asked)?;
    }
    if let Some(set) = &query.set {
        if let Some(max) = set.max {
            asked.max = max;
        }
        if let Some(after) = &set.after {
            asked.after = Some(after.clone());
        }
        match set.before.as_deref() {
            Some("") => asked.last_page = true,
            Some(before) => asked.before = Some(before.to_owned()),
            None => {}
        }
    }
    asked.max = asked.max.min(MAX_PAGE);
    if asked.ids.len() > MAX_IDS {
        return Err(bad(format!("at most {MAX_IDS} ids at once")));
    }
    if let (Some(start), Some(end)) = (asked.start_ms, asked.end_ms)
        && start > end
    {
        return Err(bad("start is after end".into()));
    }
    Ok(asked)
}

/// The fields of a query form (XEP-0313 §4.1.1 and the extended ones).
fn read_form(form: &DataForm, asked: &mut Asked) -> Result<(), BridgeError> {
    let bad = |text: String| refused(ErrorType::Modify, DefinedCondition::BadRequest, text);
    let time = |value: &str| {
        chrono::DateTime::parse_from_rfc3339(value)
            .map(|time| time.timestamp_millis())
            .map_err(|_| bad(format!("{value} is not a date and time (XEP-0082)")))
    };
    for field in &form.fields {
        let value = field.values.first().map(String::as_str);
        match (field.var.as_deref(), value) {
            (Some("FORM_TYPE") | None, _) | (_, None) => {}
            (Some("start"), Some(value)) => asked.start_ms = Some(time(value)?),
            (Some("end"), Some(value)) => asked.end_ms = Some(time(value)?),
            (Some("after-id"), Some(value)) => asked.after = Some(value.to_owned()),
            (Some("before-id"), Some(value)) => asked.before = Some(value.to_owned()),
            (Some("ids"), Some(_)) => asked.ids = field.values.clone(),
            (Some("with"), Some(_)) => {
                return Err(refused(
                    ErrorType::Cancel,
                    DefinedCondition::FeatureNotImplemented,
                    "a room's archive is not filtered by occupant",
                ));
            }
            (Some(other), Some(_)) => {
                return Err(bad(format!("the field {other} is not known")));
            }
        }
    }
    Ok(())
}
