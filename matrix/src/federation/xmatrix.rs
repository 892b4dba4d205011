//! Request authentication between homeservers (the `X-Matrix` authorization scheme): every
//! request a server sends carries its signature over the method, the URI, both server names
//! and the body; every request received is verified against the origin's key. A request
//! with another scheme, or none, is unauthenticated, never anonymous.

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet};
use ruma::{OwnedServerName, ServerName};

/// Why a request's authentication is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request has no Authorization header")]
    Missing,
    #[error("the authorization scheme is not X-Matrix")]
    UnknownScheme,
    #[error("malformed X-Matrix authorization: {0}")]
    Malformed(String),
    #[error("the request is meant for {0}, not this server")]
    WrongDestination(String),
    #[error("the signature does not verify with {0}")]
    BadSignature(String),
}

/// The parameters of an `X-Matrix` authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: OwnedServerName,
    /// The receiving server; older servers leave it out.
    pub destination: Option<OwnedServerName>,
    /// The id of the origin's key that signed, `ed25519:<version>`.
    pub key: String,
    /// The unpadded base64 signature.
    pub sig: String,
}

/// The largest Authorization header read.
const HEADER_LIMIT: usize = 4096;

impl XMatrix {
    /// Parses an Authorization header value: the scheme (any case), then comma-separated
    /// `name=value` parameters, each value a token or a quoted string with `\` escapes;
    /// unknown parameters are ignored, `origin`, `key` and `sig` are required.
    pub fn parse(header: &str) -> Result<XMatrix, AuthError> {
        if header.len() > HEADER_LIMIT {
            return Err(AuthError::Malformed("the header is too long".into()));
        }
        let (scheme, rest) = header.trim_start().split_once(' ').unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("X-Matrix") {
            return Err(AuthError::UnknownScheme);
        }
        let mut origin = None;
        let mut destination = None;
        let mut key = None;
        let mut sig = None;
        for (name, value) in parameters(rest)? {
            let slot = match name.to_ascii_lowercase().as_str() {
                "origin" => &mut origin,
                "destination" => &mut destination,
                "key" => &mut key,
                "sig" => &mut sig,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(AuthError::Malformed(format!("`{name}` is given twice")));
            }
        }
        let server = |value: String, name: &str| {
            ServerName::parse(&value)
                .map_err(|_| AuthError::Malformed(format!("`{name}` is not a server name")))
        };
        let origin = server(
            origin.ok_or_else(|| AuthError::Malformed("`origin` is missing".into()))?,
            "origin",
        )?;
        let destination = destination
            .map(|value| server(value, "destination"))
            .transpose()?;
        let key = key.ok_or_else(|| AuthError::Malformed("`key` is missing".into()))?;
        if !key.starts_with("ed25519:") || key.len() == "ed25519:".len() {
            return Err(AuthError::Malformed(format!("unsupported key id {key:?}")));
        }
        let sig = sig.ok_or_else(|| AuthError::Malformed("`sig` is missing".into()))?;
        Ok(XMatrix {
            origin,
            destination,
            key,
            sig,
        })
    }

    /// The header value, every parameter quoted.
    pub fn to_header(&self) -> String {
        let quoted = |value: &str| value.replace('\\', "\\\\").replace('"', "\\\"");
        let mut header = format!("X-Matrix origin=\"{}\"", quoted(self.origin.as_str()));
        if let Some(destination) = &self.destination {
            header.push_str(&format!(
                ",destination=\"{}\"",
                quoted(destination.as_str())
            ));
        }
        header.push_str(&format!(
            ",key=\"{}\",sig=\"{}\"",
            quoted(&self.key),
            quoted(&self.sig)
        ));
        header
    }
}

/// The `name=value` parameters after the scheme.
fn parameters(text: &str) -> Result<Vec<(String, String)>, AuthError> {
    let mut parameters = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if chars.peek().is_none() {
            return Ok(parameters);
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ',' && !c.is_whitespace()) {
            name.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') || name.is_empty() {
            return Err(AuthError::Malformed(format!(
                "parameter {name:?} has no value"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(AuthError::Malformed("unterminated escape".into())),
                    },
                    Some(c) => value.push(c),
                    None => return Err(AuthError::Malformed("unterminated quoted value".into())),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',' && !c.is_whitespace()) {
                value.push(c);
            }
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_some_and(|c| *c != ',') {
            return Err(AuthError::Malformed(format!(
                "unexpected text after parameter {name:?}"
            )));
        }
        parameters.push((name, value));
    }
}

/// What a request signature covers.
fn signed_object(
    method: &str,
    uri: &str,
    origin: &ServerName,
    destination: Option<&ServerName>,
    content: Option<&CanonicalJsonValue>,
) -> CanonicalJsonObject {
    let mut object = CanonicalJsonObject::new();
    object.insert(
        "method".into(),
        CanonicalJsonValue::String(method.to_owned()),
    );
    object.insert("uri".into(), CanonicalJsonValue::String(uri.to_owned()));
    object.insert(
        "origin".into(),
        CanonicalJsonValue::String(origin.to_string()),
    );
    if let Some(destination) = destination {
        object.insert(
            "destination".into(),
            CanonicalJsonValue::String(destination.to_string()),
        );
    }
    if let Some(content) = content {
        object.insert("content".into(), content.clone());
    }
    object
}

/// Signs a request this server sends: the `X-Matrix` header to send with it. `uri` is the
/// path with its query string, as sent.
pub fn sign_request(
    key: &Ed25519KeyPair,
    origin: &ServerName,
    destination: &ServerName,
    method: &str,
    uri: &str,
    content: Option<&CanonicalJsonValue>,
) -> Result<XMatrix, ruma::signatures::JsonError> {
    let mut object = signed_object(method, uri, origin, Some(destination), content);
    ruma::signatures::sign_json(origin.as_str(), key, &mut object)?;
    let key_id = format!("ed25519:{}", key.version());
    let sig = signature_of(&object, origin, &key_id).unwrap_or_default();
    Ok(XMatrix {
        origin: origin.to_owned(),
        destination: Some(destination.to_owned()),
        key: key_id,
        sig,
    })
}

/// The signature of `origin`'s key `key_id` in a signed object.
fn signature_of(object: &CanonicalJsonObject, origin: &ServerName, key_id: &str) -> Option<String> {
    object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|signatures| signatures.get(origin.as_str()))
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|keys| keys.get(key_id))
        .and_then(CanonicalJsonValue::as_str)
        .map(str::to_owned)
}

/// Verifies a received request: meant for `this_server` (when it says), signed by the
/// origin's key `public_key` (the raw key of `auth.key`).
pub fn verify_request(
    auth: &XMatrix,
    this_server: &ServerName,
    public_key: &[u8],
    method: &str,
    uri: &str,
    content: Option<&CanonicalJsonValue>,
) -> Result<(), AuthError> {
    if let Some(destination) = &auth.destination
        && destination != this_server
    {
        return Err(AuthError::WrongDestination(destination.to_string()));
    }
    let mut object = signed_object(
        method,
        uri,
        &auth.origin,
        auth.destination.as_deref(),
        content,
    );
    let mut keys = CanonicalJsonObject::new();
    keys.insert(
        auth.key.clone(),
        CanonicalJsonValue::String(auth.sig.clone()),
    );
    let mut signatures = CanonicalJsonObject::new();
    signatures.insert(auth.origin.to_string(), CanonicalJsonValue::Object(keys));
    object.insert("signatures".into(), CanonicalJsonValue::Object(signatures));
    let mut set = PublicKeySet::new();
    set.insert(auth.key.clone(), Base64::new(public_key.to_vec()));
    let mut map = PublicKeyMap::new();
    map.insert(auth.origin.to_string(), set);
    ruma::signatures::verify_json(&map, &object)
        .map_err(|_| AuthError::BadSignature(auth.key.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: &str) -> Ed25519KeyPair {
        let document = Ed25519KeyPair::generate();
        Ed25519KeyPair::from_der(&document, version.into()).unwrap()
    }

    fn name(text: &str) -> OwnedServerName {
        ServerName::parse(text).unwrap()
    }

    #[test]
    fn headers_parse_as_the_specification_writes_them() {
        let parsed = XMatrix::parse(
            r#"X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF...""#,
        )
        .unwrap();
        assert_eq!(parsed.origin, name("origin.hs.example.com"));
        assert_eq!(parsed.destination, Some(name("destination.hs.example.com")));
        assert_eq!(
            (parsed.key.as_str(), parsed.sig.as_str()),
            ("ed25519:key1", "ABCDEF...")
        );
        // Tokens, spaces, any case of the scheme and names, unknown parameters, no destination.
        let parsed =
            XMatrix::parse("x-matrix Origin=a.test , KEY = ed25519:k, sig=c2ln, extra=\"x\\\"y\"")
                .unwrap();
        assert_eq!(
            parsed,
            XMatrix {
                origin: name("a.test"),
                destination: None,
                key: "ed25519:k".into(),
                sig: "c2ln".into(),
            }
        );
        // What is written parses back.
        assert_eq!(XMatrix::parse(&parsed.to_header()).unwrap(), parsed);
    }

    #[test]
    fn bad_headers_are_refused_precisely() {
        assert_eq!(XMatrix::parse("Bearer abc"), Err(AuthError::UnknownScheme));
        assert_eq!(XMatrix::parse(""), Err(AuthError::UnknownScheme));
        for bad in [
            "X-Matrix key=\"ed25519:k\",sig=\"s\"",
            "X-Matrix origin=a.test,sig=s",
            "X-Matrix origin=a.test,key=ed25519:k",
            "X-Matrix origin=a.test,key=rsa:k,sig=s",
            "X-Matrix origin=a.test,key=ed25519:,sig=s",
            "X-Matrix origin=\"not a name\",key=ed25519:k,sig=s",
            "X-Matrix origin=a.test,origin=b.test,key=ed25519:k,sig=s",
            "X-Matrix origin=\"a.test,key=ed25519:k,sig=s",
            "X-Matrix origin,key=ed25519:k,sig=s",
            "X-Matrix origin=a.test junk,key=ed25519:k,sig=s",
        ] {
            assert!(
                matches!(XMatrix::parse(bad), Err(AuthError::Malformed(_))),
                "{bad}: {:?}",
                XMatrix::parse(bad)
            );
        }
        let long = format!(
            "X-Matrix origin=a.test,key=ed25519:k,sig={}",
            "s".repeat(5000)
        );
        assert!(matches!(
            XMatrix::parse(&long),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn signed_requests_verify_and_altered_ones_do_not() {
        let key = key("abc");
        let public = key.public_key().to_vec();
        let (origin, here) = (name("origin.test"), name("here.test"));
        let body = CanonicalJsonValue::Object(
            [("pdus".to_owned(), CanonicalJsonValue::Array(vec![]))]
                .into_iter()
                .collect(),
        );
        let uri = "/_matrix/federation/v1/send/1";
        let auth = sign_request(&key, &origin, &here, "PUT", uri, Some(&body)).unwrap();
        assert_eq!(auth.key, "ed25519:abc");
        // Through the header and back, as a receiver gets it.
        let received = XMatrix::parse(&auth.to_header()).unwrap();
        assert_eq!(
            verify_request(&received, &here, &public, "PUT", uri, Some(&body)),
            Ok(())
        );
        // Another destination, method, URI, body or key: refused.
        assert_eq!(
            verify_request(
                &received,
                &name("other.test"),
                &public,
                "PUT",
                uri,
                Some(&body)
            ),
            Err(AuthError::WrongDestination("here.test".into()))
        );
        let bad = |result: Result<(), AuthError>| matches!(result, Err(AuthError::BadSignature(_)));
        assert!(bad(verify_request(
            &received,
            &here,
            &public,
            "GET",
            uri,
            Some(&body)
        )));
        assert!(bad(verify_request(
            &received,
            &here,
            &public,
            "PUT",
            "/x",
            Some(&body)
        )));
        assert!(bad(verify_request(
            &received, &here, &public, "PUT", uri, None
        )));
        let other = key_public("abc");
        assert!(bad(verify_request(
            &received,
            &here,
            &other,
            "PUT",
            uri,
            Some(&body)
        )));
        let mut forged = received.clone();
        forged.origin = name("evil.test");
        assert!(bad(verify_request(
            &forged,
            &here,
            &public,
            "PUT",
            uri,
            Some(&body)
        )));
        // A request without a destination (older servers) verifies over what it signed.
        let mut object = signed_object("GET", "/k", &origin, None, None);
        ruma::signatures::sign_json(origin.as_str(), &key, &mut object).unwrap();
        let sig = signature_of(&object, &origin, "ed25519:abc").unwrap();
        let old = XMatrix {
            origin: origin.clone(),
            destination: None,
            key: "ed25519:abc".into(),
            sig,
        };
        assert_eq!(
            verify_request(&old, &here, &public, "GET", "/k", None),
            Ok(())
        );
    }

    fn key_public(version: &str) -> Vec<u8> {
        key(version).public_key().to_vec()
    }
}
