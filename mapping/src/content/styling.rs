//! XEP-0393 message styling: parsed into blocks and spans, and written as Matrix HTML.
//!
//! The parser follows the XEP: blocks first (preformatted blocks between lines of three grave
//! accents, quotations of lines starting with `>`, plain lines), then spans inside plain lines
//! (`*strong*`, `_emphasis_`, `~strike~`, `` `preformatted` ``), lazily matched, never across
//! lines; directives that break the rules are plain text.

use super::html::escape_text;

/// A span of styled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    Plain(String),
    Strong(Vec<Span>),
    Emphasis(Vec<Span>),
    Strike(Vec<Span>),
    /// A preformatted span: its text is not styled further.
    Pre(String),
}

/// A block of styled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// One line of spans.
    Line(Vec<Span>),
    /// Lines of text shown as they are.
    Pre(Vec<String>),
    Quote(Vec<Block>),
}

fn directive(character: char) -> bool {
    matches!(character, '*' | '_' | '~' | '`')
}

/// XEP-0393 whitespace: the White_Space property (Rust's `char::is_whitespace`).
fn space(character: char) -> bool {
    character.is_whitespace()
}

/// Parses the spans of one line. `opener` is the directive whose span this is the inside of:
/// at its start, only a different directive may open a span.
fn spans(text: &[char], opener: Option<char>) -> Vec<Span> {
    let mut result = Vec::new();
    let mut plain = String::new();
    let mut at = 0;
    while at < text.len() {
        let character = text[at];
        let may_open = directive(character)
            && match at {
                0 => opener != Some(character),
                _ => space(text[at - 1]),
            }
            && text.get(at + 1).is_some_and(|next| !space(*next));
        let closing = may_open
            .then(|| {
                (at + 2..text.len()).find(|&end| {
                    text[end] == character
                        && !space(text[end - 1])
                        && text[at + 1..end].iter().any(|inner| *inner != character)
                })
            })
            .flatten();
        let Some(end) = closing else {
            plain.push(character);
            at += 1;
            continue;
        };
        if !plain.is_empty() {
            result.push(Span::Plain(std::mem::take(&mut plain)));
        }
        let inner = &text[at + 1..end];
        result.push(match character {
            '`' => Span::Pre(inner.iter().collect()),
            '*' => Span::Strong(spans(inner, Some('*'))),
            '_' => Span::Emphasis(spans(inner, Some('_'))),
            _ => Span::Strike(spans(inner, Some('~'))),
        });
        at = end + 1;
    }
    if !plain.is_empty() {
        result.push(Span::Plain(plain));
    }
    result
}

/// Parses styled text into blocks.
pub fn parse(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.split('\n').collect();
    blocks(&lines)
}

fn blocks(lines: &[&str]) -> Vec<Block> {
    let mut result = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        let line = lines[at];
        if line.starts_with("```") {
            // Until a line of exactly three grave accents, or the end of the parent block.
            let end = (at + 1..lines.len())
                .find(|&end| lines[end] == "```")
                .unwrap_or(lines.len());
            let content = lines[at + 1..end].iter().map(|l| (*l).to_owned()).collect();
            result.push(Block::Pre(content));
            at = end + 1;
        } else if line.starts_with('>') {
            let end = (at..lines.len())
                .find(|&end| !lines[end].starts_with('>'))
                .unwrap_or(lines.len());
            let inner: Vec<&str> = lines[at..end]
                .iter()
                .map(|line| {
                    let rest = &line[1..];
                    // The first leading whitespace character is trimmed.
                    match rest.chars().next() {
                        Some(first) if space(first) => &rest[first.len_utf8()..],
                        _ => rest,
                    }
                })
                .collect();
            result.push(Block::Quote(blocks(&inner)));
            at = end;
        } else {
            let characters: Vec<char> = line.chars().collect();
            result.push(Block::Line(spans(&characters, None)));
            at += 1;
        }
    }
    result
}

fn styled(blocks: &[Block]) -> bool {
    blocks.iter().any(|block| match block {
        Block::Line(spans) => spans.iter().any(|span| !matches!(span, Span::Plain(_))),
        Block::Pre(_) | Block::Quote(_) => true,
    })
}

fn write_spans(spans: &[Span], out: &mut String) {
    for span in spans {
        match span {
            Span::Plain(text) => out.push_str(&escape_text(text)),
            Span::Pre(text) => {
                out.push_str("<code>");
                out.push_str(&escape_text(text));
                out.push_str("</code>");
            }
            Span::Strong(inner) | Span::Emphasis(inner) | Span::Strike(inner) => {
                let tag = match span {
                    Span::Strong(_) => "strong",
                    Span::Emphasis(_) => "em",
                    _ => "del",
                };
                out.push_str(&format!("<{tag}>"));
                write_spans(inner, out);
                out.push_str(&format!("</{tag}>"));
            }
        }
    }
}

fn write_blocks(blocks: &[Block], out: &mut String) {
    let mut previous_line = false;
    for block in blocks {
        match block {
            Block::Line(spans) => {
                if previous_line {
                    out.push_str("<br>");
                }
                write_spans(spans, out);
                previous_line = true;
            }
            Block::Pre(lines) => {
                out.push_str("<pre><code>");
                out.push_str(&escape_text(&lines.join("\n")));
                out.push_str("</code></pre>");
                previous_line = false;
            }
            Block::Quote(inner) => {
                out.push_str("<blockquote>");
                write_blocks(inner, out);
                out.push_str("</blockquote>");
                previous_line = false;
            }
        }
    }
}

/// The Matrix HTML of styled text, or `None` when the text has no styling (then the plain
/// body says it all).
pub fn to_html(text: &str) -> Option<String> {
    let blocks = parse(text);
    if !styled(&blocks) {
        return None;
    }
    let mut out = String::new();
    write_blocks(&blocks, &mut out);
    Some(out)
}

/// Whether text would show styling in an XMPP client that applies XEP-0393.
pub fn has_styling(text: &str) -> bool {
    styled(&parse(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strong(text: &str) -> Span {
        Span::Strong(vec![Span::Plain(text.into())])
    }

    fn plain(text: &str) -> Span {
        Span::Plain(text.into())
    }

    fn line(text: &str) -> Vec<Span> {
        let characters: Vec<char> = text.chars().collect();
        spans(&characters, None)
    }

    /// The examples of XEP-0393 §6.2.
    #[test]
    fn the_span_examples_of_the_xep() {
        assert_eq!(line("plain span"), vec![plain("plain span")]);
        assert_eq!(line("*strong span*"), vec![strong("strong span")]);
        assert_eq!(
            line("plain _emphasis_ plain"),
            vec![
                plain("plain "),
                Span::Emphasis(vec![plain("emphasis")]),
                plain(" plain")
            ]
        );
        assert_eq!(
            line("`pre` plain *strong*"),
            vec![Span::Pre("pre".into()), plain(" plain "), strong("strong")]
        );
        assert_eq!(
            line("*strong*plain*"),
            vec![strong("strong"), plain("plain*")]
        );
        assert_eq!(
            line("* plain *strong*"),
            vec![plain("* plain "), strong("strong")]
        );
        for unstyled in [
            "not strong*",
            "*not strong",
            "*not *strong",
            "**",
            "***",
            "****",
        ] {
            assert_eq!(line(unstyled), vec![plain(unstyled)], "{unstyled}");
        }
        assert!(!has_styling("*not \n strong*"));
        assert_eq!(
            line("This is *`monospace and bold`*"),
            vec![
                plain("This is "),
                Span::Strong(vec![Span::Pre("monospace and bold".into())])
            ]
        );
        assert_eq!(
            line("This is `*monospace*`"),
            vec![plain("This is "), Span::Pre("*monospace*".into())]
        );
        assert_eq!(
            line("*_both_*"),
            vec![Span::Strong(vec![Span::Emphasis(vec![plain("both")])])]
        );
        assert_eq!(
            line("**bold**"),
            vec![Span::Strong(vec![plain("*bold")]), plain("*")]
        );
    }

    #[test]
    fn the_block_examples_of_the_xep() {
        assert_eq!(
            parse("```ignored\n(println \"Hello, world!\")\n```\nThis should show up"),
            vec![
                Block::Pre(vec!["(println \"Hello, world!\")".into()]),
                Block::Line(vec![plain("This should show up")])
            ]
        );
        // A preformatted block inside a quote ends with the quote.
        assert_eq!(
            parse("> ```\n> (println \"Hello, world!\")\nThe entire blockquote"),
            vec![
                Block::Quote(vec![Block::Pre(vec!["(println \"Hello, world!\")".into()])]),
                Block::Line(vec![plain("The entire blockquote")])
            ]
        );
        assert_eq!(
            parse(">> That that is, is.\n> Said the old hermit of Prague.\nWho?"),
            vec![
                Block::Quote(vec![
                    Block::Quote(vec![Block::Line(vec![plain("That that is, is.")])]),
                    Block::Line(vec![plain("Said the old hermit of Prague.")])
                ]),
                Block::Line(vec![plain("Who?")])
            ]
        );
    }

    #[test]
    fn html_of_styled_text() {
        assert_eq!(to_html("just text"), None);
        assert_eq!(to_html("2 * 3 * 4 = 24"), None);
        assert_eq!(
            to_html("a *b* _c_ ~d~ `<e>`").as_deref(),
            Some("a <strong>b</strong> <em>c</em> <del>d</del> <code>&lt;e&gt;</code>")
        );
        assert_eq!(
            to_html("> quoted\nreply & more").as_deref(),
            Some("<blockquote>quoted</blockquote>reply &amp; more")
        );
        assert_eq!(
            to_html("line one\n*two*\n```\nfn main() {}\n```").as_deref(),
            Some("line one<br><strong>two</strong><pre><code>fn main() {}</code></pre>")
        );
    }
}
