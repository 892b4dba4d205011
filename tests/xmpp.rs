//! The XMPP side as `causeway serve` starts it from the configuration: certificate and CA
//! files, listeners, fixed routes, and the server's answers to a peer that authenticated with
//! its certificate.

// The certificate helpers above the tests unwrap like the tests do.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use causeway_config::{Config, ServerName, XmppRoute};
use causeway_xmpp::server::Endpoint;
use causeway_xmpp::stanza::Stanza;
use causeway_xmpp::testing::TestCa;
use xmpp_parsers::iq::Iq;

#[tokio::test]
async fn the_configured_server_answers_an_authenticated_peer() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Causeway test CA");
    let gateway = ca.leaf(&["gw.test", "chat.gw.test"]);
    std::fs::write(dir.path().join("gw.crt"), gateway.cert_pem).unwrap();
    std::fs::write(dir.path().join("gw.key"), gateway.key_pem).unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca.root_pem()).unwrap();

    // The peer, playing prosody.test, listens first so that the gateway can route to it.
    let (peer, mut seen) = common::peer::start(&ca, "prosody.test").await;
    let peer_address = peer.local_addresses()[0].0;

    let mut config = Config::default();
    config.server.name = ServerName::try_from("gw.test").unwrap();
    config.server.data_dir = dir.path().join("data");
    config.xmpp.muc_domain = Some("chat.gw.test".into());
    let gateway_address = common::peer::free_address();
    config.xmpp.listen_starttls = vec![gateway_address];
    config.xmpp.listen_direct_tls = vec![];
    config.xmpp.tls_certificate = Some(dir.path().join("gw.crt"));
    config.xmpp.tls_private_key = Some(dir.path().join("gw.key"));
    config.xmpp.ca_files = vec![dir.path().join("ca.crt")];
    config.xmpp.system_roots = false;
    config.xmpp.routes = vec![XmppRoute {
        domain: "prosody.test".into(),
        address: peer_address,
        direct_tls: false,
    }];
    let services = causeway_matrix::Services::start(config.clone())
        .await
        .unwrap();
    let gateway = causeway::xmpp::start(&config, services).await.unwrap();
    for domain in ["gw.test", "chat.gw.test"] {
        peer.set_route(
            domain,
            vec![Endpoint {
                address: gateway_address,
                direct_tls: false,
            }],
        );
    }

    // The server's own domain answers service discovery as a server.
    let disco = |to: &str, id: &str| {
        let iq: minidom::Element = format!(
            "<iq xmlns='jabber:server' type='get' id='{id}' \
             from='bob@prosody.test/phone' to='{to}'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        )
        .parse()
        .unwrap();
        causeway_xmpp::stanza::accept_inbound(iq, |_| true, |_| true).expect("a valid stanza")
    };
    peer.send(disco("gw.test", "disco-server"));
    let answer = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("an answer in time")
        .unwrap();
    let Stanza::Iq(Iq::Result {
        id,
        from,
        payload: Some(payload),
        ..
    }) = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!(id, "disco-server");
    assert_eq!(from.unwrap().to_string(), "gw.test");
    let info = xmpp_parsers::disco::DiscoInfoResult::try_from(payload).unwrap();
    assert_eq!(info.identities[0].category, "server");
    // The configured MUC domain is ours too: its MUC service answers.
    peer.send(disco("chat.gw.test", "disco-muc"));
    let answer = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("an answer in time")
        .unwrap();
    let Stanza::Iq(Iq::Result {
        id,
        from,
        payload: Some(payload),
        ..
    }) = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!(id, "disco-muc");
    assert_eq!(from.unwrap().to_string(), "chat.gw.test");
    let info = xmpp_parsers::disco::DiscoInfoResult::try_from(payload).unwrap();
    assert_eq!(info.identities[0].category, "conference");
    assert!(info.features.contains("http://jabber.org/protocol/muc"));
    drop(gateway);
}

#[test]
fn xmpp_configuration_is_checked() {
    let error = causeway_config::parse("[xmpp]\ntls_certificate = \"a.pem\"\n").unwrap_err();
    assert_eq!(error.key(), Some("xmpp.tls_private_key"));
    let error = causeway_config::parse("[xmpp]\nmuc_domain = \"not a domain\"\n").unwrap_err();
    assert_eq!(error.key(), Some("xmpp.muc_domain"));
    let error = causeway_config::parse("[xmpp]\nmax_stanza_bytes = 100\n").unwrap_err();
    assert_eq!(error.key(), Some("xmpp.max_stanza_bytes"));
    let config = causeway_config::parse(
        "[server]\nname = \"example.org:8448\"\n[[xmpp.routes]]\ndomain = \"x.example\"\n\
         address = \"192.0.2.1:5270\"\ndirect_tls = true\n",
    )
    .unwrap();
    assert_eq!(config.muc_domain(), "muc.example.org");
    assert!(config.xmpp.routes[0].direct_tls);
    let error = causeway_config::parse("[[xmpp.routes]]\ndomain = \"x\"\n").unwrap_err();
    assert!(error.key().unwrap().starts_with("xmpp.routes"), "{error}");
}

/// Without a configured certificate, one is generated and kept; its private key is readable by
/// its owner only.
#[cfg(unix)]
#[tokio::test]
async fn a_generated_private_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.name = ServerName::try_from("gw.test").unwrap();
    config.server.data_dir = dir.path().join("data");
    config.xmpp.listen_starttls = vec![common::peer::free_address()];
    config.xmpp.listen_direct_tls = vec![];
    config.xmpp.system_roots = false;
    let services = causeway_matrix::Services::start(config.clone())
        .await
        .unwrap();
    let gateway = causeway::xmpp::start(&config, services).await.unwrap();
    let key = config.server.data_dir.join("xmpp.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());
    let certificate = std::fs::read_to_string(config.server.data_dir.join("xmpp.crt")).unwrap();
    assert!(certificate.starts_with("-----BEGIN CERTIFICATE-----"));
    drop(gateway);
    // A key file that exists with a wider mode is made private when written again.
    let other = dir.path().join("other.key");
    std::fs::write(&other, "old").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    causeway::write_private(&other, b"new").unwrap();
    assert_eq!(
        std::fs::metadata(&other).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "new");
}
