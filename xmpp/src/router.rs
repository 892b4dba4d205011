//! The answers Causeway gives for its own domains (the server and its MUC service) when no
//! other part of the server handles a stanza: XEP-0030 service discovery, XEP-0199 ping,
//! XEP-0092 software version, XEP-0202 entity time, and `service-unavailable` otherwise. The
//! server's items are its MUC service, which the handler in front of the router serves (the
//! bridge); what reaches the router for the MUC domain is answered at once with
//! `service-unavailable`, as no MUC service runs behind it.

use std::collections::BTreeSet;

use jid::Jid;
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::MessageType;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use xmpp_parsers::time::TimeResult;
use xmpp_parsers::version::VersionResult;

use crate::stanza::{Rejection, Stanza};

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const PING: &str = "urn:xmpp:ping";
const VERSION: &str = "jabber:iq:version";
const TIME: &str = "urn:xmpp:time";

/// The domains the default router answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domains {
    /// The server's main domain (its accounts live here).
    pub server: String,
    /// The MUC service's domain.
    pub muc: String,
}

/// Answers stanzas addressed to the server's domains themselves.
#[derive(Debug, Clone)]
pub struct DefaultRouter {
    domains: Domains,
    version: String,
}

impl DefaultRouter {
    pub fn new(domains: Domains, version: impl Into<String>) -> DefaultRouter {
        DefaultRouter {
            domains,
            version: version.into(),
        }
    }

    /// The reply to a stanza nobody else handled, if one is due.
    pub fn answer(&self, stanza: &Stanza) -> Option<Stanza> {
        if stanza
            .to()
            .is_some_and(|to| to.domain().as_str() == self.domains.muc)
        {
            return muc_unavailable(stanza);
        }
        match stanza {
            Stanza::Iq(iq) => Some(Stanza::Iq(self.answer_iq(iq)?)),
            // Messages to an address nobody handles bounce, unless they are errors.
            Stanza::Message(message) => refusal(
                "message",
                message.type_ == MessageType::Error,
                stanza,
                message.id.clone().map(|id| id.0),
                "The service is unavailable",
            ),
            // Presence to an address nobody handles is ignored (RFC 6121 §4.3, §8.5.1).
            Stanza::Presence(_) => None,
        }
    }

    fn answer_iq(&self, iq: &Iq) -> Option<Iq> {
        let (from, to, id, payload) = match iq {
            Iq::Get {
                from,
                to,
                id,
                payload,
            } => (from, to, id, payload),
            Iq::Set { from, to, id, .. } => {
                return Some(reply(Iq::from_error(id.clone(), unavailable()), from, to));
            }
            // Results and errors are never answered.
            Iq::Result { .. } | Iq::Error { .. } => return None,
        };
        let target = to.as_ref();
        let is_domain = |jid: Option<&Jid>, domain: &str| {
            jid.is_some_and(|jid| {
                jid.node().is_none() && jid.resource().is_none() && jid.domain().as_str() == domain
            })
        };
        let to_server = is_domain(target, &self.domains.server);
        let answer = if payload.is("query", DISCO_INFO) && to_server {
            if payload.attr("node").is_some() {
                Iq::from_error(id.clone(), item_not_found())
            } else {
                Iq::from_result(id.clone(), Some(self.disco_info()))
            }
        } else if payload.is("query", DISCO_ITEMS) && to_server {
            // The MUC service.
            let items = match Jid::new(&self.domains.muc) {
                Ok(jid) => vec![xmpp_parsers::disco::Item {
                    jid,
                    node: None,
                    name: Some("Matrix rooms".to_owned()),
                }],
                Err(_) => vec![],
            };
            Iq::from_result(
                id.clone(),
                Some(DiscoItemsResult {
                    node: None,
                    items,
                    rsm: None,
                }),
            )
        } else if payload.is("ping", PING) && to_server {
            Iq::from_result(id.clone(), None::<DiscoInfoResult>)
        } else if payload.is("query", VERSION) && to_server {
            Iq::from_result(
                id.clone(),
                Some(VersionResult {
                    name: "Causeway".to_owned(),
                    version: self.version.clone(),
                    os: None,
                }),
            )
        } else if payload.is("time", TIME) && to_server {
            let now: chrono::DateTime<chrono::Utc> = std::time::SystemTime::now().into();
            Iq::from_result(id.clone(), Some(TimeResult::from(now)))
        } else {
            Iq::from_error(id.clone(), unavailable())
        };
        Some(reply(answer, from, to))
    }

    fn disco_info(&self) -> DiscoInfoResult {
        let identity = Identity {
            category: "server".to_owned(),
            type_: "im".to_owned(),
            lang: None,
            name: Some("Causeway".to_owned()),
        };
        let features = [DISCO_INFO, DISCO_ITEMS, PING, VERSION, TIME];
        DiscoInfoResult {
            node: None,
            identities: vec![identity],
            features: features
                .iter()
                .map(|f| (*f).to_owned())
                .collect::<BTreeSet<_>>(),
            extensions: vec![],
        }
    }
}

/// The answer of the MUC domain when no MUC service runs in front of the router: every
/// request, message and join gets `service-unavailable` at once (a join would otherwise wait
/// for its timeout), with a text that says why. Errors, results, and presence that asks for
/// nothing get no answer.
fn muc_unavailable(stanza: &Stanza) -> Option<Stanza> {
    use xmpp_parsers::presence::Type as PresenceType;
    let (kind, id) = match stanza {
        Stanza::Iq(Iq::Get { id, .. } | Iq::Set { id, .. }) => ("iq", Some(id.clone())),
        Stanza::Iq(_) => return None,
        Stanza::Message(message) => ("message", message.id.clone().map(|id| id.0)),
        Stanza::Presence(presence) => match presence.type_ {
            PresenceType::None | PresenceType::Probe | PresenceType::Subscribe => {
                ("presence", presence.id.clone())
            }
            _ => return None,
        },
    };
    let is_error = matches!(stanza, Stanza::Message(m) if m.type_ == MessageType::Error);
    refusal(
        kind,
        is_error,
        stanza,
        id,
        "No group chat service runs on this server",
    )
}

/// `service-unavailable` with `text`, back to the sender of `stanza` (nothing for an error).
fn refusal(
    kind: &str,
    is_error: bool,
    stanza: &Stanza,
    id: Option<String>,
    text: &str,
) -> Option<Stanza> {
    match crate::stanza::bounce(
        kind,
        is_error,
        stanza.from()?,
        stanza.to(),
        id,
        DefinedCondition::ServiceUnavailable,
        text,
    ) {
        Rejection::Stanza(reply) => Some(*reply),
        Rejection::Drop | Rejection::Stream(_) => None,
    }
}

/// Addresses a reply back to the sender of a request.
fn reply(iq: Iq, from: &Option<Jid>, to: &Option<Jid>) -> Iq {
    let mut iq = iq;
    if let Some(sender) = from {
        iq = iq.with_to(sender.clone());
    }
    if let Some(recipient) = to {
        iq = iq.with_from(recipient.clone());
    }
    iq
}

fn unavailable() -> StanzaError {
    StanzaError::new(
        ErrorType::Cancel,
        DefinedCondition::ServiceUnavailable,
        "en",
        "The service is unavailable",
    )
}

fn item_not_found() -> StanzaError {
    StanzaError::new(
        ErrorType::Cancel,
        DefinedCondition::ItemNotFound,
        "en",
        "No such node",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::accept_inbound;

    fn router() -> DefaultRouter {
        DefaultRouter::new(
            Domains {
                server: "gw.test".into(),
                muc: "muc.gw.test".into(),
            },
            "0.1.0",
        )
    }

    fn inbound(xml: &str) -> Stanza {
        accept_inbound(
            xml.parse().expect("test XML"),
            |domain| domain == "prosody.test",
            |domain| domain == "gw.test" || domain == "muc.gw.test",
        )
        .expect("accepted")
    }

    fn result_payload(answer: Option<Stanza>) -> minidom::Element {
        match answer {
            Some(Stanza::Iq(Iq::Result {
                payload: Some(payload),
                from,
                to,
                ..
            })) => {
                assert_eq!(to.unwrap().to_string(), "bob@prosody.test/laptop");
                assert!(from.unwrap().to_string().ends_with("gw.test"));
                payload
            }
            other => panic!("expected a result with a payload, got {other:?}"),
        }
    }

    #[test]
    fn disco_of_the_server() {
        let router = router();
        let server = result_payload(router.answer(&inbound(
            "<iq xmlns='jabber:server' type='get' id='d1' from='bob@prosody.test/laptop' \
             to='gw.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        )));
        let info = DiscoInfoResult::try_from(server).unwrap();
        assert_eq!(info.identities[0].category, "server");
        assert!(info.features.contains(PING));
        assert!(info.features.contains(VERSION));
        let items = result_payload(router.answer(&inbound(
            "<iq xmlns='jabber:server' type='get' id='d3' from='bob@prosody.test/laptop' \
             to='gw.test'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
        )));
        let items = DiscoItemsResult::try_from(items).unwrap();
        let listed: Vec<String> = items
            .items
            .iter()
            .map(|item| item.jid.to_string())
            .collect();
        assert_eq!(listed, ["muc.gw.test"], "the MUC service is announced");
    }

    /// Without a MUC service in front of it, the router answers everything for the MUC
    /// domain at once with service-unavailable.
    #[test]
    fn the_muc_domain_without_a_service_refuses_at_once() {
        let router = router();
        let unavailable = |answer: Option<Stanza>| -> (String, String, StanzaError) {
            let (from, to, error) = match answer {
                Some(Stanza::Iq(Iq::Error {
                    from, to, error, ..
                })) => (from, to, error),
                Some(Stanza::Message(mut message)) => {
                    let error = message
                        .payloads
                        .pop()
                        .map(|p| StanzaError::try_from(p).unwrap())
                        .unwrap();
                    assert_eq!(message.type_, MessageType::Error);
                    (message.from, message.to, error)
                }
                Some(Stanza::Presence(mut presence)) => {
                    assert_eq!(presence.type_, xmpp_parsers::presence::Type::Error);
                    let error = presence
                        .payloads
                        .pop()
                        .map(|p| StanzaError::try_from(p).unwrap())
                        .unwrap();
                    (presence.from, presence.to, error)
                }
                other => panic!("expected an error, got {other:?}"),
            };
            assert_eq!(
                error.defined_condition,
                DefinedCondition::ServiceUnavailable
            );
            assert_eq!(error.type_, ErrorType::Cancel);
            assert!(
                error
                    .texts
                    .values()
                    .any(|t| t.contains("No group chat service")),
                "{error:?}"
            );
            (from.unwrap().to_string(), to.unwrap().to_string(), error)
        };
        for (xml, from) in [
            (
                "<iq xmlns='jabber:server' type='get' id='d2' from='bob@prosody.test/laptop' \
                 to='muc.gw.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
                "muc.gw.test",
            ),
            (
                "<iq xmlns='jabber:server' type='get' id='d3' from='bob@prosody.test/laptop' \
                 to='room@muc.gw.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
                "room@muc.gw.test",
            ),
            (
                "<iq xmlns='jabber:server' type='get' id='p2' from='bob@prosody.test/laptop' \
                 to='muc.gw.test'><ping xmlns='urn:xmpp:ping'/></iq>",
                "muc.gw.test",
            ),
            // A MUC join.
            (
                "<presence xmlns='jabber:server' id='j1' from='bob@prosody.test/laptop' \
                 to='room@muc.gw.test/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
                "room@muc.gw.test/Bob",
            ),
            (
                "<message xmlns='jabber:server' type='groupchat' id='g1' \
                 from='bob@prosody.test/laptop' to='room@muc.gw.test'><body>hi</body></message>",
                "room@muc.gw.test",
            ),
            (
                "<message xmlns='jabber:server' type='chat' id='g2' \
                 from='bob@prosody.test/laptop' to='room@muc.gw.test/Alice'><body>hi</body></message>",
                "room@muc.gw.test/Alice",
            ),
        ] {
            let (replied_from, to, _) = unavailable(router.answer(&inbound(xml)));
            assert_eq!(
                (replied_from.as_str(), to.as_str()),
                (from, "bob@prosody.test/laptop"),
                "{xml}"
            );
        }
        // Nothing answers a leave, an error or a result.
        for xml in [
            "<presence xmlns='jabber:server' type='unavailable' from='bob@prosody.test/laptop' \
             to='room@muc.gw.test/Bob'/>",
            "<presence xmlns='jabber:server' type='error' from='bob@prosody.test/laptop' \
             to='room@muc.gw.test/Bob'/>",
            "<message xmlns='jabber:server' type='error' from='bob@prosody.test/laptop' \
             to='room@muc.gw.test'/>",
            "<iq xmlns='jabber:server' type='result' id='r1' from='bob@prosody.test/laptop' \
             to='muc.gw.test'/>",
        ] {
            assert_eq!(router.answer(&inbound(xml)), None, "{xml}");
        }
    }

    #[test]
    fn ping_version_and_time() {
        let router = router();
        let ping = router.answer(&inbound(
            "<iq xmlns='jabber:server' type='get' id='p1' from='bob@prosody.test/laptop' \
             to='gw.test'><ping xmlns='urn:xmpp:ping'/></iq>",
        ));
        let Some(Stanza::Iq(Iq::Result { id, payload, .. })) = ping else {
            panic!("{ping:?}");
        };
        assert_eq!((id.as_str(), payload), ("p1", None));
        let version = result_payload(router.answer(&inbound(
            "<iq xmlns='jabber:server' type='get' id='v1' from='bob@prosody.test/laptop' \
             to='gw.test'><query xmlns='jabber:iq:version'/></iq>",
        )));
        let version = VersionResult::try_from(version).unwrap();
        assert_eq!(
            (version.name.as_str(), version.version.as_str()),
            ("Causeway", "0.1.0")
        );
        let time = result_payload(router.answer(&inbound(
            "<iq xmlns='jabber:server' type='get' id='t1' from='bob@prosody.test/laptop' \
             to='gw.test'><time xmlns='urn:xmpp:time'/></iq>",
        )));
        assert!(TimeResult::try_from(time).is_ok());
    }

    #[test]
    fn everything_else_is_service_unavailable_or_ignored() {
        let router = router();
        for xml in [
            "<iq xmlns='jabber:server' type='get' id='u1' from='bob@prosody.test/laptop' \
             to='gw.test'><query xmlns='urn:example:unknown'/></iq>",
            "<iq xmlns='jabber:server' type='set' id='u2' from='bob@prosody.test/laptop' \
             to='gw.test'><query xmlns='jabber:iq:version'/></iq>",
            "<iq xmlns='jabber:server' type='get' id='u3' from='bob@prosody.test/laptop' \
             to='alice@gw.test'><query xmlns='jabber:iq:version'/></iq>",
        ] {
            let answer = router.answer(&inbound(xml));
            let Some(Stanza::Iq(Iq::Error { error, to, .. })) = answer else {
                panic!("{answer:?}");
            };
            assert_eq!(
                error.defined_condition,
                DefinedCondition::ServiceUnavailable
            );
            assert_eq!(to.unwrap().to_string(), "bob@prosody.test/laptop");
        }
        let bounced = router.answer(&inbound(
            "<message xmlns='jabber:server' type='chat' id='m1' from='bob@prosody.test/laptop' \
             to='nobody@gw.test'><body>hi</body></message>",
        ));
        let Some(Stanza::Message(message)) = bounced else {
            panic!("{bounced:?}");
        };
        assert_eq!(message.type_, MessageType::Error);
        assert_eq!(message.id.unwrap().0, "m1");
        // Results, errors and presence get no answer.
        for xml in [
            "<iq xmlns='jabber:server' type='result' id='r1' from='bob@prosody.test' to='gw.test'/>",
            "<message xmlns='jabber:server' type='error' from='bob@prosody.test' to='a@gw.test'/>",
            "<presence xmlns='jabber:server' from='bob@prosody.test' to='a@gw.test'/>",
        ] {
            assert_eq!(router.answer(&inbound(xml)), None, "{xml}");
        }
    }
}
