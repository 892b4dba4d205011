//! Sanitised HTML read back into a tree. What the sanitiser writes is well-formed, with only
//! a handful of entities, so a small reader is enough.

/// A node of sanitised HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Node {
    Element {
        name: String,
        attributes: Vec<(String, String)>,
        children: Vec<Node>,
    },
    Text(String),
}

impl Node {
    pub(super) fn attribute(&self, wanted: &str) -> Option<&str> {
        match self {
            Node::Element { attributes, .. } => attributes
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.as_str()),
            Node::Text(_) => None,
        }
    }
}

/// Decodes the entities the sanitiser writes (and numeric ones).
fn decode_entities(text: &str) -> String {
    let mut decoded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        decoded.push_str(&rest[..at]);
        rest = &rest[at..];
        let entity = rest.find(';').map(|end| &rest[1..end]);
        let character = entity.and_then(|entity| match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => {
                let number = entity.strip_prefix('#')?;
                let code = match number.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => number.parse().ok()?,
                };
                char::from_u32(code)
            }
        });
        match (character, entity) {
            (Some(character), Some(entity)) => {
                decoded.push(character);
                rest = &rest[entity.len() + 2..];
            }
            _ => {
                decoded.push('&');
                rest = &rest[1..];
            }
        }
    }
    decoded.push_str(rest);
    decoded
}

/// Reads the attributes of a start tag (`name="value"` pairs, as the sanitiser writes them).
fn attributes(mut text: &str) -> Vec<(String, String)> {
    let mut result = Vec::new();
    loop {
        text = text.trim_start();
        let Some(equals) = text.find('=') else {
            let name = text.trim_end_matches('/').trim();
            if !name.is_empty() {
                result.push((name.to_ascii_lowercase(), String::new()));
            }
            return result;
        };
        let name = text[..equals].trim();
        let rest = &text[equals + 1..];
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            return result;
        };
        let Some(end) = rest[1..].find(quote) else {
            return result;
        };
        // An attribute without a value before this one ("data-mx-spoiler data-x=...").
        let mut names = name.split_whitespace().collect::<Vec<_>>();
        let name = names.pop().unwrap_or_default();
        for bare in names {
            result.push((bare.to_ascii_lowercase(), String::new()));
        }
        result.push((
            name.to_ascii_lowercase(),
            decode_entities(&rest[1..1 + end]),
        ));
        text = &rest[end + 2..];
    }
}

/// An element being read: its name, attributes and the children read so far.
type Open = (String, Vec<(String, String)>, Vec<Node>);

pub(super) fn void(name: &str) -> bool {
    matches!(name, "br" | "hr" | "img")
}

/// Reads sanitised HTML into nodes. Elements nested deeper than the specification's limit
/// lend their content to their parent.
pub(super) fn read(sanitized: &str) -> Vec<Node> {
    // The stack of open elements: (name, attributes, children).
    let mut stack: Vec<Open> = vec![(String::new(), vec![], vec![])];
    let mut too_deep = 0usize;
    let mut rest = sanitized;
    while !rest.is_empty() {
        let Some(at) = rest.find('<') else {
            push_text(&mut stack, rest);
            break;
        };
        if at > 0 {
            push_text(&mut stack, &rest[..at]);
        }
        rest = &rest[at..];
        let Some(end) = rest.find('>') else {
            push_text(&mut stack, rest);
            break;
        };
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            if too_deep > 0 {
                too_deep -= 1;
                continue;
            }
            if stack.len() > 1 && stack.last().is_some_and(|(open, _, _)| *open == name) {
                close(&mut stack);
            }
            continue;
        }
        let (name, attribute_text) = match tag.find(char::is_whitespace) {
            Some(space) => (&tag[..space], &tag[space..]),
            None => (tag.trim_end_matches('/'), ""),
        };
        let name = name.to_ascii_lowercase();
        let attributes = attributes(attribute_text);
        if void(&name) {
            if let Some((_, _, children)) = stack.last_mut() {
                children.push(Node::Element {
                    name,
                    attributes,
                    children: vec![],
                });
            }
        } else if stack.len() > super::MAX_DEPTH {
            too_deep += 1;
        } else {
            stack.push((name, attributes, vec![]));
        }
    }
    while stack.len() > 1 {
        close(&mut stack);
    }
    stack
        .pop()
        .map(|(_, _, children)| children)
        .unwrap_or_default()
}

fn push_text(stack: &mut [Open], text: &str) {
    if let Some((_, _, children)) = stack.last_mut() {
        // The markers of mentions are this module's own.
        let text = decode_entities(text).replace([super::MENTION_START, super::MENTION_END], "");
        children.push(Node::Text(text));
    }
}

fn close(stack: &mut Vec<Open>) {
    if let Some((name, attributes, children)) = stack.pop()
        && let Some((_, _, parent)) = stack.last_mut()
    {
        parent.push(Node::Element {
            name,
            attributes,
            children,
        });
    }
}

/// Text of nodes, without any formatting.
pub(super) fn plain_text(nodes: &[Node]) -> String {
    let mut text = String::new();
    for node in nodes {
        match node {
            Node::Text(content) => text.push_str(content),
            Node::Element { name, children, .. } => {
                if name == "br" {
                    text.push('\n');
                }
                text.push_str(&plain_text(children));
            }
        }
    }
    text
}
