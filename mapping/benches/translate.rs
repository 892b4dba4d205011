//! Translations per second of typical messages in both directions: a short plain message, a
//! styled one, a reply with a mention, and a correction; from XMPP stanzas to Matrix event
//! content (JSON) and from Matrix event content to XMPP stanzas (XML).
//!
//! Run: `cargo bench -p causeway-mapping --bench translate` (size: `TRANSLATE_BENCH_ROUNDS`).

use std::hint::black_box;
use std::time::Instant;

use causeway_mapping::Gateway;
use causeway_mapping::content::message::{self, ReplyRef, ToXmppRefs};
use minidom::Element;
use ruma::events::room::message::{Relation, RoomMessageEventContent};
use xmpp_parsers::message::Message;

fn stanza(inner: &str) -> Message {
    let xml = format!(
        "<message xmlns='jabber:client' type='chat' id='m1' from='bob@prosody.test/phone' \
         to='alice@example.org'>{inner}</message>"
    );
    let element: Element = xml.parse().expect("XML");
    Message::try_from(element).expect("a message")
}

fn rounds() -> usize {
    std::env::var("TRANSLATE_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000)
}

fn measure(name: &str, rounds: usize, mut run: impl FnMut()) {
    for _ in 0..rounds / 10 {
        run();
    }
    let start = Instant::now();
    for _ in 0..rounds {
        run();
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{name:<48} {:>10.0} translations/s ({:.1} µs each)",
        rounds as f64 / elapsed,
        elapsed * 1e6 / rounds as f64
    );
}

fn main() {
    let gateway = Gateway::new(
        ruma::OwnedServerName::try_from("example.org").expect("server name"),
        "muc.example.org",
    )
    .expect("gateway");
    let rounds = rounds();

    let xmpp_cases = [
        (
            "XMPP → Matrix: plain",
            stanza(
                "<body>See you at the station at noon.</body><active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/>",
            ),
        ),
        (
            "XMPP → Matrix: styled",
            stanza("<body>This is *really* important, see _the notes_ and `make test`.</body>"),
        ),
        (
            "XMPP → Matrix: reply with a mention",
            stanza(
                "<body>&gt; Alice:\n&gt; lunch?\nYes Alice, at noon</body><reply xmlns='urn:xmpp:reply:0' id='o1'/><fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='18'/></fallback><reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:alice@example.org' begin='22' end='27'/>",
            ),
        ),
        (
            "XMPP → Matrix: correction",
            stanza(
                "<body>See you at the station at one.</body><replace xmlns='urn:xmpp:message-correct:0' id='m0'/>",
            ),
        ),
    ];
    for (name, stanza) in &xmpp_cases {
        measure(name, rounds, || {
            let read = message::from_xmpp(black_box(stanza), &gateway);
            if let Some(content) = read.content {
                let content = message::matrix_content(content, None, None);
                black_box(serde_json::to_vec(&content).expect("JSON"));
            }
        });
    }

    let mut reply = RoomMessageEventContent::text_html(
        "> <@bob:example.org> lunch?\n\nYes Bob, at noon",
        "<a href=\"https://matrix.to/#/@_xmpp_bob=40prosody.test:example.org\">Bob</a>, yes, at <em>noon</em>",
    );
    reply.relates_to = Some(Relation::Reply(
        ruma::events::relation::Reply::with_event_id(ruma::owned_event_id!("$o1:example.org")),
    ));
    let reply_refs = ToXmppRefs {
        reply: Some(ReplyRef {
            id: "o1".into(),
            to: None,
            author: "Bob".into(),
            text: "lunch?".into(),
        }),
        replaces: None,
    };
    let matrix_cases = [
        (
            "Matrix → XMPP: plain",
            RoomMessageEventContent::text_plain("See you at the station at noon."),
            ToXmppRefs::default(),
        ),
        (
            "Matrix → XMPP: formatted",
            RoomMessageEventContent::text_html(
                "This is **really** important",
                "<p>This is <strong>really</strong> important, see <a href=\"https://example.org/notes\">the notes</a>:</p><ul><li>one</li><li>two</li></ul>",
            ),
            ToXmppRefs::default(),
        ),
        ("Matrix → XMPP: reply with a mention", reply, reply_refs),
    ];
    for (name, content, refs) in &matrix_cases {
        measure(name, rounds, || {
            let out = message::to_xmpp(black_box(content), refs, &gateway).expect("text");
            let element = Element::from(out.value);
            let mut bytes = Vec::new();
            element.write_to(&mut bytes).expect("XML");
            black_box(bytes);
        });
    }
}
