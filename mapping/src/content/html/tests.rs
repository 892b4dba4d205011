//! Tests of the Matrix HTML sanitiser and its conversion to styled text.

use super::*;
use proptest::prelude::*;

#[test]
fn the_sanitiser_keeps_the_allowed_subset() {
    for (input, expected) in [
        ("<b>bold</b> <i>it</i>", "<b>bold</b> <i>it</i>"),
        ("<script>alert(1)</script>text", "text"),
        (
            "<style>p{}</style><p onclick=\"x()\" style=\"color:red\">p</p>",
            "<p>p</p>",
        ),
        (
            "<a href=\"https://example.org/\" onmouseover=\"x()\">l</a>",
            "<a href=\"https://example.org/\" rel=\"noopener\">l</a>",
        ),
        (
            "<a href=\"javascript:alert(1)\">l</a>",
            "<a rel=\"noopener\">l</a>",
        ),
        ("<a href=\"/relative\">l</a>", "<a rel=\"noopener\">l</a>"),
        (
            "<img src=\"https://tracker.example/x.png\" alt=\"a\">",
            "<img alt=\"a\">",
        ),
        (
            "<img src=\"mxc://example.org/abc\" width=\"10\" height=\"x\">",
            "<img src=\"mxc://example.org/abc\" width=\"10\">",
        ),
        (
            "<code class=\"language-rust evil\">x</code>",
            "<code class=\"language-rust\">x</code>",
        ),
        ("<code class=\"evil\">x</code>", "<code>x</code>"),
        (
            "<span data-mx-color=\"#ff0000\" data-mx-bg-color=\"red\">c</span>",
            "<span data-mx-color=\"#ff0000\">c</span>",
        ),
        (
            "<mx-reply><blockquote>quoted</blockquote></mx-reply>answer",
            "answer",
        ),
        (
            "<iframe src=\"https://x\"></iframe><marquee>m</marquee>",
            "m",
        ),
        ("<!-- comment -->c", "c"),
        (
            "<ol start=\"3\"><li>three</li></ol>",
            "<ol start=\"3\"><li>three</li></ol>",
        ),
        ("<b>unclosed <i>tags", "<b>unclosed <i>tags</i></b>"),
        // Line breaks right after <pre> go: each reading would drop one.
        ("<pre>\n\n\nx\n</pre>", "<pre>x\n</pre>"),
    ] {
        assert_eq!(sanitize(input), expected, "{input}");
    }
}

#[test]
fn html_as_styled_text() {
    for (html, text) in [
        ("plain", "plain"),
        ("<strong>bold</strong> and <em>it</em>", "*bold* and _it_"),
        ("<b> spaced </b>word", "*spaced* word"),
        ("a<b> spaced </b>word", "a *spaced* word"),
        (
            "<del>gone</del> <s>too</s> <code>x = 1</code>",
            "~gone~ ~too~ `x = 1`",
        ),
        ("<p>one</p><p>two</p>", "one\ntwo"),
        ("line<br>break", "line\nbreak"),
        (
            "<blockquote><p>quoted</p><p>twice</p></blockquote>answer",
            "> quoted\n> twice\nanswer",
        ),
        (
            "<blockquote><blockquote>deep</blockquote>shallow</blockquote>",
            "> > deep\n> shallow",
        ),
        (
            "<pre><code>fn main() {\n    x();\n}\n</code></pre>",
            "```\nfn main() {\n    x();\n}\n```",
        ),
        ("<ul><li>a</li><li>b</li></ul>", "• a\n• b"),
        (
            "<ol start=\"3\"><li>c</li><li>d<br>more</li></ol>",
            "3. c\n4. d\n   more",
        ),
        ("<h1>Title</h1>text", "*Title*\ntext"),
        (
            "<a href=\"https://example.org/\">https://example.org/</a>",
            "https://example.org/",
        ),
        (
            "<a href=\"https://example.org/\">site</a>",
            "site <https://example.org/>",
        ),
        (
            "<a href=\"https://matrix.to/#/@alice:example.org\">Alice</a>: hi",
            "Alice: hi",
        ),
        ("a &amp; b &lt;c&gt; &quot;d&quot;", "a & b <c> \"d\""),
        ("x\n  y", "x y"),
        (
            "<mx-reply><blockquote>old</blockquote></mx-reply>new",
            "new",
        ),
    ] {
        let converted = to_styled_text(html);
        assert_eq!(converted.value, text, "{html}");
        assert!(
            converted.dropped.is_empty(),
            "{html}: {:?}",
            converted.dropped
        );
    }
}

#[test]
fn what_styling_cannot_say_is_reported() {
    for (html, text, dropped) in [
        ("<u>under</u>", "under", Dropped::Underline),
        (
            "<span data-mx-color=\"#ff0000\">red</span>",
            "red",
            Dropped::Colour,
        ),
        ("x<sup>2</sup>", "x2", Dropped::Script),
        (
            "<img src=\"mxc://a/b\" alt=\"a cat\">",
            "a cat",
            Dropped::Image,
        ),
        ("<img src=\"mxc://a/b\">", "[image]", Dropped::Image),
        (
            "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>",
            "a\tb\n1\t2",
            Dropped::Table,
        ),
        (
            "<span data-mx-spoiler>secret</span>",
            "secret",
            Dropped::Spoiler,
        ),
    ] {
        assert_eq!(
            to_styled_text(html),
            Lossy {
                value: text.to_owned(),
                dropped: vec![dropped]
            },
            "{html}"
        );
    }
}

#[test]
fn nesting_beyond_the_limit_keeps_the_text() {
    let html = format!("{}deep{}", "<span>".repeat(500), "</span>".repeat(500));
    assert_eq!(to_styled_text(&html).value, "deep");
    let html = format!(
        "{}deep{}",
        "<blockquote>".repeat(150),
        "</blockquote>".repeat(150)
    );
    let text = to_styled_text(&html).value;
    assert!(text.ends_with("deep"), "{text}");
    assert_eq!(text.matches("> ").count(), MAX_DEPTH);
}

#[test]
fn xhtml_im_becomes_matrix_html() {
    let html: Element = "<html xmlns='http://jabber.org/protocol/xhtml-im'>\
        <body xmlns='http://www.w3.org/1999/xhtml'>\
        <p style='font-weight: bold'>Hi <span style='font-style:italic;color:red'>there</span></p>\
        <p><a href='https://example.org/' onclick='x()'>link</a><img src='https://x/y.png' alt='pic'/></p>\
        <script>alert(1)</script></body></html>"
        .parse()
        .unwrap();
    assert_eq!(
        xhtml_im_to_html(&html).as_deref(),
        Some(
            "<p><strong>Hi <span><em>there</em></span></strong></p>\
             <p><a href=\"https://example.org/\" rel=\"noopener\">link</a><img alt=\"pic\"></p>"
        )
    );
    let other: Element = "<html xmlns='urn:other'/>".parse().unwrap();
    assert_eq!(xhtml_im_to_html(&other), None);
}

fn html_fragment() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z <>&\"'=/]{0,12}",
        Just("<script>alert(1)</script>".to_owned()),
        Just("<img src=x onerror=alert(1)>".to_owned()),
        Just("<a href=\"javascript:x()\">j</a>".to_owned()),
        Just("<style>*{}</style>".to_owned()),
        Just("&amp;&lt;&#x3c;&#60;&nbsp;&bogus;".to_owned()),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        (
            prop_oneof![
                Just("b"),
                Just("i"),
                Just("p"),
                Just("blockquote"),
                Just("pre"),
                Just("code"),
                Just("ul"),
                Just("li"),
                Just("a"),
                Just("span"),
                Just("script"),
                Just("div"),
                Just("table"),
                Just("tr"),
                Just("td"),
                Just("mx-reply"),
                Just("svg"),
            ],
            prop_oneof![
                Just(""),
                Just(" onclick=\"x()\""),
                Just(" style=\"color:red\""),
                Just(" href=\"https://example.org/\""),
                Just(" data-mx-spoiler"),
                Just(" class=\"language-rust\""),
            ],
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(tag, attribute, children)| {
                format!("<{tag}{attribute}>{}</{tag}>", children.concat())
            })
    })
}

proptest! {
    /// Sanitising twice changes nothing, and nothing executable survives.
    #[test]
    fn sanitising_is_idempotent_and_safe(html in html_fragment()) {
        let once = sanitize(&html);
        prop_assert_eq!(sanitize(&once), once.clone());
        let lower = once.to_ascii_lowercase();
        for forbidden in ["<script", "<style", "onclick", "onerror", "style=", "javascript:", "<svg", "<mx-reply"] {
            prop_assert!(!lower.contains(forbidden), "{} in {}", forbidden, once);
        }
    }

    /// Any HTML converts to text without panicking, and with no markup left in it.
    #[test]
    fn any_html_converts(html in html_fragment()) {
        let text = to_styled_text(&html).value;
        prop_assert!(!text.contains("<script"), "{}", text);
    }

    #[test]
    fn arbitrary_input_converts(html in "\\PC{0,200}") {
        let _ = to_styled_text(&html);
    }

    /// Styled text → HTML → styled text gives the text back, for text whose spaces and lines
    /// HTML keeps.
    #[test]
    fn styling_round_trips_through_html(
        words in prop::collection::vec(("[a-z]{1,6}", 0..5usize), 1..12),
        quote in any::<bool>(),
    ) {
        let mut text = String::new();
        for (index, (word, style)) in words.iter().enumerate() {
            if index > 0 {
                text.push(' ');
            }
            match style {
                1 => text.push_str(&format!("*{word}*")),
                2 => text.push_str(&format!("_{word}_")),
                3 => text.push_str(&format!("~{word}~")),
                4 => text.push_str(&format!("`{word}`")),
                _ => text.push_str(word),
            }
        }
        if quote {
            text = format!("> {text}\nafter");
        }
        if let Some(html) = crate::content::styling::to_html(&text) {
            prop_assert_eq!(to_styled_text(&html).value, text);
        }
    }
}
