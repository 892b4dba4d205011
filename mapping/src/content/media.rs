//! Files between XMPP and Matrix: XEP-0066 out-of-band data, XEP-0447 stateless file sharing
//! and XEP-0385 SIMS on one side, `m.image`, `m.file`, `m.audio` and `m.video` on the other,
//! with file name (extension kept), media type, size and dimensions.
//!
//! The bytes travel elsewhere: the caller fetches a file an XMPP message points to and stores
//! it as Matrix media, and gives XMPP an address it can fetch a Matrix file from.

use minidom::Element;
use ruma::events::room::message::{
    AudioInfo, AudioMessageEventContent, FileInfo, FileMessageEventContent,
    ImageMessageEventContent, MessageType, VideoInfo, VideoMessageEventContent,
};
use ruma::events::room::{ImageInfo, MediaSource, ThumbnailInfo};
use ruma::{OwnedMxcUri, UInt};
use xmpp_parsers::message::{Lang, Message};

/// Namespaces of the file descriptions.
pub mod ns {
    pub const OOB: &str = "jabber:x:oob";
    pub const SFS: &str = "urn:xmpp:sfs:0";
    pub const FILE_METADATA: &str = "urn:xmpp:file:metadata:0";
    pub const URL_DATA: &str = "http://jabber.org/protocol/url-data";
    pub const REFERENCE: &str = "urn:xmpp:reference:0";
    pub const SIMS: &str = "urn:xmpp:sims:1";
    pub const JINGLE_FILE: &str = "urn:xmpp:jingle:apps:file-transfer:5";
    pub const THUMBS: &str = "urn:xmpp:thumbs:1";
}

/// A thumbnail of a shared file (XEP-0264).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Thumbnail {
    /// Where to fetch it (empty for a Matrix thumbnail the caller has not given an address).
    pub url: String,
    pub media_type: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// A file an XMPP message shares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedFile {
    /// Where to fetch it (HTTP or HTTPS).
    pub url: String,
    pub name: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// A caption.
    pub description: Option<String>,
    pub thumbnail: Option<Thumbnail>,
}

/// The kind of Matrix message a file becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Audio,
    Video,
    File,
}

/// The kind of a media type.
pub fn kind(media_type: Option<&str>) -> MediaKind {
    match media_type.and_then(|t| t.split('/').next()) {
        Some("image") => MediaKind::Image,
        Some("audio") => MediaKind::Audio,
        Some("video") => MediaKind::Video,
        _ => MediaKind::File,
    }
}

fn web_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

fn child_text(element: &Element, name: &str, namespace: &str) -> Option<String> {
    element
        .get_child(name, namespace)
        .map(|child| child.text().trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// A file described with XEP-0446 (in XEP-0447) or XEP-0234 (in SIMS) metadata.
fn described(file: &Element, namespace: &str, url: String) -> SharedFile {
    let number = |name| child_text(file, name, namespace).and_then(|n| n.parse().ok());
    let (mut width, mut height) = (number("width"), number("height"));
    // SIMS writes dimensions as "WxH".
    if let Some(dimensions) = child_text(file, "dimensions", namespace)
        && let Some((w, h)) = dimensions.split_once('x')
    {
        width = w.trim().parse().ok();
        height = h.trim().parse().ok();
    }
    let thumbnail = file
        .children()
        .filter(|child| child.is("thumbnail", ns::THUMBS))
        .find(|thumbnail| thumbnail.attr("uri").is_some_and(web_url))
        .map(|thumbnail| Thumbnail {
            url: thumbnail.attr("uri").unwrap_or_default().to_owned(),
            media_type: thumbnail.attr("media-type").map(str::to_owned),
            width: thumbnail.attr("width").and_then(|w| w.parse().ok()),
            height: thumbnail.attr("height").and_then(|h| h.parse().ok()),
        });
    SharedFile {
        url,
        name: child_text(file, "name", namespace),
        media_type: child_text(file, "media-type", namespace),
        size: child_text(file, "size", namespace).and_then(|n| n.parse().ok()),
        width,
        height,
        description: child_text(file, "desc", namespace),
        thumbnail,
    }
}

/// The files a message shares, richest description first, each address once.
pub fn shared_files(message: &Message) -> Vec<SharedFile> {
    let mut files: Vec<SharedFile> = Vec::new();
    let mut add = |file: SharedFile| {
        if web_url(&file.url) && !files.iter().any(|known| known.url == file.url) {
            files.push(file);
        }
    };
    for payload in &message.payloads {
        if payload.is("file-sharing", ns::SFS) {
            let Some(file) = payload.get_child("file", ns::FILE_METADATA) else {
                continue;
            };
            let urls = payload
                .get_child("sources", ns::SFS)
                .into_iter()
                .flat_map(|sources| sources.children())
                .filter(|source| source.is("url-data", ns::URL_DATA))
                .filter_map(|source| source.attr("target"));
            if let Some(url) = urls.into_iter().find(|url| web_url(url)) {
                add(described(file, ns::FILE_METADATA, url.to_owned()));
            }
        } else if payload.is("reference", ns::REFERENCE) {
            let Some(sharing) = payload.get_child("media-sharing", ns::SIMS) else {
                continue;
            };
            let Some(file) = sharing.get_child("file", ns::JINGLE_FILE) else {
                continue;
            };
            let urls = sharing
                .get_child("sources", ns::SIMS)
                .into_iter()
                .flat_map(|sources| sources.children())
                .filter(|source| source.is("reference", ns::REFERENCE))
                .filter_map(|source| source.attr("uri"));
            if let Some(url) = urls.into_iter().find(|url| web_url(url)) {
                add(described(file, ns::JINGLE_FILE, url.to_owned()));
            }
        }
    }
    for payload in &message.payloads {
        if payload.is("x", ns::OOB)
            && let Some(url) = child_text(payload, "url", ns::OOB)
        {
            add(SharedFile {
                url,
                description: child_text(payload, "desc", ns::OOB),
                ..SharedFile::default()
            });
        }
    }
    files
}

/// The extension of a media type, for files whose name has none.
fn extension(media_type: &str) -> Option<&'static str> {
    Some(match media_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/svg+xml" => "svg",
        "audio/ogg" | "audio/opus" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/mp4" | "audio/aac" => "m4a",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => return None,
    })
}

/// The file's name: as described, or else the last part of its address; with an extension
/// from its media type when it has none.
pub fn file_name(file: &SharedFile) -> String {
    let from_url = || {
        let path = file.url.split(['?', '#']).next().unwrap_or_default();
        let last = path.rsplit('/').next().unwrap_or_default();
        let name = super::percent_decode(last);
        (!name.trim().is_empty()).then_some(name)
    };
    let name = file
        .name
        .clone()
        .or_else(from_url)
        .unwrap_or_else(|| "file".to_owned());
    // No directories, whatever the sender wrote.
    let name = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let name = if name.is_empty() {
        "file".to_owned()
    } else {
        name
    };
    match (
        name.rsplit_once('.'),
        file.media_type.as_deref().and_then(extension),
    ) {
        (None, Some(extension)) => format!("{name}.{extension}"),
        _ => name,
    }
}

fn uint(value: Option<u64>) -> Option<UInt> {
    value.and_then(UInt::new)
}

/// The thumbnail of a Matrix image or video, stored as `mxc`.
fn thumbnail_info(thumbnail: &Thumbnail) -> Box<ThumbnailInfo> {
    let mut info = ThumbnailInfo::new();
    info.mimetype = thumbnail.media_type.clone();
    info.width = uint(thumbnail.width.map(u64::from));
    info.height = uint(thumbnail.height.map(u64::from));
    Box::new(info)
}

/// The Matrix message of a shared file once stored as `mxc` (and its thumbnail, if any, as
/// `thumbnail`). The body is the caption when there is one, else the file name; `filename`
/// always names the file.
pub fn matrix_media(
    file: &SharedFile,
    mxc: OwnedMxcUri,
    thumbnail: Option<OwnedMxcUri>,
) -> MessageType {
    let (thumbnail_info, thumbnail_source) = file
        .thumbnail
        .as_ref()
        .zip(thumbnail)
        .map(|(described, stored)| (thumbnail_info(described), MediaSource::Plain(stored)))
        .unzip();
    let name = file_name(file);
    let body = file.description.clone().unwrap_or_else(|| name.clone());
    let size = uint(file.size);
    let width = uint(file.width.map(u64::from));
    let height = uint(file.height.map(u64::from));
    let mimetype = file.media_type.clone();
    match kind(file.media_type.as_deref()) {
        MediaKind::Image => {
            let mut info = ImageInfo::new();
            (info.mimetype, info.size, info.width, info.height) = (mimetype, size, width, height);
            (info.thumbnail_info, info.thumbnail_source) = (thumbnail_info, thumbnail_source);
            let mut content = ImageMessageEventContent::plain(body, mxc).info(Box::new(info));
            content.filename = Some(name);
            MessageType::Image(content)
        }
        MediaKind::Audio => {
            let mut info = AudioInfo::new();
            (info.mimetype, info.size) = (mimetype, size);
            let mut content = AudioMessageEventContent::plain(body, mxc).info(Box::new(info));
            content.filename = Some(name);
            MessageType::Audio(content)
        }
        MediaKind::Video => {
            let mut info = VideoInfo::new();
            (info.mimetype, info.size, info.width, info.height) = (mimetype, size, width, height);
            (info.thumbnail_info, info.thumbnail_source) = (thumbnail_info, thumbnail_source);
            let mut content = VideoMessageEventContent::plain(body, mxc).info(Box::new(info));
            content.filename = Some(name);
            MessageType::Video(content)
        }
        MediaKind::File => {
            let mut info = FileInfo::new();
            (info.mimetype, info.size) = (mimetype, size);
            let mut content = FileMessageEventContent::plain(body, mxc).info(Box::new(info));
            content.filename = Some(name);
            MessageType::File(content)
        }
    }
}

/// A Matrix file message's file: its `mxc` address, its thumbnail's, and its description
/// (with an empty address, for the caller to give one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixFile {
    pub mxc: OwnedMxcUri,
    pub thumbnail: Option<OwnedMxcUri>,
    pub file: SharedFile,
}

/// A plain thumbnail of an image or video: its address and description.
fn matrix_thumbnail(
    source: Option<&MediaSource>,
    info: Option<&ThumbnailInfo>,
) -> Option<(OwnedMxcUri, Thumbnail)> {
    let Some(MediaSource::Plain(mxc)) = source else {
        return None;
    };
    let number = |value: Option<UInt>| value.and_then(|v| u32::try_from(u64::from(v)).ok());
    Some((
        mxc.clone(),
        Thumbnail {
            url: String::new(),
            media_type: info.and_then(|i| i.mimetype.clone()),
            width: number(info.and_then(|i| i.width)),
            height: number(info.and_then(|i| i.height)),
        },
    ))
}

/// What the `info` of a Matrix file message says.
#[derive(Default)]
struct Described {
    mimetype: Option<String>,
    size: Option<UInt>,
    width: Option<UInt>,
    height: Option<UInt>,
    thumbnail: Option<(OwnedMxcUri, Thumbnail)>,
}

impl Described {
    /// An image or a video: with dimensions and a thumbnail.
    fn visual(
        mimetype: &Option<String>,
        size: Option<UInt>,
        (width, height): (Option<UInt>, Option<UInt>),
        thumbnail: (Option<&MediaSource>, Option<&ThumbnailInfo>),
    ) -> Described {
        Described {
            mimetype: mimetype.clone(),
            size,
            width,
            height,
            thumbnail: matrix_thumbnail(thumbnail.0, thumbnail.1),
        }
    }

    /// Audio or another file.
    fn plain(mimetype: &Option<String>, size: Option<UInt>) -> Described {
        Described {
            mimetype: mimetype.clone(),
            size,
            ..Described::default()
        }
    }
}

/// What a Matrix file message says about its file.
pub fn matrix_file(msgtype: &MessageType) -> Option<MatrixFile> {
    // The contents of the four types differ in type, not in shape.
    macro_rules! fields {
        ($content:expr, visual) => {
            (
                &$content.source,
                &$content.body,
                &$content.filename,
                $content.info.as_deref().map(|i| {
                    let thumbnail = (i.thumbnail_source.as_ref(), i.thumbnail_info.as_deref());
                    Described::visual(&i.mimetype, i.size, (i.width, i.height), thumbnail)
                }),
            )
        };
        ($content:expr, plain) => {
            (
                &$content.source,
                &$content.body,
                &$content.filename,
                $content
                    .info
                    .as_deref()
                    .map(|i| Described::plain(&i.mimetype, i.size)),
            )
        };
    }
    let (source, body, filename, described) = match msgtype {
        MessageType::Image(c) => fields!(c, visual),
        MessageType::Video(c) => fields!(c, visual),
        MessageType::Audio(c) => fields!(c, plain),
        MessageType::File(c) => fields!(c, plain),
        _ => return None,
    };
    let described = described.unwrap_or_default();
    // Encrypted files cannot be shared with XMPP this way.
    let MediaSource::Plain(mxc) = source else {
        return None;
    };
    // With a filename, the body is a caption (Matrix 1.10); without, the body names the file.
    let (name, description) = match filename {
        Some(name) if name != body => (name.clone(), Some(body.clone())),
        Some(name) => (name.clone(), None),
        None => (body.clone(), None),
    };
    let number = |value: Option<UInt>| value.and_then(|v| u32::try_from(u64::from(v)).ok());
    let (thumbnail_mxc, thumbnail) = described.thumbnail.unzip();
    Some(MatrixFile {
        mxc: mxc.clone(),
        thumbnail: thumbnail_mxc,
        file: SharedFile {
            url: String::new(),
            name: Some(name),
            media_type: described.mimetype,
            size: described.size.map(u64::from),
            width: number(described.width),
            height: number(described.height),
            description,
            thumbnail,
        },
    })
}

fn text_element(name: &str, namespace: &str, text: &str) -> Element {
    Element::builder(name, namespace).append(text).build()
}

/// The XMPP message sharing a file at `file.url`: XEP-0066 for every client (with the address
/// as the body, which clients show inline) and XEP-0447 with the file's metadata.
pub fn xmpp_media(file: &SharedFile) -> Message {
    let mut message = Message::new(None);
    let mut oob = Element::builder("x", ns::OOB).append(text_element("url", ns::OOB, &file.url));
    if let Some(description) = &file.description {
        oob = oob.append(text_element("desc", ns::OOB, description));
    }
    message.payloads.push(oob.build());
    let mut metadata = Element::builder("file", ns::FILE_METADATA);
    if let Some(media_type) = &file.media_type {
        metadata = metadata.append(text_element("media-type", ns::FILE_METADATA, media_type));
    }
    metadata = metadata.append(text_element("name", ns::FILE_METADATA, &file_name(file)));
    for (name, value) in [
        ("size", file.size),
        ("width", file.width.map(u64::from)),
        ("height", file.height.map(u64::from)),
    ] {
        if let Some(value) = value {
            metadata = metadata.append(text_element(name, ns::FILE_METADATA, &value.to_string()));
        }
    }
    if let Some(description) = &file.description {
        metadata = metadata.append(text_element("desc", ns::FILE_METADATA, description));
    }
    if let Some(thumbnail) = file.thumbnail.as_ref().filter(|t| web_url(&t.url)) {
        let mut element = Element::builder("thumbnail", ns::THUMBS)
            .attr(rxml::xml_ncname!("uri").to_owned(), thumbnail.url.as_str());
        if let Some(media_type) = &thumbnail.media_type {
            element = element.attr(
                rxml::xml_ncname!("media-type").to_owned(),
                media_type.as_str(),
            );
        }
        if let Some(width) = thumbnail.width {
            element = element.attr(rxml::xml_ncname!("width").to_owned(), width.to_string());
        }
        if let Some(height) = thumbnail.height {
            element = element.attr(rxml::xml_ncname!("height").to_owned(), height.to_string());
        }
        metadata = metadata.append(element.build());
    }
    let sources = Element::builder("sources", ns::SFS)
        .append(
            Element::builder("url-data", ns::URL_DATA)
                .attr(rxml::xml_ncname!("target").to_owned(), file.url.as_str())
                .build(),
        )
        .build();
    message.payloads.push(
        Element::builder("file-sharing", ns::SFS)
            .attr(rxml::xml_ncname!("disposition").to_owned(), "inline")
            .append(metadata.build())
            .append(sources)
            .build(),
    );
    message.bodies.insert(Lang::default(), file.url.clone());
    message
}

#[cfg(test)]
mod tests;
