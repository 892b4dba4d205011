//! Tests of the server module.

use super::*;
use crate::connection::XmlStream;
use crate::dialback::{DialbackError, Kind};
use crate::negotiation::NegotiationError;
use crate::router::{DefaultRouter, Domains};
use crate::testing::{TestCa, dialback_policy};
use xmpp_parsers::iq::Iq;

/// Answers as the server's default router does, and records what it saw.
struct Recorder {
    router: Option<DefaultRouter>,
    seen: mpsc::UnboundedSender<Stanza>,
}

impl StanzaHandler for Recorder {
    fn handle(&self, stanza: Stanza) -> Pin<Box<dyn Future<Output = Vec<Stanza>> + Send + '_>> {
        Box::pin(async move {
            let _ = self.seen.send(stanza.clone());
            self.router
                .as_ref()
                .and_then(|router| router.answer(&stanza))
                .into_iter()
                .collect()
        })
    }
}

fn config(domains: &[&str], routes: HashMap<String, Vec<Endpoint>>) -> S2sConfig {
    S2sConfig {
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        listen_starttls: vec!["127.0.0.1:0".parse().unwrap()],
        listen_direct_tls: vec!["127.0.0.1:0".parse().unwrap()],
        routes,
        require_tls: true,
        dialback: false,
        limits: Limits::default(),
        idle_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        domain_policy: DomainPolicy::default(),
        max_stanzas_per_second: 1000,
        max_inbound_streams: 64,
        max_inbound_streams_per_address: 64,
        nameservers: vec![],
    }
}

struct Pair {
    gateway: Arc<S2s>,
    gateway_seen: mpsc::UnboundedReceiver<Stanza>,
    remote: Arc<S2s>,
    remote_seen: mpsc::UnboundedReceiver<Stanza>,
    ca: TestCa,
}

fn endpoint(s2s: &S2s, direct: bool) -> Endpoint {
    s2s.local_addresses()
        .iter()
        .find(|(_, is_direct)| *is_direct == direct)
        .map(|(address, _)| Endpoint {
            address: *address,
            direct_tls: direct,
        })
        .unwrap()
}

/// Causeway as gw.test, and a second instance playing the remote server prosody.test.
/// `direct` chooses how each reaches the other.
async fn pair(direct: bool) -> Pair {
    pair_with(direct, false).await
}

/// With `dialback`, the two servers have certificates from CAs the other does not trust and
/// allow dialback: only dialback authenticates them.
async fn pair_with(direct: bool, dialback: bool) -> Pair {
    let ca = TestCa::new("Test CA");
    let remote_ca = if dialback {
        TestCa::new("Another CA")
    } else {
        TestCa::new("Test CA")
    };
    let remote_identity = if dialback {
        remote_ca.identity(&["prosody.test"])
    } else {
        ca.identity(&["prosody.test"])
    };
    let with_dialback = |mut config: S2sConfig| {
        config.dialback = dialback;
        config
    };
    let (gateway_tx, gateway_seen) = mpsc::unbounded_channel();
    let (remote_tx, remote_seen) = mpsc::unbounded_channel();
    let gateway = S2s::start(
        with_dialback(config(&["gw.test", "muc.gw.test"], HashMap::new())),
        Arc::new(
            TlsSettings::new(
                vec![ca.identity(&["gw.test", "muc.gw.test"])],
                vec![ca.root()],
                false,
            )
            .unwrap(),
        ),
        Arc::new(Recorder {
            router: Some(DefaultRouter::new(
                Domains {
                    server: "gw.test".into(),
                    muc: "muc.gw.test".into(),
                },
                "test",
            )),
            seen: gateway_tx,
        }),
    )
    .await
    .unwrap();
    let remote_roots = if dialback { vec![] } else { vec![ca.root()] };
    let remote = S2s::start(
        with_dialback(config(&["prosody.test"], HashMap::new())),
        Arc::new(TlsSettings::new(vec![remote_identity], remote_roots, false).unwrap()),
        Arc::new(Recorder {
            router: None,
            seen: remote_tx,
        }),
    )
    .await
    .unwrap();
    gateway.set_route("prosody.test", vec![endpoint(&remote, direct)]);
    remote.set_route("gw.test", vec![endpoint(&gateway, direct)]);
    remote.set_route("muc.gw.test", vec![endpoint(&gateway, direct)]);
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_address = closed.local_addr().unwrap();
    drop(closed);
    gateway.set_route(
        "nowhere.test",
        vec![Endpoint {
            address: closed_address,
            direct_tls: false,
        }],
    );
    Pair {
        gateway,
        gateway_seen,
        remote,
        remote_seen,
        ca,
    }
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Stanza>) -> Stanza {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("a stanza in time")
        .expect("the channel is open")
}

fn parse(xml: &str) -> Stanza {
    crate::stanza::accept_inbound(xml.parse().unwrap(), |_| true, |_| true).unwrap()
}

#[test]
fn domain_policy() {
    let open = DomainPolicy::default();
    assert!(open.permits("any.example"));
    let deny = DomainPolicy {
        allow: vec![],
        deny: vec!["evil.example".into()],
    };
    assert!(!deny.permits("evil.example"));
    assert!(!deny.permits("conference.EVIL.example"));
    assert!(deny.permits("notevil.example"));
    let allow = DomainPolicy {
        allow: vec!["partner.example".into()],
        deny: vec!["bad.partner.example".into()],
    };
    assert!(allow.permits("partner.example"));
    assert!(allow.permits("muc.partner.example"));
    assert!(!allow.permits("bad.partner.example"));
    assert!(!allow.permits("other.example"));
}

#[tokio::test]
async fn denied_domains_neither_connect_nor_get_stanzas() {
    let mut pair = pair(false).await;
    // The gateway now refuses prosody.test, both ways.
    let mut config = pair.gateway.config.clone();
    config.domain_policy.deny = vec!["prosody.test".into()];
    let _ = &mut config;
    let denied = S2s::start(
        config,
        pair.gateway.tls.clone(),
        pair.gateway.handler.clone(),
    )
    .await
    .unwrap();
    denied.send(parse(
        "<message xmlns='jabber:server' type='chat' id='no' from='alice@gw.test' \
         to='bob@prosody.test'><body>hi</body></message>",
    ));
    let bounced = next(&mut pair.gateway_seen).await;
    assert!(
        format!("{bounced:?}").contains("not-allowed"),
        "{bounced:?}"
    );
    pair.remote
        .set_route("gw.test", vec![endpoint(&denied, false)]);
    pair.remote.send(parse(
        "<iq xmlns='jabber:server' type='get' id='p' from='bob@prosody.test/x' \
         to='gw.test'><ping xmlns='urn:xmpp:ping'/></iq>",
    ));
    // The remote server's stream is closed with policy-violation before any stanza: its
    // ping bounces back to its sender.
    let answer = next(&mut pair.remote_seen).await;
    let Stanza::Iq(Iq::Error { error, .. }) = answer else {
        panic!("{answer:?}");
    };
    assert_eq!(
        error.defined_condition,
        DefinedCondition::RemoteServerNotFound
    );
}

#[tokio::test]
async fn unreachable_domains_bounce_to_the_sender() {
    let mut pair = pair(false).await;
    for id in ["lost1", "lost2"] {
        pair.gateway.send(parse(&format!(
            "<message xmlns='jabber:server' type='chat' id='{id}' from='alice@gw.test' \
             to='x@nowhere.test'><body>hello?</body></message>"
        )));
        let bounced = next(&mut pair.gateway_seen).await;
        let Stanza::Message(message) = bounced else {
            panic!("{bounced:?}");
        };
        assert_eq!(message.type_, xmpp_parsers::message::MessageType::Error);
        assert_eq!(message.id.unwrap().0, id);
        assert_eq!(message.to.unwrap().to_string(), "alice@gw.test");
        assert!(format!("{:?}", message.payloads).contains("remote-server-not-found"));
    }
}

#[tokio::test]
async fn tracked_stanzas_report_instead_of_bouncing() {
    let mut pair = pair(false).await;
    let lost = pair.gateway.send_tracked(parse(
        "<message xmlns='jabber:server' type='chat' id='t1' from='alice@gw.test' \
         to='x@nowhere.test'><body>hello?</body></message>",
    ));
    assert_eq!(
        lost.await.unwrap(),
        Delivery::Failed(DefinedCondition::RemoteServerNotFound)
    );
    let delivered = pair.gateway.send_tracked(parse(
        "<message xmlns='jabber:server' type='chat' id='t2' from='alice@gw.test' \
         to='bob@prosody.test'><body>hello</body></message>",
    ));
    assert_eq!(delivered.await.unwrap(), Delivery::Sent);
    let Stanza::Message(message) = next(&mut pair.remote_seen).await else {
        panic!("not a message");
    };
    assert_eq!(message.id.unwrap().0, "t2");
    // The failure was reported, not bounced: the sender got nothing but what it sent next.
    pair.gateway.send(parse(
        "<message xmlns='jabber:server' type='chat' id='t3' from='alice@gw.test' \
         to='x@nowhere.test'><body>again</body></message>",
    ));
    let Stanza::Message(bounced) = next(&mut pair.gateway_seen).await else {
        panic!("not a message");
    };
    assert_eq!(bounced.id.unwrap().0, "t3");
}

#[tokio::test]
async fn a_remote_server_pings_the_gateway_and_reads_the_answers() {
    for direct in [false, true] {
        let mut pair = pair(direct).await;
        // The gateway answers over its own outbound stream to the remote server.
        pair.remote.send(parse(
            "<iq xmlns='jabber:server' type='get' id='ping1' from='bob@prosody.test/x' \
             to='gw.test'><ping xmlns='urn:xmpp:ping'/></iq>",
        ));
        let received = next(&mut pair.gateway_seen).await;
        assert!(
            matches!(received, Stanza::Iq(Iq::Get { .. })),
            "{received:?}"
        );
        let answer = next(&mut pair.remote_seen).await;
        let Stanza::Iq(Iq::Result { id, to, from, .. }) = answer else {
            panic!("{answer:?}");
        };
        assert_eq!(id, "ping1");
        assert_eq!(to.unwrap().to_string(), "bob@prosody.test/x");
        assert_eq!(from.unwrap().to_string(), "gw.test");
        // Disco#info of the MUC domain over the same streams: no service there yet.
        pair.remote.send(parse(
            "<iq xmlns='jabber:server' type='get' id='disco1' from='bob@prosody.test/x' \
             to='muc.gw.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        ));
        let _ = next(&mut pair.gateway_seen).await;
        let answer = next(&mut pair.remote_seen).await;
        let Stanza::Iq(Iq::Error {
            id, from, error, ..
        }) = answer
        else {
            panic!("{answer:?}");
        };
        assert_eq!(
            (id.as_str(), from.unwrap().to_string()),
            ("disco1", "muc.gw.test".to_owned())
        );
        assert_eq!(
            error.defined_condition,
            xmpp_parsers::stanza_error::DefinedCondition::ServiceUnavailable
        );
    }
}

#[tokio::test]
async fn a_peer_lying_about_its_domain_is_cut_off_and_others_go_on() {
    let mut pair = pair(false).await;
    let address = endpoint(&pair.gateway, false).address;
    // A peer with a certificate the gateway does not trust never gets to send stanzas.
    let stranger = TlsSettings::new(
        vec![TestCa::new("Other CA").identity(&["prosody.test"])],
        vec![],
        false,
    )
    .unwrap();
    let socket = TcpStream::connect(address).await.unwrap();
    let secret = Secret::random();
    let refused = negotiation::connect(
        Box::new(socket),
        false,
        "prosody.test",
        "gw.test",
        &dialback_policy(&stranger, &secret),
    )
    .await;
    assert!(refused.is_err());
    // Authenticated as prosody.test, a peer sends a stanza from another domain.
    let trusted = TlsSettings::new(
        vec![pair.ca.identity(&["prosody.test"])],
        vec![pair.ca.root()],
        false,
    )
    .unwrap();
    let socket = TcpStream::connect(address).await.unwrap();
    let mut liar = negotiation::connect(
        Box::new(socket),
        false,
        "prosody.test",
        "gw.test",
        &dialback_policy(&trusted, &secret),
    )
    .await
    .unwrap();
    liar.stream
        .send_element(
            &"<message xmlns='jabber:server' from='eve@evil.test' to='alice@gw.test'/>"
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    match liar.stream.next().await {
        Err(crate::connection::ConnectionError::PeerError(condition)) => {
            assert_eq!(condition, "invalid-from");
        }
        other => panic!("expected invalid-from, got {other:?}"),
    }
    // The legitimate remote server still gets answers.
    pair.remote.send(parse(
        "<iq xmlns='jabber:server' type='get' id='after' from='bob@prosody.test/x' \
         to='gw.test'><ping xmlns='urn:xmpp:ping'/></iq>",
    ));
    let _ = next(&mut pair.gateway_seen).await;
    let answer = next(&mut pair.remote_seen).await;
    assert!(
        matches!(answer, Stanza::Iq(Iq::Result { .. })),
        "{answer:?}"
    );
}

#[tokio::test]
async fn servers_that_do_not_trust_each_others_certificates_federate_with_dialback() {
    for direct in [false, true] {
        let mut pair = pair_with(direct, true).await;
        for target in ["gw.test", "muc.gw.test"] {
            pair.remote.send(parse(&format!(
                "<iq xmlns='jabber:server' type='get' id='p-{target}' from='bob@prosody.test/x' \
                 to='{target}'><ping xmlns='urn:xmpp:ping'/></iq>"
            )));
            let seen = next(&mut pair.gateway_seen).await;
            assert_eq!(seen.to().unwrap().to_string(), target);
            // The answer travels on the gateway's own stream, authenticated by dialback too
            // (the MUC domain refuses: it has no service yet).
            let answer = next(&mut pair.remote_seen).await;
            if target == "gw.test" {
                assert!(
                    matches!(&answer, Stanza::Iq(Iq::Result { .. })),
                    "{answer:?}"
                );
            } else {
                assert!(
                    matches!(&answer, Stanza::Iq(Iq::Error { .. })),
                    "{answer:?}"
                );
            }
            assert_eq!(answer.from().unwrap().to_string(), target);
        }
    }
}

#[tokio::test]
async fn a_forged_dialback_key_is_refused() {
    let pair = pair_with(false, true).await;
    // Someone claims to be prosody.test; the real prosody.test does not know its key.
    let impostor = TlsSettings::new(
        vec![TestCa::new("Impostor CA").identity(&["prosody.test"])],
        vec![],
        false,
    )
    .unwrap();
    let secret = Secret::random();
    let refused = connect_to(&pair.gateway, "prosody.test", &impostor, &secret).await;
    assert!(
        matches!(refused, Err(NegotiationError::DialbackInvalid)),
        "{:?}",
        refused.err()
    );
}

/// A peer's stream to the gateway (over STARTTLS) as `local`.
async fn connect_to(
    gateway: &S2s,
    local: &str,
    tls: &TlsSettings,
    secret: &Secret,
) -> Result<Authenticated, NegotiationError> {
    let socket = TcpStream::connect(endpoint(gateway, false).address)
        .await
        .unwrap();
    negotiation::connect(
        Box::new(socket),
        false,
        local,
        "gw.test",
        &dialback_policy(tls, secret),
    )
    .await
}

/// An authoritative server for raw.test and other.raw.test, answering with `secret`.
async fn authoritative(secret: Arc<Secret>, tls: Arc<TlsSettings>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (secret, tls) = (secret.clone(), tls.clone());
            tokio::spawn(async move {
                let policy = InboundPolicy {
                    domains: vec!["raw.test".into(), "other.raw.test".into()],
                    require_tls: true,
                    dialback: true,
                    limits: Limits::default(),
                    domain_policy: DomainPolicy::default(),
                };
                let Ok(Accepted::Dialback(mut inbound)) =
                    negotiation::accept(Box::new(socket), false, &tls, &policy).await
                else {
                    return;
                };
                while let Ok(StreamItem::Element(element)) = inbound.stream.next().await {
                    let Ok(request) = Dialback::parse(&element) else {
                        return;
                    };
                    if request.kind != Kind::Verify {
                        continue;
                    }
                    let valid = secret.verifies(
                        request.key.as_deref().unwrap_or_default(),
                        &request.from,
                        &request.to,
                        request.id.as_deref().unwrap_or_default(),
                    );
                    let outcome = if valid {
                        Outcome::Valid
                    } else {
                        Outcome::Invalid
                    };
                    let answer = request.answer(outcome).to_bytes();
                    if inbound.stream.send_raw(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

async fn dialback_answer(stream: &mut XmlStream<BoxedIo>) -> Dialback {
    let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an answer in time");
    match item {
        Ok(StreamItem::Element(element)) => Dialback::parse(&element).unwrap(),
        other => panic!("expected a dialback answer, got {other:?}"),
    }
}

/// Several sender and target domains over one stream (XEP-0220 §4), the gateway answering
/// as an authoritative server on the same stream, and pairs kept apart.
#[tokio::test]
async fn several_domain_pairs_over_one_stream() {
    let mut pair = pair_with(false, true).await;
    let secret = Arc::new(Secret::random());
    let tls = Arc::new(
        TlsSettings::new(
            vec![TestCa::new("Raw CA").identity(&["raw.test", "other.raw.test"])],
            vec![],
            false,
        )
        .unwrap(),
    );
    let address = authoritative(secret.clone(), tls.clone()).await;
    for domain in ["raw.test", "other.raw.test"] {
        pair.gateway.set_route(
            domain,
            vec![Endpoint {
                address,
                direct_tls: false,
            }],
        );
    }
    let mut peer = connect_to(&pair.gateway, "raw.test", &tls, &secret)
        .await
        .unwrap();
    assert_eq!(peer.method, negotiation::AuthMethod::Dialback);
    let stream_id = peer.stream_id.clone().unwrap();
    let stream = &mut peer.stream;
    // Another sender domain to another target domain on the same stream.
    let key = secret.key("muc.gw.test", "other.raw.test", &stream_id);
    let request = Dialback::request(Kind::Result, "other.raw.test", "muc.gw.test", None, key);
    stream.send_raw(&request.to_bytes()).await.unwrap();
    assert_eq!(
        dialback_answer(stream).await,
        request.answer(Outcome::Valid)
    );
    // A target the gateway does not serve.
    let request = Dialback::request(
        Kind::Result,
        "raw.test",
        "elsewhere.test",
        None,
        "ab".into(),
    );
    stream.send_raw(&request.to_bytes()).await.unwrap();
    assert_eq!(
        dialback_answer(stream).await,
        request.answer(Outcome::Error(DialbackError::ItemNotFound))
    );
    // A key for a pair, checked with the gateway as the authoritative server: it never gave it.
    let request = Dialback::request(Kind::Verify, "raw.test", "gw.test", Some("s1"), "ab".into());
    stream.send_raw(&request.to_bytes()).await.unwrap();
    assert_eq!(
        dialback_answer(stream).await,
        request.answer(Outcome::Invalid)
    );
    // An answer nobody asked for is ignored (XEP-0220 §5), and the validated pairs work.
    let unsolicited = Dialback::request(Kind::Result, "evil.test", "gw.test", None, "ab".into())
        .answer(Outcome::Valid);
    let mut unsolicited = unsolicited;
    std::mem::swap(&mut unsolicited.from, &mut unsolicited.to);
    stream.send_raw(&unsolicited.to_bytes()).await.unwrap();
    for (from, to) in [
        ("a@raw.test", "b@gw.test"),
        ("c@other.raw.test", "room@muc.gw.test/n"),
    ] {
        stream
            .send_element(
                &format!(
                    "<presence xmlns='jabber:server' type='unavailable' from='{from}' to='{to}'/>"
                )
                .parse()
                .unwrap(),
            )
            .await
            .unwrap();
        let seen = next(&mut pair.gateway_seen).await;
        assert_eq!(seen.from().unwrap().to_string(), from);
    }
    // other.raw.test was validated for muc.gw.test only, and evil.test for nothing.
    for (from, to) in [
        ("c@other.raw.test", "b@gw.test"),
        ("e@evil.test", "b@gw.test"),
    ] {
        let mut fresh = connect_to(&pair.gateway, "raw.test", &tls, &secret)
            .await
            .unwrap();
        if from.ends_with("other.raw.test") {
            let key = secret.key(
                "muc.gw.test",
                "other.raw.test",
                fresh.stream_id.as_deref().unwrap(),
            );
            let request =
                Dialback::request(Kind::Result, "other.raw.test", "muc.gw.test", None, key);
            fresh.stream.send_raw(&request.to_bytes()).await.unwrap();
            assert_eq!(
                dialback_answer(&mut fresh.stream).await.outcome,
                Some(Outcome::Valid)
            );
        }
        fresh
            .stream
            .send_element(
                &format!(
                    "<presence xmlns='jabber:server' type='unavailable' from='{from}' to='{to}'/>"
                )
                .parse()
                .unwrap(),
            )
            .await
            .unwrap();
        match fresh.stream.next().await {
            Err(ConnectionError::PeerError(condition)) => assert_eq!(condition, "invalid-from"),
            other => panic!("expected invalid-from, got {other:?}"),
        }
    }
    assert!(
        pair.gateway_seen.try_recv().is_err(),
        "nothing else arrived"
    );
}

/// A peer that ends our outbound stream: the next stanza goes over a new stream instead of
/// into the closed connection.
#[tokio::test]
async fn a_stream_the_peer_ends_is_opened_again_for_the_next_stanza() {
    let pair = pair(false).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    pair.gateway.set_route(
        "closing.test",
        vec![Endpoint {
            address: listener.local_addr().unwrap(),
            direct_tls: false,
        }],
    );
    let tls = TlsSettings::new(
        vec![pair.ca.identity(&["closing.test"])],
        vec![pair.ca.root()],
        false,
    )
    .unwrap();
    let policy = InboundPolicy {
        domains: vec!["closing.test".into()],
        require_tls: true,
        dialback: false,
        limits: Limits::default(),
        domain_policy: DomainPolicy::default(),
    };
    let message = |i: u32| {
        parse(&format!(
            "<message xmlns='jabber:server' id='m{i}' from='alice@gw.test' to='bob@closing.test'>\
             <body>{i}</body></message>"
        ))
    };
    for i in 1..=2 {
        pair.gateway.send(message(i));
        let (socket, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("a connection in time")
            .unwrap();
        let Accepted::Sasl(mut inbound) =
            negotiation::accept(Box::new(socket), false, &tls, &policy)
                .await
                .unwrap()
        else {
            panic!("expected SASL EXTERNAL");
        };
        let Ok(StreamItem::Element(received)) = inbound.stream.next().await else {
            panic!("expected a stanza");
        };
        assert_eq!(received.attr("id"), Some(format!("m{i}").as_str()));
        // The peer ends the stream, and the gateway answers with the end of its own.
        inbound.stream.close().await.unwrap();
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(10), inbound.stream.next())
                .await
                .expect("the gateway closes too"),
            Err(ConnectionError::Closed)
        ));
    }
}

/// Without a fixed route, a remote server is found through its SRV record, on the port the
/// record names.
#[tokio::test]
async fn a_remote_domain_found_through_its_srv_record() {
    use causeway_net::testing::records::{a, srv};
    let mut pair = pair(false).await;
    let remote = endpoint(&pair.remote, false).address;
    let dns = causeway_net::testing::dns_server(vec![
        srv(
            "_xmpp-server._tcp.prosody.test.",
            0,
            0,
            remote.port(),
            "xmpp.prosody.test.",
        ),
        a("xmpp.prosody.test.", [127, 0, 0, 1]),
    ])
    .await;
    let mut config = config(&["gw.test"], HashMap::new());
    config.nameservers = vec![dns];
    let (seen, _) = mpsc::unbounded_channel();
    let gateway = S2s::start(
        config,
        Arc::new(
            TlsSettings::new(
                vec![pair.ca.identity(&["gw.test"])],
                vec![pair.ca.root()],
                false,
            )
            .unwrap(),
        ),
        Arc::new(Recorder { router: None, seen }),
    )
    .await
    .unwrap();
    gateway.send(parse(
        "<message xmlns='jabber:server' id='by-srv' from='alice@gw.test' to='bob@prosody.test'>\
         <body>found</body></message>",
    ));
    let Stanza::Message(message) = next(&mut pair.remote_seen).await else {
        panic!("expected the message");
    };
    assert_eq!(message.id.map(|id| id.0).as_deref(), Some("by-srv"));
}

/// At shutdown the listeners close, an inbound stream ends with the `system-shutdown` stream
/// error, and the outbound stream closes after writing what was queued on it.
#[tokio::test]
async fn shutdown_closes_every_stream() {
    let mut pair = pair_with(false, true).await;
    let secret = Arc::new(Secret::random());
    let tls = Arc::new(
        TlsSettings::new(
            vec![TestCa::new("Raw CA").identity(&["raw.test"])],
            vec![],
            false,
        )
        .unwrap(),
    );
    let address = authoritative(secret.clone(), tls.clone()).await;
    pair.gateway.set_route(
        "raw.test",
        vec![Endpoint {
            address,
            direct_tls: false,
        }],
    );
    // An inbound stream of a raw peer, and both streams between the gateway and the remote.
    let mut peer = connect_to(&pair.gateway, "raw.test", &tls, &secret)
        .await
        .unwrap();
    pair.remote.send(parse(
        "<iq xmlns='jabber:server' type='get' id='before' from='bob@prosody.test/x' \
         to='gw.test'><ping xmlns='urn:xmpp:ping'/></iq>",
    ));
    let _ = next(&mut pair.gateway_seen).await;
    let _ = next(&mut pair.remote_seen).await;
    assert!(
        pair.gateway.open_streams() >= 2,
        "{}",
        pair.gateway.open_streams()
    );
    // A stanza queued at the moment of the shutdown is still written.
    pair.gateway.send(parse(
        "<message xmlns='jabber:server' type='chat' id='last' from='alice@gw.test' \
         to='bob@prosody.test'><body>bye</body></message>",
    ));
    pair.gateway.shut_down(Duration::from_secs(10)).await;
    assert_eq!(pair.gateway.open_streams(), 0);
    let last = next(&mut pair.remote_seen).await;
    let Stanza::Message(message) = last else {
        panic!("{last:?}");
    };
    assert_eq!(message.id.unwrap().0, "last");
    let ended = tokio::time::timeout(Duration::from_secs(10), peer.stream.next())
        .await
        .expect("the stream ends at once");
    match ended {
        Err(ConnectionError::PeerError(condition)) => assert_eq!(condition, "system-shutdown"),
        other => panic!("expected system-shutdown, got {other:?}"),
    }
    assert!(
        TcpStream::connect(endpoint(&pair.gateway, false).address)
            .await
            .is_err(),
        "the listener still accepts"
    );
}

/// A dialback verification goes where a fixed route says, but never, through DNS, to a
/// loopback, private or link-local address: whoever claims a domain chooses its DNS.
#[tokio::test]
async fn dialback_verification_never_follows_dns_to_internal_addresses() {
    use causeway_net::testing::records::{a, srv};
    let secret = Arc::new(Secret::random());
    let tls = Arc::new(
        TlsSettings::new(
            vec![TestCa::new("Raw CA").identity(&["raw.test"])],
            vec![],
            false,
        )
        .unwrap(),
    );
    // The authoritative server of raw.test would answer, on loopback.
    let authoritative_address = authoritative(secret.clone(), tls.clone()).await;
    let dns = causeway_net::testing::dns_server(vec![
        srv(
            "_xmpp-server._tcp.raw.test.",
            0,
            0,
            authoritative_address.port(),
            "xmpp.raw.test.",
        ),
        a("xmpp.raw.test.", [127, 0, 0, 1]),
    ])
    .await;
    let mut config = config(&["gw.test"], HashMap::new());
    config.nameservers = vec![dns];
    config.dialback = true;
    let (seen, _) = mpsc::unbounded_channel();
    let ca = TestCa::new("Test CA");
    let gateway = S2s::start(
        config,
        Arc::new(
            TlsSettings::new(vec![ca.identity(&["gw.test"])], vec![ca.root()], false).unwrap(),
        ),
        Arc::new(Recorder { router: None, seen }),
    )
    .await
    .unwrap();
    match connect_to(&gateway, "raw.test", &tls, &secret).await {
        Err(NegotiationError::Dialback(error)) => {
            assert_eq!(error, DialbackError::RemoteServerNotFound);
        }
        other => panic!(
            "expected a refused verification, got {:?}",
            other.map(|a| a.peer)
        ),
    }
    // The same address as a fixed route of the configuration is used.
    gateway.set_route(
        "raw.test",
        vec![Endpoint {
            address: authoritative_address,
            direct_tls: false,
        }],
    );
    let authenticated = connect_to(&gateway, "raw.test", &tls, &secret)
        .await
        .unwrap();
    assert_eq!(authenticated.method, negotiation::AuthMethod::Dialback);
}

/// Verifications under way do not keep a stream that authenticated nothing open past its
/// deadline.
#[tokio::test]
async fn a_pending_verification_does_not_lift_the_deadline() {
    let secret = Arc::new(Secret::random());
    let tls = Arc::new(
        TlsSettings::new(
            vec![TestCa::new("Raw CA").identity(&["raw.test"])],
            vec![],
            false,
        )
        .unwrap(),
    );
    // Authoritative servers that accept connections and never say anything.
    let mut silent = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        endpoints.push(Endpoint {
            address: listener.local_addr().unwrap(),
            direct_tls: false,
        });
        silent.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        }));
    }
    let mut config = config(&["gw.test"], HashMap::new());
    config.dialback = true;
    config.connect_timeout = Duration::from_secs(1);
    let (seen, _) = mpsc::unbounded_channel();
    let ca = TestCa::new("Test CA");
    let gateway = S2s::start(
        config,
        Arc::new(
            TlsSettings::new(vec![ca.identity(&["gw.test"])], vec![ca.root()], false).unwrap(),
        ),
        Arc::new(Recorder { router: None, seen }),
    )
    .await
    .unwrap();
    gateway.set_route("raw.test", endpoints);
    // Each silent server takes the whole connection timeout: three of them, three seconds,
    // while the stream's deadline is one.
    match connect_to(&gateway, "raw.test", &tls, &secret).await {
        Err(NegotiationError::Connection(ConnectionError::PeerError(condition))) => {
            assert_eq!(condition, "connection-timeout");
        }
        other => panic!(
            "expected the stream to end at its deadline, got {:?}",
            other.map(|a| a.peer)
        ),
    }
    for task in silent {
        task.abort();
    }
}

#[test]
fn public_addresses() {
    for internal in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "192.0.2.1",
        "::1",
        "::",
        "fc00::1",
        "fd12::1",
        "fe80::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ] {
        assert!(
            !crate::dns::is_public(internal.parse().unwrap()),
            "{internal}"
        );
    }
    for public in ["8.8.8.8", "100.128.0.1", "2a00:1450::1", "::ffff:8.8.8.8"] {
        assert!(crate::dns::is_public(public.parse().unwrap()), "{public}");
    }
}

/// Inbound connections over the caps (per address, in all) are closed at once; a place frees
/// up when a connection ends.
#[tokio::test]
async fn inbound_connections_are_capped() {
    use tokio::io::AsyncReadExt;
    let mut config = config(&["gw.test"], HashMap::new());
    config.max_inbound_streams_per_address = 3;
    config.max_inbound_streams = 100;
    let (seen, _) = mpsc::unbounded_channel();
    let ca = TestCa::new("Test CA");
    let gateway = S2s::start(
        config,
        Arc::new(
            TlsSettings::new(vec![ca.identity(&["gw.test"])], vec![ca.root()], false).unwrap(),
        ),
        Arc::new(Recorder { router: None, seen }),
    )
    .await
    .unwrap();
    let address = endpoint(&gateway, false).address;
    // Three idle connections that never send a header hold their places.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = TcpStream::connect(address).await.unwrap();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut buffer))
        .await
        .expect("the fourth connection is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // One idle connection goes: a new one is served (it gets the gateway's stream header).
    drop(idle.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut served = TcpStream::connect(address).await.unwrap();
    use tokio::io::AsyncWriteExt;
    served
        .write_all(
            b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
              from='prosody.test' to='gw.test' version='1.0'>",
        )
        .await
        .unwrap();
    let mut reply = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), served.read(&mut reply))
        .await
        .expect("an answer")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&reply[..read]).contains("<stream:stream"),
        "{}",
        String::from_utf8_lossy(&reply[..read])
    );
}
