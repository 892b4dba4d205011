//! The XMPP side as `causeway serve` starts it from the configuration: certificate and CA
//! files, listeners, fixed routes, and the server's answers to a peer that authenticated with
//! its certificate.

// The certificate helpers above the tests unwrap like the tests do.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use causeway_config::{Config, ServerName, XmppRoute};
use causeway_xmpp::server::{Endpoint, S2s, S2sConfig, StanzaHandler};
use causeway_xmpp::stanza::Stanza;
use causeway_xmpp::stream::Limits;
use causeway_xmpp::testing::TestCa;
use causeway_xmpp::tls::TlsSettings;
use tokio::sync::mpsc;
use xmpp_parsers::iq::Iq;

struct Recorder(mpsc::UnboundedSender<Stanza>);

impl StanzaHandler for Recorder {
    fn handle(&self, stanza: Stanza) -> Pin<Box<dyn Future<Output = Vec<Stanza>> + Send + '_>> {
        let _ = self.0.send(stanza);
        Box::pin(async { vec![] })
    }
}

fn free_address() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

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
    let peer_tls =
        TlsSettings::new(vec![ca.identity(&["prosody.test"])], vec![ca.root()], false).unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let peer = S2s::start(
        S2sConfig {
            domains: vec!["prosody.test".into()],
            listen_starttls: vec!["127.0.0.1:0".parse().unwrap()],
            listen_direct_tls: vec![],
            routes: HashMap::new(),
            require_tls: true,
            dialback: false,
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            domain_policy: Default::default(),
            max_stanzas_per_second: 1000,
            nameservers: vec![],
        },
        Arc::new(peer_tls),
        Arc::new(Recorder(seen_tx)),
    )
    .await
    .unwrap();
    let peer_address = peer.local_addresses()[0].0;

    let mut config = Config::default();
    config.server.name = ServerName::try_from("gw.test").unwrap();
    config.server.data_dir = dir.path().join("data");
    config.xmpp.muc_domain = Some("chat.gw.test".into());
    let gateway_address = free_address();
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
    let gateway = causeway::xmpp::start(&config).await.unwrap();
    peer.set_route(
        "chat.gw.test",
        vec![Endpoint {
            address: gateway_address,
            direct_tls: false,
        }],
    );

    let iq: minidom::Element = "<iq xmlns='jabber:server' type='get' id='disco' \
        from='bob@prosody.test/phone' to='chat.gw.test'>\
        <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        .parse()
        .unwrap();
    let stanza =
        causeway_xmpp::stanza::accept_inbound(iq, |_| true, |_| true).expect("a valid stanza");
    peer.send(stanza);
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
    assert_eq!(id, "disco");
    assert_eq!(from.unwrap().to_string(), "chat.gw.test");
    let info = xmpp_parsers::disco::DiscoInfoResult::try_from(payload).unwrap();
    assert_eq!(info.identities[0].category, "conference");
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
