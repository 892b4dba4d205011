//! Matrix HTML (`org.matrix.custom.html`): the sanitiser that keeps the subset the Matrix
//! specification allows, its conversion to XEP-0393 styled text, and XHTML-IM (XEP-0071) read
//! into it.
//!
//! The sanitiser is ammonia, configured with the specification's tags and attributes. What
//! comes out of it is well-formed, with only a handful of entities, and is read back into a
//! small tree (`html/tree.rs`) for the conversion to text.

use std::collections::{HashMap, HashSet};

use minidom::Element;

use super::{Dropped, Lossy};
use tree::{Node, plain_text, read, void};

mod tree;

/// The tags the Matrix specification permits.
const TAGS: [&str; 37] = [
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "img",
    "details",
    "summary",
];

/// Link schemes the specification permits.
const LINK_SCHEMES: [&str; 5] = ["https", "http", "ftp", "mailto", "magnet"];

/// How deep tags may nest (the specification's limit).
const MAX_DEPTH: usize = 100;

fn colour(value: &str) -> bool {
    value.len() == 7 && value.starts_with('#') && value[1..].chars().all(|c| c.is_ascii_hexdigit())
}

/// The sanitiser, configured once.
static SANITIZER: std::sync::LazyLock<ammonia::Builder<'static>> =
    std::sync::LazyLock::new(sanitizer);

/// One pass of the sanitiser: safe, though not always a fixed point (see [`sanitize`]).
fn sanitize_once(html: &str) -> String {
    SANITIZER.clean(html).to_string()
}

fn sanitizer() -> ammonia::Builder<'static> {
    let mut builder = ammonia::Builder::empty();
    let attributes: HashMap<&str, HashSet<&str>> = [
        (
            "span",
            [
                "data-mx-bg-color",
                "data-mx-color",
                "data-mx-spoiler",
                "data-mx-maths",
            ]
            .into_iter()
            .collect(),
        ),
        ("a", ["target", "href"].into_iter().collect()),
        (
            "img",
            ["width", "height", "alt", "title", "src"]
                .into_iter()
                .collect(),
        ),
        ("ol", ["start"].into_iter().collect()),
        ("code", ["class"].into_iter().collect()),
        ("div", ["data-mx-maths"].into_iter().collect()),
    ]
    .into_iter()
    .collect();
    builder
        .tags(TAGS.into_iter().collect())
        .clean_content_tags(["script", "style", "mx-reply"].into_iter().collect())
        .tag_attributes(attributes)
        .url_schemes(LINK_SCHEMES.into_iter().chain(["mxc"]).collect())
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener"))
        .strip_comments(true)
        .attribute_filter(|element, attribute, value| {
            let keep = match (element, attribute) {
                ("img", "src") => value.starts_with("mxc://"),
                ("a", "href") => !value.starts_with("mxc:"),
                (_, "data-mx-color" | "data-mx-bg-color") => colour(value),
                ("code", "class") => {
                    let languages: Vec<&str> = value
                        .split_whitespace()
                        .filter(|class| class.starts_with("language-"))
                        .collect();
                    return (!languages.is_empty()).then(|| languages.join(" ").into());
                }
                ("ol", "start") => value.parse::<i64>().is_ok(),
                ("img", "width" | "height") => value.parse::<u32>().is_ok(),
                _ => true,
            };
            keep.then_some(value.into())
        });
    builder
}

/// Keeps only the HTML the Matrix specification allows: its tags, their permitted attributes,
/// links with permitted schemes and images from `mxc://` URIs. Scripts, styles, event handlers
/// and reply fallbacks (`mx-reply`) go, with their content where they have any.
pub fn sanitize(html: &str) -> String {
    // The HTML parser repairs some invalid nesting (links in links, say) differently on a
    // second reading; cleaning again until nothing changes makes the result a fixed point.
    let builder = &*SANITIZER;
    let mut clean = without_pre_newlines(&builder.clean(html).to_string());
    for _ in 0..3 {
        let again = without_pre_newlines(&builder.clean(&clean).to_string());
        if again == clean {
            break;
        }
        clean = again;
    }
    clean
}

/// Removes the line breaks right after `<pre>`: HTML drops one on every reading, and the
/// serialiser does not write it back, so each sanitising pass would lose one more.
fn without_pre_newlines(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find("<pre>") {
        out.push_str(&rest[..at + 5]);
        rest = rest[at + 5..].trim_start_matches('\n');
    }
    out.push_str(rest);
    out
}

/// Escapes text for HTML as the sanitiser writes it (so that sanitising changes nothing). NUL,
/// which HTML cannot carry, goes, and so does CR, which HTML reads as part of a line break.
pub fn escape_text(text: &str) -> String {
    escape(text, false)
}

/// Escapes an attribute value (in double quotes) as the sanitiser writes it.
pub fn escape_attribute(value: &str) -> String {
    escape(value, true)
}

fn escape(text: &str, attribute: bool) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '\0' | '\r' => {}
            '&' => escaped.push_str("&amp;"),
            '\u{a0}' => escaped.push_str("&nbsp;"),
            '"' if attribute => escaped.push_str("&quot;"),
            '<' if !attribute => escaped.push_str("&lt;"),
            '>' if !attribute => escaped.push_str("&gt;"),
            character => escaped.push(character),
        }
    }
    escaped
}

/// Private-use characters around the text of a mention while the text is written.
const MENTION_START: char = '\u{e000}';
const MENTION_END: char = '\u{e001}';

/// The user a `matrix.to` link names, if it names one.
fn pill_user(href: &str) -> Option<ruma::OwnedUserId> {
    let fragment = href.strip_prefix("https://matrix.to/#/")?;
    let identifier = fragment.split('?').next().unwrap_or_default();
    let decoded = super::percent_decode(identifier);
    ruma::UserId::parse(decoded.as_str()).ok()
}

/// The writer of styled text: lines of inline text, with blocks separated by line breaks.
#[derive(Default)]
struct Writer {
    out: String,
    dropped: Vec<Dropped>,
    /// The users mentioned, in the order of their markers in `out`.
    mentions: Vec<ruma::OwnedUserId>,
    /// Inside a preformatted block: whitespace is kept as it is.
    pre: bool,
    /// Inline content inside other text: whitespace at its start is kept (as one space).
    inline: bool,
}

impl Writer {
    fn drop(&mut self, what: Dropped) {
        if !self.dropped.contains(&what) {
            self.dropped.push(what);
        }
    }

    /// Starts a new line unless at the start of one.
    fn line_break(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
    }

    fn text(&mut self, text: &str) {
        if self.pre {
            self.out.push_str(text);
            return;
        }
        // HTML whitespace collapses to one space, and none at the start of a line.
        for character in text.chars() {
            if character.is_ascii_whitespace() {
                if (self.inline || !self.out.is_empty()) && !self.out.ends_with([' ', '\n']) {
                    self.out.push(' ');
                }
            } else {
                self.out.push(character);
            }
        }
    }

    /// Writes inline content between styling directives; whitespace at its edges goes outside
    /// them, as XEP-0393 wants the directives next to text.
    fn span(&mut self, directive: &str, children: &[Node]) {
        let mut inner = Writer {
            pre: self.pre,
            inline: true,
            ..Writer::default()
        };
        inner.nodes(children);
        self.dropped.extend(inner.dropped);
        self.mentions.extend(inner.mentions);
        let text = inner.out;
        let trimmed = text.trim();
        if trimmed.is_empty() || self.pre || trimmed.contains('\n') {
            // Directives cannot style across lines.
            self.text_raw(&text);
            return;
        }
        let leading = &text[..text.len() - text.trim_start().len()];
        let trailing = &text[text.trim_end().len()..];
        if !leading.is_empty() {
            self.text(" ");
        }
        self.out.push_str(directive);
        self.out.push_str(trimmed);
        self.out.push_str(directive);
        if !trailing.is_empty() {
            self.out.push(' ');
        }
    }

    fn text_raw(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// Renders `children` into a block, each of its lines prefixed (the first with `first`,
    /// the others with `others`).
    fn block(&mut self, children: &[Node], first: &str, others: &str) {
        let mut inner = Writer {
            pre: self.pre,
            ..Writer::default()
        };
        inner.nodes(children);
        self.dropped.extend(inner.dropped);
        self.mentions.extend(inner.mentions);
        self.line_break();
        let content = inner.out.trim_end_matches('\n');
        for (index, line) in content.split('\n').enumerate() {
            if index > 0 {
                self.out.push('\n');
            }
            self.out.push_str(if index == 0 { first } else { others });
            self.out.push_str(line);
        }
        self.out.push('\n');
    }

    fn nodes(&mut self, nodes: &[Node]) {
        for node in nodes {
            self.node(node);
        }
    }

    fn node(&mut self, node: &Node) {
        let Node::Element { name, children, .. } = node else {
            if let Node::Text(text) = node {
                self.text(text);
            }
            return;
        };
        match name.as_str() {
            "strong" | "b" => self.span("*", children),
            "em" | "i" => self.span("_", children),
            "del" | "s" => self.span("~", children),
            "code" if !self.pre => {
                let text = plain_text(children);
                if text.contains('`') || text.contains('\n') || text.trim().is_empty() {
                    self.text_raw(&text);
                } else {
                    self.out.push('`');
                    self.out.push_str(&text);
                    self.out.push('`');
                }
            }
            "br" => self.out.push('\n'),
            "hr" => {
                self.line_break();
                self.out.push_str("―――\n");
            }
            "p" | "div" | "details" | "summary" | "caption" => {
                self.line_break();
                self.nodes(children);
                self.line_break();
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.line_break();
                self.span("*", children);
                self.line_break();
            }
            "pre" => {
                self.line_break();
                let text = plain_text(children);
                self.out.push_str("```\n");
                self.out.push_str(text.trim_end_matches('\n'));
                self.out.push_str("\n```\n");
            }
            "blockquote" => self.block(children, "> ", "> "),
            "ul" | "ol" => {
                self.line_break();
                let mut number: i64 = node
                    .attribute("start")
                    .and_then(|start| start.parse().ok())
                    .unwrap_or(1);
                for item in children {
                    let Node::Element {
                        name,
                        children: content,
                        ..
                    } = item
                    else {
                        continue;
                    };
                    if name != "li" {
                        self.node(item);
                        continue;
                    }
                    let marker = if node_name(node) == "ol" {
                        format!("{number}. ")
                    } else {
                        "• ".to_owned()
                    };
                    let indent = " ".repeat(marker.chars().count());
                    self.block(content, &marker, &indent);
                    number += 1;
                }
            }
            "li" => self.block(children, "• ", "  "),
            "a" => self.link(node, children),
            "img" => {
                self.drop(Dropped::Image);
                match node.attribute("alt").filter(|alt| !alt.trim().is_empty()) {
                    Some(alt) => self.text(alt),
                    None => self.text("[image]"),
                }
            }
            "table" | "thead" | "tbody" => {
                self.drop(Dropped::Table);
                self.nodes(children);
            }
            "tr" => {
                self.line_break();
                let cells: Vec<String> = children
                    .iter()
                    .map(|cell| match cell {
                        Node::Element { children, .. } => plain_text(children)
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" "),
                        Node::Text(text) => text.trim().to_owned(),
                    })
                    .filter(|cell| !cell.is_empty())
                    .collect();
                self.out.push_str(&cells.join("\t"));
                self.out.push('\n');
            }
            "u" => {
                self.drop(Dropped::Underline);
                self.nodes(children);
            }
            "sup" | "sub" => {
                self.drop(Dropped::Script);
                self.nodes(children);
            }
            "span" if node.attribute("data-mx-spoiler").is_some() => {
                self.drop(Dropped::Spoiler);
                self.nodes(children);
            }
            "span" => {
                if node.attribute("data-mx-color").is_some()
                    || node.attribute("data-mx-bg-color").is_some()
                {
                    self.drop(Dropped::Colour);
                }
                self.nodes(children);
            }
            _ => self.nodes(children),
        }
    }

    fn link(&mut self, node: &Node, children: &[Node]) {
        let text = plain_text(children);
        let text = text.trim();
        let Some(href) = node.attribute("href") else {
            self.text(text);
            return;
        };
        // Pills: a mention or a room shows as its name.
        if href.starts_with("https://matrix.to/#/") {
            let shown = if text.is_empty() { href } else { text };
            match pill_user(href) {
                Some(user) => {
                    self.out.push(MENTION_START);
                    self.text_raw(shown);
                    self.out.push(MENTION_END);
                    self.mentions.push(user);
                }
                None => self.text(shown),
            }
            return;
        }
        let bare = href.strip_prefix("mailto:").unwrap_or(href);
        if text.is_empty() || text == href || text == bare {
            self.text(href);
        } else {
            self.nodes(children);
            self.text(" <");
            self.text_raw(href);
            self.text_raw(">");
        }
    }
}

fn node_name(node: &Node) -> &str {
    match node {
        Node::Element { name, .. } => name,
        Node::Text(_) => "",
    }
}

/// Matrix HTML as XEP-0393 styled text: bold, italics, strike-through, code, preformatted
/// blocks and quotations keep their meaning; lists become lines with markers, links their text
/// and address. What styling cannot say (underline, colour, images, tables, spoilers) is listed
/// as dropped.
pub fn to_styled_text(html: &str) -> Lossy<String> {
    let styled = to_styled(html);
    Lossy {
        value: styled.text,
        dropped: styled.dropped,
    }
}

/// A user mentioned in styled text: the characters `begin..end` name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub begin: usize,
    pub end: usize,
    pub user: ruma::OwnedUserId,
}

/// Styled text with what it dropped and the users it mentions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Styled {
    pub text: String,
    pub dropped: Vec<Dropped>,
    pub mentions: Vec<Mention>,
}

/// [`to_styled_text`], with where the mentions (pills) are in the text.
pub fn to_styled(html: &str) -> Styled {
    let nodes = read(&sanitize_once(html));
    let mut writer = Writer::default();
    writer.nodes(&nodes);
    let marked = writer
        .out
        .trim_end_matches(['\n', ' '])
        .trim_start_matches('\n');
    let mut text = String::with_capacity(marked.len());
    let mut mentions = Vec::new();
    let mut users = writer.mentions.into_iter();
    let mut count = 0;
    let mut begin = 0;
    for character in marked.chars() {
        match character {
            MENTION_START => begin = count,
            MENTION_END => {
                if let Some(user) = users.next() {
                    mentions.push(Mention {
                        begin,
                        end: count,
                        user,
                    });
                }
            }
            character => {
                text.push(character);
                count += 1;
            }
        }
    }
    Styled {
        text,
        dropped: writer.dropped,
        mentions,
    }
}

/// XHTML-IM (XEP-0071): the XHTML body of a message as sanitised Matrix HTML. Its common
/// inline styles (bold, italic, underline, strike-through) become tags; other styles go.
pub fn xhtml_im_to_html(html: &Element) -> Option<String> {
    const XHTML_IM: &str = "http://jabber.org/protocol/xhtml-im";
    const XHTML: &str = "http://www.w3.org/1999/xhtml";
    if !html.is("html", XHTML_IM) {
        return None;
    }
    let body = html.get_child("body", XHTML)?;
    let mut out = String::new();
    write_xhtml_children(body, &mut out, 0);
    let sanitized = sanitize(&out);
    (!sanitized.trim().is_empty()).then_some(sanitized)
}

fn write_xhtml_children(element: &Element, out: &mut String, depth: usize) {
    for node in element.nodes() {
        match node {
            minidom::Node::Text(text) => out.push_str(&escape_text(text)),
            minidom::Node::Element(child) => write_xhtml(child, out, depth + 1),
        }
    }
}

fn write_xhtml(element: &Element, out: &mut String, depth: usize) {
    if depth > MAX_DEPTH {
        write_xhtml_children(element, out, depth);
        return;
    }
    let name = element.name();
    // Inline styles of XHTML-IM's CSS subset, as the tags Matrix knows.
    let style = element
        .attr("style")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut wrappers = Vec::new();
    for (property, tag) in [
        ("font-weight: bold", "strong"),
        ("font-weight:bold", "strong"),
        ("font-style: italic", "em"),
        ("font-style:italic", "em"),
        ("text-decoration: underline", "u"),
        ("text-decoration:underline", "u"),
        ("text-decoration: line-through", "del"),
        ("text-decoration:line-through", "del"),
    ] {
        if style.contains(property) && !wrappers.contains(&tag) {
            wrappers.push(tag);
        }
    }
    out.push('<');
    out.push_str(name);
    for attribute in ["href", "alt", "title", "start"] {
        if let Some(value) = element.attr(attribute) {
            out.push_str(&format!(" {attribute}=\"{}\"", escape_attribute(value)));
        }
    }
    out.push('>');
    for tag in &wrappers {
        out.push_str(&format!("<{tag}>"));
    }
    if !void(name) {
        write_xhtml_children(element, out, depth);
    }
    for tag in wrappers.iter().rev() {
        out.push_str(&format!("</{tag}>"));
    }
    if !void(name) {
        out.push_str(&format!("</{name}>"));
    }
}

#[cfg(test)]
mod tests;
