//! Media across servers: this server's media served to other servers
//! (`/_matrix/federation/v1/media/download` and `thumbnail`, as `multipart/mixed`: metadata,
//! then the bytes), and other servers' media fetched for local clients, checked against the
//! upload size limit, and kept under a local id.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ruma::ServerName;
use sha2::Digest;

use super::membership::{remote_error, segment};
use super::server::Federated;
use crate::Services;
use crate::error::Error;
use crate::store::MediaRecord;
use crate::thumbnails::Fit;

/// The boundary of the `multipart/mixed` answers this server makes.
const BOUNDARY: &str = "causeway-media-boundary-6f1c2a";

/// A `multipart/mixed` answer: empty metadata, then the file.
fn multipart(bytes: &[u8], content_type: &str, disposition: &str) -> Response {
    let mut body = Vec::with_capacity(bytes.len() + 256);
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{BOUNDARY}\r\n\
             Content-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    (
        [(
            http::header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={BOUNDARY}"),
        )],
        body,
    )
        .into_response()
}

/// A local media item, for another server.
async fn local(services: &Services, media_id: &str) -> Result<(MediaRecord, Vec<u8>), Error> {
    let record = crate::api::client::media::local_record(services, media_id).await?;
    let file = tokio::fs::read(services.media_dir.join(media_id))
        .await
        .map_err(|e| Error::Internal(format!("reading media {media_id}: {e}")))?;
    Ok((record, file))
}

fn disposition(filename: Option<&str>) -> String {
    match filename {
        Some(name) => format!(
            "attachment; filename*=utf-8''{}",
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => "attachment".to_owned(),
    }
}

/// # `GET /_matrix/federation/v1/media/download/{mediaId}`
pub async fn download_route(
    State(services): State<Arc<Services>>,
    Path(media_id): Path<String>,
    _request: Federated,
) -> Result<Response, Error> {
    let (record, file) = local(&services, &media_id).await?;
    let content_type = record
        .content_type
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    Ok(multipart(
        &file,
        &content_type,
        &disposition(record.filename.as_deref()),
    ))
}

/// # `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
pub async fn thumbnail_route(
    State(services): State<Arc<Services>>,
    Path(media_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    _request: Federated,
) -> Result<Response, Error> {
    local(&services, &media_id).await?;
    let size = |key: &str| -> Result<u32, Error> {
        query
            .get(key)
            .ok_or_else(|| Error::MissingParam(format!("`{key}` is required")))?
            .parse()
            .map_err(|e| Error::InvalidParam(format!("invalid `{key}`: {e}")))
    };
    let fit = match query.get("method").map(String::as_str) {
        Some("crop") => Fit::Crop,
        _ => Fit::Scale,
    };
    let thumbnail = services
        .thumbnails
        .thumbnail(
            &media_id,
            &services.media_dir.join(&media_id),
            size("width")?.into(),
            size("height")?.into(),
            fit,
        )
        .await?;
    Ok(multipart(
        &thumbnail.bytes,
        thumbnail.content_type,
        "inline",
    ))
}

/// Another server's media item for a local client: the local copy, fetched first if there is
/// none.
pub async fn remote(
    services: &Services,
    server: &ServerName,
    media_id: &str,
) -> Result<MediaRecord, Error> {
    if !crate::api::client::media::is_valid_media_id(media_id) {
        return Err(Error::NotFound("media not found".into()));
    }
    if let Some(record) = services
        .store
        .remote_media(server.as_str(), media_id)
        .await?
    {
        return Ok(record);
    }
    let uri = format!(
        "/_matrix/federation/v1/media/download/{}",
        segment(media_id)
    );
    let (headers, body) = services
        .federation
        .request_bytes(server, &uri)
        .await
        .map_err(remote_error)?;
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let part = file_part(content_type, &body)
        .ok_or_else(|| Error::NotFound(format!("{server} answered no file")))?;
    let limit = usize::try_from(services.config.media.max_upload_size).unwrap_or(usize::MAX);
    if part.bytes.len() > limit {
        return Err(Error::TooLarge(
            "the file is larger than this server's upload limit".into(),
        ));
    }
    let local_id = format!(
        "remote-{}",
        hex(&sha2::Sha256::digest(format!("{server}/{media_id}").as_bytes())[..16])
    );
    let path = services.media_dir.join(&local_id);
    tokio::fs::create_dir_all(&services.media_dir)
        .await
        .map_err(|e| Error::Internal(format!("creating the media directory: {e}")))?;
    tokio::fs::write(&path, &part.bytes)
        .await
        .map_err(|e| Error::Internal(format!("writing remote media: {e}")))?;
    let record = MediaRecord {
        media_id: local_id,
        content_type: part.content_type,
        filename: part.filename,
        size: i64::try_from(part.bytes.len()).unwrap_or(i64::MAX),
        uploader: String::new(),
        unauthenticated: false,
    };
    services
        .store
        .create_remote_media(server.as_str(), media_id, &record)
        .await?;
    Ok(record)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The file of a `multipart/mixed` media answer.
#[derive(Debug, PartialEq, Eq)]
struct FilePart {
    content_type: Option<String>,
    filename: Option<String>,
    bytes: Bytes,
}

/// Reads the second part (the file) of a `multipart/mixed` answer.
fn file_part(content_type: &str, body: &Bytes) -> Option<FilePart> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|param| param.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut starts = Vec::new();
    let mut index = 0;
    while let Some(found) = find(&body[index..], delimiter) {
        starts.push(index + found);
        index += found + delimiter.len();
    }
    // Parts lie between delimiters: metadata first, then the file.
    let (start, end) = (*starts.get(1)?, *starts.get(2)?);
    let part = &body[start + delimiter.len()..end];
    let part = part.strip_prefix(b"\r\n").unwrap_or(part);
    let split = find(part, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&part[..split]).ok()?;
    let mut content = &part[split + 4..];
    content = content.strip_suffix(b"\r\n").unwrap_or(content);
    let mut file = FilePart {
        content_type: None,
        filename: None,
        bytes: body.slice_ref(content),
    };
    for line in head.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => file.content_type = Some(value.trim().to_owned()),
            "content-disposition" => file.filename = filename(value),
            // A redirection to where the file is: not followed.
            "location" => return None,
            _ => {}
        }
    }
    Some(file)
}

/// The file name of a `Content-Disposition` value (`filename*=utf-8''…` or `filename=…`).
fn filename(disposition: &str) -> Option<String> {
    let params: Vec<&str> = disposition.split(';').map(str::trim).collect();
    if let Some(encoded) = params
        .iter()
        .find_map(|param| param.strip_prefix("filename*="))
    {
        let value = encoded.split_once("''").map_or(encoded, |(_, value)| value);
        return percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|name| name.into_owned());
    }
    params
        .iter()
        .find_map(|param| param.strip_prefix("filename="))
        .map(|name| name.trim_matches('"').to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_answers_made_here_are_read_back() {
        let file = b"\x89PNG\r\n--not a boundary\r\n\r\nbytes".to_vec();
        let response = multipart(&file, "image/png", &disposition(Some("a b.png")));
        let content_type = response.headers()[http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let part = file_part(&content_type, &body).unwrap();
        assert_eq!(part.bytes.as_ref(), file.as_slice());
        assert_eq!(part.content_type.as_deref(), Some("image/png"));
        assert_eq!(part.filename.as_deref(), Some("a b.png"));
    }

    #[test]
    fn other_servers_answers_and_bad_ones() {
        let body = Bytes::from_static(
            b"--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz\r\n\
              Content-Type: text/plain\r\nContent-Disposition: inline; filename=\"n.txt\"\r\n\r\n\
              hello\r\n--xyz--\r\n",
        );
        let part = file_part("multipart/mixed; boundary=\"xyz\"", &body).unwrap();
        assert_eq!(part.bytes.as_ref(), b"hello");
        assert_eq!(part.filename.as_deref(), Some("n.txt"));
        // No boundary, one part only, or a redirection: no file.
        assert_eq!(file_part("multipart/mixed", &body), None);
        let one = Bytes::from_static(b"--xyz\r\n\r\n{}\r\n--xyz--\r\n");
        assert_eq!(file_part("multipart/mixed; boundary=xyz", &one), None);
        let redirect = Bytes::from_static(
            b"--xyz\r\n\r\n{}\r\n--xyz\r\nLocation: https://elsewhere/\r\n\r\n\r\n--xyz--\r\n",
        );
        assert_eq!(file_part("multipart/mixed; boundary=xyz", &redirect), None);
    }
}
