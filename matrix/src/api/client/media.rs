//! The content repository: upload, download and thumbnails, under authenticated media
//! (`/_matrix/client/v1/media/…`) and the legacy `/_matrix/media/v3/…` paths.

// The legacy endpoints are deprecated in the specification but still used by clients.
#![allow(deprecated)]

use std::sync::Arc;

use ruma::api::client::authenticated_media as v1;
use ruma::api::client::media as legacy;
use ruma::http_headers::{ContentDisposition, ContentDispositionType};
use ruma::media::Method;
use ruma::{ServerName, UInt};

use crate::Services;
use crate::api::ruma_wrapper::Ruma;
use crate::error::Error;
use crate::store::MediaRecord;
use crate::thumbnails::Fit;

pub(crate) fn is_valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// # `POST /_matrix/media/v3/upload`
pub async fn create_content_route(
    services: Arc<Services>,
    request: Ruma<legacy::create_content::v3::Request>,
) -> Result<legacy::create_content::v3::Response, Error> {
    let uploader = request.sender()?.user_id.clone();
    let body = request.body;
    let uri = services
        .store_media(
            &body.file,
            body.content_type.as_deref(),
            body.filename.as_deref(),
            &uploader,
        )
        .await?;
    Ok(legacy::create_content::v3::Response::new(uri))
}

/// A stored file and its metadata.
struct Content {
    file: Vec<u8>,
    content_type: String,
    disposition: ContentDisposition,
}

/// Content types a browser may show inline without risk; everything else is an attachment.
fn inline_safe(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or("").trim();
    matches!(
        base,
        "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "image/apng"
            | "image/avif"
            | "video/mp4"
            | "video/webm"
            | "video/ogg"
            | "audio/mpeg"
            | "audio/ogg"
            | "audio/wav"
            | "audio/webm"
            | "audio/mp4"
            | "audio/aac"
            | "audio/flac"
            | "text/plain"
            | "text/csv"
            | "application/json"
            | "application/ld+json"
    )
}

/// Which endpoints a request for media came through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `/_matrix/client/v1/media/…`, with an access token.
    Authenticated,
    /// The frozen `/_matrix/media/v3/…` endpoints, without one.
    Legacy,
}

/// The record of a stored media item that may be served on these endpoints.
async fn record(
    services: &Services,
    server_name: &ServerName,
    media_id: &str,
    access: Access,
) -> Result<MediaRecord, Error> {
    if server_name != services.server_name {
        // Other servers' media: fetched over federation and kept; like new local media, only
        // on the authenticated endpoints.
        if access == Access::Legacy {
            return Err(Error::NotFound(
                "media of other servers is served only on /_matrix/client/v1/media".into(),
            ));
        }
        return crate::federation::media::remote(services, server_name, media_id).await;
    }
    let record = local_record(services, media_id).await?;
    if access == Access::Legacy && !record.unauthenticated {
        // Frozen as Matrix 1.11 allows: newer media only with an access token.
        return Err(Error::NotFound(
            "media uploaded since the unauthenticated endpoints were frozen is served only \
             on /_matrix/client/v1/media"
                .into(),
        ));
    }
    Ok(record)
}

/// The record of a media item stored here.
pub(crate) async fn local_record(
    services: &Services,
    media_id: &str,
) -> Result<MediaRecord, Error> {
    if !is_valid_media_id(media_id) {
        return Err(Error::NotFound("media not found".into()));
    }
    services
        .store
        .media(media_id)
        .await?
        .ok_or_else(|| Error::NotFound("media not found".into()))
}

async fn load(
    services: &Services,
    server_name: &ServerName,
    media_id: &str,
    filename: Option<&str>,
    access: Access,
) -> Result<Content, Error> {
    let record = record(services, server_name, media_id, access).await?;
    // (The local id of the file: another server's media is kept under one of its own.)
    let file = tokio::fs::read(services.media_dir.join(&record.media_id))
        .await
        .map_err(|e| Error::Internal(format!("reading media {media_id}: {e}")))?;
    let content_type = record
        .content_type
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let kind = if inline_safe(&content_type) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let name = filename.map(str::to_owned).or(record.filename);
    Ok(Content {
        file,
        content_type,
        disposition: ContentDisposition::new(kind).with_filename(name),
    })
}

/// The thumbnail of a stored image in a standard size at least as large as asked for (see
/// [`crate::thumbnails`]); non-images get none.
async fn load_thumbnail(
    services: &Services,
    server_name: &ServerName,
    media_id: &str,
    width: UInt,
    height: UInt,
    method: Option<Method>,
    access: Access,
) -> Result<Content, Error> {
    let record = record(services, server_name, media_id, access).await?;
    let media_id = record.media_id.as_str();
    let fit = match method {
        Some(Method::Crop) => Fit::Crop,
        _ => Fit::Scale,
    };
    let thumbnail = services
        .thumbnails
        .thumbnail(
            media_id,
            &services.media_dir.join(media_id),
            width.into(),
            height.into(),
            fit,
        )
        .await?;
    let name = thumbnail.file_name().to_owned();
    Ok(Content {
        file: thumbnail.bytes,
        content_type: thumbnail.content_type.to_owned(),
        disposition: ContentDisposition::new(ContentDispositionType::Inline)
            .with_filename(Some(name)),
    })
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
pub async fn get_content_route(
    services: Arc<Services>,
    request: Ruma<v1::get_content::v1::Request>,
) -> Result<v1::get_content::v1::Response, Error> {
    let body = request.body;
    let content = load(
        &services,
        &body.server_name,
        &body.media_id,
        None,
        Access::Authenticated,
    )
    .await?;
    Ok(v1::get_content::v1::Response::new(
        content.file,
        content.content_type,
        content.disposition,
    ))
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
pub async fn get_content_as_filename_route(
    services: Arc<Services>,
    request: Ruma<v1::get_content_as_filename::v1::Request>,
) -> Result<v1::get_content_as_filename::v1::Response, Error> {
    let body = request.body;
    let content = load(
        &services,
        &body.server_name,
        &body.media_id,
        Some(&body.filename),
        Access::Authenticated,
    )
    .await?;
    Ok(v1::get_content_as_filename::v1::Response::new(
        content.file,
        content.content_type,
        content.disposition,
    ))
}

/// # `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub async fn get_content_thumbnail_route(
    services: Arc<Services>,
    request: Ruma<v1::get_content_thumbnail::v1::Request>,
) -> Result<v1::get_content_thumbnail::v1::Response, Error> {
    let body = request.body;
    let thumb = load_thumbnail(
        &services,
        &body.server_name,
        &body.media_id,
        body.width,
        body.height,
        body.method,
        Access::Authenticated,
    )
    .await?;
    Ok(v1::get_content_thumbnail::v1::Response::new(
        thumb.file,
        thumb.content_type,
        thumb.disposition,
    ))
}

/// # `GET /_matrix/client/v1/media/config`
pub async fn get_media_config_route(
    services: Arc<Services>,
    _request: Ruma<v1::get_media_config::v1::Request>,
) -> Result<v1::get_media_config::v1::Response, Error> {
    Ok(v1::get_media_config::v1::Response::new(
        UInt::try_from(services.config.media.max_upload_size).unwrap_or(UInt::MAX),
    ))
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}`
pub async fn legacy_get_content_route(
    services: Arc<Services>,
    request: Ruma<legacy::get_content::v3::Request>,
) -> Result<legacy::get_content::v3::Response, Error> {
    let body = request.body;
    let content = load(
        &services,
        &body.server_name,
        &body.media_id,
        None,
        Access::Legacy,
    )
    .await?;
    Ok(legacy::get_content::v3::Response::new(
        content.file,
        content.content_type,
        content.disposition,
    ))
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
pub async fn legacy_get_content_as_filename_route(
    services: Arc<Services>,
    request: Ruma<legacy::get_content_as_filename::v3::Request>,
) -> Result<legacy::get_content_as_filename::v3::Response, Error> {
    let body = request.body;
    let content = load(
        &services,
        &body.server_name,
        &body.media_id,
        Some(&body.filename),
        Access::Legacy,
    )
    .await?;
    Ok(legacy::get_content_as_filename::v3::Response::new(
        content.file,
        content.content_type,
        content.disposition,
    ))
}

/// # `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
pub async fn legacy_get_content_thumbnail_route(
    services: Arc<Services>,
    request: Ruma<legacy::get_content_thumbnail::v3::Request>,
) -> Result<legacy::get_content_thumbnail::v3::Response, Error> {
    let body = request.body;
    let thumb = load_thumbnail(
        &services,
        &body.server_name,
        &body.media_id,
        body.width,
        body.height,
        body.method,
        Access::Legacy,
    )
    .await?;
    let mut response = legacy::get_content_thumbnail::v3::Response::new(
        thumb.file,
        thumb.content_type,
        thumb.disposition,
    );
    response.cross_origin_resource_policy = Some("cross-origin".to_owned());
    Ok(response)
}

/// # `GET /_matrix/media/v3/config`
pub async fn legacy_get_media_config_route(
    services: Arc<Services>,
    _request: Ruma<legacy::get_media_config::v3::Request>,
) -> Result<legacy::get_media_config::v3::Response, Error> {
    Ok(legacy::get_media_config::v3::Response::new(
        UInt::try_from(services.config.media.max_upload_size).unwrap_or(UInt::MAX),
    ))
}
