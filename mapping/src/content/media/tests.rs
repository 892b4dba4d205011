//! Tests of the file mappings.

use super::*;
use proptest::prelude::*;
use ruma::owned_mxc_uri;

fn message(inner: &str) -> Message {
    let xml = format!(
        "<message xmlns='jabber:client' from='bob@prosody.test/phone' to='alice@gw.test'>{inner}</message>"
    );
    Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
}

#[test]
fn out_of_band_data() {
    let files = shared_files(&message(
        "<body>https://upload.prosody.test/abc/summit%20photo.jpg</body>\
         <x xmlns='jabber:x:oob'><url>https://upload.prosody.test/abc/summit%20photo.jpg</url></x>",
    ));
    assert_eq!(files.len(), 1);
    assert_eq!(file_name(&files[0]), "summit photo.jpg");
    assert_eq!(kind(files[0].media_type.as_deref()), MediaKind::File);
    // Only web addresses are fetched.
    assert!(
        shared_files(&message(
            "<x xmlns='jabber:x:oob'><url>file:///etc/passwd</url></x>"
        ))
        .is_empty()
    );
}

#[test]
fn stateless_file_sharing_and_sims() {
    let sfs = "<file-sharing xmlns='urn:xmpp:sfs:0' disposition='inline'>\
        <file xmlns='urn:xmpp:file:metadata:0'><media-type>image/png</media-type>\
        <name>cat.png</name><size>1234</size><width>640</width><height>480</height>\
        <desc>my cat</desc></file>\
        <sources><url-data xmlns='http://jabber.org/protocol/url-data' target='https://x.test/cat.png'/></sources>\
        </file-sharing>\
        <x xmlns='jabber:x:oob'><url>https://x.test/cat.png</url></x>";
    let files = shared_files(&message(sfs));
    assert_eq!(
        files,
        vec![SharedFile {
            url: "https://x.test/cat.png".into(),
            name: Some("cat.png".into()),
            media_type: Some("image/png".into()),
            size: Some(1234),
            width: Some(640),
            height: Some(480),
            description: Some("my cat".into()),
            thumbnail: None,
        }]
    );
    let sims = "<reference xmlns='urn:xmpp:reference:0' type='data' uri='https://x.test/v.mp4'>\
        <media-sharing xmlns='urn:xmpp:sims:1'><file xmlns='urn:xmpp:jingle:apps:file-transfer:5'>\
        <media-type>video/mp4</media-type><name>v.mp4</name><size>99</size>\
        <dimensions>1920x1080</dimensions></file><sources>\
        <reference xmlns='urn:xmpp:reference:0' type='data' uri='https://x.test/v.mp4'/>\
        </sources></media-sharing></reference>";
    let files = shared_files(&message(sims));
    assert_eq!(files[0].media_type.as_deref(), Some("video/mp4"));
    assert_eq!((files[0].width, files[0].height), (Some(1920), Some(1080)));
    assert_eq!(kind(files[0].media_type.as_deref()), MediaKind::Video);
}

#[test]
fn file_names() {
    let named = |name: Option<&str>, url: &str, media_type: Option<&str>| {
        file_name(&SharedFile {
            url: url.into(),
            name: name.map(str::to_owned),
            media_type: media_type.map(str::to_owned),
            ..SharedFile::default()
        })
    };
    assert_eq!(
        named(Some("photo"), "https://x/y", Some("image/jpeg")),
        "photo.jpg"
    );
    assert_eq!(
        named(Some("a.b.tar.gz"), "https://x/y", Some("image/jpeg")),
        "a.b.tar.gz"
    );
    assert_eq!(
        named(Some("../../etc/passwd"), "https://x/y", None),
        "passwd"
    );
    assert_eq!(named(None, "https://x/dir/", Some("audio/ogg")), "file.ogg");
    assert_eq!(
        named(None, "https://x/d/n%C3%A4me.pdf?token=1#f", None),
        "näme.pdf"
    );
}

#[test]
fn files_become_matrix_media_and_back() {
    let file = SharedFile {
        url: "https://x.test/cat.png".into(),
        name: Some("cat.png".into()),
        media_type: Some("image/png".into()),
        size: Some(1234),
        width: Some(640),
        height: Some(480),
        description: Some("my cat".into()),
        thumbnail: Some(Thumbnail {
            url: "https://x.test/cat-small.png".into(),
            media_type: Some("image/png".into()),
            width: Some(64),
            height: Some(48),
        }),
    };
    let mxc = owned_mxc_uri!("mxc://gw.test/abc");
    let thumbnail_mxc = owned_mxc_uri!("mxc://gw.test/thumb");
    let msgtype = matrix_media(&file, mxc.clone(), Some(thumbnail_mxc.clone()));
    let MessageType::Image(image) = &msgtype else {
        panic!("{msgtype:?}");
    };
    assert_eq!(image.body, "my cat");
    assert_eq!(image.filename.as_deref(), Some("cat.png"));
    let info = image.info.as_deref().unwrap();
    assert_eq!(info.mimetype.as_deref(), Some("image/png"));
    assert_eq!(info.size, UInt::new(1234));
    assert_eq!((info.width, info.height), (UInt::new(640), UInt::new(480)));
    assert!(matches!(
        &info.thumbnail_source,
        Some(MediaSource::Plain(source)) if *source == thumbnail_mxc
    ));
    let back = matrix_file(&msgtype).unwrap();
    assert_eq!(back.mxc, mxc);
    assert_eq!(back.thumbnail, Some(thumbnail_mxc));
    let mut expected = file.clone();
    expected.url = String::new();
    if let Some(thumbnail) = expected.thumbnail.as_mut() {
        thumbnail.url = String::new();
    }
    assert_eq!(back.file, expected);
    // And out to XMPP: OOB with the address as body, XEP-0447 with the metadata.
    let out = xmpp_media(&file);
    assert_eq!(
        out.bodies.values().next().map(String::as_str),
        Some("https://x.test/cat.png")
    );
    assert_eq!(shared_files(&out), vec![file]);
    // A file without a caption: the body names it.
    let plain = SharedFile {
        url: "https://x.test/doc".into(),
        media_type: Some("application/pdf".into()),
        ..SharedFile::default()
    };
    let MessageType::File(document) = matrix_media(&plain, mxc, None) else {
        panic!();
    };
    assert_eq!(document.body, "doc.pdf");
    assert_eq!(document.filename.as_deref(), Some("doc.pdf"));
}

proptest! {
    /// Whatever the description, XMPP → Matrix → XMPP keeps it (with the name normalised).
    #[test]
    fn descriptions_round_trip(
        name in proptest::option::of("[a-zA-Z0-9_]([a-zA-Z0-9 ._-]{0,18}[a-zA-Z0-9_])?"),
        media_type in proptest::option::of(prop_oneof![Just("image/png"), Just("video/webm"), Just("audio/ogg"), Just("application/zip")]),
        size in proptest::option::of(0u64..1 << 40),
        dimensions in proptest::option::of((1u32..10_000, 1u32..10_000)),
        // Texts are read trimmed.
        description in proptest::option::of("[a-zA-Z0-9]([a-zA-Z0-9 ]{0,18}[a-zA-Z0-9])?"),
    ) {
        let file = SharedFile {
            url: "https://x.test/f".into(),
            name: name.filter(|n| !n.trim().is_empty()),
            media_type: media_type.map(str::to_owned),
            size,
            width: dimensions.map(|d| d.0),
            height: dimensions.map(|d| d.1),
            description: description.filter(|d| !d.trim().is_empty()),
            thumbnail: None,
        };
        let msgtype = matrix_media(&file, owned_mxc_uri!("mxc://gw.test/f"), None);
        let mut back = matrix_file(&msgtype).unwrap().file;
        let dimensional = matches!(kind(file.media_type.as_deref()), MediaKind::Image | MediaKind::Video);
        prop_assert_eq!(back.name.clone(), Some(file_name(&file)));
        prop_assert_eq!(back.size, file.size);
        prop_assert_eq!(back.media_type.clone(), file.media_type.clone());
        if dimensional {
            prop_assert_eq!((back.width, back.height), (file.width, file.height));
        }
        // A caption equal to the file name reads as no caption.
        if file.description.as_deref() != Some(file_name(&file).as_str()) {
            prop_assert_eq!(back.description.clone(), file.description.clone());
        }
        back.url = file.url.clone();
        let read = shared_files(&xmpp_media(&back));
        prop_assert_eq!(read.len(), 1);
        prop_assert_eq!(read[0].clone(), back);
    }
}
