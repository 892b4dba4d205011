//! Tests of the address mappings: tables of real cases, and properties.

use super::*;
use proptest::prelude::*;

fn gateway() -> Gateway {
    Gateway::new(
        OwnedServerName::try_from("example.org").unwrap(),
        "muc.example.org",
    )
    .unwrap()
}

fn jid(text: &str) -> Jid {
    Jid::new(text).unwrap()
}

fn bare(text: &str) -> BareJid {
    BareJid::new(text).unwrap()
}

fn user(text: &str) -> OwnedUserId {
    UserId::parse(text).unwrap()
}

/// Matrix users and their XMPP addresses, both ways.
#[test]
fn users_both_ways() {
    let gateway = gateway();
    for (matrix, xmpp) in [
        // Local accounts.
        ("@alice:example.org", "alice@example.org"),
        ("@a.b_c=d-e/f+g:example.org", "a.b_c=d-e\\2ff+g@example.org"),
        // Users of other Matrix servers, with ports and IPv6 literals.
        ("@carol:matrix.org", "carol%matrix.org@example.org"),
        ("@dave:localhost:8448", "dave%localhost\\3a8448@example.org"),
        ("@erin:[::1]:8448", "erin%[\\3a\\3a1]\\3a8448@example.org"),
        ("@frank:192.0.2.7", "frank%192.0.2.7@example.org"),
        // Ghosts of XMPP users, with Unicode and emoji localparts and MUC occupants.
        ("@_xmpp_bob=40jabber.de:example.org", "bob@jabber.de"),
        ("@_xmpp_j=c3=b6rg=40jabber.de:example.org", "jörg@jabber.de"),
        (
            "@_xmpp_crab=40crab.example/=c3=9cn=c3=afcode=20nick:example.org",
            "crab@crab.example/Ünïcode nick",
        ),
        (
            "@_xmpp_under_score=40x.example:example.org",
            "under_score@x.example",
        ),
        ("@_xmpp_jabber.de:example.org", "jabber.de"),
        (
            "@_xmpp_room=40conference.jabber.de/=4eick=20=3d=20=e2=9c=93:example.org",
            "room@conference.jabber.de/Nick = ✓",
        ),
    ] {
        let matrix = user(matrix);
        let xmpp = jid(xmpp);
        assert_eq!(gateway.user_to_jid(&matrix).as_ref(), Ok(&xmpp), "{matrix}");
        assert_eq!(gateway.jid_to_user(&xmpp).as_ref(), Ok(&matrix), "{xmpp}");
    }
    assert!(gateway.is_ghost(&user("@_xmpp_bob=40jabber.de:example.org")));
    assert!(!gateway.is_ghost(&user("@_xmpp_bob=40jabber.de:matrix.org")));
    assert!(!gateway.is_ghost(&user("@bob:example.org")));
}

#[test]
fn users_that_cannot_be_mapped() {
    let gateway = gateway();
    let from_matrix = |text: &str| gateway.user_to_jid(&user(text)).unwrap_err();
    // Historical upper-case localparts and server names would not survive case folding.
    assert!(matches!(
        from_matrix("@Carol:matrix.org"),
        AddressError::CaseLost(_)
    ));
    assert!(matches!(
        from_matrix("@carol:Matrix.org"),
        AddressError::CaseLost(_)
    ));
    // A local '%' would read as a user of another server.
    assert!(matches!(
        from_matrix("@a%b:example.org"),
        AddressError::NotJidSafe(_)
    ));
    // Ghosts of our own domains, and encodings this gateway does not produce.
    for text in [
        "@_xmpp_alice=40example.org:example.org",
        "@_xmpp_room=40muc.example.org:example.org",
    ] {
        assert!(
            matches!(from_matrix(text), AddressError::Reserved(_)),
            "{text}"
        );
    }
    for text in [
        "@_xmpp_bob=40Jabber.de:example.org",
        "@_xmpp_bob=4Ajabber.de:example.org",
        "@_xmpp_=62ob=40jabber.de:example.org",
        "@_xmpp_bob=40jabber.de=:example.org",
    ] {
        assert!(
            matches!(
                from_matrix(text),
                AddressError::NotCanonical(_) | AddressError::InvalidJid(..)
            ),
            "{text}"
        );
    }

    let from_xmpp = |text: &str| gateway.jid_to_user(&jid(text)).unwrap_err();
    assert!(matches!(
        from_xmpp("_xmpp_bob=40jabber.de@example.org"),
        AddressError::Reserved(_)
    ));
    assert!(matches!(
        from_xmpp("room@muc.example.org"),
        AddressError::NotAUser(_)
    ));
    assert!(matches!(
        from_xmpp("example.org"),
        AddressError::NotAUser(_)
    ));
    // Our own server written out, a '%' without a server, a Matrix id that cannot exist.
    assert!(matches!(
        from_xmpp("alice%example.org@example.org"),
        AddressError::NotCanonical(_)
    ));
    assert!(matches!(
        from_xmpp("alice%@example.org"),
        AddressError::InvalidMatrixId(..)
    ));
    assert!(matches!(
        from_xmpp("bad\\3alocal@example.org"),
        AddressError::InvalidMatrixId(..)
    ));
    // A JID whose ghost would be longer than a Matrix id may be.
    let long = format!("{}@jabber.de", "x".repeat(240));
    assert!(matches!(from_xmpp(&long), AddressError::TooLong(_, 255)));
}

/// Matrix rooms and their MUC addresses, both ways.
#[test]
fn rooms_both_ways() {
    let gateway = gateway();
    let alias = |text: &str| MatrixRoom::Alias(RoomAliasId::parse(text).unwrap());
    let id = |text: &str| MatrixRoom::Id(RoomId::parse(text).unwrap());
    for (room, muc) in [
        (alias("#lobby:example.org"), "lobby@muc.example.org"),
        // Upper case survives case folding.
        (alias("#Lobby:example.org"), "^lobby@muc.example.org"),
        (
            alias("#hat^trick:example.org"),
            "hat^^trick@muc.example.org",
        ),
        // A local alias that would read as an id or a remote alias is written out in full.
        (
            alias("#!odd:example.org"),
            "#!odd%example.org@muc.example.org",
        ),
        (
            alias("#matrix:matrix.org"),
            "#matrix%matrix.org@muc.example.org",
        ),
        (
            alias("#Techlore:matrix.org"),
            "#^techlore%matrix.org@muc.example.org",
        ),
        // Gitter-style names.
        (
            alias("#gitterHQ/gitter:gitter.im"),
            "#gitter^h^q\\2fgitter%gitter.im@muc.example.org",
        ),
        (
            alias("#_gitter_foo=2Fbar:matrix.org"),
            "#_gitter_foo=2^fbar%matrix.org@muc.example.org",
        ),
        (
            alias("#room:localhost:8448"),
            "#room%localhost\\3a8448@muc.example.org",
        ),
        // Room ids are case-sensitive, with and without a server part (version 12).
        (
            id("!OpaQue:matrix.org"),
            "!^opa^que%matrix.org@muc.example.org",
        ),
        (id("!abc:example.org"), "!abc%example.org@muc.example.org"),
        (
            id("!aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789-_abcd"),
            "!a^bc^de^fg^hi^jk^lm^no^pq^rs^tu^vw^xy^z0123456789-_abcd@muc.example.org",
        ),
    ] {
        let muc = bare(muc);
        let mapped = match &room {
            MatrixRoom::Alias(alias) => gateway.room_to_muc(RoomRef::Alias(alias)),
            MatrixRoom::Id(id) => gateway.room_to_muc(RoomRef::Id(id)),
            MatrixRoom::Portal(_) => unreachable!(),
        };
        assert_eq!(mapped.as_ref(), Ok(&muc), "{room:?}");
        assert_eq!(gateway.muc_to_room(&muc).as_ref(), Ok(&room), "{muc}");
    }
    // An XMPP MUC elsewhere has a portal room, whose alias maps back to it.
    let muc = bare("room@conference.jabber.de");
    let portal = RoomAliasId::parse("#_xmpp_room=40conference.jabber.de:example.org").unwrap();
    assert_eq!(
        gateway.muc_to_room(&muc),
        Ok(MatrixRoom::Portal(portal.clone()))
    );
    assert_eq!(gateway.room_to_muc(RoomRef::Alias(&portal)), Ok(muc));
}

#[test]
fn rooms_that_cannot_be_mapped() {
    let gateway = gateway();
    let to_room = |text: &str| gateway.muc_to_room(&bare(text)).unwrap_err();
    for text in [
        // Forms this gateway does not write.
        "#lobby%example.org@muc.example.org",
        "!abc^@muc.example.org",
        "^^^@muc.example.org",
        "#no-server@muc.example.org",
    ] {
        assert!(
            matches!(to_room(text), AddressError::NotCanonical(_)),
            "{text}"
        );
    }
    assert!(matches!(
        to_room("_xmpp_x=40y.example@muc.example.org"),
        AddressError::Reserved(_)
    ));
    assert!(matches!(
        to_room("alice@example.org"),
        AddressError::NotARoom(_)
    ));
    assert!(matches!(
        to_room("muc.example.org"),
        AddressError::NotARoom(_)
    ));
    assert!(matches!(
        to_room("conference.jabber.de"),
        AddressError::NotARoom(_)
    ));
    let to_muc = |text: &str| {
        gateway
            .room_to_muc(RoomRef::Alias(&RoomAliasId::parse(text).unwrap()))
            .unwrap_err()
    };
    // A letter whose case does not map one to one, and a portal alias of a domain.
    assert!(matches!(
        to_muc("#İstanbul:example.org"),
        AddressError::NotJidSafe(_)
    ));
    // Emoji cannot be in a JID localpart (RFC 7622): such a room is reached by its id.
    assert!(matches!(
        to_muc("#🦀:matrix.org"),
        AddressError::NotJidSafe(_)
    ));
    // Nor can a JID localpart have an emoji: no XMPP user can be so named.
    assert!(Jid::new("🦀@crab.example").is_err());
    assert!(matches!(
        to_muc("#_xmpp_jabber.de:example.org"),
        AddressError::NotARoom(_)
    ));
    assert!(matches!(to_muc("#x:Matrix.org"), AddressError::CaseLost(_)));
    // A room id without a server part cannot hold the separator of one.
    let id = RoomId::parse("!abc%matrix.org").unwrap();
    assert!(matches!(
        gateway.room_to_muc(RoomRef::Id(&id)),
        Err(AddressError::NotJidSafe(_))
    ));
}

fn remote_jid() -> impl Strategy<Value = Jid> {
    (
        proptest::option::of("[a-z0-9._'&~=éü🦀-]{1,20}"),
        "[a-z0-9]{1,8}(\\.[a-z0-9-]{1,8}){0,2}\\.[a-z]{2,5}",
        proptest::option::of("[a-zA-Z0-9 éüÖ✓.=/@-]{1,12}"),
    )
        .prop_filter_map("valid JIDs", |(node, domain, resource)| {
            let mut text = String::new();
            if let Some(node) = node {
                text.push_str(&node);
                text.push('@');
            }
            text.push_str(&domain);
            if let Some(resource) = resource {
                text.push('/');
                text.push_str(&resource);
            }
            let jid = Jid::new(&text).ok()?;
            (!matches!(jid.domain().as_str(), "example.org" | "muc.example.org")).then_some(jid)
        })
}

fn server_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,8}(\\.[a-z0-9-]{1,8}){0,2}",
        "[a-z0-9]{1,8}\\.[a-z]{2,4}:[0-9]{1,5}",
        "\\[[0-9a-f:]{2,12}\\](:[0-9]{1,5})?",
        Just("example.org".to_owned()),
    ]
}

proptest! {
    /// JID → ghost → JID is the identity; so no two JIDs share a ghost.
    #[test]
    fn xmpp_users_round_trip(jid in remote_jid()) {
        let gateway = gateway();
        match gateway.jid_to_user(&jid) {
            Ok(ghost) => {
                prop_assert!(gateway.is_ghost(&ghost));
                prop_assert_eq!(gateway.user_to_jid(&ghost), Ok(jid));
            }
            // Only a ghost id longer than Matrix allows is refused.
            Err(error) => prop_assert!(matches!(error, AddressError::TooLong(_, 255)), "{:?}", error),
        }
    }

    /// Matrix user → JID → Matrix user is the identity; so no two users share a JID.
    #[test]
    fn matrix_users_round_trip(localpart in "[a-z0-9._=/+-]{1,30}", server in server_name()) {
        let gateway = gateway();
        let Ok(user) = UserId::parse(format!("@{localpart}:{server}")) else {
            return Ok(());
        };
        match gateway.user_to_jid(&user) {
            Ok(jid) => prop_assert_eq!(gateway.jid_to_user(&jid), Ok(user)),
            // Only local names in the ghost namespace are refused.
            Err(error) => prop_assert!(
                matches!(error, AddressError::Reserved(_) | AddressError::NotCanonical(_) | AddressError::InvalidJid(..)),
                "{:?} for {}", error, user
            ),
        }
    }

    /// Room → MUC → room is the identity, for aliases and ids of every form.
    #[test]
    fn rooms_round_trip(
        name in "[a-zA-Z0-9._=/^#!%ÄäÖ-]{1,20}",
        server in server_name(),
        alias in any::<bool>(),
        with_server in any::<bool>(),
    ) {
        let gateway = gateway();
        let room = if alias {
            let Ok(alias) = RoomAliasId::parse(format!("#{name}:{server}")) else {
                return Ok(());
            };
            MatrixRoom::Alias(alias)
        } else {
            let opaque: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
            if opaque.is_empty() || <&ruma::ServerName>::try_from(server.as_str()).is_err() {
                return Ok(());
            }
            let text = if with_server { format!("!{opaque}:{server}") } else { format!("!{opaque}") };
            let Ok(id) = RoomId::parse(text) else {
                return Ok(());
            };
            MatrixRoom::Id(id)
        };
        let muc = match &room {
            MatrixRoom::Alias(alias) => gateway.room_to_muc(RoomRef::Alias(alias)),
            MatrixRoom::Id(id) => gateway.room_to_muc(RoomRef::Id(id)),
            MatrixRoom::Portal(_) => unreachable!(),
        };
        let muc = muc.map_err(|error| TestCaseError::fail(format!("{error:?} for {room:?}")))?;
        prop_assert_eq!(muc.domain().as_str(), "muc.example.org");
        prop_assert_eq!(gateway.muc_to_room(&muc), Ok(room));
    }

    /// An XMPP MUC → portal alias → MUC is the identity.
    #[test]
    fn remote_mucs_round_trip(jid in remote_jid()) {
        let gateway = gateway();
        let Err(muc) = jid.try_into_full() else { return Ok(()) };
        if muc.node().is_none() {
            return Ok(());
        }
        match gateway.muc_to_room(&muc) {
            Ok(MatrixRoom::Portal(alias)) => {
                prop_assert_eq!(gateway.room_to_muc(RoomRef::Alias(&alias)), Ok(muc));
            }
            other => prop_assert!(matches!(other, Err(AddressError::TooLong(_, 255))), "{:?}", other),
        }
    }

    /// Whatever JID arrives, the mappings answer without panicking, and what they accept maps
    /// back to the same JID.
    #[test]
    fn any_jid_is_answered(text in "\\PC{1,40}") {
        let gateway = gateway();
        if let Ok(jid) = Jid::new(&text) {
            if let Ok(user) = gateway.jid_to_user(&jid) {
                let expected = if jid.domain().as_str() == "example.org" { Jid::from(jid.to_bare()) } else { jid.clone() };
                prop_assert_eq!(gateway.user_to_jid(&user), Ok(expected));
            }
            let bare = jid.to_bare();
            if let Ok(MatrixRoom::Alias(alias)) = gateway.muc_to_room(&bare) {
                prop_assert_eq!(gateway.room_to_muc(RoomRef::Alias(&alias)), Ok(bare));
            }
        }
    }

    /// Whatever Matrix user id arrives, the mapping answers, and what it accepts maps back.
    #[test]
    fn any_matrix_user_is_answered(localpart in "[!-9;-~]{1,30}") {
        let gateway = gateway();
        for server in ["example.org", "matrix.org"] {
            if let Ok(user) = UserId::parse(format!("@{localpart}:{server}"))
                && let Ok(jid) = gateway.user_to_jid(&user)
            {
                prop_assert_eq!(gateway.jid_to_user(&jid), Ok(user));
            }
        }
    }
}
