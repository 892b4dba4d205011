//! Tests of the negotiation module.

use super::*;
use crate::testing::{Tap, TestCa, dialback_policy, strict_first_level_names};
use rustls::pki_types::ServerName;
use tokio::io::duplex;

struct World {
    gateway: TlsSettings,
    prosody: TlsSettings,
    policy: InboundPolicy,
}

fn world() -> World {
    let ca = TestCa::new("Test CA");
    World {
        gateway: TlsSettings::new(
            vec![ca.identity(&["gw.test", "muc.gw.test"])],
            vec![ca.root()],
            false,
        )
        .unwrap(),
        prosody: TlsSettings::new(vec![ca.identity(&["prosody.test"])], vec![ca.root()], false)
            .unwrap(),
        policy: InboundPolicy {
            domains: vec!["gw.test".into(), "muc.gw.test".into()],
            require_tls: true,
            dialback: false,
            limits: Limits::default(),
            domain_policy: DomainPolicy::default(),
        },
    }
}

fn header(from: &str, to: &str) -> StreamHeader {
    StreamHeader {
        from: Some(from.into()),
        to: Some(to.into()),
        version: Some("1.0".into()),
        ..StreamHeader::default()
    }
}

/// The stream of a peer that authenticated with SASL EXTERNAL.
fn sasl(accepted: Accepted) -> Authenticated {
    match accepted {
        Accepted::Sasl(authenticated) => authenticated,
        Accepted::Dialback(_) => panic!("expected SASL EXTERNAL, got dialback"),
    }
}

/// Runs the receiving side over STARTTLS in a task of its own.
fn spawn_accept(
    ours: tokio::io::DuplexStream,
    gateway: TlsSettings,
    policy: InboundPolicy,
) -> tokio::task::JoinHandle<Result<(), NegotiationError>> {
    tokio::spawn(async move {
        accept(Box::new(ours), false, &gateway, &policy)
            .await
            .map(|_| ())
    })
}

async fn element(stream: &mut XmlStream<BoxedIo>) -> Element {
    match stream.next().await {
        Ok(StreamItem::Element(element)) => element,
        other => panic!("expected an element, got {other:?}"),
    }
}

/// What a peer like Prosody does: STARTTLS with its certificate, then SASL EXTERNAL.
/// `claim` is the domain it says it is; `authzid` what it puts in <auth/>.
async fn peer(
    io: tokio::io::DuplexStream,
    tls: TlsSettings,
    claim: &str,
    authzid: &str,
    direct: bool,
) -> Result<XmlStream<BoxedIo>, String> {
    let connector = tls.connector("prosody.test", direct).unwrap();
    let name = ServerName::try_from("gw.test").unwrap();
    // Everything Causeway writes is read again as a prefix-strict parser (ejabberd's) reads it.
    let (mut stream, mut written): (XmlStream<BoxedIo>, _) = if direct {
        let tls = connector
            .connect(name.clone(), io)
            .await
            .map_err(|e| e.to_string())?;
        let (tapped, written) = Tap::new(tls);
        (XmlStream::new(Box::new(tapped), Limits::default()), written)
    } else {
        let (tapped, written) = Tap::new(io);
        (XmlStream::new(Box::new(tapped), Limits::default()), written)
    };
    if !direct {
        stream
            .send_header(&header(claim, "gw.test"), true)
            .await
            .unwrap();
        stream.read_header().await.map_err(|e| e.to_string())?;
        let features = element(&mut stream).await;
        assert!(features.has_child("starttls", ns::TLS), "{features:?}");
        stream
            .send_element(&Element::bare("starttls", ns::TLS))
            .await
            .unwrap();
        assert!(element(&mut stream).await.is("proceed", ns::TLS));
        let plain = written.lock().unwrap().clone();
        assert_eq!(
            strict_first_level_names(&plain),
            Ok(vec!["stream:features".to_owned(), "proceed".to_owned()]),
            "{}",
            String::from_utf8_lossy(&plain)
        );
        let io = stream.into_inner();
        let tls = connector
            .connect(name, io)
            .await
            .map_err(|e| e.to_string())?;
        let (tapped, secure) = Tap::new(tls);
        written = secure;
        stream = XmlStream::new(Box::new(tapped), Limits::default());
    }
    stream
        .send_header(&header(claim, "gw.test"), true)
        .await
        .unwrap();
    stream.read_header().await.map_err(|e| e.to_string())?;
    let features = element(&mut stream).await;
    let offered = features
        .get_child("mechanisms", ns::SASL)
        .is_some_and(|m| m.children().any(|c| c.text() == "EXTERNAL"));
    use base64::Engine;
    // "=" is sent as it is: an empty authorization identity (RFC 6120 §6.4.2).
    let encoded = if authzid == "=" {
        authzid.to_owned()
    } else {
        base64::engine::general_purpose::STANDARD.encode(authzid)
    };
    stream
        .send_element(
            &Element::builder("auth", ns::SASL)
                .attr(rxml::xml_ncname!("mechanism").to_owned(), "EXTERNAL")
                .append(encoded.as_str())
                .build(),
        )
        .await
        .unwrap();
    let answer = element(&mut stream).await;
    if !answer.is("success", ns::SASL) {
        let condition = answer
            .children()
            .next()
            .map(|c| c.name().to_owned())
            .unwrap_or_default();
        let written = written.lock().unwrap().clone();
        assert_eq!(
            strict_first_level_names(&written),
            Ok(vec!["stream:features".to_owned(), "failure".to_owned()]),
            "{}",
            String::from_utf8_lossy(&written)
        );
        return Err(format!("offered={offered} failure={condition}"));
    }
    stream.reset();
    stream
        .send_header(&header(claim, "gw.test"), true)
        .await
        .unwrap();
    stream.read_header().await.map_err(|e| e.to_string())?;
    let features = element(&mut stream).await;
    assert!(features.is("features", ns::STREAM));
    let written = written.lock().unwrap().clone();
    assert_eq!(
        strict_first_level_names(&written),
        Ok(vec![
            "stream:features".to_owned(),
            "success".to_owned(),
            "stream:features".to_owned()
        ]),
        "{}",
        String::from_utf8_lossy(&written)
    );
    Ok(stream)
}

#[tokio::test]
async fn starttls_then_sasl_external() {
    let World {
        gateway,
        prosody,
        policy,
    } = world();
    let (ours, theirs) = duplex(64 * 1024);
    let peer = tokio::spawn(async move {
        let mut stream = peer(theirs, prosody, "prosody.test", "prosody.test", false)
            .await
            .unwrap();
        stream
            .send_element(
                &"<message xmlns='jabber:server' from='bob@prosody.test' to='alice@gw.test'><body>hi</body></message>"
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap();
        stream
    });
    let mut authenticated = sasl(
        accept(Box::new(ours), false, &gateway, &policy)
            .await
            .unwrap(),
    );
    assert_eq!(authenticated.peer, "prosody.test");
    assert_eq!(authenticated.local, "gw.test");
    assert_eq!(authenticated.method, AuthMethod::SaslExternal);
    assert!(authenticated.tls_version.is_some());
    let message = element(&mut authenticated.stream).await;
    assert!(message.is("message", ns::JABBER_SERVER));
    drop(peer.await.unwrap());
}

#[tokio::test]
async fn direct_tls_with_the_empty_authorization_identity() {
    let World {
        gateway,
        prosody,
        policy,
    } = world();
    let (ours, theirs) = duplex(64 * 1024);
    let peer = tokio::spawn(peer(theirs, prosody, "prosody.test", "=", true));
    let authenticated = sasl(
        accept(Box::new(ours), true, &gateway, &policy)
            .await
            .unwrap(),
    );
    assert_eq!(authenticated.peer, "prosody.test");
    assert!(peer.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_certificate_for_another_domain_gets_no_external() {
    let World {
        gateway,
        prosody,
        policy,
    } = world();
    let (ours, theirs) = duplex(64 * 1024);
    let peer = tokio::spawn(peer(theirs, prosody, "evil.test", "evil.test", false));
    let server = spawn_accept(ours, gateway, policy);
    let result = peer.await.unwrap();
    assert_eq!(
        result.err().as_deref(),
        Some("offered=false failure=invalid-mechanism")
    );
    server.abort();
}

#[tokio::test]
async fn a_mismatched_authorization_identity_fails() {
    let World {
        gateway,
        prosody,
        policy,
    } = world();
    let (ours, theirs) = duplex(64 * 1024);
    let peer = tokio::spawn(peer(theirs, prosody, "prosody.test", "other.test", false));
    let server = spawn_accept(ours, gateway, policy);
    let result = peer.await.unwrap();
    assert_eq!(
        result.err().as_deref(),
        Some("offered=true failure=invalid-authzid")
    );
    server.abort();
}

#[tokio::test]
async fn our_initiating_side_against_our_receiving_side() {
    let World {
        gateway,
        prosody,
        policy,
    } = world();
    for direct in [false, true] {
        let (ours, theirs) = duplex(64 * 1024);
        // Here "prosody.test" is played by Causeway's initiating side.
        let initiating = prosody_as_causeway(&prosody, theirs, direct);
        let receiving = accept(Box::new(ours), direct, &gateway, &policy);
        let (outbound, inbound) = tokio::join!(initiating, receiving);
        let mut outbound = outbound.unwrap();
        let mut inbound = sasl(inbound.unwrap());
        assert_eq!(
            (outbound.peer.as_str(), inbound.peer.as_str()),
            ("gw.test", "prosody.test")
        );
        outbound
            .stream
            .send_element(
                &"<presence xmlns='jabber:server' from='a@prosody.test' to='b@gw.test'/>"
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(
            element(&mut inbound.stream)
                .await
                .is("presence", ns::JABBER_SERVER)
        );
    }
}

async fn prosody_as_causeway(
    tls: &TlsSettings,
    io: tokio::io::DuplexStream,
    direct: bool,
) -> Result<Authenticated, NegotiationError> {
    let secret = Secret::random();
    let policy = OutboundPolicy {
        tls,
        require_tls: true,
        dialback: false,
        secret: &secret,
        limits: Limits::default(),
    };
    connect(Box::new(io), direct, "prosody.test", "gw.test", &policy).await
}

#[tokio::test]
async fn the_initiating_side_refuses_an_untrusted_peer() {
    // Two worlds, two CAs: neither side trusts the other's certificate.
    let World { prosody, .. } = world();
    let World {
        gateway, policy, ..
    } = world();
    let (ours, theirs) = duplex(64 * 1024);
    let receiving = spawn_accept(ours, gateway, policy);
    let result = prosody_as_causeway(&prosody, theirs, false).await;
    assert!(result.is_err());
    let _ = receiving.await;
}

async fn refused(first: &[u8], policy: InboundPolicy, gateway: TlsSettings) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, mut theirs) = duplex(64 * 1024);
    let server =
        tokio::spawn(async move { accept(Box::new(ours), false, &gateway, &policy).await.err() });
    theirs.write_all(first).await.unwrap();
    let mut reply = Vec::new();
    theirs.read_to_end(&mut reply).await.unwrap();
    assert!(server.await.unwrap().is_some());
    let names = strict_first_level_names(&reply);
    assert_eq!(
        names.as_ref().map(|names| names.last().map(String::as_str)),
        Ok(Some("stream:error")),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    String::from_utf8(reply).unwrap()
}

#[tokio::test]
async fn unknown_hosts_old_versions_and_skipping_tls_are_refused() {
    let open = |to: &str, version: &str| {
        format!(
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
             from='prosody.test' to='{to}' version='{version}'>"
        )
    };
    let World {
        gateway, policy, ..
    } = world();
    let reply = refused(
        open("other.test", "1.0").as_bytes(),
        policy.clone(),
        gateway,
    )
    .await;
    assert!(reply.contains("host-unknown"), "{reply}");
    assert!(
        reply.contains("from='other.test'"),
        "the error stream names the asked domain: {reply}"
    );
    let World {
        gateway, policy, ..
    } = world();
    let reply = refused(open("gw.test", "0.9").as_bytes(), policy.clone(), gateway).await;
    assert!(reply.contains("unsupported-version"), "{reply}");
    let World {
        gateway, policy, ..
    } = world();
    let mut input = open("gw.test", "1.0").into_bytes();
    input.extend_from_slice(b"<message from='bob@prosody.test' to='alice@gw.test'/>");
    let reply = refused(&input, policy, gateway).await;
    assert!(reply.contains("policy-violation"), "{reply}");
}

/// Two servers whose certificates the other does not trust, both allowing dialback.
fn strangers() -> (TlsSettings, TlsSettings, InboundPolicy) {
    let World { gateway, .. } = world();
    let World {
        prosody,
        mut policy,
        ..
    } = world();
    policy.dialback = true;
    (gateway, prosody, policy)
}

/// The receiving side, which must hand the stream over for dialback.
async fn accept_dialback(
    ours: tokio::io::DuplexStream,
    gateway: &TlsSettings,
    policy: &InboundPolicy,
) -> DialbackStream {
    match accept(Box::new(ours), false, gateway, policy).await {
        Ok(Accepted::Dialback(inbound)) => inbound,
        Ok(Accepted::Sasl(_)) => panic!("expected dialback, got SASL EXTERNAL"),
        Err(error) => panic!("expected dialback, got {error}"),
    }
}

/// The receiving side hands the peer's first dialback element over; answering it completes
/// the initiating side's dialback.
#[tokio::test]
async fn dialback_over_tls_when_certificates_do_not_verify() {
    let (gateway, prosody, policy) = strangers();
    let secret = Secret::random();
    let (ours, theirs) = duplex(64 * 1024);
    let initiating = tokio::spawn(async move {
        let policy = dialback_policy(&prosody, &secret);
        let outcome = connect(Box::new(theirs), false, "prosody.test", "gw.test", &policy).await;
        (outcome, secret)
    });
    let mut inbound = accept_dialback(ours, &gateway, &policy).await;
    assert_eq!(inbound.local, "gw.test");
    assert!(inbound.tls_version.is_some(), "dialback runs over TLS");
    let request = Dialback::parse(&element(&mut inbound.stream).await).unwrap();
    assert_eq!(request.kind, Kind::Result);
    assert_eq!(
        (request.from.as_str(), request.to.as_str()),
        ("prosody.test", "gw.test")
    );
    // Prosody puts an id on its answer to <db:result/>; it is still the answer.
    let mut answer = request.answer(Outcome::Valid);
    answer.id = Some("prosody-style".into());
    inbound.stream.send_raw(&answer.to_bytes()).await.unwrap();
    let (outcome, secret) = initiating.await.unwrap();
    let outbound = outcome.unwrap();
    assert_eq!(outbound.method, AuthMethod::Dialback);
    assert_eq!(
        outbound.stream_id.as_deref(),
        Some(inbound.stream_id.as_str())
    );
    // The key is the one the initiating server's secret gives for this stream.
    let key = request.key.unwrap();
    assert!(secret.verifies(&key, "gw.test", "prosody.test", &inbound.stream_id));
    assert!(!secret.verifies(&key, "gw.test", "prosody.test", "another-stream"));
}

#[tokio::test]
async fn refused_dialback_fails_the_initiating_side() {
    for (outcome, expected) in [
        (Outcome::Invalid, "the peer found our dialback key invalid"),
        (
            Outcome::Error(DialbackError::RemoteServerTimeout),
            "dialback failed: remote-server-timeout",
        ),
    ] {
        let (gateway, prosody, policy) = strangers();
        let (ours, theirs) = duplex(64 * 1024);
        let initiating = tokio::spawn(async move {
            let secret = Secret::random();
            let policy = dialback_policy(&prosody, &secret);
            connect(Box::new(theirs), false, "prosody.test", "gw.test", &policy)
                .await
                .err()
                .map(|error| error.to_string())
        });
        let mut inbound = accept_dialback(ours, &gateway, &policy).await;
        let request = Dialback::parse(&element(&mut inbound.stream).await).unwrap();
        // Answers to other requests are not taken for this one.
        let mut unrelated = request.answer(Outcome::Valid);
        unrelated.id = Some("another".into());
        unrelated.kind = Kind::Verify;
        inbound
            .stream
            .send_raw(&unrelated.to_bytes())
            .await
            .unwrap();
        inbound
            .stream
            .send_raw(&request.answer(outcome).to_bytes())
            .await
            .unwrap();
        assert_eq!(initiating.await.unwrap().as_deref(), Some(expected));
    }
}

#[tokio::test]
async fn without_dialback_an_untrusted_peer_is_refused_by_both_sides() {
    let (gateway, prosody, mut policy) = strangers();
    policy.dialback = false;
    let (ours, theirs) = duplex(64 * 1024);
    let receiving = spawn_accept(ours, gateway, policy);
    let secret = Secret::random();
    let mut outbound = dialback_policy(&prosody, &secret);
    outbound.dialback = false;
    let refused = connect(
        Box::new(theirs),
        false,
        "prosody.test",
        "gw.test",
        &outbound,
    )
    .await;
    assert!(
        matches!(
            &refused,
            Err(NegotiationError::Connection(ConnectionError::Violation(error)))
                if error.condition == StreamErrorCondition::PolicyViolation
        ),
        "{:?}",
        refused.err()
    );
    assert!(receiving.await.unwrap().is_err());
}

/// A verification request goes to the authoritative server on a connection of its own, and
/// its answer comes back; an answer for another stream id is not taken for it.
#[tokio::test]
async fn verification_with_the_authoritative_server() {
    for valid in [true, false] {
        let (gateway, prosody, policy) = strangers();
        let (ours, theirs) = duplex(64 * 1024);
        let authoritative = tokio::spawn(async move {
            let mut inbound = accept_dialback(ours, &gateway, &policy).await;
            let request = Dialback::parse(&element(&mut inbound.stream).await).unwrap();
            let mut other = request.answer(Outcome::Valid);
            other.id = Some("another".into());
            inbound.stream.send_raw(&other.to_bytes()).await.unwrap();
            let outcome = if valid {
                Outcome::Valid
            } else {
                Outcome::Invalid
            };
            inbound
                .stream
                .send_raw(&request.answer(outcome).to_bytes())
                .await
                .unwrap();
            let _ = inbound.stream.next().await;
            request
        });
        let secret = Secret::random();
        let outcome = verify(
            Box::new(theirs),
            false,
            "prosody.test",
            "gw.test",
            "stream-1",
            "abcd",
            &dialback_policy(&prosody, &secret),
        )
        .await
        .unwrap();
        let request = authoritative.await.unwrap();
        assert_eq!(request.kind, Kind::Verify);
        assert_eq!(request.id.as_deref(), Some("stream-1"));
        assert_eq!(request.key.as_deref(), Some("abcd"));
        assert_eq!(
            (request.from.as_str(), request.to.as_str()),
            ("prosody.test", "gw.test")
        );
        let expected = if valid {
            Outcome::Valid
        } else {
            Outcome::Invalid
        };
        assert_eq!(outcome, expected);
    }
}

#[tokio::test]
async fn dialback_without_tls_only_when_tls_is_optional() {
    let open = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
        xmlns:db='jabber:server:dialback' from='prosody.test' to='gw.test' version='1.0'>\
        <db:result from='prosody.test' to='gw.test'>abcd</db:result>";
    // TLS required: only STARTTLS is offered, and plaintext dialback is a policy violation.
    let (gateway, _, policy) = strangers();
    let reply = refused(open.as_bytes(), policy, gateway).await;
    assert!(reply.contains("<required"), "{reply}");
    assert!(!reply.contains(ns::DIALBACK_FEATURE), "{reply}");
    assert!(reply.contains("policy-violation"), "{reply}");
    // TLS optional but no dialback: not authorized.
    let (gateway, _, mut policy) = strangers();
    policy.require_tls = false;
    policy.dialback = false;
    let reply = refused(open.as_bytes(), policy, gateway).await;
    assert!(reply.contains("not-authorized"), "{reply}");
    // Both optional: the stream goes on with dialback, its element kept for the service.
    let (gateway, _, mut policy) = strangers();
    policy.require_tls = false;
    let (ours, mut theirs) = duplex(64 * 1024);
    use tokio::io::AsyncWriteExt;
    theirs.write_all(open.as_bytes()).await.unwrap();
    let mut inbound = accept_dialback(ours, &gateway, &policy).await;
    assert_eq!(inbound.tls_version, None);
    let request = Dialback::parse(&element(&mut inbound.stream).await).unwrap();
    assert_eq!(request.key.as_deref(), Some("abcd"));
}

/// A receiving server like ejabberd in dialback mode: it offers SASL EXTERNAL before it checks
/// the certificate, refuses it, and then takes dialback on the same stream. Causeway's
/// initiating side falls back to dialback, and writes every element as a prefix-strict reader
/// expects (`<db:result>`).
#[tokio::test]
async fn a_refused_external_falls_back_to_dialback_on_the_same_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gateway, prosody, _) = strangers();
    let secret = Secret::random();
    let (ours, theirs) = duplex(64 * 1024);
    let initiating = tokio::spawn(async move {
        let policy = dialback_policy(&prosody, &secret);
        connect(Box::new(ours), true, "prosody.test", "gw.test", &policy).await
    });
    // The receiving side, by hand, over direct TLS.
    let mut tls = gateway.acceptor().accept(theirs).await.unwrap();
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    async fn until<S: AsyncReadExt + Unpin>(
        io: &mut S,
        read: &mut Vec<u8>,
        buffer: &mut [u8],
        needle: &str,
    ) {
        while !String::from_utf8_lossy(read).contains(needle) {
            let n = io.read(buffer).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle}: {}",
                String::from_utf8_lossy(read)
            );
            read.extend_from_slice(&buffer[..n]);
        }
    }
    until(&mut tls, &mut read, &mut buffer, "<stream:stream").await;
    tls.write_all(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
          xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
          id='ejabberd-stream-1' from='gw.test' to='prosody.test' version='1.0'>\
          <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
          <mechanism>EXTERNAL</mechanism></mechanisms>\
          <dialback xmlns='urn:xmpp:features:dialback'/></stream:features>",
    )
    .await
    .unwrap();
    until(&mut tls, &mut read, &mut buffer, "</auth>").await;
    tls.write_all(
        b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>\
          <text>unable to verify the first certificate</text></failure>",
    )
    .await
    .unwrap();
    until(&mut tls, &mut read, &mut buffer, "</db:result>").await;
    tls.write_all(b"<db:result from='gw.test' to='prosody.test' type='valid'/>")
        .await
        .unwrap();
    let outbound = initiating.await.unwrap().unwrap();
    assert_eq!(outbound.method, AuthMethod::Dialback);
    assert_eq!(outbound.stream_id.as_deref(), Some("ejabberd-stream-1"));
    let sent = String::from_utf8(read).unwrap();
    assert_eq!(
        strict_first_level_names(sent.as_bytes()),
        Ok(vec!["auth".to_owned(), "db:result".to_owned()]),
        "{sent}"
    );
}

/// Without dialback allowed, a refused EXTERNAL ends the attempt with the peer's condition.
#[tokio::test]
async fn a_refused_external_without_dialback_fails() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Certificates that verify both ways, and a peer that refuses EXTERNAL all the same.
    let World {
        gateway, prosody, ..
    } = world();
    let secret = Secret::random();
    let (ours, theirs) = duplex(64 * 1024);
    let initiating = tokio::spawn(async move {
        let mut policy = dialback_policy(&prosody, &secret);
        policy.dialback = false;
        connect(Box::new(ours), true, "prosody.test", "gw.test", &policy).await
    });
    let mut tls = gateway.acceptor().accept(theirs).await.unwrap();
    let mut buffer = [0u8; 4096];
    let mut read = Vec::new();
    while !String::from_utf8_lossy(&read).contains("<stream:stream") {
        let n = tls.read(&mut buffer).await.unwrap();
        assert!(n > 0);
        read.extend_from_slice(&buffer[..n]);
    }
    tls.write_all(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
          xmlns:stream='http://etherx.jabber.org/streams' id='s2' from='gw.test' \
          to='prosody.test' version='1.0'><stream:features>\
          <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism>\
          </mechanisms><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>",
    )
    .await
    .unwrap();
    while !String::from_utf8_lossy(&read).contains("</auth>") {
        let n = tls.read(&mut buffer).await.unwrap();
        assert!(n > 0);
        read.extend_from_slice(&buffer[..n]);
    }
    tls.write_all(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;
    let error = initiating
        .await
        .unwrap()
        .err()
        .expect("the attempt must fail");
    assert!(error.to_string().contains("SASL not-authorized"), "{error}");
    assert!(!String::from_utf8_lossy(&rest).contains("db:result"));
}

/// A peer never authenticates as one of our own domains, whatever certificate it holds: the
/// stream ends with invalid-from as soon as its header says so.
#[tokio::test]
async fn a_peer_claiming_one_of_our_domains_is_refused() {
    for claim in ["gw.test", "MUC.gw.test"] {
        let World {
            gateway, policy, ..
        } = world();
        let header = format!(
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns:db='jabber:server:dialback' from='{claim}' to='gw.test' version='1.0'>"
        );
        let reply = refused(header.as_bytes(), policy, gateway).await;
        assert!(reply.contains("<invalid-from"), "{reply}");
        assert!(!reply.contains("starttls"), "nothing is offered: {reply}");
    }
}
